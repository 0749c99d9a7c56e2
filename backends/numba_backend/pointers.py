"""Typing checks and element pointers shared by the LLVM intrinsics (:mod:`.bitmask`,
:mod:`.philox`, :mod:`.prefetch`, :mod:`.stream`)."""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils

__all__ = ["is_c_vector", "pointer_at"]


def is_c_vector(array: types.Type, dtype: type | None = None) -> bool:
    """Whether ``array`` types as a C-contiguous 1-D array (of a ``dtype`` type)."""
    return (
        isinstance(array, types.Array)
        and array.ndim == 1
        and array.layout == "C"
        and (dtype is None or isinstance(array.dtype, dtype))
    )


def pointer_at(
    context: Any, builder: ir.IRBuilder, array_type: Any, array: Any, index: Any, pointee: ir.Type
) -> ir.Value:
    """A ``pointee *`` to ``array[index]`` of a 1-D array (no wraparound)."""
    view = context.make_array(array_type)(context, builder, array)
    item = cgutils.get_item_pointer(context, builder, array_type, view, [index], wraparound=False)
    return builder.bitcast(item, pointee.as_pointer())
