"""PyTorch's OpInfo samples and Python references, and Equinox's, Triton's and CuPy's tests
of batch norm, layer norm and dropout, ported to normdrop.

Each test names its source:

- ``torch/testing/_internal/common_methods_invocations.py`` (read from the PyTorch 2.13
  wheel the tests install): the sample inputs of the OpInfos ``native_batch_norm``,
  ``_native_batch_norm_legit``, ``_batch_norm_with_update``, ``native_layer_norm``,
  ``nn.functional.dropout`` and ``native_dropout_backward``. Each sample runs through
  PyTorch's ATen op, forward and backward (autograd), and through normdrop's
  ``*_with_stats`` and ``*_backward`` functions, in float64 and float32 (float32 data
  against PyTorch's float64 results on the same values, see :func:`_t64`).
  ``tests/test_ported_torch.py`` already ports the forward samples of
  ``nn.functional.batch_norm`` and ``nn.functional.layer_norm``; this file adds the saved
  statistics, the running-statistics updates of the native ops, the weight/bias
  permutations and every gradient.
- PyTorch's Python references of the same ops, called directly as oracles:
  ``torch/_refs/__init__.py`` ``native_layer_norm``, ``torch/_refs/nn/functional`` ``dropout``,
  and ``torch/_decomp/decompositions.py`` ``native_batch_norm`` (its running-statistics
  update included), ``native_batch_norm_backward``, ``native_layer_norm_backward`` and
  ``native_dropout``.
- patrick-kidger/equinox ``tests/test_nn.py`` (test_batch_norm with ``mode="batch"``, its
  vmapped axes, test_layer_norm's ``use_weight``/``use_bias``, Dropout with ``p`` 0 and 1);
  the tests of it already in ``tests/test_ported_others.py`` are not repeated.
- triton-lang/triton ``python/tutorials/05-layer-norm.py`` ``test_layer_norm``.
- cupy/cupy ``tests/cupyx_tests/test_cudnn.py`` ``TestCudnnDropout`` (CuPy's cuDNN batch
  normalisation has no test of its own in CuPy; Chainer's, which exercise it, are in
  ``tests/test_ported_more.py``).

Where normdrop departs from PyTorch on purpose (docs/differences.md), the port checks
normdrop's documented behaviour and says so: a ``momentum`` outside [0, 1] in training, a
non-positive ``eps`` and ``p = 1`` in training are refused; ``batch_norm`` without running
statistics uses batch statistics in evaluation too; the ``*_backward`` functions return no
parameter gradients without a ``weight``. Where another project's convention differs from
PyTorch's (Equinox's ``momentum`` is the weight of the *old* running value, its ``"batch"``
mode debiases a zero-started average, its layers see one example at a time under
``jax.vmap``), the port checks the property in PyTorch's terms. Not ported: the two samples
of ``sample_inputs_batch_norm`` with the 1-D input ``(0,)`` (PyTorch accepts a 1-D input
only when it and the running statistics are empty; normdrop's ``batch_norm`` takes rank 2 or
more), and double backward (``test_fn_gradgrad``): normdrop has no autograd.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, host, skip_on_slow_backend, tol, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F
from normdrop.errors import InvalidParameterError, ShapeError

torch = pytest.importorskip("torch")
decomp = pytest.importorskip("torch._decomp.decompositions")
refs = pytest.importorskip("torch._refs")
refs_functional = pytest.importorskip("torch._refs.nn.functional")
aten = torch.ops.aten

#: common_methods_invocations.py's S (the "small" size of its samples).
S = 5


def _fast(backend):
    skip_on_slow_backend(backend, "a loop over many samples; too slow under the CUDA simulator")


def _one_on_slow(backend, chosen: bool) -> None:
    """Under the CUDA simulator, run only the ``chosen`` parametrisation."""
    if backend.name in SLOW_BACKENDS and not chosen:
        pytest.skip("one parametrisation is enough under the CUDA simulator")


def _on_dask_fewer(backend, cases: list) -> list:
    """``cases``, or every other one on the dask backend (it builds a task graph per call)."""
    return cases[::2] if backend.name == "dask" else cases


def _req(a):
    """A tensor of ``a`` that records its gradient (None stays None)."""
    return None if a is None else _t(a).requires_grad_(True)


def _t64(a):
    """A float64 tensor of ``a``'s values (None stays None). Float32 samples are compared with
    PyTorch's float64 results on the same values: its float32 CPU kernels fold the statistics
    into float32 coefficients, which leaves rounding noise where the exact result is 0 (a
    one-element layer norm's weight gradient comes out 1.6e-4 instead of 0)."""
    return None if a is None else _t(np.asarray(a, np.float64))


def _req64(a):
    """:func:`_t64`, recording its gradient."""
    return None if a is None else _t64(a).requires_grad_(True)


def _close(got, want, dtype, factor=1.0, err_msg=""):
    """``got`` equals PyTorch's ``want`` within ``tol(dtype, "torch", factor)``, the absolute
    part scaled by the largest magnitude in ``want`` (gradients reach hundreds here)."""
    want = np.asarray(want, np.float64)
    close = tol(dtype, "torch", factor)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(
        np.asarray(got, np.float64),
        want,
        rtol=close["rtol"],
        atol=close["atol"] * scale,
        err_msg=err_msg,
    )


# ============================================================================ batch norm
# sample_inputs_batch_norm: (input shape, kwargs) in its order, then the three samples of its
# loop "Checking for permutations of weights and biases as `None`", which reuse the last
# input shape (2, 1) with training True, False, False (and, as written, pass a weight and a
# bias every time; test_decomp_native_batch_norm_and_backward does the permutations). The
# last sample, (1, 2, 3) without weight, bias or running statistics, is in
# test_opinfo_native_batch_norm_legit_no_stats.
BN_CASES = [
    ((S, S, S), {"training": True, "momentum": 0.5, "eps": 0.6}),
    ((3, 2, 4), {"training": False, "momentum": -1.2}),
    ((3, 1), {"training": True, "momentum": 0.0}),
    ((3, 2, 3, 4), {"training": True, "momentum": -1.0, "eps": 0.5}),
    ((3, 2, 3, 4), {"training": False, "momentum": -1.0, "eps": 0.5}),
    ((2, 1), {}),
    ((2, 1), {"training": True}),
    ((2, 1), {"training": False}),
]
BN_IDS = [
    "SSS-train-eps0.6",
    "eval-momentum-1.2",
    "3x1-momentum0",
    "4d-train-momentum-1",
    "4d-eval-eps0.5",
    "2x1-defaults",
    "2x1-train",
    "2x1-eval",
]


def _native_args(kwargs):
    """sample_inputs_native_batch_norm's (training, momentum, eps): the sample's, or True,
    0.5 and 1e-5."""
    return kwargs.get("training", True), kwargs.get("momentum", 0.5), kwargs.get("eps", 1e-5)


def _bn_data(shape, dtype, seed):
    """make_tensor's ranges: input, weight, bias (and here a gradient) in [-9, 9), running
    statistics in [0, 9)."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.uniform(-9, 9, shape).astype(dtype)
    w = rng.uniform(-9, 9, c).astype(dtype)
    b = rng.uniform(-9, 9, c).astype(dtype)
    rm = rng.uniform(0, 9, c).astype(dtype)
    rv = rng.uniform(0, 9, c).astype(dtype)
    g = rng.uniform(-9, 9, shape).astype(dtype)
    return x, w, b, rm, rv, g


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", range(len(BN_CASES)), ids=BN_IDS)
def test_opinfo_native_batch_norm(backend, dtype, case):
    """OpInfo native_batch_norm (sample_inputs_native_batch_norm: each batch_norm sample as
    (input, weight, bias, running_mean, running_var, training, momentum, eps), training
    defaulting to True and momentum to 0.5). The output, the saved mean and inverse standard
    deviation and the updated running statistics equal torch.native_batch_norm's; the input,
    weight and bias gradients of batch_norm_backward equal autograd's through it. In
    evaluation PyTorch's CPU kernel saves empty statistics; normdrop returns those it used,
    the running mean and 1/sqrt(running_var + eps), checked against that formula. A momentum
    outside [0, 1] in training (PyTorch extrapolates) is refused and changes nothing
    (docs/differences.md). On the CUDA simulator one sample."""
    _one_on_slow(backend, case == 0 and dtype == np.float32)
    shape, kwargs = BN_CASES[case]
    training, momentum, eps = _native_args(kwargs)
    x, w, b, rm, rv, g = _bn_data(shape, dtype, 300 + case)
    rmb, rvb = vec(backend, rm), vec(backend, rv)
    wb = vec(backend, w)
    args = (backend.asarray(x), rmb, rvb, wb, vec(backend, b), training, momentum, eps)
    if training and not 0 <= momentum <= 1:
        with pytest.raises(InvalidParameterError, match=f"momentum must be .* got {momentum}"):
            F.batch_norm_with_stats(*args, backend=backend)
        np.testing.assert_array_equal(host(backend, rmb), rm)
        np.testing.assert_array_equal(host(backend, rvb), rv)
        return
    tx, tw, tb = _req64(x), _req64(w), _req64(b)
    trm, trv = _t64(rm), _t64(rv)
    out, save_mean, save_invstd = torch.native_batch_norm(
        tx, tw, tb, trm, trv, training, momentum, eps
    )
    out.backward(_t64(g))
    y, mean, rstd = F.batch_norm_with_stats(*args, backend=backend)
    y = backend.to_numpy(y)
    assert y.dtype == dtype and y.shape == shape
    _close(y, _np(out), dtype, err_msg="output")
    if training:
        _close(host(backend, mean), _np(save_mean), dtype, err_msg="save_mean")
        _close(host(backend, rstd), _np(save_invstd), dtype, err_msg="save_invstd")
    else:
        assert save_mean.numel() == 0
        np.testing.assert_allclose(host(backend, mean), rm, rtol=1e-15)
        want_rstd = 1 / np.sqrt(rv.astype(np.float64) + eps)
        np.testing.assert_allclose(host(backend, rstd), want_rstd, rtol=1e-14)
    _close(host(backend, rmb), trm.numpy(), dtype, err_msg="running_mean")
    _close(host(backend, rvb), trv.numpy(), dtype, err_msg="running_var")
    grads = F.batch_norm_backward(
        backend.asarray(g), backend.asarray(x), mean, rstd, wb, training=training, backend=backend
    )
    for name, got, want in zip(("input", "weight", "bias"), grads, (tx, tw, tb), strict=True):
        _close(host(backend, got), want.grad.numpy(), dtype, 10, err_msg=name)


@pytest.mark.parametrize("training", [True, False])
def test_opinfo_native_batch_norm_legit_no_stats(backend, training):
    """OpInfo _native_batch_norm_legit, its no_stats overload: sample_inputs_batch_norm's
    last sample, (1, 2, 3) with no weight, bias or running statistics, momentum 0.5 (the
    native default). The output, the saved statistics and the input gradient equal
    torch._native_batch_norm_legit's (autograd) in training. normdrop normalises with the
    batch statistics in evaluation too when no running statistics are given
    (docs/differences.md), so training=False gives the same numbers; PyTorch 2.13's CPU
    kernel crashes the interpreter on that call, so the training result is the oracle."""
    _one_on_slow(backend, training)
    rng = np.random.default_rng(310)
    x, g = rng.uniform(-9, 9, (1, 2, 3)), rng.uniform(-9, 9, (1, 2, 3))
    tx = _req(x)
    out, save_mean, save_invstd = torch._native_batch_norm_legit(tx, None, None, True, 0.5, 1e-5)
    out.backward(_t(g))
    xb = backend.asarray(x)
    y, mean, rstd = F.batch_norm_with_stats(xb, training=training, momentum=0.5, backend=backend)
    _close(backend.to_numpy(y), _np(out), np.float64)
    _close(host(backend, mean), _np(save_mean), np.float64)
    _close(host(backend, rstd), _np(save_invstd), np.float64)
    dx, dw, db = F.batch_norm_backward(
        backend.asarray(g), xb, mean, rstd, training=True, backend=backend
    )
    _close(backend.to_numpy(dx), tx.grad.numpy(), np.float64, 10)
    assert dw is None and db is None


def test_opinfo_batch_norm_with_update(backend):
    """OpInfo _batch_norm_with_update (sample_inputs__batch_norm_with_update: every sample
    with weight, bias and running statistics, as (input, weight, bias, running_mean,
    running_var, momentum, eps), momentum defaulting to 0.5; always training). The output,
    the saved statistics and the running statistics it updates in place equal
    aten._batch_norm_with_update's, in float64; the samples with momentum -1.2 and -1.0 are
    refused with the running statistics unchanged (docs/differences.md)."""
    _fast(backend)
    for case, (shape, kwargs) in enumerate(BN_CASES):
        _, momentum, eps = _native_args(kwargs)
        x, w, b, rm, rv, _ = _bn_data(shape, np.float64, 320 + case)
        rmb, rvb = vec(backend, rm), vec(backend, rv)
        args = (backend.asarray(x), rmb, rvb, vec(backend, w), vec(backend, b), True)
        if not 0 <= momentum <= 1:
            with pytest.raises(InvalidParameterError, match="momentum must be"):
                F.batch_norm_with_stats(*args, momentum, eps, backend=backend)
            np.testing.assert_array_equal(host(backend, rmb), rm)
            np.testing.assert_array_equal(host(backend, rvb), rv)
            continue
        trm, trv = _t(rm.copy()), _t(rv.copy())
        out, save_mean, save_rstd, _ = aten._batch_norm_with_update(
            _t(x), _t(w), _t(b), trm, trv, momentum, eps
        )
        y, mean, rstd = F.batch_norm_with_stats(*args, momentum, eps, backend=backend)
        msg = f"sample {BN_IDS[case]}"
        _close(backend.to_numpy(y), _np(out), np.float64, err_msg=msg)
        _close(host(backend, mean), _np(save_mean), np.float64, err_msg=msg)
        _close(host(backend, rstd), _np(save_rstd), np.float64, err_msg=msg)
        _close(host(backend, rmb), trm.numpy(), np.float64, err_msg=msg)
        _close(host(backend, rvb), trv.numpy(), np.float64, err_msg=msg)


# The weight/bias permutations sample_inputs_batch_norm's comment announces.
AFFINE = [(True, True), (False, True), (True, False), (False, False)]
AFFINE_IDS = ["weight_bias", "bias_only", "weight_only", "neither"]


@pytest.mark.parametrize(("with_weight", "with_bias"), AFFINE, ids=AFFINE_IDS)
def test_decomp_native_batch_norm_and_backward(backend, with_weight, with_bias):
    """torch/_decomp/decompositions.py: native_batch_norm (native_batch_norm_helper, which
    also updates the running statistics in place) and native_batch_norm_backward, PyTorch's
    Python references, in float64 on every sample of BN_CASES that normdrop accepts, with
    and without weight and bias. The output, saved statistics, running statistics and input
    gradient equal the references'; with a weight, so do the weight and bias gradients.
    Without a weight normdrop's backward returns no parameter gradients, also where the
    forward had a bias (docs/differences.md; the reference returns them). On dask every
    other sample."""
    _fast(backend)
    for case, (shape, kwargs) in _on_dask_fewer(backend, list(enumerate(BN_CASES))):
        training, momentum, eps = _native_args(kwargs)
        if training and not 0 <= momentum <= 1:
            continue  # refused: test_opinfo_native_batch_norm
        x, w, b, rm, rv, g = _bn_data(shape, np.float64, 330 + case)
        w = w if with_weight else None
        b = b if with_bias else None
        tx, tw, tb = _t(x), None if w is None else _t(w), None if b is None else _t(b)
        trm, trv = _t(rm.copy()), _t(rv.copy())
        out, save_mean, save_rstd = decomp.native_batch_norm(
            tx, tw, tb, trm, trv, training, momentum, eps
        )
        want = decomp.native_batch_norm_backward(
            _t(g), tx, tw, trm, trv, save_mean, save_rstd, training, eps, [True, True, True]
        )
        rmb, rvb = vec(backend, rm), vec(backend, rv)
        wb, xb = vec(backend, w), backend.asarray(x)
        y, mean, rstd = F.batch_norm_with_stats(
            xb, rmb, rvb, wb, vec(backend, b), training, momentum, eps, backend=backend
        )
        msg = f"sample {BN_IDS[case]}"
        _close(backend.to_numpy(y), _np(out), np.float64, err_msg=msg)
        if training:
            _close(host(backend, mean), _np(save_mean), np.float64, err_msg=msg)
            _close(host(backend, rstd), _np(save_rstd), np.float64, err_msg=msg)
        _close(host(backend, rmb), trm.numpy(), np.float64, err_msg=msg)
        _close(host(backend, rvb), trv.numpy(), np.float64, err_msg=msg)
        dx, dw, db = F.batch_norm_backward(
            backend.asarray(g), xb, mean, rstd, wb, training=training, backend=backend
        )
        _close(backend.to_numpy(dx), _np(want[0]), np.float64, 10, err_msg=msg)
        if w is None:
            assert dw is None and db is None
        else:
            _close(host(backend, dw), _np(want[1]), np.float64, 10, err_msg=msg)
            _close(host(backend, db), _np(want[2]), np.float64, 10, err_msg=msg)


@pytest.mark.parametrize("shape", [(0, 3, 2), (0, 3), (2, 3, 0)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_zero_size_batch_forward_and_backward(backend, shape, training):
    """The zero-size batches of the OpInfo tests in the shapes normdrop takes
    (torch.native_batch_norm refuses empty input, so the sample functions skip them; their
    nn.functional.batch_norm form runs): an empty output, running statistics unchanged
    (momentum 0.3), an empty input gradient and zero weight and bias gradients, as
    torch.nn.functional.batch_norm and autograd give."""
    _one_on_slow(backend, shape == (0, 3, 2) and training)
    rng = np.random.default_rng(340)
    w, b = rng.uniform(-9, 9, 3), rng.uniform(-9, 9, 3)
    rm, rv = rng.uniform(0, 9, 3), rng.uniform(0, 9, 3)
    tx, tw, tb = _req(np.zeros(shape)), _req(w), _req(b)
    trm, trv = _t(rm.copy()), _t(rv.copy())
    out = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training, 0.3)
    out.backward(torch.ones_like(out))
    rmb, rvb, wb = vec(backend, rm), vec(backend, rv), vec(backend, w)
    xb = backend.asarray(np.zeros(shape))
    y, mean, rstd = F.batch_norm_with_stats(
        xb, rmb, rvb, wb, vec(backend, b), training, 0.3, backend=backend
    )
    assert backend.to_numpy(y).shape == tuple(out.shape) == shape
    np.testing.assert_array_equal(host(backend, rmb), trm.numpy())
    np.testing.assert_array_equal(host(backend, rvb), trv.numpy())
    dx, dw, db = F.batch_norm_backward(
        backend.asarray(np.ones(shape)), xb, mean, rstd, wb, training=training, backend=backend
    )
    assert backend.to_numpy(dx).shape == shape
    np.testing.assert_array_equal(host(backend, dw), tw.grad.numpy())
    np.testing.assert_array_equal(host(backend, db), tb.grad.numpy())


# ============================================================================ layer norm
# sample_inputs_native_layer_norm: (input shape, normalized_shape, eps), each with weight and
# bias, without weight, without bias and without both. Its sample ((2, 2, 3), (2, 3),
# eps=-0.5) is refused by normdrop (test_ported_torch.py: test_opinfo_layer_norm_negative_eps).
LN_CASES = [
    ((1, 2, 3), (1, 2, 3), 0.5),
    ((1,), (1,), 1e-5),
    ((1, 2), (2,), 1e-5),
    ((0, 1), (1,), 1e-5),
]
LN_IDS = ["full-eps0.5", "one-element", "1x2", "empty"]


def _ln_data(shape, normalized_shape, dtype, seed, with_weight=True, with_bias=True):
    """make_tensor's range [-9, 9) for the input, weight, bias and a gradient."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-9, 9, shape).astype(dtype)
    w = rng.uniform(-9, 9, normalized_shape).astype(dtype) if with_weight else None
    b = rng.uniform(-9, 9, normalized_shape).astype(dtype) if with_bias else None
    g = rng.uniform(-9, 9, shape).astype(dtype)
    return x, w, b, g


def _dev(backend, a):
    """A data array on the backend (None stays None)."""
    return None if a is None else backend.asarray(a)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("with_weight", "with_bias"), AFFINE, ids=AFFINE_IDS)
