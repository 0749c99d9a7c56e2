"""Compilation options and work-splitting constants shared by every Numba kernel.

Every kernel is compiled lazily (on first use, once per dtype) and cached on
disk in the user's cache folder (:mod:`.disk_cache`; not at all when no folder is
writable). Parallel kernels split their work into
tasks whose boundaries depend only on the array's shape, never on the thread
count, so results are bit-identical on any number of threads and on the serial
path (which runs the same tasks one after another).
"""

from __future__ import annotations

from numba import njit

from .compile_events import listen
from .disk_cache import kernel_cache_folder

__all__ = ["FASTMATH", "PARALLEL_MIN_SIZE", "TASK_SIZE", "inline_jit", "parallel_jit", "serial_jit"]

#: ``fastmath=True`` minus ``nsz``, ``nnan`` and ``ninf``. ``reassoc`` is what lets LLVM
#: vectorise the float64 reductions (``contract``: FMAs, ``arcp``/``afn``: cheaper
#: division and sqrt). With ``nsz`` as well, the summation order LLVM picks was
#: seen to differ between a kernel compiled in-process and the same kernel loaded
#: from the on-disk cache (a different last bit in a BatchNorm variance between
#: a first and a second run); ``nnan``/``ninf`` would let it assume away the NaN
#: and inf that the reference propagates.
FASTMATH = {"reassoc", "contract", "arcp", "afn"}

listen()  # tell the user when kernels compile (not when they load from the cache)
_OPTIONS = {
    "fastmath": FASTMATH,
    "error_model": "numpy",
    "boundscheck": False,
    "cache": kernel_cache_folder() is not None,
}

#: Decorator for kernels that spread their tasks over threads with ``prange``.
parallel_jit = njit(parallel=True, **_OPTIONS)

#: Decorator for single-threaded kernels and for the helpers the kernels call.
serial_jit = njit(parallel=False, **_OPTIONS)

#: Decorator for tiny helpers inlined into their callers at Numba IR level, so that
#: the loop around the call can be vectorised.
inline_jit = njit(parallel=False, inline="always", **_OPTIONS)

#: Elements per parallel task: big enough that a thread's share of a two-pass
#: reduction (at most 256 KiB of float64) stays in its L2 cache between the passes,
#: small enough to balance many threads.
TASK_SIZE = 32768

#: Below this many elements the backend calls the serial kernels, which wake no
#: threads. Measured on 2 cores (AMD EPYC, float32, BatchNorm moments and affine,
#: LayerNorm forward and backward, dropout; threads hot from a previous call, and
#: idle for 5 ms before it): with one task (up to TASK_SIZE elements) the
#: parallel kernels only add their 2-6 us launch cost; from two tasks on they win
#: when hot (48K elements: 10.0 vs 11.9 us moments, 18.5 vs 24.8 us LayerNorm,
#: 32 vs 45 us dropout) and break even when cold; at 64K they win in both cases.
PARALLEL_MIN_SIZE = 3 * TASK_SIZE // 2
