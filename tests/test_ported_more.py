"""More projects' tests of batch norm, layer norm and dropout, ported to normdrop.

Each test names its source: a repository and a test in it (Chainer's function and
link tests, PaddlePaddle's ``test/legacy_test`` op and API tests, DeepMind Haiku's
module tests, PyTensor's (Theano's) batchnorm tests). Tests at the end check the
discrepancies these ports found, each fixed in normdrop.

Where a project's convention differs from PyTorch's, the port checks the property the
test is about in PyTorch's terms, which SPEC.md follows: Chainer's
``decay`` and Paddle's ``momentum`` are the weight of the *old* running value
(``momentum = 1 - decay``); Chainer's ``finetune=True`` is PyTorch's ``momentum=None``
(a cumulative average); Paddle's ``use_global_stats`` is evaluation with the running
statistics; Paddle's ``downscale_in_infer`` dropout is PyTorch's inverted dropout seen
from the other side. The numbers come from each project's own reference formula,
written out here in float64, or from PyTorch, never from normdrop itself. Double
backward (Chainer's ``check_double_backward``) has no normdrop equivalent: normdrop has
no autograd, only first-order ``*_backward`` functions.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import central_differences, host, skip_on_slow_backend, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F
from normdrop.errors import InvalidParameterError, ShapeError

torch = pytest.importorskip("torch")
TF_dropout = torch.nn.functional.dropout


def _fast(backend):
    skip_on_slow_backend(backend, "a loop over many cases; too slow under the CUDA simulator")


def _dev(backend, a):
    """A data array on the backend (None stays None)."""
    return None if a is None else backend.asarray(a)


# ================================================================================= Chainer
# chainer/chainer tests/chainer_tests/functions_tests/normalization_tests/
# test_batch_normalization.py, test_layer_normalization.py, noise_tests/test_dropout.py,
# and links_tests/normalization_tests/test_batch_normalization.py, test_layer_normalization.py.


def _chainer_batch_normalization(x, gamma, beta, mean, var, eps, axes, running=None, decay=0.9):
    """Chainer's ``_batch_normalization`` reference (float64): normalise over ``axes`` and,
    with ``running = (running_mean, running_var)``, update them with ``decay`` and the
    unbiased variance (``adjust = m / max(m - 1, 1)``)."""
    x = np.asarray(x, np.float64)
    keep = tuple(i for i in range(x.ndim) if i not in axes)
    expand = tuple(slice(None) if i in keep else None for i in range(x.ndim))
    m64 = np.asarray(mean, np.float64)
    v64 = np.asarray(var, np.float64)
    y = np.asarray(gamma, np.float64)[expand] * (x - m64[expand]) / np.sqrt(v64 + eps)[expand]
    y = y + np.asarray(beta, np.float64)[expand]
    if running is not None:
        m = x.size // m64.size
        adjust = m / max(m - 1.0, 1.0)
        running_mean, running_var = running
        running_mean[...] = decay * running_mean + (1 - decay) * m64
        running_var[...] = decay * running_var + (1 - decay) * adjust * v64
    return y


# (input shape, the channel axis): Chainer's param_shape (3,) with ndim 0, 1, 2, and its
# ``axis`` cases that have one channel axis: (5, 4) with axis=0, (5, 4, 3, 2) with
# axis=(0, 2, 3), and (5, 4, 3) with axis=(0, 1), whose channels are last (NLC: ported as
# a transposed view). Chainer's param_shape (3, 4) / (3, 2, 3) (several channel axes) has
# no equivalent: normdrop's channel is one axis.
_CHAINER_BN_SHAPES = [
    ((5, 3), 1),
    ((5, 3, 2), 1),
    ((5, 3, 2, 2), 1),
    ((5, 4), 1),
    ((5, 4, 3, 2), 1),
    ((5, 4, 3), 2),
]


@pytest.mark.parametrize("running_statistics", [True, False], ids=["running", "no_running"])
@pytest.mark.parametrize(("shape", "channel_axis"), _CHAINER_BN_SHAPES)
def test_chainer_batch_normalization(backend, shape, channel_axis, running_statistics):
    """Chainer TestBatchNormalization.test_forward: x in xdtype, gamma/beta (and the running
    statistics, drawn from [-1, 1] so some 'variances' are negative) in dtype, every
    pairing of float32/float64, eps 2e-5 and 0.5, C- and Fortran-ordered data; y keeps x's
    dtype and equals the reference; the running statistics are updated in place with
    momentum 1 - decay = 0.1 and the unbiased variance. On the CUDA simulator one case."""
    rng = np.random.default_rng(200)
    cases = [
        (xd, d, eps, contig)
        for xd in (np.float32, np.float64)
        for d in (np.float32, np.float64)
        for eps in (2e-5, 5e-1)
        for contig in (True, False)
    ]
    if backend.name == "cuda":
        cases = [(np.float32, np.float64, 2e-5, False)]
    for xdtype, dtype, eps, c_contiguous in cases:
        c = shape[channel_axis]
        data = rng.uniform(-1, 1, shape).astype(xdtype)
        gamma = rng.uniform(0.5, 1, c).astype(dtype)
        beta = rng.uniform(-1, 1, c).astype(dtype)
        axes = tuple(i for i in range(len(shape)) if i != channel_axis)
        mean, var = data.astype(np.float64).mean(axes), data.astype(np.float64).var(axes)
        want_running = None
        rm = rv = None
        if running_statistics:
            rm0 = rng.uniform(-1, 1, c).astype(dtype)
            rv0 = rng.uniform(-1, 1, c).astype(dtype)
            want_running = (rm0.astype(np.float64), rv0.astype(np.float64))
            rm, rv = vec(backend, rm0), vec(backend, rv0)
        want = _chainer_batch_normalization(data, gamma, beta, mean, var, eps, axes, want_running)
        x = data if c_contiguous else np.asfortranarray(data)
        if channel_axis != 1:  # channels last: normalise the (N, C, L) view
            x = np.moveaxis(x, channel_axis, 1)
            want = np.moveaxis(want, channel_axis, 1)
        y = F.batch_norm(
            backend.asarray(x), rm, rv, vec(backend, gamma), vec(backend, beta),
            training=True, momentum=0.1, eps=eps, backend=backend,
        )  # fmt: skip
        y = backend.to_numpy(y)
        case = f"xdtype={xdtype.__name__} dtype={dtype.__name__} eps={eps} C={c_contiguous}"
        assert y.dtype == xdtype, case
        np.testing.assert_allclose(y, want, atol=1e-4, rtol=1e-3, err_msg=case)
        if running_statistics:
            for got, expected in zip((rm, rv), want_running, strict=True):
                assert host(backend, got).dtype == dtype, case
                np.testing.assert_allclose(
                    host(backend, got), expected, atol=1e-4, rtol=1e-3, err_msg=case
                )


@pytest.mark.parametrize("param_dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("c_contiguous", [True, False])
def test_chainer_batch_normalization_float16_input(backend, param_dtype, c_contiguous):
    """Chainer TestBatchNormalization, its float16 rows: x of shape (5, 3, 2) in float16 with
    gamma, beta and running statistics in float16, float32 or float64; y is float16 and
    equals the reference within Chainer's float16 tolerance (1e-2); the running statistics
    keep their dtype."""
    _fast(backend)
    rng = np.random.default_rng(201)
    for eps in (2e-5, 5e-1):
        data = rng.uniform(-1, 1, (5, 3, 2)).astype(np.float16)
        gamma = rng.uniform(0.5, 1, 3).astype(param_dtype)
        beta = rng.uniform(-1, 1, 3).astype(param_dtype)
        rm = rng.uniform(-1, 1, 3).astype(param_dtype)
        rv = rng.uniform(-1, 1, 3).astype(param_dtype)
        want_running = (rm.astype(np.float64), rv.astype(np.float64))
        d64 = data.astype(np.float64)
        want = _chainer_batch_normalization(
            d64, gamma, beta, d64.mean((0, 2)), d64.var((0, 2)), eps, (0, 2), want_running
        )
        x = data if c_contiguous else np.asfortranarray(data)
        rm_b, rv_b = vec(backend, rm), vec(backend, rv)
        y = F.batch_norm(
            backend.asarray(x), rm_b, rv_b, vec(backend, gamma), vec(backend, beta),
            training=True, momentum=0.1, eps=eps, backend=backend,
        )  # fmt: skip
        y = backend.to_numpy(y)
        assert y.dtype == np.float16
        np.testing.assert_allclose(y, want, atol=1e-2, rtol=1e-2)
        for got, expected in zip((rm_b, rv_b), want_running, strict=True):
            assert host(backend, got).dtype == param_dtype
            np.testing.assert_allclose(host(backend, got), expected, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("shape", [(5, 3), (5, 3, 2), (5, 3, 2, 2)])
def test_chainer_batch_normalization_backward(backend, shape):
    """Chainer TestBatchNormalization.test_backward: gradient_check.check_backward in float64
    of batch_normalization(x, gamma, beta) with batch statistics: the input, gamma and beta
    gradients equal central differences of the reference formula (eps 2e-5 and 0.5)."""
    if backend.name == "cuda" and len(shape) > 2:
        pytest.skip("one shape is enough under the CUDA simulator")
    rng = np.random.default_rng(202)
    axes = (0,) + tuple(range(2, len(shape)))
    for eps in (2e-5, 5e-1):
        x = rng.uniform(-1, 1, shape)
        gamma = rng.uniform(0.5, 1, 3)
        beta = rng.uniform(-1, 1, 3)
        gy = rng.uniform(-1, 1, shape)

        def loss(x=x, gamma=gamma, beta=beta, gy=gy, eps=eps):
            mean, var = x.mean(axes), x.var(axes)
            return np.sum(gy * _chainer_batch_normalization(x, gamma, beta, mean, var, eps, axes))

        want = [central_differences(loss, a) for a in (x, gamma, beta)]
        _, mean, rstd = F.batch_norm_with_stats(
            backend.asarray(x), weight=vec(backend, gamma), bias=vec(backend, beta),
            training=True, eps=eps, backend=backend,
        )  # fmt: skip
        got = F.batch_norm_backward(
            backend.asarray(gy), backend.asarray(x), mean, rstd, vec(backend, gamma),
            training=True, backend=backend,
        )  # fmt: skip
        for name, g, w in zip(("x", "gamma", "beta"), got, want, strict=True):
            np.testing.assert_allclose(host(backend, g), w, atol=1e-6, rtol=1e-5, err_msg=name)


@pytest.mark.skip(
    reason="Chainer test_double_backward (gradient_check.check_double_backward): normdrop has "
    "no autograd and no second-order gradients, only the first-order *_backward functions"
)
def test_chainer_batch_normalization_double_backward():
    """Chainer TestBatchNormalization / TestFixedBatchNormalization.test_double_backward."""


@pytest.mark.parametrize("ndim", [0, 1, 2])
def test_chainer_fixed_batch_normalization(backend, ndim):
    """Chainer TestFixedBatchNormalization.test_forward: fixed_batch_normalization(x, gamma,
    beta, mean, var, eps) normalises with the given statistics (here batch_norm with
    running statistics and training=False), for float16/32/64 and C/Fortran order; y
    keeps x's dtype and the given statistics are not written."""
    rng = np.random.default_rng(203)
    shape = (5, 3) + (2,) * ndim
    axes = (0,) + tuple(range(2, len(shape)))
    dtypes = (np.float32,) if backend.name == "cuda" else (np.float16, np.float32, np.float64)
    for dtype in dtypes:
        close = {"atol": 1e-4, "rtol": 1e-3}
        if dtype == np.float16:
            close = {"atol": 1e-2, "rtol": 1e-2}
        for eps in (2e-5, 5e-1):
            for c_contiguous in (True, False):
                x = rng.uniform(-1, 1, shape).astype(dtype)
                gamma = rng.uniform(0.5, 1, 3).astype(dtype)
                beta = rng.uniform(-1, 1, 3).astype(dtype)
                mean = rng.uniform(-1, 1, 3).astype(dtype)
                var = rng.uniform(0.5, 1, 3).astype(dtype)
                want = _chainer_batch_normalization(x, gamma, beta, mean, var, eps, axes)
                rm, rv = vec(backend, mean), vec(backend, var)
                xin = x if c_contiguous else np.asfortranarray(x)
                y = F.batch_norm(
                    backend.asarray(xin), rm, rv, vec(backend, gamma), vec(backend, beta),
                    training=False, eps=eps, backend=backend,
                )  # fmt: skip
                y = backend.to_numpy(y)
                assert y.dtype == dtype
                np.testing.assert_allclose(y, want, **close)
                np.testing.assert_array_equal(host(backend, rm), mean)
                np.testing.assert_array_equal(host(backend, rv), var)


