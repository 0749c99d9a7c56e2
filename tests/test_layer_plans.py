"""Layers keep a plan of their parameters and options: whatever changes them reaches the
next call, exactly as if nothing had been kept."""

from __future__ import annotations

import copy
import importlib
import pickle

import numpy as np
import pytest

import normdrop
import normdrop.functional as F
from normdrop._conformance.optional import reference_batch_norm_forward
from normdrop._ops import _arrays


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


def _bound_calls(layer):
    """The calls the layer's plan holds bound, after a call on the numba backend."""
    calls = layer._plan.calls
    assert calls is not None  # the numba backend binds
    return {key: run for key, run in calls.items() if run is not None}


def test_small_layer_calls_use_bound_kernels_that_see_every_change(rng):
    """A small layer call on the numba backend goes through a bound kernel call
    (:class:`~normdrop.capabilities.BoundKernels`): bit for bit what the unbound
    functional path gives, for (N, C) and (N, C, L) and read-only data, and it sees
    in-place changes to the parameters and running statistics it was bound to."""
    pytest.importorskip("numba")
    for dtype in (np.float32, np.float64):
        x3 = rng.standard_normal((4, 5, 6)).astype(dtype)
        x2 = rng.standard_normal((7, 5)).astype(dtype)
        frozen = x3.copy()
        frozen.flags.writeable = False
        bn = normdrop.BatchNorm1d(5, dtype=dtype, backend="numba")
        rm, rv = bn.running_mean.copy(), bn.running_var.copy()
        for step, x in enumerate((x3, x2, frozen, x3)):
            if step == 3:
                bn.weight[...] = 2.0  # an optimiser step, in place
                bn.running_mean += 1.0
                rm += 1.0
            want = F.batch_norm(x, rm, rv, bn.weight.copy(), bn.bias.copy(), training=True,
                                backend="numba")  # fmt: skip
            np.testing.assert_array_equal(bn(x), want)
            np.testing.assert_array_equal(bn.running_mean, rm)
            np.testing.assert_array_equal(bn.running_var, rv)
        assert int(bn.num_batches_tracked) == 4
        assert set(_bound_calls(bn)) == {(x3.shape, x3.dtype), ((7, 5, 1), x2.dtype)}
        rows = rng.standard_normal((9, 5)).astype(dtype)
        ln = normdrop.LayerNorm(5, dtype=dtype, backend="numba")
        ln(rows)
        ln.bias[...] = 3.0
        want = F.layer_norm(rows, 5, ln.weight.copy(), ln.bias.copy(), backend="numba")
        np.testing.assert_array_equal(ln(rows), want)
        assert set(_bound_calls(ln)) == {(rows.shape, rows.dtype)}


def test_a_plan_keeps_a_bounded_number_of_bound_calls(rng):
    pytest.importorskip("numba")
    ln = normdrop.LayerNorm(3, dtype="float64", backend="numba")
    for n in range(1, 3 * _arrays.MAX_BOUND_CALLS):
        x = rng.standard_normal((n, 3))
        np.testing.assert_allclose(ln(x), F.layer_norm(x, 3, backend="numpy"), atol=1e-12)
        assert 1 <= len(ln._plan.calls) <= _arrays.MAX_BOUND_CALLS


def test_parameters_that_need_converting_are_not_bound(rng):
    """float32 parameters on float64 data reach the kernel as converted copies, which in-place
    updates would not reach: such calls are not bound, and see every update."""
    pytest.importorskip("numba")
    x = rng.standard_normal((6, 4))
    bn = normdrop.BatchNorm1d(4, dtype="float32", backend="numba")
    bn(x)
    assert _bound_calls(bn) == {}
    bn.weight[...] = 3.0
    want = 3.0 * F.batch_norm(x, training=True, backend="numpy")
    np.testing.assert_allclose(bn(x), want, rtol=1e-5, atol=1e-5)


def _small_layers(dtype):
    """A BatchNorm1d and a LayerNorm on the numba backend's default selection (no
    ``backend=``), with the inputs of their bound calls: ``(layer, x)`` pairs."""
    rng = np.random.default_rng(11)
    bn = normdrop.BatchNorm1d(5, dtype=dtype)
    ln = normdrop.LayerNorm(6, dtype=dtype)
    x3 = rng.standard_normal((4, 5, 3)).astype(dtype)
    rows = rng.standard_normal((7, 6)).astype(dtype)
    return (bn, x3), (ln, rows)


