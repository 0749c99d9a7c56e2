"""The optional capabilities a backend declares: fused kernels, keywords, output allocation."""

from __future__ import annotations

from typing import Any

import numpy as np

from normdrop.capabilities import takes_keyword
from normdrop.protocol import ArrayLike

from .compare import close, equal, fail
from .kernels import keeps_bitmask

__all__ = [
    "check_alloc_like",
    "check_batch_norm_backward",
    "check_bind",
    "check_batch_norm_forward",
    "check_dropout_add_layer_norm_forward",
    "check_optional_keywords",
    "reference_batch_norm_forward",
]


def reference_batch_norm_forward(
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


def check_batch_norm_forward(backend: Any, ref: Any) -> None:
    """The optional whole BatchNorm forward, with and without a running update."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((6, 3, 5)) * 2 + 1).astype(np.float32)
    w, b = rng.random(3) + 0.5, rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    for use_batch, update, tracked in ((True, True, True), (True, False, False), (False, 0, 1)):
        label = f" (use_batch={use_batch}, update={bool(update)}, running={bool(tracked)})"
        rm_ref, rv_ref = (rm.copy(), rv.copy()) if tracked else (None, None)
        expected = reference_batch_norm_forward(
            ref, x, rm_ref, rv_ref, w, b, use_batch, bool(update), 0.3, 1e-5, np.empty_like(x)
        )
        on = backend.asarray
        rm_be, rv_be = (on(rm), on(rv)) if tracked else (None, None)
        got = backend.batch_norm_forward(
            on(x), rm_be, rv_be, on(w), on(b), use_batch, bool(update), 0.3, 1e-5,
            backend.empty(x.shape, x.dtype),
        )  # fmt: skip
        for i, tol in enumerate((1e-5, 1e-9, 1e-9)):
            close(backend, f"batch_norm_forward result {i}{label}", got[i], expected[i], tol)
        if tracked:
            close(backend, f"batch_norm_forward's running_mean{label}", rm_be, rm_ref, 1e-9)
            close(backend, f"batch_norm_forward's running_var{label}", rv_be, rv_ref, 1e-9)


def check_batch_norm_backward(backend: Any, ref: Any) -> None:
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
        close(backend, f"batch_norm_backward's input gradient{label}", got[0], expected, 1e-5)
        if weight is None:
            if got[1] is not None or got[2] is not None:
                raise fail(backend, f"batch_norm_backward{label} must return None gradients")
        else:
            close(backend, f"batch_norm_backward's dweight{label}", got[1], sum_dy_xmu * rstd, 1e-9)
            close(backend, f"batch_norm_backward's dbias{label}", got[2], sum_dy, 1e-9)


def check_optional_keywords(backend: Any, ref: Any) -> None:
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
                raise fail(
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
            raise fail(backend, f"{member}(accumulate=...) must return the buffers it added into")
        for i, name in enumerate(("dweight", "dbias")):
            close(backend, f"{member}'s accumulated {name}", buffers[i], held[i] + grads[i], 1e-9)


def _same_results(backend: Any, what: str, got: tuple, expected: tuple) -> None:
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        equal(backend, f"{what} result {i}", g, backend.to_numpy(e))


def check_bind(backend: Any) -> None:
    """A bound call (:class:`~normdrop.capabilities.BoundKernels`) returns what the kernel
    returns bit for bit, updates the same state, and sees in-place changes to the arrays
    it was bound to."""
    rng = np.random.default_rng(6)
    on = backend.asarray
    x = on(rng.standard_normal((5, 8)).astype(np.float32))
    w = on((rng.random(8) + 0.5).astype(np.float32))
    b = on(rng.standard_normal(8).astype(np.float32))
    run = backend.bind("layer_norm_forward", x, w, b, 1e-5)
    for step in range(2 if run is not None else 0):
        expected = backend.layer_norm_forward(x, w, b, 1e-5, backend.empty(x.shape, x.dtype))
        _same_results(backend, f"bound layer_norm_forward (step {step})", run(x), expected)
        w[...] = w * 2  # in place: the next call must see it
    if not hasattr(backend, "batch_norm_forward"):
        return
    x3 = on(rng.standard_normal((4, 3, 5)).astype(np.float32))
    w3, b3 = on(np.full(3, 1.5, np.float32)), on(np.full(3, -0.5, np.float32))
    for update in (True, False):
        bound = [on(np.zeros(3, np.float32)), on(np.ones(3, np.float32))]
        unbound = [on(np.zeros(3, np.float32)), on(np.ones(3, np.float32))]
        args = (w3, b3, True, update, 0.1, 1e-5)
        run = backend.bind("batch_norm_forward", x3, *bound, *args)
        if run is None:
            continue
        for step in range(2):
            label = f"bound batch_norm_forward (update={update}, step {step})"
            out = backend.empty(x3.shape, x3.dtype)
            expected = backend.batch_norm_forward(x3, *unbound, *args, out)
            _same_results(backend, label, run(x3), expected)
            for name, i in (("running_mean", 0), ("running_var", 1)):
                equal(backend, f"{label}'s {name}", bound[i], backend.to_numpy(unbound[i]))
            w3[...] = w3 * 2  # in place: the next call must see it


def check_dropout_add_layer_norm_forward(backend: Any, ref: Any) -> None:
    """The optional fused dropout, residual add and LayerNorm, with its bitmask."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 10)).astype(np.float32)
    res = rng.standard_normal((6, 10)).astype(np.float32)
    w = rng.standard_normal(10) + 1
    keeps = keeps_bitmask(backend)
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
        equal(backend, f"{what}: r", got[1], expected[1])
        for i in (0, 2, 3):
            close(backend, f"{what} result {i}", got[i], expected[i], 1e-4)
        if bits is not None:
            equal(backend, f"{what}: the bitmask", bits, ref_bits)


def check_alloc_like(backend: Any) -> None:
    """The optional ``alloc_like`` gives an array of the asked shape and dtype."""
    x = backend.asarray(np.zeros((2, 3), np.float32))
    y = backend.alloc_like(x, (4,), np.float64)
    if not (isinstance(y, ArrayLike) and backend.accepts(y)):
        raise fail(backend, "alloc_like must return an array the backend accepts", repr(y))
    if tuple(y.shape) != (4,) or np.dtype(y.dtype) != np.float64:
        raise fail(backend, "alloc_like gave the wrong shape or dtype", f"{y.shape}, {y.dtype}")
