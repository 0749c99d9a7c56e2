"""The cuda backend: every kernel against the numpy reference, device arrays, layers on the GPU.

Without a GPU these run on the CUDA simulator (``tests/conftest.py`` turns it on),
which executes every CUDA thread in Python: shapes stay small but are chosen to
exercise every path of the launches (grid-stride tails, several channel tiles,
multi-block partial buffers, rows shorter and longer than a block).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import normdrop
from normdrop import functional as F
from normdrop.errors import BackendArrayError, BackendError, InvalidParameterError
from normdrop.random import dropout_threshold

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")
try:
    cb = normdrop.get_backend("cuda")
except BackendError as exc:  # e.g. a GPU machine without CuPy
    pytest.skip(f"cuda backend unavailable: {exc}", allow_module_level=True)

from numba import cuda  # noqa: E402  (after the skip: numba-cuda is there)

ref = normdrop.get_backend("numpy")
TOL = 1e-9

# (N, C, L): channel tiles > grid cap, L > 1 with channels > grid cap, one channel over
# several partial blocks, fewer positions than a block has lanes.
BN_SHAPES = [(7, 13, 1), (4, 5, 3), (9, 1, 5), (2, 3, 1)]
# (R, D): more rows than blocks, rows wider than a block, a single value, no rows, several
# rows per block with a ragged last block (the simulator's blocks have 8 threads).
# Rows over four times a block's lanes (33 > 4 * 8) keep the weight/bias gradient partials
# in memory rather than registers.
LN_SHAPES = [(7, 5), (4, 19), (1, 1), (0, 4), (9, 3), (11, 2), (3, 33)]


def dev(a):
    """Host data (or None) onto the backend."""
    return None if a is None else cb.asarray(np.asarray(a))


def host(a):
    """Backend data back to the host."""
    return cb.to_numpy(a)


def assert_close(got, expected, tol=TOL):
    got = host(got)
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def test_conformance():
    from normdrop.testing import check_backend

    check_backend(cb)
    assert cb.name == "cuda" and cb.device == "cuda" and cb.supports_bitmask


# ----------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_channel_kernels_match_reference(shape, rng):
    x = rng.standard_normal(shape) * 3 + 1.5
    dy = rng.standard_normal(shape)
    c = shape[1]
    mean, var = cb.channel_moments(dev(x))
    mean_r, var_r = ref.channel_moments(x)
    assert_close(mean, mean_r)
    assert_close(var, var_r)
    s_dy, s_dyx = cb.channel_backward_reduce(dev(dy), dev(x), dev(mean_r))
    s_dy_r, s_dyx_r = ref.channel_backward_reduce(dy, x, mean_r)
    assert_close(s_dy, s_dy_r)
    assert_close(s_dyx, s_dyx_r)
    scale, shift, extra = (rng.standard_normal(c) for _ in range(3))
    mean = scale / 3
    y = cb.channel_affine(dev(x), dev(mean), dev(scale), dev(shift), cb.empty(shape, x.dtype))
    assert_close(y, ref.channel_affine(x, mean, scale, shift, np.empty(shape)))
    y = cb.channel_backward_elemt(
        dev(dy), dev(x), dev(mean_r), dev(scale), dev(shift), dev(extra), cb.empty(shape, x.dtype)
    )
    assert_close(y, ref.channel_backward_elemt(dy, x, mean_r, scale, shift, extra, np.empty(shape)))


def test_channel_moments_are_stable_and_deterministic(rng):
    x = (1e4 + 1e-2 * rng.standard_normal((6, 2, 5))).astype(np.float32)
    mean_r, var_r = ref.channel_moments(x)
    first = cb.channel_moments(dev(x))
    assert_close(first[0], mean_r)
    np.testing.assert_allclose(host(first[1]), var_r, rtol=1e-9)
    again = cb.channel_moments(dev(x))
    for a, b in zip(first, again, strict=True):
        assert host(a).tobytes() == host(b).tobytes()


def test_channel_affine_in_place_float32(rng):
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    scale, shift = rng.standard_normal(4), rng.standard_normal(4)
    expected = ref.channel_affine(x, scale, scale, shift, np.empty_like(x))
    d = dev(x)
    out = cb.channel_affine(d, dev(scale), dev(scale), dev(shift), d)
    assert host(out).dtype == np.float32
    np.testing.assert_allclose(host(d), expected, rtol=1e-6)  # float64 math, one rounding


def test_statistics_survive_an_outlier_first_value(rng):
    """The shifted sums subtract each channel's (row's) first value: an outlier there of
    1e4 standard deviations still leaves the variance accurate to 1e-7."""
    x = rng.standard_normal((40, 2, 1))
    x[0, :, 0] = 1e4
    mean_r, var_r = ref.channel_moments(x)
    mean, var = cb.channel_moments(dev(x))
    np.testing.assert_allclose(host(mean), mean_r, rtol=1e-12)
    np.testing.assert_allclose(host(var), var_r, rtol=1e-7)
    rows = x.reshape(2, 40)
    rows[:, 0] = -1e4
    mean, var = cb.row_moments(dev(rows))
    np.testing.assert_allclose(host(var), ref.row_moments(rows)[1], rtol=1e-7)


VECTOR_DTYPES = [None, np.float32, np.float64]


@pytest.mark.parametrize(
    ("running", "mode"),
    [
        (r, m)
        for r in VECTOR_DTYPES
        for m in ("train", "batch-no-update", "eval")
        if r is not None or m != "eval"
    ],  # evaluation needs running statistics
    ids=str,
)
@pytest.mark.parametrize(
    ("wdt", "bdt"),
    [
        (None, None),
        (np.float32, np.float32),
        (np.float64, None),
        (None, np.float32),
        (np.float32, np.float64),
        (np.float16, np.float16),
    ],
    ids=str,
)
def test_batch_norm_forward_fused_matches_reference(running, mode, wdt, bdt, rng):
    """The whole-layer kernel (and its unfused fallback for float16 or mixed weight/bias)
    against the reference: output, statistics and the in-place running update."""
    shape = (5, 3, 2)
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32) * 2 + 1
    vec = {
        "rm": None if running is None else rng.standard_normal(c).astype(running),
        "rv": None if running is None else (rng.random(c) + 0.5).astype(running),
        "w": None if wdt is None else (rng.random(c) + 0.5).astype(wdt),
        "b": None if bdt is None else rng.standard_normal(c).astype(bdt),
    }
    use_batch = mode != "eval"
    update = mode == "train" and running is not None
    ref_vec = {k: None if v is None else v.astype(np.float64) for k, v in vec.items()}
    # the reference sees the running statistics only where it must use or update them (it
    # then updates its float64 copies in place when training)
    given = (ref_vec["rm"], ref_vec["rv"]) if update or not use_batch else (None, None)
    out_r, mean_r, rstd_r = F.batch_norm_with_stats(
        x.astype(np.float64),
        *given,
        ref_vec["w"],
        ref_vec["b"],
        training=use_batch,
        momentum=0.3,
        eps=1e-5,
        backend="numpy",
    )
    d = {k: dev(v) for k, v in vec.items()}
    out, mean, rstd = cb.batch_norm_forward(
        dev(x),
        d["rm"],
        d["rv"],
        d["w"],
        d["b"],
        use_batch,
        update,
        0.3,
        1e-5,
        cb.empty(shape, np.float32),
    )
    tol = 1e-3 if np.float16 in (wdt, bdt) else 1e-6
    np.testing.assert_allclose(host(out), out_r, rtol=tol, atol=tol)
    np.testing.assert_allclose(host(mean), mean_r, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(host(rstd), rstd_r, rtol=1e-9)
    assert host(mean).dtype == np.float64 and host(rstd).dtype == np.float64
    if running is not None:  # updated like the reference's, or untouched, in their dtype
        np.testing.assert_allclose(host(d["rm"]), ref_vec["rm"], rtol=1e-6)
        np.testing.assert_allclose(host(d["rv"]), ref_vec["rv"], rtol=1e-6)
        assert host(d["rm"]).dtype == running
        assert update or np.array_equal(host(d["rm"]), vec["rm"])


def test_batch_norm_layer_path_runs_no_host_vector_math(rng, monkeypatch):
    """A BatchNorm1d training forward on the backend is the fused kernel: the unfused
    fallback (host-side vector arithmetic) never runs for the layer's own float32 state."""
    from normdrop.backends.cuda_backend import _batchnorm

    def forbidden(*args, **kwargs):
        raise AssertionError("the unfused fallback ran")

    monkeypatch.setattr(_batchnorm, "_batch_norm_forward_unfused", forbidden)
    layer = normdrop.BatchNorm1d(3).to("cuda")
    cpu = normdrop.BatchNorm1d(3, backend="numpy")
    x = rng.standard_normal((6, 3)).astype(np.float32)
    np.testing.assert_allclose(host(layer(dev(x))), cpu(x), rtol=1e-5, atol=1e-6)
    state = layer.state_dict()
    for key, value in cpu.state_dict().items():
        np.testing.assert_allclose(state[key], value, rtol=1e-6)
    layer.eval()
    cpu.eval()
    np.testing.assert_allclose(host(layer(dev(x))), cpu(x), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- layer norm
@pytest.mark.parametrize("shape", LN_SHAPES, ids=str)
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_row_kernels_match_reference(shape, affine, rng):
    x = rng.standard_normal(shape) * 2 - 0.5
    dy = rng.standard_normal(shape)
    d = shape[1]
    w = rng.standard_normal(d) + 1 if affine != "none" else None
    b = rng.standard_normal(d) if affine == "both" else None
    mean, var = cb.row_moments(dev(x))
    mean_r, var_r = ref.row_moments(x)
    assert_close(mean, mean_r)
    assert_close(var, var_r)
    y, mean, rstd = cb.layer_norm_forward(dev(x), dev(w), dev(b), 1e-5, cb.empty(shape, x.dtype))
    y_r, mean_r, rstd_r = ref.layer_norm_forward(x, w, b, 1e-5, np.empty(shape))
    assert_close(y, y_r)
    assert_close(mean, mean_r)
    assert_close(rstd, rstd_r)
    for grads in (True, False):
        got = cb.layer_norm_backward(
            dev(dy), dev(x), dev(mean_r), dev(rstd_r), dev(w), cb.empty(shape, x.dtype), grads
        )
        expected = ref.layer_norm_backward(dy, x, mean_r, rstd_r, w, np.empty(shape), grads)
        assert_close(got[0], expected[0])
        for g, e in zip(got[1:], expected[1:], strict=True):
            if grads:
                assert_close(g, e)
            else:
                assert g is None and e is None


def test_layer_norm_in_place(rng):
    x = rng.standard_normal((5, 20))  # rows over twice a simulated block's lanes
    expected = ref.layer_norm_forward(x, None, None, 1e-5, np.empty_like(x))[0]
    d = dev(x)
    cb.layer_norm_forward(d, None, None, 1e-5, d)
    assert_close(d, expected)


# ----------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("n", [1, 5, 8, 13, 37])
@pytest.mark.parametrize(("seed", "call"), [(0, 0), (2**64 - 1, 2**64 - 1), (123456789012, 7)])
def test_philox_words_are_bit_identical(n, seed, call):
    for offset in (0, 3, 2**40 + 1):
        got = host(cb.philox_words(n, seed, call, offset))
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got, ref.philox_words(n, seed, call, offset))


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (8,), (3, 7), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_is_bit_identical(shape, dtype, rng):
    p, seed, call = 0.3, 99, 4
    threshold, scale = dropout_threshold(p), dtype(1 / (1 - p))
    x = rng.standard_normal(shape).astype(dtype)
    n = x.size
    bits_r = np.empty((n + 7) // 8, np.uint8)
    y_r = ref.dropout_forward(x, threshold, scale, seed, call, np.empty_like(x), bits_r)
    bits = cb.empty(((n + 7) // 8,), np.uint8)
    y = cb.dropout_forward(dev(x), threshold, scale, seed, call, cb.empty(shape, dtype), bits)
    np.testing.assert_array_equal(host(y), y_r)
    np.testing.assert_array_equal(host(bits), bits_r)
    y = cb.dropout_forward(dev(x), threshold, scale, seed, call, cb.empty(shape, dtype), None)
    np.testing.assert_array_equal(host(y), y_r)
    dx = cb.dropout_apply_bitmask(dev(x), dev(bits_r), scale, cb.empty(shape, dtype))
    np.testing.assert_array_equal(host(dx), ref.dropout_apply_bitmask(x, bits_r, scale, x.copy()))
    mask = cb.dropout_mask(n, threshold, seed, call)
    assert host(mask).dtype == np.bool_
    np.testing.assert_array_equal(host(mask), ref.dropout_mask(n, threshold, seed, call))


@pytest.mark.parametrize("n", [31, 32, 33, 129, 300])
def test_dropout_over_many_chunks_is_bit_identical(n, rng):
    """Sizes around the simulator's chunk (4 * 8 elements) and past one sweep of its grid."""
    threshold, scale = dropout_threshold(0.4), np.float32(1 / 0.6)
    x = rng.standard_normal(n).astype(np.float32)
    bits_r = np.empty((n + 7) // 8, np.uint8)
    y_r = ref.dropout_forward(x, threshold, scale, 7, 3, np.empty_like(x), bits_r)
    bits = cb.empty(((n + 7) // 8,), np.uint8)
    d = dev(x)
    y = cb.dropout_forward(d, threshold, scale, 7, 3, d, bits)  # in place
    np.testing.assert_array_equal(host(y), y_r)
    np.testing.assert_array_equal(host(bits), bits_r)
    dx = cb.dropout_apply_bitmask(dev(x), bits, scale, cb.empty((n,), np.float32))
    np.testing.assert_array_equal(host(dx), ref.dropout_apply_bitmask(x, bits_r, scale, x.copy()))
    np.testing.assert_array_equal(host(cb.philox_words(n, 7, 3, 5)), ref.philox_words(n, 7, 3, 5))
    np.testing.assert_array_equal(
        host(cb.dropout_mask(n, threshold, 7, 3)), ref.dropout_mask(n, threshold, 7, 3)
    )


def test_dropout_drops_nan_and_inf_to_zero():
    x = np.array([np.nan, np.inf, -np.inf, 1.0] * 4)
    threshold, scale = dropout_threshold(0.5), np.float64(2.0)
    expected = ref.dropout_forward(x, threshold, scale, 1, 0, np.empty_like(x), None)
    got = host(cb.dropout_forward(dev(x), threshold, scale, 1, 0, cb.empty((16,), x.dtype), None))
    np.testing.assert_array_equal(got, expected)
    assert (expected == 0).any()


def test_dropout_chunks_with_offsets_rebuild_the_whole(rng):
    x = rng.standard_normal(23)
    threshold, scale = dropout_threshold(0.5), np.float64(2.0)
    whole = ref.dropout_forward(x, threshold, scale, 5, 1, np.empty_like(x), None)
    parts = [
        host(
            cb.dropout_forward(
                dev(x[a:b]), threshold, scale, 5, 1, cb.empty((b - a,), x.dtype), None, a
            )
        )
        for a, b in ((0, 6), (6, 7), (7, 18), (18, 23))
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_dropout_in_place(rng):
    x = rng.standard_normal(11).astype(np.float32)
    expected = ref.dropout_forward(x, 2**31, np.float32(2), 3, 0, np.empty_like(x), None)
    d = dev(x)
    cb.dropout_forward(d, 2**31, np.float32(2), 3, 0, d, None)
    np.testing.assert_array_equal(host(d), expected)


# ----------------------------------------------------------------------------- arrays
def test_numba_device_arrays_in_and_out(rng):
    x3 = rng.standard_normal((4, 3, 2))
    d3 = cuda.to_device(x3)
    assert cb.accepts(d3) and cb.asarray(d3) is d3 and cb.ascontiguous(d3) is d3
    mean, var = cb.channel_moments(d3)
    # per-channel and per-row vectors are the backend's own arrays (CuPy; NumPy in the
    # simulator): the functional layer computes on them (running statistics, folding),
    # which numba device arrays do not support
    own = type(cb.empty((1,), np.float64))
    assert type(mean) is own and type(var) is own
    assert_close(mean, ref.channel_moments(x3)[0])
    x2 = rng.standard_normal((3, 5))
    d2 = cuda.to_device(x2)
    out = cuda.device_array_like(d2)
    y, mean, rstd = cb.layer_norm_forward(d2, None, None, 1e-5, out)
    assert y is out and type(mean) is own and type(rstd) is own
    assert type(cb.alloc_like(d2, (2,), np.float32)) is type(d2)
    assert_close(y, ref.layer_norm_forward(x2, None, None, 1e-5, np.empty_like(x2))[0])
    x1 = rng.standard_normal(10)
    y = cb.dropout_forward(cuda.to_device(x1), 2**31, 2.0, 1, 0, cuda.device_array(10), None)
    np.testing.assert_array_equal(
        host(y), ref.dropout_forward(x1, 2**31, np.float64(2), 1, 0, np.empty(10), None)
    )


def test_accepts_is_cheap_and_strict():
    assert not cb.accepts([1.0, 2.0]) and not cb.accepts(3.0)
    assert cb.accepts(cb.empty((2,), np.float32)) and cb.accepts(cb.asarray([1.0]))
    assert isinstance(cb.to_numpy(cb.asarray([1.0, 2.0])), np.ndarray)


# ----------------------------------------------------------------------------- functional
def test_functional_api_on_the_backend(rng):
    x = rng.standard_normal((6, 3, 2))
    rm, rv = np.zeros(3), np.ones(3)
    rm_d, rv_d = dev(rm), dev(rv)
    y, mean, rstd = F.batch_norm_with_stats(
        dev(x), rm_d, rv_d, training=True, backend="cuda")
    y_r, mean_r, rstd_r = F.batch_norm_with_stats(x, rm, rv, training=True, backend="numpy")
    assert cb.accepts(y) and cb.accepts(mean)
    assert_close(y, y_r)
    assert_close(rm_d, rm)
    assert_close(rv_d, rv)
    g = rng.standard_normal(x.shape)
    assert_close(
        F.batch_norm_backward(dev(g), dev(x), mean, rstd, backend="cuda")[0],
        F.batch_norm_backward(g, x, mean_r, rstd_r, backend="numpy")[0],
    )
    z = rng.standard_normal((2, 3, 4))
    assert_close(F.layer_norm(dev(z), (3, 4), backend="cuda"), F.layer_norm(z, (3, 4)))
    y, bits = F.dropout_with_bitmask(dev(z), 0.25, seed=8, call=2, backend="cuda")
    np.testing.assert_array_equal(host(y), F.dropout(z, 0.25, seed=8, call=2, backend="numpy"))
    np.testing.assert_array_equal(
        host(F.dropout_mask((2, 3, 4), 0.25, seed=8, call=2, backend="cuda")),
        F.dropout_mask((2, 3, 4), 0.25, seed=8, call=2, backend="numpy"),
    )


def test_inputs_are_never_written(rng):
    x = rng.standard_normal((4, 3))
    d = dev(x.copy())
    if isinstance(d, np.ndarray):  # the simulator: a read-only input must work
        d.flags.writeable = False
    F.batch_norm(d, training=True, backend="cuda")
    F.layer_norm(d, 3, backend="cuda")
    F.dropout(d, 0.5, seed=1, backend="cuda")
    np.testing.assert_array_equal(host(d), x)


# ----------------------------------------------------------------------------- layers
def test_layers_on_numba_device_arrays(rng):
    """numba device arrays (real or simulated) go to the cuda backend, through every layer
    and function, and come back as numba device arrays with the reference's numbers."""
    x = rng.standard_normal((5, 4))
    d = cuda.to_device(x)
    bn = normdrop.BatchNorm1d(4, dtype="float64").to("cuda")
    y = bn(d)
    assert type(y) is type(d)
    assert_close(y.copy_to_host(), F.batch_norm(x, training=True, backend="numpy"))
    assert_close(bn.running_mean, 0.1 * x.mean(axis=0))
    dx = bn.backward(cuda.to_device(np.ones_like(x)))
    assert type(dx) is type(d)

    y = F.layer_norm(cuda.to_device(x), 4)  # chosen by the array's type, not numba
    assert type(y) is type(d)
    assert_close(y.copy_to_host(), F.layer_norm(x, 4, backend="numpy"))
    assert normdrop.registry.resolve_backend(d).name == "cuda"

    ln = normdrop.LayerNorm(4, backend="cuda", dtype="float64")
    y = ln(cuda.to_device(x))
    assert type(y) is type(d)
    assert_close(y.copy_to_host(), F.layer_norm(x, 4, backend="numpy"))
    dx = ln.backward(cuda.to_device(np.ones_like(x)))
    assert type(dx) is type(d)

    drop = normdrop.Dropout(0.5, seed=3).to("cuda")
    y = drop(cuda.to_device(x))
    assert type(y) is type(d)
    assert_close(y.copy_to_host(), F.dropout(x, 0.5, seed=3, backend="numpy"))


def _bn_pair(rng):
    cpu = normdrop.BatchNorm1d(3, momentum=0.2, dtype="float64")
    cpu.load_state_dict(
        {
            "weight": rng.random(3) + 0.5,
            "bias": rng.standard_normal(3),
            "running_mean": rng.standard_normal(3),
            "running_var": rng.random(3) + 1,
            "num_batches_tracked": np.array(4),
        }
    )
    gpu = normdrop.BatchNorm1d(3, momentum=0.2, dtype="float64")
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu.to("cuda")


def test_layer_to_cuda_and_back(rng):
    cpu, gpu = _bn_pair(rng)
    assert gpu.device == "cuda" and cpu.device == "cpu"
    assert all(cb.accepts(a) for a in [*gpu.parameters(), *gpu.buffers(), *gpu.grads.values()])
    x, g = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    assert_close(gpu(dev(x)), cpu(x))
    assert_close(gpu.backward(dev(g)), cpu.backward(g))
    for name in ("weight", "bias"):
        assert_close(gpu.grads[name], cpu.grads[name])
    state, state_cpu = gpu.state_dict(), cpu.state_dict()
    assert list(state) == list(state_cpu)
    for key, value in state.items():
        assert type(value) is np.ndarray
        np.testing.assert_allclose(value, state_cpu[key], rtol=TOL, atol=TOL)
    assert gpu.to("cuda") is gpu
    back = gpu.to("cpu")
    assert back is gpu and gpu.device == "cpu" and gpu._backend_choice is None
    assert all(type(a) is np.ndarray for a in [*gpu.parameters(), *gpu.buffers()])
    assert all(type(a) is np.ndarray for a in gpu.grads.values())
    np.testing.assert_allclose(gpu(x), cpu(x), rtol=TOL, atol=TOL)


def test_load_state_dict_from_host_on_either_side(rng):
    cpu, gpu = _bn_pair(rng)
    state = {k: v * 2 for k, v in cpu.state_dict().items()}
    gpu.load_state_dict(state)
    cpu.load_state_dict(gpu.state_dict())
    for key, value in cpu.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
        np.testing.assert_array_equal(host(dict(gpu._state_items())[key]), state[key])


def test_sequential_to_moves_every_layer(rng):
    model = normdrop.Sequential(
        normdrop.LayerNorm(4, dtype="float64"), normdrop.Dropout(0.5, seed=3)
    )
    x = rng.standard_normal((2, 4))
    expected = model(x)
    model.layers[1].call_count = 0  # the same mask again
    assert model.to("cuda") is model and model.device == "cuda"
    assert all(layer.device == "cuda" for layer in model)
    assert_close(model(dev(x)), expected)
    assert model.to("cpu").device == "cpu"
    model.layers[0].to("cuda")
    assert model.device == "mixed"


def test_device_mismatch_errors_name_the_fix(rng):
    cpu, gpu = _bn_pair(rng)
    x = rng.standard_normal((4, 3))
    with pytest.raises(BackendArrayError, match=r"layer\.to\('cuda'\)"):
        cpu(cuda.to_device(x))  # a GPU array (numba's, real or simulated)
    cpu(x)
    with pytest.raises(BackendArrayError, match=r"layer\.to\('cuda'\)"):
        cpu.backward(cuda.to_device(x))
    # a host array for the GPU layer (the simulator's device arrays are NumPy: use a list)
    host_data = x.tolist() if cb.simulator else x
    with pytest.raises(BackendArrayError, match=r"layer\.to\('cpu'\)"):
        gpu(host_data)
    state = gpu.state_dict()
    with pytest.raises(InvalidParameterError, match="device"):
        gpu.to("tpu")
    for key, value in gpu.state_dict().items():  # failed calls changed nothing
        np.testing.assert_array_equal(value, state[key])


# ----------------------------------------------------------------------------- launches
def test_a_launch_outside_the_signature_table_fails():
    """The suite checks every launch against the table CI compiles: a float16 array, which
    no launcher passes, is refused with a message naming the table."""
    from normdrop.backends.cuda_backend import _dropout, _runtime, _signatures

    assert _runtime.CHECK_SIGNATURES  # set by tests/conftest.py
    x = np.zeros(4, np.float16)
    args = (
        x,
        np.uint64(1),
        np.float16(2),
        np.uint64(0),
        0,
        1,
        *[np.uint64(0)] * 4,
        x,
        np.zeros(1, np.uint8),
        False,
    )
    with pytest.raises(AssertionError, match="_signatures.py"):
        _signatures.check_launch(_dropout._dropout_kernel, args)
    ok = (
        x.astype(np.float32),
        *args[1:2],
        np.float32(2),
        *args[3:10],
        x.astype(np.float32),
        *args[11:],
    )
    _signatures.check_launch(_dropout._dropout_kernel, ok)
    assert _signatures.describe(np.zeros((3, 4))[:, :2]).endswith("(not C-contiguous)")


def test_launches_follow_the_array_to_its_gpu_and_its_stream(monkeypatch):
    """With several GPUs: the launch switches to the device holding the array, and numba
    stream objects are cached per (device, handle), not per handle (a fake CuPy here)."""
    from normdrop.backends.cuda_backend import _runtime

    log = []

    class Device:
        current = 0

        def __init__(self, ident):
            self.id = ident

        def __enter__(self):
            log.append(("enter", self.id))
            self.saved, Device.current = Device.current, self.id

        def __exit__(self, *exc):
            log.append(("exit", self.id))
            Device.current = self.saved

    streams = {0: 0xA0, 1: 0xA0}  # the same handle value on both devices
    fake_cuda = types.SimpleNamespace(
        Device=Device,
        runtime=types.SimpleNamespace(
            getDevice=lambda: Device.current,
            getDeviceProperties=lambda d: {"multiProcessorCount": 100 + d},
        ),
        get_current_stream=lambda d: types.SimpleNamespace(ptr=streams[d]),
    )
    monkeypatch.setattr(_runtime, "cupy", types.SimpleNamespace(cuda=fake_cuda))
    monkeypatch.setattr(
        _runtime,
        "cuda",
        types.SimpleNamespace(external_stream=lambda ptr: ("stream", Device.current, ptr)),
    )
    monkeypatch.setattr(_runtime, "_streams", {})
    monkeypatch.setattr(_runtime, "_sm_counts", {})
    on_0, on_1 = types.SimpleNamespace(device=Device(0)), types.SimpleNamespace(device=Device(1))
    with _runtime.on_device(on_0):
        assert _runtime.stream() == ("stream", 0, 0xA0) and _runtime.sm_count() == 100
    assert log == []  # already on device 0: no switch
    with _runtime.on_device(on_1):
        assert _runtime.stream() == ("stream", 1, 0xA0) and _runtime.sm_count() == 101
    assert log == [("enter", 1), ("exit", 1)] and Device.current == 0
    with _runtime.on_device(np.zeros(2)):  # an array that does not say where it lives
        assert _runtime.stream() == ("stream", 0, 0xA0)
    assert len(_runtime._streams) == 2


def test_pytest_header_names_the_simulator_or_the_gpu():
    import conftest

    header = "\n".join(conftest.pytest_report_header(None))
    assert ("CUDA simulator" in header) == cb.simulator
    assert "real GPU" in header or cb.simulator


# ----------------------------------------------------------------------------- installation
def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_numba_cuda_names_the_extra():
    result = _run(
        """
        import sys
        import normdrop
        assert "numba" not in sys.modules, "import normdrop imported numba"
        sys.modules["numba_cuda"] = None  # as if numba-cuda were not installed
        try:
            normdrop.get_backend("cuda")
        except normdrop.BackendNotInstalledError as exc:
            assert "numba-cuda" in str(exc) and "normdrop[cuda]" in str(exc), exc
        else:
            raise AssertionError("no error")
        """
    )
    assert result.returncode == 0, result.stderr
