"""Recycled host buffers for large outputs.

A fresh ``numpy.empty`` of more than a few MiB is mapped straight from the
kernel: its first touch page-faults every page, which costs about as much as
the whole (memory-bound) kernel. This pool keeps a few large buffers and hands
one back out only when nothing outside the pool references it any more (every
view of a buffer holds a reference to it), so a result the caller still holds is
never overwritten.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

__all__ = ["pooled_empty"]

#: Buffers smaller than this come from ``numpy.empty`` (malloc reuses them already).
MIN_BYTES = 4 << 20
#: The pool never keeps more than this many bytes alive.
MAX_POOL_BYTES = 512 << 20

_lock = threading.Lock()
# The pool's buffers after a sentinel that is never handed out: referenced by nothing but
# the list, it shows how many references a free buffer has. Counting the sentinel with the
# same statement as the buffers makes the comparison exact on every interpreter: the
# references that the loop and ``getrefcount`` add differ between CPython versions (3.14
# borrows the loop variable's) and builds (free-threaded), and a fixed count went wrong
# there, handing out buffers that callers still held.
_pool: list[np.ndarray] = [np.empty(0, np.uint8)]


def pooled_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Return an uninitialised C-contiguous array, recycling a large free buffer when possible.

    Parameters
    ----------
    shape : tuple of int
    dtype : dtype-like

    Returns
    -------
    numpy.ndarray
    """
    fresh = np.empty(shape, dtype)  # untouched pages: cheap even when large
    nbytes = fresh.nbytes
    if nbytes < MIN_BYTES:
        return fresh  # the quickest answer for small arrays, where call overhead counts
    dtype = fresh.dtype
    del fresh
    with _lock:
        free_refs = -1
        for buf in _pool:
            refs = sys.getrefcount(buf)
            if free_refs < 0:
                free_refs = refs  # the sentinel, first
            elif buf.nbytes == nbytes and refs == free_refs:
                return buf.view(dtype).reshape(shape)
        buf = np.empty(nbytes, np.uint8)
        _pool.append(buf)
        while sum(b.nbytes for b in _pool) > MAX_POOL_BYTES:
            _pool.pop(1)  # forget the oldest; it lives on while someone holds it
        return buf.view(dtype).reshape(shape)
