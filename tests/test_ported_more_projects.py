"""Caffe2's, Caffe's, NNabla's, Lasagne's and Trax's tests of batch norm, layer norm and
dropout, ported to normdrop.

Each test names its source:

- pytorch/pytorch ``caffe2/python/operator_test/spatial_bn_op_test.py`` (TestSpatialBN),
  ``layer_norm_op_test.py`` (TestLayerNormOp) and ``dropout_op_test.py`` (TestDropout),
  with their numpy reference functions. Their hypothesis strategies become a few fixed
  draws from the same ranges.
- BVLC/caffe ``src/caffe/test/test_batch_norm_layer.cpp`` (BatchNormLayerTest) and the
  dropout tests of ``src/caffe/test/test_neuron_layer.cpp`` (NeuronLayerTest
  TestDropout*).
- sony/nnabla ``python/test/function/test_batch_normalization.py``,
  ``test_layer_normalization.py`` and ``test_dropout.py``, with their numpy references.
- Lasagne/Lasagne ``lasagne/tests/layers/test_normalization.py`` (TestBatchNormLayer,
  TestStandardizationLayer) and ``test_noise.py`` (TestDropoutLayer).
- google/trax ``trax/layers/normalization_test.py`` (BatchNormTest, LayerNormTest) and the
  DropoutTest of ``trax/layers/core_test.py``.

Conventions, translated to PyTorch's (which SPEC.md follows): Caffe2's SpatialBN
``momentum``, NNabla's ``decay_rate`` and Trax's ``momentum`` are the weight of the *old*
running value (PyTorch ``momentum = 1 - theirs``); Lasagne's ``alpha`` is PyTorch's
``momentum``. Caffe2 and NNabla update the running variance with the unbiased batch
variance, as PyTorch does; Trax stores the biased one, so its expected running variance
becomes the unbiased one here; Lasagne keeps a running ``inv_std = 1/sqrt(var + eps)``
instead of a variance, so its evaluation statistics go in as ``running_var = 1/inv_std**2 -
eps``, and its running ``inv_std`` update, which has no PyTorch equivalent, becomes
PyTorch's running-variance update. Caffe2's saved ``inv_std`` and NNabla's output ``var``
are normdrop's ``rstd = 1/sqrt(var + eps)``. Channels-last (NHWC) data and channel axes
other than 1 go in as a view with the channel at axis 1; Caffe2's layer norm ``axis`` and
NNabla's ``batch_axis`` become ``normalized_shape = x.shape[axis:]``. All add ``eps`` to the
variance inside the square root, as PyTorch does (Caffe2's layer norm reference computes the
variance as ``E[x^2] - E[x]^2``, written here in float64). Dropout masks come from each
project's generator and normdrop's from Philox (docs/differences.md), so for dropout only
properties are ported: the ``1 / (1 - p)`` scale of kept values, identity in evaluation and
at ``p = 0``, the dropped fraction, the shape and dtype, and a gradient built from the mask
of the forward pass.

Expected numbers come from the projects' hard-coded values, their reference formulas
written out here in float64, or PyTorch, never from normdrop. Not ported: second
derivatives (normdrop has only first-order ``*_backward`` functions), Caffe2's
``num_batches`` accumulation over several batches, NNabla's ``ValueError`` for evaluation
without running statistics (normdrop then uses the batch statistics, a documented
difference), batch norm over several channel axes in training, Lasagne's
``rescale=False`` and ``shared_axes`` dropout and its BatchNormLayer mode that normalises
with the running averages while updating them (neither PyTorch nor normdrop has these).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, central_differences, host, skip_on_slow_backend, tol, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F

torch = pytest.importorskip("torch")


def _fast(backend):
    skip_on_slow_backend(backend, "large inputs or many calls; too slow under the CUDA simulator")


def _channels_first(x, channel_axis):
    """A view of ``x`` with its channel axis at axis 1 (normdrop's channel axis)."""
    return np.moveaxis(x, channel_axis, 1)


def _expand(ndim):
    """An index that broadcasts a per-channel vector over ``(N, C, ...)`` data."""
    return (None, slice(None)) + (None,) * (ndim - 2)


# ================================================================================= Caffe2
# pytorch/pytorch caffe2/python/operator_test/spatial_bn_op_test.py


@pytest.mark.parametrize("spatial", [1, 2, 3], ids=["1d", "2d", "3d"])
def test_caffe2_spatialbn_test_mode(backend, spatial):
    """Caffe2 TestSpatialBN.test_spatialbn_test_mode_1d / test_spatialbn_test_mode /
    test_spatialbn_test_mode_3d (is_test=True): reference_spatialbn_test
    ``(X - mean) / sqrt(var + epsilon) * scale + bias`` with the given running statistics,
    for NCHW and NHWC data (size 7, channels 1-4, batch 0-3, epsilon 1e-5 and 1e-2, and
    in place). Evaluation with running statistics in PyTorch's terms."""
    if spatial == 3:
        _fast(backend)
    size = 7
    cases = [(4, 3, "NCHW", 1e-5, False), (4, 2, "NHWC", 1e-2, False), (1, 3, "NCHW", 1e-2, True)]
    cases += [(3, 0, "NHWC", 1e-5, True)]
    if backend.name in SLOW_BACKENDS:
        cases = cases[1:2]
    for channels, batch_size, order, eps, inplace in cases:
        rs = np.random.RandomState(1701)
        scale = rs.rand(channels).astype(np.float32) + 0.5
        bias = rs.rand(channels).astype(np.float32) - 0.5
        mean = rs.randn(channels).astype(np.float32)
        var = rs.rand(channels).astype(np.float32) + 0.5
        data = rs.rand(batch_size, channels, *(size,) * spatial).astype(np.float32) - 0.5
        if order == "NHWC":
            data = np.ascontiguousarray(np.moveaxis(data, 1, -1))
        x = _channels_first(data, 1 if order == "NCHW" else -1)
        e = _expand(x.ndim)
        want = (x.astype(np.float64) - mean[e]) / np.sqrt(var.astype(np.float64) + eps)[e]
        want = want * scale[e] + bias[e]
        xb = backend.asarray(x)
        y = F.batch_norm(
            xb, vec(backend, mean), vec(backend, var), vec(backend, scale), vec(backend, bias),
            training=False, eps=eps, out=xb if inplace else None, backend=backend,
        )  # fmt: skip
        if inplace:
            assert y is xb
        case = f"C={channels} N={batch_size} {order} eps={eps} inplace={inplace}"
        got = backend.to_numpy(y)
        assert got.shape == x.shape and got.dtype == np.float32, case
        np.testing.assert_allclose(got, want, **tol(np.float32), err_msg=case)


def _caffe2_batch_norm_ref(x, scale, bias, running_mean, running_var, momentum, epsilon):
    """Caffe2 test_spatialbn_train_mode's batch_norm_ref, NCHW, in float64: returns Y, the
    updated running mean and variance (``momentum`` is the weight of the old value, and
    the variance is unbiased) and the saved mean and ``1 / std``."""
    x = x.astype(np.float64)
    if x.shape[0] == 0:
        return np.zeros(x.shape), running_mean, running_var, None, None
    axes = (0, *range(2, x.ndim))
    reduce_size = x.size // x.shape[1]
    saved_mean, saved_var = x.mean(axes), x.var(axes)
    unbias_scale = reduce_size / (reduce_size - 1)
    running_mean = momentum * running_mean + (1.0 - momentum) * saved_mean
    running_var = momentum * running_var + (1.0 - momentum) * unbias_scale * saved_var
    std = np.sqrt(saved_var + epsilon)
    e = _expand(x.ndim)
    y = (x - saved_mean[e]) / std[e] * scale[e] + bias[e]
    return y, running_mean, running_var, saved_mean, 1.0 / std


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_caffe2_spatialbn_train_mode(backend, order):
    """Caffe2 TestSpatialBN.test_spatialbn_train_mode (is_test=False): Y, the running mean
    and variance updated in place and the saved mean and inverse std equal batch_norm_ref,
    for sizes 1-3, batch sizes 0-3 (with ``batch_size * size**2 > 1`` or an empty batch, as
    the test assumes), Caffe2 momentum 0.5 and 0.9 (PyTorch's 0.5 and 0.1). An empty batch
    leaves Y empty and the running statistics unchanged; Caffe2's zero saved statistics for
    it are not compared (normdrop returns what PyTorch's kernels do)."""
    cases = [(3, 3, 0.9, 1e-5), (1, 2, 0.5, 1e-2), (3, 1, 0.9, 1e-3), (0, 3, 0.5, 1e-5)]
    if backend.name in SLOW_BACKENDS:
        cases = cases[:2]
    channels = 4
    for batch_size, size, momentum, eps in cases:
        rs = np.random.RandomState(1701)
        scale = rs.randn(channels).astype(np.float32)
        bias = rs.rand(channels).astype(np.float32) - 0.5
        mean = rs.randn(channels).astype(np.float32)
        var = rs.rand(channels).astype(np.float32) + 0.5
        data = rs.randn(batch_size, channels, size, size).astype(np.float32)
        if order == "NHWC":
            data = np.transpose(data, (0, 2, 3, 1))
        x = _channels_first(data, 1 if order == "NCHW" else -1)
        want_y, want_rm, want_rv, want_mean, want_rstd = _caffe2_batch_norm_ref(
            x, scale, bias, mean.astype(np.float64), var.astype(np.float64), momentum, eps
        )
        rm, rv = vec(backend, mean), vec(backend, var)
        y, saved_mean, saved_rstd = F.batch_norm_with_stats(
            backend.asarray(x), rm, rv, vec(backend, scale), vec(backend, bias),
            training=True, momentum=1.0 - momentum, eps=eps, backend=backend,
        )  # fmt: skip
        case = f"N={batch_size} size={size} momentum={momentum} eps={eps}"
        got = backend.to_numpy(y)
        assert got.shape == x.shape, case
        np.testing.assert_allclose(got, want_y, **tol(np.float32, factor=10), err_msg=case)
        np.testing.assert_allclose(host(backend, rm), want_rm, **tol(np.float32), err_msg=case)
        np.testing.assert_allclose(host(backend, rv), want_rv, **tol(np.float32), err_msg=case)
        if batch_size:
            for got_stat, want_stat in ((saved_mean, want_mean), (saved_rstd, want_rstd)):
                np.testing.assert_allclose(
                    host(backend, got_stat), want_stat, **tol(np.float32), err_msg=case
                )


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_caffe2_spatial_bn_gradient_given_statistics(backend, order):
    """Caffe2 TestSpatialBN.test_spatial_bn_multi_batch_grad with ``num_batches=1`` (one
    batch, so dscale_sum and dbias_sum are this batch's sums): from X, scale, dY and a
    given mean and rstd (random, not X's statistics),
    ``dX = alpha * dY + beta * X + gamma`` with ``alpha = scale * rstd``,
    ``beta = -alpha * dscale * rstd / M``, ``gamma = alpha * (mean * dscale * rstd - dbias) / M``
    (M = N*H*W), and dscale, dbias; an empty batch gives zero dscale and dbias."""
    channels, h, w = 4, 2, 3
    for n in (3, 0):
        rs = np.random.RandomState(1701 + n)
        shape = (n, channels, h, w) if order == "NCHW" else (n, h, w, channels)
        dy_data = rs.randn(*shape).astype(np.float32)
        x_data = rs.randn(*shape).astype(np.float32)
        scale = rs.randn(channels).astype(np.float32)
        mean = rs.randn(channels).astype(np.float32)
        rstd = rs.rand(channels).astype(np.float32)
        x = _channels_first(x_data, 1 if order == "NCHW" else -1)
        dy = _channels_first(dy_data, 1 if order == "NCHW" else -1)
        x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
        s64, m64, r64 = (a.astype(np.float64) for a in (scale, mean, rstd))
        e = _expand(4)
        dscale = np.sum(dy64 * (x64 - m64[e]) * r64[e], axis=(0, 2, 3))
        dbias = np.sum(dy64, axis=(0, 2, 3))
        size = max(n * h * w, 1)
        alpha = s64 * r64
        beta = -alpha * dscale * r64 / size
        gamma = alpha * (m64 * dscale * r64 - dbias) / size
        want_dx = alpha[e] * dy64 + beta[e] * x64 + gamma[e]
        dx, dw, db = F.batch_norm_backward(
            backend.asarray(dy), backend.asarray(x), vec(backend, mean), vec(backend, rstd),
            vec(backend, scale), training=True, backend=backend,
        )  # fmt: skip
        got = backend.to_numpy(dx)
        assert got.shape == x.shape
        np.testing.assert_allclose(got, want_dx, **tol(np.float32, factor=10))
        np.testing.assert_allclose(host(backend, dw), dscale, **tol(np.float32, factor=10))
        np.testing.assert_allclose(host(backend, db), dbias, **tol(np.float32, factor=10))


# pytorch/pytorch caffe2/python/operator_test/layer_norm_op_test.py


def _caffe2_layer_norm_ref(axis, epsilon, x):
    """Caffe2's _layer_norm_ref in float64: normalise each of the ``prod(shape[:axis])``
    rows over the rest, with ``std = sqrt(E[x^2] - E[x]^2 + epsilon)``; returns Y, mean and
    std (shape ``x.shape[:axis] + (1,)``)."""
    left = int(np.prod(x.shape[:axis]))
    reshaped = np.reshape(x.astype(np.float64), [left, -1])
    mean = np.mean(reshaped, axis=1).reshape([left, 1])
    std = np.sqrt(np.mean(np.square(reshaped), axis=1).reshape([left, 1]) - mean**2 + epsilon)
    y = np.reshape((reshaped - mean) / std, x.shape)
    return y, mean.reshape(x.shape[:axis] + (1,)), std.reshape(x.shape[:axis] + (1,))


def _caffe2_layer_norm_grad_ref(axis, gout_full, mean_full, stdev_full, x_full):
    """Caffe2's _layer_norm_grad_ref (the ``norm`` argument it ignores left out)."""
    left = int(np.prod(x_full.shape[:axis]))
    right = int(np.prod(x_full.shape[axis:]))
    x = np.reshape(x_full, [left, right])
    stdev = np.reshape(stdev_full, [left, 1])
    mean = np.reshape(mean_full, [left, 1])
    gout = np.reshape(gout_full, [left, right])
    dstdev_end = (
        (-1.0) / np.power(stdev, 2.0) * np.sum((x - mean) * gout, axis=1).reshape([left, 1])
    )
    dmean_end = np.sum(-1.0 / stdev * gout, axis=1).reshape([left, 1])
    dx_end = 1.0 / stdev * gout
    dmean_stdev = -1.0 * mean / stdev * dstdev_end
    dx_stdev = x / (right * stdev) * dstdev_end
    dmean = dmean_end + dmean_stdev
    dxmean = (1.0 / right) * dmean
    return (dx_end + dx_stdev + dxmean).reshape(x_full.shape)


#: hu.tensor(min_dim=2) draws: shapes of 2-4 dims.
_CAFFE2_LN_SHAPES = [(4, 5), (3, 2, 4), (2, 3, 1, 2)]


@pytest.mark.parametrize("elementwise_affine", [False, True], ids=["plain", "affine"])
def test_caffe2_layer_norm_op(backend, elementwise_affine):
    """Caffe2 TestLayerNormOp.test_layer_norm_op (and its c10 / pytorch / jit twins, which
    share the reference): for every axis of 2-4-dimensional X, Y, mean and std equal
    _layer_norm_ref (``_layer_norm_with_affine_ref`` with gamma and beta of shape
    ``X.shape[axis:]``), eps 1e-5..1e-3. normdrop returns ``rstd = 1 / std`` and a mean of
    shape ``X.shape[:axis]``; axis 0 normalises the whole tensor."""
    rs = np.random.RandomState(7)
    shapes = _CAFFE2_LN_SHAPES[:1] if backend.name in SLOW_BACKENDS else _CAFFE2_LN_SHAPES
    for shape in shapes:
        for axis in range(len(shape)):
            eps = 1e-5 if axis % 2 else 1e-3
            x = (rs.randn(*shape) * 3).astype(np.float32)
            gamma = beta = None
            want, want_mean, want_std = _caffe2_layer_norm_ref(axis, eps, x)
            if elementwise_affine:
                gamma = rs.randn(*shape[axis:]).astype(np.float32)
                beta = rs.randn(*shape[axis:]).astype(np.float32)
                want = want * gamma + beta
            y, mean, rstd = F.layer_norm_with_stats(
                backend.asarray(x),
                shape[axis:],
                vec(backend, gamma),
                vec(backend, beta),
                eps,
                backend=backend,
            )
            case = f"shape={shape} axis={axis}"
            np.testing.assert_allclose(
                backend.to_numpy(y), want, rtol=1e-4, atol=1e-4, err_msg=case
            )
            np.testing.assert_allclose(
                host(backend, mean).ravel(), want_mean.ravel(), **tol(np.float32), err_msg=case
            )
            np.testing.assert_allclose(
                1.0 / host(backend, rstd).ravel(), want_std.ravel(), **tol(np.float32), err_msg=case
            )


def test_caffe2_layer_norm_grad_op(backend):
    """Caffe2 TestLayerNormOp.test_layer_norm_grad_op: with ``gout = norm`` (the forward
    output), LayerNormGradient's input gradient equals _layer_norm_grad_ref for every axis
    (epsilon 1e-4). normdrop takes its own mean and rstd from layer_norm_with_stats; the
    reference takes the mean and std of _layer_norm_ref."""
    rs = np.random.RandomState(8)
    shapes = _CAFFE2_LN_SHAPES[:1] if backend.name in SLOW_BACKENDS else _CAFFE2_LN_SHAPES
    for shape in shapes:
        for axis in range(len(shape)):
            x = rs.randn(*shape)
            norm, mean, std = _caffe2_layer_norm_ref(axis, 1e-4, x)
            want = _caffe2_layer_norm_grad_ref(axis, norm, mean, std, x)
            xb = backend.asarray(x)
            _, got_mean, got_rstd = F.layer_norm_with_stats(
                xb, shape[axis:], eps=1e-4, backend=backend
            )
            dx, dw, db = F.layer_norm_backward(
                backend.asarray(norm), xb, shape[axis:], got_mean, got_rstd, backend=backend
            )
            assert dw is None and db is None
            np.testing.assert_allclose(
                backend.to_numpy(dx), want, **tol(np.float64, factor=100),
                err_msg=f"shape={shape} axis={axis}",
            )  # fmt: skip


@pytest.mark.parametrize("axis", [0, 1])
def test_caffe2_layer_norm_grad(backend, axis):
    """Caffe2 TestLayerNormOp.test_layer_norm_grad: X = a shuffled arange(M * N) as (M, N),
    gamma and beta of shape ``X.shape[axis:]``; the gradients of X, gamma and beta (Caffe2:
    assertGradientChecks against finite differences) equal PyTorch's autograd of
    ``torch.nn.functional.layer_norm`` in float64, eps 1e-5..1e-3."""
    rs = np.random.RandomState(9)
    m, n, eps = 3, 10, 1e-4
    x = np.arange(m * n).astype(np.float32)
    rs.shuffle(x)
    x = x.reshape(m, n)
    shape = x.shape[axis:]
    gamma = rs.randn(*shape).astype(np.float32)
    beta = rs.randn(*shape).astype(np.float32)
    gy = rs.randn(m, n).astype(np.float32)
    tx, tg, tb = (_t(a.astype(np.float64)).requires_grad_() for a in (x, gamma, beta))
    torch.nn.functional.layer_norm(tx, shape, tg, tb, eps).backward(_t(gy.astype(np.float64)))
    xb = backend.asarray(x)
    wb = vec(backend, gamma)
    _, mean, rstd = F.layer_norm_with_stats(xb, shape, wb, vec(backend, beta), eps, backend=backend)
    dx, dw, db = F.layer_norm_backward(
        backend.asarray(gy), xb, shape, mean, rstd, wb, backend=backend
    )
    for got, want in ((dx, tx.grad), (dw, tg.grad), (db, tb.grad)):
        np.testing.assert_allclose(host(backend, got), _np(want), **tol(np.float32, factor=10))


def test_caffe2_layer_norm_with_empty_batch(backend):
    """Caffe2 TestLayerNormOp.test_layer_norm_with_empty_batch: X of shape (0, N), with and
    without gamma and beta: Y is empty of X's shape, the mean and sigma are empty, and the
    gradients of gamma and beta are zeros (Caffe2's gradient check on an empty input)."""
    rs = np.random.RandomState(10)
    for n in (1, 5):
        x = rs.randn(0, n).astype(np.float32)
        gamma = rs.rand(n).astype(np.float32)
        beta = rs.rand(n).astype(np.float32)
        for affine in (False, True):
            w, b = (vec(backend, gamma), vec(backend, beta)) if affine else (None, None)
            xb = backend.asarray(x)
            y, mean, rstd = F.layer_norm_with_stats(xb, n, w, b, backend=backend)
            assert backend.to_numpy(y).shape == (0, n)
            assert host(backend, mean).size == 0 and host(backend, rstd).size == 0
            dx, dw, db = F.layer_norm_backward(
                backend.asarray(x), xb, n, mean, rstd, w, backend=backend
            )
            assert backend.to_numpy(dx).shape == (0, n)
            if affine:
                np.testing.assert_array_equal(host(backend, dw), np.zeros(n))
                np.testing.assert_array_equal(host(backend, db), np.zeros(n))


# pytorch/pytorch caffe2/python/operator_test/dropout_op_test.py


def test_caffe2_dropout_is_test_and_ratio0(backend):
    """Caffe2 TestDropout.test_dropout_is_test (is_test=True, ratio 0..0.999, in place or
    not: Y = X) and test_dropout_ratio0 (ratio 0 in training: Y = X, the mask all ones, and
    the gradient the identity). normdrop returns the input object itself in both cases, as
    PyTorch does; in place is ``out=`` the input. normdrop rejects ratio 1 (Caffe2's range
    stops below it, as normdrop's does)."""
    rs = np.random.RandomState(11)
    x = rs.randn(3, 4, 5).astype(np.float32)
    for ratio in (0.0, 0.3, 0.999):
        xb = backend.asarray(x)
        assert F.dropout(xb, ratio, training=False, seed=5, backend=backend) is xb
        assert F.dropout(xb, ratio, training=False, seed=5, out=xb, backend=backend) is xb
        layer = normdrop.Dropout(ratio, seed=5, backend=backend.name).eval()
        assert layer(xb) is xb
        np.testing.assert_array_equal(backend.to_numpy(xb), x)
    xb = backend.asarray(x)
    assert F.dropout(xb, 0.0, training=True, seed=5, backend=backend) is xb
    assert backend.to_numpy(F.dropout_mask(x.shape, 0.0, seed=5, backend=backend)).all()
    g = rs.randn(3, 4, 5).astype(np.float32)
    dx = F.dropout_backward(backend.asarray(g), 0.0, seed=5, backend=backend)
    np.testing.assert_array_equal(backend.to_numpy(dx), g)


# ================================================================================== Caffe
# BVLC/caffe src/caffe/test/test_batch_norm_layer.cpp: a (5, 2, 3, 4) blob from a Gaussian
# filler (std 1), BatchNormLayer with default parameters (eps 1e-5, no scale and shift: Caffe
# adds those with a separate ScaleLayer), in the TRAIN phase (batch statistics).


def _caffe_blob(dtype):
    return np.random.RandomState(1701).randn(5, 2, 3, 4).astype(dtype)


def test_caffe_batch_norm_forward(backend):
    """Caffe BatchNormLayerTest.TestForward and TestForwardInplace, float and double: per
    channel, the output's mean is 0 and its mean square 1 within 0.001. A (5, 2, 3, 4) blob
    is (N, C, L) = (5, 2, 12) data for BatchNorm1d(2, affine=False); in place is
    ``functional.batch_norm(x, training=True, out=x)``."""
    for dtype in (np.float32, np.float64):
        data = _caffe_blob(dtype)
        layer = normdrop.BatchNorm1d(2, affine=False, dtype=dtype, backend=backend.name)
        xb = backend.asarray(data.reshape(5, 2, 12))
        outputs = [backend.to_numpy(layer(xb))]
        xb = backend.asarray(data.reshape(5, 2, 12))
        assert F.batch_norm(xb, training=True, out=xb, backend=backend) is xb
        outputs.append(backend.to_numpy(xb))
        for y in outputs:
            assert y.dtype == dtype
            y = y.reshape(5, 2, 3, 4).astype(np.float64)
            for j in range(2):
                assert abs(y[:, j].mean()) <= 1e-3
                assert abs((y[:, j] ** 2).mean() - 1) <= 1e-3


def test_caffe_batch_norm_gradient(backend):
    """Caffe BatchNormLayerTest.TestGradient (GradientChecker(1e-2, 1e-4),
    CheckGradientExhaustive): the input gradient of the training-mode layer equals central
    differences of ``sum(dy * y)`` with y = ``(x - mean) / sqrt(var + 1e-5)`` over
    (N, H, W), in float64."""
    x = _caffe_blob(np.float64).reshape(5, 2, 12)
    dy = np.random.RandomState(1702).randn(5, 2, 12)

    def loss():
        mean, var = x.mean((0, 2), keepdims=True), x.var((0, 2), keepdims=True)
        return np.sum(dy * (x - mean) / np.sqrt(var + 1e-5))

    want = central_differences(loss, x)
    xb = backend.asarray(x)
    _, mean, rstd = F.batch_norm_with_stats(xb, training=True, backend=backend)
    dx, dw, db = F.batch_norm_backward(
        backend.asarray(dy), xb, mean, rstd, training=True, backend=backend
    )
    assert dw is None and db is None
    np.testing.assert_allclose(backend.to_numpy(dx), want, rtol=1e-6, atol=1e-7)


# BVLC/caffe src/caffe/test/test_neuron_layer.cpp: NeuronLayerTest's (2, 3, 4, 5) Gaussian
# blob (seed 1701), float and double.


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_caffe_dropout_forward(backend, ratio):
    """Caffe NeuronLayerTest.TestDropoutHalf (ratio left at the default 0.5) and
    TestDropoutThreeQuarters (TestDropoutForward): every nonzero output equals
    ``bottom * scale`` exactly, scale = 1 / (1 - ratio), and the dropped fraction is within
    1.96 standard errors ``sqrt(ratio * (1 - ratio) / count)`` of the ratio."""
    for dtype in (np.float32, np.float64):
        x = np.random.RandomState(1701).randn(2, 3, 4, 5).astype(dtype)
        layer = normdrop.Dropout(seed=1701, backend=backend.name)
        if ratio != 0.5:
            layer = normdrop.Dropout(ratio, seed=1701, backend=backend.name)
        assert layer.p == ratio
        y = backend.to_numpy(layer(backend.asarray(x)))
        assert y.dtype == dtype and y.shape == x.shape
        kept = y != 0
        np.testing.assert_array_equal(y[kept], x[kept] * dtype(1.0 / (1.0 - ratio)))
        std_error = np.sqrt(ratio * (1 - ratio) / x.size)
        assert abs((1 - kept.mean()) - ratio) <= 1.96 * std_error


def test_caffe_dropout_test_phase_and_gradient(backend):
    """Caffe NeuronLayerTest.TestDropoutTestPhase (the TEST phase passes the bottom
    through), TestDropoutGradient (TRAIN: the element-wise gradient is the top gradient
    times the forward's mask times 2 at the default ratio 0.5) and TestDropoutGradientTest
    (TEST: the identity)."""
    x = np.random.RandomState(1701).randn(2, 3, 4, 5).astype(np.float32)
    dy = np.random.RandomState(1702).randn(2, 3, 4, 5).astype(np.float32)
    layer = normdrop.Dropout(seed=3, backend=backend.name)
    y = backend.to_numpy(layer(backend.asarray(x)))
    dx = backend.to_numpy(layer.backward(backend.asarray(dy)))
    np.testing.assert_array_equal(dx, np.where(y != 0, dy * np.float32(2), np.float32(0)))
    layer.eval()
    xb = backend.asarray(x)
    assert layer(xb) is xb
    np.testing.assert_array_equal(backend.to_numpy(layer.backward(backend.asarray(dy))), dy)


# =================================================================================== NNabla
# sony/nnabla python/test/function/test_batch_normalization.py (seed 313, x of shape
# (2, 3, 4) times 2, decay_rate 0.9, eps 1e-5).


def _nnabla_ref_batch_normalization(x, beta, gamma, rmean, rvar, axis, decay_rate, eps, batch_stat):
    """NNabla's ref_batch_normalization in float64, with per-channel vectors: batch
    statistics update ``rmean``/``rvar`` in place (decay_rate the weight of the old value,
    the unbiased variance ``var * m / (m - 1)``). Returns y, mean and (biased) var."""
    x = x.astype(np.float64)
    axis = axis % x.ndim
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    reduc_axes = tuple(i for i in range(x.ndim) if i != axis)
    m = x.size / x.shape[axis]
    if batch_stat:
        mean, var = x.mean(reduc_axes), x.var(reduc_axes)
        rmean[...] = decay_rate * rmean + (1 - decay_rate) * mean
        rvar[...] = decay_rate * rvar + (1 - decay_rate) * var * m / (m - 1)
    else:
        mean, var = rmean.copy(), rvar.copy()
    x_hat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    y = x_hat * np.asarray(gamma, np.float64).reshape(shape)
    return y + np.asarray(beta, np.float64).reshape(shape), mean, var


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_nnabla_batch_normalization_forward(backend, axis):
    """NNabla test_batch_normalization_forward_backward's forward checks: for (output_stat,
    batch_stat) in (F, F), (F, T), (T, T), with and without scale/bias (no_scale=no_bias:
    NNabla's None is ones/zeros) and with or without running statistics: y (and with
    output_stat the batch mean and var: normdrop's ``rstd = 1/sqrt(var + eps)``) equal
    ref_batch_normalization; then five more batches update the running mean and variance as
    the reference does, and 'global stat' mode (evaluation) uses them. Channel axis ``axis``
    goes in as a view at axis 1; NNabla decay_rate 0.9 is PyTorch momentum 0.1. Running
    statistics missing in evaluation (NNabla: ValueError; normdrop: batch statistics, a
    documented difference) and only one of them missing are not ported."""
    if backend.name in SLOW_BACKENDS and axis != 1:
        pytest.skip("one channel axis is enough under the CUDA simulator")
    decay_rate, eps = 0.9, 1e-5
    cases = [
        (batch_stat, output_stat, no_scale_bias, no_stats)
        for batch_stat, output_stat in ((False, False), (True, False), (True, True))
        for no_scale_bias in (False, True)
        for no_stats in ((False, True) if batch_stat else (False,))
    ]
    for batch_stat, output_stat, no_scale_bias, no_stats in cases:
        rng = np.random.RandomState(313)
        x = rng.randn(2, 3, 4).astype(np.float32) * 2
        c = x.shape[axis]
        beta = rng.randn(c).astype(np.float32)
        gamma = rng.randn(c).astype(np.float32)
        rmean = rng.randn(c).astype(np.float32)
        rvar = 1 + rng.rand(c).astype(np.float32)
        if no_scale_bias:
            beta, gamma = np.zeros(c), np.ones(c)
        want_rm, want_rv = rmean.astype(np.float64), rvar.astype(np.float64)
        rm = rv = None
        if not no_stats:
            rm, rv = vec(backend, rmean), vec(backend, rvar)
        w = b = None
        if not no_scale_bias:
            w, b = vec(backend, gamma), vec(backend, beta)
        case = f"batch_stat={batch_stat} output_stat={output_stat} no_scale_bias={no_scale_bias}"
        case += f" no_stats={no_stats}"
        for step in range(6 if batch_stat and not no_stats else 1):
            if step:
                x = rng.randn(2, 3, 4)
            want, mean, var = _nnabla_ref_batch_normalization(
                x, beta, gamma, want_rm, want_rv, axis, decay_rate, eps, batch_stat
            )
            y, got_mean, got_rstd = F.batch_norm_with_stats(
                backend.asarray(_channels_first(x, axis)), rm, rv, w, b,
                training=batch_stat, momentum=1 - decay_rate, eps=eps, backend=backend,
            )  # fmt: skip
            got = np.moveaxis(backend.to_numpy(y), 1, axis)
            np.testing.assert_allclose(got, want, **tol(x.dtype), err_msg=f"{case} step={step}")
            if output_stat:
                np.testing.assert_allclose(host(backend, got_mean), mean, **tol(np.float32))
                np.testing.assert_allclose(
                    host(backend, got_rstd), 1 / np.sqrt(var + eps), **tol(np.float32)
                )
            if rm is not None:
                np.testing.assert_allclose(host(backend, rm), want_rm, rtol=1e-6, atol=1e-7)
                np.testing.assert_allclose(host(backend, rv), want_rv, rtol=1e-6, atol=1e-7)
        if batch_stat and not no_stats and not output_stat:  # NNabla: 'global stat' mode
            want, _, _ = _nnabla_ref_batch_normalization(
                x, beta, gamma, want_rm, want_rv, axis, decay_rate, eps, False
            )
            y = F.batch_norm(
                backend.asarray(_channels_first(x, axis)),
                rm,
                rv,
                w,
                b,
                training=False,
                eps=eps,
                backend=backend,
            )
            got = np.moveaxis(backend.to_numpy(y), 1, axis)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=case)


