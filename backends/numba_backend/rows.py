"""LayerNorm forward kernels and row moments on C-contiguous ``(R, D)`` rows.

Rows of up to ``ROW_SPLIT`` values are handled whole by one task (several rows
per task): the statistics are computed while the row is in cache and the
output written straight after. Longer rows are split into segments of at most
:data:`~.jit.TASK_SIZE` values: per-segment partial results first (in parallel),
then a per-row combination, then the output per segment (in parallel). All
accumulation is float64; the output arithmetic is float64 and rounds once.

Each kernel is one source compiled per row length class (:func:`row_kernel`):
``"short"`` rows of at most ``SHORT_ROW`` values, ``"whole"`` rows up to
``ROW_SPLIT`` and ``"split"`` longer ones; the source branches on the constants
``SHORT_ROWS`` and ``SPLIT_ROWS``, so a call compiles only its class's code.

``weight`` and ``bias`` are float32 or float64 vectors; an empty one stands for
``None``, so that every combination compiles the same specialisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import prange

from .jit import TASK_SIZE, KernelVariants, inline_jit, rsqrt_jit, task_jit
from .vectors import float64_or

__all__ = [
    "layer_norm_forward",
    "row_kernel",
    "row_moments",
    "rows_per_task",
    "segments",
]

#: Rows of at most this many values are normalised pass by pass over a task's rows.
SHORT_ROW = 256
#: Rows longer than this are split into segments (256 KiB of float32, the L2 share
#: of one core, so a whole row stays cached between the passes below it).
ROW_SPLIT = 65536

#: True in the clones for rows of at most ``SHORT_ROW`` values (see :func:`row_kernel`).
SHORT_ROWS = False
#: True in the clones for rows longer than ``ROW_SPLIT`` values.
SPLIT_ROWS = False

_CLASSES = {
    "short": {"SHORT_ROWS": True, "SPLIT_ROWS": False},
    "whole": {"SHORT_ROWS": False, "SPLIT_ROWS": False},
    "split": {"SHORT_ROWS": False, "SPLIT_ROWS": True},
}


def _row_class(x: Any) -> str:
    """The variant of a row kernel that serves ``(R, D)`` data ``x``."""
    d = x.shape[1]
    return "short" if d <= SHORT_ROW else "whole" if d <= ROW_SPLIT else "split"


def row_kernel(fn: Callable[..., Any], classes: tuple[str, ...] = tuple(_CLASSES)) -> Any:
    """Compile ``fn`` once per row length class (``"short"``, ``"whole"``, ``"split"``).

    Parameters
    ----------
    fn : function
        The kernel source; its first argument has shape ``(R, D)`` and it branches
        on ``SHORT_ROWS`` and ``SPLIT_ROWS`` (globals of its module).
    classes : tuple of str
        The classes to compile separately; a kernel whose code is the same for
        short and whole rows lists only ``("whole", "split")``.

    Returns
    -------
    KernelVariants
    """

    def choose(x: Any) -> str:
        found = _row_class(x)
        return found if found in classes else "whole"

    return KernelVariants(fn, choose, {name: _CLASSES[name] for name in classes})


@inline_jit
def _two_pass(v):
    """Mean and sum of squared deviations of a 1-D view (float64)."""
    s = 0.0
    for j in range(v.size):
        s += v[j]
    m = s / v.size
    q = 0.0
    for j in range(v.size):
        d = v[j] - m
        q += d * d
    return m, q


@rsqrt_jit
def _rstd(m2, r0, r1, d, eps):
    """``m2[r] = 1 / sqrt(m2[r] / d + eps)`` for rows ``r0 .. r1 - 1`` (in place)."""
    for r in range(r0, r1):
        m2[r] = 1.0 / np.sqrt(m2[r] / d + eps)


@inline_jit
def rows_per_task(r, d, max_tasks):
    """Rows per task (about :data:`~.jit.TASK_SIZE` values, at most ``max_tasks`` tasks)
    and the number of tasks."""
    per = max(1, TASK_SIZE // max(d, 1), (r + max_tasks - 1) // max(max_tasks, 1))
    return per, (r + per - 1) // per


@inline_jit
def segments(rows, d):
    """Segments per split row of ``d`` values, the segment length, and two float64
    ``(rows, segments)`` buffers for the segments' partial results."""
    nseg = (d + TASK_SIZE - 1) // TASK_SIZE
    return nseg, (d + nseg - 1) // nseg, np.empty((rows, nseg)), np.empty((rows, nseg))


@inline_jit
def _normalise(xv, ov, m, rs, w, b):
    """``ov = (xv - m) * rs * w + b`` (a segment of a split row)."""
    for j in range(xv.size):
        ov[j] = (xv[j] - m) * rs * w[j] + b[j]


@task_jit
def _forward_short_rows(x, w, b, eps, out, mean, rstd, t, per):
    """Task ``t`` of the forward of rows of at most ``SHORT_ROW`` values.

    Pass by pass over the task's rows (all sums, all squared deviations, all
    ``rstd``, all outputs): row by row, each short row's chain of dependent
    reductions, division and square root leaves the core idle (the task's rows stay
    in L2). ``w`` and ``b`` are float64.
    """
    rows, d = x.shape
    r0 = t * per
    r1 = min(rows, r0 + per)
    for r in range(r0, r1):
        xr = x[r]
        s = 0.0
        for j in range(d):
            s += xr[j]
        mean[r] = s / d
    for r in range(r0, r1):
        xr = x[r]
        m = mean[r]
        q = 0.0
        for j in range(d):
            e = xr[j] - m
            q += e * e
        rstd[r] = q
    _rstd(rstd, r0, r1, d, eps)
    for r in range(r0, r1):
        xr = x[r]
        orow = out[r]
        m = mean[r]
        rs = rstd[r]
        for j in range(d):
            orow[j] = (xr[j] - m) * rs * w[j] + b[j]