def _want(layer, x, backend):
    """What ``layer`` gives for ``x`` on ``backend``, from the functional path, with the
    running statistics it would have after the call."""
    if isinstance(layer, normdrop.BatchNorm1d):
        rm, rv = layer.running_mean.copy(), layer.running_var.copy()
        y = F.batch_norm(x, rm, rv, layer.weight, layer.bias, training=True, backend=backend)
        return y, rm, rv
    return F.layer_norm(x, x.shape[-1], layer.weight, layer.bias, backend=backend), None, None


def _check_call(layer, x, backend):
    y, rm, rv = _want(layer, x, backend)
    np.testing.assert_array_equal(layer(x), y)
    assert layer._plan.backend.name == backend
    if rm is not None:
        np.testing.assert_array_equal(layer.running_mean, rm)
        np.testing.assert_array_equal(layer.running_var, rv)


def test_bound_calls_follow_every_change_of_the_backend_choice(monkeypatch):
    """A layer whose calls are bound on the numba backend takes, at the very next call, the
    backend that ``NORMDROP_BACKEND``, :func:`~normdrop.set_backend` or
    :func:`~normdrop.use_backend` chooses, and the bound call again once it is unset."""
    pytest.importorskip("numba")
    monkeypatch.delenv("NORMDROP_BACKEND", raising=False)
    for layer, x in _small_layers("float64"):
        _check_call(layer, x, "numba")
        assert _bound_calls(layer)
        monkeypatch.setenv("NORMDROP_BACKEND", "numpy")
        _check_call(layer, x, "numpy")
        monkeypatch.setenv("NORMDROP_BACKEND", "")  # empty: as if unset
        _check_call(layer, x, "numba")
        monkeypatch.delenv("NORMDROP_BACKEND")
        _check_call(layer, x, "numba")
        normdrop.set_backend("numpy")
        try:
            _check_call(layer, x, "numpy")
        finally:
            normdrop.set_backend(None)
        with normdrop.use_backend("numpy"):
            _check_call(layer, x, "numpy")
        _check_call(layer, x, "numba")
        assert _bound_calls(layer)


def _count_compiled(monkeypatch):
    """Count the calls of the compiled code that the numba backend binds from now on."""
    module = importlib.import_module("normdrop.backends.numba_backend.backend")
    real = module._compiled
    counts = []

    def counting(dispatcher, *args):
        compiled = real(dispatcher, *args)

        def call(*call_args):
            counts.append(call_args[0].shape)
            return compiled(*call_args)

        return call

    monkeypatch.setattr(module, "_compiled", counting)
    return counts


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bound_calls_run_compiled_code_on_data_of_its_type_only(monkeypatch, dtype):
    """A bound call runs the kernel's compiled code without the dispatcher for C-contiguous,
    aligned, writable data, and hands read-only and unaligned data to the unbound method:
    each gets the results of the functional path (which types its arguments)."""
    pytest.importorskip("numba")
    counts = _count_compiled(monkeypatch)
    for layer, x in _small_layers(dtype):
        _check_call(layer, x, "numba")
        _check_call(layer, x, "numba")
        assert counts == [x.shape, x.shape]  # bound at the first call, which runs it too
        frozen = x.copy()
        frozen.flags.writeable = False
        _check_call(layer, frozen, "numba")
        # C-contiguous and unaligned: one byte into a buffer
        unaligned = np.ndarray(x.shape, x.dtype, np.empty(x.nbytes + 1, np.uint8), offset=1)
        unaligned[...] = x
        assert unaligned.flags.c_contiguous and not unaligned.flags.aligned
        y, rm, rv = _want(layer, x, "numba")
        np.testing.assert_allclose(layer(unaligned), y, rtol=1e-6)
        if rm is not None:
            np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-6)
            np.testing.assert_allclose(layer.running_var, rv, rtol=1e-6)
        assert len(counts) == 2
        _check_call(layer, x, "numba")
        assert len(counts) == 3
        counts.clear()


def test_running_statistics_made_read_only_after_binding_are_not_written(monkeypatch):
    """Running statistics that a bound BatchNorm1d call updates, made read-only since it was
    bound, make the call fail as an unbound one does, and change no state."""
    pytest.importorskip("numba")
    counts = _count_compiled(monkeypatch)
    ((bn, x), _) = _small_layers("float32")
    bn(x)
    assert len(counts) == 1
    state = {k: v.copy() for k, v in bn.state_dict().items()}
    bn.running_mean.flags.writeable = False
    bn.running_var.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        F.batch_norm(x, bn.running_mean, bn.running_var, training=True, backend="numba")
    with pytest.raises(ValueError, match="read-only"):
        bn(x)
    assert len(counts) == 1
    for key, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
