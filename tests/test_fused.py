"""Fused dropout + residual add + LayerNorm: against the three separate calls and PyTorch."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, to_numpy, vec

import normdrop
from normdrop import functional as F
from normdrop.errors import (
    BackwardBeforeForwardError,
    DTypeError,
    InvalidParameterError,
    ShapeError,
)

P = 0.3
SEED = 2**40 + 7
CALL = 3


def _shape(backend, big=(5, 3, 20)):
    return (3, 2, 12) if backend.name in SLOW_BACKENDS else big


def _data(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    res = rng.standard_normal(shape).astype(dtype)
    d = shape[-1]
    w = (1 + 0.5 * rng.standard_normal(d)).astype(dtype)
    b = rng.standard_normal(d).astype(dtype)
    return x, res, w, b


def _exact_r(backend):
    """The GPU may contract ``x * scale + residual`` into one FMA; elsewhere r is exact."""
    return backend.name != "cuda" or getattr(backend, "simulator", False)


def _three_calls(x, res, d, w, b, p, training=True):
    """The three separate normdrop calls on the reference backend."""
    h, bitmask = F.dropout_with_bitmask(x, p, training, seed=SEED, call=CALL, backend="numpy")
    r = h if res is None else h + res
    y = F.layer_norm(r, d, w, b, backend="numpy")
    return y, r, bitmask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_residual", [True, False])
def test_matches_three_separate_calls(backend, rng, dtype, with_residual):
    shape = _shape(backend)
    x, res, w, b = _data(rng, shape, dtype)
    res = res if with_residual else None
    d = shape[-1]
    y, r, mean, rstd, bitmask = F.dropout_add_layer_norm_with_stats(
        backend.asarray(x),
        None if res is None else backend.asarray(res),
        d,
        vec(backend, w),
        vec(backend, b),
        P,
        seed=SEED,
        call=CALL,
        backend=backend.name,
    )
    y3, r3, bitmask3 = _three_calls(x, res, d, w, b, P)
    r_host = to_numpy(backend, r)
    assert r_host.dtype == dtype and r_host.shape == shape
    if _exact_r(backend):
        np.testing.assert_array_equal(r_host, r3)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(to_numpy(backend, y), y3, rtol=tol, atol=tol)
    # the same elements are dropped: the packed mask equals dropout's
    if backend.supports_bitmask:
        np.testing.assert_array_equal(to_numpy(backend, bitmask), bitmask3)
    else:
        assert bitmask is None
    kept = F.dropout_mask(shape, P, seed=SEED, call=CALL, backend="numpy")
    dropped = ~kept
    expected_r_dropped = 0.0 if res is None else res[dropped]
    np.testing.assert_array_equal(r_host[dropped], expected_r_dropped)
    r64 = r3.astype(np.float64).reshape(-1, d)
    np.testing.assert_allclose(to_numpy(backend, mean).reshape(-1), r64.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(
        to_numpy(backend, rstd).reshape(-1), 1 / np.sqrt(r64.var(axis=1) + 1e-5), rtol=1e-5
    )


@pytest.mark.parametrize("training, p", [(False, P), (True, 0.0)])
def test_without_dropout_it_is_add_then_layer_norm(backend, rng, training, p):
    shape = _shape(backend)
    x, res, w, b = _data(rng, shape, np.float64)
    y, r = F.dropout_add_layer_norm(
        backend.asarray(x),
        backend.asarray(res),
        shape[-1],
        vec(backend, w),
        vec(backend, b),
        p,
        training=training,
        seed=SEED,
        backend=backend.name,
    )
    np.testing.assert_array_equal(to_numpy(backend, r), x + res)
    ref = F.layer_norm(x + res, shape[-1], w, b, backend="numpy")
    np.testing.assert_allclose(to_numpy(backend, y), ref, rtol=1e-12, atol=1e-12)


def test_without_dropout_and_residual_r_is_x(backend, rng):
    shape = _shape(backend)
    x = backend.asarray(rng.standard_normal(shape))
    y, r = F.dropout_add_layer_norm(x, None, shape[-1], p=P, training=False, backend=backend.name)
    assert r is x
    ref = F.layer_norm(to_numpy(backend, x), shape[-1], backend="numpy")
    np.testing.assert_allclose(to_numpy(backend, y), ref, rtol=1e-12, atol=1e-12)


def test_float16_is_computed_in_float32(backend, rng):
    shape = _shape(backend)
    x, res, w, b = _data(rng, shape, np.float16)
    y, r = F.dropout_add_layer_norm(
        backend.asarray(x), backend.asarray(res), shape[-1], vec(backend, w), vec(backend, b),
        P, seed=SEED, call=CALL, backend=backend.name,
    )  # fmt: skip
    assert to_numpy(backend, y).dtype == np.float16 and to_numpy(backend, r).dtype == np.float16
    y32, r32, _ = _three_calls(
        x.astype(np.float32), res.astype(np.float32), shape[-1], w.astype(np.float32),
        b.astype(np.float32), P,
    )  # fmt: skip
    np.testing.assert_allclose(to_numpy(backend, r).astype(np.float32), r32, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(to_numpy(backend, y).astype(np.float32), y32, rtol=1e-2, atol=1e-2)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NumPy's cast
def test_float16_overflow_of_the_sum_gives_inf_r_and_a_finite_y(backend, rng):
    """``y`` is normalised from the float32 sum, before ``r`` is rounded to float16 (as
    FlashAttention's fused kernel does): where the sum overflows float16, ``r`` holds inf
    while ``y`` is the float32 layer norm of the sum, not the NaN of ``layer_norm(r)``."""
    shape = _shape(backend)
    x, res, w, b = _data(rng, shape, np.float16)
    x[..., 0] = 60000.0
    res[..., 0] = 60000.0  # 120000 > 65504, the largest float16
    y, r = F.dropout_add_layer_norm(
        backend.asarray(x), backend.asarray(res), shape[-1], vec(backend, w), vec(backend, b),
        0.0, seed=SEED, call=CALL, backend=backend.name,
    )  # fmt: skip
    r = to_numpy(backend, r)
    y = to_numpy(backend, y)
    assert np.isposinf(r[..., 0]).all() and np.isfinite(r[..., 1:]).all()
    assert np.isfinite(y).all()
    s = x.astype(np.float64) + res.astype(np.float64)
    mean = s.mean(-1, keepdims=True)
    ref = (s - mean) / np.sqrt(s.var(-1, keepdims=True) + 1e-5) * w + b  # float64 formula
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("with_residual", [True, False])
def test_one_element_rows_normalise_to_the_bias_exactly(backend, rng, with_residual):
    """A one-element row is its own mean: y is the bias exactly, as in PyTorch, with
    dropout too (the CUDA kernel's shift was r's first value before dropout, so its mean
    missed r by a rounding and y was about 1e-13 / sqrt(eps) instead of 0)."""
    x = rng.standard_normal((32, 1))
    res = rng.standard_normal((32, 1)) if with_residual else None
    bias = np.array([0.25])
    y, r = F.dropout_add_layer_norm(
        backend.asarray(x), None if res is None else backend.asarray(res), 1, None,
        vec(backend, bias), 0.5, seed=SEED, call=CALL, backend=backend.name,
    )  # fmt: skip
    np.testing.assert_array_equal(to_numpy(backend, y), np.full((32, 1), 0.25))


def test_out_receives_y_and_may_be_x(rng):
    x, res, w, b = _data(rng, (4, 16), np.float32)
    y_ref, r_ref = F.dropout_add_layer_norm(x, res, 16, w, b, P, seed=SEED)
    out = np.empty_like(x)
    y, r = F.dropout_add_layer_norm(x, res, 16, w, b, P, seed=SEED, out=out)
    assert y is out
    np.testing.assert_array_equal(out, y_ref)
    x_copy = x.copy()
    y, r = F.dropout_add_layer_norm(x_copy, res, 16, w, b, P, seed=SEED, out=x_copy)
    assert y is x_copy
    np.testing.assert_array_equal(x_copy, y_ref)
    np.testing.assert_array_equal(r, r_ref)


@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize(
    "shape",
    # above the parallel threshold, rows of no multiple of 4 or 8 values
    [(3000, 37), (64, 1030), (5, 70001)]
    # rows of a multiple of 8 values pack their bits straight from their words (whole
    # 64-bit words and a byte-wise tail), serial and parallel
    + [(96, 1024), (600, 136), (3, 8)],
)
def test_numba_rows_match_reference(rng, shape, with_residual):
    pytest.importorskip("numba")
    x, res, w, b = _data(rng, shape, np.float32)
    residual = res if with_residual else None
    forward = F.dropout_add_layer_norm_with_stats
    got = forward(x, residual, shape[-1], w, b, P, seed=SEED, call=CALL, backend="numba")
    ref = forward(x, residual, shape[-1], w, b, P, seed=SEED, call=CALL, backend="numpy")
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[4], ref[4])
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_statistics_of_rows_far_from_zero(rng, dtype):
    """Rows whose mean is millions of standard deviations from zero, and whose first value
    (the shift of the one-pass float32 sums) lies a thousand deviations from the mean:
    mean and rstd as accurate as float64 sums of the stored ``r`` give them."""
    pytest.importorskip("numba")
    shape = (64, 520)
    x = (1e-3 * rng.standard_normal(shape)).astype(dtype)
    res = (3000 + 1e-3 * rng.standard_normal(shape)).astype(dtype)
    res[:, 0] += 1.0
    forward = F.dropout_add_layer_norm_with_stats
    _, r, mean, rstd, _ = forward(x, res, shape[-1], p=P, seed=SEED, backend="numba")
    r64 = r.astype(np.float64)
    np.testing.assert_allclose(mean.reshape(-1), r64.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(rstd.reshape(-1), 1 / np.sqrt(r64.var(axis=1) + 1e-5), rtol=1e-9)


def test_dask_masks_do_not_depend_on_chunking(rng):
    da = pytest.importorskip("dask.array")
    x, res, w, b = _data(rng, (11, 3, 7), np.float32)
    ref = F.dropout_add_layer_norm(x, res, 7, w, b, P, seed=SEED, call=CALL, backend="numpy")
    for chunks in [(11, 3, 7), (2, 2, 3), (5, 1, 7)]:
        y, r = F.dropout_add_layer_norm(
            da.from_array(x, chunks=chunks), da.from_array(res, chunks=chunks), 7, w, b, P,
            seed=SEED, call=CALL,
        )  # fmt: skip
        np.testing.assert_array_equal(r.compute(), ref[1])
        np.testing.assert_allclose(y.compute(), ref[0], rtol=1e-6, atol=1e-6)


class _ThirdParty:
    """A backend without the optional fused kernel: everything else from numpy's."""

    def __init__(self):
        self._inner = normdrop.get_backend("numpy")
        self.name = "thirdparty"

    def __getattr__(self, name):
        if name == "dropout_add_layer_norm_forward":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_backends_without_the_fused_kernel_get_the_composed_op(rng):
    be = _ThirdParty()
    assert not hasattr(be, "dropout_add_layer_norm_forward")
    x, res, w, b = _data(rng, (6, 10), np.float32)
    for residual in (res, None):
        forward = F.dropout_add_layer_norm_with_stats
        got = forward(x, residual, 10, w, b, P, seed=SEED, backend=be)
        ref = forward(x, residual, 10, w, b, P, seed=SEED, backend="numpy")
        for a, e in zip(got, ref, strict=True):
            np.testing.assert_array_equal(a, e)


# ----------------------------------------------------------------------------- PyTorch
def _torch_reference(torch, x, res, w, b, keep, p, dy, gr):
    """PyTorch's three modules with normdrop's mask in place of torch's own (``keep=None``:
    evaluation, no dropout)."""
    d = x.shape[-1]
    xt = torch.tensor(x, requires_grad=True)
    rt = None if res is None else torch.tensor(res, requires_grad=True)
    norm = torch.nn.LayerNorm(d, eps=1e-5, dtype=xt.dtype)
    norm.load_state_dict({"weight": torch.tensor(w), "bias": torch.tensor(b)})
    h = xt if keep is None else xt * torch.tensor(keep, dtype=xt.dtype) / (1 - p)
    r = h if rt is None else h + rt
    r.retain_grad()
    y = norm(r)
    loss = (y * torch.tensor(dy)).sum() + (r * torch.tensor(gr)).sum()
    loss.backward()
    return {
        "y": y.detach().numpy(),
        "r": r.detach().numpy(),
        "dx": xt.grad.numpy(),
        "dres": None if rt is None else rt.grad.numpy(),
        "dw": norm.weight.grad.numpy(),
        "db": norm.bias.grad.numpy(),
    }


@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_forward_and_backward_match_pytorch(backend, rng, with_residual, training):
    torch = pytest.importorskip("torch")
    shape = _shape(backend, big=(6, 24))
    d = shape[-1]
    x, res, w, b = _data(rng, shape, np.float64)
    res = res if with_residual else None
    dy = rng.standard_normal(shape)
    gr = rng.standard_normal(shape)
    keep = F.dropout_mask(shape, P, seed=SEED, call=CALL, backend="numpy") if training else None
    ref = _torch_reference(torch, x, res, w, b, keep, P, dy, gr)
    y, r, mean, rstd, bitmask = F.dropout_add_layer_norm_with_stats(
        backend.asarray(x), None if res is None else backend.asarray(res), d,
        vec(backend, w), vec(backend, b), P, training=training, seed=SEED, call=CALL,
        backend=backend.name,
    )  # fmt: skip
    np.testing.assert_allclose(to_numpy(backend, y), ref["y"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(to_numpy(backend, r), ref["r"], rtol=1e-12, atol=1e-12)
    dx, dres, dw, db = F.dropout_add_layer_norm_backward(
        backend.asarray(dy), r, d, mean, rstd, vec(backend, w), P, training,
        grad_r=backend.asarray(gr), seed=SEED, call=CALL, bitmask=bitmask,
        has_residual=with_residual, backend=backend.name,
    )  # fmt: skip
    np.testing.assert_allclose(to_numpy(backend, dx), ref["dx"], rtol=1e-9, atol=1e-9)
    if with_residual:
        np.testing.assert_allclose(to_numpy(backend, dres), ref["dres"], rtol=1e-9, atol=1e-9)
    else:
        assert dres is None
    np.testing.assert_allclose(to_numpy(backend, dw), ref["dw"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(to_numpy(backend, db), ref["db"], rtol=1e-9, atol=1e-9)


def test_backward_regenerates_the_mask_without_bitmask(rng):
    x, res, w, b = _data(rng, (4, 16), np.float64)
    dy = rng.standard_normal((4, 16))
    y, r, mean, rstd, bitmask = F.dropout_add_layer_norm_with_stats(
        x, res, 16, w, b, P, seed=SEED, call=CALL
    )
    with_bits = F.dropout_add_layer_norm_backward(
        dy, r, 16, mean, rstd, w, P, seed=SEED, call=CALL, bitmask=bitmask
    )
    regenerated = F.dropout_add_layer_norm_backward(dy, r, 16, mean, rstd, w, P, seed=SEED,
                                                    call=CALL)  # fmt: skip
    for a, e in zip(with_bits, regenerated, strict=True):
        np.testing.assert_array_equal(a, e)
    with pytest.raises(InvalidParameterError, match="seed"):
        F.dropout_add_layer_norm_backward(dy, r, 16, mean, rstd, w, P)


def test_backward_without_dropout_never_aliases(rng):
    x, res, w, b = _data(rng, (4, 8), np.float64)
    y, r, mean, rstd, _ = F.dropout_add_layer_norm_with_stats(x, res, 8, w, b, P, training=False)
    dx, dres, _, _ = F.dropout_add_layer_norm_backward(
        np.ones((4, 8)), r, 8, mean, rstd, w, P, training=False
    )
    np.testing.assert_array_equal(dx, dres)
    assert not np.shares_memory(dx, dres)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"residual": np.zeros((4, 7))}, ShapeError, "residual"),
        ({"residual": np.zeros((4, 8), np.float32)}, DTypeError, "residual"),
        ({"residual": np.zeros((4, 8), np.int64)}, DTypeError, "residual"),
        ({"residual": np.ma.zeros((4, 8))}, InvalidParameterError, "residual.*MaskedArray"),
        ({"normalized_shape": 9}, ShapeError, "LayerNorm"),
        ({"p": 1.0}, InvalidParameterError, "probability"),
        ({"eps": 0.0}, InvalidParameterError, "eps"),
        ({"seed": -1}, InvalidParameterError, "seed"),
        ({"weight": np.ones(3)}, ShapeError, "weight"),
        ({"out": np.empty((4, 8), np.float32)}, DTypeError, "out"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, error, match):
    args = {"x": np.ones((4, 8)), "residual": np.ones((4, 8)), "normalized_shape": 8, "p": P}
    args.update(kwargs)
    normdrop.manual_seed(0)
    with pytest.raises(error, match=match):
        F.dropout_add_layer_norm(**args)
    normdrop.manual_seed(0)
    expected = normdrop.random.draw_seed()
    normdrop.manual_seed(0)
    assert normdrop.random.draw_seed() == expected  # no seed was drawn by the failed call


def test_layer_p_can_be_assigned_and_backward_uses_its_forwards(backend, rng):
    """``block.p = q`` as on ``Dropout``: checked as the constructor checks it, used from
    the next forward call on, while a backward pass keeps the probability of its forward."""
    shape = _shape(backend)
    x, res, _, _ = _data(rng, shape, np.float64)
    d = shape[-1]
    block = normdrop.DropoutAddLayerNorm(d, p=0.1, seed=SEED, dtype="float64", backend=backend.name)
    block(backend.asarray(x), backend.asarray(res))  # call 0 at p = 0.1
    block.p = 0.6
    assert block.p == 0.6 and "p=0.6" in repr(block)
    with pytest.raises(InvalidParameterError):
        block.p = 1.0
    assert block.p == 0.6
    y, r = block(backend.asarray(x), backend.asarray(res))  # call 1 at p = 0.6
    h = F.dropout(x, 0.6, seed=SEED, call=1, backend="numpy")
    if _exact_r(backend):
        np.testing.assert_array_equal(to_numpy(backend, r), h + res)
    np.testing.assert_allclose(
        to_numpy(backend, y), F.layer_norm(h + res, d, backend="numpy"), rtol=1e-10, atol=1e-10
    )
    block.p = 0.0  # between the forward and its backward
    dy = np.ones_like(x)
    dx, dres = block.backward(backend.asarray(dy))
    _, mean, rstd = F.layer_norm_with_stats(h + res, d, backend="numpy")
    expected = F.dropout_add_layer_norm_backward(
        dy, h + res, d, mean, rstd, np.ones(d), 0.6, seed=SEED, call=1, backend="numpy"
    )
    np.testing.assert_allclose(to_numpy(backend, dx), expected[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(to_numpy(backend, dres), expected[1], rtol=1e-9, atol=1e-9)


def test_big_endian_residual_and_grad_r_are_taken_as_x_is(rng):
    # data read from a big-endian file: x, residual and grad_r all convert to native order
    x = rng.standard_normal((4, 8))
    res = rng.standard_normal((4, 8))
    big = np.dtype(">f8")
    kwargs = {"p": P, "seed": 3}
    expected = F.dropout_add_layer_norm_with_stats(x, res, 8, **kwargs)
    got = F.dropout_add_layer_norm_with_stats(x.astype(big), res.astype(big), 8, **kwargs)
    for a, e in zip(got[:4], expected[:4], strict=True):
        np.testing.assert_array_equal(a, e)
    y, r, mean, rstd, bitmask = expected
    grads = F.dropout_add_layer_norm_backward(
        x, r, 8, mean, rstd, None, P, grad_r=res.astype(big), seed=3, bitmask=bitmask
    )
    native = F.dropout_add_layer_norm_backward(
        x, r, 8, mean, rstd, None, P, grad_r=res, seed=3, bitmask=bitmask
    )
    for a, e in zip(grads, native, strict=True):
        if e is not None:
            np.testing.assert_array_equal(a, e)


# ----------------------------------------------------------------------------- layer
def test_layer_matches_functional_and_counts_calls(backend, rng):
    shape = _shape(backend, big=(4, 5, 16))
    x, res, _, _ = _data(rng, shape, np.float32)
    layer = normdrop.DropoutAddLayerNorm(shape[-1], p=P, seed=SEED, backend=backend.name)
    for call in range(2):
        y, r = layer(backend.asarray(x), backend.asarray(res))
        ref_y, ref_r = F.dropout_add_layer_norm(x, res, shape[-1], p=P, seed=SEED, call=call,
                                                backend="numpy")  # fmt: skip
        if _exact_r(backend):
            np.testing.assert_array_equal(to_numpy(backend, r), ref_r)
        np.testing.assert_allclose(to_numpy(backend, y), ref_y, rtol=1e-5, atol=1e-5)
    assert layer.call_count == 2
    layer.eval()
    y, r = layer(backend.asarray(x), backend.asarray(res))
    np.testing.assert_allclose(to_numpy(backend, r), x + res, rtol=1e-6)
    assert layer.call_count == 2


def test_layer_backward_matches_pytorch(rng):
    torch = pytest.importorskip("torch")
    x, res, w, b = _data(rng, (6, 12), np.float64)
    dy, gr = rng.standard_normal((6, 12)), rng.standard_normal((6, 12))
    layer = normdrop.DropoutAddLayerNorm(12, p=P, seed=SEED, dtype="float64")
    layer.load_state_dict({"weight": w, "bias": b})
    layer.call_count = CALL
    y, r = layer(x, res)
    dx, dres = layer.backward(dy, gr)
    keep = F.dropout_mask((6, 12), P, seed=SEED, call=CALL)
    ref = _torch_reference(torch, x, res, w, b, keep, P, dy, gr)
    np.testing.assert_allclose(y, ref["y"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, ref["dx"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dres, ref["dres"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(layer.grads["weight"], ref["dw"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(layer.grads["bias"], ref["db"], rtol=1e-9, atol=1e-9)
    layer.backward(dy, gr)  # gradients accumulate
    np.testing.assert_allclose(layer.grads["bias"], 2 * ref["db"], rtol=1e-9, atol=1e-9)
    y, r = layer(x)  # no residual: no residual gradient
    assert layer.backward(dy)[1] is None


def test_layer_loads_a_pytorch_layernorm_state_dict():
    torch = pytest.importorskip("torch")
    norm = torch.nn.LayerNorm((3, 4))
    with torch.no_grad():
        norm.weight.uniform_()
        norm.bias.uniform_()
    layer = normdrop.DropoutAddLayerNorm((3, 4), p=0.1, seed=0)
    layer.load_state_dict(norm.state_dict())
    assert list(layer.state_dict()) == list(norm.state_dict()) == ["weight", "bias"]
    np.testing.assert_array_equal(layer.weight, norm.weight.detach().numpy())
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    y, _ = layer.eval()(x)
    np.testing.assert_allclose(y, norm(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_layer_bad_input_changes_no_state():
    layer = normdrop.DropoutAddLayerNorm(8, p=P, seed=1)
    layer(np.ones((2, 8)), np.ones((2, 8)))
    saved, count = layer._saved, layer.call_count
    for args in [(np.ones((2, 7)), None), (np.ones((2, 8)), np.ones((3, 8)))]:
        with pytest.raises(ShapeError):
            layer(*args)
    assert layer._saved is saved and layer.call_count == count
    with pytest.raises(BackwardBeforeForwardError):
        normdrop.DropoutAddLayerNorm(8, seed=1).backward(np.ones((2, 8)))
    with pytest.raises(InvalidParameterError, match="Dropout probability"):
        normdrop.DropoutAddLayerNorm(8, p=1.5)


def test_layer_repr_pickle_deepcopy_and_sequential():
    layer = normdrop.DropoutAddLayerNorm(4, p=0.25, seed=9, bias=False)
    assert repr(layer) == (
        "DropoutAddLayerNorm((4,), p=0.25, eps=1e-05, elementwise_affine=True, bias=False)"
    )
    layer(np.ones((2, 4)), np.zeros((2, 4)))
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert clone.seed == 9 and clone.call_count == 1
        a = clone(np.arange(8.0).reshape(2, 4))
        b = layer(np.arange(8.0).reshape(2, 4))
        layer.call_count -= 1
        np.testing.assert_array_equal(a[1], b[1])
    model = normdrop.Sequential(normdrop.LayerNorm(4), layer)
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight"]
    model.eval()
    assert not layer.training


def test_layer_grads_accumulate_in_place_with_a_multi_dim_shape(rng):
    layer = normdrop.DropoutAddLayerNorm((3, 4), p=P, seed=SEED, dtype="float64")
    assert list(layer.grads) == [k for k, _ in layer.named_parameters()] == ["weight", "bias"]
    held = dict(layer.grads)  # an optimiser's references
    x, res = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    dy = rng.standard_normal((2, 3, 4))
    layer(x, res)
    layer.backward(dy)
    ref = F.layer_norm_backward(dy, layer._saved[0], (3, 4), *_stats(layer), layer.weight)
    for key, expected in zip(["weight", "bias"], ref[1:], strict=True):
        assert layer.grads[key] is held[key] and held[key].shape == (3, 4)
        np.testing.assert_allclose(held[key], expected, rtol=1e-12, atol=1e-12)
    layer.zero_grad()
    assert layer.grads["weight"] is held["weight"] and not held["weight"].any()
    with pytest.raises(ShapeError):  # a bad gradient changes no gradient
        layer.backward(np.ones((2, 3, 5)))
    assert not held["weight"].any() and not held["bias"].any()
    no_affine = normdrop.DropoutAddLayerNorm(4, elementwise_affine=False, seed=0)
    assert no_affine.grads == {} and no_affine.state_dict() == {}


def _stats(layer):
    _, mean, rstd, *_ = layer._saved
    return mean.reshape(-1), rstd.reshape(-1)


def test_layer_save_load_resumes_the_masks_exactly(backend, rng, tmp_path):
    shape = _shape(backend, big=(4, 16))
    x, res, _, _ = _data(rng, shape, np.float32)
    layer = normdrop.DropoutAddLayerNorm(shape[-1], p=P, seed=SEED, backend=backend.name)
    layer(backend.asarray(x), backend.asarray(res))
    assert list(layer.state_dict()) == ["weight", "bias"]  # PyTorch's keys by default
    extra = layer.state_dict(extra_state=True)["_extra_state"]
    np.testing.assert_array_equal(extra, np.array([SEED, 1], np.uint64))
    layer.save(tmp_path / "block")
    expected = to_numpy(backend, layer(backend.asarray(x), backend.asarray(res))[1])
    resumed = normdrop.DropoutAddLayerNorm(shape[-1], p=P, seed=1, backend=backend.name)
    resumed.load(tmp_path / "block")
    assert (resumed.seed, resumed.call_count) == (SEED, 1)
    got = to_numpy(backend, resumed(backend.asarray(x), backend.asarray(res))[1])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("bad", [np.array([1, 2, 3]), np.array([1.0, 2.0]), [-1, 2], [[1], [2, 3]]])
def test_layer_bad_extra_state_is_refused_and_changes_nothing(bad):
    layer = normdrop.DropoutAddLayerNorm(4, seed=5)
    layer.call_count = 2
    with pytest.raises(InvalidParameterError, match=r"DropoutAddLayerNorm extra state"):
        layer.set_extra_state(bad)
    assert (layer.seed, layer.call_count) == (5, 2)


def test_failed_sequential_forward_puts_the_call_count_back():
    block = normdrop.DropoutAddLayerNorm(4, p=P, seed=3)
    model = normdrop.Sequential(block, normdrop.LayerNorm(5))  # the later layer raises
    block(np.ones((2, 4)))
    saved = block._saved
    with pytest.raises(ShapeError):
        model(np.ones((2, 4)))
    assert block.call_count == 1 and block._saved is saved


def test_sequential_refuses_to_hand_the_pair_to_a_next_layer():
    """A next layer would take ``(y, r)`` as one stacked array (shape (2, N, D)) and
    normalise it without complaint: the Sequential raises instead, changing nothing."""
    block = normdrop.DropoutAddLayerNorm(4, p=P, seed=3)
    after = normdrop.LayerNorm(4)
    model = normdrop.Sequential(block, after)
    with pytest.raises(ShapeError, match=r"layer 0 \(DropoutAddLayerNorm\) returned a tuple"):
        model(np.ones((2, 4)))
    assert block.call_count == 0 and block._saved is None and after._saved is None


def test_sequential_with_the_block_last_returns_the_pair_and_back_propagates(rng):
    """As the last layer it gets the previous layer's output and no residual; the
    Sequential returns ``(y, r)`` and its backward takes ``grad_y``, as the layers
    called one by one do."""
    x = rng.standard_normal((3, 6))
    dy = rng.standard_normal((3, 6))
    model = normdrop.Sequential(
        normdrop.LayerNorm(6, dtype="float64"),
        normdrop.DropoutAddLayerNorm(6, p=P, seed=SEED, dtype="float64"),
    )
    ln = normdrop.LayerNorm(6, dtype="float64")
    block = normdrop.DropoutAddLayerNorm(6, p=P, seed=SEED, dtype="float64")
    y, r = model(x)
    want_y, want_r = block(ln(x))
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(r, want_r)
    grad_x = model.backward(dy)
    block_grad_x, block_grad_residual = block.backward(dy)
    assert block_grad_residual is None
    np.testing.assert_array_equal(grad_x, ln.backward(block_grad_x))
    for got, want in ((model[0], ln), (model[1], block)):
        for key in want.grads:
            np.testing.assert_array_equal(got.grads[key], want.grads[key])


# ------------------------------------------------- two same-sized outputs per call
def test_outputs_share_no_element(rng):
    """y and r (forward), grad_x and grad_residual (backward) come from one allocation
    on host data: they must still be separate arrays."""
    x, res, w, b = _data(rng, (6, 40), np.float32)
    y, r, mean, rstd, bitmask = F.dropout_add_layer_norm_with_stats(
        x, res, 40, w, b, P, seed=SEED, call=CALL
    )
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx, dres, _, _ = F.dropout_add_layer_norm_backward(
        dy, r, 40, mean, rstd, w, P, seed=SEED, call=CALL, bitmask=bitmask
    )
    for a, c in ((y, r), (dx, dres)):
        assert not np.shares_memory(a, c)
        before = c.copy()
        a[...] = 7.0
        np.testing.assert_array_equal(c, before)
        assert a.flags.writeable and a.flags.c_contiguous and a.shape == x.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_outputs_are_halves_of_one_allocation(rng, dtype):
    """Two same-sized outputs freed together made glibc's malloc give the heap's top back
    after every call, and the next call faulted every page in again (docs/benchmarks.md,
    "Outputs in pairs"; measured by asv_benchmarks/scripts/page_faults.py, which is no
    unit test: fault counts depend on the process's allocation history). What prevents
    it: both outputs of a host call are the halves of one allocation."""
    x, res, w, b = _data(rng, (6, 40), dtype)
    y, r, mean, rstd, bitmask = F.dropout_add_layer_norm_with_stats(
        x, res, 40, w, b, P, seed=SEED, call=CALL
    )
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx, dres, _, _ = F.dropout_add_layer_norm_backward(
        dy, r, 40, mean, rstd, w, P, seed=SEED, call=CALL, bitmask=bitmask
    )
    for a, c in ((y, r), (dx, dres)):
        assert a.base is not None and a.base is c.base and a.base.nbytes == 2 * a.nbytes
