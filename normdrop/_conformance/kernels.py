"""The required kernels against the reference backend, Philox known answers, dropout bits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .compare import call, equal, fail, run_both

__all__ = [
    "PHILOX_KNOWN_ANSWERS",
    "check_dropout",
    "check_kernels",
    "check_philox",
    "keeps_bitmask",
]

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


def keeps_bitmask(backend: Any) -> bool:
    """Whether ``backend`` keeps dropout's packed bitmask (``supports_bitmask``, default True)."""
    return bool(getattr(backend, "supports_bitmask", True))


def check_kernels(backend: Any, ref: Any, dtype: np.dtype, tol: float) -> None:
    """Every required kernel on small ``dtype`` data, within ``tol`` of the reference."""
    rng = np.random.default_rng(0)
    n, c, length, rows, features = 5, 3, 7, 6, 10
    x3 = rng.standard_normal((n, c, length)).astype(dtype) * 3 + 2
    dy3 = rng.standard_normal((n, c, length)).astype(dtype)
    vec = rng.standard_normal(c) + 1
    x2 = rng.standard_normal((rows, features)).astype(dtype) * 2 - 1
    dy2 = rng.standard_normal((rows, features)).astype(dtype)
    w = rng.standard_normal(features) + 1
    label = f" ({dtype})"

    def run(name: str, make_args: Callable[[Any, Callable[[Any], Any]], tuple]) -> None:
        run_both(backend, ref, name, make_args, tol, label)

    mean3, _ = ref.channel_moments(x3)
    _, mean2, rstd2 = ref.layer_norm_forward(x2, None, None, 1e-5, np.empty_like(x2))
    run("channel_moments", lambda b, a: (a(x3),))
    run("channel_affine", lambda b, a: (a(x3), a(mean3), a(vec), a(-vec), b.empty(x3.shape, dtype)))
    run("layer_norm_forward", lambda b, a: (a(x2), a(w), a(w - 1), 1e-5, b.empty(x2.shape, dtype)))
    run("layer_norm_forward", lambda b, a: (a(x2), None, None, 1e-5, b.empty(x2.shape, dtype)))
    run("channel_backward_reduce", lambda b, a: (a(dy3), a(x3), a(mean3)))
    run(
        "channel_backward_elemt",
        lambda b, a: (
            a(dy3), a(x3), a(mean3), a(vec), a(vec / 2), a(-vec), b.empty(x3.shape, dtype),
        ),
    )  # fmt: skip
    run(
        "layer_norm_backward",
        lambda b, a: (a(dy2), a(x2), a(mean2), a(rstd2), a(w), b.empty(x2.shape, dtype), True),
    )
    run(
        "layer_norm_backward",
        lambda b, a: (a(dy2), a(x2), a(mean2), a(rstd2), None, b.empty(x2.shape, dtype), False),
    )


def check_philox(backend: Any) -> None:
    """The known-answer vectors through ``dropout_forward``: at ``threshold = word`` an
    element is kept, at ``word + 1`` dropped, which pins every word exactly."""
    ones = np.ones(4, np.float32)
    for counter, key, words in PHILOX_KNOWN_ANSWERS:
        offset = 4 * (counter[0] | counter[1] << 32)
        counter_call = counter[2] | counter[3] << 32
        seed = key[0] | key[1] << 32
        for lane, word in enumerate(words):
            for threshold, kept in ((word, 1.0), (word + 1, 0.0)):
                y = call(
                    backend, "dropout_forward", backend.dropout_forward,
                    backend.asarray(ones), threshold, np.float32(1), seed, counter_call,
                    backend.empty((4,), ones.dtype), None, offset,
                )  # fmt: skip
                if backend.to_numpy(y)[lane] != kept:
                    raise fail(
                        backend,
                        "Philox4x32-10 known-answer test failed",
                        f"counter {counter}, key {key}, word {lane}",
                    )


def check_dropout(backend: Any, ref: Any) -> None:
    """Masks, dropout outputs (with an offset) and bitmasks, bit for bit as the reference's."""
    x = np.linspace(-1, 1, 45, dtype=np.float32)
    scale = np.float32(2.0)
    for threshold, seed, step in ((2**31, 11, 2), (3 * 2**30, 2**64 - 1, 2**40 + 3)):
        mask = ref.dropout_mask(x.size, threshold, seed, step)
        got = call(backend, "dropout_mask", backend.dropout_mask, x.size, threshold, seed, step)
        equal(backend, f"dropout_mask (seed={seed}, call={step})", got, mask)
        y = call(
            backend, "dropout_forward", backend.dropout_forward, backend.asarray(x[5:]),
            threshold, scale, seed, step, backend.empty((40,), x.dtype), None, 5,
        )  # fmt: skip
        equal(backend, "dropout_forward with an offset", y, np.where(mask, x * scale, 0)[5:])
    if not keeps_bitmask(backend):
        return
    mask = ref.dropout_mask(x.size, 2**31, 11, 2)
    bits = backend.empty(((x.size + 7) // 8,), np.uint8)
    y = call(
        backend, "dropout_forward", backend.dropout_forward,
        backend.asarray(x), 2**31, scale, 11, 2, backend.empty(x.shape, x.dtype), bits,
    )  # fmt: skip
    equal(backend, "dropout_forward", y, np.where(mask, x * scale, 0))
    equal(backend, "dropout_forward's bitmask", bits, np.packbits(mask, bitorder="little"))
    dx = call(
        backend, "dropout_apply_bitmask", backend.dropout_apply_bitmask,
        backend.asarray(x), bits, scale, backend.empty(x.shape, x.dtype),
    )  # fmt: skip
    equal(backend, "dropout_apply_bitmask", dx, np.where(mask, x * scale, 0))
