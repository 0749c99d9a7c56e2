"""Layers keep a plan of their parameters and options: whatever changes them reaches the
next call, exactly as if nothing had been kept."""

from __future__ import annotations

import copy
import pickle

import numpy as np

import normdrop
import normdrop.functional as F
from normdrop._conformance.optional import reference_batch_norm_forward


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


# ----------------------------------------------------------------------------- optional keywords
class _UpdatesLayerState(normdrop.get_backend("numpy").__class__):
    """The reference backend plus ``batch_norm_backward`` and the ``counter``/``accumulate``
    keywords (see ``normdrop.capabilities.OPTIONAL_KEYWORDS``), recording what it was passed."""

    name = "updates-layer-state"

    def __init__(self):
        self.passed = []

    def batch_norm_forward(
        self, x, rm, rv, w, b, use_batch, update, momentum, eps, out, counter=None
    ):
        self.passed.append(("counter", counter))
        result = reference_batch_norm_forward(
            self, x, rm, rv, w, b, use_batch, update, momentum, eps, out
        )
        if counter is not None and update:
            counter[...] += 1
        return result

    def batch_norm_backward(self, dy, x, mean, rstd, weight, training, out, accumulate=None):
        self.passed.append(("bn accumulate", accumulate))
        dx, dw, db = F.batch_norm_backward(
            dy, x, mean, rstd, weight, training=training, backend="numpy"
        )
        out[...] = dx
        if weight is None:
            return out, None, None
        if accumulate is None:
            return out, dw, db
        accumulate[0][...] += dw
        accumulate[1][...] += db
        return out, accumulate[0], accumulate[1]

    def layer_norm_backward(self, dy, x, mean, rstd, weight, out, param_grads, accumulate=None):
        self.passed.append(("ln accumulate", accumulate))
        out, dw, db = super().layer_norm_backward(dy, x, mean, rstd, weight, out, param_grads)
        if accumulate is None or dw is None:
            return out, dw, db
        accumulate[0][...] += dw
        accumulate[1][...] += db
        return out, accumulate[0], accumulate[1]


def test_layers_hand_their_counter_and_gradient_buffers_to_kernels_that_take_them(rng):
    be = _UpdatesLayerState()
    for make, x in (
        (lambda b: normdrop.BatchNorm1d(4, momentum=None, dtype="float64", backend=b), _x(rng)),
        (
            lambda b: normdrop.LayerNorm((2, 3), dtype="float64", backend=b),
            rng.standard_normal((5, 2, 3)),
        ),
    ):
        layer, ref = make(be), make("numpy")
        for _ in range(2):
            g = rng.standard_normal(x.shape)
            np.testing.assert_allclose(layer(x), ref(x), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(layer.backward(g), ref.backward(g), rtol=1e-12, atol=1e-12)
            for name in ("weight", "bias"):
                np.testing.assert_allclose(
                    layer.grads[name], ref.grads[name], rtol=1e-12, atol=1e-12
                )
        for k, v in ref.state_dict().items():
            np.testing.assert_allclose(layer.state_dict()[k], v, rtol=1e-12, atol=1e-12)
        bufs = (layer._grads["weight"], layer._grads["bias"])
        accumulated = [a for what, a in be.passed if what.endswith("accumulate")]
        assert accumulated and all(a[0] is bufs[0] or a[0].base is bufs[0] for a in accumulated)
        be.passed.clear()
    # the BatchNorm counter was the layer's num_batches_tracked, updated by the kernel only
    bn = normdrop.BatchNorm1d(4, backend=be)
    bn(_x(rng))
    assert be.passed[0][1] is bn.num_batches_tracked and int(bn.num_batches_tracked) == 1
