"""LayerNorm kernels on C-contiguous ``(R, D)`` rows: one block per row (grid-stride).

Each thread runs Welford over its strided share of the row and the block merges
the triples through shared memory (Chan), so a row is read once for its
statistics and once for the fused output ``(x - mean) * rstd * weight + bias``.
The backward pass reduces ``sum(g)`` and ``sum(g * xhat)`` per row the same way
and writes ``dx``; each block also accumulates its rows' ``dy * xhat`` and ``dy``
into its own row of ``[blocks, D]`` partial buffers (zeroed by the block itself,
so no rows still gives zeros), which a second kernel sums in block order into
``dweight`` and ``dbias``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._arrays import alloc_like, empty, kernel_in, kernel_out
from ._reduce import sum_rows2_kernel, tree_merge, tree_sum2, welford_step
from ._runtime import PARTIAL_ROWS, THREADS, blocks_for, cuda, next_pow2, stream

__all__ = ["layer_norm_backward", "layer_norm_forward", "row_moments"]


# ----------------------------------------------------------------------------- kernels
@cuda.jit(device=True)
def _row_mean_var(x, row, sn, smean, sm2):
    """Block-wide float64 mean and biased variance of ``x[row]`` (all threads call it)."""
    tid = cuda.threadIdx.x
    features = x.shape[1]
    n = 0.0
    mean = 0.0
    m2 = 0.0
    j = tid
    while j < features:
        n, mean, m2 = welford_step(n, mean, m2, float(x[row, j]))
        j += cuda.blockDim.x
    sn[tid] = n
    smean[tid] = mean
    sm2[tid] = m2
    cuda.syncthreads()
    tree_merge(sn, smean, sm2, tid, tid, 1, cuda.blockDim.x)
    mean = smean[0]
    var = sm2[0] / features
    cuda.syncthreads()  # everyone has read slot 0 before the next row overwrites it
    return mean, var


@cuda.jit
def _row_moments_kernel(x, mean, var):
    """Per-row mean and biased variance."""
    sn = cuda.shared.array(THREADS, np.float64)
    smean = cuda.shared.array(THREADS, np.float64)
    sm2 = cuda.shared.array(THREADS, np.float64)
    row = cuda.blockIdx.x
    while row < x.shape[0]:
        mu, v = _row_mean_var(x, row, sn, smean, sm2)
        if cuda.threadIdx.x == 0:
            mean[row] = mu
            var[row] = v
        row += cuda.gridDim.x


@cuda.jit
def _forward_kernel(x, weight, bias, has_weight, has_bias, eps, out, mean, rstd):
    """Row statistics, then ``out = (x - mean) * rstd * weight + bias`` per row."""
    sn = cuda.shared.array(THREADS, np.float64)
    smean = cuda.shared.array(THREADS, np.float64)
    sm2 = cuda.shared.array(THREADS, np.float64)
    features = x.shape[1]
    row = cuda.blockIdx.x
    while row < x.shape[0]:
        mu, v = _row_mean_var(x, row, sn, smean, sm2)
        rs = 1.0 / math.sqrt(v + eps)
        j = cuda.threadIdx.x
        while j < features:
            y = (float(x[row, j]) - mu) * rs
            if has_weight:
                y = y * weight[j]
            if has_bias:
                y = y + bias[j]
            out[row, j] = y
            j += cuda.blockDim.x
        if cuda.threadIdx.x == 0:
            mean[row] = mu
            rstd[row] = rs
        row += cuda.gridDim.x


@cuda.jit
def _backward_kernel(dy, x, mean, rstd, weight, has_weight, param_grads, out, pdw, pdb):
    """``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`` per row, ``g = dy * weight``.

    With ``param_grads``, block ``b`` also sums its rows' ``dy * xhat`` and ``dy``
    into ``pdw[b]`` and ``pdb[b]`` (each column owned by one thread: no races).
    """
    sa = cuda.shared.array(THREADS, np.float64)
    sb = cuda.shared.array(THREADS, np.float64)
    tid = cuda.threadIdx.x
    features = x.shape[1]
    g_block = cuda.blockIdx.x
    if param_grads:
        j = tid
        while j < features:
            pdw[g_block, j] = 0.0
            pdb[g_block, j] = 0.0
            j += cuda.blockDim.x
    row = g_block
    while row < x.shape[0]:
        mu = mean[row]
        rs = rstd[row]
        a = 0.0
        b = 0.0
        j = tid
        while j < features:
            d = float(dy[row, j])
            xhat = (float(x[row, j]) - mu) * rs
            g = d * weight[j] if has_weight else d
            a += g
            b += g * xhat
            if param_grads:
                pdw[g_block, j] += d * xhat
                pdb[g_block, j] += d
            j += cuda.blockDim.x
        sa[tid] = a
        sb[tid] = b
        cuda.syncthreads()
        tree_sum2(sa, sb, tid, tid, 1, cuda.blockDim.x)
        mean_g = sa[0] / features
        mean_gx = sb[0] / features
        cuda.syncthreads()
        j = tid
        while j < features:
            d = float(dy[row, j])
            xhat = (float(x[row, j]) - mu) * rs
            g = d * weight[j] if has_weight else d
            out[row, j] = rs * (g - mean_g - xhat * mean_gx)
            j += cuda.blockDim.x
        row += cuda.gridDim.x


# ----------------------------------------------------------------------------- launches
def _row_threads(features: int) -> int:
    """Threads per row block: the row's width rounded up to a power of two, at most THREADS."""
    return min(THREADS, max(2, next_pow2(features)))


