"""LayerNorm kernels on C-contiguous ``(R, D)`` rows, several rows per block.

A block is 2-D: ``x`` runs along a row (``lanes`` threads, the row's width rounded
up to a power of two, at most ``THREADS``) and ``y`` over the block's rows
(``THREADS // lanes`` of them), so short rows pack many to a block instead of
leaving most of a 256-thread block idle. Each thread sums its strided share of a
row shifted by the row's first value (no division per element, see
:mod:`._reduce`); a shared-memory tree per row adds the lanes. A row is read once
for its statistics and once for the fused output ``(x - mean) * rstd * weight +
bias``. Grids are grid-stride, sized from the device's multiprocessor count.

The backward pass reduces ``sum(g)`` and ``sum(g * xhat)`` per row the same way
and writes ``dx``; with parameter gradients every block row (``y`` lane of a
block) accumulates its rows' ``dy * xhat`` and ``dy`` into its own rows of
a ``[2, partial rows, D]`` buffer (in registers for rows up to four times its lanes,
written once; wider rows add into memory), which :func:`._reduce.column_sums2`
adds in row order. Every block row writes its whole partial row, so no rows
still gives zeros.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._arrays import NO_PARTIALS, empty, kernel_in, partials, placeholder
from ._reduce import column_sums2, shifted_moments, tree_sum2
from ._runtime import THREADS, cuda, device_blocks, kernel, launch, next_pow2, on_device

__all__ = ["affine_args", "layer_norm_backward", "layer_norm_forward", "row_moments", "row_threads"]


# ----------------------------------------------------------------------------- kernels
@cuda.jit(device=True)
def _row_mean_var(x, first, sa, sb):
    """``(row, mean, biased variance)`` of this thread's row over the block's ``x`` lanes.

    The block's rows start at ``first``; this thread's is ``first + threadIdx.y``,
    or -1 past the end (it then contributes nothing). Every thread of the block
    calls it (it synchronises).
    """
    row = first + cuda.threadIdx.y
    if row >= x.shape[0]:
        row = -1
    tx = cuda.threadIdx.x
    bx = cuda.blockDim.x
    slot = cuda.threadIdx.y * bx + tx
    features = x.shape[1]
    a = 0.0
    b = 0.0
    if row >= 0:
        k = np.float64(x[row, 0])
        j = tx
        while j + 3 * bx < features:  # four loads in flight, then the sums
            v0 = np.float64(x[row, j]) - k
            v1 = np.float64(x[row, j + bx]) - k
            v2 = np.float64(x[row, j + 2 * bx]) - k
            v3 = np.float64(x[row, j + 3 * bx]) - k
            a += (v0 + v1) + (v2 + v3)
            b += (v0 * v0 + v1 * v1) + (v2 * v2 + v3 * v3)
            j += 4 * bx
        while j < features:
            v = np.float64(x[row, j]) - k
            a += v
            b += v * v
            j += bx
    sa[slot] = a
    sb[slot] = b
    cuda.syncthreads()
    tree_sum2(sa, sb, tx, slot, 1, bx)
    head = slot - tx
    mean = 0.0
    var = 0.0
    if row >= 0:
        mean, var = shifted_moments(np.float64(x[row, 0]), sa[head], sb[head], float(features))
    cuda.syncthreads()  # everyone has read the row's slot before the next rows overwrite it
    return row, mean, var


@kernel
def _row_moments_kernel(x, mean, var):
    """Per-row mean and biased variance; ``blockDim.y`` rows per block."""
    sa = cuda.shared.array(THREADS, np.float64)
    sb = cuda.shared.array(THREADS, np.float64)
    first = cuda.blockIdx.x * cuda.blockDim.y
    while first < x.shape[0]:
        row, mu, v = _row_mean_var(x, first, sa, sb)
        if row >= 0 and cuda.threadIdx.x == 0:
            mean[row] = mu
            var[row] = v
        first += cuda.gridDim.x * cuda.blockDim.y


@cuda.jit(device=True)
def _affine(v, mu, rs, weight, bias, has_weight, has_bias, j):
    """``(v - mu) * rs * weight[j] + bias[j]`` in float64 (factors present or not)."""
    y = (v - mu) * rs
    if has_weight:
        y = y * np.float64(weight[j])
    if has_bias:
        y = y + np.float64(bias[j])
    return y


@kernel
def _forward_kernel(x, weight, bias, has_weight, has_bias, eps, out, mean, rstd):
    """Row statistics, then ``out = (x - mean) * rstd * weight + bias`` per row."""
    sa = cuda.shared.array(THREADS, np.float64)
    sb = cuda.shared.array(THREADS, np.float64)
    features = x.shape[1]
    first = cuda.blockIdx.x * cuda.blockDim.y
    while first < x.shape[0]:
        row, mu, v = _row_mean_var(x, first, sa, sb)
        if row >= 0:
            rs = 1.0 / math.sqrt(v + eps)
            bx = cuda.blockDim.x
            j = cuda.threadIdx.x
            while j + bx < features:  # two loads before two stores (out may be x)
                y0 = np.float64(x[row, j])
                y1 = np.float64(x[row, j + bx])
                out[row, j] = _affine(y0, mu, rs, weight, bias, has_weight, has_bias, j)
                out[row, j + bx] = _affine(y1, mu, rs, weight, bias, has_weight, has_bias, j + bx)
                j += 2 * bx
            if j < features:
                y0 = np.float64(x[row, j])
                out[row, j] = _affine(y0, mu, rs, weight, bias, has_weight, has_bias, j)
            if cuda.threadIdx.x == 0:
                mean[row] = mu
                rstd[row] = rs
        first += cuda.gridDim.x * cuda.blockDim.y


@cuda.jit(device=True)
def _terms(dy, x, weight, has_weight, row, j, mu, rs):
    """``(dy, xhat, g = dy * weight)`` of element ``(row, j)`` in float64."""
    d = np.float64(dy[row, j])
    xhat = (np.float64(x[row, j]) - mu) * rs
    return d, xhat, d * np.float64(weight[j]) if has_weight else d


@cuda.jit(device=True)
def _column(dy, x, weight, has_weight, row, j, mu, rs, a, b, dw, db):
    """Add element ``(row, j)`` (if ``j`` is in the row) to the row sums and column sums."""
    if j < x.shape[1]:
        d, xhat, g = _terms(dy, x, weight, has_weight, row, j, mu, rs)
        a += g
        b += g * xhat
        dw += d * xhat
        db += d
    return a, b, dw, db


@cuda.jit(device=True)
def _put_column(partial, p, j, dw, db):
    """Store one thread's column sums in its partial row (if ``j`` is in the row)."""
    if j < partial.shape[2]:
        partial[0, p, j] = dw
        partial[1, p, j] = db


