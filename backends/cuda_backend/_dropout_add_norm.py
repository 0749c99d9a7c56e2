"""Fused dropout + residual add + LayerNorm on ``(R, D)`` rows: one block per row (grid-stride).

Each thread takes groups of eight consecutive global elements (two Philox blocks, one
bitmask byte) of its row: it draws their words, drops, scales, adds the residual,
stores ``r`` and sums the stored values shifted by the row's first value of ``r``
(no division per element, see :mod:`._reduce`; thread 0 computes that value first, so
a one-element or constant row has its value as mean exactly and normalises to 0); the
block adds the sums through shared memory, then writes ``y = (r - mean) * rstd * weight
+ bias`` from ``r``. Element ``i`` of the C-ordered data gets the Philox word every
other backend gives it, so the masks agree bit for bit.

When every row starts on a byte (``D % 8 == 0``) a thread packs its group's keep
bits into the bitmask itself; otherwise a row's first and last byte may be shared
with its neighbours' and a second kernel packs the whole mask, one byte per thread.
On the GPU the compiler may contract ``x * scale + residual`` into one multiply-add
(one rounding instead of the two that separate calls make); the simulator rounds
twice, as the other backends do.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._arrays import empty, kernel_in, placeholder
from ._dropout import _key_and_call, _philox_block
from ._layernorm import affine_args, row_threads
from ._reduce import shifted_moments, tree_sum2
from ._runtime import THREADS, blocks_for, cuda, kernel, launch, on_device

__all__ = ["dropout_add_layer_norm_forward"]


@cuda.jit(device=True)
def _word(w0, w1, w2, w3, lane):
    """Word ``lane`` (0-3) of a Philox block."""
    if lane == 0:
        return w0
    if lane == 1:
        return w1
    if lane == 2:
        return w2
    return w3


@cuda.jit(device=True)
def _drop_add(x, residual, has_residual, row, j, drop, word, threshold, scale, zero):
    """Element ``j`` of ``r``'s row (in ``x``'s dtype) and whether it was kept."""
    v = x[row, j]
    kept = True
    if drop:
        if word >= threshold:
            v = v * scale
        else:
            v = zero
            kept = False
    if has_residual:
        v = v + residual[row, j]
    return v, kept


@kernel
def _fused_kernel(
    x, residual, has_residual, weight, bias, has_weight, has_bias, eps,
    drop, threshold, scale, zero, offset, k0, k1, c2, c3, pack,
    out, r, mean, rstd, bitmask,
):  # fmt: skip
    """``r = dropout(x) + residual``, ``out = layer_norm(r)``; row element ``j`` is global
    element ``offset + row * D + j``."""
    sa = cuda.shared.array(THREADS, np.float64)
    sb = cuda.shared.array(THREADS, np.float64)
    sk = cuda.shared.array(1, np.float64)
    tid = cuda.threadIdx.x
    features = x.shape[1]
    row = cuda.blockIdx.x
    while row < x.shape[0]:
        g0 = offset + row * features
        # the shift, common to the row's threads: r's first value, as the loop computes it
        if tid == 0 and features > 0:
            word = np.uint64(0)
            if drop:
                w0, w1, w2, w3 = _philox_block(np.uint64(g0 // 4), k0, k1, c2, c3)
                word = _word(w0, w1, w2, w3, g0 % 4)
            v, _ = _drop_add(x, residual, has_residual, row, 0, drop, word, threshold, scale, zero)
            sk[0] = np.float64(v)
        cuda.syncthreads()
        k = sk[0] if features > 0 else 0.0
        a = 0.0
        b = 0.0
        u = g0 // 8 + tid
        while u <= (g0 + features - 1) // 8:
            bits = 0
            for half in range(2):
                w0 = w1 = w2 = w3 = np.uint64(0)
                if drop:
                    w0, w1, w2, w3 = _philox_block(np.uint64(2 * u + half), k0, k1, c2, c3)
                for lane in range(4):
                    j = 8 * u + 4 * half + lane - g0
                    if 0 <= j < features:
                        word = _word(w0, w1, w2, w3, lane)
                        v, kept = _drop_add(
                            x, residual, has_residual, row, j, drop, word, threshold, scale, zero
                        )
                        if drop and kept:
                            bits |= 1 << (4 * half + lane)
                        r[row, j] = v
                        d = np.float64(r[row, j]) - k
                        a += d
                        b += d * d
            if pack:
                bitmask[u] = bits
            u += cuda.blockDim.x
        sa[tid] = a
        sb[tid] = b
        cuda.syncthreads()
        tree_sum2(sa, sb, tid, tid, 1, cuda.blockDim.x)
        mu, var = shifted_moments(k, sa[0], sb[0], float(features))
        rs = 1.0 / math.sqrt(var + eps)
        cuda.syncthreads()  # everyone has read slot 0 before the next row overwrites it
        j = tid
        while j < features:
            y = (np.float64(r[row, j]) - mu) * rs
            if has_weight:
                y = y * weight[j]
            if has_bias:
                y = y + bias[j]
            out[row, j] = y
            j += cuda.blockDim.x
        if tid == 0:
            mean[row] = mu
            rstd[row] = rs
        row += cuda.gridDim.x


@kernel
def _pack_kernel(n, threshold, k0, k1, c2, c3, bitmask):
    """Pack the keep-mask of elements ``0 .. n - 1``: one byte (two Philox blocks) per thread."""
    b = cuda.grid(1)
    while b < bitmask.shape[0]:
        bits = 0
        for half in range(2):
            w0, w1, w2, w3 = _philox_block(np.uint64(2 * b + half), k0, k1, c2, c3)
            for lane in range(4):
                if 8 * b + 4 * half + lane < n and _word(w0, w1, w2, w3, lane) >= threshold:
                    bits |= 1 << (4 * half + lane)
        bitmask[b] = bits
        b += cuda.gridsize(1)


def dropout_add_layer_norm_forward(
    x: Any,
    residual: Any | None,
    weight: Any | None,
    bias: Any | None,
    eps: float,
    threshold: int | None,
    scale: Any,
    seed: int | None,
    call: int,
    out: Any,
    r_out: Any,
    bitmask: Any | None,
    offset: int = 0,
) -> tuple[Any, Any, Any, Any]:
    """``r = dropout(x) + residual`` into ``r_out`` and LayerNorm of ``r`` into ``out``.

    Parameters
    ----------
    x : device array of shape (R, D), C-contiguous
    residual : device array like ``x``, or None
    weight, bias : device arrays of shape (D,), or None
    eps : float
    threshold : int or None
        Keep an element when its word is ``>= threshold``; None: no dropout.
    scale : scalar
        Factor of kept elements, applied in ``x``'s dtype.
    seed, call : int
    out, r_out : device arrays like ``x``
    bitmask : uint8 device array of ``ceil(R * D / 8)`` bytes, or None
        Only with ``offset == 0``.
    offset : int, default 0
        Global index of ``x``'s first element.

    Returns
    -------
    out, r_out : device arrays
    mean, rstd : float64 device arrays of shape (R,)
    """
    rows, features = x.shape
    drop = threshold is not None
    keys = _key_and_call(seed if drop and seed is not None else 0, call)
    limit = np.uint64(0 if threshold is None else threshold)
    inline_pack = bitmask is not None and features % 8 == 0
    with on_device(x) as s:
        stats = empty((2, rows), np.float64)
        mean, rstd = stats[0], stats[1]
        if rows:
            launch(
                _fused_kernel,
                blocks_for(rows, 1),
                row_threads(features),
                s,
                kernel_in(x),
                kernel_in(x if residual is None else residual),
                residual is not None,
                *affine_args(weight, bias),
                float(eps),
                drop,
                limit,
                x.dtype.type(scale if drop else 1),
                x.dtype.type(0),
                np.int64(offset),
                *keys,
                inline_pack,
                out,
                r_out,
                mean,
                rstd,
                bitmask if inline_pack else placeholder(np.uint8),
            )
        if bitmask is not None and not inline_pack and bitmask.shape[0]:
            launch(
                _pack_kernel,
                blocks_for(bitmask.shape[0]),
                THREADS,
                s,
                np.int64(x.size),
                limit,
                *keys,
                bitmask,
            )
    return out, r_out, mean, rstd