@pytest.mark.parametrize("case", range(len(LN_CASES)), ids=LN_IDS)
def test_opinfo_native_layer_norm(backend, case, with_weight, with_bias, dtype):
    """OpInfo native_layer_norm (sample_inputs_native_layer_norm): the output, the saved mean
    and rstd (PyTorch keeps them with trailing 1s, normdrop without) equal
    torch.native_layer_norm's; the input gradient of layer_norm_backward equals autograd's,
    and with a weight so does the weight gradient, and the bias gradient where there is a
    bias. Without a weight normdrop returns no parameter gradients (docs/differences.md).
    On the CUDA simulator one sample."""
    _one_on_slow(backend, case == 0 and with_weight and with_bias and dtype == np.float32)
    shape, normalized_shape, eps = LN_CASES[case]
    x, w, b, g = _ln_data(shape, normalized_shape, dtype, 400 + case, with_weight, with_bias)
    tx, tw, tb = _req64(x), _req64(w), _req64(b)
    out, t_mean, t_rstd = torch.native_layer_norm(tx, normalized_shape, tw, tb, eps)
    out.backward(_t64(g))
    xb = backend.asarray(x)
    y, mean, rstd = F.layer_norm_with_stats(
        xb, normalized_shape, _dev(backend, w), _dev(backend, b), eps, backend=backend
    )
    y = backend.to_numpy(y)
    assert y.dtype == dtype and y.shape == shape
    _close(y, _np(out), dtype, err_msg="output")
    stat_shape = shape[: len(shape) - len(normalized_shape)]
    assert tuple(t_mean.shape) == stat_shape + (1,) * len(normalized_shape)
    _close(host(backend, mean), _np(t_mean).reshape(stat_shape), dtype, err_msg="mean")
    _close(host(backend, rstd), _np(t_rstd).reshape(stat_shape), dtype, err_msg="rstd")
    dx, dw, db = F.layer_norm_backward(
        backend.asarray(g), xb, normalized_shape, mean, rstd, _dev(backend, w), backend=backend
    )
    _close(backend.to_numpy(dx), tx.grad.numpy(), dtype, 10, err_msg="input gradient")
    if w is None:
        assert dw is None and db is None
        return
    _close(host(backend, dw), tw.grad.numpy(), dtype, 10, err_msg="weight gradient")
    if b is not None:
        _close(host(backend, db), tb.grad.numpy(), dtype, 10, err_msg="bias gradient")


