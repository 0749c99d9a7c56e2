"""BatchNorm backward kernels on C-contiguous ``(N, C, L)`` data.

The input gradient is ``a[c] * dy + b[c] * (x - mean[c]) + shift[c]`` with
per-channel coefficients from two sums, ``sum(dy)`` and ``sum((x - mean) * dy)``.
:func:`batch_norm_backward` is the whole backward in three launches and no vector
arithmetic on the host: the partials kernel of :mod:`._channels` adds each
block's positions into rows of ``[blocks, C]`` buffers, a merge kernel adds the rows
(a 2-D block per tile of channels) and computes the coefficients and the
parameter gradients, and a grid-stride element-wise kernel writes the gradient.
:func:`channel_backward_reduce` and :func:`channel_backward_elemt` are the two
halves of the backend protocol, for callers that do the vector arithmetic
themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import empty, kernel_in, placeholder
from ._batchnorm import channel_pair
from ._channels import channel_next, channel_partials, channel_walk, flat_pass
from ._reduce import column_geometry, column_pair
from ._runtime import cuda, kernel, launch, on_device

__all__ = [
    "MERGE_ACCUMULATE",
    "MERGE_HAS_WEIGHT",
    "MERGE_TRAINING",
    "batch_norm_backward",
    "channel_backward_elemt",
    "channel_backward_reduce",
]

#: Bits of the merge kernel's ``flags``.
MERGE_TRAINING = 1
MERGE_HAS_WEIGHT = 2
MERGE_ACCUMULATE = 4


# ----------------------------------------------------------------------------- kernels
@kernel
def _backward_merge_kernel(p, rstd, weight, flags, count, coef, dweight, dbias):
    """Per channel: the two sums from the partials, then coefficients and parameter gradients.

    With ``w = weight[c]`` (1 without ``MERGE_HAS_WEIGHT``), ``sdy = sum(dy)`` and
    ``sdx = sum((x - mean) * dy)``, rows of ``coef``: ``a = rstd * w``, and when
    ``MERGE_TRAINING`` (the batch statistics depend on ``x``)
    ``b = -a * rstd**2 * sdx / count`` and ``shift = -a * sdy / count``. With a
    weight, ``dweight`` and ``dbias`` (weight's dtype) get ``sdx * rstd`` and
    ``sdy``, added to what they hold with ``MERGE_ACCUMULATE``.
    """
    c, sdy, sdx = column_pair(p)
    if cuda.threadIdx.y == 0 and c < rstd.shape[0]:
        r = rstd[c]
        a = r
        if flags & MERGE_HAS_WEIGHT:
            a = r * np.float64(weight[c])
            if flags & MERGE_ACCUMULATE:
                dweight[c] += sdx * r
                dbias[c] += sdy
            else:
                dweight[c] = sdx * r
                dbias[c] = sdy
        coef[0, c] = a
        if flags & MERGE_TRAINING and count > 0.0:  # no positions: nothing reads them
            coef[1, c] = -a * r * r * sdx / count
            coef[2, c] = -a * sdy / count


@kernel
def _backward_elemt_kernel(dy, x, mean, a, b, shift, full, length, out):
    """``out = a[c] * dy + b[c] * (x - mean[c]) + shift[c]`` over flat data.

    Without ``full``, ``out = a[c] * dy`` (``x``, ``mean``, ``b`` and ``shift`` are
    not read).
    """
    channels = a.shape[0]
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    c, r, c_step, r_step = channel_walk(i, step, length, channels)
    if full:
        while i < dy.shape[0]:
            out[i] = a[c] * np.float64(dy[i]) + b[c] * (np.float64(x[i]) - mean[c]) + shift[c]
            i += step
            c, r = channel_next(c, r, c_step, r_step, length, channels)
    else:
        while i < dy.shape[0]:
            out[i] = a[c] * np.float64(dy[i])
            i += step
            c, r = channel_next(c, r, c_step, r_step, length, channels)


# ----------------------------------------------------------------------------- launches
def _elemt(
    dy: Any, x: Any, mean: Any, a: Any, b: Any, shift: Any, full: bool, out: Any, s: Any
) -> None:
    """Launch :func:`_backward_elemt_kernel` over the flat data (inside ``on_device``)."""
    flat_pass(
        _backward_elemt_kernel,
        x,
        s,
        kernel_in(dy.reshape(-1)),
        kernel_in(x.reshape(-1)),
        kernel_in(mean),
        kernel_in(a),
        kernel_in(b),
        kernel_in(shift),
        full,
        x.shape[2],
        out.reshape(-1),
    )


def batch_norm_backward(
    dy: Any,
    x: Any,
    mean: Any,
    rstd: Any,
    weight: Any | None,
    training: bool,
    out: Any,
    accumulate: tuple[Any, Any] | None = None,
) -> tuple[Any, Any | None, Any | None]:
    """Whole BatchNorm backward of ``(N, C, L)`` data: input gradient and parameter gradients.

    With ``w = weight`` (1 without one), ``count = N * L``, ``sdy = sum(dy)`` and
    ``sdx = sum((x - mean) * dy)`` per channel, the input gradient is
    ``rstd * w * (dy - sdy / count - (x - mean) * rstd**2 * sdx / count)`` when
    ``training`` (the forward used batch statistics) and ``rstd * w * dy`` when
    not; ``dweight = sdx * rstd`` and ``dbias = sdy``. Three launches (partial
    sums, the merge that computes the per-channel coefficients and gradients,
    the element-wise pass); one when neither ``training`` nor ``weight`` needs
    the sums.

    Parameters
    ----------
    dy, x : device arrays of shape (N, C, L), C-contiguous (float32 or float64 each)
    mean, rstd : float64 device arrays of shape (C,)
        The statistics the forward used.
    weight : float32 or float64 device array of shape (C,), or None
    training : bool
    out : device array like ``x`` (may be ``dy``)
    accumulate : pair of device arrays of shape (C,) in ``weight``'s dtype, optional
        A layer's gradient buffers ``(dweight, dbias)``, C-contiguous: the merge
        kernel adds the parameter gradients to them (in place, no separate add)
        and they are returned. Ignored without ``weight``.

    Returns
    -------
    out : device array
    dweight, dbias : device arrays of shape (C,) in ``weight``'s dtype, or None
        None without ``weight``; zeros when ``N * L == 0``.
    """
    n, channels, length = x.shape
    with on_device(x) as s:
        if not training and weight is None:  # out = rstd * dy: no sums needed
            _elemt(dy, x, mean, rstd, rstd, rstd, False, out, s)
            return out, None, None
        coef = empty((3, channels), np.float64)
        flags = MERGE_TRAINING if training else 0
        if weight is None:
            grads = None
            dweight = dbias = placeholder(np.float64)
        elif accumulate is None:
            flags |= MERGE_HAS_WEIGHT
            grads = empty((2, channels), weight.dtype)
            dweight, dbias = grads[0], grads[1]
        else:
            flags |= MERGE_HAS_WEIGHT | MERGE_ACCUMULATE
            grads = dweight, dbias = accumulate
        if channels:
            p = channel_partials(dy, x, mean, True, s)
            blocks, block = column_geometry(channels)
            launch(
                _backward_merge_kernel,
                blocks,
                block,
                s,
                kernel_in(p),
                kernel_in(rstd),
                kernel_in(placeholder(np.float64) if weight is None else weight),
                flags,
                float(n * length),
                coef,
                dweight,
                dbias,
            )
            _elemt(dy, x, mean, coef[0], coef[1], coef[2], bool(training), out, s)
    if grads is None:
        return out, None, None
    return out, dweight, dbias


def channel_backward_reduce(dy: Any, x: Any, mean: Any) -> tuple[Any, Any]:
    """Per channel, float64 ``sum(dy)`` and ``sum((x - mean) * dy)``, on the device.

    Parameters
    ----------
    dy, x : device arrays of shape (N, C, L), C-contiguous
    mean : float64 device array of shape (C,)

    Returns
    -------
    sum_dy, sum_dy_xmu : device arrays of shape (C,)
    """
    return channel_pair(dy, x, mean)


def channel_backward_elemt(dy: Any, x: Any, mean: Any, a: Any, b: Any, c: Any, out: Any) -> Any:
    """Write ``a[c] * dy + b[c] * (x - mean[c]) + c[c]`` of ``(N, C, L)`` data into ``out``.

    Parameters
    ----------
    dy, x : device arrays of shape (N, C, L), C-contiguous
    mean, a, b, c : float64 device arrays of shape (C,)
    out : device array like ``x`` (may be ``dy``)

    Returns
    -------
    out
    """
    with on_device(x) as s:
        _elemt(dy, x, mean, a, b, c, True, out, s)
    return out
