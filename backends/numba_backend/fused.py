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
from .jit import cold, task_jit
from .layouts import LONG_LAYOUT, channel_kernel
from .stats import moments

__all__ = ["batch_norm_forward"]


@task_jit  # inlined, the whole small forward took twice as long
def _fold(mean, var, running_mean, running_var, weight, bias, c, update, momentum, eps, count):
    """The statistics used, the running statistics updated in place, the parameters
    folded in: ``mean, rstd, scale, shift`` per channel (float64).

    ``mean``/``var`` are the batch statistics, or empty: then the running statistics
    are used (zeros and ones when there are none). One loop over the channels.
    """
    cold()
    use_batch = mean.size > 0
    running = running_mean.size > 0
    unbias = count / (count - 1)  # inf for one value: then never used
    mean_used = np.empty(c)
    rstd = np.empty(c)
    scale = np.empty(c)
    shift = np.empty(c)
    for ch in range(c):
        if use_batch:
            m = mean[ch]
            v = var[ch]
        else:
            m = np.float64(running_mean[ch]) if running else 0.0
            v = np.float64(running_var[ch]) if running else 1.0
        if update and running:
            running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * m
            running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * (v * unbias)
        r = 1.0 / np.sqrt(v + eps)
        mean_used[ch] = m
        rstd[ch] = r
        scale[ch] = r if weight.size == 0 else r * np.float64(weight[ch])
        shift[ch] = bias[ch] if bias.size > 0 else 0.0
    return mean_used, rstd, scale, shift


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
        mean = var = np.empty(0)  # the running statistics
    mean, rstd, scale, shift = _fold(
        mean, var, running_mean, running_var, weight, bias, c, update, momentum, eps, n * length
    )
    affine(x, mean, scale, shift, out, LONG_LAYOUT)
    return mean, rstd
