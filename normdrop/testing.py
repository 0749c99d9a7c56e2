"""Conformance checks for backends, for normdrop's own tests and for plugin authors.

Examples
--------
>>> import normdrop
>>> from normdrop.testing import check_backend
>>> check_backend(normdrop.get_backend("numpy"))
"""

from __future__ import annotations

import numpy as np

from normdrop._conformance import kernels, members, optional
from normdrop._conformance.kernels import PHILOX_KNOWN_ANSWERS
from normdrop.protocol import Backend
from normdrop.registry import get_backend

__all__ = ["PHILOX_KNOWN_ANSWERS", "check_backend"]


def check_backend(backend: Backend | str) -> None:
    """Check that ``backend`` implements the protocol and matches the reference backend.

    First that every required member of :class:`normdrop.protocol.Backend` is there
    (naming all the missing ones) and takes the protocol's arguments, and so does
    every optional member of :data:`normdrop.capabilities.OPTIONAL_MEMBERS` the backend
    has. Then runs every kernel on small float32 and float64 data and compares it
    with the ``numpy`` reference backend (the dtype of every result exactly, the
    values of float64 data to 1e-9 and of float32 data to 1e-4), the
    Philox known-answer vectors through ``dropout_forward``, and dropout outputs,
    masks and (unless ``supports_bitmask`` is False) bitmasks bit for bit; and the
    optional ``batch_norm_forward``, ``batch_norm_backward``,
    ``dropout_add_layer_norm_forward``, ``alloc_like`` and ``bind`` (bound calls
    equal to the kernels' bit for bit) where the backend has them, and each
    optional keyword of :data:`normdrop.capabilities.OPTIONAL_KEYWORDS` (``counter``,
    ``accumulate``) its kernels take.

    Parameters
    ----------
    backend : Backend or str
        The backend object, or its registered name.

    Raises
    ------
    AssertionError
        Naming the missing members, or the first kernel that does not conform (a
        kernel that raises fails the check too, naming the kernel and the exception).
    """
    backend = get_backend(backend) if isinstance(backend, str) else backend
    members.check_members(backend)
    ref = get_backend("numpy")
    kernels.check_kernels(backend, ref, np.dtype(np.float64), 1e-9)
    kernels.check_kernels(backend, ref, np.dtype(np.float32), 1e-4)
    kernels.check_philox(backend)
    kernels.check_dropout(backend, ref)
    if hasattr(backend, "batch_norm_forward"):
        optional.check_batch_norm_forward(backend, ref)
    if hasattr(backend, "batch_norm_backward"):
        optional.check_batch_norm_backward(backend, ref)
    optional.check_optional_keywords(backend, ref)
    if hasattr(backend, "dropout_add_layer_norm_forward"):
        optional.check_dropout_add_layer_norm_forward(backend, ref)
    if hasattr(backend, "alloc_like"):
        optional.check_alloc_like(backend)
    if hasattr(backend, "bind"):
        optional.check_bind(backend)
