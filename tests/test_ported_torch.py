"""PyTorch's own tests of BatchNorm1d, LayerNorm and Dropout, ported to normdrop.

Each test names its source: a test in PyTorch's ``test/test_nn.py`` or
``test/nn/test_dropout.py``, or a sample/error-input function of
``torch/testing/_internal/common_modules.py`` (the ModuleInfo tests of
``test/test_modules.py``) or ``common_methods_invocations.py`` (the OpInfo tests).
PyTorch (installed for the tests) is the oracle for the numbers. Where normdrop
departs from PyTorch on purpose (docs/differences.md: eager validation, ``p = 1``,
no ``inplace=``/``bias=`` on BatchNorm1d), the port checks normdrop's documented
behaviour instead and says so.
"""

from __future__ import annotations

import copy
import itertools
import pickle

import numpy as np
import pytest
from conftest import host, skip_on_slow_backend, tol, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def _fast(backend):
    skip_on_slow_backend(backend, "a loop over many shapes; too slow under the CUDA simulator")


# ============================================================================ BatchNorm1d
# common_modules.py: module_inputs_torch_nn_BatchNorm1d (constructor args, input shape, desc).
# 'affine_not_bias' (BatchNorm1d(10, bias=False)) is left out: normdrop's BatchNorm1d has no
# bias= keyword (docs/differences.md).
BN_MODULE_INPUTS = [
    ((10,), (4, 10), "affine"),
    ((5,), (4, 5, 3), "3d_input"),
    ((10, 1e-3, None), (4, 10), "affine_simple_average"),
    ((10, 1e-3, 0.3, False), (4, 10), "not_affine"),
    ((10, 1e-3, 0.3, True, False), (4, 10), "not_tracking_stats"),
    ((5, 1e-3, 0.3, False), (4, 5, 3), "3d_input_not_affine"),
    ((5, 1e-3, 0.3, False), (0, 5, 9), "zero_batch"),
]


def _forward_backward_like_torch(layer, tlayer, backend, rng, shape, dtype):
    """One forward and backward of random data through ``layer`` and the torch module
    ``tlayer``: the output (dtype, shape, values) and the input gradient agree."""
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    tx = _t(x).requires_grad_(True)
    ty = tlayer(tx)
    ty.backward(_t(g))
    y = backend.to_numpy(layer(backend.asarray(x)))
    dx = backend.to_numpy(layer.backward(backend.asarray(g)))
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, _np(ty), **tol(dtype, "torch"))
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol(dtype, "torch", 10))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("args", "shape"), [c[:2] for c in BN_MODULE_INPUTS], ids=[c[2] for c in BN_MODULE_INPUTS]
)
def test_module_inputs_batchnorm1d(backend, rng, dtype, args, shape):
    """Two training calls and one in evaluation: outputs, input gradients and the state dict
    (keys in order, values) agree with torch.nn.BatchNorm1d."""
    bn = normdrop.BatchNorm1d(*args, dtype=dtype, backend=backend.name)
    tbn = torch.nn.BatchNorm1d(*args, dtype=TORCH_DTYPE[dtype])
    close = tol(dtype, "torch")
    for training in (True, True, False):
        bn.train(training)
        tbn.train(training)
        _forward_backward_like_torch(bn, tbn, backend, rng, shape, dtype)
    ours, theirs = bn.state_dict(), tbn.state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value.numpy(), **close, err_msg=key)


@pytest.mark.parametrize("eps", [-1.0, 0.0])
def test_module_error_inputs_batchnorm1d_eps(eps):
    """module_error_inputs_torch_nn_BatchNorm1d_2d_3d: PyTorch raises ValueError 'eps must be
    positive' at the forward call; normdrop at construction (docs/differences.md)."""
    with pytest.raises(normdrop.InvalidParameterError, match="eps must be a finite number > 0"):
        normdrop.BatchNorm1d(10, eps=eps)
    with pytest.raises(ValueError):
        torch.nn.BatchNorm1d(10, eps=eps)(torch.rand(2, 10))


def test_batchnorm_raises_error_if_less_than_one_value_per_channel(backend):
    """test_nn.py: BatchNorm1d(10) on (1, 10, 1) in training raises ValueError; normdrop's
    ShapeError is one, and nothing is updated."""
    x = backend.asarray(np.random.default_rng(0).random((1, 10, 1)))
    bn = normdrop.BatchNorm1d(10, backend=backend.name)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(x)
    assert int(bn.num_batches_tracked) == 0
    np.testing.assert_array_equal(host(backend, bn.running_mean), np.zeros(10))
    with pytest.raises(ValueError):
        torch.nn.BatchNorm1d(10)(torch.rand(10)[None, :, None])


@pytest.mark.parametrize("which", ["running_mean", "running_var", "weight", "bias"])
@pytest.mark.parametrize("size", [9, 11])
def test_batchnorm_raises_error_if_argument_is_not_same_size_as_input(which, size):
    """test_nn.py: test_batchnorm_raises_error_if_{running_mean,running_var,weight,bias}_is_not
    _same_size_as_input. PyTorch raises RuntimeError; normdrop a ShapeError naming the
    argument, the expected and the received shape, before touching the running arrays."""
    rng = np.random.default_rng(1)
    args = {
        "running_mean": rng.random(10),
        "running_var": rng.random(10),
        "weight": None,
        "bias": None,
    }
    args[which] = rng.random(size)
    before = {k: None if v is None else v.copy() for k, v in args.items()}
    with pytest.raises(
        normdrop.ShapeError, match=rf"{which} must have shape \(10,\), got \({size},\)"
    ):
        F.batch_norm(rng.random((2, 10)), training=True, **args)
    for key, value in before.items():
        if value is not None:
            np.testing.assert_array_equal(args[key], value)
    targs = {k: None if v is None else _t(v) for k, v in args.items()}
    with pytest.raises(RuntimeError):
        TF.batch_norm(torch.rand(2, 10), **targs)


