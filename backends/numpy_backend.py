"""The ``numpy`` reference backend: plain NumPy, float64 arithmetic, clarity over speed.

It is the oracle every other backend is tested against, and the fallback that
always works.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from normdrop.registry import PickledByName

__all__ = [
    "NumpyBackend",
    "backend",
    "c_order_copy",
    "copy_into",
    "philox4x32_10",
    "philox_words_at",
]

_MASK32 = np.uint64(0xFFFFFFFF)
_PHILOX_M0 = np.uint64(0xD2511F53)
_PHILOX_M1 = np.uint64(0xCD9E8D57)
_PHILOX_W0 = 0x9E3779B9
_PHILOX_W1 = 0xBB67AE85

_F = TypeVar("_F", bound=Callable[..., Any])


def _quiet(method: _F) -> _F:
    """Run ``method`` without NumPy's floating-point warnings.

    NaN and inf propagate through the reference's arithmetic as they do through
    the compiled kernels, which never warn (``inf - inf`` is NaN, not a warning).
    """

    @functools.wraps(method)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return method(*args, **kwargs)

    return quiet  # type: ignore[return-value]


def philox4x32_10(counter: tuple[Any, Any, Any, Any], key: tuple[int, int]) -> np.ndarray:
    """Philox4x32 with 10 rounds (Random123), vectorised over the counter words.

    Parameters
    ----------
    counter : tuple of 4 array_like
        The four 32-bit counter words; arrays broadcast together.
    key : tuple of 2 int
        The two 32-bit key words.

    Returns
    -------
    numpy.ndarray
        uint32 array of shape ``broadcast_shape + (4,)``: the four output words.

    Examples
    --------
    >>> [f"{w:08x}" for w in philox4x32_10((0, 0, 0, 0), (0, 0))]
    ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']
    """
    c0, c1, c2, c3 = np.broadcast_arrays(*(np.asarray(c, dtype=np.uint64) for c in counter))
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for _ in range(10):
        p0 = _PHILOX_M0 * c0
        p1 = _PHILOX_M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0),
            p1 & _MASK32,
            (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1),
            p0 & _MASK32,
        )
        k0 = (k0 + _PHILOX_W0) & 0xFFFFFFFF
        k1 = (k1 + _PHILOX_W1) & 0xFFFFFFFF
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def philox_words_at(index: np.ndarray, seed: int, call: int) -> np.ndarray:
    """The Philox word of each global element index (any order, any shape).

    Parameters
    ----------
    index : numpy.ndarray
        uint64 C-order element indices.
    seed, call : int
        The key and the call counter.

    Returns
    -------
    numpy.ndarray
        uint32 words, shape of ``index``.
    """
    index = np.asarray(index, dtype=np.uint64)
    blocks = index >> np.uint64(2)
    counter = (blocks & _MASK32, blocks >> np.uint64(32), call & 0xFFFFFFFF, call >> 32)
    words = philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))
    lane = (index & np.uint64(3)).astype(np.intp)
    return np.take_along_axis(words, lane[..., None], axis=-1)[..., 0]


#: Elements per tile of :func:`c_order_copy`: a tile of float32 fits in a 64 KiB L1/L2 slice.
_TILE_ELEMENTS = 16384


def c_order_copy(x: np.ndarray) -> np.ndarray:
    """A C-ordered copy of ``x``, fast for transposed layouts such as Fortran order.

    Parameters
    ----------
    x : numpy.ndarray

    Returns
    -------
    numpy.ndarray
        C-contiguous, equal to ``x``.
    """
    out = np.empty(x.shape, x.dtype)
    copy_into(out, x)
    return out


def copy_into(out: np.ndarray, x: np.ndarray) -> None:
    """``out[...] = x``, tile by tile when the two are laid out transposed to each other.

    NumPy copies between transposed layouts (C order to Fortran order and back)
    walking one side with its largest stride, one cache line per element. When the
    innermost axis of ``x`` is the outermost of ``out`` (or the other way round),
    this copies tiles over both innermost axes instead, so both sides of each tile
    stay in cache; other layouts are copied by NumPy directly.

    Parameters
    ----------
    out : numpy.ndarray
        Same shape as ``x``.
    x : numpy.ndarray
    """
    axes = [a for a in range(x.ndim) if x.shape[a] > 1]
    if len(axes) < 2 or x.size < _TILE_ELEMENTS:
        out[...] = x
        return
    src = [abs(s) for s in x.strides]
    dst = [abs(s) for s in out.strides]
    inner = min(axes, key=lambda a: src[a])
    last = min(axes, key=lambda a: dst[a])
    outermost = max(src[a] for a in axes) == src[last] or max(dst[a] for a in axes) == dst[inner]
    if inner == last or not outermost:
        out[...] = x
        return
    rest = x.size // (x.shape[inner] * x.shape[last])
    tile = 1 << max(3, min(6, int(np.log2(max(_TILE_ELEMENTS // rest, 1))) // 2))
    if min(x.shape[inner], x.shape[last]) < 4 * tile:  # few tiles across: nothing to gain
        out[...] = x
        return
    index = [slice(None)] * x.ndim
    for i in range(0, x.shape[inner], tile):
        index[inner] = slice(i, i + tile)
        for j in range(0, x.shape[last], tile):
            index[last] = slice(j, j + tile)
            out[tuple(index)] = x[tuple(index)]


class NumpyBackend(PickledByName):
    """Reference implementation of :class:`normdrop.protocol.Backend` on NumPy arrays.

    Besides the required members it offers the optional
    ``dropout_add_layer_norm_forward``; ``row_moments`` and ``philox_words`` are helpers
    beyond the protocol (its own kernels, the ``dask`` backend's blocks and the tests
    use them).
    """

    name = "numpy"
    device = "cpu"
    supports_bitmask = True

    # ----- arrays ---------------------------------------------------------------
    def accepts(self, x: Any) -> bool:
        """Accept NumPy arrays."""
        return isinstance(x, np.ndarray)

    def asarray(self, x: Any, dtype: Any = None) -> np.ndarray:
        """Return ``x`` as a NumPy array."""
        return np.asarray(x, dtype=dtype)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Return an uninitialised NumPy array."""
        return np.empty(shape, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Return ``x`` (already on the host)."""
        return np.asarray(x)

    def ascontiguous(self, x: np.ndarray) -> np.ndarray:
        """Return ``x`` C-contiguous (itself when it already is).

        Fortran-ordered data and other layouts whose last axis is outermost in
        memory are copied tile by tile (see :func:`c_order_copy`), several times
        faster than ``numpy.ascontiguousarray``.
        """
        if x.flags.c_contiguous:
            return x
        return c_order_copy(x)

    # ----- statistics -----------------------------------------------------------
    @_quiet
    def channel_moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two-pass float64 per-channel mean and biased variance of ``(N, C, L)``."""
        x64 = x.astype(np.float64, copy=False)
        mean = x64.mean(axis=(0, 2))
        var = np.square(x64 - mean[None, :, None]).mean(axis=(0, 2))
        return mean, var

    @_quiet
    def row_moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two-pass float64 per-row mean and biased variance of ``(R, D)``."""
        x64 = x.astype(np.float64, copy=False)
        mean = x64.mean(axis=1)
        var = np.square(x64 - mean[:, None]).mean(axis=1)
        return mean, var

    # ----- forward transforms ---------------------------------------------------
    @_quiet
    def channel_affine(self, x, mean, scale, shift, out):
        """``out = (x - mean) * scale + shift`` per channel, in float64."""
        xmu = x.astype(np.float64, copy=False) - mean[None, :, None]
        y = xmu * scale[None, :, None] + shift[None, :, None]
        out[...] = y
        return out

    @_quiet
    def layer_norm_forward(self, x, weight, bias, eps, out):
        """Row statistics, then ``(x - mean) * rstd * weight + bias`` in float64."""
        mean, var = self.row_moments(x)
        rstd = 1.0 / np.sqrt(var + eps)
        y = (x.astype(np.float64, copy=False) - mean[:, None]) * rstd[:, None]
        if weight is not None:
            y = y * weight.astype(np.float64)
        if bias is not None:
            y = y + bias.astype(np.float64)
        out[...] = y
        return out, mean, rstd

    def dropout_add_layer_norm_forward(
        self, x, residual, weight, bias, eps, threshold, scale, seed, call, out, r_out, bitmask,
        offset=0,
    ):  # fmt: skip
        """``r = dropout(x) + residual`` (each step rounded to the data dtype, as separate
        calls round it), then :meth:`layer_norm_forward` of ``r`` in float64."""
        h = x
        if threshold is not None:
            words = self.philox_words(x.size, seed, call, offset).reshape(x.shape)
            keep = words >= np.uint32(threshold)
            h = np.where(keep, x * scale, x.dtype.type(0))
            if bitmask is not None:
                bitmask[...] = np.packbits(keep.reshape(-1), bitorder="little")
        r_out[...] = h if residual is None else h + residual
        out, mean, rstd = self.layer_norm_forward(r_out, weight, bias, eps, out)
        return out, r_out, mean, rstd

    # ----- backward -------------------------------------------------------------
    @_quiet
    def channel_backward_reduce(self, dy, x, mean):
        """Per channel ``sum(dy)`` and ``sum((x - mean) * dy)`` in float64."""
        dy64 = dy.astype(np.float64, copy=False)
        xmu = x.astype(np.float64, copy=False) - mean[None, :, None]
        return dy64.sum(axis=(0, 2)), (xmu * dy64).sum(axis=(0, 2))

    @_quiet
    def channel_backward_elemt(self, dy, x, mean, a, b, c, out):
        """``out = a * dy + b * (x - mean) + c`` per channel, in float64."""
        xmu = x.astype(np.float64, copy=False) - mean[None, :, None]
        y = a[None, :, None] * dy.astype(np.float64, copy=False) + b[None, :, None] * xmu
        out[...] = y + c[None, :, None]
        return out

    @_quiet
    def layer_norm_backward(self, dy, x, mean, rstd, weight, out, param_grads):
        """LayerNorm input gradient per row and, optionally, dweight and dbias."""
        dy64 = dy.astype(np.float64, copy=False)
        xhat = (x.astype(np.float64, copy=False) - mean[:, None]) * rstd[:, None]
        g = dy64 * weight.astype(np.float64) if weight is not None else dy64
        mean_g = g.mean(axis=1, keepdims=True)
        mean_gx = (g * xhat).mean(axis=1, keepdims=True)
        out[...] = rstd[:, None] * (g - mean_g - xhat * mean_gx)
        if not param_grads:
            return out, None, None
        return out, (dy64 * xhat).sum(axis=0), dy64.sum(axis=0)

    # ----- dropout --------------------------------------------------------------
    def philox_words(self, n: int, seed: int, call: int, offset: int = 0) -> np.ndarray:
        """The Philox words of elements ``offset .. offset + n - 1``."""
        if n == 0:
            return np.empty(0, dtype=np.uint32)
        first, last = offset // 4, (offset + n - 1) // 4
        blocks = np.arange(first, last + 1, dtype=np.uint64)
        counter = (blocks & _MASK32, blocks >> np.uint64(32), call & 0xFFFFFFFF, call >> 32)
        words = philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32)).reshape(-1)
        start = offset - 4 * first
        return words[start : start + n]

    def dropout_mask(self, n: int, threshold: int, seed: int, call: int) -> np.ndarray:
        """Boolean keep-mask: word >= threshold."""
        return self.philox_words(n, seed, call) >= np.uint32(threshold)

    @_quiet
    def dropout_forward(self, x, threshold, scale, seed, call, out, bitmask, offset=0):
        """Inverted dropout of C-ordered data; optionally pack the keep-mask."""
        keep = self.philox_words(x.size, seed, call, offset).reshape(x.shape) >= np.uint32(
            threshold
        )
        out[...] = np.where(keep, x * scale, x.dtype.type(0))
        if bitmask is not None:
            bitmask[...] = np.packbits(keep.reshape(-1), bitorder="little")
        return out

    @_quiet
    def dropout_apply_bitmask(self, dy, bitmask, scale, out):
        """``dy * scale`` where the packed bitmask is set, else 0."""
        keep = np.unpackbits(bitmask, count=dy.size, bitorder="little").astype(bool)
        keep = keep.reshape(dy.shape)
        out[...] = np.where(keep, dy * scale, dy.dtype.type(0))
        return out


backend = NumpyBackend()