def test_nnabla_batch_normalization_multiple_axes(backend):
    """NNabla test_batch_normalization_for_multiple_axes_forward_backward: its one checked
    case, 'global stat' mode (batch_stat=False) with running mean and variance 0, axes
    [0, 1], [1, 2], [0, 2] and [-2, -1] of x (2, 3, 4): y = ``x / sqrt(eps) * gamma + beta``
    per element of the statistic axes. normdrop's channel is one axis, so the statistic axes
    are flattened into it: x goes in as (N, C, L) with C their product."""
    eps = 1e-5
    for axes in ([0, 1], [1, 2], [0, 2], [-2, -1]):
        rng = np.random.RandomState(313)
        x = rng.randn(2, 3, 4).astype(np.float32) * 2
        axes = [a % 3 for a in axes]
        stat_shape = [x.shape[a] if a in axes else 1 for a in range(3)]
        beta = rng.randn(*stat_shape).astype(np.float32)
        gamma = rng.randn(*stat_shape).astype(np.float32)
        want = (x.astype(np.float64) - 0.0) / np.sqrt(0.0 + eps) * gamma + beta
        other = [a for a in range(3) if a not in axes][0]
        c = int(np.prod([x.shape[a] for a in axes]))
        # (N=other, C=flattened statistic axes, L=1), C-ordered as the statistic axes
        xv = np.transpose(x, (other, *axes)).reshape(x.shape[other], c, 1)
        y = F.batch_norm(
            backend.asarray(xv), vec(backend, np.zeros(c, np.float32)),
            vec(backend, np.zeros(c, np.float32)), vec(backend, gamma.ravel()),
            vec(backend, beta.ravel()), training=False, eps=eps, backend=backend,
        )  # fmt: skip
        got = backend.to_numpy(y).reshape([x.shape[other]] + [x.shape[a] for a in axes])
        got = np.transpose(got, np.argsort([other, *axes]))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=f"axes={axes}")