def test_chainer_fixed_batch_normalization_backward(backend):
    """Chainer TestFixedBatchNormalization.test_backward (float64): the input, gamma and beta
    gradients of normalisation with given statistics equal central differences of the
    reference. (Chainer also checks gradients with respect to mean and var, which
    normdrop's batch_norm_backward does not return: running statistics are buffers, not
    parameters, in PyTorch and normdrop.)"""
    rng = np.random.default_rng(204)
    shape, axes = (5, 3, 2), (0, 2)
    x = rng.uniform(-1, 1, shape)
    gamma, beta = rng.uniform(0.5, 1, 3), rng.uniform(-1, 1, 3)
    mean, var = rng.uniform(-1, 1, 3), rng.uniform(0.5, 1, 3)
    gy = rng.uniform(-1, 1, shape)
    eps = 2e-5

    def loss():
        return np.sum(gy * _chainer_batch_normalization(x, gamma, beta, mean, var, eps, axes))

    want = [central_differences(loss, a) for a in (x, gamma, beta)]
    _, m, rstd = F.batch_norm_with_stats(
        backend.asarray(x), vec(backend, mean), vec(backend, var), vec(backend, gamma),
        vec(backend, beta), training=False, eps=eps, backend=backend,
    )  # fmt: skip
    got = F.batch_norm_backward(
        backend.asarray(gy),
        backend.asarray(x),
        m,
        rstd,
        vec(backend, gamma),
        training=False,
        backend=backend,
    )
    for name, g, w in zip(("x", "gamma", "beta"), got, want, strict=True):
        np.testing.assert_allclose(host(backend, g), w, atol=1e-6, rtol=1e-5, err_msg=name)


