"""How per-channel reductions of ``(N, C, L)`` data are split into tasks.

The ``N * L`` values of every channel are split into tasks that depend only on
the shape. A task covers a range of *units* and a block of channels and writes
float64 partial results into its own row ``k`` of ``[n_chunks, C]`` buffers; the
rows are then combined in a fixed order, so results do not depend on the thread
count. There is never a ``prange`` over channels.

Two task layouts, picked by ``L``:

* long rows (``L >= LONG_ROW``, :mod:`.layouts`): a unit is one sample ``n`` (or a segment of its
  rows when ``L`` exceeds :data:`~.jit.TASK_SIZE`); for each channel the values
  are contiguous runs along ``L``, summed by vectorised scalar accumulators;
* short rows (``L < LONG_ROW``, e.g. ``(N, C)`` data with ``L == 1``): a unit is a
  sample, the ``K = C * L`` columns of a row are summed into per-column
  accumulators (vectorised across columns) and folded into channels at the end
  of the task. Rows shorter than ``MIN_WIDTH`` are processed ``P`` at a time as
  one "super-row" of ``K * P`` columns so that the inner loop stays long.

Used by :mod:`.stats` (moments) and :mod:`.channel_sums` (backward sums); every
helper here is inlined into the task functions that call it.

A third layout serves the whole-layer BatchNorm backward (:mod:`.channel_backward`)
and the float64 training forward (:mod:`.fused`, :func:`~.layouts.forward_takes_blocks`),
which reduce and then transform the same data: when each
channel holds at most :data:`~.layouts.BLOCK_BYTES` in rows of at least ``LONG_ROW``
(:func:`~.layouts.takes_blocks`), a task owns whole channels, so it finishes a channel's
reduction and transforms the channel while its data is still in its core's
cache: the data comes from memory once, not twice.
"""

from __future__ import annotations

import numpy as np

from .jit import TASK_SIZE, inline_jit
from .layouts import LONG_ROW

__all__ = [
    "channel_blocks",
    "channel_dot",
    "channel_total",
    "chunk_counts",
    "column_count",
    "first_column",
    "four_rows",
    "plan_tasks",
    "short_geometry",
    "super_row",
    "task_bounds",
    "tasks_and_partials",
    "unit_row",
]

#: Narrowest inner loop of the short-row layout.
MIN_WIDTH = 64
#: Fewest rows per task of the short-row layout when rows are wide.
MIN_ROWS = 64


