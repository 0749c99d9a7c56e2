"""Philox4x32-10 (Random123) and the word stream of the dropout counter layout.

Element ``i`` of a mask with ``(seed, call)`` takes word ``i % 4`` of
``philox4x32_10((lo32(i // 4), hi32(i // 4), lo32(call), hi32(call)), (lo32(seed),
hi32(seed)))`` (see :mod:`normdrop.random`). The rounds work on uint64 values whose
low 32 bits carry the state, and every multiply takes factors masked to 32 bits,
so that each 32x32->64 product is one ``vpmuludq`` lane (x86).

The kernels make a :data:`CHUNK` of 128 elements (32 counter blocks) at a time with two
intrinsics that spell the ten rounds out as LLVM vector code over groups of blocks
(:func:`keep_bits128`, :func:`words128`; all 32 at once with AVX-512, 16 at a time with
AVX2: :func:`_group_blocks`), so that no loop vectoriser has to find the vector form and
the core has independent multiply chains per round to overlap: the four words of the
blocks are put into element order with vector shuffles, and the dropout kernels, which
only need to know whether each word reaches the keep threshold, take the comparisons as
the bits of two ``uint64`` (bit ``j`` of the first for element ``j`` of the chunk, of
the second for element ``64 + j``: the packed bitmask's layout) and never store a word
(see docs/benchmarks.md, "Kernel tuning"). :func:`philox_block` is the scalar form, for
the few elements before the first whole block.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic

from .jit import TASK_SIZE, inline_jit, kernel, task_jit

__all__ = [
    "CHUNK",
    "TILE",
    "TILES_PER_TASK",
    "edge_word",
    "head_and_tiles",
    "keep_bits128",
    "key_words",
    "philox_block",
    "philox_words",
    "uint64",
    "words128",
]

#: Elements per tile, the unit of the kernels' task split; a multiple of :data:`CHUNK`.
TILE = 1024
#: Tiles per parallel task.
TILES_PER_TASK = TASK_SIZE // TILE
#: Elements made per call of :func:`keep_bits128` or :func:`words128` (32 counter blocks).
CHUNK = 128
_BLOCKS = CHUNK // 4

_MASK, _SHIFT = np.uint64(0xFFFFFFFF), np.uint64(32)
#: The Philox4x32 multipliers and Weyl key increments (Random123).
_M0, _M1, _W0, _W1 = map(np.uint64, (0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85))


#: A uint64 zero: adding a Python int to it gives that int as a ``np.uint64`` (NumPy's
#: scalar addition, NEP 50 rules), about a fourth of the time of ``np.uint64(value)``.
_ZERO = np.uint64(0)


def uint64(value: int) -> np.uint64:
    """``np.uint64(value)``: the same scalar, or the same ``OverflowError`` outside
    ``[0, 2**64)``, made cheaply for a Python int.

    A dropout call converts four to six integers to the kernels' uint64 arguments,
    holding the GIL; ``np.uint64(value)`` costs about 0.2 us each, the addition to
    :data:`_ZERO` about 0.05 us. Anything but an exact ``int`` (a NumPy integer, whose
    sum with a uint64 could promote to float64; a ``bool``) goes through ``np.uint64``.
    """
    return _ZERO + value if type(value) is int else np.uint64(value)


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
    mask = 0xFFFFFFFF
    return uint64(call & mask), uint64(call >> 32), uint64(seed & mask), uint64(seed >> 32)


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


_I32, _I64 = ir.IntType(32), ir.IntType(64)


def _splat(builder: ir.IRBuilder, value: ir.Value, n: int) -> ir.Value:
    """``value`` repeated in an ``n``-lane vector."""
    vector = ir.VectorType(value.type, n)
    undefined = ir.Constant(vector, ir.Undefined)
    first = builder.insert_element(undefined, value, _I32(0))
    return builder.shuffle_vector(first, undefined, ir.Constant(ir.VectorType(_I32, n), [0] * n))


def _uint64(context, builder, value: ir.Value, value_type: types.Type) -> ir.Value:
    """``value`` cast to a 64-bit integer."""
    return context.cast(builder, value, value_type, types.uint64)


def _group_blocks() -> int:
    """Counter blocks whose rounds are spelled out together (a divisor of 32): as many
    as fill four vector registers per state word.

    The rounds of a group are independent multiply chains that the core overlaps, and
    the group's four state words must stay in registers: 32 blocks with AVX-512 (eight
    ``i64`` a register, 32 registers), 16 with AVX2 (four a register, 16 registers),
    8 otherwise. With AVX2, 32 blocks spill the state to the stack every round
    (docs/benchmarks.md, "Kernel tuning"). The features Numba compiles for decide (the
    host's, or ``NUMBA_CPU_FEATURES``), so that a kernel is tuned for the machine it
    runs on; the words are the same either way.
    """
    features = getattr(config, "CPU_FEATURES", None)  # set from the environment at import
    if features is None:
        features = get_host_cpu_features()
    flags = features.split(",")
    if "+avx512f" in flags:
        return _BLOCKS
    return 16 if "+avx2" in flags else 8


def _group_words(context, builder, block, block_type, key, first: int, n: int) -> ir.Value:
    """The ``<4n x i32>`` words of blocks ``block + first .. block + first + n - 1`` in
    element order (lane ``4 * b + k`` holds word ``k`` of block ``block + first + b``);
    ``key`` is the ``(c2, c3, k0, k1)`` tuple's LLVM value.

    The scalar rounds of :func:`philox_block` on ``<n x i64>`` vectors: LLVM makes each
    product of a factor masked to 32 bits one ``vpmuludq`` (x86), and the high half a
    shift. The key words stay scalars, one splat per round.
    """
    vector = ir.VectorType(_I64, n)

    def constant(value: int) -> ir.Constant:
        return ir.Constant(vector, [value] * n)

    mask, shift = constant(0xFFFFFFFF), constant(32)
    c2s, c3s, k0, k1 = (builder.extract_value(key, i) for i in range(4))
    blocks = builder.add(
        _splat(builder, _uint64(context, builder, block, block_type), n),
        ir.Constant(vector, list(range(first, first + n))),
    )
    c0, c1 = blocks, builder.lshr(blocks, shift)
    c2, c3 = _splat(builder, c2s, n), _splat(builder, c3s, n)
    for r in range(10):
        # round r's key words: (k + r * W) mod 2**32, as philox_block's running sums
        r0 = builder.and_(builder.add(k0, _I64(int(_W0) * r)), _I64(0xFFFFFFFF))
        r1 = builder.and_(builder.add(k1, _I64(int(_W1) * r)), _I64(0xFFFFFFFF))
        p0 = builder.mul(builder.and_(c0, mask), constant(int(_M0)))
        p1 = builder.mul(builder.and_(c2, mask), constant(int(_M1)))
        c0, c1, c2, c3 = (
            builder.xor(builder.xor(builder.lshr(p1, shift), c1), _splat(builder, r0, n)),
            p1,
            builder.xor(builder.xor(builder.lshr(p0, shift), c3), _splat(builder, r1, n)),
            p0,
        )
    words = [builder.trunc(w, ir.VectorType(_I32, n)) for w in (c0, c1, c2, c3)]
    pair = ir.Constant(ir.VectorType(_I32, 2 * n), list(range(2 * n)))
    w01 = builder.shuffle_vector(words[0], words[1], pair)
    w23 = builder.shuffle_vector(words[2], words[3], pair)
    order = [n * (e % 4) + e // 4 for e in range(4 * n)]
    return builder.shuffle_vector(w01, w23, ir.Constant(ir.VectorType(_I32, 4 * n), order))


def _chunk_groups(context, builder, block, block_type, key):
    """``(first element, words)`` of each group of the chunk of blocks ``block ..
    block + 31``, in order (:func:`_group_words`, :func:`_group_blocks`)."""
    n = _group_blocks()
    for first in range(0, _BLOCKS, n):
        yield 4 * first, _group_words(context, builder, block, block_type, key, first, n)


def _is_key(key: types.Type) -> bool:
    """Whether ``key`` types as the ``(c2, c3, k0, k1)`` tuple of uint64."""
    return isinstance(key, types.UniTuple) and key.count == 4 and key.dtype == types.uint64


@intrinsic
def keep_bits128(typingctx, block, key, threshold):
    """Bit ``j`` of ``bits[i]`` set where word ``e % 4`` of block ``block + e // 4`` is
    ``>= threshold``, ``e = 64 * i + j``, for ``e < 128``: the packed bitmask of those
    128 elements as a pair of uint64 ``bits``.

    ``block`` is an unsigned integer (the blocks wrap modulo 2**64, as uint64 sums
    do), ``key`` the ``(c2, c3, k0, k1)`` tuple (:func:`key_words`), ``threshold`` an
    integer of which the low 32 bits count.
    """
    if not (
        isinstance(block, types.Integer) and _is_key(key) and isinstance(threshold, types.Integer)
    ):
        return None
    pair = types.UniTuple(types.uint64, 2)

    def codegen(context, builder, signature, args):
        limit = builder.trunc(_uint64(context, builder, args[2], signature.args[2]), _I32)
        wide = ir.Constant(ir.IntType(CHUNK), 0)
        for e0, words in _chunk_groups(context, builder, args[0], signature.args[0], args[1]):
            n = words.type.count
            keep = builder.icmp_unsigned(">=", words, _splat(builder, limit, n))
            bits = builder.zext(builder.bitcast(keep, ir.IntType(n)), wide.type)
            wide = builder.or_(wide, builder.shl(bits, wide.type(e0)))
        halves = [builder.trunc(builder.lshr(wide, wide.type(64 * i)), _I64) for i in range(2)]
        return context.make_tuple(builder, pair, halves)

    return pair(block, key, threshold), codegen


@intrinsic
def words128(typingctx, block, key, out, start):
    """``out[start + j] =`` word ``j % 4`` of block ``block + j // 4``, for ``j < 128``.

    ``out`` is a C-contiguous 1-D uint32 array holding at least ``start + 128`` words;
    ``block`` and ``key`` as in :func:`keep_bits128`.
    """
    if not (
        isinstance(block, types.Integer)
        and _is_key(key)
        and isinstance(out, types.Array)
        and out.ndim == 1
        and out.layout == "C"
        and out.dtype == types.uint32
        and out.mutable
        and isinstance(start, types.Integer)
    ):
        return None

    def codegen(context, builder, signature, args):
        out_type = signature.args[2]
        view = context.make_array(out_type)(context, builder, args[2])
        for e0, words in _chunk_groups(context, builder, args[0], signature.args[0], args[1]):
            index = builder.add(args[3], context.get_constant(signature.args[3], e0))
            item = cgutils.get_item_pointer(
                context, builder, out_type, view, [index], wraparound=False
            )
            builder.store(words, builder.bitcast(item, words.type.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.void(block, key, out, start), codegen


@inline_jit
def head_and_tiles(n, lane0):
    """Elements before the first whole counter block, and the number of body tiles."""
    head = min(n, (4 - lane0) % 4)
    return head, (n - head + TILE - 1) // TILE


@task_jit
def _words_tiles(out, t0, t1, head, block, key):
    """Tiles ``t0 .. t1 - 1`` of :func:`philox_words`: whole chunks straight into
    ``out``, a last partial one through a scratch chunk."""
    e0 = head + t0 * TILE
    e1 = min(out.size, head + t1 * TILE)
    full = e0 + (e1 - e0) // CHUNK * CHUNK
    for e in range(e0, full, CHUNK):
        words128(block + np.uint64((e - head) // 4), key, out, e)
    if full < e1:
        scratch = np.empty(CHUNK, np.uint32)
        words128(block + np.uint64((full - head) // 4), key, scratch, 0)
        for i in range(e1 - full):
            out[full + i] = scratch[i]


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
