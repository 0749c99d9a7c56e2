"""Deterministic reductions: Welford/Chan merges, shared-memory trees and partial merges.

No atomics and no warp shuffles (the simulator has neither): a block reduces
through shared memory in a fixed tree, blocks write partial results into
``[blocks, K]`` buffers, and a second kernel merges those in block order. The
same input therefore always gives the same bits.
"""

from __future__ import annotations

import math

from ._runtime import cuda

__all__ = [
    "chan_merge",
    "merge_moments_kernel",
    "sum_rows2_kernel",
    "tree_merge",
    "tree_sum2",
    "welford_step",
]


@cuda.jit(device=True)
def welford_step(n, mean, m2, v):
    """Add value ``v`` to the running ``(count, mean, M2)``; return the new triple."""
    n += 1.0
    delta = v - mean
    mean += delta / n
    m2 += delta * (v - mean)
    return n, mean, m2


@cuda.jit(device=True)
def chan_merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan et al.'s merge of two ``(count, mean, M2)`` triples (exact when one is empty)."""
    n = n_a + n_b
    if n == 0.0:
        return 0.0, 0.0, 0.0
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    m2 = m2_a + m2_b + delta * delta * (n_a * (n_b / n))
    return n, mean, m2


@cuda.jit(device=True)
def tree_merge(sn, smean, sm2, pos, slot, stride, width):
    """Merge ``width`` (a power of two) Welford triples in shared memory into the first.

    Thread ``pos`` (``< width``; others pass ``pos >= width``) owns shared index
    ``slot``; its partners sit ``stride`` apart. Every thread of the block must call
    this (it synchronises). The result lands at the slot of ``pos == 0``.
    """
    s = width // 2
    while s > 0:
        if pos < s:
            o = slot + s * stride
            n, mean, m2 = chan_merge(sn[slot], smean[slot], sm2[slot], sn[o], smean[o], sm2[o])
            sn[slot] = n
            smean[slot] = mean
            sm2[slot] = m2
        cuda.syncthreads()
        s //= 2


@cuda.jit(device=True)
def tree_sum2(sa, sb, pos, slot, stride, width):
    """Like :func:`tree_merge` for two shared arrays of plain sums."""
    s = width // 2
    while s > 0:
        if pos < s:
            o = slot + s * stride
            sa[slot] += sa[o]
            sb[slot] += sb[o]
        cuda.syncthreads()
        s //= 2


@cuda.jit
def merge_moments_kernel(pn, pmean, pm2, mean, var):
    """Merge ``[blocks, C]`` partial Welford triples, in block order, into mean and variance.

    One thread per column; columns without values get NaN.
    """
    c = cuda.grid(1)
    while c < pn.shape[1]:
        n = pn[0, c]
        mu = pmean[0, c]
        m2 = pm2[0, c]
        for g in range(1, pn.shape[0]):
            n, mu, m2 = chan_merge(n, mu, m2, pn[g, c], pmean[g, c], pm2[g, c])
        if n > 0.0:
            mean[c] = mu
            var[c] = m2 / n
        else:
            mean[c] = math.nan
            var[c] = math.nan
        c += cuda.gridsize(1)


@cuda.jit
def sum_rows2_kernel(pa, pb, a, b):
    """Column sums of two ``[blocks, K]`` partial buffers, in block order; a thread per column."""
    k = cuda.grid(1)
    while k < pa.shape[1]:
        sa = 0.0
        sb = 0.0
        for g in range(pa.shape[0]):
            sa += pa[g, k]
            sb += pb[g, k]
        a[k] = sa
        b[k] = sb
        k += cuda.gridsize(1)