def test_chainer_batch_normalization_warning_one_value_per_channel():
    """Chainer TestBatchNormalizationWarning: batch normalisation of (1, 3) (one value per
    channel) warns in Chainer; PyTorch, and so normdrop, raise (SPEC: ShapeError with
    PyTorch's message) and leave the running statistics alone. (1, 3, 2, 2) has four values
    per channel and goes through without a warning."""
    x = np.random.default_rng(205).uniform(-1, 1, (1, 3)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ShapeError, match=r"Expected more than 1 value per channel"):
        F.batch_norm(x, rm, rv, training=True)
    np.testing.assert_array_equal(rm, 0)
    np.testing.assert_array_equal(rv, 1)
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel"):
        torch.nn.functional.batch_norm(_t(x), None, None, training=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.batch_norm(np.zeros((1, 3, 2, 2), np.float32), training=True)
    assert y.shape == (1, 3, 2, 2)


# ---------------------------------------------------------------- Chainer links: BatchNormalization


@pytest.mark.parametrize("ndim", [0, 1])
@pytest.mark.parametrize("test", [True, False], ids=["test_mode", "train_mode"])
def test_chainer_link_batch_normalization(backend, test, ndim):
    """Chainer links BatchNormalizationTest (LinkTestCase): a BatchNormalization link with
    random initial gamma/beta (and, in test mode, avg_mean/avg_var) gives
    gamma * (x - mean) / std + beta, with batch statistics in training and the stored ones
    in test mode, for float16, float32, float64 and mixed16 (float16 data, float32
    parameters); y has x's dtype. normdrop's layer holds float32 or float64 parameters, so
    float16 runs as mixed16 does. Chainer's ndim 2 and 3 (4-D and 5-D input) are outside
    BatchNorm1d (see the functional ports above)."""
    rng = np.random.default_rng(206)
    shape = (5, 3) + (2,) * ndim
    axes = (0,) + tuple(range(2, len(shape)))
    eps = 2e-5
    cases = [(np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float32)]
    if backend.name == "cuda":
        cases = cases[:1]
    for xdtype, pdtype in cases:
        bn = normdrop.BatchNorm1d(3, eps=eps, dtype=pdtype, backend=backend.name)
        gamma = rng.uniform(-1, 1, 3).astype(pdtype)
        beta = rng.uniform(-1, 1, 3).astype(pdtype)
        bn.weight, bn.bias = vec(backend, gamma), vec(backend, beta)
        x = rng.uniform(-1, 1, shape).astype(xdtype)
        x64 = x.astype(np.float64)
        if test:
            mean = rng.uniform(-1, 1, 3).astype(pdtype)
            var = rng.uniform(0.5, 1, 3).astype(pdtype)
            bn.running_mean, bn.running_var = vec(backend, mean), vec(backend, var)
            bn.eval()
        else:
            mean, var = x64.mean(axes), x64.var(axes)
        want = _chainer_batch_normalization(x64, gamma, beta, mean, var, eps, axes)
        y = backend.to_numpy(bn(backend.asarray(x)))
        assert y.dtype == xdtype
        close = {"atol": 1e-4, "rtol": 1e-3}
        if xdtype == np.float16:
            close = {"atol": 1e-2, "rtol": 1e-1}
        np.testing.assert_allclose(y, want, **close)


@pytest.mark.parametrize("eps", [2e-5, 1e-1])
def test_chainer_link_population_statistics(backend, eps):
    """Chainer links TestPopulationStatistics: with finetune=True the link keeps a cumulative
    average (decay 1 - 1/N), PyTorch's momentum=None. After one batch x (10, 3) avg_mean
    is x's mean and avg_var its unbiased variance; a call in test mode changes nothing;
    after a second batch y of the same size they are the means of the two batches'
    statistics (test_statistics, test_statistics2)."""
    rng = np.random.default_rng(207)
    bn = normdrop.BatchNorm1d(3, eps=eps, momentum=None, backend=backend.name)
    x = rng.uniform(-1, 1, (10, 3)).astype(np.float32)
    y = rng.uniform(-1, 1, (10, 3)).astype(np.float32)
    bn(backend.asarray(x))
    mean, unbiased_var = x.mean(0), x.var(0) * 10 / 9
    np.testing.assert_allclose(host(backend, bn.running_mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host(backend, bn.running_var), unbiased_var, rtol=1e-5, atol=1e-6)
    bn.eval()
    bn(backend.asarray(y))
    np.testing.assert_allclose(host(backend, bn.running_mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host(backend, bn.running_var), unbiased_var, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 1
    bn.train()
    bn(backend.asarray(y))
    mean2 = (x.sum(0) + y.sum(0)) / 20
    var2 = (x.var(0) * 10 + y.var(0) * 10) / 20 * 10 / 9
    np.testing.assert_allclose(host(backend, bn.running_mean), mean2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host(backend, bn.running_var), var2, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 2


@pytest.mark.parametrize("ndim", [0, 1])
@pytest.mark.parametrize("test", [True, False], ids=["test_mode", "train_mode"])
def test_chainer_link_without_gamma_and_beta(backend, test, ndim):
    """Chainer links BatchNormalizationTestWithoutGammaAndBeta (use_gamma=False,
    use_beta=False; here affine=False): gamma and beta are None; the forward is the
    reference with gamma 1 and beta 0 (test mode: the given avg_mean/avg_var), and the input
    gradient equals central differences of it (test_backward)."""
    rng = np.random.default_rng(208)
    shape = (7, 3) + (2,) * ndim
    axes = (0,) + tuple(range(2, len(shape)))
    bn = normdrop.BatchNorm1d(3, affine=False, dtype=np.float64, backend=backend.name)
    assert bn.weight is None and bn.bias is None
    x = rng.uniform(-1, 1, shape)
    gy = rng.uniform(-1, 1, shape)
    if test:
        mean, var = rng.uniform(-1, 1, 3), rng.uniform(0.5, 1, 3)
        bn.running_mean, bn.running_var = vec(backend, mean), vec(backend, var)
        bn.eval()

    def forward():
        m, v = (mean, var) if test else (x.mean(axes), x.var(axes))
        return _chainer_batch_normalization(x, np.ones(3), np.zeros(3), m, v, bn.eps, axes)

    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(y, forward(), atol=1e-10, rtol=1e-9)
    dx = backend.to_numpy(bn.backward(backend.asarray(gy)))
    want = central_differences(lambda: np.sum(gy * forward()), x)
    np.testing.assert_allclose(dx, want, atol=1e-6, rtol=1e-5)
    assert bn.grads == {}


def test_chainer_link_initialize():
    """Chainer links TestInitialize (size 3): initial gamma, beta, avg_mean and avg_var
    (avg_var from [-1, 1]) are what the link holds; in normdrop through load_state_dict
    and through assignment. (Chainer's size (2, 3) has no BatchNorm1d equivalent.)"""
    rng = np.random.default_rng(209)
    values = {k: rng.uniform(-1, 1, 3).astype(np.float32) for k in ("w", "b", "m", "v")}
    bn = normdrop.BatchNorm1d(3, momentum=0.1)
    bn.load_state_dict(
        {"weight": values["w"], "bias": values["b"], "running_mean": values["m"],
         "running_var": values["v"], "num_batches_tracked": np.array(0)}
    )  # fmt: skip
    bn2 = normdrop.BatchNorm1d(3, momentum=0.1)
    bn2.weight, bn2.bias = values["w"], values["b"]
    bn2.running_mean, bn2.running_var = values["m"], values["v"]
    for layer in (bn, bn2):
        np.testing.assert_array_equal(layer.weight, values["w"])
        np.testing.assert_array_equal(layer.bias, values["b"])
        np.testing.assert_array_equal(layer.running_mean, values["m"])
        np.testing.assert_array_equal(layer.running_var, values["v"])


@pytest.mark.parametrize("xdtype", [np.float32, np.float16], ids=["float32", "mixed16"])
def test_chainer_link_default_initializer(xdtype):
    """Chainer links TestDefaultInitializer: gamma ones, beta zeros, avg_mean 0, avg_var 1,
    all in the layer's dtype (float32; Chainer's mixed16 keeps float32 parameters too),
    and y = link(arange(6).reshape(2, 3)) has x's dtype. (Chainer's float16 parameters:
    normdrop refuses dtype='float16', see test_ported_torch.)"""
    bn = normdrop.BatchNorm1d(3)
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert getattr(bn, name).dtype == np.float32, name
    np.testing.assert_array_equal(bn.weight, np.ones(3))
    np.testing.assert_array_equal(bn.bias, np.zeros(3))
    np.testing.assert_array_equal(bn.running_mean, 0)
    np.testing.assert_array_equal(bn.running_var, 1)
    y = bn(np.arange(6, dtype=xdtype).reshape(2, 3))
    assert y.dtype == xdtype


@pytest.mark.parametrize("shape", [(2, 4), (2, 5, 3, 4)])
def test_chainer_link_invalid_input(shape):
    """Chainer links TestInvalidInput: BatchNormalization(3) on (2, 4) (wrong channel count)
    or (2, 5, 3, 4) raises (Chainer: type_check.InvalidType; normdrop: ShapeError, a
    ValueError, as PyTorch's ValueError/RuntimeError) and changes no state."""
    bn = normdrop.BatchNorm1d(3)
    with pytest.raises(ShapeError, match=r"BatchNorm1d"):
        bn(np.zeros(shape, np.float32))
    assert int(bn.num_batches_tracked) == 0
    np.testing.assert_array_equal(bn.running_mean, 0)
    np.testing.assert_array_equal(bn.running_var, 1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: normdrop.BatchNorm1d({}),
        lambda: normdrop.LayerNorm(5, 1e-6, {}),
    ],
    ids=["BatchNormalization({})", "LayerNormalization(None, 1e-6, {})"],
)
def test_chainer_link_invalid_initialize_is_a_type_error(make):
    """Chainer links TestInvalidInitialize (BatchNormalization and LayerNormalization): an
    argument of the wrong type raises TypeError, as it does in PyTorch
    (``torch.nn.BatchNorm1d({})``: TypeError). normdrop's InvalidParameterError for a
    value of the wrong type is also a TypeError (and still a ValueError)."""
    with pytest.raises(TypeError):
        make()
    with pytest.raises(InvalidParameterError):
        make()
    with pytest.raises(TypeError):
        torch.nn.BatchNorm1d({})


def test_chainer_link_serialize(tmp_path):
    """Chainer links TestSerialize: a link trained on one batch and fine-tuned on another
    (``finetune=True``: normdrop's momentum=None counter) is serialised and loaded into a
    new link: avg_mean, avg_var, beta, gamma and the counter N (num_batches_tracked)
    survive, through state_dict and through a .npz file."""
    rng = np.random.default_rng(210)
    bn = normdrop.BatchNorm1d(3, momentum=None)
    bn(rng.random((4, 3)).astype(np.float32))
    bn(rng.random((4, 3)).astype(np.float32))
    bn.weight += 0.5
    bn.save(tmp_path / "bn")
    loaded = normdrop.BatchNorm1d(3, momentum=None)
    loaded.load_state_dict(bn.state_dict())
    from_file = normdrop.BatchNorm1d(3, momentum=None)
    from_file.load(tmp_path / "bn")
    for other in (loaded, from_file):
        for name in ("weight", "bias", "running_mean", "running_var"):
            np.testing.assert_array_equal(getattr(other, name), getattr(bn, name), err_msg=name)
        assert int(other.num_batches_tracked) == int(bn.num_batches_tracked) == 2


# ------------------------------------------------------------------- Chainer: LayerNormalization


def _chainer_layer_normalization(x, gamma, beta, eps):
    """Chainer test_layer_normalization.py forward_expected (2-D x, float64)."""
    x = np.asarray(x, np.float64)
    mean = np.mean(x, axis=1, keepdims=True)
    var = np.mean(np.square(x - mean), axis=1, keepdims=True)
    return gamma[None] * (x - mean) / np.sqrt(var + eps) + beta[None]


@pytest.mark.parametrize("batchsize", [1, 5])
@pytest.mark.parametrize("size", [10, 20])
def test_chainer_layer_normalization(backend, batchsize, size):
    """Chainer functions TestLayerNormalization (FunctionTestCase): layer_normalization(x,
    gamma, beta, eps) on (batchsize, size) float32 with eps 1e-5 and 1e-1 equals the
    reference (atol 1e-4, rtol 1e-3), and the x/gamma/beta gradients equal central
    differences of the reference in float64 (check_backward)."""
    rng = np.random.default_rng(211)
    for eps in (1e-5, 1e-1):
        x = rng.uniform(-1, 1, (batchsize, size)).astype(np.float32)
        gamma = rng.uniform(-1, 1, size).astype(np.float32)
        beta = rng.uniform(-1, 1, size).astype(np.float32)
        y = F.layer_norm(
            backend.asarray(x), size, vec(backend, gamma), vec(backend, beta), eps, backend=backend
        )
        y = backend.to_numpy(y)
        assert y.dtype == np.float32
        np.testing.assert_allclose(
            y, _chainer_layer_normalization(x, gamma, beta, eps), atol=1e-4, rtol=1e-3
        )
        x64, g64, b64 = (a.astype(np.float64) for a in (x, gamma, beta))
        gy = rng.uniform(-1, 1, x.shape)

        def loss(x64=x64, g64=g64, b64=b64, gy=gy, eps=eps):
            return np.sum(gy * _chainer_layer_normalization(x64, g64, b64, eps))

        want = [central_differences(loss, a) for a in (x64, g64, b64)]
        _, mean, rstd = F.layer_norm_with_stats(
            backend.asarray(x64), size, vec(backend, g64), vec(backend, b64), eps, backend=backend
        )
        got = F.layer_norm_backward(
            backend.asarray(gy),
            backend.asarray(x64),
            size,
            mean,
            rstd,
            vec(backend, g64),
            backend=backend,
        )
        for name, g, w in zip(("x", "gamma", "beta"), got, want, strict=True):
            np.testing.assert_allclose(host(backend, g), w, atol=1e-6, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("batchsize", [1, 5])
@pytest.mark.parametrize("size", [10, 20])
def test_chainer_link_layer_normalization(backend, batchsize, size):
    """Chainer links LayerNormalizationTest: the batched output equals the concatenation of
    the link applied to each sample alone (test_forward), in float32; the output dtype is
    float32; the gradients of x, gamma and beta agree with PyTorch (test_backward checks
    them numerically)."""
    rng = np.random.default_rng(212)
    ln = normdrop.LayerNorm(size, backend=backend.name)
    x = rng.uniform(-1, 1, (batchsize, size)).astype(np.float32)
    gy = rng.uniform(-1, 1, (batchsize, size)).astype(np.float32)
    y = backend.to_numpy(ln(backend.asarray(x)))
    assert y.dtype == np.float32
    rows = [backend.to_numpy(ln(backend.asarray(x[i : i + 1]))) for i in range(batchsize)]
    np.testing.assert_allclose(y, np.concatenate(rows), atol=1e-4, rtol=1e-3)
    ln(backend.asarray(x))
    dx = backend.to_numpy(ln.backward(backend.asarray(gy)))
    tln = torch.nn.LayerNorm(size)
    tx = _t(x).requires_grad_(True)
    tln(tx).backward(_t(gy))
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(host(backend, ln.grads["weight"]), _np(tln.weight.grad),
                               atol=1e-4, rtol=1e-3)  # fmt: skip
    np.testing.assert_allclose(host(backend, ln.grads["bias"]), _np(tln.bias.grad),
                               atol=1e-4, rtol=1e-3)  # fmt: skip


@pytest.mark.parametrize("size", [3, 50])
def test_chainer_link_layer_normalization_initialize(size):
    """Chainer links TestInitialize / TestDefaultInitializer (LayerNormalization): given
    initial gamma and beta are kept after a forward pass; by default gamma is ones and
    beta zeros."""
    rng = np.random.default_rng(213)
    gamma = rng.uniform(-1, 1, size).astype(np.float32)
    beta = rng.uniform(-1, 1, size).astype(np.float32)
    ln = normdrop.LayerNorm(size)
    np.testing.assert_array_equal(ln.weight, np.ones(size))
    np.testing.assert_array_equal(ln.bias, np.zeros(size))
    ln.weight, ln.bias = gamma, beta
    ln(np.zeros((1, size), np.float32))
    np.testing.assert_array_equal(ln.weight, gamma)
    np.testing.assert_array_equal(ln.bias, beta)


def test_chainer_link_layer_normalization_empty_batch(backend):
    """Chainer links TestEmptyBatchInitialize: LayerNormalization on a (0, 3) batch returns
    shape (0, 3) (so does torch.nn.LayerNorm)."""
    x = np.random.default_rng(214).uniform(-1, 1, (0, 3)).astype(np.float32)
    y = normdrop.LayerNorm(3, backend=backend.name)(backend.asarray(x))
    assert tuple(y.shape) == (0, 3) == tuple(torch.nn.LayerNorm(3)(_t(x)).shape)


@pytest.mark.parametrize(("shape", "size"), [((2, 4, 3), 4), ((2, 5, 3, 4), 5)])
def test_chainer_link_layer_normalization_invalid_input(shape, size):
    """Chainer links TestInvalidInput (LayerNormalization): input whose normalised dimension
    is not the last one ((2, 4, 3) for size 4, (2, 5, 3, 4) for size 5) raises: normdrop's
    ShapeError with PyTorch's shape message; torch raises RuntimeError."""
    with pytest.raises(ShapeError, match=rf"expected input with shape \(\.\.\., {size}\)"):
        normdrop.LayerNorm(size)(np.zeros(shape, np.float32))
    with pytest.raises(RuntimeError):
        torch.nn.LayerNorm(size)(torch.zeros(shape))


# ------------------------------------------------------------------------------- Chainer: dropout


@pytest.mark.parametrize(
    ("dtype", "ratio"),
    [(np.float16, 0.1), (np.float32, 0.3), (np.float64, 0.5), (np.float64, 0.0)],
)
def test_chainer_dropout(backend, dtype, ratio):
    """Chainer TestDropout: dropout(x, ratio) on (2, 3) equals x * mask, where the mask holds
    0 or 1 / (1 - ratio) (here: the keep-mask of dropout_mask for the same seed and call);
    ratio 0 returns x; y keeps x's dtype (test_forward). The input gradient is gy * mask
    (test_backward), and the same (seed, call), like the same Dropout function object,
    gives the same output twice (test_immutable)."""
    rng = np.random.default_rng(215)
    x = rng.uniform(-1, 1, (2, 3)).astype(dtype)
    gy = rng.uniform(-1, 1, (2, 3)).astype(dtype)
    xb = backend.asarray(x)
    y = F.dropout(xb, ratio, seed=7, call=3, backend=backend)
    if ratio == 0.0:
        assert y is xb
        return
    keep = backend.to_numpy(F.dropout_mask((2, 3), ratio, seed=7, call=3, backend=backend.name))
    scale = 1 / (1 - ratio)
    want = np.where(keep, x.astype(np.float64) * scale, 0)
    close = {"rtol": 1e-3, "atol": 0} if dtype == np.float16 else {"rtol": 1e-6, "atol": 0}
    got = backend.to_numpy(y)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, **close)
    assert (got[~keep] == 0).all()
    dx = backend.to_numpy(
        F.dropout_backward(backend.asarray(gy), ratio, seed=7, call=3, backend=backend)
    )
    np.testing.assert_allclose(dx, np.where(keep, gy.astype(np.float64) * scale, 0), **close)
    again = backend.to_numpy(F.dropout(backend.asarray(x), ratio, seed=7, call=3, backend=backend))
    np.testing.assert_array_equal(again, got)


@pytest.mark.parametrize("train", [True, False])
def test_chainer_dropout_mask(train):
    """Chainer TestDropoutMask: dropout(x, 0.5, return_mask=True) returns the mask it used
    in training (None in test mode), and dropout with that mask gives the same output.
    normdrop has no mask= argument: the mask of (seed, call) is dropout_mask's, and the
    Dropout layer's output is x times it and 2; in evaluation the output is x itself."""
    x = np.random.default_rng(216).uniform(-1, 1, (2, 3)).astype(np.float32)
    layer = normdrop.Dropout(0.5, seed=11).train(train)
    y = layer(x)
    if not train:
        assert y is x
        return
    keep = F.dropout_mask(x.shape, 0.5, seed=11, call=0)
    assert keep.shape == x.shape and keep.dtype == np.bool_
    np.testing.assert_array_equal(y, np.where(keep, x * np.float32(2), np.float32(0)))


# ============================================================================== PaddlePaddle
# PaddlePaddle/Paddle test/legacy_test/test_batch_norm_op_v2.py, test_layer_norm_op.py and
# test_dropout_op.py (python/paddle/fluid/tests/unittests/ in older releases).


@pytest.mark.parametrize("shape", [(2, 1, 3, 3), (2, 1, 3, 3, 1)])
def test_paddle_batch_norm_1d_error(shape):
    """Paddle TestBatchNorm.test_error (error1d): BatchNorm1D(1) on 4-D input raises
    ValueError; so do normdrop (ShapeError) and torch.nn.BatchNorm1d, and the layer's
    state is untouched. (The data_format errors have no equivalent: normdrop takes
    PyTorch's channels-first layout only.)"""
    bn = normdrop.BatchNorm1d(1)
    with pytest.raises(ValueError, match=r"expected 2D \(N, C\) or 3D \(N, C, L\) input"):
        bn(np.random.default_rng(217).random(shape).astype(np.float32))
    assert int(bn.num_batches_tracked) == 0
    with pytest.raises(ValueError):
        torch.nn.BatchNorm1d(1)(torch.rand(shape))


@pytest.mark.parametrize("shape", [(2000, 4), (500, 4, 4)])
def test_paddle_batch_norm_large_batch(backend, shape):
    """Paddle TestBatchNorm.test_large_batch (here 2000 x 4 and 500 x 4 x 4 rather than
    200000 x 4 and 1000000 x 4 x 4): BatchNorm1D on [N, C] and [N, C, L] gives the output
    and input gradient (of y.sum()) of the generic batch norm (torch's) within 1e-5."""
    _fast(backend)
    rng = np.random.default_rng(218)
    x = rng.standard_normal(shape).astype(np.float32)
    bn = normdrop.BatchNorm1d(shape[1], backend=backend.name)
    y = backend.to_numpy(bn(backend.asarray(x)))
    g = backend.to_numpy(bn.backward(backend.asarray(np.ones_like(x))))
    tx = _t(x).requires_grad_(True)
    ty = torch.nn.BatchNorm1d(shape[1])(tx)
    ty.sum().backward()
    np.testing.assert_allclose(y, _np(ty), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_paddle_batch_norm_dygraph_untrainable_affine_equals_no_affine(backend):
    """Paddle TestBatchNorm.test_dygraph (compute_v3, v3_1, v3_2, v3_3, v4): weight fixed at
    1 and bias at 0, no weight (param_attr=False) with bias 0, weight 1 with no bias, and
    neither all give the outputs and input gradients (of y.sum()) of a batch norm without
    affine parameters, within 1e-5. Functional batch_norm with those weight/bias pairs
    against BatchNorm1d(affine=False) on (4, 10, 4)."""
    rng = np.random.default_rng(219)
    x = rng.standard_normal((4, 10, 4)).astype(np.float32)
    ones, zeros = np.ones(10, np.float32), np.zeros(10, np.float32)
    bn = normdrop.BatchNorm1d(10, affine=False, backend=backend.name)
    y4 = backend.to_numpy(bn(backend.asarray(x)))
    g4 = backend.to_numpy(bn.backward(backend.asarray(np.ones_like(x))))
    for w, b in ((ones, zeros), (None, None), (None, zeros), (ones, None)):
        xb = backend.asarray(x)
        y, mean, rstd = F.batch_norm_with_stats(
            xb, weight=vec(backend, w), bias=vec(backend, b), training=True, backend=backend
        )
        g, _, _ = F.batch_norm_backward(
            backend.asarray(np.ones_like(x)), xb, mean, rstd, vec(backend, w), backend=backend
        )
        np.testing.assert_allclose(backend.to_numpy(y), y4, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(backend.to_numpy(g), g4, rtol=1e-5, atol=1e-6)


def test_paddle_batch_norm_channel_last_1d(backend):
    """Paddle TestBatchNormChannelLast.test_1d: BatchNorm1D(4, data_format='NLC') on x of
    shape [2, 6, 4] (float64) equals BatchNorm1D(4) on x transposed to NCL, transposed
    back. normdrop has no data_format: the NLC data goes in as the transposed view
    x.transpose(0, 2, 1) (not contiguous), and must give what the contiguous copy gives,
    in training and in evaluation."""
    rng = np.random.default_rng(220)
    x = rng.standard_normal((2, 6, 4))
    net1 = normdrop.BatchNorm1d(4, dtype=np.float64, backend=backend.name)
    net2 = normdrop.BatchNorm1d(4, dtype=np.float64, backend=backend.name)
    if backend.name in ("numpy", "numba"):
        view = x.transpose(0, 2, 1)
    else:
        view = backend.asarray(x).transpose(0, 2, 1)
    for training in (True, False):
        net1.train(training)
        net2.train(training)
        y1 = backend.to_numpy(net1(view)).transpose(0, 2, 1)
        y2 = backend.to_numpy(net2(backend.asarray(np.ascontiguousarray(x.transpose(0, 2, 1)))))
        np.testing.assert_allclose(y1, y2.transpose(0, 2, 1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(backend, net1.running_var), host(backend, net2.running_var))


def test_paddle_batch_norm_1d_opt(backend):
    """Paddle TestBatchNormChannelLast.test_1d_opt: BatchNorm1D(C) on (N, C) and BatchNorm2D(C)
    on the same data reshaped to (N, C, 1, 1) give the same output and weight gradient
    (of y.sum()). Here BatchNorm1d on (N, C), on (N, C, 1) and functional batch_norm on
    (N, C, 1, 1), with N = 137 (Paddle: 13700) and C = 16."""
    _fast(backend)
    rng = np.random.default_rng(221)
    x = rng.standard_normal((137, 16)).astype(np.float32)
    ys, gws = [], []
    for shape in ((137, 16), (137, 16, 1)):
        bn = normdrop.BatchNorm1d(16, backend=backend.name)
        ys.append(backend.to_numpy(bn(backend.asarray(x.reshape(shape)))).reshape(-1))
        bn.backward(backend.asarray(np.ones(shape, np.float32)))
        gws.append(host(backend, bn.grads["weight"]))
    x4 = backend.asarray(x.reshape(137, 16, 1, 1))
    w = vec(backend, np.ones(16, np.float32))
    y, mean, rstd = F.batch_norm_with_stats(x4, weight=w, bias=vec(backend, np.zeros(16)),
                                            training=True, backend=backend)  # fmt: skip
    _, gw, _ = F.batch_norm_backward(backend.asarray(np.ones((137, 16, 1, 1), np.float32)),
                                     x4, mean, rstd, w, backend=backend)  # fmt: skip
    ys.append(backend.to_numpy(y).reshape(-1))
    gws.append(host(backend, gw))
    for y_i, gw_i in zip(ys[1:], gws[1:], strict=True):
        np.testing.assert_allclose(y_i, ys[0], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(gw_i, gws[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("use_global_stats", "trainable_statistics"),
    [(True, False), (False, True), (False, False), (True, True)],
    ids=["global_stats_train", "trainable_stats_test", "default_train", "global_stats_test"],
)
def test_paddle_batch_norm_use_global_stats(backend, use_global_stats, trainable_statistics):
    """Paddle TestBatchNormUseGlobalStats (and Case1-3): use_global_stats=True normalises
    with the running statistics even in training and updates nothing; that is evaluation
    with running statistics (the layer in eval(), or functional batch_norm with
    training=False). trainable_statistics=True in test mode uses batch statistics: the
    functional batch_norm with training=True, or a layer without running statistics.
    Paddle compares BatchNorm with BatchNorm2D; here each Paddle mode's normdrop equivalent
    is compared with the formula, and in PyTorch's terms (Paddle's momentum 0.9 is
    PyTorch's 0.1) the running statistics after a training call."""
    rng = np.random.default_rng(222)
    x = rng.standard_normal((2, 6, 4)).astype(np.float32)
    rm = rng.uniform(-1, 1, 6).astype(np.float32)
    rv = rng.uniform(0.5, 2, 6).astype(np.float32)
    x64 = x.astype(np.float64)
    bn = normdrop.BatchNorm1d(6, momentum=0.1, backend=backend.name)  # Paddle momentum 0.9
    bn.running_mean, bn.running_var = vec(backend, rm), vec(backend, rv)
    uses_running = use_global_stats
    if use_global_stats:
        bn.eval()
    elif trainable_statistics:
        bn = normdrop.BatchNorm1d(6, track_running_stats=False, backend=backend.name).eval()
    y = backend.to_numpy(bn(backend.asarray(x)))
    if uses_running:
        want = (x64 - rm[None, :, None]) / np.sqrt(rv.astype(np.float64)[None, :, None] + 1e-5)
    else:
        mean, var = x64.mean((0, 2), keepdims=True), x64.var((0, 2), keepdims=True)
        want = (x64 - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    fy = F.batch_norm(backend.asarray(x), vec(backend, rm), vec(backend, rv),
                      training=not uses_running, backend=backend)  # fmt: skip
    np.testing.assert_allclose(backend.to_numpy(fy), want, rtol=1e-5, atol=1e-5)
    if bn.running_mean is not None:
        if uses_running:
            np.testing.assert_array_equal(host(backend, bn.running_mean), rm)
            np.testing.assert_array_equal(host(backend, bn.running_var), rv)
            assert int(bn.num_batches_tracked) == 0
        else:
            paddle_momentum = 0.9
            want_rm = paddle_momentum * rm + (1 - paddle_momentum) * x64.mean((0, 2))
            want_rv = paddle_momentum * rv + (1 - paddle_momentum) * x64.var((0, 2), ddof=1)
            np.testing.assert_allclose(host(backend, bn.running_mean), want_rm, rtol=1e-5)
            np.testing.assert_allclose(host(backend, bn.running_var), want_rv, rtol=1e-5)
            assert int(bn.num_batches_tracked) == 1


# ----------------------------------------------------------------------------- Paddle: layer_norm


def _paddle_layer_norm_naive(x, scale, beta, epsilon, begin_norm_axis):
    """Paddle's _reference_layer_norm_naive (float64): returns y, mean and var + epsilon."""
    shape = x.shape
    n = int(np.prod(shape[:begin_norm_axis]))
    d = int(np.prod(shape[begin_norm_axis:]))
    x2 = np.asarray(x, np.float64).reshape(n, d)
    mean = x2.mean(1)
    var = x2.var(1) + epsilon
    out = (x2 - mean[:, None]) / np.sqrt(var)[:, None]
    if scale is not None:
        out = scale.reshape(1, d) * out
    if beta is not None:
        out = out + beta.reshape(1, d)
    return out.reshape(shape), mean, var


def _paddle_layer_norm_grad(x, grad_y, scale, bias, mean, var, begin_norm_axis):
    """Paddle's _reference_layer_norm_grad (float64; ``var`` includes epsilon)."""
    shape = x.shape
    n = int(np.prod(shape[:begin_norm_axis]))
    d = int(np.prod(shape[begin_norm_axis:]))
    x = np.asarray(x, np.float64).reshape(n, d)
    grad_y = np.asarray(grad_y, np.float64).reshape(n, d)
    var, mean = var.reshape(n, 1), mean.reshape(n, 1)
    s = 1.0 if scale is None else scale.reshape(1, d)
    d_bias = None if bias is None else grad_y.sum(0)
    d_scale = None if scale is None else (((x - mean) * np.sqrt(1 / var)) * grad_y).sum(0)
    dx_end = s * np.sqrt(1.0 / var) * grad_y
    d_mean = 1.0 / d * np.sum(-np.sqrt(1.0 / var) * grad_y * s, axis=1).reshape(n, 1)
    d_std = np.sum(-(1.0 / var) * (x - mean) * grad_y * s, axis=1).reshape(n, 1) * (
        1.0 / d * np.sqrt(1.0 / var) * (x - mean)
    )
    return (dx_end + d_mean + d_std).reshape(shape), d_scale, d_bias


# (dtype, x_shape, begin_norm_axis, has_scale, has_bias): TestLayerNormOpByOpTest and its
# FP64_case2-4 and FP32, FP32_case1-4 subclasses, then TestLayerNormOp's
# check_forward_backward shapes that fit a unit test (float32).
_PADDLE_LN_CASES = [
    (np.float64, (2, 6, 6, 3), 1, True, True),
    (np.float64, (2, 6, 6, 3), 1, False, False),
    (np.float64, (2, 6, 6, 3), 1, True, False),
    (np.float64, (2, 6, 6, 3), 1, False, True),
    (np.float32, (2, 6, 6, 3), 1, True, True),
    (np.float32, (2, 3), 1, True, True),
    (np.float32, (2, 6, 6, 3), 1, False, False),
    (np.float32, (2, 6, 6, 3), 1, True, False),
    (np.float32, (2, 6, 6, 3), 1, False, True),
    (np.float32, (2, 3, 4, 5), 1, True, True),
    (np.float32, (1, 3, 4, 5), 1, True, True),
    (np.float32, (2, 3, 4, 5), 3, True, True),
    (np.float32, (3, 2, 1133), 2, True, True),
]


@pytest.mark.parametrize(("dtype", "shape", "axis", "has_scale", "has_bias"), _PADDLE_LN_CASES)
def test_paddle_layer_norm(backend, dtype, shape, axis, has_scale, has_bias):
    """Paddle TestLayerNormOpByOpTest (+ FP64/FP32 cases) and TestLayerNormOp.
    test_check_forward_backward_with_scale_and_bias: layer_norm over the dims from
    begin_norm_axis on (here normalized_shape = x.shape[axis:]), with or without scale and
    bias (weight/bias None), equals Paddle's naive reference (rtol 1e-3, atol 1e-4); the
    saved per-row mean equals Paddle's Mean and 1/rstd**2 its Variance (var + epsilon);
    the x, scale and bias gradients equal Paddle's reference gradient formula."""
    if backend.name == "cuda" and int(np.prod(shape)) > 216:
        pytest.skip("too many elements for the CUDA simulator")
    rng = np.random.default_rng(223)
    eps = 1e-5
    normalized = shape[axis:]
    x = rng.random(shape).astype(dtype)
    scale = rng.random(normalized).astype(dtype) if has_scale else None
    bias = rng.random(normalized).astype(dtype) if has_bias else None
    grad_y = rng.random(shape).astype(dtype)
    flat = lambda a: None if a is None else a.astype(np.float64).reshape(-1)  # noqa: E731
    want_y, want_mean, want_var = _paddle_layer_norm_naive(x, flat(scale), flat(bias), eps, axis)
    want_dx, want_ds, want_db = _paddle_layer_norm_grad(
        x, grad_y, flat(scale), flat(bias), want_mean, want_var, axis
    )
    xb = backend.asarray(x)
    y, mean, rstd = F.layer_norm_with_stats(
        xb, normalized, _dev(backend, scale), _dev(backend, bias), eps, backend=backend
    )
    y = backend.to_numpy(y)
    assert y.dtype == dtype
    close = {"rtol": 1e-3, "atol": 1e-4}
    np.testing.assert_allclose(y, want_y, **close)
    np.testing.assert_allclose(host(backend, mean).reshape(-1), want_mean, **close)
    np.testing.assert_allclose(1 / host(backend, rstd).reshape(-1) ** 2, want_var, rtol=1e-3,
                               atol=1e-3)  # fmt: skip
    dx, ds, db = F.layer_norm_backward(
        backend.asarray(grad_y), xb, normalized, mean, rstd, _dev(backend, scale), backend=backend
    )
    np.testing.assert_allclose(backend.to_numpy(dx), want_dx, **close)
    if has_scale:
        np.testing.assert_allclose(host(backend, ds).reshape(-1), want_ds, rtol=1e-3, atol=1e-3)
        want_db = grad_y.astype(np.float64).reshape(-1, ds.size).sum(0)  # Paddle's d_bias
        np.testing.assert_allclose(host(backend, db).reshape(-1), want_db, **close)
    else:
        assert ds is None and db is None


def test_paddle_layer_norm_module_bias_only_and_scale_only(backend):
    """Paddle TestLayerNormOpByOpTestFP32_case3/case4 through the module: LayerNorm(bias=False)
    has a scale and no bias, and its output and gradients equal the reference with
    has_scale=True, has_bias=False. (A bias without scale, case4, exists only in the
    functional form: weight=None, bias=b, checked above.)"""
    rng = np.random.default_rng(224)
    x = rng.random((2, 6, 3)).astype(np.float32)
    gy = rng.random((2, 6, 3)).astype(np.float32)
    ln = normdrop.LayerNorm((6, 3), bias=False, backend=backend.name)
    scale = rng.random((6, 3)).astype(np.float32)
    ln.weight = vec(backend, scale)
    assert ln.bias is None
    y = backend.to_numpy(ln(backend.asarray(x)))
    want_y, mean, var = _paddle_layer_norm_naive(x, scale.reshape(-1).astype(np.float64), None,
                                                 1e-5, 1)  # fmt: skip
    np.testing.assert_allclose(y, want_y, rtol=1e-3, atol=1e-4)
    dx = backend.to_numpy(ln.backward(backend.asarray(gy)))
    want_dx, want_ds, _ = _paddle_layer_norm_grad(x, gy, scale.reshape(-1).astype(np.float64),
                                                  None, mean, var, 1)  # fmt: skip
    np.testing.assert_allclose(dx, want_dx, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(host(backend, ln.grads["weight"]).reshape(-1), want_ds,
                               rtol=1e-3, atol=1e-3)  # fmt: skip
    assert set(ln.grads) == {"weight"}


def test_paddle_layer_norm_api_error():
    """Paddle TestDygraphLayerNormAPIError: LayerNorm([32, 32]) on int32 input raises
    TypeError (normdrop: DTypeError, a TypeError; PyTorch: RuntimeError)."""
    ln = normdrop.LayerNorm([32, 32])
    with pytest.raises(TypeError, match="int32"):
        ln(np.zeros((3, 32, 32), np.int32))


def test_paddle_fp16_scale_bias_layer_norm(backend):
    """Paddle TestFP16ScaleBiasLayerNorm: layer_norm of float16 x (10, 20) with float16
    weight and bias gives exactly (assert_array_equal) the output and gradients it gives
    with the same weight and bias in float32 (scale and bias are kept in float32); as in
    Paddle's check, the weight gradients are compared rounded to float16."""
    rng = np.random.default_rng(225)
    x = rng.random((10, 20)).astype(np.float16)
    w16 = rng.random(20).astype(np.float16)
    b16 = rng.random(20).astype(np.float16)
    gy = np.ones((10, 20), np.float16)
    results = []
    for w, b in ((w16, b16), (w16.astype(np.float32), b16.astype(np.float32))):
        xb = backend.asarray(x)
        y, mean, rstd = F.layer_norm_with_stats(
            xb, 20, vec(backend, w), vec(backend, b), backend=backend
        )
        dx, dw, db = F.layer_norm_backward(backend.asarray(gy), xb, 20, mean, rstd,
                                           vec(backend, w), backend=backend)  # fmt: skip
        results.append(
            [
                backend.to_numpy(y),
                backend.to_numpy(dx),
                host(backend, dw).astype(np.float16),
                host(backend, db).astype(np.float32),
            ]  # fmt: skip
        )
    assert results[0][0].dtype == np.float16
    for name, a, b in zip(("y", "x_grad", "w_grad", "b_grad"), *results, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


# ------------------------------------------------------------------------------- Paddle: dropout


@pytest.mark.parametrize("shape", [(32, 64), (), (2000,), (32, 64, 2)])
def test_paddle_dropout_op_p0(backend, shape):
    """Paddle TestDropoutOp, TestDropoutOp_ZeroDim, TestDropoutOpInput1d, TestDropoutOp3,
    TestDropoutOp7 (upscale_in_train): dropout_prob 0 in training gives Out = X and an
    all-ones mask, and the input gradient is the output gradient. In normdrop (PyTorch)
    p = 0 returns the input object itself, the Dropout layer too, with 0-d input included."""
    if backend.name == "cuda" and int(np.prod(shape)) > 64:
        shape = (4, 8)
    rng = np.random.default_rng(226)
    x = backend.asarray(rng.random(shape).astype(np.float32))
    assert F.dropout(x, 0.0, training=True, seed=1, backend=backend) is x
    layer = normdrop.Dropout(0.0, seed=1, backend=backend.name)
    assert layer(x) is x
    keep = backend.to_numpy(F.dropout_mask(shape, 0.0, seed=1, backend=backend.name))
    assert keep.shape == shape and keep.all()
    g = backend.asarray(rng.random(shape).astype(np.float32))
    np.testing.assert_array_equal(backend.to_numpy(layer.backward(g)), backend.to_numpy(g))


@pytest.mark.parametrize("p", [0.5, 0.9])
def test_paddle_dropout_zero_dim_in_training(backend, reference, p):
    """Paddle TestDropoutOp_ZeroDim / TestDropoutOp2_ZeroDim: dropout of a 0-d input gives a
    0-d output (and mask). Here with a probability that draws a mask: on every backend the
    output (layer and functional, forward and backward) has shape () and equals the numpy
    reference's, which is 0 or x / (1 - p). (The dask backend returned shape (1,).)"""
    x = np.array(2.0, np.float32)
    want = reference.to_numpy(F.dropout(reference.asarray(x), p, seed=4, call=1, backend=reference))
    assert want.shape == () and float(want) in (0.0, np.float32(2.0) / np.float32(1 - p))
    y = F.dropout(backend.asarray(x), p, seed=4, call=1, backend=backend)
    assert tuple(y.shape) == ()
    np.testing.assert_array_equal(backend.to_numpy(y), want)
    layer = normdrop.Dropout(p, seed=4, backend=backend.name)
    layer(backend.asarray(x))  # call 0
    y = layer(backend.asarray(x))  # call 1
    assert tuple(y.shape) == () and backend.to_numpy(y).shape == ()
    np.testing.assert_array_equal(backend.to_numpy(y), want)
    g = backend.to_numpy(layer.backward(backend.asarray(np.array(1.0, np.float32))))
    assert g.shape == ()
    np.testing.assert_array_equal(g, want / np.float32(2.0))


@pytest.mark.parametrize("shape", [(32, 64), ()])
def test_paddle_dropout_op_p1_is_refused_in_training(shape):
    """Paddle TestDropoutOp2, TestDropoutOp2_ZeroDim, TestDropoutOp6, TestBF16DropoutOp and
    TestDropoutFAPI res10: dropout_prob 1 in training gives zeros. normdrop rejects p = 1
    for the layer and for training calls (docs/differences.md, following Deepbox's API);
    the rejection changes nothing, and with training=False p = 1 is accepted and returns
    the input, as PyTorch's does."""
    x = np.random.default_rng(227).random(shape).astype(np.float32)
    with pytest.raises(InvalidParameterError, match=r"Dropout probability must be in \[0, 1\)"):
        F.dropout(x, 1.0, training=True)
    with pytest.raises(InvalidParameterError, match=r"got 1\.0"):
        normdrop.Dropout(1.0)
    assert F.dropout(x, 1.0, training=False) is x
    np.testing.assert_array_equal(_np(torch.nn.functional.dropout(_t(x), 1.0)), 0)


@pytest.mark.parametrize(("shape", "prob"), [((32, 64), 0.35), ((32, 64, 3), 0.75)])
def test_paddle_dropout_op_inference_modes(backend, shape, prob):
    """Paddle TestDropoutOp4/5 (downscale_in_infer, is_test: Out = X * (1 - p)) and
    TestDropoutOp8/9 (upscale_in_train, is_test: Out = X). normdrop follows PyTorch's
    upscale_in_train: evaluation returns X itself, and training scales the kept values
    by 1 / (1 - p), so that training output times (1 - p) is downscale_in_infer's
    training output X * mask."""
    if backend.name == "cuda":
        shape = (4, 8)
    rng = np.random.default_rng(228)
    x = rng.random(shape).astype(np.float32)
    xb = backend.asarray(x)
    assert F.dropout(xb, prob, training=False, backend=backend) is xb
    layer = normdrop.Dropout(prob, seed=5, backend=backend.name).eval()
    assert layer(xb) is xb
    y = backend.to_numpy(F.dropout(xb, prob, training=True, seed=5, call=2, backend=backend))
    keep = backend.to_numpy(F.dropout_mask(shape, prob, seed=5, call=2, backend=backend.name))
    np.testing.assert_allclose(y * np.float32(1 - prob), x * keep, rtol=1e-6, atol=1e-7)


def test_paddle_dropout_f_api_p0_everywhere():
    """Paddle TestDropoutFAPI.test_dygraph (res1-res9, res11, res12) and TestDropoutCAPI:
    with p = 0, dropout returns the input unchanged in training and in evaluation, from
    the functional form and from Dropout(p=0) (also in eval()). (Paddle's axis= and mode=
    have no normdrop equivalent.)"""
    x = np.random.default_rng(229).random((40, 40)).astype(np.float32)
    for training in (True, False):
        assert F.dropout(x, 0.0, training=training) is x
        layer = normdrop.Dropout(0.0).train(training)
        assert layer(x) is x
    assert F.dropout(x, 0) is x


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda x: F.dropout(x, "0.5"), TypeError),
        (lambda x: normdrop.Dropout("0.5"), TypeError),
        (lambda x: F.dropout(x, 1.2), ValueError),
        (lambda x: normdrop.Dropout(1.2), ValueError),
        (lambda x: F.dropout(x.astype(np.int32), 0.5), TypeError),
    ],
    ids=["p_str", "layer_p_str", "p_1.2", "layer_p_1.2", "int32_input"],
)
def test_paddle_dropout_f_api_errors(call, error):
    """Paddle TestDropoutFAPIError / TestDropoutOpError: p='0.5' raises TypeError (so does
    PyTorch: '<' between str and float), p=1.2 ValueError, int32 input TypeError; each is
    also a normdrop error naming the problem."""
    x = np.random.default_rng(230).random((3, 4, 5, 6)).astype(np.float32)
    with pytest.raises(error) as info:
        call(x)
    assert isinstance(info.value, normdrop.NormdropError)


# =================================================================================== Haiku
# google-deepmind/dm-haiku haiku/_src/batch_norm_test.py and layer_norm_test.py. Haiku's
# BatchNorm takes channels last and normalises over every other axis; its decay_rate is
# the weight of the old average (PyTorch's momentum = 1 - decay_rate), its averages are
# zero-debiased (after one step they equal the batch's statistics: PyTorch's
# momentum=None) and its variance average is the biased variance (PyTorch's, and
# normdrop's, running_var is the unbiased one). cross_replica_axis (pmap) and the
# *_init arguments have no equivalent.


def test_haiku_batch_norm_basic(backend):
    """Haiku BatchNormTest.test_basic: data arange(24).reshape(2, 3, 4), channels last; in
    training every channel's result equals channel 0's (the data has the same spread in
    each channel). Haiku then checks that test mode gives the same result (rtol 2e-2),
    which holds for its biased, zero-debiased variance average; with PyTorch's unbiased
    running_var (momentum=None: the batch's statistics after one step) the test-mode
    result is the training one times sqrt((var + eps) / (var * n / (n - 1) + eps))."""
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    x = backend.asarray(data).transpose(0, 2, 1)  # (N, C, L) view of channels-last data
    bn = normdrop.BatchNorm1d(4, momentum=None, backend=backend.name)
    result = np.moveaxis(backend.to_numpy(bn(x)), 1, 2)
    np.testing.assert_allclose(result, np.broadcast_to(result[:, :, :1], result.shape), atol=1e-6)
    var, n = data[..., 0].var(), 6
    factor = np.sqrt((var + 1e-5) / (var * n / (n - 1) + 1e-5))
    test_result = np.moveaxis(backend.to_numpy(bn.eval()(x)), 1, 2)
    np.testing.assert_allclose(test_result, result * factor, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_haiku_batch_norm_simple_training(backend, layout):
    """Haiku BatchNormTest.test_simple_training (NHWC) and test_simple_training_nchw: ones of
    shape [2, 3, 3, 5] (or [2, 5, 3, 3]) with scale 0.5 and offset 2.0 give exactly 2.0
    (assert_equal): a constant channel gives exactly the bias (SPEC). NHWC goes in as the
    channels-first view of the same data (not copied on CPU backends)."""
    scale, offset = np.full(5, 0.5), np.full(5, 2.0)
    if layout == "NHWC":
        data = np.moveaxis(np.ones((2, 3, 3, 5)), 3, 1)
        if backend.device != "cpu":
            data = np.ascontiguousarray(data)
    else:
        data = np.ones((2, 5, 3, 3))
    y = F.batch_norm(backend.asarray(data), weight=vec(backend, scale),
                     bias=vec(backend, offset), training=True, backend=backend)  # fmt: skip
    np.testing.assert_array_equal(backend.to_numpy(y), np.full(data.shape, 2.0))
    bn = normdrop.BatchNorm1d(5, dtype=np.float64, backend=backend.name)
    bn.weight, bn.bias = vec(backend, scale), vec(backend, offset)
    y = bn(backend.asarray(np.ones((2, 5, 9))))
    np.testing.assert_array_equal(backend.to_numpy(y), 2.0)


def test_haiku_batch_norm_normalized_axes_and_no_scale_and_offset(backend):
    """Haiku BatchNormTest.test_simple_training_normalized_axes (axis=[0, 2, 3]: 2.0 in one
    channel, 1.0 in the other, gives exactly zeros) and test_no_scale_and_offset (ones of
    [2, 5, 3, 3, 3] give exactly zeros), without affine parameters."""
    inputs = np.stack([2.0 * np.ones([5, 3, 3]), np.ones([5, 3, 3])], 1)
    y = F.batch_norm(backend.asarray(inputs), training=True, backend=backend)
    np.testing.assert_array_equal(backend.to_numpy(y), np.zeros(inputs.shape))
    ones = np.ones([2, 5, 3, 3, 3], np.float32)
    y = F.batch_norm(backend.asarray(ones), training=True, backend=backend)
    np.testing.assert_array_equal(backend.to_numpy(y), np.zeros_like(ones))
    bn = normdrop.BatchNorm1d(5, affine=False, backend=backend.name)
    np.testing.assert_array_equal(backend.to_numpy(bn(backend.asarray(ones.reshape(2, 5, 27)))), 0)


def test_haiku_batch_norm_no_type_promotion_and_eps_cast(backend):
    """Haiku BatchNormTest.test_no_type_promotion and test_eps_cast_to_var_dtype: a layer
    trained on float32 (100, 5) data returns float32, and in evaluation returns the half
    type for half input (Haiku: bfloat16; normdrop's half type is float16, computed in
    float32) with a Python float eps (0.1)."""
    _fast(backend)
    rng = np.random.default_rng(232)
    x = rng.normal(size=(100, 5)).astype(np.float32)
    bn = normdrop.BatchNorm1d(5, eps=0.1, momentum=0.01, backend=backend.name)
    assert bn(backend.asarray(x)).dtype == np.float32
    bn.eval()
    y = bn(backend.asarray(x.astype(np.float16)))
    assert y.dtype == np.float16
    tbn = torch.nn.BatchNorm1d(5, eps=0.1, momentum=0.01)
    tbn(_t(x))
    want = _np(tbn.eval()(_t(x.astype(np.float16).astype(np.float32))))
    np.testing.assert_allclose(backend.to_numpy(y).astype(np.float32), want, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("axis", [1, 2, 3])
def test_haiku_layer_norm_connection(backend, axis):
    """Haiku LayerNormTest.test_connection: LayerNorm with create_scale and create_offset
    over the trailing axes from ``axis`` (and slice(axis, None)) of zeros [2, 3, 4, 5]
    runs and gives zeros of the input's shape. (Haiku's axis=0 alone and slice(1, -1)
    are not trailing dimensions: PyTorch's normalized_shape cannot express them.)"""
    data = np.zeros([2, 3, 4, 5], np.float32)
    ln = normdrop.LayerNorm(data.shape[axis:], backend=backend.name)
    y = backend.to_numpy(ln(backend.asarray(data)))
    assert y.shape == data.shape
    np.testing.assert_array_equal(y, 0)


@pytest.mark.parametrize(("create_scale", "create_offset"), [(True, False), (False, True)])
def test_haiku_layer_norm_half_in_half_out(backend, create_scale, create_offset):
    """Haiku LayerNormTest.test_bf16 (itertools.permutations([True, False], 2)): half
    input gives half output for each configuration. normdrop: float16 (its half type)
    with elementwise_affine/bias as the closest equivalent (create_offset without scale:
    functional layer_norm with only a bias)."""
    data = backend.asarray(np.zeros([2, 3, 4, 5], np.float16))
    if create_scale:
        y = normdrop.LayerNorm(5, bias=create_offset, backend=backend.name)(data)
    else:
        y = F.layer_norm(data, 5, None, vec(backend, np.zeros(5, np.float32)), backend=backend)
    assert y.dtype == np.float16


@pytest.mark.parametrize("affine", [False, True])
def test_haiku_layer_norm_simple_case(backend, affine):
    """Haiku LayerNormTest.test_simple_case (no scale/offset: every output exactly 0.0) and
    test_simple_case_var / test_simple_case_tensor (scale 0.5, offset 2.0: exactly 2.0),
    LayerNorm over axes [1, 2] of ones [2, 3, 3, 5]: here those axes moved last."""
    data = np.moveaxis(np.ones([2, 3, 3, 5]), 3, 1)
    if backend.device != "cpu":
        data = np.ascontiguousarray(data)
    ln = normdrop.LayerNorm((3, 3), elementwise_affine=affine, dtype=np.float64,
                            backend=backend.name)  # fmt: skip
    if affine:
        ln.weight = vec(backend, np.full((3, 3), 0.5))
        ln.bias = vec(backend, np.full((3, 3), 2.0))
    y = backend.to_numpy(ln(backend.asarray(data)))
    np.testing.assert_array_equal(y, 2.0 if affine else 0.0)


@pytest.mark.parametrize("axis", ["foo", ["foo"]], ids=["String", "ListString"])
def test_haiku_layer_norm_invalid_axis(axis):
    """Haiku LayerNormTest.test_invalid_axis: a string, or a list of strings, as the axis
    (here normalized_shape) raises ValueError. normdrop raises InvalidParameterTypeError,
    which is a ValueError (and a TypeError, as PyTorch's LayerNorm('foo') raises)."""
    with pytest.raises(ValueError, match="normalized_shape must be"):
        normdrop.LayerNorm(axis)


# ================================================================================ PyTensor
# pymc-devs/pytensor tests/tensor/nnet/test_batchnorm.py (Theano's batchnorm tests).


@pytest.mark.parametrize("mode", ["spatial", "per-activation"])
@pytest.mark.parametrize(
    "data_shape", [(4, 3, 1), (2, 3, 5), (4, 3, 1, 1, 1), (2, 3, 5, 5, 5)], ids=str
)
def test_pytensor_batch_normalization_train(backend, mode, data_shape):
    """PyTensor test_batch_normalization_train (tensor3 and tensor5 data; data shapes
    (4, 3, 1, 1, 1) and (2, 3, 5, 5, 5) and their first three dims): with eps 5e-3 and
    running_average_factor 0.3 (PyTorch's momentum 0.3), the output, the saved mean and
    inverse std, the running mean and the running variance (updated with m / (m - 1))
    equal the reference, and so do the x, scale and bias gradients (reference: autograd of
    the reference formula). 'spatial' normalises over all axes but the channel;
    'per-activation' over the batch only, which is batch norm of the data flattened to
    (N, C * L). (Second-order gradients have no normdrop equivalent.)"""
    if backend.name == "cuda" and int(np.prod(data_shape)) > 30:
        pytest.skip("too many elements for the CUDA simulator")
    rng = np.random.default_rng(1234)
    data = 4 + 3 * rng.random(data_shape)
    dy = -1 + 2 * rng.random(data_shape)
    shape = data_shape if mode == "spatial" else (data_shape[0], int(np.prod(data_shape[1:])))
    x, dy = data.reshape(shape), dy.reshape(shape)
    c = shape[1]
    scale, bias = rng.random(c), rng.random(c)
    running_mean, running_var = rng.random(c), rng.random(c)
    eps, factor = 5e-3, 0.3
    axes = (0,) + tuple(range(2, x.ndim))
    expand = (None, slice(None)) + (None,) * (x.ndim - 2)
    tx = torch.tensor(x, requires_grad=True)
    ts, tb = torch.tensor(scale, requires_grad=True), torch.tensor(bias, requires_grad=True)
    t_mean = tx.mean(axes, keepdim=True)
    t_var = tx.var(axes, unbiased=False, keepdim=True)
    t_out = (tx - t_mean) * (ts[expand] / torch.sqrt(t_var + eps)) + tb[expand]
    t_out.backward(torch.tensor(dy))
    m = x.size / c
    want_rm = running_mean * (1 - factor) + x.mean(axes) * factor
    want_rv = running_var * (1 - factor) + m / (m - 1) * x.var(axes) * factor
    rm, rv = vec(backend, running_mean), vec(backend, running_var)
    xb = backend.asarray(x)
    out, mean, rstd = F.batch_norm_with_stats(
        xb, rm, rv, vec(backend, scale), vec(backend, bias), True, factor, eps, backend=backend
    )
    close = {"rtol": 1e-9, "atol": 1e-10}
    np.testing.assert_allclose(backend.to_numpy(out), _np(t_out), **close)
    np.testing.assert_allclose(host(backend, mean), x.mean(axes), **close)
    np.testing.assert_allclose(host(backend, rstd), 1 / np.sqrt(x.var(axes) + eps), **close)
    np.testing.assert_allclose(host(backend, rm), want_rm, **close)
    np.testing.assert_allclose(host(backend, rv), want_rv, **close)
    dx, dscale, dbias = F.batch_norm_backward(
        backend.asarray(dy), xb, mean, rstd, vec(backend, scale), backend=backend
    )
    np.testing.assert_allclose(backend.to_numpy(dx), tx.grad.numpy(), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(host(backend, dscale), ts.grad.numpy(), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(host(backend, dbias), tb.grad.numpy(), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("shape", [(10, 20), (2, 3, 4, 4)])
def test_pytensor_batch_normalization_given_statistics(backend, shape):
    """PyTensor test_batch_normalization and test_bn_feature_maps: batch_normalization(x,
    gamma, beta, mean, std) = (x - mean) / std * gamma + beta, with x, gamma, beta, mean
    and std all 1 + uniform, float32; here evaluation with running statistics, the
    running variance being std**2 - eps so that sqrt(var + eps) is std. The second part of
    test_batch_normalization (the batch's own mean and std) is batch norm in training."""
    rng = np.random.default_rng(1234)
    c = shape[1]
    x = (1 + rng.random(shape)).astype(np.float32)
    b, g, m, v = ((1 + rng.random(c)).astype(np.float32) for _ in range(4))
    expand = (None, slice(None)) + (None,) * (len(shape) - 2)
    want = (x - m[expand]) / v[expand] * g[expand] + b[expand]
    eps = 1e-5
    var = (v.astype(np.float64) ** 2 - eps).astype(np.float64)
    y = F.batch_norm(backend.asarray(x), vec(backend, m.astype(np.float64)), vec(backend, var),
                     vec(backend, g), vec(backend, b), False, eps=eps, backend=backend)  # fmt: skip
    np.testing.assert_allclose(backend.to_numpy(y), want, rtol=1e-5, atol=1e-5)
    axes = (0,) + tuple(range(2, len(shape)))
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(axes, keepdims=True)) / np.sqrt(x64.var(axes, keepdims=True) + eps)
    want = want * g[expand] + b[expand]
    y = F.batch_norm(backend.asarray(x), weight=vec(backend, g), bias=vec(backend, b),
                     training=True, eps=eps, backend=backend)  # fmt: skip
    np.testing.assert_allclose(backend.to_numpy(y), want, rtol=1e-5, atol=1e-5)


# =================================================== regressions found while porting the above


def test_dask_transposed_input_matches_numpy():
    """Found by porting Paddle's TestBatchNormChannelLast.test_1d: a transposed (strided)
    Dask array reached the block kernels with an output buffer laid out like the strided
    block: batch_norm raised a raw Numba TypingError and dropout silently returned wrong
    values. Each function on the transposed Dask view now equals the numpy reference on
    the transposed NumPy view."""
    pytest.importorskip("dask")
    dask_backend = normdrop.get_backend("dask")
    x = np.random.default_rng(231).standard_normal((2, 6, 4))
    xt, xd = x.transpose(0, 2, 1), dask_backend.asarray(x).transpose(0, 2, 1)
    back = dask_backend.to_numpy
    close = {"rtol": 1e-12, "atol": 1e-12}
    for training in (True, False):
        rm, rv = np.zeros(4), np.ones(4)
        got = back(F.batch_norm(xd, rm.copy(), rv.copy(), np.ones(4), None, training))
        want = F.batch_norm(xt, rm, rv, np.ones(4), None, training)
        np.testing.assert_allclose(got, want, **close)
    y, mean, rstd = F.batch_norm_with_stats(xd, training=True)
    y_ref, mean_ref, rstd_ref = F.batch_norm_with_stats(xt, training=True)
    np.testing.assert_allclose(back(y), y_ref, **close)
    got = F.batch_norm_backward(xd, xd, mean, rstd, np.ones(4))
    want = F.batch_norm_backward(xt, xt, mean_ref, rstd_ref, np.ones(4))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(back(g), w, **close)
    np.testing.assert_array_equal(back(F.dropout(xd, 0.5, seed=3)), F.dropout(xt, 0.5, seed=3))
    np.testing.assert_allclose(back(F.layer_norm(xd, 6)), F.layer_norm(xt, 6), **close)
    y, mean, rstd = F.layer_norm_with_stats(xd, 6, np.ones(6))
    y_ref, mean_ref, rstd_ref = F.layer_norm_with_stats(xt, 6, np.ones(6))
    got = F.layer_norm_backward(xd, xd, 6, mean, rstd, np.ones(6))
    want = F.layer_norm_backward(xt, xt, 6, mean_ref, rstd_ref, np.ones(6))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(back(g), w, **close)


@pytest.mark.parametrize(
    ("make", "torch_make"),
    [
        (lambda: normdrop.Dropout("0.5"), lambda: torch.nn.Dropout("0.5")),
        (lambda: normdrop.Dropout(None), lambda: torch.nn.Dropout(None)),
        (lambda: F.dropout(np.ones(3), "0.5"), lambda: TF_dropout(torch.ones(3), "0.5")),
        (lambda: normdrop.BatchNorm1d("3"), lambda: torch.nn.BatchNorm1d("3")),
        (lambda: normdrop.BatchNorm1d(3.0), lambda: torch.nn.BatchNorm1d(3.0)),
        (lambda: normdrop.BatchNorm1d(None), lambda: torch.nn.BatchNorm1d(None)),
        (lambda: normdrop.LayerNorm(None), lambda: torch.nn.LayerNorm(None)),
        (lambda: normdrop.LayerNorm(3.0), lambda: torch.nn.LayerNorm(3.0)),
        (lambda: normdrop.LayerNorm(["3"]), lambda: torch.nn.LayerNorm(["3"])),
        (
            lambda: normdrop.BatchNorm1d(3, eps="1e-5")(np.ones((2, 3), np.float32)),
            lambda: torch.nn.BatchNorm1d(3, eps="1e-5")(torch.ones(2, 3)),
        ),
        (
            lambda: normdrop.BatchNorm1d(3, momentum="0.1")(np.ones((2, 3), np.float32)),
            lambda: torch.nn.BatchNorm1d(3, momentum="0.1")(torch.ones(2, 3)),
        ),
    ],
    ids=[
        "Dropout_str",
        "Dropout_None",
        "dropout_str",
        "BN_str",
        "BN_float",
        "BN_None",
        "LN_None",
        "LN_float",
        "LN_str_dim",
        "BN_eps_str",
        "BN_momentum_str",
    ],  # fmt: skip
)
def test_argument_of_the_wrong_type_is_a_type_error_like_torch(make, torch_make):
    """Found by porting Chainer's TestInvalidInitialize and Paddle's TestDropoutFAPIError
    (test_pdtype): an argument of the wrong type raised only ValueError. It now raises
    InvalidParameterTypeError: a TypeError, as PyTorch raises for each of these, and still
    an InvalidParameterError (a ValueError) naming the parameter."""
    with pytest.raises(TypeError):
        torch_make()
    with pytest.raises(normdrop.InvalidParameterTypeError) as info:
        make()
    assert isinstance(info.value, InvalidParameterError)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    assert info.value.parameter_name in str(info.value) or "Dropout" in str(info.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda: normdrop.Dropout(1.5),
        lambda: normdrop.BatchNorm1d(0),
        lambda: normdrop.BatchNorm1d(3, eps=0.0),
        lambda: normdrop.BatchNorm1d(3, momentum=2.0),
        lambda: normdrop.LayerNorm(0),
        lambda: normdrop.LayerNorm([]),
        lambda: normdrop.BatchNorm1d(3, dtype="float16"),
    ],
    ids=["p_1.5", "BN_0", "eps_0", "momentum_2", "LN_0", "LN_empty", "dtype_float16"],
)
def test_argument_of_the_right_type_but_a_bad_value_is_not_a_type_error(make):
    """The other side of the test above: a number out of range (or an empty shape, an
    unsupported dtype) stays a plain InvalidParameterError, a ValueError only."""
    with pytest.raises(InvalidParameterError) as info:
        make()
    assert not isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "layer",
    [lambda: normdrop.BatchNorm1d(2), lambda: normdrop.LayerNorm(2), lambda: normdrop.Dropout()],
    ids=["BatchNorm1d", "LayerNorm", "Dropout"],
)
def test_ragged_list_input_is_a_shape_error_for_every_layer(layer):
    """Found by porting Paddle's TestDropoutOpError.test_Variable (input that is not an
    array): a ragged nested list given to BatchNorm1d escaped as NumPy's raw ValueError
    ('setting an array element with a sequence') from the channel check; every layer now
    raises the ShapeError the functional API raises, and the state is unchanged."""
    module = layer()
    with pytest.raises(ShapeError, match="rectangular nested sequence"):
        module([[1.0, 2.0], [3.0]])
    if isinstance(module, normdrop.BatchNorm1d):
        assert int(module.num_batches_tracked) == 0
    y = module([[1.0, 2.0], [3.0, 5.0]])
    assert np.shape(y) == (2, 2)
