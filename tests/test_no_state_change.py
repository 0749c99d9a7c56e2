"""A call that raises changes no state (SPEC "Errors"): running statistics, counters,
parameters, gradients and dropout call counters are exactly as before the call."""

from __future__ import annotations

import numpy as np
import pytest

import normdrop
from normdrop import functional as F
from normdrop.errors import NormdropError


class _Opaque:
    """An array-like no backend accepts."""

    shape = (4, 3)
    ndim = 2
    size = 12
    dtype = np.dtype(np.float32)


def _snapshot(backend, layer):
    state = {k: v.copy() for k, v in layer.state_dict().items()}
    grads = {k: np.array(backend.to_numpy(v), copy=True) for k, v in layer.grads.items()}
    extra = {
        "training": layer.training,
        "call_count": getattr(layer, "call_count", None),
        "seed": getattr(layer, "seed", None),
    }
    return state, grads, extra


def _assert_same(before, after, label=""):
    state0, grads0, extra0 = before
    state1, grads1, extra1 = after
    assert list(state0) == list(state1)
    for k in state0:
        np.testing.assert_array_equal(state0[k], state1[k], err_msg=f"{label}: {k}")
    assert list(grads0) == list(grads1)
    for k in grads0:
        np.testing.assert_array_equal(grads0[k], grads1[k], err_msg=f"{label}: {k}")
    assert extra0 == extra1, label


def _bad_inputs(backend, c):
    """(label, input) pairs that every layer of width ``c`` must reject."""
    return [
        ("rank1", backend.asarray(np.ones(c, np.float32))),
        ("rank4", backend.asarray(np.ones((2, c, 2, 2), np.float32))),
        ("int", backend.asarray(np.ones((4, c), np.int64))),
        ("complex", backend.asarray(np.ones((4, c), np.complex64))),
        ("bool", backend.asarray(np.ones((4, c), bool))),
        ("opaque", _Opaque()),
    ]


def _bad_state_dicts(layer):
    good = layer.state_dict()
    first = next(iter(good))
    bad = []
    missing = dict(good)
    missing.pop(first)
    bad.append(("missing", missing))
    unexpected = {k: v * 2 + 1 for k, v in good.items()}
    unexpected["extra"] = np.zeros(1)
    bad.append(("unexpected", unexpected))
    mismatch = {k: v * 2 + 1 for k, v in good.items()}
    mismatch[first] = np.ones(tuple(d + 1 for d in good[first].shape))
    bad.append(("size", mismatch))
    return bad


def _non_numeric_state_dict(layer):
    """Every entry valid (and different) except the last array one, which holds strings."""
    good = layer.state_dict()
    state = {k: v * 2 + 1 for k, v in good.items()}
    last = [k for k in good if good[k].ndim >= 1][-1]
    state[last] = np.full(good[last].shape, "a")
    return state


@pytest.fixture(params=[0.1, None], ids=["momentum0.1", "momentumNone"])
def momentum(request):
    return request.param


def _trained_bn(backend, momentum, rng, **kwargs):
    bn = normdrop.BatchNorm1d(3, momentum=momentum, backend=backend.name, dtype="float64", **kwargs)
    x = backend.asarray(rng.standard_normal((4, 3)))
    bn(x)
    bn.backward(backend.asarray(rng.standard_normal((4, 3))))
    bn(backend.asarray(rng.standard_normal((4, 3)) + 1))
    return bn


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_failed_forward(backend, momentum, rng, training):
    bn = _trained_bn(backend, momentum, rng)
    bn.train(training)
    before = _snapshot(backend, bn)
    bad = _bad_inputs(backend, 3)
    bad.append(("wrongC", backend.asarray(np.ones((4, 2), np.float32))))
    bad.append(("wrongC3d", backend.asarray(np.ones((4, 5, 2), np.float32))))
    if training:
        bad.append(("one-value", backend.asarray(np.ones((1, 3), np.float32))))
        bad.append(("one-value3d", backend.asarray(np.ones((1, 3, 1), np.float32))))
    for label, x in bad:
        with pytest.raises(NormdropError):
            bn(x)
        _assert_same(before, _snapshot(backend, bn), label)


