"""Tests of batch norm, layer norm and dropout from MyGrad, MegEngine and dfdx, ported to
normdrop: their shapes, values and NumPy references.

Each test names its source:

- rsokl/MyGrad (commit 3450197d) ``tests/nnet/layers/test_batchnorm.py`` (test_batchnorm,
  test_batchnorm_fwd, test_batchnorm_bkwd, with its reference ``simple_batchnorm``), the
  older ``tests/nnet/test_batchnorm.py`` (test_batchnorm with ``eps=1e-6``) and the
  docstring example of ``src/mygrad/nnet/layers/batchnorm.py``. MyGrad has no dropout or
  layer norm. Its hypothesis strategies are replaced by fixed seeded draws from the same
  ranges (data in [-100, 100], ``gamma``, ``beta`` and the gradient in [-10, 10], ranks 2
  to 4, sides 1 to 5, ``eps`` in [1e-20, 1]), including the draws hypothesis is known to
  shrink to (a constant channel, a missing ``gamma`` or ``beta``).
- MegEngine/MegEngine (commit 47952c07) ``imperative/python/test/unit/module/``
  ``test_batchnorm.py`` (test_batchnorm, test_batchnorm2d, test_batchnorm_no_stats,
  test_batchnorm2d_no_stats, test_batchnorm_empty_tensor),
  ``imperative/python/test/unit/functional/test_functional.py`` (test_dropout) and
  ``imperative/python/test/unit/xla/functional/test_xla_random.py`` (test_dropout's drop
  rate check); test_layer_norm of ``test_functional.py`` at commit 97b1b777 (removed from
  the file later) and test_batchnorm_change_batchsize of
  ``python_module/test/regression/test_MGE-103.py`` at commit f91881ff.
- coreylowman/dfdx (commit 4722a99d) ``dfdx-core/src/tensor_ops/normalize.rs``,
  ``dfdx-core/src/tensor_ops/dropout/mod.rs``, ``dfdx/src/nn/layers/batch_norm1d.rs``,
  ``dfdx/src/nn/layers/layer_norm1d.rs`` and ``dfdx/src/nn/layers/dropout.rs``: their
  hard-coded tensors.

Conventions, translated to PyTorch's (which SPEC.md follows): MegEngine's ``momentum`` is
the weight of the *old* running value (MegEngine's 0.9 is PyTorch's 0.1); its running
variance takes the unbiased batch variance, as PyTorch's. dfdx's ``momentum`` (0.1) is
PyTorch's, and so is its unbiased running variance; its loss ``y.exp().mean()`` is an
output gradient ``exp(y) / y.size``. MyGrad's ``batchnorm`` is a function without running
statistics (normdrop's ``batch_norm`` with ``training=True``), ``gamma`` and ``beta`` are
``weight`` and ``bias``.

Where the source draws its input from its own generator, the port says what it does
instead: dfdx's batch_norm1d.rs samples ``x`` from its seeded ChaCha generator and prints
only results, so the port rebuilds ``x`` from them (the running mean is ``0.1 * mean``, the
running variance ``0.9 + 0.1 * unbiased variance``, and ``x = mean + y * sqrt(biased
variance + eps)``); layer_norm1d.rs likewise, from the output row ``r`` alone (LayerNorm is
unchanged by a shift and positive scale of a row, and ``var(r) = v / (v + eps)`` gives the
row's standard deviation ``sqrt(v + eps) = sqrt(eps / (1 - var(r)))``). PyTorch confirms
each rebuilt input. Dropout masks come from each project's generator and normdrop's from
Philox (docs/differences.md), so dropout ports check properties: the ``1 / (1 - p)`` scale,
the drop rate, a gradient from the same mask, identity outside training. dfdx's two seeded
dropout tests also run with the Philox seed (9 and 91) whose mask is dfdx's, so that dfdx's
hard-coded outputs and gradients are compared value for value. Expected numbers are the
projects' hard-coded values, their NumPy references written out here in float64, or
PyTorch's, never normdrop's.

Deliberate differences met (docs/differences.md): normdrop refuses ``eps = 0`` (MyGrad's
docstring uses it; a tiny eps gives its values) and ``p = 1`` in training (dfdx's
test_dropout_all_0d); a batch with one value per channel raises ShapeError in training, as
in PyTorch, where MyGrad's hypothesis draws of shape ``(1, C)`` get ``beta``.

Not ported: MegEngine's SyncBatchNorm tests (test_syncbn*, distributed), its
test_batchnorm2d_autocast (MegEngine's AMP), test_group_norm / test_instance_norm (not
normdrop layers), the XLA tests' comparison of two traces of one function (test_layer_norm
in test_xla_normalize.py: the MegEngine run against the XLA run, no reference). dfdx's
test_batchnorm1d_update (an SGD step, no expected values), test_layer_norm_reset (module
reset) and the panics of dfdx's Dropout when called with or without an autodiff tape
(normdrop has train and eval modes instead).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, central_differences, host, skip_on_slow_backend, tol, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F
from normdrop.errors import InvalidParameterError, ShapeError

torch = pytest.importorskip("torch")
TF = torch.nn.functional


# =================================================================================== MyGrad
def _simple_batchnorm(x, gamma=None, beta=None, eps=1e-10):
    """MyGrad tests/nnet/layers/test_batchnorm.py ``simple_batchnorm`` (with its ``_var``:
    the mean of squared deviations), in float64 NumPy: statistics over every axis but 1."""
    x = np.asarray(x, np.float64)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = tuple(1 if n != 1 else d for n, d in enumerate(x.shape))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).sum(axis=axes, keepdims=True) / (x.size // x.shape[1])
    norm = (x - mean) / np.sqrt(var + eps)
    if gamma is not None:
        norm = norm * np.reshape(gamma, shape)
    if beta is not None:
        norm = norm + np.reshape(beta, shape)
    return norm


def _simple_batchnorm_torch(x, gamma, beta, eps):
    """The same formula on float64 tensors, for the gradients MyGrad takes by autograd
    through ``simple_batchnorm`` (``y1.backward(grad)``)."""
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = tuple(1 if n != 1 else d for n, d in enumerate(x.shape))
    mean = x.mean(dim=axes, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=axes, keepdim=True)
    norm = (x - mean) / torch.sqrt(var + eps)
    if gamma is not None:
        norm = norm * gamma.reshape(shape)
    if beta is not None:
        norm = norm + beta.reshape(shape)
    return norm


# The fixed draws replacing hypothesis: (shape, affine, seed, eps). "both": gamma and beta;
# "gamma", "beta": one of them; None: neither. A "const" seed makes channel 0 constant 0.
MYGRAD_DRAWS = [
    ((4, 3), "both", 0, 1e-10),
    ((2, 3, 5), "both", 1, 1e-10),
    ((3, 2, 2, 3), None, 2, 1e-10),
    ((5, 1, 4), "gamma", 3, 1e-10),
    ((2, 2, 3), "beta", 4, 1e-10),
    ((2, 4), "both", "const", 1e-10),
    ((3, 5, 2), "both", 5, 1e-6),  # tests/nnet/test_batchnorm.py: eps=1e-6
    ((1, 2, 4), None, 6, 1e-6),
]


def _mygrad_draw(shape, seed, affine):
    rng = np.random.default_rng(1000 + (99 if seed == "const" else seed))
    x = rng.uniform(-100, 100, shape)
    if seed == "const":
        x[:, 0] = 0.0
    c = shape[1]
    gamma = rng.uniform(-10, 10, c) if affine in ("both", "gamma") else None
    beta = rng.uniform(-10, 10, c) if affine in ("both", "beta") else None
    grad = rng.uniform(-10, 10, shape)
    return x, gamma, beta, grad


@pytest.mark.parametrize(("shape", "affine", "seed", "eps"), MYGRAD_DRAWS)
def test_mygrad_batchnorm(backend, shape, affine, seed, eps):
    """MyGrad tests/nnet/layers/test_batchnorm.py test_batchnorm (eps 1e-10) and
    tests/nnet/test_batchnorm.py test_batchnorm (eps 1e-6): float64 data of rank 2 to 4,
    optional gamma and beta. The output equals ``simple_batchnorm``; the gradients for x,
    gamma and beta of ``sum(y * grad)`` equal autograd's through that formula (MyGrad
    compares its op with the formula's graph, to 1e-4). x, gamma, beta and grad are not
    changed and the gradients share no memory with them or each other. A constant channel
    (hypothesis's shrunk draw) gives beta exactly. Without gamma normdrop returns no gamma
    or beta gradient (docs/differences.md: no bias gradient without a weight), so the
    ``beta``-only draw checks the output and the input gradient."""
    x, gamma, beta, grad = _mygrad_draw(shape, seed, affine)
    originals = [None if a is None else a.copy() for a in (x, gamma, beta, grad)]
    xb = backend.asarray(x)
    y, mean, rstd = F.batch_norm_with_stats(
        xb, None, None, vec(backend, gamma), vec(backend, beta), True, eps=eps, backend=backend
    )
    y = backend.to_numpy(y)
    want = _simple_batchnorm(x, gamma, beta, eps)
    np.testing.assert_allclose(y, want, rtol=1e-9, atol=1e-9)
    if seed == "const":
        np.testing.assert_array_equal(y[:, 0], beta[0])
    dx, dgamma, dbeta = F.batch_norm_backward(
        backend.asarray(grad), xb, mean, rstd, vec(backend, gamma), backend=backend
    )
    dx = backend.to_numpy(dx)

    tx = torch.tensor(x, requires_grad=True)
    tg = None if gamma is None else torch.tensor(gamma, requires_grad=True)
    tb = None if beta is None else torch.tensor(beta, requires_grad=True)
    _simple_batchnorm_torch(tx, tg, tb, eps).backward(torch.tensor(grad))
    scale = np.abs(tx.grad.numpy()).max()
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-7, atol=1e-9 * scale)
    if gamma is None:
        assert dgamma is None and dbeta is None
    else:
        dgamma, dbeta = host(backend, dgamma), host(backend, dbeta)
        np.testing.assert_allclose(dgamma, tg.grad.numpy(), rtol=1e-9, atol=1e-9)
        if tb is not None:
            np.testing.assert_allclose(dbeta, tb.grad.numpy(), rtol=1e-9, atol=1e-9)
        assert not np.shares_memory(dgamma, dbeta)
    for got, orig in zip((x, gamma, beta, grad), originals, strict=True):
        if orig is not None:
            np.testing.assert_array_equal(got, orig)
    assert not np.shares_memory(dx, grad) and not np.shares_memory(dx, x)


@pytest.mark.parametrize(
    ("shape", "eps"),
    [((3, 2), 1e-20), ((2, 3, 4), 1e-3), ((2, 2, 2, 3), 1.0), ((4, 1, 1, 1), 0.37)],
)
def test_mygrad_batchnorm_fwd_bkwd(backend, shape, eps):
    """MyGrad tests/nnet/layers/test_batchnorm.py test_batchnorm_fwd and
    test_batchnorm_bkwd (the uber fwdprop/backprop factories): ``batchnorm(x, eps=eps)``
    without affine, eps drawn from [1e-20, 1], equals ``simple_batchnorm`` (MyGrad: to
    1e-5), and its input gradient equals the numerical derivative of ``sum(simple_batchnorm
    (x) * grad)`` by central differences (MyGrad's ``vary_each_element`` numerical check)."""
    rng = np.random.default_rng(2000 + len(shape) + shape[0])
    x = rng.uniform(-10, 10, shape)
    grad = rng.uniform(-2, 2, shape)
    xb = backend.asarray(x)
    y, mean, rstd = F.batch_norm_with_stats(xb, training=True, eps=eps, backend=backend)
    np.testing.assert_allclose(
        backend.to_numpy(y), _simple_batchnorm(x, eps=eps), **tol(np.float64)
    )
    dx, _, _ = F.batch_norm_backward(backend.asarray(grad), xb, mean, rstd, backend=backend)
    probe = x.copy()
    want = central_differences(
        lambda: float(np.sum(_simple_batchnorm(probe, eps=eps) * grad)), probe
    )
    np.testing.assert_allclose(backend.to_numpy(dx), want, rtol=1e-6, atol=1e-7)


def test_mygrad_batchnorm_docstring_example(backend):
    """MyGrad src/mygrad/nnet/layers/batchnorm.py, the docstring of ``batchnorm``:
    ``batchnorm(Tensor([1., 4., 1.]).reshape(3, 1), eps=0)`` is [[-0.70710678],
    [1.41421356], [-0.70710678]]. normdrop refuses ``eps = 0`` (InvalidParameterError, a
    documented difference from MyGrad; PyTorch raises too); eps 1e-20 gives MyGrad's
    values."""
    x = backend.asarray(np.array([1.0, 4.0, 1.0]).reshape(3, 1))
    with pytest.raises(InvalidParameterError, match="eps"):
        F.batch_norm(x, training=True, eps=0.0, backend=backend)
    y = backend.to_numpy(F.batch_norm(x, training=True, eps=1e-20, backend=backend))
    np.testing.assert_allclose(y, [[-0.70710678], [1.41421356], [-0.70710678]], atol=1e-8)


def test_mygrad_batchnorm_one_value_per_channel(backend):
    """MyGrad tests/nnet/layers/test_batchnorm.py test_batchnorm: hypothesis also draws
    shapes (1, C), one value per channel, where MyGrad returns ``beta`` (the value minus its
    own mean is 0). normdrop raises ShapeError in training there, as PyTorch does (SPEC.md),
    and changes nothing."""
    x = np.random.default_rng(3).uniform(-100, 100, (1, 3))
    rm, rv = vec(backend, np.zeros(3)), vec(backend, np.ones(3))
    with pytest.raises(ShapeError, match="more than 1 value per channel"):
        F.batch_norm(backend.asarray(x), rm, rv, training=True, backend=backend)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        TF.batch_norm(_t(x), None, None, training=True)
    np.testing.assert_array_equal(host(backend, rm), 0.0)
    np.testing.assert_array_equal(host(backend, rv), 1.0)


# ================================================================================ MegEngine
def _mge_stats(xv):
    """MegEngine's references: the per-channel mean, biased and unbiased variance of
    ``(N, C, ...)`` data (its transpose-and-reshape to ``(N * L, C)``), in float64."""
    c = xv.shape[1]
    flat = np.moveaxis(np.asarray(xv, np.float64), 1, -1).reshape(-1, c)
    return flat.mean(axis=0), flat.var(axis=0), flat.var(axis=0, ddof=1)


def _bshape(v, ndim):
    return np.reshape(v, (1, -1) + (1,) * (ndim - 2))


@pytest.mark.parametrize(
    "data_shape", [(3, 8, 4), (3, 8, 16, 16)], ids=["test_batchnorm", "test_batchnorm2d"]
)
def test_megengine_batchnorm(backend, data_shape):
    """MegEngine module/test_batchnorm.py test_batchnorm (BatchNorm1d(8), data (3, 8, 4))
    and test_batchnorm2d (BatchNorm2d(8), data (3, 8, 16, 16): normdrop's functional
    batch_norm with running arrays): MegEngine momentum 0.9, which is PyTorch's 0.1. Three
    training steps on float32 normal data with mean 2.3: each output is ``(x - mean) /
    sqrt(biased var + eps)`` and the running statistics follow ``running * 0.9 + batch *
    0.1`` with the unbiased variance (MegEngine's tolerance, 5e-6). Then in evaluation two
    calls give identical outputs, leave the statistics exactly as they were, and equal
    ``(x - running_mean) / sqrt(running_var + eps)``."""
    if len(data_shape) == 4:
        skip_on_slow_backend(backend, "(3, 8, 16, 16) data; too slow under the CUDA simulator")
    rng = np.random.RandomState(11)
    nr_chan, momentum, eps = 8, 0.9, 1e-5
    running_mean, running_var = np.zeros(nr_chan), np.ones(nr_chan)
    layered = len(data_shape) == 3
    if layered:
        bn = normdrop.BatchNorm1d(nr_chan, momentum=1 - momentum, backend=backend.name)
    else:
        rm = vec(backend, np.zeros(nr_chan, np.float32))
        rv = vec(backend, np.ones(nr_chan, np.float32))
        w = vec(backend, np.ones(nr_chan, np.float32))
        b = vec(backend, np.zeros(nr_chan, np.float32))
    for _ in range(3):
        xv = rng.normal(loc=2.3, size=data_shape).astype(np.float32)
        mean, var_biased, var_unbiased = _mge_stats(xv)
        running_mean = running_mean * momentum + mean * (1 - momentum)
        running_var = running_var * momentum + var_unbiased * (1 - momentum)
        if layered:
            yv = backend.to_numpy(bn(backend.asarray(xv)))
            rm, rv = bn.running_mean, bn.running_var
        else:
            yv = F.batch_norm(
                backend.asarray(xv), rm, rv, w, b, True, 1 - momentum, eps, backend=backend
            )
            yv = backend.to_numpy(yv)
        want = (xv - _bshape(mean, xv.ndim)) / np.sqrt(_bshape(var_biased, xv.ndim) + eps)
        np.testing.assert_allclose(yv, want, atol=5e-6, rtol=5e-6)
        np.testing.assert_allclose(host(backend, rm), running_mean, atol=5e-6, rtol=5e-6)
        np.testing.assert_allclose(host(backend, rv), running_var, atol=5e-6, rtol=5e-6)

    mean_backup, var_backup = host(backend, rm).copy(), host(backend, rv).copy()
    xv = rng.normal(loc=2.3, size=data_shape).astype(np.float32)
    data = backend.asarray(xv)
    if layered:
        bn.eval()
        yv1, yv2 = backend.to_numpy(bn(data)), backend.to_numpy(bn(data))
    else:
        yv1, yv2 = (
            backend.to_numpy(F.batch_norm(data, rm, rv, w, b, False, backend=backend))
            for _ in range(2)
        )
    np.testing.assert_array_equal(yv1, yv2)
    np.testing.assert_array_equal(host(backend, rm), mean_backup)
    np.testing.assert_array_equal(host(backend, rv), var_backup)
    want = (xv - _bshape(running_mean, xv.ndim)) / np.sqrt(_bshape(running_var, xv.ndim) + eps)
    np.testing.assert_allclose(yv1, want, atol=5e-6, rtol=5e-6)


@pytest.mark.parametrize(
    "data_shape",
    [(3, 8, 4), (3, 8, 16, 16)],
    ids=["test_batchnorm_no_stats", "test_batchnorm2d_no_stats"],
)
def test_megengine_batchnorm_no_stats(backend, data_shape):
    """MegEngine module/test_batchnorm.py test_batchnorm_no_stats (BatchNorm1d(8,
    track_running_stats=False)) and test_batchnorm2d_no_stats (BatchNorm2d; here functional
    batch_norm without running arrays): four steps, training switched off before the third;
    every output uses the batch's statistics, ``(x - mean) / sqrt(biased var + eps)``
    (MegEngine's tolerance, 5e-6)."""
    if len(data_shape) == 4:
        skip_on_slow_backend(backend, "(3, 8, 16, 16) data; too slow under the CUDA simulator")
    rng = np.random.RandomState(12)
    eps = 1e-5
    bn = normdrop.BatchNorm1d(8, track_running_stats=False, backend=backend.name)
    for i in range(4):
        if i == 2:
            bn.eval()
        xv = rng.normal(loc=2.3, size=data_shape).astype(np.float32)
        mean, var, _ = _mge_stats(xv)
        if len(data_shape) == 3:
            yv = backend.to_numpy(bn(backend.asarray(xv)))
        else:
            yv = F.batch_norm(backend.asarray(xv), training=bn.training, backend=backend)
            yv = backend.to_numpy(yv)
        want = (xv - _bshape(mean, xv.ndim)) / np.sqrt(_bshape(var, xv.ndim) + eps)
        np.testing.assert_allclose(yv, want, atol=5e-6, rtol=5e-6)
    assert bn.running_mean is None and bn.running_var is None


@pytest.mark.parametrize("dim", [1, 2])
def test_megengine_batchnorm_empty_tensor(backend, dim):
    """MegEngine module/test_batchnorm.py test_batchnorm_empty_tensor: BatchNorm1d(4) on
    (0, 4, 0) and BatchNorm2d(4) on (0, 4, 0, 0), affine, in training, three times (the
    traced variants): the output equals the (empty) input. normdrop, as PyTorch 2.13
    (SPEC.md): an empty output of the input's shape, the running statistics unchanged and
    ``num_batches_tracked`` counted; the rank-4 case goes through functional batch_norm."""
    shape = (0, 4, 0) if dim == 1 else (0, 4, 0, 0)
    inp = np.empty(shape, np.float32)  # MegEngine: np.random.randn(*shape), also empty
    bn = normdrop.BatchNorm1d(4, affine=True, backend=backend.name)
    rm, rv = vec(backend, np.zeros(4, np.float32)), vec(backend, np.ones(4, np.float32))
    w, b = vec(backend, np.ones(4, np.float32)), vec(backend, np.zeros(4, np.float32))
    for _ in range(3):
        if dim == 1:
            out = bn(backend.asarray(inp))
        else:
            out = F.batch_norm(backend.asarray(inp), rm, rv, w, b, True, backend=backend)
        out = backend.to_numpy(out)
        assert out.shape == inp.shape and out.dtype == inp.dtype
        np.testing.assert_equal(out, inp)
    if dim == 1:
        rm, rv = bn.running_mean, bn.running_var
        assert int(bn.num_batches_tracked) == 3
    np.testing.assert_array_equal(host(backend, rm), 0.0)
    np.testing.assert_array_equal(host(backend, rv), 1.0)


def test_megengine_batchnorm_change_batchsize(backend):
    """MegEngine python_module/test/regression/test_MGE-103.py (commit f91881ff)
    test_batchnorm_change_batchsize: BatchNorm2d(3) traced on a (2, 3, 8, 8) batch, then
    fed a (4, 3, 8, 8) batch; the traced output equals the eager one. Here: BatchNorm1d(3)
    on the batches as (N, 3, 64) in training, and functional batch_norm on the rank-4
    batches: after the batch size changes, the output equals a fresh layer's on that batch
    and ``(d - mean) / sqrt(biased var + eps)``, and the running statistics have taken both
    batches (PyTorch's update)."""
    skip_on_slow_backend(backend, "(4, 3, 8, 8) data; too slow under the CUDA simulator")
    rng = np.random.RandomState(103)
    data = rng.random_sample((2, 3, 8, 8)).astype(np.float32)
    d = rng.random_sample((4, 3, 8, 8)).astype(np.float32)
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    bn(backend.asarray(data.reshape(2, 3, 64)))
    y1 = backend.to_numpy(bn(backend.asarray(d.reshape(4, 3, 64)))).reshape(d.shape)
    y0 = normdrop.BatchNorm1d(3, backend=backend.name)(backend.asarray(d.reshape(4, 3, 64)))
    np.testing.assert_array_equal(y1, backend.to_numpy(y0).reshape(d.shape))
    mean, var, _ = _mge_stats(d)
    want = (d - _bshape(mean, 4)) / np.sqrt(_bshape(var, 4) + 1e-5)
    np.testing.assert_allclose(y1, want, **tol(np.float32))
    y = F.batch_norm(backend.asarray(d), training=True, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), want, **tol(np.float32))
    tbn = torch.nn.BatchNorm2d(3)
    tbn(_t(data))
    tbn(_t(d))
    np.testing.assert_allclose(
        host(backend, bn.running_mean), _np(tbn.running_mean), **tol(np.float32, "torch")
    )
    np.testing.assert_allclose(
        host(backend, bn.running_var), _np(tbn.running_var), **tol(np.float32, "torch")
    )


def _mge_layer_norm_numpy(x, normalized_shape, affine, weight=None, bias=None, eps=1e-5):
    """MegEngine test_functional.py test_layer_norm ``_layer_norm_numpy`` (commit 97b1b777),
    in float64: mean and ``E[x^2] - mean^2`` over the flattened trailing dims."""
    x_shape = x.shape
    non_flatten_shape = x_shape[: len(x_shape) - len(normalized_shape)]
    x = np.asarray(x, np.float64).reshape(*non_flatten_shape, -1)
    mean = x.mean(axis=-1, keepdims=True)
    var = (x**2).mean(axis=-1, keepdims=True) - mean * mean
    x = ((x - mean) / np.sqrt(var + eps)).reshape(x_shape)
    if affine:
        x = weight * x + bias
    return x


def test_megengine_layer_norm(backend):
    """MegEngine imperative/python/test/unit/functional/test_functional.py test_layer_norm
    (commit 97b1b777): normalized_shape (28, 28) on float32 ``randn(32, 64, 28, 28) + 1``
    without affine equals ``_layer_norm_numpy`` with a mean absolute error below 1e-7 (the
    source's bound); ones through LayerNorm((28, 28)) with weight ones and bias zeros give
    outputs whose mean is below 1e-7 (they are 0: a constant row gives the bias), the same
    from functional layer_norm and the layer. The CUDA simulator gets 2 x 4 samples."""
    lead = (2, 4) if backend.name in SLOW_BACKENDS else (32, 64)
    rng = np.random.RandomState(97)
    normalized_shape = (28, 28)
    inp = (rng.randn(*lead, 28, 28) + 1).astype(np.float32)
    out = backend.to_numpy(F.layer_norm(backend.asarray(inp), normalized_shape, backend=backend))
    target = _mge_layer_norm_numpy(inp, normalized_shape, False)
    assert out.dtype == np.float32
    assert np.abs(out - target).mean() < 1e-7
    np.testing.assert_allclose(out, target, **tol(np.float32))

    ones = backend.asarray(np.ones((*lead, 28, 28), np.float32))
    weight, bias = np.ones((28, 28), np.float32), np.zeros((28, 28), np.float32)
    outvar = F.layer_norm(
        ones, normalized_shape, vec(backend, weight), vec(backend, bias), backend=backend
    )
    layer = normdrop.LayerNorm(normalized_shape, backend=backend.name)
    targetvar = backend.to_numpy(layer(ones))
    outvar = backend.to_numpy(outvar)
    assert abs((outvar - targetvar).mean()) < 1e-7
    assert abs(outvar.mean()) < 1e-7
    np.testing.assert_array_equal(outvar, 0.0)


def test_megengine_dropout(backend):
    """MegEngine imperative/python/test/unit/functional/test_functional.py test_dropout.
    test_dropout_with_shape: dropout of ones in training, then the gradient of a ones
    output gradient, equals the output (both are the mask / (1 - rate)), for a 0-d input
    (rate 0.4), (13, 17, 63, 21) (rate 0.4) and (16, 32, 64) (rate 0.3); the non-0-d outputs
    have zeros. test_multiple_dropout: three dropouts of rate 0.2 in a row on ones(1024) (a
    different call each): the gradient through the three equals the final output.
    test_dropout_seed: with the global seed set to 111 two calls differ, setting 111 again
    repeats the first, and seed 222 gives another mask (normdrop.manual_seed; the functional
    form draws a seed per call when none is given). The CUDA simulator gets smaller shapes."""
    shapes = [((), 0.4), ((13, 17, 63, 21), 0.4), ((16, 32, 64), 0.3)]
    if backend.name in SLOW_BACKENDS:
        shapes = [((), 0.4), ((13, 17, 3, 2), 0.4), ((4, 3, 8), 0.3)]
    for shape, rate in shapes:
        data = backend.asarray(np.ones(shape, np.float32))
        out = F.dropout(data, rate, True, seed=5, backend=backend)
        grad = F.dropout_backward(
            backend.asarray(np.ones(shape, np.float32)), rate, seed=5, backend=backend
        )
        out, grad = backend.to_numpy(out), backend.to_numpy(grad)
        assert out.shape == shape
        if len(shape) != 0:
            assert not out.all()
        np.testing.assert_allclose(out, grad, 1e-7, 1e-7)
        assert set(np.unique(out)) <= {0.0, np.float32(1) / np.float32(1 - rate)}

    ones = np.ones(1024, np.float32)
    out = backend.asarray(ones)
    for call in range(3):
        out = F.dropout(out, 0.2, True, seed=6, call=call, backend=backend)
    g = backend.asarray(ones)
    for call in (2, 1, 0):
        g = F.dropout_backward(g, 0.2, seed=6, call=call, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(out), backend.to_numpy(g), 1e-7, 1e-7)

    x = backend.asarray(np.random.RandomState(7).randn(16, 32).astype(np.float32))
    normdrop.manual_seed(111)
    out1 = backend.to_numpy(F.dropout(x, 0.2, True, backend=backend))
    out2 = backend.to_numpy(F.dropout(x, 0.2, True, backend=backend))
    assert not (out1 == out2).all()
    normdrop.manual_seed(111)
    out3 = backend.to_numpy(F.dropout(x, 0.2, True, backend=backend))
    assert (out1 == out3).all()
    normdrop.manual_seed(222)
    out4 = backend.to_numpy(F.dropout(x, 0.2, True, backend=backend))
    assert not (out1 == out4).all()


@pytest.mark.parametrize("drop_prob", [0.1, 0.3, 0.5, 0.9])
def test_megengine_xla_dropout_rate(backend, drop_prob):
    """MegEngine imperative/python/test/unit/xla/functional/test_xla_random.py test_dropout
    (``check_dropout``): on normal data of shape (32, 128, 128, 1, 16) the output's and the
    input gradient's fraction of zeros equals drop_prob within 1e-3, and where neither is
    dropped the values agree. Here the output and the gradient of a normal output gradient
    have the same mask, the gradient is ``dy / (1 - p)`` there, and the rate is within 1e-3
    (about 6 standard deviations at this size). To keep the run short, only the numba
    backend gets that size; the others get (32, 128, 16, 1, 16) with the bound scaled by
    sqrt(8) (the masks are the same on every backend, SPEC.md)."""
    shape, atol = (32, 128, 128, 1, 16), 1e-3
    if backend.name != "numba":
        skip_on_slow_backend(backend, "millions of elements; too slow under the CUDA simulator")
        shape, atol = (32, 128, 16, 1, 16), 1e-3 * np.sqrt(8)
    rng = np.random.RandomState(int(drop_prob * 10))
    x = rng.randn(*shape).astype(np.float32)
    dy = rng.randn(*shape).astype(np.float32)
    y = backend.to_numpy(F.dropout(backend.asarray(x), drop_prob, True, seed=3, backend=backend))
    dx = F.dropout_backward(backend.asarray(dy), drop_prob, seed=3, backend=backend)
    dx = backend.to_numpy(dx)
    for got in (y, dx):
        np.testing.assert_allclose(np.mean(got == 0), drop_prob, atol=atol)
    kept = y != 0
    np.testing.assert_array_equal(kept, dx != 0)
    scale = np.float32(1) / np.float32(1 - drop_prob)
    np.testing.assert_allclose(y[kept], x[kept] * scale, rtol=1e-6)
    np.testing.assert_allclose(dx[kept], dy[kept] * scale, rtol=1e-6)


# ===================================================================================== dfdx
# coreylowman/dfdx dfdx-core/src/tensor_ops/normalize.rs: ``normalize::<Ax>(1e-5)`` is
# (x - mean) / sqrt(mean((x - mean)^2) + eps) over the axes Ax; the gradients are those
# of r.exp().mean(). dfdx's tolerance is 1e-6 (f32).
DFDX_TOL = {"rtol": 0, "atol": 2e-6}


@pytest.mark.parametrize("case", ["1d_axis_last", "2d_axis_last", "3d_axis_last"])
def test_dfdx_normalize_axis_last(backend, case):
    """dfdx normalize.rs test_1d_normalize_axis_last ([-2, 0, 5]),
    test_2d_normalize_axis_last ([[-2, 0, 5], [1, 2, 3]]) and test_3d_normalize_axis_last
    (ones(4, 2, 3): zeros, zero gradient): normalising the last axis is layer_norm over it
    without affine (eps 1e-5). The outputs and the input gradients of ``r.exp().mean()``
    (an output gradient ``exp(r) / r.size``) equal dfdx's hard-coded values."""
    if case == "1d_axis_last":
        a = np.array([-2.0, 0.0, 5.0], np.float32)
        want_r = [-1.0190487, -0.3396829, 1.3587316]
        want_g = [0.033410847, -0.04677555, 0.013364702]
    elif case == "2d_axis_last":
        a = np.array([[-2.0, 0.0, 5.0], [1.0, 2.0, 3.0]], np.float32)
        want_r = [[-1.0190487, -0.3396829, 1.3587316], [-1.2247356, 0.0, 1.2247356]]
        want_g = [
            [0.016705424, -0.023387775, 0.006682351],
            [0.05773133, -0.11547226, 0.057740927],
        ]
    else:
        a = np.ones((4, 2, 3), np.float32)
        want_r = want_g = np.zeros((4, 2, 3))
    ab = backend.asarray(a)
    r, mean, rstd = F.layer_norm_with_stats(ab, 3, eps=1e-5, backend=backend)
    r = backend.to_numpy(r)
    np.testing.assert_allclose(r, want_r, **DFDX_TOL)
    dy = (np.exp(r.astype(np.float64)) / r.size).astype(np.float32)
    g, _, _ = F.layer_norm_backward(backend.asarray(dy), ab, 3, mean, rstd, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(g), want_g, **DFDX_TOL)


def test_dfdx_normalize_axis_first(backend):
    """dfdx normalize.rs test_2d_normalize_axis_first: [[-2, 0], [1, 2], [4, 5]] normalised
    over axis 0 is batch norm of (N, C) = (3, 2) with batch statistics and no affine (eps
    1e-5). The output and the input gradient of ``r.exp().mean()`` equal dfdx's values."""
    a = np.array([[-2.0, 0.0], [1.0, 2.0], [4.0, 5.0]], np.float32)
    ab = backend.asarray(a)
    r, mean, rstd = F.batch_norm_with_stats(ab, training=True, eps=1e-5, backend=backend)
    r = backend.to_numpy(r)
    want_r = [[-1.2247438, -1.1355485], [0.0, -0.16222118], [1.2247438, 1.2977698]]
    np.testing.assert_allclose(r, want_r, **DFDX_TOL)
    dy = (np.exp(r.astype(np.float64)) / r.size).astype(np.float32)
    g, _, _ = F.batch_norm_backward(backend.asarray(dy), ab, mean, rstd, backend=backend)
    want_g = [
        [0.019245632, 0.025835907],
        [-0.038491584, -0.043060362],
        [0.019245982, 0.01722446],
    ]
    np.testing.assert_allclose(backend.to_numpy(g), want_g, **DFDX_TOL)


def test_dfdx_dropout_all_and_none(backend):
    """dfdx tensor_ops/dropout/mod.rs test_dropout_all_0d and test_dropout_none_0d on [3,
    4, 5]: dfdx's ``dropout(1.0)`` gives zeros and a zero gradient; normdrop refuses p = 1
    in training (InvalidParameterError, SPEC.md and docs/differences.md) and changes
    nothing. ``dropout(0.0)`` returns [3, 4, 5] (normdrop: the input object itself) and the
    gradient of ``r.sum()`` is ones."""
    t = backend.asarray(np.array([3.0, 4.0, 5.0], np.float32))
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\)"):
        F.dropout(t, 1.0, True, seed=0, backend=backend)
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\)"):
        normdrop.Dropout(1.0)
    r = F.dropout(t, 0.0, True, seed=0, backend=backend)
    assert r is t
    np.testing.assert_array_equal(backend.to_numpy(r), [3.0, 4.0, 5.0])
    g = F.dropout_backward(backend.asarray(np.ones(3, np.float32)), 0.0, seed=0, backend=backend)
    np.testing.assert_array_equal(backend.to_numpy(g), [1.0, 1.0, 1.0])


