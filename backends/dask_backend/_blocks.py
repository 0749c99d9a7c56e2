"""The tasks of the ``dask`` backend's graphs: one function per kind of block.

Each runs the in-memory kernels of a CPU backend on one NumPy block. Graphs carry
that backend by name (:class:`Kernels`), so a task resolves it in whichever
process runs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from normdrop.backends.numpy_backend import philox_words_at
from normdrop.registry import get_backend

PARTIAL = np.dtype([("n", "f8"), ("mean", "f8"), ("m2", "f8")])
#: Below this many elements per contiguous run, a block's words are drawn per element index.
_MIN_RUN = 1024


class Kernels:
    """The in-memory backend that runs the blocks, by name.

    Graphs carry this handle, not the backend object: it pickles as its name (a
    backend object may hold locks and first-call wrappers that cannot be pickled
    to a worker), and each process resolves the name to its own loaded backend.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(get_backend(self.name), attr)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return Kernels, (self.name,)

    def __dask_tokenize__(self) -> str:
        return self.name


def block_backend() -> Kernels:
    """The in-memory backend that runs each block (chosen when the graph is built)."""
    try:
        get_backend("numba")
    except Exception:
        return Kernels("numpy")
    return Kernels("numba")


@contextmanager
def block_threads(inner: Kernels, blocks: int) -> Iterator[None]:
    """Give one block's kernel its share of Numba's threads: ``threads // blocks``, at least 1.

    With at least as many blocks as threads each block runs single-threaded and
    Dask's workers spread the blocks over the cores, so parallel kernels in
    concurrent blocks do not oversubscribe them. Results do not depend on the
    thread count (the kernels split work by shape only).
    """
    if inner.name != "numba":
        yield
        return
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, previous // max(1, blocks)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