def test_batchnorm_buffer_update_when_stats_are_not_tracked(backend):
    """test_nn.py: after ``bn.track_running_stats = False`` on a layer with buffers, a
    training call normalises with batch statistics and updates no buffer."""
    bn = normdrop.BatchNorm1d(4, dtype=np.float64, backend=backend.name)
    bn.track_running_stats = False
    x = np.random.default_rng(2).random((32, 4))
    y = backend.to_numpy(bn(backend.asarray(x)))
    assert int(bn.num_batches_tracked) == 0
    np.testing.assert_array_equal(host(backend, bn.running_mean), np.zeros(4))
    np.testing.assert_array_equal(host(backend, bn.running_var), np.ones(4))
    tbn = torch.nn.BatchNorm1d(4)
    tbn.track_running_stats = False
    np.testing.assert_allclose(y, _np(tbn(_t(x).float())), rtol=1e-5, atol=1e-5)


def test_batchnorm_track_flag_flipped_after_construction_matches_torch(backend):
    """Follow-up of test_batchnorm_buffer_update_when_stats_are_not_tracked: PyTorch decides by
    the buffers. With running statistics and ``track_running_stats = False`` evaluation reads
    them; built without them, ``track_running_stats = True`` changes nothing (batch statistics
    in both modes, no counter). normdrop used batch statistics in the first case, and crashed
    (numpy) or read missing buffers (numba) in the second."""
    rng = np.random.default_rng(3)
    x = rng.random((8, 4))
    bn = normdrop.BatchNorm1d(4, dtype=np.float64, backend=backend.name)
    tbn = torch.nn.BatchNorm1d(4, dtype=torch.float64)
    bn.running_mean = np.full(4, 5.0)
    tbn.running_mean.fill_(5.0)
    for layer in (bn, tbn):
        layer.track_running_stats = False
        layer.eval()
    np.testing.assert_allclose(
        backend.to_numpy(bn(backend.asarray(x))), _np(tbn(_t(x))), rtol=1e-12, atol=1e-12
    )

    bn = normdrop.BatchNorm1d(4, track_running_stats=False, dtype=np.float64, backend=backend.name)
    tbn = torch.nn.BatchNorm1d(4, track_running_stats=False, dtype=torch.float64)
    for training in (True, False):
        for layer in (bn, tbn):
            layer.track_running_stats = True
            layer.train(training)
        np.testing.assert_allclose(
            backend.to_numpy(bn(backend.asarray(x))), _np(tbn(_t(x))), rtol=1e-12, atol=1e-12
        )
        assert bn.running_mean is None and bn.num_batches_tracked is None


def test_batchnorm_simple_average(backend, rng):
    """test_nn.py: _test_batchnorm_simple_average. With momentum=None two batches give the
    plain average of what each gives alone; reset_running_stats restores zeros and ones."""
    bn = normdrop.BatchNorm1d(3, momentum=None, dtype=np.float64, backend=backend.name)
    data1, data2 = rng.random((4, 3)), rng.random((4, 3))

    def stats():
        return host(backend, bn.running_mean).copy(), host(backend, bn.running_var).copy()

    bn(backend.asarray(data1))
    mean1, var1 = stats()
    assert not np.array_equal(mean1, np.zeros(3)) and not np.array_equal(var1, np.ones(3))
    bn.reset_running_stats()
    np.testing.assert_array_equal(host(backend, bn.running_mean), np.zeros(3))
    np.testing.assert_array_equal(host(backend, bn.running_var), np.ones(3))
    assert int(bn.num_batches_tracked) == 0
    bn(backend.asarray(data2))
    mean2, var2 = stats()
    bn.reset_running_stats()
    bn(backend.asarray(data1))
    bn(backend.asarray(data2))
    mean, var = stats()
    np.testing.assert_allclose(mean, (mean1 + mean2) / 2, rtol=1e-12)
    np.testing.assert_allclose(var, (var1 + var2) / 2, rtol=1e-12)


def test_batchnorm_update_stats(backend, rng):
    """test_nn.py: _test_batchnorm_update_stats. Each training call adds 1 to
    num_batches_tracked and changes the running statistics; evaluation changes neither."""
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    x = backend.asarray(rng.random((4, 3, 2)).astype(np.float32))
    for expected in (1, 2):
        bn(x)
        assert int(bn.num_batches_tracked) == expected
    bn.eval()
    mean = host(backend, bn.running_mean).copy()
    bn(x)
    assert int(bn.num_batches_tracked) == 2
    np.testing.assert_array_equal(host(backend, bn.running_mean), mean)


def test_batchnorm_eval(backend, rng):
    """test_nn.py: _test_batchnorm_eval. In evaluation two forward/backward passes give the
    same output and input gradient, and the gradients equal PyTorch's; with
    track_running_stats=False evaluation uses batch statistics, as PyTorch does."""
    x, g = rng.random((4, 3, 2)), rng.random((4, 3, 2))
    for track in (True, False):
        bn = normdrop.BatchNorm1d(
            3, track_running_stats=track, dtype=np.float64, backend=backend.name
        ).eval()
        tbn = torch.nn.BatchNorm1d(3, track_running_stats=track, dtype=torch.float64).eval()
        y1 = backend.to_numpy(bn(backend.asarray(x)))
        dx1 = backend.to_numpy(bn.backward(backend.asarray(g)))
        y2 = backend.to_numpy(bn(backend.asarray(x)))
        dx2 = backend.to_numpy(bn.backward(backend.asarray(g)))
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(dx1, dx2)
        tx = _t(x).requires_grad_(True)
        ty = tbn(tx)
        ty.backward(_t(g))
        np.testing.assert_allclose(y1, _np(ty), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dx1, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_batchnorm_load_state_dict():
    """test_nn.py: test_batchnorm_load_state_dict. num_batches_tracked starts at 0 in the state
    dict, follows assignment, and an empty state loaded with strict=False keeps it."""
    bn = normdrop.BatchNorm1d(3)
    assert int(bn.state_dict()["num_batches_tracked"]) == 0
    bn.num_batches_tracked = np.array(10)
    assert int(bn.state_dict()["num_batches_tracked"]) == 10
    result = bn.load_state_dict({}, strict=False)
    assert result.missing_keys == ["weight", "bias", "running_mean", "running_var"]
    assert int(bn.state_dict()["num_batches_tracked"]) == 10


def test_load_state_dict_bc_without_num_batches_tracked():
    """test_nn.py: test_load_state_dict_BC. A BatchNorm state dict from before
    num_batches_tracked existed loads strictly, and the count stays (PyTorch keeps the
    module's own count where it is not on the meta device)."""
    sd = torch.nn.BatchNorm1d(3).state_dict()
    del sd["num_batches_tracked"]
    bn = normdrop.BatchNorm1d(3)
    bn.num_batches_tracked = np.array(7)
    result = bn.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert int(bn.num_batches_tracked) == 7


# OpInfo nn.functional.batch_norm, common_methods_invocations.py: sample_inputs_batch_norm.
# (input shape, kwargs). Shapes (0,) (1-D input) are left out: normdrop's functional form
# takes rank >= 2 (docs/differences.md).
BN_SAMPLES = [
    ((5, 5, 5), {"training": True, "momentum": 0.5, "eps": 0.6}),
    ((3, 2, 4), {"training": False, "momentum": -1.2}),
    ((3, 1), {"training": True, "momentum": 0.0}),
    ((3, 2, 3, 4), {"training": False, "momentum": -1.0, "eps": 0.5}),
    ((2, 1), {}),
    ((3, 2, 3, 4), {"training": True}),
    ((3, 2, 3, 4), {"training": False}),
]


@pytest.mark.parametrize(("shape", "kwargs"), BN_SAMPLES)
def test_opinfo_batch_norm_samples(backend, rng, shape, kwargs):
    """The output and the updated running arrays equal torch.nn.functional.batch_norm's; an
    unused momentum (evaluation) is not checked, as in PyTorch."""
    c = shape[1]
    x = rng.standard_normal(shape)
    weight, bias = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.random(c), rng.random(c)
    trm, trv = _t(rm.copy()), _t(rv.copy())
    want = TF.batch_norm(_t(x), trm, trv, _t(weight), _t(bias), **kwargs)
    rmb, rvb = vec(backend, rm), vec(backend, rv)
    y = F.batch_norm(
        backend.asarray(x),
        rmb,
        rvb,
        vec(backend, weight),
        vec(backend, bias),
        **kwargs,
        backend=backend,
    )
    np.testing.assert_allclose(backend.to_numpy(y), want.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(backend, rmb), trm.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(host(backend, rvb), trv.numpy(), rtol=1e-12, atol=1e-15)


def test_opinfo_batch_norm_without_running_stats():
    """sample_inputs_batch_norm's last sample: (1, 2, 3) in training, every optional None."""
    x = np.random.default_rng(4).random((1, 2, 3))
    want = TF.batch_norm(_t(x), None, None, None, None, training=True)
    np.testing.assert_allclose(F.batch_norm(x, training=True), want.numpy(), rtol=1e-10)


def test_opinfo_batch_norm_negative_momentum_in_training_changes_nothing():
    """sample_inputs_batch_norm's ((3, 2, 3, 4), training=True, momentum=-1.0): PyTorch
    extrapolates; normdrop refuses a momentum outside [0, 1] in training
    (docs/differences.md) and leaves the running arrays alone."""
    rm, rv = np.zeros(2), np.ones(2)
    with pytest.raises(normdrop.InvalidParameterError, match="momentum must be a finite number"):
        F.batch_norm(np.ones((3, 2, 3, 4)), rm, rv, training=True, momentum=-1.0, eps=0.5)
    np.testing.assert_array_equal(rm, np.zeros(2))
    np.testing.assert_array_equal(rv, np.ones(2))


def test_batchnorm_non_contiguous_inputs(backend, rng):
    """test_modules.py: test_non_contiguous_tensors. Strided, reversed and Fortran-ordered
    views give the numbers of their C-ordered copies."""
    base = rng.standard_normal((4, 6, 10))
    for x in (base[:, ::2, ::2], base[::-1, 1::2, ::-3], np.asfortranarray(base[:, :3])):
        a = normdrop.BatchNorm1d(3, dtype=np.float64, backend=backend.name)
        b = normdrop.BatchNorm1d(3, dtype=np.float64, backend=backend.name)
        want = backend.to_numpy(b(backend.asarray(np.ascontiguousarray(x))))
        got = backend.to_numpy(a(backend.asarray(x)))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            host(backend, a.running_var), host(backend, b.running_var), rtol=1e-12
        )


# ============================================================================== LayerNorm
# common_modules.py: module_inputs_torch_nn_LayerNorm (constructor args, kwargs, input shape).
LN_MODULE_INPUTS = [
    (([5], 1e-3), {}, (4, 5, 5), "1d_elementwise_affine"),
    (([5], 1e-3), {}, (128, 5, 5), "1d_elementwise_affine_large_batch"),
    (([5], 1e-3, False), {}, (4, 5, 5), "1d_no_elementwise_affine"),
    (([2, 2, 5], 1e-3), {}, (4, 2, 2, 5), "3d_elementwise_affine"),
    (([2, 2, 5], 1e-3, False), {}, (4, 2, 2, 5), "3d_no_elementwise_affine"),
    (([5], 1e-3), {}, (0, 5), "1d_empty_elementwise_affine"),
    (([2, 2, 5], 1e-3), {"bias": False}, (4, 2, 2, 5), "3d_elementwise_affine_no_bias"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("args", "kwargs", "shape"),
    [c[:3] for c in LN_MODULE_INPUTS],
    ids=[c[3] for c in LN_MODULE_INPUTS],
)
def test_module_inputs_layernorm(backend, rng, dtype, args, kwargs, shape):
    """Output, input and parameter gradients, state dict keys, normalized_shape and repr
    agree with torch.nn.LayerNorm, for random weights and biases."""
    _fast(backend)
    ln = normdrop.LayerNorm(*args, **kwargs, dtype=dtype, backend=backend.name)
    tln = torch.nn.LayerNorm(*args, **kwargs, dtype=TORCH_DTYPE[dtype])
    with torch.no_grad():
        for param in tln.parameters():
            param.copy_(torch.from_numpy(rng.standard_normal(tuple(param.shape)).astype(dtype)))
    ln.load_state_dict(tln.state_dict())
    assert list(ln.state_dict()) == list(tln.state_dict())
    assert ln.normalized_shape == tln.normalized_shape
    assert repr(ln) == repr(tln)
    _forward_backward_like_torch(ln, tln, backend, rng, shape, dtype)
    for name, param in tln.named_parameters():
        np.testing.assert_allclose(
            host(backend, ln.grads[name]), param.grad.numpy(), **tol(dtype, "torch", 100)
        )


def test_layernorm_general(backend):
    """test_nn.py: _test_LayerNorm_general. Random shapes of rank 2 to 5 normalised over
    1 to rank-1 trailing dims have mean 0 and variance 1 per sample; a scalar weight and
    bias scale and shift them. PyTorch uses eps=0, which normdrop refuses: eps=1e-12."""
    _fast(backend)
    rng = np.random.default_rng(5)
    for rank in range(2, 6):
        shape = [int(s) for s in rng.integers(3, 6, rank)]
        x = rng.uniform(0, 10, shape)
        ndim = int(rng.integers(1, rank))
        normalized, batch = shape[-ndim:], shape[:-ndim]
        ln = normdrop.LayerNorm(normalized, eps=1e-12, dtype=np.float64, backend=backend.name)
        out = backend.to_numpy(ln(backend.asarray(x))).reshape(*batch, -1)
        assert np.abs(out.mean(-1)).mean() < 1e-5
        assert abs(out.var(-1).mean() - 1) < 1e-5
        scale, bias = rng.uniform(0.2, 2, 2)
        ln.weight = np.full(normalized, scale)
        ln.bias = np.full(normalized, bias)
        out = backend.to_numpy(ln(backend.asarray(x))).reshape(*batch, -1)
        assert abs(out.mean(-1).mean() - bias) < 1e-5
        assert abs(out.var(-1).mean() - scale**2) < 1e-5


@pytest.mark.parametrize(
    ("normalized_shape", "input_shape"), [((2, 3), (3,)), ((2,), (1, 3)), ((10,), (2, 5))]
)
def test_layernorm_bad_shapes(normalized_shape, input_shape):
    """test_nn.py: _test_LayerNorm_general's bad_norm_shape_input_shape cases raise (PyTorch:
    RuntimeError; normdrop: ShapeError naming both shapes)."""
    x = np.ones(input_shape)
    with pytest.raises(normdrop.ShapeError, match=r"LayerNorm expected input with shape"):
        normdrop.LayerNorm(normalized_shape)(x)
    with pytest.raises(RuntimeError):
        torch.nn.LayerNorm(normalized_shape)(torch.ones(input_shape))


def test_layernorm_empty_normalized_shape_is_refused():
    """test_nn.py bad_norm_shape_input_shape's ``(): ()`` and error_inputs_native_layer_norm's
    'Expected normalized_shape to be at least 1-dimensional': normdrop refuses it when the
    layer or the call is made."""
    with pytest.raises(normdrop.InvalidParameterError, match="normalized_shape"):
        normdrop.LayerNorm(())
    with pytest.raises(normdrop.InvalidParameterError, match="normalized_shape"):
        F.layer_norm(np.ones((1, 2, 3)), ())


def test_layer_norm_eps():
    """test_nn.py: test_layer_norm_eps. Rows of two equal values normalise to exactly 0."""
    x = np.array([[[2.0, 2.0], [14.0, 14.0]], [[2.0, 2.0], [14.0, 14.0]]])
    ln = normdrop.LayerNorm(2, eps=1e-6, elementwise_affine=False, dtype=np.float64)
    np.testing.assert_array_equal(ln(x), np.zeros_like(x))


def test_layernorm_half_precision(backend):
    """test_nn.py: test_layernorm_half_precision. float16 input is computed in float32 and
    rounded once: the result is the float32 result of the same values, rounded to float16,
    and equals torch.nn.LayerNorm's float16 result."""
    x = np.random.default_rng(6).standard_normal((4, 8)).astype(np.float16)
    ln = normdrop.LayerNorm(8, backend=backend.name)
    y16 = backend.to_numpy(ln(backend.asarray(x)))
    y32 = backend.to_numpy(ln(backend.asarray(x.astype(np.float32))))
    assert y16.dtype == np.float16
    np.testing.assert_array_equal(y16, y32.astype(np.float16))
    want = torch.nn.LayerNorm(8, dtype=torch.float16)(_t(x))
    np.testing.assert_allclose(y16.astype(np.float32), _np(want).astype(np.float32), atol=1e-3)


@pytest.mark.parametrize("missing", ["weight", "bias"])
def test_layernorm_weight_bias(missing):
    """test_nn.py: test_layernorm_weight_bias. F.layer_norm with only a weight, or only a
    bias, equals PyTorch's."""
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal(3)
    weight, bias = (None, b) if missing == "weight" else (w, None)
    want = TF.layer_norm(
        _t(x), (3,), None if weight is None else _t(weight), None if bias is None else _t(bias)
    )
    np.testing.assert_allclose(F.layer_norm(x, (3,), weight, bias), want.numpy(), rtol=1e-12)


# OpInfo nn.functional.layer_norm, sample_inputs_layer_norm: (input shape, normalized_shape,
# kwargs). The sample with eps=-0.5 is in test_opinfo_layer_norm_negative_eps.
LN_SAMPLES = [
    ((1, 2, 3), (1, 2, 3), {"eps": 0.5}),
    ((1,), (1,), {}),
    ((1, 2), (2,), {}),
    ((0, 1), (1,), {}),
]


@pytest.mark.parametrize(("shape", "normalized_shape", "kwargs"), LN_SAMPLES)
def test_opinfo_layer_norm_samples(backend, shape, normalized_shape, kwargs):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape)
    w, b = rng.standard_normal(normalized_shape), rng.standard_normal(normalized_shape)
    want = TF.layer_norm(_t(x), normalized_shape, _t(w), _t(b), **kwargs)
    got = F.layer_norm(
        backend.asarray(x),
        normalized_shape,
        backend.asarray(w),
        backend.asarray(b),
        **kwargs,
        backend=backend,
    )
    np.testing.assert_allclose(backend.to_numpy(got), want.numpy(), rtol=1e-10, atol=1e-12)


def test_opinfo_layer_norm_negative_eps():
    """sample_inputs_layer_norm's ((2, 2, 3), (2, 3), eps=-0.5): PyTorch computes with it;
    normdrop refuses a non-positive eps (docs/differences.md)."""
    with pytest.raises(normdrop.InvalidParameterError, match=r"eps must be .* got -0.5"):
        F.layer_norm(np.ones((2, 2, 3)), (2, 3), eps=-0.5)


@pytest.mark.parametrize(
    ("shape", "normalized_shape", "weight", "bias", "match"),
    [
        ((1, 2, 3), (1, 2, 3), (1, 2), None, r"weight must have shape \(1, 2, 3\), got \(1, 2\)"),
        ((1, 2, 3), (1, 2, 3), None, (1, 2), r"bias must have shape \(1, 2, 3\), got \(1, 2\)"),
        ((2, 2, 3), (2, 2), None, None, r"expected input with shape \(\.\.\., 2, 2\)"),
    ],
)
def test_error_inputs_native_layer_norm(shape, normalized_shape, weight, bias, match):
    """common_methods_invocations.py: error_inputs_native_layer_norm (PyTorch: RuntimeError)."""
    w = None if weight is None else np.ones(weight)
    b = None if bias is None else np.ones(bias)
    with pytest.raises(normdrop.ShapeError, match=match):
        F.layer_norm(np.ones(shape), normalized_shape, w, b)
    with pytest.raises(RuntimeError):
        TF.layer_norm(
            torch.ones(shape),
            normalized_shape,
            None if w is None else _t(w),
            None if b is None else _t(b),
        )


def test_layernorm_non_contiguous_inputs(backend, rng):
    """test_modules.py: test_non_contiguous_tensors for LayerNorm."""
    base = rng.standard_normal((4, 6, 8))
    ln = normdrop.LayerNorm(4, dtype=np.float64, backend=backend.name)
    for x in (base[:, ::2, ::2], base[::-1, :, 1::2], np.asfortranarray(base[..., :4])):
        got = backend.to_numpy(ln(backend.asarray(x)))
        want = backend.to_numpy(ln(backend.asarray(np.ascontiguousarray(x))))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ================================================================================ Dropout
@pytest.mark.parametrize("p", [-0.1, 1.1])
def test_invalid_dropout_p(p):
    """test_dropout.py: test_invalid_dropout_p. ValueError from the layer and from
    F.dropout; normdrop's InvalidParameterError is one, naming the probability."""
    with pytest.raises(ValueError, match=r"Dropout probability must be in \[0, 1\)"):
        normdrop.Dropout(p)
    with pytest.raises(ValueError, match=r"Dropout probability must be in \[0, 1\)"):
        F.dropout(np.ones(1), p)
    with pytest.raises(ValueError):
        torch.nn.Dropout(p)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_dropout(backend, dtype):
    """test_dropout.py: _test_dropout. p=0.2 on 1000 values of 1-p: the output and the input
    gradient average 1-p within 0.05; evaluation gives the input back; repr and str work."""
    p = 0.2
    x = backend.asarray(np.full(1000, 1 - p, dtype=dtype))
    layer = normdrop.Dropout(p, seed=11, backend=backend.name)
    y = backend.to_numpy(layer(x))
    assert y.dtype == dtype
    assert abs(float(y.astype(np.float64).mean()) - (1 - p)) < 0.05
    dx = backend.to_numpy(layer.backward(x))
    assert abs(float(dx.astype(np.float64).mean()) - (1 - p)) < 0.05
    assert layer.eval()(x) is x
    assert repr(layer) == str(layer) == "Dropout(p=0.2)"


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
@pytest.mark.parametrize("p", [0.0, 1e-10])
def test_dropout_discontiguous(backend_name, p):
    """test_dropout.py: _test_dropout_discontiguous. A strided view with p=0, or p so small
    that no element is dropped, gives the input's values (p=0: the input itself)."""
    x = np.empty((2, 3, 3, 6))[..., ::2]
    x[...] = 1.0
    out = normdrop.Dropout(p, seed=0, backend=backend_name)(x)
    np.testing.assert_allclose(out, np.ones((2, 3, 3, 3)), rtol=1e-9)
    assert (out is x) == (p == 0)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_dropout_stride_mean_preserve(backend_name):
    """test_dropout.py: _test_dropout_stride_mean_preserve. For every axis permutation and
    leading slice of a permuted array, the result is laid out in the input's axis order
    (out.transpose(perm) is C-contiguous, as PyTorch's out.permute(perm)), its mean stays
    near 1, and it differs from the input unless p is tiny."""
    inp = np.ones((2, 3, 4, 5))
    for perm in itertools.permutations(range(4)):
        inverse = tuple(int(a) for a in np.argsort(perm))
        for shift in [(0, 0), (1, 0), (0, 1), (1, 1)]:
            x = np.ascontiguousarray(inp.transpose(perm)).transpose(inverse)
            x = x[shift[0] :, shift[1] :]
            for p in [1e-10, 0.3, 0.5, 0.7]:
                layer = normdrop.Dropout(p, seed=12, backend=backend_name)
                out = layer(x)
                assert out.transpose(perm).flags.c_contiguous, (perm, shift, p)
                assert abs(out.mean() - 1) <= 0.5 + 0.5
                if p == 1e-10:
                    np.testing.assert_allclose(out, x, rtol=1e-9)
                else:
                    assert not np.array_equal(out, x)
                dx = layer.backward(x)
                assert dx.transpose(perm).flags.c_contiguous, (perm, shift, p)
                np.testing.assert_array_equal(dx, out)


def test_empty_dropout(backend):
    """test_dropout.py: test_empty_dropout."""
    out = F.dropout(backend.asarray(np.array([])), backend=backend)
    assert backend.to_numpy(out).shape == (0,)


@pytest.mark.parametrize("shape", [(5, 5), (5,), ()])
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("training", [True, False])
def test_opinfo_dropout_samples(shape, p, training):
    """OpInfo nn.functional.dropout, sample_inputs_dropout: each element is 0 or x / (1 - p);
    p = 0 or evaluation returns the input itself; p = 1 in training is refused
    (docs/differences.md), and accepted (unused) in evaluation, as in PyTorch."""
    x = np.asarray(np.random.default_rng(9).standard_normal(shape) + 3.0)  # no zeros
    if training and p == 1.0:
        with pytest.raises(normdrop.InvalidParameterError, match="got 1.0"):
            F.dropout(x, p, training, seed=0)
        return
    y = F.dropout(x, p, training, seed=0)
    assert y.shape == x.shape and y.dtype == x.dtype
    if not training or p == 0.0:
        assert y is x
    else:
        kept = y != 0
        np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)


@pytest.mark.parametrize("training", [True, False])
def test_native_dropout_corner_case(backend, training):
    """test_dropout.py: test_native_dropout_corner_case, p = 0: the output and the gradient
    are the input and the incoming gradient (p = 1 is refused, see test_invalid_dropout_p)."""
    x = np.random.default_rng(10).standard_normal(5)
    layer = normdrop.Dropout(0.0, seed=0, backend=backend.name).train(training)
    xb = backend.asarray(x)
    assert layer(xb) is xb
    g = backend.asarray(np.arange(5.0))
    np.testing.assert_array_equal(backend.to_numpy(layer.backward(g)), np.arange(5.0))


# ==================================================================== every layer, container
LAYERS = {
    "BatchNorm1d": (lambda: normdrop.BatchNorm1d(3), lambda: torch.nn.BatchNorm1d(3)),
    "LayerNorm": (lambda: normdrop.LayerNorm((2, 3)), lambda: torch.nn.LayerNorm((2, 3))),
    "Dropout": (lambda: normdrop.Dropout(0.25, seed=1), lambda: torch.nn.Dropout(0.25)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_repr_is_name_and_extra_repr(name):
    """test_modules.py: test_repr, and PyTorch's Module.__repr__: ``Name(extra_repr())``.
    LayerNorm's extra_repr is PyTorch's exactly; the others show normdrop's own
    constructor arguments (docs/differences.md)."""
    layer, tlayer = LAYERS[name][0](), LAYERS[name][1]()
    assert repr(layer) == f"{name}({layer.extra_repr()})"
    expected = {
        "BatchNorm1d": "3, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True",
        "LayerNorm": tlayer.extra_repr(),
        "Dropout": "p=0.25",
    }
    assert layer.extra_repr() == expected[name]


def test_custom_layer_repr_uses_extra_repr():
    class Scale(normdrop.Module):
        def extra_repr(self) -> str:
            return "factor=2"

    class Plain(normdrop.Module):
        pass

    assert repr(Scale()) == "Scale(factor=2)"
    assert repr(Plain()) == "Plain()"
    assert repr(normdrop.Sequential(Scale())) == "Sequential(\n  (0): Scale(factor=2)\n)"


def test_sequential_repr_like_torch():
    """test_nn.py: test_repr (containers): empty and nested Sequentials print as PyTorch's."""
    assert repr(normdrop.Sequential()) == repr(torch.nn.Sequential()) == "Sequential()"
    ours = normdrop.Sequential(normdrop.Sequential(normdrop.LayerNorm(2)), normdrop.Sequential())
    theirs = torch.nn.Sequential(torch.nn.Sequential(torch.nn.LayerNorm(2)), torch.nn.Sequential())
    assert repr(ours) == repr(theirs)


def test_sequential_insert_fail_case():
    """test_nn.py: test_Sequential_insert_fail_case. An index outside [-len, len] raises
    IndexError (list.insert would clamp it) and leaves the container unchanged."""
    a, b, c = normdrop.LayerNorm(1), normdrop.LayerNorm(2), normdrop.LayerNorm(3)
    model = normdrop.Sequential(a, b, c)
    for index in (-5, 4, 10):
        with pytest.raises(IndexError, match=f"index {index} is out of range"):
            model.insert(index, normdrop.Dropout(0.1, seed=0))
    assert model.layers == [a, b, c]
    model.insert(-3, d := normdrop.Dropout(0.1, seed=0))
    model.insert(4, e := normdrop.Dropout(0.2, seed=0))
    assert model.layers == [d, a, b, c, e]
    tmodel = torch.nn.Sequential(torch.nn.LayerNorm(1))
    with pytest.raises(IndexError):
        tmodel.insert(-3, torch.nn.Dropout(0.1))


@pytest.mark.parametrize("name", list(LAYERS))
def test_pickle_and_deepcopy(name):
    """test_modules.py: test_pickle. A round trip keeps the mode, the repr and every array."""
    layer = LAYERS[name][0]()
    layer.eval()
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert repr(clone) == repr(layer) and clone.training is False
        for (k1, v1), (k2, v2) in zip(
            clone.state_dict().items(), layer.state_dict().items(), strict=True
        ):
            assert k1 == k2
            np.testing.assert_array_equal(v1, v2)


@pytest.mark.parametrize("name", list(LAYERS))
def test_state_dict_loads_into_torch_and_back(name):
    """test_modules.py: test_save_load, across libraries. normdrop's state dict loads strictly
    into the matching PyTorch module and PyTorch's into normdrop's, values unchanged."""
    layer, tlayer = LAYERS[name][0](), LAYERS[name][1]()
    rng = np.random.default_rng(13)
    for key, value in layer.state_dict().items():
        if value.dtype.kind == "f":
            getattr(layer, key)[...] = rng.random(value.shape)
    if name == "BatchNorm1d":
        layer.num_batches_tracked = np.array(5)
    tlayer.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    fresh = LAYERS[name][0]()
    fresh.load_state_dict(tlayer.state_dict())
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value)
        np.testing.assert_array_equal(tlayer.state_dict()[key].numpy(), value)


def test_load_state_dict_errors_list_every_problem_and_change_nothing():
    """test/nn/test_load_state_dict.py: test_load_state_dict. Unexpected and missing keys raise
    with strict=True (PyTorch: RuntimeError; StateDictError is one) and are returned with
    strict=False; a size mismatch raises even with strict=False; nothing is written."""
    bn = normdrop.BatchNorm1d(3)
    good = torch.nn.BatchNorm1d(3).state_dict()
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: extra"):
        bn.load_state_dict({**good, "extra": torch.zeros(1)})
    result = bn.load_state_dict({**good, "extra": torch.zeros(1)}, strict=False)
    assert result.unexpected_keys == ["extra"] and result.missing_keys == []
    partial = {k: v for k, v in good.items() if k != "weight"}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: weight"):
        bn.load_state_dict(partial)
    wrong = {k: v * 0 + 7 for k, v in torch.nn.BatchNorm1d(4).state_dict().items()}
    for strict in (True, False):
        with pytest.raises(normdrop.StateDictError, match="size mismatch for weight"):
            bn.load_state_dict(wrong, strict=strict)
    np.testing.assert_array_equal(bn.weight, np.ones(3))
    np.testing.assert_array_equal(bn.running_var, np.ones(3))


@pytest.mark.parametrize(
    ("make", "attribute", "value", "match"),
    [
        (lambda: normdrop.BatchNorm1d(3), "eps", 0.0, "eps must be a finite number > 0"),
        (lambda: normdrop.BatchNorm1d(3), "eps", -1.0, "eps must be a finite number > 0"),
        (lambda: normdrop.BatchNorm1d(3), "momentum", 2.0, r"momentum must be .* in \[0, 1\]"),
        (lambda: normdrop.BatchNorm1d(3), "track_running_stats", 1, "must be a bool"),
        (lambda: normdrop.LayerNorm(3), "eps", float("nan"), "eps must be a finite number > 0"),
        (
            lambda: normdrop.DropoutAddLayerNorm(3, 0.1, seed=0),
            "eps",
            0,
            "eps must be a finite number > 0",
        ),
    ],
)
def test_assigning_a_bad_option_raises_and_changes_nothing(make, attribute, value, match):
    """module_error_inputs_torch_nn_BatchNorm1d_2d_3d with the option set after construction:
    PyTorch 2.13 raises 'eps must be positive' at the next forward; normdrop at the
    assignment, as its constructor does, keeping the old value."""
    layer = make()
    before = getattr(layer, attribute)
    with pytest.raises(normdrop.InvalidParameterError, match=match):
        setattr(layer, attribute, value)
    assert getattr(layer, attribute) == before
    setattr(layer, attribute, before)  # a valid value is accepted


def test_assigning_valid_options_takes_effect():
    """bn.momentum = None (PyTorch's cumulative average) and a new eps work after
    construction, as in PyTorch."""
    rng = np.random.default_rng(14)
    x = rng.random((5, 2))
    bn = normdrop.BatchNorm1d(2, dtype=np.float64)
    tbn = torch.nn.BatchNorm1d(2, dtype=torch.float64)
    for layer in (bn, tbn):
        layer.momentum = None
        layer.eps = 0.5
    for batch in (x, 2 * x):
        np.testing.assert_allclose(bn(batch), _np(tbn(_t(batch))), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-12)


def test_layernorm_normalized_shape_from_a_numpy_array():
    """torch.nn.LayerNorm takes any iterable of sizes (``tuple(normalized_shape)``), so a 1-D
    integer array works; float, 2-D and empty arrays are refused."""
    ln = normdrop.LayerNorm(np.array([2, 3]))
    assert (
        ln.normalized_shape
        == (2, 3)
        == tuple(torch.nn.LayerNorm(np.array([2, 3])).normalized_shape)
    )
    assert F.layer_norm(np.ones((4, 3)), np.array([3])).shape == (4, 3)
    for bad in (
        np.array([2.0, 3.0]),
        np.array([[2, 3]]),
        np.array([], dtype=int),
        np.array([0, 3]),
    ):
        with pytest.raises(normdrop.InvalidParameterError, match="normalized_shape"):
            normdrop.LayerNorm(bad)


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda name: normdrop.BatchNorm1d(3, dtype=np.float64, backend=name), (0, 3, 2)),
        (lambda name: normdrop.BatchNorm1d(3, dtype=np.float64, backend=name), (0, 3)),
        (lambda name: normdrop.LayerNorm(5, dtype=np.float64, backend=name), (0, 5)),
        (lambda name: normdrop.LayerNorm((2, 5), dtype=np.float64, backend=name), (3, 0, 2, 5)),
        (lambda name: normdrop.Dropout(0.5, seed=0, backend=name), (0, 4)),
    ],
)
def test_module_empty_input(backend, make, shape):
    """test_nn.py: _test_module_empty_input (test_BatchNorm_empty, test_LayerNorm_empty...).
    An empty batch gives an empty output and input gradient of its shape, and zero
    parameter gradients."""
    layer = make(backend.name)
    x = backend.asarray(np.zeros(shape))
    y = backend.to_numpy(layer(x))
    dx = backend.to_numpy(layer.backward(backend.asarray(np.zeros(shape))))
    assert y.shape == shape and dx.shape == shape
    for name, grad in layer.grads.items():
        np.testing.assert_array_equal(host(backend, grad), 0, err_msg=name)


