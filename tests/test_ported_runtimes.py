"""Inference runtimes' and Rust frameworks' tests of batch norm, layer norm and dropout,
ported to normdrop: their hard-coded input and expected tensors.

Each test names its source:

- microsoft/onnxruntime ``onnxruntime/test/providers/cpu/nn/batch_norm_op_test.cc``
  (BatchNormTest), ``onnxruntime/test/contrib_ops/layer_norm_test.cc`` (LayerNormTest),
  ``onnxruntime/test/providers/cpu/nn/dropout_op_test.cc`` (Dropout) and
  ``orttraining/orttraining/test/training_ops/cpu/nn/dropout_op_test.cc`` (DropoutTest,
  DropoutGradTest).
- huggingface/candle ``candle-nn/tests/batch_norm.rs`` and ``candle-nn/tests/layer_norm.rs``.
- tracel-ai/burn ``crates/burn-core/src/nn/norm/batch.rs`` (tests_1d, tests_2d),
  ``crates/burn-core/src/nn/norm/layer.rs`` and ``crates/burn-core/src/nn/dropout.rs``.
- apache/tvm ``tests/python/topi/python/test_topi_batch_norm.py`` (with its reference
  ``python/tvm/topi/testing/batch_norm.py``) and ``test_topi_layer_norm.py``.
- openvinotoolkit/openvino ``src/plugins/template/tests/functional/op_reference/``
  ``batch_norm.cpp`` and ``mvn.cpp`` (hard-coded references).

Where a project's convention differs from PyTorch's, the port translates it and says so:
ONNX's ``momentum`` is the weight of the *old* running value (ONNX Runtime's 0.1 is
PyTorch's 0.9) and ONNX Runtime's CPU kernel stores the biased batch variance in
``running_var``, where PyTorch (and SPEC.md) store the unbiased one; candle's and burn's
``momentum`` are PyTorch's; TVM's is too, but its reference updates the moving variance with
the biased batch variance, and its channels may sit on any axis. Burn's LayerNorm of the
ported version divides by ``sqrt(var) + eps`` rather than ``sqrt(var + eps)``, which its
3-decimal tolerance does not see. Dropout masks come from each project's generator and
normdrop's from Philox (docs/differences.md), so for dropout only properties are ported:
identity outside training and at ``p = 0``, the ``1 / (1 - p)`` scale of kept values, the
dropped fraction, and a gradient built from the same mask. Expected numbers are the
projects' hard-coded tensors, or come from PyTorch or from a float64 formula written in the
test, never from normdrop.

Not ported: ONNX Runtime's BatchNorm2d_Pytorch (216 elements of the formula that
BatchNorm1d_3d_Pytorch already checks) and its float16 twin, the ``spatial=0`` tests
NonSpatial_Simple / NonSpatial_Complicated (per-element statistics, which neither
PyTorch nor normdrop have; the first also uses ``epsilon=0``, which normdrop refuses),
the Invalid*Dim tests (parameters of the wrong shape: tests/test_ported_torch.py and
tests/test_ported_tf_mx.py check normdrop's ShapeError for those),
the randomised CPU-against-CUDA comparisons (LayerNormTest.BERTLayerNorm) and BiasDropout
(a dropout of ``x + bias`` plus a residual, which is not normdrop's fused op). ggml's
tests of ggml_norm (tests/test-backend-ops.cpp) compare backends on random data and hold
no expected values, so nothing of them is ported.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import host, tol, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F
from normdrop.errors import ShapeError

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _bn_formula(x, mean, var, weight=None, bias=None, eps=1e-5):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over axis 1, in float64."""
    shape = (1, -1) + (1,) * (np.ndim(x) - 2)
    y = (np.asarray(x, np.float64) - np.reshape(mean, shape)) / np.sqrt(
        np.reshape(np.asarray(var, np.float64), shape) + eps
    )
    if weight is not None:
        y = y * np.reshape(weight, shape)
    if bias is not None:
        y = y + np.reshape(bias, shape)
    return y


# ============================================================================ ONNX Runtime
# microsoft/onnxruntime onnxruntime/test/providers/cpu/nn/batch_norm_op_test.cc.
# PositiveTestCase: "taken from the SpatialBN_1.pb" files, shape (1, 1, 7, 7, 1).
ORT_SPATIAL_X = [
    0.329876, -0.287158, -0.411425, 0.473621, 0.18156, -0.170596, -0.329516, -0.170733,
    -0.121664, 0.4372, -0.485668, 0.218049, -0.360263, 0.107016, 0.45358, 0.325056, 0.15995,
    0.098852, -0.283453, -0.373051, 0.257542, 0.0614853, -0.0592363, 0.434488, -0.0179583,
    0.398374, -0.451602, -0.132009, -0.174468, -0.0247169, 0.418897, -0.47159, -0.131925,
    0.470943, 0.118357, 0.155664, 0.370062, -0.279229, 0.240311, -0.451034, 0.249178,
    -0.294496, 0.13683, -0.0806475, -0.309849, -0.450604, -0.28048, -0.420197, -0.433369,
]  # fmt: skip
ORT_SPATIAL_Y = [
    1.01359, 0.703983, 0.641631, 1.08571, 0.939167, 0.762469, 0.682729, 0.762401, 0.787021,
    1.06744, 0.604378, 0.957476, 0.667302, 0.901764, 1.07566, 1.01117, 0.928324, 0.897667,
    0.705842, 0.660885, 0.977291, 0.878918, 0.818345, 1.06608, 0.839057, 1.04796, 0.621471,
    0.781831, 0.760527, 0.835665, 1.05825, 0.611442, 0.781873, 1.08437, 0.907454, 0.926173,
    1.03375, 0.707961, 0.968646, 0.621757, 0.973095, 0.700301, 0.916723, 0.807602, 0.692598,
    0.621972, 0.707334, 0.63723, 0.63062,
]  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float", "double"])
@pytest.mark.parametrize("eps", [1e-5, None], ids=["epsilon", "default_epsilon"])
def test_ort_batchnorm_positive_test_case(backend, dtype, eps):
    """ONNX Runtime BatchNormTest.PositiveTestCase, PositiveTestCaseDouble and
    PositiveTestCaseDefaultEpsilon: a rank-5 input (1, 1, 7, 7, 1) with one channel in
    inference mode (scale 0.589433, B -0.384622, mean -2.45673, var 1.37998); ONNX's default
    epsilon is 1e-5, as PyTorch's. The output equals ONNX Runtime's hard-coded values (given
    to 6 significant digits) and PyTorch's, and the statistics are not changed."""
    x = np.array(ORT_SPATIAL_X, dtype).reshape(1, 1, 7, 7, 1)
    scale, b = np.array([0.589433], dtype), np.array([-0.384622], dtype)
    mean, var = np.array([-2.45673], dtype), np.array([1.37998], dtype)
    kwargs = {} if eps is None else {"eps": eps}
    rm, rv = vec(backend, mean), vec(backend, var)
    y = backend.to_numpy(
        F.batch_norm(
            backend.asarray(x), rm, rv, vec(backend, scale), vec(backend, b), False,
            backend=backend, **kwargs,
        )
    )  # fmt: skip
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y.ravel(), ORT_SPATIAL_Y, rtol=1e-5, atol=1e-6)
    want = TF.batch_norm(_t(x), _t(mean), _t(var), _t(scale), _t(b), False, 0.1, 1e-5)
    np.testing.assert_allclose(y, _np(want), **tol(dtype, "torch"))
    np.testing.assert_array_equal(host(backend, rm), mean)
    np.testing.assert_array_equal(host(backend, rv), var)


