"""Conformance checks for backends, for normdrop's own tests and for plugin authors.

Examples
--------
>>> import normdrop
>>> from normdrop.testing import check_backend
>>> check_backend(normdrop.get_backend("numpy"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from normdrop.protocol import Backend
from normdrop.registry import get_backend

__all__ = ["PHILOX_KNOWN_ANSWERS", "check_backend"]

#: Random123 known-answer vectors: ((counter words), (key words), (output words)).
PHILOX_KNOWN_ANSWERS = (
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
)


def _fail(backend: Backend, what: str, detail: str = "") -> AssertionError:
    return AssertionError(f"backend {backend.name!r}: {what}" + (f" ({detail})" if detail else ""))


def _close(backend: Backend, what: str, got: Any, expected: np.ndarray, tol: float) -> None:
    got = backend.to_numpy(got)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=tol, atol=tol):
        err = np.max(np.abs(got - expected)) if got.shape == expected.shape else "shape"
        raise _fail(backend, f"{what} differs from the numpy reference", f"max error {err}")


def _check_philox(backend: Backend) -> None:
    for counter, key, expected in PHILOX_KNOWN_ANSWERS:
        block = counter[0] | counter[1] << 32
        call = counter[2] | counter[3] << 32
        seed = key[0] | key[1] << 32
        words = backend.to_numpy(backend.philox_words(4, seed, call, 4 * block))
        if tuple(int(w) for w in words) != expected:
            raise _fail(backend, "Philox4x32-10 known-answer test failed", f"counter {counter}")


def _check_kernels(backend: Backend, ref: Backend, dtype: np.dtype, tol: float) -> None:
    rng = np.random.default_rng(0)
    n, c, length, rows, features = 5, 3, 7, 6, 10
    x3 = rng.standard_normal((n, c, length)).astype(dtype) * 3 + 2
    dy3 = rng.standard_normal((n, c, length)).astype(dtype)
    vec = rng.standard_normal(c) + 1
    x2 = rng.standard_normal((rows, features)).astype(dtype) * 2 - 1
    dy2 = rng.standard_normal((rows, features)).astype(dtype)
    w = rng.standard_normal(features) + 1
    on = backend.asarray

    def run(name: str, make_args: Callable[[Backend, Callable[[Any], Any]], tuple]) -> None:
        got = getattr(backend, name)(*make_args(backend, on))
        expected = getattr(ref, name)(*make_args(ref, np.asarray))
        got = got if isinstance(got, tuple) else (got,)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            if e is None:
                if g is not None:
                    raise _fail(backend, f"{name} result {i} should be None")
                continue
            _close(backend, f"{name} result {i} ({dtype})", g, np.asarray(e), tol)

    mean3, _ = ref.channel_moments(x3)
    mean2, var2 = ref.row_moments(x2)
    rstd2 = 1 / np.sqrt(var2 + 1e-5)
    run("channel_moments", lambda b, a: (a(x3),))
    run("row_moments", lambda b, a: (a(x2),))
    run(
        "channel_affine",
        lambda b, a: (a(x3), a(mean3), a(vec), a(-vec), b.empty(x3.shape, dtype)),
    )
    run("layer_norm_forward", lambda b, a: (a(x2), a(w), a(w - 1), 1e-5, b.empty(x2.shape, dtype)))
    run("layer_norm_forward", lambda b, a: (a(x2), None, None, 1e-5, b.empty(x2.shape, dtype)))
    run("channel_backward_reduce", lambda b, a: (a(dy3), a(x3), a(mean3)))
    run(
        "channel_backward_elemt",
        lambda b, a: (
            a(dy3),
            a(x3),
            a(mean3),
            a(vec),
            a(vec / 2),
            a(-vec),
            b.empty(x3.shape, dtype),
        ),
    )
    for weight, grads in ((w, True), (None, False)):
        run(
            "layer_norm_backward",
            lambda b, a, weight=weight, grads=grads: (
                a(dy2),
                a(x2),
                a(mean2),
                a(rstd2),
                None if weight is None else a(weight),
                b.empty(x2.shape, dtype),
                grads,
            ),
        )


def _check_dropout(backend: Backend, ref: Backend) -> None:
    for n, seed, call, offset in ((37, 0, 0, 0), (64, 2**64 - 1, 2**40 + 3, 5), (1, 7, 1, 3)):
        got = backend.to_numpy(backend.philox_words(n, seed, call, offset))
        if not np.array_equal(got, ref.philox_words(n, seed, call, offset)):
            raise _fail(
                backend, "philox_words differ from the reference", f"n={n}, offset={offset}"
            )
    x = np.linspace(-1, 1, 45, dtype=np.float32)
    threshold, scale = 2**31, np.float32(2.0)
    mask = ref.dropout_mask(x.size, threshold, 11, 2)
    if not np.array_equal(backend.to_numpy(backend.dropout_mask(x.size, threshold, 11, 2)), mask):
        raise _fail(backend, "dropout_mask differs from the reference")
    y = backend.dropout_forward(
        backend.asarray(x[5:]), threshold, scale, 11, 2, backend.empty((40,), x.dtype), None, 5
    )
    if not np.array_equal(backend.to_numpy(y), np.where(mask, x * scale, 0)[5:]):
        raise _fail(backend, "dropout_forward with an offset differs from the reference")
    if not getattr(backend, "supports_bitmask", True):
        return
    bits = backend.empty(((x.size + 7) // 8,), np.uint8)
    y = backend.dropout_forward(
        backend.asarray(x), threshold, scale, 11, 2, backend.empty(x.shape, x.dtype), bits
    )
    if not np.array_equal(backend.to_numpy(y), np.where(mask, x * scale, 0)):
        raise _fail(backend, "dropout_forward differs from the reference")
    if not np.array_equal(backend.to_numpy(bits), np.packbits(mask, bitorder="little")):
        raise _fail(backend, "dropout_forward's bitmask differs from the reference")
    dx = backend.dropout_apply_bitmask(
        backend.asarray(x), bits, scale, backend.empty(x.shape, x.dtype)
    )
    if not np.array_equal(backend.to_numpy(dx), np.where(mask, x * scale, 0)):
        raise _fail(backend, "dropout_apply_bitmask differs from the reference")


def _check_fused(backend: Backend, ref: Backend) -> None:
    """The optional ``dropout_add_layer_norm_forward``, where the backend has it."""
    if not hasattr(backend, "dropout_add_layer_norm_forward"):
        return
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 10)).astype(np.float32)
    res = rng.standard_normal((6, 10)).astype(np.float32)
    w = rng.standard_normal(10) + 1
    keeps = getattr(backend, "supports_bitmask", True)
    for threshold, residual, offset in ((2**31, res, 0), (2**31, None, 3), (None, res, 0)):
        bits = backend.empty((8,), np.uint8) if keeps and threshold and not offset else None
        ref_bits = np.empty(8, np.uint8) if bits is not None else None
        got = backend.dropout_add_layer_norm_forward(
            backend.asarray(x), None if residual is None else backend.asarray(residual),
            backend.asarray(w), None, 1e-5, threshold, np.float32(2.0), 11, 2,
            backend.empty(x.shape, x.dtype), backend.empty(x.shape, x.dtype), bits, offset,
        )  # fmt: skip
        expected = ref.dropout_add_layer_norm_forward(
            x, residual, w, None, 1e-5, threshold, np.float32(2.0), 11, 2,
            np.empty_like(x), np.empty_like(x), ref_bits, offset,
        )  # fmt: skip
        what = f"dropout_add_layer_norm_forward (threshold={threshold}, offset={offset})"
        if not np.array_equal(backend.to_numpy(got[1]), expected[1]):
            raise _fail(backend, f"{what}: r differs from the reference")
        for i in (0, 2, 3):
            _close(backend, f"{what} result {i}", got[i], np.asarray(expected[i]), 1e-4)
        if bits is not None and not np.array_equal(backend.to_numpy(bits), ref_bits):
            raise _fail(backend, f"{what}: the bitmask differs from the reference")


def check_backend(backend: Backend | str) -> None:
    """Check that ``backend`` implements the protocol and matches the reference backend.

    Runs every kernel on small float32 and float64 data and compares it with the
    ``numpy`` reference backend (float64 to 1e-9, float32 to 1e-4), the Philox
    known-answer vectors, and dropout words, masks and bitmasks bit for bit (and the
    optional fused ``dropout_add_layer_norm_forward``, where the backend has one).

    Parameters
    ----------
    backend : Backend or str
        The backend object, or its registered name.

    Raises
    ------
    AssertionError
        Naming the first kernel that does not conform.
    """
    backend = get_backend(backend)
    if not isinstance(backend, Backend):
        raise AssertionError(f"{backend!r} does not implement normdrop.protocol.Backend")
    if backend.device not in ("cpu", "cuda"):
        raise _fail(backend, "device must be 'cpu' or 'cuda'", repr(backend.device))
    ref = get_backend("numpy")
    _check_philox(backend)
    _check_kernels(backend, ref, np.dtype(np.float64), 1e-9)
    _check_kernels(backend, ref, np.dtype(np.float32), 1e-4)
    _check_dropout(backend, ref)
    _check_fused(backend, ref)
