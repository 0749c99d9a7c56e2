"""Other projects' tests of fused dropout + residual add + LayerNorm, ported to normdrop.

Each test names its source: FlashAttention's ``tests/ops/test_dropout_layer_norm.py``
(Dao-AILab/flash-attention), Apex's ``tests/L0/run_fused_layer_norm/test_fused_layer_norm.py``
(NVIDIA/apex) and Paddle's ``test/legacy_test/test_fused_dropout_add_op.py`` and
``test_fused_bias_dropout_residual_layer_norm_op.py`` (PaddlePaddle/Paddle). Their CUDA sizes
become a few rows here (the hidden sizes are kept where the backend is fast). Options normdrop
does not have (FlashAttention's ``rowscale``, ``layerscale``, ``residual_in_fp32``, subsets,
parallel residuals and RMSNorm; Paddle's bias before dropout and ``downscale_in_infer``) are
either checked as the same property in normdrop's terms or skipped with a one-line reason.
The numbers come from PyTorch (the three separate modules, with the mask taken from normdrop,
as FlashAttention builds its reference) or from normdrop's separate ``dropout`` and
``layer_norm`` calls, never from the fused op itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, skip_on_slow_backend, to_numpy, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F
from normdrop.errors import DTypeError, InvalidParameterError

torch = pytest.importorskip("torch")
TF = torch.nn.functional

SEED = 20240607
CALL = 5

_TORCH_DTYPE = {np.float16: torch.float16, np.float32: torch.float32, np.float64: torch.float64}


def _bx(backend, a):
    return None if a is None else backend.asarray(a)


def _keep(shape, p, seed=SEED, call=CALL):
    """normdrop's keep-mask as float64 (all ones without dropout)."""
    if p == 0:
        return np.ones(shape)
    return F.dropout_mask(shape, p, seed=seed, call=call, backend="numpy").astype(np.float64)


# ========================================================================== FlashAttention
# Dao-AILab/flash-attention tests/ops/test_dropout_layer_norm.py. Its reference is built from
# separate ops with the dropout mask the fused kernel returned (``return_dropout_mask``):
# ``model_pt`` in the data's dtypes and ``model_ref`` in higher precision, and the fused
# result must be within ``4 * |pt - ref| + 1e-4`` of ``ref``. Not ported: ``rowscale`` and
# ``layerscale`` (colscale) (normdrop has no per-row or per-column input scale), the
# ``_subset`` tests (no row subsets), ``parallel_residual`` (no second input), RMSNorm (no
# RMSNorm), bfloat16 (NumPy has none), ``residual_in_fp32`` (the residual has x's dtype: see
# test_flash_residual_dtype_other_than_input_is_refused).

#: FlashAttention's hidden sizes (a selection) plus sizes that are no multiple of 8 or 64.
HIDDEN = [192, 768, 1000, 1536, 2049, 3000, 5120]
#: (input = residual dtype, weight dtype): FlashAttention's pairs without bfloat16, plus float64.
DTYPES = [
    (np.float16, np.float32),
    (np.float16, np.float16),
    (np.float32, np.float32),
    (np.float32, np.float16),
    (np.float64, np.float64),
]
_DTYPE_IDS = ["f16-w32", "f16-w16", "f32-w32", "f32-w16", "f64-w64"]


def _hidden_ok(backend, hidden):
    if backend.name in SLOW_BACKENDS and hidden > 192:
        pytest.skip("long rows are too slow in the CUDA simulator")


def _flash_close(name, ours, ref, pt, factor=4.0, atol=1e-4):
    """FlashAttention's criterion: ``|ours - ref| <= factor * |pt - ref| + atol``."""
    ours, ref, pt = (np.asarray(a, np.float64) for a in (ours, ref, pt))
    err, base = np.abs(ours - ref).max(), np.abs(pt - ref).max()
    assert err <= factor * base + atol, f"{name}: {err} > {factor} * {base} + {atol}"