# BatchNorm1d_3d_Pytorch: shape (4, 5, 3), scale only (B 0, mean 0, var 1).
ORT_BN1D_X = [
    0.948241, 1.23591, -0.39321, 1.4254, -0.730771, 0.439872, 0.0265089, 0.8748, -0.197505,
    0.962646, 0.421469, 1.94512, 0.234179, -0.931897, -0.214905, -0.982965, -0.495436, 0.81949,
    -0.796605, -0.758605, 0.665557, 0.0909539, 1.10448, 1.91214, -1.97433, -2.26429, -0.384419,
    -0.226564, 0.230568, 0.533968, -1.31382, -0.156257, 0.532323, -0.16714, 0.971087, 0.600249,
    0.858778, 0.423108, -0.414433, -1.17608, 0.673753, 0.278517, -2.19044, -0.161453, 1.17092,
    -0.155138, -0.094729, 0.19479, -1.17344, -0.213813, 0.118659, -2.39525, 0.257687, 0.784609,
    0.297942, 1.10277, -1.58026, 0.197625, 0.0432784, 1.12924,
]  # fmt: skip
ORT_BN1D_SCALE = [0.36102, 0.592982, 0.808513, 0.0531484, 0.0960613]
ORT_BN1D_Y = [
    0.342332, 0.446184, -0.141956, 0.845231, -0.433332, 0.260835, 0.0214327, 0.707284,
    -0.159685, 0.0511628, 0.0224003, 0.10338, 0.0224955, -0.0895188, -0.020644, -0.354868,
    -0.178861, 0.295851, -0.47237, -0.449836, 0.394661, 0.073537, 0.892985, 1.54598, -0.104932,
    -0.120343, -0.0204312, -0.021764, 0.0221486, 0.0512934, -0.474312, -0.0564117, 0.192178,
    -0.0991106, 0.575834, 0.355935, 0.69433, 0.342087, -0.335073, -0.0625065, 0.0358087,
    0.0148027, -0.210415, -0.0155093, 0.11248, -0.0560077, -0.0341989, 0.0703226, -0.695826,
    -0.126787, 0.0703623, -1.93658, 0.208342, 0.634363, 0.0158351, 0.0586101, -0.0839879,
    0.018984, 0.00415736, 0.108476,
]  # fmt: skip


def test_ort_batchnorm1d_3d_pytorch(backend):
    """ONNX Runtime BatchNormTest.BatchNorm1d_3d_Pytorch: a (4, 5, 3) input through a fresh
    PyTorch BatchNorm1d(5) in evaluation (running mean 0, variance 1) with the given
    weight: BatchNorm1d and functional batch_norm give ONNX Runtime's hard-coded output."""
    x = np.array(ORT_BN1D_X, np.float32).reshape(4, 5, 3)
    scale = np.array(ORT_BN1D_SCALE, np.float32)
    bn = normdrop.BatchNorm1d(5, backend=backend.name).eval()
    bn.weight = vec(backend, scale)
    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(y.ravel(), ORT_BN1D_Y, rtol=1e-5, atol=1e-6)
    y = F.batch_norm(
        backend.asarray(x),
        vec(backend, np.zeros(5, np.float32)),
        vec(backend, np.ones(5, np.float32)),
        vec(backend, scale),
        vec(backend, np.zeros(5, np.float32)),
        backend=backend,
    )
    np.testing.assert_allclose(backend.to_numpy(y).ravel(), ORT_BN1D_Y, rtol=1e-5, atol=1e-6)


# ForwardTrainingTestWithSavedOutputsOpset9 / ForwardTrainingTestOpset14: (2, 2, 2, 2).
ORT_TRAIN_X = [
    -0.2953, 0.1180, 1.0973, -0.1931, -0.1999, -0.0237, 1.5181, 0.0076,
    -1.0830, -1.5433, 0.4327, -0.9813, 0.7875, -0.4080, -2.3144, 1.5493,
]  # fmt: skip
ORT_TRAIN_Y = [
    0.0131, 0.5210, 1.7244, 0.1387, -0.2708, -0.1191, 1.2089, -0.0922,
    -0.9548, -1.5203, 0.9077, -0.8298, 0.5796, -0.4501, -2.0921, 1.2358,
]  # fmt: skip


