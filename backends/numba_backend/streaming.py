"""Streaming (non-temporal) stores of a per-column affine, for outputs larger than the cache.

An ordinary store first reads the output's cache line from memory, then writes it
back when it is evicted, and the output evicts the input on its way through the
last-level cache. For an output of at least :data:`STREAM_BYTES`, written once and
not read again by the kernel, :func:`affine_line` writes whole aligned cache lines
with non-temporal stores instead: no read of the output, and the input that the
statistics pass left in the cache stays there for the affine pass to read.
:func:`fence` orders those stores before the task returns.

:func:`affine_line` computes exactly what the loop it replaces computes: float64
``(x - m) * a + b`` with the kernels' fast-math flags (so the same contraction
into a fused multiply-add), rounded once to the output dtype.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import FASTMATH

__all__ = ["LINE_BYTES", "STREAM_BYTES", "affine_line", "fence", "line_phase"]

#: Bytes per cache line: a streaming store writes one whole, aligned line.
LINE_BYTES = 64

#: Outputs of at least this many bytes are written with streaming stores: a quarter
#: of this machine's 32 MiB last-level cache, from which on an output written through
#: the cache pushes out a good part of the input before the affine pass reads it.
STREAM_BYTES = 8 << 20


@intrinsic
def line_phase(typingctx, array):
    """How many values of the 1-D ``array`` lie before its first value in that value's
    cache line (its address modulo :data:`LINE_BYTES`, in values)."""
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, args):
        view = context.make_array(signature.args[0])(context, builder, args[0])
        address = builder.ptrtoint(view.data, cgutils.intp_t)
        itemsize = context.get_abi_sizeof(context.get_value_type(signature.args[0].dtype))
        offset = builder.urem(address, cgutils.intp_t(LINE_BYTES))
        return builder.udiv(offset, cgutils.intp_t(itemsize))

    return types.intp(array), codegen


@intrinsic
def affine_line(typingctx, x, out, e, m, a, b, j):
    """``out[e + i] = (x[e + i] - m[j + i]) * a[j + i] + b[j + i]`` for the values ``i`` of
    one cache line of ``out``, whose ``e``-th value must start a cache line; one
    streaming store. ``x`` and ``out`` are 1-D arrays of one float dtype, ``m``, ``a``
    and ``b`` 1-D float64 arrays holding at least ``j +`` (values per line) values."""
    floats = (types.float32, types.float64)
    if not (
        all(isinstance(v, types.Array) and v.ndim == 1 for v in (x, out, m, a, b))
        and x.dtype in floats
        and out.dtype == x.dtype
        and all(v.dtype == types.float64 for v in (m, a, b))
    ):
        return None
    flags = tuple(sorted(FASTMATH))

    def codegen(context, builder, signature, args):
        xt, ot, et, mt, at, bt, jt = signature.args
        element = context.get_value_type(xt.dtype)
        width = LINE_BYTES // context.get_abi_sizeof(element)
        wide = ir.VectorType(ir.DoubleType(), width)
        narrow = ir.VectorType(element, width)

        def pointer(array_type, value, index):
            view = context.make_array(array_type)(context, builder, value)
            return cgutils.get_item_pointer(
                context, builder, array_type, view, [index], wraparound=False
            )

        def load(array_type, value, index, vector):
            at_index = builder.bitcast(pointer(array_type, value, index), vector.as_pointer())
            return builder.load(at_index, align=context.get_abi_sizeof(vector.element))

        e_, j_ = args[2], args[6]
        values = load(xt, args[0], e_, narrow)
        if element != ir.DoubleType():
            values = builder.fpext(values, wide)
        centred = builder.fsub(values, load(mt, args[3], j_, wide), flags=flags)
        scaled = builder.fmul(centred, load(at, args[4], j_, wide), flags=flags)
        result = builder.fadd(scaled, load(bt, args[5], j_, wide), flags=flags)
        if element != ir.DoubleType():
            result = builder.fptrunc(result, narrow)
        target = builder.bitcast(pointer(ot, args[1], e_), narrow.as_pointer())
        store = builder.store(result, target, align=LINE_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return types.void(x, out, e, m, a, b, j), codegen


@intrinsic
def fence(typingctx):
    """Order the streaming stores made so far before every later memory access (a
    sequentially consistent fence: ``mfence`` on x86, which streaming stores obey)."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen
