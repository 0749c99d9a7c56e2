"""Other projects' tests of batch norm, layer norm and dropout, ported to normdrop.

Each test names its source: a repository and a test in it (tinygrad, MLX, numpy-ml,
Flax, Keras, and PyTorch's functional tests). Where a project's convention differs
from PyTorch's (Keras' and Flax's ``momentum`` is the weight of the *old* running
value, Flax stores the biased variance, channels-last layouts), the port checks the
property the test is about in PyTorch's terms, which SPEC.md follows. The numbers come
from PyTorch (installed for the tests) or from a formula written out in the test, never
from normdrop itself. Where normdrop departs from PyTorch on purpose, the port checks
normdrop's documented behaviour (docs/differences.md) and says so.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, host, skip_on_slow_backend, tol, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _fast(backend):
    skip_on_slow_backend(backend, "too many elements for the CUDA simulator")


def _ln_formula(x, ndim, weight=None, bias=None, eps=1e-5):
    """Layer norm over the last ``ndim`` axes in float64: PyTorch's reference_layer_norm
    (common_methods_invocations.py), also MLX's test_fast.py ``layer_norm``."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - ndim, x.ndim))
    y = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


# ================================================================================ tinygrad
# tinygrad/tinygrad test/backend/test_nn.py (TestNN) and test/backend/test_tensor.py,
# test/backend/test_edgecases.py.


@pytest.mark.parametrize("track", [True, False], ids=["tracking", "no_running_stats"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "training"])
def test_tinygrad_batchnorm(backend, training, track):
    """tinygrad test_nn.py: test_batchnorm2d / _training / _no_running_stats /
    _training_no_running_stats (and the 3d twins), with BatchNorm1d on (2, C, 3): random
    weight, bias and running statistics (variances clipped at 0, so some are exactly 0);
    the output and the running statistics after the call equal torch's."""
    rng = np.random.default_rng(100)
    for size in (4, 8):
        bn = normdrop.BatchNorm1d(size, track_running_stats=track, backend=backend.name)
        tbn = torch.nn.BatchNorm1d(size, track_running_stats=track).train(training)
        bn.train(training)
        weight, bias = rng.standard_normal((2, size)).astype(np.float32)
        bn.weight, bn.bias = vec(backend, weight), vec(backend, bias)
        with torch.no_grad():
            tbn.weight.copy_(_t(weight))
            tbn.bias.copy_(_t(bias))
        if track:
            mean = rng.standard_normal(size).astype(np.float32)
            var = np.maximum(rng.standard_normal(size), 0).astype(np.float32)
            bn.running_mean, bn.running_var = vec(backend, mean), vec(backend, var)
            tbn.running_mean.copy_(_t(mean))
            tbn.running_var.copy_(_t(var))
        x = rng.standard_normal((2, size, 3)).astype(np.float32)
        out = backend.to_numpy(bn(backend.asarray(x)))
        np.testing.assert_allclose(out, _np(tbn(_t(x))), rtol=5e-4, atol=1e-5)
        if track:
            for name in ("running_mean", "running_var"):
                np.testing.assert_allclose(
                    host(backend, getattr(bn, name)),
                    getattr(tbn, name).numpy(),
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=name,
                )


def test_tinygrad_batchnorm_negative_running_var_is_nan_like_torch(backend):
    """tinygrad test_nn.py: test_batchnorm2d sets ``running_var`` from randn and means to clip
    it at 0, but clips a copy, so negative variances reach the layer; torch then gives NaN
    where ``var + eps < 0``, silently, and so must normdrop (the numpy and dask backends
    warned 'invalid value encountered in power'; the CUDA simulator raised ValueError)."""
    var = np.array([-1.0, 0.0, 1.0, -1e-6], np.float32)
    x = np.random.default_rng(101).standard_normal((3, 4)).astype(np.float32)
    bn = normdrop.BatchNorm1d(4, backend=backend.name).eval()
    bn.running_var = vec(backend, var)
    tbn = torch.nn.BatchNorm1d(4).eval()
    tbn.running_var.copy_(_t(var))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = backend.to_numpy(bn(backend.asarray(x)))
    want = _np(tbn(_t(x)))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    assert np.isnan(out[:, 0]).all() and not np.isnan(out[:, 1:]).any()
    np.testing.assert_allclose(out[:, 1:], want[:, 1:], rtol=1e-5, atol=1e-5)


def test_tinygrad_layernorm(backend):
    """tinygrad test_nn.py: test_layernorm. LayerNorm([H, W]) on (N, C, H, W), ten forward
    passes each followed by ``z.sum().backward()`` (here three, smaller): outputs and input
    gradients equal torch's, and the parameter gradients accumulate across the passes as
    torch's ``.grad`` does (no zero_grad in between)."""
    rng = np.random.default_rng(102)
    n, c, h, w = 3, 2, 4, 5
    layer = normdrop.LayerNorm([h, w], backend=backend.name)
    tlayer = torch.nn.LayerNorm([h, w])
    for _ in range(3):
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        z = backend.to_numpy(layer(backend.asarray(x)))
        dx = backend.to_numpy(layer.backward(backend.asarray(np.ones_like(x))))
        tx = _t(x).requires_grad_(True)
        tz = tlayer(tx)
        tz.sum().backward()
        np.testing.assert_allclose(z, _np(tz), atol=5e-6, rtol=5e-6)
        np.testing.assert_allclose(dx, tx.grad.numpy(), atol=5e-4, rtol=5e-4)
        for name in ("weight", "bias"):
            np.testing.assert_allclose(
                host(backend, layer.grads[name]),
                getattr(tlayer, name).grad.numpy(),
                atol=5e-4,
                rtol=5e-4,
                err_msg=name,
            )


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_tinygrad_dropout_keep_fraction(backend_name):
    """tinygrad test_tensor.py: test_dropout. One million ones at rate 0.1 keep
    n * (1 - rate) of them within a relative 2e-3."""
    n, rate = 1_000_000, 0.1
    w = F.dropout(np.ones(n, np.float32), rate, True, seed=5, backend=backend_name)
    np.testing.assert_allclose(np.count_nonzero(w), n * (1 - rate), rtol=2e-3)


def test_tinygrad_dropout_rate_one():
    """tinygrad test_edgecases.py: test_dropout_rate_one. torch zeroes everything at p = 1;
    normdrop refuses p = 1 in training (SPEC, docs/differences.md), in the layer and in
    the function, and accepts it (unused) in evaluation, as torch does."""
    np.testing.assert_array_equal(TF.dropout(torch.ones(100), 1.0, True).numpy(), np.zeros(100))
    with pytest.raises(normdrop.InvalidParameterError, match=r"must be in \[0, 1\), got 1.0"):
        normdrop.Dropout(1.0)
    with pytest.raises(normdrop.InvalidParameterError, match=r"must be in \[0, 1\), got 1.0"):
        F.dropout(np.ones(100), 1.0, True, seed=0)
    x = np.ones(100)
    assert F.dropout(x, 1.0, False) is x


def test_tinygrad_dropout_invalid_prob():
    """tinygrad test_edgecases.py: test_dropout_invalid_prob. A negative rate raises
    ValueError in torch and in normdrop (InvalidParameterError is one), with training on
    or off."""
    with pytest.raises(ValueError):
        TF.dropout(torch.ones(10), -0.1, True)
    for training in (True, False):
        with pytest.raises(ValueError, match="got -0.1"):
            F.dropout(np.ones(10), -0.1, training, seed=0)