def test_ort_batchnorm_forward_training(backend):
    """ONNX Runtime BatchNormTest.ForwardTrainingTestWithSavedOutputsOpset9 and
    ForwardTrainingTestOpset14 (run on the CPU provider): (2, 2, 2, 2) data, scale 1, B 0,
    mean [1, 2], var [1, 2], ONNX momentum 0.1, eps 1e-5. The output (4 decimals), saved
    mean and saved inverse standard deviation equal ONNX Runtime's values. ONNX's momentum
    weighs the old running value, so PyTorch's momentum is 0.9: the running mean is ONNX
    Runtime's [-0.1754, 0.303106]. ONNX Runtime's running variance [0.696052, 1.41316] is
    0.1 * var + 0.9 * the biased batch variance; PyTorch's takes the unbiased one, n/(n-1)
    = 8/7 times that batch variance. normdrop's running variance equals that translation
    of ONNX Runtime's, and everything equals torch.native_batch_norm's."""
    x = np.array(ORT_TRAIN_X, np.float32).reshape(2, 2, 2, 2)
    old_var = np.array([1.0, 2.0], np.float32)
    rm, rv = vec(backend, np.array([1.0, 2.0], np.float32)), vec(backend, old_var)
    ones, zeros = np.ones(2, np.float32), np.zeros(2, np.float32)
    y, mean, rstd = F.batch_norm_with_stats(
        backend.asarray(x), rm, rv, vec(backend, ones), vec(backend, zeros), True, 0.9, 1e-5,
        backend=backend,
    )  # fmt: skip
    y, mean, rstd = backend.to_numpy(y), host(backend, mean), host(backend, rstd)
    np.testing.assert_allclose(y.ravel(), ORT_TRAIN_Y, rtol=0, atol=1.5e-4)
    np.testing.assert_allclose(mean, [-0.306, 0.114562], rtol=0, atol=1e-5)
    np.testing.assert_allclose(rstd, [1.2288, 0.861317], rtol=0, atol=1e-4)
    np.testing.assert_allclose(host(backend, rm), [-0.1754, 0.303106], rtol=0, atol=1e-5)
    ort_running_var = np.array([0.696052, 1.41316])
    biased = (ort_running_var - 0.1 * old_var) / 0.9
    want_var = 0.1 * old_var + 0.9 * biased * 8 / 7
    np.testing.assert_allclose(host(backend, rv), want_var, rtol=0, atol=2e-5)
    trm, trv = _t(np.array([1.0, 2.0], np.float32)), _t(old_var.copy())
    want, save_mean, save_invstd = torch.native_batch_norm(
        _t(x), _t(ones), _t(zeros), trm, trv, True, 0.9, 1e-5
    )
    close = tol(np.float32, "torch")
    np.testing.assert_allclose(y, _np(want), **close)
    np.testing.assert_allclose(mean, _np(save_mean), **close)
    np.testing.assert_allclose(rstd, _np(save_invstd), **close)
    np.testing.assert_allclose(host(backend, rm), trm.numpy(), **close)
    np.testing.assert_allclose(host(backend, rv), trv.numpy(), **close)


# onnxruntime/test/contrib_ops/layer_norm_test.cc: (x, shape, gamma, bias, expected).
ORT_LN_CASES = {
    "LayerNorm": (
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        (1, 2, 3),
        [1.0, 1.0, 1.0],
        None,
        [-1.2247, 0.0, 1.2247, -1.2247, 0.0, 1.2247],
    ),
    "LayerNorm_Scale": (
        [-10.264, 8.6453, 43.1561, -0.641239, -8.2164, 0.11412, 41.3156, 3.0458],
        (2, 2, 2),
        [-0.6953, 5.1824],
        None,
        [0.6953, 5.1824, -0.6953, -5.1824, 0.6953, 5.1824, -0.6953, -5.1824],
    ),
    "LayerNorm_Scale_Bias": (
        [1.2416, 0.946123, 13.1685, 0.36423, 21.145, 0.03941],
        (1, 3, 2),
        [-0.6953, 5.1824],
        [0.6435, -0.3964],
        [-0.0516, -5.5776, -0.0518, -5.5788, -0.0518, -5.5788],
    ),
}


@pytest.mark.parametrize("name", list(ORT_LN_CASES))
def test_ort_layer_norm(backend, name):
    """ONNX Runtime LayerNormTest.LayerNorm, LayerNorm_Scale and LayerNorm_Scale_Bias
    (contrib_ops/layer_norm_test.cc): LayerNormalization over the last axis (the default
    axis -1), epsilon 1e-5, gamma with or without bias. The output equals ONNX Runtime's
    4-decimal values (its tolerance for LayerNorm_Scale_Bias is 1e-4) and PyTorch's, with
    the functional form and with a LayerNorm layer (``bias=False`` where ONNX has none)."""
    xs, shape, gamma, beta, expected = ORT_LN_CASES[name]
    x = np.array(xs, np.float32).reshape(shape)
    w = np.array(gamma, np.float32)
    b = None if beta is None else np.array(beta, np.float32)
    d = shape[-1]
    y = F.layer_norm(backend.asarray(x), d, vec(backend, w), vec(backend, b), 1e-5, backend=backend)
    y = backend.to_numpy(y)
    np.testing.assert_allclose(y.ravel(), expected, rtol=0, atol=1.2e-4)
    want = TF.layer_norm(_t(x), (d,), _t(w), None if b is None else _t(b), 1e-5)
    np.testing.assert_allclose(y, _np(want), **tol(np.float32, "torch"))
    layer = normdrop.LayerNorm(d, bias=b is not None, backend=backend.name)
    layer.weight = vec(backend, w)
    if b is not None:
        layer.bias = vec(backend, b)
    np.testing.assert_allclose(
        backend.to_numpy(layer(backend.asarray(x))), _np(want), **tol(np.float32, "torch")
    )


def test_ort_dropout_inference(backend):
    """ONNX Runtime Dropout.Opset7, Opset10 and WithOptionalOutputOpset7/10
    (providers/cpu/nn/dropout_op_test.cc): Dropout at inference (default ratio 0.5) returns
    X unchanged, [[1, 2], [3, 4]] and [[1, 2], [3, 5]]. normdrop returns the input object
    itself, as PyTorch does. ONNX Runtime's optional mask output (all False there) has no
    counterpart: dropout_with_bitmask returns no mask outside training."""
    for values in ([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0]):
        x = np.array(values, np.float32).reshape(2, 2)
        xb = backend.asarray(x)
        y = F.dropout(xb, 0.5, False, seed=0, backend=backend)
        assert y is xb
        np.testing.assert_array_equal(backend.to_numpy(y).ravel(), values)
        y, bitmask = F.dropout_with_bitmask(xb, 0.5, False, seed=0, backend=backend)
        assert y is xb and bitmask is None
        layer = normdrop.Dropout(0.5, seed=0, backend=backend.name).eval()
        np.testing.assert_array_equal(backend.to_numpy(layer(xb)), x)


