"""``normdrop bench``: time every layer against the NumPy reference, PyTorch and JAX on the CPU.

Each case (in float32 and in float64) is timed in the same run: with normdrop's
default backend (or ``--backend``), with the ``numpy`` reference backend, with
PyTorch on the CPU and with ``jax.jit`` of the same math on JAX's CPU device, each
peer when it is installed. Every row also carries the effective bandwidth of the
normdrop call, the share it reaches of a plain NumPy copy (``np.copyto``) of the
same number of bytes, and its share of this run's memory speed
(:mod:`normdrop._bench_memory`). Absolute times on shared machines are noisy; the
ratios are what to read. ``--plot`` sweeps the sizes instead
(:mod:`normdrop._bench_plot`).

This module imports nothing heavy at import time: PyTorch, JAX, Numba, tqdm and
matplotlib are imported only when a benchmark runs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

import normdrop
from normdrop import _bench_memory, _bench_peers, functional
from normdrop._bench_memory import MemorySpeed, memory_share
from normdrop.protocol import Backend

__all__ = [
    "CASES",
    "DTYPES",
    "NOISE_THRESHOLD",
    "Case",
    "Timing",
    "add_arguments",
    "combine_rounds",
    "run",
    "time_call",
]

Thunk = Callable[[], Any]

#: Default and ``--quick`` settings: (time budget per measurement in s, max repeats,
#: minimum duration of one timed repeat in s).
_FULL = (1.0, 25, 0.005)
_QUICK = (0.1, 3, 0.001)
_MAX_NUMBER = 1_000_000
#: Timed rounds per implementation and case (default, ``--quick``). The rounds of a case
#: are interleaved (normdrop, reference, torch, copy, then again), each with an equal
#: share of the budget and repeats, so that a burst of load on a shared machine hits one
#: round of one implementation rather than all of its repeats.
_ROUNDS = (3, 2)
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


def _suspect(key: str, timing: Timing, reference: Timing | str | None) -> str | None:
    """Why ``timing`` is not to be trusted, or ``None``."""
    if timing.noisy:
        return f"{key} rounds {timing.spread:.0%} apart"
    if key != "reference" and isinstance(reference, Timing):
        slower = timing.best / reference.best
        if slower > OUTLIER_VS_REFERENCE:
            return f"{key} {slower:.0f}x slower than the NumPy reference"
    return None


DROPOUT_P = 0.15
SEED = 1234
EPS = 1e-5
MOMENTUM = 0.1


# ----------------------------------------------------------------------------- timing
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


# ----------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """Where a normdrop call runs: a backend, and the ``backend=`` argument to pass.

    Attributes
    ----------
    backend : Backend
        The backend the data is placed on.
    choice : str or None
        What the calls pass as ``backend=``; ``None`` exercises the automatic choice.
    """

    backend: Backend
    choice: str | None

    def array(self, a: np.ndarray) -> Any:
        """Return the host array ``a`` as an array of the backend."""
        return self.backend.asarray(a)

    def ready(self, *values: Any) -> tuple[Any, ...]:
        """Return ``values`` computed: saved statistics must not be recomputed at every call.

        Lazy (Dask) arrays are persisted; anything else is returned unchanged.
        """
        return tuple(v.persist() if hasattr(v, "__dask_graph__") else v for v in values)

    def wrap(self, fn: Thunk) -> Thunk:
        """Make ``fn`` wait for asynchronous (GPU) or lazy (Dask) results."""
        if self.backend.device != "cpu":
            from numba import cuda

            def synced() -> Any:
                result = fn()
                cuda.synchronize()
                return result

            return synced

        def settled() -> Any:
            result = fn()
            items = result if isinstance(result, tuple) else (result,)
            lazy = [r for r in items if hasattr(r, "__dask_graph__")]
            if lazy:
                import dask

                dask.compute(*lazy)
            return result

        return settled if self.backend.name == "dask" else fn


def _ones(target: Target, n: int, dtype: np.dtype) -> Any:
    return target.array(np.ones(n, dtype))


def _zeros(target: Target, n: int, dtype: np.dtype) -> Any:
    return target.array(np.zeros(n, dtype))


# ----------------------------------------------------------------------------- normdrop builders
# Each builder takes the host input and a Target and returns the thunk to time.
def _bn_forward(training: bool) -> Callable[[np.ndarray, Target], Thunk]:
    def build(x_host: np.ndarray, target: Target) -> Thunk:
        c, dtype = x_host.shape[1], x_host.dtype
        x = target.array(x_host)
        w, b = _ones(target, c, dtype), _zeros(target, c, dtype)
        rm, rv = _zeros(target, c, dtype), _ones(target, c, dtype)
        return lambda: functional.batch_norm(
            x, rm, rv, w, b, training=training, momentum=MOMENTUM, eps=EPS, backend=target.choice
        )

    return build


def _bn_backward(x_host: np.ndarray, target: Target) -> Thunk:
    c, dtype = x_host.shape[1], x_host.dtype
    x, dy = target.array(x_host), target.array(_grad_like(x_host))
    w, b = _ones(target, c, dtype), _zeros(target, c, dtype)
    _, mean, rstd = functional.batch_norm(
        x, None, None, w, b, training=True, eps=EPS, backend=target.choice, return_stats=True
    )
    mean, rstd = target.ready(mean, rstd)
    return lambda: functional.batch_norm_backward(
        dy, x, mean, rstd, w, training=True, backend=target.choice
    )


def _ln_forward(x_host: np.ndarray, target: Target) -> Thunk:
    d, dtype = x_host.shape[-1], x_host.dtype
    x = target.array(x_host)
    w, b = _ones(target, d, dtype), _zeros(target, d, dtype)
    return lambda: functional.layer_norm(x, (d,), w, b, EPS, backend=target.choice)


def _ln_backward(x_host: np.ndarray, target: Target) -> Thunk:
    d, dtype = x_host.shape[-1], x_host.dtype
    x, dy = target.array(x_host), target.array(_grad_like(x_host))
    w, b = _ones(target, d, dtype), _zeros(target, d, dtype)
    _, mean, rstd = functional.layer_norm(
        x, (d,), w, b, EPS, backend=target.choice, return_stats=True
    )
    mean, rstd = target.ready(mean, rstd)
    return lambda: functional.layer_norm_backward(dy, x, (d,), mean, rstd, w, backend=target.choice)


def _dropout_forward(x_host: np.ndarray, target: Target) -> Thunk:
    # As a training layer does: keep the packed bitmask that backward reads.
    x = target.array(x_host)
    return lambda: functional.dropout(
        x, DROPOUT_P, seed=SEED, call=0, backend=target.choice, return_bitmask=True
    )


def _dropout_backward(x_host: np.ndarray, target: Target) -> Thunk:
    x, dy = target.array(x_host), target.array(_grad_like(x_host))
    _, bitmask = functional.dropout(
        x, DROPOUT_P, seed=SEED, call=0, backend=target.choice, return_bitmask=True
    )
    (bitmask,) = target.ready(bitmask)
    # A backend that keeps no bitmask returns None; the backward then regenerates the mask.
    return lambda: functional.dropout_backward(
        dy, DROPOUT_P, seed=SEED, call=0, bitmask=bitmask, backend=target.choice
    )


def _bn_layer_call(x_host: np.ndarray, target: Target) -> Thunk:
    layer = normdrop.BatchNorm1d(x_host.shape[1], dtype=x_host.dtype, backend=target.choice)
    x = target.array(x_host)
    return lambda: layer(x)


def _ln_layer_call(x_host: np.ndarray, target: Target) -> Thunk:
    layer = normdrop.LayerNorm(x_host.shape[-1], dtype=x_host.dtype, backend=target.choice)
    x = target.array(x_host)
    return lambda: layer(x)


#: Drop probability of the fused dropout + add + LayerNorm cases (a transformer block's).
FUSED_P = 0.1


def _fused_forward(x_host: np.ndarray, target: Target) -> Thunk:
    # As a training layer does: keep the statistics and the bitmask that backward reads.
    d, dtype = x_host.shape[-1], x_host.dtype
    x, res = target.array(x_host), target.array(_grad_like(x_host))
    w, b = _ones(target, d, dtype), _zeros(target, d, dtype)
    return lambda: functional.dropout_add_layer_norm(
        x, res, (d,), w, b, FUSED_P, EPS, seed=SEED, backend=target.choice, return_stats=True
    )


def _three_calls_forward(x_host: np.ndarray, target: Target) -> Thunk:
    # The same work as three separate normdrop calls, each keeping what backward reads.
    d, dtype = x_host.shape[-1], x_host.dtype
    x, res = target.array(x_host), target.array(_grad_like(x_host))
    w, b = _ones(target, d, dtype), _zeros(target, d, dtype)

    def three() -> Any:
        h, bitmask = functional.dropout(
            x, FUSED_P, seed=SEED, backend=target.choice, return_bitmask=True
        )
        y = functional.layer_norm(h + res, (d,), w, b, EPS, backend=target.choice,
                                  return_stats=True)  # fmt: skip
        return (*y, bitmask)

    return three


# ----------------------------------------------------------------------------- torch builders
# Each takes a CPU tensor; thunks run with gradients disabled (see _torch_session).
def _torch_bn_forward(training: bool) -> Callable[[Any], Thunk]:
    def build(xt: Any) -> Thunk:
        import torch

        c, dtype = xt.shape[1], xt.dtype
        w, b = torch.ones(c, dtype=dtype), torch.zeros(c, dtype=dtype)
        rm, rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
        return lambda: torch.nn.functional.batch_norm(
            xt, rm, rv, w, b, training=training, momentum=MOMENTUM, eps=EPS
        )

    return build


def _torch_bn_backward(xt: Any) -> Thunk:
    import torch

    c, dtype = xt.shape[1], xt.dtype
    w, b = torch.ones(c, dtype=dtype), torch.zeros(c, dtype=dtype)
    rm, rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
    dy = torch.from_numpy(_grad_like(xt.numpy()))
    aten = torch.ops.aten
    _, mean, invstd = aten.native_batch_norm(xt, w, b, rm, rv, True, MOMENTUM, EPS)
    mask = [True, True, True]
    return lambda: aten.native_batch_norm_backward(dy, xt, w, rm, rv, mean, invstd, True, EPS, mask)


def _torch_ln_forward(xt: Any) -> Thunk:
    import torch

    d, dtype = xt.shape[-1], xt.dtype
    w, b = torch.ones(d, dtype=dtype), torch.zeros(d, dtype=dtype)
    return lambda: torch.nn.functional.layer_norm(xt, (d,), w, b, EPS)


def _torch_ln_backward(xt: Any) -> Thunk:
    import torch

    d, dtype = xt.shape[-1], xt.dtype
    w, b = torch.ones(d, dtype=dtype), torch.zeros(d, dtype=dtype)
    dy = torch.from_numpy(_grad_like(xt.numpy()))
    aten = torch.ops.aten
    _, mean, rstd = aten.native_layer_norm(xt, [d], w, b, EPS)
    mask = [True, True, True]
    return lambda: aten.native_layer_norm_backward(dy, xt, [d], mean, rstd, w, b, mask)


def _torch_dropout_forward(xt: Any) -> Thunk:
    import torch

    # native_dropout returns the mask too, as autograd's training forward does.
    return lambda: torch.ops.aten.native_dropout(xt, DROPOUT_P, True)


def _torch_dropout_backward(xt: Any) -> Thunk:
    import torch

    dy = torch.from_numpy(_grad_like(xt.numpy()))
    _, mask = torch.ops.aten.native_dropout(xt, DROPOUT_P, True)
    scale = 1.0 / (1.0 - DROPOUT_P)
    return lambda: torch.ops.aten.native_dropout_backward(dy, mask, scale)


def _torch_bn_layer_call(xt: Any) -> Thunk:
    import torch

    layer = torch.nn.BatchNorm1d(xt.shape[1], dtype=xt.dtype).train()
    return lambda: layer(xt)


def _torch_ln_layer_call(xt: Any) -> Thunk:
    import torch

    layer = torch.nn.LayerNorm(xt.shape[-1], dtype=xt.dtype)
    return lambda: layer(xt)


def _torch_dropout_add_ln_forward(xt: Any) -> Thunk:
    import torch

    d, dtype = xt.shape[-1], xt.dtype
    w, b = torch.ones(d, dtype=dtype), torch.zeros(d, dtype=dtype)
    res = torch.from_numpy(_grad_like(xt.numpy()))
    aten = torch.ops.aten

    def three() -> Any:
        h, mask = aten.native_dropout(xt, FUSED_P, True)
        return aten.native_layer_norm(h + res, [d], w, b, EPS), mask

    return three


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One row of the benchmark.

    Attributes
    ----------
    name : str
        What is timed; ``--cases`` matches substrings of it.
    shape : tuple of int
        Shape of the input.
    passes : float
        Bytes moved, in units of the input's size: 2 for a forward (read x,
        write y), 3 for a normalisation backward (read x and dy, write dx), 2 for
        the dropout backward (read dy and a 1-bit mask, write dx).
    build : callable
        ``build(x, target)`` returns the normdrop thunk to time.
    build_torch : callable
        ``build_torch(xt)`` returns the PyTorch thunk to time.
    build_jax : callable
        ``build_jax(x)`` returns the JAX thunk to time (see :mod:`normdrop._bench_peers`).
    dtype : str
        The data's dtype: each case runs once per entry of :data:`DTYPES`.
    """

    name: str
    shape: tuple[int, ...]
    passes: float
    build: Callable[[np.ndarray, Target], Thunk] = field(repr=False)
    build_torch: Callable[[Any], Thunk] = field(repr=False)
    build_jax: _bench_peers.JaxBuilder = field(repr=False)
    dtype: str = "float32"

    def moved_bytes(self) -> float:
        """Bytes the case must read plus bytes it must write."""
        return self.passes * int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


