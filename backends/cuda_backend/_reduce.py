"""Deterministic reductions: shared-memory trees and the column sums of partial buffers.

No atomics and no warp shuffles (the simulator has neither): a block reduces
through shared memory in a fixed tree, blocks write partial results into rows
of ``[2, rows, K]`` buffers (two sums each), and a second kernel sums those in
row order. The same
input therefore always gives the same bits.

Statistics are shifted sums: every thread of a channel (or row) subtracts the
same shift ``k`` (the group's first value) and accumulates ``sum(v - k)`` and
``sum((v - k)**2)``, so partials add up exactly like plain sums and no element
costs a division. :func:`shifted_moments` turns the totals into the mean and the
variance; the rounding error of the variance grows with the squared z-score of
the shift, ``((k - mean) / std)**2``, which stays small unless the first value is
an extreme outlier of its group.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import kernel_in
from ._runtime import THREADS, TILE_X, cuda, kernel, launch, next_pow2

__all__ = [
    "column_geometry",
    "column_pair",
    "column_sums2",
    "column_sums2_kernel",
    "shifted_moments",
    "tree_sum2",
]


@cuda.jit(device=True)
def shifted_moments(k, s1, s2, count):
    """Mean and biased variance of ``count`` values from their sums shifted by ``k``.

    A negative rounding residue becomes 0; a NaN (from an infinite or NaN value) stays
    NaN, so that every output of such a channel or row is NaN, as on the other backends.
    """
    d = s1 / count
    var = s2 / count - d * d
    return k + d, 0.0 if var < 0.0 else var


@cuda.jit(device=True)
def tree_sum2(sa, sb, pos, slot, stride, width):
    """Sum ``width`` (a power of two) pairs of shared values into the first pair.

    Thread ``pos`` (``< width``; others pass ``pos >= width``) owns shared index
    ``slot``; its partners sit ``stride`` apart. Every thread of the block must call
    this (it synchronises). The result lands at the slot of ``pos == 0``.
    """
    s = width // 2
    while s > 0:
        if pos < s:
            o = slot + s * stride
            sa[slot] += sa[o]
            sb[slot] += sb[o]
        cuda.syncthreads()
        s //= 2


@cuda.jit(device=True)
def column_pair(p):
    """``(k, sum(p[0, :, k]), sum(p[1, :, k]))`` for this thread's column ``k`` of partial sums.

    A 2-D block per tile of ``blockDim.x`` neighbouring columns of ``[2, rows, K]``
    partials (``k = blockIdx.x * blockDim.x + threadIdx.x``; a ``k`` past the end
    contributes nothing): each ``y`` lane adds every ``blockDim.y``-th row, then a
    shared-memory tree adds the lanes in a fixed order. Every thread of the block
    calls it once (it synchronises); all threads of a column get its sums.
    """
    sa = cuda.shared.array(THREADS, np.float64)
    sb = cuda.shared.array(THREADS, np.float64)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    k = cuda.blockIdx.x * cuda.blockDim.x + tx
    slot = ty * cuda.blockDim.x + tx
    x = 0.0
    y = 0.0
    if k < p.shape[2]:
        g = ty
        while g < p.shape[1]:
            x += p[0, g, k]
            y += p[1, g, k]
            g += cuda.blockDim.y
    sa[slot] = x
    sb[slot] = y
    cuda.syncthreads()
    tree_sum2(sa, sb, ty, slot, cuda.blockDim.x, cuda.blockDim.y)
    return k, sa[tx], sb[tx]


@kernel
def column_sums2_kernel(p, a, b, accumulate):
    """Column sums of ``[2, rows, K]`` partials into ``a`` and ``b`` (or added to them)."""
    k, x, y = column_pair(p)
    if cuda.threadIdx.y == 0 and k < p.shape[2]:
        if accumulate:
            a[k] += x
            b[k] += y
        else:
            a[k] = x
            b[k] = y


def column_geometry(columns: int) -> tuple[int, tuple[int, int]]:
    """``(blocks, block)`` of a kernel built on :func:`column_pair` over ``columns >= 1``.

    Parameters
    ----------
    columns : int

    Returns
    -------
    blocks : int
        One block per tile of columns (no grid-stride loop: the merges are small).
    block : tuple of int
        Up to ``TILE_X`` columns by ``THREADS // tile`` row lanes.
    """
    tile = min(TILE_X, next_pow2(columns))
    return -(-columns // tile), (tile, THREADS // tile)


def column_sums2(p: Any, a: Any, b: Any, s: Any, accumulate: bool = False) -> None:
    """Launch :func:`column_sums2_kernel` on stream ``s`` (``K >= 1`` columns).

    Parameters
    ----------
    p : float64 device array of shape (2, rows, K)
    a, b : device arrays of shape (K,), float32 or float64
    s : stream
    accumulate : bool, default False
        Add the sums to ``a`` and ``b`` rather than overwrite them.
    """
    blocks, block = column_geometry(p.shape[2])
    launch(
        column_sums2_kernel,
        blocks,
        block,
        s,
        kernel_in(p),
        a,
        b,
        accumulate,
    )
