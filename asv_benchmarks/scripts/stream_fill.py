"""Write bandwidth with ordinary and with streaming (non-temporal) stores.

Fills a 256 MiB float32 array on one Numba thread and on two, with ordinary stores and
with :func:`normdrop.backends.numba_backend.stream.stream_row` (a 1024-value buffer
stored a cache line at a time), in interleaved rounds, and prints the best GB/s of each.
Whether streaming pays for a kernel's output depends on these numbers on the machine at
hand (docs/benchmarks.md, "Kernel tuning"). Run as
``python asv_benchmarks/scripts/stream_fill.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange

from normdrop.backends.numba_backend import stream

#: Values filled per call: 256 MiB of float32, eight times this machine's L3.
VALUES = 64 << 20
#: Values per streamed buffer (4 KiB of float32, well within L1).
BUFFER = 1024


@njit(nogil=True)
def _fill_ordinary(a: np.ndarray, value: np.float32) -> None:
    for i in range(a.size):
        a[i] = value


@njit(nogil=True)
def _fill_streamed(a: np.ndarray, buffer: np.ndarray) -> None:
    for k in range(a.size // buffer.size):
        stream.stream_row(a[k * buffer.size : (k + 1) * buffer.size], buffer)
    stream.store_fence()


@njit(parallel=True, nogil=True)
def _fill_ordinary_2(a: np.ndarray, value: np.float32) -> None:
    half = a.size // 2
    for t in prange(2):
        _fill_ordinary(a[t * half : (t + 1) * half], value)


@njit(parallel=True, nogil=True)
def _fill_streamed_2(a: np.ndarray, buffer: np.ndarray) -> None:
    half = a.size // 2
    for t in prange(2):
        _fill_streamed(a[t * half : (t + 1) * half], buffer)


def main() -> None:
    """Parse the options, time the four fills in interleaved rounds, print GB/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    a = np.zeros(VALUES, np.float32)
    buffer = np.ones(BUFFER, np.float32)
    one = np.float32(1)
    fills: dict[str, Callable[[], Any]] = {
        "ordinary, 1 thread": lambda: _fill_ordinary(a, one),
        "streamed, 1 thread": lambda: _fill_streamed(a, buffer),
        "ordinary, 2 threads": lambda: _fill_ordinary_2(a, one),
        "streamed, 2 threads": lambda: _fill_streamed_2(a, buffer),
    }
    for fill in fills.values():
        fill()
    best = dict.fromkeys(fills, float("inf"))
    for _ in range(args.rounds):
        for name, fill in fills.items():
            start = time.perf_counter()
            fill()
            best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        print(f"{name:20s} {a.nbytes / seconds / 1e9:6.1f} GB/s")


if __name__ == "__main__":
    main()