def test_batchnorm_failed_forward_keeps_saved_context(backend, rng):
    bn = normdrop.BatchNorm1d(3, dtype="float64", backend=backend.name)
    x = rng.standard_normal((4, 3))
    g = rng.standard_normal((4, 3))
    bn(backend.asarray(x))
    with pytest.raises(NormdropError):
        bn(backend.asarray(np.ones((1, 3))))
    dx = backend.to_numpy(bn.backward(backend.asarray(g)))
    ref = normdrop.BatchNorm1d(3, dtype="float64", backend="numpy")
    ref(x)
    np.testing.assert_allclose(dx, ref.backward(g), rtol=1e-9, atol=1e-12)


def test_batchnorm_failed_backward(backend, momentum, rng):
    bn = _trained_bn(backend, momentum, rng)
    before = _snapshot(backend, bn)
    for g in (
        backend.asarray(np.ones((4, 2))),
        backend.asarray(np.ones((5, 3))),
        backend.asarray(np.ones((4, 3), np.int64)),
        _Opaque(),
    ):
        with pytest.raises(NormdropError):
            bn.backward(g)
        _assert_same(before, _snapshot(backend, bn))


@pytest.mark.parametrize("strict", [True, False])
def test_batchnorm_bad_state_dict(backend, momentum, rng, strict):
    bn = _trained_bn(backend, momentum, rng)
    before = _snapshot(backend, bn)
    for label, state in _bad_state_dicts(bn):
        if not strict and label in ("missing", "unexpected"):
            continue  # not an error without strict
        with pytest.raises(NormdropError):
            bn.load_state_dict(state, strict=strict)
        _assert_same(before, _snapshot(backend, bn), label)
    with pytest.raises(NormdropError):
        bn.load_state_dict(bn.state_dict(), strict="yes")
    _assert_same(before, _snapshot(backend, bn))


@pytest.mark.parametrize("strict", [True, False])
def test_non_numeric_state_dict_is_a_state_dict_error_and_atomic(backend, rng, strict):
    """Every value is checked (convertible to the buffer's dtype) before anything is written."""
    bn = _trained_bn(backend, 0.1, rng)
    ln = normdrop.LayerNorm((2, 3), backend=backend.name)
    for layer in (bn, ln):
        before = _snapshot(backend, layer)
        with pytest.raises(NormdropError):
            layer.load_state_dict(_non_numeric_state_dict(layer), strict=strict)
        _assert_same(before, _snapshot(backend, layer), type(layer).__name__)


def test_layernorm_failures(backend, rng):
    ln = normdrop.LayerNorm((2, 3), backend=backend.name, dtype="float64")
    ln.load_state_dict({"weight": rng.standard_normal((2, 3)), "bias": rng.standard_normal((2, 3))})
    ln(backend.asarray(rng.standard_normal((4, 2, 3))))
    ln.backward(backend.asarray(rng.standard_normal((4, 2, 3))))
    before = _snapshot(backend, ln)
    for x in (
        backend.asarray(np.ones((4, 3, 2))),
        backend.asarray(np.ones((3,))),
        backend.asarray(np.ones((4, 2, 3), np.int32)),
        _Opaque(),
    ):
        with pytest.raises(NormdropError):
            ln(x)
        _assert_same(before, _snapshot(backend, ln))
    for g in (backend.asarray(np.ones((4, 3, 2))), backend.asarray(np.ones((4, 2, 3), np.int32))):
        with pytest.raises(NormdropError):
            ln.backward(g)
        _assert_same(before, _snapshot(backend, ln))
    for _, state in _bad_state_dicts(ln):
        with pytest.raises(NormdropError):
            ln.load_state_dict(state)
        _assert_same(before, _snapshot(backend, ln))


