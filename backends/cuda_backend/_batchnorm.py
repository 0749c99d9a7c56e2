"""BatchNorm kernels on C-contiguous ``(N, C, L)`` data.

Statistics and the backward sums are two-stage reductions: a block reduces a
slice of the ``N * L`` positions of some channels into one row of a ``[blocks, C]``
partial buffer (Welford per thread, Chan merges through shared memory), and a
merge kernel combines the rows in order. The block shape follows the layout so
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

from typing import Any

import numpy as np

from ._arrays import alloc_like, empty, kernel_in, kernel_out
from ._reduce import (
    merge_moments_kernel,
    sum_rows2_kernel,
    tree_merge,
    tree_sum2,
    welford_step,
)
from ._runtime import REDUCE_BLOCKS, THREADS, TILE_X, blocks_for, cuda, next_pow2, stream

__all__ = [
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


@cuda.jit
def _moments_partials(x, pn, pmean, pm2):
    """Per block, Welford ``(n, mean, M2)`` of its positions of each channel -> row of partials."""
    sn = cuda.shared.array(THREADS, np.float64)
    smean = cuda.shared.array(THREADS, np.float64)
    sm2 = cuda.shared.array(THREADS, np.float64)
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
        n = 0.0
        mean = 0.0
        m2 = 0.0
        if c < channels:
            row, col = _position(g * lanes + lane, length)
            while row < rows:
                n, mean, m2 = welford_step(n, mean, m2, float(x[row, c, col]))
                row, col = _advance(row, col, step_rows, step_cols, length)
        sn[slot] = n
        smean[slot] = mean
        sm2[slot] = m2
        cuda.syncthreads()
        tree_merge(sn, smean, sm2, ty, slot, bx, cuda.blockDim.y)
        if length > 1:
            tree_merge(sn, smean, sm2, tx if ty == 0 else bx, slot, 1, bx)
        if ty == 0 and c < channels and (length == 1 or tx == 0):
            pn[g, c] = sn[slot]
            pmean[g, c] = smean[slot]
            pm2[g, c] = sm2[slot]
        cuda.syncthreads()
        base += cuda.gridDim.x * width


@cuda.jit
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


@cuda.jit
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


@cuda.jit
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
    mean = empty((channels,), np.float64)
    var = empty((channels,), np.float64)
    if channels == 0:
        return mean, var
    grid, block = _partial_geometry(n, channels, length)
    partials = [alloc_like(x, (grid[1], channels), np.float64) for _ in range(3)]
    s = stream()
    _moments_partials[grid, block, s](kernel_in(x), *map(kernel_out, partials))
    merge_moments_kernel[blocks_for(channels), THREADS, s](
        *map(kernel_in, partials), kernel_out(mean), kernel_out(var)
    )
    return mean, var


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
    sum_dy = empty((channels,), np.float64)
    sum_dy_xmu = empty((channels,), np.float64)
    if channels == 0:
        return sum_dy, sum_dy_xmu
    grid, block = _partial_geometry(n, channels, length)
    pa = alloc_like(x, (grid[1], channels), np.float64)
    pb = alloc_like(x, (grid[1], channels), np.float64)
    s = stream()
    _backward_partials[grid, block, s](
        kernel_in(dy), kernel_in(x), kernel_in(mean), kernel_out(pa), kernel_out(pb)
    )
    sum_rows2_kernel[blocks_for(channels), THREADS, s](
        kernel_in(pa), kernel_in(pb), kernel_out(sum_dy), kernel_out(sum_dy_xmu)
    )
    return sum_dy, sum_dy_xmu


def channel_affine(x: Any, mean: Any, scale: Any, shift: Any, out: Any) -> Any:
    """Write ``(x - mean[c]) * scale[c] + shift[c]`` of ``(N, C, L)`` data into ``out``.

    Parameters
    ----------
    x : device array of shape (N, C, L), C-contiguous
    mean, scale, shift : float64 device arrays of shape (C,)
    out : device array like ``x`` (may be ``x``)

    Returns
    -------
    out
    """
    if x.size:
        _affine_kernel[blocks_for(x.size), THREADS, stream()](
            kernel_in(x.reshape(-1)),
            kernel_in(mean),
            kernel_in(scale),
            kernel_in(shift),
            x.shape[2],
            kernel_out(out.reshape(-1)),
        )
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
        _backward_elemt_kernel[blocks_for(x.size), THREADS, stream()](
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