@kernel
def _backward_kernel(dy, x, mean, rstd, weight, has_weight, param_grads, out, partial):
    """``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`` per row, ``g = dy * weight``.

    With ``param_grads``, block row ``p = blockIdx.x * blockDim.y + threadIdx.y``
    also sums its rows' ``dy * xhat`` and ``dy`` into ``partial[0, p]`` and ``partial[1, p]``
    (each element owned by one thread: no races). When a thread owns at most four
    columns of a row (rows up to ``4 * blockDim.x`` wide) it keeps those sums in
    registers over all its rows and stores them once; wider rows add into the
    partial rows in memory, element by element.
    """
    sa = cuda.shared.array(THREADS, np.float64)
    sb = cuda.shared.array(THREADS, np.float64)
    tx = cuda.threadIdx.x
    bx = cuda.blockDim.x
    slot = cuda.threadIdx.y * bx + tx
    head = slot - tx
    features = x.shape[1]
    p = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
    in_registers = features <= 4 * bx
    dw0 = dw1 = dw2 = dw3 = 0.0
    db0 = db1 = db2 = db3 = 0.0
    if param_grads and not in_registers:
        j = tx
        while j < features:
            partial[0, p, j] = 0.0
            partial[1, p, j] = 0.0
            j += bx
    first = cuda.blockIdx.x * cuda.blockDim.y
    while first < x.shape[0]:
        row = first + cuda.threadIdx.y
        a = 0.0
        b = 0.0
        mu = 0.0
        rs = 0.0
        if row < x.shape[0]:
            mu = mean[row]
            rs = rstd[row]
            if in_registers:
                a, b, dw0, db0 = _column(dy, x, weight, has_weight, row, tx, mu, rs, a, b, dw0, db0)
                j = tx + bx
                a, b, dw1, db1 = _column(dy, x, weight, has_weight, row, j, mu, rs, a, b, dw1, db1)
                j += bx
                a, b, dw2, db2 = _column(dy, x, weight, has_weight, row, j, mu, rs, a, b, dw2, db2)
                j += bx
                a, b, dw3, db3 = _column(dy, x, weight, has_weight, row, j, mu, rs, a, b, dw3, db3)
            else:
                j = tx
                while j < features:
                    d, xhat, g = _terms(dy, x, weight, has_weight, row, j, mu, rs)
                    a += g
                    b += g * xhat
                    if param_grads:
                        partial[0, p, j] += d * xhat
                        partial[1, p, j] += d
                    j += bx
        sa[slot] = a
        sb[slot] = b
        cuda.syncthreads()
        tree_sum2(sa, sb, tx, slot, 1, bx)
        mean_g = sa[head] / features
        mean_gx = sb[head] / features
        cuda.syncthreads()
        if row < x.shape[0]:
            j = tx
            while j < features:
                d, xhat, g = _terms(dy, x, weight, has_weight, row, j, mu, rs)
                out[row, j] = rs * (g - mean_g - xhat * mean_gx)
                j += bx
        first += cuda.gridDim.x * cuda.blockDim.y
    if param_grads and in_registers:
        _put_column(partial, p, tx, dw0, db0)
        _put_column(partial, p, tx + bx, dw1, db1)
        _put_column(partial, p, tx + 2 * bx, dw2, db2)
        _put_column(partial, p, tx + 3 * bx, dw3, db3)


