"""The public extension API of Module (a user's own layer), Sequential as a list, gradients
kept in place, and validated assignment of parameters and buffers."""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import host

import normdrop
from normdrop.errors import (
    BackwardBeforeForwardError,
    InvalidParameterError,
    ShapeError,
)

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide"


def _guide_namespace():
    """Run every Python block of the "Writing your own layer" page, in page order."""
    text = (GUIDE / "custom-layers.md").read_text()
    namespace: dict = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        exec(compile(block, "custom-layers.md", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def guide():
    return _guide_namespace()


class Scale(normdrop.Module):
    """A minimal custom layer: y = x * weight, with a buffer counting calls."""

    def __init__(self, n, backend=None):
        super().__init__(backend)
        self.register_parameter("weight", np.full(n, 2.0))
        self.register_buffer("calls", np.zeros((), np.int64))

    def forward(self, x):
        self.calls[...] += 1
        self.save_for_backward(x)
        return x * self.weight

    def compute_backward(self, grad_output, x):
        return grad_output * self.weight, {"weight": (grad_output * x).sum(axis=0)}


# ----------------------------------------------------------------------------- the guide's layer
def test_guide_page_is_in_the_toctree():
    assert "custom-layers" in (GUIDE / "index.md").read_text().split()


def test_guide_linear_trains(guide):
    losses = guide["losses"]
    assert len(losses) == 100
    assert losses[-1] < losses[0] / 10
    assert all(np.isfinite(losses))


def test_guide_linear_gradients_match_finite_differences(guide):
    rng = np.random.default_rng(3)
    layer = guide["Linear"](3, 2)
    x = rng.standard_normal((5, 3))
    g = rng.standard_normal((5, 2))
    layer(x)
    dx = layer.backward(g)
    eps = 1e-6
    loss = lambda: float(np.sum(layer.forward(x) * g))  # noqa: E731
    for name, param in layer.named_parameters():
        numeric = np.zeros_like(param)
        for i in np.ndindex(param.shape):
            param[i] += eps
            up = loss()
            param[i] -= 2 * eps
            down = loss()
            param[i] += eps
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(layer.grads[name], numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dx, g @ layer.weight)


def test_custom_layer_joins_everything(guide, tmp_path):
    linear = guide["Linear"]
    model = normdrop.Sequential(linear(4, 3), normdrop.BatchNorm1d(3, dtype="float64"))
    assert list(model.state_dict()) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    assert list(model.grads) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    x = np.random.default_rng(0).standard_normal((6, 4))
    y = model(x)
    model.backward(np.random.default_rng(1).standard_normal(y.shape))
    assert np.abs(model.grads["0.weight"]).min() > 1e-6
    model.save(tmp_path / "m.npz")
    other = normdrop.Sequential(linear(4, 3, seed=9), normdrop.BatchNorm1d(3, dtype="float64"))
    other.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(other[0].weight, model[0].weight)
    twin = copy.deepcopy(model)  # (the page's class lives in no module, so it cannot pickle)
    np.testing.assert_array_equal(twin(x), model(x))
    assert repr(model).startswith("Sequential(\n  (0): Linear(in_features=4, out_features=3)")


def test_custom_layer_needs_no_zero_grad_and_accumulates(backend):
    layer = Scale(3, backend=backend.name if backend.device != "cpu" else None)
    assert list(layer.grads) == ["weight"] and not host(backend, layer.grads["weight"]).any()
    g = np.ones((2, 3))
    g = backend.asarray(g) if backend.device != "cpu" else g
    with pytest.raises(BackwardBeforeForwardError):
        layer.backward(g)
    x = np.arange(6.0).reshape(2, 3)
    layer(backend.asarray(x) if backend.device != "cpu" else x)
    layer.backward(g)
    np.testing.assert_array_equal(host(backend, layer.grads["weight"]), [3.0, 5.0, 7.0])
    assert int(host(backend, layer.calls)) == 1
    assert [k for k, _ in layer.named_buffers()] == ["calls"]
    twin = pickle.loads(pickle.dumps(layer))
    assert int(host(backend, twin.calls)) == 1
    np.testing.assert_array_equal(host(backend, twin.grads["weight"]), [3.0, 5.0, 7.0])


def test_compute_backward_mistakes_are_clear_and_change_no_gradient():
    class Wrong(Scale):
        def __init__(self, grads):
            super().__init__(3)
            self.wrong = grads

        def compute_backward(self, grad_output, x):
            return grad_output, self.wrong

    for grads, error in (
        ({"weight": np.ones(3), "nope": np.ones(3)}, InvalidParameterError),
        ({"weight": np.ones(4)}, ShapeError),
    ):
        layer = Wrong(grads)
        layer(np.ones((2, 3)))
        with pytest.raises(error):
            layer.backward(np.ones((2, 3)))
        assert not layer.grads["weight"].any()


def test_unimplemented_forward_and_backward_are_named():
    class Empty(normdrop.Module):
        pass

    layer = Empty()
    with pytest.raises(NotImplementedError, match="Empty does not implement forward"):
        layer(np.ones(3))
    layer.save_for_backward()
    with pytest.raises(NotImplementedError, match="Empty does not implement compute_backward"):
        layer.backward(np.ones(3))


def test_register_rejects_bad_names_and_values():
    layer = Scale(3)
    for name in ("weight", "training", "has.dot", "", 3, "_extra_state", "forward"):
        with pytest.raises(InvalidParameterError, match="cannot register"):
            layer.register_buffer(name, np.zeros(1))
    with pytest.raises(InvalidParameterError, match="cannot register"):
        layer.register_parameter("calls", np.zeros(1))
    layer.register_buffer("calls", np.ones((), np.int64))  # replacing in the same store is fine
    assert int(layer.calls) == 1
    with pytest.raises(InvalidParameterError, match="must be a floating array"):
        layer.register_parameter("count", np.zeros(2, np.int64))
    with pytest.raises(InvalidParameterError, match="got list"):
        layer.register_parameter("other", [1.0, 2.0])
    layer.register_parameter("maybe", None)
    assert layer.maybe is None and "maybe" not in layer.grads
    assert list(layer.state_dict()) == ["weight", "calls"]
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        layer.missing  # noqa: B018


# ----------------------------------------------------------------------------- gradients in place
def _model(backend):
    return normdrop.Sequential(
        normdrop.BatchNorm1d(3, backend=backend.name),
        normdrop.Dropout(0.3, seed=2, backend=backend.name),
        normdrop.Sequential(normdrop.LayerNorm(3, backend=backend.name)),
    )


def test_held_gradient_references_see_accumulation_and_zeroing(backend, rng):
    model = _model(backend)
    held = dict(model.grads)
    assert list(held) == ["0.weight", "0.bias", "2.0.weight", "2.0.bias"]
    x = backend.asarray(rng.standard_normal((5, 3)).astype(np.float32))
    g = backend.asarray(rng.standard_normal((5, 3)).astype(np.float32))
    model(x)
    for step in (1, 2):
        model.backward(g)
        for name, array in held.items():
            assert model.grads[name] is array
            np.testing.assert_array_equal(host(backend, array), host(backend, model.grads[name]))
            assert host(backend, array).any()
        if step == 1:
            first = {k: host(backend, v).copy() for k, v in held.items()}
    for name, array in held.items():
        np.testing.assert_allclose(host(backend, array), 2 * first[name], rtol=1e-6)
    model.zero_grad()
    for name, array in held.items():
        assert model.grads[name] is array and not host(backend, array).any()


def test_gradients_keep_the_parameter_dtype():
    bn = normdrop.BatchNorm1d(3)  # float32 parameters
    bn(np.random.default_rng(0).standard_normal((4, 3)))  # float64 data
    bn.backward(np.ones((4, 3)))
    assert bn.grads["weight"].dtype == np.float32


# ----------------------------------------------------------------------------- assignment
def test_buffer_and_parameter_assignment_copies_in_place(backend):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    arrays = {k: v for k, v in list(bn.named_parameters()) + list(bn.named_buffers())}
    bn.num_batches_tracked = np.array(10)
    bn.running_mean = np.array([1.0, 2.0, 3.0])
    bn.running_var = np.full(3, 4.0, np.float32)
    bn.weight = np.array([0.5, 0.5, 0.5])
    bn.bias = backend.asarray(np.array([1.0, 1.0, 1.0], np.float32))
    state = bn.state_dict()
    assert int(state["num_batches_tracked"]) == 10
    np.testing.assert_array_equal(state["running_mean"], [1, 2, 3])
    np.testing.assert_array_equal(state["running_var"], [4, 4, 4])
    np.testing.assert_array_equal(state["weight"], [0.5] * 3)
    np.testing.assert_array_equal(state["bias"], [1] * 3)
    for k, v in list(bn.named_parameters()) + list(bn.named_buffers()):
        assert v is arrays[k]
        assert v.dtype == arrays[k].dtype
    bn.weight -= 0.25  # in-place update through the attribute
    np.testing.assert_array_equal(bn.state_dict()["weight"], [0.25] * 3)
    # the assigned values are used
    bn.eval()
    y = backend.to_numpy(bn(backend.asarray(np.full((2, 3), 3.0, np.float32))))
    np.testing.assert_allclose(y[0], (3 - np.array([1, 2, 3])) / np.sqrt(4 + 1e-5) * 0.25 + 1)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("num_batches_tracked", np.array([1, 2]), r"shape \(\) and dtype int64, got shape \(2,\)"),
        ("num_batches_tracked", np.array(1.5), "dtype float64"),
        ("num_batches_tracked", 10, "got int"),
        ("running_mean", np.zeros(4), r"shape \(3,\)"),
        ("running_mean", np.array(["a", "b", "c"]), "dtype"),
        ("running_var", [1.0, 1.0, 1.0], "got list"),
        ("weight", np.zeros((3, 1)), "shape"),
        ("bias", None, "cannot remove"),
        ("running_mean", np.zeros(3, complex), "dtype complex128"),
    ],
)
def test_bad_assignment_is_a_clear_error_and_changes_nothing(backend, name, value, match):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    bn.running_mean = np.array([1.0, 2.0, 3.0])
    before = bn.state_dict()
    with pytest.raises(InvalidParameterError, match=match) as info:
        setattr(bn, name, value)
    assert info.value.parameter_name == name
    assert f"BatchNorm1d.{name}" in str(info.value) or value is None
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_assigning_to_an_absent_parameter_is_refused():
    bn = normdrop.BatchNorm1d(3, affine=False, track_running_stats=False)
    for name in ("weight", "running_mean", "num_batches_tracked"):
        with pytest.raises(InvalidParameterError, match=f"has no {name}"):
            setattr(bn, name, np.ones(3))
        assert getattr(bn, name) is None
    ln = normdrop.LayerNorm(3, bias=False)
    with pytest.raises(InvalidParameterError, match="has no bias"):
        ln.bias = np.zeros(3)
    bn.momentum = 0.5  # ordinary attributes are unaffected
    assert bn.momentum == 0.5


