"""ONNX's, Thinc's and Jittor's own tests of batch norm, layer norm and dropout, ported to
normdrop.

Each test names its source:

- onnx/onnx (commit f7546912) ``onnx/backend/test/case/node/batch_normalization.py``,
  ``layernormalization.py``, ``dropout.py`` and ``meanvariancenormalization.py``: the node
  test cases every ONNX backend runs, with their numpy references (the case files'
  ``_batchnorm_test_mode``, ``_batchnorm_training_mode``, ``_layer_normalization`` and
  ``dropout``, and ``onnx/reference/ops/op_batch_normalization.py``,
  ``op_layer_normalization.py`` and ``op_dropout.py``), written out here in float64. The
  cases draw their data from an unseeded ``np.random.randn``; here it comes from a seeded
  ``RandomState`` with the same shapes and distributions. tests/test_ported_others.py
  ports the basic batch-norm, layer-norm and dropout cases too (other draws); this file
  adds the BatchNorm1d layer, float64, the epsilon and default-axis layer-norm cases, a
  layer norm without ``B``, ONNX's saved statistics, the zero-ratio and pre-opset-12
  dropout cases, and test_mvn with its hard-coded input.
- explosion/thinc (commit 20eec355) ``thinc/tests/layers/test_layers_api.py``
  (test_layers_from_config, test_layers_batching_all and test_dropout for ``LayerNorm.v1``
  and ``Dropout.v1``), ``thinc/tests/backends/test_ops.py`` (test_get_dropout_empty,
  test_get_dropout_not_empty) and ``thinc/tests/layers/test_linear.py``
  (test_dropout_gives_zero_activations, test_dropout_gives_zero_gradients), with the
  forward and backward formulas of ``thinc/layers/layernorm.py`` written out in float64.
- Jittor/jittor (commit 06f5d3d2) ``python/jittor/test/test_batchnorm.py``
  (TestBatchNorm.test_batchnorm: BatchNorm, BatchNorm1d and LayerNorm against PyTorch) and
  ``python/jittor/test/test_aclop.py`` (test_dropout, test_dropout_grad). Jittor compares
  with PyTorch; so does the port (torch 2.13), on smaller inputs.

Conventions, translated to PyTorch's (which SPEC.md follows): ONNX's ``momentum`` is the
weight of the *old* running value (ONNX 0.9 is PyTorch 0.1), and ONNX's reference updates
the running variance with the biased batch variance, where PyTorch uses the unbiased one
(``n / (n - 1)`` times it). ONNX's ``LayerNormalization(axis=a)`` normalises over
``x.shape[a:]`` (``normalized_shape``); its ``Mean`` and ``InvStdDev`` are normdrop's
``mean`` and ``rstd`` with the trailing 1s dropped. Thinc's LayerNorm adds ``1e-8`` to the
variance (``eps=1e-8`` here) and its ``G`` and ``b`` are ``weight`` and ``bias``. Dropout
masks come from each project's generator and normdrop's from Philox (docs/differences.md),
so for dropout only properties are ported: identity outside training and at ratio 0, kept
values scaled by ``1 / (1 - p)``, the output built from normdrop's own mask
(``dropout_mask``), the dropped fraction, the same mask for the same seed, and gradients
built from that mask. Expected numbers come from the projects' hard-coded values, their
formulas written out here in float64, or PyTorch, never from normdrop.

Not ported: ONNX's opset-9 BatchNormalization reference (it normalises with the *updated*
running statistics, which neither PyTorch nor normdrop do), LayerNormalization's
``stash_type`` (normdrop always accumulates in float64) and Dropout's ``seed`` values
(ONNX seeds numpy's generator; normdrop's masks come from Philox). Thinc's Ragged and Padded
containers and its ``residual`` combinator (no normdrop counterpart; the arrays inside are
ported), ``Dropout()``'s default rate (0 in Thinc, 0.5 in normdrop and PyTorch), and
Thinc's ``Dropout(1.0)`` (normdrop rejects ``p = 1``, a documented departure, checked
instead). Jittor's InstanceNorm2d, GroupNorm and Dropout2d (not normdrop layers) and
test_mpi_batchnorm.py (synchronised batch norm across MPI processes).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, host, skip_on_slow_backend, tol, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F
from normdrop.errors import InvalidParameterError

torch = pytest.importorskip("torch")


def _fast(backend):
    skip_on_slow_backend(backend, "large inputs; too slow under the CUDA simulator")


# ==================================================================================== ONNX
# onnx/onnx onnx/backend/test/case/node/batch_normalization.py


def _onnx_batchnorm_test_mode(x, s, bias, mean, var, epsilon=1e-5):
    """batch_normalization.py ``_batchnorm_test_mode``, in float64."""
    dim_ones = (1,) * (x.ndim - 2)
    s, bias, mean, var = (
        np.asarray(a, np.float64).reshape(-1, *dim_ones) for a in (s, bias, mean, var)
    )
    return s * (np.asarray(x, np.float64) - mean) / np.sqrt(var + epsilon) + bias


def _onnx_batchnorm_training_mode(x, s, bias, mean, var, momentum=0.9, epsilon=1e-5):
    """batch_normalization.py ``_batchnorm_training_mode`` (and op_batch_normalization.py's,
    which also returns ``saved_mean`` and ``saved_var``), in float64: returns y,
    saved_mean, saved_var (biased), output_mean and output_var."""
    x = np.asarray(x, np.float64)
    axis = tuple(np.delete(np.arange(x.ndim), 1))
    saved_mean, saved_var = x.mean(axis=axis), x.var(axis=axis)
    output_mean = mean * momentum + saved_mean * (1 - momentum)
    output_var = var * momentum + saved_var * (1 - momentum)
    y = _onnx_batchnorm_test_mode(x, s, bias, saved_mean, saved_var, epsilon=epsilon)
    return y, saved_mean, saved_var, output_mean, output_var


def _onnx_bn_inputs(seed, dtype):
    """The draws of BatchNormalization.export / export_train: x (2, 3, 4, 5) and s, bias,
    mean from randn, var from rand."""
    rs = np.random.RandomState(seed)
    x = rs.randn(2, 3, 4, 5).astype(dtype)
    s, bias, mean = (rs.randn(3).astype(dtype) for _ in range(3))
    var = rs.rand(3).astype(dtype)
    return x, s, bias, mean, var


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("epsilon", [None, 1e-2], ids=["example", "epsilon"])
def test_onnx_batchnorm_example_and_epsilon(backend, epsilon, dtype):
    """ONNX BatchNormalization.export: test_batchnorm_example (default epsilon 1e-5, as
    PyTorch's) and test_batchnorm_epsilon (epsilon 1e-2), inference with the given scale,
    bias, mean and variance. functional batch_norm (training=False) and a BatchNorm1d in
    evaluation with those statistics loaded (on the (2, 3, 20) view, the same per-channel
    normalisation) give the reference, and leave the statistics unchanged."""
    x, s, bias, mean, var = _onnx_bn_inputs(200 if epsilon is None else 201, dtype)
    want = _onnx_batchnorm_test_mode(x, s, bias, mean, var, epsilon or 1e-5)
    kwargs = {} if epsilon is None else {"eps": epsilon}
    rm, rv = vec(backend, mean), vec(backend, var)
    y = F.batch_norm(
        backend.asarray(x), rm, rv, vec(backend, s), vec(backend, bias), False,
        backend=backend, **kwargs,
    )  # fmt: skip
    y = backend.to_numpy(y)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, want, **tol(dtype))
    np.testing.assert_array_equal(host(backend, rm), mean)
    np.testing.assert_array_equal(host(backend, rv), var)
    bn = normdrop.BatchNorm1d(3, dtype=dtype, backend=backend.name, **kwargs)
    bn.load_state_dict({"weight": s, "bias": bias, "running_mean": mean, "running_var": var})
    y = backend.to_numpy(bn.eval()(backend.asarray(x.reshape(2, 3, 20))))
    np.testing.assert_allclose(y.reshape(x.shape), want, **tol(dtype))
    assert int(bn.num_batches_tracked) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("epsilon", [None, 1e-2], ids=["example", "epsilon"])
def test_onnx_batchnorm_training_mode(backend, epsilon, dtype):
    """ONNX BatchNormalization.export_train: test_batchnorm_example_training_mode (default
    momentum 0.9 and epsilon) and test_batchnorm_epsilon_training_mode (momentum 0.9,
    epsilon 1e-2). Y is normalised with the batch mean and biased variance; ONNX's
    output_mean is 0.9 * mean + 0.1 * batch mean (PyTorch momentum 0.1); ONNX's output_var
    takes the biased batch variance, PyTorch's (and SPEC's) the unbiased one, so the
    expected running variance is 0.9 * var + 0.1 * n / (n - 1) * saved_var. The opset-6
    reference's saved_mean and saved_var are batch_norm_with_stats' mean and
    ``1 / rstd**2 - epsilon``. A BatchNorm1d(momentum=0.1) on the (2, 3, 20) view does the
    same and counts one batch."""
    eps = epsilon or 1e-5
    x, s, bias, mean, var = _onnx_bn_inputs(202 if epsilon is None else 203, dtype)
    want_y, saved_mean, saved_var, out_mean, out_var = _onnx_batchnorm_training_mode(
        x, s, bias, mean.astype(np.float64), var.astype(np.float64), 0.9, eps
    )
    n = x.size // 3
    want_var = 0.9 * var.astype(np.float64) + 0.1 * saved_var * n / (n - 1)
    assert np.all(want_var > out_var)  # the two conventions differ here
    rm, rv = vec(backend, mean), vec(backend, var)
    y, got_mean, rstd = F.batch_norm_with_stats(
        backend.asarray(x), rm, rv, vec(backend, s), vec(backend, bias), True, 1 - 0.9, eps,
        backend=backend,
    )  # fmt: skip
    y = backend.to_numpy(y)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, want_y, **tol(dtype))
    np.testing.assert_allclose(host(backend, rm), out_mean, **tol(dtype))
    np.testing.assert_allclose(host(backend, rv), want_var, **tol(dtype))
    np.testing.assert_allclose(host(backend, got_mean), saved_mean, **tol(dtype))
    rstd = host(backend, rstd).astype(np.float64)
    np.testing.assert_allclose(1 / rstd**2 - eps, saved_var, **tol(dtype))
    bn = normdrop.BatchNorm1d(3, eps=eps, momentum=0.1, dtype=dtype, backend=backend.name)
    bn.load_state_dict({"weight": s, "bias": bias, "running_mean": mean, "running_var": var})
    y = backend.to_numpy(bn(backend.asarray(x.reshape(2, 3, 20))))
    np.testing.assert_allclose(y.reshape(x.shape), want_y, **tol(dtype))
    np.testing.assert_allclose(host(backend, bn.running_mean), out_mean, **tol(dtype))
    np.testing.assert_allclose(host(backend, bn.running_var), want_var, **tol(dtype))
    assert int(bn.num_batches_tracked) == 1


# onnx/onnx onnx/backend/test/case/node/meanvariancenormalization.py
ONNX_MVN_X = [
    [[[0.8439683], [0.5665144], [0.05836735]],
     [[0.02916367], [0.12964272], [0.5060197]],
     [[0.79538304], [0.9411346], [0.9546573]]],
    [[[0.17730942], [0.46192095], [0.26480448]],
     [[0.6746842], [0.01665257], [0.62473077]],
     [[0.9240844], [0.9722341], [0.11965699]]],
    [[[0.41356155], [0.9129373], [0.59330076]],
     [[0.81929934], [0.7862604], [0.11799799]],
     [[0.69248444], [0.54119414], [0.07513223]]],
]  # fmt: skip


def test_onnx_mvn(backend):
    """ONNX MeanVarianceNormalization.export (test_mvn): the hard-coded (3, 3, 3, 1) input
    normalised over axes (0, 2, 3), ``(x - mean) / (sqrt(E[x^2] - mean^2) + 1e-9)``
    (written here in float64). That is batch normalisation with batch statistics and no
    affine; ONNX adds 1e-9 to the standard deviation, normdrop adds eps to the variance, so
    the port uses eps = 1e-18 (a relative difference below 1e-8 here). functional
    batch_norm on the 4-D input and BatchNorm1d(3, affine=False,
    track_running_stats=False) on the (3, 3, 3) view give the expected output."""
    x = np.array(ONNX_MVN_X, np.float32)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3), keepdims=True)
    std = np.sqrt((x64**2).mean(axis=(0, 2, 3), keepdims=True) - mean**2)
    want = (x64 - mean) / (std + 1e-9)
    y = F.batch_norm(backend.asarray(x), training=True, eps=1e-18, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), want, **tol(np.float32))
    bn = normdrop.BatchNorm1d(
        3, eps=1e-18, affine=False, track_running_stats=False, backend=backend.name
    )
    y = backend.to_numpy(bn(backend.asarray(x.reshape(3, 3, 3))))
    np.testing.assert_allclose(y.reshape(x.shape), want, **tol(np.float32))


# onnx/onnx onnx/backend/test/case/node/layernormalization.py


def _onnx_layer_normalization(x, w, b, axis=-1, epsilon=1e-5):
    """layernormalization.py ``_layer_normalization`` (op_layer_normalization.py's, which
    allows ``B=None``), in float64: returns Y, Mean and InvStdDev, the statistics of shape
    ``x.shape[:axis] + (1,) * (rank - axis)``."""
    x = np.asarray(x, np.float64)
    axis = axis + x.ndim if axis < 0 else axis
    reduction_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
    cols = int(np.prod(x.shape[axis:]))
    x_mat = x.reshape(-1, cols)
    x_mean = np.sum(x_mat, axis=1, keepdims=True) / cols
    x_diff = x_mat - x_mean
    variance = np.sum(x_diff * x_diff, axis=1, keepdims=True) / cols
    inv_std_dev = np.reciprocal(np.sqrt(variance + epsilon))
    y = np.reshape(x_diff * inv_std_dev, x.shape) * w
    if b is not None:
        y = y + b
    return y, x_mean.reshape(reduction_shape), inv_std_dev.reshape(reduction_shape)


#: name: (shape, epsilon, axes) of LayerNormalization.export2d, export3d_epsilon, export
#: and export_default_axis.
ONNX_LN_CASES = {
    "2d": ((3, 4), None, (0, -2, 1, -1)),
    "3d_epsilon": ((2, 3, 5), 1e-1, (0, -3, 1, -2, 2, -1)),
    "4d": ((2, 3, 4, 5), None, (0, -4, 1, -3, 2, -2, 3, -1)),
    "default_axis": ((2, 3, 4, 5), None, (-1,)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(ONNX_LN_CASES))
def test_onnx_layer_normalization(backend, case, dtype):
    """ONNX LayerNormalization.export2d (test_layer_normalization_2d_axis{0,1} and
    _axis_negative_{1,2}), export3d_epsilon (the 3d cases with epsilon 0.1), export (the 4d
    cases) and export_default_axis (axis -1): for each axis, W and B of shape
    x.shape[axis:] from randn. layer_norm_with_stats over normalized_shape = x.shape[axis:]
    gives Y, and Mean and InvStdDev as mean and rstd (ONNX's trailing 1s dropped); the
    LayerNorm layer with W and B loaded gives Y. Axis 0 normalises the whole input."""
    if case == "4d" and backend.name in SLOW_BACKENDS:
        pytest.skip("8 layer norms of 120 elements: too slow under the CUDA simulator")
    shape, epsilon, axes = ONNX_LN_CASES[case]
    eps = epsilon or 1e-5
    kwargs = {} if epsilon is None else {"eps": epsilon}
    rs = np.random.RandomState(210 + list(ONNX_LN_CASES).index(case))
    x = rs.randn(*shape).astype(dtype)
    for axis in axes:
        normalized = shape[axis:]
        w = rs.randn(*normalized).astype(dtype)
        b = rs.randn(*normalized).astype(dtype)
        want_y, want_mean, want_inv_std = _onnx_layer_normalization(x, w, b, axis, eps)
        y, mean, rstd = F.layer_norm_with_stats(
            backend.asarray(x), normalized, vec(backend, w), vec(backend, b),
            backend=backend, **kwargs,
        )  # fmt: skip
        lead = shape[: len(shape) - len(normalized)]
        y = backend.to_numpy(y)
        msg = f"axis={axis}"
        assert y.dtype == dtype, msg
        np.testing.assert_allclose(y, want_y, **tol(dtype), err_msg=msg)
        np.testing.assert_allclose(
            host(backend, mean), want_mean.reshape(lead), **tol(dtype), err_msg=msg
        )
        np.testing.assert_allclose(
            host(backend, rstd), want_inv_std.reshape(lead), **tol(dtype), err_msg=msg
        )
        layer = normdrop.LayerNorm(normalized, dtype=dtype, backend=backend.name, **kwargs)
        layer.load_state_dict({"weight": w, "bias": b})
        got = backend.to_numpy(layer(backend.asarray(x)))
        np.testing.assert_allclose(got, want_y, **tol(dtype), err_msg=msg)


def test_onnx_layer_normalization_without_bias(backend):
    """ONNX op_layer_normalization.py LayerNormalization with its optional B input absent
    (``Y = normalised * W``), on the (2, 3, 4, 5) input of export_default_axis with axis -1
    and -2: LayerNorm(bias=False) and functional layer_norm without bias give the
    reference."""
    rs = np.random.RandomState(220)
    x = rs.randn(2, 3, 4, 5).astype(np.float32)
    for axis in (-1, -2):
        normalized = x.shape[axis:]
        w = rs.randn(*normalized).astype(np.float32)
        want = _onnx_layer_normalization(x, w, None, axis)[0]
        y = F.layer_norm(backend.asarray(x), normalized, vec(backend, w), backend=backend)
        np.testing.assert_allclose(backend.to_numpy(y), want, **tol(np.float32))
        layer = normdrop.LayerNorm(normalized, bias=False, backend=backend.name)
        assert layer.bias is None
        layer.load_state_dict({"weight": w})
        got = backend.to_numpy(layer(backend.asarray(x)))
        np.testing.assert_allclose(got, want, **tol(np.float32))


# onnx/onnx onnx/backend/test/case/node/dropout.py (reference: its ``dropout`` function and
# onnx/reference/ops/op_dropout.py ``_dropout``).


@pytest.mark.parametrize("ratio", [None, 0.1], ids=["default", "default_ratio"])
def test_onnx_dropout_inference(backend, ratio):
    """ONNX Dropout.export_default / export_default_ratio / export_default_mask /
    export_default_mask_ratio: without a training_mode input (False), Y is X and the mask
    all True, for the default ratio 0.5 and ratio 0.1. normdrop's functional dropout with
    training=False and the Dropout layer in evaluation return the input object itself;
    dropout_with_bitmask returns no mask there (nothing was dropped)."""
    x = np.random.RandomState(230).randn(3, 4, 5).astype(np.float32)
    xb = backend.asarray(x)
    args = () if ratio is None else (ratio,)
    assert F.dropout(xb, *args, training=False, seed=0, backend=backend) is xb
    y, bitmask = F.dropout_with_bitmask(xb, *args, training=False, seed=0, backend=backend)
    assert y is xb and bitmask is None
    layer = normdrop.Dropout(*args, seed=0, backend=backend.name).eval()
    assert layer.p == (0.5 if ratio is None else ratio)
    assert layer(xb) is xb
    np.testing.assert_array_equal(backend.to_numpy(xb), x)


@pytest.mark.parametrize("ratio", [0.5, 0.75], ids=["default", "ratio0.75"])
def test_onnx_training_dropout(backend, ratio):
    """ONNX Dropout.export_training_default / export_training_default_ratio_mask (ratio 0.5)
    and export_training / export_training_ratio_mask (ratio 0.75), training_mode True:
    reference ``Y = mask * X / (1 - ratio)`` with ``mask = uniform >= ratio`` returned as
    bool. normdrop's Y is that formula with its own keep-mask (dropout_mask, bool, shape of
    X) for the same seed; the same seed gives the same Y again, another seed another mask.
    The dropped fraction is within 0.01 of the ratio on a (300, 400) input (the (3, 4, 5)
    case has only 60 elements)."""
    x = np.random.RandomState(231).randn(3, 4, 5).astype(np.float32)
    xb = backend.asarray(x)
    mask = backend.to_numpy(F.dropout_mask(x.shape, ratio, seed=0, backend=backend))
    assert mask.dtype == np.bool_ and mask.shape == x.shape
    want = mask * x * np.float32(1 / (1 - ratio))
    y = backend.to_numpy(F.dropout(xb, ratio, True, seed=0, backend=backend))
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(
        backend.to_numpy(F.dropout(xb, ratio, True, seed=0, backend=backend)), y
    )
    other = backend.to_numpy(F.dropout_mask(x.shape, ratio, seed=1, backend=backend))
    assert np.any(other != mask)
    layer = normdrop.Dropout(ratio, seed=0, backend=backend.name)
    np.testing.assert_array_equal(backend.to_numpy(layer(xb)), want)  # call 0, seed 0
    _fast(backend)
    big = backend.to_numpy(F.dropout_mask((300, 400), ratio, seed=0, backend=backend))
    assert abs((~big).mean() - ratio) < 0.01


def test_onnx_training_dropout_zero_ratio(backend):
    """ONNX Dropout.export_training_default_zero_ratio and _zero_ratio_mask: ratio 0 with
    training_mode True gives Y = X and an all-True mask. normdrop's dropout with p = 0 in
    training returns the input object itself (SPEC), and dropout_mask(p=0) is all True."""
    x = np.random.RandomState(232).randn(3, 4, 5).astype(np.float32)
    xb = backend.asarray(x)
    assert F.dropout(xb, 0.0, True, seed=0, backend=backend) is xb
    assert normdrop.Dropout(0.0, seed=0, backend=backend.name)(xb) is xb
    mask = backend.to_numpy(F.dropout_mask(x.shape, 0.0, seed=0, backend=backend))
    assert mask.dtype == np.bool_ and mask.all()
    np.testing.assert_array_equal(backend.to_numpy(xb), x)


@pytest.mark.parametrize("case", ["default_old", "random_old"])
def test_onnx_dropout_old(backend, case):
    """ONNX Dropout.export_default_old ([-1, 0, 1], default ratio) and export_random_old
    (randn (3, 4, 5), ratio 0.2), opset 11, which has no training input: Y = X. normdrop's
    Dropout in evaluation and dropout(training=False) return X."""
    if case == "default_old":
        x, args = np.array([-1, 0, 1], np.float32), ()
    else:
        x, args = np.random.RandomState(233).randn(3, 4, 5).astype(np.float32), (0.2,)
    xb = backend.asarray(x)
    y = normdrop.Dropout(*args, seed=0, backend=backend.name).eval()(xb)
    assert y is xb
    y = F.dropout(xb, *args, training=False, backend=backend)
    np.testing.assert_array_equal(backend.to_numpy(y), x)


# =================================================================================== Thinc
# explosion/thinc thinc/tests/layers/test_layers_api.py; formulas from
# thinc/layers/layernorm.py.

THINC_ARRAY2D = np.array([[4, 2, 3, 4], [1, 5, 3, 1], [9, 8, 5, 7]], np.float32)


def _thinc_layernorm_forward(x, g, b):
    """thinc layernorm.py forward: ``Xhat = (X - mu) * var**-0.5`` with ``var = X.var(1) +
    1e-08``, ``Y = Xhat * G + b``; returns Y, Xhat, mu and var (float64)."""
    x = np.asarray(x, np.float64)
    mu = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True) + 1e-08
    xhat = (x - mu) * var ** (-1.0 / 2.0)
    return xhat * g + b, xhat, mu, var


def _thinc_layernorm_backprop(dy, x, g, xhat, mu, var):
    """thinc layernorm.py backprop (with finish_update_scale_shift): returns dX, dG and db
    (float64)."""
    dy = np.asarray(dy, np.float64)
    d_b, d_g = dy.sum(axis=0), (dy * xhat).sum(axis=0)
    dy = dy * g
    n = x.shape[1]
    dist = x - mu
    sum_dy = np.sum(dy, axis=1, keepdims=True)
    sum_dy_dist = np.sum(dy * dist, axis=1, keepdims=True)
    d_xhat = n * dy - sum_dy - dist * var ** (-1.0) * sum_dy_dist
    d_xhat *= var ** (-1.0 / 2)
    return d_xhat / n, d_g, d_b


@pytest.mark.parametrize("affine", ["init", "trained"])
def test_thinc_layers_from_config_layernorm(backend, affine):
    """Thinc test_layers_from_config for ("LayerNorm.v1", {}, array2d, array2d): after
    initialisation (G = 1, b = 0; also with other G and b, "trained") the training forward
    on the hard-coded (3, 4) array2d gives width nO = 4, and backprop(Y) has the input's
    shape; here both equal Thinc's forward and backprop formulas (variance + 1e-8, so
    eps=1e-8), with G's and b's gradients. predict (evaluation) gives the same Y."""
    x = THINC_ARRAY2D
    g, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    if affine == "trained":
        g = np.array([0.5, -1.5, 2.0, 1.25], np.float32)
        b = np.array([0.1, 0.0, -0.3, 2.0], np.float32)
    want_y, xhat, mu, var = _thinc_layernorm_forward(x, g, b)
    layer = normdrop.LayerNorm(4, eps=1e-8, backend=backend.name)
    layer.load_state_dict({"weight": g, "bias": b})
    xb = backend.asarray(x)
    y = backend.to_numpy(layer(xb))
    assert y.shape == (3, 4) and y.dtype == np.float32
    np.testing.assert_allclose(y, want_y, **tol(np.float32))
    dx = backend.to_numpy(layer.backward(backend.asarray(y)))
    want_dx, want_dg, want_db = _thinc_layernorm_backprop(y, x, g, xhat, mu, var)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, want_dx, **tol(np.float32, factor=10))
    np.testing.assert_allclose(
        host(backend, layer.grads["weight"]), want_dg, **tol(np.float32, factor=10)
    )
    np.testing.assert_allclose(
        host(backend, layer.grads["bias"]), want_db, **tol(np.float32, factor=10)
    )
    np.testing.assert_allclose(backend.to_numpy(layer.eval()(xb)), want_y, **tol(np.float32))


def test_thinc_layers_batching_all_layernorm(backend):
    """Thinc test_layers_batching_all (util_batch_unbatch_array) for LayerNorm.v1: predict
    on array2d equals predict on each row reshaped to (1, -1), to 4 decimals, and both
    equal Thinc's formula."""
    layer = normdrop.LayerNorm(4, eps=1e-8, backend=backend.name).eval()
    batched = backend.to_numpy(layer(backend.asarray(THINC_ARRAY2D)))
    rows = [backend.to_numpy(layer(backend.asarray(r.reshape(1, -1))))[0] for r in THINC_ARRAY2D]
    np.testing.assert_almost_equal(batched, np.array(rows), decimal=4)
    want = _thinc_layernorm_forward(THINC_ARRAY2D, 1.0, 0.0)[0]
    np.testing.assert_allclose(batched, want, **tol(np.float32))


