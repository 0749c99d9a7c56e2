"""Philox4x32-10 and the dropout kernels: Philox words handed across a block in shared memory.

Element ``i`` of the C-ordered data gets word ``i % 4`` of
``philox4x32_10((lo32(i // 4), hi32(i // 4), lo32(call), hi32(call)), (lo32(seed), hi32(seed)))``
(see :mod:`normdrop.random`), the same words as every other backend. The 32x32->64
multiplies are done in uint64 with 32-bit masks, which the simulator runs as
NumPy scalars and the GPU compiles to integer multiplies: no ``mulhi`` intrinsic.
A block takes chunks of ``4 * blockDim.x`` elements: each thread computes one
Philox block (four words) into shared memory, then lane ``t`` handles the chunk's
elements ``t + k * blockDim.x`` (``k < 4``), so a warp touches consecutive
addresses; one lane packs each bitmask byte, so no two threads write the same
byte. All loops are grid-stride, grids sized from the multiprocessor count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from normdrop.random import PHILOX_MULTIPLIERS, PHILOX_WEYL

from ._arrays import empty, kernel_in, placeholder
from ._runtime import THREADS, cuda, device_blocks, kernel, launch, on_device

__all__ = [
    "dropout_apply_bitmask",
    "dropout_forward",
    "dropout_mask",
    "philox_words",
]

#: Philox words of one block's chunk (a compile-time constant for the shared array).
_CHUNK = 4 * THREADS

_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_M0, _M1 = (np.uint64(m) for m in PHILOX_MULTIPLIERS)
_W0, _W1 = (np.uint64(w) for w in PHILOX_WEYL)


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
def _fill_words(words, base, blocks, first, k0, k1, c2, c3):
    """Thread ``t`` puts the words of Philox block ``first + base + t`` at ``words[4t:4t+4]``.

    Shared index ``i`` then holds the word of the chunk's element ``i`` (global
    element ``4 * (first + base) + i``). Every thread of the block calls it: it
    synchronises before returning, so the words can be read at once.
    """
    t = cuda.threadIdx.x
    q = base + t
    if q < blocks:
        w0, w1, w2, w3 = _philox_block(first + np.uint64(q), k0, k1, c2, c3)
        words[4 * t] = w0
        words[4 * t + 1] = w1
        words[4 * t + 2] = w2
        words[4 * t + 3] = w3
    cuda.syncthreads()


@cuda.jit(device=True)
def _chunk_index(base, start, k):
    """Local element of shared slot ``k * blockDim.x + threadIdx.x`` of the chunk at ``base``."""
    return 4 * base + k * cuda.blockDim.x + cuda.threadIdx.x - start


@cuda.jit(device=True)
def _load4(x, j0, width, zero):
    """Elements ``j0 + k * width`` (``k = 0 .. 3``) of flat ``x``; ``zero`` outside it."""
    n = x.shape[0]
    j1 = j0 + width
    j2 = j1 + width
    j3 = j2 + width
    return (
        x[j0] if 0 <= j0 < n else zero,
        x[j1] if 0 <= j1 < n else zero,
        x[j2] if 0 <= j2 < n else zero,
        x[j3] if 0 <= j3 < n else zero,
    )


@cuda.jit(device=True)
def _keep(word, threshold, scale, v):
    """``v * scale`` when kept (``word >= threshold``), else 0, in ``v``'s dtype."""
    return v * scale if word >= threshold else scale - scale


@kernel
def _dropout_kernel(
    x, threshold, scale, first, start, blocks, k0, k1, c2, c3, out, bitmask, has_bitmask
):
    """Inverted dropout of flat data; element ``j`` is global element ``4 * first + start + j``.

    Grid-stride over chunks of ``blockDim.x`` Philox blocks (four elements each).
    Each thread computes one Philox block into shared memory; then lane ``t``
    takes the chunk's elements ``t, t + T, t + 2T, t + 3T`` (``T = blockDim.x``),
    so a warp reads and writes consecutive addresses, and loads all four before
    storing any (``out`` may be ``x``: no load waits for a store). With
    ``has_bitmask`` (only for ``offset == 0``) lane ``t < T / 2`` also packs the
    keep-bits of the chunk's elements ``8t .. 8t + 7`` into one byte.
    """
    words = cuda.shared.array(_CHUNK, np.uint32)
    n = x.shape[0]
    t = cuda.threadIdx.x
    width = cuda.blockDim.x
    base = cuda.blockIdx.x * width
    while base < blocks:
        _fill_words(words, base, blocks, first, k0, k1, c2, c3)
        j0 = _chunk_index(base, start, 0)
        j1 = j0 + width
        j2 = j1 + width
        j3 = j2 + width
        v0, v1, v2, v3 = _load4(x, j0, width, scale - scale)
        if 0 <= j0 < n:
            out[j0] = _keep(words[t], threshold, scale, v0)
        if 0 <= j1 < n:
            out[j1] = _keep(words[t + width], threshold, scale, v1)
        if 0 <= j2 < n:
            out[j2] = _keep(words[t + 2 * width], threshold, scale, v2)
        if 0 <= j3 < n:
            out[j3] = _keep(words[t + 3 * width], threshold, scale, v3)
        if has_bitmask and 2 * t < width:
            byte = base // 2 + t
            if byte < bitmask.shape[0]:
                bits = 0
                for b in range(8):
                    if 4 * base + 8 * t + b < n and words[8 * t + b] >= threshold:
                        bits |= 1 << b
                bitmask[byte] = bits
        cuda.syncthreads()
        base += cuda.gridDim.x * width


