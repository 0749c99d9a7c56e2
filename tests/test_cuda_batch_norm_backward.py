"""The cuda backend's whole BatchNorm backward (``batch_norm_backward``) against plain NumPy math.

Runs on the CUDA simulator without a GPU (the suite turns it on), on the device with one.
"""

from __future__ import annotations

import numpy as np
import pytest

import normdrop
from normdrop import functional as F
from normdrop.errors import BackendError

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")
try:
    cb = normdrop.get_backend("cuda")
except BackendError as exc:  # e.g. a GPU machine without CuPy
    pytest.skip(f"cuda backend unavailable: {exc}", allow_module_level=True)

# (N, C, L): (N, C) data with channel tiles past the grid cap, one channel over several
# partial rows, more partial rows than the merge block has row lanes, positions fewer than
# a block's lanes.
SHAPES = [(7, 13, 1), (9, 1, 5), (8, 3, 1), (4, 5, 3)]


def dev(a):
    return None if a is None else cb.asarray(np.asarray(a))


def host(a):
    return cb.to_numpy(a)


def expected_backward(dy, x, mean, rstd, weight, training):
    """The BatchNorm backward in plain float64 NumPy, per channel of ``(N, C, L)`` data."""
    dy, x = dy.astype(np.float64), x.astype(np.float64)
    count = x.shape[0] * x.shape[2]
    xmu = x - mean[:, None]
    sdy = dy.sum(axis=(0, 2))
    sdx = (xmu * dy).sum(axis=(0, 2))
    a = rstd * (1.0 if weight is None else weight.astype(np.float64))
    dx = a[:, None] * dy
    if training:
        dx -= a[:, None] * (sdy / count)[:, None] + (a * rstd**2 * sdx / count)[:, None] * xmu
    return dx, sdx * rstd, sdy


def _inputs(rng, shape, dtype, dy_dtype):
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dy_dtype)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2))
    rstd = 1.0 / np.sqrt(x64.var(axis=(0, 2)) + 1e-5)
    return x, dy, mean, rstd


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("wdt", [None, np.float32, np.float64], ids=str)
@pytest.mark.parametrize(
    "dtype, dy_dtype",
    [(np.float64, np.float64), (np.float32, np.float32), (np.float32, np.float64)],
    ids=str,
)
def test_whole_backward_matches_numpy(shape, training, wdt, dtype, dy_dtype, rng):
    x, dy, mean, rstd = _inputs(rng, shape, dtype, dy_dtype)
    weight = None if wdt is None else (rng.random(shape[1]) + 0.5).astype(wdt)
    dx_e, dw_e, db_e = expected_backward(dy, x, mean, rstd, weight, training)
    out = cb.empty(shape, dtype)
    got, dw, db = cb.batch_norm_backward(
        dev(dy), dev(x), dev(mean), dev(rstd), dev(weight), training, out
    )
    assert got is out
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert host(got).dtype == dtype
    np.testing.assert_allclose(host(got), dx_e, rtol=tol, atol=tol)
    if weight is None:
        assert dw is None and db is None
        return
    wtol = 1e-12 if wdt == np.float64 else 1e-6
    for got_g, exp_g in ((dw, dw_e), (db, db_e)):
        assert host(got_g).dtype == wdt and host(got_g).shape == (shape[1],)
        np.testing.assert_allclose(host(got_g), exp_g, rtol=wtol, atol=wtol)


