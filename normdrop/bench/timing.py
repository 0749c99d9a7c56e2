"""How ``normdrop bench`` times a call: warm-up, loops, repeats and interleaved rounds.

A measurement of one thunk (:func:`time_call`) makes a warm-up call, grows a loop
until one repeat lasts long enough, and repeats it within a time budget. The thunks
of one case are timed in interleaved rounds (:func:`measure_rounds`), and a
measurement that stays suspect after :data:`EXTRA_ROUNDS` more rounds is flagged.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from normdrop.bench.target import Thunk

__all__ = [
    "EXTRA_ROUNDS",
    "FULL",
    "NOISE_THRESHOLD",
    "OUTLIER_VS_REFERENCE",
    "QUICK",
    "ROUNDS",
    "NoProgress",
    "Settings",
    "Timing",
    "build_thunk",
    "combine_rounds",
    "measure_rounds",
    "progress_bar",
    "suspect",
    "time_call",
]

#: Default and ``--quick`` settings: (time budget per measurement in s, max repeats,
#: minimum duration of one timed repeat in s).
FULL = (1.0, 25, 0.005)
QUICK = (0.1, 3, 0.001)
_MAX_NUMBER = 1_000_000
#: Timed rounds per implementation and case (default, ``--quick``). The rounds of a case
#: are interleaved (normdrop, reference, torch, copy, then again), each with an equal
#: share of the budget and repeats, so that a burst of load on a shared machine hits one
#: round of one implementation rather than all of its repeats.
ROUNDS = (3, 2)
#: A measurement is noisy when its two fastest rounds differ by more than this fraction:
#: the reported (fastest) time is then not confirmed by a second round.
NOISE_THRESHOLD = 0.3
#: A measurement is also an outlier when it is this many times slower than the NumPy
#: reference's call in the same run: the reference is plain single-threaded NumPy, so an
#: implementation that far behind it is waiting (for threads that a busy machine did not
#: schedule), not computing.
OUTLIER_VS_REFERENCE = 10.0
#: Rounds added to a noisy or outlying measurement before its row is flagged.
EXTRA_ROUNDS = 2


@dataclass(frozen=True)
class Timing:
    """Per-call times of one measured function, in seconds.

    Attributes
    ----------
    best, median : float
        Fastest and median per-call time over the timed repeats.
    repeats : int
        Timed repeats.
    number : int
        Calls per repeat.
    first_call : float
        The first (warm-up) call, which includes any compilation.
    samples : tuple of float
        Every repeat's per-call time.
    round_bests : tuple of float
        The best per-call time of each timed round (one entry for one round).
    """

    best: float
    median: float
    repeats: int
    number: int
    first_call: float
    samples: tuple[float, ...] = ()
    round_bests: tuple[float, ...] = ()

    def stat(self, name: str) -> float:
        """Return the ``"min"`` (best) or ``"median"`` per-call time."""
        return self.best if name == "min" else self.median

    @property
    def spread(self) -> float:
        """How far the second-fastest round is above the fastest, as a fraction.

        With a single round, how far the median repeat is above the best one.
        """
        bests = sorted(self.round_bests)
        if len(bests) >= 2:
            return bests[1] / bests[0] - 1.0
        return self.median / self.best - 1.0

    @property
    def noisy(self) -> bool:
        """Whether :attr:`spread` exceeds :data:`NOISE_THRESHOLD`."""
        return self.spread > NOISE_THRESHOLD


def suspect(key: str, timing: Timing, reference: Timing | str | None) -> str | None:
    """Why ``timing`` (of implementation ``key``) is not to be trusted, or ``None``.

    Parameters
    ----------
    key : str
        The implementation: ``"normdrop"``, ``"reference"``, ``"torch"``, ...
    timing : Timing
    reference : Timing, str or None
        The NumPy reference's timing in the same run (an error text or ``None`` when
        it has none).

    Returns
    -------
    str or None
    """
    if timing.noisy:
        return f"{key} rounds {timing.spread:.0%} apart"
    if key != "reference" and isinstance(reference, Timing):
        slower = timing.best / reference.best
        if slower > OUTLIER_VS_REFERENCE:
            return f"{key} {slower:.0f}x slower than the NumPy reference"
    return None


def combine_rounds(rounds: Sequence[Timing]) -> Timing:
    """Merge the timings of several rounds of the same function into one.

    Parameters
    ----------
    rounds : sequence of Timing
        In the order they were taken; the first one's warm-up is the first call.

    Returns
    -------
    Timing
        The fastest repeat of all rounds, the median of all repeats, and each
        round's best in ``round_bests``.
    """
    samples = tuple(x for t in rounds for x in (t.samples or (t.best,)))
    fastest = min(rounds, key=lambda t: t.best)
    return Timing(
        best=fastest.best,
        median=statistics.median(samples),
        repeats=sum(t.repeats for t in rounds),
        number=fastest.number,
        first_call=rounds[0].first_call,
        samples=samples,
        round_bests=tuple(t.best for t in rounds),
    )


def _loop(fn: Thunk, number: int) -> float:
    """Seconds taken by ``number`` calls of ``fn``, with the garbage collector off."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def time_call(fn: Thunk, *, budget: float, repeat: int, min_time: float) -> Timing:
    """Time ``fn`` after a warm-up call.

    The number of calls per repeat grows until one repeat lasts ``min_time``
    (fast functions are timed in loops); repeats then run until ``repeat`` of
    them are done or ``budget`` seconds have passed, whichever comes first, and
    at least one always runs.

    Parameters
    ----------
    fn : callable
        Called with no arguments.
    budget : float
        Seconds to spend on the timed repeats (the warm-up is not counted).
    repeat : int
        Most timed repeats.
    min_time : float
        Shortest duration of one timed repeat, in seconds.

    Returns
    -------
    Timing
    """
    start = time.perf_counter()
    fn()
    first_call = time.perf_counter() - start

    number, elapsed = 1, _loop(fn, 1)
    while elapsed < min_time and number < _MAX_NUMBER:
        guess = int(number * 1.2 * min_time / max(elapsed, 1e-9))
        number = min(_MAX_NUMBER, max(2 * number, guess))
        elapsed = _loop(fn, number)
    samples = [elapsed / number]

    deadline = time.perf_counter() + budget
    while len(samples) < repeat and time.perf_counter() < deadline:
        samples.append(_loop(fn, number) / number)
    return Timing(
        min(samples),
        statistics.median(samples),
        len(samples),
        number,
        first_call,
        tuple(samples),
        (min(samples),),
    )


