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
    assert "module-api" in (GUIDE / "index.md").read_text().split()


def test_module_api_page_prints_what_its_comments_say(capsys):
    """Every block of the "PyTorch's Module API" page runs; each ``print(...)  # value``
    line prints that value, and the printed model is the one shown below its print."""
    text = (GUIDE / "module-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    expected = []
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("print(") and "  # " in line:
                expected.append(line.split("  # ", 1)[1].strip())
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "module-api.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[: len(expected)] == expected
    shown = [line[2:] for line in blocks[-1].splitlines() if line.startswith("# ")]
    assert printed[len(expected) :] == shown


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


# ----------------------------------------------------------------- dtypes: double, float, half, to
def _layers(backend, dtype="float32"):
    """One layer of each kind with parameters, on ``backend``."""
    return [
        normdrop.BatchNorm1d(3, dtype=dtype, backend=backend.name),
        normdrop.LayerNorm(3, dtype=dtype, backend=backend.name),
        normdrop.DropoutAddLayerNorm(3, p=0.25, seed=4, dtype=dtype, backend=backend.name),
    ]


def _run(layer, x):
    out = layer(x, x) if isinstance(layer, normdrop.DropoutAddLayerNorm) else layer(x)
    return out if isinstance(out, tuple) else (out,)


def _floating_arrays(layer):
    return {
        k: v
        for k, v in [*layer.named_parameters(), *layer.named_buffers(), *layer.grads.items()]
        if np.issubdtype(np.dtype(v.dtype), np.floating)
    }


def test_double_converts_every_floating_array_and_computes_as_a_float64_layer(backend, rng):
    """``.double()`` on a trained float32 layer: its arrays and gradients become float64 with
    the same values, and then it computes bit for bit as a float64 layer with that state."""
    x = backend.asarray(rng.standard_normal((4, 3)))
    for layer, reference in zip(_layers(backend), _layers(backend, "float64"), strict=True):
        _run(layer, x)
        layer.backward(*_run(layer, x)[:1])  # non-zero gradients and running statistics
        before = {k: host(backend, v).copy() for k, v in _floating_arrays(layer).items()}
        count = getattr(layer, "num_batches_tracked", None)
        assert layer.double() is layer
        assert layer.dtype == np.float64
        after = _floating_arrays(layer)
        assert list(after) == list(before)
        for k, v in after.items():
            assert v.dtype == np.float64, k
            np.testing.assert_array_equal(host(backend, v), before[k].astype(np.float64))
        if count is not None:  # integer buffers keep their dtype, as in PyTorch
            assert layer.num_batches_tracked.dtype == np.int64
        with pytest.raises(BackwardBeforeForwardError):  # the saved pass is dropped, as by to()
            layer.backward(x)
        reference.load_state_dict(layer.state_dict())
        if isinstance(layer, normdrop.DropoutAddLayerNorm):
            reference.call_count = layer.call_count
        for mode in ("train", "eval"):  # first in the mode the layer was converted in
            if mode == "eval":
                layer.eval(), reference.eval()
            for got, want in zip(_run(layer, x), _run(reference, x), strict=True):
                np.testing.assert_array_equal(host(backend, got), host(backend, want))
        for (k, got), (_, want) in zip(
            layer.state_dict().items(), reference.state_dict().items(), strict=True
        ):
            assert got.dtype == want.dtype, k
            np.testing.assert_array_equal(got, want, err_msg=k)


def test_float_converts_back_and_the_repr_shows_no_dtype(backend):
    for layer in _layers(backend, "float64"):
        text = repr(layer)
        assert layer.float() is layer
        assert layer.dtype == np.float32
        assert all(v.dtype == np.float32 for v in _floating_arrays(layer).values())
        assert repr(layer) == repr(layer.double()) == text  # PyTorch's repr has no dtype either


def test_converting_to_the_current_dtype_keeps_arrays_and_the_saved_pass(rng):
    bn = normdrop.BatchNorm1d(3, dtype="float64")
    x = rng.standard_normal((4, 3))
    held = [*bn.named_parameters(), *bn.named_buffers(), *bn.grads.items()]
    bn(x)
    assert bn.double() is bn and bn.to(np.float64) is bn
    after = [*bn.named_parameters(), *bn.named_buffers(), *bn.grads.items()]
    assert [k for k, _ in after] == [k for k, _ in held]
    assert all(v is old for (_, v), (_, old) in zip(after, held, strict=True))
    bn.backward(rng.standard_normal((4, 3)))  # the saved forward pass is kept
    assert bn.grads["bias"].any()


def test_held_gradient_references_are_replaced_by_a_conversion():
    """As with to(device): a conversion replaces the gradient arrays (documented)."""
    bn = normdrop.BatchNorm1d(3)
    held = bn.grads["weight"]
    bn.double()
    assert bn.grads["weight"] is not held and bn.grads["weight"].dtype == np.float64


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.to("float64"),
        lambda m: m.to(np.float64),
        lambda m: m.to(np.dtype("float64")),
        lambda m: m.to(dtype="float64"),
        lambda m: m.to("cpu", "float64"),
        lambda m: m.to(device="cpu", dtype=np.float64),
        lambda m: m.to("cpu", dtype="float64", non_blocking=True),
        lambda m: m.double(),
    ],
)
def test_to_takes_a_dtype_as_pytorch_does(call):
    """Every form converts a whole model, as ``torch.nn.Module.to(torch.float64)``; the
    dtype of each array is PyTorch's."""
    torch = pytest.importorskip("torch")
    model = normdrop.Sequential(
        normdrop.BatchNorm1d(3), normdrop.Sequential(normdrop.LayerNorm(3)), normdrop.Dropout()
    )
    t_model = torch.nn.Sequential(
        torch.nn.BatchNorm1d(3), torch.nn.Sequential(torch.nn.LayerNorm(3)), torch.nn.Dropout()
    ).to(torch.float64)
    assert call(model) is model
    assert model.device == "cpu"
    assert {k: str(v.dtype) for k, v in model.state_dict().items()} == {
        k: str(v.dtype).removeprefix("torch.") for k, v in t_model.state_dict().items()
    }
    assert model[0].dtype == model[1][0].dtype == np.float64


