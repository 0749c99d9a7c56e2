"""LayerNorm backward kernels on C-contiguous ``(R, D)`` rows.

Rows of up to ``ROW_SPLIT`` values: each task computes the input gradient of its
rows and its own row of partial dweight/dbias, summed in order at the end. Longer
rows are split into segments: per-segment sums first, then per-row coefficients,
then the gradient column block by column block (each block owns its dweight/dbias
columns). All accumulation is float64.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import inline_jit, task_jit
from .rows import SPLIT_ROWS, row_kernel, rows_per_task, segments
from .vectors import float64_or

__all__ = ["layer_norm_backward"]

#: Most tasks of the whole-row LayerNorm backward: each owns a row of partial
#: dweight/dbias, which are summed at the end, so big inputs get bigger tasks.
MAX_BACKWARD_TASKS = 64

#: Bytes of ``x`` per block of rows of the whole-row backward (as many of ``dy``):
#: the block's dweight/dbias pass reads both again from the L2 cache, so a block
#: holds the same bytes (not values) in float32 and float64.
ROW_BLOCK_BYTES = 128 << 10


@inline_jit
def _row_coefficients(xr, gr, w, m, rs, inv_d):
    """``k0 = rstd * mean(g)`` and ``k1 = rstd**3 * mean(g * (x - mean))`` of one row,
    ``g = dy * w``: its input gradient is ``rstd * g - k0 - (x - mean) * k1``.

    ``inv_d`` is ``1 / d``, one reciprocal shared by every row: with a quotient
    ``s / d`` used once, ``reassoc`` lets LLVM rewrite ``v * (s / d)`` as
    ``(v * s) / d``, which puts a vector division into the element loop.
    """
    sg = 0.0
    sgx = 0.0
    for j in range(xr.size):
        g = gr[j] * w[j]
        sg += g
        sgx += g * (xr[j] - m)
    return rs * (sg * inv_d), rs * rs * rs * (sgx * inv_d)


@inline_jit
def _param_grads_rows(x, dy, mean, rstd, dw, db, r0, r1):
    """Add rows ``r0 .. r1 - 1``'s terms to dweight/dbias, two rows per load and store.

    Each pass over ``dw`` and ``db`` adds the sum of two rows' terms, which halves the
    accumulators' loads and stores; an odd last row goes alone.
    """
    r = r0
    while r + 2 <= r1:
        x0 = x[r]
        g0 = dy[r]
        x1 = x[r + 1]
        g1 = dy[r + 1]
        m0 = mean[r]
        s0 = rstd[r]
        m1 = mean[r + 1]
        s1 = rstd[r + 1]
        for j in range(x0.size):
            a0 = np.float64(g0[j])
            a1 = np.float64(g1[j])
            dw[j] += a0 * ((x0[j] - m0) * s0) + a1 * ((x1[j] - m1) * s1)
            db[j] += a0 + a1
        r += 2
    if r < r1:
        xr = x[r]
        gr = dy[r]
        m = mean[r]
        rs = rstd[r]
        for j in range(xr.size):
            gj = np.float64(gr[j])
            dw[j] += gj * ((xr[j] - m) * rs)
            db[j] += gj


@task_jit
def _backward_rows(dy, x, mean, rstd, w, out, t, per, pdw, pdb, param_grads):
    """Task ``t``: input gradient row by row, partial dweight/dbias into row ``t``.

    The rows go in blocks of about :data:`ROW_BLOCK_BYTES` of ``x`` (and as much of
    ``dy``): first each row's sums and input gradient (one visit), then the
    block's dweight/dbias from the rows the first loop left in cache
    (:func:`_param_grads_rows`). Accumulating dweight/dbias in the gradient loop
    costs far more (its loads and stores queue behind the gradient's stores,
    which miss the cache; see docs/benchmarks.md, "Kernel tuning").
    """
    rows, d = x.shape
    dw = pdw[t] if param_grads else pdw[0]
    db = pdb[t] if param_grads else pdb[0]
    if param_grads:
        for j in range(d):
            dw[j] = 0.0
            db[j] = 0.0
    inv_d = 1.0 / d
    block = max(1, ROW_BLOCK_BYTES // (x.itemsize * max(d, 1)))
    r1 = min(rows, (t + 1) * per)
    for b0 in range(t * per, r1, block):
        b1 = min(r1, b0 + block)
        for r in range(b0, b1):
            xr = x[r]
            gr = dy[r]
            orow = out[r]
            m = mean[r]
            rs = rstd[r]
            k0, k1 = _row_coefficients(xr, gr, w, m, rs, inv_d)
            for j in range(d):
                xm = xr[j] - m
                orow[j] = (gr[j] * w[j]) * rs - k0 - xm * k1
        if param_grads:
            _param_grads_rows(x, dy, mean, rstd, dw, db, b0, b1)


@task_jit
def _sum_partials(pdw, pdb, dw, db, j0, j1):
    """Add the task rows of the partial buffers in order, for columns ``j0:j1``."""
    for t in range(pdw.shape[0]):
        a = pdw[t, j0:j1]
        b = pdb[t, j0:j1]
        for j in range(j1 - j0):
            dw[j0 + j] += a[j]
            db[j0 + j] += b[j]


@task_jit
def _segment_sums(dy, x, mean, rstd, w, t, nseg, seg, psg, psgx):
    """Task ``t`` of a split row: ``sum(g)`` and ``sum(g * xhat)`` of one segment."""
    r = t // nseg
    i = t - r * nseg
    s0 = i * seg
    s1 = min(x.shape[1], s0 + seg)
    xr = x[r, s0:s1]
    gr = dy[r, s0:s1]
    wr = w[s0:s1]
    m = mean[r]
    rs = rstd[r]
    sg = 0.0
    sgx = 0.0
    for j in range(xr.size):
        g = gr[j] * wr[j]
        sg += g
        sgx += g * ((xr[j] - m) * rs)
    psg[r, i] = sg
    psgx[r, i] = sgx


@task_jit
def _segment_grad(dy, x, mean, rstd, w, out, s0, s1, a, c, dw, db, param_grads):
    """Input gradient (and dweight/dbias, owned by this task) of columns ``s0:s1``."""
    for r in range(x.shape[0]):
        xr = x[r, s0:s1]
        gr = dy[r, s0:s1]
        orow = out[r, s0:s1]
        wr = w[s0:s1]
        m = mean[r]
        rs = rstd[r]
        ar = a[r]
        cr = c[r]
        for j in range(xr.size):
            gj = np.float64(gr[j])
            xh = (xr[j] - m) * rs
            if param_grads:
                dw[s0 + j] += gj * xh
                db[s0 + j] += gj
            orow[j] = rs * (gj * wr[j] - ar - xh * cr)


@inline_jit
def _segment_coefficients(psg, psgx, d):
    """Per split row: ``mean(g)`` and ``mean(g * xhat)`` from the segments' sums."""
    rows, nseg = psg.shape
    a = np.empty(rows)
    c = np.empty(rows)
    for r in range(rows):
        sg = 0.0
        sgx = 0.0
        for i in range(nseg):
            sg += psg[r, i]
            sgx += psgx[r, i]
        a[r] = sg / d
        c[r] = sgx / d
    return a, c


