"""Kernel libraries' tests of layer norm, dropout and the residual add before a layer norm,
ported to normdrop.

Each test names its source:

- linkedin/Liger-Kernel ``test/transformers/test_layer_norm.py``: ``test_liger_layer_norm``
  (the ``LigerLayerNorm`` module against ``torch.nn.LayerNorm``) and
  ``test_liger_layer_norm_functional`` (``liger_layer_norm`` with random weight and bias).
- NVIDIA/TransformerEngine ``tests/pytorch/test_numerics.py`` ``test_layernorm_accuracy``
  and ``tests/pytorch/test_fusible_ops.py`` ``TestBasicOps.test_layer_norm``,
  ``test_layer_norm_autocast``, ``test_dropout`` and ``test_add_extra_input``.
  ``zero_centered_gamma=True`` (TE learns ``w`` and normalises with ``gamma = 1 + w``) is
  expressible: normdrop's weight is ``1 + w``, and the gradient with respect to ``w`` is the
  one with respect to the weight.
- facebookresearch/xformers ``tests/test_triton_dropout.py`` (test_dropout_cpu,
  test_dropout, test_dropout_parity) and ``tests/test_triton_layernorm.py``
  (test_layernorm_parity, test_no_contiguous), as of b1b69fae, the last commit that has
  them (xformers removed its Triton operators in 9ed95619).
- microsoft/DeepSpeed ``tests/unit/ops/transformer/inference/test_layer_norm.py``:
  test_layer_norm, test_layer_norm_residual, test_layer_norm_residual_store_pre_ln_res and
  test_triton_layer_norm. Their residual variants, ``layer_norm(vals + bias + residual)``,
  are normdrop's ``dropout_add_layer_norm`` with ``p = 0``; normdrop has no input bias, so
  the port adds it to ``vals`` first (one more rounding for float16 data).

Translations: CUDA sizes become a few rows (hidden sizes are kept); ``bfloat16`` and
autocast (``amp``) runs become float16 data with float32 parameters, which normdrop computes
in float32 and rounds once; float64 is added where the source has float32. The oracle is
PyTorch 2.13 on the CPU, in float64 on the values normdrop receives (PyTorch's float32 CPU
kernels add rounding of their own), or the source's formula written out; dropout masks come
from normdrop's Philox generator, so dropout is checked by its properties (identity at
``p = 0`` and in evaluation, the ``1 / (1 - p)`` scale, the dropped fraction, masks that
differ between rows and calls and repeat for a seed), and against PyTorch's dropout
arithmetic (``input * (bernoulli / (1 - p))``, ATen's ``_dropout_impl``) applied with
normdrop's mask. Departures, as documented (docs/differences.md): ``p = 1`` is refused in
training (xformers expects all zeros). Not ported: xformers' bias and activation inside the
dropout kernel and TE's quantized (FP8/NVFP4) variants (normdrop has neither), TE's RMSNorm
and DeepSpeed's CUDA-graph capture.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, host, to_numpy, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F
from normdrop.errors import InvalidParameterError

torch = pytest.importorskip("torch")
TF = torch.nn.functional

SEED = 20250611
CALL = 3


def _param_dtype(dtype):
    """normdrop's parameter dtype for data of ``dtype``: float32 for float16 data."""
    return np.float64 if dtype == np.float64 else np.float32


def _one_on_slow(backend, chosen: bool) -> None:
    """Under the CUDA simulator, run only the ``chosen`` parametrisation."""
    if backend.name in SLOW_BACKENDS and not chosen:
        pytest.skip("one parametrisation is enough under the CUDA simulator")


def _randn(*shape, dtype=np.float32):
    """``torch.randn`` values (from torch's global generator, seeded by the test) as a NumPy
    array of ``dtype``."""
    return _np(torch.randn(*shape, dtype=torch.float64)).astype(dtype)


def _close(got, want, rtol, atol, what):
    """``torch.allclose(got, want, rtol, atol)`` with a message: ``|got - want| <= atol +
    rtol * |want|``, computed in float64."""
    np.testing.assert_allclose(
        np.asarray(got, np.float64),
        np.asarray(want, np.float64),
        rtol=rtol,
        atol=atol,
        err_msg=what,
    )


def _layer_grads(backend, layer):
    return {name: np.asarray(host(backend, g)) for name, g in layer.grads.items()}


def _torch_layer_norm64(x, normalized_shape, weight, bias, eps, grad_output):
    """PyTorch's layer norm in float64 on the values of ``x``, ``weight`` and ``bias``
    (any of the last two None), and its gradients for ``grad_output``: ``(y, dx, dw, db)``
    as float64 arrays (None where there is no parameter)."""
    x_t = _t(np.asarray(x, np.float64)).requires_grad_()
    w_t = None if weight is None else _t(np.asarray(weight, np.float64)).requires_grad_()
    b_t = None if bias is None else _t(np.asarray(bias, np.float64)).requires_grad_()
    y = TF.layer_norm(x_t, tuple(normalized_shape), w_t, b_t, eps)
    y.backward(_t(np.asarray(grad_output, np.float64)))
    grads = [None if t is None else _np(t.grad) for t in (w_t, b_t)]
    return _np(y), _np(x_t.grad), *grads


# ============================================================================ Liger-Kernel
# linkedin/Liger-Kernel test/transformers/test_layer_norm.py. Liger compares in float32
# (atol = rtol = 1e-5) and bfloat16 (2e-2); here float32, float16 data with float32
# parameters in place of bfloat16 (Liger's 2e-2), and float64 (1e-10).