def _torch_block(x, res, w, b, keep, p, in_dt, w_dt, eps=1e-5):
    """FlashAttention's reference from separate torch ops: dropout with normdrop's mask
    (``keep``), the add and a LayerNorm. Returns the leaf tensors and ``(out, r)``. In
    float64 when ``in_dt`` is float64 (``model_ref``), else in the given dtypes (``model_pt``:
    the sum in float32 rounded to the residual dtype, the norm in the weight dtype)."""
    ref = in_dt is torch.float64
    x_t = _t(x).to(in_dt).requires_grad_()
    res_t = None if res is None else _t(res).to(in_dt).requires_grad_()
    w_t = _t(w).to(w_dt).requires_grad_()
    b_t = _t(b).to(w_dt).requires_grad_()
    acc = torch.float64 if ref else torch.float32
    r = x_t.to(acc) * _t(keep).to(acc) / (1 - p)
    if res_t is not None:
        r = r + res_t.to(acc)
    r = r.to(in_dt)
    out = TF.layer_norm(r.to(w_dt), (x.shape[-1],), w_t, b_t, eps).to(in_dt)
    return (x_t, res_t, w_t, b_t), out, r


def _grads(leaves):
    return [None if t is None else _np(t.grad) for t in leaves]


def _flash_training_case(backend, rng, hidden, in_np, w_np, p, has_residual, prenorm):
    shape = (2, 3, hidden)
    x = rng.standard_normal(shape).astype(in_np)
    res = rng.standard_normal(shape).astype(in_np) if has_residual else None
    w = rng.standard_normal(hidden).astype(w_np)  # torch.nn.init.normal_
    b = rng.standard_normal(hidden).astype(w_np)
    g = (rng.standard_normal(shape) / 2).astype(in_np)
    y, r, mean, rstd, bitmask = F.dropout_add_layer_norm_with_stats(
        _bx(backend, x), _bx(backend, res), hidden, vec(backend, w), vec(backend, b), p,
        seed=SEED, call=CALL, backend=backend.name,
    )  # fmt: skip
    y_h, r_h = to_numpy(backend, y), to_numpy(backend, r)
    assert y_h.dtype == in_np and r_h.dtype == in_np  # out.dtype == input_dtype
    keep = _keep(shape, p)
    if p > 0:  # 'Actual dropout fraction'
        assert abs(1 - keep.mean() - p) < 0.1

    # the loss: out (post-norm) or out * sigmoid(residual) (prenorm), with gradient g
    def loss(out, resid):
        return ((out * torch.sigmoid(resid) if prenorm else out) * _t(g).to(out.dtype)).sum()

    # normdrop's gradients into y and r, from its own outputs, as autograd would give them
    y_t = _t(y_h).requires_grad_()
    r_t = _t(r_h).requires_grad_()
    loss(y_t, r_t).backward()
    gy = _np(y_t.grad).astype(in_np)
    gr = _np(r_t.grad).astype(in_np) if prenorm else None
    dx, dres, dw, db = F.dropout_add_layer_norm_backward(
        _bx(backend, gy), r, hidden, mean, rstd, vec(backend, w), p, True,
        grad_r=_bx(backend, gr), seed=SEED, call=CALL, bitmask=bitmask,
        has_residual=has_residual, backend=backend.name,
    )  # fmt: skip
    ours = [to_numpy(backend, a) for a in (dx, dres, dw, db)]
    assert ours[0].dtype == in_np and ours[2].dtype == w_np and ours[3].dtype == w_np
    assert (ours[1] is None) == (not has_residual)

    tin, tw = _TORCH_DTYPE[in_np], _TORCH_DTYPE[w_np]
    pt_leaves, out_pt, r_pt = _torch_block(x, res, w, b, keep, p, tin, tw)
    ref_leaves, out_ref, r_ref = _torch_block(x, res, w, b, keep, p, torch.float64, torch.float64)
    loss(out_pt, r_pt).backward()
    loss(out_ref, r_ref).backward()
    pt, ref = _grads(pt_leaves), _grads(ref_leaves)
    _flash_close("out", y_h, _np(out_ref), _np(out_pt))
    _flash_close("residual", r_h, _np(r_ref), _np(r_pt))
    _flash_close("x grad", ours[0], ref[0], pt[0])
    if has_residual:
        _flash_close("residual grad", ours[1], ref[1], pt[1])
    _flash_close("weight grad", ours[2], ref[2], pt[2], 3.0, 3e-5 if not prenorm else 2e-4)
    _flash_close("bias grad", ours[3], ref[3], pt[3], 2.0, 3e-5 if not prenorm else 2e-4)
    if in_np == np.float64:  # normdrop computes float64 in float64: hold it to that
        for name, a, want in zip(("x", "residual", "weight", "bias"), ours, ref, strict=True):
            if want is not None:
                np.testing.assert_allclose(a, want, rtol=1e-9, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(y_h, _np(out_ref), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("in_np, w_np", DTYPES, ids=_DTYPE_IDS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_flash_dropout_layer_norm_training(backend, rng, hidden, in_np, w_np):
    """flash-attention test_dropout_layer_norm_training (is_rms_norm=False, no rowscale or
    colscale): forward and backward against the separate ops with the fused op's mask, for
    p in (0.37, 0) with and without a residual."""
    _hidden_ok(backend, hidden)
    for p in (0.37, 0.0):
        for has_residual in (True, False):
            _flash_training_case(backend, rng, hidden, in_np, w_np, p, has_residual, False)


@pytest.mark.parametrize("in_np, w_np", DTYPES, ids=_DTYPE_IDS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_flash_dropout_layer_norm_prenorm_training(backend, rng, hidden, in_np, w_np):
    """flash-attention test_dropout_layer_norm_prenorm_training: ``prenorm=True`` returns the
    residual too (normdrop always returns ``r``) and the loss ``out * sigmoid(residual)``
    sends a gradient into ``r`` as well (normdrop's ``grad_r``)."""
    _hidden_ok(backend, hidden)
    for p in (0.37, 0.0):
        for has_residual in (True, False):
            _flash_training_case(backend, rng, hidden, in_np, w_np, p, has_residual, True)


@pytest.mark.parametrize("in_np", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("hidden", [768, 1000, 1536, 5120])
def test_flash_dropout_layer_norm_eval(backend, rng, hidden, in_np):
    """flash-attention test_dropout_layer_norm_eval and _prenorm_eval: the layer in eval mode
    (p=0.37) is the add and the LayerNorm; the weights are copied from a torch LayerNorm
    (here through ``load_state_dict``). The residual is ``(x0.float() + res.float())``
    rounded to the data dtype: exactly, as normdrop computes float16 in float32."""
    _hidden_ok(backend, hidden)
    shape = (2, 3, hidden)
    x = rng.standard_normal(shape).astype(in_np)
    res = rng.standard_normal(shape).astype(in_np)
    model_pt = torch.nn.LayerNorm(hidden)
    torch.nn.init.normal_(model_pt.weight)
    torch.nn.init.normal_(model_pt.bias)
    model = normdrop.DropoutAddLayerNorm(hidden, p=0.37, backend=backend.name)
    model.load_state_dict(model_pt.state_dict())
    model.eval()
    out, residual = model(backend.asarray(x), backend.asarray(res))
    want_r = (x.astype(np.float64) + res).astype(in_np)
    np.testing.assert_array_equal(to_numpy(backend, residual), want_r)
    out_ref = model_pt.double()(_t(want_r).double())
    tol = {np.float16: 2e-3, np.float32: 2e-5, np.float64: 1e-6}[in_np]  # float32 weights
    np.testing.assert_allclose(to_numpy(backend, out), _np(out_ref), rtol=tol, atol=tol)
    assert model.call_count == 0


def test_flash_return_dropout_mask_is_dropouts_mask(backend):
    """flash-attention ``return_dropout_mask=True`` (every training test): the fused op's
    mask is the one the reference applies. In normdrop's terms: a layer's call k drops
    exactly what ``functional.dropout`` drops for ``(seed, k)`` and ``Dropout(p, seed)`` at
    its call k, and the dropped fraction is near p."""
    rows, hidden = (2, 100) if backend.name in SLOW_BACKENDS else (6, 5120)
    x = (1 + np.random.default_rng(3).random((rows, hidden))).astype(np.float32)  # no zeros
    layer = normdrop.DropoutAddLayerNorm(hidden, p=0.37, seed=SEED, backend=backend.name)
    drop = normdrop.Dropout(0.37, seed=SEED, backend=backend.name)
    for call in range(3):
        _, r = layer(backend.asarray(x))
        dropped = to_numpy(backend, r) == 0
        keep = F.dropout_mask(x.shape, 0.37, seed=SEED, call=call, backend=backend.name)
        np.testing.assert_array_equal(~dropped, to_numpy(backend, keep))
        h = to_numpy(
            backend, F.dropout(backend.asarray(x), 0.37, seed=SEED, call=call, backend=backend)
        )
        np.testing.assert_array_equal(dropped, h == 0)
        np.testing.assert_array_equal(dropped, to_numpy(backend, drop(backend.asarray(x))) == 0)
        assert abs(dropped.mean() - 0.37) < (0.1 if backend.name in SLOW_BACKENDS else 0.02)


def test_flash_residual_dtype_other_than_input_is_refused():
    """flash-attention's (float16 input, float32 residual) pairs: the sum is kept in the
    residual's dtype. normdrop does no type promotion in the add (docs/differences.md): the
    mismatch is a DTypeError naming the residual and both dtypes; with x cast to float32 the
    sum is float32, as FlashAttention's residual is."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 16)).astype(np.float16)
    res = rng.standard_normal((3, 16)).astype(np.float32)
    with pytest.raises(
        DTypeError, match=r"residual must have the dtype of x \(float16\), got float32"
    ):
        F.dropout_add_layer_norm(x, res, 16, p=0.37, seed=SEED)
    layer = normdrop.DropoutAddLayerNorm(16, p=0.37, seed=SEED)
    with pytest.raises(DTypeError, match="residual"):
        layer(x, res)
    assert layer.call_count == 0
    # the gradient into r (prenorm's) must have r's dtype too; the refusal changes no grads
    layer(x, res.astype(np.float16))
    with pytest.raises(DTypeError, match="grad_r must have the dtype"):
        layer.backward(np.ones_like(x), np.ones((3, 16), np.float32))
    assert not np.any(layer.grads["weight"]) and not np.any(layer.grads["bias"])
    y, r = F.dropout_add_layer_norm(x.astype(np.float32), res, 16, p=0.37, seed=SEED)
    keep = _keep(x.shape, 0.37, call=0)
    want = (x.astype(np.float32) * keep * np.float32(1 / 0.63)).astype(np.float32) + res
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, True)])
def test_flash_module_loads_torch_layernorm_weights(backend, rng, affine, bias):
    """flash-attention's tests copy a torch LayerNorm's weight and bias into the
    DropoutAddLayerNorm module; here its state_dict loads as it is (also for bias=False and
    elementwise_affine=False), and the layer then equals the LayerNorm (p=0 in training)."""
    d = 24
    norm = torch.nn.LayerNorm(d, elementwise_affine=affine, bias=bias).double()
    if affine:
        torch.nn.init.normal_(norm.weight)
        if bias:
            torch.nn.init.normal_(norm.bias)
    layer = normdrop.DropoutAddLayerNorm(
        d, p=0.0, elementwise_affine=affine, bias=bias, dtype="float64", backend=backend.name
    )
    layer.load_state_dict(norm.state_dict())
    assert list(layer.state_dict()) == list(norm.state_dict())
    x = rng.standard_normal((4, d))
    res = rng.standard_normal((4, d))
    y, r = layer(backend.asarray(x), backend.asarray(res))
    want = norm(_t(x + res))
    np.testing.assert_allclose(to_numpy(backend, y), _np(want), rtol=1e-10, atol=1e-10)
    gy = rng.standard_normal((4, d))
    gx, gres = layer.backward(backend.asarray(gy))
    leaf = _t(x + res).requires_grad_()
    norm.zero_grad()
    norm(leaf).backward(_t(gy))
    np.testing.assert_allclose(to_numpy(backend, gx), _np(leaf.grad), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(to_numpy(backend, gres), _np(leaf.grad), rtol=1e-9, atol=1e-10)
    for name, param in norm.named_parameters():
        got = layer.grads[name]
        got = got if isinstance(got, np.ndarray) else backend.to_numpy(got)
        np.testing.assert_allclose(got, _np(param.grad), rtol=1e-9, atol=1e-10, err_msg=name)


# ==================================================================================== Apex
# NVIDIA/apex tests/L0/run_fused_layer_norm/test_fused_layer_norm.py: FusedLayerNorm against
# torch's LayerNorm (apex compares its CPU and CUDA modules, which are torch's maths), on
# contiguous and non-contiguous inputs, with and without elementwise affine, in float32 and
# float16, forward and input gradient; and under autocast (low-precision input, float32
# parameters). Ported for normdrop's LayerNorm and for the fused op without dropout, which
# must be the same LayerNorm. Not ported: FusedRMSNorm (no RMSNorm), bfloat16.

_APEX_SHAPE = [32, 16]


def _apex_input(backend, batch, contiguous, dtype, seed=42):
    shape = _APEX_SHAPE if backend.name not in SLOW_BACKENDS else [8, 4]
    rng = np.random.default_rng(seed)
    if contiguous:
        x = rng.standard_normal([batch, *shape]).astype(np.float32)
    else:
        src = rng.standard_normal([batch * 3, shape[0] * 5, shape[1] * 3]).astype(np.float32)
        x = src[::3, ::5, ::3]
        assert not x.flags.c_contiguous
    return shape, x.astype(dtype, copy=False) if dtype != np.float32 else x


def _assert_close_torch(ours, want, dtype, what):
    """torch.testing.assert_close's default tolerances for ``dtype``."""
    rtol, atol = {np.float16: (1e-3, 1e-5), np.float32: (1.3e-6, 1e-5)}[dtype]
    np.testing.assert_allclose(ours, want, rtol=rtol, atol=atol, err_msg=what)


def _apex_check(backend, batch, contiguous, dtype, affine):
    shape, x = _apex_input(backend, batch, contiguous, dtype)
    assert x.dtype == dtype
    torch_ln = torch.nn.LayerNorm(shape, elementwise_affine=affine)  # float32 on the CPU
    x_t = _t(x.astype(np.float32)).requires_grad_()
    want = torch_ln(x_t)
    # rand_like, rounded to the data dtype as apex's gO.to(dtype)
    go = np.random.default_rng(7).random(want.shape).astype(dtype).astype(np.float32)
    want.backward(_t(go))
    want_y = _np(want).astype(dtype)
    want_gx = _np(x_t.grad).astype(dtype)
    bx = backend.asarray(x)
    go_b = backend.asarray(go.astype(dtype))

    layer = normdrop.LayerNorm(shape, elementwise_affine=affine, backend=backend.name)
    _assert_close_torch(to_numpy(backend, layer(bx)), want_y, dtype, "LayerNorm out")
    _assert_close_torch(to_numpy(backend, layer.backward(go_b)), want_gx, dtype, "LayerNorm dx")

    fused = normdrop.DropoutAddLayerNorm(shape, p=0.0, elementwise_affine=affine,
                                         backend=backend.name)  # fmt: skip
    y, r = fused(bx)
    _assert_close_torch(to_numpy(backend, y), want_y, dtype, "fused out")
    np.testing.assert_array_equal(to_numpy(backend, r), x)
    gx, gres = fused.backward(go_b)
    assert gres is None
    _assert_close_torch(to_numpy(backend, gx), want_gx, dtype, "fused dx")
    if affine and dtype == np.float32:  # TestFusedRMSNorm's weight-gradient check
        for lay in (layer, fused):
            for name, param in torch_ln.named_parameters():
                got = lay.grads[name]
                got = got if isinstance(got, np.ndarray) else backend.to_numpy(got)
                np.testing.assert_allclose(got, _np(param.grad), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@pytest.mark.parametrize(
    "dtype, affine",
    [(np.float32, False), (np.float32, True), (np.float16, True)],
    ids=["TestFusedLayerNorm", "TestFusedLayerNormElemWise", "TestFusedLayerNormElemWiseHalf"],
)
def test_apex_layer_norm(backend, dtype, affine, contiguous):
    """apex TestFusedLayerNorm / ElemWise / ElemWiseHalf test_layer_norm: batch 16 of
    (32, 16) rows, contiguous and strided (``src[::3, ::5, ::3]``), forward and input
    gradient (``rand_like`` output gradient) against torch's float32 LayerNorm, with the
    result rounded to the data dtype for float16."""
    _apex_check(backend, 16 if backend.name not in SLOW_BACKENDS else 2, contiguous, dtype, affine)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_apex_strided_inputs_of_the_fused_op(backend, dtype):
    """apex _check_same_output(contiguous=False), carried to every array the fused op takes:
    strided ``x``, ``residual``, ``grad_y`` and ``grad_r`` (``src[::3, ::5, ::3]``) give
    what their contiguous copies give, forward and backward, with dropout."""
    shape, x = _apex_input(backend, 4, False, dtype, seed=1)
    _, res = _apex_input(backend, 4, False, dtype, seed=2)
    _, gy = _apex_input(backend, 4, False, dtype, seed=3)
    _, gr = _apex_input(backend, 4, False, dtype, seed=4)
    w = np.linspace(0.5, 1.5, np.prod(shape)).reshape(shape).astype(np.float32)
    results = []
    for arrays in ((x, res, gy, gr), tuple(np.ascontiguousarray(a) for a in (x, res, gy, gr))):
        bx, bres, bgy, bgr = (backend.asarray(a) for a in arrays)
        y, r, mean, rstd, bitmask = F.dropout_add_layer_norm_with_stats(
            bx, bres, shape, vec(backend, w), None, 0.25, seed=SEED, call=CALL,
            backend=backend.name,
        )  # fmt: skip
        grads = F.dropout_add_layer_norm_backward(
            bgy, r, shape, mean, rstd, vec(backend, w), 0.25, True, grad_r=bgr, seed=SEED,
            call=CALL, bitmask=bitmask, backend=backend.name,
        )  # fmt: skip
        results.append([to_numpy(backend, a) for a in (y, r, *grads[:3])])
    for name, strided, contiguous in zip(("y", "r", "dx", "dres", "dw"), *results, strict=True):
        np.testing.assert_array_equal(strided, contiguous, err_msg=name)


@pytest.mark.parametrize("affine", [False, True])
def test_apex_large_batch(backend, affine):
    """apex TestFusedLayerNorm test_large_batch (65536 rows of (32, 16), here 4096)."""
    _fast_only(backend)
    _apex_check(backend, 4096, True, np.float32, affine)


def _fast_only(backend):
    skip_on_slow_backend(backend, "too many elements for the CUDA simulator")


@pytest.mark.parametrize("affine", [True, False])
def test_apex_autocast_half_input_float32_parameters(backend, affine):
    """apex TestAutocastFusedLayerNorm: the fused layer under ``autocast(float16)`` (float32
    parameters, half input) against torch's LayerNorm run in float16. In normdrop's terms a
    float16 input with the float32 layer gives a float16 result, as close to torch's
    float16 LayerNorm as the default float16 tolerances."""
    shape = _APEX_SHAPE if backend.name not in SLOW_BACKENDS else [8, 4]
    x = np.random.default_rng(8).standard_normal([16 if backend.name not in SLOW_BACKENDS else 2,
                                                  *shape]).astype(np.float16)  # fmt: skip
    native = torch.nn.LayerNorm(shape, elementwise_affine=affine).to(torch.float16)
    x_t = _t(x).requires_grad_()
    expected = native(x_t)
    g = np.random.default_rng(9).random(expected.shape).astype(np.float16)
    expected.backward(_t(g))
    for layer in (
        normdrop.LayerNorm(shape, elementwise_affine=affine, backend=backend.name),
        normdrop.DropoutAddLayerNorm(shape, p=0.1, elementwise_affine=affine,
                                     backend=backend.name).eval(),
    ):  # fmt: skip
        out = layer(backend.asarray(x))
        out = out[0] if isinstance(out, tuple) else out
        out_h = to_numpy(backend, out)
        assert out_h.dtype == np.float16
        np.testing.assert_allclose(out_h, _np(expected), rtol=1e-3, atol=1e-3)
        gx = layer.backward(backend.asarray(g))
        gx = gx[0] if isinstance(gx, tuple) else gx
        assert to_numpy(backend, gx).dtype == np.float16
        np.testing.assert_allclose(to_numpy(backend, gx), _np(x_t.grad), rtol=1e-3, atol=2e-3)


# ================================================================================== Paddle
# PaddlePaddle/Paddle test/legacy_test/test_fused_dropout_add_op.py (fused_dropout_add,
# FusedDropoutAdd) and test_fused_bias_dropout_residual_layer_norm_op.py. normdrop's fused op
# always ends in a LayerNorm; its ``r`` output is Paddle's dropout_add. Not ported:
# ``mode="downscale_in_infer"`` (normdrop's dropout is inverted dropout only), the static
# graph test (no static graphs).


@pytest.mark.parametrize("seed", [0, 1024])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("p", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_paddle_fused_dropout_add(backend, dtype, p, training, seed):
    """Paddle TestFusedDropoutAdd (create_test_class over dtype, p, training and seed;
    shape (2, 1024, 1, 1)): ``out = dropout_add(out, data[i])`` chained twice, then the
    gradients of all three inputs from ``out_g``; fused against dropout then add. Here the
    trailing (1, 1) is the normalised shape, so each row has one element and ``y`` is 0."""
    shape = (2, 1024, 1, 1) if backend.name not in SLOW_BACKENDS else (2, 16, 1, 1)
    rng = np.random.default_rng(seed)
    data = [rng.standard_normal(shape).astype(dtype) for _ in range(3)]
    out_g = rng.standard_normal(shape).astype(dtype)

    # fused: r is the dropout_add; each link is call i of the same seed
    out, saved = backend.asarray(data[0]), []
    for i in (1, 2):
        y, r, mean, rstd, bitmask = F.dropout_add_layer_norm_with_stats(
            out, backend.asarray(data[i]), (1, 1), p=p, training=training, seed=seed, call=i,
            backend=backend.name,
        )  # fmt: skip
        assert to_numpy(backend, y).dtype == dtype
        np.testing.assert_array_equal(to_numpy(backend, y), np.zeros(shape, dtype))
        saved.append((r, mean, rstd, bitmask))
        out = r
    grads, g = [], backend.asarray(out_g)
    for i, (r, mean, rstd, bitmask) in zip((2, 1), reversed(saved), strict=True):
        gx, gres, _, _ = F.dropout_add_layer_norm_backward(
            backend.asarray(np.zeros(shape, dtype)), r, (1, 1), mean, rstd, None, p, training,
            grad_r=g, seed=seed, call=i, bitmask=bitmask, backend=backend.name,
        )  # fmt: skip
        grads.insert(0, to_numpy(backend, gres))
        g = gx
    grads.insert(0, to_numpy(backend, g))

    # separate: dropout, then add (as paddle_dropout_add does); float16 is computed in
    # float32 and each link rounded once (docs/differences.md), where separate float16 calls
    # round the dropout output and the sum
    ref = data[0]
    acc = np.float32 if dtype == np.float16 else dtype
    for i in (1, 2):
        h = F.dropout(ref.astype(acc), p, training, seed=seed, call=i, backend="numpy")
        ref = (h + data[i].astype(acc)).astype(dtype)
    np.testing.assert_array_equal(to_numpy(backend, out), ref)
    ref_grads = [None, None, out_g]
    g = out_g
    for i in (2, 1):
        ref_grads[i] = g
        g = F.dropout_backward(g, p if training else 0.0, seed=seed, call=i, backend="numpy")
    ref_grads[0] = g
    for i in range(3):
        np.testing.assert_allclose(grads[i], ref_grads[i], rtol=1e-5, err_msg=f"grad {i}")


@pytest.mark.parametrize("p", [1.0, -1.0])
def test_paddle_probability_out_of_range_is_a_value_error(p):
    """Paddle TestFusedDropoutAddStatic.test_assert (``FusedDropoutAdd(p=-1)`` raises
    ValueError) and create_test_class's p=1.0: normdrop refuses p outside [0, 1) (SPEC:
    p = 1 is rejected, as the seed API page says) with InvalidParameterError, a ValueError,
    from the layer and the function."""
    with pytest.raises(ValueError, match="Dropout probability must be in"):
        normdrop.DropoutAddLayerNorm(4, p=p)
    with pytest.raises(InvalidParameterError, match="Dropout probability must be in"):
        F.dropout_add_layer_norm(np.ones((2, 4)), np.ones((2, 4)), 4, p=p, seed=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_paddle_fused_dropout_add_layer(backend, dtype):
    """Paddle TestFusedDropoutAddStatic.test_fused_dropout_add_layer: ``FusedDropoutAdd``
    and ``Dropout(x) + y`` from the same seed are equal. Here DropoutAddLayerNorm's ``r``
    and ``Dropout(0.5, seed)(x) + y``, call after call."""
    shape = (2, 80, 8, 2) if backend.name not in SLOW_BACKENDS else (2, 4, 8, 2)
    rng = np.random.default_rng(2048)
    layer = normdrop.DropoutAddLayerNorm(2, p=0.5, seed=2048, backend=backend.name)
    drop = normdrop.Dropout(0.5, seed=2048, backend=backend.name)
    for _ in range(2):
        x = rng.standard_normal(shape).astype(dtype)
        y = rng.standard_normal(shape).astype(dtype)
        _, fused_out = layer(backend.asarray(x), backend.asarray(y))
        out = to_numpy(backend, drop(backend.asarray(x))) + y
        np.testing.assert_array_equal(to_numpy(backend, fused_out), out)


@pytest.mark.parametrize("batch", [2, 0], ids=["batch", "ZeroSize"])
@pytest.mark.parametrize(
    "dtype, linear_bias", [(np.float32, True), (np.float32, False), (np.float16, True)],
    ids=["Op", "OpBiasIsNone", "OpFp16"],
)  # fmt: skip
def test_paddle_fused_bias_dropout_residual_layer_norm(backend, dtype, linear_bias, batch):
    """Paddle TestFusedBiasDropoutResidualLayerNormOp (and _BiasIsNone, _Fp16, _ZeroSize):
    ``layer_norm(residual + dropout(x + linear_bias))`` with p=0 in training, uniform data,
    a float32 LayerNorm (also for float16 data), forward and the gradients of x, residual
    and the linear bias against torch. normdrop has no bias before dropout: the port adds
    it to x first, and its gradient is x's gradient summed over the rows."""
    seq, embed = (4, 1024) if backend.name not in SLOW_BACKENDS else (2, 64)
    rng = np.random.default_rng(42)
    x = rng.random((batch, seq, embed)).astype(dtype)
    residual = rng.random((batch, seq, embed)).astype(dtype)
    lbias = rng.random(embed).astype(dtype) if linear_bias else None
    dout = rng.random((batch, seq, embed)).astype(dtype)
    atol = 1e-1 if dtype == np.float16 else 1e-4

    norm1 = torch.nn.LayerNorm(embed)  # float32, as Paddle's default dtype at construction
    x_t = _t(x).requires_grad_()
    res_t = _t(residual).requires_grad_()
    lb_t = None if lbias is None else _t(lbias).requires_grad_()
    inp = x_t if lb_t is None else x_t + lb_t
    final = norm1((res_t + TF.dropout(inp, 0.0, True)).float()).to(x_t.dtype)
    final.backward(_t(dout))

    layer = normdrop.DropoutAddLayerNorm(embed, p=0.0, backend=backend.name)
    xin = x if lbias is None else x + lbias
    out, _ = layer(backend.asarray(xin), backend.asarray(residual))
    gx, gres = layer.backward(backend.asarray(dout))
    out, gx, gres = (to_numpy(backend, a) for a in (out, gx, gres))
    assert out.shape == (batch, seq, embed) and out.dtype == dtype
    np.testing.assert_allclose(out, _np(final), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(gx, _np(x_t.grad), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(gres, _np(res_t.grad), rtol=1e-5, atol=atol)
    if lb_t is not None:
        lb_grad = gx.astype(np.float64).sum(axis=(0, 1))
        np.testing.assert_allclose(lb_grad, _np(lb_t.grad), rtol=1e-3, atol=atol * 10)