# (input shape, normalized_shape): normalized shapes of one to four dimensions, a single
# feature, and empty inputs.
LN_REF_SHAPES = [
    ((2, 3, 4, 5), (5,)),
    ((2, 3, 4, 5), (4, 5)),
    ((2, 3, 4, 5), (3, 4, 5)),
    ((2, 3, 4, 5), (2, 3, 4, 5)),
    ((7, 1), (1,)),
    ((0, 4), (4,)),
    ((3, 0, 4), (4,)),
]


@pytest.mark.filterwarnings("ignore:var_mean:UserWarning")
@pytest.mark.parametrize(("with_weight", "with_bias"), AFFINE, ids=AFFINE_IDS)
def test_refs_native_layer_norm_and_decomp_backward(backend, with_weight, with_bias):
    """torch/_refs/__init__.py native_layer_norm (PyTorch's Python reference: var_mean,
    rsqrt, then the weight and bias) and torch/_decomp/decompositions.py
    native_layer_norm_backward, called as oracles in float64 with eps 1e-5 and 0.5 on
    normalized shapes of one to four dimensions and empty inputs: output, mean, rstd and the
    input gradient equal the references'; with a weight, the weight gradient and (with a
    bias) the bias gradient. The reference returns no weight or bias gradient without a
    weight but a bias gradient for a bias alone; normdrop returns neither without a weight
    (docs/differences.md). On dask eps 1e-5 only."""
    _fast(backend)
    for i, (shape, normalized_shape) in enumerate(LN_REF_SHAPES):
        for eps in _on_dask_fewer(backend, [1e-5, 0.5]):
            x, w, b, g = _ln_data(shape, normalized_shape, np.float64, 410 + i, with_weight,
                                  with_bias)  # fmt: skip
            tx, tw, tb = _t(x), None if w is None else _t(w), None if b is None else _t(b)
            out, t_mean, t_rstd = refs.native_layer_norm(tx, normalized_shape, tw, tb, eps)
            want = decomp.native_layer_norm_backward(
                _t(g), tx, list(normalized_shape), t_mean, t_rstd, tw, tb, [True, True, True]
            )
            xb = backend.asarray(x)
            y, mean, rstd = F.layer_norm_with_stats(
                xb, normalized_shape, _dev(backend, w), _dev(backend, b), eps, backend=backend
            )
            msg = f"{shape} over {normalized_shape}, eps {eps}"
            stat_shape = shape[: len(shape) - len(normalized_shape)]
            _close(backend.to_numpy(y), _np(out), np.float64, err_msg=msg)
            _close(host(backend, mean), _np(t_mean).reshape(stat_shape), np.float64, err_msg=msg)
            _close(host(backend, rstd), _np(t_rstd).reshape(stat_shape), np.float64, err_msg=msg)
            dx, dw, db = F.layer_norm_backward(
                backend.asarray(g), xb, normalized_shape, mean, rstd, _dev(backend, w),
                backend=backend,
            )  # fmt: skip
            _close(backend.to_numpy(dx), _np(want[0]), np.float64, 10, err_msg=msg)
            if w is None:
                assert dw is None and db is None
                continue
            _close(host(backend, dw), _np(want[1]), np.float64, 10, err_msg=msg)
            if b is not None:
                _close(host(backend, db), _np(want[2]), np.float64, 10, err_msg=msg)