@dataclass(frozen=True)
class Settings:
    """How to measure, resolved from the command line.

    Attributes
    ----------
    budget : float
        Seconds of timed repeats per measurement.
    repeat : int
        Most timed repeats per measurement.
    min_time : float
        Shortest timed repeat, in seconds.
    stat : {"min", "median"}
        The statistic the table and the top-level row fields report.
    rounds : int
        Interleaved rounds over which the budget and the repeats are shared.
    """

    budget: float
    repeat: int
    min_time: float
    stat: str
    rounds: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """Build the settings from parsed ``bench`` arguments."""
        budget, repeat, min_time = QUICK if args.quick else FULL
        rounds = ROUNDS[1] if args.quick else ROUNDS[0]
        return cls(
            budget=budget if args.budget is None else args.budget,
            repeat=repeat if args.repeat is None else args.repeat,
            min_time=min_time,
            stat=args.stat,
            rounds=rounds if getattr(args, "rounds", None) is None else args.rounds,
        )

    def measure(self, fn: Thunk) -> Timing:
        """Time ``fn`` for one round: its share of the budget and of the repeats."""
        return time_call(
            fn,
            budget=self.budget / self.rounds,
            repeat=max(1, self.repeat // self.rounds),
            min_time=self.min_time,
        )


def build_thunk(label: str, fn: Callable[[], Thunk]) -> Thunk | str:
    """Build a thunk; return it, or the error it raised as text."""
    try:
        return fn()
    except Exception as exc:  # one failing implementation must not end the run
        return f"{label}: {type(exc).__name__}: {exc}"


def _measure(label: str, thunk: Thunk | str, settings: Settings) -> Timing | str:
    """Time one round of a thunk; return the timing, or the error it raised as text."""
    if isinstance(thunk, str):
        return thunk
    try:
        return settings.measure(thunk)
    except Exception as exc:
        return f"{label}: {type(exc).__name__}: {exc}"


def measure_rounds(
    thunks: dict[str, Thunk | str], settings: Settings, bar: Any, label: str
) -> dict[str, Timing | str]:
    """Time every thunk in interleaved rounds, giving a suspect one more rounds.

    Parameters
    ----------
    thunks : dict of str to callable or str
        The implementations of one case (an error text for one that failed to build).
    settings : Settings
    bar : progress bar
        As :func:`progress_bar` returns.
    label : str
        What the bar shows.

    Returns
    -------
    dict of str to Timing or str
        Each implementation's combined timing, or its error; a suspect measurement
        (:func:`suspect`) gets up to :data:`EXTRA_ROUNDS` more rounds first.
    """
    rounds: dict[str, list[Timing]] = {key: [] for key in thunks}
    failed: dict[str, str] = {}

    def one_round(key: str) -> None:
        if key in failed:
            return
        bar.set_postfix_str(f"{label} [{key}]")
        result = _measure(key, thunks[key], settings)
        if isinstance(result, str):
            failed[key] = result
        else:
            rounds[key].append(result)

    for _ in range(settings.rounds):
        for key in thunks:
            one_round(key)

    def combined() -> dict[str, Timing | str]:
        return {k: failed[k] if k in failed else combine_rounds(rounds[k]) for k in thunks}

    for _ in range(EXTRA_ROUNDS):
        now = combined()
        reference = now.get("reference")
        suspects = [
            k
            for k, t in now.items()
            if k != "copy" and isinstance(t, Timing) and suspect(k, t, reference)
        ]
        if not suspects:
            break
        for key in suspects:
            one_round(key)
    bar.update(len(thunks))
    return combined()


def progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar on stderr, or a :class:`NoProgress` when tqdm is missing or not wanted."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            # disable=None: draw only when stderr is a terminal.
            return tqdm(
                total=total,
                desc="normdrop bench",
                unit="run",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
                disable=None,
            )
    return NoProgress()


class NoProgress:
    """What the run loop needs of a progress bar, doing nothing."""

    def update(self, n: int = 1) -> None:
        """Ignore progress."""

    def set_postfix_str(self, s: str) -> None:
        """Ignore the label."""

    def close(self) -> None:
        """Nothing to close."""
