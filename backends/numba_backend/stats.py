"""Per-channel reductions of ``(N, C, L)`` data: BatchNorm moments and backward sums.

The ``N * L`` values of every channel are split into tasks that depend only on
the shape. A task covers a range of *units* and a block of channels and writes
float64 partial results into its own row ``k`` of ``[n_chunks, C]`` buffers; the
rows are then combined in a fixed order (Chan's formula for the variance). There
is never a ``prange`` over channels and never ``E[x^2] - E[x]^2``: each task
computes its mean, then the squared deviations from it while its data is still
in cache.

Two task layouts, picked by ``L``:

* long rows (``L >= LONG_ROW``): a unit is one sample ``n`` (or a segment of its
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

from .jit import TASK_SIZE, kernel, serial_jit

__all__ = ["channel_moments", "channel_sums"]

#: Rows at least this long are reduced along ``L`` (see the module docstring): the
#: per-row layout overtakes the per-column one between L = 32 and L = 64 (the
#: measurements are in docs/benchmarks.md, "Kernel tuning").
LONG_ROW = 64
#: Narrowest inner loop of the short-row layout.
MIN_WIDTH = 64
#: Fewest rows per task of the short-row layout when rows are wide.
MIN_ROWS = 64


@serial_jit
def _plan(n, c, length):
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


@serial_jit
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


@serial_jit
def _task_bounds(t, n_blocks, per_chunk, ch_per_task, units, c):
    k = t // n_blocks
    b = t - k * n_blocks
    u0 = k * per_chunk
    c0 = b * ch_per_task
    return k, u0, min(units, u0 + per_chunk), c0, min(c, c0 + ch_per_task)


# ----------------------------------------------------------------------------- moments
@serial_jit
def _moments_long(x, t, plan, pmean, pm2):
    """One task of the long-row layout: mean and M2 per channel of its units."""
    n, c, length = x.shape
    _, seg, nseg, per_chunk, _, ch_per_task, _, n_blocks = plan
    k, u0, u1, c0, c1 = _task_bounds(t, n_blocks, per_chunk, ch_per_task, n * nseg, c)
    short_tail = nseg * seg - length
    count = (u1 - u0) * seg - (u1 // nseg - u0 // nseg) * short_tail
    for ch in range(c0, c1):
        s = 0.0
        for u in range(u0, u1):
            i = u // nseg
            l0 = (u - i * nseg) * seg
            row = x[i, ch, l0 : min(length, l0 + seg)]
            for j in range(row.size):
                s += row[j]
        m = s / count
        q = 0.0
        for u in range(u0, u1):
            i = u // nseg
            l0 = (u - i * nseg) * seg
            row = x[i, ch, l0 : min(length, l0 + seg)]
            for j in range(row.size):
                d = row[j] - m
                q += d * d
        pmean[k, ch] = m
        pm2[k, ch] = q


@serial_jit
def _short_geometry(n, c, length, t, plan):
    """Where short-row task ``t`` reads: see :func:`_moments_short`."""
    _, _, _, per_chunk, period, ch_per_task, _, n_blocks = plan
    k, n0, n1, c0, c1 = _task_bounds(t, n_blocks, per_chunk, ch_per_task, n, c)
    width = c * length
    w0 = c0 * length
    cols = (c1 - c0) * length if period == 1 else width * period
    rows = n1 - n0
    full = rows // period
    tail = (rows - full * period) * width  # values in the partial super-row (period > 1)
    return k, c0, c1, n0 * width + w0, width * period, cols, rows, full, tail


@serial_jit
def _moments_short(x, t, plan, pmean, pm2):
    """One task of the short-row layout: per-column two-pass moments, folded per channel.

    The task reads ``full`` super-rows of ``cols`` values (``stride`` apart) and
    then ``tail`` more; column ``j`` belongs to channel ``((w0 + j) % width) // L``.
    Four rows are summed per sweep over the column accumulators.
    """
    n, c, length = x.shape
    flat = x.reshape(x.size)
    k, c0, c1, base, stride, cols, rows, full, tail = _short_geometry(n, c, length, t, plan)
    acc = np.zeros(cols)
    r = 0
    while r + 4 <= full:
        off = base + r * stride
        v0 = flat[off : off + cols]
        v1 = flat[off + stride : off + stride + cols]
        v2 = flat[off + 2 * stride : off + 2 * stride + cols]
        v3 = flat[off + 3 * stride : off + 3 * stride + cols]
        for j in range(cols):
            acc[j] += (np.float64(v0[j]) + np.float64(v1[j])) + (
                np.float64(v2[j]) + np.float64(v3[j])
            )
        r += 4
    while r <= full:
        off = base + r * stride
        v = flat[off : off + (cols if r < full else tail)]
        for j in range(v.size):
            acc[j] += v[j]
        r += 1
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
        off = base + r * stride
        v0 = flat[off : off + cols]
        v1 = flat[off + stride : off + stride + cols]
        v2 = flat[off + 2 * stride : off + 2 * stride + cols]
        v3 = flat[off + 3 * stride : off + 3 * stride + cols]
        for j in range(cols):
            m = mean[j]
            d0 = v0[j] - m
            d1 = v1[j] - m
            d2 = v2[j] - m
            d3 = v3[j] - m
            m2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        r += 4
    while r <= full:
        off = base + r * stride
        v = flat[off : off + (cols if r < full else tail)]
        for j in range(v.size):
            d = v[j] - mean[j]
            m2[j] += d * d
        r += 1
    # fold the columns of each channel with the pooled (Chan) formula for several groups
    width = c * length
    copies = cols // ((c1 - c0) * length)
    total = rows * length
    for ch in range(c0, c1):
        s = 0.0
        for p in range(copies):
            j0 = p * width + (ch - c0) * length
            a = acc[j0 : j0 + length]
            for j in range(length):
                s += a[j]
        m = s / total
        q = 0.0
        for p in range(copies):
            j0 = p * width + (ch - c0) * length
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


@serial_jit
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


@serial_jit
def _moments_task(x, t, plan, pmean, pm2):
    """Task ``t`` of :func:`channel_moments` in the plan's layout."""
    if plan[0]:
        _moments_long(x, t, plan, pmean, pm2)
    else:
        _moments_short(x, t, plan, pmean, pm2)