@pytest.mark.parametrize("data", ["array2d", "padded"])
def test_thinc_dropout(backend, data):
    """Thinc test_dropout (Dropout(0.2), is_train=False, on array2d and on the (3, 3, 3)
    zeros inside ``padded``) and test_layers_from_config for ("Dropout.v1", {}), whose
    default rate is 0, in training: both forward passes return the input and backprop
    passes the gradient through unchanged."""
    x = THINC_ARRAY2D if data == "array2d" else np.zeros((3, 3, 3), np.float32)
    xb = backend.asarray(x)
    dy = np.arange(x.size, dtype=np.float32).reshape(x.shape)
    for layer in (
        normdrop.Dropout(0.2, seed=0, backend=backend.name).eval(),
        normdrop.Dropout(0.0, seed=0, backend=backend.name),
    ):
        assert layer(xb) is xb
        np.testing.assert_array_equal(backend.to_numpy(layer.backward(backend.asarray(dy))), dy)
    np.testing.assert_array_equal(backend.to_numpy(xb), x)


@pytest.mark.parametrize("drop", [0.0, 0.5], ids=["empty", "not_empty"])
def test_thinc_get_dropout_mask(backend, drop):
    """Thinc test_ops.py test_get_dropout_empty ((2, 2), drop 0: the mask is all 1) and
    test_get_dropout_not_empty ((200, 200), drop 0.5: some entries 0, some above 1, the
    shape kept). Thinc's mask is ``(uniform >= drop) / (1 - drop)``, the values dropout
    multiplies by: normdrop's dropout of ones, which is dropout_mask / (1 - drop)."""
    if drop:
        _fast(backend)
    shape = (2, 2) if drop == 0 else (200, 200)
    ones = np.ones(shape, np.float32)
    mask = backend.to_numpy(F.dropout(backend.asarray(ones), drop, True, seed=3, backend=backend))
    assert mask.shape == shape
    if drop == 0:
        assert np.all(mask == 1.0)
        return
    assert (mask > 1.0).any() and (mask == 0.0).any()
    keep = backend.to_numpy(F.dropout_mask(shape, drop, seed=3, backend=backend))
    np.testing.assert_array_equal(mask, keep / np.float32(1 - drop))


