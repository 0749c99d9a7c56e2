"""Packed keep-mask bits made from, and applied to, 64 consecutive values at a time.

:func:`bits64_at_least` compares 64 unsigned integers with a threshold as one LLVM
vector ``icmp`` whose ``<64 x i1>`` result is reinterpreted as an ``i64``: with
AVX-512 that is four (32-bit values) or one (bytes) compares into mask registers and
one move, instead of a shift, a multiply or a byte store per value. Bit ``j`` of the
result is value ``j``'s, so the little-endian ``uint64`` is the packed bitmask in
NumPy's ``bitorder="little"`` (normdrop's bitmask layout). :func:`select64_bits` is
the reverse, for the backward: such a ``uint64`` read as ``<64 x i1>`` selects 64
scaled values in one vector ``select``; :func:`select64_mask` does the same from a
``uint64`` value (the dropout forward's, straight from :func:`.philox.keep_bits64`),
:func:`unpack64` writes the 64 bits as 0/1 bytes and :func:`put64` stores the ``uint64``
as 8 bitmask bytes.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import inline_jit
from .pointers import is_c_vector, pointer_at

__all__ = [
    "bits64_at_least",
    "pack_at_least",
    "put64",
    "select64_bits",
    "select64_mask",
    "unpack64",
]

#: Values per call: the bits of one ``uint64``.
WIDTH = 64


@intrinsic
def bits64_at_least(typingctx, values, start, threshold):
    """``sum((values[start + j] >= threshold) << j for j in range(64))`` as a uint64.

    ``values`` is a C-contiguous 1-D array of unsigned integers holding at least
    ``start + 64`` values; ``threshold`` is cast to their type.
    """
    if not (
        isinstance(values, types.Array)
        and values.ndim == 1
        and values.layout == "C"
        and isinstance(values.dtype, types.Integer)
        and not values.dtype.signed
    ):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(
            context, builder, array_type, view, [args[1]], wraparound=False
        )
        element = context.get_value_type(array_type.dtype)
        vector = ir.VectorType(element, WIDTH)
        loaded = builder.load(builder.bitcast(pointer, vector.as_pointer()), align=1)
        limit = context.cast(builder, args[2], signature.args[2], array_type.dtype)
        lanes = ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH)
        undefined = ir.Constant(vector, ir.Undefined)
        first = builder.insert_element(undefined, limit, ir.IntType(32)(0))
        splat = builder.shuffle_vector(first, undefined, lanes)
        keep = builder.icmp_unsigned(">=", loaded, splat)
        return builder.bitcast(keep, ir.IntType(WIDTH))

    return types.uint64(values, start, threshold), codegen


@inline_jit
def pack_at_least(values, n, threshold, bits):
    """Pack ``values[i] >= threshold`` for ``i < n`` into the first ``ceil(n / 8)`` bytes
    of ``bits`` (bit ``i % 8`` of byte ``i // 8``), 64 values at a time with
    :func:`bits64_at_least`, the rest one at a time."""
    full = n // WIDTH
    for q in range(full):
        v = bits64_at_least(values, WIDTH * q, threshold)
        for j in range(8):
            bits[8 * q + j] = np.uint8((v >> np.uint64(8 * j)) & np.uint64(0xFF))
    for q in range(8 * full, (n + 7) // 8):
        b = 0
        for j in range(min(8, n - 8 * q)):
            b |= (1 if values[8 * q + j] >= threshold else 0) << j
        bits[q] = np.uint8(b)


def _select(context, builder, keep, values_type, values, index, scale_type, scale, out_type, out):
    """``out[index + j] = keep[j] ? values[index + j] * scale : 0`` for ``j < 64``, from a
    ``<64 x i1>`` ``keep``: one vector ``select`` (AVX-512: masked multiplies)."""
    element = context.get_value_type(values_type.dtype)
    vector = ir.VectorType(element, WIDTH)
    loaded = builder.load(pointer_at(context, builder, values_type, values, index, vector), align=1)
    factor = context.cast(builder, scale, scale_type, values_type.dtype)
    undefined = ir.Constant(vector, ir.Undefined)
    first = builder.insert_element(undefined, factor, ir.IntType(32)(0))
    lanes = ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH)
    scaled = builder.fmul(loaded, builder.shuffle_vector(first, undefined, lanes))
    chosen = builder.select(keep, scaled, ir.Constant(vector, [0.0] * WIDTH))
    builder.store(chosen, pointer_at(context, builder, out_type, out, index, vector), align=1)


def _selects(values, out) -> bool:
    """Whether ``values`` and ``out`` type as :func:`select64_bits` needs them."""
    return (
        is_c_vector(values, types.Float)
        and is_c_vector(out)
        and out.dtype == values.dtype
        and out.mutable
    )


@intrinsic
def select64_bits(typingctx, values, start, bits, scale, out):
    """``out[start + j] = values[start + j] * scale`` where bit ``j`` of the little-endian
    ``uint64`` at byte ``start // 8`` of ``bits`` is set, else 0, for ``j < 64``.

    One LLVM vector ``select`` on the ``uint64`` reinterpreted as ``<64 x i1>``: with
    AVX-512 that is one mask move and masked multiplies (zeroing the unselected
    lanes), instead of expanding each bit first. ``values`` and ``out`` are
    C-contiguous 1-D float arrays of one dtype holding at least ``start + 64`` values,
    ``start`` is a multiple of 8 and ``bits`` a C-contiguous uint8 array holding at
    least ``start // 8 + 8`` bytes; ``scale`` is cast to the values' type.
    """
    if not (_selects(values, out) and is_c_vector(bits) and bits.dtype == types.uint8):
        return None

    def codegen(context, builder, signature, args):
        values_type, start_type, bits_type, scale_type, out_type = signature.args
        source, index, mask, factor, target = args
        position = context.cast(builder, index, start_type, types.intp)
        byte = builder.lshr(position, position.type(3))
        i64 = ir.IntType(WIDTH)
        word = builder.load(pointer_at(context, builder, bits_type, mask, byte, i64), align=1)
        keep = builder.bitcast(word, ir.VectorType(ir.IntType(1), WIDTH))
        _select(context, builder, keep, values_type, source, index, scale_type, factor,
                out_type, target)  # fmt: skip
        return context.get_dummy_value()

    return types.void(values, start, bits, scale, out), codegen


@intrinsic
def select64_mask(typingctx, values, start, mask, scale, out):
    """``out[start + j] = values[start + j] * scale`` where bit ``j`` of the integer
    ``mask`` is set, else 0, for ``j < 64``: :func:`select64_bits` with the bits given
    as a value (``start`` need not be a multiple of 8)."""
    if not (_selects(values, out) and isinstance(mask, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        values_type, _, mask_type, scale_type, out_type = signature.args
        source, index, word, factor, target = args
        word = context.cast(builder, word, mask_type, types.uint64)
        keep = builder.bitcast(word, ir.VectorType(ir.IntType(1), WIDTH))
        _select(context, builder, keep, values_type, source, index, scale_type, factor,
                out_type, target)  # fmt: skip
        return context.get_dummy_value()

    return types.void(values, start, mask, scale, out), codegen


@intrinsic
def unpack64(typingctx, mask, out, start):
    """``out[start + j] = (mask >> j) & 1`` for ``j < 64``: one 64-byte vector store (with
    AVX-512, one mask move and a masked byte fill). ``out`` is a C-contiguous 1-D array of
    bytes (uint8 or bool) holding at least ``start + 64``."""
    if not (
        isinstance(mask, types.Integer)
        and is_c_vector(out)
        and out.dtype in (types.uint8, types.boolean)
        and out.mutable
    ):
        return None

    def codegen(context, builder, signature, args):
        mask_type, out_type, _ = signature.args
        word = context.cast(builder, args[0], mask_type, types.uint64)
        keep = builder.bitcast(word, ir.VectorType(ir.IntType(1), WIDTH))
        vector = ir.VectorType(ir.IntType(8), WIDTH)
        pointer = pointer_at(context, builder, out_type, args[1], args[2], vector)
        builder.store(builder.zext(keep, vector), pointer, align=1)
        return context.get_dummy_value()

    return types.void(mask, out, start), codegen


@intrinsic
def put64(typingctx, bits, byte, value):
    """Store the integer ``value`` as the 8 little-endian bytes ``bits[byte:byte + 8]``
    (one unaligned store); ``bits`` is a C-contiguous 1-D uint8 array."""
    if not (
        is_c_vector(bits)
        and bits.dtype == types.uint8
        and bits.mutable
        and isinstance(value, types.Integer)
    ):
        return None

    def codegen(context, builder, signature, args):
        bits_type, _, value_type = signature.args
        word = context.cast(builder, args[2], value_type, types.uint64)
        pointer = pointer_at(context, builder, bits_type, args[0], args[1], word.type)
        builder.store(word, pointer, align=1)
        return context.get_dummy_value()

    return types.void(bits, byte, value), codegen
