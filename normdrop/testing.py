"""Conformance checks for backends, for normdrop's own tests and for plugin authors.

Examples
--------
>>> import normdrop
>>> from normdrop.testing import check_backend
>>> check_backend(normdrop.get_backend("numpy"))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from normdrop.capabilities import OPTIONAL_MEMBERS, takes_keyword
from normdrop.protocol import REQUIRED_MEMBERS, ArrayLike, Backend
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


def _fail(backend: Any, what: str, detail: str = "") -> AssertionError:
    name = getattr(backend, "name", None)
    who = f"backend {name!r}" if isinstance(name, str) else repr(backend)
    return AssertionError(f"{who}: {what}" + (f" ({detail})" if detail else ""))


def _positional_arity(protocol: type, member: str) -> int:
    """How many positional arguments (after ``self``) the protocol's method takes."""
    parameters = list(inspect.signature(getattr(protocol, member)).parameters.values())[1:]
    return len(parameters)


def _check_callable(backend: Any, protocol: type, member: str) -> None:
    """``backend.member`` is callable with the protocol's positional arguments."""
    method = getattr(backend, member)
    if not callable(method):
        raise _fail(backend, f"{member} must be callable", repr(method))
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):  # a builtin or compiled callable: nothing to inspect
        return
    arity = _positional_arity(protocol, member)
    try:
        signature.bind(*range(arity))
    except TypeError as exc:
        expected = inspect.signature(getattr(protocol, member))
        raise _fail(
            backend, f"{member}{signature} does not take the protocol's arguments {expected}"
        ) from exc


def _check_members(backend: Any) -> None:
    """Every required member is there (all missing ones named at once), with the
    protocol's signature, and so is every declared optional member the backend has."""
    missing = [m for m in REQUIRED_MEMBERS if not hasattr(backend, m)]
    if missing:
        raise _fail(
            backend,
            "missing required member(s) of normdrop.protocol.Backend: " + ", ".join(missing),
        )
    for member in ("name", "device"):
        if not isinstance(getattr(backend, member), str):
            raise _fail(backend, f"{member} must be a str", repr(getattr(backend, member)))
    if backend.device not in ("cpu", "cuda"):
        raise _fail(backend, "device must be 'cpu' or 'cuda'", repr(backend.device))
    for member in REQUIRED_MEMBERS[2:]:
        _check_callable(backend, Backend, member)
    for member, protocol in OPTIONAL_MEMBERS.items():
        if member == "supports_bitmask":
            flag = getattr(backend, member, True)
            if not isinstance(flag, bool | np.bool_):
                raise _fail(backend, "supports_bitmask must be a bool", repr(flag))
        elif hasattr(backend, member):
            _check_callable(backend, protocol, member)


def _keeps_bitmask(backend: Any) -> bool:
    return bool(getattr(backend, "supports_bitmask", True))