def test_tinygrad_load_num_batches_tracked():
    """tinygrad test_nn.py: test_load_conv_num_batches_tracked. tinygrad's BatchNorm keeps
    ``num_batches_tracked`` as a 1-element vector. Into a layer without running statistics
    the key is unexpected (torch and normdrop: strict raises RuntimeError, strict=False
    reports it); into one with them, a shape-(1,) value loads into the 0-d counter, by
    torch's rule for 1-D values of 0-d buffers (normdrop raised a size mismatch)."""
    state = {"weight": np.ones(1, np.float32), "bias": np.ones(1, np.float32)}
    state["num_batches_tracked"] = np.ones(1, np.int64)
    bn = normdrop.BatchNorm1d(1, track_running_stats=False)
    tbn = torch.nn.BatchNorm1d(1, track_running_stats=False)
    tstate = {k: _t(v) for k, v in state.items()}
    with pytest.raises(RuntimeError, match="Unexpected key"):
        tbn.load_state_dict(tstate)
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\) in state_dict: num_batches"):
        bn.load_state_dict(state)
    assert bn.load_state_dict(state, strict=False).unexpected_keys == ["num_batches_tracked"]
    assert tbn.load_state_dict(tstate, strict=False).unexpected_keys == ["num_batches_tracked"]

    full = {**state, "running_mean": np.zeros(1, np.float32), "running_var": np.ones(1, np.float32)}
    full["num_batches_tracked"] = np.array([7])
    tbn = torch.nn.BatchNorm1d(1)
    tbn.load_state_dict({k: _t(v) for k, v in full.items()})
    for value in (full["num_batches_tracked"], torch.tensor([7])):
        bn = normdrop.BatchNorm1d(1)
        assert repr(bn.load_state_dict({**full, "num_batches_tracked": value})) == repr(
            tbn.load_state_dict({k: _t(v) for k, v in full.items()})
        )
        assert bn.num_batches_tracked.shape == tuple(tbn.num_batches_tracked.shape) == ()
        assert int(bn.num_batches_tracked) == int(tbn.num_batches_tracked) == 7
    for bad in (np.array([7, 8]), np.array([[7]])):
        with pytest.raises(normdrop.StateDictError, match="size mismatch for num_batches"):
            normdrop.BatchNorm1d(1).load_state_dict({**full, "num_batches_tracked": bad})
        with pytest.raises(RuntimeError, match="size mismatch for num_batches"):
            torch.nn.BatchNorm1d(1).load_state_dict(
                {**{k: _t(v) for k, v in full.items()}, "num_batches_tracked": _t(bad)}
            )


# ===================================================================================== MLX
# ml-explore/mlx python/tests/test_nn.py (TestLayers) and python/tests/test_fast.py.


@pytest.mark.parametrize(
    "make", [normdrop.LayerNorm, normdrop.BatchNorm1d], ids=["LayerNorm", "BatchNorm1d"]
)
def test_mlx_norm_eps_validation(make):
    """MLX test_nn.py: test_norm_eps_validation. eps -1, -1e-30 and 0 raise ValueError at
    construction (normdrop's InvalidParameterError is one); 1e-30, 1e-5 and 1 construct,
    and the tiny eps gives finite output."""
    for eps in (-1.0, -1e-30, 0.0):
        with pytest.raises(ValueError, match="eps must be a finite number > 0"):
            make(16, eps=eps)
    x = np.random.default_rng(110).standard_normal((4, 16))
    for eps in (1e-30, 1e-5, 1.0):
        assert np.isfinite(make(16, eps=eps, dtype=np.float64)(x)).all()


