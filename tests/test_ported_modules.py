"""PyTorch's generic module tests (``test/test_modules.py``), ported to normdrop's layers.

``test_modules.py`` runs each generic test over the inputs of every ModuleInfo entry of
``torch/testing/_internal/common_modules.py``. This file does the same for the entries of
``torch.nn.BatchNorm1d`` (``module_inputs_torch_nn_BatchNorm1d``,
``module_error_inputs_torch_nn_BatchNorm1d_2d_3d``) and ``torch.nn.LayerNorm``
(``module_inputs_torch_nn_LayerNorm``). ``common_modules.py`` has no ModuleInfo for
``torch.nn.Dropout`` (PyTorch 2.13 and upstream main): its inputs here are those of the
OpInfo ``nn.functional.dropout`` (``sample_inputs_dropout`` in
``common_methods_invocations.py``), as module inputs.

PyTorch is the oracle: each normdrop layer is compared with the torch module holding the
same state (random parameters and running statistics loaded from the torch module). A
training Dropout is compared with PyTorch's dropout formula (``input * mask.div_(1 - p)``,
``torch.nn.functional``'s ``_dropout_impl``) applied in torch to normdrop's mask of that
call (``normdrop.functional.dropout_mask``), since normdrop's masks come from Philox, not
from torch's generator (docs/differences.md). Deliberate departures (eager validation,
``p = 1``, no ``bias=`` on BatchNorm1d, repr) are checked as documented there.

The cases of ``tests/test_ported_torch.py`` (test_nn.py, test_dropout.py, OpInfo samples and
the BatchNorm1d ``eps`` error inputs) are not repeated.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from conftest import host, param_ok, skip_on_slow_backend, tol
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F

torch = pytest.importorskip("torch")

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
#: The seed of every normdrop Dropout here (PyTorch's dropout has none: the mask is normdrop's).
SEED = 2024


@dataclass(frozen=True)
class ModuleInput:
    """One ModuleInput of common_modules.py: the constructor's arguments and the shape of
    the forward input (made by ``make_tensor``: uniform in [-9, 9])."""

    name: str
    desc: str
    args: tuple[Any, ...]
    shape: tuple[int, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}-{self.desc}"


# module_inputs_torch_nn_BatchNorm1d, in order. 'affine_not_bias' (BatchNorm1d(10,
# bias=False)) is test_errors' case: normdrop's BatchNorm1d has no bias= (docs/differences.md).
BN_INPUTS = [
    ModuleInput("BatchNorm1d", "affine", (10,), (4, 10)),
    ModuleInput("BatchNorm1d", "3d_input", (5,), (4, 5, 3)),
    ModuleInput("BatchNorm1d", "affine_simple_average", (10, 1e-3, None), (4, 10)),
    ModuleInput("BatchNorm1d", "not_affine", (10, 1e-3, 0.3, False), (4, 10)),
    ModuleInput("BatchNorm1d", "not_tracking_stats", (10, 1e-3, 0.3, True, False), (4, 10)),
    ModuleInput("BatchNorm1d", "3d_input_not_affine", (5, 1e-3, 0.3, False), (4, 5, 3)),
    ModuleInput("BatchNorm1d", "zero_batch", (5, 1e-3, 0.3, False), (0, 5, 9)),
]
# module_inputs_torch_nn_LayerNorm, in order.
LN_INPUTS = [
    ModuleInput("LayerNorm", "1d_elementwise_affine", ([5], 1e-3), (4, 5, 5)),
    ModuleInput("LayerNorm", "1d_elementwise_affine_large_batch", ([5], 1e-3), (128, 5, 5)),
    ModuleInput("LayerNorm", "1d_no_elementwise_affine", ([5], 1e-3, False), (4, 5, 5)),
    ModuleInput("LayerNorm", "3d_elementwise_affine", ([2, 2, 5], 1e-3), (4, 2, 2, 5)),
    ModuleInput("LayerNorm", "3d_no_elementwise_affine", ([2, 2, 5], 1e-3, False), (4, 2, 2, 5)),
    ModuleInput("LayerNorm", "1d_empty_elementwise_affine", ([5], 1e-3), (0, 5)),
    ModuleInput(
        "LayerNorm",
        "3d_elementwise_affine_no_bias",
        ([2, 2, 5], 1e-3),
        (4, 2, 2, 5),
        {"elementwise_affine": True, "bias": False},
    ),
]
# sample_inputs_dropout: shapes (S, S), (S,), () with S = 5, p in (0, 0.5, 1), and one call
# with the default p on the last shape, (). p = 1 is test_errors' case (normdrop rejects it,
# docs/differences.md); p = 0 on (5,) and (), and p = 0.5 on (), repeat cases kept here.
DROPOUT_INPUTS = [
    ModuleInput("Dropout", "p0.0_5x5", (0.0,), (5, 5)),
    ModuleInput("Dropout", "p0.5_5x5", (0.5,), (5, 5)),
    ModuleInput("Dropout", "p0.5_5", (0.5,), (5,)),
    ModuleInput("Dropout", "default_p_scalar", (), ()),
]
MODULE_INPUTS = BN_INPUTS + LN_INPUTS + DROPOUT_INPUTS
#: One input per module that the CUDA simulator runs (each kernel thread is a Python thread).
SLOW_BACKEND_INPUTS = {"3d_input", "3d_elementwise_affine", "p0.5_5x5"}


def _inputs(*tables: list[ModuleInput]) -> Any:
    cases = [case for table in tables for case in table]
    return pytest.mark.parametrize("mi", cases, ids=[case.id for case in cases])


def _inputs_and_modes(*tables: list[ModuleInput]) -> Any:
    """Each input in training and in evaluation; LayerNorm in training only, as upstream's
    ``modules`` decorator runs one mode where ``train_and_eval_differ`` is False."""
    cases = [
        pytest.param(case, training, id=f"{case.id}-{'train' if training else 'eval'}_mode")
        for table in tables
        for case in table
        for training in ((True,) if case.name == "LayerNorm" else (True, False))
    ]
    return pytest.mark.parametrize(("mi", "training"), cases)


DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64])


def _fit_backend(backend: Any, mi: ModuleInput) -> None:
    """Run only :data:`SLOW_BACKEND_INPUTS` on the slow backends."""
    if mi.desc not in SLOW_BACKEND_INPUTS:
        skip_on_slow_backend(backend, "one module input per module under the CUDA simulator")


def _ours(mi: ModuleInput, dtype: Any, backend: Any) -> Any:
    """The normdrop layer of ``mi`` (Dropout: seeded, and without dtype)."""
    cls = getattr(normdrop, mi.name)
    if mi.name == "Dropout":
        return cls(*mi.args, seed=SEED, backend=backend.name)
    return cls(*mi.args, **mi.kwargs, dtype=dtype, backend=backend.name)


def _theirs(mi: ModuleInput, dtype: Any) -> Any:
    """The torch module of ``mi``."""
    cls = getattr(torch.nn, mi.name)
    if mi.name == "Dropout":
        return cls(*mi.args)
    return cls(*mi.args, **mi.kwargs, dtype=TORCH_DTYPE[dtype])


def _randomize(theirs: Any, rng: np.random.Generator) -> None:
    """Random parameters and running statistics (a positive variance, 3 batches tracked:
    the cumulative average of momentum=None depends on the count)."""
    with torch.no_grad():
        for name, value in theirs.state_dict().items():
            if name == "num_batches_tracked":
                value.fill_(3)
            elif name == "running_var":
                value.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, tuple(value.shape))))
            else:
                value.copy_(torch.from_numpy(rng.standard_normal(tuple(value.shape))))


def _pair(mi: ModuleInput, dtype: Any, backend: Any, rng: np.random.Generator) -> Any:
    """A normdrop layer and a torch module of ``mi`` with the same random state."""
    theirs = _theirs(mi, dtype)
    _randomize(theirs, rng)
    ours = _ours(mi, dtype, backend)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _data(mi: ModuleInput, dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """``make_tensor``'s values: uniform in [-9, 9]."""
    return np.asarray(rng.uniform(-9, 9, mi.shape), dtype=dtype)


