"""Per-channel BatchNorm moments of ``(N, C, L)`` data, never ``E[x^2] - E[x]^2``.

Tasks are laid out by :mod:`.channel_tasks`. A long-row task computes its mean,
then the squared deviations from it while its data is still in cache; a
short-row task makes one pass of shifted sums (each column's values less one of
them, the column's first), which needs no second sweep over the data: as the
shift is one of the column's values, ``(K - mean)^2`` is at most ``count`` times
the variance, so cancellation costs at most ``log2(count)`` bits of the float64
M2 (9 for the at most 512 values of a column). The tasks' partial results are
combined with Chan's formula in a fixed order.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .channel_tasks import (
    chunk_counts,
    column_count,
    short_geometry,
    super_row,
    task_bounds,
    tasks_and_partials,
    unit_row,
)
from .jit import cold, inline_jit, task_jit
from .layouts import LONG_LAYOUT, channel_kernel

__all__ = ["channel_moments", "moments"]


@task_jit
def _moments_long_task(x, t, plan, pmean, pm2):
    """One task of the long-row layout: mean and M2 per channel of its units."""
    n, c, length = x.shape
    _, seg, nseg, per_chunk, _, ch_per_task, _, n_blocks = plan
    k, u0, u1, c0, c1 = task_bounds(t, n_blocks, per_chunk, ch_per_task, n * nseg, c)
    short_tail = nseg * seg - length
    count = (u1 - u0) * seg - (u1 // nseg - u0 // nseg) * short_tail
    for ch in range(c0, c1):
        s = 0.0
        for u in range(u0, u1):
            row = unit_row(x, ch, u, nseg, seg)
            for j in range(row.size):
                s += row[j]
        m = s / count
        q = 0.0
        for u in range(u0, u1):
            row = unit_row(x, ch, u, nseg, seg)
            for j in range(row.size):
                d = row[j] - m
                q += d * d
        pmean[k, ch] = m
        pm2[k, ch] = q


@task_jit
def _moments_short_task(x, t, plan, pmean, pm2):
    """One task of the short-row layout: per-column shifted sums, folded per channel.

    The task reads ``full`` super-rows of ``cols`` values (``stride`` apart) and
    then ``tail`` more; column ``j`` belongs to channel ``((w0 + j) % width) // L``.
    One pass: each column's values are shifted by the column's first value ``K``
    and ``sum(x - K)`` and ``sum((x - K) ** 2)`` accumulate in float64, four rows
    per sweep (the shifted-data variance: ``K`` is one of the column's values, so
    the subtraction ``q - s * s / n`` loses at most ``log2(n)`` bits: see the module
    notes). The per-column means and M2 are folded per channel with the pooled (Chan)
    formula for several groups.
    """
    n, c, length = x.shape
    flat = x.reshape(x.size)
    k, c0, c1, base, stride, cols, rows, full, tail = short_geometry(n, c, length, t, plan)
    shift = np.empty(cols)
    s = np.empty(cols)
    q = np.empty(cols)
    first = flat[base : base + (cols if full > 0 else tail)]  # a value of each column
    for j in range(first.size):
        shift[j] = first[j]
        s[j] = 0.0
        q[j] = 0.0
    for j in range(first.size, cols):  # no value at all (fewer rows than one super-row)
        shift[j] = 0.0
        s[j] = 0.0
        q[j] = 0.0
    r = 0
    while r + 4 <= full:
        off = base + r * stride
        v0 = flat[off : off + cols]
        v1 = flat[off + stride : off + stride + cols]
        v2 = flat[off + 2 * stride : off + 2 * stride + cols]
        v3 = flat[off + 3 * stride : off + 3 * stride + cols]
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
        v = super_row(flat, base, stride, i, full, cols, tail)
        for j in range(v.size):
            d = v[j] - shift[j]
            s[j] += d
            q[j] += d * d
    # per column, in place of its sums: mean and M2 (a division, not a multiplication by
    # a reciprocal: n equal values have s == 0 and a mean of exactly K); a column
    # without values (fewer rows than one super-row) has s == q == 0 and weight 0
    for j in range(cols):  # no branch: the loop vectorises, divisions included
        ds = s[j] / max(column_count(j, full, tail), 1.0)
        m2j = q[j] - s[j] * ds
        s[j] = shift[j] + ds
        q[j] = max(m2j, 0.0)
    width = c * length
    copies = cols // ((c1 - c0) * length)
    total = rows * length
    for ch in range(c0, c1):  # slices: their indices need no wraparound
        tot = 0.0
        for p in range(copies):
            j0 = p * width + (ch - c0) * length
            mv = s[j0 : j0 + length]
            for j in range(length):
                tot += column_count(j0 + j, full, tail) * mv[j]
        m = tot / total
        qq = 0.0
        for p in range(copies):
            j0 = p * width + (ch - c0) * length
            mv = s[j0 : j0 + length]
            qv = q[j0 : j0 + length]
            for j in range(length):
                d = mv[j] - m
                qq += qv[j] + column_count(j0 + j, full, tail) * d * d
        pmean[k, ch] = m
        pm2[k, ch] = qq


@task_jit
def _merged(pmean, pm2, plan, n, length):
    """Combine the tasks' partial moments chunk by chunk in order: pooled mean, Chan's
    M2, biased variance. Compiled once for every kernel that computes moments."""
    cold()
    n_chunks, c = pmean.shape
    counts = chunk_counts(n, length, plan[0], plan[1], plan[2], plan[3], n_chunks)
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
def moments(x, long):
    """Per-channel float64 mean and biased variance of ``(N, C, L)`` data in the long-row
    layout when ``long`` (a constant of the calling kernel), else the short-row one.

    Inlined into the kernels that call it: its task loop is theirs.
    """
    n, _, length = x.shape
    plan, n_tasks, pmean, pm2 = tasks_and_partials(x)
    for tt in prange(n_tasks):
        t = np.int64(tt)  # the prange index is unsigned
        if long:
            _moments_long_task(x, t, plan, pmean, pm2)
        else:
            _moments_short_task(x, t, plan, pmean, pm2)
    return _merged(pmean, pm2, plan, n, length)


@channel_kernel
def channel_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float64 mean and biased variance of C-contiguous ``(N, C, L)`` data."""
    return moments(x, LONG_LAYOUT)