@task_jit
def _forward_whole_rows(x, w, b, eps, out, mean, rstd, t, per):
    """Task ``t`` of the forward of rows of ``SHORT_ROW`` to ``ROW_SPLIT`` values: one
    row at a time, its statistics while it is in cache, then its output (``w`` and
    ``b`` are float64: converting them per element would slow the output pass)."""
    rows, d = x.shape
    for r in range(t * per, min(rows, (t + 1) * per)):
        xr = x[r]
        orow = out[r]
        s = 0.0
        for j in range(d):
            s += xr[j]
        m = s / d
        q = 0.0
        for j in range(d):
            e = xr[j] - m
            q += e * e
        rs = 1.0 / np.sqrt(q / d + eps)
        for j in range(d):
            orow[j] = (xr[j] - m) * rs * w[j] + b[j]
        mean[r] = m
        rstd[r] = rs


@task_jit
def _moments_rows(x, mean, var, t, per):
    rows, d = x.shape
    for r in range(t * per, min(rows, (t + 1) * per)):
        m, q = _two_pass(x[r])
        mean[r] = m
        var[r] = q / d


@task_jit
def _segment_stats(x, t, nseg, seg, pmean, pm2):
    """Task ``t`` of a split row: two-pass moments of one segment."""
    r = t // nseg
    s0 = (t - r * nseg) * seg
    m, q = _two_pass(x[r, s0 : min(x.shape[1], s0 + seg)])
    pmean[r, t - r * nseg] = m
    pm2[r, t - r * nseg] = q


@inline_jit
def _combine_segments(pmean, pm2, d, seg, mean, var):
    """Pooled (Chan) mean and biased variance per row from its segments."""
    rows, nseg = pmean.shape
    last = d - (nseg - 1) * seg
    for r in range(rows):
        s = 0.0
        for i in range(nseg):
            s += pmean[r, i] * (seg if i < nseg - 1 else last)
        m = s / d
        q = 0.0
        for i in range(nseg):
            e = pmean[r, i] - m
            q += pm2[r, i] + (seg if i < nseg - 1 else last) * e * e
        mean[r] = m
        var[r] = q / d


@inline_jit
def _long_row_rstd(pmean, pm2, d, seg, eps, mean, rstd):
    """Mean and rstd of split rows from their segments' moments."""
    _combine_segments(pmean, pm2, d, seg, mean, rstd)
    _rstd(rstd, 0, mean.size, 1, eps)


@task_jit
def _normalise_segment(x, out, mean, rstd, w, b, t, nseg, seg):
    """Output of task ``t`` (one segment of a split row)."""
    d = x.shape[1]
    r = t // nseg
    s0 = (t - r * nseg) * seg
    s1 = min(d, s0 + seg)
    _normalise(x[r, s0:s1], out[r, s0:s1], mean[r], rstd[r], w[s0:s1], b[s0:s1])


def _layer_norm_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    eps: float,
    out: np.ndarray,
    stats: np.ndarray,
) -> None:
    """Fused LayerNorm of ``(R, D)`` rows into ``out``, float64 mean and rstd into
    ``stats`` (shape ``(2, R)``: passing it in saves boxing two new arrays per call)."""
    rows, d = x.shape
    mean = stats[0]
    rstd = stats[1]
    w = float64_or(d, weight, 1.0)
    b = float64_or(d, bias, 0.0)
    if SPLIT_ROWS:
        nseg, seg, pmean, pm2 = segments(rows, d)
        for tt in prange(rows * nseg):
            _segment_stats(x, np.int64(tt), nseg, seg, pmean, pm2)
        _long_row_rstd(pmean, pm2, d, seg, eps, mean, rstd)
        for tt in prange(rows * nseg):
            _normalise_segment(x, out, mean, rstd, w, b, np.int64(tt), nseg, seg)
    else:
        per, n_tasks = rows_per_task(rows, d, rows)
        for tt in prange(n_tasks):
            t = np.int64(tt)  # the prange index is unsigned
            if SHORT_ROWS:
                _forward_short_rows(x, w, b, eps, out, mean, rstd, t, per)
            else:
                _forward_whole_rows(x, w, b, eps, out, mean, rstd, t, per)


#: LayerNorm forward (see :func:`_layer_norm_forward`), one variant per row class.
layer_norm_forward = row_kernel(_layer_norm_forward)


def _row_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row float64 mean and biased variance of ``(R, D)`` data."""
    rows, d = x.shape
    mean = np.empty(rows)
    var = np.empty(rows)
    if SPLIT_ROWS:
        nseg, seg, pmean, pm2 = segments(rows, d)
        for tt in prange(rows * nseg):
            _segment_stats(x, np.int64(tt), nseg, seg, pmean, pm2)
        _combine_segments(pmean, pm2, d, seg, mean, var)
    else:
        per, n_tasks = rows_per_task(rows, d, rows)
        for tt in prange(n_tasks):
            _moments_rows(x, mean, var, np.int64(tt), per)  # the prange index is unsigned
    return mean, var


#: Row moments (see :func:`_row_moments`): one variant for whole rows, one for split ones.
row_moments = row_kernel(_row_moments, ("whole", "split"))