def _torch_forward(theirs: Any, tx: Any, call: int) -> Any:
    """The torch module's output; a training Dropout applies normdrop's mask of ``call``
    with PyTorch's formula."""
    if not (isinstance(theirs, torch.nn.Dropout) and theirs.training and theirs.p > 0):
        return theirs(tx)
    mask = F.dropout_mask(tuple(tx.shape), theirs.p, seed=SEED, call=call)
    return tx * torch.from_numpy(np.asarray(mask)).to(tx.dtype).div_(1 - theirs.p)


def _torch_backward_case(
    mi: ModuleInput, backend: Any, rng: np.random.Generator, training: bool
) -> Any:
    """A float64 layer pair in ``training`` mode, data ``x`` and gradient ``g``, and torch's
    input ``tx`` after its backward of ``g`` (its gradients are the oracle)."""
    ours, theirs = _pair(mi, np.float64, backend, rng)
    ours.train(training)
    theirs.train(training)
    x, g = _data(mi, np.float64, rng), _data(mi, np.float64, rng)
    tx = _t(x).requires_grad_(True)
    _torch_forward(theirs, tx, 0).backward(_t(g))
    return ours, theirs, x, g, tx


def _state_of(layer: Any, backend: Any) -> dict[str, np.ndarray]:
    """The state dict on the host (the extra state, Dropout's seed and call, included)."""
    return {k: np.array(host(backend, v)) for k, v in layer.state_dict(extra_state=True).items()}


