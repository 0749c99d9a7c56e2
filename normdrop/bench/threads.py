"""``normdrop bench``'s thread case: two Python threads calling separate small layers.

Every kernel releases the GIL, so two threads calling normdrop overlap for as long
as the kernels run; what they cannot overlap is the part of a call that holds the
GIL (checks, backend choice, allocation, state updates), and on a busy or virtual
machine waking the thread that waits for the GIL costs time as well. The case
times each whole layer call of :data:`LAYER_CALLS` (training forward, each thread
with a layer and an input of its own) in calls per second on one thread and on two
threads, and reports their ratio (2 at most, on two free cores).

The same rounds time two calls as long as the layer call, on one and on two threads;
read the layer's ratio against theirs:

* a calibration, ``np.sin`` of a float64 array of the right length (NumPy releases the
  GIL around the loop of an array this long): what this machine gives a call of that
  length whose GIL-held part is NumPy's own;
* a compiled call that holds the GIL only for Numba's dispatch
  (:func:`~normdrop.bench.gil.nogil_call_maker`): what it gives any call of that length
  made from Python.

Each row also gives the machine's lock hand-over time
(:func:`~normdrop.bench.gil.handover_seconds`): the wait a GIL collision adds.
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from normdrop.bench import gil
from normdrop.bench.cases import Case, find_case
from normdrop.bench.inputs import DTYPES
from normdrop.bench.target import Target, Thunk
from normdrop.bench.timing import Settings

__all__ = [
    "LAYER_CALLS",
    "NAME",
    "THREAD_CASES",
    "ThreadCase",
    "calls_per_second",
    "format_thread_table",
    "overlap",
    "run_thread_case",
    "select_thread_cases",
    "sin_elements",
]

#: The name of the case; each row adds the layer call it times.
NAME = "two threads, separate small layers"
#: The whole layer calls of :data:`~normdrop.bench.cases.CASES` timed on two threads.
LAYER_CALLS = ("BatchNorm1d train forward whole layer call", "LayerNorm forward whole layer call")
#: Fewest interleaved rounds (one thread, two threads, the calibration on each): the
#: best of several short rounds finds the moments when two cores were free.
MIN_ROUNDS = 5
#: Fewest calls per thread in one timed measurement.
MIN_CALLS = 50
#: The shortest ``np.sin`` calibration array: NumPy holds the GIL through the loops
#: of small arrays (a few hundred elements), which would not overlap at all.
MIN_SIN_ELEMENTS = 600


@dataclass(frozen=True)
class ThreadCase:
    """One row of the thread case: a whole layer call of :data:`~normdrop.bench.cases.CASES`.

    Attributes
    ----------
    case : Case
        The layer call, its shape and dtype.
    """

    case: Case

    @property
    def name(self) -> str:
        """``"two threads, separate small layers: <the layer call>"``; ``--cases`` matches it."""
        return f"{NAME}: {self.case.name}"


#: Every row of the thread case, float32 then float64.
THREAD_CASES: tuple[ThreadCase, ...] = tuple(
    ThreadCase(find_case(name, dtype)) for dtype in DTYPES for name in LAYER_CALLS
)


def select_thread_cases(
    patterns: Sequence[str] | None, dtypes: Sequence[str] | None = None
) -> list[ThreadCase]:
    """The rows whose name contains any of ``patterns`` (case-insensitive), in ``dtypes``.

    A pattern selects a row only through the thread part of its name: ``"two
    threads"`` selects every row, ``"whole layer call"`` none (it selects the
    single-thread cases of :data:`~normdrop.bench.cases.CASES`).

    Parameters
    ----------
    patterns : sequence of str or None
        Substrings; ``None`` or empty selects every row.
    dtypes : sequence of str or None
        Keep only these dtypes; ``None`` or empty keeps every dtype.

    Returns
    -------
    list of ThreadCase
    """
    wanted = [p.lower() for p in patterns or ()]
    return [
        t
        for t in THREAD_CASES
        if (not wanted or any(p in t.name.lower() and p not in t.case.name.lower() for p in wanted))
        and (not dtypes or t.case.dtype in dtypes)
    ]


def calls_per_second(thunks: Sequence[Thunk], number: int) -> float:
    """Calls per second of all ``thunks`` together, each called ``number`` times.

    With one thunk it runs in the calling thread; with several, each runs in a
    thread of its own, all started together, and the time runs until the last ends.

    Parameters
    ----------
    thunks : sequence of callable
    number : int

    Returns
    -------
    float
    """
    if len(thunks) == 1:
        (thunk,) = thunks
        start = time.perf_counter()
        for _ in range(number):
            thunk()
        return number / (time.perf_counter() - start)
    ready = threading.Barrier(len(thunks))
    spans: list[tuple[float, float]] = []

    def work(thunk: Thunk) -> None:
        ready.wait()
        start = time.perf_counter()
        for _ in range(number):
            thunk()
        spans.append((start, time.perf_counter()))

    workers = [threading.Thread(target=work, args=(t,), daemon=True) for t in thunks]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    # from the first thread's start to the last one's end, timed by the threads themselves:
    # a clock read by the starting thread after the barrier could run late (without a GIL
    # the workers do not wait for it)
    return len(thunks) * number / (max(e for _, e in spans) - min(s for s, _ in spans))


def _per_call(thunk: Thunk, number: int = 200) -> float:
    """The best per-call time of ``thunk`` over three loops of ``number`` calls."""
    return min(1 / calls_per_second([thunk], number) for _ in range(3))


def overlap(
    makers: dict[str, Callable[[], Thunk]], settings: Settings
) -> dict[str, dict[str, float]]:
    """Calls per second on one thread and on two, for each maker, in interleaved rounds.

    Parameters
    ----------
    makers : dict of str to callable
        Each returns a new thunk (a layer and an input of its own) at every call: one
        for the single thread, two for the two threads.
    settings : Settings
        The budget is shared by the rounds (at least :data:`MIN_ROUNDS`) and the
        measurements.

    Returns
    -------
    dict of str to dict
        Per maker: ``per_call_s`` (one thread's best), ``one_thread`` and
        ``two_threads`` (best calls per second over the rounds) and ``ratio``
        (two threads / one thread).
    """
    thunks = {k: (make(), make(), make()) for k, make in makers.items()}
    for trio in thunks.values():
        for thunk in trio:
            thunk()  # warm-up: compiled and bound before anything is timed
    per_call = {k: _per_call(trio[0]) for k, trio in thunks.items()}
    rounds = max(MIN_ROUNDS, settings.rounds)
    share = settings.budget / rounds / (3 * len(makers))  # one thread, then two: 3 calls
    number = {k: max(MIN_CALLS, int(share / t)) for k, t in per_call.items()}
    best = {k: [0.0, 0.0] for k in makers}
    for _ in range(rounds):
        for k, (single, first, second) in thunks.items():
            best[k][0] = max(best[k][0], calls_per_second([single], number[k]))
            best[k][1] = max(best[k][1], calls_per_second([first, second], number[k]))
    return {
        k: {
            "per_call_s": per_call[k],
            "one_thread": one,
            "two_threads": two,
            "ratio": two / one,
        }
        for k, (one, two) in best.items()
    }


def sin_elements(per_call_s: float) -> int:
    """The length of a float64 array whose ``np.sin`` takes about ``per_call_s``.

    Parameters
    ----------
    per_call_s : float

    Returns
    -------
    int
        At least :data:`MIN_SIN_ELEMENTS`.
    """
    n = 4096
    a, out = np.ones(n), np.empty(n)
    per_element = _per_call(lambda: np.sin(a, out=out)) / n
    return max(MIN_SIN_ELEMENTS, round(per_call_s / per_element))


def _sin_maker(n: int) -> Callable[[], Thunk]:
    def make() -> Thunk:
        a = np.random.default_rng(5).standard_normal(n)
        out = np.empty_like(a)
        return lambda: np.sin(a, out=out)

    return make


def run_thread_case(thread_case: ThreadCase, settings: Settings, target: Target) -> dict:
    """Time one row: the layer call, its ``np.sin`` calibration and the compiled call of
    the same length on one and two threads, and the lock hand-over.

    Parameters
    ----------
    thread_case : ThreadCase
    settings : Settings
    target : Target
        The backend timed as normdrop.

    Returns
    -------
    dict
        JSON-ready: ``case``, ``dtype``, ``shape``, the layer call's ``per_call_s``,
        ``one_thread`` and ``two_threads`` (calls per second) and ``ratio``,
        ``calibration`` with the same fields and ``elements``, ``nogil_call`` with the
        same fields, and ``handover_s`` (seconds).
    """
    case = thread_case.case
    x = case.make_input()

    def make_layer_call() -> Thunk:
        # an input of its own, as the threads of a pool each have their batch: on
        # free-threaded CPython, objects two threads share cost atomic reference counts
        return target.wrap(case.build(x.copy(), target))

    probe = make_layer_call()
    probe()
    per_call = _per_call(probe)
    n = sin_elements(per_call)
    makers = {
        "layer": make_layer_call,
        "sin": _sin_maker(n),
        "nogil": gil.nogil_call_maker(per_call),
    }
    timed = overlap(makers, settings)
    return {
        "case": thread_case.name,
        "dtype": case.dtype,
        "shape": list(case.shape),
        **timed["layer"],
        "calibration": {"elements": n, **timed["sin"]},
        "nogil_call": timed["nogil"],
        "handover_s": gil.handover_seconds(),
    }


def _calibration(c: dict[str, Any]) -> str:
    return f"{c['elements']} float64, {c['per_call_s'] * 1e6:.2f} us"


def _rate(v: float) -> str:
    return f"{v / 1e3:.1f}k/s"


def format_thread_table(rows: Sequence[dict[str, Any]]) -> str:
    """The thread case as a table with a legend.

    Parameters
    ----------
    rows : sequence of dict
        As :func:`run_thread_case` returns them.

    Returns
    -------
    str
    """
    headers = (
        "case", "dtype", "shape", "per call", "1 thread", "2 threads", "ratio",
        "np.sin calibration", "its ratio", "nogil call's ratio", "hand-over",
    )  # fmt: skip
    cells = [
        (
            r["case"],
            r["dtype"],
            "(" + ", ".join(str(d) for d in r["shape"]) + ")",
            f"{r['per_call_s'] * 1e6:.2f} us",
            _rate(r["one_thread"]),
            _rate(r["two_threads"]),
            f"{r['ratio']:.2f}x",
            _calibration(r["calibration"]),
            f"{r['calibration']['ratio']:.2f}x",
            f"{r['nogil_call']['ratio']:.2f}x",
            f"{r['handover_s'] * 1e6:.1f} us",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    align = "<<<>>>>>>>>"

    def line(values: Sequence[str]) -> str:
        return "  ".join(f"{v:{a}{w}}" for v, a, w in zip(values, align, widths, strict=True))

    legend = (
        "calls per second of the layer call (training forward) on one thread and on two "
        "threads each calling a layer of its own (best of the rounds), and their ratio (2 at "
        "most); np.sin calibration: a NumPy call as long as the layer call, timed the same way "
        "in the same rounds; nogil call: a compiled call as long, holding the GIL only for "
        "Numba's dispatch, timed the same way: no call of that length made from Python gets "
        "more from two threads here and now; hand-over: the time a thread takes to wake "
        "another waiting on a lock, which a call pays when it finds the GIL held."
    )
    rule = "  ".join("-" * w for w in widths)
    table = [line(headers).rstrip(), rule, *(line(c).rstrip() for c in cells)]
    return "\n".join([*table, textwrap.fill(legend, width=100)])