@pytest.mark.parametrize("shape", [(5, 4), (2, 5, 4)])
def test_mlx_batch_norm_matches_torch(backend, shape):
    """MLX test_nn.py: test_batch_norm_matches_torch. Random weight and bias, one training
    call (output, running mean and variance) then evaluation, against
    torch.nn.BatchNorm1d (MLX's (N, L, C) input is torch's (N, C, L) transposed; here
    it is given in torch's layout)."""
    rng = np.random.default_rng(0)
    c = shape[1]
    x = rng.normal(size=shape).astype(np.float32)
    weight, bias = rng.normal(size=(2, c)).astype(np.float32)
    bn = normdrop.BatchNorm1d(c, eps=1e-5, momentum=0.1, backend=backend.name)
    bn.weight, bn.bias = vec(backend, weight), vec(backend, bias)
    tbn = torch.nn.BatchNorm1d(c, eps=1e-5, momentum=0.1)
    with torch.no_grad():
        tbn.weight.copy_(_t(weight))
        tbn.bias.copy_(_t(bias))
    for training in (True, False):
        bn.train(training)
        tbn.train(training)
        y = backend.to_numpy(bn(backend.asarray(x)))
        np.testing.assert_allclose(y, _np(tbn(_t(x))), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(
            host(backend, bn.running_mean), tbn.running_mean.numpy(), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            host(backend, bn.running_var), tbn.running_var.numpy(), rtol=1e-4, atol=1e-4
        )


def test_mlx_batch_norm_no_affine_and_bad_rank(backend):
    """MLX test_nn.py: test_batch_norm. Without affine the training output equals the
    affine layer's at initialisation (weight 1, bias 0); running statistics start at 0
    and 1; a rank-5 input raises ValueError (torch's BatchNorm1d: ValueError for any rank
    but 2 and 3; normdrop: ShapeError) and changes nothing."""
    rng = np.random.default_rng(42)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    affine = normdrop.BatchNorm1d(4, backend=backend.name)
    plain = normdrop.BatchNorm1d(4, affine=False, backend=backend.name)
    np.testing.assert_array_equal(host(backend, affine.running_mean), np.zeros(4))
    np.testing.assert_array_equal(host(backend, affine.running_var), np.ones(4))
    np.testing.assert_array_equal(
        backend.to_numpy(plain(backend.asarray(x))), backend.to_numpy(affine(backend.asarray(x)))
    )
    np.testing.assert_allclose(
        backend.to_numpy(plain(backend.asarray(x))),
        _np(torch.nn.BatchNorm1d(4, affine=False)(_t(x))),
        **tol(np.float32, "torch"),
    )
    before = host(backend, plain.running_mean).copy()
    for shape in [(2, 4, 5, 4, 5), (2, 4, 2, 2), (4,)]:
        bad = rng.normal(size=shape).astype(np.float32)
        with pytest.raises(ValueError):
            torch.nn.BatchNorm1d(4)(_t(bad))
        with pytest.raises(normdrop.ShapeError, match="2D"):
            plain(backend.asarray(bad))
    np.testing.assert_array_equal(host(backend, plain.running_mean), before)
    assert int(plain.num_batches_tracked) == 2


def test_mlx_batch_norm_stats(backend):
    """MLX test_nn.py: test_batch_norm_stats. In training the output has mean 0 and
    variance 1 per channel; the running statistics have shape (C,); a single sample
    (1, C) raises ValueError."""
    data = np.random.default_rng(111).normal(size=(2, 4, 9)).astype(np.float32)
    bn = normdrop.BatchNorm1d(4, backend=backend.name)
    out = backend.to_numpy(bn(backend.asarray(data))).astype(np.float64)
    np.testing.assert_allclose(out.mean(axis=(0, 2)), np.zeros(4), atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 2)), np.ones(4), atol=1e-2)
    assert host(backend, bn.running_mean).shape == host(backend, bn.running_var).shape == (4,)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        normdrop.BatchNorm1d(4, backend=backend.name)(backend.asarray(data[:1, :, 0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_mlx_dropout_keeps_shape_and_dtype(backend, dtype):
    """MLX test_nn.py: test_dropout. Dropout(0.5) on ones keeps the shape and the dtype
    (float16 too; MLX's bfloat16 has no NumPy dtype), and every value is 0 or 2."""
    x = backend.asarray(np.ones((2, 4), dtype))
    y = backend.to_numpy(normdrop.Dropout(0.5, seed=1, backend=backend.name)(x))
    assert y.shape == (2, 4) and y.dtype == dtype
    assert set(np.unique(y).tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize(("dtype", "atol"), [(np.float32, 1e-5), (np.float16, 5e-3)])
@pytest.mark.parametrize("shape", [(2, 31), (2, 32), (2, 33), (4099,)])
def test_mlx_fast_layer_norm(backend, dtype, atol, shape):
    """MLX test_fast.py: test_layer_norm. F.layer_norm with weight and bias, weight only,
    bias only and neither, over 31, 32, 33 and (1-D input) 4099 features, within MLX's
    per-dtype tolerance of the float64 formula; the dtype is kept."""
    if backend.name in SLOW_BACKENDS and shape == (4099,):
        pytest.skip("4099 features: too many threads for the CUDA simulator")
    rng = np.random.default_rng(112)
    dims = shape[-1]
    x = rng.uniform(size=shape).astype(dtype)
    w, b = rng.uniform(size=(2, dims)).astype(dtype)
    for weight, bias in ((w, b), (w, None), (None, b), (None, None)):
        y = F.layer_norm(
            backend.asarray(x),
            dims,
            vec(backend, weight),
            vec(backend, bias),
            1e-5,
            backend=backend,
        )
        y = backend.to_numpy(y)
        assert y.dtype == dtype
        want = _ln_formula(x, 1, weight, bias)
        assert np.abs(y.astype(np.float64) - want).max() < atol


def test_mlx_layer_norm_dim_check():
    """MLX test_fast.py: test_layer_norm_dim_check. A weight or bias of 129 values for 128
    features raises ValueError (torch: RuntimeError; normdrop: ShapeError, a ValueError)."""
    x = np.random.default_rng(113).integers(0, 10, (4, 128)).astype(np.float32)
    for kwargs in ({"weight": np.ones(129, np.float32)}, {"bias": np.ones(129, np.float32)}):
        with pytest.raises(ValueError, match=r"must have shape \(128,\), got \(129,\)"):
            F.layer_norm(x, 128, **kwargs)
        with pytest.raises(RuntimeError):
            TF.layer_norm(_t(x), (128,), **{k: _t(v) for k, v in kwargs.items()})


def test_mlx_slice_into_layer_norm(backend):
    """MLX test_fast.py: test_slice_into_layer_norm. A slice that starts inside the data
    (``x[:, 99:]`` of (8, 100, 128); here ``x[:, 9:]`` of (4, 10, 16)) normalises like its
    copy."""
    x = np.random.default_rng(114).uniform(size=(4, 10, 16)).astype(np.float32)[:, 9:]
    y = backend.to_numpy(F.layer_norm(backend.asarray(x), 16, backend=backend))
    assert np.abs(y - _ln_formula(x, 1)).max() < 1e-4


@pytest.mark.parametrize("params", ["weight_and_bias", "weight_only", "none"])
def test_mlx_layer_norm_grad(backend, params):
    """MLX test_fast.py: test_layer_norm_grad, _grad_no_bias, _grad_no_params,
    _grad_params. The gradients of ``(layer_norm(x, w, b) * y).sum()`` with respect to x,
    w and b equal torch autograd's (MLX compares its fused kernel with the formula)."""
    rng = np.random.default_rng(115)
    d = 32
    x = rng.uniform(size=(2, 5, d)).astype(np.float32)
    y = rng.uniform(size=(2, 5, d)).astype(np.float32)
    w, b = rng.uniform(size=(2, d)).astype(np.float32)
    kwargs = {
        "weight_and_bias": {},
        "weight_only": {"bias": False},
        "none": {"elementwise_affine": False},
    }[params]
    layer = normdrop.LayerNorm(d, **kwargs, backend=backend.name)
    tlayer = torch.nn.LayerNorm(d, **kwargs)
    if layer.weight is not None:
        layer.weight = vec(backend, w)
        with torch.no_grad():
            tlayer.weight.copy_(_t(w))
    if layer.bias is not None:
        layer.bias = vec(backend, b)
        with torch.no_grad():
            tlayer.bias.copy_(_t(b))
    layer(backend.asarray(x))
    gx = backend.to_numpy(layer.backward(backend.asarray(y)))
    tx = _t(x).requires_grad_(True)
    (tlayer(tx) * _t(y)).sum().backward()
    np.testing.assert_allclose(gx, tx.grad.numpy(), atol=1e-5, rtol=1e-4)
    assert sorted(layer.grads) == sorted(name for name, _ in tlayer.named_parameters())
    for name, param in tlayer.named_parameters():
        got = host(backend, layer.grads[name])
        assert np.abs(got - param.grad.numpy()).max() / np.abs(param.grad.numpy()).mean() < 1e-5


# ================================================================================ numpy-ml
# ddbourgin/numpy-ml numpy_ml/tests/test_nn.py, with its torch gold models
# (numpy_ml/tests/nn_torch_models.py: TorchBatchNormLayer, TorchLayerNormLayer).


def _numpy_ml_random_tensor(rng, shape):
    """numpy_ml/utils/testing.py: random_tensor(shape, standardize=True)."""
    x = rng.random(shape) + rng.integers(-300, 300, shape)
    return (x - x.mean(axis=0)) / (x.std(axis=0) + np.finfo(float).eps)


@pytest.mark.parametrize("name", ["BatchNorm1d", "LayerNorm"])
def test_numpy_ml_norm_1d_against_torch(backend, name):
    """numpy-ml test_nn.py: test_BatchNorm1D and test_LayerNorm1D. Random (n_ex, n_in)
    standardised data (n_in may be 1), loss = y.sum(): the output, the input gradient,
    the weight and bias gradients (and BatchNorm's running mean) equal torch's. numpy-ml's
    momentum 0.9 (weight of the old value) is torch's 0.1, the default."""
    _fast(backend)
    rng = np.random.default_rng(12345)
    for n_ex, n_in in [(2, 1), (7, 1), (3, 5), (16, 9), (40, 3)]:
        x = _numpy_ml_random_tensor(rng, (n_ex, n_in))
        layer = getattr(normdrop, name)(n_in, dtype=np.float64, backend=backend.name)
        tlayer = getattr(torch.nn, name)(n_in, dtype=torch.float64)
        y = backend.to_numpy(layer(backend.asarray(x)))
        dx = backend.to_numpy(layer.backward(backend.asarray(np.ones_like(y))))
        tx = _t(x).requires_grad_(True)
        ty = tlayer(tx)
        ty.sum().backward()
        close = tol(np.float64, "torch", 100)
        np.testing.assert_allclose(y, _np(ty), **close)
        np.testing.assert_allclose(dx, tx.grad.numpy(), **close)
        for key in ("weight", "bias"):
            want = getattr(tlayer, key).grad.numpy()
            np.testing.assert_allclose(host(backend, layer.grads[key]), want, **close)
        if name == "BatchNorm1d":
            np.testing.assert_allclose(
                host(backend, layer.running_mean), tlayer.running_mean.numpy(), **close
            )
            np.testing.assert_allclose(
                host(backend, layer.running_var), tlayer.running_var.numpy(), **close
            )


# ==================================================================================== Flax
# google/flax tests/linen/linen_test.py: NormalizationTest and StochasticTest.


def test_flax_batch_norm(backend):
    """Flax linen_test.py: NormalizationTest.test_batch_norm (test_mask=False). Flax's
    momentum=0.9 is torch's 0.1. Training output: mean 0 and variance 1 per channel; the
    running mean is 0.1 * the batch mean and the running variance 0.9 + 0.1 * the batch
    variance, which torch (and SPEC) take unbiased where Flax takes it biased. Flax's
    (4, 3, 2) channels-last input is torch's (4, 2, 3)."""
    x = np.random.default_rng(120).normal(size=(4, 2, 3))
    bn = normdrop.BatchNorm1d(2, momentum=0.1, dtype=np.float64, backend=backend.name)
    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(y.mean((0, 2)), [0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(y.var((0, 2)), [1.0, 1.0], rtol=1e-4)
    np.testing.assert_allclose(
        host(backend, bn.running_mean), 0.1 * x.mean((0, 2)), rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(
        host(backend, bn.running_var), 0.9 + 0.1 * x.var((0, 2), ddof=1), rtol=1e-12
    )


@pytest.mark.parametrize("large_mean", [False, True], ids=["fast_variance", "mean_1e6"])
@pytest.mark.parametrize("normalized_shape", [(4,), (3, 4), (2, 3, 4)])
def test_flax_layer_norm(backend, normalized_shape, large_mean):
    """Flax linen_test.py: NormalizationTest.test_layer_norm. Without scale and bias,
    normalising (2, 3, 4) data over the trailing axes (Flax's reduction_axes -1, (1, 2),
    (0, 1, 2); its lone middle axis has no LayerNorm equivalent) keeps the shape and dtype
    and matches the one-line formula; with 1e6 added (use_fast_variance=False, "this
    blows up fast variance") it still does, in float32 (torch's float32 kernel does not:
    docs/differences.md)."""
    x = np.random.default_rng(121).normal(size=(2, 3, 4)).astype(np.float32)
    if large_mean:
        x += np.float32(1e6)
    ln = normdrop.LayerNorm(
        normalized_shape, eps=1e-5, elementwise_affine=False, backend=backend.name
    )
    y = backend.to_numpy(ln(backend.asarray(x)))
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_allclose(y, _ln_formula(x, len(normalized_shape)), atol=1e-3, rtol=1e-3)


def test_flax_dropout_masks_follow_the_key(backend):
    """Flax linen_test.py: StochasticTest.test_dropout and test_dropout_manual_rng.
    Different seeds give different masks, the same seed gives the same mask (two layers,
    or the function); in evaluation the output is the input whatever the seed."""
    x = backend.asarray(np.ones((20, 20)))
    y1 = backend.to_numpy(normdrop.Dropout(0.5, seed=1, backend=backend.name)(x))
    y2 = backend.to_numpy(normdrop.Dropout(0.5, seed=2, backend=backend.name)(x))
    assert not np.array_equal(y1, y2)
    y3 = backend.to_numpy(normdrop.Dropout(0.5, seed=1, backend=backend.name)(x))
    np.testing.assert_array_equal(y1, y3)
    np.testing.assert_array_equal(
        y1, backend.to_numpy(F.dropout(x, 0.5, True, seed=1, backend=backend))
    )
    for seed in (1, 2):
        assert normdrop.Dropout(0.5, seed=seed, backend=backend.name).eval()(x) is x


def test_flax_dropout_rate_stats(backend):
    """Flax linen_test.py: StochasticTest.test_dropout_rate_stats. For rates 0.1 ... 0.9,
    ten (100, 100) calls keep a fraction within 4 sigma of 1 - rate."""
    _fast(backend)
    x = backend.asarray(np.ones((100, 100), np.float32))
    for k, rate in enumerate(np.arange(0.1, 1.0, 0.1)):
        layer = normdrop.Dropout(float(rate), seed=1000 + k, backend=backend.name)
        kept = sum(int(np.sum(backend.to_numpy(layer(x)) > 0)) for _ in range(10))
        total = 100 * 100 * 10
        delta = 4 * np.sqrt(rate * (1 - rate)) / np.sqrt(total)
        assert abs(kept / total - (1 - rate)) < delta, rate


def test_flax_dropout_rate_limits(backend):
    """Flax linen_test.py: StochasticTest.test_dropout_rate_limits. Rate 0 in training
    gives the input (the object itself, as in torch) and a backward of ones gives ones;
    rate 1 zeroes everything in Flax and torch, and is refused by normdrop (SPEC,
    docs/differences.md)."""
    x = backend.asarray(np.ones((20, 20)))
    layer = normdrop.Dropout(0.0, seed=0, backend=backend.name)
    assert layer(x) is x
    np.testing.assert_array_equal(backend.to_numpy(layer.backward(x)), np.ones((20, 20)))
    with pytest.raises(normdrop.InvalidParameterError, match="got 1.0"):
        normdrop.Dropout(1.0, backend=backend.name)


# =================================================================================== Keras
# keras-team/keras keras/src/layers/normalization/batch_normalization_test.py,
# layer_normalization_test.py, keras/src/layers/regularization/dropout_test.py and
# keras/src/ops/nn_test.py.


@pytest.mark.parametrize("shape", [(5, 2, 3), (15, 3)])
@pytest.mark.parametrize("init_mean", [0.0, 1.0])
@pytest.mark.parametrize("init_var", [0.0, 1.0])
def test_keras_batch_norm_correctness(backend, shape, init_mean, init_var):
    """Keras batch_normalization_test.py: test_correctness. Keras' momentum=0 keeps only
    the new batch: torch's momentum=1. Three training passes on data with mean 5 and
    std 10 (running statistics starting at 0 or 1): (out - bias) / weight has mean 0 and
    std 1; the running mean is the last batch's (about 0) and the running variance its
    unbiased variance (Keras: biased, 1; torch's: n/(n-1)). Evaluation before the next
    training call differs from training; after it, evaluation normalises with that
    batch's mean and unbiased variance (Keras: equals the training output)."""
    rng = np.random.default_rng(130)
    c = shape[1]
    n = shape[0] * (shape[2] if len(shape) == 3 else 1)
    axes = (0, 2) if len(shape) == 3 else (0,)
    bshape = (1, c, 1) if len(shape) == 3 else (1, c)
    bn = normdrop.BatchNorm1d(c, momentum=1.0, dtype=np.float64, backend=backend.name)
    bn.running_mean = vec(backend, np.full(c, init_mean))
    bn.running_var = vec(backend, np.full(c, init_var))
    weight = host(backend, bn.weight).reshape(bshape)
    bias = host(backend, bn.bias).reshape(bshape)
    x = rng.normal(loc=5.0, scale=10.0, size=shape)
    out = x
    for _ in range(3):
        previous = out
        out = backend.to_numpy(bn(backend.asarray(out)))
    normed = (out - bias) / weight
    np.testing.assert_allclose(normed.mean(axes), 0.0, atol=1e-3)
    np.testing.assert_allclose(normed.std(axes), 1.0, atol=1e-3)
    np.testing.assert_allclose(host(backend, bn.running_mean), 0.0, atol=1e-3)
    np.testing.assert_allclose(
        host(backend, bn.running_var), previous.var(axes, ddof=1), rtol=1e-12
    )
    np.testing.assert_allclose(host(backend, bn.running_var), n / (n - 1), atol=1e-3)

    inference = backend.to_numpy(bn.eval()(backend.asarray(x)))
    training = backend.to_numpy(bn.train()(backend.asarray(x)))
    assert not np.allclose(inference, training, atol=1e-3)
    training = backend.to_numpy(bn(backend.asarray(x)))
    inference = backend.to_numpy(bn.eval()(backend.asarray(x)))
    mean, var = x.mean(axes).reshape(bshape), x.var(axes, ddof=1).reshape(bshape)
    np.testing.assert_allclose(inference, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-10)
    scale = np.sqrt((x.var(axes).reshape(bshape) + 1e-5) / (var + 1e-5))
    np.testing.assert_allclose(inference, training * scale, rtol=1e-10, atol=1e-12)


def test_keras_batch_norm_momentum_zero_keeps_running_stats(backend):
    """Keras batch_normalization_test.py: test_trainable_behavior's frozen layer keeps its
    moving statistics. In torch's terms that is momentum=0: training normalises with the
    batch statistics but leaves the running statistics as they were, and still counts
    the batch."""
    x = np.random.default_rng(131).normal(loc=5.0, scale=10.0, size=(20, 3, 2))
    bn = normdrop.BatchNorm1d(3, momentum=0.0, dtype=np.float64, backend=backend.name)
    tbn = torch.nn.BatchNorm1d(3, momentum=0.0, dtype=torch.float64)
    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(y, _np(tbn(_t(x))), **tol(np.float64, "torch"))
    np.testing.assert_array_equal(host(backend, bn.running_mean), np.zeros(3))
    np.testing.assert_array_equal(host(backend, bn.running_var), np.ones(3))
    assert int(bn.num_batches_tracked) == int(tbn.num_batches_tracked) == 1


def test_keras_batch_norm_constant_input(backend):
    """Keras batch_normalization_test.py: test_masked_broadcast_normalization (ones of
    shape (1, 2, 3, 4), channels last, momentum=0 i.e. torch's 1, epsilon=1e-3) and
    test_input_fully_masked (zeros, no center or scale): a constant channel normalises to
    exactly 0 (SPEC: exactly ``bias``), the running mean becomes the constant and the
    running variance 0, as in torch."""
    ones = np.ones((1, 2, 3, 4), np.float32).reshape(6, 4)  # (N, H, W, C) as (N*H*W, C)
    bn = normdrop.BatchNorm1d(4, eps=1e-3, momentum=1.0, backend=backend.name)
    tbn = torch.nn.BatchNorm1d(4, eps=1e-3, momentum=1.0)
    y = backend.to_numpy(bn(backend.asarray(ones)))
    np.testing.assert_array_equal(y, np.zeros((6, 4)))
    np.testing.assert_allclose(y, _np(tbn(_t(ones))), atol=1e-6)
    np.testing.assert_array_equal(host(backend, bn.running_mean), np.ones(4))
    np.testing.assert_array_equal(host(backend, bn.running_var), np.zeros(4))
    np.testing.assert_array_equal(tbn.running_var.numpy(), np.zeros(4))
    plain = normdrop.BatchNorm1d(5, affine=False, backend=backend.name)
    zeros = backend.asarray(np.zeros((4, 5), np.float32))
    np.testing.assert_array_equal(backend.to_numpy(plain(zeros)), np.zeros((4, 5)))


def test_keras_ops_batch_normalization(backend):
    """Keras ops/nn_test.py: NNOpsCorrectnessTest.test_batch_normalization. Normalising
    with given statistics (torch: F.batch_norm in evaluation) with offset (bias) and scale
    (weight), and without; a 4-D input keeps its shape. Keras' channels-last axis=-1 of
    2-D data is torch's axis 1."""
    x = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mean, variance = np.array([0.2, 0.3, 0.4]), np.array([4.0, 16.0, 64.0])
    offset, scale = np.array([5.0, 10.0, 15.0]), np.array([10.0, 20.0, 30.0])

    def run(*args, **kwargs):
        out = F.batch_norm(
            backend.asarray(args[0]),
            *(vec(backend, a) for a in args[1:]),
            **kwargs,
            backend=backend,
        )
        return backend.to_numpy(out)

    out = run(x, mean, variance, scale, offset, eps=1e-7)
    np.testing.assert_allclose(out, [[4.5, 9.5, 14.625], [6.0, 11.0, 15.75]], rtol=1e-6)
    want = TF.batch_norm(_t(x), _t(mean), _t(variance), _t(scale), _t(offset), eps=1e-7)
    np.testing.assert_allclose(out, want.numpy(), rtol=1e-12)
    out = run(x, mean, variance, eps=1e-7)
    np.testing.assert_allclose(out, [[-0.05, -0.025, -0.0125], [0.1, 0.05, 0.025]], rtol=1e-6)
    np.testing.assert_array_equal(mean, [0.2, 0.3, 0.4])  # evaluation updates nothing
    rng = np.random.default_rng(132)
    big = rng.uniform(size=(2, 5, 3, 3))
    assert run(big, *rng.uniform(size=(4, 5))).shape == (2, 5, 3, 3)


def test_keras_layer_normalization_output(backend):
    """Keras layer_normalization_test.py: test_output, test_ln_basics' empty input, and
    ops/nn_test.py test_layer_normalization. Keras' default epsilon is 1e-3 (torch's
    1e-5): arange(5) with weight and bias of ones gives Keras' numbers with eps=1e-3;
    with eps=1e-5 and no affine, a 1-D arange(5) gives +-sqrt(2), +-1/sqrt(2), 0; an
    input with an empty batch axis (1, 0, 10) gives an empty output of its shape."""
    x = np.arange(5, dtype=np.float32)[None, :]
    ln = normdrop.LayerNorm(5, eps=1e-3, backend=backend.name)
    ln.weight, ln.bias = vec(backend, np.ones(5, np.float32)), vec(backend, np.ones(5, np.float32))
    out = backend.to_numpy(ln(backend.asarray(x)))
    np.testing.assert_allclose(out, [[-0.41386, 0.29307, 1.0, 1.70693, 2.41386]], atol=1e-5)
    flat = backend.to_numpy(F.layer_norm(backend.asarray(x[0]), 5, backend=backend))
    want = [-1.4142135, -0.70710677, 0.0, 0.7071067, 1.4142135]
    np.testing.assert_allclose(flat, want, atol=1e-5)
    np.testing.assert_allclose(flat, _np(TF.layer_norm(_t(x[0]), (5,))), atol=1e-6)
    empty = normdrop.LayerNorm(10, backend=backend.name)(backend.asarray(np.zeros((1, 0, 10))))
    assert backend.to_numpy(empty).shape == (1, 0, 10)


def test_keras_layer_normalization_correctness(backend):
    """Keras layer_normalization_test.py: test_correctness (and test_ln_basics' axis
    (-3, -2, -1)). Data with mean 5 and std 10, normalised over the last axis and then
    un-shifted and un-scaled, has mean 0 and std 1; over the last three axes the shape
    is kept."""
    rng = np.random.default_rng(133)
    x = rng.normal(loc=5.0, scale=10.0, size=(200, 2, 2, 2)).astype(np.float32)
    ln = normdrop.LayerNorm(2, backend=backend.name)
    out = backend.to_numpy(ln(backend.asarray(x)))
    out = (out - host(backend, ln.bias)) / host(backend, ln.weight)
    assert abs(out.mean()) < 1e-1 and abs(out.std() - 1) < 1e-1
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    out = backend.to_numpy(normdrop.LayerNorm((4, 4, 3), backend=backend.name)(backend.asarray(x)))
    assert out.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(out, _ln_formula(x, 3), **tol(np.float32))


def test_keras_dropout_rescaling(backend):
    """Keras dropout_test.py: test_dropout_rescaling. Ones (20, 500) at rate 0.5 with a
    seed: the mean stays near 1 and the largest value is 1 / (1 - 0.5) = 2. Keras' bound
    0.02 is two standard deviations of the mean of 10,000 draws (std 0.01), which Keras'
    own generator meets for its seed; normdrop's Philox masks are not Keras' or torch's
    (docs/differences.md), so the port allows four (seed 1337 gives 1.022 here; over
    seeds 0..299, 97% of the means are within 0.02)."""
    _fast(backend)
    layer = normdrop.Dropout(0.5, seed=1337, backend=backend.name)
    out = backend.to_numpy(layer(backend.asarray(np.ones((20, 500)))))
    assert abs(out.mean() - 1.0) < 0.04
    assert out.max() == 2.0
    assert set(np.unique(out).tolist()) == {0.0, 2.0}


@pytest.mark.parametrize("rate", [-0.5, 1.5])
def test_keras_dropout_rate_out_of_range(rate):
    """Keras dropout_test.py: test_dropout_negative_rate, test_dropout_rate_greater_than_one.
    ValueError at construction (torch too; normdrop's InvalidParameterError is one)."""
    with pytest.raises(ValueError):
        torch.nn.Dropout(rate)
    with pytest.raises(ValueError, match=rf"Dropout probability must be in \[0, 1\), got {rate}"):
        normdrop.Dropout(rate)


# ===================================================== PyTorch functional argument handling
# pytorch/pytorch test/test_nn.py and test/nn/test_dropout.py functional cases
# (F.batch_norm, F.layer_norm, F.dropout) not in tests/test_ported_torch.py.


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (2, 3, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_functional_batch_norm_positional_arguments(backend, shape, training):
    """F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    called positionally, on 2-D, 3-D and 4-D input: output and updated running arrays
    equal torch's."""
    rng = np.random.default_rng(140)
    x = rng.standard_normal(shape)
    rm, rv, w, b = rng.random((4, 3))
    trm, trv = _t(rm.copy()), _t(rv.copy())
    want = TF.batch_norm(_t(x), trm, trv, _t(w), _t(b), training, 0.3, 1e-3)
    rmb, rvb = vec(backend, rm), vec(backend, rv)
    args = (vec(backend, w), vec(backend, b), training, 0.3, 1e-3)
    y = F.batch_norm(backend.asarray(x), rmb, rvb, *args, backend=backend)
    close = tol(np.float64, "torch")
    np.testing.assert_allclose(backend.to_numpy(y), want.numpy(), **close)
    np.testing.assert_allclose(host(backend, rmb), trm.numpy(), **close)
    np.testing.assert_allclose(host(backend, rvb), trv.numpy(), **close)


def test_functional_batch_norm_running_stats_both_or_neither():
    """F.batch_norm with only one of running_mean / running_var raises ValueError in
    torch ("must either both be None or neither be None"), and in normdrop
    (InvalidParameterError), in training and evaluation, changing nothing."""
    x = np.random.default_rng(141).random((4, 3))
    for training in (True, False):
        for rm, rv in ((np.zeros(3), None), (None, np.ones(3))):
            with pytest.raises(ValueError, match="both"):
                F.batch_norm(x, rm, rv, training=training)
            np.testing.assert_array_equal(rm if rm is not None else rv - 1, np.zeros(3))
        with pytest.raises((ValueError, RuntimeError)):
            TF.batch_norm(_t(x), torch.zeros(3), None, training=training)


def test_functional_batch_norm_eval_without_running_stats():
    """F.batch_norm in evaluation with no running statistics: torch raises
    'running_mean must be defined in evaluation mode'; normdrop uses the batch statistics,
    as the layer does without tracking (docs/differences.md)."""
    x = np.random.default_rng(142).random((4, 3, 2))
    with pytest.raises(RuntimeError, match="running_mean must be defined"):
        TF.batch_norm(_t(x), None, None, training=False)
    want = TF.batch_norm(_t(x), None, None, training=True)
    np.testing.assert_allclose(F.batch_norm(x, training=False), want.numpy(), rtol=1e-10)


def test_functional_batch_norm_momentum_none():
    """F.batch_norm(momentum=None): torch raises TypeError (momentum must be a float);
    normdrop's functional form also requires a number (the cumulative average needs the
    layer's counter, docs/differences.md) and raises InvalidParameterError naming it,
    changing nothing. The layer's momentum=None is torch's cumulative average."""
    x = np.random.default_rng(143).random((4, 3))
    with pytest.raises(TypeError):
        TF.batch_norm(_t(x), torch.zeros(3), torch.ones(3), training=True, momentum=None)
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(normdrop.InvalidParameterError, match="momentum") as info:
        F.batch_norm(x, rm, rv, training=True, momentum=None)
    assert info.value.parameter_name == "momentum"
    np.testing.assert_array_equal(rm, np.zeros(3))
    bn = normdrop.BatchNorm1d(3, momentum=None, dtype=np.float64)
    tbn = torch.nn.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    for batch in (x, 3 * x + 1, x**2):
        np.testing.assert_allclose(bn(batch), _np(tbn(_t(batch))), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, tbn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-12)


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 2), (2, 3, 0)])
def test_functional_batch_norm_empty_batch(backend, shape):
    """F.batch_norm on a zero-size batch in training: an empty output of the input's
    shape, and the running arrays untouched, as torch leaves them."""
    rm, rv = np.full(3, 0.5), np.full(3, 2.0)
    trm, trv = _t(rm.copy()), _t(rv.copy())
    want = TF.batch_norm(torch.ones(shape, dtype=torch.float64), trm, trv, training=True)
    rmb, rvb = vec(backend, rm), vec(backend, rv)
    y = F.batch_norm(backend.asarray(np.ones(shape)), rmb, rvb, training=True, backend=backend)
    assert backend.to_numpy(y).shape == tuple(want.shape) == shape
    np.testing.assert_array_equal(host(backend, rmb), trm.numpy())
    np.testing.assert_array_equal(host(backend, rvb), trv.numpy())


def test_functional_batch_norm_non_contiguous(backend):
    """F.batch_norm on channels-last data viewed as (N, C, L) (a transpose) and on a
    strided slice: the numbers of torch on the same values."""
    rng = np.random.default_rng(144)
    for x in (
        rng.standard_normal((4, 6, 3)).transpose(0, 2, 1),
        rng.standard_normal((8, 6))[::2, ::2],
    ):
        c = x.shape[1]
        w = rng.standard_normal(c)
        rm, rv = np.zeros(c), np.ones(c)
        trm, trv = _t(rm.copy()), _t(rv.copy())
        want = TF.batch_norm(_t(x), trm, trv, _t(w), None, True)
        rmb, rvb = vec(backend, rm), vec(backend, rv)
        y = F.batch_norm(backend.asarray(x), rmb, rvb, vec(backend, w), None, True, backend=backend)
        np.testing.assert_allclose(backend.to_numpy(y), want.numpy(), **tol(np.float64, "torch"))
        np.testing.assert_allclose(host(backend, rvb), trv.numpy(), **tol(np.float64, "torch"))


def test_functional_layer_norm_normalized_shape_forms(backend):
    """F.layer_norm's normalized_shape as a tuple, a list, a torch.Size, ``x.shape[-2:]``,
    and (for one trailing axis) a Python or NumPy int: all give torch's result (torch's
    functional form wants a sequence; normdrop also takes an int, docs/differences.md)."""
    x = np.random.default_rng(145).standard_normal((2, 3, 4))
    for shape in [(3, 4), [3, 4], torch.Size([3, 4]), x.shape[-2:]]:
        want = TF.layer_norm(_t(x), (3, 4)).numpy()
        got = F.layer_norm(backend.asarray(x), shape, backend=backend)
        np.testing.assert_allclose(backend.to_numpy(got), want, **tol(np.float64, "torch"))
    want = TF.layer_norm(_t(x), (4,)).numpy()
    for shape in [4, np.int64(4), (4,), [4], torch.Size([4])]:
        got = F.layer_norm(backend.asarray(x), shape, backend=backend)
        np.testing.assert_allclose(backend.to_numpy(got), want, **tol(np.float64, "torch"))
    with pytest.raises(TypeError):
        TF.layer_norm(_t(x), 4)


def test_layernorm_module_normalized_shape_forms():
    """torch.nn.LayerNorm(normalized_shape) takes an int, a list, a tuple or a
    torch.Size and stores a tuple; normdrop's LayerNorm does the same (also for NumPy
    ints), and the parameters have that shape."""
    for shape in [5, [2, 5], (2, 5), torch.Size([2, 5]), np.int64(5), (np.int64(2), 5)]:
        ln, tln = normdrop.LayerNorm(shape), torch.nn.LayerNorm(shape)
        assert ln.normalized_shape == tuple(tln.normalized_shape)
        assert type(ln.normalized_shape) is tuple
        assert ln.weight.shape == tuple(tln.weight.shape)


@pytest.mark.parametrize("p", [-0.1, 1.1, float("nan")])
@pytest.mark.parametrize("training", [True, False])
def test_functional_dropout_p_bounds(p, training):
    """F.dropout checks p whether or not it trains: outside [0, 1] (or NaN) torch raises
    (ValueError; RuntimeError for NaN), and normdrop raises InvalidParameterError, a
    ValueError, in both modes."""
    with pytest.raises((ValueError, RuntimeError)):
        TF.dropout(torch.ones(3), p, training)
    with pytest.raises(normdrop.InvalidParameterError, match="Dropout probability"):
        F.dropout(np.ones(3), p, training, seed=0)


def test_functional_dropout_training_flag_and_in_place():
    """F.dropout(x, p, training=False) returns x itself (torch too); torch's inplace=True
    is normdrop's ``out=x`` (docs/differences.md): the result is x itself, with kept
    values multiplied by 1 / (1 - p) and the others 0, the mask of the same (seed, call)."""
    x = np.arange(1.0, 13.0).reshape(3, 4)
    assert F.dropout(x, 0.5, False) is x
    tx = torch.ones(3)
    assert TF.dropout(tx, 0.5, False) is tx
    assert TF.dropout(tx, 0.5, True, inplace=True) is tx
    mask = F.dropout_mask(x.shape, 0.25, seed=3)
    original = x.copy()
    out = F.dropout(x, 0.25, True, seed=3, out=x)
    assert out is x
    np.testing.assert_array_equal(x, np.where(mask, original * (1 / 0.75), 0.0))  # SPEC


def test_dropout_module_training_and_eval_on_2d_and_3d(backend):
    """torch.nn.Dropout on 2-D and 3-D input: in training each element is 0 or x/(1-p)
    with the backward zeroing the same positions; in evaluation the input itself."""
    rng = np.random.default_rng(146)
    for shape in [(4, 5), (2, 3, 4)]:
        x = rng.uniform(1, 2, shape)
        layer = normdrop.Dropout(0.4, seed=9, backend=backend.name)
        y = backend.to_numpy(layer(backend.asarray(x)))
        kept = y != 0
        np.testing.assert_allclose(y[kept], x[kept] / 0.6, rtol=1e-15)
        g = backend.to_numpy(layer.backward(backend.asarray(np.ones(shape))))
        np.testing.assert_array_equal(g != 0, kept)
        np.testing.assert_allclose(g[kept], 1 / 0.6, rtol=1e-15)
        xb = backend.asarray(x)
        assert layer.eval()(xb) is xb


def test_layernorm_numeric(backend):
    """test_nn.py: test_LayerNorm_numeric. LayerNorm over (256, 256, 144) trailing dims of
    float32 rand data (here (8, 8, 6)) equals layer_norm_ref (view(-1, features), biased
    variance) within atol 1e-5."""
    normalized_shape = (8, 8, 6)
    x = np.random.default_rng(147).random((2, *normalized_shape)).astype(np.float32)
    ln = normdrop.LayerNorm(normalized_shape, backend=backend.name)
    y = backend.to_numpy(ln(backend.asarray(x)))
    flat = x.reshape(2, -1).astype(np.float64)
    mean, var = flat.mean(-1, keepdims=True), flat.var(-1, keepdims=True)
    want = ((flat - mean) / np.sqrt(var + 1e-5)).reshape(x.shape)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["BatchNorm1d", "LayerNorm", "Dropout"])
def test_backward_numpy_scalar_grad_output_is_a_shape_error(name):
    """A NumPy scalar as grad_output (torch's ``out.backward(torch.tensor(1.))`` on a
    non-scalar output raises RuntimeError 'grad can be implicitly created only for scalar
    outputs' / a shape mismatch) gets normdrop's ShapeError naming both shapes. It raised
    a BackendArrayError saying the backend 'does not accept arrays of type
    numpy.float32', as if it were another library's array."""
    layer = {
        "BatchNorm1d": lambda: normdrop.BatchNorm1d(3),
        "LayerNorm": lambda: normdrop.LayerNorm(3),
        "Dropout": lambda: normdrop.Dropout(0.5, seed=0),
    }[name]()
    layer(np.ones((4, 3), np.float32))
    for grad in (np.float32(1.0), np.float64(1.0)):
        with pytest.raises(normdrop.ShapeError, match=r"\(4, 3\).*got \(\)"):
            layer.backward(grad)
    with pytest.raises(RuntimeError):
        torch.nn.LayerNorm(3)(torch.ones(4, 3)).backward(torch.tensor(1.0))
    scalar = normdrop.Dropout(0.5, seed=1)
    y = scalar(np.float64(3.0))
    assert float(scalar.backward(np.float64(1.0))) == float(y) / 3.0


# ==================================================================================== ONNX
# onnx/onnx onnx/backend/test/case/node/batch_normalization.py, layernormalization.py and
# dropout.py: the node tests every ONNX backend runs, with their numpy reference functions.


def _onnx_batchnorm_test_mode(x, s, bias, mean, var, epsilon=1e-5):
    """batch_normalization.py: _batchnorm_test_mode."""
    ones = (1,) * (x.ndim - 2)
    s, bias, mean, var = (a.reshape(-1, *ones) for a in (s, bias, mean, var))
    return s * (x - mean) / np.sqrt(var + epsilon) + bias


@pytest.mark.parametrize("epsilon", [1e-5, 1e-2], ids=["example", "epsilon"])
def test_onnx_batchnorm_inference(backend, epsilon):
    """ONNX test_batchnorm_example and test_batchnorm_epsilon: (2, 3, 4, 5) float32 data
    normalised with given scale, bias, mean and variance (torch: F.batch_norm in
    evaluation) equals the reference; the statistics are not changed."""
    rng = np.random.default_rng(150)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    s, bias, mean = rng.standard_normal((3, 3)).astype(np.float32)
    var = rng.random(3).astype(np.float32)
    want = _onnx_batchnorm_test_mode(x, s, bias, mean, var, epsilon).astype(np.float32)
    rm, rv = vec(backend, mean), vec(backend, var)
    y = F.batch_norm(
        backend.asarray(x),
        rm,
        rv,
        vec(backend, s),
        vec(backend, bias),
        eps=epsilon,
        backend=backend,
    )
    np.testing.assert_allclose(backend.to_numpy(y), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(host(backend, rm), mean)
    np.testing.assert_array_equal(host(backend, rv), var)


@pytest.mark.parametrize("epsilon", [1e-5, 1e-2], ids=["example", "epsilon"])
def test_onnx_batchnorm_training_mode(backend, epsilon):
    """ONNX test_batchnorm_example_training_mode and _epsilon_training_mode. ONNX's
    momentum 0.9 weighs the old running value: torch's momentum 0.1. The output uses the
    batch mean and biased variance; the running mean becomes 0.9 * mean + 0.1 * batch
    mean, and the running variance 0.9 * var + 0.1 * batch variance, which torch (SPEC)
    takes unbiased where ONNX's reference takes it biased."""
    rng = np.random.default_rng(151)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    s, bias, mean = rng.standard_normal((3, 3)).astype(np.float32)
    var = rng.random(3).astype(np.float32)
    axes = (0, 2, 3)
    x64 = x.astype(np.float64)
    saved_mean, saved_var = x64.mean(axes), x64.var(axes)
    want = _onnx_batchnorm_test_mode(x64, s, bias, saved_mean, saved_var, epsilon)
    rm, rv = vec(backend, mean), vec(backend, var)
    y = F.batch_norm(
        backend.asarray(x),
        rm,
        rv,
        vec(backend, s),
        vec(backend, bias),
        True,
        0.1,
        epsilon,
        backend=backend,
    )
    np.testing.assert_allclose(backend.to_numpy(y), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        host(backend, rm), 0.9 * mean + 0.1 * saved_mean, rtol=1e-6, atol=1e-7
    )
    n = x.size // 3
    np.testing.assert_allclose(
        host(backend, rv), 0.9 * var + 0.1 * saved_var * n / (n - 1), rtol=1e-6, atol=1e-7
    )


def _onnx_layer_normalization(x, w, b, axis, epsilon=1e-5):
    """layernormalization.py: _layer_normalization (Y, Mean, InvStdDev)."""
    axis = axis + x.ndim if axis < 0 else axis
    rows = int(np.prod(x.shape[:axis]))
    mat = x.reshape(rows, -1).astype(np.float64)
    mean = mat.mean(1, keepdims=True)
    inv_std = 1 / np.sqrt(((mat - mean) ** 2).mean(1, keepdims=True) + epsilon)
    y = ((mat - mean) * inv_std).reshape(x.shape) * w + b
    stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
    return y, mean.reshape(stat_shape), inv_std.reshape(stat_shape)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (2, 3, 4, 5)], ids=["2d", "3d", "4d"])
def test_onnx_layer_normalization(backend, shape):
    """ONNX test_layer_normalization_{2d,3d,4d}_axis{i} / _axis_negative_{i} and
    _default_axis: for every axis, LayerNorm over x.shape[axis:] (normalized_shape) with
    random weight and bias; Y, Mean and InvStdDev (layer_norm_with_stats' mean and rstd,
    of shape x.shape[:axis] where ONNX keeps trailing 1s) equal the reference. Axis 0
    normalises the whole input, which has no batch dimension."""
    if len(shape) == 4:
        _fast(backend)
    rng = np.random.default_rng(152)
    x = rng.standard_normal(shape).astype(np.float32)
    for axis in range(-len(shape), len(shape)):
        normalized = shape[axis:]
        w, b = rng.standard_normal((2, *normalized)).astype(np.float32)
        want_y, want_mean, want_inv_std = _onnx_layer_normalization(x, w, b, axis)
        y, mean, rstd = F.layer_norm_with_stats(
            backend.asarray(x),
            normalized,
            vec(backend, w),
            vec(backend, b),
            backend=backend,
        )
        lead = shape[: len(shape) - len(normalized)]
        np.testing.assert_allclose(backend.to_numpy(y), want_y, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            host(backend, mean), want_mean.reshape(lead), rtol=1e-6, atol=1e-7
        )
        np.testing.assert_allclose(
            host(backend, rstd), want_inv_std.reshape(lead), rtol=1e-6, atol=1e-7
        )
        layer = normdrop.LayerNorm(normalized, backend=backend.name)
        layer.weight, layer.bias = vec(backend, w), vec(backend, b)
        np.testing.assert_allclose(
            backend.to_numpy(layer(backend.asarray(x))), want_y, rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("ratio", [0.5, 0.1])
def test_onnx_dropout(backend, ratio):
    """ONNX test_dropout_default / _default_ratio / _default_mask / _default_mask_ratio
    (inference: Y is X, the mask all True) and test_training_dropout_default /
    _default_mask / test_training_dropout (training: Y = mask * X / (1 - ratio) with the
    mask returned). ONNX's reference draws the mask from np.random; normdrop's
    keep-mask comes from Philox (dropout_mask, docs/differences.md), and Y must be built
    from that mask."""
    x = np.random.default_rng(153).standard_normal((3, 4, 5)).astype(np.float32)
    xb = backend.asarray(x)
    assert F.dropout(xb, ratio, False, seed=0, backend=backend) is xb
    mask = backend.to_numpy(F.dropout_mask(x.shape, ratio, seed=0, backend=backend))
    assert mask.dtype == np.bool_ and mask.shape == x.shape
    y = backend.to_numpy(F.dropout(xb, ratio, True, seed=0, backend=backend))
    scale = np.float32(1 / (1 - ratio))
    np.testing.assert_array_equal(y, np.where(mask, x * scale, np.float32(0)))
    assert 0 < mask.mean() < 1


def test_functional_batch_norm_float16_running_stats_rounded_once(backend):
    """torch.nn.functional.batch_norm with float16 data and float16 running statistics
    (test_nn.py's half-precision batch-norm cases): the update is computed in float64 and
    rounded to float16 once (SPEC: statistics accumulate in float64), which gives torch's
    float16 values here. The numpy and dask backends computed ``(1 - m) * running`` in
    float16 first, one float16 ulp off (1.01 instead of torch's 1.011)."""
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float16)
    rm, rv = np.zeros(3, np.float16), np.ones(3, np.float16)
    x64 = x.astype(np.float64)
    want_mean = (0.9 * rm.astype(np.float64) + 0.1 * x64.mean(0)).astype(np.float16)
    want_var = (0.9 * rv.astype(np.float64) + 0.1 * x64.var(0, ddof=1)).astype(np.float16)
    trm, trv = _t(rm.copy()), _t(rv.copy())
    TF.batch_norm(_t(x), trm, trv, training=True)
    rmb, rvb = vec(backend, rm), vec(backend, rv)
    y = F.batch_norm(backend.asarray(x), rmb, rvb, training=True, backend=backend)
    assert backend.to_numpy(y).dtype == np.float16
    np.testing.assert_array_equal(host(backend, rmb), want_mean)
    np.testing.assert_array_equal(host(backend, rvb), want_var)
    np.testing.assert_array_equal(trv.numpy(), want_var)


# ================================================================================ Equinox
# patrick-kidger/equinox tests/test_nn.py.


def test_equinox_dropout_basic_and_inference(backend):
    """Equinox test_dropout_basic and test_dropout_inference. Dropout with the default
    p = 0.5 on normal data: every element is 0 or exactly x / 0.5; in inference (eval) the
    output is the input, and switching back to training changes it."""
    x = np.random.default_rng(160).standard_normal((3, 4, 5)).astype(np.float32)
    xb = backend.asarray(x)
    layer = normdrop.Dropout(seed=2, backend=backend.name)
    assert layer.p == 0.5
    y = backend.to_numpy(layer(xb))
    assert np.all((y == 0) | (y == x / np.float32(0.5)))
    assert layer.eval()(xb) is xb
    assert np.any(backend.to_numpy(layer.train()(xb)) != x)


def test_equinox_layer_norm(backend):
    """Equinox test_layer_norm. LayerNorm(128) on a 1-D input and LayerNorm((16, 16))
    without weight and bias keep the shape; LayerNorm(10) of linspace(0.1, 1, 10) equals
    that of linspace(0, 1, 10) (shift and scale invariance, up to eps) and the formula;
    float16 in, float16 out (Equinox: bfloat16)."""
    rng = np.random.default_rng(161)
    ln = normdrop.LayerNorm(128, backend=backend.name)
    assert backend.to_numpy(ln(backend.asarray(rng.uniform(size=128)))).shape == (128,)
    ln = normdrop.LayerNorm((16, 16), elementwise_affine=False, backend=backend.name)
    assert backend.to_numpy(ln(backend.asarray(rng.uniform(size=(16, 16))))).shape == (16, 16)
    ln = normdrop.LayerNorm(10, dtype=np.float64, backend=backend.name)
    x1, x2 = np.linspace(0.1, 1, 10), np.linspace(0, 1, 10)
    y1 = backend.to_numpy(ln(backend.asarray(x1)))
    y2 = backend.to_numpy(ln(backend.asarray(x2)))
    np.testing.assert_allclose(y1, y2, atol=1e-4)
    np.testing.assert_allclose(y1, (x1 - x1.mean()) / np.sqrt(x1.var() + 1e-5), atol=1e-12)
    half = rng.uniform(size=128).astype(np.float16)
    out = normdrop.LayerNorm(128, backend=backend.name)(backend.asarray(half))
    assert backend.to_numpy(out).dtype == np.float16


def test_equinox_batch_norm(backend):
    """Equinox test_batch_norm (mode "ema") and test_batch_norm_zero_training_steps, for
    (N, C) and (N, C, L) input: outputs keep the shape, running statistics have shape
    (C,); without affine the training output is the formula; training on x1 and then on
    3 * x1 + 10 changes both running statistics; evaluation on 4 * x1 + 20 changes
    neither; evaluation before any training returns about the input (x / sqrt(1 + eps))."""
    rng = np.random.default_rng(162)
    x1 = rng.uniform(size=(10, 5))
    bn = normdrop.BatchNorm1d(5, affine=False, dtype=np.float64, backend=backend.name)
    fresh = backend.to_numpy(bn.eval()(backend.asarray(x1)))
    np.testing.assert_allclose(fresh, x1 / np.sqrt(1 + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(fresh, x1, atol=1e-5)
    bn.train()
    for x in (x1, rng.uniform(size=(10, 5, 6))):
        assert backend.to_numpy(bn(backend.asarray(x))).shape == x.shape
        assert host(backend, bn.running_mean).shape == host(backend, bn.running_var).shape
        assert host(backend, bn.running_var).shape == (5,)
    x = rng.normal(size=(10, 5))
    out = backend.to_numpy(bn(backend.asarray(x)))
    true_out = (x - x.mean(0, keepdims=True)) / np.sqrt(x.var(0, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, true_out, rtol=1e-10, atol=1e-12)

    def stats():
        return host(backend, bn.running_mean).copy(), host(backend, bn.running_var).copy()

    bn(backend.asarray(x1))
    mean1, var1 = stats()
    bn(backend.asarray(3 * x1 + 10))
    mean2, var2 = stats()
    assert not np.allclose(mean1, mean2) and not np.allclose(var1, var2)
    bn.eval()(backend.asarray(4 * x1 + 20))
    mean3, var3 = stats()
    np.testing.assert_array_equal(mean2, mean3)
    np.testing.assert_array_equal(var2, var3)


# ============================================================== PyTorch gradcheck-style
# test_nn.py: _test_batchnorm_grad and _test_batchnorm_affine, and the OpInfo gradcheck
# (test_ops_gradients.py) of nn.functional.batch_norm, layer_norm and dropout: the
# backward pass against central finite differences of the forward, in float64.


def _numeric_grad(f, a, g, h=1e-6):
    """d(sum(g * f()))/da by central differences, perturbing ``a`` in place."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + h
        plus = np.sum(g * f())
        a[i] = keep - h
        minus = np.sum(g * f())
        a[i] = keep
        grad[i] = (plus - minus) / (2 * h)
    return grad


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
@pytest.mark.parametrize(
    ("make", "shape", "training"),
    [
        (lambda b: normdrop.BatchNorm1d(3, dtype=np.float64, backend=b), (4, 3, 2), True),
        (lambda b: normdrop.BatchNorm1d(3, dtype=np.float64, backend=b), (4, 3), False),
        (
            lambda b: normdrop.BatchNorm1d(
                3, track_running_stats=False, dtype=np.float64, backend=b
            ),
            (2, 3, 2),
            False,
        ),
        (lambda b: normdrop.LayerNorm((2, 3), dtype=np.float64, backend=b), (2, 2, 3), True),
        (
            lambda b: normdrop.LayerNorm(3, bias=False, dtype=np.float64, backend=b),
            (4, 3),
            True,
        ),
    ],
    ids=["bn_train_3d", "bn_eval_2d", "bn_untracked_eval", "ln_2d", "ln_no_bias"],
)
def test_gradcheck_layers(backend_name, make, shape, training):
    """The input, weight and bias gradients of ``layer.backward(g)`` equal central
    differences of ``sum(g * layer(x))``."""
    rng = np.random.default_rng(170)
    layer = make(backend_name).train(training)
    for param in layer.parameters():
        param[...] = rng.uniform(0.5, 1.5, param.shape)
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    layer(x)
    dx = layer.backward(g)
    close = {"rtol": 1e-6, "atol": 1e-8}
    np.testing.assert_allclose(dx, _numeric_grad(lambda: layer(x), x, g), **close)
    for name, param in layer.named_parameters():
        numeric = _numeric_grad(lambda: layer(x), param, g)
        np.testing.assert_allclose(layer.grads[name], numeric, **close, err_msg=name)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_gradcheck_dropout(backend_name):
    """dropout_backward with the forward's (seed, call) is the derivative of the forward
    for that mask: central differences of ``sum(g * dropout(x))``."""
    rng = np.random.default_rng(171)
    x, g = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))

    def forward():
        return F.dropout(x, 0.3, True, seed=8, call=2, backend=backend_name)

    dx = F.dropout_backward(g, 0.3, seed=8, call=2, backend=backend_name)
    np.testing.assert_allclose(dx, _numeric_grad(forward, x, g), rtol=1e-6, atol=1e-8)


def test_batchnorm_affine_at_init_equals_not_affine(backend):
    """test_nn.py: _test_batchnorm_affine. A layer with weight 1 and bias 0 and one
    without affine give the same output and input gradient, in training and in
    evaluation."""
    rng = np.random.default_rng(172)
    x, g = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    affine = normdrop.BatchNorm1d(3, dtype=np.float64, backend=backend.name)
    plain = normdrop.BatchNorm1d(3, affine=False, dtype=np.float64, backend=backend.name)
    for training in (True, False):
        outs = []
        for layer in (affine, plain):
            layer.train(training)
            y = backend.to_numpy(layer(backend.asarray(x)))
            outs.append((y, backend.to_numpy(layer.backward(backend.asarray(g)))))
        np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-14)
