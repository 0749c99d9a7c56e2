"""Where the fused forward's streamed (non-temporal) output stores start to pay.

For each row count, times the fused dropout + add + LayerNorm forward with its outputs
stored as usual and streamed (the numba backend's ``STREAM_MIN_BYTES`` switched between
rounds in this one process), and the three separate calls, in interleaved rounds, and
prints the best and the median per-round ratios. Float32 rows of 1024 values, p = 0.1,
on as many threads as Numba uses. Run as
``python asv_benchmarks/scripts/stream_crossover.py [--rounds N] [--rows R ...]``.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import numba

from normdrop.bench import ops
from normdrop.bench.inputs import make_input
from normdrop.bench.target import Target

FEATURES = 1024


def _time(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(rows: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per round of the ordinary and streamed fused forward and the three calls."""
    backend_module = importlib.import_module("normdrop.backends.numba_backend.backend")
    threshold = backend_module.STREAM_MIN_BYTES
    x = make_input((rows, FEATURES), "float32")
    target = Target.named(None)
    fused = ops.DROPOUT_ADD_LN.build(x, target)
    three = ops.DROPOUT_ADD_LN_THREE_CALLS.build(x, target)

    def with_threshold(value: int) -> Callable[[], Any]:
        def call() -> Any:
            backend_module.STREAM_MIN_BYTES = value
            try:
                return fused()
            finally:
                backend_module.STREAM_MIN_BYTES = threshold

        return call

    contenders = {"ordinary": with_threshold(1 << 62), "streamed": with_threshold(0)}
    contenders["three calls"] = three
    for call in contenders.values():
        call()
        call()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            times[name].append(_time(call))
    return times


def _median_ratio(slow: list[float], fast: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(slow, fast, strict=True))


def main() -> None:
    """Parse the options, measure each row count, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--rows", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    args = parser.parse_args()
    print(f"float32 rows of {FEATURES}, numba threads {numba.get_num_threads()}, "
          f"{args.rounds} interleaved rounds; best times, median per-round ratios")  # fmt: skip
    print("| rows | per array | ordinary | streamed | three calls | ordinary / streamed "
          "| three calls / streamed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for rows in args.rows:
        t = measure(rows, args.rounds)
        gain = _median_ratio(t["ordinary"], t["streamed"])
        ratio = _median_ratio(t["three calls"], t["streamed"])
        mib = rows * FEATURES * 4 / 2**20
        print(f"| {rows} | {mib:g} MiB | {min(t['ordinary']) * 1e3:.3f} ms "
              f"| {min(t['streamed']) * 1e3:.3f} ms | {min(t['three calls']) * 1e3:.3f} ms "
              f"| {gain:.2f} | {ratio:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