# (values, p, dfdx output, dfdx gradient, the loss, the Philox seed giving dfdx's mask)
DFDX_DROPOUT = {
    "1d_with_non_positive_values": (
        [-0.0, 2.0, -3.0, -4.0, -0.0], 0.5,
        [0.0, 4.0, -6.0, -8.0, 0.0], [0.4, 0.4, 0.4, 0.4, 0.0], "mean", 9,
    ),
    "2d": (
        [[0.05, 0.1, -0.2], [0.3, -0.4, 0.5]], 0.6,
        [[0.125, 0.0, -0.5], [0.0, -1.0, 0.0]],
        [[0.4721452, 0.0, 0.25272113], [0.0, 0.1532831, 0.0]], "exp_mean", 91,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DFDX_DROPOUT))
def test_dfdx_dropout(backend, case):
    """dfdx tensor_ops/dropout/mod.rs test_dropout_1d_with_non_positive_values (p 0.5, the
    loss ``r.mean()``) and test_dropout_2d (p 0.6, the loss ``r.exp().mean()``): dfdx's
    masks come from its seeded generator, so (1) for several seeds every output is 0 or
    ``x / (1 - p)`` with the gradient from the same mask (``dr * mask / (1 - p)``), and (2)
    with the Philox seed whose keep-mask is dfdx's ([1, 1, 1, 1, 0]; [[1, 0, 1], [0, 1,
    0]]), normdrop's output and gradient equal dfdx's hard-coded ones."""
    values, p, want_r, want_g, loss, seed = DFDX_DROPOUT[case]
    t = np.array(values, np.float32)
    tb = backend.asarray(t)
    scale = np.float32(1) / np.float32(1 - p)

    def run(s):
        r = backend.to_numpy(F.dropout(tb, p, True, seed=s, backend=backend))
        r64 = r.astype(np.float64)
        dr = np.exp(r64) / r.size if loss == "exp_mean" else np.full(r.shape, 1 / r.size)
        g = F.dropout_backward(backend.asarray(dr.astype(np.float32)), p, seed=s, backend=backend)
        return r, dr, backend.to_numpy(g)

    for s in range(4):
        mask = backend.to_numpy(F.dropout_mask(t.shape, p, seed=s, backend=backend))
        r, dr, g = run(s)
        np.testing.assert_array_equal(r, np.where(mask, t * scale, 0.0))
        np.testing.assert_allclose(g, np.where(mask, dr * scale, 0.0), rtol=1e-6, atol=0)
    mask = backend.to_numpy(F.dropout_mask(t.shape, p, seed=seed, backend=backend))
    np.testing.assert_array_equal(mask, np.array(want_g) != 0)
    r, _, g = run(seed)
    np.testing.assert_allclose(r, want_r, rtol=0, atol=1e-6)
    np.testing.assert_allclose(g, want_g, rtol=0, atol=1e-6)


