"""Small float64 arrays on the stack, which LLVM keeps in registers.

Numba's arrays live on the heap and LLVM cannot tell that the stores of a loop
(to an output, to an accumulator) leave them alone, so a value a loop reads from
one is loaded again at each iteration, and an accumulator is loaded and stored
again at each iteration. :func:`stack_array` returns an array in the calling
function's stack frame instead: nothing else can point into it, so once a loop
over its ``n`` values is unrolled (``n`` a compile-time constant) LLVM holds
them in vector registers for as long as the loops around it run. It is valid
until the function that calls it returns (inlined helpers: their caller), and
must not be returned or stored.
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

__all__ = ["stack_array"]


@intrinsic
def stack_array(typingctx, n):
    """An uninitialised float64 array of ``n`` values (an integer literal) on the stack."""
    if not isinstance(n, types.IntegerLiteral) or n.literal_value < 1:
        return None
    size = n.literal_value
    array_type = types.Array(types.float64, 1, "C")

    def codegen(context, builder, signature, args):
        element = context.get_value_type(types.float64)
        data = cgutils.alloca_once(builder, element, size=size)  # in the entry block
        view = make_array(array_type)(context, builder)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(element))
        populate_array(
            view,
            data=data,
            shape=[context.get_constant(types.intp, size)],
            strides=[itemsize],
            itemsize=itemsize,
            meminfo=None,
        )
        return view._getvalue()

    return array_type(n), codegen
