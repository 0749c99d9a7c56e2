"""Per-channel BatchNorm moments of ``(N, C, L)`` data, never ``E[x^2] - E[x]^2``.

Tasks are laid out by :mod:`.channel_tasks`. A long-row task computes its mean,
then the squared deviations from it while its data is still in cache; a
short-row task makes one pass of shifted sums (each column's values less one of
them, the column's first), which needs no second sweep over the data, one block of
:data:`COLUMN_BLOCK` columns at a time with the block's sums held in registers
(:mod:`.registers`). Its columns are folded per channel without a per-column mean:
the channel's mean is ``m = sum(count * K + s) / total`` and each column adds its sum of squared
deviations from ``m``, ``sum(((x - K) + (K - m))^2) = q + (K - m) (2 s + count (K - m))``.
As the shift ``K`` is one of the column's values, ``(K - m)^2`` is at most that
sum, and each of the three terms is at most about ``2 * count`` times it, so
cancellation costs at most about ``log2(count) + 2`` bits of the float64 M2 (11 for
the at most 512 values of a column). The tasks' partial results are combined with
Chan's formula in a fixed order.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .channel_tasks import (
    chunk_counts,
    column_count,
    four_rows,
    short_geometry,
    task_bounds,
    tasks_and_partials,
    unit_row,
)
from .jit import cold, inline_jit, task_jit
from .layouts import LONG_LAYOUT, channel_kernel
from .registers import stack_array

__all__ = ["channel_moments", "moments"]

#: Columns per pass of a short-row task: 64 float64 accumulators of each kind (eight
#: AVX-512 registers) fit the register file with the values being read.
COLUMN_BLOCK = 64


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


@inline_jit
def _full_row_or_first(flat, base, stride, i, full, size):
    """The first ``size`` values of super-row ``i`` of a short-row task if it is a full
    one, else of super-row 0 (the shifts themselves: their deviations are 0)."""
    off = base + (i * stride if i < full else 0)
    return flat[off : off + size]


@inline_jit
def _shifted_sums(flat, base, stride, full, tail, j0, nj, shift, s, q):
    """Shifts, shifted sums and sums of squares of columns ``j0 : j0 + nj`` (``nj`` at
    most :data:`COLUMN_BLOCK`) of a short-row task, written to ``shift``, ``s``, ``q``.

    The columns' accumulators are stack arrays (:mod:`.registers`): when ``nj`` is
    the constant :data:`COLUMN_BLOCK`, they stay in registers while the loops run
    down the task's super-rows, and no accumulator is loaded or stored per row.
    The first sweep (super-rows 0 to 3) sets them, then four super-rows per sweep,
    then the rest one at a time and the partial super-row (its first ``tail`` columns).
    """
    k = stack_array(COLUMN_BLOCK)
    ks = stack_array(COLUMN_BLOCK)
    kq = stack_array(COLUMN_BLOCK)
    at = base + j0
    v0 = flat[at : at + nj]
    v1 = _full_row_or_first(flat, at, stride, 1, full, nj)
    v2 = _full_row_or_first(flat, at, stride, 2, full, nj)
    v3 = _full_row_or_first(flat, at, stride, 3, full, nj)
    for j in range(nj):
        m = np.float64(v0[j])
        d1 = v1[j] - m
        d2 = v2[j] - m
        d3 = v3[j] - m
        k[j] = m
        ks[j] = d1 + (d2 + d3)
        kq[j] = d1 * d1 + (d2 * d2 + d3 * d3)
    r = min(full, 4)
    while r + 4 <= full:
        v0, v1, v2, v3 = four_rows(flat, at + r * stride, stride, nj)
        for j in range(nj):
            m = k[j]
            d0 = v0[j] - m
            d1 = v1[j] - m
            d2 = v2[j] - m
            d3 = v3[j] - m
            ks[j] += (d0 + d1) + (d2 + d3)
            kq[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        r += 4
    for i in range(r, full + 1):
        off = at + i * stride
        v = flat[off : off + (nj if i < full else min(nj, max(tail - j0, 0)))]
        for j in range(v.size):
            d = v[j] - k[j]
            ks[j] += d
            kq[j] += d * d
    for j in range(nj):
        shift[j0 + j] = k[j]
        s[j0 + j] = ks[j]
        q[j0 + j] = kq[j]


@inline_jit
def _padded(flat, base, stride, full, tail, ncols):
    """The ``full`` super-rows and the partial one of a short-row task of fewer than
    :data:`COLUMN_BLOCK` columns, copied into rows of :data:`COLUMN_BLOCK` values (the
    columns past ``ncols`` zero): a block of the same loops then serves it."""
    rows = np.zeros((full + 1) * COLUMN_BLOCK, flat.dtype)
    for i in range(full + 1):
        off = base + i * stride
        v = flat[off : off + (ncols if i < full else min(ncols, tail))]
        row = rows[i * COLUMN_BLOCK : i * COLUMN_BLOCK + v.size]
        for j in range(v.size):
            row[j] = v[j]
    return rows


@task_jit
def _moments_short_task(x, t, plan, pmean, pm2):
    """One task of the short-row layout: per-column shifted sums, folded per channel.

    The task reads ``full`` super-rows of ``cols`` values (``stride`` apart) and
    then ``tail`` more; column ``j`` belongs to channel ``((w0 + j) % width) // L``.
    One pass per block of :data:`COLUMN_BLOCK` columns (:func:`_shifted_sums`; when
    the columns are not a whole number of blocks, the last block overlaps the one
    before it and computes its shared columns again, to the same bits; fewer columns
    than a block are copied into a padded block, :func:`_padded`): each column's
    values are shifted by the column's first value ``K`` and ``s = sum(x - K)`` and
    ``q = sum((x - K) ** 2)`` accumulate in float64. The fold
    needs no per-column mean (see the module notes).
    """
    n, c, length = x.shape
    flat = x.reshape(x.size)
    k, c0, c1, base, stride, cols, rows, full, tail = short_geometry(n, c, length, t, plan)
    # the columns with values: all of them, or the first ``tail`` if no super-row is full
    ncols = cols if full > 0 else tail
    blocked = max(ncols, COLUMN_BLOCK)  # fewer columns: a padded copy of the task's data
    if ncols < COLUMN_BLOCK:
        flat = _padded(flat, base, stride, full, tail, ncols)
        base = 0
        stride = COLUMN_BLOCK
    shift = np.empty(blocked)
    s = np.empty(blocked)
    q = np.empty(blocked)
    for j in range(0, blocked, COLUMN_BLOCK):  # whole blocks; the last ends at the last column
        j0 = min(j, blocked - COLUMN_BLOCK)
        _shifted_sums(flat, base, stride, full, tail, j0, COLUMN_BLOCK, shift, s, q)
    shift = shift[:ncols]
    s = s[:ncols]
    q = q[:ncols]
    width = c * length
    copies = cols // ((c1 - c0) * length)
    total = rows * length
    for ch in range(c0, c1):  # slices (shorter, or empty, past the columns with values)
        tot = 0.0
        for p in range(copies):
            j0 = p * width + (ch - c0) * length
            kv = shift[j0 : j0 + length]
            sv = s[j0 : j0 + length]
            for j in range(kv.size):
                tot += column_count(j0 + j, full, tail) * kv[j] + sv[j]
        m = tot / total
        qq = 0.0
        for p in range(copies):
            j0 = p * width + (ch - c0) * length
            kv = shift[j0 : j0 + length]
            sv = s[j0 : j0 + length]
            qv = q[j0 : j0 + length]
            for j in range(kv.size):
                d = kv[j] - m
                qq += qv[j] + d * (2.0 * sv[j] + column_count(j0 + j, full, tail) * d)
        pmean[k, ch] = m
        pm2[k, ch] = max(qq, 0.0)


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