# sony/nnabla python/test/function/test_layer_normalization.py


def _nnabla_ref_layer_normalization(x, beta, gamma, n_batch_axes, eps):
    """NNabla's ref_layer_normalization in float64, batch axes leading: normalise over the
    other axes, then scale by gamma and shift by beta where given (stat shape: the batch
    axes 1). Returns y, mean and var."""
    axes = tuple(range(n_batch_axes, x.ndim))
    x_mean = x.mean(axis=axes, keepdims=True)
    x_var = x.var(axis=axes, keepdims=True)
    norm = (x - x_mean) / (x_var + eps) ** 0.5
    if gamma is not None:
        norm = norm * gamma
    if beta is not None:
        norm = norm + beta
    return norm, x_mean, x_var


#: test_layer_normalization_forward_backward's (x_shape, batch_axis) cases.
_NNABLA_LN_CASES = [((2, 3, 4, 4), 0), ((2, 4, 4, 3), 0), ((16, 1), 0), ((2, 4, 3), 0)]
_NNABLA_LN_CASES += [((3, 2, 5), [0, 1])]


@pytest.mark.parametrize(
    ("no_scale", "no_bias"), [(False, False), (True, True), (False, True), (True, False)]
)
def test_nnabla_layer_normalization_forward_backward(backend, no_scale, no_bias):
    """NNabla test_layer_normalization_forward_backward (and the forward of
    test_layer_normalization_forward), seed 313, eps 1e-5, for each (x_shape, batch_axis):
    y, and with output_stat the mean and var (normdrop's ``rstd = 1/sqrt(var + eps)``),
    equal ref_layer_normalization; the gradients of x, gamma and beta equal central
    differences of the reference in float64 (NNabla: function_tester's numerical
    gradients). Without gamma normdrop's layer_norm_backward returns no beta gradient (a
    documented convention, as PyTorch's LayerNorm has no bias without a weight), so only the
    x gradient is compared there."""
    eps = 1e-5
    cases = _NNABLA_LN_CASES[2:4] if backend.name in SLOW_BACKENDS else _NNABLA_LN_CASES
    for x_shape, batch_axis in cases:
        rng = np.random.RandomState(313)
        n_batch = len(np.atleast_1d(batch_axis))
        x = rng.randn(*x_shape)
        stat_shape = (1,) * n_batch + x_shape[n_batch:]
        beta = None if no_bias else rng.randn(*stat_shape)
        gamma = None if no_scale else rng.randn(*stat_shape)
        gy = rng.randn(*x_shape)
        want, want_mean, want_var = _nnabla_ref_layer_normalization(x, beta, gamma, n_batch, eps)
        shape = x_shape[n_batch:]
        w = None if gamma is None else vec(backend, gamma.reshape(shape))
        b = None if beta is None else vec(backend, beta.reshape(shape))
        xb = backend.asarray(x)
        y, mean, rstd = F.layer_norm_with_stats(xb, shape, w, b, eps, backend=backend)
        case = f"x_shape={x_shape} batch_axis={batch_axis}"
        np.testing.assert_allclose(backend.to_numpy(y), want, **tol(np.float64), err_msg=case)
        np.testing.assert_allclose(host(backend, mean).ravel(), want_mean.ravel(), err_msg=case)
        np.testing.assert_allclose(
            host(backend, rstd).ravel(), 1 / np.sqrt(want_var.ravel() + eps), err_msg=case
        )
        params = [a for a in (x, gamma, beta) if a is not None]

        def loss(x=x, gamma=gamma, beta=beta, gy=gy, n_batch=n_batch):
            return np.sum(gy * _nnabla_ref_layer_normalization(x, beta, gamma, n_batch, eps)[0])

        wants = [central_differences(loss, a) for a in params]
        dx, dw, db = F.layer_norm_backward(
            backend.asarray(gy), xb, shape, mean, rstd, w, backend=backend
        )
        gots = [dx] + ([dw, db] if gamma is not None else [])
        if gamma is not None and beta is None:
            gots = gots[:2]
        for got, expected in zip(gots, wants, strict=False):
            np.testing.assert_allclose(
                host(backend, got).reshape(expected.shape), expected, rtol=1e-6, atol=1e-6,
                err_msg=case,
            )  # fmt: skip