@pytest.mark.parametrize(
    ("shape", "ratio", "training"),
    [
        ((10, 10, 10), 0.75, True),
        ((10, 10, 10), 0.75, False),
        ((1000,), 0.25, True),
        ((1000,), 0.25, False),
        ((1000,), 0.0, False),
        ((1000,), 0.5, True),
    ],
    ids=["Basic", "BasicTrainingFalse", "Mask", "MaskTrainingFalse", "RatioLimit", "EmptyRatio"],
)
def test_ort_training_dropout(backend, shape, ratio, training):
    """orttraining training_ops/cpu/nn/dropout_op_test.cc DropoutTest (RunDropoutTest, seed
    42; EmptyRatio is the default ratio 0.5): the input is 1, 2, ..., n. The dropped
    fraction is within 0.1 of the ratio in training and 0 otherwise; every kept value i + 1
    is (i + 1) / (1 - ratio) within 0.01; the mask's False entries are exactly the dropped
    outputs. normdrop's mask comes from Philox (dropout_mask for the same seed and call)."""
    n = int(np.prod(shape))
    x = np.arange(1, n + 1, dtype=np.float32).reshape(shape)
    y = backend.to_numpy(F.dropout(backend.asarray(x), ratio, training, seed=42, backend=backend))
    dropped = y == 0
    assert abs(dropped.mean() - (ratio if training else 0.0)) <= 0.1
    p = ratio if training else 0.0
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - p), rtol=0, atol=0.01)
    if training:
        mask = backend.to_numpy(F.dropout_mask(shape, ratio, seed=42, backend=backend))
        np.testing.assert_array_equal(~mask, dropped)


@pytest.mark.parametrize(
    ("ratio", "shape"),
    [(0.2, (16,)), (0.3, (8, 2)), (0.4, (2, 4, 2)), (0.5, (2, 4, 2)), (0.0, (16,))],
    ids=["ratio0.2-1d", "ratio0.3-2d", "ratio0.4-3d", "default-3d", "RatioLimit"],
)
def test_ort_dropout_grad(backend, ratio, shape):
    """orttraining dropout_op_test.cc DropoutGradTest.Basic and RatioLimit: dy is 3
    everywhere and dx = mask * 3 / (1 - ratio). ONNX Runtime feeds a mask of its own;
    normdrop's backward regenerates its Philox mask from (seed, call) or reads the bitmask
    of the forward, and both give that formula with normdrop's mask (dropout_mask)."""
    dy = np.full(shape, 3.0, np.float32)
    dyb = backend.asarray(dy)
    mask = backend.to_numpy(F.dropout_mask(shape, ratio, seed=42, backend=backend))
    want = np.where(mask, np.float32(3.0) / np.float32(1 - ratio), np.float32(0))
    dx = backend.to_numpy(F.dropout_backward(dyb, ratio, seed=42, backend=backend))
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=0)
    _, bitmask = F.dropout_with_bitmask(backend.asarray(dy), ratio, seed=42, backend=backend)
    if bitmask is None:  # nothing dropped, or a backend without one (docs/backends-dask.md)
        assert ratio == 0 or backend.name == "dask"
        return
    dx = backend.to_numpy(F.dropout_backward(dyb, ratio, bitmask=bitmask, backend=backend))
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=0)


# ================================================================================== candle
# huggingface/candle candle-nn/tests/batch_norm.rs batch_norm_test: "generated using the
# following PyTorch code: torch.manual_seed(19551105); m = torch.nn.BatchNorm2d(5,
# affine=False); input = torch.randn(2, 5, 3, 4)", printed to 4 decimals.
CANDLE_BN_X = [
    -0.7493, -1.0410, 1.6977, -0.6579, 1.7982, -0.0087, 0.2812, -0.1190, 0.2908, -0.5975,
    -0.0278, -0.2138, -1.3130, -1.6048, -2.2028, 0.9452, 0.4002, 0.0831, 1.0004, 0.1860,
    0.5004, 0.5539, 0.9991, -0.2540, -0.0703, -0.3752, -0.1096, -0.2374, 1.0258, -2.2208,
    -0.0257, 0.6073, -1.1627, -0.0964, -1.9718, 1.6577, 0.1931, -0.3692, -0.8011, 0.9059,
    0.4797, 0.6521, -0.0165, -0.6683, -0.4148, 2.0649, -0.8276, 1.7947, -0.2061, 0.5812,
    -1.3598, 1.6192, 1.0466, -0.4423, 0.4202, 0.1749, 0.6969, 0.2616, -0.0369, -1.4951,
    -0.0814, -0.1877, 0.0267, 0.6150, 0.2402, -1.1440, -2.0068, 0.6032, -2.6639, 0.8260,
    0.1085, -0.1693, 1.2805, 0.7654, -0.4930, 0.3770, 1.1309, 0.2303, 0.2949, -0.2634, -0.5225,
    0.4269, 0.6341, 1.5736, 0.9827, -1.2499, 0.3509, -1.6243, -0.8123, 0.7634, -0.3047, 0.0143,
    -0.4032, 0.0537, 0.7022, 0.8405, -1.2221, -1.6847, -0.0714, -0.1608, 0.5579, -1.5858,
    0.4617, -0.6480, 0.1332, 0.0419, -0.9784, 0.4173, 1.2313, -1.9046, -0.1656, 0.1259, 0.0763,
    1.4252, -0.9115, -0.1093, -0.3100, -0.6734, -1.4357, 0.9205,
]  # fmt: skip
CANDLE_BN_Y = [
    -0.6391, -0.9414, 1.8965, -0.5444, 2.0007, 0.1283, 0.4287, 0.014, 0.4387, -0.4818,
    0.1085, -0.0842, -1.6809, -2.0057, -2.6714, 0.8328, 0.2262, -0.1268, 0.8943, -0.0123,
    0.3377, 0.3973, 0.8928, -0.5021, 0.0861, -0.2324, 0.0451, -0.0884, 1.2311, -2.1603,
    0.1327, 0.7939, -1.055, 0.0589, -1.9002, 1.8912, 0.2918, -0.3253, -0.7993, 1.0741,
    0.6063, 0.7955, 0.0617, -0.6536, -0.3754, 2.3461, -0.8284, 2.0495, -0.201, 0.6476,
    -1.4446, 1.7665, 1.1493, -0.4556, 0.4741, 0.2097, 0.7723, 0.3031, -0.0186, -1.5905,
    0.053, -0.0572, 0.165, 0.7746, 0.3862, -1.0481, -1.9422, 0.7624, -2.6231, 0.9933,
    0.2498, -0.0381, 1.2061, 0.6327, -0.7681, 0.2004, 1.0396, 0.037, 0.109, -0.5125,
    -0.8009, 0.2559, 0.4865, 1.5324, 1.1861, -1.1461, 0.5261, -1.5372, -0.689, 0.957,
    -0.1587, 0.1745, -0.2616, 0.2156, 0.8931, 1.0375, -1.2614, -1.7691, 0.0015, -0.0966,
    0.6921, -1.6605, 0.5866, -0.6313, 0.226, 0.1258, -0.9939, 0.5378, 1.3484, -2.0319,
    -0.1574, 0.1568, 0.1034, 1.5574, -0.9614, -0.0967, -0.313, -0.7047, -1.5264, 1.0134,
]  # fmt: skip


