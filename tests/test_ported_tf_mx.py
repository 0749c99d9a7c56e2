"""TensorFlow's, MXNet's, Sonnet's and others' batch norm, layer norm and dropout tests, ported.

Each test names its source: a repository, a file and a test in it (TensorFlow's
``tensorflow/python/ops/nn_batchnorm_test.py``, ``nn_fused_batchnorm_test.py`` and
``nn_test.py``; MXNet's ``tests/python/unittest/test_operator.py`` and ``test_gluon.py``;
Sonnet's ``sonnet/src/batch_norm_test.py``, ``axis_norm_test.py`` and ``dropout_test.py``;
tf-keras' ``layer_normalization_test.py``; OneFlow's ``test_batchnorm.py`` and
``test_bn_eval_backward.py`` and ``test_layer_norm.py``; JAX's ``tests/stax_test.py``; MindSpore's
``tests/st/ops/cpu/test_layer_norm_op.py``). The one discrepancy found
(no bias gradient from the ``*_backward`` functions without a weight) is a documented
convention (docs/differences.md), checked in test_tf_batch_norm_gradients_given_statistics.

Where a project's convention differs from PyTorch's, the port checks the property the
test is about in PyTorch's terms, which SPEC.md follows: MXNet's ``momentum`` is the
weight of the *old* running value (``momentum = 1 - mxnet_momentum``) and its native
kernels and Gluon update ``running_var`` with the biased variance (PyTorch: unbiased);
TensorFlow's ``fused_batch_norm`` returns the batch mean and the Bessel-corrected batch
variance, which are PyTorch's running statistics after one update with ``momentum=1``;
channels-last (NHWC) data and MXNet's ``axis=`` go in as a view with the channel at axis
1 (normdrop's channel axis) and LayerNorm over one inner axis as a view with that axis
last. The numbers come from each project's own reference formula, written out here in
float64, or from PyTorch, never from normdrop itself. Not ported: second derivatives
(normdrop has only first-order ``*_backward`` functions), gradients with respect to the
running statistics (TensorFlow's ``mean``/``variance`` gradients: normdrop's running
statistics are buffers), noise shapes / MXNet's dropout ``axes`` (normdrop's masks are
element-wise), MXNet's ``mode='always'`` (normdrop's eval-mode dropout is the identity,
as PyTorch's), SyncBatchNorm across devices, and data-format and initializer options.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import central_differences, host, skip_on_slow_backend, tol, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F
from normdrop.errors import DTypeError, InvalidParameterError, ShapeError

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _fast(backend):
    skip_on_slow_backend(backend, "too many elements or calls for the CUDA simulator")


def _data(backend, a):
    """``a`` for ``backend.asarray``: strided NumPy views as they are on CPU backends, a
    contiguous copy for device backends (which take dense arrays)."""
    return a if backend.device == "cpu" else np.ascontiguousarray(a)


def _bn_channels_last(x, mean, var, offset, scale, eps):
    """Batch norm of channels-last data in float64 (``offset``/``scale`` may be None):
    TensorFlow's ``_npBatchNorm`` and ``_batch_norm`` references."""
    y = (np.asarray(x, np.float64) - mean) / np.sqrt(np.asarray(var, np.float64) + eps)
    if scale is not None:
        y = y * scale
    if offset is not None:
        y = y + offset
    return y


# ============================================================================== TensorFlow
# tensorflow/tensorflow tensorflow/python/ops/nn_batchnorm_test.py (BatchNormalizationTest,
# MomentsTest), nn_fused_batchnorm_test.py (BatchNormalizationTest) and nn_test.py
# (DropoutTest). TensorFlow's data is channels-last (NHWC): it goes in as the channels-first
# view ``np.moveaxis(x, -1, 1)``.


@pytest.mark.parametrize("shift", [True, False], ids=["shift", "no_shift"])
@pytest.mark.parametrize("scale", [True, False], ids=["scale", "no_scale"])
def test_tf_batch_norm_given_statistics(backend, scale, shift):
    """nn_batchnorm_test.py BatchNormalizationTest.testBatchNorm: x of shape [3, 5, 4, 2]
    (NHWC) and mean, variance, beta, gamma of shape [2] from random_sample, epsilon 0.001,
    with and without scale_after_normalization and shift_after_normalization (weight and
    bias given or None): batch_normalization with the given statistics (evaluation with
    running statistics) equals ``_npBatchNorm`` within atol 1e-5, in float32."""
    rng = np.random.default_rng(900)
    x = rng.random((3, 5, 4, 2)).astype(np.float32)
    m, v, beta, gamma = rng.random((4, 2)).astype(np.float32)
    want = _bn_channels_last(x, m, v, beta if shift else None, gamma if scale else None, 1e-3)
    y = F.batch_norm(
        backend.asarray(_data(backend, np.moveaxis(x, -1, 1))),
        vec(backend, m),
        vec(backend, v),
        vec(backend, gamma) if scale else None,
        vec(backend, beta) if shift else None,
        training=False,
        eps=1e-3,
        backend=backend,
    )
    got = np.moveaxis(backend.to_numpy(y), 1, -1)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [True, False], ids=["scale", "no_scale"])
def test_tf_batch_norm_gradients_given_statistics(backend, scale):
    """nn_batchnorm_test.py testBatchNormInputGradient, testBatchNormBetaGradient and
    testBatchNormGammaGradient: float64 x of shape [3, 5, 4, 5] (NHWC) with given mean and
    variance (epsilon 0.001): the gradients of sum(gy * y) with respect to x, beta and
    gamma equal central differences of ``_npBatchNorm`` (TensorFlow's gradient_checker).
    Without scale_after_normalization there is no gamma (weight None). Also
    testBatchNormGradImpl (float32, shape [7, 5, 4, 6], atol 1e-6): the analytic gradients
    dx = gy * gamma * rsqrt(v + eps), db = sum(gy), dg = sum(gy * (x - m) * rsqrt(v + eps))."""
    rng = np.random.default_rng(901)
    x = rng.random((3, 5, 4, 5))
    m, v, beta, gamma = rng.random((4, 5))
    gy = rng.random(x.shape)
    g = gamma if scale else None

    def loss():
        return np.sum(gy * _bn_channels_last(x, m, v, beta, g, 1e-3))

    want = [central_differences(loss, a) for a in (x, beta, gamma)]
    rstd = 1 / np.sqrt(v + 1e-3)
    dx, dw, db = F.batch_norm_backward(
        backend.asarray(_data(backend, np.moveaxis(gy, -1, 1))),
        backend.asarray(_data(backend, np.moveaxis(x, -1, 1))),
        vec(backend, m),
        vec(backend, rstd),
        vec(backend, g),
        training=False,
        backend=backend,
    )
    np.testing.assert_allclose(np.moveaxis(backend.to_numpy(dx), 1, -1), want[0], atol=1e-8)
    if scale:
        np.testing.assert_allclose(host(backend, db), want[1], atol=1e-8)
        np.testing.assert_allclose(host(backend, dw), want[2], atol=1e-8)
    else:
        # Without weight normdrop returns no parameter gradients (docs/differences.md);
        # beta's gradient is gy summed over all but the channel axis.
        assert dw is None and db is None
        np.testing.assert_allclose(gy.sum((0, 1, 2)), want[1], atol=1e-8)

    x32 = rng.random((7, 5, 4, 6)).astype(np.float32)
    m32, v32, gamma32 = rng.random((3, 6)).astype(np.float32)
    gy32 = rng.random(x32.shape).astype(np.float32)
    r32 = 1 / np.sqrt(v32.astype(np.float64) + 1e-3)
    dx, dw, db = F.batch_norm_backward(
        backend.asarray(_data(backend, np.moveaxis(gy32, -1, 1))),
        backend.asarray(_data(backend, np.moveaxis(x32, -1, 1))),
        vec(backend, m32),
        vec(backend, r32.astype(np.float32)),
        vec(backend, gamma32),
        training=False,
        backend=backend,
    )
    np.testing.assert_allclose(
        np.moveaxis(backend.to_numpy(dx), 1, -1), gy32 * gamma32 * r32, atol=1e-6, rtol=0
    )
    np.testing.assert_allclose(host(backend, db), gy32.sum((0, 1, 2), dtype=np.float64), rtol=1e-6)
    dg = (gy32 * (x32 - m32.astype(np.float64)) * r32).sum((0, 1, 2))
    np.testing.assert_allclose(host(backend, dw), dg, rtol=1e-5)


@pytest.mark.parametrize(
    ("x_shape", "param_shape"),
    [
        ((3, 3), (1, 3)),
        ((3, 3), (3, 1)),
        ((3, 2, 4, 5), (1, 2, 1, 1)),
        ((2, 3, 2, 4, 5), (1, 1, 1, 4, 5)),
    ],
    ids=["rows", "columns", "axis1", "two_axes"],
)
def test_tf_batch_norm_arbitrary_shapes(backend, x_shape, param_shape):
    """nn_batchnorm_test.py testBatchNormArbitraryShapes: batch normalization works
    wherever the 'depth' axis is. Parameters of shape (1, 3) on (3, 3) data are per
    column (normdrop's channel axis 1), (3, 1) per row (the transposed view), (1, 2, 1, 1)
    on (3, 2, 4, 5) per axis-1 channel, and (1, 1, 1, 4, 5) on (2, 3, 2, 4, 5) per (4, 5)
    position: those two axes flattened into 20 channels of a (12, 20) view. Evaluation
    with the given statistics equals ``_npBatchNorm`` (atol 1e-4; 0.005 for the last)."""
    rng = np.random.default_rng(902)
    x = rng.random(x_shape).astype(np.float32)
    m, v, beta, gamma = rng.random((4, *param_shape)).astype(np.float32)
    want = _bn_channels_last(x, m, v, beta, gamma, 1e-3)
    axes = [i for i, n in enumerate(param_shape) if n != 1]
    c = int(np.prod(param_shape))
    # move the parameter axes to the end, flatten them into one channel axis, put it at 1
    moved = np.moveaxis(x, axes, list(range(x.ndim - len(axes), x.ndim)))
    lead = moved.shape[: x.ndim - len(axes)]
    view = np.moveaxis(moved.reshape(*lead, c), -1, 1)
    y = F.batch_norm(
        backend.asarray(_data(backend, view)),
        *(vec(backend, a.reshape(c)) for a in (m, v, gamma, beta)),
        training=False,
        eps=1e-3,
        backend=backend,
    )
    got = np.moveaxis(
        np.moveaxis(backend.to_numpy(y), 1, -1).reshape(moved.shape),
        list(range(x.ndim - len(axes), x.ndim)),
        axes,
    )
    np.testing.assert_allclose(got, want, atol=0.005 if len(axes) == 2 else 1e-4, rtol=0)


def test_tf_batch_norm_keep_dims_parameters_are_a_shape_error():
    """nn_batchnorm_test.py testBatchNormKeepDims: TensorFlow broadcasts parameters of shape
    (1, 1, 1, depth) like (depth,). normdrop's per-channel vectors have shape (C,), as
    PyTorch's (``F.batch_norm`` with a (1, C, 1) running_mean fails in torch too); a
    keep-dims vector is a ShapeError naming the parameter, not a silent broadcast."""
    x = np.random.default_rng(903).random((3, 2, 5))
    with pytest.raises(RuntimeError):
        TF.batch_norm(_t(x), torch.zeros(1, 2, 1), torch.ones(1, 2, 1))
    with pytest.raises(ShapeError, match=r"running_mean must have shape \(2,\), got \(1, 2, 1\)"):
        F.batch_norm(x, np.zeros((1, 2, 1)), np.ones((1, 2, 1)))


