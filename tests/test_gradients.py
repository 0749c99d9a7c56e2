"""Every backward against central finite differences in float64, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import host, vec

import normdrop
from normdrop import functional as F

H = 1e-6
TOL = {"rtol": 1e-6, "atol": 1e-7}


def numeric_grad(loss, a):
    """Central differences of the scalar ``loss`` with respect to every element of ``a``."""
    a = np.array(a, dtype=np.float64, copy=True)
    grad = np.empty_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + H
        up = loss(a)
        flat[i] = old - H
        down = loss(a)
        flat[i] = old
        gflat[i] = (up - down) / (2 * H)
    return grad


# ----------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("shape", [(3, 2), (3, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_backward(backend, rng, shape, training, affine):
    c = shape[1]
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    w = rng.standard_normal(c) + 1.5 if affine else None
    b = rng.standard_normal(c) if affine else None
    rm = rng.standard_normal(c)
    rv = rng.random(c) + 0.5

    def forward(x_, w_=w, b_=b, stats=False):
        running = (None, None) if training else (vec(backend, rm), vec(backend, rv))
        fn = F.batch_norm_with_stats if stats else F.batch_norm
        return fn(
            backend.asarray(x_),
            *running,
            vec(backend, w_),
            vec(backend, b_),
            training=training,
            backend=backend,
        )

    def loss_x(x_):
        return float(np.sum(backend.to_numpy(forward(x_)) * g))

    y, mean, rstd = forward(x, stats=True)
    dx, dw, db = F.batch_norm_backward(
        backend.asarray(g),
        backend.asarray(x),
        mean,
        rstd,
        vec(backend, w),
        training=training,
        backend=backend,
    )
    assert backend.accepts(dx)
    assert dx.shape == shape and np.dtype(dx.dtype) == np.float64
    np.testing.assert_allclose(backend.to_numpy(dx), numeric_grad(loss_x, x), **TOL)
    if not affine:
        assert dw is None and db is None
        return
    num_w = numeric_grad(lambda w_: float(np.sum(backend.to_numpy(forward(x, w_=w_)) * g)), w)
    num_b = numeric_grad(lambda b_: float(np.sum(backend.to_numpy(forward(x, b_=b_)) * g)), b)
    assert dw.shape == (c,) and db.shape == (c,)
    np.testing.assert_allclose(host(backend, dw), num_w, **TOL)
    np.testing.assert_allclose(host(backend, db), num_b, **TOL)


@pytest.mark.parametrize("shape", [(4, 2), (2, 2, 3)])
@pytest.mark.parametrize("mode", ["train", "eval", "untracked-eval"])
def test_batchnorm_layer_gradients(backend, rng, shape, mode):
    c = shape[1]
    bn = normdrop.BatchNorm1d(
        c, dtype="float64", track_running_stats=mode != "untracked-eval", backend=backend.name
    )
    w = rng.standard_normal(c) + 1.5
    b = rng.standard_normal(c)
    state = {"weight": w, "bias": b}
    if mode == "eval":
        state.update(running_mean=rng.standard_normal(c), running_var=rng.random(c) + 0.5)
    bn.load_state_dict(state, strict=False)
    bn.train(mode == "train")
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)

    def loss_x(x_):
        return float(np.sum(backend.to_numpy(bn(backend.asarray(x_))) * g))

    def loss_param(name):
        def loss(v):
            probe = normdrop.BatchNorm1d(
                c,
                dtype="float64",
                backend=backend.name,
                track_running_stats=mode != "untracked-eval",
            )
            probe.load_state_dict({**bn.state_dict(), name: v})
            probe.train(mode == "train")
            return float(np.sum(backend.to_numpy(probe(backend.asarray(x))) * g))

        return loss

    num_x = numeric_grad(loss_x, x)
    num_w = numeric_grad(loss_param("weight"), w)
    num_b = numeric_grad(loss_param("bias"), b)
    bn(backend.asarray(x))
    dx = backend.to_numpy(bn.backward(backend.asarray(g)))
    np.testing.assert_allclose(dx, num_x, **TOL)
    np.testing.assert_allclose(host(backend, bn.grads["weight"]), num_w, **TOL)
    np.testing.assert_allclose(host(backend, bn.grads["bias"]), num_b, **TOL)


# ----------------------------------------------------------------------------- layer norm
@pytest.mark.parametrize(
    ("normalized_shape", "shape"), [((3,), (2, 3)), ((2, 3), (2, 2, 3)), ((4,), (4,))]
)
@pytest.mark.parametrize("affine", ["none", "weight", "weight+bias"])
def test_layer_norm_backward(backend, rng, normalized_shape, shape, affine):
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    w = rng.standard_normal(normalized_shape) + 1.5 if affine != "none" else None
    b = rng.standard_normal(normalized_shape) if affine == "weight+bias" else None

    def forward(x_, w_=w, b_=b, stats=False):
        fn = F.layer_norm_with_stats if stats else F.layer_norm
        return fn(
            backend.asarray(x_),
            normalized_shape,
            vec(backend, w_),
            vec(backend, b_),
            backend=backend,
        )

    y, mean, rstd = forward(x, stats=True)
    dx, dw, db = F.layer_norm_backward(
        backend.asarray(g),
        backend.asarray(x),
        normalized_shape,
        mean,
        rstd,
        vec(backend, w),
        backend=backend,
    )
    assert backend.accepts(dx)
    assert dx.shape == shape and np.dtype(dx.dtype) == np.float64
    num_x = numeric_grad(lambda x_: float(np.sum(backend.to_numpy(forward(x_)) * g)), x)
    np.testing.assert_allclose(backend.to_numpy(dx), num_x, **TOL)
    if w is None:
        assert dw is None and db is None
        return
    num_w = numeric_grad(lambda w_: float(np.sum(backend.to_numpy(forward(x, w_=w_)) * g)), w)
    assert dw.shape == tuple(normalized_shape)
    np.testing.assert_allclose(host(backend, dw), num_w, **TOL)
    # the bias gradient is returned even without a bias in the forward: it is sum(dy)
    lead_axes = tuple(range(len(shape) - len(normalized_shape)))
    np.testing.assert_allclose(host(backend, db), g.sum(axis=lead_axes), **TOL)
    if b is not None:
        num_b = numeric_grad(lambda b_: float(np.sum(backend.to_numpy(forward(x, b_=b_)) * g)), b)
        np.testing.assert_allclose(host(backend, db), num_b, **TOL)


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_layer_gradients(backend, rng, bias):
    ln = normdrop.LayerNorm((2, 2), bias=bias, dtype="float64", backend=backend.name)
    state = {"weight": rng.standard_normal((2, 2)) + 1.5}
    if bias:
        state["bias"] = rng.standard_normal((2, 2))
    ln.load_state_dict(state)
    x = rng.standard_normal((3, 2, 2))
    g = rng.standard_normal((3, 2, 2))

    def loss_param(name):
        def loss(v):
            probe = normdrop.LayerNorm((2, 2), bias=bias, dtype="float64", backend=backend.name)
            probe.load_state_dict({**ln.state_dict(), name: v})
            return float(np.sum(backend.to_numpy(probe(backend.asarray(x))) * g))

        return loss

    num_x = numeric_grad(lambda x_: float(np.sum(backend.to_numpy(ln(backend.asarray(x_))) * g)), x)
    ln(backend.asarray(x))
    dx = backend.to_numpy(ln.backward(backend.asarray(g)))
    np.testing.assert_allclose(dx, num_x, **TOL)
    for name in state:
        np.testing.assert_allclose(
            host(backend, ln.grads[name]), numeric_grad(loss_param(name), state[name]), **TOL
        )


# ----------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("shape", [(7,), (3, 4)])
def test_dropout_backward(backend, rng, shape):
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    p, seed, call = 0.4, 17, 3

    def loss(x_):
        y = F.dropout(backend.asarray(x_), p, seed=seed, call=call, backend=backend)
        return float(np.sum(backend.to_numpy(y) * g))

    num = numeric_grad(loss, x)
    dx = F.dropout_backward(backend.asarray(g), p, seed=seed, call=call, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(dx), num, **TOL)
    d = normdrop.Dropout(p, seed=seed, backend=backend.name)
    d.call_count = call
    d(backend.asarray(x))
    np.testing.assert_allclose(backend.to_numpy(d.backward(backend.asarray(g))), num, **TOL)


def test_sequential_gradient(backend, rng):
    model = normdrop.Sequential(
        normdrop.BatchNorm1d(2, dtype="float64", backend=backend.name),
        normdrop.Dropout(0.3, seed=4, backend=backend.name),
        normdrop.LayerNorm(2, dtype="float64", backend=backend.name),
    )
    model[2].load_state_dict({"weight": np.array([1.5, -0.5]), "bias": np.array([0.2, 0.1])})
    x = rng.standard_normal((4, 2))
    g = rng.standard_normal((4, 2))

    def loss(x_):
        model[1].call_count = 0  # the same mask every time
        return float(np.sum(backend.to_numpy(model(backend.asarray(x_))) * g))

    num = numeric_grad(loss, x)
    model[1].call_count = 0
    model(backend.asarray(x))
    dx = backend.to_numpy(model.backward(backend.asarray(g)))
    np.testing.assert_allclose(dx, num, **TOL)
