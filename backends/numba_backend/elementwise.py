"""Per-channel element-wise kernels of ``(N, C, L)`` data: BatchNorm affine and backward.

Arithmetic is float64 and rounds once to the data dtype. The flat array is
split into tasks of :data:`~.jit.TASK_SIZE` elements; a task walks its range in
runs that share one channel coefficient:

* long rows (``L >= LONG_ROW``): runs along ``L`` with the channel's scalars;
* short rows: the coefficients are expanded to one period of at least
  ``RUN_WIDTH`` values (``K = C * L`` values repeated ``P`` times), and runs are
  periods, indexed with the column inside the period.

Short-row affine tasks run last to first (:func:`affine_order`): the affine pass
follows a statistics pass over the same data, and starting from the rows that
pass read last finds them still in cache.

Every element is read before it is written at the same index, so ``out`` may be
the input itself.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import TASK_SIZE, kernel, serial_jit
from .stats import LONG_ROW

__all__ = ["channel_affine", "channel_backward_elemt"]

#: Narrowest run of the short-row layout: each run costs a division and a few
#: slices, so runs of a 64-value row would spend as long on that as on the values;
#: wider periods also read more coefficient memory, which stops paying off past a
#: few KiB (measured on the (N, 64) affine: 256, 512 and 1024 values all beat 64).
RUN_WIDTH = 512


@serial_jit
def _expand(v: np.ndarray, c: int, length: int) -> np.ndarray:
    """Repeat ``v[ch]`` for the ``L`` columns of each channel, then the whole row
    until at least ``RUN_WIDTH`` values."""
    width = c * length
    period = 1 if width >= RUN_WIDTH else (RUN_WIDTH + width - 1) // max(width, 1)
    out = np.empty(width * period)
    for p in range(period):
        for ch in range(c):
            out[p * width + ch * length : p * width + (ch + 1) * length] = v[ch]
    return out


@serial_jit
def affine_task(x, mean, scale, shift, out, t, c, length, mx, sx, tx):
    """Task ``t`` of :func:`channel_affine`; ``mx``/``sx``/``tx`` are the
    expanded coefficients of the short-row layout (unused for long rows)."""
    size = x.size
    e = t * TASK_SIZE
    e1 = min(size, e + TASK_SIZE)
    if length >= LONG_ROW:
        while e < e1:
            r = e // length
            stop = min(e1, (r + 1) * length)
            ch = r % c
            m = mean[ch]
            a = scale[ch]
            b = shift[ch]
            xv = x[e:stop]
            ov = out[e:stop]
            for j in range(xv.size):
                ov[j] = (xv[j] - m) * a + b
            e = stop
    else:
        period = sx.size
        while e < e1:
            q = e // period
            j0 = e - q * period
            stop = min(e1, (q + 1) * period)
            xv = x[e:stop]
            ov = out[e:stop]
            mv = mx[j0:]
            av = sx[j0:]
            bv = tx[j0:]
            for j in range(xv.size):
                ov[j] = (xv[j] - mv[j]) * av[j] + bv[j]
            e = stop


@serial_jit
def affine_coefficients(mean, scale, shift, length):
    """``mean``, ``scale`` and ``shift`` as :func:`affine_task` reads them: expanded
    to one period for short rows (see :func:`_expand`), as they are for long rows."""
    if length >= LONG_ROW:
        return mean, scale, shift
    c = mean.size
    return _expand(mean, c, length), _expand(scale, c, length), _expand(shift, c, length)


@serial_jit
def affine_tasks(size):
    """Number of tasks of :func:`channel_affine` for ``size`` elements."""
    return (size + TASK_SIZE - 1) // TASK_SIZE


@serial_jit
def affine_order(i, n_tasks, length):
    """The task that loop iteration ``i`` of an affine pass runs.

    Short rows run their tasks last to first, so that the pass starts where the
    statistics pass before it ended (its data most likely still in cache) and
    leaves for last what that pass read first. Only the order changes: each task
    writes the same elements with the same arithmetic.
    """
    return i if length >= LONG_ROW else n_tasks - 1 - i


@kernel
def channel_affine(
    x: np.ndarray, mean: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: np.ndarray
) -> None:
    """Write ``(x - mean[c]) * scale[c] + shift[c]`` per channel of ``(N, C, L)`` data."""
    n, c, length = x.shape
    mx, sx, tx = affine_coefficients(mean, scale, shift, length)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    n_tasks = affine_tasks(x.size)
    for tt in prange(n_tasks):
        t = affine_order(np.int64(tt), n_tasks, length)  # the prange index is unsigned
        affine_task(xf, mean, scale, shift, of, t, c, length, mx, sx, tx)


@serial_jit
def _elemt_task(dy, x, out, t, c, length, av, bv, mv, cv):
    """Task ``t`` of :func:`channel_backward_elemt` (coefficients as in
    :func:`affine_task`)."""
    size = x.size
    e = t * TASK_SIZE
    e1 = min(size, e + TASK_SIZE)
    if length >= LONG_ROW:
        while e < e1:
            r = e // length
            stop = min(e1, (r + 1) * length)
            ch = r % c
            a = av[ch]
            b = bv[ch]
            m = mv[ch]
            k = cv[ch]
            gv = dy[e:stop]
            xv = x[e:stop]
            ov = out[e:stop]
            for j in range(xv.size):
                ov[j] = a * gv[j] + b * (xv[j] - m) + k
            e = stop
    else:
        period = av.size
        while e < e1:
            q = e // period
            j0 = e - q * period
            stop = min(e1, (q + 1) * period)
            gv = dy[e:stop]
            xv = x[e:stop]
            ov = out[e:stop]
            a = av[j0:]
            b = bv[j0:]
            m = mv[j0:]
            k = cv[j0:]
            for j in range(xv.size):
                ov[j] = a[j] * gv[j] + b[j] * (xv[j] - m[j]) + k[j]
            e = stop


@kernel
def channel_backward_elemt(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    out: np.ndarray,
) -> None:
    """Write ``a[ch] * dy + b[ch] * (x - mean[ch]) + c[ch]`` per channel into ``out``."""
    n, nc, length = x.shape
    if length < LONG_ROW:
        a = _expand(a, nc, length)
        b = _expand(b, nc, length)
        mean = _expand(mean, nc, length)
        c = _expand(c, nc, length)
    gf = dy.reshape(dy.size)
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    for tt in prange((x.size + TASK_SIZE - 1) // TASK_SIZE):
        t = np.int64(tt)  # the prange index is unsigned
        _elemt_task(gf, xf, of, t, nc, length, a, b, mean, c)