def test_to_without_arguments_changes_nothing():
    bn = normdrop.BatchNorm1d(3)
    weight = bn.weight
    assert bn.to() is bn and bn.weight is weight and bn.device == "cpu"


@pytest.mark.parametrize(
    ("call", "parameter", "match"),
    [
        (lambda m: m.half(), "dtype", "got float16; half-precision parameters are not"),
        (lambda m: m.to("float16"), "dtype", r"got 'float16'; .*layer\.float\(\)"),
        (lambda m: m.to(np.float16), "dtype", "got float16"),
        (lambda m: m.to(dtype="bfloat16"), "dtype", "got 'bfloat16'; half-precision"),
        (lambda m: m.to("int64"), "dtype", "'float32' or 'float64'"),
        (lambda m: m.to(dtype="gpu"), "dtype", "got 'gpu'"),
        (lambda m: m.to("gpu"), "device", "got 'gpu'"),
        (lambda m: m.to("cpu", "float16"), "dtype", "float16"),
        (lambda m: m.to("cuda", np.int32), "dtype", "int32"),
        (lambda m: m.to("cpu", non_blocking=1), "non_blocking", "got 1"),
    ],
)
def test_bad_conversions_are_clear_errors_and_change_nothing(rng, call, parameter, match):
    model = normdrop.Sequential(normdrop.BatchNorm1d(3), normdrop.LayerNorm(3))
    x = rng.standard_normal((4, 3)).astype(np.float32)
    model(x)
    arrays = {k: v for _, m in model.named_modules() for k, v in m.__dict__.items()}
    with pytest.raises(InvalidParameterError, match=match) as info:
        call(model)
    assert info.value.parameter_name == parameter
    assert {k: v for _, m in model.named_modules() for k, v in m.__dict__.items()} == arrays
    model.backward(np.ones_like(x))  # the saved pass survives


@pytest.mark.parametrize("dtype", ["gpu", 3.5, object()])
def test_a_non_dtype_is_a_type_error_as_in_the_constructors(dtype):
    bn = normdrop.BatchNorm1d(3)
    with pytest.raises(TypeError, match="dtype must be"):
        bn.to(dtype=dtype)
    with pytest.raises(TypeError):
        normdrop.BatchNorm1d(3, dtype=dtype)
    with pytest.raises(InvalidParameterError) as info:
        bn.to(dtype="int64")  # a dtype, but not one a layer takes: a value error
    assert not isinstance(info.value, TypeError)