BN_SHAPE = (64, 256, 512)
ROWS_SHAPE = (8192, 1024)
#: The dtypes every case runs in, in the order of the table.
DTYPES = ("float32", "float64")
_JAX = _bench_peers.jax_builders(eps=EPS, momentum=MOMENTUM, p=DROPOUT_P, fused_p=FUSED_P)

#: Every case in float32, in the order of the table (:data:`CASES` adds the dtypes).
_FLOAT32_CASES: tuple[Case, ...] = (
    Case("BatchNorm1d train forward", BN_SHAPE, 2, _bn_forward(True), _torch_bn_forward(True),
         _JAX["bn_train"]),
    Case("BatchNorm1d eval forward", BN_SHAPE, 2, _bn_forward(False), _torch_bn_forward(False),
         _JAX["bn_eval"]),
    Case("BatchNorm1d train forward channels-last", (65536, 64), 2, _bn_forward(True),
         _torch_bn_forward(True), _JAX["bn_train"]),
    Case("LayerNorm forward", ROWS_SHAPE, 2, _ln_forward, _torch_ln_forward, _JAX["ln_forward"]),
    Case(f"Dropout p={DROPOUT_P} forward", ROWS_SHAPE, 2, _dropout_forward, _torch_dropout_forward,
         _JAX["dropout_forward"]),
    Case("BatchNorm1d backward", BN_SHAPE, 3, _bn_backward, _torch_bn_backward,
         _JAX["bn_backward"]),
    Case("LayerNorm backward", ROWS_SHAPE, 3, _ln_backward, _torch_ln_backward,
         _JAX["ln_backward"]),
    # Dropout backward reads dy (and a 1-bit mask) and writes dx: two passes, not three.
    Case("Dropout backward", ROWS_SHAPE, 2, _dropout_backward, _torch_dropout_backward,
         _JAX["dropout_backward"]),
    Case("BatchNorm1d train forward whole layer call", (4, 64, 30), 2, _bn_layer_call,
         _torch_bn_layer_call, _JAX["bn_train"]),
    Case("LayerNorm forward whole layer call", (120, 64), 2, _ln_layer_call, _torch_ln_layer_call,
         _JAX["ln_forward"]),
    # Read x and the residual, write y and r (4 passes), plus the float32 data's bitmask.
    Case(f"Dropout+add+LayerNorm p={FUSED_P} fused forward", ROWS_SHAPE, 4 + 1 / 32,
         _fused_forward, _torch_dropout_add_ln_forward, _JAX["dropout_add_ln"]),
    Case(f"Dropout+add+LayerNorm p={FUSED_P} three calls forward", ROWS_SHAPE, 4 + 1 / 32,
         _three_calls_forward, _torch_dropout_add_ln_forward, _JAX["dropout_add_ln"]),
)  # fmt: skip