# ====================================================================== non-contiguous
def _noncontiguous(a):
    """make_tensor(..., noncontiguous=True): ``a``'s values in every other element of a buffer
    twice as long in the last dimension (None and 0-d arrays unchanged)."""
    if a is None or a.ndim == 0:
        return a
    buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    buf[..., ::2] = a
    view = buf[..., ::2]
    assert not view.flags.c_contiguous or view.size <= 1
    return view


def test_opinfo_noncontiguous_samples(backend):
    """test_ops.py test_noncontiguous_samples for native_batch_norm and native_layer_norm:
    every sample (weight and bias too) as a non-contiguous view, as make_tensor's
    ``noncontiguous=True`` makes them, with a non-contiguous gradient: outputs, running
    statistics and gradients equal PyTorch's on the same values, in float64."""
    _fast(backend)
    for case, (shape, kwargs) in enumerate(BN_CASES):
        training, momentum, eps = _native_args(kwargs)
        if training and not 0 <= momentum <= 1:
            continue
        x, w, b, rm, rv, g = _bn_data(shape, np.float64, 350 + case)
        tx, tw, tb = _req(x), _req(w), _req(b)
        trm, trv = _t(rm.copy()), _t(rv.copy())
        out = torch.native_batch_norm(tx, tw, tb, trm, trv, training, momentum, eps)[0]
        out.backward(_t(g))
        xb, wb = backend.asarray(_noncontiguous(x)), _noncontiguous(vec(backend, w))
        rmb, rvb = _noncontiguous(vec(backend, rm)), _noncontiguous(vec(backend, rv))
        y, mean, rstd = F.batch_norm_with_stats(
            xb, rmb, rvb, wb, _noncontiguous(vec(backend, b)), training, momentum, eps,
            backend=backend,
        )  # fmt: skip
        msg = f"batch norm sample {BN_IDS[case]}"
        _close(backend.to_numpy(y), _np(out), np.float64, err_msg=msg)
        _close(host(backend, rmb), trm.numpy(), np.float64, err_msg=msg)
        _close(host(backend, rvb), trv.numpy(), np.float64, err_msg=msg)
        grads = F.batch_norm_backward(backend.asarray(_noncontiguous(g)), xb, mean, rstd, wb,
                                      training=training, backend=backend)  # fmt: skip
        for got, want in zip(grads, (tx, tw, tb), strict=True):
            _close(host(backend, got), want.grad.numpy(), np.float64, 10, err_msg=msg)
    for case, (shape, normalized_shape, eps) in enumerate(LN_CASES):
        x, w, b, g = _ln_data(shape, normalized_shape, np.float64, 450 + case)
        tx, tw, tb = _req(x), _req(w), _req(b)
        out = torch.native_layer_norm(tx, normalized_shape, tw, tb, eps)[0]
        out.backward(_t(g))
        xb, wb = backend.asarray(_noncontiguous(x)), backend.asarray(_noncontiguous(w))
        y, mean, rstd = F.layer_norm_with_stats(
            xb, normalized_shape, wb, backend.asarray(_noncontiguous(b)), eps, backend=backend
        )
        msg = f"layer norm sample {LN_IDS[case]}"
        _close(backend.to_numpy(y), _np(out), np.float64, err_msg=msg)
        grads = F.layer_norm_backward(backend.asarray(_noncontiguous(g)), xb, normalized_shape,
                                      mean, rstd, wb, backend=backend)  # fmt: skip
        for got, want in zip(grads, (tx, tw, tb), strict=True):
            _close(host(backend, got), want.grad.numpy(), np.float64, 10, err_msg=msg)


