"""LayerNorm kernels on C-contiguous ``(R, D)`` rows.

Rows of up to ``ROW_SPLIT`` values are handled whole by one task (several rows
per task): the statistics are computed while the row is in cache and the
output written straight after. Longer rows are split into segments of at most
:data:`~.jit.TASK_SIZE` values: per-segment partial results first (in parallel),
then a per-row combination, then the output per segment (in parallel). All
accumulation is float64; the output arithmetic is float64 and rounds once.

``weight`` and ``bias`` are float32 or float64 vectors; an empty one stands for
``None``, so that every combination compiles the same specialisation.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import TASK_SIZE, kernel, rsqrt_jit, serial_jit

__all__ = [
    "layer_norm_backward",
    "layer_norm_backward_long",
    "layer_norm_forward",
    "layer_norm_forward_long",
    "row_moments",
]

#: Rows of at most this many values are normalised pass by pass over a task's rows.
SHORT_ROW = 256
#: Rows longer than this are split into segments (256 KiB of float32, the L2 share
#: of one core, so a whole row stays cached between the passes below it).
ROW_SPLIT = 65536
#: Most tasks of the whole-row LayerNorm backward: each owns a row of partial
#: dweight/dbias, which are summed at the end, so big inputs get bigger tasks.
MAX_BACKWARD_TASKS = 64


@serial_jit
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


@serial_jit
def _rows_per_task(r, d, max_tasks):
    """Rows per task (about :data:`~.jit.TASK_SIZE` values, at most ``max_tasks`` tasks)
    and the number of tasks."""
    per = max(1, TASK_SIZE // max(d, 1), (r + max_tasks - 1) // max(max_tasks, 1))
    return per, (r + per - 1) // per


@serial_jit
def _segments(d):
    nseg = (d + TASK_SIZE - 1) // TASK_SIZE
    return nseg, (d + nseg - 1) // nseg


@serial_jit
def _normalise(xv, ov, m, rs, w, b):
    for j in range(xv.size):
        ov[j] = (xv[j] - m) * rs * w[j] + b[j]


@serial_jit
def _affine_rows(x, out, mean, rstd, w, b, r0, r1):
    """``out[r] = (x[r] - mean[r]) * rstd[r] * w + b`` for rows ``r0 .. r1 - 1``.

    ``w``/``b`` are read in their own dtype (no float64 copies per call); an empty one
    acts as ones or zeros, which give the same bits as leaving it out. One loop for
    every combination keeps the compiled code small.
    """
    d = x.shape[1]
    wv = w if w.size > 0 else np.ones(d, w.dtype)
    bv = b if b.size > 0 else np.zeros(d, b.dtype)
    for r in range(r0, r1):
        xv = x[r]
        ov = out[r]
        m = mean[r]
        rs = rstd[r]
        for j in range(d):
            ov[j] = (xv[j] - m) * rs * wv[j] + bv[j]


@serial_jit
def _forward_row(x, w, b, eps, out, mean, rstd, r):
    """Statistics of row ``r`` while it is in cache, then its output."""
    d = x.shape[1]
    s = 0.0
    for j in range(d):
        s += x[r, j]
    m = s / d
    q = 0.0
    for j in range(d):
        e = x[r, j] - m
        q += e * e
    rs = 1.0 / np.sqrt(q / d + eps)
    for j in range(d):
        out[r, j] = (x[r, j] - m) * rs * w[j] + b[j]
    mean[r] = m
    rstd[r] = rs


@serial_jit
def _forward_rows(x, w, b, eps, out, mean, rstd, t, per):
    """Task ``t`` of the whole-row forward.

    Rows of at most ``SHORT_ROW`` values go pass by pass over the task's rows (all
    sums, all squared deviations, all ``rstd``, all outputs): row by row, each short
    row's chain of dependent reductions, division and square root leaves the core
    idle (the task's rows stay in L2). Longer rows are done one at a time.
    """
    rows, d = x.shape
    r0 = t * per
    r1 = min(rows, r0 + per)
    if d > SHORT_ROW:
        # float64 parameters once per task: converting them per element would slow
        # the long rows' output pass
        w64 = _ones(d, w)
        b64 = _zeros(d, b)
        for r in range(r0, r1):
            _forward_row(x, w64, b64, eps, out, mean, rstd, r)
        return
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
    _affine_rows(x, out, mean, rstd, w, b, r0, r1)


@serial_jit
def _moments_rows(x, mean, var, t, per):
    rows, d = x.shape
    for r in range(t * per, min(rows, (t + 1) * per)):
        m, q = _two_pass(x[r])
        mean[r] = m
        var[r] = q / d


@serial_jit
def _segment_stats(x, t, nseg, seg, pmean, pm2):
    """Task ``t`` of a split row: two-pass moments of one segment."""
    r = t // nseg
    s0 = (t - r * nseg) * seg
    m, q = _two_pass(x[r, s0 : min(x.shape[1], s0 + seg)])
    pmean[r, t - r * nseg] = m
    pm2[r, t - r * nseg] = q


@serial_jit
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


@serial_jit
def _ones(d: int, v: np.ndarray) -> np.ndarray:
    """``v`` as float64, or ones when it is empty (``None``)."""
    if v.size == 0:
        return np.ones(d)
    return v.astype(np.float64)


@serial_jit
def _zeros(d: int, v: np.ndarray) -> np.ndarray:
    """``v`` as float64, or zeros when it is empty (``None``)."""
    if v.size == 0:
        return np.zeros(d)
    return v.astype(np.float64)


# ----------------------------------------------------------------------------- forward
@serial_jit
def _long_row_rstd(pmean, pm2, d, seg, eps, mean, rstd):
    """Mean and rstd of split rows from their segments' moments."""
    _combine_segments(pmean, pm2, d, seg, mean, rstd)
    _rstd(rstd, 0, mean.size, 1, eps)


@serial_jit
def _normalise_segment(x, out, mean, rstd, w, b, t, nseg, seg):
    """Output of task ``t`` (one segment of a split row)."""
    d = x.shape[1]
    r = t // nseg
    s0 = (t - r * nseg) * seg
    s1 = min(d, s0 + seg)
    _normalise(x[r, s0:s1], out[r, s0:s1], mean[r], rstd[r], w[s0:s1], b[s0:s1])


@kernel
def layer_norm_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    eps: float,
    out: np.ndarray,
    stats: np.ndarray,
) -> None:
    """Fused LayerNorm of ``(R, D)`` rows of at most ``ROW_SPLIT`` values into ``out``,
    float64 mean and rstd into ``stats``.

    ``stats`` has shape ``(2, R)`` (passing it in saves boxing two new arrays per call).
    """
    rows, d = x.shape
    mean = stats[0]
    rstd = stats[1]
    per, n_tasks = _rows_per_task(rows, d, rows)
    for tt in prange(n_tasks):
        # the prange index is unsigned
        _forward_rows(x, weight, bias, eps, out, mean, rstd, np.int64(tt), per)


