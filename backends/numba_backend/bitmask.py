"""Packed keep-mask bits made from, and applied to, 64 consecutive values at a time.

:func:`bits64_at_least` compares 64 unsigned integers with a threshold as one LLVM
vector ``icmp`` whose ``<64 x i1>`` result is reinterpreted as an ``i64``: with
AVX-512 that is four (32-bit values) or one (bytes) compares into mask registers and
one move, instead of a shift, a multiply or a byte store per value. Bit ``j`` of the
result is value ``j``'s, so the little-endian ``uint64`` is the packed bitmask in
NumPy's ``bitorder="little"`` (normdrop's bitmask layout). :func:`select64_bits` is
the reverse, for the backward: such a ``uint64`` read as ``<64 x i1>`` selects 64
scaled values in one vector ``select``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import inline_jit

__all__ = ["bits64_at_least", "pack_at_least", "select64_bits"]

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
    if not (
        isinstance(values, types.Array)
        and values.ndim == 1
        and values.layout == "C"
        and isinstance(values.dtype, types.Float)
        and isinstance(out, types.Array)
        and out.ndim == 1
        and out.layout == "C"
        and out.dtype == values.dtype
        and out.mutable
        and isinstance(bits, types.Array)
        and bits.ndim == 1
        and bits.layout == "C"
        and bits.dtype == types.uint8
    ):
        return None

    def codegen(context, builder, signature, args):
        values_type, _, bits_type, scale_type, out_type = signature.args
        source, index, mask, factor, target = args
        i64 = ir.IntType(WIDTH)
        position = context.cast(builder, index, signature.args[1], types.intp)
        byte = builder.lshr(position, position.type(3))
        word_pointer = cgutils.get_item_pointer(
            context, builder, bits_type, context.make_array(bits_type)(context, builder, mask),
            [byte], wraparound=False,
        )  # fmt: skip
        word = builder.load(builder.bitcast(word_pointer, i64.as_pointer()), align=1)
        keep = builder.bitcast(word, ir.VectorType(ir.IntType(1), WIDTH))
        element = context.get_value_type(values_type.dtype)
        vector = ir.VectorType(element, WIDTH)

        def pointer(array_type, array):
            view = context.make_array(array_type)(context, builder, array)
            item = cgutils.get_item_pointer(
                context, builder, array_type, view, [index], wraparound=False
            )
            return builder.bitcast(item, vector.as_pointer())

        loaded = builder.load(pointer(values_type, source), align=1)
        limit = context.cast(builder, factor, scale_type, values_type.dtype)
        undefined = ir.Constant(vector, ir.Undefined)
        first = builder.insert_element(undefined, limit, ir.IntType(32)(0))
        lanes = ir.Constant(ir.VectorType(ir.IntType(32), WIDTH), [0] * WIDTH)
        scaled = builder.fmul(loaded, builder.shuffle_vector(first, undefined, lanes))
        chosen = builder.select(keep, scaled, ir.Constant(vector, [0.0] * WIDTH))
        builder.store(chosen, pointer(out_type, target), align=1)
        return context.get_dummy_value()

    return types.void(values, start, bits, scale, out), codegen
