"""What every kernel module needs: numba-cuda, the simulator switch, CuPy, streams, launch sizes.

Importing this module raises :class:`ImportError` when the backend cannot run:
numba-cuda missing (or only Numba's deprecated built-in CUDA target present), or,
outside the simulator, no usable GPU or no CuPy. The registry turns that into a
``BackendNotInstalledError`` naming the ``cuda`` extra.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

try:
    import numba_cuda  # noqa: F401  (the NVIDIA-maintained target that `numba.cuda` redirects to)
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
    "PARTIAL_ROWS",
    "REDUCE_BLOCKS",
    "SIMULATOR",
    "THREADS",
    "TILE_X",
    "blocks_for",
    "cuda",
    "cupy",
    "next_pow2",
    "stream",
]

#: True when ``NUMBA_ENABLE_CUDASIM=1``: kernels run on the CPU, in Python, on NumPy arrays.
SIMULATOR: bool = bool(_cuda_config.ENABLE_CUDASIM)

cupy: ModuleType | None = None
if not SIMULATOR:
    if not cuda.is_available():
        raise ImportError(
            "no CUDA GPU found (numba.cuda.is_available() is False); to run the cuda "
            "backend on the CPU, use the CUDA simulator: NUMBA_ENABLE_CUDASIM=1"
        )
    try:
        import cupy
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
    PARTIAL_ROWS = 3  #: most blocks (rows of [blocks, D] partials) of the LayerNorm backward
else:
    THREADS = 256
    TILE_X = 32
    MAX_BLOCKS = 8192
    REDUCE_BLOCKS = 1024
    PARTIAL_ROWS = 256


def next_pow2(n: int) -> int:
    """Return the smallest power of two ``>= n`` (1 for ``n <= 1``).

    Parameters
    ----------
    n : int

    Returns
    -------
    int
    """
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


_streams: dict[int, Any] = {}


def stream() -> Any:
    """The stream kernels launch on: CuPy's current stream, or 0 in the simulator.

    Returns
    -------
    numba.cuda stream or int
        An external stream wrapping ``cupy.cuda.get_current_stream()`` (cached by
        handle), the legacy default stream for CuPy's null stream.
    """
    if cupy is None:
        return 0
    ptr = cupy.cuda.get_current_stream().ptr
    found = _streams.get(ptr)
    if found is None:
        found = cuda.legacy_default_stream() if ptr == 0 else cuda.external_stream(ptr)
        _streams[ptr] = found
    return found