def _layer_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    weight: np.ndarray,
    out: np.ndarray,
    param_grads: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """LayerNorm input gradient of ``(R, D)`` rows into ``out``.

    Returns float64 ``(dweight, dbias)`` of length D (zeros unless ``param_grads``).
    """
    rows, d = x.shape
    w = float64_or(d, weight, 1.0)
    dw = np.zeros(d)
    db = np.zeros(d)
    if SPLIT_ROWS:
        nseg, seg, psg, psgx = segments(rows, d)
        for tt in prange(rows * nseg):
            _segment_sums(dy, x, mean, rstd, w, np.int64(tt), nseg, seg, psg, psgx)
        a, c = _segment_coefficients(psg, psgx, d)
        for ii in prange(nseg):
            i = np.int64(ii)
            s1 = min(d, (i + 1) * seg)
            _segment_grad(dy, x, mean, rstd, w, out, i * seg, s1, a, c, dw, db, param_grads)
    else:
        per, n_tasks = rows_per_task(rows, d, MAX_BACKWARD_TASKS)
        pdw = np.empty((n_tasks if param_grads else 1, d))
        pdb = np.empty((n_tasks if param_grads else 1, d))
        for tt in prange(n_tasks):
            t = np.int64(tt)  # the prange index is unsigned
            _backward_rows(dy, x, mean, rstd, w, out, t, per, pdw, pdb, param_grads)
        if param_grads:
            for ii in prange((d + 1023) // 1024):
                i = np.int64(ii)
                _sum_partials(pdw, pdb, dw, db, i * 1024, min(d, (i + 1) * 1024))
    return dw, db


#: LayerNorm backward (see :func:`_layer_norm_backward`): whole rows and split rows.
layer_norm_backward = row_kernel(_layer_norm_backward, ("whole", "split"))