# ----------------------------------------------------------------------------- Sequential as a list
def test_sequential_append_extend_insert_index():
    a, b, c, d = (normdrop.LayerNorm(3) for _ in range(4))
    model = normdrop.Sequential()
    assert len(model) == 0 and list(model) == []
    assert model.append(a) is model
    assert model.extend([b, c]) is model
    assert model.insert(1, d) is model
    assert list(model) == [a, d, b, c] and len(model) == 4
    assert model[0] is a and model[-1] is c and model[np.int64(1)] is d
    assert list(model.state_dict())[:4] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    part = model[1:3]
    assert isinstance(part, normdrop.Sequential) and list(part) == [d, b]
    model.insert(-1, normdrop.Dropout(0.1, seed=0))
    assert isinstance(model[3], normdrop.Dropout) and model[4] is c
    with pytest.raises(IndexError, match="out of range"):
        model[5]  # noqa: B018
    with pytest.raises(InvalidParameterError):
        model["0"]  # noqa: B018
    with pytest.raises(InvalidParameterError):
        model.insert(1.0, a)


def test_sequential_rejects_callables_with_a_hint_and_stays_unchanged():
    model = normdrop.Sequential(normdrop.LayerNorm(3))
    for call in (
        lambda: normdrop.Sequential(normdrop.LayerNorm(3), np.tanh),
        lambda: model.append(np.tanh),
        lambda: model.extend([normdrop.LayerNorm(3), lambda x: x]),
        lambda: model.insert(0, "not a layer"),
    ):
        with pytest.raises(InvalidParameterError, match="Module instances") as info:
            call()
        assert info.value.parameter_name == "layers"
    assert len(model) == 1
    with pytest.raises(InvalidParameterError, match="Writing your own layer"):
        model.append(np.tanh)
    with pytest.raises(InvalidParameterError, match="at index 2"):
        model.extend([normdrop.LayerNorm(3), max])
    with pytest.raises(InvalidParameterError, match="use append"):
        model.extend(normdrop.LayerNorm(3))
    assert len(model) == 1
    model.extend(normdrop.Sequential(normdrop.LayerNorm(3)))  # a Sequential is an iterable
    assert len(model) == 2