# ================================================================================ dropout
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("shape", [(S, S, S, S), (S,), ()], ids=["SSSS", "S", "scalar"])
def test_opinfo_native_dropout_backward(backend, shape, scale, dtype):
    """OpInfo native_dropout_backward (sample_inputs_dropout_backward: shapes (S, S, S, S),
    (S,) and (), scale 0, 1 and 2, where scale = 1 / (1 - p)). The forward's survivors are
    x * scale exactly and its zeros are the dropped elements (the decomposition
    native_dropout's ``mask * input * (1 / (1 - p))``); dropout_backward, regenerating the
    mask from (seed, call) or reading the forward's bitmask, equals
    aten.native_dropout_backward(grad, that mask, scale). Scale 1 is p = 0 (the gradient is
    grad_output itself); scale 0 would be p = 1, which normdrop refuses in training
    (docs/differences.md) while PyTorch's backward gives zeros. On the CUDA simulator only
    shape (S,) in float32."""
    _one_on_slow(backend, shape == (S,) and dtype == np.float32)
    rng = np.random.default_rng(500)
    x = rng.uniform(1, 2, shape).astype(dtype)  # no zeros: a zero output is a dropped element
    g = rng.uniform(-9, 9, shape).astype(dtype)
    gb = backend.asarray(g)
    if scale == 0.0:
        want = aten.native_dropout_backward(_t(g), torch.zeros(shape, dtype=torch.bool), 0.0)
        np.testing.assert_array_equal(want.numpy(), np.zeros(shape))
        with pytest.raises(InvalidParameterError, match=r"must be in \[0, 1\), got 1.0"):
            F.dropout_backward(gb, 1.0, seed=7, call=2, backend=backend)
        return
    p = 1 - 1 / scale
    xb = backend.asarray(x)
    y, bitmask = F.dropout_with_bitmask(xb, p, seed=7, call=2, backend=backend)
    if p == 0:
        assert y is xb and bitmask is None
    y = backend.to_numpy(y)
    mask = y != 0
    np.testing.assert_array_equal(y, _np(_t(mask) * _t(x) * scale))
    want = _np(aten.native_dropout_backward(_t(g), _t(mask), scale))
    got = F.dropout_backward(gb, p, seed=7, call=2, backend=backend)
    if p == 0:
        assert got is gb
    np.testing.assert_array_equal(backend.to_numpy(got), want)
    if bitmask is not None:
        got = F.dropout_backward(gb, p, bitmask=bitmask, backend=backend)
        np.testing.assert_array_equal(backend.to_numpy(got), want)


