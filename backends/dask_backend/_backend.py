"""The :class:`DaskBackend` object: each kernel builds a Dask graph of the block tasks
in :mod:`._blocks`."""

from __future__ import annotations

import functools
from typing import Any

import dask.array as da
import numpy as np

from normdrop.registry import PickledByName

from . import _blocks
from ._blocks import PARTIAL, block_backend

__all__ = ["DaskBackend"]


def _vector_like(v: Any, chunks: tuple[int, ...]) -> da.Array:
    """A per-channel vector as a Dask array chunked like the data's channel axis."""
    return da.asarray(v).astype(np.float64).rechunk((chunks,))


class DaskBackend(PickledByName):
    """Implementation of :class:`normdrop.protocol.Backend` on Dask arrays.

    Kernels ignore ``out`` and return new lazy arrays (``channel_moments`` computes:
    the running statistics need its result). Also offers the optional fused
    ``dropout_add_layer_norm_forward``; keeps no bitmask (``supports_bitmask`` False).
    """

    name = "dask"
    device = "cpu"
    supports_bitmask = False

    def accepts(self, x: Any) -> bool:
        """Accept Dask arrays."""
        return type(x).__module__.split(".", 1)[0] == "dask"

    def asarray(self, x: Any, dtype: Any = None) -> da.Array:
        """Return ``x`` as a Dask array (NumPy data is wrapped with automatic chunks).

        Empty data gets one chunk: Dask's automatic chunking divides by zero on it.
        """
        if not isinstance(x, da.Array) and getattr(x, "size", 1) == 0:
            return da.asarray(x, dtype=dtype, chunks=-1)
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
            functools.partial(_blocks.moments_chunk, inner=block_backend(), blocks=x.npartitions),
            _blocks.moments_aggregate,
            combine=_blocks.moments_combine,
            axis=(0, 2),
            keepdims=False,
            dtype=PARTIAL,
            meta=np.empty((0,), PARTIAL),
            concatenate=True,
        ).compute()
        var = stats["m2"] / np.where(stats["n"] > 0, stats["n"], 1.0)
        return np.ascontiguousarray(stats["mean"]), var

    # ----- forward ----------------------------------------------------------------
    def channel_affine(self, x: da.Array, mean: Any, scale: Any, shift: Any, out: Any) -> da.Array:
        """Lazy blockwise ``(x - mean) * scale + shift`` per channel: one task per block.

        The three vectors are small NumPy arrays on the client; each task slices its
        block's channels from them.
        """
        vectors = np.stack([np.asarray(v, np.float64).reshape(-1) for v in (mean, scale, shift)])
        return da.map_blocks(
            _blocks.affine_block, x, vectors, block_backend(), x.npartitions, dtype=x.dtype
        )

    def layer_norm_forward(
        self, x: da.Array, weight: Any, bias: Any, eps: float, out: Any
    ) -> tuple[da.Array, da.Array, da.Array]:
        """Lazy blockwise fused LayerNorm; lazy per-row ``mean`` and ``rstd``."""
        x = x.rechunk({1: -1})
        inner = block_backend()
        weight = None if weight is None else np.asarray(weight)
        bias = None if bias is None else np.asarray(bias)
        y = da.map_blocks(_blocks.row_norm_block, x, weight, bias, eps, inner, dtype=x.dtype)
        stats = da.map_blocks(
            _blocks.row_stats_block, x, eps, inner, chunks=(x.chunks[0], (2,)), dtype=np.float64
        )
        return y, stats[:, 0], stats[:, 1]

    def dropout_add_layer_norm_forward(
        self, x: da.Array, residual: da.Array | None, weight: Any, bias: Any, eps: float,
        threshold: int | None, scale: Any, seed: int | None, call: int, out: Any, r_out: Any,
        bitmask: None, offset: int = 0,
    ) -> tuple[da.Array, da.Array, da.Array, da.Array]:  # fmt: skip
        """Lazy row-blockwise fused dropout, add and LayerNorm; lazy ``mean`` and ``rstd``.

        Rows are made whole per chunk; each block knows its global element offset, so
        the masks do not depend on the chunking. ``y`` and ``r`` come from one
        blockwise task (compute them together to run it once); the statistics are
        those of ``r``.
        """
        x = x.rechunk({1: -1})
        inner = block_backend()
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
            _blocks.fused_block,
            *arrays,
            params=params,
            new_axis=2,
            chunks=(*x.chunks, (2,)),
            dtype=x.dtype,
        )
        r = both[..., 1]
        stats = da.map_blocks(
            _blocks.row_stats_block, r, eps, inner, chunks=(x.chunks[0], (2,)), dtype=np.float64
        )
        return both[..., 0], r, stats[:, 0], stats[:, 1]

    # ----- backward ---------------------------------------------------------------
    def channel_backward_reduce(
        self, dy: da.Array, x: da.Array, mean: Any
    ) -> tuple[da.Array, da.Array]:
        """Lazy per-channel ``sum(dy)`` and ``sum((x - mean) * dy)`` (blockwise partials)."""
        dy = dy.rechunk(x.chunks)
        partial = da.blockwise(
            _blocks.reduce_block,
            "ijk",
            dy,
            "ijk",
            x,
            "ijk",
            _vector_like(mean, x.chunks[1]),
            "j",
            dtype=np.float64,
            adjust_chunks={"i": 2, "k": 1},
            inner=block_backend(),
        )
        return partial[0::2].sum(axis=(0, 2)), partial[1::2].sum(axis=(0, 2))

    def channel_backward_elemt(
        self, dy: da.Array, x: da.Array, mean: Any, a: Any, b: Any, c: Any, out: Any
    ) -> da.Array:
        """Lazy blockwise ``a * dy + b * (x - mean) + c`` per channel."""
        chunks = x.chunks[1]
        vectors = [v for w in (mean, a, b, c) for v in (_vector_like(w, chunks), "j")]
        return da.blockwise(
            _blocks.elemt_block,
            "ijk",
            dy.rechunk(x.chunks),
            "ijk",
            x,
            "ijk",
            *vectors,
            dtype=x.dtype,
            inner=block_backend(),
        )

    def layer_norm_backward(
        self,
        dy: da.Array,
        x: da.Array,
        mean: Any,
        rstd: Any,
        weight: Any,
        out: Any,
        param_grads: bool,
    ) -> tuple[da.Array, da.Array | None, da.Array | None]:
        """Lazy LayerNorm gradients; parameter gradients from per-block partial sums."""
        x = x.rechunk({1: -1})
        dy = dy.rechunk(x.chunks)
        mean = da.asarray(mean).rechunk((x.chunks[0],))
        rstd = da.asarray(rstd).rechunk((x.chunks[0],))
        inner = block_backend()
        weight = None if weight is None else np.asarray(weight)

        def grads(param_grads: bool, dtype: Any) -> da.Array:
            return da.blockwise(
                _blocks.row_grad_block,
                "ij",
                dy,
                "ij",
                x,
                "ij",
                mean,
                "i",
                rstd,
                "i",
                dtype=dtype,
                adjust_chunks={"i": 2} if param_grads else None,
                weight=None if param_grads else weight,
                inner=inner,
                param_grads=param_grads,
            )

        dx = grads(False, x.dtype)
        if not param_grads:
            return dx, None, None
        partial = grads(True, np.float64)
        return dx, partial[0::2].sum(axis=0), partial[1::2].sum(axis=0)

    # ----- dropout ----------------------------------------------------------------
    def dropout_mask(self, n: int, threshold: int, seed: int, call: int) -> da.Array:
        """Lazy boolean keep-mask; each block draws the words of its positions."""
        return da.map_blocks(
            _blocks.mask_block,
            da.empty((n,), dtype=np.uint8),
            threshold,
            seed,
            call,
            block_backend(),
            dtype=np.bool_,
        )

    def dropout_forward(
        self,
        x: da.Array,
        threshold: int,
        scale: Any,
        seed: int,
        call: int,
        out: Any,
        bitmask: None,
        offset: int = 0,
    ) -> da.Array:
        """Lazy blockwise dropout; each block draws the words of its global positions."""
        return da.map_blocks(
            _blocks.dropout_block,
            x,
            threshold,
            scale,
            seed,
            call,
            block_backend(),
            offset,
            dtype=x.dtype,
        )

    def dropout_apply_bitmask(self, dy: Any, bitmask: Any, scale: Any, out: Any) -> Any:
        """Not used: this backend keeps no bitmask (``supports_bitmask = False``)."""
        raise NotImplementedError("the dask backend keeps no bitmask")