def test_candle_batch_norm(backend):
    """candle batch_norm.rs batch_norm_test: BatchNorm without affine, eps 1e-8, one
    training pass (forward_train) on (2, 5, 3, 4) from running mean 0 and variance 1. The
    output rounded to 4 decimals is candle's; the running statistics after the pass (momentum
    0.1, as PyTorch's, and candle's running variance is PyTorch's unbiased one) are candle's
    [-0.0133, 0.0197, -0.0153, -0.0073, -0.0020] and [0.9972, 0.9842, 0.9956, 0.9866, 0.9898].
    With weight 0.5 and bias -1.5 (bn2), the output is 0.5 * output - 1.5."""
    x = np.array(CANDLE_BN_X, np.float32).reshape(2, 5, 3, 4)
    xb = backend.asarray(x)
    rm, rv = vec(backend, np.zeros(5, np.float32)), vec(backend, np.ones(5, np.float32))
    y = backend.to_numpy(F.batch_norm(xb, rm, rv, None, None, True, 0.1, 1e-8, backend=backend))
    assert y.shape == (2, 5, 3, 4)
    np.testing.assert_allclose(y.ravel(), CANDLE_BN_Y, rtol=0, atol=5.1e-5)
    np.testing.assert_allclose(
        host(backend, rm), [-0.0133, 0.0197, -0.0153, -0.0073, -0.0020], rtol=0, atol=5.1e-5
    )
    np.testing.assert_allclose(
        host(backend, rv), [0.9972, 0.9842, 0.9956, 0.9866, 0.9898], rtol=0, atol=5.1e-5
    )
    w, b = np.full(5, 0.5, np.float32), np.full(5, -1.5, np.float32)
    rm2, rv2 = vec(backend, np.zeros(5, np.float32)), vec(backend, np.ones(5, np.float32))
    y2 = F.batch_norm(
        xb, rm2, rv2, vec(backend, w), vec(backend, b), True, 0.1, 1e-8, backend=backend
    )
    np.testing.assert_allclose(backend.to_numpy(y2), y * 0.5 - 1.5, rtol=0, atol=1e-6)


def test_candle_train_batch_norm_single_value_refused(backend):
    """candle batch_norm.rs train_batch_norm trains a BatchNorm(1) on a (1, 1) input and
    checks that the running mean moved. PyTorch refuses one value per channel in training
    ("Expected more than 1 value per channel when training"), and so does normdrop
    (SPEC.md): a ShapeError, with the running statistics unchanged."""
    rm, rv = vec(backend, np.zeros(1, np.float32)), vec(backend, np.ones(1, np.float32))
    x = backend.asarray(np.ones((1, 1), np.float32))
    with pytest.raises(ShapeError, match="Expected more than 1 value per channel"):
        F.batch_norm(x, rm, rv, training=True, backend=backend)
    np.testing.assert_array_equal(host(backend, rm), [0.0])
    np.testing.assert_array_equal(host(backend, rv), [1.0])
    bn = normdrop.BatchNorm1d(1, backend=backend.name)
    with pytest.raises(ShapeError, match="Expected more than 1 value per channel"):
        bn(x)
    np.testing.assert_array_equal(host(backend, bn.running_mean), [0.0])
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        TF.batch_norm(_t(np.ones((1, 1), np.float32)), None, None, training=True)


def test_candle_layer_norm(backend):
    """candle layer_norm.rs layer_norm: weight 3, bias 0.5, eps 1e-8. One element [[[2]]]
    gives the bias 0.5; [[[4, 0]]] over 2 features gives [3.5, -2.5]; the rows [1, 2, 3],
    [4, 5, 6] and [9, 8, 7] over 3 features give [-3.1742, 0.5, 4.1742] (reversed for the
    last), each row's mean is the bias 0.5 and sqrt(sum of squared deviations) / 3 is
    sqrt(weight) = 1.7321, to 4 decimals."""
    for d, inp, expected in (
        (1, [[[2.0]]], [[[0.5]]]),
        (2, [[[4.0, 0.0]]], [[[3.5, -2.5]]]),
        (
            3,
            [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [9.0, 8.0, 7.0]]],
            [[[-3.1742, 0.5, 4.1742], [-3.1742, 0.5, 4.1742], [4.1742, 0.5, -3.1742]]],
        ),
    ):
        x = np.array(inp, np.float32)
        w, b = np.full(d, 3.0, np.float32), np.full(d, 0.5, np.float32)
        layer = normdrop.LayerNorm(d, eps=1e-8, backend=backend.name)
        layer.weight, layer.bias = vec(backend, w), vec(backend, b)
        res = backend.to_numpy(layer(backend.asarray(x)))
        np.testing.assert_allclose(res, expected, rtol=0, atol=5.1e-5)
        want = TF.layer_norm(_t(x), (d,), _t(w), _t(b), 1e-8)
        np.testing.assert_allclose(res, _np(want), **tol(np.float32, "torch"))
    mean = res.astype(np.float64).mean(2, keepdims=True)
    np.testing.assert_allclose(mean, 0.5, rtol=0, atol=5e-5)
    std = np.sqrt(((res - mean) ** 2).sum(2)) / 3
    np.testing.assert_allclose(std, 1.7321, rtol=0, atol=5e-5)