def _placeholder(x: Any) -> Any:
    """A one-element float64 array standing in for an absent weight or bias."""
    return alloc_like(x, (1,), np.float64)


def row_moments(x: Any) -> tuple[Any, Any]:
    """Per-row float64 mean and biased variance of ``(R, D)`` data, on the device.

    Parameters
    ----------
    x : device array of shape (R, D), C-contiguous

    Returns
    -------
    mean, var : device arrays of shape (R,)
    """
    rows, features = x.shape
    mean = empty((rows,), np.float64)
    var = empty((rows,), np.float64)
    if rows:
        _row_moments_kernel[blocks_for(rows, 1), _row_threads(features), stream()](
            kernel_in(x), kernel_out(mean), kernel_out(var)
        )
    return mean, var


def layer_norm_forward(
    x: Any, weight: Any | None, bias: Any | None, eps: float, out: Any
) -> tuple[Any, Any, Any]:
    """Fused LayerNorm of ``(R, D)`` rows into ``out``.

    Parameters
    ----------
    x : device array of shape (R, D), C-contiguous
    weight, bias : float64 device arrays of shape (D,), or None
    eps : float
    out : device array like ``x`` (may be ``x``)

    Returns
    -------
    out : device array
    mean, rstd : float64 device arrays of shape (R,)
    """
    rows, features = x.shape
    mean = empty((rows,), np.float64)
    rstd = empty((rows,), np.float64)
    if rows:
        _forward_kernel[blocks_for(rows, 1), _row_threads(features), stream()](
            kernel_in(x),
            kernel_in(_placeholder(x) if weight is None else weight),
            kernel_in(_placeholder(x) if bias is None else bias),
            weight is not None,
            bias is not None,
            float(eps),
            kernel_out(out),
            kernel_out(mean),
            kernel_out(rstd),
        )
    return out, mean, rstd


def layer_norm_backward(
    dy: Any, x: Any, mean: Any, rstd: Any, weight: Any | None, out: Any, param_grads: bool
) -> tuple[Any, Any | None, Any | None]:
    """LayerNorm input gradient of ``(R, D)`` rows into ``out``, and optionally dweight, dbias.

    Parameters
    ----------
    dy, x : device arrays of shape (R, D), C-contiguous
    mean, rstd : float64 device arrays of shape (R,)
    weight : float64 device array of shape (D,), or None
    out : device array like ``x`` (may be ``dy``)
    param_grads : bool
        Also return ``sum(dy * xhat)`` and ``sum(dy)`` over rows.

    Returns
    -------
    out : device array
    dweight, dbias : float64 device arrays of shape (D,), or None
    """
    rows, features = x.shape
    blocks = blocks_for(rows, 1, PARTIAL_ROWS) if param_grads else blocks_for(rows, 1)
    shape = (blocks, features) if param_grads else (1, 1)
    pdw = alloc_like(x, shape, np.float64)
    pdb = alloc_like(x, shape, np.float64)
    s = stream()
    _backward_kernel[blocks, _row_threads(features), s](
        kernel_in(dy),
        kernel_in(x),
        kernel_in(mean),
        kernel_in(rstd),
        kernel_in(_placeholder(x) if weight is None else weight),
        weight is not None,
        bool(param_grads),
        kernel_out(out),
        kernel_out(pdw),
        kernel_out(pdb),
    )
    if not param_grads:
        return out, None, None
    dweight = empty((features,), np.float64)
    dbias = empty((features,), np.float64)
    sum_rows2_kernel[blocks_for(features), THREADS, s](
        kernel_in(pdw), kernel_in(pdb), kernel_out(dweight), kernel_out(dbias)
    )
    return out, dweight, dbias
