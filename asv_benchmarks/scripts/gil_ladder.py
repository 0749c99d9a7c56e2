"""Where two threads lose the overlap: from the whole layer call down to a bare compiled call.

For each small layer call of ``normdrop bench``'s thread case (float32), times a ladder of
calls of about the same length, in interleaved rounds, on one thread and on two (each
thread with a layer and arrays of its own, its input included):

1. ``layer``: the whole layer call, ``bn(x)`` or ``ln(x)`` (checks, backend choice, the
   bound call, the saved statistics, the batch count);
2. ``bound``: the call the numba backend bound for the input's shape and dtype (the
   output and statistics allocated, the compiled kernel called directly), looked up once;
3. ``alloc+kernel``: only what no layer call can drop: ``np.empty`` for the output and the
   statistics, and the compiled kernel;
4. ``kernel``: the compiled kernel on preallocated arrays (Numba's argument conversion and
   the kernel: the GIL is held only for the former);
5. ``nogil call``: a compiled loop of the same length with one integer argument
   (:func:`normdrop.bench.gil.nogil_call_maker`), which holds the GIL for next to nothing;
6. ``np.sin``: NumPy's ufunc of an array of the same length.

Each row gives the per-call time on one thread, the median over the rounds of the
two-thread ratio (calls per second on two threads / on one), the best (the best two-thread
rate over the best one-thread rate, as ``normdrop bench`` reports it), and the voluntary
context switches per call on two threads: a thread that finds the GIL held sleeps (one
switch), so this counts GIL collisions that slept. Before and after the ladder, the lock
hand-over time (:func:`normdrop.bench.gil.handover_seconds`), the cost of one such sleep.

Run as ``python asv_benchmarks/scripts/gil_ladder.py [--rounds R] [--calls N]``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

import normdrop
from normdrop.backends.numba_backend import fused, rows
from normdrop.backends.numba_backend.backend import _compiled
from normdrop.bench.gil import handover_seconds, nogil_call_maker
from normdrop.bench.threads import _per_call, _sin_maker, calls_per_second, sin_elements

Thunk = Callable[[], Any]


def _batch_norm_ladder(dtype: str) -> dict[str, Callable[[], Thunk]]:
    sample = np.random.default_rng(0).standard_normal((4, 64, 30)).astype(dtype)
    kernel = fused.batch_norm_forward.pick(sample).serial
    options = (True, True, 0.1, 1e-5)

    def layer() -> tuple[Any, Any, np.ndarray]:
        """A layer that has bound its call, its vectors, and an input of its own (as the
        threads of a pool each have their batch)."""
        bn = normdrop.BatchNorm1d(64, dtype=dtype)
        x = sample.copy()
        bn(x)
        return bn, (bn.running_mean, bn.running_var, bn.weight, bn.bias), x

    def compiled(vectors: Any, x: np.ndarray) -> Any:
        return _compiled(kernel, x, *vectors, *options, x, np.empty((2, 64)))

    def make_layer() -> Thunk:
        bn, _, x = layer()
        return lambda: bn(x)

    def make_bound() -> Thunk:
        bn, _, x = layer()
        run = bn._plan.calls[(x.shape, x.dtype)]
        return lambda: run(x)

    def make_alloc_kernel() -> Thunk:
        _, vectors, x = layer()
        run = compiled(vectors, x)

        def call() -> None:
            out, stats = np.empty(x.shape, x.dtype), np.empty((2, 64))
            run(x, *vectors, *options, out, stats)

        return call

    def make_kernel() -> Thunk:
        _, vectors, x = layer()
        run, out, stats = compiled(vectors, x), np.empty_like(x), np.empty((2, 64))
        return lambda: run(x, *vectors, *options, out, stats)

    return {
        "layer": make_layer,
        "bound": make_bound,
        "alloc+kernel": make_alloc_kernel,
        "kernel": make_kernel,
    }


def _layer_norm_ladder(dtype: str) -> dict[str, Callable[[], Thunk]]:
    sample = np.random.default_rng(0).standard_normal((120, 64)).astype(dtype)
    kernel = rows.layer_norm_forward.pick(sample).serial

    def layer() -> tuple[Any, np.ndarray]:
        """A layer that has bound its call, and an input of its own."""
        ln = normdrop.LayerNorm(64, dtype=dtype)
        x = sample.copy()
        ln(x)
        return ln, x

    def make_layer() -> Thunk:
        ln, x = layer()
        return lambda: ln(x)

    def make_bound() -> Thunk:
        ln, x = layer()
        run = ln._plan.calls[(x.shape, x.dtype)]
        return lambda: run(x)

    def make_alloc_kernel() -> Thunk:
        ln, x = layer()
        w, b = ln.weight, ln.bias
        run = _compiled(kernel, x, w, b, 1e-5, x, np.empty((2, 120)))

        def call() -> None:
            out, stats = np.empty(x.shape, x.dtype), np.empty((2, 120))
            run(x, w, b, 1e-5, out, stats)

        return call

    def make_kernel() -> Thunk:
        ln, x = layer()
        w, b = ln.weight, ln.bias
        out, stats = np.empty_like(x), np.empty((2, 120))
        run = _compiled(kernel, x, w, b, 1e-5, x, stats)
        return lambda: run(x, w, b, 1e-5, out, stats)

    return {
        "layer": make_layer,
        "bound": make_bound,
        "alloc+kernel": make_alloc_kernel,
        "kernel": make_kernel,
    }


def _switches() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


def ladder(name: str, makers: dict[str, Callable[[], Thunk]], rounds: int, calls: int) -> None:
    """Print the ladder of ``makers`` (plus the nogil call and ``np.sin`` of the layer
    call's length), ``rounds`` interleaved rounds of ``calls`` calls per thread."""
    probe = makers["layer"]()
    probe()
    length = _per_call(probe)
    makers = {
        **makers,
        "nogil call": nogil_call_maker(length),
        "np.sin": _sin_maker(sin_elements(length)),
    }
    thunks = {k: (make(), make(), make()) for k, make in makers.items()}
    for trio in thunks.values():
        for thunk in trio:
            thunk()
    rates: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in makers}
    switches: dict[str, int] = dict.fromkeys(makers, 0)
    for _ in range(rounds):
        for k, (single, first, second) in thunks.items():
            one = calls_per_second([single], calls)
            before = _switches()
            two = calls_per_second([first, second], calls)
            switches[k] += _switches() - before
            rates[k][0].append(one)
            rates[k][1].append(two)
    print(f"\n{name}: {rounds} rounds of {calls} calls per thread")
    print(f"{'call':14s} {'per call':>9s} {'median':>7s} {'best':>6s} {'sleeps/call':>11s}")
    for k, (single, _, _) in thunks.items():
        per_call = _per_call(single) * 1e6
        ones, twos = rates[k]
        median = statistics.median(two / one for one, two in zip(ones, twos, strict=True))
        best = max(twos) / max(ones)
        sleeps = switches[k] / (2 * calls * rounds)
        print(f"{k:14s} {per_call:6.2f} us {median:6.2f}x {best:5.2f}x {sleeps:11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=2000, help="calls per thread per round")
    args = parser.parse_args()
    print(f"lock hand-over (before): {handover_seconds() * 1e6:.1f} us")
    ladder(
        "BatchNorm1d (4, 64, 30) float32", _batch_norm_ladder("float32"), args.rounds, args.calls
    )
    ladder("LayerNorm (120, 64) float32", _layer_norm_ladder("float32"), args.rounds, args.calls)
    print(f"\nlock hand-over (after): {handover_seconds() * 1e6:.1f} us")


if __name__ == "__main__":
    main()