@serial_jit
def _moments_result(x, plan, pmean, pm2):
    """Merge the task rows of :func:`channel_moments` into float64 mean and variance."""
    n, _, length = x.shape
    counts = _chunk_counts(n, length, plan[0], plan[1], plan[2], plan[3], plan[6])
    return _merge_moments(pmean, pm2, counts)


@kernel
def channel_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float64 mean and biased variance of C-contiguous ``(N, C, L)`` data."""
    n, c, length = x.shape
    plan = _plan(n, c, length)
    pmean = np.empty((plan[6], c))
    pm2 = np.empty((plan[6], c))
    for tt in prange(plan[6] * plan[7]):
        _moments_task(x, np.int64(tt), plan, pmean, pm2)  # the prange index is unsigned
    return _moments_result(x, plan, pmean, pm2)


# ----------------------------------------------------------------------------- backward sums
@serial_jit
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
            i = u // nseg
            l0 = (u - i * nseg) * seg
            l1 = min(length, l0 + seg)
            xrow = x[i, ch, l0:l1]
            grow = dy[i, ch, l0:l1]
            for j in range(xrow.size):
                g = np.float64(grow[j])
                s += g
                q += (xrow[j] - m) * g
        psum[k, ch] = s
        pdot[k, ch] = q


@serial_jit
def _sums_short(dy, x, mean, t, plan, psum, pdot):
    """One short-row task of the backward sums: per-column sums, folded per channel."""
    n, c, length = x.shape
    xf = x.reshape(x.size)
    gf = dy.reshape(dy.size)
    k, c0, c1, base, stride, cols, rows, full, tail = _short_geometry(n, c, length, t, plan)
    width = c * length
    mcol = np.empty(cols)
    for p in range(cols // ((c1 - c0) * length)):
        for ch in range(c0, c1):
            j0 = p * width + (ch - c0) * length
            mcol[j0 : j0 + length] = mean[ch]
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
    while r <= full:
        off = base + r * stride
        stop = off + (cols if r < full else tail)
        gv = gf[off:stop]
        xv = xf[off:stop]
        for j in range(gv.size):
            g = np.float64(gv[j])
            s[j] += g
            q[j] += (xv[j] - mcol[j]) * g
        r += 1
    copies = cols // ((c1 - c0) * length)
    for ch in range(c0, c1):
        a = 0.0
        b = 0.0
        for p in range(copies):
            j0 = p * width + (ch - c0) * length
            sv = s[j0 : j0 + length]
            qv = q[j0 : j0 + length]
            for j in range(length):
                a += sv[j]
                b += qv[j]
        psum[k, ch] = a
        pdot[k, ch] = b


@serial_jit
def _merge_sums(psum, pdot):
    n_chunks, c = psum.shape
    s = np.zeros(c)
    q = np.zeros(c)
    for k in range(n_chunks):
        for ch in range(c):
            s[ch] += psum[k, ch]
            q[ch] += pdot[k, ch]
    return s, q


@kernel
def channel_sums(dy: np.ndarray, x: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel float64 ``sum(dy)`` and ``sum((x - mean) * dy)`` in one pass."""
    n, c, length = x.shape
    plan = _plan(n, c, length)
    psum = np.empty((plan[6], c))
    pdot = np.empty((plan[6], c))
    for tt in prange(plan[6] * plan[7]):
        t = np.int64(tt)  # the prange index is unsigned
        if plan[0]:
            _sums_long(dy, x, mean, t, plan, psum, pdot)
        else:
            _sums_short(dy, x, mean, t, plan, psum, pdot)
    return _merge_sums(psum, pdot)