def test_thinc_dropout_rate_one(backend):
    """Thinc test_linear.py test_dropout_gives_zero_activations and
    test_dropout_gives_zero_gradients: Dropout(1.0) zeroes every activation and gradient
    (as PyTorch's does). normdrop rejects p = 1 in training (SPEC, docs/differences.md),
    before changing anything, so the port checks that departure: the layer and
    functional dropout(training=True) raise InvalidParameterError; in evaluation the
    functional form accepts it and returns the input, as PyTorch's does."""
    x = np.random.RandomState(240).randn(5, 8).astype(np.float32)
    xb = backend.asarray(x)
    assert not _torch_dropout_nonzero(x)
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\), got 1\.0"):
        normdrop.Dropout(1.0, backend=backend.name)
    with pytest.raises(InvalidParameterError):
        F.dropout(xb, 1.0, True, seed=0, backend=backend)
    np.testing.assert_array_equal(backend.to_numpy(xb), x)
    assert F.dropout(xb, 1.0, False, seed=0, backend=backend) is xb


def _torch_dropout_nonzero(x):
    """PyTorch's Dropout(1.0) in training: True where anything (output or gradient) is
    non-zero."""
    t = _t(x.copy()).requires_grad_(True)
    y = torch.nn.functional.dropout(t, 1.0, True)
    y.sum().backward()
    return bool(np.any(_np(y) != 0) or np.any(t.grad.numpy() != 0))


