"""BatchNorm kernels on C-contiguous ``(N, C, L)`` data.

Statistics and the backward sums are two-stage reductions: a block reduces a
slice of the ``N * L`` positions of some channels into one row of a ``[blocks, C]``
partial buffer (sums shifted by the channel's first value, see :mod:`._reduce`,
added through shared memory), and a second kernel adds the rows in order. For the
whole-layer forward (:func:`batch_norm_forward`) that second kernel also updates
the running statistics and folds weight and bias into per-channel ``scale`` and
``shift``, so a training forward is three launches and no vector arithmetic on
the host. The block shape follows the layout so
that neighbouring threads read neighbouring addresses:

* ``L == 1`` (``(N, C)`` data): a 2-D block, ``x`` along up to ``TILE_X`` channels
  and ``y`` along rows; the tree merges along ``y``;
* ``L > 1``: a 1-D block per channel along the flattened ``(n, l)`` positions;
  the tree merges the whole block.

The affine transform and the backward element-wise step are grid-stride kernels
over the flat data (channel ``(i // L) % C``, tracked by additions rather than a
division per element), in float64, rounded once on store.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._arrays import alloc_like, kernel_in, kernel_out, vectors_like
from ._reduce import column_sums2, shifted_moments, tree_sum2
from ._runtime import (
    REDUCE_BLOCKS,
    THREADS,
    TILE_X,
    blocks_for,
    cuda,
    kernel,
    launch,
    next_pow2,
    on_device,
    stream,
)

__all__ = [
    "batch_norm_forward",
    "channel_affine",
    "channel_backward_elemt",
    "channel_backward_reduce",
    "channel_moments",
]


# ----------------------------------------------------------------------------- kernels
@cuda.jit(device=True)
def _position(p, length):
    """``(row, col)`` of flat position ``p`` over ``(N, L)`` (the only division of a loop)."""
    row = p // length
    return row, p - row * length


@cuda.jit(device=True)
def _advance(row, col, step_rows, step_cols, length):
    """``(row, col)`` moved on by a stride that is ``step_rows`` rows and ``step_cols`` columns."""
    row += step_rows
    col += step_cols
    if col >= length:
        col -= length
        row += 1
    return row, col


@cuda.jit(device=True)
def _channel_walk(i, step, length, channels):
    """For a grid-stride loop from ``i`` by ``step``: ``(c, r, c_step, r_step)``.

    ``c`` is the channel ``(i // length) % channels`` of the first element and ``r``
    its offset ``i % length``; :func:`_channel_next` then moves both along with
    additions only, so the loop body does no integer division.
    """
    q = i // length
    q_step = step // length
    return q % channels, i - q * length, q_step % channels, step - q_step * length


@cuda.jit(device=True)
def _channel_next(c, r, c_step, r_step, length, channels):
    """The channel and in-channel offset ``step`` elements further (see :func:`_channel_walk`)."""
    r += r_step
    c += c_step
    if r >= length:
        r -= length
        c += 1
    if c >= channels:
        c -= channels
    return c, r


@cuda.jit(device=True)
def _layout(length):
    """``(lanes, lane, width)``: threads along positions, this thread's lane, channels per block."""
    bx = cuda.blockDim.x
    if length == 1:
        return cuda.blockDim.y, cuda.threadIdx.y, bx
    return bx * cuda.blockDim.y, cuda.threadIdx.y * bx + cuda.threadIdx.x, 1


@kernel
def _moments_partials(x, p1, p2):
    """Per block, ``sum(v - k)`` and ``sum((v - k)**2)`` of its positions of each channel.

    ``k = x[0, c, 0]``, the same shift for every block of channel ``c``; the sums
    land in row ``blockIdx.y`` of the partial buffers.
    """
    sa = cuda.shared.array(THREADS, np.float64)
    sb = cuda.shared.array(THREADS, np.float64)
    channels = x.shape[1]
    length = x.shape[2]
    rows = x.shape[0]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bx = cuda.blockDim.x
    slot = ty * bx + tx
    lanes, lane, width = _layout(length)
    g = cuda.blockIdx.y
    step_rows, step_cols = _position(cuda.gridDim.y * lanes, length)
    base = cuda.blockIdx.x * width
    while base < channels:
        c = base + tx if length == 1 else base
        a = 0.0
        b = 0.0
        if c < channels:
            k = float(x[0, c, 0])
            row, col = _position(g * lanes + lane, length)
            while row < rows:
                v = float(x[row, c, col]) - k
                a += v
                b += v * v
                row, col = _advance(row, col, step_rows, step_cols, length)
        sa[slot] = a
        sb[slot] = b
        cuda.syncthreads()
        tree_sum2(sa, sb, ty, slot, bx, cuda.blockDim.y)
        if length > 1:
            tree_sum2(sa, sb, tx if ty == 0 else bx, slot, 1, bx)
        if ty == 0 and c < channels and (length == 1 or tx == 0):
            p1[g, c] = sa[slot]
            p2[g, c] = sb[slot]
        cuda.syncthreads()
        base += cuda.gridDim.x * width


@cuda.jit(device=True)
def _channel_stats(x, p1, p2, c):
    """Mean and biased variance of channel ``c`` from the rows of partial sums (NaN if empty)."""
    count = x.shape[0] * x.shape[2]
    if count == 0:
        return math.nan, math.nan
    a = 0.0
    b = 0.0
    for g in range(p1.shape[0]):
        a += p1[g, c]
        b += p2[g, c]
    return shifted_moments(float(x[0, c, 0]), a, b, float(count))


@kernel
def _moments_merge_kernel(x, p1, p2, mean, var):
    """Per channel (a thread each): mean and biased variance from the partial sums."""
    c = cuda.grid(1)
    while c < mean.shape[0]:
        mean[c], var[c] = _channel_stats(x, p1, p2, c)
        c += cuda.gridsize(1)


@kernel
def _fold_kernel(
    x,
    p1,
    p2,
    use_batch,
    running_mean,
    running_var,
    has_running,
    update,
    weight,
    bias,
    has_weight,
    has_bias,
    momentum,
    eps,
    stats,
):
    """Per channel: statistics, running update, and the fold of weight and bias.

    Batch statistics from the partial sums when ``use_batch``, else the running
    ones; with ``update`` the running statistics move by ``momentum`` towards the
    batch's (unbiased variance). Rows of ``stats``: mean, rstd, scale, shift.
    """
    c = cuda.grid(1)
    count = float(x.shape[0] * x.shape[2])
    while c < stats.shape[1]:
        if use_batch:
            mean, var = _channel_stats(x, p1, p2, c)
            if update:
                running_mean[c] = (1.0 - momentum) * float(running_mean[c]) + momentum * mean
                running_var[c] = (1.0 - momentum) * float(running_var[c]) + momentum * (
                    var * (count / (count - 1.0))
                )
        elif has_running:
            mean = float(running_mean[c])
            var = float(running_var[c])
        else:
            mean = 0.0
            var = 1.0
        rstd = 1.0 / math.sqrt(var + eps)
        stats[0, c] = mean
        stats[1, c] = rstd
        stats[2, c] = rstd * float(weight[c]) if has_weight else rstd
        stats[3, c] = float(bias[c]) if has_bias else 0.0
        c += cuda.gridsize(1)


@kernel
def _backward_partials(dy, x, mean, pa, pb):
    """Per block, ``sum(dy)`` and ``sum((x - mean) * dy)`` of each channel -> rows of partials."""
    sa = cuda.shared.array(THREADS, np.float64)
    sb = cuda.shared.array(THREADS, np.float64)
    channels = x.shape[1]
    length = x.shape[2]
    rows = x.shape[0]
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bx = cuda.blockDim.x
    slot = ty * bx + tx
    lanes, lane, width = _layout(length)
    g = cuda.blockIdx.y
    step_rows, step_cols = _position(cuda.gridDim.y * lanes, length)
    base = cuda.blockIdx.x * width
    while base < channels:
        c = base + tx if length == 1 else base
        a = 0.0
        b = 0.0
        if c < channels:
            mu = mean[c]
            row, col = _position(g * lanes + lane, length)
            while row < rows:
                d = float(dy[row, c, col])
                a += d
                b += (float(x[row, c, col]) - mu) * d
                row, col = _advance(row, col, step_rows, step_cols, length)
        sa[slot] = a
        sb[slot] = b
        cuda.syncthreads()
        tree_sum2(sa, sb, ty, slot, bx, cuda.blockDim.y)
        if length > 1:
            tree_sum2(sa, sb, tx if ty == 0 else bx, slot, 1, bx)
        if ty == 0 and c < channels and (length == 1 or tx == 0):
            pa[g, c] = sa[slot]
            pb[g, c] = sb[slot]
        cuda.syncthreads()
        base += cuda.gridDim.x * width


@kernel
def _affine_kernel(x, mean, scale, shift, length, out):
    """``out = (x - mean[c]) * scale[c] + shift[c]`` over flat ``(N * C * L)`` data."""
    channels = scale.shape[0]
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    c, r, c_step, r_step = _channel_walk(i, step, length, channels)
    while i < x.shape[0]:
        out[i] = (float(x[i]) - mean[c]) * scale[c] + shift[c]
        i += step
        c, r = _channel_next(c, r, c_step, r_step, length, channels)


@kernel
def _backward_elemt_kernel(dy, x, mean, a, b, shift, length, out):
    """``out = a[c] * dy + b[c] * (x - mean[c]) + shift[c]`` over flat data."""
    channels = a.shape[0]
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    c, r, c_step, r_step = _channel_walk(i, step, length, channels)
    while i < x.shape[0]:
        out[i] = a[c] * float(dy[i]) + b[c] * (float(x[i]) - mean[c]) + shift[c]
        i += step
        c, r = _channel_next(c, r, c_step, r_step, length, channels)


# ----------------------------------------------------------------------------- launches
def _partial_geometry(
    n: int, channels: int, length: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(grid, block)`` of a partials kernel: enough blocks to fill the device, no more."""
    if length == 1:
        tile = min(TILE_X, next_pow2(channels))
        block = (tile, THREADS // tile)
        lanes = block[1]
    else:
        block = (THREADS, 1)
        lanes = THREADS
    grid_x = blocks_for(channels, block[0] if length == 1 else 1)
    grid_y = max(1, min(-(-REDUCE_BLOCKS // grid_x), -(-(n * length) // lanes), 65535))
    return (grid_x, grid_y), block


def _placeholder(x: Any, dtype: Any) -> Any:
    """A one-element array standing in for an absent vector argument."""
    return alloc_like(x, (1,), dtype)


def channel_moments(x: Any) -> tuple[Any, Any]:
    """Per-channel float64 mean and biased variance of ``(N, C, L)`` data, on the device.

    Parameters
    ----------
    x : device array of shape (N, C, L), C-contiguous

    Returns
    -------
    mean, var : device arrays of shape (C,)
    """
    n, channels, length = x.shape
    stats = vectors_like(x, (2, channels), np.float64)
    mean, var = stats[0], stats[1]
    if channels == 0:
        return mean, var
    grid, block = _partial_geometry(n, channels, length)
    with on_device(x):
        s = stream()
        p1 = alloc_like(x, (grid[1], channels), np.float64)
        p2 = alloc_like(x, (grid[1], channels), np.float64)
        if x.size:
            launch(_moments_partials, grid, block, s, kernel_in(x), kernel_out(p1), kernel_out(p2))
        launch(
            _moments_merge_kernel,
            blocks_for(channels),
            THREADS,
            s,
            kernel_in(x),
            kernel_in(p1),
            kernel_in(p2),
            kernel_out(mean),
            kernel_out(var),
        )
    return mean, var


_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _pair(a: Any, b: Any) -> Any:
    """The one dtype the fused kernel reads ``a`` and ``b`` in, or None when it cannot.

    Both absent: float64 (placeholders); otherwise both present vectors must share
    a dtype of float32 or float64.
    """
    dtypes = {np.dtype(v.dtype) for v in (a, b) if v is not None}
    if not dtypes:
        return np.dtype(np.float64)
    if len(dtypes) == 1 and next(iter(dtypes)) in _FUSED_DTYPES:
        return next(iter(dtypes))
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
) -> tuple[Any, Any, Any]:
    """Whole BatchNorm forward of ``(N, C, L)`` data: statistics, running update, output.

    Three launches when training (partial sums, the per-channel kernel that merges
    them, updates the running statistics and folds weight and bias, the affine
    pass), two in evaluation. Vectors are read in their own dtype (float32 or
    float64; the running statistics share one, weight and bias share one); other
    combinations (float16 vectors, mixed pairs) take the unfused kernels.

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

    Returns
    -------
    out : device array
    mean, rstd : float64 device arrays of shape (C,)
    """
    running_dtype = _pair(running_mean, running_var)
    param_dtype = _pair(weight, bias)
    if running_dtype is None or param_dtype is None:
        return _batch_norm_forward_unfused(
            x, running_mean, running_var, weight, bias, use_batch, update, momentum, eps, out
        )
    n, channels, length = x.shape
    stats = vectors_like(x, (4, channels), np.float64)
    if channels == 0:
        return out, stats[0], stats[1]
    grid, block = _partial_geometry(n, channels, length)
    with on_device(x):
        s = stream()
        rows = grid[1] if use_batch else 1
        p1 = alloc_like(x, (rows, channels), np.float64)
        p2 = alloc_like(x, (rows, channels), np.float64)
        if use_batch:
            launch(_moments_partials, grid, block, s, kernel_in(x), kernel_out(p1), kernel_out(p2))
        launch(
            _fold_kernel,
            blocks_for(channels),
            THREADS,
            s,
            kernel_in(x),
            kernel_in(p1),
            kernel_in(p2),
            bool(use_batch),
            kernel_out(_placeholder(x, running_dtype) if running_mean is None else running_mean),
            kernel_out(_placeholder(x, running_dtype) if running_var is None else running_var),
            running_mean is not None,
            bool(update and running_mean is not None),
            kernel_in(_placeholder(x, param_dtype) if weight is None else weight),
            kernel_in(_placeholder(x, param_dtype) if bias is None else bias),
            weight is not None,
            bias is not None,
            float(momentum),
            float(eps),
            kernel_out(stats),
        )
        _affine(x, stats[0], stats[2], stats[3], out, s)
    return out, stats[0], stats[1]


def _batch_norm_forward_unfused(
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
) -> tuple[Any, Any, Any]:
    """:func:`batch_norm_forward` for vector dtypes the fused kernel does not read."""
    if use_batch:
        mean, var = channel_moments(x)
        if update and running_mean is not None:
            count = x.shape[0] * x.shape[2]
            running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
            running_var[...] = (1.0 - momentum) * running_var + momentum * (
                var * (count / (count - 1))
            )
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    rstd = (var + eps) ** -0.5
    scale = rstd if weight is None else rstd * weight.astype(np.float64)
    shift = mean * 0.0 if bias is None else bias.astype(np.float64)
    return channel_affine(x, mean, scale, shift, out), mean, rstd


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
    n, channels, length = x.shape
    sums = vectors_like(x, (2, channels), np.float64)
    sum_dy, sum_dy_xmu = sums[0], sums[1]
    if channels == 0:
        return sum_dy, sum_dy_xmu
    grid, block = _partial_geometry(n, channels, length)
    with on_device(x):
        s = stream()
        pa = alloc_like(x, (grid[1], channels), np.float64)
        pb = alloc_like(x, (grid[1], channels), np.float64)
        launch(
            _backward_partials,
            grid,
            block,
            s,
            kernel_in(dy),
            kernel_in(x),
            kernel_in(mean),
            kernel_out(pa),
            kernel_out(pb),
        )
        column_sums2(pa, pb, sum_dy, sum_dy_xmu, s)
    return sum_dy, sum_dy_xmu


def _affine(x: Any, mean: Any, scale: Any, shift: Any, out: Any, s: Any) -> None:
    """Launch :func:`_affine_kernel` over the flat data on stream ``s``."""
    if x.size:
        launch(
            _affine_kernel,
            blocks_for(x.size),
            THREADS,
            s,
            kernel_in(x.reshape(-1)),
            kernel_in(mean),
            kernel_in(scale),
            kernel_in(shift),
            x.shape[2],
            kernel_out(out.reshape(-1)),
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
    with on_device(x):
        _affine(x, mean, scale, shift, out, stream())
    return out


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
    if x.size:
        with on_device(x):
            launch(
                _backward_elemt_kernel,
                blocks_for(x.size),
                THREADS,
                stream(),
                kernel_in(dy.reshape(-1)),
                kernel_in(x.reshape(-1)),
                kernel_in(mean),
                kernel_in(a),
                kernel_in(b),
                kernel_in(c),
                x.shape[2],
                kernel_out(out.reshape(-1)),
            )
    return out
