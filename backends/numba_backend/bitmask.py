"""Packed keep-mask bits from 64 consecutive values at a time, as one vector compare.

:func:`bits64_at_least` compares 64 unsigned integers with a threshold as one LLVM
vector ``icmp`` whose ``<64 x i1>`` result is reinterpreted as an ``i64``: with
AVX-512 that is four (32-bit values) or one (bytes) compares into mask registers and
one move, instead of a shift, a multiply or a byte store per value. Bit ``j`` of the
result is value ``j``'s, so the little-endian ``uint64`` is the packed bitmask in
NumPy's ``bitorder="little"`` (normdrop's bitmask layout).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import inline_jit

__all__ = ["bits64_at_least", "pack_at_least"]

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
