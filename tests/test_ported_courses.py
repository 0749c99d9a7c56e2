"""Course and textbook checks of batch norm, layer norm and dropout, ported to normdrop:
Stanford cs231n's assignment 2 and the Dive into Deep Learning book.

Each test names its source:

- Stanford cs231n, assignment 2 (spring 2019 release), read in the public copy
  0809zheng/CS231n-assignment2019 (commit 3f5c853): ``assignment2/cs231n/layers.py``
  (the docstrings of batchnorm_forward, batchnorm_backward, batchnorm_backward_alt,
  layernorm_forward, layernorm_backward, dropout_forward and dropout_backward, which state
  the algorithm the assignment asks for), ``assignment2/cs231n/gradient_check.py``
  (``eval_numerical_gradient_array``, rewritten here), and the checks of
  ``assignment2/BatchNormalization.ipynb`` (training-time means and stds after batch norm,
  test-time statistics after 50 training passes, the gradient checks of batchnorm_backward
  and layernorm_backward, batchnorm_backward_alt against batchnorm_backward, the layer-norm
  forward check) and ``assignment2/Dropout.ipynb`` (dropout forward at three keep
  probabilities, the dropout gradient check). The notebooks seed NumPy's legacy generator
  (``np.random.seed(231)``); ``np.random.RandomState(231)`` here draws the same data, and
  the notebooks' printed "before" statistics confirm it value for value.
- d2l-ai/d2l-en (commit 23d7a5ae) ``chapter_convolutional-modern/batch-norm.md`` (the
  from-scratch ``batch_norm`` of its PyTorch, MXNet and JAX tabs, used by its ``BatchNorm``
  layer, and the layer-normalization formula of its "Layer Normalization" subsection) and
  ``chapter_multilayer-perceptrons/dropout.md`` (``dropout_layer``, its examples on
  ``X = arange(16).reshape(2, 8)`` at p = 0, 0.5 and 1, and the ``E[h'] = h`` property).

Conventions, translated to PyTorch's (which SPEC.md follows):

- cs231n's ``bn_param['momentum']`` (default 0.9) is the weight of the *old* running value
  (``running = momentum * running + (1 - momentum) * sample``): PyTorch's 0.1. cs231n
  starts ``running_var`` at 0 and updates it with the *biased* (uncorrected) batch
  variance; normdrop and PyTorch start at 1 and use the unbiased one. With batches of one
  size ``n`` the two recurrences are linear in the same terms, so after ``T`` batches
  ``normdrop = 0.9**T * 1 + n / (n - 1) * cs231n``; the running means agree (both start at
  0). The ports check exactly this relation.
- cs231n's dropout ``p`` is the *keep* probability (its docstring: "p is the probability
  of keep a neuron output"): keep ``p`` is normdrop's drop probability ``1 - p``, and the
  survivors' scale ``1 / p`` is normdrop's ``1 / (1 - drop)``.
- d2l's PyTorch and MXNet ``batch_norm`` update ``moving = (1 - momentum) * moving +
  momentum * batch`` with ``momentum=0.1``: PyTorch's convention and value. Its JAX tab
  writes ``momentum * moving + (1 - momentum) * batch`` with ``momentum=0.9``: the same
  update. (Before d2l-en#2213 the PyTorch tab passed 0.9 to the PyTorch-style update.)
  d2l's moving variance takes the biased batch variance and starts at 1: the same
  ``n / (n - 1)`` relation as above, with ``0.9**T`` of the initial 1 in both.
- d2l's dropout ``dropout`` argument is the drop probability, as normdrop's ``p``.

Expected numbers come from the sources' formulas written out in float64 here, from the
numbers the notebooks print, from PyTorch, or from central differences, never from
normdrop. Dropout masks come from each source's generator and normdrop's from Philox
(docs/differences.md), so the dropout ports check what the sources check: the mean is
preserved, the dropped fraction, identity at test time, the gradient by numerical
differentiation through the same seeded mask (as cs231n seeds its mask with
``dropout_param['seed']``). The dropout outputs the notebook copies print are the
students' own (that copy's ``dropout_forward`` drops whole columns), so they are not
compared.

Deliberate differences met (docs/differences.md): d2l's ``dropout_layer(X, 1)`` returns
zeros, while normdrop refuses ``p = 1`` in training (InvalidParameterError).

Not ported: the notebooks' ``FullyConnectedNet`` gradient checks and training runs (they
need cs231n's affine layers, softmax loss, Solver and CIFAR-10), the batch-size and
weight-scale experiments, the ``Inline Question`` cells, and d2l's LeNet training runs
(Fashion-MNIST). The notebook's timing ("speedup") of batchnorm_backward_alt is a benchmark,
not a check.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, host, tol, vec
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F
from normdrop.errors import InvalidParameterError

torch = pytest.importorskip("torch")


# ==================================================================================== cs231n
def _rel_error(x, y):
    """cs231n's notebooks' ``rel_error``: the largest elementwise relative error."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def _eval_numerical_gradient_array(f, x, df, h=1e-5):
    """cs231n ``gradient_check.py`` ``eval_numerical_gradient_array``: the gradient of
    ``sum(f(x) * df)`` by central differences, one element of ``x`` at a time (``x`` is
    perturbed in place and restored). Not conftest's ``central_differences`` of the sum:
    differencing each element's outputs before summing, as cs231n does, keeps the digits
    that its 1e-10 threshold on the dropout gradient needs."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        ix = it.multi_index
        oldval = x[ix]
        x[ix] = oldval + h
        pos = np.array(f(x), copy=True)
        x[ix] = oldval - h
        neg = np.array(f(x), copy=True)
        x[ix] = oldval
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def _cs231n_batchnorm_forward(x, gamma, beta, bn_param):
    """cs231n ``layers.py`` batchnorm_forward as its docstring specifies it, in float64:
    training normalises with the batch mean and *uncorrected* variance and updates
    ``running = momentum * running + (1 - momentum) * sample`` (momentum 0.9, running
    statistics starting at zeros); test mode normalises with the running statistics."""
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    d = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(d))
    running_var = bn_param.get("running_var", np.zeros(d))
    if bn_param["mode"] == "train":
        mean, var = x.mean(axis=0), x.var(axis=0)
        out = gamma * (x - mean) / np.sqrt(var + eps) + beta
        running_mean = momentum * running_mean + (1 - momentum) * mean
        running_var = momentum * running_var + (1 - momentum) * var
    else:
        out = gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta
    bn_param["running_mean"], bn_param["running_var"] = running_mean, running_var
    return out


def _cs231n_layernorm_forward(x, gamma, beta, ln_param):
    """cs231n ``layers.py`` layernorm_forward: batch norm's training formula per data
    point (over axis 1), the same in train and test mode."""
    eps = ln_param.get("eps", 1e-5)
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def _two_layer_activations(rs, n, d1, w1, w2):
    """The notebooks' "forward pass for a two-layer network": ``relu(X W1) W2``."""
    x = rs.randn(n, d1)
    return np.maximum(0, x.dot(w1)).dot(w2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cs231n_batchnorm_forward_train(backend, dtype):
    """cs231n BatchNormalization.ipynb, "Batch normalization: forward" (first check):
    activations of a random two-layer net (seed 231, N=200, D=3) batch-normalised in
    training mode. The data's statistics are the notebook's printed "Before batch
    normalization" means and stds. With gamma=1, beta=0 the means are ~0 and the stds ~1;
    with gamma=[1, 2, 3], beta=[11, 12, 13] the means are beta and the stds the notebook's
    printed [0.99999999, 1.99999999, 2.99999999] (gamma shrunk by eps). The output equals
    batchnorm_forward's formula."""
    rs = np.random.RandomState(231)
    n, d1, d2, d3 = 200, 50, 60, 3
    x_in = rs.randn(n, d1)
    w1, w2 = rs.randn(d1, d2), rs.randn(d2, d3)
    a = np.maximum(0, x_in.dot(w1)).dot(w2)
    np.testing.assert_allclose(a.mean(axis=0), [-2.3814598, -13.18038246, 1.91780462], atol=1e-8)
    np.testing.assert_allclose(a.std(axis=0), [27.18502186, 34.21455511, 37.68611762], atol=1e-8)
    cases = [
        (np.ones(d3), np.zeros(d3), [1.0, 1.0, 1.0]),
        (
            np.array([1.0, 2.0, 3.0]),
            np.array([11.0, 12.0, 13.0]),
            [0.99999999, 1.99999999, 2.99999999],
        ),
    ]
    xa = a.astype(dtype)
    for gamma, beta, printed_stds in cases:
        y = backend.to_numpy(
            F.batch_norm(
                backend.asarray(xa),
                None,
                None,
                vec(backend, gamma.astype(dtype)),
                vec(backend, beta.astype(dtype)),
                True,
                backend=backend,
            )
        )
        assert y.dtype == dtype
        want = _cs231n_batchnorm_forward(xa.astype(np.float64), gamma, beta, {"mode": "train"})
        np.testing.assert_allclose(y, want, **tol(dtype, factor=4.0))
        y64 = y.astype(np.float64)
        close = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(y64.mean(axis=0), beta, rtol=0, atol=close * 10)
        np.testing.assert_allclose(
            y64.std(axis=0), gamma, rtol=1e-7 if dtype == np.float64 else 1e-5
        )
        np.testing.assert_allclose(
            y64.std(axis=0), printed_stds, rtol=0, atol=1e-8 if dtype == np.float64 else 1e-5
        )


def test_cs231n_batchnorm_test_time(backend):
    """cs231n BatchNormalization.ipynb, "Batch normalization: forward" (second check): 50
    training passes on fresh activations of one net (seed 231) warm up the running
    averages, then a test-time pass on new data gives means ~0 and stds ~1. cs231n's
    momentum 0.9 is PyTorch's 0.1. The cs231n recurrence, run here in float64, reproduces
    the notebook's printed test-time means [-0.03927354, -0.04349152, -0.10452688] and stds
    [1.01531428, 1.01238373, 0.97819988]. normdrop's running mean equals cs231n's; its
    running variance is ``0.9**50 + n / (n - 1) * cs231n's`` (it starts at 1 and takes the
    unbiased variance; cs231n's starts at 0 and takes the biased one). PyTorch's
    BatchNorm1d, run on the same batches, agrees, and the test-time output is the formula
    with normdrop's (PyTorch's) running statistics, whose means and stds are within 0.3 %
    of the notebook's (the ``n / (n - 1)`` of the variance)."""
    rs = np.random.RandomState(231)
    n, d1, d2, d3 = 200, 50, 60, 3
    w1, w2 = rs.randn(d1, d2), rs.randn(d2, d3)
    bn = normdrop.BatchNorm1d(d3, momentum=0.1, dtype="float64", backend=backend.name)
    tbn = torch.nn.BatchNorm1d(d3, momentum=0.1, dtype=torch.float64)
    bn_param = {"mode": "train"}
    gamma, beta = np.ones(d3), np.zeros(d3)
    steps = 50
    for _ in range(steps):
        a = _two_layer_activations(rs, n, d1, w1, w2)
        _cs231n_batchnorm_forward(a, gamma, beta, bn_param)
        bn(backend.asarray(a))
        tbn(_t(a))
    bn_param["mode"] = "test"
    a = _two_layer_activations(rs, n, d1, w1, w2)
    cs_norm = _cs231n_batchnorm_forward(a, gamma, beta, bn_param)
    np.testing.assert_allclose(
        cs_norm.mean(axis=0), [-0.03927354, -0.04349152, -0.10452688], atol=1e-8
    )
    np.testing.assert_allclose(cs_norm.std(axis=0), [1.01531428, 1.01238373, 0.97819988], atol=1e-8)

    rm, rv = host(backend, bn.running_mean), host(backend, bn.running_var)
    np.testing.assert_allclose(rm, bn_param["running_mean"], **tol(np.float64))
    want_rv = 0.9**steps * 1.0 + n / (n - 1) * bn_param["running_var"]
    np.testing.assert_allclose(rv, want_rv, **tol(np.float64))
    np.testing.assert_allclose(rm, tbn.running_mean.numpy(), **tol(np.float64, "torch"))
    np.testing.assert_allclose(rv, tbn.running_var.numpy(), **tol(np.float64, "torch"))
    assert int(host(backend, bn.num_batches_tracked)) == steps

    bn.eval()
    y = backend.to_numpy(bn(backend.asarray(a)))
    np.testing.assert_allclose(y, (a - rm) / np.sqrt(want_rv + 1e-5), **tol(np.float64))
    assert np.all(np.abs(y.mean(axis=0)) < 0.15) and np.all(np.abs(y.std(axis=0) - 1) < 0.05)
    np.testing.assert_allclose(y.mean(axis=0), cs_norm.mean(axis=0), rtol=3e-3)
    np.testing.assert_allclose(y.std(axis=0), cs_norm.std(axis=0), rtol=3e-3)
    np.testing.assert_array_equal(host(backend, bn.running_var), rv)  # eval changes nothing


def _gradient_check_data(seed=231, n=4, d=5):
    """The gradient checks' data: ``x = 5 * randn(N, D) + 12``, gamma, beta, dout."""
    rs = np.random.RandomState(seed)
    x = 5 * rs.randn(n, d) + 12
    return x, rs.randn(d), rs.randn(d), rs.randn(n, d)


def test_cs231n_batchnorm_backward_gradient_check(backend):
    """cs231n BatchNormalization.ipynb, "Batch normalization: backward": dx, dgamma and
    dbeta of batch norm in training mode (seed 231, N=4, D=5, x = 5 randn + 12) against
    ``eval_numerical_gradient_array`` through batchnorm_forward's formula. The notebook
    expects relative errors "between 1e-13 and 1e-8"."""
    x, gamma, beta, dout = _gradient_check_data()
    bn_param = {"mode": "train"}
    dx_num = _eval_numerical_gradient_array(
        lambda xx: _cs231n_batchnorm_forward(xx, gamma, beta, bn_param), x.copy(), dout
    )
    da_num = _eval_numerical_gradient_array(
        lambda g: _cs231n_batchnorm_forward(x, g, beta, bn_param), gamma.copy(), dout
    )
    db_num = _eval_numerical_gradient_array(
        lambda b: _cs231n_batchnorm_forward(x, gamma, b, bn_param), beta.copy(), dout
    )
    xb = backend.asarray(x)
    _, mean, rstd = F.batch_norm_with_stats(
        xb, None, None, vec(backend, gamma), vec(backend, beta), True, backend=backend
    )
    dx, dgamma, dbeta = F.batch_norm_backward(
        backend.asarray(dout), xb, mean, rstd, vec(backend, gamma), backend=backend
    )
    assert _rel_error(dx_num, backend.to_numpy(dx)) < 1e-8
    assert _rel_error(da_num, host(backend, dgamma)) < 1e-8
    assert _rel_error(db_num, host(backend, dbeta)) < 1e-8


def _cs231n_batchnorm_backward_graph(dout, x, gamma, eps=1e-5):
    """batchnorm_backward as the assignment asks for it: backpropagation through each node
    of the computation graph (mean, centred x, variance, std, inverse, normalised x), in
    float64."""
    n = x.shape[0]
    mu = x.mean(axis=0)
    xmu = x - mu
    var = (xmu**2).mean(axis=0)
    sqrtvar = np.sqrt(var + eps)
    ivar = 1.0 / sqrtvar
    xhat = xmu * ivar
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    divar = (dxhat * xmu).sum(axis=0)
    dxmu1 = dxhat * ivar
    dsqrtvar = -1.0 / sqrtvar**2 * divar
    dvar = 0.5 / np.sqrt(var + eps) * dsqrtvar
    dsq = np.ones_like(x) / n * dvar
    dxmu2 = 2 * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -dx1.sum(axis=0)
    dx2 = np.ones_like(x) / n * dmu
    return dx1 + dx2, dgamma, dbeta


def _cs231n_batchnorm_backward_alt(dout, x, gamma, eps=1e-5):
    """batchnorm_backward_alt: the simplified closed form the notebook derives,
    ``dx = gamma / (N sigma) * (N dout - sum(dout) - xhat * sum(dout * xhat))``."""
    n = x.shape[0]
    sigma = np.sqrt(x.var(axis=0) + eps)
    xhat = (x - x.mean(axis=0)) / sigma
    dbeta, dgamma = dout.sum(axis=0), (dout * xhat).sum(axis=0)
    dx = gamma / (n * sigma) * (n * dout - dbeta - xhat * dgamma)
    return dx, dgamma, dbeta


def test_cs231n_batchnorm_backward_alt(backend):
    """cs231n BatchNormalization.ipynb, "Batch normalization: alternative backward" (seed
    231, N=100, D=500, x = 5 randn + 12; D=20 under the CUDA simulator): the
    computation-graph backward and the simplified one agree (the notebook prints a dx
    difference of 1.3e-12 and 0.0 for dgamma and dbeta), and normdrop's gradients equal
    both to relative errors below 1e-10."""
    d = 20 if backend.name in SLOW_BACKENDS else 500
    x, gamma, beta, dout = _gradient_check_data(n=100, d=d)
    dx1, dgamma1, dbeta1 = _cs231n_batchnorm_backward_graph(dout, x, gamma)
    dx2, dgamma2, dbeta2 = _cs231n_batchnorm_backward_alt(dout, x, gamma)
    assert _rel_error(dx1, dx2) < 1e-10
    assert _rel_error(dgamma1, dgamma2) < 1e-12 and _rel_error(dbeta1, dbeta2) < 1e-12
    xb = backend.asarray(x)
    _, mean, rstd = F.batch_norm_with_stats(
        xb, None, None, vec(backend, gamma), vec(backend, beta), True, backend=backend
    )
    dx, dgamma, dbeta = F.batch_norm_backward(
        backend.asarray(dout), xb, mean, rstd, vec(backend, gamma), backend=backend
    )
    dx, dgamma, dbeta = backend.to_numpy(dx), host(backend, dgamma), host(backend, dbeta)
    for want_dx, want_dg, want_db in ((dx1, dgamma1, dbeta1), (dx2, dgamma2, dbeta2)):
        assert _rel_error(dx, want_dx) < 1e-10
        assert _rel_error(dgamma, want_dg) < 1e-10
        assert _rel_error(dbeta, want_db) < 1e-10


def test_cs231n_layernorm_forward(backend):
    """cs231n BatchNormalization.ipynb, "Layer Normalization: Implementation" (first
    check): activations of a random two-layer net (seed 231, N=4, D=3), whose per-row
    statistics are the notebook's printed "Before layer normalization" values,
    layer-normalised: with gamma=1, beta=0 the row means are ~0 and the row stds the
    printed [0.99999995, 0.99999999, 1., 0.99999969] (eps matters for the row of std 4);
    with gamma=3, beta=5 the means are 5 and the stds the printed [2.99999985, 2.99999998,
    2.99999999, 2.99999907]. The output equals layernorm_forward's formula."""
    rs = np.random.RandomState(231)
    n, d1, d2, d3 = 4, 50, 60, 3
    x_in = rs.randn(n, d1)
    w1, w2 = rs.randn(d1, d2), rs.randn(d2, d3)
    a = np.maximum(0, x_in.dot(w1)).dot(w2)
    np.testing.assert_allclose(
        a.mean(axis=1), [-59.06673243, -47.60782686, -43.31137368, -26.40991744], atol=1e-8
    )
    np.testing.assert_allclose(
        a.std(axis=1), [10.07429373, 28.39478981, 35.28360729, 4.01831507], atol=1e-8
    )
    cases = [
        (np.ones(d3), np.zeros(d3), [0.99999995, 0.99999999, 1.0, 0.99999969]),
        (np.full(d3, 3.0), np.full(d3, 5.0), [2.99999985, 2.99999998, 2.99999999, 2.99999907]),
    ]
    for gamma, beta, printed_stds in cases:
        y = backend.to_numpy(
            F.layer_norm(
                backend.asarray(a), d3, vec(backend, gamma), vec(backend, beta), backend=backend
            )
        )
        np.testing.assert_allclose(
            y, _cs231n_layernorm_forward(a, gamma, beta, {}), **tol(np.float64)
        )
        np.testing.assert_allclose(y.mean(axis=1), beta[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(y.std(axis=1), printed_stds, rtol=0, atol=1e-8)


def test_cs231n_layernorm_backward_gradient_check(backend):
    """cs231n BatchNormalization.ipynb, the layer-norm gradient check (seed 231, N=4, D=5,
    x = 5 randn + 12): dx, dgamma and dbeta against ``eval_numerical_gradient_array``
    through layernorm_forward's formula. The notebook expects relative errors "between
    1e-12 and 1e-8"."""
    x, gamma, beta, dout = _gradient_check_data()
    dx_num = _eval_numerical_gradient_array(
        lambda xx: _cs231n_layernorm_forward(xx, gamma, beta, {}), x.copy(), dout
    )
    da_num = _eval_numerical_gradient_array(
        lambda g: _cs231n_layernorm_forward(x, g, beta, {}), gamma.copy(), dout
    )
    db_num = _eval_numerical_gradient_array(
        lambda b: _cs231n_layernorm_forward(x, gamma, b, {}), beta.copy(), dout
    )
    xb = backend.asarray(x)
    _, mean, rstd = F.layer_norm_with_stats(
        xb, 5, vec(backend, gamma), vec(backend, beta), backend=backend
    )
    dx, dgamma, dbeta = F.layer_norm_backward(
        backend.asarray(dout), xb, 5, mean, rstd, vec(backend, gamma), backend=backend
    )
    assert _rel_error(dx_num, backend.to_numpy(dx)) < 1e-8
    assert _rel_error(da_num, host(backend, dgamma)) < 1e-8
    assert _rel_error(db_num, host(backend, dbeta)) < 1e-8


@pytest.mark.parametrize("keep", [0.25, 0.4, 0.7])
def test_cs231n_dropout_forward(backend, keep):
    """cs231n Dropout.ipynb, "Dropout forward pass": ``x = randn(500, 500) + 10`` (seed
    231; 20 x 500 under the CUDA simulator) through dropout with keep probability
    0.25, 0.4 and 0.7 (cs231n's ``p``; normdrop's drop probability is ``1 - keep``). The
    train-time output's mean is the input's (inverted dropout) and the fraction set to zero
    is ``1 - keep``, each within five standard errors (at 500 x 500 and keep 0.25: 1.7 %
    of the mean, 0.004 of the fraction); kept values are ``x / keep``; the test-time output
    is the input itself, with no zeros."""
    rows = 20 if backend.name in SLOW_BACKENDS else 500
    x = np.random.RandomState(231).randn(rows, 500) + 10
    p = 1.0 - keep
    xb = backend.asarray(x)
    out = backend.to_numpy(F.dropout(xb, p, True, seed=231, backend=backend))
    out_test = F.dropout(xb, p, False, seed=231, backend=backend)
    assert out_test is xb
    out_test = backend.to_numpy(out_test)
    # five standard errors of the mean of x * mask / keep and of the zero fraction
    assert abs(out.mean() - x.mean()) < 5 * np.sqrt(np.mean(x**2) * (1 - keep) / keep / x.size)
    assert abs((out == 0).mean() - (1 - keep)) < 5 * np.sqrt(keep * (1 - keep) / x.size)
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / keep, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(out_test, x)
    assert (out_test == 0).mean() == 0.0


def test_cs231n_dropout_backward_gradient_check(backend):
    """cs231n Dropout.ipynb, "Dropout backward pass": ``x = randn(10, 10) + 10``, dout
    (seed 231), dropout with cs231n's ``{'mode': 'train', 'p': 0.2, 'seed': 123}`` (keep
    0.2: normdrop's p = 0.8, survivors scaled by 5). cs231n fixes the mask with the seed so
    that the function it differentiates numerically is deterministic; normdrop's mask is
    fixed by ``(seed, call)``. dx, from the regenerated mask and from the forward's
    bitmask, against ``eval_numerical_gradient_array`` through that forward: relative
    error "around e-10 or less" (the notebook); every entry is ``dout * 5`` or 0. Under the
    CUDA simulator the central differences perturb every element at once (dropout is
    elementwise, so that is the same diagonal Jacobian in two calls instead of 200)."""
    rs = np.random.RandomState(231)
    x = rs.randn(10, 10) + 10
    dout = rs.randn(*x.shape)
    p, seed = 0.8, 123

    def forward(xx):
        return backend.to_numpy(F.dropout(backend.asarray(xx), p, seed=seed, backend=backend))

    _, bitmask = F.dropout_with_bitmask(backend.asarray(x), p, seed=seed, backend=backend)
    dx = backend.to_numpy(F.dropout_backward(backend.asarray(dout), p, seed=seed, backend=backend))
    dx_bits = F.dropout_backward(
        backend.asarray(dout), p, seed=seed, bitmask=bitmask, backend=backend
    )
    if backend.name in SLOW_BACKENDS:  # dropout is elementwise: two calls give the diagonal
        h = 1e-5
        dx_num = (forward(x + h) - forward(x - h)) / (2 * h) * dout
    else:
        dx_num = _eval_numerical_gradient_array(forward, x.copy(), dout)
    assert _rel_error(dx, dx_num) < 1e-10
    np.testing.assert_array_equal(backend.to_numpy(dx_bits), dx)
    assert np.all((dx == 0) | np.isclose(dx, dout * 5.0, rtol=1e-15, atol=0))


# ======================================================================================= d2l
def _d2l_batch_norm(x, gamma, beta, moving_mean, moving_var, eps, momentum, training, tab):
    """d2l batch-norm.md ``batch_norm`` (PyTorch and MXNet tabs, ``tab="pytorch"``; JAX
    tab, ``tab="jax"``, whose ``momentum`` weights the old value), in float64 NumPy, for 2-D
    ``(N, C)`` or 4-D ``(N, C, H, W)`` data: batch mean and biased variance in training
    (then the moving averages are updated), the moving averages in prediction mode. The
    parameters have shape ``(1, C)`` or ``(1, C, 1, 1)``, as d2l's ``BatchNorm`` keeps
    them."""
    if not training:
        x_hat = (x - moving_mean) / np.sqrt(moving_var + eps)
    else:
        assert x.ndim in (2, 4)
        if x.ndim == 2:
            mean = x.mean(axis=0)
            var = ((x - mean) ** 2).mean(axis=0)
        else:
            mean = x.mean(axis=(0, 2, 3), keepdims=True)
            var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        x_hat = (x - mean) / np.sqrt(var + eps)
        if tab == "jax":
            moving_mean = momentum * moving_mean + (1.0 - momentum) * mean
            moving_var = momentum * moving_var + (1.0 - momentum) * var
        else:
            moving_mean = (1.0 - momentum) * moving_mean + momentum * mean
            moving_var = (1.0 - momentum) * moving_var + momentum * var
    y = gamma * x_hat + beta
    return y, moving_mean, moving_var


@pytest.mark.parametrize(
    ("tab", "d2l_momentum", "eps"),
    [("pytorch", 0.1, 1e-5), ("mxnet", 0.1, 1e-12), ("jax", 0.9, 1e-5)],
)
@pytest.mark.parametrize("shape", [(16, 6), (4, 3, 5, 5)], ids=["fc", "conv"])
def test_d2l_batch_norm_scratch(backend, tab, d2l_momentum, eps, shape):
    """d2l batch-norm.md, "Implementation from Scratch": ``batch_norm`` as d2l's
    ``BatchNorm`` layer calls it (gamma 1 and beta 0 at first, here random; moving mean 0
    and moving variance 1 at first; PyTorch tab eps 1e-5 and momentum 0.1, MXNet tab eps
    1e-12, JAX tab momentum 0.9 weighting the old value: all PyTorch's 0.1), for a fully
    connected layer ``(N, C)`` and a convolutional one ``(N, C, H, W)``. Three training
    steps then one prediction step: the outputs equal d2l's, the moving means equal d2l's,
    and the moving variances are ``0.9**3 + n / (n - 1) * (d2l's - 0.9**3)`` (d2l averages
    the biased batch variance, normdrop and PyTorch the unbiased one). PyTorch's
    BatchNorm1d/2d with the same steps agrees on the running statistics and outputs."""
    rng = np.random.default_rng(7)
    c = shape[1]
    pshape = (1, c) if len(shape) == 2 else (1, c, 1, 1)
    gamma, beta = rng.normal(1.0, 0.3, pshape), rng.normal(0.0, 0.5, pshape)
    mm, mv = np.zeros(pshape), np.ones(pshape)
    momentum = d2l_momentum if tab != "jax" else 1.0 - d2l_momentum
    rm, rv = vec(backend, np.zeros(c)), vec(backend, np.ones(c))
    tmod = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(
        c, eps=eps, momentum=momentum, dtype=torch.float64
    )
    with torch.no_grad():
        tmod.weight.copy_(_t(gamma.ravel()))
        tmod.bias.copy_(_t(beta.ravel()))
    steps = 3
    for step in range(steps + 1):
        training = step < steps
        x = rng.normal(3.0, 2.0, shape)
        want, mm, mv = _d2l_batch_norm(x, gamma, beta, mm, mv, eps, d2l_momentum, training, tab)
        if not training:  # prediction: d2l's formula with PyTorch's (normdrop's) moving stats
            want_rm, want_rv = host(backend, rm), host(backend, rv)
            want = (
                gamma * (x - want_rm.reshape(pshape)) / np.sqrt(want_rv.reshape(pshape) + eps)
                + beta
            )
        y = F.batch_norm(
            backend.asarray(x),
            rm,
            rv,
            vec(backend, gamma.ravel()),
            vec(backend, beta.ravel()),
            training,
            momentum,
            eps,
            backend=backend,
        )
        np.testing.assert_allclose(backend.to_numpy(y), want, **tol(np.float64))
        tmod.train(training)
        with torch.no_grad():
            ty = tmod(_t(x)).numpy()
        np.testing.assert_allclose(backend.to_numpy(y), ty, **tol(np.float64, "torch"))
    n = shape[0] * int(np.prod(shape[2:]))
    start = (1 - momentum) ** steps
    np.testing.assert_allclose(host(backend, rm), mm.ravel(), **tol(np.float64))
    np.testing.assert_allclose(
        host(backend, rv), start + n / (n - 1) * (mv.ravel() - start), **tol(np.float64)
    )
    np.testing.assert_allclose(
        host(backend, rm), tmod.running_mean.numpy(), **tol(np.float64, "torch")
    )
    np.testing.assert_allclose(
        host(backend, rv), tmod.running_var.numpy(), **tol(np.float64, "torch")
    )


def test_d2l_layer_norm_formula_and_scale_independence(backend):
    """d2l batch-norm.md, "Layer Normalization": ``LN(x) = (x - mu) / sigma`` with
    ``sigma**2 = mean((x - mu)**2) + eps`` per observation; "ignoring eps, the output is
    scale independent: LN(x) ~ LN(alpha x) for any alpha != 0, an equality as |alpha| goes
    to infinity" (for alpha > 0: a negative alpha flips the sign, which the book leaves
    out); it "does not depend on the minibatch size" and is the same in training and test.
    Checked: normdrop's layer_norm equals the formula; the distance of LN(alpha x) from the
    eps-free standardisation shrinks as alpha grows (and is below 1e-12 at alpha 1e6);
    LN(-x) = -LN(x); each row normalised alone equals the row in the batch; a LayerNorm
    layer gives the same output in train and eval mode."""
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 0.01, (5, 8))  # a small spread, where eps shows
    d = x.shape[1]

    def formula(v, eps=1e-5):
        mu = v.mean(axis=-1, keepdims=True)
        return (v - mu) / np.sqrt(((v - mu) ** 2).mean(axis=-1, keepdims=True) + eps)

    def ln(v):
        return backend.to_numpy(F.layer_norm(backend.asarray(v), d, backend=backend))

    y = ln(x)
    np.testing.assert_allclose(y, formula(x), **tol(np.float64))
    limit = formula(x, eps=0.0)
    gaps = [np.abs(ln(alpha * x) - limit).max() for alpha in (1.0, 10.0, 1e3, 1e6)]
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[0] > 1e-2 and gaps[-1] < 1e-12
    np.testing.assert_allclose(ln(-x), -y, rtol=0, atol=1e-12)
    for i in range(x.shape[0]):
        np.testing.assert_allclose(ln(x[i : i + 1]), y[i : i + 1], rtol=0, atol=1e-14)
    layer = normdrop.LayerNorm(d, dtype="float64", backend=backend.name)
    train_out = backend.to_numpy(layer(backend.asarray(x)))
    eval_out = backend.to_numpy(layer.eval()(backend.asarray(x)))
    np.testing.assert_array_equal(train_out, eval_out)
    np.testing.assert_allclose(train_out, formula(x), **tol(np.float64))


def _d2l_dropout_layer(x, dropout, uniform):
    """d2l dropout.md ``dropout_layer`` with its uniform draws given: zeros at
    ``dropout == 1``, else ``(uniform > dropout) * X / (1.0 - dropout)``."""
    assert 0 <= dropout <= 1
    if dropout == 1:
        return np.zeros_like(x)
    mask = (uniform > dropout).astype(x.dtype)
    return mask * x / (x.dtype.type(1.0) - x.dtype.type(dropout))


def test_d2l_dropout_layer_examples(backend):
    """d2l dropout.md, "test out the dropout_layer function on a few examples":
    ``X = arange(16, dtype=float32).reshape(2, 8)`` at dropout 0, 0.5 and 1. At 0 d2l
    returns X: normdrop returns the input itself. At 0.5 every element is 0 or ``2 X``
    exactly: d2l's formula with normdrop's keep-mask (``dropout_mask``) standing for the
    draws ``uniform > 0.5`` gives normdrop's output, and the backward pass zeroes the same
    elements. At 1 d2l returns zeros (so does PyTorch); normdrop refuses ``p = 1`` in
    training (docs/differences.md) and returns X outside training, as d2l's model does
    (dropout only while training)."""
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    xb = backend.asarray(x)
    assert F.dropout(xb, 0.0, seed=5, backend=backend) is xb
    np.testing.assert_array_equal(backend.to_numpy(xb), _d2l_dropout_layer(x, 0.0, np.ones_like(x)))

    y = backend.to_numpy(F.dropout(xb, 0.5, seed=5, backend=backend))
    assert y.dtype == np.float32
    keep = backend.to_numpy(F.dropout_mask(x.shape, 0.5, seed=5, backend=backend))
    np.testing.assert_array_equal(y, _d2l_dropout_layer(x, 0.5, np.where(keep, 1.0, 0.0)))
    assert np.all((y == 0) | (y == 2 * x))
    g = backend.to_numpy(
        F.dropout_backward(backend.asarray(np.ones_like(x)), 0.5, seed=5, backend=backend)
    )
    np.testing.assert_array_equal(g, np.where(keep, 2.0, 0.0))

    np.testing.assert_array_equal(_d2l_dropout_layer(x, 1.0, None), np.zeros_like(x))
    np.testing.assert_array_equal(torch.nn.functional.dropout(_t(x), 1.0).numpy(), 0.0)
    with pytest.raises(InvalidParameterError, match=r"Dropout probability must be in \[0, 1\)"):
        F.dropout(xb, 1.0, seed=5, backend=backend)
    assert F.dropout(xb, 1.0, False, backend=backend) is xb
    with pytest.raises(InvalidParameterError, match="Dropout probability"):
        normdrop.Dropout(1.0)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_d2l_dropout_expectation_and_variance(backend, p):
    """d2l dropout.md: ``h' = 0`` with probability p and ``h / (1 - p)`` otherwise, so
    "the expectation remains unchanged, E[h'] = h" (and, its exercise 3, ``Var[h'] = h**2
    p / (1 - p)``). d2l's drop probabilities 0.2 and 0.5 (its ``dropout_1`` and
    ``dropout_2``), on 4000 rows of ``h = arange(1, 17)`` (400 under the CUDA simulator):
    each column's mean is h within 5 standard errors and its variance ``h**2 p / (1 - p)``
    within 10 %; outside training the output is h."""
    rows = 400 if backend.name in SLOW_BACKENDS else 4000
    h = np.arange(1, 17, dtype=np.float64)
    x = np.tile(h, (rows, 1))
    xb = backend.asarray(x)
    y = backend.to_numpy(F.dropout(xb, p, seed=2024, backend=backend))
    var = h**2 * p / (1 - p)
    assert np.all(np.abs(y.mean(axis=0) - h) < 5 * np.sqrt(var / rows))
    np.testing.assert_allclose(y.var(axis=0), var, rtol=0.1 if rows >= 4000 else 0.3)
    assert F.dropout(xb, p, False, backend=backend) is xb