def _tf_moments(x, axes):
    """MomentsTest's expected moments, computed at high precision (float64 here): mean and
    E[x^2] - E[x]^2 over ``axes``."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=axes)
    return mean, (x * x).mean(axis=axes) - mean * mean


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("axes", [(0,), (0, 1, 2), (1, 2, 3)], ids=["basic", "global", "axes"])
def test_tf_moments(backend, axes, dtype):
    """nn_batchnorm_test.py MomentsTest.testBasic (axes [0]), testGlobalNormalization
    (axes [0, 1, 2], per channel of NHWC data) and testAxes (axes [1, 2, 3], per sample),
    shape [2, 3, 5, 4], float32 and float16 (computed in float32 by normdrop): the
    statistics the normalisation uses (``batch_norm_with_stats`` / ``layer_norm_with_stats``:
    mean and rstd = 1 / sqrt(var + eps)) equal the float64 moments within
    assertAllCloseAccordingToType's tolerance (1e-6, 1e-3 for float16). Axes [0] are a
    batch norm of the (2, 60) view; axes [1, 2, 3] a layer norm over (3, 5, 4)."""
    x = np.random.default_rng(904).standard_normal((2, 3, 5, 4)).astype(np.float32).astype(dtype)
    mean_want, var_want = _tf_moments(x, axes)
    eps = 1e-5
    if axes == (0,):
        _, mean, rstd = F.batch_norm_with_stats(
            backend.asarray(x.reshape(2, 60)), training=True, eps=eps, backend=backend
        )
        mean_want, var_want = mean_want.reshape(60), var_want.reshape(60)
    elif axes == (0, 1, 2):
        view = _data(backend, np.moveaxis(x, -1, 1))
        _, mean, rstd = F.batch_norm_with_stats(
            backend.asarray(view), training=True, eps=eps, backend=backend
        )
    else:
        _, mean, rstd = F.layer_norm_with_stats(
            backend.asarray(x), (3, 5, 4), eps=eps, backend=backend
        )
    mean = host(backend, mean).astype(np.float64).reshape(mean_want.shape)
    var = host(backend, rstd).astype(np.float64).reshape(var_want.shape) ** -2 - eps
    close = {"rtol": 1e-3, "atol": 1e-3} if dtype == np.float16 else {"rtol": 1e-6, "atol": 1e-6}
    np.testing.assert_allclose(mean, mean_want, **close)
    np.testing.assert_allclose(var, var_want, **{k: 2 * t for k, t in close.items()})


#: nn_fused_batchnorm_test.py's shapes (x_shape, data_format). Shape4 and the empty Shape5
#: ([27, 131, 127, 6] and [0, 131, 127, 6]) become [5, 7, 11, 4] and [0, 7, 11, 4], the
#: sizes of its testBatchNormGradShape4/5.
_TF_FUSED = [
    ((1, 1, 6, 1), "NHWC"),
    ((1, 1, 6, 1), "NCHW"),
    ((1, 1, 6, 2), "NHWC"),
    ((1, 2, 1, 6), "NCHW"),
    ((5, 7, 11, 4), "NHWC"),
    ((5, 7, 11, 4), "NCHW"),
    ((0, 7, 11, 4), "NHWC"),
    ((0, 7, 11, 4), "NCHW"),
]
_TF_FUSED_IDS = ["1_NHWC", "1_NCHW", "2_NHWC", "3_NCHW", "4_NHWC", "4_NCHW", "5_NHWC", "5_NCHW"]


def _nchw(x, data_format):
    """Data in NCHW (normdrop's channel axis 1): a view of NHWC data."""
    return np.moveaxis(x, -1, 1) if data_format == "NHWC" else x


def _fused_case(x_shape, data_format, x_dtype, seed):
    rng = np.random.default_rng(seed)
    c = x_shape[-1] if data_format == "NHWC" else x_shape[1]
    x = rng.random(x_shape).astype(x_dtype)
    scale, offset, mean, var = rng.random((4, c)).astype(np.float32)
    return _nchw(x, data_format), scale, offset, mean, var


@pytest.mark.parametrize("x_dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("x_shape", "data_format"), _TF_FUSED, ids=_TF_FUSED_IDS)
def test_tf_fused_batch_norm_inference(backend, x_shape, data_format, x_dtype):
    """nn_fused_batchnorm_test.py testInferenceShape1..5: x in float16 or float32 with
    float32 scale, offset, mean and variance (random_sample), epsilon 0.001,
    is_training=False: y keeps x's dtype and shape (also for an empty batch) and equals
    ``_batch_norm`` within atol 1e-3 (2e-3 for float16)."""
    if backend.name == "cuda" and (x_shape[0] != 1 or x_dtype == np.float16):
        pytest.skip("the smallest shapes are enough under the CUDA simulator")
    x, scale, offset, mean, var = _fused_case(x_shape, data_format, x_dtype, 905)
    y = F.batch_norm(
        backend.asarray(_data(backend, x)),
        vec(backend, mean),
        vec(backend, var),
        vec(backend, scale),
        vec(backend, offset),
        training=False,
        eps=1e-3,
        backend=backend,
    )
    y = backend.to_numpy(y)
    assert y.dtype == x_dtype and y.shape == x.shape
    c = (slice(None), None) if x.ndim == 2 else (slice(None), None, None)
    want = (x - mean[c]) / np.sqrt(var[c].astype(np.float64) + 1e-3) * scale[c] + offset[c]
    # TensorFlow's atol; for float16 also one float16 ulp (2**-10 relative): values reach 12
    # here (small variances), where float16's spacing is 0.0078.
    half = x_dtype == np.float16
    np.testing.assert_allclose(y, want, atol=2e-3 if half else 1e-3, rtol=2**-10 if half else 0)


@pytest.mark.parametrize("x_dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("x_shape", "data_format"), _TF_FUSED, ids=_TF_FUSED_IDS)
def test_tf_fused_batch_norm_training(backend, x_shape, data_format, x_dtype):
    """nn_fused_batchnorm_test.py testTrainingShape1..5: is_training=True returns y, the
    batch mean and the batch variance with Bessel's correction (n / (n - 1)); in PyTorch's
    terms the running statistics after one update with momentum 1. y equals ``_batch_norm``
    with nn.moments' statistics within atol 1e-3 (2e-3 for float16), the running mean
    and variance equal the mean and the corrected variance within atol 1e-3. For the empty
    batch (Shape5) TensorFlow returns NaN statistics; PyTorch (SPEC) leaves the running
    statistics unchanged and counts the batch."""
    if backend.name == "cuda" and (x_shape[0] != 1 or x_dtype == np.float16):
        pytest.skip("the smallest shapes are enough under the CUDA simulator")
    x, scale, offset, _, _ = _fused_case(x_shape, data_format, x_dtype, 906)
    bn = normdrop.BatchNorm1d(scale.size, eps=1e-3, momentum=1.0, backend=backend.name)
    bn.weight, bn.bias = vec(backend, scale), vec(backend, offset)
    flat = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    y = backend.to_numpy(bn(backend.asarray(_data(backend, flat)))).reshape(x.shape)
    assert y.dtype == x_dtype and int(bn.num_batches_tracked) == 1
    axes = (0, 2, 3)
    if x.shape[0] == 0:
        assert y.shape == x.shape
        np.testing.assert_array_equal(host(backend, bn.running_mean), 0)
        np.testing.assert_array_equal(host(backend, bn.running_var), 1)
        return
    mean, var = x.mean(axes, dtype=np.float64), x.var(axes, dtype=np.float64)
    c = (slice(None), None, None)
    want = (x - mean[c]) / np.sqrt(var[c] + 1e-3) * scale[c] + offset[c]
    np.testing.assert_allclose(y, want, atol=2e-3 if x_dtype == np.float16 else 1e-3, rtol=0)
    n = x.size / scale.size
    np.testing.assert_allclose(host(backend, bn.running_mean), mean, atol=1e-3, rtol=0)
    np.testing.assert_allclose(
        host(backend, bn.running_var), var * n / max(n - 1.0, 1.0), atol=1e-3, rtol=0
    )


@functools.cache
def _tf_fused_numeric_grads(x_shape, data_format, is_training):
    """Central differences (float64) of sum(gy * y) for nn_fused_batchnorm_test.py's
    _test_gradient case: with respect to x, scale and offset, in NCHW."""
    rng = np.random.default_rng(907)
    x, scale, offset, mean, var = _fused_case(x_shape, data_format, np.float64, 907)
    x, scale, offset = np.array(x), scale.astype(np.float64), offset.astype(np.float64)
    gy = rng.random(x.shape)
    c = (slice(None), None, None)

    def loss():
        if x.size == 0:
            return 0.0
        if is_training:
            m, v = x.mean((0, 2, 3)), x.var((0, 2, 3))
        else:
            m, v = mean.astype(np.float64), var.astype(np.float64)
        return np.sum(gy * ((x - m[c]) / np.sqrt(v[c] + 1e-3) * scale[c] + offset[c]))

    grads = tuple(central_differences(loss, a) for a in (x, scale, offset))
    return x, scale, offset, mean, var, gy, grads


@pytest.mark.parametrize("is_training", [True, False], ids=["training", "frozen"])
@pytest.mark.parametrize(
    ("x_shape", "data_format"),
    _TF_FUSED[:6] + _TF_FUSED[7:],
    ids=_TF_FUSED_IDS[:6] + _TF_FUSED_IDS[7:],
)
def test_tf_fused_batch_norm_gradient(backend, x_shape, data_format, is_training):
    """nn_fused_batchnorm_test.py testBatchNormGradShape1..5, is_training True and False
    (given population statistics): the gradients with respect to x, scale and offset
    equal the numerical ones (gradient_checker's bound 1e-3); for the empty batch the
    input gradient is empty and the scale and offset gradients are zeros. In float32 here
    (TensorFlow's float16 case compares float16 gradients with float32 differences),
    against float64 central differences; epsilon 0.001 (fused_batch_norm's default)."""
    if backend.name == "cuda" and x_shape[0] != 1:
        pytest.skip("the smallest shapes are enough under the CUDA simulator")
    x, scale, offset, mean, var, gy, want = _tf_fused_numeric_grads(
        x_shape, data_format, is_training
    )
    x32 = x.astype(np.float32)
    rm = vec(backend, mean) if not is_training else None
    rv = vec(backend, var) if not is_training else None
    _, m, rstd = F.batch_norm_with_stats(
        backend.asarray(x32),
        rm,
        rv,
        vec(backend, scale.astype(np.float32)),
        vec(backend, offset.astype(np.float32)),
        training=is_training,
        eps=1e-3,
        backend=backend,
    )
    got = F.batch_norm_backward(
        backend.asarray(gy.astype(np.float32)),
        backend.asarray(x32),
        m,
        rstd,
        vec(backend, scale.astype(np.float32)),
        training=is_training,
        backend=backend,
    )
    for name, g, w in zip(("x", "scale", "offset"), got, want, strict=True):
        g = host(backend, g)
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, atol=1e-3, rtol=1e-4, err_msg=name)
    if x.shape[0] == 0:
        np.testing.assert_array_equal(host(backend, got[1]), 0)
        np.testing.assert_array_equal(host(backend, got[2]), 0)


@pytest.mark.parametrize("keep_prob", [0.1, 0.5, 0.8])
def test_tf_dropout(backend, keep_prob):
    """nn_test.py DropoutTest.testDropout (and testDropoutPlaceholderKeepProb, testLargeRate):
    ones of shape [40, 30] at rate 1 - keep_prob, ten times: the shape is kept, the only
    values are 0 and 1 / keep_prob, and the kept count over the ten draws is within 15%
    of 40 * 30 * keep_prob * 10. The layer's ten training calls use calls 0..9 of its
    seed (SPEC), so the ten masks differ."""
    if backend.name == "cuda" and keep_prob != 0.5:
        pytest.skip("one rate is enough under the CUDA simulator")
    rate = 1 - keep_prob
    layer = normdrop.Dropout(rate, seed=908, backend=backend.name)
    t = backend.asarray(np.ones((40, 30), np.float32))
    count, masks = 0, set()
    for _ in range(10):
        value = backend.to_numpy(layer(t))
        assert value.shape == (40, 30)
        count += np.count_nonzero(value)
        masks.add((value != 0).tobytes())
        values = np.unique(value)
        assert values[0] == 0 and len(values) == 2
        np.testing.assert_allclose(values[1], 1 / keep_prob, rtol=1e-6)
    assert len(masks) == 10
    expected = 40 * 30 * keep_prob * 10
    assert abs(count - expected) / expected < 0.15


@pytest.mark.parametrize(
    "rate",
    [-1.0, 1.1, [0.0, 1.0], np.array([0.5, 0.5])],
    ids=["negative", "above_one", "list", "shape_2"],
)
def test_tf_dropout_invalid_rate(rate):
    """nn_test.py DropoutTest.testInvalidKeepProb / testInvalidRate: a rate of -1, 1.1, a
    list [0.0, 1.0] or a rate of shape [2] raises ValueError (normdrop's
    InvalidParameterError is one, and for a list or array also a TypeError), from the
    layer and the function."""
    with pytest.raises(ValueError, match=r"Dropout probability must be in \[0, 1\)"):
        normdrop.Dropout(rate)
    with pytest.raises(ValueError, match=r"Dropout probability must be in \[0, 1\)"):
        F.dropout(np.ones((40, 30), np.float32), rate, seed=0)
    if not isinstance(rate, float):
        with pytest.raises((TypeError, ValueError)):
            TF.dropout(torch.ones(3), rate)
        with pytest.raises(TypeError):
            normdrop.Dropout(rate)


def test_tf_dropout_no_dropout(backend):
    """nn_test.py DropoutTest.testNoDropout: zeros(5) at rate 0 come back equal (normdrop,
    as PyTorch, returns the input itself; SPEC)."""
    x = backend.asarray(np.zeros(5, np.float32))
    assert F.dropout(x, 0.0, backend=backend) is x
    layer = normdrop.Dropout(0.0, backend=backend.name)
    assert layer(x) is x
    np.testing.assert_array_equal(backend.to_numpy(x), 0)


@pytest.mark.parametrize("as_list", [False, True], ids=["array", "list"])
def test_tf_dropout_integer_inputs(as_list):
    """nn_test.py DropoutTest.testDropoutWithIntegerInputs: [1, 1, 1, 1, 1] (integers) at
    0.5 is refused (TensorFlow ValueError, PyTorch RuntimeError); normdrop raises its
    DTypeError naming the dtype, from the function and the layer."""
    x = [1, 1, 1, 1, 1] if as_list else np.array([1, 1, 1, 1, 1])
    with pytest.raises(RuntimeError):
        TF.dropout(torch.tensor([1, 1, 1, 1, 1]), 0.5)
    with pytest.raises(DTypeError, match="int64"):
        F.dropout(x, 0.5, seed=0)
    with pytest.raises(DTypeError, match="int64"):
        normdrop.Dropout(0.5, seed=0)(x)


# =================================================================================== MXNet
# apache/mxnet tests/python/unittest/test_operator.py (test_batchnorm, test_batchnorm_training,
# test_layer_norm, test_dropout) and test_gluon.py (test_batchnorm, test_layernorm,
# test_sync_batchnorm's single-device check, test_batchnorm_backward_synchronization,
# test_batchnorm_chnls). MXNet's ``axis=`` goes in as the view with that axis at 1 (batch
# norm) or last (layer norm).


def _mx_bn_reference(data, gamma, beta, ograd, axis, eps):
    """test_batchnorm's reference (float64): the output, batch mean and biased variance,
    and the gradients dX, dW, db written out as MXNet writes them."""
    data, ograd = np.asarray(data, np.float64), np.asarray(ograd, np.float64)
    red = tuple(i for i in range(data.ndim) if i != axis)
    expand = [1] * data.ndim
    expand[axis] = data.shape[axis]
    m = data.size / data.shape[axis]
    data_mean = data.mean(red, keepdims=True)
    data_var = ((data - data_mean) ** 2).mean(red, keepdims=True)
    w = np.reshape(gamma, expand)
    target = (data - data_mean) / np.sqrt(data_var + eps) * w + np.reshape(beta, expand)
    dnx = ograd * w
    xsm = data - data_mean
    nd = 1.0 / np.sqrt(data_var + eps)
    nx = xsm * nd
    dvar = (dnx * xsm).sum(red, keepdims=True) * (-0.5) * nd**3
    dmean = -nd * dnx.sum(red, keepdims=True) - dvar * xsm.mean(red, keepdims=True) * 2.0
    dx = dnx * nd + dvar * xsm * (2.0 / m) + dmean * (1.0 / m)
    dw = (ograd * nx).sum(red)
    db = ograd.sum(red)
    return target, data_mean.reshape(-1), data_var.reshape(-1), dx, dw, db


@pytest.mark.parametrize("fix_gamma", [False, True], ids=["gamma", "fix_gamma"])
@pytest.mark.parametrize("shape", [(4, 2), (4, 3, 4), (4, 6, 4, 5), (4, 5, 6, 4, 5)])
def test_mxnet_batchnorm(backend, shape, fix_gamma):
    """test_operator.py test_batchnorm (op BatchNorm, output_mean_var): for every channel
    axis, ten iterations on fresh uniform data with momentum 0.9 (PyTorch's 0.1) and eps
    1e-5: the output, the batch mean and MXNet's output_std = 1 / sqrt(var + eps)
    (normdrop's rstd) equal the reference; the running mean and variance follow
    ``running * 0.9 + batch * 0.1`` with the unbiased variance (MXNet's native kernel uses
    the biased one; m / (m - 1) is its cuDNN path and PyTorch's); dX, dW and db equal
    MXNet's written-out gradients. fix_gamma=True is a weight of ones. In float32 with
    normdrop's float32 tolerances (MXNet's are 5e-2). Ten iterations on the numpy backend,
    three on the others."""
    if backend.name == "cuda" and len(shape) > 2:
        pytest.skip("the 2-D shape is enough under the CUDA simulator")
    rng = np.random.default_rng(910)
    eps = 1e-5
    iters = 10 if backend.name == "numpy" else 3
    for axis in range(len(shape)):
        nch = shape[axis]
        gamma = np.ones(nch, np.float32) if fix_gamma else rng.random(nch, dtype=np.float32)
        beta = rng.random(nch, dtype=np.float32)
        running_mean, running_var = (
            vec(backend, np.zeros(nch, np.float32)),
            vec(backend, np.ones(nch, np.float32)),
        )
        want_mean, want_var = np.zeros(nch), np.ones(nch)
        for _ in range(iters):
            data = rng.random(shape, dtype=np.float32)
            ograd = rng.random(shape, dtype=np.float32)
            xb = backend.asarray(_data(backend, np.moveaxis(data, axis, 1)))
            y, mean, rstd = F.batch_norm_with_stats(
                xb,
                running_mean,
                running_var,
                vec(backend, gamma),
                vec(backend, beta),
                training=True,
                momentum=0.1,
                eps=eps,
                backend=backend,
            )
            dx, dw, db = F.batch_norm_backward(
                backend.asarray(_data(backend, np.moveaxis(ograd, axis, 1))),
                xb,
                mean,
                rstd,
                vec(backend, gamma),
                training=True,
                backend=backend,
            )
            target, bmean, bvar, tdx, tdw, tdb = _mx_bn_reference(
                data, gamma, beta, ograd, axis, eps
            )
            m = data.size / nch
            want_mean = want_mean * 0.9 + bmean * 0.1
            want_var = want_var * 0.9 + bvar * m / (m - 1) * 0.1
            close = tol(np.float32, factor=5)
            np.testing.assert_allclose(np.moveaxis(backend.to_numpy(y), 1, axis), target, **close)
            np.testing.assert_allclose(host(backend, mean), bmean, **close)
            np.testing.assert_allclose(host(backend, rstd), 1 / np.sqrt(bvar + eps), **close)
            np.testing.assert_allclose(host(backend, running_mean), want_mean, **close)
            np.testing.assert_allclose(host(backend, running_var), want_var, **close)
            np.testing.assert_allclose(
                np.moveaxis(backend.to_numpy(dx), 1, axis), tdx, **tol(np.float32, factor=50)
            )
            np.testing.assert_allclose(host(backend, dw), tdw, **tol(np.float32, factor=50))
            np.testing.assert_allclose(host(backend, db), tdb, **tol(np.float32, factor=50))


@pytest.mark.parametrize("grad_req", ["write", "add"])
def test_mxnet_batchnorm_grad_req(backend, grad_req):
    """test_operator.py test_batchnorm, grad_req 'write' and 'add' for gamma and beta (its
    4-D case): with 'add' the parameter gradients accumulate over the iterations
    (normdrop's ``layer.grads`` until ``zero_grad()``, as PyTorch's ``.grad``); with
    'write' they are the last iteration's (``zero_grad()`` before each backward). On a
    BatchNorm1d layer with (4, 6, 20) data, three iterations, against MXNet's dW and db."""
    rng = np.random.default_rng(911)
    bn = normdrop.BatchNorm1d(6, momentum=0.1, backend=backend.name)
    gamma, beta = rng.random((2, 6), dtype=np.float32)
    bn.weight, bn.bias = vec(backend, gamma), vec(backend, beta)
    sum_dw, sum_db = np.zeros(6), np.zeros(6)
    for _ in range(3):
        data, ograd = rng.random((2, 4, 6, 20), dtype=np.float32)
        if grad_req == "write":
            bn.zero_grad()
            sum_dw[:], sum_db[:] = 0, 0
        bn(backend.asarray(data))
        bn.backward(backend.asarray(ograd))
        *_, tdw, tdb = _mx_bn_reference(data, gamma, beta, ograd, 1, 1e-5)
        sum_dw += tdw
        sum_db += tdb
        np.testing.assert_allclose(
            host(backend, bn.grads["weight"]), sum_dw, **tol(np.float32, factor=50)
        )
        np.testing.assert_allclose(
            host(backend, bn.grads["bias"]), sum_db, **tol(np.float32, factor=50)
        )


@pytest.mark.parametrize("use_global_stats", [False, True], ids=["batch_stats", "global_stats"])
def test_mxnet_batchnorm_training_numeric_gradient(backend, use_global_stats):
    """test_operator.py test_batchnorm_training: check_numeric_gradient of BatchNorm on data
    of shape (2, 3), (2, 3, 2, 2) and (2, 8, 2, 2) (normal(-0.1, 0.1)), gamma ones but
    gamma[1] = 3, beta ones but beta[0] = 3, for every channel axis -ndim..ndim-1, with
    batch statistics and with use_global_stats (the given moving mean and a moving 'std'
    from uniform(0, 1), used as the variance): the input, gamma and beta gradients equal
    central differences (float64 here; MXNet's rtol 0.16-0.2 with numeric_eps 1e-2)."""
    rng = np.random.default_rng(912)
    shapes = [(2, 3)] if backend.name == "cuda" else [(2, 3), (2, 3, 2, 2), (2, 8, 2, 2)]
    eps = 1e-3  # MXNet's BatchNorm default
    for shape in shapes:
        for chaxis in range(-len(shape), len(shape)):
            axis = chaxis % len(shape)
            nch = shape[axis]
            x = rng.normal(-0.1, 0.1, size=shape)
            gamma, beta = np.ones(nch), np.ones(nch)
            if nch > 1:
                gamma[1] = 3
            beta[0] = 3
            moving_mean, moving_var = rng.uniform(size=(2, nch))
            gy = rng.standard_normal(shape)

            def loss(x=x, gamma=gamma, beta=beta, gy=gy, axis=axis, mm=moving_mean, mv=moving_var):
                nch = x.shape[axis]
                red = tuple(i for i in range(x.ndim) if i != axis)
                if use_global_stats:
                    mean, var = mm, mv
                else:
                    mean, var = x.mean(red), x.var(red)
                expand = [1] * x.ndim
                expand[axis] = nch
                y = (x - mean.reshape(expand)) / np.sqrt(var.reshape(expand) + eps)
                return np.sum(gy * (y * gamma.reshape(expand) + beta.reshape(expand)))

            want = [central_differences(loss, a) for a in (x, gamma, beta)]
            xb = backend.asarray(_data(backend, np.moveaxis(x, axis, 1)))
            rm = vec(backend, moving_mean) if use_global_stats else None
            rv = vec(backend, moving_var) if use_global_stats else None
            _, mean, rstd = F.batch_norm_with_stats(
                xb,
                rm,
                rv,
                vec(backend, gamma),
                vec(backend, beta),
                training=False,
                eps=eps,
                backend=backend,
            )
            dx, dg, db = F.batch_norm_backward(
                backend.asarray(_data(backend, np.moveaxis(gy, axis, 1))),
                xb,
                mean,
                rstd,
                vec(backend, gamma),
                training=not use_global_stats,
                backend=backend,
            )
            np.testing.assert_allclose(
                np.moveaxis(backend.to_numpy(dx), 1, axis), want[0], atol=1e-6, rtol=1e-6
            )
            np.testing.assert_allclose(host(backend, dg), want[1], atol=1e-6, rtol=1e-6)
            np.testing.assert_allclose(host(backend, db), want[2], atol=1e-6, rtol=1e-6)


def _mx_layer_norm(data, gamma, beta, axis, eps):
    """test_operator.py check_layer_normalization's npy_layer_norm (float64)."""
    data = np.asarray(data, np.float64)
    axis %= data.ndim
    shape = [1] * data.ndim
    shape[axis] = data.shape[axis]
    mean = data.mean(axis=axis, keepdims=True)
    std = np.sqrt(data.var(axis=axis, keepdims=True) + eps)
    return np.reshape(gamma, shape) * (data - mean) / std + np.reshape(beta, shape)


def _mx_layer_norm_grad(data, gamma, out_grad, axis, eps):
    """check_layer_normalization's npy_layer_norm_grad (float64)."""
    data, out_grad = np.asarray(data, np.float64), np.asarray(out_grad, np.float64)
    axis %= data.ndim
    exclude = tuple(i for i in range(data.ndim) if i != axis)
    data_std = np.sqrt(data.var(axis=axis, keepdims=True) + eps)
    centered = (data - data.mean(axis=axis, keepdims=True)) / data_std
    gamma_grad = (centered * out_grad).sum(axis=exclude)
    beta_grad = out_grad.sum(axis=exclude)
    shape = [1] * data.ndim
    shape[axis] = data.shape[axis]
    w = out_grad * np.reshape(gamma, shape) / data_std
    data_grad = (
        w
        - w.mean(axis=axis, keepdims=True)
        - centered * (w * centered).mean(axis=axis, keepdims=True)
    )
    return data_grad, gamma_grad, beta_grad


def _mx_check_layer_norm(backend, x, axis, eps, rng, forward_eps, backward_eps):
    """One check_layer_normalization case: LayerNorm over ``axis`` (the view with that axis
    last), forward and (``backward_eps`` not None) backward against the references,
    then grad_req 'add' on a LayerNorm layer: its ``grads`` add onto what they held."""
    dtype = x.dtype.type
    n = x.shape[axis]
    gamma, beta = rng.normal(0, 1, (2, n)).astype(dtype)
    xv = np.moveaxis(x, axis, -1)
    xb = backend.asarray(_data(backend, xv))
    y, mean, rstd = F.layer_norm_with_stats(
        xb, n, vec(backend, gamma), vec(backend, beta), eps, backend=backend
    )
    y = np.moveaxis(backend.to_numpy(y), -1, axis)
    assert y.dtype == dtype
    np.testing.assert_allclose(
        y, _mx_layer_norm(x, gamma, beta, axis, eps), rtol=forward_eps, atol=forward_eps
    )
    if backward_eps is None:
        return
    gy = rng.normal(0, 1, x.shape).astype(dtype)
    want = _mx_layer_norm_grad(x, gamma, gy, axis, eps)
    got = F.layer_norm_backward(
        backend.asarray(_data(backend, np.moveaxis(gy, axis, -1))),
        xb,
        n,
        mean,
        rstd,
        vec(backend, gamma),
        backend=backend,
    )
    got = (
        np.moveaxis(backend.to_numpy(got[0]), -1, axis),
        host(backend, got[1]),
        host(backend, got[2]),
    )
    for name, g, w in zip(("data", "gamma", "beta"), got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=backward_eps, atol=backward_eps, err_msg=name)
    # grad_req='add': gradients added to the initial ones (the layer's grads accumulate)
    layer = normdrop.LayerNorm(n, eps=eps, dtype=dtype, backend=backend.name)
    layer.weight, layer.bias = vec(backend, gamma), vec(backend, beta)
    init_gamma, init_beta = rng.normal(0, 1, (2, n))
    layer(xb)
    layer.backward(backend.asarray(_data(backend, np.moveaxis(gy, axis, -1))))
    grads = {k: host(backend, v).astype(np.float64) for k, v in layer.grads.items()}
    layer.zero_grad()
    layer.grads["weight"][...] = vec(backend, init_gamma.astype(dtype))
    layer.grads["bias"][...] = vec(backend, init_beta.astype(dtype))
    layer(xb)
    layer.backward(backend.asarray(_data(backend, np.moveaxis(gy, axis, -1))))
    np.testing.assert_allclose(
        host(backend, layer.grads["weight"]),
        grads["weight"] + init_gamma.astype(dtype),
        rtol=backward_eps,
        atol=backward_eps,
    )
    np.testing.assert_allclose(
        host(backend, layer.grads["bias"]),
        grads["bias"] + init_beta.astype(dtype),
        rtol=backward_eps,
        atol=backward_eps,
    )


_MX_LN_EPS = {np.float16: (1e-2, None), np.float32: (1e-3, 1e-3), np.float64: (1e-4, 1e-4)}


@pytest.mark.parametrize("in_shape", [(10, 6, 5), (10, 10)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_mxnet_layer_norm(backend, dtype, in_shape):
    """test_operator.py test_layer_norm / check_layer_normalization: normal(0, 1) data of
    shape (10, 6, 5) and (10, 10), gamma and beta normal(0, 1), LayerNorm over every axis
    (-ndim..ndim-1) with eps 1e-2 and 1e-3: the output equals npy_layer_norm (MXNet's
    forward_check_eps: 1e-2 float16, 1e-3 float32, 1e-4 float64); for float32 and float64
    the data, gamma and beta gradients equal npy_layer_norm_grad (backward_check_eps), with
    grad_req 'write' and 'add' (gradients added onto initial ones: the layer's ``grads``)."""
    if backend.name == "cuda" and (dtype != np.float32 or len(in_shape) == 3):
        pytest.skip("one float32 shape is enough under the CUDA simulator")
    rng = np.random.default_rng(913)
    forward_eps, backward_eps = _MX_LN_EPS[dtype]
    axes = range(-len(in_shape), len(in_shape))
    for axis in [-1, 0] if backend.name == "cuda" else axes:
        for eps in (1e-2,) if backend.name == "cuda" else (1e-2, 1e-3):
            x = rng.normal(0, 1, in_shape).astype(dtype)
            _mx_check_layer_norm(backend, x, axis, eps, rng, forward_eps, backward_eps)


@pytest.mark.parametrize("axis", [-1, 0])
def test_mxnet_layer_norm_large(backend, axis):
    """test_operator.py test_layer_norm's (128 * 32, 512) shape (no finite-difference check
    there either), float32, over the last and the first axis (a strided view), eps 1e-3;
    on the numpy and numba backends (the others' chunking is tested elsewhere)."""
    if backend.name not in ("numpy", "numba"):
        pytest.skip("a large shape: the numpy and numba backends only")
    rng = np.random.default_rng(914)
    x = rng.normal(0, 1, (128 * 32, 512)).astype(np.float32)
    _mx_check_layer_norm(backend, x, axis, 1e-3, rng, *_MX_LN_EPS[np.float32])


@pytest.mark.parametrize("ratio", [0.5, 0.0, 0.75, 0.25])
def test_mxnet_dropout_ratio(backend, ratio):
    """test_operator.py test_dropout / check_dropout_ratio on ones of shape (100, 100): the
    largest value is 1 / (1 - ratio) (> 0), the smallest 0 (1 at ratio 0); no zeros at
    ratio 0, some above 0.2; |sum(out) - sum(in)| / sum(in) < ratio / 2. At 0.5 the
    backward of ones equals the output (mask * 2), and in evaluation the output and the
    backward of ones equal the input (check_passthrough). MXNet's max_value is written
    1 / ratio, which is the same number at 0.5, the only ratio where it is compared."""
    if backend.name == "cuda" and ratio != 0.5:
        pytest.skip("one ratio is enough under the CUDA simulator")
    shape = (20, 20) if backend.name == "cuda" else (100, 100)
    layer = normdrop.Dropout(ratio, seed=915, backend=backend.name)
    x = backend.asarray(np.ones(shape, np.float32))
    out = backend.to_numpy(layer(x))
    assert out.max() > 0
    if ratio == 0:
        assert out.min() == 1 and np.count_nonzero(out == 0) == 0
    else:
        assert out.min() == 0 and out.max() == np.float32(1) / np.float32(1 - ratio)
    zeros = np.count_nonzero(out == 0)
    if ratio > 0.2:
        assert zeros > 0
    assert abs(out.sum(dtype=np.float64) - out.size) / out.size < max(ratio / 2, 1e-12)
    if ratio == 0.5:
        grad = backend.to_numpy(layer.backward(backend.asarray(np.ones(shape, np.float32))))
        np.testing.assert_array_equal(grad, out)
        layer.eval()
        assert layer(x) is x
        grad = backend.to_numpy(layer.backward(backend.asarray(np.ones(shape, np.float32))))
        np.testing.assert_array_equal(grad, np.ones(shape))


def test_mxnet_dropout_ratio_one_is_refused():
    """test_operator.py check_dropout_ratio(1.0) and check_passthrough(1.0): MXNet zeroes
    everything (PyTorch too). normdrop's Dropout refuses p = 1 (SPEC, from Deepbox's API;
    docs/differences.md); the functional form accepts it in evaluation, where p is unused
    (as PyTorch), and gives the input back."""
    with pytest.raises(
        InvalidParameterError, match=r"Dropout probability must be in \[0, 1\), got 1.0"
    ):
        normdrop.Dropout(1.0)
    x = np.ones((100, 100), np.float32)
    assert F.dropout(x, 1.0, training=False) is x
    assert TF.dropout(_t(x), 1.0, training=False).sum() == x.size


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda name: normdrop.BatchNorm1d(10, backend=name), (2, 10, 100)),
        (lambda name: normdrop.LayerNorm(10, backend=name), (2, 10, 10, 10)),
    ],
    ids=["BatchNorm", "LayerNorm"],
)
def test_mxnet_gluon_check_layer_forward(backend, make, shape):
    """test_gluon.py test_batchnorm / test_layernorm (check_layer_forward): ones of shape
    (2, 10, 10, 10) through the layer (BatchNorm1d takes it as (2, 10, 100)) and the
    backward of ones; the hybridized second run gives the same output and input gradient
    (here: a second call). Constant data normalises to exactly 0 (SPEC: the bias), and
    its gradient is 0 too."""
    if backend.name == "cuda":
        shape = (2, 10, 3) if len(shape) == 3 else (2, 3, 10)
    layer = make(backend.name)
    runs = []
    for _ in range(2):
        out = backend.to_numpy(layer(backend.asarray(np.ones(shape, np.float32))))
        dx = backend.to_numpy(layer.backward(backend.asarray(np.ones(shape, np.float32))))
        runs.append((out, dx))
    np.testing.assert_array_equal(runs[0][0], 0)
    np.testing.assert_allclose(runs[0][1], 0, atol=1e-6)
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_mxnet_gluon_layernorm_wrong_size():
    """test_gluon.py test_layernorm: LayerNorm(in_channels=10) on ones of shape (2, 11)
    raises (MXNet AssertionError; PyTorch RuntimeError; normdrop ShapeError naming the
    expected and received shapes), and nothing is saved for backward."""
    layer = normdrop.LayerNorm(10)
    with pytest.raises(RuntimeError):
        torch.nn.LayerNorm(10)(torch.ones(2, 11))
    with pytest.raises(ShapeError, match=r"\(\.\.\., 10\), got \(2, 11\)"):
        layer(np.ones((2, 11), np.float32))
    with pytest.raises(normdrop.BackwardBeforeForwardError):
        layer.backward(np.ones((2, 11), np.float32))


@pytest.mark.parametrize("shape", [(24, 2), (24, 3, 4), (24, 4, 4, 4), (24, 5, 6, 4, 4)])
def test_mxnet_gluon_sync_batchnorm_single_device(backend, shape):
    """test_gluon.py test_sync_batchnorm, _check_batchnorm_result with one device: uniform
    data, loss = sum(out ** 2): the output is (x - mean) / sqrt(var + 1e-5), the running
    statistics after one step are ``0.9 * init + 0.1 * batch`` and the input gradient
    is torch's. MXNet's Gluon updates running_var with the biased variance; PyTorch's
    unbiased one is checked (the 4-D and 5-D shapes through the functional API, as
    BatchNorm1d takes rank 2 or 3)."""
    if backend.name == "cuda" and len(shape) > 2:
        pytest.skip("the 2-D shape is enough under the CUDA simulator")
    x = np.random.default_rng(916).uniform(size=shape).astype(np.float32)
    nch = shape[1]
    rm, rv = vec(backend, np.zeros(nch, np.float32)), vec(backend, np.ones(nch, np.float32))
    w, b = vec(backend, np.ones(nch, np.float32)), vec(backend, np.zeros(nch, np.float32))
    xb = backend.asarray(x)
    y, mean, rstd = F.batch_norm_with_stats(xb, rm, rv, w, b, training=True, backend=backend)
    dx, _, _ = F.batch_norm_backward(2 * y, xb, mean, rstd, w, training=True, backend=backend)
    tx = _t(x).requires_grad_(True)
    trm, trv = torch.zeros(nch), torch.ones(nch)
    ty = TF.batch_norm(tx, trm, trv, torch.ones(nch), torch.zeros(nch), True, 0.1, 1e-5)
    (ty**2).sum().backward()
    axes = (0,) + tuple(range(2, len(shape)))
    target = (x - x.mean(axes, keepdims=True, dtype=np.float64)) / np.sqrt(
        x.var(axes, keepdims=True, dtype=np.float64) + 1e-5
    )
    np.testing.assert_allclose(backend.to_numpy(y), target, **tol(np.float32))
    n = x.size / nch
    np.testing.assert_allclose(
        host(backend, rm), 0.1 * x.mean(axes, dtype=np.float64), **tol(np.float32)
    )
    unbiased = x.var(axes, dtype=np.float64) * n / (n - 1)
    np.testing.assert_allclose(host(backend, rv), 0.9 + 0.1 * unbiased, **tol(np.float32))
    np.testing.assert_allclose(host(backend, rv), trv.numpy(), **tol(np.float32, "torch"))
    np.testing.assert_allclose(
        backend.to_numpy(dx), tx.grad.numpy(), **tol(np.float32, "torch", 10)
    )


def test_mxnet_gluon_batchnorm_backward_synchronization(backend):
    """test_gluon.py test_batchnorm_backward_synchronization: a BatchNorm on (1, 3, 10, 10)
    data normal(10, 2), three forward and backward passes; consecutive reads of
    running_mean and running_var give the same values. Here also: they equal torch's
    BatchNorm1d on the same data as (1, 3, 100)."""
    rng = np.random.default_rng(917)
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    tbn = torch.nn.BatchNorm1d(3)
    length = 4 if backend.name == "cuda" else 100
    for _ in range(3):
        data = rng.normal(10, 2, size=(1, 3, length)).astype(np.float32)
        out = bn(backend.asarray(data))
        bn.backward(backend.asarray(np.ones_like(data)))
        tbn(_t(data))
        assert backend.to_numpy(out).shape == data.shape
    for name in ("running_mean", "running_var"):
        first = host(backend, getattr(bn, name)).copy()
        for _ in range(10):
            np.testing.assert_array_equal(host(backend, getattr(bn, name)), first)
        np.testing.assert_allclose(first, getattr(tbn, name).numpy(), **tol(np.float32, "torch"))


def test_mxnet_gluon_batchnorm_channels(backend):
    """test_gluon.py test_batchnorm_chnls: BatchNorm with 1024, 512, 256, 128, 64, 45, 32,
    16 and 3 channels after a convolution of zeros (so zeros), gamma and beta initialised
    to 1 (init.Constant(1)), training: every output is exactly 1 (a constant channel
    gives the bias, SPEC)."""
    channels = [3, 16] if backend.name == "cuda" else [1024, 512, 256, 128, 64, 45, 32, 16, 3]
    for c in channels:
        bn = normdrop.BatchNorm1d(c, backend=backend.name)
        bn.weight, bn.bias = (
            vec(backend, np.ones(c, np.float32)),
            vec(backend, np.ones(c, np.float32)),
        )
        out = backend.to_numpy(bn(backend.asarray(np.zeros((1, c, 8 * 4), np.float32))))
        np.testing.assert_array_equal(out, 1.0)


def test_mxnet_gluon_slice_batchnorm(backend):
    """test_gluon.py test_slice_batchnorm (check_layer_forward_withinput): BatchNorm on a
    slice [0:4, 0:32, 0:32, 0:32] of a (16, 128, 256, 256) activation; here a slice
    [0:4, 0:12, 0:4, 0:6] of uniform (8, 16, 6, 9) data (and a [0:4, 0:12, 0:20] slice of
    (8, 16, 40) data for BatchNorm1d): output and input gradient of sum(y) equal those of
    the contiguous copy (the hybridized run in MXNet) and torch's. Views go in as they
    are on CPU backends."""
    rng = np.random.default_rng(918)
    if backend.name == "cuda":
        big, cut = rng.uniform(size=(3, 4, 5)).astype(np.float32), np.s_[0:2, 0:3, 0:4]
    else:
        big, cut = rng.uniform(size=(8, 16, 40)).astype(np.float32), np.s_[0:4, 0:12, 0:20]
    c = big[cut].shape[1]
    outs = []
    for x in (big[cut], np.ascontiguousarray(big[cut])):
        bn = normdrop.BatchNorm1d(c, backend=backend.name)
        y = backend.to_numpy(bn(backend.asarray(_data(backend, x))))
        dx = backend.to_numpy(bn.backward(backend.asarray(np.full(x.shape, 2.0, np.float32))))
        outs.append((y, dx, host(backend, bn.running_var)))
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    tbn = torch.nn.BatchNorm1d(c)
    tx = _t(big[cut]).requires_grad_(True)
    (2 * tbn(tx).sum()).backward()
    np.testing.assert_allclose(outs[0][0], _np(tbn(_t(big[cut]))), **tol(np.float32, "torch"))
    np.testing.assert_allclose(outs[0][1], tx.grad.numpy(), atol=1e-5)
    if backend.name == "cuda":
        return
    big4 = rng.uniform(size=(8, 16, 6, 9)).astype(np.float32)
    x4 = big4[0:4, 0:12, 0:4, 0:6]
    y4 = [
        F.batch_norm(backend.asarray(_data(backend, a)), training=True, backend=backend)
        for a in (x4, x4.copy())
    ]
    np.testing.assert_allclose(backend.to_numpy(y4[0]), backend.to_numpy(y4[1]), rtol=1e-6)
    want = TF.batch_norm(_t(x4), None, None, training=True)
    np.testing.assert_allclose(backend.to_numpy(y4[0]), _np(want), **tol(np.float32, "torch"))


def test_mxnet_gluon_fill_shape_load_and_cast(backend, tmp_path):
    """test_gluon.py test_fill_shape_load and test_dtype: a network with a BatchNorm of 64
    channels, run once, saved (save_parameters; normdrop's ``save``) and loaded into a new
    network has the same parameter shapes and running statistics and gives the same
    evaluation output; cast('float64') (``double()``) then runs float64 ones forward and
    backward in float64."""
    rng = np.random.default_rng(919)
    c = 4 if backend.name == "cuda" else 64
    net1 = normdrop.Sequential(
        normdrop.BatchNorm1d(c, backend=backend.name),
        normdrop.Dropout(0.1, seed=1, backend=backend.name),
    )
    x = rng.uniform(size=(2, c, 5)).astype(np.float32)
    net1(backend.asarray(x))
    net1.save(tmp_path / "net_fill")
    net2 = normdrop.Sequential(
        normdrop.BatchNorm1d(c, backend=backend.name),
        normdrop.Dropout(0.1, seed=2, backend=backend.name),
    )
    net2.load(tmp_path / "net_fill.npz")
    assert host(backend, net2[0].weight).shape == (c,)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_array_equal(
            host(backend, getattr(net2[0], name)), host(backend, getattr(net1[0], name))
        )
    net1.eval()
    net2.eval()
    np.testing.assert_array_equal(
        backend.to_numpy(net2(backend.asarray(x))), backend.to_numpy(net1(backend.asarray(x)))
    )
    net2.double().train()
    ones = np.ones((16, c, 3), np.float64)
    y = net2(backend.asarray(ones))
    dx = net2.backward(backend.asarray(ones))
    assert backend.to_numpy(y).dtype == np.float64 and backend.to_numpy(dx).dtype == np.float64
    assert host(backend, net2[0].weight).dtype == np.float64


# ================================================================================== Sonnet
# google-deepmind/sonnet sonnet/src/batch_norm_test.py (BaseBatchNormTest, BatchNormTest),
# axis_norm_test.py (LayerNormTest) and dropout_test.py (DropoutTest). Sonnet passes scale
# and offset at call time (create_scale=False); here they are the weight and bias.
# Not ported: the data_format, axis-type and initializer argument checks (normdrop has no
# such options).


@pytest.mark.parametrize(
    ("shape", "channels_last"),
    [
        ((2, 3, 3, 5), True),
        ((2, 5, 3, 3), False),
        ((2, 3, 3, 3, 5), True),
        ((2, 5, 3, 3, 3), False),
    ],
    ids=["NHWC", "NCHW", "NDHWC", "NCDHW"],
)
def test_sonnet_batch_norm_simple_training_and_test_stats(backend, shape, channels_last):
    """batch_norm_test.py testSimpleTraining, testSimpleTrainingNCHW, testSimpleTraining3D,
    testSimpleTraining3DNCDHW, testNoScaleAndOffset and testUsingTestStats: ones with
    scale 0.5 and offset 2.0 give exactly 2.0 in training (assertAllEqual), and without
    them exactly 0; then evaluation with the moving statistics (Sonnet's TestMetric keeps
    the last batch's: PyTorch's momentum 1) gives 2.0 within rtol 1e-5, atol 1e-3."""
    data = np.ones(shape, np.float32)
    view = _data(backend, np.moveaxis(data, -1, 1) if channels_last else data)
    xb = backend.asarray(view)
    scale, offset = (
        vec(backend, np.full(5, 0.5, np.float32)),
        vec(backend, np.full(5, 2.0, np.float32)),
    )
    rm, rv = vec(backend, np.zeros(5, np.float32)), vec(backend, np.ones(5, np.float32))
    y = F.batch_norm(xb, rm, rv, scale, offset, training=True, momentum=1.0, backend=backend)
    np.testing.assert_array_equal(backend.to_numpy(y), 2.0)
    np.testing.assert_array_equal(
        backend.to_numpy(F.batch_norm(xb, training=True, backend=backend)), 0.0
    )
    y = F.batch_norm(xb, rm, rv, scale, offset, training=False, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), 2.0, rtol=1e-5, atol=1e-3)


