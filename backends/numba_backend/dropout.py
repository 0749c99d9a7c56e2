"""Dropout kernels: Philox keep-masks applied to flat C-ordered data.

Local element ``j`` is global element ``offset + j`` (a chunk of a larger array
passes its offset). A head of at most three elements up to the next whole
counter block is done one element at a time; the rest is cut into tiles of
:data:`~.philox.TILE` elements, grouped into parallel tasks, and made a
:data:`~.philox.CHUNK` of 128 elements at a time: the chunk's keep bits come straight
from the Philox rounds as two ``uint64`` (:func:`.philox.keep_bits128`, no word is
stored), are stored as its 16 bitmask bytes when the bitmask is wanted (the offset is
then 0, so chunks own whole bytes) and select the scaled values 64 at a time in one
vector select (:func:`.bitmask.select64_mask`). Read prefetches of ``x`` :data:`AHEAD` bytes on keep
the memory busy during the chunks' arithmetic (docs/benchmarks.md, "Kernel tuning").

The backward selects 64 elements at a time straight from a ``uint64`` of the
bitmask (:func:`.bitmask.select64_bits`: with AVX-512 a mask move and masked
multiplies), with read prefetches of ``dy`` :data:`APPLY_AHEAD` bytes on; the
last ``size % 64`` elements go one at a time.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .bitmask import WIDTH, put64, select64_bits, select64_mask, unpack64
from .jit import inline_jit, kernel, task_jit
from .philox import CHUNK, TILE, TILES_PER_TASK, edge_word, head_and_tiles, keep_bits128
from .prefetch import LINE, prefetch_read

#: How many bytes of ``x`` ahead the forward's read prefetches run.
AHEAD = 4096
#: How many bytes of ``dy`` ahead the backward's read prefetches run.
APPLY_AHEAD = 4096

__all__ = ["apply_bitmask", "dropout", "dropout_mask"]

#: The ``key`` argument's type: ``(c2, c3, k0, k1)`` (see :func:`.philox.key_words`).
Key = tuple[np.uint64, np.uint64, np.uint64, np.uint64]


@inline_jit
def _prefetch_chunk(x, e):
    """Start loading the lines of the chunk :data:`AHEAD` bytes after element ``e`` of
    ``x`` (past the task's end too, which the same thread usually runs next, but never
    past the array)."""
    ahead = e + AHEAD // x.itemsize
    if ahead + CHUNK <= x.size:
        for line in range(0, CHUNK, max(1, LINE // x.itemsize)):
            prefetch_read(x, ahead + line)


@inline_jit
def _drop_tail(x, out, bits, pack, e, e1, block, thr, scale, key):
    """Elements ``e .. e1 - 1`` (fewer than a chunk, from block ``block``), one at a time,
    and with ``pack`` their bitmask bytes (``e`` a multiple of 8; the bits of elements
    past ``e1`` stay clear)."""
    low, high = keep_bits128(block, key, thr)
    zero = x.dtype.type(0)
    for i in range(e1 - e):
        keep = low if i < WIDTH else high
        out[e + i] = x[e + i] * scale if (keep >> np.uint64(i % WIDTH)) & 1 else zero
    if pack:
        for q in range((e1 - e + 7) // 8):
            keep = low if q < WIDTH // 8 else high
            byte = (keep >> np.uint64(8 * (q % (WIDTH // 8)))) & np.uint64(0xFF)
            if 8 * q + 8 > e1 - e:  # the last byte: no bits past e1
                byte &= (np.uint64(1) << np.uint64(e1 - e - 8 * q)) - np.uint64(1)
            bits[e // 8 + q] = np.uint8(byte)


@task_jit
def _dropout_tiles(x, out, bits, pack, t0, t1, head, block, thr, scale, key):
    """Tiles ``t0 .. t1 - 1`` of the body (local ``head`` on, blocks from ``block``).

    With ``pack`` the offset is 0 (``head == 0``), so element ``e`` has bit ``e % 8`` of
    bitmask byte ``e // 8``.
    """
    e0 = head + t0 * TILE
    e1 = min(x.size, head + t1 * TILE)
    full = e0 + (e1 - e0) // CHUNK * CHUNK
    for e in range(e0, full, CHUNK):
        _prefetch_chunk(x, e)
        low, high = keep_bits128(block + np.uint64((e - head) // 4), key, thr)
        if pack:
            put64(bits, e // 8, low)
            put64(bits, e // 8 + WIDTH // 8, high)
        select64_mask(x, e, low, scale, out)
        select64_mask(x, e + WIDTH, high, scale, out)
    if full < e1:
        _drop_tail(x, out, bits, pack, full, e1, block + np.uint64((full - head) // 4), thr,
                   scale, key)  # fmt: skip


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


@inline_jit
def _mask_part(mask, e, n, keep):
    """``mask[e + i] = bit i of keep`` for ``i < n <= 64``."""
    if n == WIDTH:
        unpack64(keep, mask, e)
    else:
        for i in range(n):
            mask[e + i] = (keep >> np.uint64(i)) & 1 != 0


@task_jit
def _mask_tiles(mask, t0, t1, thr, key):
    """Tiles ``t0 .. t1 - 1`` of :func:`dropout_mask`."""
    e1 = min(mask.size, t1 * TILE)
    for e in range(t0 * TILE, e1, CHUNK):
        low, high = keep_bits128(np.uint64(e // 4), key, thr)
        _mask_part(mask, e, min(WIDTH, e1 - e), low)
        if e + WIDTH < e1:
            _mask_part(mask, e + WIDTH, min(WIDTH, e1 - e - WIDTH), high)


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
