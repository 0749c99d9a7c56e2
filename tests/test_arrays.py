"""Arrays as users have them (issues 11 and 15): overlapping and read-only ``out=``, read-only
and float16 parameters, NumPy scalars, memory layouts, big-endian and masked arrays, empty
batches, and the errors for what normdrop cannot take."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, host, vec

import normdrop
from normdrop import functional as F
from normdrop.errors import BackendArrayError, InvalidParameterError, ShapeError


def _calls(backend, x, g):
    """``name -> f(x, g, out)`` for every function that takes ``out=``."""
    w = vec(backend, np.array([1.5, 0.5, -1.0]))
    b = vec(backend, np.array([0.25, -0.5, 1.0]))

    def bn_back(g, x, out):
        _, m, r = F.batch_norm_with_stats(x, training=True, backend=backend)
        return F.batch_norm_backward(g, x, m, r, w, out=out, backend=backend)[0]

    def ln_back(g, x, out):
        _, m, r = F.layer_norm_with_stats(x, 3, w, b, backend=backend)
        return F.layer_norm_backward(g, x, 3, m, r, w, out=out, backend=backend)[0]

    return {
        "batch_norm": lambda x, g, out: F.batch_norm(
            x, weight=w, bias=b, training=True, out=out, backend=backend
        ),
        "layer_norm": lambda x, g, out: F.layer_norm(x, 3, w, b, out=out, backend=backend),
        "dropout": lambda x, g, out: F.dropout(x, 0.4, seed=3, out=out, backend=backend),
        "batch_norm_backward": lambda x, g, out: bn_back(g, x, out),
        "layer_norm_backward": lambda x, g, out: ln_back(g, x, out),
        "dropout_backward": lambda x, g, out: F.dropout_backward(
            g, 0.4, seed=3, out=out, backend=backend
        ),
    }


# ----------------------------------------------------------------------------- out= overlap
@pytest.mark.parametrize("shift", [1, 3, -1, -4])
@pytest.mark.parametrize("target", ["x", "grad_output"])
def test_partly_overlapping_out_gives_the_separate_result(backend, rng, shift, target):
    """``out`` a shifted view of the buffer holding the input: the numbers of a separate out."""
    rows = 5 if backend.name in SLOW_BACKENDS else 40
    n = rows * 3
    pad = abs(shift)
    for name, call in _calls(backend, None, None).items():
        data = rng.standard_normal(n + pad)
        other = rng.standard_normal((rows, 3))
        start = pad if shift < 0 else 0
        xs = data[start : start + n].reshape(rows, 3)
        expected = backend.to_numpy(
            call(backend.asarray(xs.copy()), backend.asarray(other.copy()), None)
            if target == "x"
            else call(backend.asarray(other.copy()), backend.asarray(xs.copy()), None)
        )
        buf = backend.asarray(data.copy())
        shared = buf[start : start + n].reshape(rows, 3)
        out = buf[start + shift : start + shift + n].reshape(rows, 3)
        if target == "x":
            y = call(shared, backend.asarray(other.copy()), out)
        else:
            y = call(backend.asarray(other.copy()), shared, out)
        assert y is out, name
        np.testing.assert_allclose(
            backend.to_numpy(out), expected, rtol=1e-12, atol=1e-12, err_msg=name
        )


def test_out_overlapping_a_parameter(rng):
    """``out`` sharing memory with ``weight`` is computed into a temporary too."""
    for be in ("numpy", "numba"):
        x = rng.standard_normal((4, 3))
        store = np.concatenate([rng.standard_normal(3), np.zeros(12)])
        w = store[:3]
        expected = F.layer_norm(x, 3, w.copy(), backend=be)
        out = store[2:14].reshape(4, 3)  # starts on w[2]
        F.layer_norm(x, 3, w, out=out, backend=be)
        np.testing.assert_allclose(out, expected, rtol=1e-12, err_msg=be)


# ----------------------------------------------------------------------------- read-only
def _read_only(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def test_read_only_out_rejected_before_any_change(backend, rng):
    x = backend.asarray(rng.standard_normal((4, 3)))
    g = backend.asarray(rng.standard_normal((4, 3)))
    out = _read_only(np.zeros((4, 3)))
    if not backend.accepts(out):
        pytest.skip(f"{backend.name} outputs have no read-only flag")
    for name, call in _calls(backend, None, None).items():
        with pytest.raises(InvalidParameterError) as info:
            call(x, g, out)
        assert info.value.parameter_name == "out", name
        assert "read-only" in str(info.value), name
    rm, rv = vec(backend, np.zeros(3)), vec(backend, np.ones(3))
    with pytest.raises(InvalidParameterError):
        F.batch_norm(x, rm, rv, training=True, out=out, backend=backend)
    np.testing.assert_array_equal(host(backend, rm), np.zeros(3))
    np.testing.assert_array_equal(host(backend, rv), np.ones(3))


def test_read_only_running_stats(backend, rng):
    """Training (which writes them) raises a clear error and changes nothing; eval reads them."""
    rm0, rv0 = rng.standard_normal(3), rng.random(3) + 0.5
    rm, rv = _read_only(rm0), _read_only(rv0)
    if backend.device != "cpu" and not backend.accepts(rm):
        pytest.skip("device vectors have no read-only flag")
    x = backend.asarray(rng.standard_normal((6, 3, 2)))
    for name, args in (
        ("running_mean", (rm, vec(backend, rv0))),
        ("running_var", (vec(backend, rm0), rv)),
    ):
        with pytest.raises(InvalidParameterError) as info:
            F.batch_norm(x, *args, training=True, backend=backend)
        assert info.value.parameter_name == name
        assert "read-only" in str(info.value)
        for a, a0 in zip(args, (rm0, rv0), strict=True):
            np.testing.assert_array_equal(host(backend, a), a0)
    expected = backend.to_numpy(
        F.batch_norm(x, vec(backend, rm0), vec(backend, rv0), backend=backend)
    )
    y = F.batch_norm(x, rm, rv, backend=backend)
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-12)
    w = _read_only(np.array([1.0, 2.0, 3.0]))
    if backend.device == "cpu":  # read-only parameters and input are only read
        y = F.batch_norm(x, rm, rv, w, w, backend=backend)
        F.layer_norm(x, 2, _read_only(np.ones(2)), backend=backend)
        xr = _read_only(rng.standard_normal((4, 3)))
        if backend.accepts(xr):
            np.testing.assert_array_equal(
                backend.to_numpy(F.layer_norm(xr, 3, backend=backend)),
                backend.to_numpy(F.layer_norm(np.array(xr), 3, backend=backend)),
            )


# ----------------------------------------------------------------------------- float16 params
def test_float16_parameters_and_running_stats(backend, rng):
    """float16 weight, bias and running statistics behave as their float32 values do."""
    x = backend.asarray(rng.standard_normal((6, 3)))
    w16 = (rng.standard_normal(3) + 1).astype(np.float16)
    b16 = rng.standard_normal(3).astype(np.float16)
    rm16, rv16 = np.zeros(3, np.float16), np.ones(3, np.float16)
    rm, rv = vec(backend, rm16), vec(backend, rv16)
    y = F.batch_norm(
        x, rm, rv, vec(backend, w16), vec(backend, b16), training=True, backend=backend
    )
    rm32, rv32 = np.zeros(3), np.ones(3)
    ref = F.batch_norm(
        backend.to_numpy(x),
        rm32,
        rv32,
        w16.astype(np.float64),
        b16.astype(np.float64),
        training=True,
        backend="numpy",
    )
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-12)
    assert host(backend, rm).dtype == np.float16
    np.testing.assert_allclose(host(backend, rm), rm32.astype(np.float16), rtol=1e-3)
    np.testing.assert_allclose(host(backend, rv), rv32.astype(np.float16), rtol=1e-3)
    y = F.batch_norm(x, rm, rv, vec(backend, w16), vec(backend, b16), backend=backend)
    ref = F.batch_norm(
        backend.to_numpy(x),
        host(backend, rm).astype(np.float64),
        host(backend, rv).astype(np.float64),
        w16.astype(np.float64),
        b16.astype(np.float64),
        backend="numpy",
    )
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-12)
    y = F.layer_norm(x, 3, vec(backend, w16), vec(backend, b16), backend=backend)
    ref = F.layer_norm(
        backend.to_numpy(x), 3, w16.astype(np.float64), b16.astype(np.float64), backend="numpy"
    )
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-12)


# ----------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("be", ["numpy", "numba"])
@pytest.mark.parametrize("scalar", [np.float16, np.float32, np.float64, float])
def test_numpy_scalars_accepted_like_python_floats(be, scalar):
    y = F.dropout(scalar(2.0), 0.5, seed=0, backend=be)
    assert y.shape == () and y.dtype == np.dtype(scalar if scalar is not float else np.float64)
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(
        F.batch_norm(x, training=True, eps=scalar(1e-3), backend=be),
        F.batch_norm(x, training=True, eps=1e-3, backend=be),
        rtol=1e-3,
    )
    rm, rv = np.zeros(2), np.ones(2)
    F.batch_norm(x, rm, rv, training=True, momentum=scalar(0.5), backend=be)
    np.testing.assert_allclose(rm, 0.5 * x.mean(0))


@pytest.mark.parametrize("be", ["numpy", "numba"])
@pytest.mark.parametrize("order", [">", "<"])
def test_non_native_byte_order_accepted(be, order, rng):
    """Big-endian data (FITS files) computes like native data; results are native."""
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    xs = x.astype(order + "f4")
    w = np.array([1.0, 2.0, 0.5]).astype(order + "f8")
    for name, got, want in (
        (
            "batch_norm",
            F.batch_norm(xs, weight=w, training=True, backend=be),
            F.batch_norm(x, weight=w.astype(float), training=True, backend=be),
        ),
        ("layer_norm", F.layer_norm(xs, 2, backend=be), F.layer_norm(x, 2, backend=be)),
        ("dropout", F.dropout(xs, 0.5, seed=1, backend=be), F.dropout(x, 0.5, seed=1, backend=be)),
    ):
        assert got.dtype == np.dtype(np.float32) and got.dtype.isnative, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    out = np.empty((4, 3, 2), order + "f4")
    F.layer_norm(xs, 2, out=out, backend=be)
    np.testing.assert_array_equal(out, F.layer_norm(x, 2, backend=be))
    rm = np.zeros(3, ">f8")
    with pytest.raises(InvalidParameterError, match="native byte order"):
        F.batch_norm(x, rm, np.ones(3), training=True, backend=be)


def test_masked_arrays_rejected():
    x = np.ma.masked_array(np.arange(6.0).reshape(3, 2), mask=[[0, 1], [0, 0], [0, 0]])
    for call in (
        lambda: F.batch_norm(x, training=True),
        lambda: F.layer_norm(x, 2),
        lambda: F.dropout(x, 0.5, seed=0),
        lambda: F.dropout_backward(x, 0.5, seed=0),
        lambda: F.layer_norm(np.ones((3, 2)), 2, weight=np.ma.masked_array(np.ones(2))),
        lambda: normdrop.BatchNorm1d(2)(x),
    ):
        with pytest.raises(InvalidParameterError, match="MaskedArray"):
            call()


def test_ragged_lists_are_a_shape_error():
    for call in (
        lambda: F.layer_norm([[1.0, 2.0], [1.0]], 2),
        lambda: F.batch_norm([[1.0, 2.0], [1.0]], training=True),
        lambda: F.dropout([[1.0], [1.0, 2.0]], 0.5, seed=0),
    ):
        with pytest.raises(ShapeError, match="ragged"):
            call()


def test_torch_tensors_get_a_backend_error_that_says_what_to_do():
    torch = pytest.importorskip("torch")
    x = np.ones((4, 3))
    _, m, r = F.batch_norm_with_stats(x, training=True)
    _, lm, lr = F.layer_norm_with_stats(x, 3)
    t = torch.ones(4, 3)
    for call in (
        lambda: F.batch_norm(t, training=True),
        lambda: F.batch_norm_backward(t, x, m, r),
        lambda: F.layer_norm_backward(t, x, 3, lm, lr),
        lambda: F.dropout_backward(t, 0.5, seed=1),
        lambda: F.layer_norm(x, 3, torch.ones(3)),
    ):
        with pytest.raises(BackendArrayError, match=r"torch\.Tensor.*\.numpy\(\)"):
            call()


def test_bad_bitmask_and_mask_shape_are_clear_errors():
    with pytest.raises(InvalidParameterError) as info:
        F.dropout_backward(np.ones(3), 0.5, bitmask=[1])
    assert info.value.parameter_name == "bitmask"
    for shape in (None, 2.5, "ab", (2, None)):
        with pytest.raises(InvalidParameterError) as info:
            F.dropout_mask(shape, 0.5, seed=1)
        assert info.value.parameter_name == "shape"


def test_reference_backend_is_silent_on_nan_and_inf(rng):
    x = rng.standard_normal((4, 3))
    x[0, 0], x[1, 1], x[2, 2] = np.inf, -np.inf, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, m, r = F.batch_norm_with_stats(x, training=True, backend="numpy")
        F.batch_norm_backward(x, x, m, r, np.ones(3), backend="numpy")
        _, m, r = F.layer_norm_with_stats(x, 3, backend="numpy")
        F.layer_norm_backward(x, x, 3, m, r, np.ones(3), backend="numpy")
        F.dropout(x, 0.5, seed=0, backend="numpy")


def test_unused_arguments_are_checked_as_pytorch_does():
    """In evaluation p = 1 and any momentum are accepted (unused); in training they are not."""
    x = np.ones((3, 2))
    assert F.dropout(x, 1.0, training=False) is x
    with pytest.raises(InvalidParameterError):
        F.dropout(x, 1.5, training=False)
    with pytest.raises(InvalidParameterError):
        F.dropout(x, 1.0, training=True, seed=0)
    rm, rv = np.zeros(2), np.ones(2)
    np.testing.assert_allclose(F.batch_norm(x, rm, rv, momentum=2.0), x / np.sqrt(1 + 1e-5))
    with pytest.raises(InvalidParameterError):
        F.batch_norm(x, rm, rv, momentum=2.0, training=True)


# ----------------------------------------------------------------------------- empty batches
@pytest.mark.parametrize("shape", [(0, 3, 2), (0, 3), (2, 3, 0)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_empty_batch_follows_pytorch(backend, shape, momentum):
    """Measured with PyTorch 2.13: an empty output, running stats unchanged, count + 1."""
    bn = normdrop.BatchNorm1d(3, momentum=momentum, dtype="float64", backend=backend.name)
    bn.running_mean[...] = 0.5
    x = backend.asarray(np.zeros(shape))
    y = bn(x)
    assert tuple(y.shape) == shape and backend.accepts(y)
    np.testing.assert_array_equal(host(backend, bn.running_mean), np.full(3, 0.5))
    np.testing.assert_array_equal(host(backend, bn.running_var), np.ones(3))
    assert int(host(backend, bn.num_batches_tracked)) == 1
    dx = bn.backward(backend.asarray(np.zeros(shape)))
    assert tuple(dx.shape) == shape
    np.testing.assert_array_equal(host(backend, bn.grads["weight"]), np.zeros(3))
    np.testing.assert_array_equal(host(backend, bn.grads["bias"]), np.zeros(3))
    bn.eval()
    assert tuple(bn(x).shape) == shape
    assert int(host(backend, bn.num_batches_tracked)) == 1
    if momentum is None:  # the empty batch counted: the next one has weight 1/2
        bn.train()
        bn(backend.asarray(np.ones((2, 3))))
        np.testing.assert_allclose(host(backend, bn.running_mean), np.full(3, 0.75))


def test_batchnorm_empty_batch_matches_torch():
    torch = pytest.importorskip("torch")
    for shape in [(0, 3, 2), (0, 3), (2, 3, 0)]:
        for training in (True, False):
            ours = normdrop.BatchNorm1d(3).train(training)
            theirs = torch.nn.BatchNorm1d(3).train(training)
            y = ours(np.zeros(shape, np.float32))
            assert y.shape == tuple(theirs(torch.zeros(shape)).shape)
            assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)
            np.testing.assert_array_equal(ours.running_mean, theirs.running_mean.numpy())
            np.testing.assert_array_equal(ours.running_var, theirs.running_var.numpy())
            rm, rv = torch.zeros(3), torch.ones(3)
            y = F.batch_norm(np.zeros(shape), np.zeros(3), np.ones(3), training=training)
            assert y.shape == tuple(
                torch.nn.functional.batch_norm(torch.zeros(shape), rm, rv, training=training).shape
            )


# ----------------------------------------------------------------------------- ranks, layouts
def test_functional_batch_norm_takes_any_rank_from_two(backend, rng):
    x = rng.standard_normal((3, 2, 2, 3))
    g = rng.standard_normal((3, 2, 2, 3))
    w = np.array([1.5, -0.5])
    y, m, r = F.batch_norm_with_stats(
        backend.asarray(x),
        weight=vec(backend, w),
        training=True,
        backend=backend,
    )
    ref = F.batch_norm(x.reshape(3, 2, 6), weight=w, training=True, backend="numpy")
    np.testing.assert_allclose(backend.to_numpy(y), ref.reshape(x.shape), rtol=1e-12, atol=1e-12)
    dx, dw, db = F.batch_norm_backward(
        backend.asarray(g), backend.asarray(x), m, r, vec(backend, w), backend=backend
    )
    _, m6, r6 = F.batch_norm_with_stats(x.reshape(3, 2, 6), training=True, backend="numpy")
    rdx, rdw, rdb = F.batch_norm_backward(
        g.reshape(3, 2, 6), x.reshape(3, 2, 6), m6, r6, w, backend="numpy"
    )
    np.testing.assert_allclose(backend.to_numpy(dx), rdx.reshape(x.shape), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(backend, dw), rdw, rtol=1e-10)
    with pytest.raises(ShapeError):
        normdrop.BatchNorm1d(2, backend=backend.name)(backend.asarray(x))  # the layer: 2-D/3-D
    with pytest.raises(ShapeError):
        F.batch_norm(backend.asarray(np.ones(3)), training=True, backend=backend)


def test_functional_batch_norm_rank_4_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 2, 2, 3))
    ours = F.batch_norm(x, training=True)
    theirs = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)


def _layouts(x):
    """The same logical array in Fortran order, channels-last and a full transpose."""
    return {
        "fortran": np.asfortranarray(x),
        "channels_last": np.ascontiguousarray(x.transpose(0, 2, 1)).transpose(0, 2, 1),
        "channel_first": np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2),
        "strided": x[:, :, ::-1].copy()[:, :, ::-1],
    }


def test_batch_norm_reads_other_layouts_in_place_and_keeps_them(backend, rng):
    x = rng.standard_normal((5, 3, 4))
    g = rng.standard_normal((5, 3, 4))
    rm, rv = np.zeros(3), np.ones(3)
    ref, m, r = F.batch_norm_with_stats(x, rm, rv, training=True, backend="numpy")
    ref_dx = F.batch_norm_backward(g, x, m, r, backend="numpy")[0]
    for name, xl in _layouts(x).items():
        rmb, rvb = vec(backend, np.zeros(3)), vec(backend, np.ones(3))
        xb = backend.asarray(xl)
        y = F.batch_norm(xb, rmb, rvb, training=True, backend=backend)
        np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-12, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(host(backend, rmb), rm, rtol=1e-12, err_msg=name)
        if isinstance(xb, np.ndarray) and isinstance(y, np.ndarray):
            assert y.strides == xl.strides or name == "strided", name
        dx = F.batch_norm_backward(
            backend.asarray(np.array(g, order="K")),
            xb,
            vec(backend, m),
            vec(backend, r),
            backend=backend,
        )[0]
        np.testing.assert_allclose(
            backend.to_numpy(dx), ref_dx, rtol=1e-10, atol=1e-12, err_msg=name
        )


def test_dropout_keeps_the_layout_and_the_c_order_mask(backend, rng):
    x = rng.standard_normal((5, 3, 4))
    ref, bits = F.dropout_with_bitmask(x, 0.4, seed=9, call=2, backend="numpy")
    for name, xl in _layouts(x).items():
        xb = backend.asarray(xl)
        y, b = F.dropout_with_bitmask(xb, 0.4, seed=9, call=2, backend=backend)
        np.testing.assert_array_equal(backend.to_numpy(y), ref, err_msg=name)
        if isinstance(xb, np.ndarray) and name != "strided":
            assert y.strides == xl.strides, name
        if b is not None:
            np.testing.assert_array_equal(backend.to_numpy(b), bits, err_msg=name)
            dx = F.dropout_backward(xb, 0.4, bitmask=b, backend=backend)
            np.testing.assert_array_equal(backend.to_numpy(dx), ref, err_msg=name)
        dx = F.dropout_backward(xb, 0.4, seed=9, call=2, backend=backend)
        np.testing.assert_array_equal(backend.to_numpy(dx), ref, err_msg=name)


def test_dropout_layout_like_torch():
    torch = pytest.importorskip("torch")
    x = np.ones((4, 5, 6), np.float32).transpose(2, 0, 1)
    t = torch.ones(4, 5, 6).permute(2, 0, 1)
    y = F.dropout(x, 0.5, seed=1)
    assert (
        tuple(s // 4 for s in y.strides)
        == t.stride()
        == torch.nn.functional.dropout(t, 0.5).stride()
    )


@pytest.mark.parametrize(
    ("shape", "make"),
    [
        ((64, 16, 64), np.asfortranarray),
        ((300, 257), np.asfortranarray),
        ((130, 70), lambda a: np.asfortranarray(a)[::-1]),
        ((40, 3, 200), lambda a: np.ascontiguousarray(a.transpose(2, 1, 0)).transpose(2, 1, 0)),
        ((5, 9000), np.asfortranarray),
        ((64, 64), lambda a: np.ascontiguousarray(a.T).T[:, :50]),
    ],
)
def test_c_order_copy_equals_numpy(rng, shape, make):
    """The tiled transposing copy behind ``ascontiguous`` gives NumPy's C-ordered copy."""
    from normdrop.backends.numpy_backend import c_order_copy

    x = make(rng.standard_normal(shape).astype(np.float32))
    y = c_order_copy(x)
    assert y.flags.c_contiguous
    np.testing.assert_array_equal(y, np.ascontiguousarray(x))


def test_layer_norm_on_fortran_order_equals_c_order(backend, rng):
    x = (
        rng.standard_normal((40, 3, 70))
        if backend.name not in SLOW_BACKENDS
        else (rng.standard_normal((4, 3, 5)))
    )
    want = F.layer_norm(x, x.shape[-1], backend="numpy")
    got = F.layer_norm(backend.asarray(np.asfortranarray(x)), x.shape[-1], backend=backend)
    np.testing.assert_allclose(backend.to_numpy(got), want, rtol=1e-12, atol=1e-12)


def test_copy_into_transposed_layouts(rng):
    from normdrop.backends.numpy_backend import copy_into

    x = rng.standard_normal((64, 16, 64)).astype(np.float32)
    for src, dst in ((x, np.empty_like(x, order="F")), (np.asfortranarray(x), np.empty_like(x))):
        copy_into(dst, src)
        np.testing.assert_array_equal(dst, x)