# sony/nnabla python/test/function/test_dropout.py


def test_nnabla_dropout_forward_backward(backend):
    """NNabla test_dropout_forward_backward, p = 0.1 ... 0.8, seed 313: x = randn(2, 3, 4) * 2
    with no values near 0 (cap_ignore_region); the output is ``x * mask * scale`` with
    ``mask = output != 0`` and scale = 1 / (1 - p); the input gradient of an output gradient
    is ``o_grad * mask * scale`` (NNabla's accumulation into an existing gradient has no
    equivalent: normdrop's backward returns the gradient), and it overwrites an ``out``
    filled with NaN (NNabla: accum=False with a NaN gradient leaves no NaN)."""
    for p in [p / 10.0 for p in range(1, 9)]:
        rng = np.random.RandomState(313)
        x = rng.randn(2, 3, 4).astype(np.float32) * 2
        x = np.where(np.abs(x) < 1e-3, np.float32(1e-3), x)
        layer = normdrop.Dropout(p, seed=313, backend=backend.name)
        o = backend.to_numpy(layer(backend.asarray(x)))
        scale = 1.0 / (1.0 - p)
        mask = o != 0
        np.testing.assert_allclose(o, x * mask * np.float32(scale), **tol(np.float32))
        o_grad = rng.randn(2, 3, 4).astype(np.float32)
        ref_grad = o_grad * mask * np.float32(scale)
        np.testing.assert_allclose(
            backend.to_numpy(layer.backward(backend.asarray(o_grad))), ref_grad, **tol(np.float32)
        )
        out = backend.asarray(np.full((2, 3, 4), np.nan, np.float32))
        got = F.dropout_backward(
            backend.asarray(o_grad), p, seed=313, call=0, out=out, backend=backend
        )
        got = backend.to_numpy(got)
        assert not np.isnan(got).any()
        np.testing.assert_allclose(got, ref_grad, **tol(np.float32), err_msg=f"p={p}")


