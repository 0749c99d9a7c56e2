"""Dropout kernels: Philox keep-masks applied to flat C-ordered data.

Local element ``j`` is global element ``offset + j`` (a chunk of a larger array
passes its offset). A head of at most three elements up to the next whole
counter block is done one element at a time; the rest is cut into tiles of
:data:`~.philox.TILE` elements (see :mod:`.philox`), grouped into parallel tasks.
With a bitmask the offset is 0, so every tile owns whole bitmask bytes, packed
straight from the tile's words 64 at a time (:func:`.bitmask.pack_at_least`).
While a tile's words are made, the next tile's cache lines are prefetched (for
reading ``x``, for writing ``out``), so that the memory traffic flows during the
arithmetic instead of taking turns with it (docs/benchmarks.md, "Kernel tuning").

The backward selects 64 elements at a time straight from a ``uint64`` of the
bitmask (:func:`.bitmask.select64_bits`: with AVX-512 a mask move and masked
multiplies), with read prefetches of ``dy`` :data:`APPLY_AHEAD` bytes on; the
last ``size % 64`` elements go one at a time.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .bitmask import WIDTH, pack_at_least, select64_bits
from .jit import inline_jit, kernel, task_jit
from .philox import (
    TILE,
    TILES_PER_TASK,
    edge_word,
    head_and_tiles,
    interleave,
    plane_words,
    tile_scratch,
    tile_span,
)
from .prefetch import LINE, prefetch_read, prefetch_write

#: Philox blocks made per call of the word generator; around each call a share of the
#: next tile's lines is prefetched in two rounds (16 lines of float32 data), so that
#: the loads stream during the arithmetic (see docs/benchmarks.md, "Kernel tuning").
GROUP = 64
#: How many tiles ahead the prefetches run.
AHEAD = 1
#: How many bytes of ``dy`` ahead the backward's read prefetches run.
APPLY_AHEAD = 4096

__all__ = ["apply_bitmask", "dropout", "dropout_mask"]

#: The ``key`` argument's type: ``(c2, c3, k0, k1)`` (see :func:`.philox.key_words`).
Key = tuple[np.uint64, np.uint64, np.uint64, np.uint64]


@inline_jit
def _prefetch_tile(x, out, e, l0, l1):
    """Start loading lines ``l0 .. l1 - 1`` of ``x`` from element ``e`` on, and claiming
    those of ``out``."""
    step = max(1, LINE // x.itemsize)
    for line in range(l0, l1):
        prefetch_read(x, e + line * step)
        prefetch_write(out, e + line * step)


@task_jit
def _dropout_tiles(x, out, bits, pack, t0, t1, head, block, thr, scale, key):
    """Tiles ``t0 .. t1 - 1`` of the body (local ``head`` on, blocks from ``block``)."""
    zero = x.dtype.type(0)
    t32 = np.uint32(thr)
    planes, words = tile_scratch()
    step = max(1, LINE // x.itemsize)
    for t in range(t0, t1):
        e = head + t * TILE
        valid = min(TILE, x.size - e)
        nb = (valid + 3) // 4
        # tile t + AHEAD's lines stream in while this tile's words are made
        ahead = e + AHEAD * TILE
        lines = 0
        if t + AHEAD < t1:
            lines = (min(TILE, x.size - ahead) + step - 1) // step
        first = block + np.uint64(t * (TILE // 4))
        for g0 in range(0, nb, GROUP):
            g1 = min(nb, g0 + GROUP)
            # the group's share of the lines, half before and half after its words
            lm = (g0 + g1) // 2 * lines // nb
            _prefetch_tile(x, out, ahead, g0 * lines // nb, lm)
            plane_words(planes, g0, g1, first, key)
            _prefetch_tile(x, out, ahead, lm, g1 * lines // nb)
        interleave(planes, nb, words)
        xs = x[e : e + valid]
        os = out[e : e + valid]
        for i in range(valid):
            os[i] = xs[i] * scale if words[i] >= t32 else zero
        if pack:
            pack_at_least(words, valid, t32, bits[(e - head) // 8 :])


@kernel
def dropout(
    x: np.ndarray,
    thr: np.uint64,
    scale: np.floating,
    key: Key,
    out: np.ndarray,
    bits: np.ndarray,
    pack: bool,
    block0: np.uint64,
    lane0: int,
) -> None:
    """Inverted dropout of flat data into ``out``; pack the keep-mask when ``pack``.

    ``thr`` is the uint64 keep threshold, ``scale`` a scalar of the data dtype,
    ``key`` the words ``(c2, c3, k0, k1)`` of ``call`` and ``seed``; the first
    element is word ``lane0`` of counter block ``block0`` (a uint64).
    """
    head, tiles = head_and_tiles(x.size, lane0)
    first = block0 + np.uint64(1 if head > 0 else 0)
    for tt in prange((tiles + TILES_PER_TASK - 1) // TILES_PER_TASK):
        t = np.int64(tt)  # the prange index is unsigned
        t0 = t * TILES_PER_TASK
        t1 = min(tiles, t0 + TILES_PER_TASK)
        _dropout_tiles(x, out, bits, pack, t0, t1, head, first, thr, scale, key)
    zero = x.dtype.type(0)
    for j in range(head):
        out[j] = x[j] * scale if edge_word(block0, lane0 + j, key) >= thr else zero


@task_jit
def _mask_tiles(mask, t0, t1, thr, key):
    """Tiles ``t0 .. t1 - 1`` of :func:`dropout_mask`."""
    t32 = np.uint32(thr)
    scratch = tile_scratch()
    for t in range(t0, t1):
        e, valid, words = tile_span(t, mask.size, 0, np.uint64(0), key, scratch)
        ms = mask[e : e + valid]
        for i in range(valid):
            ms[i] = words[i] >= t32


@kernel
def dropout_mask(n: int, thr: np.uint64, key: Key) -> np.ndarray:
    """Boolean keep-mask of elements ``0 .. n - 1``."""
    mask = np.empty(n, np.bool_)
    tiles = (n + TILE - 1) // TILE
    for tt in prange((tiles + TILES_PER_TASK - 1) // TILES_PER_TASK):
        t = np.int64(tt)  # the prange index is unsigned
        t0 = t * TILES_PER_TASK
        _mask_tiles(mask, t0, min(tiles, t0 + TILES_PER_TASK), thr, key)
    return mask


@task_jit
def _apply_tiles(dy, bits, scale, out, t0, t1):
    """Tiles ``t0 .. t1 - 1`` of :func:`apply_bitmask`."""
    s0, s1 = t0 * TILE, min(dy.size, t1 * TILE)
    full = s0 + (s1 - s0) // WIDTH * WIDTH
    step = max(1, LINE // dy.itemsize)
    ahead = APPLY_AHEAD // dy.itemsize
    for s in range(s0, full, WIDTH):
        # the lines of dy a few chunks on (past this task's end too) stream in meanwhile
        if s + ahead + WIDTH <= dy.size:
            for line in range(0, WIDTH, step):
                prefetch_read(dy, s + ahead + line)
        select64_bits(dy, s, bits, scale, out)
    zero = dy.dtype.type(0)
    for i in range(full, s1):
        out[i] = dy[i] * scale if (bits[i // 8] >> (i % 8)) & 1 else zero


@kernel
def apply_bitmask(dy: np.ndarray, bits: np.ndarray, scale: np.floating, out: np.ndarray) -> None:
    """``out = dy * scale`` where the packed bitmask is set, else 0 (flat data)."""
    tiles = (dy.size + TILE - 1) // TILE
    for tt in prange((tiles + TILES_PER_TASK - 1) // TILES_PER_TASK):
        t = np.int64(tt)  # the prange index is unsigned
        t0 = t * TILES_PER_TASK
        _apply_tiles(dy, bits, scale, out, t0, min(tiles, t0 + TILES_PER_TASK))
