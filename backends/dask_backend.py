"""The ``dask`` backend: normalisation and dropout on arrays larger than memory.

Dask arrays in, Dask arrays out. Each block runs the kernels of an in-memory
CPU backend (``numba`` when it loads, else ``numpy``), chosen when the graph is
built: context such as :func:`normdrop.use_backend` does not reach workers.

* BatchNorm statistics are a tree reduction over chunks: each chunk gives
  float64 ``(n, mean, M2)`` per channel, merged with Chan's formula. They are
  computed when called (running statistics must be updated); every
  element-wise transform stays lazy and blockwise.
* LayerNorm needs whole normalised dimensions per chunk; Dask's reshape and a
  rechunk of those dimensions only provide them.
* Dropout is blockwise: every block knows its global C-order element offsets,
  so masks equal the in-memory ones bit for bit whatever the chunking.
* No packed bitmask is kept: the backward regenerates the mask from
  ``(seed, call)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask.array as da
import numpy as np

from normdrop.backends.numpy_backend import philox_words_at
from normdrop.registry import get_backend

__all__ = ["DaskBackend", "backend"]

_PARTIAL = np.dtype([("n", "f8"), ("mean", "f8"), ("m2", "f8")])
#: Below this many elements per contiguous run, a block's words are drawn per element index.
_MIN_RUN = 1024


class _Kernels:
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
        return _Kernels, (self.name,)

    def __dask_tokenize__(self) -> str:
        return self.name


def _inner() -> _Kernels:
    """The in-memory backend that runs each block (chosen when the graph is built)."""
    try:
        get_backend("numba")
    except Exception:
        return _Kernels("numpy")
    return _Kernels("numba")


@contextmanager
def _block_threads(inner: _Kernels, blocks: int) -> Iterator[None]:
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
def _merge(n: np.ndarray, mean: np.ndarray, m2: np.ndarray, axis: tuple[int, ...]):
    """Chan's merge of many ``(n, mean, M2)`` partials along ``axis`` (float64)."""
    total = n.sum(axis=axis, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    merged_mean = (n * mean).sum(axis=axis, keepdims=True) / safe
    merged_m2 = (m2 + n * np.square(mean - merged_mean)).sum(axis=axis, keepdims=True)
    return total, merged_mean, merged_m2


def _moments_chunk(
    x: np.ndarray, axis: Any = None, keepdims: bool = True, *, inner: _Kernels, blocks: int
) -> np.ndarray:
    """A block's float64 ``(n, mean, M2)`` per channel, from the in-memory kernel."""
    out = np.empty((1, x.shape[1], 1), _PARTIAL)
    count = x.shape[0] * x.shape[2]
    if count == 0:
        out["n"], out["mean"], out["m2"] = 0.0, 0.0, 0.0
        return out
    with _block_threads(inner, blocks):
        mean, var = inner.channel_moments(np.ascontiguousarray(x))
    out["n"] = count
    out["mean"] = np.asarray(mean).reshape(1, -1, 1)
    out["m2"] = (np.asarray(var) * count).reshape(1, -1, 1)
    return out


def _moments_combine(parts: np.ndarray, axis: Any = None, keepdims: bool = True):
    n, mean, m2 = _merge(parts["n"], parts["mean"], parts["m2"], (0, 2))
    out = np.empty(n.shape, _PARTIAL)
    out["n"], out["mean"], out["m2"] = n, mean, m2
    return out


def _moments_aggregate(parts: np.ndarray, axis: Any = None, keepdims: bool = False):
    return _moments_combine(parts).reshape(-1)


# ----------------------------------------------------------------------------- blocks
def _affine_block(x, vectors, inner, blocks, block_info=None):
    """``(x - mean) * scale + shift`` of one block; ``vectors`` stacks the three, all channels."""
    c0, c1 = block_info[0]["array-location"][1]
    mean, scale, shift = vectors[:, c0:c1]
    with _block_threads(inner, blocks):
        return inner.channel_affine(np.ascontiguousarray(x), mean, scale, shift, np.empty_like(x))


def _elemt_block(dy, x, mean, a, b, c, inner):
    out = np.empty_like(x)
    return inner.channel_backward_elemt(
        np.ascontiguousarray(dy), np.ascontiguousarray(x), mean, a, b, c, out
    )


def _reduce_block(dy, x, mean, inner):
    sum_dy, sum_dy_xmu = inner.channel_backward_reduce(
        np.ascontiguousarray(dy), np.ascontiguousarray(x), mean
    )
    return np.stack([sum_dy, sum_dy_xmu]).reshape(2, -1, 1)


def _row_norm_block(x, weight, bias, eps, inner):
    y, _, _ = inner.layer_norm_forward(np.ascontiguousarray(x), weight, bias, eps, np.empty_like(x))
    return y


def _row_stats_block(x, eps, inner):
    mean, var = inner.row_moments(np.ascontiguousarray(x))
    return np.stack([mean, 1.0 / np.sqrt(var + eps)], axis=1)


def _row_grad_block(dy, x, mean, rstd, weight, inner):
    dx, _, _ = inner.layer_norm_backward(
        np.ascontiguousarray(dy),
        np.ascontiguousarray(x),
        mean,
        rstd,
        weight,
        np.empty_like(x),
        False,
    )
    return dx


def _row_param_grad_block(dy, x, mean, rstd, inner):
    _, dweight, dbias = inner.layer_norm_backward(
        np.ascontiguousarray(dy),
        np.ascontiguousarray(x),
        mean,
        rstd,
        None,
        np.empty_like(x),
        True,
    )
    return np.stack([np.asarray(dweight), np.asarray(dbias)])


def _block_runs(block_shape: tuple[int, ...], full_shape: tuple[int, ...]) -> int:
    """Number of leading dims whose indices split a block into contiguous runs."""
    split = len(block_shape) - 1
    while split > 0 and block_shape[split] == full_shape[split]:
        split -= 1
    return split


def _dropout_block(x, threshold, scale, seed, call, inner, base, block_info=None):
    info = block_info[0]
    full_shape = tuple(info["shape"])
    starts = [start for start, _ in info["array-location"]]
    out = np.empty_like(x)
    if x.size == 0:
        return out
    x = np.ascontiguousarray(x)
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


def _fused_block(x, *residual, params, block_info=None):
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


def _words_block(block, seed, call, inner, block_info=None):
    start = block_info[0]["array-location"][0][0]
    return np.asarray(inner.philox_words(block.size, seed, call, start))


# ----------------------------------------------------------------------------- backend
def _vector_like(v: Any, chunks: tuple[int, ...]) -> da.Array:
    """A per-channel vector as a Dask array chunked like the data's channel axis."""
    return da.asarray(v).astype(np.float64).rechunk((chunks,))


class DaskBackend:
    """Implementation of :class:`normdrop.protocol.Backend` on Dask arrays."""

    name = "dask"
    device = "cpu"
    supports_bitmask = False

    def accepts(self, x: Any) -> bool:
        """Accept Dask arrays."""
        return type(x).__module__.split(".", 1)[0] == "dask"

    def asarray(self, x: Any, dtype: Any = None) -> da.Array:
        """Return ``x`` as a Dask array (NumPy data is wrapped with automatic chunks)."""
        return da.asarray(x, dtype=dtype)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> da.Array:
        """A lazy empty array (kernels here return new arrays instead of filling one)."""
        return da.empty(shape, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Compute ``x`` and return it as a NumPy array."""
        return np.asarray(x.compute() if hasattr(x, "compute") else x)

    def ascontiguous(self, x: Any) -> Any:
        """Return ``x`` (Dask blocks are made contiguous when they are computed)."""
        return x

    # ----- statistics -------------------------------------------------------------
    def channel_moments(self, x: da.Array) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and variance by a tree reduction with Chan merges (computed).

        One task per block computes its float64 ``(n, mean, M2)`` partials with the
        in-memory kernel; a small tree of Chan merges combines them.
        """
        stats = da.reduction(
            x,
            functools.partial(_moments_chunk, inner=_inner(), blocks=x.npartitions),
            _moments_aggregate,
            combine=_moments_combine,
            axis=(0, 2),
            keepdims=False,
            dtype=_PARTIAL,
            meta=np.empty((0,), _PARTIAL),
            concatenate=True,
        ).compute()
        var = stats["m2"] / np.where(stats["n"] > 0, stats["n"], 1.0)
        return np.ascontiguousarray(stats["mean"]), var

    def row_moments(self, x: da.Array) -> tuple[da.Array, da.Array]:
        """Per-row mean and variance (lazy); the feature axis is made whole per chunk."""
        x = x.rechunk({1: -1})
        inner = _inner()

        def block(b):
            mean, var = inner.row_moments(np.ascontiguousarray(b))
            return np.stack([mean, var], axis=1)

        stats = x.map_blocks(block, chunks=(x.chunks[0], (2,)), dtype=np.float64)
        return stats[:, 0], stats[:, 1]

    # ----- forward ----------------------------------------------------------------
    def channel_affine(self, x, mean, scale, shift, out):
        """Lazy blockwise ``(x - mean) * scale + shift`` per channel: one task per block.

        The three vectors are small NumPy arrays on the client; each task slices its
        block's channels from them.
        """
        vectors = np.stack([np.asarray(v, np.float64).reshape(-1) for v in (mean, scale, shift)])
        return x.map_blocks(_affine_block, vectors, _inner(), x.npartitions, dtype=x.dtype)

    def layer_norm_forward(self, x, weight, bias, eps, out):
        """Lazy blockwise fused LayerNorm; lazy per-row ``mean`` and ``rstd``."""
        x = x.rechunk({1: -1})
        inner = _inner()
        weight = None if weight is None else np.asarray(weight)
        bias = None if bias is None else np.asarray(bias)
        y = x.map_blocks(_row_norm_block, weight, bias, eps, inner, dtype=x.dtype)
        stats = x.map_blocks(
            _row_stats_block, eps, inner, chunks=(x.chunks[0], (2,)), dtype=np.float64
        )
        return y, stats[:, 0], stats[:, 1]

    def dropout_add_layer_norm_forward(
        self, x, residual, weight, bias, eps, threshold, scale, seed, call, out, r_out, bitmask,
        offset=0,
    ):  # fmt: skip
        """Lazy row-blockwise fused dropout, add and LayerNorm; lazy ``mean`` and ``rstd``.

        Rows are made whole per chunk; each block knows its global element offset, so
        the masks do not depend on the chunking. ``y`` and ``r`` come from one
        blockwise task (compute them together to run it once); the statistics are
        those of ``r``.
        """
        x = x.rechunk({1: -1})
        inner = _inner()
        params = (
            inner,
            None if weight is None else np.asarray(weight),
            None if bias is None else np.asarray(bias),
            eps,
            threshold,
            scale,
            seed,
            call,
            offset,
        )
        arrays = (x,) if residual is None else (x, residual.rechunk(x.chunks))
        both = da.map_blocks(
            _fused_block,
            *arrays,
            params=params,
            new_axis=2,
            chunks=(*x.chunks, (2,)),
            dtype=x.dtype,
        )
        r = both[..., 1]
        stats = r.map_blocks(
            _row_stats_block, eps, inner, chunks=(x.chunks[0], (2,)), dtype=np.float64
        )
        return both[..., 0], r, stats[:, 0], stats[:, 1]

    # ----- backward ---------------------------------------------------------------
    def channel_backward_reduce(self, dy, x, mean):
        """Lazy per-channel ``sum(dy)`` and ``sum((x - mean) * dy)`` (blockwise partials)."""
        dy = dy.rechunk(x.chunks)
        partial = da.blockwise(
            _reduce_block,
            "ijk",
            dy,
            "ijk",
            x,
            "ijk",
            _vector_like(mean, x.chunks[1]),
            "j",
            dtype=np.float64,
            adjust_chunks={"i": 2, "k": 1},
            inner=_inner(),
        )
        return partial[0::2].sum(axis=(0, 2)), partial[1::2].sum(axis=(0, 2))

    def channel_backward_elemt(self, dy, x, mean, a, b, c, out):
        """Lazy blockwise ``a * dy + b * (x - mean) + c`` per channel."""
        chunks = x.chunks[1]
        vectors = [v for w in (mean, a, b, c) for v in (_vector_like(w, chunks), "j")]
        return da.blockwise(
            _elemt_block,
            "ijk",
            dy.rechunk(x.chunks),
            "ijk",
            x,
            "ijk",
            *vectors,
            dtype=x.dtype,
            inner=_inner(),
        )

    def layer_norm_backward(self, dy, x, mean, rstd, weight, out, param_grads):
        """Lazy LayerNorm gradients; parameter gradients from per-block partial sums."""
        x = x.rechunk({1: -1})
        dy = dy.rechunk(x.chunks)
        mean = da.asarray(mean).rechunk((x.chunks[0],))
        rstd = da.asarray(rstd).rechunk((x.chunks[0],))
        inner = _inner()
        weight = None if weight is None else np.asarray(weight)
        dx = da.blockwise(
            _row_grad_block,
            "ij",
            dy,
            "ij",
            x,
            "ij",
            mean,
            "i",
            rstd,
            "i",
            dtype=x.dtype,
            weight=weight,
            inner=inner,
        )
        if not param_grads:
            return dx, None, None
        partial = da.blockwise(
            _row_param_grad_block,
            "ij",
            dy,
            "ij",
            x,
            "ij",
            mean,
            "i",
            rstd,
            "i",
            dtype=np.float64,
            adjust_chunks={"i": 2},
            inner=inner,
        )
        return dx, partial[0::2].sum(axis=0), partial[1::2].sum(axis=0)

    # ----- dropout ----------------------------------------------------------------
    def philox_words(self, n: int, seed: int, call: int, offset: int = 0) -> da.Array:
        """Lazy Philox words of elements ``offset .. offset + n - 1``."""
        template = da.empty((n,), dtype=np.uint8)
        return template.map_blocks(
            lambda b, block_info=None: _words_block(
                b, seed, call, _inner(), block_info=_shift(block_info, offset)
            ),
            dtype=np.uint32,
        )

    def dropout_mask(self, n: int, threshold: int, seed: int, call: int) -> da.Array:
        """Lazy boolean keep-mask."""
        return self.philox_words(n, seed, call) >= np.uint32(threshold)

    def dropout_forward(self, x, threshold, scale, seed, call, out, bitmask, offset=0):
        """Lazy blockwise dropout; each block draws the words of its global positions."""
        return x.map_blocks(
            _dropout_block, threshold, scale, seed, call, _inner(), offset, dtype=x.dtype
        )

    def dropout_apply_bitmask(self, dy, bitmask, scale, out):
        """Not used: this backend keeps no bitmask (``supports_bitmask = False``)."""
        raise NotImplementedError("the dask backend keeps no bitmask")


def _shift(block_info: dict | None, offset: int) -> dict:
    ((start, stop),) = block_info[0]["array-location"]
    return {0: {"array-location": [(start + offset, stop + offset)]}}


backend = DaskBackend()