def test_sequential_reset_parameters_skips_layers_without_it():
    layer = Scale(3)
    model = normdrop.Sequential(normdrop.LayerNorm(3), layer)
    model[0].weight = np.full(3, 5.0)
    model.reset_parameters()
    np.testing.assert_array_equal(model[0].weight, np.ones(3))
    np.testing.assert_array_equal(layer.weight, np.full(3, 2.0))


def test_sequential_backward_checks_every_layer_before_running_any(rng):
    """A layer without a saved forward pass (here: inserted after the forward) is found
    before any later layer adds into its gradients."""
    model = normdrop.Sequential(
        normdrop.LayerNorm(3), normdrop.Sequential(normdrop.BatchNorm1d(3), normdrop.LayerNorm(3))
    )
    x = rng.standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(BackwardBeforeForwardError, match="before any forward pass of it"):
        model.backward(x)
    model(x)
    model.insert(1, normdrop.LayerNorm(3))  # never run: no saved pass
    with pytest.raises(BackwardBeforeForwardError, match=r"layer 1 \(LayerNorm\)"):
        model.backward(x)
    assert not any(g.any() for g in model.grads.values())


# ----------------------------------------------------------------- modules inside
def _nested():
    ln, drop = normdrop.LayerNorm(4), normdrop.Dropout(0.2, seed=1)
    inner = normdrop.Sequential(ln, drop)
    return normdrop.Sequential(normdrop.BatchNorm1d(4), inner, ln), ln, drop, inner