@inline_jit
def plan_tasks(n, c, length):
    """Split the work of ``(n, c, length)`` data into tasks (shape-only arithmetic).

    Returns ``(long, seg, nseg, per_chunk, period, ch_per_task, n_chunks, n_blocks)``:
    the layout, the segment length and segments per row (long layout), the units
    per chunk, the super-row factor ``P`` (short layout), channels per task, and
    the numbers of unit chunks and channel blocks (tasks = their product).
    """
    if length >= LONG_ROW:
        nseg = (length + TASK_SIZE - 1) // TASK_SIZE
        seg = (length + nseg - 1) // nseg
        per_unit = max(c * seg, 1)
        if per_unit <= TASK_SIZE:
            per_chunk = TASK_SIZE // per_unit
            ch_per_task = max(c, 1)
        else:
            per_chunk = 1
            ch_per_task = max(1, TASK_SIZE // seg)
        units = n * nseg
        period = 1
        long = True
    else:
        nseg = 1
        seg = length
        width = c * length
        period = 1 if width >= MIN_WIDTH else (MIN_WIDTH + width - 1) // max(width, 1)
        if width * MIN_ROWS <= TASK_SIZE:
            per_chunk = max(MIN_ROWS, TASK_SIZE // max(width, 1))
            per_chunk = (per_chunk // period) * period
            ch_per_task = max(c, 1)
        else:
            per_chunk = MIN_ROWS
            ch_per_task = max(1, TASK_SIZE // (min(n, MIN_ROWS) * length))
        units = n
        long = False
    n_chunks = (units + per_chunk - 1) // per_chunk
    n_blocks = (c + ch_per_task - 1) // ch_per_task
    return long, seg, nseg, per_chunk, period, ch_per_task, n_chunks, n_blocks


@inline_jit
def channel_blocks(x):
    """Channels per task of the channel-block layout (about :data:`~.jit.TASK_SIZE`
    values each) of ``(N, C, L)`` data ``x`` (shape-only), and the number of tasks."""
    n, c, length = x.shape
    per = max(1, TASK_SIZE // max(n * length, 1))
    return per, (c + per - 1) // per


@inline_jit
def channel_dot(dy, x, ch, m):
    """``sum(dy)`` and ``sum((x - m) * dy)`` (float64) over channel ``ch`` of ``(N, C, L)``
    data, four samples' rows per sweep: the rows of one channel lie ``C * L`` values
    apart, and reading four at once keeps more requests to memory in flight than one."""
    n, _, length = x.shape
    s = 0.0
    q = 0.0
    i = 0
    while i + 4 <= n:
        x0, x1, x2, x3 = x[i, ch], x[i + 1, ch], x[i + 2, ch], x[i + 3, ch]
        g0, g1, g2, g3 = dy[i, ch], dy[i + 1, ch], dy[i + 2, ch], dy[i + 3, ch]
        for j in range(length):
            a0 = np.float64(g0[j])
            a1 = np.float64(g1[j])
            a2 = np.float64(g2[j])
            a3 = np.float64(g3[j])
            s += (a0 + a1) + (a2 + a3)
            q += ((x0[j] - m) * a0 + (x1[j] - m) * a1) + ((x2[j] - m) * a2 + (x3[j] - m) * a3)
        i += 4
    for r in range(i, n):
        xr = x[r, ch]
        gr = dy[r, ch]
        for j in range(length):
            g = np.float64(gr[j])
            s += g
            q += (xr[j] - m) * g
    return s, q


@inline_jit
def chunk_counts(n, length, long, seg, nseg, per_chunk, n_chunks):
    """Values per channel in each unit chunk (float64)."""
    counts = np.empty(n_chunks)
    units = n * nseg
    short_tail = nseg * seg - length  # the last segment of a row is this much shorter
    for k in range(n_chunks):
        u0 = k * per_chunk
        u1 = min(units, u0 + per_chunk)
        if long:
            tails = u1 // nseg - u0 // nseg
            counts[k] = (u1 - u0) * seg - tails * short_tail
        else:
            counts[k] = (u1 - u0) * length
    return counts


@inline_jit
def task_bounds(t, n_blocks, per_chunk, ch_per_task, units, c):
    """Chunk ``k``, units ``u0:u1`` and channels ``c0:c1`` of task ``t``."""
    k = t // n_blocks
    b = t - k * n_blocks
    u0 = k * per_chunk
    c0 = b * ch_per_task
    return k, u0, min(units, u0 + per_chunk), c0, min(c, c0 + ch_per_task)


@inline_jit
def unit_row(x, ch, u, nseg, seg):
    """Channel ``ch``'s values in unit ``u`` of the long-row layout (a segment of a row)."""
    i = u // nseg
    l0 = (u - i * nseg) * seg
    return x[i, ch, l0 : min(x.shape[2], l0 + seg)]


# ----------------------------------------------------------------------------- moments


@inline_jit
def short_geometry(n, c, length, t, plan):
    """Where short-row task ``t`` reads: see :func:`_moments_short_task`."""
    _, _, _, per_chunk, period, ch_per_task, _, n_blocks = plan
    k, n0, n1, c0, c1 = task_bounds(t, n_blocks, per_chunk, ch_per_task, n, c)
    width = c * length
    w0 = c0 * length
    cols = (c1 - c0) * length if period == 1 else width * period
    rows = n1 - n0
    full = rows // period
    tail = (rows - full * period) * width  # values in the partial super-row (period > 1)
    return k, c0, c1, n0 * width + w0, width * period, cols, rows, full, tail


@inline_jit
def four_rows(flat, off, stride, cols):
    """The ``cols`` values of the four super-rows from ``flat[off]`` on, ``stride`` apart."""
    return (
        flat[off : off + cols],
        flat[off + stride : off + stride + cols],
        flat[off + 2 * stride : off + 2 * stride + cols],
        flat[off + 3 * stride : off + 3 * stride + cols],
    )


@inline_jit
def super_row(flat, base, stride, r, full, cols, tail):
    """Super-row ``r`` of a short-row task: ``cols`` values, or ``tail`` for ``r == full``."""
    off = base + r * stride
    return flat[off : off + (cols if r < full else tail)]


@inline_jit
def first_column(p, ch, c0, width, length):
    """Column of copy ``p`` of channel ``ch``'s first value in a short-row task."""
    return p * width + (ch - c0) * length


@inline_jit
def channel_total(v, ch, c0, copies, width, length):
    """Sum of the per-column values ``v`` of channel ``ch`` in a short-row task."""
    s = 0.0
    for p in range(copies):
        j0 = first_column(p, ch, c0, width, length)
        a = v[j0 : j0 + length]
        for j in range(length):
            s += a[j]
    return s


@inline_jit
def column_count(j, full, tail):
    """Values in column ``j`` of a short-row task (float64)."""
    return np.float64(full + 1 if j < tail else full)


@inline_jit
def tasks_and_partials(x):
    """The task plan of ``(N, C, L)`` data, its number of tasks and two ``[n_chunks, C]``
    float64 buffers for the tasks' partial results."""
    n, c, length = x.shape
    plan = plan_tasks(n, c, length)
    return plan, plan[6] * plan[7], np.empty((plan[6], c)), np.empty((plan[6], c))
