"""Whole-layer BatchNorm forward in one compiled call.

For small batches the cost of a BatchNorm forward is the Python around the
kernels (about ten small NumPy operations to update the running statistics and
fold the parameters into per-channel ``scale`` and ``shift``). This kernel does
all of it in one call: batch or running statistics, the in-place running update,
the fold, and the affine pass. It runs the task loops of
:func:`~.stats.channel_moments` and :func:`~.elementwise.channel_affine` itself
(the same inlined helpers :func:`~.stats.moments` and :func:`~.elementwise.affine`,
so the results are the same bits): a kernel never calls another kernel (see
:mod:`.jit`). It is compiled once per row layout (:mod:`.layouts`).

The four vectors have one float dtype (float32 or float64); an empty vector
stands for ``None`` (no running statistics, no weight, no bias), so that a layer
with or without them compiles the same specialisation.
"""

from __future__ import annotations

import numpy as np

from .elementwise import affine
from .jit import inline_jit, rsqrt_jit, task_jit
from .layouts import LONG_LAYOUT, channel_kernel
from .stats import moments
from .vectors import float64_or

__all__ = ["batch_norm_forward"]


@inline_jit
def _running(running_mean, running_var, c):
    """The running statistics as float64 (zeros and ones when there are none)."""
    return float64_or(c, running_mean, 0.0), float64_or(c, running_var, 1.0)


@rsqrt_jit
def _rstd(var, eps):
    """``1 / sqrt(var + eps)`` per channel (float64)."""
    rstd = np.empty(var.size)
    for ch in range(var.size):
        rstd[ch] = 1.0 / np.sqrt(var[ch] + eps)
    return rstd


@task_jit  # inlined, the whole small forward took twice as long
def _fold(mean, var, running_mean, running_var, weight, bias, update, momentum, eps, count):
    """Update the running statistics in place; return ``rstd, scale, shift`` (float64)."""
    c = mean.size
    if update and running_mean.size > 0:
        unbias = count / (count - 1)
        for ch in range(c):
            running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * mean[ch]
            running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * (var[ch] * unbias)
    rstd = _rstd(var, eps)
    scale = np.empty(c)
    shift = np.zeros(c)
    for ch in range(c):  # a loop: an array assignment would compile its error messages
        scale[ch] = rstd[ch] if weight.size == 0 else rstd[ch] * np.float64(weight[ch])
    if bias.size > 0:
        for ch in range(c):
            shift[ch] = bias[ch]
    return rstd, scale, shift


@channel_kernel
def batch_norm_forward(
    x: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    use_batch: bool,
    update: bool,
    momentum: float,
    eps: float,
    out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm of C-contiguous ``(N, C, L)`` data into ``out``.

    Uses the batch statistics when ``use_batch`` (else the running ones), updates
    the running statistics in place when ``update``; returns float64 ``(mean, rstd)``.
    """
    n, c, length = x.shape
    if use_batch:
        mean, var = moments(x, LONG_LAYOUT)
    else:
        mean, var = _running(running_mean, running_var, c)
    rstd, scale, shift = _fold(
        mean, var, running_mean, running_var, weight, bias, update, momentum, eps, n * length
    )
    affine(x, mean, scale, shift, out, LONG_LAYOUT)
    return mean, rstd