def _assert_state_like_torch(ours: Any, theirs: Any, dtype: Any) -> None:
    """Same keys in the same order, and the same values."""
    mine, want = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(want)
    for key, value in want.items():
        np.testing.assert_allclose(mine[key], _np(value), **tol(dtype, "torch"), err_msg=key)


@_inputs_and_modes(MODULE_INPUTS)
@DTYPES
def test_forward(backend, rng, mi, dtype, training):
    """test_modules.py: test_forward. Each module input through the layer with the torch
    module's state gives the torch module's output (shape, dtype, values) and, in training,
    its running statistics; then, as upstream, ``float()``/``double()`` make every floating
    parameter and buffer that dtype and a forward pass still works."""
    _fit_backend(backend, mi)
    ours, theirs = _pair(mi, dtype, backend, rng)
    ours.train(training)
    theirs.train(training)
    x = _data(mi, dtype, rng)
    y = backend.to_numpy(ours(backend.asarray(x)))
    want = _np(_torch_forward(theirs, _t(x), 0))
    assert y.shape == mi.shape and y.dtype == dtype
    np.testing.assert_allclose(y, want, **tol(dtype, "torch"))
    _assert_state_like_torch(ours, theirs, dtype)

    convert, other = ("double", np.float64) if dtype == np.float32 else ("float", np.float32)
    assert getattr(ours, convert)() is ours
    assert backend.to_numpy(ours(backend.asarray(x))).dtype == dtype
    for name, value in [*ours.named_parameters(), *ours.named_buffers()]:
        if np.dtype(value.dtype).kind == "f":
            assert value.dtype == other, name


@_inputs_and_modes(MODULE_INPUTS)
def test_backward(backend, rng, mi, training):
    """test_modules.py: test_grad (gradcheck of the input and of every parameter, float64
    only as upstream), with torch autograd as the oracle: ``backward(grad)`` gives the
    input gradient and ``grads`` the parameter gradients of the torch module with the same
    state; a second backward adds the same parameter gradients again, as autograd
    accumulates."""
    _fit_backend(backend, mi)
    dtype = np.float64
    ours, theirs, x, g, tx = _torch_backward_case(mi, backend, rng, training)
    ours(backend.asarray(x))
    dx = backend.to_numpy(ours.backward(backend.asarray(g)))
    assert dx.shape == mi.shape and dx.dtype == dtype
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol(dtype, "torch", 10))
    tparams = dict(theirs.named_parameters())
    assert list(ours.grads) == list(tparams)
    for name, param in tparams.items():
        np.testing.assert_allclose(
            host(backend, ours.grads[name]), _np(param.grad), **tol(dtype, "torch", 100)
        )
    ours.backward(backend.asarray(g))
    for name, param in tparams.items():
        np.testing.assert_allclose(
            host(backend, ours.grads[name]), 2 * _np(param.grad), **tol(dtype, "torch", 100)
        )


