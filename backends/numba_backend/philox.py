"""Philox4x32-10 (Random123) and the word stream of the dropout counter layout.

Element ``i`` of a mask with ``(seed, call)`` takes word ``i % 4`` of
``philox4x32_10((lo32(i // 4), hi32(i // 4), lo32(call), hi32(call)), (lo32(seed),
hi32(seed)))`` (see :mod:`normdrop.random`). The rounds work on uint64 values whose
low 32 bits carry the state, and every multiply takes factors masked to 32 bits,
so that each 32x32->64 product is one ``vpmuludq`` lane (x86) when LLVM vectorises
the loop around :func:`philox_block`; every call yields four words.

Words are made a tile of :data:`TILE` elements at a time: a vectorised loop writes
the four words of each block into four planes (unit-stride stores), making two
blocks half the range apart per iteration (:func:`plane_words`), and a second loop
interleaves them into element order. Storing the four words interleaved straight
from the Philox loop is slower, and so is applying a mask read across the planes
(see docs/benchmarks.md, "Kernel tuning").
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .jit import TASK_SIZE, inline_jit, kernel, task_jit

__all__ = [
    "TILE",
    "edge_word",
    "head_and_tiles",
    "interleave",
    "philox_block",
    "philox_words",
    "key_words",
    "plane_words",
    "split64",
    "tile_scratch",
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
        # c1 and c3 keep the high half of their product, which only ever reaches the
        # high halves of c0 and c2; masked here, the factors stay visibly below 2**32 to
        # the code generator, which then makes each product one 32x32->64 lane
        # (vpmuludq on x86) instead of a full 64-bit multiply
        p0 = _M0 * (c0 & _MASK)
        p1 = _M1 * (c2 & _MASK)
        c0, c1, c2, c3 = (p1 >> _SHIFT) ^ c1 ^ k0, p1, (p0 >> _SHIFT) ^ c3 ^ k1, p0
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return c0 & _MASK, c1 & _MASK, c2 & _MASK, c3 & _MASK


@inline_jit
def edge_word(block0: np.uint64, lane: int, key: tuple) -> np.uint64:
    """Word of the element ``lane`` words after word 0 of block ``block0`` (scalar)."""
    return philox_block(block0 + np.uint64(lane // 4), key)[lane % 4]


@inline_jit
def tile_scratch() -> tuple[np.ndarray, np.ndarray]:
    """Per-task buffers of :func:`tile_words`: the four word planes (one spare block, see
    :func:`plane_words`), the words."""
    return np.empty((4, TILE // 4 + 1), np.uint32), np.empty(TILE, np.uint32)


@inline_jit
def plane_words(planes: np.ndarray, i0: int, i1: int, block: np.uint64, key: tuple) -> None:
    """Words of blocks ``block + i``, ``i0 <= i < i1``, into ``planes[k][i]``.

    Each iteration makes two blocks half the range apart, so that the vectorised loop
    has twice the independent multiply chains to interleave; with an odd count the
    block at ``i1`` is made too (the planes have a spare column for ``i1 == TILE // 4``).
    """
    # indices from 0 (slices), so that Numba adds no negative-index wraparound to them
    p0 = planes[0, i0:]
    p1 = planes[1, i0:]
    p2 = planes[2, i0:]
    p3 = planes[3, i0:]
    first = block + np.uint64(i0)
    half = (i1 - i0 + 1) // 2
    for i in range(half):
        k = i + half
        a0, a1, a2, a3 = philox_block(first + np.uint64(i), key)
        b0, b1, b2, b3 = philox_block(first + np.uint64(k), key)
        p0[i] = a0
        p1[i] = a1
        p2[i] = a2
        p3[i] = a3
        p0[k] = b0
        p1[k] = b1
        p2[k] = b2
        p3[k] = b3


@inline_jit
def interleave(planes: np.ndarray, nblocks: int, words: np.ndarray) -> np.ndarray:
    """The words of blocks ``0 .. nblocks - 1`` of ``planes`` into ``words`` in element
    order; returns ``words``."""
    p0 = planes[0]
    p1 = planes[1]
    p2 = planes[2]
    p3 = planes[3]
    for i in range(nblocks):
        words[4 * i] = p0[i]
        words[4 * i + 1] = p1[i]
        words[4 * i + 2] = p2[i]
        words[4 * i + 3] = p3[i]
    return words


@inline_jit
def tile_words(
    block: np.uint64, nblocks: int, key: tuple, scratch: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Words of ``nblocks`` blocks from ``block`` into ``scratch[1]`` in element order.

    Returns the words array.
    """
    planes, words = scratch
    plane_words(planes, 0, nblocks, block, key)
    return interleave(planes, nblocks, words)


@inline_jit
def tile_span(t, n, head, block, key, scratch):
    """Tile ``t`` of a body of ``n - head`` elements whose first counter block is
    ``block``: its first element (after ``head``), its size, and its words."""
    s = t * TILE
    valid = min(TILE, n - head - s)
    words = tile_words(block + np.uint64(t * (TILE // 4)), (valid + 3) // 4, key, scratch)
    return head + s, valid, words


@task_jit
def _words_tiles(out, t0, t1, head, block, key):
    """Tiles ``t0 .. t1 - 1`` of :func:`philox_words`."""
    scratch = tile_scratch()
    for t in range(t0, t1):
        e, valid, words = tile_span(t, out.size, head, block, key, scratch)
        o = out[e : e + valid]
        for i in range(valid):
            o[i] = words[i]


@inline_jit
def head_and_tiles(n, lane0):
    """Elements before the first whole counter block, and the number of body tiles."""
    head = min(n, (4 - lane0) % 4)
    return head, (n - head + TILE - 1) // TILE


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
    head, tiles = head_and_tiles(n, lane0)
    first = block0 + np.uint64(1 if head > 0 else 0)
    for tt in prange((tiles + TILES_PER_TASK - 1) // TILES_PER_TASK):
        t = np.int64(tt)  # the prange index is unsigned
        t0 = t * TILES_PER_TASK
        _words_tiles(out, t0, min(tiles, t0 + TILES_PER_TASK), head, first, key)
    for j in range(head):
        out[j] = edge_word(block0, lane0 + j, key)
    return out