def test_dfdx_dropout_layer(backend):
    """dfdx nn/layers/dropout.rs test_dropout_internal_rng_reproduce, test_dropout_no_tape
    and test_dropout_tape: Dropout(0.5) on ones(100). Two layers give different outputs,
    and one layer's second call differs from its first (normdrop: each layer draws its own
    seed, and each training call advances ``call_count``); without an autodiff tape dfdx
    returns the input unchanged (normdrop: in evaluation, the input object itself); with
    one the output differs from the input."""
    t = backend.asarray(np.ones(100, np.float32))
    normdrop.manual_seed(100)
    d1 = normdrop.Dropout(0.5, backend=backend.name)
    d2 = normdrop.Dropout(0.5, backend=backend.name)
    r1, r2 = backend.to_numpy(d1(t)), backend.to_numpy(d2(t))
    r1_2 = backend.to_numpy(d1(t))
    assert not np.array_equal(r1, r2)
    assert not np.array_equal(r1, r1_2)
    assert not np.array_equal(r1, np.ones(100))
    assert set(np.unique(r1)) == {0.0, 2.0}
    d1.eval()
    r = d1(t)
    assert r is t
    np.testing.assert_array_equal(backend.to_numpy(r), 1.0)


# dfdx nn/layers/batch_norm1d.rs: x sampled from StandardNormal with seed 0 (not printed);
# the outputs y, the running statistics after one training step (momentum 0.1, eps 1e-5)
# and the gradients of y.exp().mean() are hard-coded.
DFDX_BN = {
    "2d_forward_mut": {
        "y": [[1.3168651, 0.19157785], [-1.1049646, -1.3092154], [-0.21190044, 1.1176374]],
        "running_mean": [-0.09994803, 0.07696156],
        "running_var": [1.1536077, 0.9321649],
        "scale": [0.72945416, 0.5493023],
        "bias": [0.8119954, 0.7564688],
        "x": [[0.023908734, -0.18436226], [0.040923715, 0.0703277], [-0.06483248, 0.11403453]],
    },
    "3d_forward_mut": {
        "y": [
            [[0.059494145, 0.21366562], [-1.0539212, 0.5588659]],
            [[-2.0465322, 0.6680055], [-0.46153978, 0.8375814]],
            [[-0.041158404, 1.1465254], [1.411404, -1.2923905]],
        ],
        "running_mean": [0.065665804, -0.07374697],
        "running_var": [1.0069065, 1.2117702],
        "scale": [0.4112549, 0.6407272],
        "bias": [0.7071625, 0.78455544],
        "x": [
            [[-0.035488494, -0.031065114], [0.0067214966, -0.02774144]],
            [[0.035152107, -0.0011850521], [-0.017958358, -0.017146945]],
            [[-0.03715139, 0.0697379], [0.037428252, 0.018696927]],
        ],
    },
}