@kernel
def _apply_bitmask_kernel(dy, bitmask, scale, out):
    """``out = dy * scale`` where the packed bit is set, else 0.

    Lane ``t`` takes elements ``t, t + T, t + 2T, t + 3T`` of each chunk of ``4T``
    (consecutive addresses across a warp), loading all four before storing.
    """
    n = dy.shape[0]
    width = cuda.blockDim.x
    j0 = cuda.blockIdx.x * 4 * width + cuda.threadIdx.x
    while j0 - cuda.threadIdx.x < n:
        j1 = j0 + width
        j2 = j1 + width
        j3 = j2 + width
        v0, v1, v2, v3 = _load4(dy, j0, width, scale - scale)
        if j0 < n:
            out[j0] = v0 * scale if (bitmask[j0 >> 3] >> (j0 & 7)) & 1 else scale - scale
        if j1 < n:
            out[j1] = v1 * scale if (bitmask[j1 >> 3] >> (j1 & 7)) & 1 else scale - scale
        if j2 < n:
            out[j2] = v2 * scale if (bitmask[j2 >> 3] >> (j2 & 7)) & 1 else scale - scale
        if j3 < n:
            out[j3] = v3 * scale if (bitmask[j3 >> 3] >> (j3 & 7)) & 1 else scale - scale
        j0 += cuda.gridDim.x * 4 * width


@kernel
def _words_kernel(first, start, blocks, k0, k1, c2, c3, as_mask, threshold, out):
    """Philox words from global element ``4 * first + start``, chunked like the dropout.

    With ``as_mask``, the keep-mask instead: 1 where ``word >= threshold``, else 0.
    """
    words = cuda.shared.array(_CHUNK, np.uint32)
    t = cuda.threadIdx.x
    width = cuda.blockDim.x
    base = cuda.blockIdx.x * width
    while base < blocks:
        _fill_words(words, base, blocks, first, k0, k1, c2, c3)
        for k in range(4):
            j = _chunk_index(base, start, k)
            if 0 <= j < out.shape[0]:
                w = words[t + k * width]
                if as_mask:
                    out[j] = 1 if w >= threshold else 0
                else:
                    out[j] = w
        cuda.syncthreads()
        base += cuda.gridDim.x * width


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


def _launch_philox(
    fn: Any, s: Any, n: int, offset: int, seed: int, call: int, head: tuple, tail: tuple
) -> None:
    """Launch ``fn(*head, first, start, blocks, k0, k1, c2, c3, *tail)`` on stream ``s``.

    Over the Philox blocks of elements ``offset .. offset + n - 1`` (``n >= 1``):
    ``blocks`` of them from ``first``, element ``offset`` being word ``start`` of
    block ``first``; ``k0 .. c3`` the halves of seed and call.
    """
    first, start = divmod(offset, 4)
    blocks = (start + n + 3) // 4
    counters = (np.uint64(first), start, blocks, *_key_and_call(seed, call))
    launch(fn, device_blocks(blocks), THREADS, s, *head, *counters, *tail)


def _launch_words(out: Any, n: int, seed: int, call: int, offset: int, threshold: Any) -> Any:
    """Fill ``out`` with the words of elements ``offset ..`` (or, with a threshold, the mask)."""
    if n:
        limit = np.uint64(0 if threshold is None else threshold)
        with on_device(out) as s:
            tail = (threshold is not None, limit, out)
            _launch_philox(_words_kernel, s, n, offset, seed, call, (), tail)
    return out


def philox_words(n: int, seed: int, call: int, offset: int = 0) -> Any:
    """The uint32 Philox words of elements ``offset .. offset + n - 1``: a device array ``(n,)``."""
    return _launch_words(empty((n,), np.uint32), n, seed, call, offset, None)


def dropout_mask(n: int, threshold: int, seed: int, call: int) -> Any:
    """The boolean keep-mask (word >= threshold) of ``n`` elements: a device array ``(n,)``."""
    out = empty((n,), np.bool_)
    _launch_words(out.view(np.uint8), n, seed, call, 0, threshold)  # 0/1 bytes: no bool stores
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
    if n:
        head = (kernel_in(x.reshape(-1)), np.uint64(threshold), x.dtype.type(scale))
        with on_device(x) as s:
            bits = placeholder(np.uint8) if bitmask is None else bitmask
            tail = (out.reshape(-1), bits, bitmask is not None)
            _launch_philox(_dropout_kernel, s, n, offset, seed, call, head, tail)
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
    n = dy.size
    if n:
        with on_device(dy) as s:
            launch(
                _apply_bitmask_kernel,
                device_blocks(-(-n // 4)),
                THREADS,
                s,
                kernel_in(dy.reshape(-1)),
                kernel_in(bitmask),
                dy.dtype.type(scale),
                out.reshape(-1),
            )
    return out
