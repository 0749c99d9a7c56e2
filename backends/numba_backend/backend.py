"""The ``numba`` backend object: picks the serial or parallel kernel for each call."""

from __future__ import annotations

from typing import Any

import numpy as np

from normdrop.backends._host_pool import pooled_empty
from normdrop.backends.numpy_backend import NumpyBackend

from . import dropout, dropout_add_norm, elementwise, fused, philox, rows, stats
from .jit import PARALLEL_MIN_SIZE

__all__ = ["NumbaBackend", "backend"]

_NO_BITS = np.empty(0, np.uint8)


def _words(seed: int, call: int) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """``(c2, c3, k0, k1)``: the call's counter words and the seed's key words."""
    c2, c3 = philox.split64(call)
    k0, k1 = philox.split64(seed)
    return c2, c3, k0, k1


class NumbaBackend(NumpyBackend):
    """Numba CPU kernels on NumPy arrays: the default backend for NumPy input.

    Every kernel has a parallel (``prange``) and a serial version that split the
    work into the same shape-dependent tasks, so they give identical results;
    inputs of fewer than :data:`~normdrop.backends.numba_backend.jit.PARALLEL_MIN_SIZE`
    elements take the serial one, which wakes no threads. The array helpers are
    those of :class:`~normdrop.backends.numpy_backend.NumpyBackend`.
    """

    name = "numba"
    device = "cpu"
    supports_bitmask = True

    #: An uninitialised array; large ones are recycled (see :mod:`.._host_pool`).
    empty = staticmethod(pooled_empty)

    # ----- statistics -----------------------------------------------------------
    def channel_moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel float64 mean and biased variance of ``(N, C, L)`` data."""
        if x.size < PARALLEL_MIN_SIZE:
            return stats.channel_moments_serial(x)
        return stats.channel_moments_parallel(x)

    def row_moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row float64 mean and biased variance of ``(R, D)`` data."""
        if x.size < PARALLEL_MIN_SIZE:
            return rows.row_moments_serial(x)
        return rows.row_moments_parallel(x)

    # ----- forward transforms ---------------------------------------------------
    def channel_affine(
        self,
        x: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
        shift: np.ndarray,
        out: np.ndarray,
    ) -> np.ndarray:
        """Write ``(x - mean[c]) * scale[c] + shift[c]`` per channel into ``out``; return it."""
        if x.size < PARALLEL_MIN_SIZE:
            elementwise.channel_affine_serial(x, mean, scale, shift, out)
        else:
            elementwise.channel_affine_parallel(x, mean, scale, shift, out)
        return out

    def layer_norm_forward(
        self,
        x: np.ndarray,
        weight: np.ndarray | None,
        bias: np.ndarray | None,
        eps: float,
        out: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fused LayerNorm of ``(R, D)`` rows into ``out``; return ``(out, mean, rstd)``."""
        r, d = x.shape
        stats = np.empty((2, r))
        if r * d < PARALLEL_MIN_SIZE and d <= rows.ROW_SPLIT:
            rows.layer_norm_forward_serial(x, weight, bias, float(eps), out, stats)
        else:
            rows.layer_norm_forward_parallel(x, weight, bias, float(eps), out, stats)
        return out, stats[0], stats[1]

    def batch_norm_forward(
        self,
        x: np.ndarray,
        running_mean: np.ndarray | None,
        running_var: np.ndarray | None,
        weight: np.ndarray | None,
        bias: np.ndarray | None,
        use_batch: bool,
        update: bool,
        momentum: float,
        eps: float,
        out: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Whole BatchNorm forward of ``(N, C, L)`` data in one compiled call.

        The optional fused kernel of the design notes: batch statistics when
        ``use_batch`` (else the running ones), the running statistics updated in
        place when ``update`` (``running = (1 - momentum) * running + momentum *
        batch``, unbiased variance), ``weight``/``bias`` folded in, output written to
        ``out``. Vectors may have any float dtype, or be ``None``.

        Returns
        -------
        out, mean, rstd : numpy.ndarray
            ``out``, and the float64 statistics used (``rstd = 1/sqrt(var + eps)``).
        """
        kernel = (
            fused.batch_norm_forward_serial
            if x.size < PARALLEL_MIN_SIZE
            else fused.batch_norm_forward_parallel
        )
        mean, rstd = kernel(
            x,
            running_mean,
            running_var,
            weight,
            bias,
            bool(use_batch),
            bool(update),
            float(momentum),
            float(eps),
            out,
        )
        return out, mean, rstd

    def dropout_add_layer_norm_forward(
        self,
        x: np.ndarray,
        residual: np.ndarray | None,
        weight: np.ndarray | None,
        bias: np.ndarray | None,
        eps: float,
        threshold: int | None,
        scale: Any,
        seed: int | None,
        call: int,
        out: np.ndarray,
        r_out: np.ndarray,
        bitmask: np.ndarray | None,
        offset: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Dropout, residual add and LayerNorm of ``(R, D)`` rows in one pass per row.

        Returns ``(out, r_out, mean, rstd)``; see :mod:`.dropout_add_norm`.
        """
        rows_, _ = x.shape
        stats = np.empty((2, rows_))
        drop = threshold is not None
        pack = bitmask is not None
        dropout_add_norm.dropout_add_layer_norm_rows(
            x,
            residual,
            weight,
            bias,
            float(eps),
            drop,
            np.uint64(threshold if drop else 0),
            x.dtype.type(scale if drop else 1),
            *_words(seed if drop else 0, call),
            out,
            r_out,
            bitmask if pack else _NO_BITS,
            pack,
            stats,
            np.uint64(offset // 4),
            offset % 4,
            x.size >= PARALLEL_MIN_SIZE,
        )
        return out, r_out, stats[0], stats[1]

    # ----- backward -------------------------------------------------------------
    def channel_backward_reduce(
        self, dy: np.ndarray, x: np.ndarray, mean: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per channel float64 ``sum(dy)`` and ``sum((x - mean) * dy)``, one pass."""
        if x.size < PARALLEL_MIN_SIZE:
            return stats.channel_sums_serial(dy, x, mean)
        return stats.channel_sums_parallel(dy, x, mean)

    def channel_backward_elemt(
        self,
        dy: np.ndarray,
        x: np.ndarray,
        mean: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        c: np.ndarray,
        out: np.ndarray,
    ) -> np.ndarray:
        """Write ``a[c] * dy + b[c] * (x - mean[c]) + c[c]`` per channel into ``out``."""
        if x.size < PARALLEL_MIN_SIZE:
            elementwise.channel_backward_elemt_serial(dy, x, mean, a, b, c, out)
        else:
            elementwise.channel_backward_elemt_parallel(dy, x, mean, a, b, c, out)
        return out

    def layer_norm_backward(
        self,
        dy: np.ndarray,
        x: np.ndarray,
        mean: np.ndarray,
        rstd: np.ndarray,
        weight: np.ndarray | None,
        out: np.ndarray,
        param_grads: bool,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """LayerNorm input gradient into ``out``; return ``(out, dweight, dbias)``."""
        grads = bool(param_grads)
        if x.size < PARALLEL_MIN_SIZE and x.shape[1] <= rows.ROW_SPLIT:
            dw, db = rows.layer_norm_backward_serial(dy, x, mean, rstd, weight, out, grads)
        else:
            dw, db = rows.layer_norm_backward_parallel(dy, x, mean, rstd, weight, out, grads)
        return (out, dw, db) if grads else (out, None, None)

    # ----- dropout --------------------------------------------------------------
    def philox_words(self, n: int, seed: int, call: int, offset: int = 0) -> np.ndarray:
        """The uint32 Philox words of elements ``offset .. offset + n - 1``."""
        kernel = (
            philox.philox_words_serial if n < PARALLEL_MIN_SIZE else philox.philox_words_parallel
        )
        return kernel(int(n), np.uint64(offset // 4), offset % 4, *_words(seed, call))

    def dropout_forward(
        self,
        x: np.ndarray,
        threshold: int,
        scale: Any,
        seed: int,
        call: int,
        out: np.ndarray,
        bitmask: np.ndarray | None,
        offset: int = 0,
    ) -> np.ndarray:
        """Write ``x * scale`` where kept and 0 elsewhere into ``out``; return ``out``.

        ``bitmask`` (uint8, ``ceil(n / 8)`` bytes, only with ``offset == 0``) also
        receives the packed keep-mask.
        """
        kernel = dropout.dropout_serial if x.size < PARALLEL_MIN_SIZE else dropout.dropout_parallel
        pack = bitmask is not None
        kernel(
            x.reshape(-1),
            np.uint64(threshold),
            x.dtype.type(scale),
            *_words(seed, call),
            out.reshape(-1),
            bitmask if pack else _NO_BITS,
            pack,
            np.uint64(offset // 4),
            offset % 4,
        )
        return out

    def dropout_mask(self, n: int, threshold: int, seed: int, call: int) -> np.ndarray:
        """The boolean keep-mask of ``n`` elements."""
        kernel = (
            dropout.dropout_mask_serial if n < PARALLEL_MIN_SIZE else dropout.dropout_mask_parallel
        )
        return kernel(int(n), np.uint64(threshold), *_words(seed, call))

    def dropout_apply_bitmask(
        self, dy: np.ndarray, bitmask: np.ndarray, scale: Any, out: np.ndarray
    ) -> np.ndarray:
        """Write ``dy * scale`` where the packed bitmask is set and 0 elsewhere into ``out``."""
        kernel = (
            dropout.apply_bitmask_serial
            if dy.size < PARALLEL_MIN_SIZE
            else dropout.apply_bitmask_parallel
        )
        kernel(dy.reshape(-1), bitmask, dy.dtype.type(scale), out.reshape(-1))
        return out


backend = NumbaBackend()
