"""Kernel buffers for any array: ``out=``, overlapping memory and memory layouts.

Kernels take C-contiguous data in a canonical shape and fill a C-contiguous
buffer. These helpers turn the caller's arrays into that form (without a copy
where the memory already is), decide whether the kernel may write straight into
``out``, and hand the result back in the caller's shape, dtype and layout.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from normdrop._ops._inputs import KERNEL_DTYPES, check_out, compute_dtype
from normdrop.protocol import Array, Backend


def memory_order(x: Any) -> tuple[int, ...] | None:
    """The axes of ``x`` from outermost to innermost in memory, when that is not C order.

    ``None`` when ``x`` is C-contiguous, or is not a NumPy array that is dense in
    some order of its axes (then a C-ordered copy is made instead). For the rest
    (Fortran order, channels-last, any transposed contiguous array),
    ``x.transpose(order)`` is a C-contiguous view of the same memory.
    """
    if not isinstance(x, np.ndarray) or x.flags.c_contiguous or x.ndim < 2:
        return None
    order = tuple(sorted(range(x.ndim), key=lambda a: (-x.strides[a], a)))
    return order if x.transpose(order).flags.c_contiguous else None


def axes_permuted(x: Any) -> bool:
    """Whether ``x`` is a NumPy array whose strides do not fall from the first axis to the
    last (a view of Fortran-ordered or transposed data, dense or not).

    Axes of length 1 are left out: their strides mean nothing.
    """
    if not isinstance(x, np.ndarray) or x.flags.c_contiguous or x.ndim < 2:
        return False
    strides = [abs(s) for s, n in zip(x.strides, x.shape, strict=True) if n > 1]
    return any(a < b for a, b in zip(strides, strides[1:], strict=False))


def contiguous_input(
    be: Backend, x: Any, shape: tuple[int, ...], order: tuple[int, ...] | None = None
) -> Array:
    """``x`` in its compute dtype, C-contiguous and reshaped to the kernel's canonical shape.

    With ``order`` (see :func:`memory_order`), ``x.transpose(order)`` is used,
    which costs no copy when ``x`` is laid out in that order.
    """
    if order is not None:
        x = x.transpose(order)
    if type(x) is np.ndarray and x.flags.c_contiguous and x.dtype in KERNEL_DTYPES:
        return x if x.shape == shape else x.reshape(shape)
    compute = compute_dtype(x.dtype)
    if x.dtype != compute:
        x = x.astype(compute)
    return be.ascontiguous(x).reshape(shape)


#: The most bound calls a plan keeps (one per input shape and dtype); past it they are
#: dropped and bound again as needed.
MAX_BOUND_CALLS = 8


def bound_call(calls: dict, be: Backend, kernel: str, x: Any, *args: Any) -> Any:
    """The backend's call of ``kernel`` bound for data like ``x``, or ``None``.

    See :class:`~normdrop.capabilities.BoundKernels`: ``be.bind(kernel, x, *args)``,
    asked once per shape and dtype of ``x`` and kept in ``calls`` (a plan's), the
    backend's ``None`` included. The caller checked that ``be`` has ``bind`` and
    that ``x`` is C-contiguous.
    """
    key = (x.shape, x.dtype)
    run = calls.get(key, calls)  # ``calls`` itself: not asked yet
    if run is calls:
        if len(calls) >= MAX_BOUND_CALLS:
            calls.clear()
        run = calls[key] = be.bind(kernel, x, *args)  # type: ignore[attr-defined]
    return run


def _interface(a: Any) -> dict | None:
    """The array interface of a NumPy array or a CUDA array; ``None`` for other kinds."""
    if isinstance(a, np.ndarray):
        return a.__array_interface__
    return getattr(a, "__cuda_array_interface__", None)


def _byte_range(iface: dict) -> tuple[int, int]:
    """``[first, last)`` bytes an array interface spans (empty arrays span nothing)."""
    start = int(iface["data"][0])
    shape = tuple(iface["shape"])
    itemsize = np.dtype(iface["typestr"]).itemsize
    if math.prod(shape) == 0:
        return start, start
    strides = iface.get("strides")
    if strides is None:  # C-contiguous
        strides = tuple(itemsize * math.prod(shape[i + 1 :]) for i in range(len(shape)))
    low = start + sum(s * (n - 1) for s, n in zip(strides, shape, strict=True) if s < 0)
    high = start + sum(s * (n - 1) for s, n in zip(strides, shape, strict=True) if s > 0) + itemsize
    return low, high


def _same_elements(a: dict, b: dict) -> bool:
    """Whether two array interfaces describe exactly the same elements."""
    return (
        a["data"][0] == b["data"][0]
        and tuple(a["shape"]) == tuple(b["shape"])
        and a.get("strides") == b.get("strides")
        and np.dtype(a["typestr"]).itemsize == np.dtype(b["typestr"]).itemsize
    )


def overlaps(out: Any, data: Any, *others: Any) -> bool:
    """Whether ``out`` may share memory with what a kernel reads, other than in place.

    ``out`` exactly aliasing ``data`` (same elements: in-place operation) is fine;
    any other sharing with ``data`` or with ``others`` (weights, statistics,
    bitmasks) counts, because a kernel could overwrite values it has not read yet.
    Arrays without a memory interface (Dask) never overlap.
    """
    if isinstance(out, np.ndarray):
        return _host_overlaps(out, data, others)
    target = _interface(out)
    if target is None:
        return False
    span = _byte_range(target)
    for a in (data, *others):
        if a is None or a is out and a is data:
            continue
        iface = _interface(a)
        if iface is None:
            continue
        if a is data and _same_elements(target, iface):
            continue
        low, high = _byte_range(iface)
        if low < span[1] and span[0] < high and span[0] < span[1] and low < high:
            return True
    return False


def _host_overlaps(out: np.ndarray, data: Any, others: tuple[Any, ...]) -> bool:
    """:func:`overlaps` for a NumPy ``out``: NumPy's bounds check (only host arrays can
    share its memory), the array interfaces only for arrays whose bounds meet."""
    for a in (data, *others):
        if not isinstance(a, np.ndarray) or a is out and a is data:
            continue
        if not np.may_share_memory(out, a):
            continue
        if a is data and _same_elements(out.__array_interface__, a.__array_interface__):
            continue
        return True
    return False


def kernel_output(
    be: Backend,
    x: Any,
    out: Any | None,
    shape: tuple[int, ...],
    order: tuple[int, ...] | None = None,
    reads: tuple[Any, ...] = (),
    inplace: Any = None,
) -> tuple[Array, bool]:
    """Return ``(buffer, direct)``: the canonical-shape buffer that kernels fill.

    When ``out`` is laid out like the kernel's buffer (C order, or ``order``), has
    the compute dtype and shares no memory with the kernel's inputs ``reads`` and
    ``inplace`` (default ``x``) except by aliasing ``inplace`` exactly (an in-place
    operation), the buffer is a view of it; otherwise the kernel writes a
    temporary that :func:`finish` copies over. A partly overlapping ``out``
    therefore gets the same numbers as a separate one.
    """
    if out is None and x.dtype in KERNEL_DTYPES:
        if type(x) is np.ndarray:
            return be.empty(shape, x.dtype), False
        return empty_for(be, x, shape, x.dtype), False
    compute = compute_dtype(x.dtype)
    if out is not None and out.dtype == compute:
        target = out if order is None else out.transpose(order)
        flags = getattr(target, "flags", None)
        if (
            flags is not None
            and flags["C_CONTIGUOUS"]
            and not overlaps(out, x if inplace is None else inplace, *reads)
        ):
            return target.reshape(shape), True
    return empty_for(be, x, shape, compute), False


def empty_pair(be: Backend, shape: tuple[int, ...], dtype: Any) -> tuple[Array, Array]:
    """Two new arrays of ``shape`` and ``dtype`` for two outputs of one call on host
    (NumPy) data: the halves of one allocation.

    Two same-sized buffers freed together leave the top of the heap free by twice
    their size, which glibc's ``malloc`` may give back to the system (its trim
    threshold follows the largest block it recently served by ``mmap``); the next
    call then takes every page back with a page fault. In a loop of calls whose
    outputs are of some hundreds of KiB to a few MiB, that was most of the time
    (docs/benchmarks.md, "Outputs in pairs"). One allocation for both leaves its
    own size free, which ``malloc`` keeps. The halves share no element; either
    keeps the whole allocation alive.
    """
    both = be.empty((2, *shape), dtype)
    return both[0], both[1]


def empty_for(be: Backend, x: Any, shape: tuple[int, ...], dtype: Any) -> Array:
    """An output buffer of the input's own kind where the backend offers ``alloc_like``
    (the cuda backend: numba device arrays in, numba device arrays out)."""
    if type(x) is not np.ndarray:
        alloc_like = getattr(be, "alloc_like", None)
        if alloc_like is not None:
            return alloc_like(x, shape, dtype)
    return be.empty(shape, dtype)


def finish(
    x: Any, out: Any | None, buffer: Any, direct: bool, order: tuple[int, ...] | None = None
) -> Array:
    """Hand back the result: ``out`` (filled from the buffer if needed) or the buffer.

    With ``order`` the buffer holds the data in that axis order, and the result
    is its transpose back: an array laid out in memory like ``x``.
    """
    if order is None:
        y = buffer if buffer.shape == x.shape else buffer.reshape(x.shape)
    else:
        inverse = tuple(int(a) for a in np.argsort(order))
        y = buffer.reshape(tuple(x.shape[a] for a in order)).transpose(inverse)
    if out is None:
        return y if y.dtype == x.dtype else y.astype(x.dtype, order="K")
    if not direct:
        out[...] = y
    return out


def identity(be: Backend, x: Any, out: Any | None) -> Array:
    """The result of an operation that changes nothing: ``x`` itself, or ``out`` filled."""
    if out is None or out is x:
        return x
    check_out(be, out, x)
    out[...] = x.copy() if overlaps(out, x) else x
    return out


def copy_into(out: Any, x: Any) -> None:
    """``out[...] = x`` with the reference backend's tiled copy for transposed layouts."""
    from normdrop.backends.numpy_backend import copy_into as tiled_copy  # only for non-C layouts

    tiled_copy(out, x)