@pytest.mark.parametrize("shape", [(S, S), (S,), ()], ids=["SS", "S", "scalar"])
def test_refs_dropout_returns_its_input(backend, shape):
    """torch/_refs/nn/functional dropout and the decomposition native_dropout return their
    input tensor itself outside training (for every p of sample_inputs_dropout: 0, 0.5
    and 1) and for p = 0 in training; normdrop's dropout returns its input array itself in
    the same cases (SPEC). For p = 1 in training the reference returns zeros; normdrop
    refuses (docs/differences.md)."""
    _one_on_slow(backend, shape == (S,))
    x = np.random.default_rng(510).uniform(1, 2, shape)
    tx, xb = _t(x), backend.asarray(x)
    for p, training in ((0.0, False), (0.5, False), (1.0, False), (0.0, True)):
        assert refs_functional.dropout(tx, p, training) is tx
        assert decomp.native_dropout(tx, p, training)[0] is tx
        assert F.dropout(xb, p, training, seed=3, backend=backend) is xb
    np.testing.assert_array_equal(refs_functional.dropout(tx, 1.0, True).numpy(), np.zeros(shape))
    with pytest.raises(InvalidParameterError, match="got 1.0"):
        F.dropout(xb, 1.0, True, seed=3, backend=backend)


# ================================================================================ Equinox
# patrick-kidger/equinox tests/test_nn.py (test_dropout_basic, test_dropout_inference,
# test_layer_norm, test_batch_norm in mode "ema" and test_batch_norm_zero_training_steps are
# in tests/test_ported_others.py).