# ================================================================================== Jittor
# Jittor/jittor python/jittor/test/test_batchnorm.py (TestBatchNorm.test_batchnorm):
# check_equal_with_istrain compares the running mean before and after the call and the
# output with PyTorch's (Jittor: rtol 1e-2, atol 1e-5; here PyTorch's float32 tolerance).


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_jittor_batchnorm(backend, training):
    """Jittor test_batchnorm, "Test BatchNorm Layer": BatchNorm(10) against torch's
    BatchNorm2d(10) on randn (16, 10, 224, 224) data, here (16, 10, 12, 12), converted to
    float32 as torch.Tensor does; in training and, with fresh statistics, in evaluation.
    normdrop's functional batch_norm on the 4-D data (with running statistics 0 and 1) and
    a BatchNorm1d(10) on the (16, 10, 144) view give torch's output, running mean and
    running variance."""
    _fast(backend)
    arr = np.random.RandomState(250).randn(16, 10, 12, 12).astype(np.float32)
    ref = torch.nn.BatchNorm2d(10).train(training)
    want = _np(ref(_t(arr)))
    rm, rv = vec(backend, np.zeros(10, np.float32)), vec(backend, np.ones(10, np.float32))
    y = F.batch_norm(backend.asarray(arr), rm, rv, training=training, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), want, **tol(np.float32, "torch"))
    np.testing.assert_allclose(host(backend, rm), _np(ref.running_mean), **tol(np.float32, "torch"))
    np.testing.assert_allclose(host(backend, rv), _np(ref.running_var), **tol(np.float32, "torch"))
    bn = normdrop.BatchNorm1d(10, backend=backend.name).train(training)
    np.testing.assert_array_equal(host(backend, bn.running_mean), np.zeros(10))
    y = backend.to_numpy(bn(backend.asarray(arr.reshape(16, 10, 144))))
    np.testing.assert_allclose(y.reshape(arr.shape), want, **tol(np.float32, "torch"))
    np.testing.assert_allclose(
        host(backend, bn.running_mean), _np(ref.running_mean), **tol(np.float32, "torch")
    )
    np.testing.assert_allclose(
        host(backend, bn.running_var), _np(ref.running_var), **tol(np.float32, "torch")
    )
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == int(training)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_jittor_batchnorm1d(backend, training):
    """Jittor test_batchnorm, "Test BatchNorm1d Layer": BatchNorm1d(10) against torch's on
    randn (16, 10) (threshold 1e-3 in training), in training and, with fresh statistics,
    in evaluation (a model wrapping it in eval()): output and running mean (and variance)
    equal torch's, before and after the call."""
    arr = np.random.RandomState(251).randn(16, 10).astype(np.float32)
    ref = torch.nn.BatchNorm1d(10).train(training)
    bn = normdrop.BatchNorm1d(10, backend=backend.name).train(training)
    np.testing.assert_allclose(host(backend, bn.running_mean), _np(ref.running_mean), rtol=1e-3)
    want = _np(ref(_t(arr)))
    y = backend.to_numpy(bn(backend.asarray(arr)))
    np.testing.assert_allclose(y, want, **tol(np.float32, "torch"))
    np.testing.assert_allclose(
        host(backend, bn.running_mean), _np(ref.running_mean), **tol(np.float32, "torch")
    )
    np.testing.assert_allclose(
        host(backend, bn.running_var), _np(ref.running_var), **tol(np.float32, "torch")
    )


