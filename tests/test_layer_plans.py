"""Layers keep a plan of their parameters and options: whatever changes them reaches the
next call, exactly as if nothing had been kept."""

from __future__ import annotations

import copy
import pickle

import numpy as np

import normdrop
import normdrop.functional as F


def _x(rng, shape=(6, 4)):
    return rng.standard_normal(shape)


def test_in_place_parameter_updates_reach_the_next_call(rng):
    x = _x(rng)
    ln = normdrop.LayerNorm(4, dtype="float64")
    ln(x)
    ln.weight[...] = 2.0  # an optimiser step writes in place
    ln.bias -= 1.0
    np.testing.assert_allclose(ln(x), 2.0 * F.layer_norm(x, 4) - 1.0, rtol=1e-12, atol=1e-12)
    bn = normdrop.BatchNorm1d(4, dtype="float64")
    bn(x)
    bn.weight = np.full(4, 3.0)  # assignment copies into the parameter
    expected = 3.0 * F.batch_norm(x, training=True)
    np.testing.assert_allclose(bn(x), expected, rtol=1e-12, atol=1e-12)


def test_assigned_options_reach_the_next_call(rng):
    x = _x(rng)
    ln = normdrop.LayerNorm(4, dtype="float64")
    ln(x)
    ln.eps = 10.0
    np.testing.assert_allclose(ln(x), F.layer_norm(x, 4, eps=10.0), rtol=1e-12)
    bn = normdrop.BatchNorm1d(4, dtype="float64")
    bn(x)
    bn.momentum = 0.5
    bn.eps = 3.0
    rm, rv = bn.running_mean.copy(), bn.running_var.copy()
    y = bn(x)
    np.testing.assert_allclose(y, F.batch_norm(x, rm, rv, training=True, momentum=0.5, eps=3.0))
    np.testing.assert_allclose(bn.running_mean, rm)
    np.testing.assert_allclose(bn.running_var, rv)


def test_cumulative_momentum_uses_the_current_count(rng):
    bn = normdrop.BatchNorm1d(4, momentum=None, dtype="float64")
    xs = [_x(rng) for _ in range(3)]
    for x in xs:
        bn(x)
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(0) for x in xs], axis=0))


def test_mode_changes_reach_the_next_call(rng):
    x = _x(rng)
    bn = normdrop.BatchNorm1d(4, dtype="float64")
    bn(x)
    bn.eval()
    expected = F.batch_norm(x, bn.running_mean, bn.running_var)
    np.testing.assert_allclose(bn(x), expected)
    bn.training = True  # a plain assignment, as in PyTorch
    count = int(bn.num_batches_tracked)
    bn(x)
    assert int(bn.num_batches_tracked) == count + 1
    drop = normdrop.Dropout(0.5, seed=0)
    assert drop.eval()(x) is x
    y = drop.train()(x)
    np.testing.assert_array_equal(y, F.dropout(x, 0.5, seed=0, call=0))


def test_loaded_state_and_copies_compute_like_the_original(rng):
    x = _x(rng)
    ln = normdrop.LayerNorm(4, dtype="float64")
    ln(x)
    state = {"weight": np.full(4, 0.5), "bias": np.full(4, 0.25)}
    ln.load_state_dict(state)
    expected = 0.5 * F.layer_norm(x, 4) + 0.25
    np.testing.assert_allclose(ln(x), expected, rtol=1e-12, atol=1e-12)
    for clone in (copy.deepcopy(ln), pickle.loads(pickle.dumps(ln))):
        clone.weight[...] = 1.0  # the clone's own parameters, not the original's
        np.testing.assert_allclose(clone(x), F.layer_norm(x, 4) + 0.25, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ln(x), expected, rtol=1e-12, atol=1e-12)


def test_a_layer_follows_the_backend_of_each_input(rng):
    x = _x(rng)
    ln = normdrop.LayerNorm(4, dtype="float64")
    y_default = ln(x)
    with normdrop.use_backend("numpy"):
        y_numpy = ln(x)
        assert ln._plan.backend.name == "numpy"
    np.testing.assert_allclose(y_default, y_numpy, rtol=1e-12, atol=1e-12)
    ln(x)
    assert ln._plan.backend.name == "numba"
