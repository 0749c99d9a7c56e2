"""PyTorch as a second oracle: forward, running statistics, backward, state dicts, dropout scale."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import host, tol

import normdrop
from normdrop import functional as F

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _torch_bn(c, dtype, **kwargs):
    return torch.nn.BatchNorm1d(c, dtype=TORCH_DTYPE[dtype], **kwargs)


def _init_affine(rng, tlayer, layer):
    with torch.no_grad():
        tlayer.weight.copy_(torch.from_numpy(rng.standard_normal(tuple(tlayer.weight.shape))))
        if tlayer.bias is not None:
            tlayer.bias.copy_(torch.from_numpy(rng.standard_normal(tuple(tlayer.bias.shape))))
    layer.load_state_dict(tlayer.state_dict(), strict=False)


def _step_matches_torch(backend, layer, tlayer, x, g, dtype):
    """One forward and backward of both layers: the outputs, the input gradients and the
    accumulated parameter gradients agree with PyTorch's."""
    tx = _t(x).requires_grad_(True)
    ty = tlayer(tx)
    ty.backward(_t(g))
    close = tol(dtype, "torch")
    y = layer(backend.asarray(x))
    dx = layer.backward(backend.asarray(g))
    np.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), **close)
    np.testing.assert_allclose(backend.to_numpy(dx), tx.grad.numpy(), **close)
    for name, param in tlayer.named_parameters():
        np.testing.assert_allclose(
            host(backend, layer.grads[name]), param.grad.numpy(), **close, err_msg=name
        )


# ----------------------------------------------------------------------------- BatchNorm1d
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5)])
@pytest.mark.parametrize("momentum", [0.7, None])
@pytest.mark.parametrize(("affine", "track"), [(True, True), (False, True), (True, False)])
def test_batchnorm_matches_torch(backend, rng, dtype, shape, momentum, affine, track):
    c = shape[1]
    tbn = _torch_bn(c, dtype, momentum=momentum, affine=affine, track_running_stats=track)
    bn = normdrop.BatchNorm1d(
        c,
        momentum=momentum,
        affine=affine,
        track_running_stats=track,
        dtype=dtype,
        backend=backend.name,
    )
    if affine:
        _init_affine(rng, tbn, bn)
    for step in range(3):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        _step_matches_torch(backend, bn, tbn, x, g, dtype)
        for k, v in tbn.state_dict().items():
            ours = bn.state_dict()[k]
            assert ours.dtype == v.numpy().dtype, k
            np.testing.assert_allclose(ours, v.numpy(), **tol(dtype, "torch"), err_msg=k)
    tbn.eval()
    bn.eval()
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    _step_matches_torch(backend, bn, tbn, x, g, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_functional_batch_norm_matches_torch(rng, dtype):
    x = rng.standard_normal((6, 4, 3)).astype(dtype)
    rm, rv = rng.standard_normal(4).astype(dtype), (rng.random(4) + 0.5).astype(dtype)
    w, b = rng.standard_normal(4).astype(dtype), rng.standard_normal(4).astype(dtype)
    trm, trv = _t(rm.copy()), _t(rv.copy())
    expected = torch.nn.functional.batch_norm(
        _t(x), trm, trv, _t(w), _t(b), training=True, momentum=0.3, eps=1e-3
    )
    ours_rm, ours_rv = rm.copy(), rv.copy()
    y = F.batch_norm(x, ours_rm, ours_rv, w, b, training=True, momentum=0.3, eps=1e-3)
    np.testing.assert_allclose(y, expected.numpy(), **tol(dtype, "torch"))
    np.testing.assert_allclose(ours_rm, trm.numpy(), **tol(dtype, "torch"))
    np.testing.assert_allclose(ours_rv, trv.numpy(), **tol(dtype, "torch"))
    expected = torch.nn.functional.batch_norm(_t(x), trm, trv, _t(w), _t(b), training=False)
    y = F.batch_norm(x, ours_rm, ours_rv, w, b, training=False)
    np.testing.assert_allclose(y, expected.numpy(), **tol(dtype, "torch"))


# ----------------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("normalized_shape", "shape"),
    [((5,), (3, 5)), ((2, 3), (4, 2, 3)), ((3,), (2, 2, 2, 3)), ((4,), (4,))],
)
@pytest.mark.parametrize(("affine", "bias"), [(True, True), (True, False), (False, True)])
def test_layernorm_matches_torch(backend, rng, dtype, normalized_shape, shape, affine, bias):
    tln = torch.nn.LayerNorm(
        normalized_shape, elementwise_affine=affine, bias=bias, dtype=TORCH_DTYPE[dtype]
    )
    ln = normdrop.LayerNorm(
        normalized_shape, elementwise_affine=affine, bias=bias, dtype=dtype, backend=backend.name
    )
    if affine:
        _init_affine(rng, tln, ln)
    assert list(ln.state_dict()) == list(tln.state_dict())
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    _step_matches_torch(backend, ln, tln, x, g, dtype)