def test_sonnet_batch_norm_with_tf_function_test_local_stats(backend):
    """batch_norm_test.py testWithTfFunction: ones of shape [2, 5, 3, 3, 3] (channels last)
    in training, in evaluation, and in evaluation with test_local_stats=True (batch
    statistics at test time): 2.0 with scale 0.5 and offset 2.0, 0 without. normdrop's
    evaluation with batch statistics is BatchNorm1d(track_running_stats=False) (PyTorch's
    way) or ``batch_norm`` without running statistics (docs/differences.md). Evaluation
    right after construction uses the initial moving statistics (mean 0, variance 1):
    ones give 1 / sqrt(1 + eps), scaled and shifted; after a training call the moving
    statistics are that batch's (Sonnet's TestMetric: PyTorch's momentum 1)."""
    data = np.ones((2, 5, 3, 3, 3), np.float32)
    xb = backend.asarray(_data(backend, np.moveaxis(data, -1, 1)).reshape(2, 3, 45))
    for track in (True, False):
        bn = normdrop.BatchNorm1d(3, momentum=1.0, track_running_stats=track, backend=backend.name)
        bn.weight, bn.bias = (
            vec(backend, np.full(3, 0.5, np.float32)),
            vec(backend, np.full(3, 2.0, np.float32)),
        )
        bn.eval()
        got = backend.to_numpy(bn(xb))
        want = 2.0 if not track else 0.5 / np.sqrt(1 + 1e-5) + 2.0
        np.testing.assert_allclose(got, want, rtol=1e-6)
        bn.train()
        np.testing.assert_array_equal(backend.to_numpy(bn(xb)), 2.0)
        bn.eval()
        np.testing.assert_allclose(backend.to_numpy(bn(xb)), 2.0, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("scale_offset", [False, True], ids=["plain", "scale_offset"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["NHWC", "NCHW"])
def test_sonnet_layer_norm_simple_case(backend, channels_last, scale_offset):
    """axis_norm_test.py testSimpleCase, testSimpleCaseVar, testSimpleCaseNCHWVar,
    testSimpleCaseTensor and testSimpleCaseNCHWTensor: LayerNorm over the spatial axes
    [1, 2] (NHWC; [2, 3] for NCHW) of ones [2, 3, 3, 5] (or [2, 5, 3, 3]): exactly 0
    without scale and offset, exactly 2.0 with the per-channel scale 0.5 and offset 2.0
    (constant per channel: here the (3, 3) weight and bias full of them). The NHWC data
    goes in as the view with the channels before the spatial axes."""
    data = np.ones((2, 3, 3, 5) if channels_last else (2, 5, 3, 3), np.float32)
    view = _data(backend, np.moveaxis(data, -1, 1) if channels_last else data)
    w = vec(backend, np.full((3, 3), 0.5, np.float32)) if scale_offset else None
    b = vec(backend, np.full((3, 3), 2.0, np.float32)) if scale_offset else None
    y = F.layer_norm(backend.asarray(view), (3, 3), w, b, backend=backend)
    np.testing.assert_array_equal(backend.to_numpy(y), 2.0 if scale_offset else 0.0)


@pytest.mark.parametrize(
    "shape", [(3, 4, 4, 5), (3, 4, 4, 4, 5), (3, 4, 5)], ids=["4D", "5D", "3D"]
)
def test_sonnet_layer_norm_data_format_agnostic(backend, shape):
    """axis_norm_test.py testDataFormatAgnosticVar/Tensor, test5DDataFormatAgnostic and
    test3DDataFormatAgnostic: uniform(0, 10) data normalised over its spatial axes with a
    per-channel scale (normal, mean 1) and offset, channels last and channels first (the
    transposed data), give the same result (atol 1e-5). Here the channels-first copy and
    the channels-last strided view of the same data go through LayerNorm over the
    spatial shape, and both equal the float64 formula."""
    if backend.name == "cuda" and len(shape) == 5:
        pytest.skip("the 3-D and 4-D shapes are enough under the CUDA simulator")
    rng = np.random.default_rng(920)
    inputs = rng.uniform(0, 10, shape).astype(np.float32)
    scale = rng.normal(1.0, 1.0, shape[-1]).astype(np.float32)
    offset = rng.normal(size=shape[-1]).astype(np.float32)
    spatial = shape[1:-1]
    c_first = np.moveaxis(inputs, -1, 1)
    outs = []
    for x in (np.ascontiguousarray(c_first), _data(backend, c_first)):
        y = backend.to_numpy(F.layer_norm(backend.asarray(x), spatial, backend=backend))
        expand = (slice(None),) + (None,) * len(spatial)
        outs.append(np.moveaxis(y * scale[expand] + offset[expand], 1, -1))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5, rtol=0)
    red = tuple(range(1, len(shape) - 1))
    x64 = inputs.astype(np.float64)
    want = (x64 - x64.mean(red, keepdims=True)) / np.sqrt(x64.var(red, keepdims=True) + 1e-5)
    np.testing.assert_allclose(outs[0], want * scale + offset, **tol(np.float32, factor=5))


def test_sonnet_layer_norm_rank_changes():
    """axis_norm_test.py testRankChanges / testShapeAgnostic: Sonnet's LayerNorm, given axes
    by position, refuses a call whose rank differs from the first. A normdrop (and PyTorch)
    LayerNorm is given the normalized trailing shape, and any number of leading axes
    works: LayerNorm(5) on data of shape [2, 3, 3, 5], [2, 3, 3, 4, 5] and [5] equals
    torch's; only the trailing size is checked (a last axis of 4 is a ShapeError)."""
    layer = normdrop.LayerNorm(5)
    tlayer = torch.nn.LayerNorm(5)
    for shape in [(2, 3, 3, 5), (2, 3, 3, 4, 5), (5,)]:
        x = np.random.default_rng(921).uniform(0, 10, shape).astype(np.float32)
        np.testing.assert_allclose(layer(x), _np(tlayer(_t(x))), **tol(np.float32, "torch"))
    with pytest.raises(ShapeError):
        layer(np.ones((2, 3, 3, 4), np.float32))


@pytest.mark.parametrize("rate", [round(r, 1) for r in np.arange(0.0, 0.9, 0.1)])
def test_sonnet_dropout_sum_and_rate(backend, rate):
    """dropout_test.py test_sum_close and test_dropout_rate, rates 0, 0.1, ..., 0.8 on ones
    of shape [1000]: the sum in training is close to the sum in evaluation, and the kept
    count close to 1000 * (1 - rate). Sonnet's bound, rtol 0.1, is only 1.6 standard
    deviations of the binomial kept count at rate 0.8 (1.9 at 0.7), met by TensorFlow's
    generator for its seed; normdrop's Philox masks are not TensorFlow's, and over seeds
    0..299 85% meet it at rate 0.8 (the binomial's 89%). The port allows Sonnet's bound or
    four standard deviations, whichever is wider (seed 922 keeps 230 at rate 0.8)."""
    if backend.name == "cuda" and rate not in (0.0, 0.5):
        pytest.skip("two rates are enough under the CUDA simulator")
    mod = normdrop.Dropout(rate, seed=922, backend=backend.name)
    x = backend.asarray(np.ones(1000, np.float32))
    train = backend.to_numpy(mod(x))
    mod.eval()
    test = backend.to_numpy(mod(x))
    keep = 1 - rate
    bound = max(0.1 * 1000 * keep, 4 * np.sqrt(1000 * rate * keep))
    assert abs(np.count_nonzero(train) - 1000 * keep) <= bound
    assert abs(train.sum(dtype=np.float64) - test.sum(dtype=np.float64)) <= bound / keep + 1e-3


def test_sonnet_dropout_is_actually_random(backend):
    """dropout_test.py test_dropout_is_actually_random: two training calls of one module at
    rate 0.5 on ones [1000] differ (normdrop: calls 0 and 1 of the layer's seed), after
    seeding the global generator (tf.random.set_seed; normdrop.manual_seed) too."""
    normdrop.manual_seed(1)
    mod = normdrop.Dropout(0.5, backend=backend.name)
    x = backend.asarray(np.ones(1000, np.float32))
    y1, y2 = backend.to_numpy(mod(x)), backend.to_numpy(mod(x))
    assert not np.allclose(y1, y2)


# ================================================================================ tf-keras
# keras-team/tf-keras tf_keras/layers/normalization/layer_normalization_test.py
# (LayerNormalizationNumericsTest; the Keras 3 tests are in test_ported_others.py). Keras'
# ``axis`` may name any axes: they go in as the view with those axes last, in that order.

#: LayerNormalizationNumericsTest's (batch_input_shape, axis) cases.
_TFK_FORWARD = [
    ((4, 3), (0,)),
    ((3, 4), (1,)),
    ((4, 3, 2), (0,)),
    ((2, 4, 2), (1,)),
    ((2, 3, 4), (2,)),
    ((2, 3, 2), (0, 2)),
    ((2, 2, 2, 2), (1, 3)),
    ((2, 2, 2, 2), (2, 3)),
    ((2, 3, 4, 5), (3,)),
]
_TFK_BACKWARD = [
    ((4, 3), (0,)),
    ((2, 4, 2), (1,)),
    ((2, 3, 4), (2,)),
    ((2, 3, 2), (0, 2)),
    ((2, 2, 2, 2), (1, 3)),
    ((2, 2, 2, 2), (2, 3)),
]


def _tfk_case(shape, axis):
    """beta = arange, gamma = arange + 1 over the parameter shape; normal x (float64)."""
    param_shape = [shape[i] for i in axis]
    n = int(np.prod(param_shape))
    beta = np.arange(n, dtype=np.float64).reshape(param_shape)
    gamma = np.arange(1, n + 1, dtype=np.float64).reshape(param_shape)
    x = np.random.default_rng(930).normal(size=shape)
    return x, beta, gamma


def _tfk_expected(x, beta, gamma, axis, eps):
    """_expected_layer_norm (float64)."""
    broadcast = [x.shape[i] if i in axis else 1 for i in range(x.ndim)]
    y = (x - x.mean(axis=axis, keepdims=True)) / np.sqrt(x.var(axis=axis, keepdims=True) + eps)
    return y * np.reshape(gamma, broadcast) + np.reshape(beta, broadcast)


def _tfk_last(a, axis):
    """The view of ``a`` with ``axis`` moved to the end, in order (and back: ``_tfk_back``)."""
    return np.moveaxis(a, axis, tuple(range(a.ndim - len(axis), a.ndim)))


def _tfk_back(a, axis):
    return np.moveaxis(a, tuple(range(a.ndim - len(axis), a.ndim)), axis)


@pytest.mark.parametrize(("shape", "axis"), _TFK_FORWARD, ids=[str(c) for c in _TFK_FORWARD])
def test_tf_keras_layer_norm_forward(backend, shape, axis):
    """LayerNormalizationNumericsTest.test_forward (_test_forward_pass): gamma = 1..n and
    beta = 0..n-1 over the normalised axes, epsilon 1e-12 and 1e-3, in float64, float32
    and float16: the output equals _expected_layer_norm within rtol = atol = 1e-14
    (float64), 1e-6 (float32), 1e-2 (float16; 5e-2 for shape (2, 3, 4))."""
    if backend.name == "cuda" and shape != (2, 3, 4):
        pytest.skip("one shape is enough under the CUDA simulator")
    x, beta, gamma = _tfk_case(shape, axis)
    tols = {np.float64: 1e-14, np.float32: 1e-6, np.float16: 5e-2 if shape == (2, 3, 4) else 1e-2}
    for eps in (1e-12, 1e-3):
        expected = _tfk_expected(x, beta, gamma, axis, eps)
        for dtype, t in tols.items():
            xd = _tfk_last(x.astype(dtype), axis)
            y = F.layer_norm(
                backend.asarray(_data(backend, xd)),
                gamma.shape,
                vec(backend, gamma.astype(dtype)),
                vec(backend, beta.astype(dtype)),
                eps,
                backend=backend,
            )
            got = _tfk_back(backend.to_numpy(y), axis)
            assert got.dtype == dtype
            np.testing.assert_allclose(got, expected, rtol=t, atol=t, err_msg=f"{dtype} {eps}")


@pytest.mark.parametrize(("shape", "axis"), _TFK_BACKWARD, ids=[str(c) for c in _TFK_BACKWARD])
def test_tf_keras_layer_norm_backward(backend, shape, axis):
    """LayerNormalizationNumericsTest.test_backward (_test_backward_pass): the full
    Jacobians of the output with respect to x, beta and gamma (tf.test.compute_gradient;
    here one backward pass per output element, with a one-hot grad_output) equal the
    float64 numerical Jacobians within rtol = atol = 1e-5 for float64 and float32 (5e-4
    for shape (2, 3, 2) over axes (0, 2)); epsilon 1e-12 and 1e-3. Keras' float16 case
    (2e-2) is left out: normdrop's float16 backward is computed in float32 and checked
    elsewhere. A backward call per output element: the CUDA simulator is skipped, and
    dask runs two of the shapes."""
    _fast(backend)
    if backend.name == "dask" and shape not in ((2, 3, 4), (2, 2, 2, 2)):
        pytest.skip("two shapes are enough on the dask backend (a graph per call)")
    x, beta, gamma = _tfk_case(shape, axis)
    t = 5e-4 if axis == (0, 2) else 1e-5
    for eps in (1e-12, 1e-3):
        want = []
        for a in (x, beta, gamma):
            cols = []
            for j in range(x.size):

                def out_j(j=j, eps=eps):
                    return _tfk_expected(x, beta, gamma, axis, eps).reshape(-1)[j]

                cols.append(central_differences(out_j, a).reshape(-1))
            want.append(np.stack(cols))
        for dtype in (np.float64, np.float32):
            xb = backend.asarray(_data(backend, _tfk_last(x.astype(dtype), axis)))
            g = vec(backend, gamma.astype(dtype))
            _, mean, rstd = F.layer_norm_with_stats(xb, gamma.shape, g, None, eps, backend=backend)
            rows = [[], [], []]
            for j in range(x.size):
                onehot = np.zeros(x.size, dtype)
                onehot[j] = 1
                gy = _data(backend, _tfk_last(onehot.reshape(shape), axis))
                dx, dg, db = F.layer_norm_backward(
                    backend.asarray(gy), xb, gamma.shape, mean, rstd, g, backend=backend
                )
                rows[0].append(_tfk_back(backend.to_numpy(dx), axis).reshape(-1))
                rows[1].append(host(backend, db).reshape(-1))
                rows[2].append(host(backend, dg).reshape(-1))
            for name, r, w in zip(("x", "beta", "gamma"), rows, want, strict=True):
                np.testing.assert_allclose(
                    np.stack(r), w, rtol=t, atol=t, err_msg=f"{name} {dtype} {eps}"
                )


# ================================================================================= OneFlow
# Oneflow-Inc/oneflow python/oneflow/test/modules/test_batchnorm.py and
# test_bn_eval_backward.py. OneFlow's expected arrays are printed to 4 decimals
# (np.allclose with rtol = atol = 1e-4); they are checked here and against torch.

_OF_X2 = [
    [0.1438, 1.1229, -0.048, -1.6834, -0.8262],
    [0.5836, 0.135, -0.886, -1.7878, 1.0592],
    [0.7252, -1.1488, -0.0274, 1.4051, 0.1018],
    [-0.3595, -0.1801, 0.1146, -1.5712, -1.9291],
]
_OF_Y2 = [
    [-0.3056, 1.4066, 0.4151, -0.5783, -0.3864],
    [0.7326, 0.1884, -1.71, -0.6563, 1.317],
    [1.0668, -1.3949, 0.4674, 1.7292, 0.4521],
    [-1.4938, -0.2002, 0.8275, -0.4945, -1.3827],
]
_OF_X3 = [
    [[-0.1091, 2.0041, 0.885, -0.0412],
     [-1.2055, 0.7442, 2.33, 1.2411],
     [-1.2466, 0.3667, 1.2267, 0.3043]],
    [[-0.2484, -1.1407, 0.3352, 0.6687],
     [-0.2975, -0.0227, -0.2302, -0.3762],
     [-0.7759, -0.6789, 1.1444, 1.8077]],
]  # fmt: skip
_OF_Y3 = [
    [[-0.464, 1.9673, 0.6798, -0.3859],
     [-1.4207, 0.4529, 1.9767, 0.9303],
     [-1.4831, 0.096, 0.9379, 0.035]],
    [[-0.6243, -1.651, 0.0471, 0.4309],
     [-0.5481, -0.284, -0.4834, -0.6237],
     [-1.0224, -0.9274, 0.8573, 1.5066]],
]  # fmt: skip


@pytest.mark.parametrize("case", ["2d", "3d"])
@pytest.mark.parametrize("track", [True, False], ids=["tracking", "no_running_stats"])
def test_oneflow_batchnorm1d_golden(backend, case, track):
    """test_batchnorm.py _test_batchnorm1d_2d_input, _test_batchnorm1d_3d_input (and the
    track_running_stats=False twin of its 2-D test): BatchNorm1d(eps=1e-5, momentum=0.1)
    in training on OneFlow's (4, 5) and (2, 3, 4) inputs gives its printed outputs within
    1e-4 and torch's; in evaluation with fresh running statistics, x / sqrt(1 + eps)
    (test_batchnorm2d_infer); the backward of sum(y) in training is 0
    (_test_batchnorm2d_backward)."""
    x = np.array(_OF_X2 if case == "2d" else _OF_X3, np.float32)
    want = np.array(_OF_Y2 if case == "2d" else _OF_Y3, np.float32)
    bn = normdrop.BatchNorm1d(x.shape[1], track_running_stats=track, backend=backend.name)
    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    tbn = torch.nn.BatchNorm1d(x.shape[1], track_running_stats=track)
    np.testing.assert_allclose(y, _np(tbn(_t(x))), **tol(np.float32, "torch"))
    dx = backend.to_numpy(bn.backward(backend.asarray(np.ones_like(x))))
    np.testing.assert_allclose(dx, 0, atol=1e-5)
    if track:
        fresh = normdrop.BatchNorm1d(x.shape[1], backend=backend.name).eval()
        y = backend.to_numpy(fresh(backend.asarray(x)))
        np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("axis", [1, 3])
def test_oneflow_bn_eval_backward(backend, axis, dtype):
    """test_bn_eval_backward.py _test_bn_eval_backward: in evaluation, dx = dy * gamma *
    rsqrt(variance + eps) (dy in float16 or float32, gamma and variance float32, rand),
    channel axis 1 (NCHW) or 3 (NHWC, the channels-first view), within rtol = atol = 1e-4
    (for float16 also one float16 ulp). OneFlow's (16, 64, 112, 112) becomes (4, 8, 5, 5)."""
    if backend.name == "cuda" and (dtype == np.float16 or axis == 3):
        pytest.skip("one case is enough under the CUDA simulator")
    rng = np.random.default_rng(931)
    n, c, h, w = (2, 3, 2, 2) if backend.name == "cuda" else (4, 8, 5, 5)
    shape = (n, c, h, w) if axis == 1 else (n, h, w, c)
    dy = rng.random(shape).astype(dtype)
    x = rng.random(shape).astype(dtype)
    gamma, variance, mean = rng.random((3, c)).astype(np.float32)
    rstd = (1 / np.sqrt(variance.astype(np.float64) + 1e-5)).astype(np.float32)
    view = (lambda a: a) if axis == 1 else (lambda a: np.moveaxis(a, 3, 1))
    dx, _, _ = F.batch_norm_backward(
        backend.asarray(_data(backend, view(dy))),
        backend.asarray(_data(backend, view(x))),
        vec(backend, mean),
        vec(backend, rstd),
        vec(backend, gamma),
        training=False,
        backend=backend,
    )
    dx = backend.to_numpy(dx)
    assert dx.dtype == dtype
    expand = (slice(None), None, None)
    want = view(dy).astype(np.float64) * gamma[expand] / np.sqrt(variance[expand] + 1e-5)
    rtol = 1e-3 if dtype == np.float16 else 1e-4
    np.testing.assert_allclose(dx, want, rtol=rtol, atol=1e-4)


#: OneFlow test_layer_norm.py's (shape, dtype) cases: test_no_affine, test_warp_impl,
#: test_block_smem_impl, test_block_uncached_impl ([16, 1024 * 1024] here [2, 1024 * 1024]).
_OF_LN = [
    ((4, 16), np.float32),
    ((32, 1024), np.float16),
    ((16, 512), np.float32),
    ((15, 512), np.float32),
    ((16, 511), np.float32),
    ((13, 499), np.float32),
    ((16, 2048), np.float16),
    ((8, 1536), np.float32),
    ((8, 2048), np.float32),
    ((7, 1536), np.float32),
    ((8, 1533), np.float32),
    ((7, 1533), np.float32),
    ((2, 1024 * 1024), np.float16),
    ((8, 1024), np.float64),
]


@pytest.mark.parametrize(("shape", "dtype"), _OF_LN, ids=[f"{s}-{d.__name__}" for s, d in _OF_LN])
def test_oneflow_layer_norm(backend, shape, dtype):
    """test_layer_norm.py _test_layer_norm: layer norm over the last axis with epsilon 1e-6,
    randn data, weight and bias (none for test_no_affine's (4, 16)), and the backward of
    sum(y * randn): y and the x, weight and bias gradients equal torch's within atol 1e-5
    (rtol 1e-8; OneFlow's), 1e-2 for float16. For float16 the reference is torch in
    float32 on the float16-rounded data (normdrop computes float16 in float32, SPEC):
    torch's own float16 CPU backward sums the bias gradient in float16 and is off by
    0.011 at one element of the (32, 1024) case (-0.0742 against the exact -0.0852)."""
    if backend.name == "cuda" and shape != (4, 16):
        pytest.skip("the smallest shape is enough under the CUDA simulator")
    if shape[1] > 4096 and backend.name != "numpy":
        pytest.skip("the 2M-element shape on the numpy backend only")
    rng = np.random.default_rng(941)
    affine = shape != (4, 16)
    n = shape[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal((2, n)).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    if dtype == np.float16:
        x, w, b, gy = (a.astype(np.float16).astype(np.float32) for a in (x, w, b, gy))
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    tx = torch.tensor(x).to(tdt).requires_grad_(True)
    tw = torch.tensor(w).to(tdt).requires_grad_(True) if affine else None
    tb = torch.tensor(b).to(tdt).requires_grad_(True) if affine else None
    ty = TF.layer_norm(tx, (n,), tw, tb, 1e-6)
    (ty * torch.tensor(gy).to(tdt)).sum().backward()
    wb = vec(backend, w.astype(dtype)) if affine else None
    bb = vec(backend, b.astype(dtype)) if affine else None
    xb = backend.asarray(x.astype(dtype))
    y, mean, rstd = F.layer_norm_with_stats(xb, n, wb, bb, 1e-6, backend=backend)
    dx, dw, db = F.layer_norm_backward(
        backend.asarray(gy.astype(dtype)), xb, n, mean, rstd, wb, backend=backend
    )
    close = {"atol": 1e-2, "rtol": 1e-2} if dtype == np.float16 else {"atol": 1e-5, "rtol": 1e-8}
    got = [backend.to_numpy(y), backend.to_numpy(dx)]
    want = [ty.detach().float().numpy(), tx.grad.float().numpy()]
    if affine:
        got += [host(backend, dw), host(backend, db)]
        want += [tw.grad.float().numpy(), tb.grad.float().numpy()]
    else:
        assert dw is None and db is None
    for name, g, t in zip(("y", "x_grad", "weight_grad", "bias_grad"), got, want, strict=False):
        assert g.dtype == dtype, name
        np.testing.assert_allclose(g.astype(np.float64), t, err_msg=name, **close)


# ===================================================================================== JAX
# google/jax tests/stax_test.py (example_libraries.stax). stax.BatchNorm always normalises
# with the batch's statistics (no running averages): normdrop's batch_norm without running
# statistics.


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_jax_stax_batch_norm_shape(backend, layout):
    """stax_test.py testBatchNormShapeNHWC (axis=(0, 1, 2)) and testBatchNormShapeNCHW
    (axis=(0, 2, 3), jax issue 461): on (4, 5, 6, 7) data the parameters have one entry
    per channel (7 or 5) and the output keeps the input's shape; here also its values are
    torch's batch norm of the channels-first data (beta zeros, gamma ones)."""
    x = np.random.default_rng(940).standard_normal((4, 5, 6, 7)).astype(np.float32)
    if backend.name == "cuda":
        x = x[:2, :3, :2, :3]
    view = np.moveaxis(x, -1, 1) if layout == "NHWC" else x
    c = view.shape[1]
    beta, gamma = np.zeros(c, np.float32), np.ones(c, np.float32)
    y = F.batch_norm(
        backend.asarray(_data(backend, view)),
        weight=vec(backend, gamma),
        bias=vec(backend, beta),
        training=True,
        backend=backend,
    )
    y = backend.to_numpy(y)
    assert y.shape == view.shape and y.dtype == np.float32
    want = TF.batch_norm(_t(view), None, None, _t(gamma), _t(beta), training=True)
    np.testing.assert_allclose(y, _np(want), **tol(np.float32, "torch"))


# =============================================================================== MindSpore
# mindspore-ai/mindspore tests/st/ops/cpu/test_layer_norm_op.py. P.LayerNorm(begin_norm_axis,
# begin_params_axis) with epsilon 1e-12 returns y, mean and variance; normdrop's
# layer_norm_with_stats returns y, mean and rstd = 1 / sqrt(var + eps). Cases whose
# parameters span more axes than are normalised (begin_params_axis < begin_norm_axis,
# test_layernorm3d_2, test_layernorm2d_4) are not ported: normdrop's weight has the
# normalised shape, as PyTorch's.


def _ms_check(backend, x, gamma, beta, ndim, y_want=None, mean_want=None, var_want=None):
    """LayerNorm over the last ``ndim`` axes with eps 1e-12: y, mean and var against
    LayerNormReference (or the given values), rtol 1e-6, atol 1e-4 (MindSpore's)."""
    axes = tuple(range(x.ndim - ndim, x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axes, keepdims=True)
    var = x64.var(axes, keepdims=True)
    if y_want is None:
        y_want = (x64 - mean) / np.sqrt(var + 1e-12) * gamma + beta
    y, m, rstd = F.layer_norm_with_stats(
        backend.asarray(x),
        x.shape[x.ndim - ndim :],
        vec(backend, gamma),
        vec(backend, beta),
        1e-12,
        backend=backend,
    )
    close = {"rtol": 1e-6, "atol": 1e-4}
    np.testing.assert_allclose(backend.to_numpy(y), y_want, **close)
    m = host(backend, m).astype(np.float64).reshape(mean.shape)
    v = host(backend, rstd).astype(np.float64).reshape(var.shape) ** -2 - 1e-12
    np.testing.assert_allclose(m, mean if mean_want is None else mean_want, **close)
    np.testing.assert_allclose(v, var if var_want is None else var_want, **close)


@pytest.mark.parametrize(
    ("shape", "ndim"),
    [((64, 3072), 1), ((640, 768), 1), ((8, 128, 768), 1),
     ((64, 32), 1), ((128, 128), 1), ((16, 2, 16, 32), 3)],
    ids=["layernorm0", "layernorm1", "layernorm3d_1",
         "layernorm2d_2", "layernorm2d_3", "begin_axis_1"],
)  # fmt: skip
def test_mindspore_layer_norm(backend, shape, ndim):
    """test_layer_norm_op.py test_layernorm0 ((4096, 3072) here (64, 3072)), test_layernorm1,
    test_layernorm3d_1 ((32, 128, 768) here (8, 128, 768)), test_layernorm2d_2 and _3, and
    (128, 2, 16, 32) with begin_norm_axis = begin_params_axis = 1 (test_layernorm2d_4's
    shape, here 16 samples): randn data, gamma and beta, epsilon 1e-12; y, mean and
    variance equal LayerNormReference within rtol 1e-6, atol 1e-4."""
    if backend.name == "cuda" and shape != (64, 32):
        pytest.skip("one shape is enough under the CUDA simulator")
    rng = np.random.default_rng(950)
    x = rng.standard_normal(shape).astype(np.float32)
    gamma, beta = rng.standard_normal((2, *shape[len(shape) - ndim :])).astype(np.float32)
    _ms_check(backend, x, gamma, beta, ndim)


_MS_MEAN = [[0.5398791, -0.9928627], [-0.26256812, -0.01950586], [0.45475566, -0.08497494]]
_MS_VAR = [[0.11834566, 1.8235781], [0.6761188, 0.91963345], [0.00233687, 0.16681992]]


@pytest.mark.parametrize("in_axes", ["0_0_0", "0_None_None", "None_0_0"])
def test_mindspore_layer_norm_vmap(backend, in_axes):
    """test_layer_norm_op.py test_layernorm_vmap (in_axes (0, 0, 0)), test_layernorm_vmap2
    ((0, None, None)) and test_layernorm_vmap3 ((None, 0, 0)): LayerNorm over the last
    axis of per-sample (2, 2) data with epsilon 1e-12, mapped over three samples, with
    NumPy's legacy np.random.seed(20) randn data: MindSpore's printed y, mean and
    variance. vmap over the parameters is a loop of normdrop calls with each gamma and
    beta."""
    rs = np.random.RandomState(20)
    if in_axes == "None_0_0":
        x = np.broadcast_to(rs.randn(2, 2).astype(np.float32), (3, 2, 2))
        gamma, beta = rs.randn(3, 2).astype(np.float32), rs.randn(3, 2).astype(np.float32)
        y_want = [[[-0.76137155, -1.0531073]] * 2, [[0.14745253, 0.1361131]] * 2,
                  [[-0.7764058, -0.16069931]] * 2]  # fmt: skip
        mean_want, var_want = [_MS_MEAN[0]] * 3, [_MS_VAR[0]] * 3
    else:
        x = rs.randn(3, 2, 2).astype(np.float32)
        mean_want, var_want = _MS_MEAN, _MS_VAR
        if in_axes == "0_0_0":
            gamma, beta = rs.randn(3, 2).astype(np.float32), rs.randn(3, 2).astype(np.float32)
            y_want = [[[0.2590919, 1.2487364], [0.2590919, 1.2487364]],
                      [[1.1108565, -2.9439876], [-1.4481487, -3.435418]],
                      [[1.0759374, -0.23485494], [1.0759374, -0.23485434]]]  # fmt: skip
        else:
            g, b = rs.randn(2).astype(np.float32), rs.randn(2).astype(np.float32)
            gamma, beta = np.stack([g] * 3), np.stack([b] * 3)
            y_want = [[[-2.0715194, 1.0880831], [-2.0715194, 1.0880831]],
                      [[-0.48748583, -0.59665275], [-2.0715194, 1.0880831]],
                      [[-2.0715191, 1.0880834], [-2.0715194, 1.0880831]]]  # fmt: skip
    for i in range(3):
        _ms_check(
            backend, np.ascontiguousarray(x[i]), gamma[i], beta[i], 1,
            np.array(y_want[i]), np.array(mean_want[i])[:, None], np.array(var_want[i])[:, None],
        )  # fmt: skip