_LIGER_DTYPES = [(np.float32, 1e-5, 1e-5), (np.float16, 2e-2, 2e-2), (np.float64, 1e-10, 1e-10)]
_LIGER_DTYPE_IDS = ["float32", "float16", "float64"]


@pytest.mark.parametrize("dtype, atol, rtol", _LIGER_DTYPES, ids=_LIGER_DTYPE_IDS)
@pytest.mark.parametrize(
    "batch_size, seq_len, hidden_size",
    [(2, 8, 64), (4, 16, 128), (1, 1, 1023), (3, 7, 256), (1, 1, 1500)],
)
def test_liger_layer_norm(backend, batch_size, seq_len, hidden_size, dtype, atol, rtol):
    """Liger-Kernel test_liger_layer_norm: the LayerNorm module (eps 1e-6, its default
    weight and bias, which Liger copies into torch's) against ``torch.nn.LayerNorm``, forward,
    then the input, weight and bias gradients for a ``randn_like`` output gradient."""
    _one_on_slow(backend, hidden_size == 64 and dtype == np.float32)
    torch.manual_seed(0)
    shape = (batch_size, seq_len, hidden_size)
    x = _randn(*shape, dtype=dtype)
    grad_output = _randn(*shape, dtype=dtype)  # torch.randn_like(x)

    layer = normdrop.LayerNorm(
        hidden_size, eps=1e-6, dtype=_param_dtype(dtype), backend=backend.name
    )
    torch_ln = torch.nn.LayerNorm(hidden_size, eps=1e-6).double()
    layer.load_state_dict(torch_ln.state_dict())  # torch_ln.weight.copy_(liger_ln.weight)
    x_t = _t(x.astype(np.float64)).requires_grad_()
    want = torch_ln(x_t)
    want.backward(_t(grad_output.astype(np.float64)))

    y = to_numpy(backend, layer(backend.asarray(x)))
    gx = to_numpy(backend, layer.backward(backend.asarray(grad_output)))
    assert y.dtype == dtype and gx.dtype == dtype and y.shape == shape
    _close(y, _np(want).astype(dtype), rtol, atol, "output")
    _close(gx, _np(x_t.grad).astype(dtype), rtol, atol, "input grad")
    grads = _layer_grads(backend, layer)
    _close(grads["weight"], _np(torch_ln.weight.grad), rtol, atol, "weight grad")
    _close(grads["bias"], _np(torch_ln.bias.grad), rtol, atol, "bias grad")


@pytest.mark.parametrize("dtype, atol, rtol", _LIGER_DTYPES, ids=_LIGER_DTYPE_IDS)
@pytest.mark.parametrize(
    "batch_size, seq_len, hidden_size", [(2, 8, 64), (4, 16, 128), (3, 512, 128)]
)
def test_liger_layer_norm_functional(backend, batch_size, seq_len, hidden_size, dtype, atol, rtol):
    """Liger-Kernel test_liger_layer_norm_functional: the functional interface with
    ``randn`` weight and bias (eps 1e-6), forward and the input, weight and bias gradients
    for a ``randn_like`` output gradient. Liger compares its functional wrapper with its
    autograd function; here ``layer_norm``, ``layer_norm_with_stats`` and
    ``layer_norm_backward`` are each compared with PyTorch."""
    _one_on_slow(backend, hidden_size == 64 and dtype == np.float32)
    torch.manual_seed(0)
    shape = (batch_size, seq_len, hidden_size)
    x = _randn(*shape, dtype=dtype)
    w = _randn(hidden_size, dtype=_param_dtype(dtype))
    b = _randn(hidden_size, dtype=_param_dtype(dtype))
    grad_output = _randn(*shape, dtype=dtype)
    want_y, want_gx, want_gw, want_gb = _torch_layer_norm64(
        x, (hidden_size,), w, b, 1e-6, grad_output
    )

    bx = backend.asarray(x)
    y1 = to_numpy(
        backend,
        F.layer_norm(bx, hidden_size, vec(backend, w), vec(backend, b), 1e-6, backend=backend.name),
    )
    y2, mean, rstd = F.layer_norm_with_stats(
        bx, hidden_size, vec(backend, w), vec(backend, b), 1e-6, backend=backend.name
    )
    gx, gw, gb = F.layer_norm_backward(
        backend.asarray(grad_output),
        bx,
        hidden_size,
        mean,
        rstd,
        vec(backend, w),
        backend=backend.name,
    )
    for name, got in (("y (layer_norm)", y1), ("y (with_stats)", to_numpy(backend, y2))):
        assert got.dtype == dtype
        _close(got, want_y.astype(dtype), rtol, atol, name)
    gx = to_numpy(backend, gx)
    assert gx.dtype == dtype
    _close(gx, want_gx.astype(dtype), rtol, atol, "input grad")
    _close(host(backend, gw), want_gw, rtol, atol, "weight grad")
    _close(host(backend, gb), want_gb, rtol, atol, "bias grad")


# ========================================================================= TransformerEngine
# NVIDIA/TransformerEngine tests/pytorch/utils.py dtype_tols: the torch.testing.assert_close
# defaults (float64 has rtol = atol = 1e-7 there).
_TE_TOLS = {
    np.float16: {"rtol": 1e-3, "atol": 1e-5},
    np.float32: {"rtol": 1.3e-6, "atol": 1e-5},
    np.float64: {"rtol": 1e-7, "atol": 1e-7},
}