def test_jittor_layernorm(backend):
    """Jittor test_batchnorm, "Test LayerNorm Layer": LayerNorm(224) against torch's (in a
    model in eval()) on randn (16, 10, 224, 224), here (2, 3, 4, 224): the outputs are
    equal."""
    _fast(backend)
    arr = np.random.RandomState(252).randn(2, 3, 4, 224).astype(np.float32)
    want = _np(torch.nn.LayerNorm(224).eval()(_t(arr)))
    layer = normdrop.LayerNorm(224, backend=backend.name).eval()
    y = backend.to_numpy(layer(backend.asarray(arr)))
    np.testing.assert_allclose(y, want, **tol(np.float32, "torch"))
    y = F.layer_norm(backend.asarray(arr), 224, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), want, **tol(np.float32, "torch"))


# Jittor/jittor python/jittor/test/test_aclop.py (test_dropout, test_dropout_grad): p 0.5
# on ones (4096, 4096), here (512, 512).


def test_jittor_aclop_dropout_and_grad(backend):
    """Jittor test_aclop test_dropout: dropout(p=0.5) of ones in training gives only 0 and
    1 / (1 - p), keeps a fraction within 0.02 of 1 - p, has a mean within 0.02 of 1, and a
    second call draws a fresh mask (the layer's call counter). test_dropout_grad: the
    gradient of the sum is 1 / (1 - p) on kept units, exactly 0 on dropped ones, i.e.
    equal to the forward output (layer.backward and dropout_backward)."""
    _fast(backend)
    p = 0.5
    x = np.ones((512, 512), np.float32)
    xb = backend.asarray(x)
    layer = normdrop.Dropout(p, seed=0, backend=backend.name)
    r = backend.to_numpy(layer(xb))
    kept = r != 0
    np.testing.assert_allclose(r[kept], 1.0 / (1.0 - p), rtol=1e-6)
    assert abs(kept.mean() - (1 - p)) < 0.02
    assert abs(r.mean() - 1.0) < 0.02
    g = backend.to_numpy(layer.backward(backend.asarray(np.ones_like(x))))
    np.testing.assert_allclose(g[kept], 1.0 / (1.0 - p), rtol=1e-6)
    assert np.abs(g[~kept]).max() == 0
    np.testing.assert_array_equal(g, r)
    g = backend.to_numpy(
        F.dropout_backward(backend.asarray(np.ones_like(x)), p, seed=0, call=0, backend=backend)
    )
    np.testing.assert_array_equal(g, r)
    r2 = backend.to_numpy(layer(xb))
    assert not np.array_equal(r != 0, r2 != 0)