#: Every case in every dtype: all float32 cases, then all float64 ones.
CASES: tuple[Case, ...] = tuple(replace(c, dtype=d) for d in DTYPES for c in _FLOAT32_CASES)


def select_cases(patterns: Sequence[str] | None, dtypes: Sequence[str] | None = None) -> list[Case]:
    """Return the cases whose name contains any of ``patterns`` (case-insensitive).

    Parameters
    ----------
    patterns : sequence of str or None
        Substrings; ``None`` or empty selects every case.
    dtypes : sequence of str or None
        Keep only the cases in these dtypes; ``None`` or empty keeps every dtype.

    Returns
    -------
    list of Case
    """
    wanted = [p.lower() for p in patterns or ()]
    return [
        c
        for c in CASES
        if (not wanted or any(p in c.name.lower() for p in wanted))
        and (not dtypes or c.dtype in dtypes)
    ]


def _grad_like(x: np.ndarray) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype)


def _input(case: Case) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(case.shape).astype(case.dtype)


# ----------------------------------------------------------------------------- settings
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
        budget, repeat, min_time = _QUICK if args.quick else _FULL
        rounds = _ROUNDS[1] if args.quick else _ROUNDS[0]
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


def _thread_count() -> int:
    """Numba's thread count (what normdrop's kernels use), else the CPU count."""
    try:
        import numba
    except ImportError:
        return os.cpu_count() or 1
    return int(numba.get_num_threads())


