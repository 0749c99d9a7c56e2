"""Property-based comparison with PyTorch (issue 11): random shapes, options and dtypes for
forward, running statistics after several steps, and backward. Short by design."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import normdrop  # noqa: E402
from normdrop import functional as F  # noqa: E402

_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
_DTYPES = {
    "float32": (np.float32, torch.float32, 2e-4),
    "float64": (np.float64, torch.float64, 1e-9),
}


def _close(ours, theirs, tol, what):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * 10, err_msg=what)


def _same_parameters(rng, ours, theirs, np_dtype):
    """Random values for every parameter, the same in both layers."""
    for name, param in theirs.named_parameters():
        value = rng.standard_normal(tuple(param.shape)).astype(np_dtype)
        getattr(ours, name)[...] = value
        with torch.no_grad():
            param.copy_(torch.from_numpy(value))


def _step(ours, theirs, x, g, tol):
    """One forward and backward of both layers: outputs and input gradients agree."""
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = theirs(xt)
    yt.backward(torch.from_numpy(g))
    _close(ours(x), yt, tol, "forward")
    _close(ours.backward(g), xt.grad, tol * 10, "grad_input")


def _parameter_grads(ours, theirs, tol):
    """The accumulated gradient of every parameter agrees."""
    for name, param in theirs.named_parameters():
        _close(ours.grads[name], param.grad, tol * 10, f"grad_{name}")


@_SETTINGS
@given(
    n=st.integers(2, 6),
    c=st.integers(1, 4),
    length=st.sampled_from([None, 1, 3]),
    affine=st.booleans(),
    track=st.booleans(),
    momentum=st.sampled_from([0.1, 0.5, 1.0, None]),
    eps=st.sampled_from([1e-5, 1e-3, 0.5]),
    dtype=st.sampled_from(sorted(_DTYPES)),
    steps=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_batchnorm1d_matches_torch(n, c, length, affine, track, momentum, eps, dtype, steps, seed):
    np_dtype, t_dtype, tol = _DTYPES[dtype]
    rng = np.random.default_rng(seed)
    shape = (n, c) if length is None else (n, c, length)
    ours = normdrop.BatchNorm1d(c, eps, momentum, affine, track, dtype=dtype, backend="numba")
    theirs = torch.nn.BatchNorm1d(c, eps, momentum, affine, track, dtype=t_dtype)
    _same_parameters(rng, ours, theirs, np_dtype)
    for step in range(steps):
        x = (rng.standard_normal(shape) * 3 + step).astype(np_dtype)
        g = rng.standard_normal(shape).astype(np_dtype)
        _step(ours, theirs, x, g, tol)
    _parameter_grads(ours, theirs, tol)
    if track:
        _close(ours.running_mean, theirs.running_mean, tol, "running_mean")
        _close(ours.running_var, theirs.running_var, tol, "running_var")
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)
        ours.eval()
        theirs.eval()
        x = rng.standard_normal(shape).astype(np_dtype)
        _close(ours(x), theirs(torch.from_numpy(x)), tol, "eval forward")


@_SETTINGS
@given(
    lead=st.lists(st.integers(1, 4), min_size=0, max_size=2),
    normalized=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    elementwise_affine=st.booleans(),
    bias=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-2]),
    dtype=st.sampled_from(sorted(_DTYPES)),
    seed=st.integers(0, 2**16),
)
def test_layernorm_matches_torch(lead, normalized, elementwise_affine, bias, eps, dtype, seed):
    np_dtype, t_dtype, tol = _DTYPES[dtype]
    rng = np.random.default_rng(seed)
    shape = (*lead, *normalized)
    ns = tuple(normalized)
    ours = normdrop.LayerNorm(ns, eps, elementwise_affine, bias, dtype=dtype, backend="numba")
    theirs = torch.nn.LayerNorm(ns, eps, elementwise_affine, bias, dtype=t_dtype)
    _same_parameters(rng, ours, theirs, np_dtype)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np_dtype)
    g = rng.standard_normal(shape).astype(np_dtype)
    _step(ours, theirs, x, g, tol)
    _parameter_grads(ours, theirs, tol)


@_SETTINGS
@given(
    shape=st.lists(st.integers(0, 6), min_size=0, max_size=3),
    p=st.sampled_from([0.0, 0.1, 0.5, 0.9]),
    dtype=st.sampled_from(sorted(_DTYPES)),
    seed=st.integers(0, 2**64 - 1),
)
def test_dropout_matches_torch_with_normdrops_mask(shape, p, dtype, seed):
    """With normdrop's keep-mask applied the PyTorch way (x * mask / (1 - p) in the dtype)."""
    np_dtype, t_dtype, _ = _DTYPES[dtype]
    shape = tuple(shape)
    x = np.random.default_rng(seed % 2**32).standard_normal(shape).astype(np_dtype)
    y = F.dropout(x, p, seed=seed, call=1)
    mask = torch.from_numpy(np.asarray(F.dropout_mask(shape, p, seed=seed, call=1)))
    xt = torch.from_numpy(x).requires_grad_(True)
    scale = 1.0 / (1.0 - p)
    yt = xt * mask.to(t_dtype) * torch.tensor(scale, dtype=t_dtype)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    g = np.ones(shape, np_dtype)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(F.dropout_backward(g, p, seed=seed, call=1), xt.grad.numpy())