# ================================================================================== Lasagne
# Lasagne/Lasagne lasagne/tests/layers/test_normalization.py TestBatchNormLayer: input
# (20, 30, 40) (normalised over axes 0 and 2), BatchNormLayer's default epsilon 1e-4.


def _lasagne_bn_inputs(rs):
    x = rs.randn(20, 30, 40).astype(np.float32) + rs.randn(1, 30, 1).astype(np.float32)
    beta = rs.randn(30).astype(np.float32)
    gamma = rs.randn(30).astype(np.float32)
    return x, beta, gamma


def test_lasagne_batch_norm_get_output_for(backend):
    """Lasagne TestBatchNormLayer.test_get_output_for: with batch statistics and without
    averages updated, with batch statistics and averages updated (deterministic=False, the
    default), and with the running averages (deterministic=True, the default): the output is
    ``(input - mean) * inv_std * gamma + beta`` and the running mean becomes
    ``(1 - alpha) * mean + alpha * input_mean`` (alpha = PyTorch's momentum) within
    atol 1e-5, rtol 1e-6. Lasagne's running ``inv_std`` goes in as ``running_var =
    1/inv_std**2 - eps``; its inv_std average becomes PyTorch's running-variance update with
    the unbiased variance. Normalising with the averages while updating them has no PyTorch
    equivalent and is not ported."""
    _fast(backend)
    eps = 1e-4
    rs = np.random.RandomState(12)
    for use_averages, update_averages in ((False, False), (False, True), (True, False)):
        x, beta, gamma = _lasagne_bn_inputs(rs)
        mean = rs.randn(30).astype(np.float32)
        inv_std = rs.rand(30).astype(np.float32)
        alpha = rs.rand()
        x64 = x.astype(np.float64)
        input_mean = x64.mean(axis=(0, 2))
        input_inv_std = 1 / np.sqrt(x64.var(axis=(0, 2)) + eps)
        use_mean, use_inv_std = (mean, inv_std) if use_averages else (input_mean, input_inv_std)
        bcast = (np.newaxis, slice(None), np.newaxis)
        want = (x64 - use_mean[bcast]) * use_inv_std[bcast] * gamma[bcast] + beta[bcast]
        var = 1 / inv_std.astype(np.float64) ** 2 - eps
        rm, rv = vec(backend, mean), vec(backend, var)
        y = F.batch_norm(
            backend.asarray(x), rm if use_averages or update_averages else None,
            rv if use_averages or update_averages else None, vec(backend, gamma),
            vec(backend, beta), training=not use_averages, momentum=alpha, eps=eps, backend=backend,
        )  # fmt: skip
        case = f"use_averages={use_averages} update_averages={update_averages}"
        np.testing.assert_allclose(backend.to_numpy(y), want, atol=1e-5, rtol=1e-6, err_msg=case)
        want_mean, want_var = mean, var
        if update_averages:
            want_mean = (1 - alpha) * mean + alpha * input_mean
            want_var = (1 - alpha) * var + alpha * x64.var(axis=(0, 2), ddof=1)
        np.testing.assert_allclose(host(backend, rm), want_mean, atol=1e-5, rtol=1e-6)
        np.testing.assert_allclose(host(backend, rv), want_var, atol=1e-5, rtol=1e-6)


