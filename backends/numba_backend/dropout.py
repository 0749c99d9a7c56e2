"""Dropout kernels: Philox keep-masks applied to flat C-ordered data.

Local element ``j`` is global element ``offset + j`` (a chunk of a larger array
passes its offset). A head of at most three elements up to the next whole
counter block is a short tile of its own in task 0; the rest is cut into tiles of
:data:`~.philox.TILE` elements (see :func:`.philox.task_tiles`), grouped into
parallel tasks.
With a bitmask the offset is 0, so every tile owns whole bitmask bytes; the
select loop also stores a 0/1 keep byte per element, and one multiply per eight
of them gathers their bits into a bitmask byte. Packing then costs a forward a
fraction of what keep-nibbles made in the Philox loop cost (docs/benchmarks.md,
"Kernel tuning").

The backward expands each bitmask byte into eight 0/1 words of a tile buffer
(one vector shift per byte) and then selects, which vectorises; selecting
straight from the bits is several times slower.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import inline_jit, kernel, task_jit
from .philox import TILE, TILES_PER_TASK, task_count, task_tiles, tile_scratch, tile_span

#: Multiplying eight 0/1 bytes (a little-endian uint64) by this moves byte ``k``'s
#: bit to bit ``56 + k``, with no carries: the top byte is the packed bitmask byte.
_GATHER_BITS = np.uint64(0x0102040810204080)
_TOP_BYTE = np.uint64(56)

__all__ = ["apply_bitmask", "dropout", "dropout_mask", "pack_bits"]

#: The ``key`` argument's type: ``(c2, c3, k0, k1)`` (see :func:`.philox.key_words`).
Key = tuple[np.uint64, np.uint64, np.uint64, np.uint64]


@inline_jit
def pack_bits(keep, bits):
    """Pack the first ``8 * bits.size`` 0/1 bytes of ``keep`` into the bytes ``bits``."""
    keep8 = keep.view(np.uint64)  # eight keep bytes per uint64 (little-endian)
    for q in range(bits.size):
        bits[q] = np.uint8((keep8[q] * _GATHER_BITS) >> _TOP_BYTE)


@task_jit
def _dropout_tiles(x, out, bits, t, block0, lane0, thr, scale, key):
    """Task ``t`` of :func:`dropout` (its tiles: see :func:`~.philox.task_tiles`).

    ``bits`` is None, or the bitmask to pack the keep-mask into (then there is no
    head: the offset is 0, so every tile owns whole bitmask bytes).
    """
    zero = x.dtype.type(0)
    t32 = np.uint32(thr)
    scratch = tile_scratch()
    if bits is not None:
        keep = np.empty(TILE, np.uint8)
    head, i0, i1 = task_tiles(t, x.size, lane0)
    for i in range(i0, i1):
        e, valid, words = tile_span(i, x.size, head, block0, lane0, key, scratch)
        xs = x[e : e + valid]
        os = out[e : e + valid]
        if bits is None:
            for j in range(valid):
                os[j] = xs[j] * scale if words[j] >= t32 else zero
        else:
            for j in range(valid):
                k = words[j] >= t32
                keep[j] = np.uint8(k)
                os[j] = xs[j] * scale if k else zero
            nbytes = (valid + 7) // 8
            for j in range(valid, 8 * nbytes):
                keep[j] = 0
            pack_bits(keep, bits[e // 8 : e // 8 + nbytes])


@kernel
def dropout(
    x: np.ndarray,
    thr: np.uint64,
    scale: np.floating,
    key: Key,
    out: np.ndarray,
    bits: np.ndarray | None,
    block0: np.uint64,
    lane0: int,
) -> None:
    """Inverted dropout of flat data into ``out``; pack the keep-mask into ``bits``
    unless it is None (one specialisation each).

    ``thr`` is the uint64 keep threshold, ``scale`` a scalar of the data dtype,
    ``key`` the words ``(c2, c3, k0, k1)`` of ``call`` and ``seed``; the first
    element is word ``lane0`` of counter block ``block0`` (a uint64).
    """
    for tt in prange(task_count(x.size, lane0)):
        # the prange index is unsigned
        _dropout_tiles(x, out, bits, np.int64(tt), block0, lane0, thr, scale, key)


@task_jit
def _mask_tiles(mask, t, thr, key):
    """Task ``t`` of :func:`dropout_mask`."""
    t32 = np.uint32(thr)
    scratch = tile_scratch()
    _, i0, i1 = task_tiles(t, mask.size, 0)
    for i in range(i0, i1):
        e, valid, words = tile_span(i, mask.size, 0, np.uint64(0), 0, key, scratch)
        ms = mask[e : e + valid]
        for j in range(valid):
            ms[j] = words[j] >= t32


@kernel
def dropout_mask(n: int, thr: np.uint64, key: Key) -> np.ndarray:
    """Boolean keep-mask of elements ``0 .. n - 1``."""
    mask = np.empty(n, np.bool_)
    for tt in prange(task_count(n, 0)):
        _mask_tiles(mask, np.int64(tt), thr, key)  # the prange index is unsigned
    return mask


@task_jit
def _apply_tiles(dy, bits, scale, out, t0, t1):
    """Tiles ``t0 .. t1 - 1`` of :func:`apply_bitmask`."""
    zero = dy.dtype.type(0)
    keep = np.empty(TILE, np.uint32)
    for t in range(t0, t1):
        s = t * TILE
        valid = min(TILE, dy.size - s)
        bs = bits[s // 8 : s // 8 + (valid + 7) // 8]
        for q in range(bs.size):
            b = np.uint32(bs[q])
            keep[8 * q] = b & 1
            keep[8 * q + 1] = (b >> 1) & 1
            keep[8 * q + 2] = (b >> 2) & 1
            keep[8 * q + 3] = (b >> 3) & 1
            keep[8 * q + 4] = (b >> 4) & 1
            keep[8 * q + 5] = (b >> 5) & 1
            keep[8 * q + 6] = (b >> 6) & 1
            keep[8 * q + 7] = (b >> 7) & 1
        gs = dy[s : s + valid]
        os = out[s : s + valid]
        for i in range(valid):
            os[i] = gs[i] * scale if keep[i] != 0 else zero


@kernel
def apply_bitmask(dy: np.ndarray, bits: np.ndarray, scale: np.floating, out: np.ndarray) -> None:
    """``out = dy * scale`` where the packed bitmask is set, else 0 (flat data)."""
    tiles = (dy.size + TILE - 1) // TILE
    for tt in prange((tiles + TILES_PER_TASK - 1) // TILES_PER_TASK):
        t = np.int64(tt)  # the prange index is unsigned
        t0 = t * TILES_PER_TASK
        _apply_tiles(dy, bits, scale, out, t0, min(tiles, t0 + TILES_PER_TASK))