def test_named_modules_children_and_apply_follow_pytorch():
    torch = pytest.importorskip("torch")
    model, ln, drop, inner = _nested()
    t_ln, t_drop = torch.nn.LayerNorm(4), torch.nn.Dropout(0.2)
    t_inner = torch.nn.Sequential(t_ln, t_drop)
    t_model = torch.nn.Sequential(torch.nn.BatchNorm1d(4), t_inner, t_ln)

    def kinds(pairs):
        return [(name, type(m).__name__) for name, m in pairs]

    assert kinds(model.named_modules()) == kinds(t_model.named_modules())
    assert kinds(model.named_children()) == kinds(t_model.named_children())
    assert [type(m).__name__ for m in model.modules()] == [
        type(m).__name__ for m in t_model.modules()
    ]
    assert list(model.children()) == [model[0], inner, ln]
    assert next(model.modules()) is model
    order: list[str] = []
    t_order: list[str] = []
    assert model.apply(lambda m: order.append(type(m).__name__)) is model
    t_model.apply(lambda m: t_order.append(type(m).__name__))
    assert order == t_order


def test_apply_reaches_every_layer():
    model, ln, drop, inner = _nested()
    model.train()
    model.apply(lambda m: m.eval() if isinstance(m, normdrop.Dropout) else None)
    assert not drop.training and ln.training and model.training
    seen: list[int] = []
    model.apply(lambda m: seen.append(id(m)))
    # as in PyTorch, a layer at two positions is visited at each (ln: inside and after inner)
    assert sorted(seen) == sorted(id(m) for m in (model, model[0], inner, ln, drop, ln))
