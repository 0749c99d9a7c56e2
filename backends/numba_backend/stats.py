"""Per-channel reductions of ``(N, C, L)`` data: BatchNorm moments and backward sums.

The ``N * L`` values of every channel are split into tasks that depend only on
the shape. A task covers a range of *units* and a block of channels and writes
float64 partial results into its own row ``k`` of ``[n_chunks, C]`` buffers; the
rows are then combined in a fixed order (Chan's formula for the variance). There
is never a ``prange`` over channels and never ``E[x^2] - E[x]^2`` of raw values:
a long-row task computes its mean, then the squared deviations from it while its
data is still in cache; a short-row task makes one pass of shifted sums (each
column's values less one of them, the column's first), which needs no second
sweep over the data: as the shift is one of the column's values, ``(K - mean)^2``
is at most ``count`` times the variance, so cancellation costs at most
``log2(count)`` bits of the float64 M2 (9 for the at most 512 values of a column).

Two task layouts, picked by ``L``:

* long rows (``L >= LONG_ROW``, :mod:`.layouts`): a unit is one sample ``n`` (or a segment of its
  rows when ``L`` exceeds :data:`~.jit.TASK_SIZE`); for each channel the values
  are contiguous runs along ``L``, summed by vectorised scalar accumulators;
* short rows (``L < LONG_ROW``, e.g. ``(N, C)`` data with ``L == 1``): a unit is a
  sample, the ``K = C * L`` columns of a row are summed into per-column
  accumulators (vectorised across columns) and folded into channels at the end
  of the task. Rows shorter than ``MIN_WIDTH`` are processed ``P`` at a time as
  one "super-row" of ``K * P`` columns so that the inner loop stays long.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import TASK_SIZE, inline_jit, task_jit
from .layouts import LONG_LAYOUT, LONG_ROW, channel_kernel

__all__ = ["channel_moments", "channel_sums", "moments"]
#: Narrowest inner loop of the short-row layout.
MIN_WIDTH = 64
#: Fewest rows per task of the short-row layout when rows are wide.
MIN_ROWS = 64
#: Fewest super-rows of a short-row task that takes the one-pass moments: below, the
#: per-column work of the one pass costs more than the second sweep it saves.
ONE_PASS_MIN_ROWS = 8


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
def _chunk_counts(n, length, long, seg, nseg, per_chunk, n_chunks):
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
def _task_bounds(t, n_blocks, per_chunk, ch_per_task, units, c):
    """Chunk ``k``, units ``u0:u1`` and channels ``c0:c1`` of task ``t``."""
    k = t // n_blocks
    b = t - k * n_blocks
    u0 = k * per_chunk
    c0 = b * ch_per_task
    return k, u0, min(units, u0 + per_chunk), c0, min(c, c0 + ch_per_task)


@inline_jit
def _unit_row(x, ch, u, nseg, seg):
    """Channel ``ch``'s values in unit ``u`` of the long-row layout (a segment of a row)."""
    i = u // nseg
    l0 = (u - i * nseg) * seg
    return x[i, ch, l0 : min(x.shape[2], l0 + seg)]