# ----------------------------------------------------------------------------- state dicts
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: normdrop.BatchNorm1d(4), lambda: torch.nn.BatchNorm1d(4)),
        (
            lambda: normdrop.BatchNorm1d(4, affine=False),
            lambda: torch.nn.BatchNorm1d(4, affine=False),
        ),
        (
            lambda: normdrop.BatchNorm1d(4, track_running_stats=False),
            lambda: torch.nn.BatchNorm1d(4, track_running_stats=False),
        ),
        (lambda: normdrop.LayerNorm((2, 3)), lambda: torch.nn.LayerNorm((2, 3))),
        (lambda: normdrop.LayerNorm(3, bias=False), lambda: torch.nn.LayerNorm(3, bias=False)),
        (
            lambda: normdrop.LayerNorm(3, elementwise_affine=False),
            lambda: torch.nn.LayerNorm(3, elementwise_affine=False),
        ),
        (lambda: normdrop.Dropout(0.2, seed=0), lambda: torch.nn.Dropout(0.2)),
    ],
)
def test_state_dict_keys_order_shapes_dtypes_equal_torch(ours, theirs):
    a, b = ours().state_dict(), theirs().state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == tuple(b[k].shape), k
        assert a[k].dtype == b[k].numpy().dtype, k
        np.testing.assert_array_equal(a[k], b[k].numpy())


def test_sequential_state_dict_keys_equal_torch():
    ours = normdrop.Sequential(
        normdrop.BatchNorm1d(3), normdrop.Dropout(0.1, seed=0), normdrop.LayerNorm(3)
    )
    theirs = torch.nn.Sequential(
        torch.nn.BatchNorm1d(3), torch.nn.Dropout(0.1), torch.nn.LayerNorm(3)
    )
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_load_torch_state_dict_into_normdrop(backend, rng):
    tbn = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        tbn.weight.normal_()
        tbn.bias.normal_()
    for _ in range(4):
        tbn(torch.randn(5, 3) * 2 + 1)
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    assert bn.load_state_dict(tbn.state_dict()) == ([], [])  # tensors accepted as they are
    for k, v in tbn.state_dict().items():
        np.testing.assert_array_equal(bn.state_dict()[k], v.numpy())
    tbn.eval()
    bn.eval()
    x = rng.standard_normal((4, 3)).astype(np.float32)
    with torch.no_grad():
        expected = tbn(_t(x)).numpy()
    np.testing.assert_allclose(
        backend.to_numpy(bn(backend.asarray(x))), expected, rtol=1e-5, atol=1e-6
    )
    # an older checkpoint without num_batches_tracked
    state = tbn.state_dict()
    del state["num_batches_tracked"]
    normdrop.BatchNorm1d(3).load_state_dict(state)
    tln = torch.nn.LayerNorm((2, 3))
    with torch.no_grad():
        tln.weight.normal_()
        tln.bias.normal_()
    ln = normdrop.LayerNorm((2, 3), backend=backend.name)
    ln.load_state_dict(tln.state_dict())
    x = rng.standard_normal((2, 2, 3)).astype(np.float32)
    with torch.no_grad():
        expected = tln(_t(x)).numpy()
    np.testing.assert_allclose(
        backend.to_numpy(ln(backend.asarray(x))), expected, rtol=1e-5, atol=1e-6
    )


def test_load_normdrop_state_dict_into_torch(rng):
    bn = normdrop.BatchNorm1d(3, momentum=None)
    bn.load_state_dict(
        {"weight": rng.standard_normal(3), "bias": rng.standard_normal(3)}, strict=False
    )
    for _ in range(3):
        bn(rng.standard_normal((5, 3)).astype(np.float32))
    tbn = torch.nn.BatchNorm1d(3, momentum=None)
    result = tbn.load_state_dict({k: torch.from_numpy(v) for k, v in bn.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(tbn.state_dict()[k].numpy(), v)
    # and both continue identically (num_batches_tracked drives momentum=None)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    y = bn(x)
    with torch.no_grad():
        ty = tbn(_t(x)).numpy()
    np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-5)
    for k, v in bn.state_dict().items():
        np.testing.assert_allclose(tbn.state_dict()[k].numpy(), v, rtol=1e-6, atol=1e-7)
    model = normdrop.Sequential(normdrop.BatchNorm1d(3), normdrop.LayerNorm(3))
    tmodel = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.LayerNorm(3))
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    model.load_state_dict(tmodel.state_dict())


