"""What this machine gives two Python threads, whatever the code they call.

The thread case (:mod:`normdrop.bench.threads`) reads a layer call's two-thread ratio
against two measurements of the machine itself, taken in the same run:

* :func:`handover_seconds`: how long one thread takes to wake another, on another CPU,
  that waits on a lock. A thread that wants the GIL while the other holds it sleeps
  until the holder lets go, and then pays this wake-up as well; on a virtual machine
  whose idle CPUs halt it is 20-30 us, longer than a small layer call.
* :func:`nogil_call_maker`: a compiled call as long as a given call that holds the GIL
  for nothing but Numba's dispatch (about 0.2 us): a loop of dependent square roots,
  with no arguments but its length and no memory traffic. No call of that length made
  from Python holds the GIL for less, so its ratio is what two threads can get from
  calls of that length on this machine, in these rounds.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from normdrop.bench.target import Thunk

__all__ = ["HANDOVERS", "handover_seconds", "nogil_call_maker", "square_root_loop"]

#: One-way hand-overs in one timed measurement of :func:`handover_seconds`.
HANDOVERS = 400
#: Loop steps timed once to learn the compiled loop's time per step.
_PROBE_STEPS = 200_000


def handover_seconds(number: int = HANDOVERS, repeat: int = 3) -> float:
    """The best one-way time for a thread to wake another, on another CPU, that waits on a
    lock.

    Two new threads pass the turn back and forth through two locks, ``number`` times each
    way; each pass wakes a thread that sleeps in ``acquire`` (without the GIL). Where the
    process may run on two CPUs or more and the system can pin threads (Linux), each
    thread runs on a CPU of its own, as two threads calling layers side by side do: left
    to itself the scheduler may put a ping-pong on one CPU, where a wake-up is cheap. The
    time per pass includes a little Python (about 0.2 us): it is what a thread that found
    the GIL held pays, after the holder lets go, to run again.

    Parameters
    ----------
    number : int
        Round trips per measurement.
    repeat : int
        Measurements; the best is returned.

    Returns
    -------
    float
        Seconds per one-way hand-over.
    """
    return min(_handovers(number) for _ in range(repeat))


def _two_cpus() -> tuple[int, int] | None:
    """Two CPUs this process may run on, when threads can be pinned to them; else ``None``."""
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def _handovers(number: int) -> float:
    """Seconds per one-way pass over ``number`` round trips between two new threads."""
    ping, pong = threading.Lock(), threading.Lock()
    ping.acquire()
    pong.acquire()
    cpus = _two_cpus()
    ready = threading.Barrier(2)
    seconds: list[float] = []

    def pin(side: int) -> None:
        if cpus is not None:  # this thread only: 0 names the calling thread on Linux
            os.sched_setaffinity(0, {cpus[side]})
        ready.wait()

    def serve() -> None:
        pin(0)
        start = time.perf_counter()
        for _ in range(number):
            ping.release()
            pong.acquire()
        seconds.append((time.perf_counter() - start) / (2 * number))

    def answer() -> None:
        pin(1)
        for _ in range(number):
            ping.acquire()
            pong.release()

    threads = [threading.Thread(target=f, daemon=True) for f in (serve, answer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seconds[0]


@functools.cache
def square_root_loop() -> Callable[[int], float]:
    """The compiled ``nogil`` loop of ``steps`` dependent square roots, compiled once.

    Its time is proportional to ``steps`` and it touches no memory, so it stands for the
    part of a call that runs without the GIL (``asv_benchmarks/scripts/gil_overlap.py``
    uses it too).

    Returns
    -------
    callable
        ``loop(steps) -> float``.
    """
    import numba
    import numpy as np

    @numba.njit(nogil=True)
    def loop(steps: int) -> float:
        s = 0.0
        for i in range(steps):
            s += np.sqrt(s + i)
        return s

    loop(1)
    return loop


def _best_time(call: Callable[[], Any], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def nogil_call_maker(per_call_s: float) -> Callable[[], Thunk]:
    """A maker of compiled calls that take about ``per_call_s`` and hold the GIL only for
    Numba's dispatch.

    Parameters
    ----------
    per_call_s : float
        The length of one call, in seconds (the layer call's).

    Returns
    -------
    callable
        Returns a new thunk at each call (one per thread, as the layer makers do).
    """
    loop = square_root_loop()
    per_step = _best_time(lambda: loop(_PROBE_STEPS)) / _PROBE_STEPS
    steps = max(1, round(per_call_s / per_step))

    def make() -> Thunk:
        return lambda: loop(steps)

    return make
