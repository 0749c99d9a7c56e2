"""BatchNorm1d (SPEC "BatchNorm1d"): golden values, statistics, modes and the functional op."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, host, param_ok, to_numpy, tol, vec
from hypothesis import given, settings
from hypothesis import strategies as st

import normdrop
from normdrop import functional as F
from normdrop.errors import InvalidParameterError

X_GOLDEN = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]])
Y_TRAIN = np.array(
    [[-1.2247425750, -1.3887286617], [0.0, 0.4629095539], [1.2247425750, 0.9258191078]]
)
Y_EVAL = np.array(
    [[0.6139382522, 1.1858504168], [2.3680475443, 4.3481181949], [4.1221568363, 5.1386851394]]
)


def bn_formula(x, mean, var, weight=None, bias=None, eps=1e-5):
    """Float64 BatchNorm of (N, C) or (N, C, L) data with the given per-channel statistics."""
    x = np.asarray(x, np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - np.reshape(mean, shape)) / np.sqrt(np.reshape(var, shape) + eps)
    if weight is not None:
        y = y * np.reshape(np.asarray(weight, np.float64), shape)
    if bias is not None:
        y = y + np.reshape(np.asarray(bias, np.float64), shape)
    return y


def batch_stats(x):
    x = np.asarray(x, np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    n = x.size // x.shape[1]
    return mean, var, var * n / (n - 1)


def _small(backend):
    return backend.name in SLOW_BACKENDS


# ----------------------------------------------------------------------------- golden values
def test_golden_train_then_eval(backend):
    bn = normdrop.BatchNorm1d(2, dtype="float64", backend=backend.name)
    assert bn.training is True
    y = bn(backend.asarray(X_GOLDEN))
    assert backend.accepts(y)
    np.testing.assert_allclose(backend.to_numpy(y), Y_TRAIN, rtol=0, atol=1e-9)
    np.testing.assert_allclose(host(backend, bn.running_mean), [0.3, 0.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(host(backend, bn.running_var), [1.3, 1.6], rtol=0, atol=1e-12)
    assert int(host(backend, bn.num_batches_tracked)) == 1
    bn.eval()
    y = bn(backend.asarray(X_GOLDEN))
    np.testing.assert_allclose(backend.to_numpy(y), Y_EVAL, rtol=0, atol=1e-9)
    # eval changes nothing
    np.testing.assert_allclose(host(backend, bn.running_mean), [0.3, 0.5], rtol=0, atol=1e-12)
    assert int(host(backend, bn.num_batches_tracked)) == 1


def test_golden_functional(backend):
    rm = vec(backend, np.zeros(2))
    rv = vec(backend, np.ones(2))
    y = F.batch_norm(backend.asarray(X_GOLDEN), rm, rv, training=True, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), Y_TRAIN, rtol=0, atol=1e-9)
    np.testing.assert_allclose(host(backend, rm), [0.3, 0.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(host(backend, rv), [1.3, 1.6], rtol=0, atol=1e-12)
    y = F.batch_norm(backend.asarray(X_GOLDEN), rm, rv, training=False, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), Y_EVAL, rtol=0, atol=1e-9)


def test_golden_momentum_none(backend):
    bn = normdrop.BatchNorm1d(2, momentum=None, dtype="float64", backend=backend.name)
    bn(backend.asarray(X_GOLDEN))
    np.testing.assert_allclose(host(backend, bn.running_mean), [3.0, 5.0], atol=1e-12)
    np.testing.assert_allclose(host(backend, bn.running_var), [4.0, 7.0], atol=1e-12)
    bn(backend.asarray(2 * X_GOLDEN))
    np.testing.assert_allclose(host(backend, bn.running_mean), [4.5, 7.5], atol=1e-12)
    np.testing.assert_allclose(host(backend, bn.running_var), [10.0, 17.5], atol=1e-12)
    assert int(host(backend, bn.num_batches_tracked)) == 2


def test_momentum_none_is_cumulative_average(backend, rng):
    bn = normdrop.BatchNorm1d(3, momentum=None, dtype="float64", backend=backend.name)
    batches = [rng.standard_normal((4, 3)) * (i + 1) + i for i in range(5)]
    for x in batches:
        bn(backend.asarray(x))
    means = np.mean([batch_stats(x)[0] for x in batches], axis=0)
    unbiased = np.mean([batch_stats(x)[2] for x in batches], axis=0)
    np.testing.assert_allclose(host(backend, bn.running_mean), means, rtol=1e-12)
    np.testing.assert_allclose(host(backend, bn.running_var), unbiased, rtol=1e-12)


@pytest.mark.parametrize("as_list", [False, True])
def test_momentum_none_refuses_a_negative_count_and_changes_nothing(backend, rng, as_list):
    """A cumulative average over ``num_batches_tracked + 1`` batches needs a count >= 0: a
    loaded -1 would divide by zero (PyTorch raises a bare ZeroDivisionError) and -5 would
    weigh the batch by -1/4. A fixed momentum only counts, so any count is kept as loaded."""
    if as_list and backend.name not in ("numpy", "numba"):
        pytest.skip("a list is NumPy input, which this backend's layer does not take")
    bn = normdrop.BatchNorm1d(3, momentum=None, dtype="float64", backend=backend.name)
    state = {k: host(backend, v) for k, v in bn.state_dict().items()}
    x = rng.standard_normal((4, 3))
    for count in (-1, -5):
        bn.load_state_dict({**state, "num_batches_tracked": np.array(count)})
        with pytest.raises(InvalidParameterError, match=rf"num_batches_tracked is {count}.*>= 0"):
            bn(x.tolist() if as_list else backend.asarray(x))
        assert int(host(backend, bn.num_batches_tracked)) == count
        np.testing.assert_array_equal(host(backend, bn.running_mean), np.zeros(3))
        np.testing.assert_array_equal(host(backend, bn.running_var), np.ones(3))
    fixed = normdrop.BatchNorm1d(3, dtype="float64", backend=backend.name)
    fixed.load_state_dict({**state, "num_batches_tracked": np.array(-1)})
    fixed(backend.asarray(x))
    assert int(host(backend, fixed.num_batches_tracked)) == 0


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.5, 1.0])
def test_running_update_with_momentum(backend, rng, momentum):
    bn = normdrop.BatchNorm1d(3, momentum=momentum, dtype="float64", backend=backend.name)
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(3):
        x = rng.standard_normal((5, 3, 2)) * 2 + step
        bn(backend.asarray(x))
        mean, _, unbiased = batch_stats(x)
        rm = (1 - momentum) * rm + momentum * mean
        rv = (1 - momentum) * rv + momentum * unbiased
    np.testing.assert_allclose(host(backend, bn.running_mean), rm, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(host(backend, bn.running_var), rv, rtol=1e-12, atol=1e-14)
    assert int(host(backend, bn.num_batches_tracked)) == 3


def test_running_var_is_unbiased_and_normalisation_biased(backend):
    # two values per channel: biased var = 1, unbiased var = 2
    x = np.array([[[0.0, 2.0]], [[0.0, 2.0]]])  # (N=2, C=1, L=2), n = 4
    bn = normdrop.BatchNorm1d(1, momentum=1.0, dtype="float64", backend=backend.name)
    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(host(backend, bn.running_var), [4.0 / 3.0], rtol=1e-14)
    np.testing.assert_allclose(host(backend, bn.running_mean), [1.0], rtol=1e-14)
    np.testing.assert_allclose(y, (x - 1.0) / np.sqrt(1.0 + 1e-5), rtol=1e-12)


# ----------------------------------------------------------------------------- state
def test_initial_state_and_properties(backend):
    bn = normdrop.BatchNorm1d(4, backend=backend.name)
    for arr, value in ((bn.weight, 1), (bn.bias, 0), (bn.running_mean, 0), (bn.running_var, 1)):
        assert param_ok(backend, arr)
        assert arr.shape == (4,)
        assert np.dtype(arr.dtype) == np.float32
        np.testing.assert_array_equal(host(backend, arr), np.full(4, value, np.float32))
    assert param_ok(backend, bn.num_batches_tracked)
    assert bn.num_batches_tracked.shape == ()
    assert np.dtype(bn.num_batches_tracked.dtype) == np.int64
    assert int(host(backend, bn.num_batches_tracked)) == 0
    assert bn.num_features == 4 and bn.eps == 1e-5 and bn.momentum == 0.1
    assert bn.affine is True and bn.track_running_stats is True


def test_no_affine_no_tracking_state():
    bn = normdrop.BatchNorm1d(3, affine=False)
    assert bn.weight is None and bn.bias is None
    assert bn.running_mean is not None
    bn = normdrop.BatchNorm1d(3, track_running_stats=False)
    assert bn.running_mean is None and bn.running_var is None and bn.num_batches_tracked is None
    assert bn.weight is not None


def test_train_vs_eval(backend, rng):
    x = rng.standard_normal((6, 3)) * 3 + 2
    bn = normdrop.BatchNorm1d(3, dtype="float64", backend=backend.name)
    y_train = backend.to_numpy(bn(backend.asarray(x)))
    mean, var, _ = batch_stats(x)
    np.testing.assert_allclose(y_train, bn_formula(x, mean, var), **tol(np.float64))
    state = bn.state_dict()
    bn.eval()
    y_eval = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(
        y_eval, bn_formula(x, state["running_mean"], state["running_var"]), **tol(np.float64)
    )
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    assert not np.allclose(y_train, y_eval)


@pytest.mark.parametrize("training", [True, False])
def test_not_tracking_uses_batch_stats(backend, rng, training):
    x = rng.standard_normal((5, 3, 2)) * 2 - 1
    bn = normdrop.BatchNorm1d(3, track_running_stats=False, dtype="float64", backend=backend.name)
    bn.train(training)
    y = backend.to_numpy(bn(backend.asarray(x)))
    mean, var, _ = batch_stats(x)
    np.testing.assert_allclose(y, bn_formula(x, mean, var), **tol(np.float64))
    assert list(bn.state_dict()) == ["weight", "bias"]


def test_affine_false(backend, rng):
    x = rng.standard_normal((4, 3))
    bn = normdrop.BatchNorm1d(3, affine=False, dtype="float64", backend=backend.name)
    y = backend.to_numpy(bn(backend.asarray(x)))
    mean, var, _ = batch_stats(x)
    np.testing.assert_allclose(y, bn_formula(x, mean, var), **tol(np.float64))
    assert list(bn.state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (2, 3, 1), (3, 3, 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_shapes_vs_formula(backend, rng, shape, dtype):
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w = rng.standard_normal(3)
    b = rng.standard_normal(3)
    bn = normdrop.BatchNorm1d(3, dtype=dtype, backend=backend.name)
    bn.load_state_dict({"weight": w, "bias": b}, strict=False)
    y = bn(backend.asarray(x))
    assert backend.accepts(y)
    assert y.shape == shape and np.dtype(y.dtype) == dtype
    mean, var, _ = batch_stats(x)
    expected = bn_formula(x, mean, var, w.astype(dtype), b.astype(dtype))
    np.testing.assert_allclose(backend.to_numpy(y), expected, **tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_channel_gives_exactly_bias(backend, dtype):
    bn = normdrop.BatchNorm1d(2, dtype=dtype, backend=backend.name)
    bias = np.array([0.1, -0.3], dtype)
    bn.load_state_dict({"weight": np.array([1.7, 0.3]), "bias": bias}, strict=False)
    x = np.array([[2.5, 1.0], [2.5, 2.0], [2.5, 3.0], [2.5, -1.0]], dtype)
    y = backend.to_numpy(bn(backend.asarray(x)))  # training: batch variance of channel 0 is 0
    np.testing.assert_array_equal(y[:, 0], np.full(4, bias[0]))
    bn.eval()
    bn.load_state_dict({"running_mean": np.array([2.5, 0.0])}, strict=False)
    y = backend.to_numpy(bn(backend.asarray(x)))  # eval: input equal to the running mean
    np.testing.assert_array_equal(y[:, 0], np.full(4, bias[0]))


def test_num_batches_tracked_counts_training_calls_only(backend, rng):
    bn = normdrop.BatchNorm1d(2, backend=backend.name)
    x = backend.asarray(rng.standard_normal((3, 2)).astype(np.float32))
    for i in range(3):
        bn(x)
        assert int(host(backend, bn.num_batches_tracked)) == i + 1
    bn.eval()
    bn(x)
    assert int(host(backend, bn.num_batches_tracked)) == 3


def test_reset_running_stats_and_parameters(backend, rng):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)
    bn.load_state_dict(
        {"weight": rng.standard_normal(3), "bias": rng.standard_normal(3)}, strict=False
    )
    bn(backend.asarray(rng.standard_normal((4, 3)).astype(np.float32) + 3))
    w_before = host(backend, bn.weight).copy()
    bn.reset_running_stats()
    state = bn.state_dict()
    np.testing.assert_array_equal(state["running_mean"], np.zeros(3, np.float32))
    np.testing.assert_array_equal(state["running_var"], np.ones(3, np.float32))
    assert int(state["num_batches_tracked"]) == 0
    np.testing.assert_array_equal(state["weight"], w_before)  # parameters untouched
    bn(backend.asarray(rng.standard_normal((4, 3)).astype(np.float32) + 3))
    bn.reset_parameters()
    state = bn.state_dict()
    np.testing.assert_array_equal(state["weight"], np.ones(3, np.float32))
    np.testing.assert_array_equal(state["bias"], np.zeros(3, np.float32))
    np.testing.assert_array_equal(state["running_mean"], np.zeros(3, np.float32))
    np.testing.assert_array_equal(state["running_var"], np.ones(3, np.float32))
    assert int(state["num_batches_tracked"]) == 0
    # the arrays are reset in place: the properties keep their identity
    rm = bn.running_mean
    bn.reset_running_stats()
    assert bn.running_mean is rm


def test_reset_without_affine_or_tracking():
    bn = normdrop.BatchNorm1d(3, affine=False, track_running_stats=False)
    bn.reset_running_stats()
    bn.reset_parameters()
    assert bn.weight is None and bn.running_mean is None


def test_input_dtype_kept_with_float32_layer(backend, rng):
    bn = normdrop.BatchNorm1d(3, backend=backend.name)  # float32 parameters
    x = rng.standard_normal((4, 3))
    y = bn(backend.asarray(x))
    assert np.dtype(y.dtype) == np.float64
    mean, var, _ = batch_stats(x)
    np.testing.assert_allclose(backend.to_numpy(y), bn_formula(x, mean, var), rtol=1e-6, atol=1e-6)
    assert np.dtype(bn.running_mean.dtype) == np.float32


# ----------------------------------------------------------------------------- accuracy
def test_float32_large_mean_small_std_accuracy(backend):
    """Mean 1e4, std 1e-2 in float32: at least as accurate as PyTorch (and ~1 ulp)."""
    gen = np.random.default_rng(0)
    shape = (16, 3, 8) if _small(backend) else (256, 4, 16)
    x = (1e4 + 1e-2 * gen.standard_normal(shape)).astype(np.float32)
    mean, var, _ = batch_stats(x)
    exact = bn_formula(x, mean, var)
    y = backend.to_numpy(F.batch_norm(backend.asarray(x), training=True, backend=backend))
    err = np.abs(y - exact).max()
    assert err < 1e-5
    bn = normdrop.BatchNorm1d(shape[1], backend=backend.name)
    y_layer = backend.to_numpy(bn(backend.asarray(x)))
    assert np.abs(y_layer - exact).max() < 1e-5
    np.testing.assert_allclose(host(backend, bn.running_mean), 0.1 * mean, rtol=1e-6)
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True).numpy()
    assert err <= np.abs(t - exact).max()


def test_running_var_accuracy_large_mean(backend):
    gen = np.random.default_rng(1)
    x = (1e4 + 1e-2 * gen.standard_normal((32, 2, 4))).astype(np.float32)
    bn = normdrop.BatchNorm1d(2, momentum=1.0, dtype="float64", backend=backend.name)
    bn(backend.asarray(x))
    _, _, unbiased = batch_stats(x)
    np.testing.assert_allclose(host(backend, bn.running_var), unbiased, rtol=1e-9)


# ----------------------------------------------------------------------------- vs reference
@pytest.mark.parametrize("kind", ["layer", "functional"])
def test_hypothesis_vs_reference(backend, reference, kind):
    max_examples = 6 if _small(backend) else 25

    @settings(max_examples=max_examples, deadline=None, derandomize=True)
    @given(
        n=st.integers(2, 6),
        c=st.integers(1, 4),
        length=st.one_of(st.none(), st.integers(1, 5)),
        dtype=st.sampled_from([np.float32, np.float64]),
        affine=st.booleans(),
        track=st.booleans(),
        momentum=st.one_of(st.none(), st.floats(0, 1)),
        training=st.booleans(),
        seed=st.integers(0, 2**32 - 1),
        scale=st.sampled_from([1e-3, 1.0, 1e3]),
        offset=st.sampled_from([0.0, 5.0, -1e3]),
    )
    def check(n, c, length, dtype, affine, track, momentum, training, seed, scale, offset):
        gen = np.random.default_rng(seed)
        shape = (n, c) if length is None else (n, c, length)
        x = (gen.standard_normal(shape) * scale + offset).astype(dtype)
        g = gen.standard_normal(shape).astype(dtype)
        if kind == "functional":
            w = gen.standard_normal(c).astype(dtype) if affine else None
            b = gen.standard_normal(c).astype(dtype) if affine else None
            rm0 = gen.standard_normal(c) if track else None
            rv0 = gen.random(c) + 0.5 if track else None
            results = []
            for be in (backend, reference):

                def put(a, be=be):
                    return vec(be, a)

                rm, rv = put(rm0), put(rv0)
                y, mean, rstd = F.batch_norm_with_stats(
                    be.asarray(x),
                    rm,
                    rv,
                    put(w),
                    put(b),
                    training=training,
                    momentum=0.1 if momentum is None else momentum,
                    backend=be,
                )
                assert be.accepts(y)
                dx, dw, db = F.batch_norm_backward(
                    be.asarray(g),
                    be.asarray(x),
                    mean,
                    rstd,
                    put(w),
                    training=training or not track,
                    backend=be,
                )
                assert be.accepts(dx)
                results.append([host(be, a) for a in (y, rm, rv, mean, rstd, dx, dw, db)])
        else:
            results = []
            for be in (backend, reference):
                bn = normdrop.BatchNorm1d(
                    c,
                    momentum=momentum,
                    affine=affine,
                    track_running_stats=track,
                    dtype=dtype,
                    backend=be.name,
                )
                if affine:
                    bn.load_state_dict(
                        {"weight": np.linspace(0.5, 2, c), "bias": np.linspace(-1, 1, c)},
                        strict=False,
                    )
                bn.train(training)
                y = bn(be.asarray(x))
                y2 = bn(be.asarray(x[::-1].copy()))
                dx = bn.backward(be.asarray(g))
                assert be.accepts(y) and be.accepts(dx)
                results.append(
                    [to_numpy(be, y), to_numpy(be, y2), to_numpy(be, dx)]
                    + list(bn.state_dict().values())
                    + [host(be, v) for v in bn.grads.values()]
                )
        ours, ref = results
        assert len(ours) == len(ref)
        # statistics-derived values of float32 data may differ by a few ulp after x * scale
        tols = tol(dtype)
        rel = 1e-7 if dtype == np.float64 else 1e-4
        for a, r in zip(ours, ref, strict=True):
            if r is None:
                assert a is None
                continue
            assert a.shape == r.shape and a.dtype == r.dtype
            if a.dtype.kind == "i":
                np.testing.assert_array_equal(a, r)
            else:
                bound = max(1.0, float(np.abs(r).max()) if r.size else 1.0)
                np.testing.assert_allclose(
                    a, r, rtol=max(tols["rtol"], rel), atol=tols["atol"] * bound
                )

    check()


# ----------------------------------------------------------------------------- out= and layouts
@pytest.mark.parametrize("training", [True, False])
def test_out_argument(backend, rng, training):
    x = rng.standard_normal((4, 3, 2))
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    expected = bn_formula(x, *batch_stats(x)[:2]) if training else bn_formula(x, rm, rv)
    args = (vec(backend, rm), vec(backend, rv))
    out = backend.asarray(np.empty_like(x))
    y = F.batch_norm(backend.asarray(x), *args, training=training, out=out, backend=backend)
    assert y is out
    np.testing.assert_allclose(backend.to_numpy(out), expected, **tol(np.float64))
    # out may be the input itself
    xb = backend.asarray(x.copy())
    args = (vec(backend, rm), vec(backend, rv))
    y = F.batch_norm(xb, *args, training=training, out=xb, backend=backend)
    assert y is xb
    np.testing.assert_allclose(backend.to_numpy(xb), expected, **tol(np.float64))


def test_out_non_contiguous_and_fortran(backend, rng):
    x = rng.standard_normal((5, 3))
    expected = bn_formula(x, *batch_stats(x)[:2])
    out = backend.asarray(np.zeros((3, 5)).T)  # a Fortran-ordered (5, 3) buffer
    y = F.batch_norm(backend.asarray(x), training=True, out=out, backend=backend)
    assert y is out
    np.testing.assert_allclose(backend.to_numpy(out), expected, **tol(np.float64))
    xf = backend.asarray(np.asfortranarray(x))
    y = F.batch_norm(xf, training=True, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), expected, **tol(np.float64))
    assert y.shape == (5, 3)
    # in place on a Fortran-ordered input
    y = F.batch_norm(xf, training=True, out=xf, backend=backend)
    assert y is xf
    np.testing.assert_allclose(backend.to_numpy(xf), expected, **tol(np.float64))


def test_non_contiguous_inputs(backend, rng):
    big = rng.standard_normal((8, 6, 10))
    for x in (big[::2, ::2, ::3], big.transpose(2, 1, 0)[:, :4, :], big[:, 1, :].T.copy().T):
        expected = bn_formula(x, *batch_stats(x)[:2])
        y = F.batch_norm(backend.asarray(x), training=True, backend=backend)
        np.testing.assert_allclose(backend.to_numpy(y), expected, **tol(np.float64))
        bn = normdrop.BatchNorm1d(x.shape[1], dtype="float64", backend=backend.name)
        y = bn(backend.asarray(x))
        np.testing.assert_allclose(backend.to_numpy(y), expected, **tol(np.float64))
        np.testing.assert_allclose(
            host(backend, bn.running_mean), 0.1 * batch_stats(x)[0], rtol=1e-12, atol=1e-15
        )


def test_return_stats(backend, rng):
    x = rng.standard_normal((4, 3, 2))
    y, mean, rstd = F.batch_norm_with_stats(backend.asarray(x), training=True, backend=backend)
    m, v, _ = batch_stats(x)
    assert mean.shape == (3,) and rstd.shape == (3,)
    np.testing.assert_allclose(backend.to_numpy(mean), m, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(rstd), 1 / np.sqrt(v + 1e-5), rtol=1e-12)


# ----------------------------------------------------------------------------- large inputs
@pytest.mark.parametrize("shape", [(300, 3, 101), (40001, 3), (5, 2, 20011)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_vs_reference(backend, reference, shape, dtype):
    """Sizes past the parallel/multi-block thresholds, with ragged last chunks."""
    if _small(backend):
        shape = tuple(max(2, d // 40) for d in shape)
    gen = np.random.default_rng(7)
    c = shape[1]
    x = (gen.standard_normal(shape) * 3 + 50).astype(dtype)
    g = gen.standard_normal(shape).astype(dtype)
    w, b = gen.standard_normal(c), gen.standard_normal(c)
    results = []
    for be in (backend, reference):
        bn = normdrop.BatchNorm1d(c, dtype=dtype, backend=be.name)
        bn.load_state_dict({"weight": w, "bias": b}, strict=False)
        y = be.to_numpy(bn(be.asarray(x)))
        dx = be.to_numpy(bn.backward(be.asarray(g)))
        bn.eval()
        y_eval = be.to_numpy(bn(be.asarray(x)))
        results.append(
            [y, dx, y_eval, *bn.state_dict().values(), *(host(be, v) for v in bn.grads.values())]
        )
    tols = {"rtol": 1e-9, "atol": 1e-9} if dtype == np.float64 else {"rtol": 1e-4, "atol": 1e-4}
    for a, r in zip(*results, strict=True):
        bound = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(a, r, rtol=tols["rtol"], atol=tols["atol"] * bound)


def test_float64_huge_mean_needs_stable_statistics(backend):
    """Mean 1e8, std 1 in float64: E[x^2] - E[x]^2 would lose every digit of the variance."""
    gen = np.random.default_rng(3)
    shape = (8, 2, 8) if _small(backend) else (500, 2, 150)
    x = 1e8 + gen.standard_normal(shape)
    mean, var, unbiased = batch_stats(x)
    bn = normdrop.BatchNorm1d(2, momentum=1.0, dtype="float64", backend=backend.name)
    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(y, bn_formula(x, mean, var), rtol=0, atol=1e-6)
    np.testing.assert_allclose(host(backend, bn.running_var), unbiased, rtol=1e-6)


def test_float64_huge_mean_short_rows_with_an_outlier_first(backend):
    """(N, C) data (the short-row layout of the numba kernels, which sum values less each
    column's first one): mean 1e8, std 1, and the first sample far out, the worst
    shift; the variance keeps its digits."""
    gen = np.random.default_rng(4)
    shape = (40, 3) if _small(backend) else (4096, 64)
    x = 1e8 + gen.standard_normal(shape)
    x[0] += 1e3 * (1.0 + np.arange(shape[1]))
    mean, var, unbiased = batch_stats(x)
    bn = normdrop.BatchNorm1d(shape[1], momentum=1.0, dtype="float64", backend=backend.name)
    y = backend.to_numpy(bn(backend.asarray(x)))
    np.testing.assert_allclose(y, bn_formula(x, mean, var), rtol=0, atol=1e-7)
    np.testing.assert_allclose(host(backend, bn.running_var), unbiased, rtol=1e-9)
