"""Memory speed for ``normdrop bench``: how fast this machine streams a large array.

Memory speed is the best of two copies of a :data:`MEMORY_BYTES` array (256 MiB, far
beyond any CPU's last-level cache, so the copy streams from and to DRAM), measured in
the same run as the kernels:

- ``np.copyto(dst, src)`` (one thread), and
- a Numba copy split over :data:`COPY_THREADS` threads (when Numba is installed).

Bytes are counted the same way for the copy and for the kernels: a copy of ``n`` bytes
moves ``2 n`` bytes (it reads ``n`` and writes ``n``), and a kernel moves the bytes it
must read plus the bytes it must write. A kernel's *share of memory speed* is the time
the memory speed needs for the kernel's bytes divided by the kernel's time; 100% means
the kernel runs as fast as a copy of the same traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from normdrop.bench.target import Thunk
from normdrop.bench.timing import Settings, Timing, measure_rounds

__all__ = [
    "COPY_THREADS",
    "MEMORY_BYTES",
    "MemorySpeed",
    "copy_thunks",
    "memory_share",
    "memory_speed",
    "run_memory_speed",
]

#: Size of the copied array: 256 MiB, 8x a 32 MiB L3.
MEMORY_BYTES = 256 * 2**20
#: Threads of the Numba copy.
COPY_THREADS = 2


@dataclass(frozen=True)
class MemorySpeed:
    """The memory speed of this run.

    Attributes
    ----------
    array_bytes : int
        Size of the copied array.
    copies : dict of str to float
        Best per-call time of each copy that ran, in seconds (``"np.copyto"``, and
        ``"numba 2 threads"`` when Numba is installed).
    """

    array_bytes: int
    copies: dict[str, float]

    @property
    def moved_bytes(self) -> int:
        """Bytes one copy moves: the array read plus the array written."""
        return 2 * self.array_bytes

    @property
    def best(self) -> str:
        """Name of the fastest copy."""
        return min(self.copies, key=self.copies.__getitem__)

    @property
    def bytes_per_s(self) -> float:
        """Memory speed: moved bytes per second of the fastest copy."""
        return self.moved_bytes / self.copies[self.best]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: sizes, each copy's GB/s and the memory speed."""
        return {
            "array_bytes": self.array_bytes,
            "moved_bytes": self.moved_bytes,
            "copies_gbps": {k: self.moved_bytes / t / 1e9 for k, t in self.copies.items()},
            "best": self.best,
            "gbps": self.bytes_per_s / 1e9,
        }


def memory_share(
    moved_bytes: float, seconds: float | None, speed: MemorySpeed | None
) -> float | None:
    """Share of memory speed that a kernel reaches.

    Parameters
    ----------
    moved_bytes : float
        Bytes the kernel must read plus bytes it must write.
    seconds : float or None
        The kernel's time; ``None`` when it was not timed.
    speed : MemorySpeed or None
        This run's memory speed; ``None`` when it was not measured.

    Returns
    -------
    float or None
        ``(moved_bytes / memory speed) / seconds``, or ``None`` when either is missing.
    """
    if seconds is None or speed is None or seconds <= 0:
        return None
    return moved_bytes / speed.bytes_per_s / seconds


def memory_speed(
    measure: Callable[[dict[str, Thunk]], dict[str, float]],
    array_bytes: int = MEMORY_BYTES,
) -> MemorySpeed:
    """Measure the memory speed.

    Parameters
    ----------
    measure : callable
        Takes ``{name: thunk}`` and returns each thunk's best per-call time in
        seconds (the bench's interleaved rounds).
    array_bytes : int
        Size of the copied array.

    Returns
    -------
    MemorySpeed
    """
    thunks = copy_thunks(array_bytes)
    return MemorySpeed(max(8, array_bytes // 8 * 8), measure(thunks))


def copy_thunks(array_bytes: int = MEMORY_BYTES) -> dict[str, Thunk]:
    """The copies whose best time defines the memory speed, by name.

    Parameters
    ----------
    array_bytes : int
        Size of the copied array (rounded down to whole float64 values).

    Returns
    -------
    dict of str to callable
        ``"np.copyto"``, and ``"numba 2 threads"`` when Numba is installed.
    """
    n = max(1, array_bytes // 8)
    src = np.random.default_rng(3).standard_normal(n)
    dst = np.empty_like(src)
    thunks: dict[str, Thunk] = {"np.copyto": lambda: np.copyto(dst, src)}
    numba_copy = _numba_copy(src, dst)
    if numba_copy is not None:
        thunks[f"numba {COPY_THREADS} threads"] = numba_copy
    return thunks


def run_memory_speed(settings: Settings, bar: Any, array_bytes: int) -> MemorySpeed | None:
    """This run's memory speed, timed in interleaved rounds like the cases.

    Parameters
    ----------
    settings : Settings
        How to measure.
    bar : progress bar
        As :func:`normdrop.bench.timing.progress_bar` returns.
    array_bytes : int
        Size of the copied array.

    Returns
    -------
    MemorySpeed or None
        ``None`` when every copy failed.
    """

    def measure(thunks: dict[str, Thunk]) -> dict[str, float]:
        timings = measure_rounds(dict(thunks), settings, bar, "memory speed")
        return {k: t.best for k, t in timings.items() if isinstance(t, Timing)}

    speed = memory_speed(measure, array_bytes)
    return speed if speed.copies else None


def _numba_copy(src: np.ndarray, dst: np.ndarray) -> Thunk | None:
    """A copy of ``src`` into ``dst`` over :data:`COPY_THREADS` Numba threads, or ``None``."""
    try:
        import numba
    except ImportError:
        return None
    kernel = _copy_kernel(numba)
    threads = min(COPY_THREADS, numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]

    def copy() -> None:
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            kernel(src, dst, threads)
        finally:
            numba.set_num_threads(previous)

    return copy


def _copy_kernel(numba: Any) -> Callable[[np.ndarray, np.ndarray, int], None]:
    @numba.njit(parallel=True, nogil=True, cache=True)
    def copy_blocks(src: np.ndarray, dst: np.ndarray, blocks: int) -> None:  # pragma: no cover
        n = src.size
        step = (n + blocks - 1) // blocks
        for i in numba.prange(blocks):
            start = i * step
            stop = min(n, start + step)
            dst[start:stop] = src[start:stop]

    return copy_blocks
