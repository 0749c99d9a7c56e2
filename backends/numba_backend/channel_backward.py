"""Whole-layer BatchNorm backward of ``(N, C, L)`` data in one compiled call.

With ``w`` the weight (1 without one), ``count = N * L``, ``s = sum(dy)`` and
``q = sum((x - mean) * dy)`` per channel, the input gradient is
``a * dy + b * (x - mean) + k`` with ``a = rstd * w``, ``b = -a * rstd**2 * q / count``
and ``k = -a * s / count`` when ``training`` (the forward used batch statistics),
and ``a * dy`` when not; ``dweight = q * rstd`` and ``dbias = s``.

Data in the channel-block layout (:func:`~.layouts.takes_blocks`) is
reduced and transformed channel by channel, each channel's second pass reading
what its first left in the core's cache, so ``x`` and ``dy`` come from memory
once. Other data takes the task loops of :func:`~.channel_sums.channel_sums` and
:func:`~.elementwise.channel_backward_elemt` (the same inlined helpers), with the
coefficients computed in between. Either way the tasks depend only on the shape.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .channel_sums import backward_sums
from .channel_tasks import channel_blocks, channel_dot
from .elementwise import affine, backward_elemt
from .jit import inline_jit, task_jit
from .layouts import CHANNEL_BLOCKS, LONG_LAYOUT, channel_kernel
from .vectors import float64_or

__all__ = ["batch_norm_backward"]


@inline_jit
def _coefficients(r, w, s, q, inv_count):
    """``a``, ``b`` and ``k`` of one channel (see the module notes).

    ``inv_count`` is ``1 / count``, shared by ``b`` and ``k``: a quotient used once
    would let ``reassoc`` move the division into the element loop that multiplies
    by it (``v * (y / n)`` becomes ``(v * y) / n``).
    """
    a = r * w
    return a, -a * r * r * (q * inv_count), -a * (s * inv_count)


@task_jit
def _block_task(dy, x, mean, rstd, w, training, grads, out, t, per, dw, db):
    """Task ``t`` of the channel-block layout: channels ``t * per`` on, each summed and
    then transformed while its values are in cache; their dweight and dbias."""
    n, c, length = x.shape
    inv_count = 1.0 / (n * length)
    for ch in range(t * per, min(c, (t + 1) * per)):
        m = mean[ch]
        s, q = channel_dot(dy, x, ch, m) if training or grads else (0.0, 0.0)
        dw[ch] = q * rstd[ch]
        db[ch] = s
        a, b, k = _coefficients(rstd[ch], w[ch], s, q, inv_count)
        if training:
            for i in range(n):
                xr = x[i, ch]
                gr = dy[i, ch]
                orow = out[i, ch]
                for j in range(length):
                    orow[j] = a * gr[j] + b * (xr[j] - m) + k
        else:
            for i in range(n):
                gr = dy[i, ch]
                orow = out[i, ch]
                for j in range(length):
                    orow[j] = a * gr[j]


@inline_jit
def _two_passes(dy, x, mean, rstd, w, training, grads, out, dw, db):
    """The backward of data outside the channel-block layout: the backward sums' task
    loop, the coefficients, then the element-wise task loop."""
    n, c, length = x.shape
    if training or grads:
        s, q = backward_sums(dy, x, mean, LONG_LAYOUT)
    else:
        s, q = np.zeros(c), np.zeros(c)
    inv_count = 1.0 / (n * length)
    a = np.empty(c)
    b = np.empty(c)
    k = np.empty(c)
    for ch in range(c):
        a[ch], b[ch], k[ch] = _coefficients(rstd[ch], w[ch], s[ch], q[ch], inv_count)
        dw[ch] = q[ch] * rstd[ch]
        db[ch] = s[ch]
    if training:
        backward_elemt(dy, x, (a, b, k, mean), out, LONG_LAYOUT)
    else:
        zeros = np.zeros(c)
        affine(dy, zeros, a, zeros, out, LONG_LAYOUT)


@channel_kernel(blocks=True)
def batch_norm_backward(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    weight: np.ndarray,
    training: bool,
    grads: bool,
    out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm input gradient of C-contiguous ``(N, C, L)`` data into ``out`` (which
    may be ``dy``); returns float64 ``(dweight, dbias)``, computed when ``training`` or
    ``grads`` (zeros otherwise). ``weight`` is empty for ``None``."""
    n, c, length = x.shape
    w = float64_or(c, weight, 1.0)
    dw = np.zeros(c)
    db = np.zeros(c)
    if CHANNEL_BLOCKS:
        per, n_tasks = channel_blocks(x)
        for tt in prange(n_tasks):
            t = np.int64(tt)  # the prange index is unsigned
            _block_task(dy, x, mean, rstd, w, training, grads, out, t, per, dw, db)
    else:
        _two_passes(dy, x, mean, rstd, w, training, grads, out, dw, db)
    return dw, db