# ==================================================================================== burn
# tracel-ai/burn crates/burn-core/src/nn/norm/batch.rs: BatchNormConfig::new(3) (eps 1e-5,
# momentum 0.1 weighing the new batch, as PyTorch's), a training forward (the autodiff
# backend) and then module.valid() (evaluation with the updated running statistics).
BURN_BN1D_X = [
    [[0.9601, 0.7277], [0.6272, 0.9034], [0.9378, 0.7230]],
    [[0.6356, 0.1362], [0.0249, 0.9509], [0.6600, 0.5945]],
]
BURN_BN1D_TRAIN = [
    [[1.1483e00, 3.7521e-01], [1.6272e-03, 7.5067e-01], [1.6204e00, -4.5168e-02]],
    [[6.8856e-02, -1.5923e00], [-1.6318e00, 8.7949e-01], [-5.3368e-01, -1.0416e00]],
]
BURN_BN1D_EVAL = [
    [[0.9409, 0.6976], [0.5892, 0.8774], [0.9106, 0.6844]],
    [[0.6012, 0.0782], [-0.0394, 0.9270], [0.6181, 0.5492]],
]
BURN_BN2D_X = [
    [
        [[0.9601, 0.7277], [0.1270, 0.5441]],
        [[0.6272, 0.9034], [0.4066, 0.7179]],
        [[0.9378, 0.7230], [0.3544, 0.9591]],
    ],
    [
        [[0.6356, 0.1362], [0.1333, 0.7287]],
        [[0.0249, 0.9509], [0.3791, 0.2481]],
        [[0.6600, 0.5945], [0.5424, 0.4767]],
    ],
]
BURN_BN2D_TRAIN = [
    [
        [[1.5136, 0.7506], [-1.2216, 0.1477]],
        [[0.3135, 1.2252], [-0.4150, 0.6130]],
        [[1.4186, 0.3372], [-1.5183, 1.5262]],
    ],
    [
        [[0.4483, -1.1914], [-1.2010, 0.7537]],
        [[-1.6752, 1.3822], [-0.5058, -0.9381]],
        [[0.0200, -0.3097], [-0.5715, -0.9026]],
    ],
]
BURN_BN2D_EVAL = [
    [
        [[0.9538, 0.7103], [0.0808, 0.5179]],
        [[0.6015, 0.8910], [0.3703, 0.6966]],
        [[0.9171, 0.6912], [0.3037, 0.9395]],
    ],
    [
        [[0.6138, 0.0904], [0.0874, 0.7113]],
        [[-0.0297, 0.9408], [0.3415, 0.2042]],
        [[0.6250, 0.5561], [0.5013, 0.4323]],
    ],
]


def test_burn_batch_norm_1d(backend):
    """burn batch.rs tests_1d batch_norm_forward_train and batch_norm_forward_inference:
    BatchNorm1d(3) on (2, 3, 2), a training pass, then evaluation with the running
    statistics it updated. Both outputs equal burn's hard-coded values (5 significant
    digits; burn's own check is to 2 decimals) and PyTorch's."""
    x = np.array(BURN_BN1D_X, np.float32)
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    tbn = torch.nn.BatchNorm1d(3)
    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(y, BURN_BN1D_TRAIN, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y, _np(tbn(_t(x))), **tol(np.float32, "torch"))
    bn.eval()
    tbn.eval()
    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(y, BURN_BN1D_EVAL, rtol=0, atol=1e-4)
    np.testing.assert_allclose(y, _np(tbn(_t(x))), **tol(np.float32, "torch"))


def test_burn_batch_norm_2d(backend):
    """burn batch.rs tests_2d: batch_norm_forward_train, batch_norm_forward_inference,
    batch_norm_running_mean ([0.0499, 0.0532, 0.0656]), batch_norm_running_var ([0.9106,
    0.9105, 0.9045]: PyTorch's unbiased update, which burn's 2-decimal check does not tell
    from the biased [0.9093, 0.9092, 0.9039] its ported code computes) and batch_norm_grads
    (``output.backward()``: a gradient of ones, so the input gradient is 0, the weight
    gradient sum(x_hat) is 0 and the bias gradient is the 8 elements per channel), through
    functional batch_norm on (2, 3, 2, 2). Burn's training output is 3.3e-4 from PyTorch's
    on its own 4-decimal input (it was printed from unrounded data, it seems), so that
    comparison is to 4e-4, and to PyTorch's output closely."""
    x = np.array(BURN_BN2D_X, np.float32)
    xb = backend.asarray(x)
    w, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    rm, rv = vec(backend, np.zeros(3, np.float32)), vec(backend, np.ones(3, np.float32))
    y, mean, rstd = F.batch_norm_with_stats(
        xb, rm, rv, vec(backend, w), vec(backend, b), True, 0.1, 1e-5, backend=backend
    )
    np.testing.assert_allclose(backend.to_numpy(y), BURN_BN2D_TRAIN, rtol=0, atol=4e-4)
    want = TF.batch_norm(_t(x), None, None, _t(w), _t(b), True)
    np.testing.assert_allclose(backend.to_numpy(y), _np(want), **tol(np.float32, "torch"))
    np.testing.assert_allclose(host(backend, rm), [0.0499, 0.0532, 0.0656], rtol=0, atol=1e-4)
    np.testing.assert_allclose(host(backend, rv), [0.9106, 0.9105, 0.9045], rtol=0, atol=1e-4)
    dx, dw, db = F.batch_norm_backward(
        backend.asarray(np.ones_like(x)), xb, mean, rstd, vec(backend, w), backend=backend
    )
    np.testing.assert_allclose(backend.to_numpy(dx), 0.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(host(backend, dw), 0.0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(host(backend, db), [8.0, 8.0, 8.0], rtol=1e-6, atol=0)
    y = F.batch_norm(xb, rm, rv, vec(backend, w), vec(backend, b), False, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), BURN_BN2D_EVAL, rtol=0, atol=1e-4)
    trm, trv = torch.zeros(3), torch.ones(3)
    TF.batch_norm(_t(x), trm, trv, training=True)
    want = TF.batch_norm(_t(x), trm, trv, training=False)
    np.testing.assert_allclose(backend.to_numpy(y), _np(want), **tol(np.float32, "torch"))


def test_burn_layer_norm_forward(backend):
    """burn layer.rs layer_norm_forward: LayerNorm(10), eps 1e-5, on one row; the output
    equals burn's values to its 3 decimals and PyTorch's closely. Burn's ported forward
    divides by sqrt(var) + eps where PyTorch divides by sqrt(var + eps); the difference
    (about 1e-5 here) is below burn's tolerance."""
    x = np.array(
        [[-0.6897, -2.7106, 2.2222, -1.0330, -0.8933, 1.1765, 0.0601, 1.5252, -0.3630, 0.6728]],
        np.float32,
    )
    layer = normdrop.LayerNorm(10, backend=backend.name)
    y = backend.to_numpy(layer(backend.asarray(x)))
    burn = [[-0.4990, -1.9680, 1.6178, -0.7486, -0.6470, 0.8576, 0.0461, 1.1111, -0.2614, 0.4915]]
    np.testing.assert_allclose(y, burn, rtol=0, atol=1e-3)
    np.testing.assert_allclose(y, _np(TF.layer_norm(_t(x), (10,))), **tol(np.float32, "torch"))


def test_burn_layer_norm_backward(backend):
    """burn layer.rs layer_norm_backward: LayerNorm(2) of x = [[0, 1], [3, 4]] @ [[6, 7],
    [9, 10]] = [[9, 10], [54, 61]], then ``output.backward()`` (a gradient of ones): the
    weight gradient is [-2, 2] (each row normalises to about [-1, 1]), the bias gradient
    [2, 2], and the input gradient 0 (so the matmul operands' gradients are 0)."""
    t1 = np.array([[0.0, 1.0], [3.0, 4.0]], np.float32)
    t2 = np.array([[6.0, 7.0], [9.0, 10.0]], np.float32)
    x = t1 @ t2
    layer = normdrop.LayerNorm(2, backend=backend.name)
    layer(backend.asarray(x))
    dx = backend.to_numpy(layer.backward(backend.asarray(np.ones_like(x))))
    np.testing.assert_allclose(dx, 0.0, rtol=0, atol=1e-3)
    np.testing.assert_allclose(dx @ t2.T, 0.0, rtol=0, atol=1e-3)
    np.testing.assert_allclose(host(backend, layer.grads["weight"]), [-2.0, 2.0], atol=1e-3)
    np.testing.assert_allclose(host(backend, layer.grads["bias"]), [2.0, 2.0], atol=1e-3)
    tx = _t(x).requires_grad_(True)
    tlayer = torch.nn.LayerNorm(2)
    tlayer(tx).sum().backward()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        host(backend, layer.grads["weight"]), tlayer.weight.grad.numpy(), rtol=1e-5, atol=1e-5
    )