# ----------------------------------------------------------------------------- launches
def row_threads(features: int) -> int:
    """Lanes per row: the row's width rounded up to a power of two, at most THREADS."""
    return min(THREADS, max(2, next_pow2(features)))


def _geometry(rows: int, features: int) -> tuple[int, tuple[int, int]]:
    """``(blocks, (lanes, rows per block))`` of a row kernel: enough blocks to fill the GPU."""
    lanes = row_threads(features)
    per_block = THREADS // lanes
    return device_blocks(rows, per_block), (lanes, per_block)


def affine_args(weight: Any | None, bias: Any | None) -> tuple[Any, Any, bool, bool]:
    """A row kernel's arguments ``(weight, bias, has_weight, has_bias)`` for an optional affine.

    An absent vector is a placeholder of the other's dtype (the kernels read both
    in one dtype), float64 when both are absent.

    Parameters
    ----------
    weight, bias : float32 or float64 device arrays of shape (D,), or None

    Returns
    -------
    tuple
        The two vectors as read-only kernel arguments, then the two flags.
    """
    given = bias if weight is None else weight
    dtype = np.float64 if given is None else given.dtype
    w = placeholder(dtype) if weight is None else weight
    b = placeholder(dtype) if bias is None else bias
    return kernel_in(w), kernel_in(b), weight is not None, bias is not None


