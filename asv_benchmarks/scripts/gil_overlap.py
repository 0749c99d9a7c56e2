"""Why two threads calling small layers overlap or not: the GIL-held time per call, and a sweep.

Prints, for the small layer calls of ``normdrop bench``'s thread case (training
forward of ``BatchNorm1d(64)`` on (4, 64, 30) and ``LayerNorm(64)`` on (120, 64), in
float32 and float64):

* ``T``: the best per-call time of the layer call on one thread;
* ``body``: the best per-call time of its compiled kernel alone, called from a
  ``nogil`` Numba loop (no Python, no dispatch): the part of the call that runs
  without the GIL;
* ``G = T - body``: what the call spends holding the GIL (checks, backend choice,
  allocation, Numba's argument and result conversion, state updates).

Then the same-run sweep: the two-thread ratio (calls per second on two threads / on
one) of a synthetic call that holds the GIL for ``G`` us (a Python busy-wait) and then
runs a ``nogil`` Numba loop of ``N`` us, for the layers' ``N`` (as just measured) and
longer ones (:data:`LONGER_BODIES_US`) and a range of ``G``, next to ``np.sin`` calls of
similar lengths (whose GIL-held part is NumPy's own). Where the synthetic call stops
overlapping shows how small ``G`` must be on this machine, now, and the ``G = 0`` column
how long a call must run to overlap at all. Before and after, the machine's lock hand-over
time (:func:`normdrop.bench.gil.handover_seconds`): what a call that finds the GIL held
pays for its wake-up. Run as ``python asv_benchmarks/scripts/gil_overlap.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

import normdrop
from normdrop.backends.numba_backend import fused, rows
from normdrop.bench.gil import handover_seconds, square_root_loop
from normdrop.bench.threads import calls_per_second

#: The synthetic calls' GIL-held times, in us.
HELD_US = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0)
#: Synthetic kernel lengths timed besides the layers' own, in us.
LONGER_BODIES_US = (8.0, 16.0, 32.0)
#: Lengths of the ``np.sin`` calibration arrays.
SIN_ELEMENTS = (600, 1000, 1500)


def _best_per_call(run: Callable[[int], Any], number: int = 2000, repeat: int = 15) -> float:
    """Best seconds per call of ``run(number)``, which makes ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run(number)
        best = min(best, (time.perf_counter() - start) / number)
    return best


def _calls(call: Callable[[], Any]) -> Callable[[int], None]:
    def run(number: int) -> None:
        for _ in range(number):
            call()

    return run


def _ratio(call: Callable[[], Any]) -> tuple[float, float]:
    """Per-call time on one thread and the best two-thread ratio of ``call``."""
    call()
    per_call = min(1 / calls_per_second([call], 1000) for _ in range(3))
    number = max(500, int(0.03 / per_call))
    ratios = []
    for _ in range(5):
        one = calls_per_second([call], number)
        ratios.append(calls_per_second([call, call], number) / one)
    return per_call, max(ratios)


def _layer_times(dtype: str) -> list[float]:
    """Print ``T``, ``body`` and ``G`` of the two small layer calls in ``dtype``; return
    their bodies, in us."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64, 30)).astype(dtype)
    bn = normdrop.BatchNorm1d(64, dtype=dtype)
    bn(x)
    bn_kernel = fused.batch_norm_forward.pick(x).serial
    vectors = (bn.running_mean, bn.running_var, bn.weight, bn.bias)

    @numba.njit(nogil=True)
    def bn_body(
        number: int, x: Any, rm: Any, rv: Any, w: Any, b: Any, out: Any, stats: Any
    ) -> None:
        for _ in range(number):
            bn_kernel(x, rm, rv, w, b, True, True, 0.1, 1e-5, out, stats)

    rows_ = rng.standard_normal((120, 64)).astype(dtype)
    ln = normdrop.LayerNorm(64, dtype=dtype)
    ln(rows_)
    ln_kernel = rows.layer_norm_forward.pick(rows_).serial

    @numba.njit(nogil=True)
    def ln_body(number: int, x: Any, w: Any, b: Any, out: Any, stats: Any) -> None:
        for _ in range(number):
            ln_kernel(x, w, b, 1e-5, out, stats)

    out, ln_out, stats = np.empty_like(x), np.empty_like(rows_), np.empty((2, 120))
    bn_stats = np.empty((2, 64))
    cases = (
        (
            "BatchNorm1d (4, 64, 30)",
            lambda: bn(x),
            lambda n: bn_body(n, x, *vectors, out, bn_stats),
        ),
        (
            "LayerNorm (120, 64)",
            lambda: ln(rows_),
            lambda n: ln_body(n, rows_, ln.weight, ln.bias, ln_out, stats),
        ),
    )
    bodies = []
    for name, call, body in cases:
        body(1)  # compiled before timing
        t, b = _best_per_call(_calls(call)) * 1e6, _best_per_call(body) * 1e6
        print(f"{name} {dtype}: T {t:.2f} us, body {b:.2f} us, G {t - b:.2f} us")
        bodies.append(b)
    return bodies


def held_times() -> list[float]:
    """Print ``T``, ``body`` and ``G`` of each small layer call, and ``np.sin``'s fixed part;
    return the float32 layers' bodies, in us."""
    bodies = _layer_times("float32")
    _layer_times("float64")
    one, out1 = np.ones(1), np.empty(1)
    t = _best_per_call(_calls(lambda: np.sin(one, out=out1))) * 1e6
    print(f"np.sin of 1 element (a ufunc call's fixed, GIL-held part): {t:.2f} us")
    return bodies


def sweep(layer_bodies_us: list[float]) -> None:
    """Print the two-thread ratios of the synthetic calls, for the layers' kernel lengths
    ``layer_bodies_us`` and :data:`LONGER_BODIES_US`, and of ``np.sin``."""

    spin = square_root_loop()
    per_step = _best_per_call(lambda n: spin(20 * n), number=1000) / 20
    clock = time.perf_counter
    for body_us in sorted(round(b, 1) for b in layer_bodies_us) + list(LONGER_BODIES_US):
        steps = max(1, round(body_us * 1e-6 / per_step))
        cells = []
        for held_us in HELD_US:
            held = held_us * 1e-6

            def call(held: float = held, steps: int = steps) -> None:
                end = clock() + held
                while clock() < end:  # holds the GIL
                    pass
                spin(steps)

            t, r = _ratio(call)
            cells.append(f"G {held_us:.1f}: {t * 1e6:.1f} us {r:.2f}x")
        print(f"N {body_us} us | " + " | ".join(cells))
    for n in SIN_ELEMENTS:
        a, out = np.ones(n), np.empty(n)

        def sine(a: np.ndarray = a, out: np.ndarray = out) -> None:
            np.sin(a, out=out)

        t, r = _ratio(sine)
        print(f"np.sin({n}): {t * 1e6:.2f} us {r:.2f}x")


def print_handover(when: str) -> None:
    """Print the lock hand-over time, best of three runs."""
    print(f"lock hand-over ({when}): {handover_seconds() * 1e6:.1f} us")


if __name__ == "__main__":
    print_handover("before")
    sweep(held_times())
    print_handover("after")
