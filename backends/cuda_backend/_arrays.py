"""Device arrays: which ones the backend takes, how it allocates, moves and passes them.

On a GPU the backend's own arrays are CuPy arrays; any other array exposing
``__cuda_array_interface__`` (numba device arrays, PyTorch CUDA tensors, ...) is
accepted too. Kernels allocate their results in the kind of their input where
they can: numba device arrays in, numba device arrays out. Under the simulator
the backend's arrays are NumPy arrays (and the simulator's fake device arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._runtime import SIMULATOR, cuda, cupy, stream

__all__ = [
    "NO_PARTIALS",
    "accepts",
    "alloc_like",
    "asarray",
    "ascontiguous",
    "empty",
    "is_numba_array",
    "kernel_in",
    "partials",
    "placeholder",
    "to_numpy",
]


def is_numba_array(x: Any) -> bool:
    """Tell whether ``x`` is a numba device array (real or simulated)."""
    return bool(getattr(type(x), "__cuda_ndarray__", False))


def accepts(x: Any) -> bool:
    """Tell cheaply, without imports, whether the backend computes on ``x``.

    It does for CuPy and other ``__cuda_array_interface__`` arrays; under the
    simulator, for NumPy arrays and simulated device arrays instead.
    """
    if SIMULATOR:
        return isinstance(x, np.ndarray) or is_numba_array(x)
    return type(x).__module__.split(".", 1)[0] == "cupy" or hasattr(x, "__cuda_array_interface__")


def empty(shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised array of the backend's own kind (CuPy, or NumPy in the simulator).

    Statistics and parameter gradients are of this kind even when the data are
    numba device arrays, because the functional layer computes on them, which
    numba device arrays do not support. Launchers allocate them inside
    :class:`._runtime.on_device`, which makes the data's GPU current.
    """
    if cupy is None:
        return np.empty(shape, dtype=dtype)
    return cupy.empty(shape, dtype=dtype)


def partials(x: Any, rows: int, columns: int) -> Any:
    """The float64 ``[2, rows, columns]`` partial sums of a two-stage reduction over ``x``.

    Two sums per column and partial row, in one array: one allocation and one
    kernel argument.

    Parameters
    ----------
    x : array
        The kernel's input (numba device arrays get numba device arrays).
    rows, columns : int

    Returns
    -------
    array
    """
    return alloc_like(x, (2, rows, columns), np.float64)


_placeholders: dict[tuple[Any, str, tuple[int, ...]], Any] = {}

#: The shape of the placeholder for absent ``[2, rows, K]`` partial sums: no rows to read.
NO_PARTIALS = (2, 0, 1)


def placeholder(dtype: Any, shape: tuple[int, ...] = (1,)) -> Any:
    """A small array on the current GPU standing in for an absent kernel argument (cached).

    Kernels take a flag next to each optional array and never use its values
    when the flag says it is absent, so one array per device, dtype and shape
    serves every launch.

    Parameters
    ----------
    dtype : dtype-like
    shape : tuple of int, default (1,)
        The rank the kernel expects; ``NO_PARTIALS`` for partial sums.

    Returns
    -------
    array
    """
    device = cupy.cuda.runtime.getDevice() if cupy is not None else None
    key = (device, np.dtype(dtype).char, shape)
    found = _placeholders.get(key)
    if found is None:
        found = _placeholders[key] = empty(shape, dtype)
    return found


def alloc_like(x: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """An uninitialised array of the same kind as ``x``.

    Parameters
    ----------
    x : array
        The kernel's input; a numba device array gets a numba device array.
    shape : tuple of int
    dtype : dtype-like

    Returns
    -------
    array
    """
    if is_numba_array(x):
        return cuda.device_array(shape, dtype=dtype, stream=stream())
    return empty(shape, dtype)


def asarray(x: Any, dtype: Any = None) -> Any:
    """``x`` as an array of the backend; host data is copied to the device.

    Parameters
    ----------
    x : array_like
    dtype : dtype-like, optional

    Returns
    -------
    array
        ``x`` itself when it is a numba device array of that dtype, else a CuPy
        array (a NumPy array in the simulator).
    """
    if is_numba_array(x) and (dtype is None or np.dtype(dtype) == x.dtype):
        return x
    if cupy is None:
        return np.asarray(x, dtype=dtype)
    return cupy.asarray(x, dtype=dtype)


def to_numpy(x: Any) -> np.ndarray:
    """Copy ``x`` to a host NumPy array (NumPy arrays are returned as they are).

    Parameters
    ----------
    x : array

    Returns
    -------
    numpy.ndarray
    """
    if isinstance(x, np.ndarray):
        return x
    if is_numba_array(x):
        return x.copy_to_host()
    if cupy is not None:
        return cupy.asnumpy(x)
    return np.asarray(x)


def ascontiguous(x: Any) -> Any:
    """``x`` C-contiguous: the same object when it already is.

    Parameters
    ----------
    x : array

    Returns
    -------
    array
        Contiguous numba device arrays are returned as they are; anything else
        goes through CuPy (NumPy in the simulator).
    """
    if is_numba_array(x) and x.is_c_contiguous():
        return x
    xp = np if cupy is None else cupy
    return xp.ascontiguousarray(xp.asarray(x))


def kernel_in(x: Any) -> Any:
    """``x`` as a kernel argument the kernel only reads (arrays it writes go as they are).

    On a GPU, arrays go to the kernel as they are: numba-cuda (0.30) types a CuPy
    array from its DLPack export (``cuda.core``'s ``StridedMemoryView``, a C-level
    view without a Python ``DeviceNDArray``) and passes its pointer, shape and
    strides without synchronising; wrapping each array in a numba
    ``DeviceNDArray`` first (``cuda.as_cuda_array``) would build a Python object,
    a ``MemoryPointer`` and its finaliser per array and launch. The simulator
    copies NumPy arguments in and, unless marked input-only as here, back out:
    read-only inputs and inputs aliasing an output stay untouched.

    Parameters
    ----------
    x : array

    Returns
    -------
    array or argument hint
    """
    if SIMULATOR and isinstance(x, np.ndarray):
        return cuda.In(x)
    return x