def _import_torch() -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def _torch_session(torch: Any | None, threads: int) -> Iterator[None]:
    """Run PyTorch on ``threads`` threads with autograd off, restoring both afterwards."""
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- measuring
def _build(label: str, fn: Callable[[], Thunk]) -> Thunk | str:
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


def _measure_rounds(
    thunks: dict[str, Thunk | str], settings: Settings, bar: Any, label: str
) -> dict[str, Timing | str]:
    """Time every thunk in interleaved rounds; give a noisy one up to :data:`EXTRA_ROUNDS`
    more rounds; return each one's combined timing (or its error)."""
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
            if k != "copy" and isinstance(t, Timing) and _suspect(k, t, reference)
        ]
        if not suspects:
            break
        for key in suspects:
            one_round(key)
    bar.update(len(thunks))
    return combined()


def _copy_thunk(nbytes: float, dtype: np.dtype) -> Thunk:
    """``np.copyto`` moving ``nbytes`` in all (half read, half written)."""
    n = max(1, int(nbytes // (2 * dtype.itemsize)))
    src = np.random.default_rng(2).standard_normal(n).astype(dtype)
    dst = np.empty_like(src)
    return lambda: np.copyto(dst, src)


def _timing_dict(t: Timing | str | None) -> dict[str, Any] | None:
    if t is None:
        return None
    if isinstance(t, str):
        return {"error": t}
    return {
        "best_s": t.best,
        "median_s": t.median,
        "repeats": t.repeats,
        "number": t.number,
        "first_call_s": t.first_call,
        "rounds": len(t.round_bests),
        "round_best_s": list(t.round_bests),
        "spread": t.spread,
    }


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


#: The timed peers, in the order of the table's columns.
PEERS = ("torch", "jax")


def _row(
    case: Case,
    settings: Settings,
    timings: dict[str, Timing | str | None],
    memory: MemorySpeed | None = None,
) -> dict:
    """Combine the timings of one case into a JSON-ready row.

    A peer that is not installed (or not asked for) has the timing ``None``; its
    columns are then ``None`` too, with no error.
    """
    stat = settings.stat
    timings = {"torch": None, "jax": None, **timings}
    t = {k: (v.stat(stat) if isinstance(v, Timing) else None) for k, v in timings.items()}
    nbytes = case.moved_bytes()
    gbps = _ratio(nbytes / 1e9, t["normdrop"])
    copy_gbps = _ratio(nbytes / 1e9, t["copy"])
    errors = [v for v in timings.values() if isinstance(v, str)]
    spread = {k: (v.spread if isinstance(v, Timing) else None) for k, v in timings.items()}
    reasons = {
        k: _suspect(k, timing, timings.get("reference"))
        for k in ("normdrop", "reference", *PEERS)
        if isinstance(timing := timings.get(k), Timing)
    }
    noisy = {k: why for k, why in reasons.items() if why is not None}
    return {
        "case": case.name,
        "shape": list(case.shape),
        "dtype": case.dtype,
        "bytes": nbytes,
        "normdrop_s": t["normdrop"],
        "reference_s": t["reference"],
        "torch_s": t["torch"],
        "jax_s": t["jax"],
        "speedup_vs_torch": _ratio(t["torch"], t["normdrop"]),
        "speedup_vs_jax": _ratio(t["jax"], t["normdrop"]),
        "speedup_vs_reference": _ratio(t["reference"], t["normdrop"]),
        "gbps": gbps,
        "copy_gbps": copy_gbps,
        "copy_share": _ratio(gbps, copy_gbps),
        "memory_share": memory_share(nbytes, t["normdrop"], memory),
        "timings": {k: _timing_dict(v) for k, v in timings.items()},
        "spread": spread,
        "noisy": noisy,
        "errors": errors,
    }


def _progress(total: int, enabled: bool) -> Any:
    """A tqdm bar on stderr, or a stand-in with the same two methods when tqdm is missing."""
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
    return _NoProgress()


class _NoProgress:
    """What the run loop needs of a progress bar, doing nothing."""

    def update(self, n: int = 1) -> None:
        """Ignore progress."""

    def set_postfix_str(self, s: str) -> None:
        """Ignore the label."""

    def close(self) -> None:
        """Nothing to close."""


def _run_case(
    case: Case,
    settings: Settings,
    target: Target,
    reference: Target,
    peers: dict[str, Any | None],
    memory: MemorySpeed | None,
    bar: Any,
) -> dict:
    """Time one case every way and return its row.

    ``peers`` maps ``"torch"`` and ``"jax"`` to the imported module, or to ``None``
    when that peer is not installed or not asked for.
    """
    torch, jax = peers.get("torch"), peers.get("jax")
    x = _input(case)
    thunks: dict[str, Thunk | str] = {}
    thunks["reference"] = _build("reference", lambda: reference.wrap(case.build(x, reference)))
    same_code = target.backend.name == reference.backend.name and target.choice in (None, "numpy")
    if not same_code:
        thunks["normdrop"] = _build("normdrop", lambda: target.wrap(case.build(x, target)))
    if torch is not None:
        thunks["torch"] = _build("torch", lambda: case.build_torch(torch.from_numpy(x)))
    if jax is not None:
        thunks["jax"] = _build("jax", lambda: case.build_jax(x))
    thunks["copy"] = _build("copy", lambda: _copy_thunk(case.passes * x.nbytes, x.dtype))
    timings: dict[str, Timing | str | None] = dict(
        _measure_rounds(thunks, settings, bar, case.name)
    )
    if same_code:
        timings["normdrop"] = timings["reference"]  # the same code: do not time it twice
        bar.update()
    return _row(case, settings, timings, memory)


def _machine_info(
    target: Target,
    peers: dict[str, Any | None],
    threads: int,
    torch_threads: int,
    settings: Settings,
    cases: Sequence[Case],
    memory: MemorySpeed | None,
) -> dict:
    torch, jax = peers.get("torch"), peers.get("jax")
    try:
        import numba

        numba_version: str | None = numba.__version__
    except ImportError:
        numba_version = None
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(affinity) if affinity is not None else None,
        "numba_threads": threads,
        "torch_threads": torch_threads if torch is not None else None,
        "python": platform.python_version(),
        "normdrop": normdrop.__version__,
        "numpy": np.__version__,
        "numba": numba_version,
        "torch": torch.__version__ if torch is not None else None,
        "jax": jax.__version__ if jax is not None else None,
        "backend": target.backend.name,
        "available_backends": normdrop.available_backends(),
        "dtypes": sorted({c.dtype for c in cases}, key=DTYPES.index),
        "memory": memory.as_dict() if memory is not None else None,
        "stat": settings.stat,
        "budget_s": settings.budget,
        "repeat": settings.repeat,
        "rounds": settings.rounds,
        "noise_threshold": NOISE_THRESHOLD,
    }


# ----------------------------------------------------------------------------- output
def _fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _fmt_peer(row: dict, peer: str, value: Callable[[dict], str]) -> str:
    """A peer's cell: ``n/a`` when the peer was not timed (not installed or not asked for)."""
    return "n/a" if row["timings"].get(peer) is None else value(row)


def _fmt_float(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


_COLUMNS: tuple[tuple[str, str, Callable[[dict], str]], ...] = (
    # (header, alignment, formatter)
    ("case", "<", lambda r: r["case"]),
    ("dtype", "<", lambda r: r["dtype"]),
    ("shape", "<", lambda r: "(" + ", ".join(str(d) for d in r["shape"]) + ")"),
    ("normdrop", ">", lambda r: _fmt_time(r["normdrop_s"])),
    ("numpy ref", ">", lambda r: _fmt_time(r["reference_s"])),
    ("torch", ">", lambda r: _fmt_peer(r, "torch", lambda r: _fmt_time(r["torch_s"]))),
    ("jax", ">", lambda r: _fmt_peer(r, "jax", lambda r: _fmt_time(r["jax_s"]))),
    ("vs torch", ">", lambda r: _fmt_peer(r, "torch", lambda r: _fmt_ratio(r["speedup_vs_torch"]))),
    ("vs jax", ">", lambda r: _fmt_peer(r, "jax", lambda r: _fmt_ratio(r["speedup_vs_jax"]))),
    ("vs ref", ">", lambda r: _fmt_ratio(r["speedup_vs_reference"])),
    ("GB/s", ">", lambda r: _fmt_float(r["gbps"], ".1f")),
    ("of copy", ">", lambda r: _fmt_float(r["copy_share"], ".0%")),
    ("of mem", ">", lambda r: _fmt_float(r["memory_share"], ".0%")),
    ("spread", ">", lambda r: _fmt_spread(r)),
)


def _fmt_spread(row: dict) -> str:
    """The largest spread of the row's timed implementations, ``!`` when the row is noisy."""
    values = [row["spread"].get(k) for k in ("normdrop", "reference", *PEERS)]
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{max(values):.0%}" + (" !" if row["noisy"] else "")


def format_table(rows: Sequence[dict]) -> str:
    """Render rows as an aligned plain-text table.

    Parameters
    ----------
    rows : sequence of dict
        Rows as :func:`run` produces them.

    Returns
    -------
    str
    """
    cells = [[fmt(r) for _, _, fmt in _COLUMNS] for r in rows]
    headers = [h for h, _, _ in _COLUMNS]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            f"{v:{align}{w}}" for v, (_, align, _), w in zip(values, _COLUMNS, widths, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(c) for c in cells)])


