"""LayerNorm (SPEC "LayerNorm"): golden values, shapes, affine options, modes, vs reference."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, host, param_ok, tol, vec
from hypothesis import given, settings
from hypothesis import strategies as st

import normdrop
from normdrop import functional as F

GOLDEN_X = np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 0.0]])
GOLDEN_Y = np.array([[-1.0690415315, -0.2672603829, 1.3363019143], [0.0, 0.0, 0.0]])


def ln_formula(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * np.asarray(weight, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def test_golden(backend):
    ln = normdrop.LayerNorm(3, dtype="float64", backend=backend.name)
    y = ln(backend.asarray(GOLDEN_X))
    assert backend.accepts(y)
    np.testing.assert_allclose(backend.to_numpy(y), GOLDEN_Y, rtol=0, atol=1e-9)
    y = F.layer_norm(backend.asarray(GOLDEN_X), 3, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), GOLDEN_Y, rtol=0, atol=1e-9)


def test_golden_float32(backend):
    ln = normdrop.LayerNorm(3, backend=backend.name)
    y = ln(backend.asarray(GOLDEN_X.astype(np.float32)))
    assert np.dtype(y.dtype) == np.float32
    np.testing.assert_allclose(backend.to_numpy(y), GOLDEN_Y, rtol=0, atol=1e-6)


def test_initial_parameters(backend):
    ln = normdrop.LayerNorm((2, 3), backend=backend.name)
    assert param_ok(backend, ln.weight) and param_ok(backend, ln.bias)
    assert ln.weight.shape == (2, 3) and ln.bias.shape == (2, 3)
    np.testing.assert_array_equal(host(backend, ln.weight), np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(host(backend, ln.bias), np.zeros((2, 3), np.float32))
    assert np.dtype(ln.weight.dtype) == np.float32
    assert ln.normalized_shape == (2, 3) and ln.eps == 1e-5
    assert ln.elementwise_affine is True
    assert list(ln.state_dict()) == ["weight", "bias"]
    assert list(ln.named_buffers()) == []


@pytest.mark.parametrize("normalized_shape", [(4,), (2, 3), (2, 1, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_multi_dim_vs_formula(backend, rng, normalized_shape, dtype):
    x = (rng.standard_normal((3, *normalized_shape)) * 3 + 1).astype(dtype)
    w = rng.standard_normal(normalized_shape)
    b = rng.standard_normal(normalized_shape)
    ln = normdrop.LayerNorm(normalized_shape, dtype=dtype, backend=backend.name)
    ln.load_state_dict({"weight": w, "bias": b})
    y = ln(backend.asarray(x))
    assert backend.accepts(y)
    assert y.shape == x.shape and np.dtype(y.dtype) == dtype
    expected = ln_formula(x, normalized_shape, w.astype(dtype), b.astype(dtype))
    np.testing.assert_allclose(backend.to_numpy(y), expected, **tol(dtype))


def test_bias_false(backend, rng):
    ln = normdrop.LayerNorm(3, bias=False, dtype="float64", backend=backend.name)
    assert ln.bias is None and ln.weight is not None
    assert list(ln.state_dict()) == ["weight"]
    assert [k for k, _ in ln.named_parameters()] == ["weight"]
    w = rng.standard_normal(3)
    ln.load_state_dict({"weight": w})
    x = rng.standard_normal((4, 3))
    y = backend.to_numpy(ln(backend.asarray(x)))
    np.testing.assert_allclose(y, ln_formula(x, (3,), w), **tol(np.float64))
    ln.backward(backend.asarray(rng.standard_normal((4, 3))))
    assert list(ln.grads) == ["weight"]


def test_elementwise_affine_false(backend, rng):
    ln = normdrop.LayerNorm((2, 3), elementwise_affine=False, backend=backend.name)
    assert ln.weight is None and ln.bias is None
    assert list(ln.state_dict()) == []
    assert list(ln.parameters()) == []
    x = rng.standard_normal((4, 2, 3))
    y = backend.to_numpy(ln(backend.asarray(x)))
    np.testing.assert_allclose(y, ln_formula(x, (2, 3)), **tol(np.float64))
    ln.backward(backend.asarray(rng.standard_normal((4, 2, 3))))
    assert ln.grads == {}
    # bias=True is irrelevant without elementwise affine
    assert normdrop.LayerNorm(3, elementwise_affine=False, bias=False).bias is None


@pytest.mark.parametrize(
    ("normalized_shape", "shape"),
    [
        ((3,), (3,)),
        ((3,), (2, 3)),
        ((3,), (2, 4, 3)),
        ((3,), (1, 2, 1, 3)),
        ((2, 3), (2, 3)),
        ((2, 3), (5, 2, 3)),
        ((2, 3), (1, 2, 2, 3)),
    ],
)
def test_any_leading_rank(backend, rng, normalized_shape, shape):
    x = rng.standard_normal(shape)
    ln = normdrop.LayerNorm(normalized_shape, dtype="float64", backend=backend.name)
    y = ln(backend.asarray(x))
    assert y.shape == shape
    np.testing.assert_allclose(
        backend.to_numpy(y), ln_formula(x, normalized_shape), **tol(np.float64)
    )
    y, mean, rstd = F.layer_norm_with_stats(backend.asarray(x), normalized_shape, backend=backend)
    lead = shape[: len(shape) - len(normalized_shape)]
    assert mean.shape == lead and rstd.shape == lead
    axes = tuple(range(len(lead), len(shape)))
    np.testing.assert_allclose(host(backend, mean), x.mean(axis=axes), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        host(backend, rstd), 1 / np.sqrt(x.var(axis=axes) + 1e-5), rtol=1e-12
    )
    # backward works on every rank too
    dx = ln.backward(backend.asarray(np.ones(shape)))
    assert dx.shape == shape


def test_train_equals_eval(backend, rng):
    ln = normdrop.LayerNorm(4, backend=backend.name)
    ln.load_state_dict({"weight": rng.standard_normal(4), "bias": rng.standard_normal(4)})
    x = backend.asarray(rng.standard_normal((3, 4)).astype(np.float32))
    y_train = backend.to_numpy(ln(x))
    state = ln.state_dict()
    assert ln.eval() is ln
    y_eval = backend.to_numpy(ln(x))
    np.testing.assert_array_equal(y_train, y_eval)
    for k, v in ln.state_dict().items():
        np.testing.assert_array_equal(v, state[k])


def test_constant_row_gives_bias(backend):
    ln = normdrop.LayerNorm(3, backend=backend.name)
    ln.load_state_dict({"weight": np.array([2.0, 3.0, 4.0]), "bias": np.array([0.5, -1.0, 2.0])})
    y = backend.to_numpy(ln(backend.asarray(np.full((2, 3), 7.25, np.float32))))
    np.testing.assert_array_equal(y, np.tile(np.array([0.5, -1.0, 2.0], np.float32), (2, 1)))


def test_reset_parameters(backend, rng):
    ln = normdrop.LayerNorm(3, backend=backend.name)
    ln.load_state_dict({"weight": rng.standard_normal(3), "bias": rng.standard_normal(3)})
    ln.reset_parameters()
    np.testing.assert_array_equal(host(backend, ln.weight), np.ones(3, np.float32))
    np.testing.assert_array_equal(host(backend, ln.bias), np.zeros(3, np.float32))
    normdrop.LayerNorm(3, elementwise_affine=False).reset_parameters()


def test_float32_large_mean_accuracy(backend):
    gen = np.random.default_rng(2)
    shape = (8, 32) if backend.name in SLOW_BACKENDS else (64, 256)
    x = (1e4 + 1e-2 * gen.standard_normal(shape)).astype(np.float32)
    exact = ln_formula(x, (shape[1],))
    y = backend.to_numpy(F.layer_norm(backend.asarray(x), shape[1], backend=backend))
    err = np.abs(y - exact).max()
    assert err < 1e-5
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.layer_norm(torch.from_numpy(x), (shape[1],)).numpy()
    assert err <= np.abs(t - exact).max() + 1e-7


def test_out_argument(backend, rng):
    x = rng.standard_normal((4, 2, 3))
    expected = ln_formula(x, (2, 3))
    out = backend.asarray(np.empty_like(x))
    y = F.layer_norm(backend.asarray(x), (2, 3), out=out, backend=backend)
    assert y is out
    np.testing.assert_allclose(backend.to_numpy(out), expected, **tol(np.float64))
    xb = backend.asarray(x.copy())
    y = F.layer_norm(xb, (2, 3), out=xb, backend=backend)
    assert y is xb
    np.testing.assert_allclose(backend.to_numpy(xb), expected, **tol(np.float64))
    # non-contiguous input and output
    xt = np.asfortranarray(x)
    out = backend.asarray(np.zeros((3, 2, 4)).T)
    y = F.layer_norm(backend.asarray(xt), (2, 3), out=out, backend=backend)
    assert y is out
    np.testing.assert_allclose(backend.to_numpy(out), expected, **tol(np.float64))


def test_hypothesis_vs_reference(backend, reference):
    max_examples = 6 if backend.name in SLOW_BACKENDS else 25

    @settings(max_examples=max_examples, deadline=None, derandomize=True)
    @given(
        lead=st.lists(st.integers(1, 4), min_size=0, max_size=3),
        normalized_shape=st.lists(st.integers(1, 5), min_size=1, max_size=2),
        dtype=st.sampled_from([np.float32, np.float64]),
        affine=st.booleans(),
        bias=st.booleans(),
        eps=st.sampled_from([1e-5, 1e-3, 0.5]),
        seed=st.integers(0, 2**32 - 1),
        scale=st.sampled_from([1e-3, 1.0, 1e3]),
        offset=st.sampled_from([0.0, 5.0, -1e3]),
    )
    def check(lead, normalized_shape, dtype, affine, bias, eps, seed, scale, offset):
        gen = np.random.default_rng(seed)
        normalized_shape = tuple(normalized_shape)
        shape = (*lead, *normalized_shape)
        x = (gen.standard_normal(shape) * scale + offset).astype(dtype)
        g = gen.standard_normal(shape).astype(dtype)
        w = gen.standard_normal(normalized_shape)
        b = gen.standard_normal(normalized_shape)
        results = []
        for be in (backend, reference):
            ln = normdrop.LayerNorm(
                normalized_shape,
                eps=eps,
                elementwise_affine=affine,
                bias=bias,
                dtype=dtype,
                backend=be.name,
            )
            state = {"weight": w, "bias": b}
            ln.load_state_dict({k: v for k, v in state.items() if k in ln.state_dict()})
            y = ln(be.asarray(x))
            dx = ln.backward(be.asarray(g))
            assert be.accepts(y) and be.accepts(dx)
            assert y.shape == shape and np.dtype(y.dtype) == dtype
            results.append(
                [be.to_numpy(y), be.to_numpy(dx)] + [host(be, v) for v in ln.grads.values()]
            )
            yf, mean, rstd = F.layer_norm_with_stats(
                be.asarray(x),
                normalized_shape,
                vec(be, w) if affine else None,
                vec(be, b) if affine and bias else None,
                eps,
                backend=be,
            )
            results[-1] += [be.to_numpy(yf), host(be, mean), host(be, rstd)]
        ours, ref = results
        tols = tol(dtype)
        rel = 1e-7 if dtype == np.float64 else 1e-4
        for a, r in zip(ours, ref, strict=True):
            assert a.shape == r.shape and a.dtype == r.dtype
            bound = max(1.0, float(np.abs(r).max()))
            np.testing.assert_allclose(a, r, rtol=max(rel, tols["rtol"]), atol=tols["atol"] * bound)

    check()


@pytest.mark.parametrize("shape", [(700, 129), (3, 70001), (40, 3, 1000)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_vs_reference(backend, reference, shape, dtype):
    """Sizes past the parallel and row-split thresholds."""
    if backend.name in SLOW_BACKENDS:
        shape = tuple(max(2, d // 40) for d in shape)
    gen = np.random.default_rng(8)
    ns = shape[-1]
    x = (gen.standard_normal(shape) * 3 - 20).astype(dtype)
    g = gen.standard_normal(shape).astype(dtype)
    w, b = gen.standard_normal(ns), gen.standard_normal(ns)
    results = []
    for be in (backend, reference):
        ln = normdrop.LayerNorm(ns, dtype=dtype, backend=be.name)
        ln.load_state_dict({"weight": w, "bias": b})
        y = be.to_numpy(ln(be.asarray(x)))
        dx = be.to_numpy(ln.backward(be.asarray(g)))
        results.append([y, dx, *(host(be, v) for v in ln.grads.values())])
    tols = {"rtol": 1e-9, "atol": 1e-9} if dtype == np.float64 else {"rtol": 1e-4, "atol": 1e-4}
    for a, r in zip(*results, strict=True):
        bound = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(a, r, rtol=tols["rtol"], atol=tols["atol"] * bound)


def test_float64_huge_mean_needs_stable_statistics(backend):
    gen = np.random.default_rng(4)
    shape = (3, 40) if backend.name in SLOW_BACKENDS else (30, 5000)
    x = 1e8 + gen.standard_normal(shape)
    y = backend.to_numpy(F.layer_norm(backend.asarray(x), shape[1], backend=backend))
    np.testing.assert_allclose(y, ln_formula(x, (shape[1],)), rtol=0, atol=1e-6)