def _close(backend: Any, what: str, got: Any, expected: Any, tol: float) -> None:
    if not isinstance(got, ArrayLike):
        raise _fail(backend, f"{what} is not an array", type(got).__name__)
    got = backend.to_numpy(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        raise _fail(backend, f"{what} has shape {got.shape}, expected {expected.shape}")
    if not np.allclose(got, expected, rtol=tol, atol=tol):
        err = np.max(np.abs(got.astype(np.float64) - expected))
        raise _fail(backend, f"{what} differs from the numpy reference", f"max error {err}")


def _equal(backend: Any, what: str, got: Any, expected: Any) -> None:
    if not isinstance(got, ArrayLike):
        raise _fail(backend, f"{what} is not an array", type(got).__name__)
    if not np.array_equal(backend.to_numpy(got), expected):
        raise _fail(backend, f"{what} differs from the numpy reference bit for bit")


def _run(
    backend: Any,
    ref: Any,
    name: str,
    make_args: Callable[[Any, Callable[[Any], Any]], tuple],
    tol: float,
    label: str = "",
) -> None:
    """Call kernel ``name`` on both backends with the same data; compare every result."""
    got = getattr(backend, name)(*make_args(backend, backend.asarray))
    expected = getattr(ref, name)(*make_args(ref, np.asarray))
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    if len(got) != len(expected):
        raise _fail(backend, f"{name} returned {len(got)} values, expected {len(expected)}")
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        what = f"{name} result {i}{label}"
        if e is None:
            if g is not None:
                raise _fail(backend, f"{what} should be None")
            continue
        _close(backend, what, g, e, tol)


def _check_kernels(backend: Any, ref: Any, dtype: np.dtype, tol: float) -> None:
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
        _run(backend, ref, name, make_args, tol, label)

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


def _check_philox(backend: Any) -> None:
    """The known-answer vectors through ``dropout_forward``: at ``threshold = word`` an
    element is kept, at ``word + 1`` dropped, which pins every word exactly."""
    ones = np.ones(4, np.float32)
    for counter, key, words in PHILOX_KNOWN_ANSWERS:
        offset = 4 * (counter[0] | counter[1] << 32)
        call = counter[2] | counter[3] << 32
        seed = key[0] | key[1] << 32
        for lane, word in enumerate(words):
            for threshold, kept in ((word, 1.0), (word + 1, 0.0)):
                y = backend.dropout_forward(
                    backend.asarray(ones), threshold, np.float32(1), seed, call,
                    backend.empty((4,), ones.dtype), None, offset,
                )  # fmt: skip
                if backend.to_numpy(y)[lane] != kept:
                    raise _fail(
                        backend,
                        "Philox4x32-10 known-answer test failed",
                        f"counter {counter}, key {key}, word {lane}",
                    )


def _check_dropout(backend: Any, ref: Any) -> None:
    x = np.linspace(-1, 1, 45, dtype=np.float32)
    scale = np.float32(2.0)
    for threshold, seed, call in ((2**31, 11, 2), (3 * 2**30, 2**64 - 1, 2**40 + 3)):
        mask = ref.dropout_mask(x.size, threshold, seed, call)
        got = backend.dropout_mask(x.size, threshold, seed, call)
        _equal(backend, f"dropout_mask (seed={seed}, call={call})", got, mask)
        y = backend.dropout_forward(
            backend.asarray(x[5:]), threshold, scale, seed, call, backend.empty((40,), x.dtype),
            None, 5,
        )  # fmt: skip
        _equal(backend, "dropout_forward with an offset", y, np.where(mask, x * scale, 0)[5:])
    if not _keeps_bitmask(backend):
        return
    mask = ref.dropout_mask(x.size, 2**31, 11, 2)
    bits = backend.empty(((x.size + 7) // 8,), np.uint8)
    y = backend.dropout_forward(
        backend.asarray(x), 2**31, scale, 11, 2, backend.empty(x.shape, x.dtype), bits
    )
    _equal(backend, "dropout_forward", y, np.where(mask, x * scale, 0))
    _equal(backend, "dropout_forward's bitmask", bits, np.packbits(mask, bitorder="little"))
    dx = backend.dropout_apply_bitmask(
        backend.asarray(x), bits, scale, backend.empty(x.shape, x.dtype)
    )
    _equal(backend, "dropout_apply_bitmask", dx, np.where(mask, x * scale, 0))


def _reference_batch_norm_forward(
    ref: Any,
    x: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    use_batch: bool,
    update: bool,
    momentum: float,
    eps: float,
    out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :meth:`~normdrop.capabilities.FusedKernels.batch_norm_forward` computes, from the
    required kernels of the reference backend ``ref`` (float64 vectors)."""
    if use_batch:
        mean, var = ref.channel_moments(x)
        if update and running_mean is not None and running_var is not None:
            count = x.shape[0] * x.shape[2]
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * var * count / (count - 1)
    else:
        mean, var = np.asarray(running_mean, np.float64), np.asarray(running_var, np.float64)
    rstd = 1 / np.sqrt(var + eps)
    scale = rstd if weight is None else rstd * weight
    shift = np.zeros_like(mean) if bias is None else np.asarray(bias, np.float64)
    return ref.channel_affine(x, mean, scale, shift, out), mean, rstd


def _check_batch_norm_forward(backend: Any, ref: Any) -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((6, 3, 5)) * 2 + 1).astype(np.float32)
    w, b = rng.random(3) + 0.5, rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    for use_batch, update, tracked in ((True, True, True), (True, False, False), (False, 0, 1)):
        label = f" (use_batch={use_batch}, update={bool(update)}, running={bool(tracked)})"
        rm_ref, rv_ref = (rm.copy(), rv.copy()) if tracked else (None, None)
        expected = _reference_batch_norm_forward(
            ref, x, rm_ref, rv_ref, w, b, use_batch, bool(update), 0.3, 1e-5, np.empty_like(x)
        )
        on = backend.asarray
        rm_be, rv_be = (on(rm), on(rv)) if tracked else (None, None)
        got = backend.batch_norm_forward(
            on(x), rm_be, rv_be, on(w), on(b), use_batch, bool(update), 0.3, 1e-5,
            backend.empty(x.shape, x.dtype),
        )  # fmt: skip
        for i, tol in enumerate((1e-5, 1e-9, 1e-9)):
            _close(backend, f"batch_norm_forward result {i}{label}", got[i], expected[i], tol)
        if tracked:
            _close(backend, f"batch_norm_forward's running_mean{label}", rm_be, rm_ref, 1e-9)
            _close(backend, f"batch_norm_forward's running_var{label}", rv_be, rv_ref, 1e-9)


def _check_batch_norm_backward(backend: Any, ref: Any) -> None:
    """The optional whole BatchNorm backward against the reference's two-kernel composition."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 3, 5)) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal((6, 3, 5)).astype(np.float32)
    mean, var = ref.channel_moments(x)
    rstd = 1 / np.sqrt(var + 1e-5)
    w = rng.random(3) + 0.5
    sum_dy, sum_dy_xmu = ref.channel_backward_reduce(dy, x, mean)
    on = backend.asarray
    for weight, training in ((w, True), (None, True), (w, False), (None, False)):
        a = rstd if weight is None else rstd * weight
        b, shift = (
            (-a * rstd**2 * sum_dy_xmu / 30, -a * sum_dy / 30) if training else (0 * a, 0 * a)
        )
        expected = ref.channel_backward_elemt(dy, x, mean, a, b, shift, np.empty_like(x))
        got = backend.batch_norm_backward(
            on(dy), on(x), on(mean), on(rstd), None if weight is None else on(weight), training,
            backend.empty(x.shape, x.dtype),
        )  # fmt: skip
        label = f" (weight={weight is not None}, training={training})"
        _close(backend, f"batch_norm_backward's input gradient{label}", got[0], expected, 1e-5)
        if weight is None:
            if got[1] is not None or got[2] is not None:
                raise _fail(backend, f"batch_norm_backward{label} must return None gradients")
        else:
            _close(
                backend, f"batch_norm_backward's dweight{label}", got[1], sum_dy_xmu * rstd, 1e-9
            )
            _close(backend, f"batch_norm_backward's dbias{label}", got[2], sum_dy, 1e-9)


def _check_optional_keywords(backend: Any, ref: Any) -> None:
    """Each optional keyword of :data:`~normdrop.capabilities.OPTIONAL_KEYWORDS` the backend takes
    updates the layer state it is given, in place, as the keyword promises."""
    rng = np.random.default_rng(4)
    on = backend.asarray
    if takes_keyword(backend, "batch_norm_forward", "counter"):
        x = rng.standard_normal((4, 3, 5))
        for update, step in ((True, 1), (False, 0)):
            counter = on(np.array(7, np.int64))
            backend.batch_norm_forward(
                on(x), on(np.zeros(3)), on(np.ones(3)), None, None, True, update, 0.1, 1e-5,
                backend.empty(x.shape, x.dtype), counter=counter,
            )  # fmt: skip
            if int(backend.to_numpy(counter)) != 7 + step:
                raise _fail(
                    backend, f"batch_norm_forward(update={update}) must add {step} to counter"
                )
    x = rng.standard_normal((4, 3, 5))
    dy = rng.standard_normal((4, 3, 5))
    mean, var = ref.channel_moments(x)
    rstd = 1 / np.sqrt(var + 1e-5)
    w = rng.random(3) + 0.5
    for member in ("batch_norm_backward", "layer_norm_backward"):
        if not takes_keyword(backend, member, "accumulate"):
            continue
        held = (rng.standard_normal(3), rng.standard_normal(3))
        buffers = (on(held[0].copy()), on(held[1].copy()))
        if member == "batch_norm_backward":
            sum_dy, sum_dy_xmu = ref.channel_backward_reduce(dy, x, mean)
            grads = (sum_dy_xmu * rstd, sum_dy)
            got = backend.batch_norm_backward(
                on(dy), on(x), on(mean), on(rstd), on(w), True, backend.empty(x.shape, x.dtype),
                accumulate=buffers,
            )  # fmt: skip
        else:
            rows, drows = x.reshape(12, 5)[:, :3].copy(), dy.reshape(12, 5)[:, :3].copy()
            _, rmean, rrstd = ref.layer_norm_forward(rows, w, None, 1e-5, np.empty_like(rows))
            _, *grads = ref.layer_norm_backward(
                drows, rows, rmean, rrstd, w, np.empty_like(rows), True
            )  # fmt: skip
            got = backend.layer_norm_backward(
                on(drows), on(rows), on(rmean), on(rrstd), on(w),
                backend.empty(rows.shape, rows.dtype), True, accumulate=buffers,
            )  # fmt: skip
        if got[1] is not buffers[0] or got[2] is not buffers[1]:
            raise _fail(backend, f"{member}(accumulate=...) must return the buffers it added into")
        for i, name in enumerate(("dweight", "dbias")):
            _close(backend, f"{member}'s accumulated {name}", buffers[i], held[i] + grads[i], 1e-9)


def _check_dropout_add_layer_norm_forward(backend: Any, ref: Any) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 10)).astype(np.float32)
    res = rng.standard_normal((6, 10)).astype(np.float32)
    w = rng.standard_normal(10) + 1
    keeps = _keeps_bitmask(backend)
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
        _equal(backend, f"{what}: r", got[1], expected[1])
        for i in (0, 2, 3):
            _close(backend, f"{what} result {i}", got[i], expected[i], 1e-4)
        if bits is not None:
            _equal(backend, f"{what}: the bitmask", bits, ref_bits)


def _check_alloc_like(backend: Any) -> None:
    x = backend.asarray(np.zeros((2, 3), np.float32))
    y = backend.alloc_like(x, (4,), np.float64)
    if not (isinstance(y, ArrayLike) and backend.accepts(y)):
        raise _fail(backend, "alloc_like must return an array the backend accepts", repr(y))
    if tuple(y.shape) != (4,) or np.dtype(y.dtype) != np.float64:
        raise _fail(backend, "alloc_like gave the wrong shape or dtype", f"{y.shape}, {y.dtype}")


def check_backend(backend: Backend | str) -> None:
    """Check that ``backend`` implements the protocol and matches the reference backend.

    First that every required member of :class:`normdrop.protocol.Backend` is there
    (naming all the missing ones) and takes the protocol's arguments, and so does
    every optional member of :data:`normdrop.capabilities.OPTIONAL_MEMBERS` the backend
    has. Then runs every kernel on small float32 and float64 data and compares it
    with the ``numpy`` reference backend (float64 to 1e-9, float32 to 1e-4), the
    Philox known-answer vectors through ``dropout_forward``, and dropout outputs,
    masks and (unless ``supports_bitmask`` is False) bitmasks bit for bit; and the
    optional ``batch_norm_forward``, ``batch_norm_backward``,
    ``dropout_add_layer_norm_forward`` and ``alloc_like`` where the backend has
    them, and each optional keyword of :data:`normdrop.capabilities.OPTIONAL_KEYWORDS`
    (``counter``, ``accumulate``) its kernels take.

    Parameters
    ----------
    backend : Backend or str
        The backend object, or its registered name.

    Raises
    ------
    AssertionError
        Naming the missing members, or the first kernel that does not conform.
    """
    backend = get_backend(backend) if isinstance(backend, str) else backend
    _check_members(backend)
    ref = get_backend("numpy")
    _check_kernels(backend, ref, np.dtype(np.float64), 1e-9)
    _check_kernels(backend, ref, np.dtype(np.float32), 1e-4)
    _check_philox(backend)
    _check_dropout(backend, ref)
    if hasattr(backend, "batch_norm_forward"):
        _check_batch_norm_forward(backend, ref)
    if hasattr(backend, "batch_norm_backward"):
        _check_batch_norm_backward(backend, ref)
    _check_optional_keywords(backend, ref)
    if hasattr(backend, "dropout_add_layer_norm_forward"):
        _check_dropout_add_layer_norm_forward(backend, ref)
    if hasattr(backend, "alloc_like"):
        _check_alloc_like(backend)