def test_lasagne_batch_norm_skip_linear_transform(backend):
    """Lasagne TestBatchNormLayer.test_skip_linear_transform: beta=None gives
    ``(input - mean) / std * gamma`` and gamma=None gives ``(input - mean) / std + beta``
    (deterministic=False: batch statistics), atol 1e-5, rtol 1e-6."""
    _fast(backend)
    x, beta, gamma = _lasagne_bn_inputs(np.random.RandomState(13))
    x64 = x.astype(np.float64)
    std = np.sqrt(x64.var(axis=(0, 2)) + 1e-4)
    normed = (x64 - x64.mean(axis=(0, 2))[None, :, None]) / std[None, :, None]
    for w, b, want in (
        (gamma, None, normed * gamma[None, :, None]),
        (None, beta, normed + beta[None, :, None]),
    ):
        y = F.batch_norm(
            backend.asarray(x), weight=vec(backend, w), bias=vec(backend, b), training=True,
            eps=1e-4, backend=backend,
        )  # fmt: skip
        np.testing.assert_allclose(backend.to_numpy(y), want, atol=1e-5, rtol=1e-6)


def test_lasagne_standardization_layer(backend):
    """Lasagne TestStandardizationLayer.test_get_output_for (epsilon 1e-4): for axes 'auto',
    'features', 'spatial', (1,) and 1 and inputs (5, 10), (5, 10, 15), (5, 10, 15, 15), the
    output is ``(input - mean) / sqrt(var + eps)`` over those axes. That is a layer norm
    without affine over trailing axes; axis 1 of a 3-D or 4-D input goes in as a view with
    that axis last. (Lasagne's (5, 10, 15, 15, 15) input is left out to keep this fast.)"""
    _fast(backend)
    eps = 1e-4
    rs = np.random.RandomState(14)
    for input_shape in ((5, 10), (5, 10, 15), (5, 10, 15, 15)):
        ndim = len(input_shape)
        rand_shape = [1] * ndim
        rand_shape[1] = 10
        x = rs.randn(*input_shape) + rs.randn(*rand_shape)
        for name in ("auto", "features", "spatial", (1,), 1):
            if name == "auto":
                axes = tuple(range(2, ndim)) if ndim > 2 else (1,)
            elif name == "spatial":
                axes = tuple(range(2, ndim))
            elif name == "features":
                axes = tuple(range(1, ndim))
            else:
                axes = (1,)
            if not axes:  # 'spatial' of a 2-D input: Lasagne normalises over nothing
                continue
            mean = x.mean(axis=axes, keepdims=True)
            want = (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
            rest = [a for a in range(ndim) if a not in axes]
            perm = (*rest, *axes)
            view = np.transpose(x, perm)
            y = F.layer_norm(
                backend.asarray(view), view.shape[len(rest) :], eps=eps, backend=backend
            )
            got = np.transpose(backend.to_numpy(y), np.argsort(perm))
            np.testing.assert_allclose(
                got, want, atol=1e-5, rtol=1e-6, err_msg=f"{input_shape} axes={name}"
            )


# Lasagne/Lasagne lasagne/tests/layers/test_noise.py TestDropoutLayer: ones((100, 100)).


def test_lasagne_dropout_layer(backend):
    """Lasagne TestDropoutLayer: test_get_output_for_non_deterministic (p 0.5: mean within
    (0.9, 1.1), values exactly {0, 2}), test_get_output_for_deterministic (the input),
    test_get_output_for_p_02 (values rounded to 2 decimals {0, 1.25}, mean within
    (0.9, 1.1)) and test_get_output_for_p_float32 (a float32 p keeps float32 data float32)."""
    _fast(backend)
    x = np.ones((100, 100))
    xb = backend.asarray(x)
    y = backend.to_numpy(normdrop.Dropout(seed=21, backend=backend.name)(xb))
    assert 0.9 < y.mean() < 1.1
    np.testing.assert_array_equal(np.unique(y), [0.0, 2.0])
    layer = normdrop.Dropout(seed=21, backend=backend.name).eval()
    assert layer(xb) is xb
    y = backend.to_numpy(normdrop.Dropout(0.2, seed=21, backend=backend.name)(xb))
    assert 0.9 < y.mean() < 1.1
    np.testing.assert_array_equal(np.round(np.unique(y), 2), [0.0, 1.25])
    x32 = backend.asarray(np.ones((100, 100), np.float32))
    y = normdrop.Dropout(np.float32(0.5), seed=21, backend=backend.name)(x32)
    assert backend.to_numpy(y).dtype == np.float32


# ==================================================================================== Trax
# google/trax trax/layers/normalization_test.py and core_test.py


@pytest.mark.parametrize("momentum", [0.999, 0.9, 0.8])
def test_trax_batch_norm_forward(backend, momentum):
    """Trax BatchNormTest.test_forward (axis (0, 1, 2): one statistic over all 24 values of
    arange(24) as (2, 3, 4)), test_new_weights_and_state and test_forward_dtype: the state
    starts as mean 0, variance 1, 0 batches; after one batch the running mean is
    ``0 * momentum + 11.5 * (1 - momentum)``, one batch is counted, and y =
    ``(x - 11.5) / sqrt(47.9167 + 1e-5)`` (rtol 1e-6). Trax's momentum is the weight of the
    old value (PyTorch's ``1 - momentum``), and Trax stores the biased variance 47.9167
    where PyTorch stores the unbiased 47.9167 * 24 / 23 = 50. The values go in as (24, 1):
    one channel."""
    for dtype in (np.float32, np.float64):
        x = np.arange(24, dtype=dtype).reshape(2, 3, 4)
        layer = normdrop.BatchNorm1d(
            1, momentum=1 - momentum, affine=False, dtype=dtype, backend=backend.name
        )
        np.testing.assert_array_equal(host(backend, layer.running_mean), [0.0])
        np.testing.assert_array_equal(host(backend, layer.running_var), [1.0])
        assert int(layer.num_batches_tracked) == 0
        y = backend.to_numpy(layer(backend.asarray(x.reshape(24, 1)))).reshape(2, 3, 4)
        assert y.dtype == dtype
        mean_of_x, var_of_x = 11.5, 47.9167
        np.testing.assert_allclose(
            host(backend, layer.running_mean), [mean_of_x * (1 - momentum)], rtol=1e-6
        )
        np.testing.assert_allclose(
            host(backend, layer.running_var),
            [1.0 * momentum + var_of_x * 24 / 23 * (1 - momentum)],
            rtol=1e-5,
        )
        assert int(layer.num_batches_tracked) == 1
        np.testing.assert_allclose(y, (x - mean_of_x) / np.sqrt(var_of_x + 1e-5), rtol=1e-5)


def test_trax_layer_norm(backend):
    """Trax LayerNormTest.test_forward_shape and test_forward_dtype: LayerNorm (epsilon 1e-6,
    over the last axis) keeps the shape (3, 2, 7) and the dtype (float32, float64) of
    ``ones``, whose rows are constant and so normalise to exactly 0 (with bias 0); and
    Trax's forward ``centered / sqrt(mean(centered**2) + epsilon)`` on random data."""
    for dtype in (np.float32, np.float64):
        x = np.ones((3, 2, 7), dtype)
        layer = normdrop.LayerNorm(7, eps=1e-6, dtype=dtype, backend=backend.name)
        y = backend.to_numpy(layer(backend.asarray(x)))
        assert y.shape == (3, 2, 7) and y.dtype == dtype
        np.testing.assert_array_equal(y, np.zeros((3, 2, 7)))
        x = np.random.RandomState(15).randn(3, 2, 7).astype(dtype)
        centered = x.astype(np.float64) - x.astype(np.float64).mean(-1, keepdims=True)
        want = centered / np.sqrt(np.mean(centered * centered, -1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(backend.to_numpy(layer(backend.asarray(x))), want, **tol(dtype))


def test_trax_dropout(backend):
    """Trax DropoutTest.test_call_in_train_mode (rate 0.1 on ones (2, 5, 1000): the shape is
    kept and the number of kept values is within 4 sigmas (120) of 9000) and
    test_call_in_eval_mode_does_no_dropout (all 10000 values nonzero)."""
    _fast(backend)
    x = backend.asarray(np.ones((2, 5, 1000)))
    layer = normdrop.Dropout(0.1, seed=99, backend=backend.name)
    y = backend.to_numpy(layer(x))
    assert y.shape == (2, 5, 1000)
    assert abs(np.count_nonzero(y) - 9000) < 4 * 30
    layer.eval()
    assert np.count_nonzero(backend.to_numpy(layer(x))) == 10_000