@pytest.mark.parametrize("zero_centered_gamma", [True, False])
@pytest.mark.parametrize("bs", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_te_layernorm_accuracy(backend, dtype, bs, zero_centered_gamma):
    """TransformerEngine test_numerics.py test_layernorm_accuracy (model "126m": hidden
    768; its 2048 positions become 16): the LayerNorm module with its initial parameters
    (TE's ``gamma`` starts at zeros with ``zero_centered_gamma``, else at ones; ``beta`` at
    zeros) against ``TorchLayerNorm`` (the layer norm in float32 of ``1 + w`` or ``w``,
    cast back), input ``randn((seq, bs, hidden))`` and loss ``out.sum()``; TE's tolerances:
    output atol 1e-7 (float32) or 2e-3 (float16), gradients atol 1e-4 or 2e-3, rtol 1.3e-6
    or 1e-3. TE's eps values 1e-1, 1e-3, 1e-5 and 1e-7 run in one test. normdrop's weight
    is ``1 + w``; float16 data gets float32 parameters."""
    _one_on_slow(backend, bs == 1 and dtype == np.float32)
    hidden, seq = 768, 16 if backend.name not in SLOW_BACKENDS else 2
    torch.manual_seed(1234)  # reset_rng_states()
    x = _randn(seq, bs, hidden, dtype=dtype)
    w_te = np.zeros(hidden) if zero_centered_gamma else np.ones(hidden)
    gamma = 1 + w_te if zero_centered_gamma else w_te
    for eps in (1e-1, 1e-3, 1e-5, 1e-7):
        _te_accuracy_case(backend, x, gamma, eps)


def _te_accuracy_case(backend, x, gamma, eps):
    dtype, hidden = x.dtype.type, x.shape[-1]
    layer = normdrop.LayerNorm(hidden, eps=eps, dtype=_param_dtype(dtype), backend=backend.name)
    layer.load_state_dict({"weight": gamma.astype(np.float32), "bias": np.zeros(hidden)})
    grad_output = np.ones(x.shape, dtype)  # out.sum().backward()

    out = to_numpy(backend, layer(backend.asarray(x)))
    gx = to_numpy(backend, layer.backward(backend.asarray(grad_output)))
    grads = _layer_grads(backend, layer)
    want_y, want_gx, want_gw, want_gb = _torch_layer_norm64(
        x, (hidden,), gamma, np.zeros(hidden), eps, grad_output
    )  # d/dw of (1 + w) is 1: the weight gradient is w's
    assert out.dtype == dtype and gx.dtype == dtype
    rtol = {np.float32: 1.3e-6, np.float16: 1e-3}[dtype]
    _close(out, want_y.astype(dtype), rtol, {np.float32: 1e-7, np.float16: 2e-3}[dtype], "out")
    atol = {np.float32: 1e-4, np.float16: 2e-3}[dtype]
    _close(gx, want_gx.astype(dtype), rtol, atol, "input grad")
    _close(grads["weight"], want_gw, rtol, atol, "weight grad")
    _close(grads["bias"], want_gb, rtol, atol, "bias grad")


def _te_ref_and_test(shape, dtype, low=0.0, high=1.0):
    """TE's make_reference_and_test_tensors: ``uniform_(low, high)`` in float64, the test
    array cast to ``dtype``, and the reference set to the test array's values."""
    ref = torch.empty(shape, dtype=torch.float64).uniform_(low, high)
    test = _np(ref).astype(dtype)
    return test.astype(np.float64), test


@pytest.mark.parametrize("zero_centered_gamma", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("in_shape", [(-1,), (6, 16, -1)], ids=["1d", "3d"])
@pytest.mark.parametrize("weight_shape", [(7, 2), (32,)], ids=["7x2", "32"])
def test_te_fusible_layer_norm(backend, weight_shape, in_shape, dtype, zero_centered_gamma):
    """TransformerEngine test_fusible_ops.py TestBasicOps.test_layer_norm (quantization
    None): uniform [0, 1) input, weight, bias and output gradient, eps 0.3, the normalised
    shape ``(7, 2)`` or ``(32,)`` and inputs of one or three leading-plus-normalised
    dimensions (``in_shape[:-1] + weight_shape``); the reference is PyTorch in float64 with
    ``weight = w + 1`` for ``zero_centered_gamma``; TE's dtype_tols for every output. float64
    is added; float16 data gets float32 parameters holding the float16 values."""
    _one_on_slow(backend, weight_shape == (32,) and dtype == np.float32)
    torch.manual_seed(1234)
    shape = tuple(in_shape[:-1]) + tuple(weight_shape)
    x_ref, x = _te_ref_and_test(shape, dtype)
    w_ref, _ = _te_ref_and_test(weight_shape, dtype)
    b_ref, _ = _te_ref_and_test(weight_shape, dtype)
    dy_ref, dy = _te_ref_and_test(shape, dtype)
    gamma = w_ref + 1 if zero_centered_gamma else w_ref
    want_y, want_dx, want_dw, want_db = _torch_layer_norm64(
        x_ref, weight_shape, gamma, b_ref, 0.3, dy_ref
    )

    param = _param_dtype(dtype)
    layer = normdrop.LayerNorm(weight_shape, eps=0.3, dtype=param, backend=backend.name)
    layer.load_state_dict({"weight": gamma.astype(param), "bias": b_ref.astype(param)})
    y = to_numpy(backend, layer(backend.asarray(x)))
    dx = to_numpy(backend, layer.backward(backend.asarray(dy)))
    grads = _layer_grads(backend, layer)
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == shape
    tols = _TE_TOLS[dtype]
    _close(y, want_y, what="y", **tols)
    _close(dx, want_dx, what="dx", **tols)
    _close(grads["weight"], want_dw, what="dw", **tols)
    _close(grads["bias"], want_db, what="db", **tols)


def test_te_layer_norm_autocast(backend):
    """TransformerEngine TestBasicOps.test_layer_norm_autocast: float16 parameters with
    float32 input (``torch.autocast(dtype=float32)``), shape (32,), eps 0.3; the output and
    input gradient are float32 and meet float32 tolerances, the parameter gradients float16
    ones. In normdrop's functional API the parameters may have another float dtype than the
    data: float16 weight and bias with float32 data give float32 ``y`` and ``dx`` and
    float16 ``dw`` and ``db``."""
    torch.manual_seed(1234)
    x_ref, x = _te_ref_and_test((32,), np.float32)
    w_ref, w = _te_ref_and_test((32,), np.float16)
    b_ref, b = _te_ref_and_test((32,), np.float16)
    dy_ref, dy = _te_ref_and_test((32,), np.float32)
    want_y, want_dx, want_dw, want_db = _torch_layer_norm64(x_ref, (32,), w_ref, b_ref, 0.3, dy_ref)
    bx = backend.asarray(x)
    y, mean, rstd = F.layer_norm_with_stats(
        bx, 32, vec(backend, w), vec(backend, b), 0.3, backend=backend.name
    )
    dx, dw, db = F.layer_norm_backward(
        backend.asarray(dy), bx, 32, mean, rstd, vec(backend, w), backend=backend.name
    )
    y, dx = to_numpy(backend, y), to_numpy(backend, dx)
    dw, db = host(backend, dw), host(backend, db)
    assert y.dtype == np.float32 and dx.dtype == np.float32
    assert dw.dtype == np.float16 and db.dtype == np.float16
    _close(y, want_y, what="y", **_TE_TOLS[np.float32])
    _close(dx, want_dx, what="dx", **_TE_TOLS[np.float32])
    _close(dw, want_dw, what="dw", **_TE_TOLS[np.float16])
    _close(db, want_db, what="db", **_TE_TOLS[np.float16])


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("is_training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("prob", [0.0625, 0.5, 0.75])
def test_te_dropout(backend, prob, is_training, dtype):
    """TransformerEngine TestBasicOps.test_dropout (quantization None): input uniform in
    [1, 2) (no zeros), output gradient uniform in [0, 1). Training: with ``mask = (y != 0) /
    (1 - p)`` in the data dtype, ``y == x * mask`` and ``dx == dy * mask`` (dtype_tols), and
    the dropped fraction is within the 99% interval of a binomial (|z| < 2.5758); evaluation:
    ``y == x`` and ``dx == dy`` exactly. The mask is also ``dropout_mask``'s for the layer's
    seed and call (normdrop's documented contract). TE's shapes (101,), (2, 4, 16) and
    (128, 128) run in one test; float64 is added."""
    _one_on_slow(backend, dtype == np.float32 and prob == 0.5)
    torch.manual_seed(1234)
    shapes = [(2, 4, 16)] if backend.name in SLOW_BACKENDS else [(101,), (2, 4, 16), (128, 128)]
    for shape in shapes:
        _te_dropout_case(backend, prob, is_training, shape, dtype)


def _te_dropout_case(backend, prob, is_training, shape, dtype):
    x_ref, x = _te_ref_and_test(shape, dtype, 1.0, 2.0)  # x_test += 1
    dy_ref, dy = _te_ref_and_test(shape, dtype)
    layer = normdrop.Dropout(prob, seed=SEED, backend=backend.name)
    layer.train(is_training)
    bx = backend.asarray(x)
    y = to_numpy(backend, layer(bx))
    dx = to_numpy(backend, layer.backward(backend.asarray(dy)))
    assert y.dtype == dtype and dx.dtype == dtype and y.shape == shape
    if not is_training:
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(dx, dy)
        return
    mask = ((y != 0) / (1 - prob)).astype(dtype).astype(np.float64)
    tols = _TE_TOLS[dtype]
    _close(y, x_ref * mask, what="y", **tols)
    _close(dx, dy_ref * mask, what="dx", **tols)
    keep = to_numpy(backend, F.dropout_mask(shape, prob, seed=SEED, call=0, backend=backend.name))
    np.testing.assert_array_equal(y != 0, keep)
    prob_observed = 1 - np.count_nonzero(y) / y.size
    z_score = (prob_observed - prob) / math.sqrt(prob * (1 - prob) / y.size)
    assert abs(z_score) < 2.5758, f"{prob=}, {prob_observed=}"


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_te_add_extra_input(backend, dtype):
    """TransformerEngine TestBasicOps.test_add_extra_input (in_shape (32, 32), not in
    place): ``y = x1 + x2`` within dtype_tols of the float64 sum, and the output gradient
    passed to both inputs exactly. In normdrop this add is the fused op's ``r`` at
    ``p = 0``: with the gradient arriving at ``r`` (``grad_r``) and none at ``y``,
    ``grad_x`` and ``grad_residual`` are ``grad_r``, bit for bit."""
    torch.manual_seed(1234)
    x1_ref, x1 = _te_ref_and_test((32, 32), dtype)
    x2_ref, x2 = _te_ref_and_test((32, 32), dtype)
    _, dy = _te_ref_and_test((32, 32), dtype)
    y, r, mean, rstd, bitmask = F.dropout_add_layer_norm_with_stats(
        backend.asarray(x1), backend.asarray(x2), 32, p=0.0, backend=backend.name
    )
    assert bitmask is None
    r_h = to_numpy(backend, r)
    assert r_h.dtype == dtype
    _close(r_h, x1_ref + x2_ref, what="x1 + x2", **_TE_TOLS[dtype])
    dx1, dx2, _, _ = F.dropout_add_layer_norm_backward(
        backend.asarray(np.zeros_like(dy)),
        r,
        32,
        mean,
        rstd,
        None,
        0.0,
        True,
        grad_r=backend.asarray(dy),
        backend=backend.name,
    )
    np.testing.assert_array_equal(to_numpy(backend, dx1), dy)
    np.testing.assert_array_equal(to_numpy(backend, dx2), dy)


# ================================================================================= xformers
# facebookresearch/xformers tests/test_triton_dropout.py and test_triton_layernorm.py (at
# b1b69fae). Their CUDA shapes keep the hidden size and lose rows here (at most 50k elements);
# ``amp`` (autocast) runs become float16 data.

_XF_DROPOUT_SHAPES = [
    (48, 512),  # (384, 512)
    (8, 48, 128),  # (8, 384, 128)
    (8, 12, 512),  # (8, 784, 512)
    (4, 16, 384),
    (4, 16, 1024),
    (2, 8, 2048),  # (2, 16, 2048)
    (2, 4, 4096),  # (2, 16, 4096)
    (1, 4, 12288),  # (1, 16, 12288)
]
_AMP = [np.float32, np.float16]
_AMP_IDS = ["fp32", "amp-fp16"]


def test_xformers_dropout_cpu():
    """xformers test_dropout_cpu: ``FusedDropoutBias(p=0.1)`` on a (16, 16) normal input
    runs; in evaluation nothing is dropped (every value non-zero), in training something
    is."""
    torch.manual_seed(0)
    x = _np(torch.normal(0, 1, size=(16, 16)))
    layer = normdrop.Dropout(0.1, seed=SEED)
    _ = layer(x)
    layer.eval()
    y = layer(x)
    assert np.count_nonzero(y) == y.size
    layer.train()
    y = layer(x)
    assert np.count_nonzero(y) != y.size


@pytest.mark.parametrize("dtype", _AMP, ids=_AMP_IDS)
@pytest.mark.parametrize("shape", _XF_DROPOUT_SHAPES, ids=str)
def test_xformers_dropout(backend, shape, dtype):
    """xformers test_dropout (bias=False: normdrop's dropout takes no bias): p = 0 is the
    identity (normdrop returns the input itself, and the fused op's ``r`` without residual
    is the input too); p = 0.99 changes the input; at p = 0.5 the first two rows drop
    different elements, and two calls of a layer drop different elements of the first row;
    the dropped fraction is within 0.02 of p (xformers' p = 0, 0.1 and 0.5, in one test);
    the same global seed (``normdrop.manual_seed``, xformers' ``torch.manual_seed``) gives the
    same result. Its p = 1 ("drop all") is refused in training, as SPEC.md says."""
    if backend.name in SLOW_BACKENDS:
        _one_on_slow(backend, shape == (4, 16, 384) and dtype == np.float32)
        shape = (2, 4, 32)
    torch.manual_seed(0)
    x = _np(torch.normal(0, 1, size=shape)).astype(dtype)
    bx = backend.asarray(x)
    tol = 1e-2 if dtype == np.float16 else 1e-5  # "AMP rounding causes issues"
    name = backend.name

    # Check that 0 means no dropout
    assert F.dropout(bx, 0, seed=SEED, backend=name) is bx
    _, r = F.dropout_add_layer_norm(bx, None, shape[-1], p=0.0, backend=name)
    assert r is bx
    # p = 1: refused in training (xformers: all zeros)
    with pytest.raises(InvalidParameterError, match=r"Dropout probability must be in \[0, 1\)"):
        F.dropout(bx, 1.0, seed=SEED, backend=name)
    # Check that .99 means probably dropout
    y = to_numpy(backend, F.dropout(bx, 0.99, seed=SEED, call=1, backend=name))
    assert not np.allclose(x, y, rtol=tol)
    # Check that the drops are different for every row (could catch broken seeds per row)
    y = to_numpy(backend, F.dropout(bx, 0.5, seed=SEED, call=2, backend=name))
    y = y.reshape(-1, shape[-1])
    assert not np.sum((y[0, :] == 0.0) == (y[1, :] == 0.0)) == y.shape[1]
    # Check that the drops are different over time, for the same line
    layer = normdrop.Dropout(0.5, seed=SEED, backend=name)
    y_a = to_numpy(backend, layer(bx)).reshape(-1, shape[-1])
    y_b = to_numpy(backend, layer(bx)).reshape(-1, shape[-1])
    assert not np.sum((y_a[0, :] == 0.0) == (y_b[0, :] == 0.0)) == y_a.shape[1]
    # Check that the drop probability is about right
    for p in (0, 0.1, 0.5):
        y = to_numpy(backend, F.dropout(bx, p, seed=SEED, call=3, backend=name))
        drop_p = (y.size - np.count_nonzero(y)) / y.size
        assert abs(drop_p - p) < (0.02 if y.size > 1000 else 0.1), p
    # Check that the same seeds lead to the same dropout
    normdrop.manual_seed(0)
    y_1 = to_numpy(backend, F.dropout(bx, 0.5, backend=name))
    normdrop.manual_seed(0)
    y_2 = to_numpy(backend, F.dropout(bx, 0.5, backend=name))
    np.testing.assert_array_equal(y_1, y_2)


@pytest.mark.parametrize("dtype", _AMP, ids=_AMP_IDS)
@pytest.mark.parametrize("shape", _XF_DROPOUT_SHAPES, ids=str)
def test_xformers_dropout_parity(backend, shape, dtype):
    """xformers test_dropout_parity (no bias, no activation: normdrop's dropout has
    neither): for p < 0.01 the sum of the output and the norm of the input gradient of
    ``loss = sum(dropout(x))`` equal PyTorch's ``nn.functional.dropout`` within rtol 0.01.
    For every p (masks are random on both sides) the port also checks PyTorch's dropout
    arithmetic with normdrop's mask, ``x * (keep / (1 - p))`` in the data dtype (ATen's
    ``_dropout_impl``): the output and the input gradient equal it bit for bit in float32;
    in float16 they are within one float16 rounding of it (ATen's CPU kernel rounds the
    scale to float16 first) and equal to the float32 product rounded once. xformers' p = 0,
    0.01 and 0.5 run in one test."""
    if backend.name in SLOW_BACKENDS:
        _one_on_slow(backend, shape == (4, 16, 384) and dtype == np.float32)
        shape = (2, 4, 32)
    torch.manual_seed(0)
    x = _np(torch.normal(0, 1, size=shape)).astype(dtype)
    for p in (0, 0.01, 0.5):
        _xformers_parity_case(backend, x, p)


def _xformers_parity_case(backend, x, p):
    shape, dtype = x.shape, x.dtype.type
    bx = backend.asarray(x)
    y, bitmask = F.dropout_with_bitmask(bx, p, seed=SEED, call=CALL, backend=backend.name)
    ones = np.ones(shape, dtype)
    gx = F.dropout_backward(
        backend.asarray(ones), p, seed=SEED, call=CALL, bitmask=bitmask, backend=backend.name
    )
    y, gx = to_numpy(backend, y), to_numpy(backend, gx)
    if p < 0.01:  # xformers' check, against torch's own dropout
        x_t = _t(x).requires_grad_()
        res_torch = TF.dropout(x_t, p=p)
        loss_torch = res_torch.sum()
        loss_torch.backward()
        loss_t = float(loss_torch.detach())
        assert math.isclose(float(y.astype(np.float64).sum()), loss_t, rel_tol=0.01)
        norm_ours = np.linalg.norm(gx.astype(np.float64))
        assert math.isclose(norm_ours, float(torch.norm(x_t.grad.double())), rel_tol=0.01)
    keep = np.ones(shape, bool)
    if p > 0:
        keep = to_numpy(
            backend, F.dropout_mask(shape, p, seed=SEED, call=CALL, backend=backend.name)
        )
    noise = _t(keep.astype(dtype))
    noise.div_(1 - p)
    x_t = _t(x).requires_grad_()
    want = x_t * noise
    want.sum().backward()
    if dtype != np.float16:
        np.testing.assert_array_equal(y, _np(want))
        np.testing.assert_array_equal(gx, _np(x_t.grad))
        return
    # float16: ATen's CPU kernel rounds the scale to float16 first; normdrop computes in
    # float32 and rounds once, as ATen's CUDA kernel does (docs/guide/dropout.md)
    scale = np.float32(1) / np.float32(1 - p)
    for name, got, data, cpu in (("y", y, x, want), ("dx", gx, ones, x_t.grad)):
        exact = (data.astype(np.float32) * keep * scale).astype(np.float16)
        np.testing.assert_array_equal(got, exact, err_msg=name)
        np.testing.assert_allclose(got, _np(cpu), rtol=2.0**-10, atol=0, err_msg=name)


_XF_LN_SHAPES = [
    (384, 128),
    (8, 48, 128),  # (8, 384, 128)
    (8, 12, 512),  # (8, 784, 512)
    (4, 16, 384),  # (4, 2048, 384)
    (4, 8, 1024),  # (4, 3136, 1024)
    (2, 8, 2048),  # (2, 1024, 2048)
    (2, 4, 4096),  # (2, 2048, 4096) and (2, 4096, 4096)
    (1, 4, 12288),  # (1, 2048, 12288)
]


@pytest.mark.parametrize("dtype", _AMP, ids=_AMP_IDS)
@pytest.mark.parametrize("shape", _XF_LN_SHAPES, ids=str)
def test_xformers_layernorm_parity(backend, shape, dtype):
    """xformers test_layernorm_parity: ``torch.nn.LayerNorm(eps=1e-4)`` with its initial
    weight and bias, ``loss = norm(y)``: the norms of the outputs agree within atol 1e-3, the
    input gradients within ``torch.allclose``'s defaults (rtol 1e-5, atol 1e-8; float16 data:
    rtol 1e-3, atol 1e-5), the weight and bias gradients within atol 1e-3. PyTorch runs in
    float64 on normdrop's input values; both backward passes get the loss gradient ``y /
    norm(y)`` of PyTorch's ``y``, rounded to the data dtype, and PyTorch's output is
    rounded to the data dtype before its norm is taken. The output is also compared
    element by element (not in xformers)."""
    if backend.name in SLOW_BACKENDS:
        _one_on_slow(backend, shape == (384, 128) and dtype == np.float32)
        shape = (4, 128)
    torch.manual_seed(0)
    x = _np(torch.normal(0, 1, size=shape)).astype(dtype)
    hidden = shape[-1]
    torch_ln = torch.nn.LayerNorm(hidden, eps=1e-4).double()
    layer = normdrop.LayerNorm(hidden, eps=1e-4, backend=backend.name)
    x_t = _t(x.astype(np.float64)).requires_grad_()
    y_torch = torch_ln(x_t)
    gy = _np(y_torch / torch.norm(y_torch)).astype(dtype)  # d norm(y) / dy
    y_torch.backward(_t(gy.astype(np.float64)))

    y = to_numpy(backend, layer(backend.asarray(x)))
    assert y.dtype == dtype
    norm_ours = np.linalg.norm(y.astype(np.float64))
    y_want = _np(y_torch).astype(dtype).astype(np.float64)  # rounded as normdrop's output
    assert abs(norm_ours - np.linalg.norm(y_want)) <= 1e-3
    fine = {np.float32: (1e-5, 1e-5), np.float16: (1e-3, 1e-3)}[dtype]
    _close(y, _np(y_torch), *fine, "y")
    gx = to_numpy(backend, layer.backward(backend.asarray(gy)))
    assert gx.dtype == dtype
    rtol, atol = {np.float32: (1e-5, 1e-8), np.float16: (1e-3, 1e-5)}[dtype]
    _close(gx, _np(x_t.grad), rtol, atol, "Inputs grad mismatch")
    grads = _layer_grads(backend, layer)
    _close(grads["weight"], _np(torch_ln.weight.grad), 1e-5, 1e-3, "Weight grad mismatch")
    _close(grads["bias"], _np(torch_ln.bias.grad), 1e-5, 1e-3, "Bias grad mismatch")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_xformers_no_contiguous(backend, dtype):
    """xformers test_no_contiguous: a (8, 384, 128) normal input made non-contiguous by
    ``X.transpose(2, 1).contiguous().transpose(2, 1)`` goes through the LayerNorm without
    choking; here also with the fused op, and both give PyTorch's result (float64 on the
    same values) within the float tolerances; bfloat16 becomes float64."""
    shape = (8, 384, 128) if backend.name not in SLOW_BACKENDS else (2, 4, 32)
    torch.manual_seed(0)
    x_c = _np(torch.normal(0, 1, size=shape)).astype(dtype)
    x = np.ascontiguousarray(x_c.transpose(0, 2, 1)).transpose(0, 2, 1)
    assert not x.flags.c_contiguous and np.array_equal(x, x_c)
    param = _param_dtype(dtype)
    want = _np(TF.layer_norm(_t(x_c.astype(np.float64)), (shape[-1],), eps=1e-5))
    rtol, atol = {np.float16: (1e-3, 2e-3), np.float32: (1e-5, 1e-5), np.float64: (1e-10, 1e-10)}[
        dtype
    ]
    layer = normdrop.LayerNorm(shape[-1], dtype=param, backend=backend.name)
    fused = normdrop.DropoutAddLayerNorm(shape[-1], p=0.1, dtype=param, backend=backend.name)
    bx = backend.asarray(x)
    for name, out in (("LayerNorm", layer(bx)), ("fused (eval)", fused.eval()(bx)[0])):
        out = to_numpy(backend, out)
        assert out.shape == shape and out.dtype == dtype
        _close(out, want, rtol, atol, name)


# ================================================================================ DeepSpeed
# microsoft/DeepSpeed tests/unit/ops/transformer/inference/test_layer_norm.py and
# inference_test_utils.py (allclose: rtol, atol = 5e-4, 5e-5 for float32 and 3e-2, 2e-3 for
# float16). Its reference casts everything to float32, runs torch's layer norm and casts back
# to the data dtype; here PyTorch runs in float64 on the same values. batch 32 becomes 2 and
# seq_len 128 becomes 8; every channel count is kept (the counts run in one test each).

_DS_TOLS = {np.float32: (5e-4, 5e-5), np.float16: (3e-2, 2e-3)}
_DS_CHANNELS = [384, 512, 768, 1024, 2048, 8192, 14432]


def _ds_data(batch, seq_len, channels, dtype, residual=False):
    """DeepSpeed's data: ``vals`` (and ``residual``, ``bias``) ``randn``, ``gamma`` ``randn``,
    ``beta`` ``rand``, in the data dtype."""
    torch.manual_seed(0)
    vals = _randn(batch, seq_len, channels, dtype=dtype)
    res = _randn(batch, seq_len, channels, dtype=dtype) if residual else None
    bias = _randn(channels, dtype=dtype) if residual else None
    gamma = _randn(channels, dtype=dtype)
    beta = _np(torch.rand(channels, dtype=torch.float64)).astype(dtype)
    return vals, res, bias, gamma, beta


def _ds_allclose(got, want, dtype, what):
    assert got.dtype == dtype, what
    rtol, atol = _DS_TOLS[dtype]
    _close(got, np.asarray(want, np.float64).astype(dtype), rtol, atol, what)


def _ds_channels(backend, batch, seq_len, dtype):
    """DeepSpeed's channel counts, run in one test (only 384 under the CUDA simulator)."""
    _one_on_slow(backend, (batch, seq_len, dtype) == (1, 1, np.float32))
    return _DS_CHANNELS if backend.name not in SLOW_BACKENDS else [384]


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("seq_len", [1, 8])
@pytest.mark.parametrize("batch", [1, 2])
def test_deepspeed_layer_norm(backend, batch, seq_len, dtype):
    """DeepSpeed test_layer_norm: ``layer_norm(vals, gamma, beta, 1e-5)`` against torch's
    layer norm of the float32 values (here float64), cast back to the data dtype. The float16
    parameters go in as float32 (the same values)."""
    for channels in _ds_channels(backend, batch, seq_len, dtype):
        _ds_layer_norm_case(backend, batch, seq_len, channels, dtype)


def _ds_layer_norm_case(backend, batch, seq_len, channels, dtype):
    vals, _, _, gamma, beta = _ds_data(batch, seq_len, channels, dtype)
    want = TF.layer_norm(
        _t(vals.astype(np.float64)),
        (channels,),
        _t(gamma.astype(np.float64)),
        _t(beta.astype(np.float64)),
        1e-5,
    )
    got = F.layer_norm(
        backend.asarray(vals),
        channels,
        vec(backend, gamma.astype(np.float32)),
        vec(backend, beta.astype(np.float32)),
        1e-5,
        backend=backend.name,
    )
    _ds_allclose(to_numpy(backend, got), _np(want), dtype, "layer_norm")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("seq_len", [1, 8])
@pytest.mark.parametrize("batch", [1, 2])
def test_deepspeed_layer_norm_residual(backend, batch, seq_len, dtype):
    """DeepSpeed test_layer_norm_residual and test_layer_norm_residual_store_pre_ln_res:
    ``norm_output = layer_norm(vals + bias + residual)`` and the stored ``res_output = vals
    + bias + residual``, against the float32 sum (here float64) and torch's layer norm. In
    normdrop: ``dropout_add_layer_norm(vals + bias, residual, p=0)``, whose ``y`` and ``r``
    are the two outputs. Beyond DeepSpeed's inference test, the gradients of ``vals`` and
    ``residual`` for a ``randn`` output gradient are compared with PyTorch's, within the
    same tolerances (relative to the largest gradient)."""
    for channels in _ds_channels(backend, batch, seq_len, dtype):
        _ds_residual_case(backend, batch, seq_len, channels, dtype)


def _ds_residual_case(backend, batch, seq_len, channels, dtype):
    vals, res, bias, gamma, beta = _ds_data(batch, seq_len, channels, dtype, residual=True)
    res_output = vals.astype(np.float64) + bias.astype(np.float64) + res.astype(np.float64)
    gy = _randn(batch, seq_len, channels, dtype=dtype)
    want_y, want_g, _, _ = _torch_layer_norm64(res_output, (channels,), gamma, beta, 1e-5, gy)

    x_in = (vals.astype(np.float32) + bias.astype(np.float32)).astype(dtype)  # the input bias
    w32, b32 = vec(backend, gamma.astype(np.float32)), vec(backend, beta.astype(np.float32))
    y, r, mean, rstd, _ = F.dropout_add_layer_norm_with_stats(
        backend.asarray(x_in),
        backend.asarray(res),
        channels,
        w32,
        b32,
        p=0.0,
        eps=1e-5,
        backend=backend.name,
    )
    _ds_allclose(to_numpy(backend, r), res_output, dtype, "res_output")
    _ds_allclose(to_numpy(backend, y), want_y, dtype, "norm_output")
    gx, gres, _, _ = F.dropout_add_layer_norm_backward(
        backend.asarray(gy), r, channels, mean, rstd, w32, 0.0, True, backend=backend.name
    )
    rtol, atol = _DS_TOLS[dtype]
    scale = float(np.abs(want_g).max())
    for name, got in (("vals grad", gx), ("residual grad", gres)):
        got = to_numpy(backend, got)
        assert got.dtype == dtype
        _close(got, want_g, rtol, atol * scale, name)


@pytest.mark.parametrize("input_bias", [True, False])
@pytest.mark.parametrize("residual", [True, False])
def test_deepspeed_triton_layer_norm(backend, residual, input_bias):
    """DeepSpeed test_triton_layer_norm (M = N = 4, float16, eps 1e-5): weight, bias and the
    input bias ``rand``, ``x = -2.3 + 0.5 * randn``, the residual ``rand`` or zeros; the
    residual kernel against ``layer_norm(x + res + x_bias)`` and the plain one against
    ``layer_norm(x)``, torch in float16 (as the source; the float16 parameters go into
    normdrop as float32). In normdrop the residual kernel is ``dropout_add_layer_norm`` at
    ``p = 0`` with the input bias added to ``x`` first."""
    torch.manual_seed(0)
    x_shape, w_shape = (4, 4), (4,)
    weight = torch.rand(w_shape, dtype=torch.float16)
    bias = torch.rand(w_shape, dtype=torch.float16)
    x_bias = torch.rand(w_shape, dtype=torch.float16)
    x = -2.3 + 0.5 * torch.randn(x_shape, dtype=torch.float16)
    if residual:
        res = torch.rand(x_shape, dtype=torch.float16)
    else:
        res = torch.zeros(x_shape, dtype=torch.float16)
    y_ref = TF.layer_norm(x + res + (x_bias if input_bias else 0), w_shape, weight, bias, 1e-5)
    w32, b32 = (vec(backend, _np(t).astype(np.float32)) for t in (weight, bias))
    if residual or input_bias:
        x_in = (_np(x) + _np(x_bias)) if input_bias else _np(x)
        y_tri, _ = F.dropout_add_layer_norm(
            backend.asarray(x_in),
            backend.asarray(_np(res)),
            4,
            w32,
            b32,
            p=0.0,
            eps=1e-5,
            backend=backend.name,
        )
    else:
        y_tri = F.layer_norm(backend.asarray(_np(x)), 4, w32, b32, 1e-5, backend=backend.name)
    _ds_allclose(to_numpy(backend, y_tri), _np(y_ref), np.float16, "y")
