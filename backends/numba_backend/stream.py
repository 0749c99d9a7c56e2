"""Streaming (non-temporal) stores: write whole cache lines without reading them first.

An ordinary store to a line that is not in the cache reads the line from memory before
it overwrites it (a *read for ownership*), so a kernel that writes an output as large
as its input moves the output's bytes twice. A non-temporal store of a whole line goes
to memory through write-combining buffers without that read. It also leaves the line
out of the cache, which is only right for outputs much larger than the last-level cache
(a cached output would have been evicted before anyone read it anyway).

Non-temporal stores are weakly ordered: a task that made them ends with
:func:`store_fence` before another thread may read what it wrote.

Where the hardware has no such store (or LLVM no such instruction for the target), the
hint is dropped and the stores are ordinary ones.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .jit import inline_jit
from .pointers import is_c_vector, pointer_at
from .prefetch import LINE

__all__ = ["STREAM_MIN_BYTES", "address_of", "store_fence", "stream_row"]

#: Outputs from this size on are streamed by the kernels that do (the fused dropout + add
#: + LayerNorm forward): its four arrays of this size (48 MiB) are well beyond this
#: machine's 32 MiB last-level cache, so what it stores as usual is evicted to memory
#: anyway, after a read for ownership. Below it, the ordinary stores win (the next call
#: finds the output in the cache): measured crossover 10-12 MiB, docs/benchmarks.md,
#: "Kernel tuning".
STREAM_MIN_BYTES = 12 << 20


@intrinsic
def address_of(typingctx, array, index):
    """The address of ``array[index]`` (a C-contiguous 1-D array) as an unsigned integer."""
    if not is_c_vector(array):
        return None

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        element = context.get_value_type(array_type.dtype)
        pointer = pointer_at(context, builder, array_type, args[0], args[1], element)
        return builder.ptrtoint(pointer, ir.IntType(64))

    return types.uint64(array, index), codegen


@intrinsic
def _stream_line(typingctx, dst, di, src, si):
    """Store the ``LINE`` bytes from ``src[si]`` on to ``dst[di]`` on, non-temporally;
    ``dst[di]``'s address must be a multiple of ``LINE``."""
    if not (is_c_vector(dst) and is_c_vector(src) and dst.dtype == src.dtype):
        return None

    def codegen(context, builder, signature, args):
        dst_type, _, src_type, _ = signature.args
        element = context.get_value_type(dst_type.dtype)
        vector = ir.VectorType(element, LINE // context.get_abi_sizeof(element))
        source = pointer_at(context, builder, src_type, args[2], args[3], vector)
        target = pointer_at(context, builder, dst_type, args[0], args[1], vector)
        store = builder.store(builder.load(source, align=1), target, align=LINE)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return types.void(dst, di, src, si), codegen


@intrinsic
def store_fence(typingctx):
    """Order this thread's earlier non-temporal stores before everything it does next (a
    sequentially consistent fence: ``mfence`` on x86, which orders them, ``dmb`` on
    ARM)."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@inline_jit
def stream_row(dst, src):
    """``dst[:] = src[:]`` (1-D, same dtype and size) with the whole cache lines of
    ``dst`` stored non-temporally and its partial first and last lines stored as usual.
    """
    n = dst.size
    step = LINE // dst.itemsize
    offset = np.int64(address_of(dst, 0) % np.uint64(LINE))
    if offset % dst.itemsize != 0:
        head = n  # not aligned to its own items: no line starts at an item
    else:
        head = min((LINE - offset) % LINE // dst.itemsize, n)
    for j in range(head):
        dst[j] = src[j]
    j = head
    while j + step <= n:
        _stream_line(dst, j, src, j)
        j += step
    for k in range(j, n):
        dst[k] = src[k]