def test_dropout_failures(backend, rng):
    d = normdrop.Dropout(0.5, seed=3, backend=backend.name)
    d(backend.asarray(rng.standard_normal((4, 3))))
    before = _snapshot(backend, d)
    for label, x in _bad_inputs(backend, 3):
        if label.startswith("rank"):
            continue  # any rank is fine for dropout
        with pytest.raises(NormdropError):
            d(x)
        _assert_same(before, _snapshot(backend, d))
    with pytest.raises(NormdropError):
        d.backward(backend.asarray(np.ones((4, 3), np.int64)))
    _assert_same(before, _snapshot(backend, d))
    assert d.call_count == 1


def test_dropout_failure_does_not_consume_global_generator():
    normdrop.manual_seed(11)
    expected = normdrop.Dropout(0.5).seed
    normdrop.manual_seed(11)
    x = np.ones((4, 3))
    for bad in (
        lambda: F.dropout(x, 0.5, out=np.ones((3, 4))),
        lambda: F.dropout(x, 0.5, out=np.ones((4, 3), np.float32)),
        lambda: F.dropout(x, 0.5, call=-1),
        lambda: F.dropout(x, 1.5),
        lambda: F.dropout(x.astype(np.int64), 0.5),
    ):
        with pytest.raises(NormdropError):
            bad()
    assert normdrop.Dropout(0.5).seed == expected


def test_functional_batch_norm_failure_leaves_running_stats(backend, rng):
    x = backend.asarray(rng.standard_normal((4, 3)))
    rm0 = rng.standard_normal(3)
    rv0 = rng.random(3) + 0.5
    rm = backend.asarray(rm0.copy())
    rv = backend.asarray(rv0.copy())
    for kwargs in (
        {"out": backend.asarray(np.empty((3, 4)))},
        {"out": backend.asarray(np.empty((4, 3), np.float32))},
        {"weight": backend.asarray(np.ones(2))},
        {"bias": backend.asarray(np.ones(4))},
        {"eps": -1.0},
        {"momentum": 1.5},
    ):
        with pytest.raises(NormdropError):
            F.batch_norm(x, rm, rv, training=True, backend=backend, **kwargs)
        np.testing.assert_array_equal(backend.to_numpy(rm), rm0)
        np.testing.assert_array_equal(backend.to_numpy(rv), rv0)
    with pytest.raises(NormdropError):
        F.batch_norm(backend.asarray(np.ones((1, 3))), rm, rv, training=True, backend=backend)
    np.testing.assert_array_equal(backend.to_numpy(rm), rm0)
    np.testing.assert_array_equal(backend.to_numpy(rv), rv0)


def test_sequential_load_state_dict_atomic(backend, rng):
    model = normdrop.Sequential(
        normdrop.BatchNorm1d(3, backend=backend.name),
        normdrop.Dropout(0.2, seed=1, backend=backend.name),
        normdrop.LayerNorm(3, backend=backend.name),
    )
    model(backend.asarray(rng.standard_normal((4, 3)).astype(np.float32)))
    before = [_snapshot(backend, layer) for layer in model]
    good = model.state_dict()
    # layer 0 entries valid (and different), layer 2 has a size mismatch
    state = {k: v + 1 for k, v in good.items()}
    state["2.weight"] = np.ones(4, np.float32)
    with pytest.raises(NormdropError):
        model.load_state_dict(state)
    for layer, snap in zip(model, before, strict=True):
        _assert_same(snap, _snapshot(backend, layer))
    # unexpected key only
    state = {k: v + 1 for k, v in good.items()}
    state["7.weight"] = np.ones(3, np.float32)
    with pytest.raises(NormdropError):
        model.load_state_dict(state)
    for layer, snap in zip(model, before, strict=True):
        _assert_same(snap, _snapshot(backend, layer))