def test_dropout_non_contiguous_inputs(backend, rng):
    """test_modules.py: test_non_contiguous_tensors for Dropout. A strided view gets the mask
    of its C-ordered copy (the mask follows the logical C-order index), so the outputs are
    equal, in training and in evaluation."""
    _fast(backend)
    base = rng.standard_normal((4, 6, 8))
    for x in (base[:, ::2, 1::3], base[::-1, :, ::-2], np.asfortranarray(base)[:, 1:]):
        for training in (True, False):
            got = normdrop.Dropout(0.5, seed=3, backend=backend.name).train(training)(
                backend.asarray(x)
            )
            want = normdrop.Dropout(0.5, seed=3, backend=backend.name).train(training)(
                backend.asarray(np.ascontiguousarray(x))
            )
            np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(want))


def test_sequential_state_dict_loads_into_torch_and_back():
    """test_nn.py: test_state_dict / test_load_state_dict for nested containers: the keys of
    a nested Sequential (``1.0.weight``) are PyTorch's, and each side loads the other's."""
    ours = normdrop.Sequential(
        normdrop.BatchNorm1d(3), normdrop.Sequential(normdrop.Dropout(0.1), normdrop.LayerNorm(3))
    )
    theirs = torch.nn.Sequential(
        torch.nn.BatchNorm1d(3), torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.LayerNorm(3))
    )
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours(np.random.default_rng(15).random((4, 3)).astype(np.float32))
    ours[1][1].weight = np.array([1.0, 2.0, 3.0], np.float32)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    fresh = normdrop.Sequential(
        normdrop.BatchNorm1d(3), normdrop.Sequential(normdrop.Dropout(0.1), normdrop.LayerNorm(3))
    )
    fresh.load_state_dict(theirs.state_dict())
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=key)