def test_whole_backward_matches_pytorch_autograd(rng):
    torch = pytest.importorskip("torch")
    shape = (6, 4, 3)
    x, dy, _, _ = _inputs(rng, shape, np.float64, np.float64)
    weight = rng.random(4) + 0.5
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True)
    bt = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.batch_norm(xt, None, None, wt, bt, training=True, eps=1e-5).backward(
        torch.tensor(dy)
    )
    _, mean, rstd = F.batch_norm_with_stats(x, training=True, eps=1e-5, backend="numpy")
    got, dw, db = cb.batch_norm_backward(
        dev(dy), dev(x), dev(mean), dev(rstd), dev(weight), True, cb.empty(shape, np.float64)
    )
    np.testing.assert_allclose(host(got), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(dw), wt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(db), bt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_whole_backward_in_place_into_dy(training, rng):
    x, dy, mean, rstd = _inputs(rng, (5, 3, 2), np.float32, np.float32)
    weight = rng.random(3) + 0.5
    dx_e, _, _ = expected_backward(dy, x, mean, rstd, weight, training)
    d = dev(dy)
    got, _, _ = cb.batch_norm_backward(d, dev(x), dev(mean), dev(rstd), dev(weight), training, d)
    assert got is d
    np.testing.assert_allclose(host(d), dx_e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("wdt", [np.float32, np.float64], ids=str)
def test_whole_backward_accumulates_into_given_gradient_buffers(wdt, rng):
    """``accumulate=(dweight, dbias)``: the kernel adds the gradients to a layer's buffers."""
    x, dy, mean, rstd = _inputs(rng, (6, 4, 3), np.float32, np.float32)
    weight = (rng.random(4) + 0.5).astype(wdt)
    _, dw_e, db_e = expected_backward(dy, x, mean, rstd, weight, True)
    held_w, held_b = rng.standard_normal(4).astype(wdt), rng.standard_normal(4).astype(wdt)
    buffers = dev(held_w.copy()), dev(held_b.copy())  # the simulator's arrays are NumPy's
    args = (dev(dy), dev(x), dev(mean), dev(rstd), dev(weight), True, cb.empty(x.shape, np.float32))
    _, dw, db = cb.batch_norm_backward(*args, accumulate=buffers)
    assert dw is buffers[0] and db is buffers[1]
    tol = 1e-12 if wdt == np.float64 else 1e-6
    np.testing.assert_allclose(host(dw), held_w + dw_e, rtol=tol, atol=tol)
    np.testing.assert_allclose(host(db), held_b + db_e, rtol=tol, atol=tol)
    no_weight = (*args[:4], None, *args[5:])
    assert cb.batch_norm_backward(*no_weight, accumulate=buffers)[1:] == (None, None)
    np.testing.assert_allclose(host(dw), held_w + dw_e, rtol=tol, atol=tol)  # untouched


def test_whole_backward_is_deterministic(rng):
    x, dy, mean, rstd = _inputs(rng, (9, 3, 1), np.float32, np.float32)
    args = (dev(dy), dev(x), dev(mean), dev(rstd), dev(np.ones(3)), True)
    first = cb.batch_norm_backward(*args, cb.empty(x.shape, np.float32))
    again = cb.batch_norm_backward(*args, cb.empty(x.shape, np.float32))
    for a, b in zip(first, again, strict=True):
        assert host(a).tobytes() == host(b).tobytes()


@pytest.mark.parametrize("shape", [(0, 3, 2), (2, 3, 0)], ids=str)
def test_no_positions_give_zero_gradients_and_nan_statistics(shape):
    """No sample or no position per sample: nothing is launched over the data, the sums are
    zero (gradients) and the statistics NaN, as in the reference."""
    empty = np.zeros(shape, np.float32)
    got, dw, db = cb.batch_norm_backward(
        dev(empty), dev(empty), dev(np.zeros(3)), dev(np.ones(3)), dev(np.ones(3)), True,
        cb.empty(shape, np.float32),
    )  # fmt: skip
    assert host(got).shape == shape
    assert host(dw).tolist() == [0.0] * 3 and host(db).tolist() == [0.0] * 3
    sums = cb.channel_backward_reduce(dev(empty), dev(empty), dev(np.zeros(3)))
    assert [host(v).tolist() for v in sums] == [[0.0] * 3] * 2
    assert all(np.isnan(host(v)).all() for v in cb.channel_moments(dev(empty)))


def test_whole_backward_of_no_channels():
    got, dw, db = cb.batch_norm_backward(
        *(dev(np.zeros((2, 0, 1))) for _ in range(2)), dev(np.zeros(0)), dev(np.zeros(0)),
        dev(np.zeros(0)), True, cb.empty((2, 0, 1), np.float64),
    )  # fmt: skip
    assert host(got).shape == (2, 0, 1) and host(dw).shape == (0,) and host(db).shape == (0,)


@pytest.mark.parametrize(
    "training, has_weight, launches",
    [(True, True, 3), (True, False, 3), (False, True, 3), (False, False, 1)],
)
def test_whole_backward_launch_count(training, has_weight, launches, rng, monkeypatch):
    """Partial sums, merge (coefficients and gradients), element-wise pass; the evaluation
    backward without a weight needs no sums and is one launch."""
    from normdrop.backends.cuda_backend import _batchnorm_backward, _channels, _reduce

    seen = []

    def counting(fn, *args):
        seen.append(fn.py_func.__name__)
        real(fn, *args)

    real = _batchnorm_backward.launch
    for module in (_batchnorm_backward, _channels, _reduce):
        monkeypatch.setattr(module, "launch", counting)
    x, dy, mean, rstd = _inputs(rng, (4, 3, 2), np.float32, np.float32)
    weight = dev(np.ones(3)) if has_weight else None
    cb.batch_norm_backward(
        dev(dy), dev(x), dev(mean), dev(rstd), weight, training, cb.empty(x.shape, np.float32)
    )
    assert len(seen) == launches and seen[-1] == "_backward_elemt_kernel"
    assert "column_sums2_kernel" not in seen


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("with_weight", [True, False])
def test_functional_batch_norm_backward_on_the_backend(training, with_weight, rng):
    """The functional op on the cuda backend agrees with the numpy reference backend."""
    shape = (6, 3, 4)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    weight = (rng.random(3) + 0.5).astype(np.float32) if with_weight else None
    _, mean, rstd = F.batch_norm_with_stats(x, training=True, backend="numpy")
    expected = F.batch_norm_backward(dy, x, mean, rstd, weight, training=training, backend="numpy")
    got = F.batch_norm_backward(
        dev(dy), dev(x), dev(mean), dev(rstd), dev(weight), training=training, backend="cuda"
    )
    for g, e in zip(got, expected, strict=True):
        if e is None:
            assert g is None
            continue
        assert host(g).dtype == e.dtype
        np.testing.assert_allclose(host(g), e, rtol=1e-5, atol=1e-5)
