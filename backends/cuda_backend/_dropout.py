"""Philox4x32-10 and the dropout kernels: one thread per Philox block of four elements.

Element ``i`` of the C-ordered data gets word ``i % 4`` of
``philox4x32_10((lo32(i // 4), hi32(i // 4), lo32(call), hi32(call)), (lo32(seed), hi32(seed)))``
(see :mod:`normdrop.random`), the same words as every other backend. The 32x32->64
multiplies are done in uint64 with 32-bit masks, which the simulator runs as
NumPy scalars and the GPU compiles to integer multiplies: no ``mulhi`` intrinsic.
Kernels that pack the bitmask give each thread one byte (two Philox blocks), so
no two threads write the same byte. All loops are grid-stride.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import empty, kernel_in, kernel_out
from ._runtime import THREADS, blocks_for, cuda, stream

__all__ = [
    "dropout_apply_bitmask",
    "dropout_forward",
    "dropout_mask",
    "philox_words",
]

_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)


# ----------------------------------------------------------------------------- kernels
@cuda.jit(device=True)
def _philox_block(q, k0, k1, c2, c3):
    """The four uint64 (< 2**32) Philox4x32-10 words of uint64 counter block ``q``."""
    c0 = q & _MASK
    c1 = q >> _SHIFT
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> _SHIFT) ^ c1 ^ k0,
            p1 & _MASK,
            (p0 >> _SHIFT) ^ c3 ^ k1,
            p0 & _MASK,
        )
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return c0, c1, c2, c3


@cuda.jit(device=True)
def _drop_one(x, out, i, word, threshold, scale):
    """Write element ``i`` (if it exists): ``x * scale`` when kept, else 0. Return the keep bit."""
    if i < 0 or i >= x.shape[0]:
        return 0
    if word >= threshold:
        out[i] = x[i] * scale
        return 1
    out[i] = 0
    return 0


@cuda.jit
def _dropout_kernel(x, threshold, scale, first, start, blocks, k0, k1, c2, c3, out):
    """Inverted dropout of flat data; element ``j`` is global element ``4 * first + start + j``.

    Thread ``t`` takes Philox block ``first + t``: four elements, one call.
    """
    t = cuda.grid(1)
    while t < blocks:
        w0, w1, w2, w3 = _philox_block(first + np.uint64(t), k0, k1, c2, c3)
        i = 4 * t - start
        _drop_one(x, out, i, w0, threshold, scale)
        _drop_one(x, out, i + 1, w1, threshold, scale)
        _drop_one(x, out, i + 2, w2, threshold, scale)
        _drop_one(x, out, i + 3, w3, threshold, scale)
        t += cuda.gridsize(1)


@cuda.jit
def _dropout_bitmask_kernel(x, threshold, scale, k0, k1, c2, c3, out, bitmask):
    """Inverted dropout that also packs the keep-mask: one byte (eight elements) per thread."""
    b = cuda.grid(1)
    while b < bitmask.shape[0]:
        bits = 0
        for half in range(2):
            w0, w1, w2, w3 = _philox_block(np.uint64(2 * b + half), k0, k1, c2, c3)
            i = 8 * b + 4 * half
            shift = 4 * half
            bits |= _drop_one(x, out, i, w0, threshold, scale) << shift
            bits |= _drop_one(x, out, i + 1, w1, threshold, scale) << (shift + 1)
            bits |= _drop_one(x, out, i + 2, w2, threshold, scale) << (shift + 2)
            bits |= _drop_one(x, out, i + 3, w3, threshold, scale) << (shift + 3)
        bitmask[b] = bits
        b += cuda.gridsize(1)


@cuda.jit
def _apply_bitmask_kernel(dy, bitmask, scale, out):
    """``out = dy * scale`` where the packed bit is set, else 0: one byte per thread."""
    b = cuda.grid(1)
    while b < bitmask.shape[0]:
        byte = int(bitmask[b])
        for k in range(8):
            i = 8 * b + k
            if i < dy.shape[0]:
                if (byte >> k) & 1:
                    out[i] = dy[i] * scale
                else:
                    out[i] = 0
        b += cuda.gridsize(1)


@cuda.jit(device=True)
def _put_word(out, e, word):
    """Store ``word`` at ``out[e]`` when ``e`` is inside ``out``."""
    if 0 <= e < out.shape[0]:
        out[e] = word


@cuda.jit
def _words_kernel(first, start, blocks, k0, k1, c2, c3, out):
    """Philox words from global element ``4 * first + start``; thread ``t`` takes ``first + t``."""
    t = cuda.grid(1)
    while t < blocks:
        w0, w1, w2, w3 = _philox_block(first + np.uint64(t), k0, k1, c2, c3)
        e = 4 * t - start
        _put_word(out, e, w0)
        _put_word(out, e + 1, w1)
        _put_word(out, e + 2, w2)
        _put_word(out, e + 3, w3)
        t += cuda.gridsize(1)


@cuda.jit(device=True)
def _put_keep(out, i, word, threshold):
    """Store ``word >= threshold`` at ``out[i]`` when ``i`` is inside ``out``."""
    if i < out.shape[0]:
        out[i] = word >= threshold


@cuda.jit
def _mask_kernel(threshold, k0, k1, c2, c3, out):
    """Boolean keep-mask, one Philox block per thread."""
    q = cuda.grid(1)
    while 4 * q < out.shape[0]:
        w0, w1, w2, w3 = _philox_block(np.uint64(q), k0, k1, c2, c3)
        i = 4 * q
        _put_keep(out, i, w0, threshold)
        _put_keep(out, i + 1, w1, threshold)
        _put_keep(out, i + 2, w2, threshold)
        _put_keep(out, i + 3, w3, threshold)
        q += cuda.gridsize(1)


# ----------------------------------------------------------------------------- launches
def _key_and_call(seed: int, call: int) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """``(k0, k1, c2, c3)``: the 32-bit halves of seed and call, as uint64 kernel arguments."""
    mask = 0xFFFFFFFF
    return (
        np.uint64(seed & mask),
        np.uint64((seed >> 32) & mask),
        np.uint64(call & mask),
        np.uint64((call >> 32) & mask),
    )


def _span(n: int, offset: int) -> tuple[np.uint64, int, int]:
    """``(first, start, blocks)``: the Philox blocks of elements ``offset .. offset + n - 1``."""
    first, start = divmod(offset, 4)
    return np.uint64(first), start, (start + n + 3) // 4


def philox_words(n: int, seed: int, call: int, offset: int = 0) -> Any:
    """The uint32 Philox words of elements ``offset .. offset + n - 1``, on the device.

    Parameters
    ----------
    n, seed, call, offset : int

    Returns
    -------
    device array of uint32, shape (n,)
    """
    out = empty((n,), np.uint32)
    if n:
        first, start, blocks = _span(n, offset)
        _words_kernel[blocks_for(blocks), THREADS, stream()](
            first, start, blocks, *_key_and_call(seed, call), kernel_out(out)
        )
    return out


def dropout_mask(n: int, threshold: int, seed: int, call: int) -> Any:
    """The boolean keep-mask (word >= threshold) of ``n`` elements, on the device.

    Parameters
    ----------
    n, threshold, seed, call : int

    Returns
    -------
    device array of bool, shape (n,)
    """
    out = empty((n,), np.bool_)
    if n:
        _mask_kernel[blocks_for(-(-n // 4)), THREADS, stream()](
            np.uint64(threshold), *_key_and_call(seed, call), kernel_out(out)
        )
    return out


def dropout_forward(
    x: Any,
    threshold: int,
    scale: Any,
    seed: int,
    call: int,
    out: Any,
    bitmask: Any | None,
    offset: int = 0,
) -> Any:
    """Write inverted dropout of ``x`` (C order) into ``out``; pack the keep-mask into ``bitmask``.

    Parameters
    ----------
    x : C-contiguous device array of any shape
    threshold : int
        Keep an element when its word is ``>= threshold``.
    scale : scalar
        Factor of kept elements, applied in ``x``'s dtype.
    seed, call : int
    out : device array like ``x`` (may be ``x``)
    bitmask : uint8 device array of ``ceil(n / 8)`` bytes, or None
        Only with ``offset == 0``.
    offset : int, default 0
        Global index of ``x``'s first element (``x`` is a chunk of a larger array).

    Returns
    -------
    out
    """
    n = x.size
    flat_x = kernel_in(x.reshape(-1))
    flat_out = kernel_out(out.reshape(-1))
    threshold_, scale_ = np.uint64(threshold), x.dtype.type(scale)
    if bitmask is not None:
        if bitmask.shape[0]:
            _dropout_bitmask_kernel[blocks_for(bitmask.shape[0]), THREADS, stream()](
                flat_x,
                threshold_,
                scale_,
                *_key_and_call(seed, call),
                flat_out,
                kernel_out(bitmask),
            )
    elif n:
        first, start, blocks = _span(n, offset)
        _dropout_kernel[blocks_for(blocks), THREADS, stream()](
            flat_x, threshold_, scale_, first, start, blocks, *_key_and_call(seed, call), flat_out
        )
    return out


def dropout_apply_bitmask(dy: Any, bitmask: Any, scale: Any, out: Any) -> Any:
    """Write ``dy * scale`` where the packed bitmask is set, else 0, into ``out``.

    Parameters
    ----------
    dy : C-contiguous device array of any shape
    bitmask : uint8 device array of ``ceil(n / 8)`` bytes
    scale : scalar
        Applied in ``dy``'s dtype.
    out : device array like ``dy`` (may be ``dy``)

    Returns
    -------
    out
    """
    if bitmask.shape[0]:
        _apply_bitmask_kernel[blocks_for(bitmask.shape[0]), THREADS, stream()](
            kernel_in(dy.reshape(-1)),
            kernel_in(bitmask),
            dy.dtype.type(scale),
            kernel_out(out.reshape(-1)),
        )
    return out