# ----------------------------------------------------------------------------- moments
def _chan_merge(
    n: np.ndarray, mean: np.ndarray, m2: np.ndarray, axis: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan's merge of many ``(n, mean, M2)`` partials along ``axis`` (float64)."""
    total = n.sum(axis=axis, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    merged_mean = (n * mean).sum(axis=axis, keepdims=True) / safe
    merged_m2 = (m2 + n * np.square(mean - merged_mean)).sum(axis=axis, keepdims=True)
    return total, merged_mean, merged_m2


def moments_chunk(
    x: np.ndarray, axis: Any = None, keepdims: bool = True, *, inner: Kernels, blocks: int
) -> np.ndarray:
    """A block's float64 ``(n, mean, M2)`` per channel, from the in-memory kernel."""
    out = np.empty((1, x.shape[1], 1), PARTIAL)
    count = x.shape[0] * x.shape[2]
    if count == 0:
        out["n"], out["mean"], out["m2"] = 0.0, 0.0, 0.0
        return out
    with block_threads(inner, blocks):
        mean, var = inner.channel_moments(np.ascontiguousarray(x))
    out["n"] = count
    out["mean"] = np.asarray(mean).reshape(1, -1, 1)
    out["m2"] = (np.asarray(var) * count).reshape(1, -1, 1)
    return out


def moments_combine(parts: np.ndarray, axis: Any = None, keepdims: bool = True) -> np.ndarray:
    """Chan's merge of a tree node's partials (the ``combine`` of the reduction)."""
    n, mean, m2 = _chan_merge(parts["n"], parts["mean"], parts["m2"], (0, 2))
    out = np.empty(n.shape, PARTIAL)
    out["n"], out["mean"], out["m2"] = n, mean, m2
    return out


def moments_aggregate(parts: np.ndarray, axis: Any = None, keepdims: bool = False) -> np.ndarray:
    """The final merge: one ``(n, mean, M2)`` per channel."""
    return moments_combine(parts).reshape(-1)


# ----------------------------------------------------------------------------- blocks
def affine_block(
    x: np.ndarray, vectors: np.ndarray, inner: Kernels, blocks: int, block_info: Any = None
) -> np.ndarray:
    """``(x - mean) * scale + shift`` of one block; ``vectors`` stacks the three, all channels."""
    c0, c1 = block_info[0]["array-location"][1]
    mean, scale, shift = vectors[:, c0:c1]
    x = np.ascontiguousarray(x)  # a block of a transposed array is a strided view
    with block_threads(inner, blocks):
        return inner.channel_affine(x, mean, scale, shift, np.empty_like(x))


def elemt_block(dy: np.ndarray, x: np.ndarray, *vectors: np.ndarray, inner: Kernels) -> np.ndarray:
    """``a * dy + b * (x - mean) + c`` per channel of one block (``vectors``: mean, a, b, c)."""
    dy, x = np.ascontiguousarray(dy), np.ascontiguousarray(x)
    return inner.channel_backward_elemt(dy, x, *vectors, np.empty_like(x))


def reduce_block(dy: np.ndarray, x: np.ndarray, mean: np.ndarray, inner: Kernels) -> np.ndarray:
    """One block's per-channel ``sum(dy)`` and ``sum((x - mean) * dy)``, stacked ``(2, C, 1)``."""
    sum_dy, sum_dy_xmu = inner.channel_backward_reduce(
        np.ascontiguousarray(dy), np.ascontiguousarray(x), mean
    )
    return np.stack([sum_dy, sum_dy_xmu]).reshape(2, -1, 1)


def row_norm_block(x: np.ndarray, weight: Any, bias: Any, eps: float, inner: Kernels) -> np.ndarray:
    """LayerNorm of a block of whole rows."""
    x = np.ascontiguousarray(x)
    y, _, _ = inner.layer_norm_forward(x, weight, bias, eps, np.empty_like(x))
    return y


def row_stats_block(x: np.ndarray, eps: float, inner: Kernels) -> np.ndarray:
    """``(mean, rstd)`` of each whole row of a block, stacked ``(R, 2)``.

    ``row_moments`` is a helper of the built-in CPU backends beyond the protocol.
    """
    mean, var = inner.row_moments(np.ascontiguousarray(x))
    return np.stack([mean, 1.0 / np.sqrt(var + eps)], axis=1)


def row_grad_block(
    dy: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    rstd: np.ndarray,
    weight: Any,
    inner: Kernels,
    param_grads: bool,
) -> np.ndarray:
    """A block of whole rows' LayerNorm input gradient or, with ``param_grads``, its
    partial ``dweight`` and ``dbias`` stacked ``(2, D)``."""
    dy, x = np.ascontiguousarray(dy), np.ascontiguousarray(x)
    dx, dweight, dbias = inner.layer_norm_backward(
        dy, x, mean, rstd, weight, np.empty_like(x), param_grads
    )
    return np.stack([np.asarray(dweight), np.asarray(dbias)]) if param_grads else dx


def _block_runs(block_shape: tuple[int, ...], full_shape: tuple[int, ...]) -> int:
    """Number of leading dims whose indices split a block into contiguous runs."""
    split = len(block_shape) - 1
    while split > 0 and block_shape[split] == full_shape[split]:
        split -= 1
    return split


def dropout_block(
    x: np.ndarray,
    threshold: int,
    scale: Any,
    seed: int,
    call: int,
    inner: Kernels,
    base: int,
    block_info: Any = None,
) -> np.ndarray:
    """Dropout of one block, each element masked by the word of its global C-order index
    (plus ``base``, the offset of the whole array)."""
    info = block_info[0]
    full_shape = tuple(info["shape"])
    starts = [start for start, _ in info["array-location"]]
    if not x.flags.c_contiguous:  # a block of a transposed array: ``out``'s reshapes
        x = x.copy(order="C")  # must be views (``copy`` keeps a 0-d block 0-d)
    out = np.empty_like(x)
    if x.size == 0:
        return out
    split = _block_runs(x.shape, full_shape)
    run = math.prod(x.shape[split:])
    runs = math.prod(x.shape[:split])
    if run >= _MIN_RUN or runs == 1:
        xr, outr = x.reshape(runs, run), out.reshape(runs, run)
        for k, index in enumerate(np.ndindex(*x.shape[:split])):
            position = [s + i for s, i in zip(starts[:split], index, strict=True)]
            position += starts[split:]
            offset = base + (int(np.ravel_multi_index(position, full_shape)) if full_shape else 0)
            inner.dropout_forward(xr[k], threshold, scale, seed, call, outr[k], None, offset)
        return out
    # many short runs: draw each element's word from its global index
    index = np.ravel_multi_index(
        np.indices(x.shape, dtype=np.int64).reshape(x.ndim, -1)
        + np.asarray(starts, dtype=np.int64)[:, None],
        full_shape,
    ).astype(np.uint64) + np.uint64(base)
    words = philox_words_at(index, seed, call)
    keep = (words >= np.uint32(threshold)).reshape(x.shape)
    out[...] = np.where(keep, x * scale, x.dtype.type(0))
    return out


def fused_block(
    x: np.ndarray, *residual: np.ndarray, params: tuple, block_info: Any = None
) -> np.ndarray:
    """One row block of the fused op: ``y`` and ``r`` stacked on a new last axis.

    The block's first element is global element ``offset + row0 * D`` (rows are whole).
    """
    inner, weight, bias, eps, threshold, scale, seed, call, offset = params
    row0 = block_info[0]["array-location"][0][0]
    x = np.ascontiguousarray(x)
    res = np.ascontiguousarray(residual[0]) if residual else None
    y, r = np.empty_like(x), np.empty_like(x)
    start = offset + row0 * x.shape[1]
    inner.dropout_add_layer_norm_forward(
        x, res, weight, bias, eps, threshold, scale, seed, call, y, r, None, start
    )
    return np.stack([y, r], axis=-1)


def mask_block(
    block: np.ndarray, threshold: int, seed: int, call: int, inner: Kernels, block_info: Any = None
) -> np.ndarray:
    """The keep-mask of a block of a 1-d array, from the words of its global positions.

    ``philox_words`` is a helper of the built-in CPU backends beyond the protocol.
    """
    start = block_info[0]["array-location"][0][0]
    return inner.philox_words(block.size, seed, call, start) >= np.uint32(threshold)
