"""What every BatchNorm kernel shares: walking ``(N, C, L)`` data and its ``[blocks, C]`` partials.

Reductions are two-stage. A *partials* kernel reduces a slice of the ``N * L``
positions of some channels into one row of ``[blocks, C]`` partial buffers; its
block shape follows the layout so that neighbouring threads read neighbouring
addresses:

* ``L == 1`` (``(N, C)`` data): a 2-D block, ``x`` along up to ``TILE_X`` channels
  and ``y`` along rows; the tree merges along ``y``;
* ``L > 1``: a 1-D block per channel along the flattened ``(n, l)`` positions;
  the tree merges the whole block.

One partials kernel, :func:`_partials_kernel`, serves the statistics and the
backward sums. A *merge* kernel then adds the partial rows of each channel with a
2-D block of its own (``x`` along channels, ``y`` along rows, see
:func:`._reduce.column_pair`), and element-wise kernels walk the flat data with
:func:`channel_walk` and :func:`channel_next` (no division per element).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import kernel_in, partials
from ._reduce import tree_sum2
from ._runtime import REDUCE_BLOCKS, THREADS, TILE_X, blocks_for, cuda, kernel, launch, next_pow2

__all__ = [
    "channel_next",
    "channel_partials",
    "channel_walk",
    "flat_pass",
    "partial_geometry",
]


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
def channel_walk(i, step, length, channels):
    """For a grid-stride loop from ``i`` by ``step``: ``(c, r, c_step, r_step)``.

    ``c`` is the channel ``(i // length) % channels`` of the first element and ``r``
    its offset ``i % length``; :func:`channel_next` then moves both along with
    additions only, so the loop body does no integer division.
    """
    q = i // length
    q_step = step // length
    return q % channels, i - q * length, q_step % channels, step - q_step * length


@cuda.jit(device=True)
def channel_next(c, r, c_step, r_step, length, channels):
    """The channel and in-channel offset ``step`` elements further (see :func:`channel_walk`)."""
    r += r_step
    c += c_step
    if r >= length:
        r -= length
        c += 1
    if c >= channels:
        c -= channels
    return c, r


@cuda.jit(device=True)
def _tile_start(length):
    """Where a partials block starts: ``(lanes, lane, width, step_rows, step_cols, base)``.

    ``lanes`` threads walk the positions of a channel (this one is ``lane``),
    ``width`` channels share a block (``blockDim.x`` for ``(N, C)`` data, else 1),
    ``(step_rows, step_cols)`` is the grid's stride over positions and ``base`` the
    block's first channel.
    """
    bx = cuda.blockDim.x
    if length == 1:
        lanes, lane, width = cuda.blockDim.y, cuda.threadIdx.y, bx
    else:
        lanes, lane, width = bx * cuda.blockDim.y, cuda.threadIdx.y * bx + cuda.threadIdx.x, 1
    step_rows, step_cols = _position(cuda.gridDim.y * lanes, length)
    return lanes, lane, width, step_rows, step_cols, cuda.blockIdx.x * width


@cuda.jit(device=True)
def _tile_first(lanes, lane, length):
    """``(row, col)`` of this thread's first position in its channel."""
    return _position(cuda.blockIdx.y * lanes + lane, length)


@cuda.jit(device=True)
def _tile_store(sa, sb, a, b, c, channels, length, p):
    """Add the block's per-thread sums ``a``, ``b`` of channel ``c`` into row ``blockIdx.y``.

    Every thread of the block calls it (it synchronises); ``sa``, ``sb`` are the
    block's ``THREADS``-long shared scratch arrays.
    """
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bx = cuda.blockDim.x
    slot = ty * bx + tx
    sa[slot] = a
    sb[slot] = b
    cuda.syncthreads()
    tree_sum2(sa, sb, ty, slot, bx, cuda.blockDim.y)
    if length > 1:
        tree_sum2(sa, sb, tx if ty == 0 else bx, slot, 1, bx)
    if ty == 0 and c < channels and (length == 1 or tx == 0):
        p[0, cuda.blockIdx.y, c] = sa[slot]
        p[1, cuda.blockIdx.y, c] = sb[slot]
    cuda.syncthreads()


@kernel
def _partials_kernel(dy, x, mean, backward, p):
    """Per block and channel, ``sum(d)`` and ``sum(u * d)`` with ``u = x - k`` -> rows of partials.

    Statistics (``backward`` False): ``k = x[0, c, 0]``, the same shift for every
    block of channel ``c``, and ``d = u``: the shifted sums of :mod:`._reduce`
    (``dy`` and ``mean`` are not read). Backward: ``k = mean[c]`` and ``d = dy``,
    so the sums are ``sum(dy)`` and ``sum((x - mean) * dy)``. They land in
    ``p[0, blockIdx.y, c]`` and ``p[1, blockIdx.y, c]``.
    """
    sa = cuda.shared.array(THREADS, np.float64)
    sb = cuda.shared.array(THREADS, np.float64)
    channels = x.shape[1]
    length = x.shape[2]
    lanes, lane, width, step_rows, step_cols, base = _tile_start(length)
    while base < channels:
        c = base + cuda.threadIdx.x if length == 1 else base
        a = 0.0
        b = 0.0
        if c < channels:
            k = mean[c] if backward else np.float64(x[0, c, 0])
            row, col = _tile_first(lanes, lane, length)
            while row < x.shape[0]:
                u = np.float64(x[row, c, col]) - k
                d = np.float64(dy[row, c, col]) if backward else u
                a += d
                b += u * d
                row, col = _advance(row, col, step_rows, step_cols, length)
        _tile_store(sa, sb, a, b, c, channels, length, p)
        base += cuda.gridDim.x * width


def partial_geometry(n: int, channels: int, length: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(grid, block)`` of a partials kernel: enough blocks to fill the device, no more.

    Parameters
    ----------
    n, channels, length : int
        The data's shape ``(N, C, L)``.

    Returns
    -------
    grid, block : tuple of int
        ``grid[1]`` is the number of partial rows.
    """
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


def channel_partials(dy: Any, x: Any, mean: Any, backward: bool, s: Any) -> Any:
    """Launch :func:`_partials_kernel` on stream ``s``; return its ``[2, blocks, C]`` sums.

    Parameters
    ----------
    dy, x : device arrays of shape (N, C, L), C-contiguous, ``C >= 1``
        ``dy`` is only read when ``backward`` (pass ``x`` otherwise).
    mean : float64 device array of shape (C,)
        Only read when ``backward``.
    backward : bool
        The backward sums rather than the statistics' shifted sums.
    s : stream

    Returns
    -------
    float64 device array of shape (2, blocks, C)
        No rows (nothing launched) when there are no positions: the sums are 0.
    """
    n, channels, length = x.shape
    if n * length == 0:
        return partials(x, 0, channels)
    grid, block = partial_geometry(n, channels, length)
    p = partials(x, grid[1], channels)
    args = (kernel_in(dy), kernel_in(x), kernel_in(mean), backward, p)
    launch(_partials_kernel, grid, block, s, *args)
    return p


def flat_pass(fn: Any, x: Any, s: Any, *args: Any) -> None:
    """Launch element-wise kernel ``fn(*args)`` over the flat data of ``x`` on stream ``s``.

    A grid-stride launch of ``THREADS``-thread blocks over the ``x.size`` elements
    (the kernel walks the channels with :func:`channel_walk`); nothing when ``x``
    is empty.

    Parameters
    ----------
    fn : numba.cuda dispatcher
    x : device array of shape (N, C, L)
    s : stream
    *args
        The kernel's arguments.
    """
    if x.size:
        launch(fn, blocks_for(x.size), THREADS, s, *args)