def _threads(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def _header(info: dict) -> str:
    torch = (
        f"torch {info['torch']} on {_threads(info['torch_threads'])}"
        if info["torch"]
        else ("torch not timed")
    )
    jax = f"jax {info['jax']} (CPU, its own threads)" if info["jax"] else "jax not timed"
    stat = "best" if info["stat"] == "min" else "median"
    line = (
        f"normdrop {info['normdrop']} bench: backend {info['backend']!r}, "
        f"{' and '.join(info['dtypes'])}, {stat} of repeats; {info['cpu_count']} CPUs, "
        f"numba on {_threads(info['numba_threads'])}, {torch}, {jax}"
    )
    memory = info["memory"]
    if memory is None:
        return line
    copies = ", ".join(f"{k} {v:.1f}" for k, v in memory["copies_gbps"].items())
    return (
        f"{line}\nmemory speed {memory['gbps']:.1f} GB/s: best copy of "
        f"{memory['array_bytes'] / 2**20:.0f} MiB (GB/s: {copies})"
    )


def _footer(rows: Sequence[dict]) -> str:
    legend = (
        "vs torch, vs jax, vs ref: speed-up of normdrop over PyTorch, over jax.jit and over "
        "the numpy reference (above 1 is faster; n/a: that peer is not installed or was not "
        "asked for). GB/s: bytes moved (read + written) per second by normdrop (forward 2x "
        "the input, normalisation backward 3x, dropout backward 2x). of copy: normdrop's "
        "share of np.copyto's GB/s moving the same bytes in this run. of mem: the time the "
        "memory speed needs for the bytes normdrop moves, divided by normdrop's time (a "
        "copy's read and write both count as moved bytes)."
    )
    notes = [textwrap.fill(legend, width=100)]
    noise = (
        f"spread: how far the second-fastest of a measurement's timed rounds is above the "
        f"fastest (the fastest is reported). '!' marks a noisy row: after {EXTRA_ROUNDS} extra "
        f"rounds, a spread above {NOISE_THRESHOLD:.0%}, or a call more than "
        f"{OUTLIER_VS_REFERENCE:.0f}x slower than the NumPy reference's. The machine was busy: "
        f"rerun that case (--cases; for PyTorch also --torch-threads 1) before trusting its ratios."
    )
    notes.append(textwrap.fill(noise, width=100))
    for r in rows:
        if r["noisy"]:
            notes.append(f"noisy: {r['case']} ({r['dtype']}): {'; '.join(r['noisy'].values())}")
    notes += [f"error: {r['case']} ({r['dtype']}): {e}" for r in rows for e in r["errors"]]
    return "\n".join(notes)


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``bench`` sub-command's parser.
    """
    parser.add_argument(
        "--backend",
        default=None,
        metavar="NAME",
        help="backend timed in the normdrop column (default: the automatic choice)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        action="append",
        default=None,
        help="run only the cases in this dtype (repeatable; default: float32 and float64)",
    )
    parser.add_argument(
        "--cases",
        action="append",
        metavar="TEXT",
        help="run only cases whose name contains TEXT (case-insensitive; repeatable)",
    )
    parser.add_argument("--quick", action="store_true", help="a fast, rough pass")
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"most timed repeats per measurement (default {_FULL[1]}, quick {_QUICK[1]})",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"seconds of timed repeats per measurement, after the warm-up "
        f"(default {_FULL[0]}, quick {_QUICK[0]})",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"interleaved timing rounds per measurement, sharing its budget and repeats "
        f"(default {_ROUNDS[0]}, quick {_ROUNDS[1]})",
    )
    parser.add_argument(
        "--stat",
        choices=("min", "median"),
        default="min",
        help="statistic of the repeats to report (default: min)",
    )
    parser.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    parser.add_argument("--no-jax", action="store_true", help="do not time JAX")
    parser.add_argument(
        "--memory-mib",
        type=_positive_int,
        default=_bench_memory.MEMORY_BYTES // 2**20,
        metavar="MIB",
        help="size of the array copied to measure the memory speed "
        f"(default {_bench_memory.MEMORY_BYTES // 2**20})",
    )
    parser.add_argument(
        "--plot",
        default=None,
        metavar="FILE.png",
        help="instead of the table, sweep each layer's forward over sizes and plot GB/s "
        "against size for normdrop and every peer (needs matplotlib: the bench extra)",
    )
    parser.add_argument(
        "--plot-sizes",
        type=_plot_sizes,
        default=None,
        metavar="LIST",
        help="input sizes of the --plot sweep, e.g. 4K,1M,256M "
        "(default: 4 KiB to 256 MiB in steps of 4x)",
    )
    parser.add_argument(
        "--torch-threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="PyTorch's thread count (default: Numba's, the threads normdrop's kernels use)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="list the (selected) cases and exit")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _plot_sizes(text: str) -> tuple[int, ...]:
    from normdrop import _bench_plot

    try:
        return _bench_plot.parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _peers(args: argparse.Namespace) -> dict[str, Any | None]:
    """The peers to time: each installed and not switched off, else ``None``."""
    return {
        "torch": None if args.no_torch else _import_torch(),
        "jax": None if getattr(args, "no_jax", False) else _bench_peers.import_jax(),
    }


def _memory_speed(settings: Settings, bar: Any, array_bytes: int) -> MemorySpeed | None:
    """This run's memory speed, timed like the cases; ``None`` when every copy failed."""

    def measure(thunks: dict[str, Thunk]) -> dict[str, float]:
        timings = _measure_rounds(dict(thunks), settings, bar, "memory speed")
        return {k: t.best for k, t in timings.items() if isinstance(t, Timing)}

    speed = _bench_memory.memory_speed(measure, array_bytes)
    return speed if speed.copies else None


def _target(choice: str | None) -> Target:
    """The normdrop target: ``choice``, or whatever is chosen for NumPy data by default."""
    from normdrop.registry import resolve_backend

    if choice is None:
        return Target(resolve_backend(np.empty(0)), None)
    return Target(normdrop.get_backend(choice), choice)


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks and print a table (or JSON) to stdout.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``bench`` arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0 on success, 2 when no case matches ``--cases``.

    Notes
    -----
    ``--list`` prints the selected cases instead of running them.
    """
    cases = select_cases(args.cases, args.dtype)
    if not cases:
        print(f"normdrop: error: no case matches {args.cases}; see --list", file=sys.stderr)
        return 2
    if args.list:
        width = max(len(c.name) for c in cases)
        print("\n".join(f"{c.name:<{width}}  {c.dtype}  {c.shape}" for c in cases))
        return 0
    if args.backend == "cuda":
        from normdrop import _bench_cuda  # CUDA-event timings on a GPU

        if _bench_cuda.gpu_present():
            return _bench_cuda.run(args, cases)
    settings = Settings.from_args(args)
    target = _target(args.backend)
    reference = Target(normdrop.get_backend("numpy"), "numpy")
    peers = _peers(args)
    torch = peers["torch"]
    threads = _thread_count()
    torch_threads = threads if args.torch_threads is None else args.torch_threads
    if args.plot is not None:
        from normdrop import _bench_plot

        with _torch_session(torch, torch_threads):
            return _bench_plot.run(args, settings, target, peers)

    timed = 3 + sum(p is not None for p in peers.values())
    bar = _progress(len(cases) * timed + 2, enabled=not args.no_progress)
    try:
        memory = _memory_speed(settings, bar, args.memory_mib * 2**20)
        with _torch_session(torch, torch_threads):
            rows = [_run_case(c, settings, target, reference, peers, memory, bar) for c in cases]
    finally:
        bar.close()

    info = _machine_info(target, peers, threads, torch_threads, settings, cases, memory)
    if args.json:
        print(json.dumps({"machine": info, "rows": rows}, indent=2))
    else:
        print(_header(info), format_table(rows), _footer(rows), sep="\n\n")
    return 0
