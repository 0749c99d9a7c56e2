"""Checks of array arguments, shared by every operation: the one NumPy fast path.

A C-contiguous NumPy array of float32/float64 (what nearly every call passes)
is recognised by :func:`is_kernel_ready` and :func:`prepare` in a couple of type
and dtype tests; everything else (Python sequences, big-endian or float16 data,
other array libraries) takes the slower general path here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from normdrop.errors import (
    BackendArrayError,
    DTypeError,
    InvalidParameterError,
    InvalidParameterTypeError,
    ShapeError,
)
from normdrop.protocol import Array, Backend
from normdrop.registry import resolve_backend

FLOAT_DTYPES = frozenset({np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)})
FLOAT64 = np.dtype(np.float64)
#: Dtypes the kernels compute in directly (float16 is computed in float32).
KERNEL_DTYPES = frozenset({np.dtype(np.float32), FLOAT64})


def is_kernel_ready(x: Any) -> bool:
    """Whether ``x`` is a C-contiguous NumPy float32/float64 array (kernels take it as is)."""
    return type(x) is np.ndarray and x.dtype in KERNEL_DTYPES and x.flags.c_contiguous


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype kernels compute data of ``dtype`` in: float16 is computed in float32."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def coerce(x: Any, name: str = "x") -> Any:
    """Turn Python sequences and (Python or NumPy) scalars into NumPy arrays; leave arrays alone."""
    if not isinstance(x, (list, tuple, int, float, np.generic)):
        return x
    try:
        return np.asarray(x)
    except ValueError:  # a ragged nested sequence
        raise ShapeError(
            f"{name} must be a rectangular nested sequence of numbers (every row the same "
            f"length), got a ragged {type(x).__name__}"
        ) from None


def foreign_hint(x: Any) -> str:
    """What to do with an array of another library, for error messages."""
    if type(x).__module__.split(".", 1)[0] == "torch":
        return "; convert it with .detach().cpu().numpy() (a NumPy view of a CPU tensor)"
    return "; move it there first"


def host_array(name: str, x: Any) -> Any:
    """Coerce ``x`` and check its kind: masked arrays and foreign tensors are refused.

    Other ``numpy.ndarray`` subclasses (``numpy.matrix``, ``numpy.memmap``, a user's
    own) are viewed as plain ndarrays, without a copy: ``numpy.matrix`` keeps two
    dimensions through ``reshape`` and indexing, which the kernels' reshapes rely on.
    NumPy arrays in non-native byte order (big-endian files) are converted to native
    order of the same kind, so the result always has a native dtype.
    """
    x = coerce(x, name)
    if isinstance(x, np.ndarray):
        if isinstance(x, np.ma.MaskedArray):
            raise InvalidParameterError(
                f"{name} must not be a numpy.ma.MaskedArray: normdrop computes on every "
                "element and would silently include the masked ones; pass "
                f"{name}.filled(value) or {name}.compressed() to decide what they mean",
                parameter_name=name,
                value=type(x).__name__,
            )
        if type(x) is not np.ndarray:
            x = x.view(np.ndarray)
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
    elif type(x).__module__.split(".", 1)[0] == "torch":
        raise BackendArrayError(
            f"{name} must be an array of a normdrop backend (NumPy, CuPy, Dask), got "
            f"{type(x).__module__}.{type(x).__qualname__}{foreign_hint(x)}"
        )
    else:
        _check_known_shape(name, x)
        dtype = getattr(x, "dtype", None)
        if isinstance(dtype, np.dtype) and not dtype.isnative and hasattr(x, "astype"):
            x = x.astype(dtype.newbyteorder("="))  # a big-endian Dask array: lazily
    return x


def _check_known_shape(name: str, x: Any) -> None:
    """Refuse an array whose sizes are not known yet (NaN in a Dask array's shape)."""
    shape = getattr(x, "shape", None)
    if isinstance(shape, tuple) and any(isinstance(d, float) and d != d for d in shape):
        raise ShapeError(
            f"{name} must have known sizes, got shape {shape} (a Dask array whose chunk "
            f"sizes are unknown, e.g. after boolean indexing); call "
            f"{name}.compute_chunk_sizes() first"
        )


def caller_array(original: Any, x: Any) -> Any:
    """What an identity operation returns for the caller's ``original`` data, which
    :func:`host_array` turned into ``x``: ``original`` itself where ``x`` is only its plain
    ndarray view (an ndarray subclass such as ``numpy.matrix``), else ``x``."""
    if (
        x is original
        or type(x) is not np.ndarray
        or not isinstance(original, np.ndarray)
        or original.dtype != x.dtype
    ):
        return x
    same = x.__array_interface__ == original.__array_interface__
    return original if same else x


def check_float(name: str, x: Any) -> np.dtype:
    """Return the dtype of ``x`` if it is float16/32/64; else raise :class:`DTypeError`."""
    if type(x) is np.ndarray and x.dtype in FLOAT_DTYPES:
        return x.dtype
    dtype = getattr(x, "dtype", None)
    try:
        dtype = np.asarray(x).dtype if dtype is None else np.dtype(dtype)
    except TypeError:  # a dtype NumPy does not know (another library's)
        raise DTypeError(f"{name} must have dtype float32 or float64, got {dtype}") from None
    if dtype not in FLOAT_DTYPES:
        raise DTypeError(
            f"{name} must have dtype float32 or float64 (float16 is computed in float32), "
            f"got {dtype}"
        )
    return dtype


def prepare(name: str, x: Any, backend: str | Backend | None) -> tuple[Backend, Array]:
    """Check the data argument ``x`` and pick its backend; return ``(backend, x)``.

    ``x`` comes back as an array (sequences converted, byte order made native).
    """
    if type(x) is np.ndarray and x.dtype in FLOAT_DTYPES:
        return resolve_backend(x, backend), x
    x = host_array(name, x)
    be = resolve_backend(x, backend)
    check_float(name, x)
    return be, x


def prepare_grad(be: Backend, grad_output: Any, x: Any, name: str = "grad_output") -> Array:
    """Check a gradient against the forward input ``x``: kind, dtype, backend and shape."""
    if not (type(grad_output) is np.ndarray and grad_output.dtype in FLOAT_DTYPES):
        grad_output = host_array(name, grad_output)
        check_float(name, grad_output)
    if not be.accepts(grad_output):
        resolve_backend(grad_output, be)  # raises BackendArrayError naming both kinds
    if tuple(grad_output.shape) != tuple(x.shape):
        raise ShapeError(
            f"{name} must have the input's shape {tuple(x.shape)}, got {tuple(grad_output.shape)}"
        )
    return grad_output


def check_partner(be: Backend, name: str, a: Any, x: Any) -> Array:
    """``a`` (a residual or its gradient) checked against ``x``: kind, backend, shape and
    dtype; sequences are converted and a non-native byte order made native, as for ``x``."""
    a = host_array(name, a)
    check_float(name, a)
    if not be.accepts(a):
        resolve_backend(a, be)  # raises BackendArrayError naming both kinds
    if tuple(a.shape) != tuple(x.shape):
        raise ShapeError(f"{name} must have the shape of x {tuple(x.shape)}, got {tuple(a.shape)}")
    if np.dtype(a.dtype) != np.dtype(x.dtype):
        raise DTypeError(f"{name} must have the dtype of x ({x.dtype}), got {a.dtype}")
    return a


def vector(be: Backend, name: str, v: Any, shape: tuple[int, ...], float64: bool = True) -> Any:
    """A per-channel or per-feature argument as a flat array of the backend.

    It is converted to float64 unless ``float64`` is False (for fused kernels that
    read any float dtype); non-native byte order is converted to native, and a
    read-only NumPy vector is copied (never written here). ``None`` stays ``None``.
    """
    if v is None:
        return None
    if (
        type(v) is np.ndarray
        and v.dtype in KERNEL_DTYPES
        and v.shape == shape
        and be.device == "cpu"
        and v.flags.writeable
    ):  # the common case: a writeable host vector of the right shape
        v = v if v.ndim == 1 else v.reshape(-1)
        return v if v.dtype == FLOAT64 or not float64 else v.astype(np.float64)
    v = host_array(name, v)
    host_ok = be.device == "cpu" and type(v) is np.ndarray  # CPU backends share host vectors
    if not (host_ok or be.accepts(v)):
        raise BackendArrayError(
            f"{name} must be an array of the {be.name!r} backend (device {be.device!r}), "
            f"got {type(v).__module__}.{type(v).__qualname__}{foreign_hint(v)}"
        )
    if v.shape != shape:
        raise ShapeError(f"{name} must have shape {shape}, got {tuple(v.shape)}")
    if v.dtype not in FLOAT_DTYPES:
        check_float(name, v)
    if isinstance(v, np.ndarray) and not v.flags.writeable:
        v = np.array(v)  # kernels take writeable arrays; a vector costs little to copy
    v = v.reshape(-1)
    return v if v.dtype == FLOAT64 or not float64 else v.astype(np.float64)


def statistic(be: Backend, name: str, v: Any, shape: tuple[int, ...]) -> Any:
    """A statistic a backward pass needs (``mean`` or ``rstd``) as :func:`vector` makes it.

    Raises
    ------
    InvalidParameterTypeError
        ``v`` is ``None``: unlike a weight, a statistic cannot be left out.
    """
    if v is None:
        raise InvalidParameterTypeError(
            f"{name} must be an array of shape {shape}, the {name} the forward pass returned "
            "(its *_with_stats function), got None",
            parameter_name=name,
            value=v,
        )
    return vector(be, name, v, shape)


def as_float64(v: Any) -> Any:
    """``v`` (a flat vector or ``None``) in float64, copied only when it is not already."""
    return v if v is None or v.dtype == FLOAT64 else v.astype(np.float64)


def writeable(a: Any) -> bool:
    """False for read-only NumPy arrays (e.g. ``np.load(..., mmap_mode="r")``)."""
    return not isinstance(a, np.ndarray) or bool(a.flags.writeable)


def read_only_error(name: str, a: Any, why: str) -> InvalidParameterError:
    """The error for a read-only array that an operation would write."""
    return InvalidParameterError(
        f"{name} must be a writeable array ({why}), got a read-only {type(a).__name__} "
        "(e.g. from np.load(..., mmap_mode='r')); pass a writeable copy such as "
        f"np.array({name})",
        parameter_name=name,
        value=a,
    )


def check_out(be: Backend, out: Any, like: Any, name: str = "out") -> None:
    """Check an ``out=`` argument: the backend's kind, ``like``'s shape and dtype, writeable."""
    if not be.accepts(out) or isinstance(out, np.ma.MaskedArray):
        raise InvalidParameterError(
            f"{name} must be an array of the {be.name!r} backend, got {type(out).__name__}",
            parameter_name=name,
            value=type(out).__name__,
        )
    if isinstance(out, np.matrix):
        raise InvalidParameterError(
            f"{name} must not be a numpy.matrix (it keeps two dimensions through reshape); "
            f"pass np.asarray({name}), a view of the same memory",
            parameter_name=name,
            value=type(out).__name__,
        )
    if tuple(out.shape) != tuple(like.shape):
        raise ShapeError(f"{name} must have shape {tuple(like.shape)}, got {tuple(out.shape)}")
    if np.dtype(out.dtype).newbyteorder("=") != np.dtype(like.dtype):
        raise DTypeError(f"{name} must have dtype {like.dtype}, got {out.dtype}")
    if not writeable(out):
        raise read_only_error(name, out, "the result is written into it")
