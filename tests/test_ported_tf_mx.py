"""TensorFlow's, MXNet's and Sonnet's tests of batch norm, layer norm and dropout, ported.

Each test names its source: a repository, a file and a test in it (TensorFlow's
``tensorflow/python/ops/nn_batchnorm_test.py``, ``nn_fused_batchnorm_test.py`` and
``nn_test.py``; MXNet's ``tests/python/unittest/test_operator.py`` and ``test_gluon.py``;
Sonnet's ``sonnet/src/batch_norm_test.py``, ``axis_norm_test.py`` and ``dropout_test.py``).
Tests at the end check the discrepancies these ports found.

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
from conftest import host, skip_on_slow_backend, tol, vec
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


def _numeric_grad(f, a, h=1e-6):
    """d f() / d a by central differences (``f`` returns a scalar), perturbing ``a`` in place."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + h
        plus = f()
        a[i] = keep - h
        minus = f()
        a[i] = keep
        grad[i] = (plus - minus) / (2 * h)
    return grad


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
        backend.asarray(_data(backend, np.moveaxis(x, -1, 1))), vec(backend, m),
        vec(backend, v), vec(backend, gamma) if scale else None,
        vec(backend, beta) if shift else None, training=False, eps=1e-3, backend=backend,
    )  # fmt: skip
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

    want = [_numeric_grad(loss, a) for a in (x, beta, gamma)]
    rstd = 1 / np.sqrt(v + 1e-3)
    dx, dw, db = F.batch_norm_backward(
        backend.asarray(_data(backend, np.moveaxis(gy, -1, 1))),
        backend.asarray(_data(backend, np.moveaxis(x, -1, 1))), vec(backend, m),
        vec(backend, rstd), vec(backend, g), training=False, backend=backend,
    )  # fmt: skip
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
        backend.asarray(_data(backend, np.moveaxis(x32, -1, 1))), vec(backend, m32),
        vec(backend, r32.astype(np.float32)), vec(backend, gamma32), training=False,
        backend=backend,
    )  # fmt: skip
    np.testing.assert_allclose(
        np.moveaxis(backend.to_numpy(dx), 1, -1), gy32 * gamma32 * r32, atol=1e-6, rtol=0
    )
    np.testing.assert_allclose(host(backend, db), gy32.sum((0, 1, 2), dtype=np.float64), rtol=1e-6)
    dg = (gy32 * (x32 - m32.astype(np.float64)) * r32).sum((0, 1, 2))
    np.testing.assert_allclose(host(backend, dw), dg, rtol=1e-5)


@pytest.mark.parametrize(
    ("x_shape", "param_shape"),
    [((3, 3), (1, 3)), ((3, 3), (3, 1)), ((3, 2, 4, 5), (1, 2, 1, 1)), ((2, 3, 2, 4, 5), (1, 1, 1, 4, 5))],
    ids=["rows", "columns", "axis1", "two_axes"],
)  # fmt: skip
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
        backend.asarray(_data(backend, view)), *(vec(backend, a.reshape(c)) for a in (m, v, gamma, beta)),
        training=False, eps=1e-3, backend=backend,
    )  # fmt: skip
    got = np.moveaxis(np.moveaxis(backend.to_numpy(y), 1, -1).reshape(moved.shape), list(range(x.ndim - len(axes), x.ndim)), axes)  # fmt: skip
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
        _, mean, rstd = F.batch_norm_with_stats(backend.asarray(x.reshape(2, 60)), training=True, eps=eps)
        mean_want, var_want = mean_want.reshape(60), var_want.reshape(60)
    elif axes == (0, 1, 2):
        view = _data(backend, np.moveaxis(x, -1, 1))
        _, mean, rstd = F.batch_norm_with_stats(backend.asarray(view), training=True, eps=eps)
    else:
        _, mean, rstd = F.layer_norm_with_stats(backend.asarray(x), (3, 5, 4), eps=eps)
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
        backend.asarray(_data(backend, x)), vec(backend, mean), vec(backend, var),
        vec(backend, scale), vec(backend, offset), training=False, eps=1e-3, backend=backend,
    )  # fmt: skip
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


@functools.lru_cache(maxsize=None)
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

    grads = tuple(_numeric_grad(loss, a) for a in (x, scale, offset))
    return x, scale, offset, mean, var, gy, grads


@pytest.mark.parametrize("is_training", [True, False], ids=["training", "frozen"])
@pytest.mark.parametrize(("x_shape", "data_format"), _TF_FUSED[:6] + _TF_FUSED[7:], ids=_TF_FUSED_IDS[:6] + _TF_FUSED_IDS[7:])  # fmt: skip
def test_tf_fused_batch_norm_gradient(backend, x_shape, data_format, is_training):
    """nn_fused_batchnorm_test.py testBatchNormGradShape1..5, is_training True and False
    (given population statistics): the gradients with respect to x, scale and offset
    equal the numerical ones (gradient_checker's bound 1e-3); for the empty batch the
    input gradient is empty and the scale and offset gradients are zeros. In float32 here
    (TensorFlow's float16 case compares float16 gradients with float32 differences),
    against float64 central differences; epsilon 0.001 (fused_batch_norm's default)."""
    if backend.name == "cuda" and x_shape[0] != 1:
        pytest.skip("the smallest shapes are enough under the CUDA simulator")
    x, scale, offset, mean, var, gy, want = _tf_fused_numeric_grads(x_shape, data_format, is_training)
    x32 = x.astype(np.float32)
    rm = vec(backend, mean) if not is_training else None
    rv = vec(backend, var) if not is_training else None
    _, m, rstd = F.batch_norm_with_stats(
        backend.asarray(x32), rm, rv, vec(backend, scale.astype(np.float32)),
        vec(backend, offset.astype(np.float32)), training=is_training, eps=1e-3, backend=backend,
    )  # fmt: skip
    got = F.batch_norm_backward(
        backend.asarray(gy.astype(np.float32)), backend.asarray(x32), m, rstd,
        vec(backend, scale.astype(np.float32)), training=is_training, backend=backend,
    )  # fmt: skip
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


@pytest.mark.parametrize("rate", [-1.0, 1.1, [0.0, 1.0]], ids=["negative", "above_one", "list"])
def test_tf_dropout_invalid_rate(rate):
    """nn_test.py DropoutTest.testInvalidKeepProb / testInvalidRate: a rate of -1, 1.1 or a
    list [0.0, 1.0] raises ValueError (normdrop's InvalidParameterError is one, and for the
    list also a TypeError, as PyTorch raises), from the layer and the function."""
    with pytest.raises(ValueError, match=r"Dropout probability must be in \[0, 1\)"):
        normdrop.Dropout(rate)
    with pytest.raises(ValueError, match=r"Dropout probability must be in \[0, 1\)"):
        F.dropout(np.ones((40, 30), np.float32), rate, seed=0)
    if isinstance(rate, list):
        with pytest.raises(TypeError):
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
