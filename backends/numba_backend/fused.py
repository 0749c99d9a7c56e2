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

With batch statistics of float64 data in the channel-block layout
(:func:`~.layouts.forward_takes_blocks`), a task owns whole channels instead: it
sums each channel's values, folds the channel and writes its output while the
values are still in its core's cache, so ``x`` comes from memory once, not twice.
A channel's sums are taken in one pass, shifted by the mean ``K`` of its first row
of ``L`` values: ``s = sum(x - K)``, ``q = sum((x - K)^2)``, then the mean
``K + s / count`` and ``M2 = q - s^2 / count`` (never ``E[x^2] - E[x]^2``). As
``(K - mean)^2`` is at most ``M2 / L``, the term cancelled, ``count * (K - mean)^2``,
is at most ``N`` times ``M2``: cancellation costs at most about ``log2(N) + 2`` bits
of the float64 M2, as in the short-row moments (:mod:`.stats`).

The four vectors have one float dtype (float32 or float64); an empty vector
stands for ``None`` (no running statistics, no weight, no bias), so that a layer
with or without them compiles the same specialisation.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .channel_tasks import channel_blocks
from .elementwise import affine
from .jit import cold, inline_jit, task_jit
from .layouts import CHANNEL_BLOCKS, LONG_LAYOUT, channel_kernel, forward_takes_blocks
from .stats import moments

__all__ = ["batch_norm_forward"]


@inline_jit
def _fold_channel(m, v, running_mean, running_var, weight, bias, ch, update, momentum, eps, unbias):
    """Channel ``ch``'s running statistics updated in place from the mean ``m`` and
    biased variance ``v`` it uses (when ``update`` and there are running statistics),
    and its ``rstd, scale, shift`` (float64). ``unbias`` is ``count / (count - 1)``.

    The arithmetic of :func:`_fold`'s loop, for the channel-block tasks; :func:`_fold`
    keeps its own copy: calling this helper made the whole small forward slower."""
    if update and running_mean.size > 0:
        running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * m
        running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * (v * unbias)
    r = 1.0 / np.sqrt(v + eps)
    scale = r if weight.size == 0 else r * np.float64(weight[ch])
    shift = np.float64(bias[ch]) if bias.size > 0 else 0.0
    return r, scale, shift


@task_jit  # inlined, the whole small forward took twice as long
def _fold(
    mean, var, running_mean, running_var, weight, bias, c, update, momentum, eps, count, stats
):
    """The statistics used, the running statistics updated in place, the parameters
    folded in: ``mean`` and ``rstd`` written into the rows of ``stats``, ``scale, shift``
    per channel returned (float64).

    ``mean``/``var`` are the batch statistics, or empty: then the running statistics
    are used (zeros and ones when there are none). One loop over the channels.
    """
    cold()
    use_batch = mean.size > 0
    running = running_mean.size > 0
    unbias = count / (count - 1)  # inf for one value: then never used
    mean_used = stats[0]
    rstd = stats[1]
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
    return scale, shift


@inline_jit
def _shifted_moments(x, ch):
    """Mean and M2 (float64) of channel ``ch`` of ``(N, C, L)`` data in one pass of sums
    shifted by the mean of its first row (see the module notes), or by 0 when that mean is
    not finite (so an infinite value gives an infinite mean, as the reference's)."""
    n, _, length = x.shape
    first = x[0, ch]
    k = 0.0
    for j in range(length):
        k += first[j]
    k /= length
    if not np.isfinite(k):  # an inf or NaN in the first row: the sums give the reference's
        k = 0.0
    s = 0.0
    q = 0.0
    for i in range(n):
        xr = x[i, ch]
        for j in range(length):
            d = xr[j] - k
            s += d
            q += d * d
    ds = s / (n * length)
    m2 = q - s * ds
    if m2 < 0.0:  # not max(): a NaN stays NaN
        m2 = 0.0
    return k + ds, m2


@task_jit
def _block_task(
    x, running_mean, running_var, weight, bias, update, momentum, eps, out, mean, rstd, t, per
):
    """Task ``t`` of the channel-block layout: channels ``t * per`` on, each one's batch
    statistics, running statistics and fold, then its output while its values are in
    cache; their ``mean`` and ``rstd`` written at their channels."""
    n, c, length = x.shape
    count = n * length
    unbias = count / (count - 1)
    for ch in range(t * per, min(c, (t + 1) * per)):
        m, m2 = _shifted_moments(x, ch)
        r, a, b = _fold_channel(
            m, m2 / count, running_mean, running_var, weight, bias, ch, update, momentum, eps,
            unbias,
        )  # fmt: skip
        mean[ch] = m
        rstd[ch] = r
        for i in range(n):
            xr = x[i, ch]
            orow = out[i, ch]
            for j in range(length):
                orow[j] = (xr[j] - m) * a + b


@inline_jit
def _in_blocks(x, running_mean, running_var, weight, bias, update, momentum, eps, out, stats):
    """The training forward in the channel-block layout: one task loop; ``mean`` and
    ``rstd`` written into the rows of ``stats``."""
    mean = stats[0]
    rstd = stats[1]
    per, n_tasks = channel_blocks(x)
    for tt in prange(n_tasks):
        t = np.int64(tt)  # the prange index is unsigned
        _block_task(
            x, running_mean, running_var, weight, bias, update, momentum, eps, out, mean, rstd,
            t, per,
        )  # fmt: skip


@channel_kernel(blocks=forward_takes_blocks)
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
    stats: np.ndarray,
) -> None:
    """BatchNorm of C-contiguous ``(N, C, L)`` data into ``out``.

    Uses the batch statistics when ``use_batch`` (else the running ones), updates
    the running statistics in place when ``update``; writes the float64 ``mean`` and
    ``rstd`` used into the rows of ``stats``, a C-contiguous ``(2, C)`` array (filled,
    not returned: a returned array costs Python a new array object, made holding the GIL).
    """
    n, c, length = x.shape
    if CHANNEL_BLOCKS:
        if use_batch:
            _in_blocks(
                x, running_mean, running_var, weight, bias, update, momentum, eps, out, stats
            )
            return
        mean = var = np.empty(0)  # the running statistics
    elif use_batch:
        mean, var = moments(x, LONG_LAYOUT)
    else:
        mean = var = np.empty(0)
    scale, shift = _fold(
        mean, var, running_mean, running_var, weight, bias, c, update, momentum, eps, n * length,
        stats,
    )  # fmt: skip
    affine(x, stats[0], scale, shift, out, LONG_LAYOUT)