def test_sequential_non_numeric_state_dict(backend, rng):
    model = normdrop.Sequential(
        normdrop.BatchNorm1d(3, backend=backend.name), normdrop.LayerNorm(3, backend=backend.name)
    )
    model(backend.asarray(rng.standard_normal((4, 3)).astype(np.float32)))
    before = [_snapshot(backend, layer) for layer in model]
    state = {k: v + 1 for k, v in model.state_dict().items()}
    state["1.bias"] = np.array(["a", "b", "c"])
    with pytest.raises(NormdropError):
        model.load_state_dict(state)
    for layer, snap in zip(model, before, strict=True):
        _assert_same(snap, _snapshot(backend, layer))


def test_sequential_failed_forward_changes_nothing(backend, rng):
    """SPEC: a call that raises changes no state -- also when a later layer raises."""
    model = normdrop.Sequential(
        normdrop.BatchNorm1d(3, backend=backend.name),
        normdrop.Dropout(0.2, seed=1, backend=backend.name),
        normdrop.LayerNorm(4, backend=backend.name),  # wrong width: fails after the others ran
    )
    before = [_snapshot(backend, layer) for layer in model]
    with pytest.raises(NormdropError):
        model(backend.asarray(rng.standard_normal((4, 3)).astype(np.float32)))
    for layer, snap in zip(model, before, strict=True):
        _assert_same(snap, _snapshot(backend, layer))


def test_unknown_backend_construction_creates_nothing():
    with pytest.raises(NormdropError):
        normdrop.BatchNorm1d(3, backend="no-such-backend")
    with pytest.raises(NormdropError):
        normdrop.set_backend("no-such-backend")
    # the failed set_backend left selection alone
    assert F.batch_norm(np.ones((2, 3)), training=True).shape == (2, 3)


def _nested(backend, depth):
    """A Sequential nested ``depth`` levels deep whose innermost last layer has the wrong width.

    Every level holds a BatchNorm1d and a Dropout before the next level, so each level's
    running statistics, counters and call counters change before the innermost layer raises.
    """
    inner = normdrop.Sequential(
        normdrop.BatchNorm1d(3, backend=backend.name),
        normdrop.Dropout(0.5, seed=depth, backend=backend.name),
        normdrop.LayerNorm(4, backend=backend.name),  # raises: the data has width 3
    )
    for level in range(depth - 1):
        inner = normdrop.Sequential(
            normdrop.BatchNorm1d(3, backend=backend.name),
            normdrop.Dropout(0.25, seed=level, backend=backend.name),
            inner,
        )
    return inner


def _leaves(model):
    for layer in model:
        if isinstance(layer, normdrop.Sequential):
            yield from _leaves(layer)
        else:
            yield layer


@pytest.mark.parametrize("depth", [2, 3])
def test_nested_sequential_failed_forward_changes_nothing(backend, rng, depth):
    """The original error propagates and every layer at every depth is rolled back,
    including the context saved for backward."""
    model = _nested(backend, depth)
    x = backend.asarray(rng.standard_normal((4, 3)).astype(np.float32))
    g = backend.asarray(rng.standard_normal((4, 3)).astype(np.float32))
    first = model[0]
    first(x)  # a saved forward pass that must survive the failed call
    before = [_snapshot(backend, layer) for layer in _leaves(model)]
    with pytest.raises(normdrop.ShapeError, match=r"expected input with shape \(\.\.\., 4\)"):
        model(x)
    for layer, snap in zip(_leaves(model), before, strict=True):
        _assert_same(snap, _snapshot(backend, layer), type(layer).__name__)
    assert int(backend.to_numpy(first.num_batches_tracked)) == 1
    first.backward(g)  # its saved context is still the one of its own call
    # the model still works once the offending layer is fixed
    innermost = model
    while isinstance(innermost[-1], normdrop.Sequential):
        innermost = innermost[-1]
    innermost._modules["2"] = normdrop.LayerNorm(3, backend=backend.name)
    model(x)
    assert all(layer.call_count == 1 for layer in _leaves(model) if hasattr(layer, "call_count"))
