"""An adversarial audit of the numbers against PyTorch and of the layer API, third round:
NaN in the backward pass, float16 data near its largest value, and the fused layer's
``repr``. Expected values come from PyTorch, never from normdrop. Everything is float32
(float16 data runs the same kernels), which keeps this file's compile time short. A test
whose docstring says what happened before its fix guards a bug found by this audit; the
others pin down behaviour the audit checked on every backend and found right."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tol

import normdrop
from normdrop import functional as F

torch = pytest.importorskip("torch")

#: One NaN in channel 2 (column 2) of a batch-norm input, row 0 of a layer-norm input.
_X_NAN = np.array(
    [[1.0, 0.5, np.nan], [3.0, 2.0, 2.0], [0.0, 2.0, 1.0], [0.5, -1.0, 4.0]], np.float32
)
_GRAD = np.array(
    [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [1.0, 0.0, -1.0], [-2.0, 0.25, 0.5]], np.float32
)


def _host(backend, a):
    """A result of ``backend`` (a layer's gradient or buffer too) as a NumPy array."""
    return np.asarray(a) if backend.device == "cpu" else backend.to_numpy(a)


def _assert_like_torch(got, expected):
    """Same NaN positions as PyTorch's float32 result, and the same finite values."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, equal_nan=True, **tol(np.float32, "torch", 10))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the CUDA simulator's nan - nan
@pytest.mark.parametrize("which", ["BatchNorm1d", "LayerNorm"])
def test_one_nan_in_the_backward_pass_as_in_torch(backend, which):
    """A NaN in one channel (BatchNorm1d) or one row (LayerNorm): the input gradient is NaN in
    that channel or row only, and the parameter gradients where PyTorch's are NaN."""
    if which == "BatchNorm1d":
        layer = normdrop.BatchNorm1d(3, backend=backend.name)
        oracle = torch.nn.BatchNorm1d(3)
    else:
        layer = normdrop.LayerNorm(3, backend=backend.name)
        oracle = torch.nn.LayerNorm(3)
    y = layer(backend.asarray(_X_NAN))
    grad_x = layer.backward(backend.asarray(_GRAD))
    tx = torch.from_numpy(_X_NAN.copy()).requires_grad_()
    ty = oracle(tx)
    ty.backward(torch.from_numpy(_GRAD))
    _assert_like_torch(_host(backend, y), ty.detach().numpy())
    _assert_like_torch(_host(backend, grad_x), tx.grad.numpy())
    _assert_like_torch(_host(backend, layer.grads["weight"]), oracle.weight.grad.numpy())
    _assert_like_torch(_host(backend, layer.grads["bias"]), oracle.bias.grad.numpy())
    if which == "BatchNorm1d":
        _assert_like_torch(_host(backend, layer.running_var), oracle.running_var.numpy())


def test_float16_near_its_largest_value_does_not_overflow_the_statistics(backend):
    """float16 data up to 65504: the sums of squares (about 1e10) overflow float16 but not the
    float32 statistics of PyTorch nor normdrop's float64 ones; outputs and running
    statistics are PyTorch's (float32 kernels on the same values)."""
    x = np.array(
        [[65504, 60000, 1], [65000, -65504, 2], [64000, 0, 3], [1000, 100, 4]], dtype=np.float16
    )
    tx = torch.from_numpy(x.astype(np.float32))
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    y = _host(backend, bn(backend.asarray(x)))
    oracle = torch.nn.BatchNorm1d(3)
    ty = oracle(tx).detach().numpy()
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float32), ty, **tol(np.float16, "torch"))
    for got, expected in (
        (bn.running_mean, oracle.running_mean),
        (bn.running_var, oracle.running_var),
    ):
        np.testing.assert_allclose(_host(backend, got), expected.numpy(), rtol=1e-6)
    rows = backend.asarray(np.ascontiguousarray(x.T))
    ln = _host(backend, F.layer_norm(rows, 4, backend=backend))
    tln = torch.nn.functional.layer_norm(tx.T.contiguous(), (4,)).numpy()
    assert np.isfinite(ln).all()
    np.testing.assert_allclose(ln.astype(np.float32), tln, **tol(np.float16, "torch"))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((4,), {}),
        ((4,), {"bias": False}),
        ((4,), {"elementwise_affine": False}),
        (((2, 3),), {"eps": 1e-3, "elementwise_affine": False, "bias": False}),
    ],
)
def test_fused_layer_repr_says_whether_it_has_a_bias(args, kwargs):
    """``DropoutAddLayerNorm(4, elementwise_affine=False)`` showed ``bias=True`` for a layer
    with no bias, where ``LayerNorm``'s repr (and PyTorch's) shows ``bias=False``: the
    LayerNorm part of the repr now equals ``torch.nn.LayerNorm``'s."""
    layer = normdrop.DropoutAddLayerNorm(*args, p=0.25, seed=1, **kwargs)
    norm = repr(torch.nn.LayerNorm(*args, **kwargs))  # LayerNorm((shape), eps=..., ...)
    shape, rest = norm[len("LayerNorm(") : -1].split("), ", 1)
    assert repr(layer) == f"DropoutAddLayerNorm({shape}), p=0.25, {rest})"
    assert (layer.bias is not None) == ("bias=True" in rest)