@pytest.mark.parametrize("case", list(DFDX_BN))
def test_dfdx_batchnorm1d_forward_mut(backend, case):
    """dfdx nn/layers/batch_norm1d.rs test_batchnorm1d_2d_forward_mut ((3, 2) input) and
    test_batchnorm1d_3d_forward_mut ((3, 2, 2)): BatchNorm1D with dfdx's defaults (momentum
    0.1, eps 1e-5), one training step. dfdx's input is drawn from its own generator, so the
    port rebuilds it in float64 from dfdx's results: mean = running_mean / 0.1, unbiased
    variance = (running_var - 0.9) / 0.1, and ``x = mean + y * sqrt(biased variance +
    eps)`` (PyTorch's BatchNorm1d on that x gives dfdx's numbers). normdrop's output,
    running statistics and the gradients of ``y.exp().mean()`` (scale, bias and x) equal
    dfdx's hard-coded values to 2e-6 (dfdx's tolerance is 1e-6)."""
    ref = {k: np.array(v, np.float64) for k, v in DFDX_BN[case].items()}
    y_ref = ref["y"]
    n = y_ref.size // 2
    mean = ref["running_mean"] / 0.1
    var_biased = (ref["running_var"] - 0.9) / 0.1 * (n - 1) / n
    x = _bshape(mean, y_ref.ndim) + y_ref * np.sqrt(_bshape(var_biased, y_ref.ndim) + 1e-5)
    x = x.astype(np.float32)

    tx = _t(x).requires_grad_(True)
    tbn = torch.nn.BatchNorm1d(2)
    ty = tbn(tx)
    ty.exp().mean().backward()
    np.testing.assert_allclose(_np(ty), y_ref, rtol=0, atol=1e-6)  # the rebuilt input
    np.testing.assert_allclose(tx.grad.numpy(), ref["x"], rtol=0, atol=1e-6)

    bn = normdrop.BatchNorm1d(2, backend=backend.name)
    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-6)
    np.testing.assert_allclose(
        host(backend, bn.running_mean), ref["running_mean"], rtol=0, atol=2e-6
    )
    np.testing.assert_allclose(host(backend, bn.running_var), ref["running_var"], rtol=0, atol=2e-6)
    dy = (np.exp(y.astype(np.float64)) / y.size).astype(np.float32)
    dx = backend.to_numpy(bn.backward(backend.asarray(dy)))
    np.testing.assert_allclose(host(backend, bn.grads["weight"]), ref["scale"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(host(backend, bn.grads["bias"]), ref["bias"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(dx, ref["x"], rtol=0, atol=2e-6)


# dfdx nn/layers/layer_norm1d.rs: LayerNorm1D<5> (eps 1e-5) of x = dev.sample_normal()
# (not printed); the outputs and the gradients of r.mean() are hard-coded.
DFDX_LN_R = [
    [0.873304, 0.9879816, -1.6083492, 0.44028836, -0.6932247],
    [0.663322, -1.8449169, 0.05217871, 0.056903206, 1.0725129],
    [1.0343355, -1.5559655, -0.40086073, 1.1405537, -0.21806297],
]


@pytest.mark.parametrize("case", ["1d", "2d"])
def test_dfdx_layer_norm(backend, case):
    """dfdx nn/layers/layer_norm1d.rs test_layer_norm_1d_forward (a (5,) input: r is the
    first row below, the gamma gradient of ``r.mean()`` [0.1746608, 0.19759633,
    -0.32166985, 0.088057674, -0.13864495], the beta gradient 0.2 each) and
    test_layer_norm_2d_forward ((3, 5): r as below, gamma gradient [0.1713974, -0.16086,
    -0.1304687, 0.109183, 0.0107483], beta 0.2 each). dfdx samples its input, so the port
    rebuilds each row from r: ``x = r * sqrt(eps / (1 - var(r)))`` is dfdx's row up to a
    shift, which LayerNorm ignores (PyTorch's layer_norm of it gives r). normdrop's output
    and weight and bias gradients equal dfdx's values."""
    r_ref = np.array(DFDX_LN_R[:1] if case == "1d" else DFDX_LN_R, np.float64)
    x = r_ref * np.sqrt(1e-5 / (1 - r_ref.var(axis=1, keepdims=True)))
    if case == "1d":
        x, r_ref = x[0], r_ref[0]
        want_gamma = [0.1746608, 0.19759633, -0.32166985, 0.088057674, -0.13864495]
    else:
        want_gamma = [0.1713974, -0.16086, -0.1304687, 0.109183, 0.0107483]
    x = x.astype(np.float32)
    np.testing.assert_allclose(_np(TF.layer_norm(_t(x), (5,))), r_ref, rtol=0, atol=1e-6)

    m = normdrop.LayerNorm(5, backend=backend.name)
    r = backend.to_numpy(m(backend.asarray(x)))
    np.testing.assert_allclose(r, r_ref, rtol=0, atol=2e-6)
    m.backward(backend.asarray(np.full(r.shape, 1 / r.size, np.float32)))
    np.testing.assert_allclose(host(backend, m.grads["weight"]), want_gamma, rtol=0, atol=2e-6)
    np.testing.assert_allclose(host(backend, m.grads["bias"]), [0.2] * 5, rtol=0, atol=2e-6)
