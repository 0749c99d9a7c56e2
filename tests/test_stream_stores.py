"""Streaming (non-temporal) stores of the numba backend's large outputs: same bits, any
alignment, chosen by size."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from normdrop import functional as F

numba = pytest.importorskip("numba")

from normdrop.backends.numba_backend import stream  # noqa: E402

BACKEND_MODULE = sys.modules["normdrop.backends.numba_backend.backend"]
SEED, CALL = 2**33 + 5, 7


@numba.njit(nogil=True)
def _stream_into(dst, src):
    stream.stream_row(dst, src)
    stream.store_fence()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int8])
@pytest.mark.parametrize("n", [0, 1, 3, 15, 16, 17, 31, 64, 100, 1000])
def test_stream_row_copies_exactly_at_every_alignment(rng, dtype, n):
    """Every start within a cache line, and lengths around whole lines: the copy is
    exact and nothing around the destination is written."""
    itemsize = np.dtype(dtype).itemsize
    src = (100 * rng.standard_normal(n)).astype(dtype)
    for start in range(stream.LINE // itemsize + 1):
        buffer = np.full(n + 2 * stream.LINE, -7, dtype)
        _stream_into(buffer[start : start + n], src)
        np.testing.assert_array_equal(buffer[start : start + n], src)
        assert (buffer[:start] == -7).all() and (buffer[start + n :] == -7).all()


def test_stream_row_of_an_array_not_aligned_to_its_items(rng):
    """A float32 view that starts one byte into a buffer has no item on a line boundary:
    it is copied with ordinary stores, exactly."""
    src = rng.standard_normal(100).astype(np.float32)
    raw = np.zeros(4 * 100 + 1 + stream.LINE, np.uint8)
    dst = raw[1 : 1 + 400].view(np.float32)
    assert not dst.flags.aligned
    _stream_into(dst, src)
    np.testing.assert_array_equal(dst, src)
    assert raw[0] == 0 and (raw[401:] == 0).all()


def _forward(x, residual, w, b, p, training=True, out=None):
    d = x.shape[-1]
    return F.dropout_add_layer_norm_with_stats(
        x, residual, d, w, b, p, training=training, seed=SEED, call=CALL, out=out,
        backend="numba",
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    "shape",
    # one-element and odd rows, a row of no whole line, serial and parallel clones
    [(5, 1), (7, 3), (9, 17), (33, 1000), (3000, 37), (64, 1030)],
)
@pytest.mark.parametrize(
    ("with_residual", "p", "training"),
    [(True, 0.3, True), (False, 0.3, True), (True, 0.0, True), (True, 0.3, False)],
)
def test_streamed_forward_has_the_bits_of_the_cached_one(
    monkeypatch, rng, dtype, shape, with_residual, p, training
):
    x = rng.standard_normal(shape).astype(dtype)
    residual = rng.standard_normal(shape).astype(dtype) if with_residual else None
    w = (1 + 0.5 * rng.standard_normal(shape[-1])).astype(dtype)
    b = rng.standard_normal(shape[-1]).astype(dtype)
    cached = _forward(x, residual, w, b, p, training)
    monkeypatch.setattr(BACKEND_MODULE, "STREAM_MIN_BYTES", 0)
    streamed = _forward(x, residual, w, b, p, training)
    for got, expected in zip(streamed, cached, strict=True):
        if expected is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, expected)


def test_streamed_forward_into_an_out_off_the_line_boundaries(monkeypatch, rng):
    """``out=`` a C-contiguous view one value into its buffer: its rows start anywhere
    within a line; the values around it stay untouched."""
    shape = (40, 300)
    x = rng.standard_normal(shape).astype(np.float32)
    residual = rng.standard_normal(shape).astype(np.float32)
    expected = _forward(x, residual, None, None, 0.3)
    monkeypatch.setattr(BACKEND_MODULE, "STREAM_MIN_BYTES", 0)
    buffer = np.full(x.size + 2, -7, np.float32)
    out = buffer[1:-1].reshape(shape)
    got = _forward(x, residual, None, None, 0.3, out=out)
    assert got[0] is out
    np.testing.assert_array_equal(out, expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert buffer[0] == -7 and buffer[-1] == -7


@pytest.mark.parametrize(("rows", "streams"), [(3071, False), (3072, True)])
def test_outputs_from_12_mib_on_are_streamed(monkeypatch, rows, streams):
    """The kernel is told to stream exactly when the input (and so each output) holds
    :data:`~normdrop.backends.numba_backend.stream.STREAM_MIN_BYTES` or more."""
    seen = []
    pick = BACKEND_MODULE._clone

    def spy(kernel, size):
        clone = pick(kernel, size)

        def call(*args):
            seen.append(args[-1])
            return clone(*args)

        return call

    monkeypatch.setattr(BACKEND_MODULE, "_clone", spy)
    x = np.ones((rows, 1024), np.float32)
    assert (x.nbytes >= stream.STREAM_MIN_BYTES) is streams
    F.dropout_add_layer_norm(x, x, 1024, p=0.1, seed=SEED, backend="numba")
    assert seen == [streams]