def test_cpu_and_cuda_are_to_shorthands(rng):
    bn = normdrop.BatchNorm1d(3)
    weight = bn.weight
    assert bn.cpu() is bn and bn.weight is weight
    try:
        normdrop.get_backend("cuda")
    except normdrop.BackendError as exc:
        pytest.skip(f"cuda backend unavailable: {exc}")
    assert bn.cuda() is bn and bn.device == "cuda"
    assert bn.cpu() is bn and bn.device == "cpu" and type(bn.weight) is np.ndarray


def test_to_moves_and_converts_in_one_call():
    try:
        cuda = normdrop.get_backend("cuda")
    except normdrop.BackendError as exc:
        pytest.skip(f"cuda backend unavailable: {exc}")
    ln = normdrop.LayerNorm(3)
    assert ln.to("cuda", "float64") is ln
    assert ln.device == "cuda" and ln.dtype == np.float64
    assert cuda.to_numpy(ln.weight).dtype == np.float64
    assert cuda.to_numpy(ln.grads["bias"]).dtype == np.float64
    ln.to("cpu")
    assert ln.weight.dtype == np.float64 and isinstance(ln.weight, np.ndarray)


# ----------------------------------------------------------------- PyTorch's keyword arguments
def test_state_dict_prefix_and_destination_follow_pytorch():
    torch = pytest.importorskip("torch")
    model = normdrop.Sequential(normdrop.BatchNorm1d(3), normdrop.LayerNorm(3))
    t_model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.LayerNorm(3))
    for prefix in ("", "encoder.", "p"):
        assert list(model.state_dict(prefix=prefix)) == list(t_model.state_dict(prefix=prefix))
        assert list(model[0].state_dict(prefix=prefix)) == list(
            t_model[0].state_dict(prefix=prefix)
        )
    destination = {"kept": 1}
    result = model.state_dict(destination=destination, prefix="m.", keep_vars=True)
    assert result is destination
    t_destination: dict = {"kept": 1}
    t_model.state_dict(destination=t_destination, prefix="m.", keep_vars=True)
    assert list(destination) == list(t_destination)
    np.testing.assert_array_equal(destination["m.0.running_var"], np.ones(3))
    destination["m.0.running_var"][...] = 5  # still copies, whatever keep_vars says
    assert (model[0].running_var == 1).all()
    drop = normdrop.Dropout(seed=1)
    assert list(drop.state_dict(prefix="d.", extra_state=True)) == ["d._extra_state"]


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"destination": [("a", 1)]}, "destination"),
        ({"destination": normdrop.BatchNorm1d(3).state_dict().items()}, "destination"),
        ({"prefix": 0}, "prefix"),
        ({"keep_vars": "yes"}, "keep_vars"),
    ],
)
def test_bad_state_dict_arguments_are_clear_errors_and_write_nothing(kwargs, parameter):
    destination: dict = {}
    with pytest.raises(InvalidParameterError) as info:
        normdrop.BatchNorm1d(3).state_dict(**{"destination": destination, **kwargs})
    assert info.value.parameter_name == parameter
    assert destination == {}


def test_zero_grad_takes_set_to_none_and_zeroes_in_place(rng):
    bn = normdrop.BatchNorm1d(3)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    for set_to_none in (True, False):
        bn(x)
        bn.backward(x)
        held = dict(bn.grads)
        assert all(g.any() for g in held.values())
        bn.zero_grad(set_to_none=set_to_none)
        for k, g in bn.grads.items():  # never None: the arrays an optimiser holds stay current
            assert g is held[k] and not g.any()
    bn(x)
    bn.backward(x)
    before = {k: g.copy() for k, g in bn.grads.items()}
    with pytest.raises(InvalidParameterError, match="set_to_none") as info:
        bn.zero_grad(set_to_none=None)
    assert info.value.parameter_name == "set_to_none"
    for k, g in bn.grads.items():
        np.testing.assert_array_equal(g, before[k])