# ----------------------------------------------------------------------------- moments
@task_jit
def _moments_long_task(x, t, plan, pmean, pm2):
    """One task of the long-row layout: mean and M2 per channel of its units."""
    n, c, length = x.shape
    _, seg, nseg, per_chunk, _, ch_per_task, _, n_blocks = plan
    k, u0, u1, c0, c1 = _task_bounds(t, n_blocks, per_chunk, ch_per_task, n * nseg, c)
    short_tail = nseg * seg - length
    count = (u1 - u0) * seg - (u1 // nseg - u0 // nseg) * short_tail
    for ch in range(c0, c1):
        s = 0.0
        for u in range(u0, u1):
            row = _unit_row(x, ch, u, nseg, seg)
            for j in range(row.size):
                s += row[j]
        m = s / count
        q = 0.0
        for u in range(u0, u1):
            row = _unit_row(x, ch, u, nseg, seg)
            for j in range(row.size):
                d = row[j] - m
                q += d * d
        pmean[k, ch] = m
        pm2[k, ch] = q


@inline_jit
def _short_geometry(n, c, length, t, plan):
    """Where short-row task ``t`` reads: see :func:`_moments_short_task`."""
    _, _, _, per_chunk, period, ch_per_task, _, n_blocks = plan
    k, n0, n1, c0, c1 = _task_bounds(t, n_blocks, per_chunk, ch_per_task, n, c)
    width = c * length
    w0 = c0 * length
    cols = (c1 - c0) * length if period == 1 else width * period
    rows = n1 - n0
    full = rows // period
    tail = (rows - full * period) * width  # values in the partial super-row (period > 1)
    return k, c0, c1, n0 * width + w0, width * period, cols, rows, full, tail


@inline_jit
def _four_rows(flat, off, stride, cols):
    """The ``cols`` values of the four super-rows from ``flat[off]`` on, ``stride`` apart."""
    return (
        flat[off : off + cols],
        flat[off + stride : off + stride + cols],
        flat[off + 2 * stride : off + 2 * stride + cols],
        flat[off + 3 * stride : off + 3 * stride + cols],
    )


@inline_jit
def _super_row(flat, base, stride, r, full, cols, tail):
    """Super-row ``r`` of a short-row task: ``cols`` values, or ``tail`` for ``r == full``."""
    off = base + r * stride
    return flat[off : off + (cols if r < full else tail)]


@inline_jit
def _first_column(p, ch, c0, width, length):
    """Column of copy ``p`` of channel ``ch``'s first value in a short-row task."""
    return p * width + (ch - c0) * length


@inline_jit
def _channel_total(v, ch, c0, copies, width, length):
    """Sum of the per-column values ``v`` of channel ``ch`` in a short-row task."""
    s = 0.0
    for p in range(copies):
        j0 = _first_column(p, ch, c0, width, length)
        a = v[j0 : j0 + length]
        for j in range(length):
            s += a[j]
    return s


@inline_jit
def _column_count(j, full, tail):
    """Values in column ``j`` of a short-row task (float64)."""
    return np.float64(full + 1 if j < tail else full)


@inline_jit
def _moments_short_one_pass(x, t, plan, pmean, pm2):
    """A short-row task of many super-rows: per-column shifted sums, folded per channel.

    The task reads ``full`` super-rows of ``cols`` values (``stride`` apart) and
    then ``tail`` more; column ``j`` belongs to channel ``((w0 + j) % width) // L``.
    One pass: each column's values are shifted by the column's first value ``K``
    and ``sum(x - K)`` and ``sum((x - K) ** 2)`` accumulate in float64, four rows
    per sweep (the shifted-data variance: ``K`` is one of the column's values, so
    the subtraction ``q - s * s / n`` loses at most ``log2(n)`` bits: see the module notes).
    """
    n, c, length = x.shape
    flat = x.reshape(x.size)
    k, c0, c1, base, stride, cols, rows, full, tail = _short_geometry(n, c, length, t, plan)
    shift = np.empty(cols)  # full >= ONE_PASS_MIN_ROWS: every column has a first value
    for j in range(cols):
        shift[j] = flat[base + j]
    s = np.zeros(cols)
    q = np.zeros(cols)
    r = 0
    while r + 4 <= full:
        v0, v1, v2, v3 = _four_rows(flat, base + r * stride, stride, cols)
        for j in range(cols):
            m = shift[j]
            d0 = v0[j] - m
            d1 = v1[j] - m
            d2 = v2[j] - m
            d3 = v3[j] - m
            s[j] += (d0 + d1) + (d2 + d3)
            q[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        r += 4
    for i in range(r, full + 1):
        v = _super_row(flat, base, stride, i, full, cols, tail)
        for j in range(v.size):
            d = v[j] - shift[j]
            s[j] += d
            q[j] += d * d
    # per column, in place of its sums: mean and M2 (a division, not a multiplication by
    # a reciprocal: n equal values have s == 0 and a mean of exactly K)
    for j in range(cols):  # no branch: the loop vectorises, divisions included
        ds = s[j] / _column_count(j, full, tail)
        m2j = q[j] - s[j] * ds
        s[j] = shift[j] + ds
        q[j] = max(m2j, 0.0)
    mean = s
    m2 = q
    # fold the columns of each channel with the pooled (Chan) formula for several groups
    width = c * length
    copies = cols // ((c1 - c0) * length)
    total = rows * length
    for ch in range(c0, c1):
        tot = 0.0
        for p in range(copies):
            j0 = _first_column(p, ch, c0, width, length)
            mv = mean[j0 : j0 + length]
            for j in range(length):
                tot += _column_count(j0 + j, full, tail) * mv[j]
        m = tot / total
        qq = 0.0
        for p in range(copies):
            j0 = _first_column(p, ch, c0, width, length)
            mv = mean[j0 : j0 + length]
            qv = m2[j0 : j0 + length]
            for j in range(length):
                d = mv[j] - m
                qq += qv[j] + _column_count(j0 + j, full, tail) * d * d
        pmean[k, ch] = m
        pm2[k, ch] = qq


@inline_jit
def _moments_short_two_pass(x, t, plan, pmean, pm2):
    """A short-row task of few super-rows: per-column two-pass moments, folded per channel.

    The task reads ``full`` super-rows of ``cols`` values (``stride`` apart) and
    then ``tail`` more; column ``j`` belongs to channel ``((w0 + j) % width) // L``.
    Four rows are summed per sweep over the column accumulators. With few rows per
    column, the work per column (not per value) of :func:`_moments_short_one_pass`
    costs more than a second sweep.
    """
    n, c, length = x.shape
    flat = x.reshape(x.size)
    k, c0, c1, base, stride, cols, rows, full, tail = _short_geometry(n, c, length, t, plan)
    acc = np.zeros(cols)
    r = 0
    while r + 4 <= full:
        v0, v1, v2, v3 = _four_rows(flat, base + r * stride, stride, cols)
        for j in range(cols):
            acc[j] += (np.float64(v0[j]) + np.float64(v1[j])) + (
                np.float64(v2[j]) + np.float64(v3[j])
            )
        r += 4
    for i in range(r, full + 1):
        v = _super_row(flat, base, stride, i, full, cols, tail)
        for j in range(v.size):
            acc[j] += v[j]
    mean = np.empty(cols)
    # divisions, not multiplications by a reciprocal: n equal values average exactly
    div = max(full, 1)
    for j in range(cols):
        mean[j] = acc[j] / div
    for j in range(tail):
        mean[j] = acc[j] / (full + 1)
    m2 = np.zeros(cols)
    r = 0
    while r + 4 <= full:
        v0, v1, v2, v3 = _four_rows(flat, base + r * stride, stride, cols)
        for j in range(cols):
            m = mean[j]
            d0 = v0[j] - m
            d1 = v1[j] - m
            d2 = v2[j] - m
            d3 = v3[j] - m
            m2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        r += 4
    for i in range(r, full + 1):
        v = _super_row(flat, base, stride, i, full, cols, tail)
        for j in range(v.size):
            d = v[j] - mean[j]
            m2[j] += d * d
    # fold the columns of each channel with the pooled (Chan) formula for several groups
    width = c * length
    copies = cols // ((c1 - c0) * length)
    total = rows * length
    for ch in range(c0, c1):
        m = _channel_total(acc, ch, c0, copies, width, length) / total
        q = 0.0
        for p in range(copies):
            j0 = _first_column(p, ch, c0, width, length)
            mv = mean[j0 : j0 + length]
            qv = m2[j0 : j0 + length]
            for j in range(length):
                d = mv[j] - m
                q += qv[j] + full * d * d
            for j in range(j0, min(j0 + length, tail)):  # columns with one more value
                d = mean[j] - m
                q += d * d
        pmean[k, ch] = m
        pm2[k, ch] = q


@task_jit
def _moments_short_task(x, t, plan, pmean, pm2):
    """One task of the short-row layout: one pass of shifted sums from
    :data:`ONE_PASS_MIN_ROWS` super-rows on, else two passes (same results to rounding)."""
    n, c, length = x.shape
    full = _short_geometry(n, c, length, t, plan)[7]
    if full >= ONE_PASS_MIN_ROWS:
        _moments_short_one_pass(x, t, plan, pmean, pm2)
    else:
        _moments_short_two_pass(x, t, plan, pmean, pm2)


@inline_jit
def _merge_moments(pmean, pm2, counts):
    """Combine the chunk rows in order: pooled mean, Chan's M2, biased variance."""
    n_chunks, c = pmean.shape
    total = 0.0
    for k in range(n_chunks):
        total += counts[k]
    mean = np.zeros(c)
    for k in range(n_chunks):
        cnt = counts[k]
        for ch in range(c):
            mean[ch] += cnt * pmean[k, ch]
    for ch in range(c):
        mean[ch] /= total
    m2 = np.zeros(c)
    for k in range(n_chunks):
        cnt = counts[k]
        for ch in range(c):
            d = pmean[k, ch] - mean[ch]
            m2[ch] += pm2[k, ch] + cnt * d * d
    for ch in range(c):
        m2[ch] /= total
    return mean, m2


@inline_jit
def _tasks_and_partials(x):
    """The task plan of ``(N, C, L)`` data, its number of tasks and two ``[n_chunks, C]``
    float64 buffers for the tasks' partial results."""
    n, c, length = x.shape
    plan = plan_tasks(n, c, length)
    return plan, plan[6] * plan[7], np.empty((plan[6], c)), np.empty((plan[6], c))


@inline_jit
def moments(x, long):
    """Per-channel float64 mean and biased variance of ``(N, C, L)`` data in the long-row
    layout when ``long`` (a constant of the calling kernel), else the short-row one.

    Inlined into the kernels that call it: its task loop is theirs.
    """
    n, _, length = x.shape
    plan, n_tasks, pmean, pm2 = _tasks_and_partials(x)
    for tt in prange(n_tasks):
        t = np.int64(tt)  # the prange index is unsigned
        if long:
            _moments_long_task(x, t, plan, pmean, pm2)
        else:
            _moments_short_task(x, t, plan, pmean, pm2)
    counts = _chunk_counts(n, length, plan[0], plan[1], plan[2], plan[3], plan[6])
    return _merge_moments(pmean, pm2, counts)


@channel_kernel
def channel_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float64 mean and biased variance of C-contiguous ``(N, C, L)`` data."""
    return moments(x, LONG_LAYOUT)


# ----------------------------------------------------------------------------- backward sums
@task_jit
def _sums_long(dy, x, mean, t, plan, psum, pdot):
    """One long-row task: ``sum(dy)`` and ``sum((x - mean) * dy)`` per channel."""
    n, c, length = x.shape
    _, seg, nseg, per_chunk, _, ch_per_task, _, n_blocks = plan
    k, u0, u1, c0, c1 = _task_bounds(t, n_blocks, per_chunk, ch_per_task, n * nseg, c)
    for ch in range(c0, c1):
        m = mean[ch]
        s = 0.0
        q = 0.0
        for u in range(u0, u1):
            xrow = _unit_row(x, ch, u, nseg, seg)
            grow = _unit_row(dy, ch, u, nseg, seg)
            for j in range(xrow.size):
                g = np.float64(grow[j])
                s += g
                q += (xrow[j] - m) * g
        psum[k, ch] = s
        pdot[k, ch] = q


@task_jit
def _sums_short(dy, x, mean, t, plan, psum, pdot):
    """One short-row task of the backward sums: per-column sums, folded per channel."""
    n, c, length = x.shape
    xf = x.reshape(x.size)
    gf = dy.reshape(dy.size)
    k, c0, c1, base, stride, cols, rows, full, tail = _short_geometry(n, c, length, t, plan)
    width = c * length
    copies = cols // ((c1 - c0) * length)
    mcol = np.empty(cols)
    j = 0
    while j < cols:  # the task's channels' means, for each of their columns
        for ch in range(c0, c1):
            for _ in range(length):
                mcol[j] = mean[ch]
                j += 1
    s = np.zeros(cols)
    q = np.zeros(cols)
    r = 0
    while r + 2 <= full:
        off = base + r * stride
        g0 = gf[off : off + cols]
        g1 = gf[off + stride : off + stride + cols]
        x0 = xf[off : off + cols]
        x1 = xf[off + stride : off + stride + cols]
        for j in range(cols):
            a0 = np.float64(g0[j])
            a1 = np.float64(g1[j])
            m = mcol[j]
            s[j] += a0 + a1
            q[j] += (x0[j] - m) * a0 + (x1[j] - m) * a1
        r += 2
    for i in range(r, full + 1):
        gv = _super_row(gf, base, stride, i, full, cols, tail)
        xv = _super_row(xf, base, stride, i, full, cols, tail)
        for j in range(gv.size):
            g = np.float64(gv[j])
            s[j] += g
            q[j] += (xv[j] - mcol[j]) * g
    for ch in range(c0, c1):
        psum[k, ch] = _channel_total(s, ch, c0, copies, width, length)
        pdot[k, ch] = _channel_total(q, ch, c0, copies, width, length)


@inline_jit
def _merge_sums(psum, pdot):
    """Add the chunk rows of the backward sums in order."""
    n_chunks, c = psum.shape
    s = np.zeros(c)
    q = np.zeros(c)
    for k in range(n_chunks):
        for ch in range(c):
            s[ch] += psum[k, ch]
            q[ch] += pdot[k, ch]
    return s, q


@channel_kernel
def channel_sums(dy: np.ndarray, x: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel float64 ``sum(dy)`` and ``sum((x - mean) * dy)`` in one pass."""
    plan, n_tasks, psum, pdot = _tasks_and_partials(x)
    for tt in prange(n_tasks):
        t = np.int64(tt)  # the prange index is unsigned
        if LONG_LAYOUT:
            _sums_long(dy, x, mean, t, plan, psum, pdot)
        else:
            _sums_short(dy, x, mean, t, plan, psum, pdot)
    return _merge_sums(psum, pdot)
