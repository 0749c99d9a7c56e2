"""The functional API (SPEC "Functional API"): signatures, ``out=``, stats, dtypes, lists,
empty arrays."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from conftest import host, vec

from normdrop import functional as F
from normdrop.errors import DTypeError, InvalidParameterError, NormdropError, ShapeError

KW = inspect.Parameter.KEYWORD_ONLY
POS = inspect.Parameter.POSITIONAL_OR_KEYWORD


def _params(fn):
    return inspect.signature(fn).parameters


# ----------------------------------------------------------------------------- signatures
@pytest.mark.parametrize(
    ("fn", "positional", "keyword"),
    [
        (
            F.batch_norm,
            [
                ("x", inspect.Parameter.empty),
                ("running_mean", None),
                ("running_var", None),
                ("weight", None),
                ("bias", None),
                ("training", False),
                ("momentum", 0.1),
                ("eps", 1e-5),
            ],
            [("out", None), ("backend", None)],
        ),
        (
            F.layer_norm,
            [
                ("x", inspect.Parameter.empty),
                ("normalized_shape", inspect.Parameter.empty),
                ("weight", None),
                ("bias", None),
                ("eps", 1e-5),
            ],
            [("out", None), ("backend", None)],
        ),
        (
            F.dropout,
            [("x", inspect.Parameter.empty), ("p", 0.5), ("training", True)],
            [("seed", None), ("call", 0), ("out", None), ("backend", None)],
        ),
        (
            F.dropout_mask,
            [("shape", inspect.Parameter.empty), ("p", inspect.Parameter.empty)],
            [("seed", inspect.Parameter.empty), ("call", 0), ("backend", None)],
        ),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_signatures(fn, positional, keyword):
    params = _params(fn)
    names = list(params)
    assert names[: len(positional)] == [name for name, _ in positional]
    for name, default in positional:
        assert params[name].kind == POS, name
        assert params[name].default == default, name
    for name, default in keyword:
        assert params[name].kind == KW, name
        assert params[name].default == default, name


@pytest.mark.parametrize("fn", [F.batch_norm_backward, F.layer_norm_backward, F.dropout_backward])
def test_backward_signatures_keyword_only(fn):
    params = _params(fn)
    assert params["out"].kind == KW and params["out"].default is None
    assert params["backend"].kind == KW and params["backend"].default is None
    assert list(params)[0] == "grad_output"


def test_out_is_not_positional(rng):
    x = rng.standard_normal((3, 2))
    with pytest.raises(TypeError):
        F.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, np.empty_like(x))
    with pytest.raises(TypeError):
        F.layer_norm(x, 2, None, None, 1e-5, np.empty_like(x))
    with pytest.raises(TypeError):
        F.dropout(x, 0.5, True, 0)


def test_positional_calls(rng):
    x = rng.standard_normal((4, 2))
    rm, rv = np.zeros(2), np.ones(2)
    w, b = np.array([2.0, 3.0]), np.array([0.5, -0.5])
    y = F.batch_norm(x, rm, rv, w, b, True, 0.5, 1e-3)
    mean, var = x.mean(0), x.var(0)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3) * w + b, rtol=1e-12)
    np.testing.assert_allclose(rm, 0.5 * mean, rtol=1e-12)
    np.testing.assert_allclose(rv, 0.5 + 0.5 * x.var(0, ddof=1), rtol=1e-12)
    y = F.layer_norm(x, 2, w, b, 1e-3)
    m, v = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    np.testing.assert_allclose(y, (x - m) / np.sqrt(v + 1e-3) * w + b, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(F.dropout(x, 0.5, False), x)


# ----------------------------------------------------------------------------- out=
def _calls(backend, x, g, p=0.3):
    """(name, fn(out)) for every op, on (4, 3) data ``x`` with gradient ``g``."""
    xb, gb = backend.asarray(x), backend.asarray(g)
    w = vec(backend, np.array([1.5, 0.5, -1.0]))
    _, bm, br = F.batch_norm_with_stats(xb, training=True, backend=backend)
    _, lm, lr = F.layer_norm_with_stats(xb, 3, backend=backend)
    return [
        (
            "batch_norm",
            lambda out, x=xb: F.batch_norm(x, weight=w, training=True, out=out, backend=backend),
        ),
        ("layer_norm", lambda out, x=xb: F.layer_norm(x, 3, w, out=out, backend=backend)),
        ("dropout", lambda out, x=xb: F.dropout(x, p, seed=1, out=out, backend=backend)),
        (
            "batch_norm_backward",
            lambda out, g=gb: F.batch_norm_backward(g, xb, bm, br, w, out=out, backend=backend)[0],
        ),
        (
            "layer_norm_backward",
            lambda out, g=gb: F.layer_norm_backward(g, xb, 3, lm, lr, w, out=out, backend=backend)[
                0
            ],
        ),
        (
            "dropout_backward",
            lambda out, g=gb: F.dropout_backward(g, p, seed=1, out=out, backend=backend),
        ),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_semantics(backend, rng, dtype):
    x = rng.standard_normal((4, 3)).astype(dtype)
    g = rng.standard_normal((4, 3)).astype(dtype)
    for name, call in _calls(backend, x, g):
        expected = backend.to_numpy(call(None))
        assert expected.dtype == dtype and expected.shape == (4, 3), name
        out = backend.asarray(np.full((4, 3), np.nan, dtype))
        assert call(out) is out, name
        np.testing.assert_array_equal(backend.to_numpy(out), expected, err_msg=name)
        out = backend.asarray(np.full((3, 4), np.nan, dtype).T)  # non-contiguous out
        assert call(out) is out, name
        np.testing.assert_array_equal(backend.to_numpy(out), expected, err_msg=name)
        for bad, error in (
            (backend.asarray(np.empty((3, 4), dtype)), ShapeError),
            (backend.asarray(np.empty((4, 3, 1), dtype)), ShapeError),
            (
                backend.asarray(
                    np.empty((4, 3), np.float16 if dtype == np.float32 else np.float32)
                ),
                DTypeError,
            ),
            (backend.asarray(np.empty((4, 3), np.int64)), DTypeError),
            ([[0.0] * 3] * 4, InvalidParameterError),
        ):
            with pytest.raises(error):
                call(bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_may_be_the_input(backend, rng, dtype):
    x = rng.standard_normal((4, 3)).astype(dtype)
    g = rng.standard_normal((4, 3)).astype(dtype)
    expected = {name: backend.to_numpy(call(None)) for name, call in _calls(backend, x, g)}
    for name, _ in _calls(backend, x, g):
        xb, gb = backend.asarray(x.copy()), backend.asarray(g.copy())
        w = vec(backend, np.array([1.5, 0.5, -1.0]))
        if name == "batch_norm":
            y = F.batch_norm(xb, weight=w, training=True, out=xb, backend=backend)
            target = xb
        elif name == "layer_norm":
            y = F.layer_norm(xb, 3, w, out=xb, backend=backend)
            target = xb
        elif name == "dropout":
            y = F.dropout(xb, 0.3, seed=1, out=xb, backend=backend)
            target = xb
        elif name == "batch_norm_backward":
            _, m, r = F.batch_norm_with_stats(xb, training=True, backend=backend)
            y = F.batch_norm_backward(gb, xb, m, r, w, out=gb, backend=backend)[0]
            target = gb
        elif name == "layer_norm_backward":
            _, m, r = F.layer_norm_with_stats(xb, 3, backend=backend)
            y = F.layer_norm_backward(gb, xb, 3, m, r, w, out=gb, backend=backend)[0]
            target = gb
        else:
            y = F.dropout_backward(gb, 0.3, seed=1, out=gb, backend=backend)
            target = gb
        assert y is target, name
        tol = 1e-12 if dtype == np.float64 else 1e-6
        np.testing.assert_allclose(
            backend.to_numpy(target), expected[name], rtol=tol, atol=tol, err_msg=name
        )


def test_running_stats_updated_in_place(backend, rng):
    x = rng.standard_normal((5, 3, 2))
    rm, rv = vec(backend, np.zeros(3)), vec(backend, np.ones(3))
    F.batch_norm(backend.asarray(x), rm, rv, training=True, momentum=1.0, backend=backend)
    np.testing.assert_allclose(host(backend, rm), x.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(host(backend, rv), x.var(axis=(0, 2), ddof=1), rtol=1e-12)
    before = host(backend, rm).copy()
    F.batch_norm(backend.asarray(x + 5), rm, rv, training=False, backend=backend)
    np.testing.assert_array_equal(host(backend, rm), before)  # eval: no update


def test_running_stats_float32_updated(rng):
    x = rng.standard_normal((5, 3))
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    F.batch_norm(x, rm, rv, training=True)
    assert rm.dtype == np.float32
    np.testing.assert_allclose(rm, 0.1 * x.mean(0), rtol=1e-6)


# ----------------------------------------------------------------------------- return_stats
def test_return_stats_shapes(backend, rng):
    x = backend.asarray(rng.standard_normal((4, 3, 5)))
    y, mean, rstd = F.batch_norm_with_stats(x, training=True, backend=backend)
    assert y.shape == (4, 3, 5) and mean.shape == (3,) and rstd.shape == (3,)
    assert np.dtype(mean.dtype) == np.float64 and np.dtype(rstd.dtype) == np.float64
    rm, rv = vec(backend, np.zeros(3)), vec(backend, np.full(3, 4.0))
    _, mean, rstd = F.batch_norm_with_stats(x, rm, rv, backend=backend)
    np.testing.assert_allclose(host(backend, mean), np.zeros(3))
    np.testing.assert_allclose(host(backend, rstd), np.full(3, 1 / np.sqrt(4 + 1e-5)))
    for shape, ns, lead in [
        ((4, 3, 5), 5, (4, 3)),
        ((4, 3, 5), (3, 5), (4,)),
        ((3, 5), (3, 5), ()),
    ]:
        x = backend.asarray(rng.standard_normal(shape).astype(np.float32))
        y, mean, rstd = F.layer_norm_with_stats(x, ns, backend=backend)
        assert y.shape == shape and mean.shape == lead and rstd.shape == lead
        assert np.dtype(mean.dtype) == np.float64


# ----------------------------------------------------------------------------- dtypes & lists
def test_float16_inputs(backend, rng):
    x = (rng.standard_normal((6, 4)) * 2 + 1).astype(np.float16)
    x32 = x.astype(np.float32)
    xb = backend.asarray(x)
    y = F.batch_norm(xb, training=True, backend=backend)
    assert np.dtype(y.dtype) == np.float16 and backend.accepts(y)
    ref = backend.to_numpy(F.batch_norm(backend.asarray(x32), training=True, backend=backend))
    np.testing.assert_array_equal(backend.to_numpy(y), ref.astype(np.float16))
    y = F.layer_norm(xb, 4, backend=backend)
    assert np.dtype(y.dtype) == np.float16
    ref = backend.to_numpy(F.layer_norm(backend.asarray(x32), 4, backend=backend))
    np.testing.assert_array_equal(backend.to_numpy(y), ref.astype(np.float16))
    y = F.dropout(xb, 0.25, seed=2, backend=backend)
    assert np.dtype(y.dtype) == np.float16
    ref = backend.to_numpy(F.dropout(backend.asarray(x32), 0.25, seed=2, backend=backend))
    np.testing.assert_array_equal(backend.to_numpy(y), ref.astype(np.float16))
    # backward too
    _, m, r = F.layer_norm_with_stats(xb, 4, backend=backend)
    dx, _, _ = F.layer_norm_backward(xb, xb, 4, m, r, backend=backend)
    assert np.dtype(dx.dtype) == np.float16
    # running statistics from float16 data
    rm, rv = vec(backend, np.zeros(4, np.float32)), vec(backend, np.ones(4, np.float32))
    F.batch_norm(xb, rm, rv, training=True, backend=backend)
    np.testing.assert_allclose(host(backend, rm), 0.1 * x32.mean(0), rtol=1e-5)


def test_lists_accepted(rng):
    x = rng.standard_normal((4, 3))
    xl = x.tolist()
    np.testing.assert_array_equal(F.batch_norm(xl, training=True), F.batch_norm(x, training=True))
    np.testing.assert_array_equal(F.layer_norm(xl, 3), F.layer_norm(x, 3))
    np.testing.assert_array_equal(F.dropout(xl, 0.5, seed=1), F.dropout(x, 0.5, seed=1))
    np.testing.assert_array_equal(
        F.dropout([1.0, 2.0], 0.5, seed=1), F.dropout(np.array([1.0, 2.0]), 0.5, seed=1)
    )
    w, b = [1.0, 2.0, 3.0], [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(
        F.batch_norm(xl, weight=w, bias=b, training=True),
        F.batch_norm(x, weight=np.array(w), bias=np.array(b), training=True),
    )
    np.testing.assert_array_equal(
        F.layer_norm(xl, [3], w, b), F.layer_norm(x, 3, np.array(w), np.array(b))
    )
    np.testing.assert_array_equal(
        F.dropout_backward(xl, 0.5, seed=1), F.dropout_backward(x, 0.5, seed=1)
    )


def test_lists_accepted_in_backward(rng):
    x = rng.standard_normal((4, 3))
    g = rng.standard_normal((4, 3))
    w = [1.0, 2.0, 3.0]
    _, m, r = F.batch_norm_with_stats(x, weight=w, training=True)
    expected = F.batch_norm_backward(g, x, m, r, np.array(w))
    got = F.batch_norm_backward(g.tolist(), x.tolist(), m, r, w)
    for a, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, e)
    _, m, r = F.layer_norm_with_stats(x, 3, w)
    expected = F.layer_norm_backward(g, x, 3, m, r, np.array(w))
    got = F.layer_norm_backward(g.tolist(), x.tolist(), 3, m, r, w)
    for a, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, e)


def test_list_running_stats_rejected_cleanly(rng):
    """Running statistics are updated in place: a list cannot be, and must not fail obscurely."""
    x = rng.standard_normal((4, 3))
    with pytest.raises(NormdropError):
        F.batch_norm(x, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], training=True)


def test_vector_arguments_checked(rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(ShapeError):
        F.batch_norm(x, weight=np.ones(2), training=True)
    with pytest.raises(ShapeError):
        F.batch_norm(x, np.zeros(3), np.ones(4))
    with pytest.raises(DTypeError):
        F.batch_norm(x, weight=np.ones(3, np.int64), training=True)
    with pytest.raises(ShapeError):
        F.layer_norm(x, 3, np.ones((1, 3)))
    with pytest.raises(InvalidParameterError):
        F.batch_norm(x, None, np.ones(3))


# ----------------------------------------------------------------------------- empty arrays
def test_empty_batch_norm_eval(backend):
    x = backend.asarray(np.zeros((0, 3)))
    rm, rv = vec(backend, np.zeros(3)), vec(backend, np.ones(3))
    y = F.batch_norm(x, rm, rv, training=False, backend=backend)
    assert y.shape == (0, 3) and backend.accepts(y)
    y = F.batch_norm(backend.asarray(np.zeros((0, 3, 4), np.float32)), rm, rv, backend=backend)
    assert y.shape == (0, 3, 4) and np.dtype(y.dtype) == np.float32
    y = F.batch_norm(backend.asarray(np.zeros((2, 3, 0))), rm, rv, backend=backend)
    assert y.shape == (2, 3, 0)
    # training on an empty batch: an empty output, nothing updated (PyTorch 2.13)
    y = F.batch_norm(x, rm, rv, training=True, backend=backend)
    assert y.shape == (0, 3) and backend.accepts(y)
    np.testing.assert_array_equal(host(backend, rm), np.zeros(3))
    np.testing.assert_array_equal(host(backend, rv), np.ones(3))


def test_empty_layer_norm(backend):
    for shape in [(0, 3), (2, 0, 3), (0, 2, 3)]:
        ns = shape[-1] if len(shape) < 3 or shape[1] == 0 else (2, 3)
        x = backend.asarray(np.zeros(shape, np.float32))
        y, mean, rstd = F.layer_norm_with_stats(x, ns, backend=backend)
        assert y.shape == shape and np.dtype(y.dtype) == np.float32
        assert backend.to_numpy(y).size == 0
        dx, _, _ = F.layer_norm_backward(x, x, ns, mean, rstd, backend=backend)
        assert dx.shape == shape


def test_empty_dropout(backend):
    for shape in [(0,), (2, 0), (0, 3, 2)]:
        x = backend.asarray(np.zeros(shape))
        y = F.dropout(x, 0.5, seed=1, backend=backend)
        assert y.shape == shape
        assert backend.to_numpy(y).size == 0
        assert F.dropout_backward(x, 0.5, seed=1, backend=backend).shape == shape
        assert backend.to_numpy(F.dropout_mask(shape, 0.5, seed=1, backend=backend)).shape == shape
    y, bitmask = F.dropout_with_bitmask(backend.asarray(np.zeros(0)), 0.5, seed=1, backend=backend)
    if bitmask is not None:
        assert backend.to_numpy(bitmask).shape == (0,)
        assert F.dropout_backward(
            backend.asarray(np.zeros(0)), 0.5, bitmask=bitmask, backend=backend
        ).shape == (0,)


def test_scalar_and_0d_inputs_rejected_for_norms():
    with pytest.raises(ShapeError):
        F.batch_norm(np.float64(1.0), training=True)
    with pytest.raises(ShapeError):
        F.layer_norm(1.0, 1)
    y = F.dropout(np.array(3.0), 0.5, seed=1)  # dropout takes any rank, 0-d included
    assert y.shape == ()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_value_makes_its_row_or_channel_nan(backend, bad):
    """As PyTorch: the statistics of a row (LayerNorm) or channel (BatchNorm) holding an
    infinity or a NaN are NaN, so all of that row's or channel's outputs are; the other
    rows and channels are untouched."""
    x = np.arange(12.0).reshape(4, 3) / 7
    x[1, 2] = bad
    y = host(backend, F.layer_norm(backend.asarray(x), 3, backend=backend))
    assert np.isnan(y[1]).all()
    np.testing.assert_allclose(np.delete(y, 1, 0), F.layer_norm(np.delete(x, 1, 0), 3))
    y = host(backend, F.batch_norm(backend.asarray(x), None, None, training=True, backend=backend))
    assert np.isnan(y[:, 2]).all()
    np.testing.assert_allclose(y[:, :2], F.batch_norm(x[:, :2], None, None, training=True))
    y, r = F.dropout_add_layer_norm(
        backend.asarray(x), backend.asarray(x), 3, p=0.0, backend=backend
    )
    assert np.isnan(host(backend, y)[1]).all()