def test_named_members_take_pytorchs_keywords():
    torch = pytest.importorskip("torch")
    model, _, _, _ = _nested()
    t_ln = torch.nn.LayerNorm(4)
    t_model = torch.nn.Sequential(
        torch.nn.BatchNorm1d(4), torch.nn.Sequential(t_ln, torch.nn.Dropout(0.2)), t_ln
    )

    def names(pairs):
        return [name for name, _ in pairs]

    for kwargs in (
        {},
        {"prefix": "net"},
        {"recurse": False},
        {"remove_duplicate": False},
        {"prefix": "a.b", "recurse": True, "remove_duplicate": False},
    ):
        assert names(model.named_parameters(**kwargs)) == names(
            t_model.named_parameters(**kwargs)
        ), kwargs
        assert names(model.named_buffers(**kwargs)) == names(t_model.named_buffers(**kwargs))
    assert names(model[0].named_parameters(recurse=False)) == ["weight", "bias"]
    assert len(list(model.parameters(recurse=False))) == 0
    assert len(list(model[0].buffers(recurse=False))) == 3
    for kwargs in ({}, {"prefix": "net"}, {"remove_duplicate": False}):
        assert names(model.named_modules(**kwargs)) == names(t_model.named_modules(**kwargs))
    memo = {model[0]}
    t_memo = {t_model[0]}
    assert names(model.named_modules(memo)) == names(t_model.named_modules(t_memo))
    assert model in memo and len(memo) == len(t_memo)


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda m: m.named_parameters(prefix=1), "prefix"),
        (lambda m: m.named_buffers(recurse="no"), "recurse"),
        (lambda m: m.parameters(recurse=None), "recurse"),
        (lambda m: m.named_modules(remove_duplicate=0), "remove_duplicate"),
        (lambda m: m.named_modules(memo=[]), "memo"),
    ],
)
def test_bad_keywords_of_named_members_raise_at_the_call(call, parameter):
    with pytest.raises(InvalidParameterError) as info:
        call(normdrop.BatchNorm1d(3))  # raised before iterating
    assert info.value.parameter_name == parameter


# ----------------------------------------------------------------- get_submodule and friends
def test_get_submodule_parameter_buffer_follow_pytorch():
    torch = pytest.importorskip("torch")
    model, ln, drop, inner = _nested()
    assert model.get_submodule("") is model
    assert model.get_submodule("1") is inner and model.get_submodule("1.1") is drop
    assert model.get_parameter("1.0.weight") is ln.weight
    assert model.get_parameter("0.bias") is model[0].bias
    assert model.get_buffer("0.running_var") is model[0].running_var
    no_stats = normdrop.Sequential(normdrop.BatchNorm1d(4, track_running_stats=False))
    assert no_stats.get_buffer("0.running_mean") is None  # registered as None, as in PyTorch
    t_ln = torch.nn.LayerNorm(4)
    t_model = torch.nn.Sequential(
        torch.nn.BatchNorm1d(4), torch.nn.Sequential(t_ln, torch.nn.Dropout(0.2)), t_ln
    )
    t_no_stats = torch.nn.Sequential(torch.nn.BatchNorm1d(4, track_running_stats=False))
    assert t_no_stats.get_buffer("0.running_mean") is None
    no_bias = normdrop.Sequential(normdrop.LayerNorm(4, bias=False))
    t_no_bias = torch.nn.Sequential(torch.nn.LayerNorm(4, bias=False))
    for method, target, ours, theirs in [
        ("get_submodule", "5", model, t_model),
        ("get_submodule", "1.2", model, t_model),
        ("get_submodule", "0.weight", model, t_model),
        ("get_submodule", "0.weight.x", model, t_model),
        ("get_parameter", "1.0.nope", model, t_model),
        ("get_parameter", "weight", model, t_model),
        ("get_parameter", "", model, t_model),
        ("get_parameter", "0.running_mean", model, t_model),
        ("get_parameter", "7.weight", model, t_model),
        ("get_parameter", "0.bias", no_bias, t_no_bias),
        ("get_buffer", "0.weight", model, t_model),
        ("get_buffer", "0.nope", model, t_model),
        ("get_buffer", "1.1.p", model, t_model),
    ]:
        with pytest.raises(AttributeError) as info:
            getattr(ours, method)(target)
        with pytest.raises(AttributeError) as t_info:
            getattr(theirs, method)(target)
        expected = str(t_info.value).replace("an nn.Module", "a Module")
        expected = expected.replace("an nn.Parameter", "a parameter")
        assert str(info.value) == expected, (method, target)
    with pytest.raises(InvalidParameterError) as bad:
        model.get_submodule(0)
    assert bad.value.parameter_name == "target"


# ----------------------------------------------------------------- modules as attributes
class Block(normdrop.Module):
    """A PyTorch-style composite layer: children assigned as attributes."""

    def __init__(self):
        super().__init__()
        self.norm = normdrop.LayerNorm(4, dtype="float64")
        self.drop = normdrop.Dropout(0.5, seed=3)
        self.register_parameter("scale", np.full(4, 2.0))

    def forward(self, x):
        self.save_for_backward()
        return self.drop(self.norm(x)) * self.scale

    def compute_backward(self, grad_output):
        return self.norm.backward(self.drop.backward(grad_output * self.scale)), {}


