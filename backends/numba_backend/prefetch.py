"""Software prefetches: start loading the cache line of an array element ahead of its use.

The Philox kernels alternate arithmetic that touches no memory (making a tile's words)
with passes that stream through memory. Prefetching the next tile's lines while the
words are made lets the two overlap instead of taking turns.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["LINE", "prefetch_read", "prefetch_write"]

#: Bytes per cache line, the stride of the prefetches.
LINE = 64


def _prefetch_intrinsic(write: int):
    """An intrinsic ``(array, index) -> None`` that prefetches the line of ``array[index]``
    into the L2 cache, for reading (``write=0``) or for writing (``write=1``)."""

    @intrinsic
    def prefetch(typingctx, array, index):
        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            view = context.make_array(array_type)(context, builder, args[0])
            pointer = cgutils.get_item_pointer(
                context, builder, array_type, view, [args[1]], wraparound=False
            )
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                "llvm.prefetch.p0",
            )  # fmt: skip
            # (address, read 0 / write 1, locality 2: the L2 cache, data 1)
            builder.call(function, [builder.bitcast(pointer, i8p), i32(write), i32(2), i32(1)])
            return context.get_dummy_value()

        return types.void(array, index), codegen

    return prefetch


#: ``prefetch_read(array, index)``: start loading the line of ``array[index]`` for reading.
prefetch_read = _prefetch_intrinsic(0)
#: ``prefetch_write(array, index)``: claim the line of ``array[index]`` for writing.
prefetch_write = _prefetch_intrinsic(1)