@kernel
def layer_norm_forward_long(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    eps: float,
    out: np.ndarray,
    stats: np.ndarray,
) -> None:
    """:func:`layer_norm_forward` of rows longer than ``ROW_SPLIT``, split into segments.

    A kernel of its own, so that short rows never compile the segment code.
    """
    rows, d = x.shape
    mean = stats[0]
    rstd = stats[1]
    w = _ones(d, weight)
    b = _zeros(d, bias)
    nseg, seg = _segments(d)
    pmean = np.empty((rows, nseg))
    pm2 = np.empty((rows, nseg))
    for tt in prange(rows * nseg):
        _segment_stats(x, np.int64(tt), nseg, seg, pmean, pm2)
    _long_row_rstd(pmean, pm2, d, seg, eps, mean, rstd)
    for tt in prange(rows * nseg):
        _normalise_segment(x, out, mean, rstd, w, b, np.int64(tt), nseg, seg)


@kernel
def row_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row float64 mean and biased variance of ``(R, D)`` data."""
    rows, d = x.shape
    mean = np.empty(rows)
    var = np.empty(rows)
    if d <= ROW_SPLIT:
        per, n_tasks = _rows_per_task(rows, d, rows)
        for tt in prange(n_tasks):
            _moments_rows(x, mean, var, np.int64(tt), per)  # the prange index is unsigned
    else:
        nseg, seg = _segments(d)
        pmean = np.empty((rows, nseg))
        pm2 = np.empty((rows, nseg))
        for tt in prange(rows * nseg):
            _segment_stats(x, np.int64(tt), nseg, seg, pmean, pm2)
        _combine_segments(pmean, pm2, d, seg, mean, var)
    return mean, var


# ----------------------------------------------------------------------------- backward
@serial_jit
def _backward_rows(dy, x, mean, rstd, w, out, t, per, pdw, pdb, param_grads):
    """Task ``t``: input gradient row by row, partial dweight/dbias into row ``t``."""
    rows, d = x.shape
    dw = pdw[t] if param_grads else pdw[0]
    db = pdb[t] if param_grads else pdb[0]
    if param_grads:
        dw[:] = 0.0
        db[:] = 0.0
    for r in range(t * per, min(rows, (t + 1) * per)):
        xr = x[r]
        gr = dy[r]
        orow = out[r]
        m = mean[r]
        rs = rstd[r]
        sg = 0.0
        sgx = 0.0
        for j in range(d):
            g = gr[j] * w[j]
            sg += g
            sgx += g * ((xr[j] - m) * rs)
        a = sg / d
        c = sgx / d
        if param_grads:
            for j in range(d):
                gj = np.float64(gr[j])
                xh = (xr[j] - m) * rs
                dw[j] += gj * xh
                db[j] += gj
                orow[j] = rs * (gj * w[j] - a - xh * c)
        else:
            for j in range(d):
                xh = (xr[j] - m) * rs
                orow[j] = rs * (gr[j] * w[j] - a - xh * c)


@serial_jit
def _sum_partials(pdw, pdb, dw, db, j0, j1):
    """Add the task rows of the partial buffers in order, for columns ``j0:j1``."""
    for t in range(pdw.shape[0]):
        a = pdw[t, j0:j1]
        b = pdb[t, j0:j1]
        for j in range(j1 - j0):
            dw[j0 + j] += a[j]
            db[j0 + j] += b[j]


@serial_jit
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


@serial_jit
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


@serial_jit
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


@kernel
def layer_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    weight: np.ndarray,
    out: np.ndarray,
    param_grads: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """LayerNorm input gradient of ``(R, D)`` rows of at most ``ROW_SPLIT`` values into
    ``out``.

    Returns float64 ``(dweight, dbias)`` of length D (zeros unless ``param_grads``).
    """
    rows, d = x.shape
    w = _ones(d, weight)
    dw = np.zeros(d)
    db = np.zeros(d)
    per, n_tasks = _rows_per_task(rows, d, MAX_BACKWARD_TASKS)
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


@kernel
def layer_norm_backward_long(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    weight: np.ndarray,
    out: np.ndarray,
    param_grads: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`layer_norm_backward` of rows longer than ``ROW_SPLIT``, split into segments."""
    rows, d = x.shape
    w = _ones(d, weight)
    dw = np.zeros(d)
    db = np.zeros(d)
    nseg, seg = _segments(d)
    psg = np.empty((rows, nseg))
    psgx = np.empty((rows, nseg))
    for tt in prange(rows * nseg):
        _segment_sums(dy, x, mean, rstd, w, np.int64(tt), nseg, seg, psg, psgx)
    a, c = _segment_coefficients(psg, psgx, d)
    for ii in prange(nseg):
        i = np.int64(ii)
        s1 = min(d, (i + 1) * seg)
        _segment_grad(dy, x, mean, rstd, w, out, i * seg, s1, a, c, dw, db, param_grads)
    return dw, db