def test_modules_assigned_as_attributes_are_children_as_in_pytorch(rng):
    torch = pytest.importorskip("torch")

    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.LayerNorm(4)
            self.drop = torch.nn.Dropout(0.5)
            self.scale = torch.nn.Parameter(torch.full((4,), 2.0))

    block, t_block = Block(), TorchBlock()
    model = normdrop.Sequential(block, normdrop.LayerNorm(4))
    t_model = torch.nn.Sequential(t_block, torch.nn.LayerNorm(4))
    assert list(model.state_dict()) == list(t_model.state_dict())
    assert [n for n, _ in model.named_modules()] == [n for n, _ in t_model.named_modules()]
    assert list(model.grads) == [n for n, _ in t_model.named_parameters()]
    assert model.get_submodule("0.norm") is block.norm
    assert repr(block).replace("Block", "TorchBlock").replace("p=0.5", "p=0.5, inplace=False") == (
        repr(t_block)
    )
    model.eval()
    assert not block.norm.training and not block.drop.training
    model.train()
    x = rng.standard_normal((3, 4))
    y = model(x)
    model.backward(np.ones_like(y))
    assert model.grads["0.norm.weight"].any()
    model.zero_grad()
    assert not model.grads["0.norm.weight"].any()
    model.float()
    assert block.norm.weight.dtype == np.float32 and block.scale.dtype == np.float32
    twin = pickle.loads(pickle.dumps(model))
    assert twin[0].norm is twin[0].get_submodule("norm")
    np.testing.assert_array_equal(twin[0].norm.weight, block.norm.weight)


def test_add_module_register_module_and_none_children():
    block = Block()
    extra = normdrop.LayerNorm(4)
    block.add_module("extra", extra)
    assert block.extra is extra and block.get_submodule("extra") is extra
    block.register_module("other", normdrop.BatchNorm1d(4))
    assert [n for n, _ in block.named_children()] == ["norm", "drop", "extra", "other"]
    block.extra = None  # an empty slot, as in PyTorch
    assert block.extra is None
    assert "extra.weight" not in block.state_dict()
    assert "(extra): None" in repr(block)
    with pytest.raises(AttributeError, match="`extra` is not a Module"):
        block.get_submodule("extra")
    block.train(False)  # skips the empty slot
    block.extra = extra
    assert "extra.weight" in block.state_dict()


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda b: b.add_module("x", np.tanh), "module"),
        (lambda b: b.add_module("a.b", normdrop.LayerNorm(4)), "name"),
        (lambda b: b.add_module("", normdrop.LayerNorm(4)), "name"),
        (lambda b: b.add_module(3, normdrop.LayerNorm(4)), "name"),
        (lambda b: b.add_module("scale", normdrop.LayerNorm(4)), "name"),
        (lambda b: b.add_module("training", normdrop.LayerNorm(4)), "name"),
        (lambda b: b.add_module("forward", normdrop.LayerNorm(4)), "name"),
        (lambda b: setattr(b, "norm", np.ones(4)), "norm"),
        (lambda b: setattr(b, "scale", normdrop.LayerNorm(4)), "scale"),
    ],
)
def test_bad_children_are_refused_and_change_nothing(call, parameter):
    block = Block()
    children = dict(block.named_children())
    keys = list(block.state_dict())
    with pytest.raises(InvalidParameterError) as info:
        call(block)
    assert info.value.parameter_name == parameter
    assert dict(block.named_children()) == children and list(block.state_dict()) == keys


def test_sequential_names_layers_by_position_only():
    model = normdrop.Sequential(normdrop.LayerNorm(3))
    for call in (
        lambda: model.add_module("extra", normdrop.LayerNorm(3)),
        lambda: setattr(model, "extra", normdrop.LayerNorm(3)),
    ):
        with pytest.raises(InvalidParameterError, match="use append"):
            call()
    assert len(model) == 1 and list(model.state_dict()) == ["0.weight", "0.bias"]


def test_assigning_a_module_before_init_is_refused_as_in_pytorch():
    class Early(normdrop.Module):
        def __init__(self):
            self.norm = normdrop.LayerNorm(3)
            super().__init__()

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()
