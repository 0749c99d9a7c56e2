"""What every kernel module needs: numba-cuda, the simulator switch, CuPy, streams, launch sizes.

Importing this module raises :class:`ImportError` when the backend cannot run:
numba-cuda missing (or only Numba's deprecated built-in CUDA target present), or,
outside the simulator, no usable GPU or no CuPy. The registry turns that into a
``BackendNotInstalledError`` naming the ``cuda`` extra.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from types import ModuleType
from typing import Any

import numpy as np

try:  # the NVIDIA-maintained target that `numba.cuda` redirects to (untyped: imported by name)
    importlib.import_module("numba_cuda")
except ImportError as exc:
    raise ImportError(
        "the cuda backend needs the numba-cuda package (the maintained CUDA target of Numba)"
    ) from exc

from numba import cuda

if getattr(cuda, "implementation", None) != "NVIDIA":
    raise ImportError(
        "numba.cuda resolves to Numba's deprecated built-in CUDA target, not numba-cuda; "
        "reinstall numba-cuda"
    )

from numba.cuda.core import config as _cuda_config

__all__ = [
    "MAX_BLOCKS",
    "REDUCE_BLOCKS",
    "SIMULATOR",
    "THREADS",
    "TILE_X",
    "CHECK_SIGNATURES",
    "BLOCKS_PER_SM",
    "blocks_for",
    "device_blocks",
    "cuda",
    "cupy",
    "kernel",
    "launch",
    "next_pow2",
    "on_device",
    "sm_count",
    "stream",
]

#: True when ``NUMBA_ENABLE_CUDASIM=1``: kernels run on the CPU, in Python, on NumPy arrays.
SIMULATOR: bool = bool(_cuda_config.ENABLE_CUDASIM)


def _serialise_simulator_shared_arrays() -> None:
    """Make the simulator's ``cuda.shared.array`` hand every thread of a block the same array.

    numba-cuda's simulator (0.30) runs each CUDA thread as a Python thread and
    allocates a block's shared array on first use with an unlocked
    check-then-set (``FakeCUDAShared.array``: look the call site up, else
    ``np.empty`` and store). When the interpreter switches threads between the
    two, two threads of the first block each allocate and keep their own array,
    so the block's tree reduction adds a private copy: a BatchNorm output with
    one wrong channel (the first block's) once in a few hundred launches. This
    replaces the method with the same lookup (call site = file and line) under a
    lock; dynamic shared memory and alignments go to the original.
    """
    from numba.cuda.simulator import kernelapi

    shared = getattr(kernelapi, "FakeCUDAShared", None)
    if shared is None or getattr(shared.array, "_serialised", False):
        return
    original = shared.array
    lock = threading.Lock()

    def array(self: Any, shape: Any, dtype: Any, alignment: Any = None) -> Any:
        if alignment is not None or (isinstance(shape, int) and shape == 0):
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        frame = sys._getframe(1)
        caller = (frame.f_code.co_filename, frame.f_lineno)
        with lock:
            found = self._allocations.get(caller)
            if found is None:
                found = self._allocations[caller] = np.empty(shape, dtype)
        return found

    array._serialised = True  # type: ignore[attr-defined]
    shared.array = array


if SIMULATOR:
    _serialise_simulator_shared_arrays()


_ROW_STACK = "row_stack"  # the name NumPy 2.5 removed (spelled out for the linter's NumPy 2 rule)


def _load_array_overloads_on_numpy_2_5() -> None:
    """Import numba-cuda's array overloads where NumPy has no ``row_stack`` (NumPy >= 2.5).

    numba-cuda (0.30.4 and older) registers an overload of ``numpy.row_stack``, the alias
    of ``numpy.vstack`` that NumPy 2.5 removed, when its target first loads; without it
    every kernel compile fails with ``AttributeError``. The alias is put back only while
    that module is imported, so the user's NumPy is left as it was.
    """
    if SIMULATOR or hasattr(np, _ROW_STACK):
        return
    setattr(np, _ROW_STACK, np.vstack)
    try:
        importlib.import_module("numba.cuda.np.arrayobj")
    finally:
        delattr(np, _ROW_STACK)


_load_array_overloads_on_numpy_2_5()


cupy: ModuleType | None = None
if not SIMULATOR:
    if not cuda.is_available():
        raise ImportError(
            "no CUDA GPU found (numba.cuda.is_available() is False); to run the cuda "
            "backend on the CPU, use the CUDA simulator: NUMBA_ENABLE_CUDASIM=1"
        )
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        raise ImportError(
            "the cuda backend needs CuPy on a GPU: cupy-cuda12x (CUDA 12) or cupy-cuda13x (CUDA 13)"
        ) from exc

# ----- launch geometry ------------------------------------------------------------
# Every block size is a power of two (the shared-memory reductions halve it). The
# simulator runs one Python thread per CUDA thread and one block after another, so
# there everything is tiny; grid-stride loops cover any size either way.
if SIMULATOR:
    THREADS = 8  #: threads per block
    TILE_X = 4  #: widest channel tile of the 2-D BatchNorm block for (N, C) data
    MAX_BLOCKS = 3  #: cap of grid-stride grids (odd, so loops have ragged tails)
    REDUCE_BLOCKS = 4  #: target number of blocks of a two-stage reduction
else:
    THREADS = 256
    TILE_X = 32
    MAX_BLOCKS = 8192
    REDUCE_BLOCKS = 1024


def next_pow2(n: int) -> int:
    """Return the smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 << max(0, int(n) - 1).bit_length()


def blocks_for(units: int, per_block: int = THREADS, cap: int = MAX_BLOCKS) -> int:
    """Number of blocks of a grid-stride launch over ``units`` work items (at least 1).

    Parameters
    ----------
    units : int
        Work items (elements, Philox blocks, bytes, rows...).
    per_block : int, default THREADS
        Work items one block covers per loop iteration.
    cap : int, default MAX_BLOCKS
        Most blocks to launch.

    Returns
    -------
    int
    """
    return max(1, min(cap, -(-units // per_block)))


_streams: dict[tuple[int, int], Any] = {}
_sm_counts: dict[int, int] = {}


def stream() -> Any:
    """The stream kernels launch on: CuPy's current stream of the current device, or 0.

    Returns
    -------
    numba.cuda stream or int
        An external stream wrapping ``cupy.cuda.get_current_stream()`` (cached by
        ``(device, handle)``: two GPUs may reuse a handle value), the legacy default
        stream for CuPy's null stream, 0 in the simulator.
    """
    if cupy is None:
        return 0
    device = cupy.cuda.runtime.getDevice()
    ptr = cupy.cuda.get_current_stream(device).ptr
    found = _streams.get((device, ptr))
    if found is None:
        found = cuda.legacy_default_stream() if ptr == 0 else cuda.external_stream(ptr)
        _streams[device, ptr] = found
    return found


#: Blocks per multiprocessor of a grid-stride kernel sized from the device (2048 threads per
#: SM / THREADS).
BLOCKS_PER_SM = 2 if SIMULATOR else 8


def device_blocks(units: int, per_block: int = THREADS) -> int:
    """Blocks of a grid-stride launch over ``units`` work items: at most enough to fill the GPU.

    Parameters
    ----------
    units : int
    per_block : int, default THREADS
        Work items one block covers per loop iteration.

    Returns
    -------
    int
        :func:`blocks_for` capped at ``BLOCKS_PER_SM`` blocks per multiprocessor.
    """
    return blocks_for(units, per_block, sm_count() * BLOCKS_PER_SM)


def sm_count() -> int:
    """Streaming multiprocessors of the current device (a small number in the simulator)."""
    if cupy is None:
        return 2
    device = cupy.cuda.runtime.getDevice()
    found = _sm_counts.get(device)
    if found is None:
        props = cupy.cuda.runtime.getDeviceProperties(device)
        found = _sm_counts[device] = int(props["multiProcessorCount"])
    return found


class on_device:  # noqa: N801  (used as a ``with`` statement, like CuPy's ``Device``)
    """Make ``x``'s GPU current for the ``with`` block; ``as`` gives its :func:`stream`.

    Kernels must run on the device that holds their arrays, on CuPy's current
    stream of that device; numba-cuda launches in the CUDA context current on the
    thread, which CuPy's ``Device`` switches. Nothing happens when ``x`` is on the
    current device already (the common, one-GPU case), in the simulator, or for
    arrays that do not say where they live.

    Parameters
    ----------
    x : array
    """

    __slots__ = ("_switch",)

    def __init__(self, x: Any) -> None:
        self._switch = None
        if cupy is not None:
            device = getattr(x, "device", None)
            if isinstance(device, cupy.cuda.Device) and device.id != cupy.cuda.runtime.getDevice():
                self._switch = device

    def __enter__(self) -> Any:
        if self._switch is not None:
            self._switch.__enter__()
        return stream()

    def __exit__(self, *exc: Any) -> None:
        if self._switch is not None:
            self._switch.__exit__(*exc)


def kernel(fn: Any) -> Any:
    """``cuda.jit(cache=True)``: a kernel whose compiled code is kept on disk.

    The on-disk cache (numba-cuda's ``CUDACache``, in ``__pycache__`` next to the
    module or under ``NUMBA_CACHE_DIR``) spares each new process the compilation
    of every kernel it launches; the simulator ignores it.
    """
    return cuda.jit(cache=True)(fn)


#: When True (the test suite sets ``NORMDROP_CUDA_CHECK_SIGNATURES=1``), every launch
#: checks that its argument types are in :mod:`._signatures`' table, which the PTX
#: compile check compiles: a launcher passing a new type combination fails the suite.
CHECK_SIGNATURES: bool = os.environ.get("NORMDROP_CUDA_CHECK_SIGNATURES") == "1"


#: Configured launches by ``(kernel, grid, block, stream)``: numba-cuda's own cache of them is
#: one least-recently-used cache of 128 entries shared by every kernel.
_configured: dict[tuple[Any, Any, Any, Any], Any] = {}
_MAX_CONFIGURED = 4096


def launch(fn: Any, grid: Any, block: Any, s: Any, *args: Any) -> None:
    """Launch kernel ``fn`` with ``grid`` blocks of ``block`` threads on stream ``s``.

    On a GPU the configured launch (``fn[grid, block, s]``) is kept for the next
    call with the same geometry and stream; the arguments go to numba-cuda as
    they are.

    Parameters
    ----------
    fn : numba.cuda dispatcher
    grid, block : int or tuple of int
    s : stream
        From :func:`stream`.
    *args
        Kernel arguments (see :mod:`._arrays` for arrays).
    """
    if CHECK_SIGNATURES:
        from ._signatures import check_launch

        check_launch(fn, args)
    if SIMULATOR:  # the simulator's fn[...] reconfigures and returns the kernel itself
        fn[grid, block, s](*args)
        return
    key = (fn, grid, block, s)
    configured = _configured.get(key)
    if configured is None:
        if len(_configured) >= _MAX_CONFIGURED:
            _configured.clear()
        configured = _configured[key] = fn[grid, block, s]
    configured(*args)