def test_burn_dropout(backend):
    """burn dropout.rs with_ad_backend_should_mark_input and
    without_ad_backend_should_not_change_input: Dropout(0.5) on ones(100, 100) changes the
    input in training (here: every value is 0 or 1 / (1 - 0.5) = 2, and both occur) and
    returns it unchanged outside training (burn: without an autodiff backend; normdrop:
    in evaluation). Burn's forward also returns the input at prob 0, as normdrop does."""
    x = np.ones((100, 100), np.float32)
    xb = backend.asarray(x)
    layer = normdrop.Dropout(0.5, seed=7, backend=backend.name)
    y = backend.to_numpy(layer(xb))
    assert not np.array_equal(y, x)
    assert set(np.unique(y)) == {0.0, 2.0}
    layer.eval()
    assert layer(xb) is xb
    assert normdrop.Dropout(0.0, seed=7, backend=backend.name)(xb) is xb


# ==================================================================================== TVM
# apache/tvm tests/python/topi/python/test_topi_batch_norm.py test_batch_norm (its
# reference: python/tvm/topi/testing/batch_norm.py) and test_topi_layer_norm.py.
TVM_BN_CASES = [
    ((1,), 0, 0.1, True, True, False, 0.1),
    ((2, 3), 0, 0.1, True, True, False, 0.1),
    ((1, 2, 4), 0, 0.1, True, True, False, 0.1),
    ((1, 2, 3, 4), 0, 0.001, False, False, False, 0.1),
    ((2, 3, 4, 1), 1, 0.01, False, True, False, 0.1),
    ((3, 4, 1, 2), 2, 0.1, True, False, True, 0.1),
    ((4, 1, 2, 3), 3, 1.0, True, True, True, 0.2),
    ((1, 2, 4, 4, 5), 0, 0.1, True, True, True, 0.3),
]


@pytest.mark.parametrize(
    ("shape", "axis", "epsilon", "center", "scale", "training", "momentum"), TVM_BN_CASES
)
def test_tvm_batch_norm(backend, shape, axis, epsilon, center, scale, training, momentum):
    """TVM test_batch_norm: batch norm over any ``axis`` of uniform [0, 1) data, with
    ``center`` (beta) and ``scale`` (gamma) switched on or off, in inference or training.
    TVM's channels may sit on any axis; normdrop's sit on axis 1, so the port moves TVM's
    axis last and flattens the rest into the batch, (M, C). TVM's momentum weighs the new
    batch, as PyTorch's, but its reference updates the moving variance with the biased
    batch variance; PyTorch's (and normdrop's) update takes the unbiased one, M/(M-1) times
    it, and the port checks that translation of TVM's reference. The output equals TVM's
    reference formula (float64) and PyTorch's."""
    rng = np.random.default_rng(160 + len(shape) + axis)
    x = rng.random(shape).astype(np.float32)
    c = shape[axis]
    gamma, beta, moving_mean, moving_var = rng.random((4, c)).astype(np.float32)
    x2 = np.moveaxis(x, axis, -1).reshape(-1, c)
    m = x2.shape[0]
    x64 = x2.astype(np.float64)
    if training:
        data_mean, data_var = x64.mean(0), x64.var(0)
        want = (x64 - data_mean) / np.sqrt(data_var + epsilon)
        want_mean = (1 - momentum) * moving_mean + momentum * data_mean
        want_var = (1 - momentum) * moving_var + momentum * data_var * m / (m - 1)
    else:
        want = (x64 - moving_mean) / np.sqrt(moving_var.astype(np.float64) + epsilon)
        want_mean, want_var = moving_mean, moving_var
    if scale:
        want = want * gamma
    if center:
        want = want + beta
    w, b = (gamma if scale else None), (beta if center else None)
    rm, rv = vec(backend, moving_mean), vec(backend, moving_var)
    y = F.batch_norm(
        backend.asarray(x2), rm, rv, vec(backend, w), vec(backend, b), training, momentum,
        epsilon, backend=backend,
    )  # fmt: skip
    y = backend.to_numpy(y)
    np.testing.assert_allclose(y, want, **tol(np.float32))
    np.testing.assert_allclose(host(backend, rm), want_mean, **tol(np.float32))
    np.testing.assert_allclose(host(backend, rv), want_var, **tol(np.float32))
    trm, trv = _t(moving_mean.copy()), _t(moving_var.copy())
    tw, tb = (None if a is None else _t(a) for a in (w, b))
    tout = TF.batch_norm(_t(x2), trm, trv, tw, tb, training, momentum, epsilon)
    np.testing.assert_allclose(y, _np(tout), **tol(np.float32, "torch"))
    np.testing.assert_allclose(host(backend, rv), trv.numpy(), **tol(np.float32, "torch"))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("shape", "axis"), [((4, 16), (1,)), ((4, 16, 16), (1, 2))])
