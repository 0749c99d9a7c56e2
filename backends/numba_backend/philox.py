"""Philox4x32-10 (Random123) and the word stream of the dropout counter layout.

Element ``i`` of a mask with ``(seed, call)`` takes word ``i % 4`` of
``philox4x32_10((lo32(i // 4), hi32(i // 4), lo32(call), hi32(call)), (lo32(seed),
hi32(seed)))`` (see :mod:`normdrop.random`). The rounds work on uint64 values below
2**32, so that each 32x32->64 multiply is one ``vpmuludq`` lane when LLVM
vectorises the loop around :func:`philox_block`, and every call yields four words.

Words are made a tile of :data:`TILE` elements at a time: a vectorised loop writes
the four words of each block into four planes (unit-stride stores), a second
loop interleaves them into element order. Storing the four words interleaved
straight from the Philox loop is slower, and so is applying a mask read across
the planes (measured on AVX2; see docs/benchmarks.md, "Kernel tuning").
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import TASK_SIZE, inline_jit, kernel, task_jit

__all__ = [
    "TILE",
    "edge_word",
    "philox_block",
    "philox_words",
    "key_words",
    "split64",
    "task_count",
    "task_tiles",
    "tile_scratch",
    "tile_span",
    "tile_words",
]

#: Elements per tile: 4 KiB of words, 128 bitmask bytes; a multiple of 8.
TILE = 1024
#: Tiles per parallel task.
TILES_PER_TASK = TASK_SIZE // TILE

_MASK, _SHIFT = np.uint64(0xFFFFFFFF), np.uint64(32)
#: The Philox4x32 multipliers and Weyl key increments (Random123).
_M0, _M1, _W0, _W1 = map(np.uint64, (0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85))


def split64(value: int) -> tuple[np.uint64, np.uint64]:
    """Return the low and high 32-bit words of a 64-bit integer as uint64 scalars.

    Parameters
    ----------
    value : int
        An integer in ``[0, 2**64)``.

    Returns
    -------
    tuple of numpy.uint64
    """
    return np.uint64(value & 0xFFFFFFFF), np.uint64(value >> 32)


def key_words(seed: int, call: int) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """``(c2, c3, k0, k1)``: the 32-bit words of ``call`` (the counter's upper half) and of
    ``seed`` (the key), the ``key`` argument of the dropout kernels.

    Parameters
    ----------
    seed, call : int
        Integers in ``[0, 2**64)``.

    Returns
    -------
    tuple of numpy.uint64
    """
    return (*split64(call), *split64(seed))


@inline_jit
def philox_block(
    block: np.uint64, key: tuple[np.uint64, np.uint64, np.uint64, np.uint64]
) -> tuple[np.uint64, np.uint64, np.uint64, np.uint64]:
    """The four words of Philox4x32-10 for counter ``(lo32(block), hi32(block), c2, c3)``
    and key ``(k0, k1)``, where ``key`` is ``(c2, c3, k0, k1)`` (see :func:`key_words`).

    ``block`` is a uint64; every other value a uint64 below 2**32.
    """
    c2, c3, k0, k1 = key
    c0 = block & _MASK
    c1 = block >> _SHIFT
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = (p1 >> _SHIFT) ^ c1 ^ k0, p1 & _MASK, (p0 >> _SHIFT) ^ c3 ^ k1, p0 & _MASK
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return c0, c1, c2, c3


@inline_jit
def edge_word(block0: np.uint64, lane: int, key: tuple) -> np.uint64:
    """Word of the element ``lane`` words after word 0 of block ``block0`` (scalar)."""
    return philox_block(block0 + np.uint64(lane // 4), key)[lane % 4]


@inline_jit
def tile_scratch() -> np.ndarray:
    """Per-task buffer of :func:`tile_words`: the four word planes, then the words."""
    return np.empty(2 * TILE, np.uint32)


@inline_jit
def tile_words(block: np.uint64, nblocks: int, key: tuple, scratch: np.ndarray) -> np.ndarray:
    """Words of ``nblocks`` blocks from ``block`` into ``scratch`` in element order.

    Returns the words array.
    """
    p0 = scratch[: TILE // 4]
    p1 = scratch[TILE // 4 : TILE // 2]
    p2 = scratch[TILE // 2 : 3 * TILE // 4]
    p3 = scratch[3 * TILE // 4 : TILE]
    words = scratch[TILE:]
    for i in range(nblocks):
        w0, w1, w2, w3 = philox_block(block + np.uint64(i), key)
        p0[i] = w0
        p1[i] = w1
        p2[i] = w2
        p3[i] = w3
    for i in range(nblocks):
        words[4 * i] = p0[i]
        words[4 * i + 1] = p1[i]
        words[4 * i + 2] = p2[i]
        words[4 * i + 3] = p3[i]
    return words


@inline_jit
def task_tiles(t, n, lane0):
    """The tiles of task ``t`` over ``n`` elements from word ``lane0`` of a counter block:
    ``(head, i0, i1)``, tiles ``i0 .. i1 - 1`` (see :func:`tile_span`).

    The ``head`` elements up to the next whole block (at most three) are tile ``-1``,
    in task 0; the rest is cut into tiles of :data:`TILE` elements, grouped into tasks
    of :data:`TILES_PER_TASK` tiles.
    """
    head = min(n, (4 - lane0) % 4)
    tiles = (n - head + TILE - 1) // TILE
    i0 = t * TILES_PER_TASK
    return head, -1 if i0 == 0 and head > 0 else i0, min(tiles, i0 + TILES_PER_TASK)


@inline_jit
def task_count(n, lane0):
    """Number of tasks of :func:`task_tiles` (at least one: task 0 does the head)."""
    tiles = (n - min(n, (4 - lane0) % 4) + TILE - 1) // TILE
    return max(1, (tiles + TILES_PER_TASK - 1) // TILES_PER_TASK)


@inline_jit
def tile_span(i, n, head, block0, lane0, key, scratch):
    """Tile ``i`` of :func:`task_tiles` (``-1``: the head) of ``n`` elements from word
    ``lane0`` of counter block ``block0``: its first element, its size, and its words."""
    e = max(0, head + i * TILE)
    valid = min(n, head + (i + 1) * TILE) - e
    word = lane0 + e  # from word 0 of block0; a multiple of 4 except in the head
    lane = word % 4
    words = tile_words(block0 + np.uint64(word // 4), (lane + valid + 3) // 4, key, scratch)
    return e, valid, words[lane : lane + valid]


@task_jit
def _words_tiles(out, t, block0, lane0, key):
    """Task ``t`` of :func:`philox_words`."""
    scratch = tile_scratch()
    head, i0, i1 = task_tiles(t, out.size, lane0)
    for i in range(i0, i1):
        e, valid, words = tile_span(i, out.size, head, block0, lane0, key, scratch)
        o = out[e : e + valid]
        for j in range(valid):
            o[j] = words[j]


@kernel
def philox_words(
    n: int,
    block0: np.uint64,
    lane0: int,
    key: tuple[np.uint64, np.uint64, np.uint64, np.uint64],
) -> np.ndarray:
    """uint32 words of ``n`` elements from word ``lane0`` of counter block ``block0`` on.

    ``key`` is ``(c2, c3, k0, k1)`` (:func:`key_words`).

    ``block0`` (uint64) and ``lane0`` are ``offset // 4`` and ``offset % 4`` of the
    first element's global index, which may exceed 64 bits.
    """
    out = np.empty(n, np.uint32)
    for tt in prange(task_count(n, lane0)):
        _words_tiles(out, np.int64(tt), block0, lane0, key)  # the prange index is unsigned
    return out