def test_repr_matches_torch_for_layernorm():
    # (BatchNorm1d's repr is fixed by the SPEC; recent torch versions add ``bias=...`` to theirs)
    assert repr(normdrop.LayerNorm(10)) == repr(torch.nn.LayerNorm(10))
    assert repr(normdrop.LayerNorm((2, 3), bias=False)) == repr(
        torch.nn.LayerNorm((2, 3), bias=False)
    )
    for args in [(5, 1e-3, False), (5, 1e-3, False, False), (4, 1e-5, True, False)]:
        assert repr(normdrop.LayerNorm(*args)) == repr(torch.nn.LayerNorm(*args))


# ----------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("p", [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.9, 0.99])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_scale_equals_torch(backend, p, dtype):
    torch.manual_seed(0)
    t = torch.nn.functional.dropout(torch.ones(4096, dtype=TORCH_DTYPE[dtype]), p, training=True)
    survivors = np.unique(t.numpy()[t.numpy() != 0])
    assert survivors.size == 1
    y = backend.to_numpy(
        F.dropout(backend.asarray(np.ones(4096, dtype)), p, seed=3, backend=backend)
    )
    ours = np.unique(y[y != 0])
    assert ours.size == 1
    assert ours[0] == survivors[0], (float(ours[0]), float(survivors[0]))
    # and the survivors of other values are value * that scale, as in torch
    x = np.linspace(-3, 3, 4096).astype(dtype)
    torch.manual_seed(0)
    tx = torch.nn.functional.dropout(_t(x), p, training=True).numpy()
    kept = tx != 0
    np.testing.assert_array_equal(tx[kept], x[kept] * survivors[0])


def test_dropout_identity_like_torch(rng):
    x = rng.standard_normal((3, 4))
    tx = _t(x)
    assert torch.nn.functional.dropout(tx, 0.5, training=False) is tx
    assert F.dropout(x, 0.5, training=False) is x
    assert torch.nn.Dropout(0.5).eval()(tx) is tx
    assert normdrop.Dropout(0.5, seed=0).eval()(x) is x


# ---------------------------------------------------------------------- low-precision checkpoints
@pytest.mark.parametrize("tdtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_low_precision_torch_state_dict_loads(backend, rng, tdtype, dtype):
    """A PyTorch state_dict in bfloat16 (which NumPy lacks) or float16 loads, its values
    widened exactly and cast to the layer's dtype."""
    tdt = getattr(torch, tdtype)
    tmodel = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.LayerNorm(3))
    with torch.no_grad():
        for t in tmodel.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.from_numpy(rng.standard_normal(tuple(t.shape))))
    tmodel = tmodel.to(tdt)
    model = normdrop.Sequential(
        normdrop.BatchNorm1d(3, dtype=dtype, backend=backend.name),
        normdrop.LayerNorm(3, dtype=dtype, backend=backend.name),
    )
    assert str(model.load_state_dict(tmodel.state_dict())) == "<All keys matched successfully>"
    for k, v in model.state_dict().items():
        expected = tmodel.state_dict()[k]
        if expected.is_floating_point():
            assert v.dtype == dtype
            expected = expected.float()
        np.testing.assert_array_equal(v, expected.numpy().astype(v.dtype), err_msg=k)
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    bn.weight = torch.full((3,), 1.5, dtype=tdt)  # assignment converts the same way
    np.testing.assert_array_equal(host(backend, bn.weight), [1.5, 1.5, 1.5])


# ----------------------------------------------------------------------------- foreign gradients
def test_torch_grad_output_is_a_backend_array_error(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    g = torch.ones(4, 3)
    layers = [
        normdrop.BatchNorm1d(3),
        normdrop.LayerNorm(3),
        normdrop.Dropout(0.5, seed=0),
        normdrop.Dropout(0.5, seed=0).eval(),
        normdrop.Sequential(normdrop.LayerNorm(3), normdrop.Dropout(0.2, seed=1)),
    ]
    for layer in layers:
        layer(x)
        before = {k: host(normdrop.get_backend("numpy"), v).copy() for k, v in layer.grads.items()}
        with pytest.raises(normdrop.BackendArrayError, match=r"grad_output.*torch\.Tensor"):
            layer.backward(g)
        for k, v in layer.grads.items():
            np.testing.assert_array_equal(v, before[k])
        layer.backward(np.ones((4, 3), np.float32))  # the saved pass is still usable