def test_tvm_layer_norm(backend, shape, axis, dtype):
    """TVM test_topi_layer_norm.py test_layer_norm: layer norm over the trailing ``axis``
    (normalized_shape ``shape[1:]``) of uniform [0, 1) data with uniform gamma and beta,
    eps 1e-5, in float32 and float16, equals TVM's reference (layer_norm_python, the
    float64 formula here) within TVM's rtol = atol = 5e-4 (float16 results are rounded to
    float16, so within 2e-3 there), and PyTorch's."""
    rng = np.random.default_rng(170 + len(shape))
    normalized = tuple(shape[d] for d in axis)
    x = rng.random(shape).astype(dtype)
    gamma, beta = rng.random((2, *normalized)).astype(dtype)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis, keepdims=True)
    want = (x64 - mean) / np.sqrt(x64.var(axis, keepdims=True) + 1e-5) * gamma + beta
    y = F.layer_norm(
        backend.asarray(x), normalized, vec(backend, gamma), vec(backend, beta), 1e-5,
        backend=backend,
    )  # fmt: skip
    y = backend.to_numpy(y)
    assert y.dtype == dtype
    close = 5e-4 if dtype == np.float32 else 2e-3
    np.testing.assert_allclose(y, want, rtol=close, atol=close)
    tout = TF.layer_norm(_t(x.astype(np.float32)), normalized, _t(gamma.astype(np.float32)),
                         _t(beta.astype(np.float32)), 1e-5)  # fmt: skip
    np.testing.assert_allclose(y, _np(tout).astype(dtype), **tol(dtype, "torch"))


# =============================================================================== OpenVINO
# openvinotoolkit/openvino src/plugins/template/tests/functional/op_reference/batch_norm.cpp
# generateParamsForBatchNorm: (shape, input, expected, gamma, beta, mean, variance, eps), run
# through BatchNormInference v0 and v5 in f32 and f16 ("CompareWithHardcodedRefs").
OV_BN_X4 = [
    0.54881352, 0.71518934, 0.60276335, 0.54488319, 0.42365479, 0.64589411, 0.4375872, 0.89177299,
]  # fmt: skip
OV_BN_CASES = [
    ((2, 3), [1, 2, 3, -1, -2, -3], [2, 6, 12, -2, -6, -12],
     [2.0, 3.0, 4.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.75, 0.75, 0.75], 0.25),
    ((2, 3), [1, 2, 3, -1, -2, -3], [3, 0, 6, 1, -4, 0],
     [1.0, 1.0, 1.0], [2.0, -2.0, 3.0], [0.0, 0.0, 0.0], [0.75, 0.75, 0.75], 0.25),
    ((2, 3), [1, 2, 3, -1, -2, -3], [3, 0, 6, 1, -4, 0],
     [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-2.0, 2.0, -3.0], [0.75, 0.75, 0.75], 0.25),
    ((2, 3), [3, 5, 1, -3, -5, -1], [2, 2, 2, -2, -2, -2],
     [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 6.0, 0.0], 0.25),
    ((2, 2, 2, 1), OV_BN_X4,
     [0.54903894, 0.71533161, 0.60296183, 0.54511058, 0.42394274, 0.64607101, 0.43786817,
      0.89182704],
     [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], 0.001),
    ((2, 2, 2, 1), OV_BN_X4,
     [-0.30327, 1.1561, -0.096382, -0.434702, -1.4011, 0.548275, -1.06187, 1.59295],
     [1.0, 1.0], [0.0, 0.0], [0.583388, 0.619252], [0.0119972, 0.0282681], 0.001),
]  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("case", range(len(OV_BN_CASES)))
def test_openvino_batch_norm_inference(backend, case, dtype):
    """OpenVINO ReferenceBatchNormV0LayerTest / ReferenceBatchNormV5LayerTest
    (BatchNormInference: the given mean and variance, channels on axis 1, as PyTorch's
    evaluation mode): the 2-D cases with eps 0.25 (a zero variance among them) and the
    (2, 2, 2, 1) cases with eps 0.001 equal OpenVINO's hard-coded outputs, in float32 and
    float16 (to float16's rounding), and PyTorch's."""
    shape, xs, expected, gamma, beta, mean, var, eps = OV_BN_CASES[case]
    x = np.array(xs, dtype).reshape(shape)
    stats = [np.array(a, dtype) for a in (mean, var, gamma, beta)]
    y = F.batch_norm(
        backend.asarray(x), *(vec(backend, a) for a in stats), False, eps=eps, backend=backend
    )
    y = backend.to_numpy(y)
    assert y.dtype == dtype and y.shape == shape
    close = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 2e-3, "atol": 2e-3}
    np.testing.assert_allclose(y.ravel(), expected, **close)
    t32 = [_t(a.astype(np.float32)) for a in stats]
    tout = TF.batch_norm(_t(x.astype(np.float32)), *t32, False, 0.1, eps)
    np.testing.assert_allclose(y, _np(tout).astype(dtype), **tol(dtype, "torch"))


# openvino .../op_reference/mvn.cpp: MVN-1 and MVN-6 with normalize_variance on a
# (1, 3, 3, 3) input whose three channels are each 1, ..., 9, eps 1e-9.
OV_MVN_Y = [
    -1.5491934, -1.161895, -0.7745967, -0.38729835, 0.0, 0.38729835, 0.7745967, 1.161895,
    1.5491934,
] * 3  # fmt: skip


@pytest.mark.parametrize(
    "normalized_shape",
    [(3, 3), (3, 3, 3)],
    ids=["axes_2_3-or-per_channel", "axes_1_2_3-or-across_channels"],
)
def test_openvino_mvn_normalize_variance(backend, normalized_shape):
    """OpenVINO ReferenceMVN1LayerTest (across_channels false / true, variance true) and
    ReferenceMVN6LayerTest (reduction axes {2, 3} / {1, 2, 3}, normalize_variance true,
    INSIDE_SQRT and OUTSIDE_SQRT): mean-variance normalisation over trailing axes is layer
    norm over them without weight or bias; each channel of 1, ..., 9 gives OpenVINO's
    hard-coded values. normdrop adds eps inside the square root (INSIDE_SQRT, PyTorch's
    placement); with eps 1e-9 OUTSIDE_SQRT's result differs from it by about 1e-10,
    below float32's resolution, so one expected output serves both modes. The
    normalize_variance=false cases (mean subtraction only) are not layer norm and are not
    ported."""
    x = np.tile(np.arange(1, 10, dtype=np.float32), 3).reshape(1, 3, 3, 3)
    y = F.layer_norm(backend.asarray(x), normalized_shape, eps=1e-9, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y).ravel(), OV_MVN_Y, rtol=1e-6, atol=1e-6)
    layer = normdrop.LayerNorm(normalized_shape, eps=1e-9, elementwise_affine=False,
                               backend=backend.name)  # fmt: skip
    want = TF.layer_norm(_t(x), normalized_shape, eps=1e-9)
    np.testing.assert_allclose(
        backend.to_numpy(layer(backend.asarray(x))), _np(want), **tol(np.float32, "torch")
    )
