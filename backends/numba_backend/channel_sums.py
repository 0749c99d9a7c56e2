"""Per-channel BatchNorm backward sums of ``(N, C, L)`` data in one pass.

``sum(dy)`` and ``sum((x - mean) * dy)`` per channel, float64, in the task
layout of :mod:`.channel_tasks` (partials per task, combined in a fixed order).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .channel_tasks import (
    channel_total,
    short_geometry,
    super_row,
    task_bounds,
    tasks_and_partials,
    unit_row,
)
from .jit import cold, inline_jit, task_jit
from .layouts import LONG_LAYOUT, channel_kernel

__all__ = ["backward_sums", "channel_sums"]


@task_jit
def _sums_long(dy, x, mean, t, plan, psum, pdot):
    """One long-row task: ``sum(dy)`` and ``sum((x - mean) * dy)`` per channel."""
    n, c, length = x.shape
    _, seg, nseg, per_chunk, _, ch_per_task, _, n_blocks = plan
    k, u0, u1, c0, c1 = task_bounds(t, n_blocks, per_chunk, ch_per_task, n * nseg, c)
    for ch in range(c0, c1):
        m = mean[ch]
        s = 0.0
        q = 0.0
        for u in range(u0, u1):
            xrow = unit_row(x, ch, u, nseg, seg)
            grow = unit_row(dy, ch, u, nseg, seg)
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
    k, c0, c1, base, stride, cols, rows, full, tail = short_geometry(n, c, length, t, plan)
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
        gv = super_row(gf, base, stride, i, full, cols, tail)
        xv = super_row(xf, base, stride, i, full, cols, tail)
        for j in range(gv.size):
            g = np.float64(gv[j])
            s[j] += g
            q[j] += (xv[j] - mcol[j]) * g
    for ch in range(c0, c1):
        psum[k, ch] = channel_total(s, ch, c0, copies, width, length)
        pdot[k, ch] = channel_total(q, ch, c0, copies, width, length)


@task_jit
def _merge_sums(psum, pdot):
    """Add the chunk rows of the backward sums in order (cold code: :func:`~.jit.cold`)."""
    cold()
    n_chunks, c = psum.shape
    s = np.zeros(c)
    q = np.zeros(c)
    for k in range(n_chunks):
        for ch in range(c):
            s[ch] += psum[k, ch]
            q[ch] += pdot[k, ch]
    return s, q


@inline_jit
def backward_sums(dy, x, mean, long):
    """Per channel float64 ``sum(dy)`` and ``sum((x - mean) * dy)`` in the long-row
    layout when ``long`` (a constant of the calling kernel), else the short-row one.

    Inlined into the kernels that call it: its task loop is theirs.
    """
    plan, n_tasks, psum, pdot = tasks_and_partials(x)
    for tt in prange(n_tasks):
        t = np.int64(tt)  # the prange index is unsigned
        if long:
            _sums_long(dy, x, mean, t, plan, psum, pdot)
        else:
            _sums_short(dy, x, mean, t, plan, psum, pdot)
    return _merge_sums(psum, pdot)


@channel_kernel
def channel_sums(dy: np.ndarray, x: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel float64 ``sum(dy)`` and ``sum((x - mean) * dy)`` in one pass."""
    return backward_sums(dy, x, mean, LONG_LAYOUT)
