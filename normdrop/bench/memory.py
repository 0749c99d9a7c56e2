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

Next to the copies, the same rounds time a read-only pass over the same array: a
:data:`COPY_THREADS`-thread Numba sum, which reads every byte and writes nothing. Its
*read speed* (bytes read per second) prices the bytes a kernel must read twice
(:mod:`normdrop.bench.bound`); it does not change the memory speed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from normdrop.bench.target import Thunk
from normdrop.bench.timing import Settings, Timing, measure_rounds
from normdrop.errors import InvalidParameterError

__all__ = [
    "COPY_THREADS",
    "MEMORY_BYTES",
    "READ_NAME",
    "MemoryProbe",
    "MemorySpeed",
    "copy_thunks",
    "last_level_cache_bytes",
    "memory_share",
    "memory_speed",
    "probe_of_option",
    "read_thunk",
    "run_memory_speed",
]

#: Size of the copied array: 256 MiB, 8x a 32 MiB L3.
MEMORY_BYTES = 256 * 2**20
#: Threads of the Numba copy.
COPY_THREADS = 2
#: Name of the read-only pass among the timed thunks.
READ_NAME = f"numba read {COPY_THREADS} threads"
#: Where Linux describes CPU 0's caches: one ``index*`` folder per cache.
SYS_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


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
    read_s : float or None
        Best per-call time of the read-only pass over ``array_bytes`` (:data:`READ_NAME`),
        or ``None`` when it did not run (no Numba).
    last_level_cache : int or None
        Size of the CPU's last-level cache in bytes (:func:`last_level_cache_bytes`), or
        ``None`` when unknown.
    """

    array_bytes: int
    copies: dict[str, float]
    read_s: float | None = None
    last_level_cache: int | None = None

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

    @property
    def read_bytes_per_s(self) -> float | None:
        """Read speed: bytes read per second by the read-only pass, or ``None``."""
        if self.read_s is None or self.read_s <= 0:
            return None
        return self.array_bytes / self.read_s

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: sizes, each copy's GB/s, the memory speed, the read
        speed and the last-level cache size."""
        read = self.read_bytes_per_s
        return {
            "array_bytes": self.array_bytes,
            "moved_bytes": self.moved_bytes,
            "copies_gbps": {k: self.moved_bytes / t / 1e9 for k, t in self.copies.items()},
            "best": self.best,
            "gbps": self.bytes_per_s / 1e9,
            "read": READ_NAME if read is not None else None,
            "read_gbps": read / 1e9 if read is not None else None,
            "last_level_cache_bytes": self.last_level_cache,
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


class MemoryProbe:
    """The copies and the read-only pass that define the memory speed, built once.

    ``normdrop bench`` times them at the start of a run (the header's memory speed) and
    again in each case's own interleaved rounds, so that each row's share of memory
    speed uses what the memory gave while that case ran: on a shared or virtual
    machine the memory speed can change by 2x within minutes.

    Parameters
    ----------
    array_bytes : int
        Size of the copied (and read) array.

    Attributes
    ----------
    thunks : dict of str to callable
        The copies (:func:`copy_thunks`) and, with Numba, :data:`READ_NAME`
        (:func:`read_thunk`).
    """

    def __init__(self, array_bytes: int = MEMORY_BYTES) -> None:
        self.array_bytes = max(8, array_bytes // 8 * 8)
        self.thunks = copy_thunks(array_bytes)
        read = read_thunk(array_bytes)
        if read is not None:
            self.thunks[READ_NAME] = read
        self.last_level_cache = last_level_cache_bytes()

    def speed(self, times: dict[str, float]) -> MemorySpeed:
        """The memory speed that the best per-call ``times`` (seconds, by thunk name)
        define; copies that did not run are left out."""
        copies = {k: t for k, t in times.items() if k in self.thunks and k != READ_NAME}
        return MemorySpeed(self.array_bytes, copies, times.get(READ_NAME), self.last_level_cache)


def probe_of_option(mib: int) -> MemoryProbe:
    """The probe of ``normdrop bench --memory-mib``: arrays of ``mib`` MiB.

    Parameters
    ----------
    mib : int
        Size of the copied array in MiB.

    Returns
    -------
    MemoryProbe

    Raises
    ------
    InvalidParameterError
        When the arrays cannot be allocated (before anything is timed).
    """
    try:
        return MemoryProbe(mib * 2**20)
    except MemoryError:
        raise InvalidParameterError(
            f"--memory-mib must be a size this machine can allocate twice, got {mib}",
            parameter_name="--memory-mib",
            value=mib,
        ) from None


def memory_speed(
    measure: Callable[[dict[str, Thunk]], dict[str, float]],
    array_bytes: int = MEMORY_BYTES,
    probe: MemoryProbe | None = None,
) -> MemorySpeed:
    """Measure the memory speed and the read speed, and read the last-level cache size.

    Parameters
    ----------
    measure : callable
        Takes ``{name: thunk}`` (the copies and the read-only pass) and returns each
        thunk's best per-call time in seconds (the bench's interleaved rounds).
    array_bytes : int
        Size of the copied (and read) array, when no ``probe`` is given.
    probe : MemoryProbe, optional
        The thunks to time (built for ``array_bytes`` when not given).

    Returns
    -------
    MemorySpeed
    """
    probe = MemoryProbe(array_bytes) if probe is None else probe
    return probe.speed(measure(dict(probe.thunks)))


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


def read_thunk(array_bytes: int = MEMORY_BYTES) -> Thunk | None:
    """The read-only pass that defines the read speed, or ``None`` without Numba.

    A sum of an ``array_bytes`` array over :data:`COPY_THREADS` Numba threads, each
    thread summing its block into a partial sum that the call returns, so that no
    compiler can drop the reads. The values are summed as 64-bit integers (wrapping
    around): integer additions may be reordered, so the compiler vectorises the sums
    into many independent chains and the pass is bound by memory, not by the latency
    of one chain of additions.

    Parameters
    ----------
    array_bytes : int
        Size of the read array (rounded down to whole 8-byte values).

    Returns
    -------
    callable or None
    """
    try:
        import numba
    except ImportError:
        return None
    src = np.random.default_rng(4).integers(0, 2**62, max(1, array_bytes // 8), np.uint64)
    kernel = _sum_kernel(numba)
    return _on_copy_threads(numba, lambda threads: int(kernel(src, threads)))


def last_level_cache_bytes(
    sysconf: Callable[[str], int] | None = None, cache_dir: Path | None = None
) -> int | None:
    """Size of this CPU's last-level cache in bytes, or ``None`` when it cannot be read.

    Tries ``os.sysconf("SC_LEVEL3_CACHE_SIZE")`` (Linux with glibc), then the
    highest-level cache under ``/sys/devices/system/cpu/cpu0/cache`` (Linux), where a
    ``size`` reads like ``32768K``.

    Parameters
    ----------
    sysconf : callable, optional
        Stands in for :func:`os.sysconf` (tests).
    cache_dir : pathlib.Path, optional
        Stands in for :data:`SYS_CACHE_DIR` (tests).

    Returns
    -------
    int or None
    """
    sysconf = sysconf if sysconf is not None else getattr(os, "sysconf", None)
    if sysconf is not None:
        try:
            size = int(sysconf("SC_LEVEL3_CACHE_SIZE"))
        except (ValueError, OSError, TypeError):
            size = 0
        if size > 0:
            return size
    return _sys_cache_bytes(SYS_CACHE_DIR if cache_dir is None else cache_dir)


def _sys_cache_bytes(cache_dir: Path) -> int | None:
    """The size of the highest-level data or unified cache under ``cache_dir``, or ``None``."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
    best: tuple[int, int] | None = None
    try:
        indexes = sorted(cache_dir.glob("index*"))
    except OSError:
        return None
    for index in indexes:
        try:
            level = int((index / "level").read_text().strip())
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip().upper()
            size = int(text.rstrip("KMG")) * units[text[len(text.rstrip("KMG")) :]]
        except (OSError, ValueError, KeyError):
            continue
        if kind != "Instruction" and size > 0 and (best is None or level > best[0]):
            best = (level, size)
    return None if best is None else best[1]


def run_memory_speed(
    settings: Settings, bar: Any, array_bytes: int, probe: MemoryProbe | None = None
) -> MemorySpeed | None:
    """This run's memory speed, timed in interleaved rounds like the cases.

    Parameters
    ----------
    settings : Settings
        How to measure.
    bar : progress bar
        As :func:`normdrop.bench.timing.progress_bar` returns.
    array_bytes : int
        Size of the copied array.
    probe : MemoryProbe, optional
        Thunks already built for ``array_bytes``.

    Returns
    -------
    MemorySpeed or None
        ``None`` when every copy failed (the read-only pass alone defines no speed).
    """

    def measure(thunks: dict[str, Thunk]) -> dict[str, float]:
        timings = measure_rounds(dict(thunks), settings, bar, "memory speed")
        return {k: t.best for k, t in timings.items() if isinstance(t, Timing)}

    speed = memory_speed(measure, array_bytes, probe)
    return speed if speed.copies else None


def _numba_copy(src: np.ndarray, dst: np.ndarray) -> Thunk | None:
    """A copy of ``src`` into ``dst`` over :data:`COPY_THREADS` Numba threads, or ``None``."""
    try:
        import numba
    except ImportError:
        return None
    kernel = _copy_kernel(numba)
    return _on_copy_threads(numba, lambda threads: kernel(src, dst, threads))


def _on_copy_threads(numba: Any, call: Callable[[int], Any]) -> Thunk:
    """A thunk running ``call(threads)`` on :data:`COPY_THREADS` Numba threads (fewer when
    Numba has fewer), restoring the previous thread count after."""
    threads = min(COPY_THREADS, numba.config.NUMBA_NUM_THREADS)

    def run() -> Any:
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            return call(threads)
        finally:
            numba.set_num_threads(previous)

    return run


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


def _sum_kernel(numba: Any) -> Callable[[np.ndarray, int], int]:
    @numba.njit(parallel=True, nogil=True, cache=True)
    def sum_blocks(src: np.ndarray, blocks: int) -> int:  # pragma: no cover
        n = src.size
        step = (n + blocks - 1) // blocks
        partial = np.zeros(blocks, np.uint64)
        for i in numba.prange(blocks):
            # a slice indexed from 0: an index Numba cannot prove non-negative gets a
            # wraparound select that keeps the loop from vectorising
            block = src[i * step : min(n, (i + 1) * step)]
            s = np.uint64(0)
            for j in range(block.size):
                s += block[j]
            partial[i] = s
        return partial.sum()

    return sum_blocks