def test_equinox_batch_norm_batch_mode(backend):
    """Equinox test_batch_norm, mode="batch": training updates a zero-started average,
    ``hidden = 0.99 * hidden + 0.01 * batch`` (Equinox's momentum 0.99 is the weight of the
    old value), and inference reads it debiased, ``hidden / (1 - 0.99**k)`` after k batches:
    the average of the k batch statistics with weights 0.99**(k - j). In PyTorch's terms
    (momentum 0.01 is the weight of the batch; running_mean starts at 0, running_var at 1
    and takes the unbiased variance): after each of the batches x1, 3 * x1 + 10 and a
    (10, 5, 6) one, running_mean / (1 - 0.99**k) and (running_var - 0.99**k) /
    (1 - 0.99**k) equal those weighted averages of the batch means and unbiased variances,
    computed here in float64. Both statistics change in training and not in evaluation
    (4 * x1 + 20), which normalises with them."""
    rng = np.random.default_rng(600)
    x1 = rng.uniform(size=(10, 5))
    batches = [x1, 3 * x1 + 10, rng.uniform(size=(10, 5, 6))]
    bn = normdrop.BatchNorm1d(5, momentum=0.01, affine=False, dtype=np.float64,
                              backend=backend.name)  # fmt: skip
    means, variances = [], []
    before = None
    for k, x in enumerate(batches, 1):
        axes = (0,) if x.ndim == 2 else (0, 2)
        n = x.size // 5
        means.append(x.mean(axes))
        variances.append(x.var(axes) * n / (n - 1))
        weights = 0.99 ** np.arange(k - 1, -1, -1.0)
        want_mean = weights @ np.array(means) / weights.sum()
        want_var = weights @ np.array(variances) / weights.sum()
        bn(backend.asarray(x))
        debias = 1 - 0.99**k
        mean, var = host(backend, bn.running_mean).copy(), host(backend, bn.running_var).copy()
        np.testing.assert_allclose(mean / debias, want_mean, rtol=1e-12)
        np.testing.assert_allclose((var - 0.99**k) / debias, want_var, rtol=1e-10)
        if before is not None:
            assert not np.allclose(mean, before[0]) and not np.allclose(var, before[1])
        before = (mean, var)
    x = 4 * x1 + 20
    y = backend.to_numpy(bn.eval()(backend.asarray(x)))
    np.testing.assert_array_equal(host(backend, bn.running_mean), before[0])
    np.testing.assert_array_equal(host(backend, bn.running_var), before[1])
    np.testing.assert_allclose(y, (x - before[0]) / np.sqrt(before[1] + 1e-5), rtol=1e-12)


def test_equinox_batch_norm_vmapped_axes(backend):
    """Equinox test_batch_norm, "vmaps with other vmaps without axis_name" and "handles
    multiple axis_names", in PyTorch's layout. Equinox's layer sees one example at a time
    and takes its statistics over the vmapped axes named by ``axis_name``. For x2 of shape
    (10, 5, 6): (1) an outer vmap over axis 0 and the named one over axis 2 give statistics
    per (outer index, channel) over the 6 values, running statistics of shape (10, 5): here
    BatchNorm1d(50) on the (6, 50) matrix whose columns are those pairs; (2) two named vmaps
    over axes 0 and 1 of x2 with 6 channels (the last axis): BatchNorm1d(6) on the transposed
    view x2.transpose(0, 2, 1), shape (10, 6, 5). Outputs, shapes and running statistics
    equal torch.nn.BatchNorm1d's."""
    rng = np.random.default_rng(601)
    x2 = rng.uniform(size=(10, 5, 6))
    pairs = np.ascontiguousarray(x2.transpose(2, 0, 1).reshape(6, 50))
    channels_last = x2.transpose(0, 2, 1)
    for data, c in ((pairs, 50), (channels_last, 6)):
        bn = normdrop.BatchNorm1d(c, dtype=np.float64, backend=backend.name)
        tbn = torch.nn.BatchNorm1d(c, dtype=torch.float64)
        y = backend.to_numpy(bn(backend.asarray(data)))
        assert y.shape == data.shape
        _close(y, _np(tbn(_t(data))), np.float64)
        for name in ("running_mean", "running_var"):
            got = host(backend, getattr(bn, name))
            assert got.shape == (c,)
            _close(got, getattr(tbn, name).numpy(), np.float64, err_msg=name)


@pytest.mark.parametrize("eps", [1e-5, 0.1])
@pytest.mark.parametrize(
    ("use_weight", "use_bias"),
    [(True, True), (True, False), (False, False), (False, True)],
    ids=["weight_bias", "weight_only", "neither", "bias_only"],
)
def test_equinox_layer_norm_use_weight_use_bias(backend, use_weight, use_bias, eps):
    """Equinox test_layer_norm and LayerNorm(shape, eps, use_weight, use_bias): the output is
    ``(x - mean) * rsqrt(var + eps)``, times the weight if used, plus the bias if used,
    over the whole (128,), (16, 16) (Equinox: (128, 128)) and (10,) input. In normdrop:
    LayerNorm(shape), LayerNorm(shape, bias=False), LayerNorm(shape,
    elementwise_affine=False), and for a bias without a weight (no PyTorch module has one)
    functional.layer_norm(x, shape, None, bias). The weight and bias are random (Equinox's
    are ones and zeros at first, which would hide them). Equinox refuses input whose shape
    is not ``shape`` (batches go through jax.vmap); in PyTorch's terms leading dimensions
    are batch dimensions, so a (3, 16, 16) input equals the three examples normalised one at
    a time, and an input whose trailing dimensions differ raises ShapeError. On dask shapes
    (128,) and (10,); under the CUDA simulator (128,)."""
    rng = np.random.default_rng(602)
    for shape in _on_dask_fewer(backend, [(128,), (16, 16), (10,)]):
        x = rng.uniform(size=(3,) + shape)
        w, b = rng.uniform(0.5, 1.5, shape), rng.uniform(-1, 1, shape)
        axes = tuple(range(1, x.ndim))
        want = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
        want = want * (w if use_weight else 1) + (b if use_bias else 0)
        if use_weight or not use_bias:
            ln = normdrop.LayerNorm(shape, eps, use_weight, use_bias, dtype=np.float64,
                                    backend=backend.name)  # fmt: skip
            if use_weight:
                ln.weight = w
            if use_bias:
                ln.bias = b

            def norm(a, ln=ln):
                return backend.to_numpy(ln(backend.asarray(a)))
        else:

            def norm(a, shape=shape, b=b):
                return backend.to_numpy(F.layer_norm(
                    backend.asarray(a), shape, None, _dev(backend, b), eps, backend=backend
                ))  # fmt: skip

        y = norm(x)
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
        for i in range(3):
            np.testing.assert_allclose(norm(x[i]), y[i], rtol=1e-13, atol=1e-13)
        with pytest.raises(ShapeError, match="expected input with shape"):
            norm(rng.uniform(size=shape[:-1] + (shape[-1] + 1,)))
        if backend.name in SLOW_BACKENDS:
            break


