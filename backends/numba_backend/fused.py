"""Whole-layer BatchNorm forward in one compiled call.

For small batches the cost of a BatchNorm forward is the Python around the
kernels (about ten small NumPy operations to update the running statistics and
fold the parameters into per-channel ``scale`` and ``shift``). This kernel does
all of it in one call: batch or running statistics, the in-place running update,
the fold, and the affine pass. Parameters and buffers may have any float dtype
(the layer's), or be ``None``.
"""

from __future__ import annotations

import numpy as np

from .elementwise import channel_affine_parallel, channel_affine_serial
from .jit import serial_jit
from .stats import channel_moments_parallel, channel_moments_serial

__all__ = ["batch_norm_forward_parallel", "batch_norm_forward_serial"]


@serial_jit
def _running(running_mean, running_var, c):
    """The running statistics as float64 (zeros and ones when there are none)."""
    if running_mean is None:
        return np.zeros(c), np.ones(c)
    return running_mean.astype(np.float64), running_var.astype(np.float64)


@serial_jit
def _fold(mean, var, running_mean, running_var, weight, bias, update, momentum, eps, count):
    """Update the running statistics in place; return ``rstd, scale, shift`` (float64)."""
    c = mean.size
    if update and running_mean is not None:
        unbias = count / (count - 1)
        for ch in range(c):
            running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * mean[ch]
            running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * (var[ch] * unbias)
    rstd = np.empty(c)
    scale = np.empty(c)
    shift = np.empty(c)
    for ch in range(c):
        rstd[ch] = (var[ch] + eps) ** -0.5
        scale[ch] = rstd[ch] if weight is None else rstd[ch] * np.float64(weight[ch])
        shift[ch] = 0.0 if bias is None else np.float64(bias[ch])
    return rstd, scale, shift


@serial_jit
def batch_norm_forward_serial(
    x: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    use_batch: bool,
    update: bool,
    momentum: float,
    eps: float,
    out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm of ``(N, C, L)`` data into ``out`` with the serial kernels.

    Uses the batch statistics when ``use_batch`` (else the running ones), updates
    the running statistics in place when ``update``; returns float64 ``(mean, rstd)``.
    """
    n, c, length = x.shape
    if use_batch:
        mean, var = channel_moments_serial(x)
    else:
        mean, var = _running(running_mean, running_var, c)
    rstd, scale, shift = _fold(
        mean, var, running_mean, running_var, weight, bias, update, momentum, eps, n * length
    )
    channel_affine_serial(x, mean, scale, shift, out)
    return mean, rstd


@serial_jit
def batch_norm_forward_parallel(
    x: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    use_batch: bool,
    update: bool,
    momentum: float,
    eps: float,
    out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`batch_norm_forward_serial` with the parallel kernels."""
    n, c, length = x.shape
    if use_batch:
        mean, var = channel_moments_parallel(x)
    else:
        mean, var = _running(running_mean, running_var, c)
    rstd, scale, shift = _fold(
        mean, var, running_mean, running_var, weight, bias, update, momentum, eps, n * length
    )
    channel_affine_parallel(x, mean, scale, shift, out)
    return mean, rstd
