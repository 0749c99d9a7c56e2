"""BatchNorm forward kernels on C-contiguous ``(N, C, L)`` data.

Statistics are a two-stage reduction (see :mod:`._channels`): a partials kernel
adds each block's positions of a channel, shifted by the channel's first value
(see :mod:`._reduce`), into one row of ``[blocks, C]`` buffers, and a merge
kernel adds the rows in order, a 2-D block per tile of channels. For the
whole-layer forward (:func:`batch_norm_forward`) the merge kernel also updates
the running statistics and folds weight and bias into per-channel ``scale`` and
``shift``, so a training forward is three launches and no vector arithmetic on
the host. The affine transform is a grid-stride kernel over the flat data, in
float64, rounded once on store.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._arrays import NO_PARTIALS, empty, kernel_in, placeholder
from ._channels import channel_next, channel_partials, channel_walk, flat_pass
from ._reduce import column_geometry, column_pair, column_sums2, shifted_moments
from ._runtime import cuda, kernel, launch, on_device

__all__ = [
    "FOLD_COUNT",
    "FOLD_HAS_BIAS",
    "FOLD_HAS_RUNNING",
    "FOLD_HAS_WEIGHT",
    "FOLD_UPDATE",
    "FOLD_USE_BATCH",
    "affine",
    "batch_norm_forward",
    "channel_affine",
    "channel_moments",
    "channel_pair",
]

#: Bits of the fold kernel's ``flags`` (one integer argument instead of five booleans).
FOLD_USE_BATCH = 1
FOLD_HAS_RUNNING = 2
FOLD_UPDATE = 4
FOLD_HAS_WEIGHT = 8
FOLD_HAS_BIAS = 16
FOLD_COUNT = 32


# ----------------------------------------------------------------------------- kernels
@cuda.jit(device=True)
def _channel_stats(x, s1, s2, c):
    """Mean and biased variance of channel ``c`` from its shifted sums (NaN if it is empty)."""
    count = x.shape[0] * x.shape[2]
    if count == 0:
        return math.nan, math.nan
    return shifted_moments(np.float64(x[0, c, 0]), s1, s2, float(count))


@kernel
def _moments_merge_kernel(x, p, stats):
    """Per channel: mean and biased variance (rows of ``stats``) from the partial sums."""
    c, s1, s2 = column_pair(p)
    if cuda.threadIdx.y == 0 and c < stats.shape[1]:
        stats[0, c], stats[1, c] = _channel_stats(x, s1, s2, c)


@kernel
def _fold_kernel(
    x, p, running_mean, running_var, weight, bias, flags, momentum, eps, stats, counter
):
    """Per channel: statistics, running update, and the fold of weight and bias.

    Batch statistics from the partial sums when ``flags & FOLD_USE_BATCH`` (the
    partials' rows added by a 2-D block per tile of channels), else the running
    ones (or 0 and 1 without them); with ``FOLD_UPDATE`` the running statistics
    move by ``momentum`` towards the batch's (unbiased variance). Rows of
    ``stats``: mean, rstd, scale, shift.
    """
    c, s1, s2 = column_pair(p)  # unused (placeholder partials) without FOLD_USE_BATCH
    if cuda.threadIdx.y == 0 and c < stats.shape[1]:
        if flags & FOLD_USE_BATCH:
            mean, var = _channel_stats(x, s1, s2, c)
            if flags & FOLD_UPDATE:
                count = float(x.shape[0] * x.shape[2])
                running_mean[c] = (1.0 - momentum) * np.float64(running_mean[c]) + momentum * mean
                running_var[c] = (1.0 - momentum) * np.float64(running_var[c]) + momentum * (
                    var * (count / (count - 1.0))
                )
        elif flags & FOLD_HAS_RUNNING:
            mean = np.float64(running_mean[c])
            var = np.float64(running_var[c])
        else:
            mean = 0.0
            var = 1.0
        # A negative running_var gives NaN, as math.sqrt does on a GPU (and PyTorch); the
        # CUDA simulator's math.sqrt would raise ValueError instead.
        rstd = 1.0 / math.sqrt(var + eps) if var + eps >= 0.0 else math.nan
        stats[0, c] = mean
        stats[1, c] = rstd
        stats[2, c] = rstd * np.float64(weight[c]) if flags & FOLD_HAS_WEIGHT else rstd
        stats[3, c] = np.float64(bias[c]) if flags & FOLD_HAS_BIAS else 0.0
        if c == 0 and flags & FOLD_COUNT:
            counter[0] += 1


@kernel
def _affine_kernel(x, mean, scale, shift, length, out):
    """``out = (x - mean[c]) * scale[c] + shift[c]`` over flat ``(N * C * L)`` data."""
    channels = scale.shape[0]
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    c, r, c_step, r_step = channel_walk(i, step, length, channels)
    while i < x.shape[0]:
        out[i] = (np.float64(x[i]) - mean[c]) * scale[c] + shift[c]
        i += step
        c, r = channel_next(c, r, c_step, r_step, length, channels)


# ----------------------------------------------------------------------------- launches
def channel_pair(dy: Any, x: Any, mean: Any | None) -> tuple[Any, Any]:
    """Two per-channel float64 reductions of ``(N, C, L)`` data, on the device.

    The partials kernel of :mod:`._channels`, then a merge of its rows: without
    ``mean``, the mean and biased variance of ``x`` (``dy`` is not read); with it,
    ``sum(dy)`` and ``sum((x - mean) * dy)``.

    Parameters
    ----------
    dy, x : device arrays of shape (N, C, L), C-contiguous
    mean : float64 device array of shape (C,), or None

    Returns
    -------
    pair of device arrays of shape (C,)
    """
    channels = x.shape[1]
    with on_device(x) as s:
        pair = empty((2, channels), np.float64)
        if channels and mean is None:
            p = channel_partials(x, x, placeholder(np.float64), False, s)
            blocks, block = column_geometry(channels)
            launch(_moments_merge_kernel, blocks, block, s, kernel_in(x), kernel_in(p), pair)
        elif channels:  # the backward sums: plain column sums of the partials
            column_sums2(channel_partials(dy, x, mean, True, s), pair[0], pair[1], s)
    return pair[0], pair[1]


def channel_moments(x: Any) -> tuple[Any, Any]:
    """Per-channel float64 mean and biased variance of ``(N, C, L)`` data, on the device.

    Parameters
    ----------
    x : device array of shape (N, C, L), C-contiguous

    Returns
    -------
    mean, var : device arrays of shape (C,)
    """
    return channel_pair(x, x, None)


_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _pair(a: Any, b: Any) -> Any:
    """The one dtype the fused kernel reads ``a`` and ``b`` in, or None when it cannot.

    Both absent: float64 (placeholders); otherwise both present vectors must share
    a dtype of float32 or float64.
    """
    if a is None and b is None:
        return _FUSED_DTYPES[1]
    dtype = (b if a is None else a).dtype
    if (b is None or b.dtype == dtype) and dtype in _FUSED_DTYPES:
        return dtype
    return None


def batch_norm_forward(
    x: Any,
    running_mean: Any | None,
    running_var: Any | None,
    weight: Any | None,
    bias: Any | None,
    use_batch: bool,
    update: bool,
    momentum: float,
    eps: float,
    out: Any,
    counter: Any | None = None,
) -> tuple[Any, Any, Any]:
    """Whole BatchNorm forward of ``(N, C, L)`` data: statistics, running update, output.

    Three launches when training (partial sums, the per-channel kernel that merges
    them, updates the running statistics and folds weight and bias, the affine
    pass), two in evaluation. Vectors are read in their own dtype (float32 or
    float64; the running statistics share one, weight and bias share one); other
    combinations (float16 vectors, mixed pairs) run on float64 copies (running
    statistics copied back).

    Parameters
    ----------
    x : device array of shape (N, C, L), C-contiguous
    running_mean, running_var : device arrays of shape (C,), or None
        Updated in place when ``update``.
    weight, bias : device arrays of shape (C,), or None
    use_batch : bool
        Normalise with the batch statistics (else the running ones).
    update : bool
        Update the running statistics (only with ``use_batch``).
    momentum, eps : float
    out : device array like ``x`` (may be ``x``)
    counter : int64 device array of one element (0-d or (1,)), optional
        A layer's ``num_batches_tracked``: the merge kernel adds 1 to it when the
        running statistics are updated (no separate CuPy add per step).

    Returns
    -------
    out : device array
    mean, rstd : float64 device arrays of shape (C,)
    """
    running_dtype = _pair(running_mean, running_var)
    param_dtype = _pair(weight, bias)
    if running_dtype is None or param_dtype is None:
        # float16 or mixed vectors: the same kernels on float64 copies
        vectors = (running_mean, running_var, weight, bias)
        rm, rv, w, b = (None if v is None else v.astype(np.float64) for v in vectors)
        result = batch_norm_forward(x, rm, rv, w, b, use_batch, update, momentum, eps, out, counter)
        if update and running_mean is not None and running_var is not None:
            running_mean[...] = rm
            running_var[...] = rv
        return result
    channels = x.shape[1]
    with on_device(x) as s:
        stats = empty((4, channels), np.float64)
        if channels == 0:
            return out, stats[0], stats[1]
        if use_batch:
            p = channel_partials(x, x, placeholder(np.float64), False, s)
        else:
            p = placeholder(np.float64, NO_PARTIALS)
        flags = (
            (FOLD_USE_BATCH if use_batch else 0)
            | (FOLD_HAS_RUNNING if running_mean is not None else 0)
            | (FOLD_UPDATE if update and running_mean is not None else 0)
            | (FOLD_HAS_WEIGHT if weight is not None else 0)
            | (FOLD_HAS_BIAS if bias is not None else 0)
            | (FOLD_COUNT if update and counter is not None else 0)
        )
        no_running = placeholder(running_dtype) if running_mean is None else None
        no_param = placeholder(param_dtype) if weight is None or bias is None else None
        blocks, block = column_geometry(channels)
        launch(
            _fold_kernel,
            blocks,
            block,
            s,
            kernel_in(x),
            kernel_in(p),
            no_running if running_mean is None else running_mean,
            no_running if running_var is None else running_var,
            kernel_in(no_param if weight is None else weight),
            kernel_in(no_param if bias is None else bias),
            flags,
            float(momentum),
            float(eps),
            stats,
            placeholder(np.int64) if counter is None else counter.reshape(1),
        )
        affine(x, stats[0], stats[2], stats[3], out, s)
    return out, stats[0], stats[1]


def affine(x: Any, mean: Any, scale: Any, shift: Any, out: Any, s: Any) -> None:
    """Launch :func:`_affine_kernel` over the flat data on stream ``s`` (inside ``on_device``).

    Parameters
    ----------
    x : device array of shape (N, C, L), C-contiguous
    mean, scale, shift : float64 device arrays of shape (C,)
    out : device array like ``x`` (may be ``x``)
    s : stream
    """
    flat_pass(
        _affine_kernel,
        x,
        s,
        kernel_in(x.reshape(-1)),
        kernel_in(mean),
        kernel_in(scale),
        kernel_in(shift),
        x.shape[2],
        out.reshape(-1),
    )


def channel_affine(x: Any, mean: Any, scale: Any, shift: Any, out: Any) -> Any:
    """Write ``(x - mean[c]) * scale[c] + shift[c]`` of ``(N, C, L)`` data into ``out``.

    Parameters
    ----------
    x : device array of shape (N, C, L), C-contiguous
    mean, scale, shift : float64 device arrays of shape (C,)
    out : device array of the shape of ``x``, float32 or float64 (may be ``x``)

    Returns
    -------
    out
    """
    with on_device(x) as s:
        affine(x, mean, scale, shift, out, s)
    return out