@_inputs(MODULE_INPUTS)
def test_repr(mi):
    """test_modules.py: test_repr. repr and str of every module input's layer are torch's,
    less the arguments normdrop's layer does not have (BatchNorm1d's ``bias=``,
    Dropout's ``inplace=False``; docs/differences.md)."""
    ours, theirs = _ours(mi, np.float32, normdrop.get_backend("numpy")), _theirs(mi, np.float32)
    want = re.sub(r"bias=\w+, (track)", r"\1", repr(theirs)).replace(", inplace=False", "")
    assert repr(ours) == str(ours) == want


@_inputs_and_modes(MODULE_INPUTS)
def test_pickle(backend, rng, mi, training):
    """test_modules.py: test_pickle. After a forward pass, the unpickled copy keeps the
    mode and the state, and its next forward gives what the torch module (pickled too)
    gives next: a Dropout copy resumes at the next call's mask, where PyTorch's test
    freezes torch's generator."""
    _fit_backend(backend, mi)
    dtype = np.float64
    ours, theirs = _pair(mi, dtype, backend, rng)
    ours.train(training)
    theirs.train(training)
    x = _data(mi, dtype, rng)
    ours(backend.asarray(x))
    _torch_forward(theirs, _t(x), 0)
    clone, tclone = pickle.loads(pickle.dumps(ours)), pickle.loads(pickle.dumps(theirs))
    assert clone.training is training and repr(clone) == repr(ours)
    for (k1, v1), (k2, v2) in zip(
        _state_of(clone, backend).items(), _state_of(ours, backend).items(), strict=True
    ):
        assert k1 == k2
        np.testing.assert_array_equal(v1, v2, err_msg=k1)
    y = backend.to_numpy(clone(backend.asarray(x)))
    np.testing.assert_allclose(y, _np(_torch_forward(tclone, _t(x), 1)), **tol(dtype, "torch"))
    _assert_state_like_torch(clone, tclone, dtype)


@_inputs_and_modes(MODULE_INPUTS)
def test_non_contiguous_tensors(backend, rng, mi, training):
    """test_modules.py: test_non_contiguous_tensors. The input and the output gradient made
    non-contiguous as upstream (``repeat_interleave(t, 2, dim=-1)[..., ::2]``), in all four
    combinations with the contiguous ones, give torch's output, input gradient and
    parameter gradients (Dropout: the same call's mask each time)."""
    _fit_backend(backend, mi)
    skip_on_slow_backend(backend, "four forward and backward passes")
    if not mi.shape:
        pytest.skip("a 0-d input cannot be made non-contiguous (as upstream)")
    dtype = np.float64
    ours, theirs, x, g, tx = _torch_backward_case(mi, backend, rng, training)
    want = _np(_torch_forward(theirs, _t(x), 0))

    def strided(a: np.ndarray) -> np.ndarray:
        view = np.repeat(a, 2, axis=-1)[..., ::2]
        assert a.size == 0 or not view.flags.c_contiguous
        return view

    for xin, gin in [(x, g), (x, strided(g)), (strided(x), g), (strided(x), strided(g))]:
        ours.zero_grad()
        if mi.name == "Dropout":
            ours.call_count = 0
        y = backend.to_numpy(ours(backend.asarray(xin)))
        dx = backend.to_numpy(ours.backward(backend.asarray(gin)))
        np.testing.assert_allclose(y, want, **tol(dtype, "torch"))
        np.testing.assert_allclose(dx, tx.grad.numpy(), **tol(dtype, "torch", 10))
        for name, param in theirs.named_parameters():
            np.testing.assert_allclose(
                host(backend, ours.grads[name]), _np(param.grad), **tol(dtype, "torch", 100)
            )