def _launch_rows(fn: Any, x: Any, s: Any, *args: Any) -> tuple[Any, Any]:
    """Launch row kernel ``fn(x, *args, first, second)`` (inside ``on_device``) on stream ``s``.

    ``first`` and ``second``, the kernel's last two arguments, are the float64
    row vectors (shape ``(R,)``) it fills, which are returned.
    """
    rows, features = x.shape
    stats = empty((2, rows), np.float64)
    if rows:
        blocks, block = _geometry(rows, features)
        first, second = stats[0], stats[1]
        launch(fn, blocks, block, s, kernel_in(x), *args, first, second)
    return stats[0], stats[1]


def row_moments(x: Any) -> tuple[Any, Any]:
    """Per-row float64 mean and biased variance of ``(R, D)`` data, on the device.

    Parameters
    ----------
    x : device array of shape (R, D), C-contiguous

    Returns
    -------
    mean, var : device arrays of shape (R,)
    """
    with on_device(x) as s:
        return _launch_rows(_row_moments_kernel, x, s)


def layer_norm_forward(
    x: Any, weight: Any | None, bias: Any | None, eps: float, out: Any
) -> tuple[Any, Any, Any]:
    """Fused LayerNorm of ``(R, D)`` rows into ``out``.

    Parameters
    ----------
    x : device array of shape (R, D), C-contiguous
    weight, bias : float32 or float64 device arrays of shape (D,), or None
    eps : float
    out : device array like ``x`` (may be ``x``)

    Returns
    -------
    out : device array
    mean, rstd : float64 device arrays of shape (R,)
    """
    with on_device(x) as s:
        mean, rstd = _launch_rows(
            _forward_kernel,
            x,
            s,
            *affine_args(weight, bias),
            float(eps),
            out,
        )
    return out, mean, rstd


def layer_norm_backward(
    dy: Any,
    x: Any,
    mean: Any,
    rstd: Any,
    weight: Any | None,
    out: Any,
    param_grads: bool,
    accumulate: tuple[Any, Any] | None = None,
) -> tuple[Any, Any | None, Any | None]:
    """LayerNorm input gradient of ``(R, D)`` rows into ``out``, and optionally dweight, dbias.

    Parameters
    ----------
    dy, x : device arrays of shape (R, D), C-contiguous (float32 or float64 each)
    mean, rstd : float64 device arrays of shape (R,)
    weight : float32 or float64 device array of shape (D,), or None
    out : device array like ``x`` (may be ``dy``)
    param_grads : bool
        Also return ``sum(dy * xhat)`` and ``sum(dy)`` over rows.
    accumulate : pair of device arrays of shape (D,), float32 or float64, optional
        A layer's gradient buffers ``(dweight, dbias)`` (one dtype), C-contiguous:
        with ``param_grads``, the column-sum kernel adds the gradients to them (in
        place, no separate add or cast) and they are returned.

    Returns
    -------
    out : device array
    dweight, dbias : device arrays of shape (D,), or None
        float64, or ``accumulate``'s pair; None unless ``param_grads``.
    """
    rows, features = x.shape
    blocks, block = _geometry(rows, features)
    with on_device(x) as s:
        if param_grads:
            partial = partials(x, blocks * block[1], features)
        else:
            partial = placeholder(np.float64, NO_PARTIALS)
        if rows or param_grads:
            launch(
                _backward_kernel,
                blocks,
                block,
                s,
                kernel_in(dy),
                kernel_in(x),
                kernel_in(mean),
                kernel_in(rstd),
                kernel_in(placeholder(np.float64) if weight is None else weight),
                weight is not None,
                bool(param_grads),
                out,
                partial,
            )
        if not param_grads:
            return out, None, None
        if accumulate is None:
            grads = empty((2, features), np.float64)
            dweight, dbias = grads[0], grads[1]
        else:
            dweight, dbias = accumulate
        if features:
            column_sums2(partial, dweight, dbias, s, accumulate is not None)
    return out, dweight, dbias
