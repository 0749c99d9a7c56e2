"""Recycled large host buffers never overwrite a result the caller still holds."""

from __future__ import annotations

import numpy as np

from normdrop import functional as F
from normdrop.backends import _host_pool


def test_held_results_are_never_reused():
    x = np.random.default_rng(0).standard_normal((1024, 2048)).astype(np.float32)  # 8 MiB
    assert x.nbytes >= _host_pool.MIN_BYTES
    first = F.layer_norm(x, 2048, backend="numba")
    kept = first.copy()
    second = F.layer_norm(x * 2 + 1, 2048, backend="numba")
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)


def test_dropped_results_are_recycled():
    a = _host_pool.pooled_empty((1 << 21,), np.float32)
    address = a.__array_interface__["data"][0]
    del a
    b = _host_pool.pooled_empty((1 << 21,), np.float32)
    assert b.__array_interface__["data"][0] == address
    c = _host_pool.pooled_empty((1 << 21,), np.float32)  # b is held: a new buffer
    assert not np.shares_memory(b, c)


def test_small_buffers_are_plain():
    a = _host_pool.pooled_empty((16,), np.float64)
    assert a.base is None and a.shape == (16,)


def test_a_buffer_is_held_through_any_view_of_it():
    """A result dropped while a view of it (or a view of that view) lives is not reused."""
    a = _host_pool.pooled_empty((1 << 21,), np.float32)
    view = a.reshape(1024, 2048)[1:, ::2]
    del a
    b = _host_pool.pooled_empty((1 << 21,), np.float32)
    assert not np.shares_memory(view, b)
    del view, b
    c = _host_pool.pooled_empty((1 << 21,), np.float32)  # both dropped: one is reused
    d = _host_pool.pooled_empty((1 << 21,), np.float32)
    assert not np.shares_memory(c, d)
    assert len(_host_pool._pool) >= 3  # the sentinel and the two buffers
