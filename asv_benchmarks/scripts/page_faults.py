"""Page faults per call in a loop of fused dropout + add + LayerNorm calls, and their time.

A call that returns two same-sized arrays can make glibc's ``malloc`` give the heap's
top back to the system after every call, so that the next call faults every page of
its outputs back in (docs/benchmarks.md, "Outputs in pairs"). This script runs, in
this fresh process, loops of the forward (``functional.dropout_add_layer_norm_with_stats``)
or the backward (``functional.dropout_add_layer_norm_backward``) of float32 rows of
1024 at growing row counts (as a user's sizes may grow: ``malloc``'s thresholds follow
them), and prints the minor page faults per call (``getrusage``) and the best time per
call. Run as ``python asv_benchmarks/scripts/page_faults.py [forward] [backward]``;
Linux only. Faults depend on the process's allocation history, so compare runs of this
script, not runs inside other programs.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable

import numpy as np

from normdrop import functional as F

ROWS = (64, 128, 256, 512, 1024)
CALLS = 20


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _loop(call: Callable[[], object]) -> tuple[float, float]:
    """Faults per call and best seconds per call over ``CALLS`` calls, after three."""
    for _ in range(3):
        call()
    before = _faults()
    best = float("inf")
    for _ in range(CALLS):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return (_faults() - before) / CALLS, best


def _call(step: str, rows: int) -> Callable[[], object]:
    """One forward or backward call on ``(rows, 1024)`` float32 data."""
    x = np.ones((rows, 1024), np.float32)
    _, r, mean, rstd, bits = F.dropout_add_layer_norm_with_stats(
        x, x, 1024, None, None, 0.1, seed=1
    )
    if step == "forward":
        return lambda: F.dropout_add_layer_norm_with_stats(x, x, 1024, None, None, 0.1, seed=1)
    return lambda: F.dropout_add_layer_norm_backward(
        x, r, 1024, mean, rstd, None, 0.1, seed=1, bitmask=bits
    )


def main(steps: list[str]) -> None:
    """Print faults and time per call for each step and row count."""
    print(f"{'step':9s} {'rows':>5s} {'faults/call':>12s} {'pages/output':>13s} {'best us':>9s}")
    for step in steps:
        for rows in ROWS:
            faults, best = _loop(_call(step, rows))
            print(f"{step:9s} {rows:5d} {faults:12.1f} {rows:13d} {best * 1e6:9.0f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["forward", "backward"])
