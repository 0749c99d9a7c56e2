"""Per-channel element-wise kernels of ``(N, C, L)`` data: BatchNorm affine and backward.

Arithmetic is float64 and rounds once to the data dtype. The flat array is
split into tasks of :data:`~.jit.TASK_SIZE` elements; a task walks its range in
runs that share one channel coefficient:

* long rows (``L >= LONG_ROW``): runs along ``L`` with the channel's scalars;
* short rows: the coefficients are expanded to one period of at least
  ``RUN_WIDTH`` values (``K = C * L`` values repeated ``P`` times), and runs are
  periods, indexed with the column inside the period.

Short-row affine tasks run last to first (:func:`_affine_task`): the affine pass
follows a statistics pass over the same data, and starting from the rows that
pass read last finds them still in cache.

Every element is read before it is written at the same index, so ``out`` may be
the input itself.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import TASK_SIZE, inline_jit, task_jit
from .layouts import LONG_LAYOUT, channel_kernel
from .registers import stack_array
from .stats import COLUMN_BLOCK

__all__ = ["affine", "backward_elemt", "channel_affine", "channel_backward_elemt"]

#: Narrowest run of the short-row layout: each run costs a division and a few
#: slices, so runs of a 64-value row would spend as long on that as on the values;
#: wider periods also read more coefficient memory, which stops paying off past a
#: few KiB (measured on the (N, 64) affine: 256, 512 and 1024 values all beat 64).
RUN_WIDTH = 512
#: Short rows of at most this many values (a multiple of :data:`~.stats.COLUMN_BLOCK`)
#: take the affine a block of columns at a time, down the rows (:func:`_affine_task`).
REGISTER_ROWS = 256


@inline_jit
def _period_size(width):
    """Values in one period of the short-row layout for rows of ``width = C * L`` values:
    the whole row repeated until at least ``RUN_WIDTH`` values."""
    return width * (1 if width >= RUN_WIDTH else (RUN_WIDTH + width - 1) // max(width, 1))


@inline_jit
def _expand_one(v: np.ndarray, c: int, length: int) -> np.ndarray:
    """``v[ch]`` repeated for the ``L`` columns of each channel, over one period."""
    out = np.empty(_period_size(c * length))
    j = 0
    while j < out.size:  # loops: a slice assignment compiles much more code
        for ch in range(c):
            value = v[ch]  # read once: the stores below might alias v
            run = out[j : j + length]
            for i in range(length):
                run[i] = value
            j += length
    return out


@task_jit
def expand(a, b, m, c, length):
    """Three per-channel vectors expanded as :func:`_expand_one` does, in one loop.

    Compiled once for every kernel that expands its coefficients."""
    n = _period_size(c * length)
    ea, eb, em = np.empty(n), np.empty(n), np.empty(n)
    j = 0
    while j < n:
        for ch in range(c):
            va, vb, vm = a[ch], b[ch], m[ch]  # read once: the stores might alias them
            ra, rb, rm = ea[j : j + length], eb[j : j + length], em[j : j + length]
            for i in range(length):
                ra[i] = va
                rb[i] = vb
                rm[i] = vm
            j += length
    return ea, eb, em


@inline_jit
def _channel_run(e, e1, length, c):
    """End of the run from flat element ``e`` (long rows: the rest of its row, up to
    ``e1``) and the run's channel."""
    r = e // length
    return min(e1, (r + 1) * length), r % c


@inline_jit
def _period_run(e, e1, period):
    """End of the run from flat element ``e`` (short rows: the rest of its period, up
    to ``e1``) and ``e``'s column in the period."""
    q = e // period
    return min(e1, (q + 1) * period), e - q * period


@inline_jit
def _tasks(size):
    """Number of tasks of the element-wise kernels for ``size`` elements."""
    return (size + TASK_SIZE - 1) // TASK_SIZE


@inline_jit
def _affine_runs(x, out, e, e1, sx, tx, mx):
    """Flat elements ``e .. e1 - 1`` of short rows, coefficients ``(sx, tx, mx)`` expanded
    to one period (:func:`expand`), read run by run."""
    while e < e1:
        stop, j0 = _period_run(e, e1, sx.size)
        xv = x[e:stop]
        ov = out[e:stop]
        mv = mx[j0:]
        av = sx[j0:]
        bv = tx[j0:]
        for j in range(xv.size):
            ov[j] = (xv[j] - mv[j]) * av[j] + bv[j]
        e = stop


@inline_jit
def _affine_block(x, out, e, rows, width, j0, sx, tx, mx):
    """Columns ``j0 : j0 + COLUMN_BLOCK`` of ``rows`` whole rows of ``width`` values from
    flat element ``e``, the block's coefficients held in registers (stack arrays,
    :mod:`.registers`): loaded once, not once per row."""
    m = stack_array(COLUMN_BLOCK)
    a = stack_array(COLUMN_BLOCK)
    b = stack_array(COLUMN_BLOCK)
    for j in range(COLUMN_BLOCK):
        m[j] = mx[j0 + j]
        a[j] = sx[j0 + j]
        b[j] = tx[j0 + j]
    for r in range(rows):
        at = e + r * width + j0
        xv = x[at : at + COLUMN_BLOCK]
        ov = out[at : at + COLUMN_BLOCK]
        for j in range(COLUMN_BLOCK):
            ov[j] = (xv[j] - m[j]) * a[j] + b[j]


