"""Error classes, messages and every constructor / input validation (SPEC "Errors")."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import normdrop
from normdrop import errors, registry
from normdrop import functional as F
from normdrop.errors import (
    BackendArrayError,
    BackendError,
    BackendNotInstalledError,
    BackwardBeforeForwardError,
    DTypeError,
    InvalidParameterError,
    InvalidParameterTypeError,
    NormdropError,
    ShapeError,
    StateDictError,
    UnknownBackendError,
)


class _Opaque:
    """An array-like no backend accepts."""

    shape = (3, 2)
    ndim = 2
    size = 6
    dtype = np.dtype(np.float64)


# ----------------------------------------------------------------------------- hierarchy
@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (NormdropError, (Exception,)),
        (InvalidParameterError, (NormdropError, ValueError)),
        (InvalidParameterTypeError, (InvalidParameterError, TypeError)),
        (ShapeError, (NormdropError, ValueError)),
        (DTypeError, (NormdropError, TypeError)),
        (StateDictError, (NormdropError, RuntimeError)),
        (BackendError, (NormdropError,)),
        (UnknownBackendError, (BackendError,)),
        (BackendNotInstalledError, (BackendError,)),
        (BackendArrayError, (BackendError,)),
        (BackwardBeforeForwardError, (NormdropError,)),
    ],
)
def test_class_hierarchy(cls, bases):
    for base in bases:
        assert issubclass(cls, base)
    assert issubclass(cls, NormdropError) or cls is NormdropError


def test_direct_bases_as_in_spec_table():
    assert InvalidParameterError.__bases__ == (NormdropError, ValueError)
    assert ShapeError.__bases__ == (NormdropError, ValueError)
    assert DTypeError.__bases__ == (NormdropError, TypeError)
    assert StateDictError.__bases__ == (NormdropError, RuntimeError)
    assert NormdropError.__bases__ == (Exception,)


def test_errors_reexported_from_package():
    for name in errors.__all__:
        assert getattr(normdrop, name) is getattr(errors, name)


def test_invalid_parameter_attributes():
    with pytest.raises(InvalidParameterError) as info:
        normdrop.BatchNorm1d(0)
    assert info.value.parameter_name == "num_features"
    assert info.value.value == 0
    assert str(info.value) == "num_features must be a positive integer, got 0"


# ----------------------------------------------------------------------------- pickling
@pytest.mark.parametrize(
    "exc",
    [
        NormdropError("base"),
        InvalidParameterError("eps must be > 0, got -1", parameter_name="eps", value=-1.0),
        InvalidParameterTypeError("p must be a number, got '1'", parameter_name="p", value="1"),
        ShapeError("bad shape"),
        DTypeError("bad dtype"),
        StateDictError("bad state"),
        BackwardBeforeForwardError("no forward"),
        BackendError("backend"),
        UnknownBackendError("unknown"),
        BackendNotInstalledError("not installed"),
        BackendArrayError("wrong array"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle(exc):
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    if isinstance(exc, InvalidParameterError):
        assert back.parameter_name == exc.parameter_name
        assert back.value == exc.value


def test_raised_errors_pickle():
    for make in (
        lambda: normdrop.Dropout(1.0),
        lambda: normdrop.LayerNorm(3)(np.zeros((1, 2))),
        lambda: normdrop.BatchNorm1d(3)(np.zeros((1, 3))),
        lambda: F.batch_norm(np.zeros((3, 2), np.int64)),
        lambda: normdrop.get_backend("no-such-backend"),
    ):
        with pytest.raises(NormdropError) as info:
            make()
        back = pickle.loads(pickle.dumps(info.value))
        assert type(back) is type(info.value)
        assert str(back) == str(info.value)


# ----------------------------------------------------------------------------- exact messages
def test_exact_messages():
    with pytest.raises(
        InvalidParameterError, match=r"^num_features must be a positive integer, got 0$"
    ):
        normdrop.BatchNorm1d(0)
    with pytest.raises(
        InvalidParameterError, match=r"^Dropout probability must be in \[0, 1\), got 1\.0$"
    ):
        normdrop.Dropout(1.0)
    with pytest.raises(
        ShapeError,
        match=r"^Expected more than 1 value per channel when training, got input shape \(1, 3\)$",
    ):
        normdrop.BatchNorm1d(3)(np.zeros((1, 3), np.float32))
    with pytest.raises(
        ShapeError, match=r"^LayerNorm expected input with shape \(\.\.\., 3\), got \(1, 2\)$"
    ):
        normdrop.LayerNorm(3)(np.zeros((1, 2), np.float32))


def test_layernorm_multidim_message():
    with pytest.raises(ShapeError, match=r"\(\.\.\., 2, 3\), got \(4, 3, 2\)"):
        normdrop.LayerNorm((2, 3))(np.zeros((4, 3, 2)))


# ----------------------------------------------------------------------------- BatchNorm1d args
@pytest.mark.parametrize("bad", [0, -1, True, False, 2.0, "3", None, 3.5, np.bool_(True), [3]])
def test_bn_num_features_rejected(bad):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.BatchNorm1d(bad)
    assert info.value.parameter_name == "num_features"
    assert info.value.value is bad
    assert "num_features" in str(info.value) and repr(bad) in str(info.value)


@pytest.mark.parametrize("good", [1, 3, np.int64(3), np.int32(3), np.uint8(3), np.int16(3)])
def test_bn_num_features_numpy_ints_accepted(good):
    bn = normdrop.BatchNorm1d(good)
    assert bn.num_features == int(good)
    assert type(bn.num_features) is int
    assert bn.weight.shape == (int(good),)


@pytest.mark.parametrize(
    "bad", [0, 0.0, -1e-5, math.nan, math.inf, -math.inf, "1e-5", None, True, np.float64("nan")]
)
def test_bn_eps_rejected(bad):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.BatchNorm1d(3, eps=bad)
    assert info.value.parameter_name == "eps"
    assert "eps" in str(info.value)


@pytest.mark.parametrize("good", [1e-5, 1, 0.5, np.float32(1e-3), 1e-300])
def test_bn_eps_accepted(good):
    assert normdrop.BatchNorm1d(3, eps=good).eps == float(good)


@pytest.mark.parametrize("bad", [-0.1, 1.1, math.nan, math.inf, -math.inf, "0.1", True, [0.1]])
def test_bn_momentum_rejected(bad):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.BatchNorm1d(3, momentum=bad)
    assert info.value.parameter_name == "momentum"
    assert "momentum" in str(info.value)


@pytest.mark.parametrize("good", [0, 0.0, 0.1, 1, 1.0, np.float32(0.5), None])
def test_bn_momentum_accepted(good):
    bn = normdrop.BatchNorm1d(3, momentum=good)
    assert bn.momentum == (None if good is None else float(good))


@pytest.mark.parametrize("bad", ["float16", "int32", np.int64, "complex64", "foo", np.float16, 3])
def test_bn_dtype_rejected(bad):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.BatchNorm1d(3, dtype=bad)
    assert info.value.parameter_name == "dtype"


@pytest.mark.parametrize(
    ("good", "expected"),
    [
        ("float32", np.float32),
        ("float64", np.float64),
        (np.float32, np.float32),
        (np.dtype("float64"), np.float64),
    ],
)
def test_bn_dtype_accepted(good, expected):
    bn = normdrop.BatchNorm1d(3, dtype=good)
    assert bn.weight.dtype == expected
    assert bn.running_var.dtype == expected


@pytest.mark.parametrize("flag", ["affine", "track_running_stats"])
@pytest.mark.parametrize("bad", [1, 0, "yes", None])
def test_bn_bool_flags_rejected(flag, bad):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.BatchNorm1d(3, **{flag: bad})
    assert info.value.parameter_name == flag


def test_bn_unknown_backend_rejected_at_construction():
    with pytest.raises(UnknownBackendError):
        normdrop.BatchNorm1d(3, backend="no-such-backend")


# ----------------------------------------------------------------------------- LayerNorm args
@pytest.mark.parametrize(
    "bad",
    [0, -1, (), [], (3, 0), (3, -1), 2.0, "3", (2.0,), True, (True,), None, (3, "4"), b"3"],
)
def test_ln_normalized_shape_rejected(bad):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.LayerNorm(bad)
    assert info.value.parameter_name == "normalized_shape"
    assert "normalized_shape" in str(info.value)


@pytest.mark.parametrize(
    ("good", "expected"),
    [
        (3, (3,)),
        ((3,), (3,)),
        ([2, 3], (2, 3)),
        (np.int64(4), (4,)),
        ((np.int32(2), 3), (2, 3)),
        ((1, 1, 2), (1, 1, 2)),
    ],
)
def test_ln_normalized_shape_forms(good, expected):
    ln = normdrop.LayerNorm(good)
    assert ln.normalized_shape == expected
    assert type(ln.normalized_shape) is tuple
    assert all(type(d) is int for d in ln.normalized_shape)
    assert ln.weight.shape == expected


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, None, "1e-5", False])
def test_ln_eps_rejected(bad):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.LayerNorm(3, eps=bad)
    assert info.value.parameter_name == "eps"


@pytest.mark.parametrize("flag", ["elementwise_affine", "bias"])
def test_ln_bool_flags_rejected(flag):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.LayerNorm(3, **{flag: 1})
    assert info.value.parameter_name == flag


@pytest.mark.parametrize("bad", ["float16", "int64", "nope"])
def test_ln_dtype_rejected(bad):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.LayerNorm(3, dtype=bad)
    assert info.value.parameter_name == "dtype"


# ----------------------------------------------------------------------------- Dropout args
@pytest.mark.parametrize(
    "bad",
    [
        1.0,
        1,
        -0.1,
        -1e-300,
        math.nan,
        math.inf,
        -math.inf,
        True,
        False,
        "0.5",
        None,
        1.5,
        np.float64(1.0),
        [0.5],
    ],
)
def test_dropout_p_rejected(bad):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.Dropout(bad)
    assert info.value.parameter_name == "p"
    assert str(info.value) == f"Dropout probability must be in [0, 1), got {bad!r}"


@pytest.mark.parametrize("good", [0, 0.0, 0.5, np.float32(0.25), 0.999, np.float64(0.1)])
def test_dropout_p_accepted(good):
    d = normdrop.Dropout(good, seed=0)
    assert d.p == float(good)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, True, "1", np.float64(2.0)])
def test_dropout_seed_rejected(bad):
    with pytest.raises(InvalidParameterError) as info:
        normdrop.Dropout(0.5, seed=bad)
    assert info.value.parameter_name == "seed"


@pytest.mark.parametrize("good", [0, 2**64 - 1, np.uint64(2**64 - 1), np.int64(7)])
def test_dropout_seed_accepted(good):
    assert normdrop.Dropout(0.5, seed=good).seed == int(good)


def test_manual_seed_validated():
    with pytest.raises(InvalidParameterError):
        normdrop.manual_seed(-1)
    with pytest.raises(InvalidParameterError):
        normdrop.manual_seed(1.5)


# ----------------------------------------------------------------------------- functional args
def test_functional_argument_validation():
    x = np.ones((3, 2))
    with pytest.raises(InvalidParameterError) as info:
        F.batch_norm(x, training=True, eps=0)
    assert info.value.parameter_name == "eps"
    with pytest.raises(InvalidParameterError) as info:
        F.batch_norm(x, training=True, momentum=2.0)
    assert info.value.parameter_name == "momentum"
    with pytest.raises(InvalidParameterError) as info:
        F.batch_norm(x, training="yes")
    assert info.value.parameter_name == "training"
    with pytest.raises(InvalidParameterError):
        F.batch_norm(x, np.zeros(2), None, training=True)
    with pytest.raises(InvalidParameterError) as info:
        F.layer_norm(x, 0)
    assert info.value.parameter_name == "normalized_shape"
    with pytest.raises(InvalidParameterError) as info:
        F.dropout(x, 1.0, seed=0)
    assert info.value.parameter_name == "p"
    with pytest.raises(InvalidParameterError) as info:
        F.dropout(x, 0.5, seed=0, call=-1)
    assert info.value.parameter_name == "call"
    with pytest.raises(InvalidParameterError) as info:
        F.dropout_mask((2, -1), 0.5, seed=0)
    assert info.value.parameter_name == "shape"
    with pytest.raises(InvalidParameterError) as info:
        F.dropout_backward(x, 0.5)
    assert info.value.parameter_name == "seed"


# ----------------------------------------------------------------------------- input dtypes
_BAD_DTYPES = [np.int64, np.int32, np.complex128, np.bool_, np.uint8]


@pytest.mark.parametrize("dtype", _BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_dtype_error_layers(backend, dtype):
    x = backend.asarray(np.ones((3, 2), dtype=dtype))
    for layer in (
        normdrop.BatchNorm1d(2, backend=backend.name),
        normdrop.LayerNorm(2, backend=backend.name),
        normdrop.Dropout(0.5, seed=0, backend=backend.name),
    ):
        with pytest.raises(DTypeError) as info:
            layer(x)
        assert np.dtype(dtype).name in str(info.value)
        assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("dtype", _BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_dtype_error_functional(backend, dtype):
    x = backend.asarray(np.ones((3, 2), dtype=dtype))
    with pytest.raises(DTypeError):
        F.batch_norm(x, training=True, backend=backend)
    with pytest.raises(DTypeError):
        F.layer_norm(x, 2, backend=backend)
    with pytest.raises(DTypeError):
        F.dropout(x, 0.5, seed=0, backend=backend)
    with pytest.raises(DTypeError):
        F.dropout_backward(x, 0.5, seed=0, backend=backend)


@pytest.mark.parametrize("missing", ["mean", "rstd"])
def test_backward_statistics_cannot_be_none(backend, missing):
    """``mean`` and ``rstd`` of the backward functions are required arrays: ``None`` (which
    stands for "no weight" in ``weight``) gets a clear error on every backend, not a
    ``TypeError`` from inside the reference or a silently wrong gradient."""
    x = np.random.default_rng(0).standard_normal((4, 3, 5))
    xb = backend.asarray(x)
    dy = backend.asarray(np.ones_like(x))
    _, bm, br = F.batch_norm_with_stats(xb, training=True, backend=backend)
    _, lm, lr = F.layer_norm_with_stats(xb, 5, backend=backend)
    _, r, fm, fr, _ = F.dropout_add_layer_norm_with_stats(xb, xb, 5, p=0.2, seed=1, backend=backend)
    calls = {
        "batch_norm_backward": lambda m, s: F.batch_norm_backward(dy, xb, m, s, backend=backend),
        "layer_norm_backward": lambda m, s: F.layer_norm_backward(dy, xb, 5, m, s, backend=backend),
        "dropout_add_layer_norm_backward": lambda m, s: F.dropout_add_layer_norm_backward(
            dy, r, 5, m, s, p=0.2, seed=1, backend=backend
        ),
    }
    stats = {"batch_norm_backward": (bm, br), "layer_norm_backward": (lm, lr)}
    stats["dropout_add_layer_norm_backward"] = (fm, fr)
    for name, call in calls.items():
        mean, rstd = stats[name]
        args = (None, rstd) if missing == "mean" else (mean, None)
        with pytest.raises(
            InvalidParameterTypeError, match=rf"^{missing} must be an array"
        ) as info:
            call(*args)
        assert info.value.parameter_name == missing and info.value.value is None, name


def test_dtype_error_integer_lists():
    with pytest.raises(DTypeError):
        F.batch_norm([[1, 2], [3, 4]], training=True)
    with pytest.raises(DTypeError):
        F.layer_norm([[1, 2], [3, 4]], 2)


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("shape", [(3,), (2, 3, 4, 5), (), (1, 1, 1, 1)])
def test_bn_wrong_rank(backend, shape):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    x = backend.asarray(np.ones(shape, np.float32))
    with pytest.raises(ShapeError) as info:
        bn(x)
    assert str(tuple(shape)) in str(info.value)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("shape", [(4, 2), (4, 5, 3)])
def test_bn_wrong_channels(backend, affine, track, shape):
    """A wrong C is a ShapeError naming the expected C and the received input shape."""
    bn = normdrop.BatchNorm1d(3, affine=affine, track_running_stats=track, backend=backend.name)
    x = backend.asarray(np.ones(shape, np.float32))
    for training in (True, False):
        bn.train(training)
        with pytest.raises(ShapeError) as info:
            bn(x)
        message = str(info.value)
        assert "3" in message
        assert str(tuple(shape)) in message


def test_bn_too_few_values_3d():
    with pytest.raises(ShapeError, match="Expected more than 1 value per channel"):
        normdrop.BatchNorm1d(3)(np.ones((1, 3, 1)))
    # (1, C, 2) has two values per channel: fine
    normdrop.BatchNorm1d(3)(np.arange(6.0).reshape(1, 3, 2))


def test_bn_too_few_values_without_tracking_in_eval():
    bn = normdrop.BatchNorm1d(3, track_running_stats=False).eval()
    with pytest.raises(ShapeError, match="Expected more than 1 value per channel"):
        bn(np.ones((1, 3)))


def test_bn_single_sample_eval_with_tracking_ok():
    bn = normdrop.BatchNorm1d(3).eval()
    assert bn(np.ones((1, 3), np.float32)).shape == (1, 3)


@pytest.mark.parametrize(
    ("normalized_shape", "shape"), [(3, (4, 2)), (3, ()), ((2, 3), (3,)), ((2, 3), (4, 3, 2))]
)
def test_ln_wrong_shape(backend, normalized_shape, shape):
    ln = normdrop.LayerNorm(normalized_shape, backend=backend.name)
    with pytest.raises(ShapeError) as info:
        ln(backend.asarray(np.ones(shape, np.float32)))
    assert str(tuple(shape)) in str(info.value)


def test_grad_output_shape_checked():
    bn = normdrop.BatchNorm1d(2)
    bn(np.ones((3, 2), np.float32) * np.arange(3)[:, None])
    with pytest.raises(ShapeError):
        bn.backward(np.ones((3, 3), np.float32))
    ln = normdrop.LayerNorm(2)
    ln(np.ones((3, 2), np.float32))
    with pytest.raises(ShapeError):
        ln.backward(np.ones((2, 2), np.float32))


# ----------------------------------------------------------------------------- backends
def test_unknown_backend_lists_registered():
    with pytest.raises(UnknownBackendError) as info:
        normdrop.get_backend("no-such-backend")
    message = str(info.value)
    assert "no-such-backend" in message
    for name in normdrop.registered_backends():
        assert name in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(UnknownBackendError):
        F.batch_norm(np.ones((3, 2)), training=True, backend="no-such-backend")
    with pytest.raises(UnknownBackendError):
        normdrop.get_backend(42)


def test_backend_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setattr(registry, "_loaded", dict(registry._loaded))
    monkeypatch.setitem(
        registry._BUILTINS, "ghost", ("normdrop.backends._no_such_module", "ghostextra")
    )
    with pytest.raises(BackendNotInstalledError) as info:
        normdrop.get_backend("ghost")
    assert "ghost" in str(info.value)
    assert "normdrop[ghostextra]" in str(info.value)
    assert isinstance(info.value, ImportError)
    assert "ghost" not in normdrop.available_backends()
    assert normdrop.backend_status()["ghost"] is not None


def test_array_not_accepted(backend):
    with pytest.raises(BackendArrayError) as info:
        F.batch_norm(_Opaque(), training=True, backend=backend)
    assert backend.name in str(info.value)
    assert isinstance(info.value, TypeError)
    with pytest.raises(BackendArrayError):
        F.layer_norm(_Opaque(), 2, backend=backend)
    with pytest.raises(BackendArrayError):
        F.dropout(_Opaque(), 0.5, seed=0, backend=backend)
    with pytest.raises(BackendArrayError):
        normdrop.BatchNorm1d(2, backend=backend.name)(_Opaque())


def test_backward_before_forward_message():
    for layer in (normdrop.BatchNorm1d(2), normdrop.LayerNorm(2), normdrop.Dropout(0.5, seed=0)):
        with pytest.raises(BackwardBeforeForwardError) as info:
            layer.backward(np.ones((3, 2), np.float32))
        assert type(layer).__name__ in str(info.value)
        assert isinstance(info.value, RuntimeError)
