"""What every layer does (SPEC "Every layer"): modes, calling, gradients, parameters and
buffers, state dicts and checkpoints, repr, pickling, Sequential."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import host, param_ok

import normdrop
from normdrop import IncompatibleKeys
from normdrop.errors import (
    BackwardBeforeForwardError,
    InvalidParameterError,
    StateDictError,
)

BN_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def _layers(backend):
    """One of each layer kind, with the input shape they take."""
    return [
        (normdrop.BatchNorm1d(3, backend=backend.name), (4, 3)),
        (normdrop.BatchNorm1d(3, backend=backend.name), (4, 3, 2)),
        (normdrop.LayerNorm((2, 3), backend=backend.name), (4, 2, 3)),
        (normdrop.Dropout(0.3, seed=5, backend=backend.name), (4, 3)),
    ]


def _data(backend, rng, shape, dtype=np.float32):
    return backend.asarray(rng.standard_normal(shape).astype(dtype))


# ----------------------------------------------------------------------------- modes & calling
def test_modes(backend):
    for layer, _ in _layers(backend):
        assert layer.training is True
        assert layer.train() is layer and layer.training is True
        assert layer.eval() is layer and layer.training is False
        assert layer.train(False) is layer and layer.training is False
        assert layer.train(True) is layer and layer.training is True
        assert layer.train(np.bool_(False)) is layer and layer.training is False
        with pytest.raises(InvalidParameterError):
            layer.train("no")
        assert layer.training is False


def test_call_is_forward(backend, rng):
    for layer, shape in _layers(backend):
        twin = copy.deepcopy(layer)
        x = _data(backend, rng, shape)
        for mode in (True, False):
            layer.train(mode)
            twin.train(mode)
            a = backend.to_numpy(layer(x))
            b = backend.to_numpy(twin.forward(x))
            np.testing.assert_array_equal(a, b)
            for (k, v), (k2, v2) in zip(
                layer.state_dict().items(), twin.state_dict().items(), strict=True
            ):
                assert k == k2
                np.testing.assert_array_equal(v, v2)


def test_backward_before_forward(backend):
    for layer, shape in _layers(backend):
        with pytest.raises(BackwardBeforeForwardError, match="before any forward"):
            layer.backward(backend.asarray(np.ones(shape, np.float32)))
    model = normdrop.Sequential(normdrop.LayerNorm(3), normdrop.Dropout(0.5, seed=0))
    with pytest.raises(BackwardBeforeForwardError):
        model.backward(np.ones((2, 3), np.float32))


# ----------------------------------------------------------------------------- gradients
def test_grads_accumulate_until_zero_grad(backend, rng):
    for layer, shape in _layers(backend):
        names = [k for k, _ in layer.named_parameters()]
        assert list(layer.grads) == names
        for k, v in layer.named_parameters():
            g = layer.grads[k]
            assert param_ok(backend, g)
            assert g.shape == v.shape and np.dtype(g.dtype) == np.dtype(v.dtype)
            assert not host(backend, g).any()
        x = _data(backend, rng, shape, np.float64)
        gy = _data(backend, rng, shape, np.float64)
        layer(x)
        dx1 = backend.to_numpy(layer.backward(gy))
        first = {k: host(backend, v).copy() for k, v in layer.grads.items()}
        dx2 = backend.to_numpy(layer.backward(gy))
        np.testing.assert_array_equal(dx1, dx2)
        assert list(layer.grads) == names
        for k in names:
            assert first[k].any()
            np.testing.assert_allclose(host(backend, layer.grads[k]), 2 * first[k], rtol=1e-6)
        layer.zero_grad()
        assert list(layer.grads) == names
        for k, v in layer.named_parameters():
            assert not host(backend, layer.grads[k]).any()
            assert layer.grads[k].shape == v.shape


def test_grads_keys_without_affine():
    assert normdrop.BatchNorm1d(3, affine=False).grads == {}
    assert list(normdrop.LayerNorm(3, bias=False).grads) == ["weight"]
    assert normdrop.LayerNorm(3, elementwise_affine=False).grads == {}
    assert normdrop.Dropout(0.5, seed=0).grads == {}


# ----------------------------------------------------------------------------- parameters & buffers
def test_parameters_and_buffers(backend):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    named = list(bn.named_parameters())
    assert [k for k, _ in named] == ["weight", "bias"]
    assert named[0][1] is bn.weight and named[1][1] is bn.bias
    assert [id(p) for p in bn.parameters()] == [id(bn.weight), id(bn.bias)]
    buffers = list(bn.named_buffers())
    assert [k for k, _ in buffers] == ["running_mean", "running_var", "num_batches_tracked"]
    assert buffers[0][1] is bn.running_mean
    assert buffers[2][1] is bn.num_batches_tracked
    assert [id(b) for b in bn.buffers()] == [
        id(bn.running_mean),
        id(bn.running_var),
        id(bn.num_batches_tracked),
    ]
    for _, a in named + buffers:
        assert param_ok(backend, a)

    bn = normdrop.BatchNorm1d(3, affine=False, track_running_stats=False)
    assert list(bn.named_parameters()) == [] and list(bn.named_buffers()) == []

    ln = normdrop.LayerNorm(4, backend=backend.name)
    assert [k for k, _ in ln.named_parameters()] == ["weight", "bias"]
    assert list(ln.buffers()) == []

    d = normdrop.Dropout(0.5, seed=0)
    assert list(d.parameters()) == [] and list(d.buffers()) == []
    assert d.state_dict() == {}


# ----------------------------------------------------------------------------- state dicts
def test_state_dict_keys_order_and_copies(backend, rng):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    bn(_data(backend, rng, (4, 3)))
    state = bn.state_dict()
    assert list(state) == BN_KEYS
    for v in state.values():
        assert isinstance(v, np.ndarray)
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"] == 1
    before = {k: v.copy() for k, v in state.items()}
    for v in state.values():
        v[...] = 7  # mutating the copy...
    for k, v in bn.state_dict().items():  # ...changes nothing in the layer
        np.testing.assert_array_equal(v, before[k])
    for k, a in list(bn.named_parameters()) + list(bn.named_buffers()):
        if isinstance(a, np.ndarray):
            assert not np.shares_memory(a, bn.state_dict()[k])
    assert list(normdrop.BatchNorm1d(2, affine=False).state_dict()) == BN_KEYS[2:]
    assert list(normdrop.BatchNorm1d(2, track_running_stats=False).state_dict()) == BN_KEYS[:2]
    assert list(normdrop.LayerNorm(3).state_dict()) == ["weight", "bias"]


def _random_bn_state(rng, c=3):
    return {
        "weight": rng.standard_normal(c).astype(np.float32),
        "bias": rng.standard_normal(c).astype(np.float32),
        "running_mean": rng.standard_normal(c).astype(np.float32),
        "running_var": (rng.random(c) + 0.5).astype(np.float32),
        "num_batches_tracked": np.array(17, np.int64),
    }


def _assert_state(layer, expected):
    state = layer.state_dict()
    for k, v in expected.items():
        np.testing.assert_array_equal(state[k], v, err_msg=k)


def test_load_state_dict_strict(backend, rng):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    new = _random_bn_state(rng)
    result = bn.load_state_dict(new)
    assert isinstance(result, IncompatibleKeys)
    assert result.missing_keys == [] and result.unexpected_keys == []
    _assert_state(bn, new)
    for _, a in list(bn.named_parameters()) + list(bn.named_buffers()):
        assert param_ok(backend, a)
    # the loaded values are used
    bn.eval()
    x = rng.standard_normal((2, 3)).astype(np.float32)
    y = backend.to_numpy(bn(backend.asarray(x)))
    expected = (x - new["running_mean"]) / np.sqrt(new["running_var"] + 1e-5) * new["weight"]
    np.testing.assert_allclose(y, expected + new["bias"], rtol=1e-5, atol=1e-5)


def test_load_state_dict_keeps_array_identity_and_dtype():
    bn = normdrop.BatchNorm1d(3)
    weight = bn.weight
    bn.load_state_dict({**bn.state_dict(), "weight": np.arange(3.0)})  # float64 into float32
    assert bn.weight is weight
    assert bn.weight.dtype == np.float32
    np.testing.assert_array_equal(bn.weight, [0, 1, 2])


def test_load_state_dict_without_num_batches_tracked(backend, rng):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    bn(_data(backend, rng, (4, 3)))
    bn(_data(backend, rng, (4, 3)))
    new = _random_bn_state(rng)
    del new["num_batches_tracked"]
    result = bn.load_state_dict(new)  # strict: accepted, as in PyTorch
    assert result.missing_keys == [] and result.unexpected_keys == []
    _assert_state(bn, new)
    assert int(bn.state_dict()["num_batches_tracked"]) == 2  # kept


def test_load_state_dict_errors_list_keys(backend, rng):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    new = _random_bn_state(rng)
    del new["running_var"], new["bias"]
    new["extra_key"] = np.zeros(3)
    new["another"] = np.zeros(1)
    with pytest.raises(StateDictError) as info:
        bn.load_state_dict(new)
    message = str(info.value)
    assert "BatchNorm1d" in message
    assert "Missing key(s)" in message and "bias" in message and "running_var" in message
    assert "Unexpected key(s)" in message and "extra_key" in message and "another" in message
    assert isinstance(info.value, RuntimeError)
    # a size mismatch names the key and both shapes
    new = _random_bn_state(rng)
    new["running_mean"] = np.zeros(4)
    with pytest.raises(StateDictError) as info:
        bn.load_state_dict(new)
    message = str(info.value)
    assert "size mismatch for running_mean" in message
    assert "(4,)" in message and "(3,)" in message
    # all problems at once
    new["weight"] = np.zeros((3, 1))
    new["junk"] = np.zeros(1)
    with pytest.raises(StateDictError) as info:
        bn.load_state_dict(new)
    message = str(info.value)
    for word in ("running_mean", "weight", "junk"):
        assert word in message


def test_load_state_dict_non_strict(backend, rng):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    new = _random_bn_state(rng)
    del new["bias"]
    new["extra"] = np.zeros(3)
    result = bn.load_state_dict(new, strict=False)
    assert result.missing_keys == ["bias"]
    assert result.unexpected_keys == ["extra"]
    assert result == (["bias"], ["extra"])
    _assert_state(bn, {k: v for k, v in new.items() if k != "extra"})
    np.testing.assert_array_equal(bn.state_dict()["bias"], np.zeros(3, np.float32))
    # size mismatches raise even without strict, and nothing is written
    before = bn.state_dict()
    bad = _random_bn_state(rng)
    bad["weight"] = np.zeros(5)
    with pytest.raises(StateDictError):
        bn.load_state_dict(bad, strict=False)
    _assert_state(bn, before)


def test_load_state_dict_atomic(backend, rng):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    bn(_data(backend, rng, (4, 3)))
    before = bn.state_dict()
    for mutate in (
        lambda s: s.pop("weight"),
        lambda s: s.__setitem__("zzz", np.ones(1)),
        lambda s: s.__setitem__("num_batches_tracked", np.zeros(2, np.int64)),
        lambda s: s.__setitem__("running_var", np.ones((3, 1))),
    ):
        new = _random_bn_state(rng)
        mutate(new)
        with pytest.raises(StateDictError):
            bn.load_state_dict(new)
        _assert_state(bn, before)


def test_npz_round_trip(backend, rng, tmp_path):
    bn = normdrop.BatchNorm1d(3, momentum=None, backend=backend.name)
    bn.load_state_dict(_random_bn_state(rng))
    bn(_data(backend, rng, (5, 3, 2)))
    path = tmp_path / "bn.npz"
    bn.save(path)
    fresh = normdrop.BatchNorm1d(3, momentum=None, backend=backend.name)
    result = fresh.load(path)
    assert result == ([], [])
    saved = bn.state_dict()
    assert list(fresh.state_dict()) == list(saved)
    _assert_state(fresh, saved)
    with np.load(path) as data:
        assert sorted(data.files) == sorted(BN_KEYS)
        assert data["num_batches_tracked"].dtype == np.int64
    # the restored layer behaves the same
    x = rng.standard_normal((4, 3)).astype(np.float32)
    bn.eval()
    fresh.eval()
    np.testing.assert_array_equal(
        backend.to_numpy(bn(backend.asarray(x))), backend.to_numpy(fresh(backend.asarray(x)))
    )
    ln = normdrop.LayerNorm((2, 3), backend=backend.name)
    ln.load_state_dict({"weight": rng.standard_normal((2, 3)), "bias": rng.standard_normal((2, 3))})
    ln.save(tmp_path / "ln.npz")
    ln2 = normdrop.LayerNorm((2, 3), backend=backend.name)
    ln2.load(tmp_path / "ln.npz")
    _assert_state(ln2, ln.state_dict())
    with pytest.raises(StateDictError):
        normdrop.LayerNorm(3).load(tmp_path / "ln.npz")


# ----------------------------------------------------------------------------- repr
def test_repr_exact():
    assert repr(normdrop.BatchNorm1d(64)) == (
        "BatchNorm1d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    )
    assert repr(normdrop.LayerNorm(10)) == (
        "LayerNorm((10,), eps=1e-05, elementwise_affine=True, bias=True)"
    )
    assert repr(normdrop.Dropout(0.15, seed=0)) == "Dropout(p=0.15)"
    assert repr(
        normdrop.BatchNorm1d(3, eps=1e-3, momentum=None, affine=False, track_running_stats=False)
    ) == ("BatchNorm1d(3, eps=0.001, momentum=None, affine=False, track_running_stats=False)")
    assert repr(normdrop.LayerNorm([2, 3], eps=0.5, elementwise_affine=False, bias=False)) == (
        "LayerNorm((2, 3), eps=0.5, elementwise_affine=False, bias=False)"
    )
    # as PyTorch: ``bias=`` says whether there is a bias, so no affine means bias=False
    assert repr(normdrop.LayerNorm(5, 1e-3, False)) == (
        "LayerNorm((5,), eps=0.001, elementwise_affine=False, bias=False)"
    )
    assert repr(normdrop.Dropout(0, seed=0)) == "Dropout(p=0.0)"
    assert repr(normdrop.BatchNorm1d(np.int64(8))) == (
        "BatchNorm1d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    )


def test_sequential_repr():
    model = normdrop.Sequential(normdrop.BatchNorm1d(4), normdrop.Dropout(0.1, seed=0))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)\n"
        "  (1): Dropout(p=0.1)\n"
        ")"
    )


# ----------------------------------------------------------------------------- pickle & deepcopy
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_pickle_and_deepcopy(backend, rng, how):
    def clone(obj):
        return pickle.loads(pickle.dumps(obj)) if how == "pickle" else copy.deepcopy(obj)

    x = rng.standard_normal((4, 3)).astype(np.float32)
    bn = normdrop.BatchNorm1d(3, momentum=None, backend=backend.name)
    bn(backend.asarray(x))
    bn.backward(backend.asarray(np.ones((4, 3), np.float32)))
    ln = normdrop.LayerNorm(3, bias=False, backend=backend.name)
    d = normdrop.Dropout(0.4, seed=2**63 + 5, backend=backend.name)
    d(backend.asarray(x))
    d(backend.asarray(x))
    for layer in (bn, ln, d):
        layer.eval() if layer is ln else None
        twin = clone(layer)
        assert type(twin) is type(layer)
        assert repr(twin) == repr(layer)
        assert twin.training == layer.training
        assert list(twin.state_dict()) == list(layer.state_dict())
        _assert_state(twin, layer.state_dict())
        for k, v in layer.grads.items():
            np.testing.assert_array_equal(host(backend, twin.grads[k]), host(backend, v))
        for _, a in list(twin.named_parameters()) + list(twin.named_buffers()):
            assert param_ok(backend, a)
        for a, b in zip(twin.parameters(), layer.parameters(), strict=True):
            assert a is not b
        # both continue identically
        np.testing.assert_array_equal(
            backend.to_numpy(twin(backend.asarray(x))), backend.to_numpy(layer(backend.asarray(x)))
        )
        _assert_state(twin, layer.state_dict())
    twin_d = clone(d)
    assert twin_d.seed == d.seed == 2**63 + 5
    assert twin_d.call_count == d.call_count == 3
    assert twin_d.p == d.p == 0.4


def test_pickle_with_backend_object(backend, rng):
    bn = normdrop.BatchNorm1d(3, backend=backend)  # the object, not its name
    x = rng.standard_normal((4, 3)).astype(np.float32)
    bn(backend.asarray(x))
    twin = pickle.loads(pickle.dumps(bn))
    _assert_state(twin, bn.state_dict())
    np.testing.assert_array_equal(
        backend.to_numpy(twin(backend.asarray(x))), backend.to_numpy(bn(backend.asarray(x)))
    )


def test_backend_objects_pickle_and_copy_as_the_registered_backend(backend):
    """A built-in backend pickles and deep-copies as its name: the copy is the registered
    instance itself, with none of the state it gathered at run time."""
    assert pickle.loads(pickle.dumps(backend)) is backend
    assert copy.deepcopy(backend) is backend
    assert copy.deepcopy([backend])[0] is backend


@pytest.mark.parametrize("layer", ["", "workqueue"])
def test_layer_with_the_numba_backend_object_pickles_in_a_new_process(layer):
    """Before its first kernel call, and under the workqueue threading layer always, the
    numba backend holds wrappers of its kernel methods (its launch lock) that pickle
    cannot take: a layer built with ``backend=<the object>`` pickled the backend's state and
    failed. A new process, so that no earlier call has removed the wrappers."""
    code = textwrap.dedent(
        """
        import copy, pickle
        import numpy as np
        import normdrop
        be = normdrop.get_backend("numba")
        bn = normdrop.BatchNorm1d(3, backend=be)
        for _ in range(2):  # before and after the first kernel call
            twin = pickle.loads(pickle.dumps(bn))
            assert twin._backend_choice is be and copy.deepcopy(bn)._backend_choice is be
            x = np.arange(12.0, dtype=np.float32).reshape(4, 3)
            np.testing.assert_array_equal(twin(x), normdrop.BatchNorm1d(3)(x))
            bn(x)
        print("ok")
        """
    )
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer} if layer else dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_unpickled_layer_needs_a_new_forward(rng):
    bn = normdrop.BatchNorm1d(3)
    bn(rng.standard_normal((4, 3)).astype(np.float32))
    twin = pickle.loads(pickle.dumps(bn))
    with pytest.raises(BackwardBeforeForwardError):
        twin.backward(np.ones((4, 3), np.float32))
    bn.backward(np.ones((4, 3), np.float32))  # the original still can


# ----------------------------------------------------------------------------- Sequential
def _model(backend):
    return normdrop.Sequential(
        normdrop.BatchNorm1d(3, dtype="float64", backend=backend.name),
        normdrop.Dropout(0.25, seed=8, backend=backend.name),
        normdrop.LayerNorm(3, dtype="float64", backend=backend.name),
    )


def test_sequential_forward_backward(backend, rng):
    model = _model(backend)
    twins = [copy.deepcopy(layer) for layer in model]
    x = rng.standard_normal((5, 3))
    g = rng.standard_normal((5, 3))
    y = model(backend.asarray(x))
    assert backend.accepts(y)
    h = backend.asarray(x)
    for layer in twins:
        h = layer(h)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(h))
    dx = model.backward(backend.asarray(g))
    h = backend.asarray(g)
    for layer in reversed(twins):
        h = layer.backward(h)
    np.testing.assert_array_equal(backend.to_numpy(dx), backend.to_numpy(h))
    assert list(model.grads) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [k for k, _ in model.named_parameters()] == list(model.grads)
    np.testing.assert_array_equal(
        host(backend, model.grads["2.weight"]), host(backend, twins[2].grads["weight"])
    )
    model.zero_grad()
    assert not any(host(backend, v).any() for v in model.grads.values())


def test_sequential_modes_and_container(backend):
    model = _model(backend)
    assert len(model) == 3
    assert isinstance(model[0], normdrop.BatchNorm1d) and isinstance(model[-1], normdrop.LayerNorm)
    assert [type(layer).__name__ for layer in model] == ["BatchNorm1d", "Dropout", "LayerNorm"]
    assert model.training is True
    assert model.eval() is model
    assert model.training is False and not any(layer.training for layer in model)
    assert model.train() is model
    assert model.training is True and all(layer.training for layer in model)
    assert model.train(False) is model and not any(layer.training for layer in model)
    with pytest.raises(InvalidParameterError):
        normdrop.Sequential(normdrop.LayerNorm(3), "not a layer")


def test_sequential_state_dict(backend, rng):
    model = _model(backend)
    model(backend.asarray(rng.standard_normal((4, 3))))
    state = model.state_dict()
    assert list(state) == [f"0.{k}" for k in BN_KEYS] + ["2.weight", "2.bias"]
    assert [k for k, _ in model.named_buffers()] == [f"0.{k}" for k in BN_KEYS[2:]]
    np.testing.assert_array_equal(state["0.running_mean"], model[0].state_dict()["running_mean"])
    other = _model(backend)
    assert other.load_state_dict(state) == ([], [])
    _assert_state(other[0], model[0].state_dict())
    _assert_state(other[2], model[2].state_dict())
    # non-strict: prefixed missing and unexpected keys
    partial = dict(state)
    del partial["2.bias"]
    partial["5.weight"] = np.ones(3)
    partial["0.extra"] = np.ones(3)
    result = other.load_state_dict(partial, strict=False)
    assert result.missing_keys == ["2.bias"]
    assert sorted(result.unexpected_keys) == ["0.extra", "5.weight"]
    # nested Sequential
    outer = normdrop.Sequential(_model(backend), normdrop.LayerNorm(3))
    keys = list(outer.state_dict())
    assert keys[0] == "0.0.weight" and keys[-1] == "1.bias"
    outer.load_state_dict(outer.state_dict())


def test_sequential_strict_errors_name_prefixed_keys(backend):
    model = _model(backend)
    state = model.state_dict()
    del state["2.bias"]
    state["9.weight"] = np.ones(3)
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(state)
    assert "9.weight" in str(info.value)
    state = model.state_dict()
    del state["2.bias"]
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(state)
    assert "2.bias" in str(info.value)
    state = model.state_dict()
    state["0.running_mean"] = np.zeros(7)
    with pytest.raises(StateDictError) as info:
        model.load_state_dict(state)
    assert "0.running_mean" in str(info.value)


def test_sequential_load_state_dict_atomic(backend, rng):
    model = _model(backend)
    model(backend.asarray(rng.standard_normal((4, 3))))
    before = model.state_dict()
    bad = {k: v + 1 for k, v in before.items()}
    bad["2.weight"] = np.ones(5)  # only the last layer is wrong
    with pytest.raises(StateDictError):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_sequential_pickle(backend, rng):
    model = _model(backend)
    x = backend.asarray(rng.standard_normal((4, 3)))
    model(x)
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert repr(twin) == repr(model)
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(twin.state_dict()[k], v)
        assert twin[1].call_count == 1 and twin[1].seed == 8
    twin = copy.deepcopy(model)
    np.testing.assert_array_equal(backend.to_numpy(twin(x)), backend.to_numpy(model(x)))


def test_sequential_reset_parameters(backend, rng):
    model = _model(backend)
    model.load_state_dict({k: v + 2 for k, v in model.state_dict().items()})
    model.reset_parameters()
    state = model.state_dict()
    np.testing.assert_array_equal(state["0.weight"], np.ones(3))
    np.testing.assert_array_equal(state["0.running_mean"], np.zeros(3))
    np.testing.assert_array_equal(state["2.bias"], np.zeros(3))


# ------------------------------------------------------------------------ load results and inputs
def test_incompatible_keys_print_like_torch(rng):
    bn = normdrop.BatchNorm1d(3)
    result = bn.load_state_dict(bn.state_dict())
    assert str(result) == repr(result) == "<All keys matched successfully>"
    assert result == ([], []) and result.missing_keys == [] and result.unexpected_keys == []
    partial = bn.state_dict()
    del partial["bias"]
    result = bn.load_state_dict(partial, strict=False)
    assert str(result) == "IncompatibleKeys(missing_keys=['bias'], unexpected_keys=[])"
    assert tuple(result) == (["bias"], [])


@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_refuses_non_mappings_clearly(rng, strict):
    model = normdrop.Sequential(normdrop.BatchNorm1d(3), normdrop.LayerNorm(3))
    before = model.state_dict()
    pairs = [(k, v + 1) for k, v in before.items()]
    for value in (pairs, iter(pairs), None, np.ones(3)):
        with pytest.raises(StateDictError, match="must be a mapping.*dict\\(pairs\\)"):
            model.load_state_dict(value, strict=strict)
    _assert_state(model, before)
    assert model.load_state_dict(dict(pairs)) == ([], [])  # what the message suggests works


# ----------------------------------------------------------------------------- exact resume
def _training_model(backend, seed):
    return normdrop.Sequential(
        normdrop.BatchNorm1d(4, momentum=None, dtype="float64", backend=backend.name),
        normdrop.Dropout(0.3, seed=seed, backend=backend.name),
        normdrop.Sequential(
            normdrop.LayerNorm(4, dtype="float64", backend=backend.name),
            normdrop.Dropout(0.2, seed=seed + 1, backend=backend.name),
        ),
    )


def _train(backend, model, batches):
    """SGD steps; returns every output, on the host."""
    outputs = []
    for x, g in batches:
        y = model(backend.asarray(x))
        outputs.append(backend.to_numpy(y).copy())
        model.zero_grad()
        model.backward(backend.asarray(g))
        for name, param in model.named_parameters():
            param -= 0.1 * model.grads[name]
    return outputs


def test_save_load_resumes_training_bit_exactly(backend, rng, tmp_path):
    batches = [(rng.standard_normal((6, 4)), rng.standard_normal((6, 4))) for _ in range(7)]
    model = _training_model(backend, seed=10)
    _train(backend, model, batches[:4])
    model.save(tmp_path / "ckpt")  # no suffix: written as ckpt.npz, read back by the same name
    uninterrupted = _train(backend, model, batches[4:])
    resumed_model = _training_model(backend, seed=99)  # other seeds: the checkpoint restores them
    assert resumed_model.load(tmp_path / "ckpt") == ([], [])
    assert resumed_model[1].seed == 10 and resumed_model[1].call_count == 4
    assert resumed_model[2][1].seed == 11 and resumed_model[2][1].call_count == 4
    resumed = _train(backend, resumed_model, batches[4:])
    for a, b in zip(uninterrupted, resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    for (k, v), (k2, v2) in zip(
        model.state_dict(extra_state=True).items(),
        resumed_model.state_dict(extra_state=True).items(),
        strict=True,
    ):
        assert k == k2
        np.testing.assert_array_equal(v, v2)


def test_save_and_load_take_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bn = normdrop.BatchNorm1d(3)
    bn.running_mean = np.array([1.0, 2.0, 3.0])
    for name in ("ckpt", tmp_path / "other", "third.npz"):
        bn.save(name)
        fresh = normdrop.BatchNorm1d(3)
        assert fresh.load(name) == ([], [])
        np.testing.assert_array_equal(fresh.running_mean, [1, 2, 3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz", "other.npz", "third.npz"]
    with open("plain", "wb") as f:  # a file that exists under the exact name is read as it is
        np.savez(f, **bn.state_dict())
    assert normdrop.BatchNorm1d(3).load("plain") == ([], [])


def test_extra_state_keys(backend):
    model = _training_model(backend, seed=3)
    keys = list(model.state_dict())
    assert not any("_extra_state" in k for k in keys)  # PyTorch's keys by default
    full = model.state_dict(extra_state=True)
    assert [k for k in full if "_extra_state" in k] == ["1._extra_state", "2.1._extra_state"]
    assert [k for k in full if "_extra_state" not in k] == keys
    np.testing.assert_array_equal(full["1._extra_state"], np.array([3, 0], np.uint64))
    assert full["1._extra_state"].dtype == np.uint64
    with pytest.raises(InvalidParameterError):
        model.state_dict(extra_state="yes")
    # an extra-state entry is optional, and loads when present
    other = _training_model(backend, seed=50)
    assert other.load_state_dict(model.state_dict()) == ([], [])
    assert other[1].seed == 50
    full["1._extra_state"] = np.array([7, 5], np.uint64)
    assert other.load_state_dict(full) == ([], [])
    assert (other[1].seed, other[1].call_count, other[2][1].seed) == (7, 5, 4)
    # a layer without extra state does not expect one
    result = normdrop.LayerNorm(4).load_state_dict(
        {"weight": np.ones(4), "bias": np.zeros(4), "_extra_state": np.zeros(2)}, strict=False
    )
    assert result.unexpected_keys == ["_extra_state"]


@pytest.mark.parametrize(
    "bad", [np.array([1, 2, 3]), np.array([-1, 2]), np.array([1.5, 2.0]), "seed", [[1], [2, 3]]]
)
def test_bad_extra_state_is_refused_and_changes_nothing(bad):
    model = _training_model(normdrop.get_backend("numpy"), seed=3)
    model(np.ones((4, 4)))
    before = model.state_dict(extra_state=True)
    state = {k: v + 1 if k.endswith("running_mean") else v for k, v in before.items()}
    state["1._extra_state"] = np.array([8, 9], np.uint64)  # valid, applied before the bad one
    state["2.1._extra_state"] = bad
    with pytest.raises(StateDictError, match="2.1._extra_state"):
        model.load_state_dict(state)
    after = model.state_dict(extra_state=True)
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)
    with pytest.raises(InvalidParameterError, match=r"\[seed, call_count\]"):
        model[2][1].set_extra_state(bad)
    assert (model[2][1].seed, model[2][1].call_count) == (4, 1)