@task_jit
def _affine_task(x, mean, scale, shift, out, i, n_tasks, c, length, expanded):
    """Loop iteration ``i`` of :func:`channel_affine` on flat data.

    ``expanded`` is None for long rows, else ``(scale, shift, mean)`` expanded to
    one period (:func:`expand`). Short rows run their tasks last to first, so that
    the pass starts where the statistics pass before it ended (its data most likely
    still in cache); each task writes the same elements with the same arithmetic.
    Short rows of a whole number of :data:`~.stats.COLUMN_BLOCK` values, up to
    :data:`REGISTER_ROWS`, are written a block of columns at a time down the task's
    whole rows (:func:`_affine_block`).
    """
    if expanded is None:
        e = i * TASK_SIZE
        e1 = min(x.size, e + TASK_SIZE)
        while e < e1:
            stop, ch = _channel_run(e, e1, length, c)
            m = mean[ch]
            a = scale[ch]
            b = shift[ch]
            xv = x[e:stop]
            ov = out[e:stop]
            for j in range(xv.size):
                ov[j] = (xv[j] - m) * a + b
            e = stop
    else:
        sx, tx, mx = expanded
        e = (n_tasks - 1 - i) * TASK_SIZE
        e1 = min(x.size, e + TASK_SIZE)
        width = c * length
        if width % COLUMN_BLOCK != 0 or width > REGISTER_ROWS:
            _affine_runs(x, out, e, e1, sx, tx, mx)
            return
        first = min(e1, (e + width - 1) // width * width)  # the first whole row's start
        rows = (e1 - first) // width
        _affine_runs(x, out, e, first, sx, tx, mx)
        for j0 in range(0, width, COLUMN_BLOCK):
            _affine_block(x, out, first, rows, width, j0, sx, tx, mx)
        _affine_runs(x, out, first + rows * width, e1, sx, tx, mx)


@inline_jit
def affine(x, mean, scale, shift, out, long):
    """``out = (x - mean[c]) * scale[c] + shift[c]`` per channel of ``(N, C, L)`` data in
    the long-row layout when ``long`` (a constant of the calling kernel), else the
    short-row one. Inlined into the kernels that call it: its task loop is theirs."""
    n, c, length = x.shape
    expanded = None if long else expand(scale, shift, mean, c, length)
    n_tasks = _tasks(x.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    for tt in prange(n_tasks):  # the prange index is unsigned
        _affine_task(xf, mean, scale, shift, of, np.int64(tt), n_tasks, c, length, expanded)


@channel_kernel
def channel_affine(
    x: np.ndarray, mean: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: np.ndarray
) -> None:
    """Write ``(x - mean[c]) * scale[c] + shift[c]`` per channel of ``(N, C, L)`` data."""
    affine(x, mean, scale, shift, out, LONG_LAYOUT)


@task_jit
def _elemt_task(dy, x, out, t, c, length, coefficients, expanded):
    """Task ``t`` of :func:`channel_backward_elemt` on flat data; ``coefficients`` is
    ``(a, b, c, mean)`` per channel, ``expanded`` as in :func:`affine_task`."""
    av, bv, kv, mv = coefficients if expanded is None else expanded
    e = t * TASK_SIZE
    e1 = min(x.size, e + TASK_SIZE)
    while e < e1:
        if expanded is None:
            stop, ch = _channel_run(e, e1, length, c)
            a, b, k, m = av[ch], bv[ch], kv[ch], mv[ch]
            gv, xv, ov = dy[e:stop], x[e:stop], out[e:stop]
            for j in range(xv.size):
                ov[j] = a * gv[j] + b * (xv[j] - m) + k
        else:
            stop, j0 = _period_run(e, e1, av.size)
            gv, xv, ov = dy[e:stop], x[e:stop], out[e:stop]
            ap, bp, kp, mp = av[j0:], bv[j0:], kv[j0:], mv[j0:]
            for j in range(xv.size):
                ov[j] = ap[j] * gv[j] + bp[j] * (xv[j] - mp[j]) + kp[j]
        e = stop


@inline_jit
def backward_elemt(dy, x, coefficients, out, long):
    """``out = a[ch] * dy + b[ch] * (x - mean[ch]) + c[ch]`` per channel, ``coefficients``
    being ``(a, b, c, mean)``, in the long-row layout when ``long`` (a constant of the
    calling kernel), else the short-row one. Inlined: its task loop is the caller's."""
    n, nc, length = x.shape
    a, b, c, mean = coefficients
    if long:
        expanded = None
    else:
        expanded = expand(a, b, c, nc, length) + (_expand_one(mean, nc, length),)
    gf = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    for tt in prange(_tasks(x.size)):  # the prange index is unsigned
        _elemt_task(gf, xf, of, np.int64(tt), nc, length, coefficients, expanded)


@channel_kernel
def channel_backward_elemt(
    dy: np.ndarray,
    x: np.ndarray,
    coefficients: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    out: np.ndarray,
) -> None:
    """Write ``a[ch] * dy + b[ch] * (x - mean[ch]) + c[ch]`` per channel into ``out``,
    where ``coefficients`` is ``(a, b, c, mean)`` (float64 vectors)."""
    backward_elemt(dy, x, coefficients, out, LONG_LAYOUT)