def test_equinox_dropout_p0_and_p1(backend):
    """Equinox Dropout: with p = 0 the layer is in inference whatever its flag
    (``if self.p == 0: inference = True``) and returns x; normdrop's Dropout(0) returns the
    input array itself in training and evaluation (SPEC; its call counter still advances).
    With p = 1 Equinox keeps nothing (``where(mask, x / 0, 0)`` with an all-False mask)
    and returns zeros; normdrop refuses Dropout(1) (docs/differences.md), and
    functional.dropout with p = 1 outside training returns the input, as PyTorch's does."""
    x = np.random.default_rng(603).standard_normal((3, 4, 5))
    xb = backend.asarray(x)
    drop = normdrop.Dropout(0.0, seed=1, backend=backend.name)
    assert drop(xb) is xb and drop.eval()(xb) is xb
    assert drop.call_count == 1
    with pytest.raises(InvalidParameterError, match=r"must be in \[0, 1\), got 1.0"):
        normdrop.Dropout(1.0)
    assert F.dropout(xb, 1.0, training=False, backend=backend) is xb


# ================================================================================ Triton
@functools.lru_cache(maxsize=2)
def _triton_case(m: int, n: int):
    """The tutorial's data for an (m, n) input, in float16, and PyTorch's y, dx, dw and db:
    computed in float32 on the same values and rounded to float16 (see
    test_triton_tutorial_layer_norm)."""
    rng = np.random.default_rng(700)
    w = rng.uniform(size=n).astype(np.float16)
    b = rng.uniform(size=n).astype(np.float16)
    x = (-2.3 + 0.5 * rng.standard_normal((m, n))).astype(np.float16)
    dy = (0.1 * rng.standard_normal((m, n))).astype(np.float16)
    tx, tw, tb = (_req(a.astype(np.float32)) for a in (x, w, b))
    y_ref = torch.nn.functional.layer_norm(tx, (n,), tw, tb, 1e-5)
    y_ref.backward(_t(dy.astype(np.float32)))
    wants = [_np(t).astype(np.float16) for t in (y_ref, tx.grad, tw.grad, tb.grad)]
    return (x, w, b, dy), wants


def test_triton_tutorial_layer_norm(backend):
    """triton-lang/triton python/tutorials/05-layer-norm.py: test_layer_norm(1151, 8192,
    torch.float16), eps 1e-5: weight and bias rand(N), x = -2.3 + 0.5 * randn((M, N)),
    dy = 0.1 * randn; the output and the x, weight and bias gradients, all float16, equal
    torch.nn.functional.layer_norm's forward and autograd, ``torch.allclose(..., atol=1e-2,
    rtol=0)``. The tutorial runs PyTorch on a GPU, whose float16 kernels accumulate in
    float32; PyTorch 2.13's CPU float16 backward does not (its weight gradient here is 0.08
    off the exact sum), so the oracle is PyTorch in float32 on the same float16 values,
    rounded to float16. The tutorial's (M, N) on the numba backend; (1151, 1024) on numpy
    and dask, whose float16 path takes seconds at full size; (3, 64) under the CUDA
    simulator."""
    m, n = {"numba": (1151, 8192), "cuda": (3, 64)}.get(backend.name, (1151, 1024))
    (x, w, b, dy), wants = _triton_case(m, n)
    xb, wb = backend.asarray(x), backend.asarray(w)
    y, mean, rstd = F.layer_norm_with_stats(xb, (n,), wb, backend.asarray(b), 1e-5,
                                            backend=backend)  # fmt: skip
    grads = F.layer_norm_backward(backend.asarray(dy), xb, (n,), mean, rstd, wb, backend=backend)
    got = [backend.to_numpy(y)] + [host(backend, a) for a in grads]
    for name, a, want in zip(("y", "dx", "dw", "db"), got, wants, strict=True):
        assert a.dtype == np.float16, name
        np.testing.assert_allclose(a.astype(np.float32), want.astype(np.float32), rtol=0,
                                   atol=1e-2, err_msg=name)  # fmt: skip


# ================================================================================== CuPy
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_cudnn_dropout(backend, dtype):
    """cupy/cupy tests/cupyx_tests/test_cudnn.py TestCudnnDropout, for ratio 0, 0.1, 0.2
    and 0.5 and seed 0 and 100, with x = gy = shaped_arange((3, 4)) = 1..12.
    test_dropout_forward: ratio 0 gives y == x, any other ratio changes every element (to 0
    or x / (1 - ratio)). test_dropout_backward: gx / gy equals y / x (the backward's mask is
    the forward's). test_dropout_seed: two DropoutStates with the same seed give the same y
    and gx; here two Dropout layers with the same seed. On the CUDA simulator ratio 0.5 and
    seed 0 in float32."""
    _one_on_slow(backend, dtype == np.float32)
    x = np.arange(1, 13, dtype=dtype).reshape(3, 4)
    cases = [(r, s) for r in (0.0, 0.1, 0.2, 0.5) for s in (0, 100)]
    if backend.name in SLOW_BACKENDS:
        cases = [(0.5, 0)]
    for ratio, seed in cases:
        results = []
        for _ in range(2):
            layer = normdrop.Dropout(ratio, seed=seed, backend=backend.name)
            y = backend.to_numpy(layer(backend.asarray(x)))
            gx = backend.to_numpy(layer.backward(backend.asarray(x)))
            results.append((y, gx))
        (y, gx), (y2, gx2) = results
        if ratio == 0:
            np.testing.assert_array_equal(y, x)
        else:
            assert np.all(y != x), (ratio, seed)
            kept = y != 0
            np.testing.assert_allclose(y[kept], x[kept] / (1 - ratio), rtol=1e-6)
        np.testing.assert_array_equal(gx / x, y / x)
        np.testing.assert_array_equal(y2, y)
        np.testing.assert_array_equal(gx2, gx)