def test_named_parameters_remove_duplicate():
    """test_nn.py: test_named_parameters_remove_duplicate (and the buffers' twin). A layer
    used twice in a Sequential lists its arrays once, under its first position, as PyTorch
    does, so an update loop over named_parameters() steps each array once; the state dict
    keeps both positions, as PyTorch's does."""
    ln, bn = normdrop.LayerNorm(3), normdrop.BatchNorm1d(3)
    ours = normdrop.Sequential(ln, bn, normdrop.Sequential(ln, bn))
    tln, tbn = torch.nn.LayerNorm(3), torch.nn.BatchNorm1d(3)
    theirs = torch.nn.Sequential(tln, tbn, torch.nn.Sequential(tln, tbn))
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in theirs.named_parameters()]
    assert [k for k, _ in ours.named_buffers()] == [k for k, _ in theirs.named_buffers()]
    assert len(list(ours.parameters())) == len(list(theirs.parameters())) == 4
    assert list(ours.grads) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_shared_layer_backward_matches_torch(backend_name):
    """A layer object at several positions (tied weights: torch.nn.Sequential(ln, drop,
    Sequential(ln, drop), ln)) gets each use's gradient, as PyTorch's autograd gives;
    normdrop's layers keep one saved forward pass each, and the backward used the last
    one for every position (silently wrong input and parameter gradients)."""
    rng = np.random.default_rng(16)
    x, g = rng.random((4, 3)), rng.random((4, 3))
    ln = normdrop.LayerNorm(3, dtype=np.float64, backend=backend_name)
    drop = normdrop.Dropout(0.3, seed=4, backend=backend_name)
    model = normdrop.Sequential(ln, drop, normdrop.Sequential(ln, drop), ln)
    ln.weight = np.array([1.0, 2.0, 3.0])
    y = model(x)
    dx = model.backward(g)

    tln = torch.nn.LayerNorm(3, dtype=torch.float64)
    with torch.no_grad():
        tln.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
    masks = [_t(F.dropout_mask((4, 3), 0.3, seed=4, call=k)) for k in (0, 1)]
    tx = _t(x).requires_grad_(True)
    ty = tln(tln(tln(tx) * masks[0] / 0.7) * masks[1] / 0.7)
    ty.backward(_t(g))
    np.testing.assert_allclose(y, _np(ty), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.grads["0.weight"], tln.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(model.grads["0.bias"], tln.bias.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("name", ["BatchNorm1d", "LayerNorm"])
def test_reset_parameters_like_torch(name):
    """torch.nn.BatchNorm1d/LayerNorm.reset_parameters (used by test_modules.py's
    test_to_empty and test_factory_kwargs): after training steps and changed weights, the
    state dict is the fresh layer's again (BatchNorm: running statistics and count too)."""
    layer, tlayer = LAYERS[name][0](), LAYERS[name][1]()
    rng = np.random.default_rng(17)
    shape = (4, 3) if name == "BatchNorm1d" else (4, 2, 3)
    x = rng.random(shape).astype(np.float32)
    layer(x)
    tlayer(_t(x))
    layer.weight = np.full(layer.weight.shape, 3.0, np.float32)
    with torch.no_grad():
        tlayer.weight.fill_(3.0)
    layer.reset_parameters()
    tlayer.reset_parameters()
    fresh = LAYERS[name][0]().state_dict()
    for key, value in tlayer.state_dict().items():
        np.testing.assert_array_equal(layer.state_dict()[key], value.numpy(), err_msg=key)
        np.testing.assert_array_equal(layer.state_dict()[key], fresh[key], err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["BatchNorm1d", "LayerNorm"])
def test_factory_kwargs_dtype(name, dtype):
    """test_modules.py: test_factory_kwargs. dtype= sets every floating parameter, buffer and
    gradient; num_batches_tracked stays int64, as in PyTorch."""
    cls, tcls = getattr(normdrop, name), getattr(torch.nn, name)
    layer, tlayer = cls(3, dtype=dtype), tcls(3, dtype=TORCH_DTYPE[dtype])
    ours, theirs = layer.state_dict(), tlayer.state_dict()
    assert {k: str(v.dtype) for k, v in ours.items()} == {
        k: str(v.dtype).replace("torch.", "") for k, v in theirs.items()
    }
    assert all(g.dtype == dtype for g in layer.grads.values())


def test_batchnorm_simple_average_float16_input():
    """test_nn.py: _test_batchnorm_simple_average with float16 data on a float32 layer (the
    mixed case PyTorch runs on GPUs): the running statistics stay float32 and momentum=None
    averages the two batches."""
    rng = np.random.default_rng(18)
    data1 = rng.random((4, 3)).astype(np.float16)
    data2 = rng.random((4, 3)).astype(np.float16)
    bn = normdrop.BatchNorm1d(3, momentum=None)
    alone = []
    for data in (data1, data2):
        bn.reset_running_stats()
        assert bn(data).dtype == np.float16
        alone.append(bn.running_mean.copy())
    bn.reset_running_stats()
    bn(data1)
    bn(data2)
    assert bn.running_mean.dtype == np.float32
    np.testing.assert_allclose(bn.running_mean, (alone[0] + alone[1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(alone[0], data1.astype(np.float64).mean(0), rtol=1e-6)