@_inputs(MODULE_INPUTS)
def test_save_load(backend, rng, mi, tmp_path):
    """State dict round trips between the libraries (float32, both libraries' default),
    after two training steps on each side: torch's state loads strictly into a fresh
    normdrop layer and normdrop's into a fresh torch module, and each gives the other's
    forward output, in evaluation and in training; ``save``/``load`` (.npz) keep the same
    state."""
    _fit_backend(backend, mi)
    skip_on_slow_backend(backend, "several forward passes on each side")
    dtype = np.float32
    theirs, ours = _theirs(mi, dtype), _ours(mi, dtype, backend)
    for _ in range(2):
        theirs(_t(_data(mi, dtype, rng)))
        ours(backend.asarray(_data(mi, dtype, rng)))

    from_torch = _ours(mi, dtype, backend)
    result = from_torch.load_state_dict(theirs.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    to_torch = _theirs(mi, dtype)
    to_torch.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    ours.save(tmp_path / "layer")
    from_file = _ours(mi, dtype, backend)
    from_file.load(tmp_path / "layer")
    for key, value in _state_of(ours, backend).items():
        np.testing.assert_array_equal(_state_of(from_file, backend)[key], value, err_msg=key)

    x = _data(mi, dtype, rng)
    for training in (False, True):
        for layer, module in [(from_torch, theirs), (ours, to_torch), (from_file, to_torch)]:
            layer.train(training)
            module.train(training)
            if mi.name == "Dropout":
                layer.call_count = 0
            y = backend.to_numpy(layer(backend.asarray(x)))
            want = _np(_torch_forward(module, _t(x), 0))
            np.testing.assert_allclose(y, want, **tol(dtype, "torch"))


@_inputs(MODULE_INPUTS)
def test_factory_kwargs(backend, mi):
    """test_modules.py: test_factory_kwargs. ``dtype=`` (and ``backend=``, normdrop's
    ``device=``) apply to every parameter and buffer the layer creates: torch's names,
    shapes and dtypes (``num_batches_tracked`` stays int64), on the backend's device;
    the gradients have the parameters' dtype. A Dropout creates none, as torch's."""
    for dtype in (np.float32, np.float64):
        layer, tlayer = _ours(mi, dtype, backend), _theirs(mi, dtype)
        ours = [
            (k, v.shape, str(v.dtype))
            for k, v in [*layer.named_parameters(), *layer.named_buffers()]
        ]
        theirs = [
            (k, tuple(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in [*tlayer.named_parameters(), *tlayer.named_buffers()]
        ]
        assert ours == theirs
        for name, value in [*layer.named_parameters(), *layer.named_buffers()]:
            assert param_ok(backend, value), name
        assert all(g.dtype == dtype for g in layer.grads.values())


# Error inputs. module_error_inputs_torch_nn_BatchNorm1d_2d_3d (eps <= 0) is ported in
# test_ported_torch.py; the cases below are the module inputs that PyTorch accepts and
# normdrop refuses on purpose, and each module input's forward input made wrong.
@pytest.mark.parametrize(
    ("make", "torch_make", "error", "match"),
    [
        (  # module_inputs_torch_nn_BatchNorm1d 'affine_not_bias': no bias= in normdrop
            lambda: normdrop.BatchNorm1d(10, bias=False),
            lambda: torch.nn.BatchNorm1d(10, bias=False),
            TypeError,
            "unexpected keyword argument 'bias'",
        ),
        (  # sample_inputs_dropout's p = 1.0: PyTorch zeroes everything
            lambda: normdrop.Dropout(1.0, seed=0),
            lambda: torch.nn.Dropout(1.0),
            normdrop.InvalidParameterError,
            r"Dropout probability must be in \[0, 1\), got 1.0",
        ),
    ],
    ids=["BatchNorm1d-affine_not_bias", "Dropout-p1"],
)
def test_errors_construction(make, torch_make, error, match):
    """test_modules.py: test_errors (CONSTRUCTION_ERROR). Documented departures
    (docs/differences.md): normdrop raises where PyTorch constructs a module."""
    with pytest.raises(error, match=match):
        make()
    torch_make()


BadInput = tuple[tuple[int, ...], Any, type, str, "type | None"]


def _bad_inputs(mi: ModuleInput) -> list[BadInput]:
    """(shape, dtype, normdrop error, message, PyTorch error or None where PyTorch accepts
    it) for ``mi``'s forward input made wrong: one more channel / trailing size, a rank
    BatchNorm1d refuses, integers."""
    shape = mi.shape
    cases: list[BadInput] = []
    if mi.name == "BatchNorm1d":
        wider = (shape[0], shape[1] + 1, *shape[2:])
        # PyTorch 2.13 checks only the rank of an empty batch ('zero_batch'): with a wrong
        # channel count or integers it returns an empty output (and counts the batch);
        # normdrop raises as SPEC.md says.
        empty = shape[0] == 0
        cases += [
            (
                wider,
                np.float64,
                normdrop.ShapeError,
                rf"\(N, {shape[1]}",
                None if empty else RuntimeError,
            ),
            ((*shape[:2], 3, 2), np.float64, normdrop.ShapeError, "got", ValueError),
            (
                shape,
                np.int64,
                normdrop.DTypeError,
                "got int64",
                None if empty else NotImplementedError,
            ),
        ]
        return cases
    elif mi.name == "LayerNorm":
        wider = (*shape[:-1], shape[-1] + 1)
        cases.append(
            (wider, np.float64, normdrop.ShapeError, "expected input with shape", RuntimeError)
        )
    cases.append((shape, np.int64, normdrop.DTypeError, "got int64", RuntimeError))
    return cases


@_inputs_and_modes(BN_INPUTS, LN_INPUTS, [DROPOUT_INPUTS[1]])
def test_errors_forward(backend, rng, mi, training):
    """test_modules.py: test_errors (FORWARD_ERROR), over every module input: a wrong
    channel count or trailing shape, a wrong rank and integer data raise normdrop's
    ShapeError / DTypeError where the torch module raises (RuntimeError, ValueError,
    NotImplementedError), and change no state (parameters, buffers, Dropout's call)."""
    _fit_backend(backend, mi)
    ours, theirs = _pair(mi, np.float64, backend, rng)
    ours.train(training)
    theirs.train(training)
    before = _state_of(ours, backend)
    for shape, dtype, error, match, torch_error in _bad_inputs(mi):
        if mi.name == "Dropout" and not training:
            continue  # evaluation returns any input itself, in both libraries
        x = np.asarray(rng.uniform(-9, 9, shape)).astype(dtype)
        with pytest.raises(error, match=match):
            ours(backend.asarray(x))
        if torch_error is None:
            assert tuple(theirs(_t(x)).shape) == shape
        else:
            with pytest.raises(torch_error):
                theirs(_t(x))
        after = _state_of(ours, backend)
        for key, value in before.items():
            np.testing.assert_array_equal(after[key], value, err_msg=f"{shape} {key}")


@_inputs(MODULE_INPUTS)
def test_if_train_and_eval_modes_differ(backend, rng, mi):
    """test_modules.py: test_if_train_and_eval_modes_differ (ModuleInfo's
    train_and_eval_differ: True for BatchNorm1d, False for LayerNorm). ``train()`` and
    ``eval()`` return the layer and set ``training``; the layer's outputs in the two
    modes differ exactly where the torch module's do."""
    _fit_backend(backend, mi)
    dtype = np.float64
    ours, theirs = _pair(mi, dtype, backend, rng)
    assert ours.training is True
    x = _data(mi, dtype, rng)
    outputs, want = [], []
    for training in (True, False):
        assert ours.train(training) is ours and ours.training is training
        theirs.train(training)
        outputs.append(backend.to_numpy(ours(backend.asarray(x))))
        want.append(_np(_torch_forward(theirs, _t(x), 0)))
    assert ours.eval() is ours and ours.training is False
    assert np.array_equal(*outputs) == np.array_equal(*want)
    for got, expected in zip(outputs, want, strict=True):
        np.testing.assert_allclose(got, expected, **tol(dtype, "torch"))


@_inputs(BN_INPUTS)
@DTYPES
def test_running_stats_over_calls(backend, rng, mi, dtype):
    """The training-mode updates behind test_forward's ``train_and_eval_differ``: four
    training calls on batches of growing scale and offset give, after each call, torch's
    output, running_mean, running_var and num_batches_tracked (momentum 0.1, 0.3 and
    None, the cumulative average); evaluation then uses them as torch does."""
    _fit_backend(backend, mi)
    skip_on_slow_backend(backend, "five forward passes")
    ours, theirs = _pair(mi, dtype, backend, rng)
    for k in range(4):
        x = (_data(mi, dtype, rng) * (k + 1) + 3 * k).astype(dtype)
        y = backend.to_numpy(ours(backend.asarray(x)))
        np.testing.assert_allclose(y, _np(theirs(_t(x))), **tol(dtype, "torch"))
        _assert_state_like_torch(ours, theirs, dtype)
    ours.eval()
    theirs.eval()
    x = _data(mi, dtype, rng)
    y = backend.to_numpy(ours(backend.asarray(x)))
    np.testing.assert_allclose(y, _np(theirs(_t(x))), **tol(dtype, "torch"))
    _assert_state_like_torch(ours, theirs, dtype)
