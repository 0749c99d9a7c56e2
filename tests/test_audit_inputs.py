"""An adversarial audit of the public API, as an expert user would probe it: ndarray
subclasses (``numpy.matrix``, ``numpy.memmap``, a user's own), big-endian, read-only and
unknown-size (Dask) arrays, ragged gradients, NaN and infinity, complex or non-``.npz``
checkpoints, seeds and call counters at their limits, one layer shared by two threads, the
command line. Each gives the numpy reference backend's (or PyTorch's) numbers, or a clear
``normdrop`` error that changes no state (SPEC "Errors"); never a raw NumPy or Numba
exception. Each test's docstring says what happened before its fix."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, tol

import normdrop
from normdrop import functional as F
from normdrop.errors import NormdropError, ShapeError, StateDictError

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")

_X = np.arange(12.0).reshape(3, 4) * 0.37 + np.array([0.0, 1.0, 3.0, -2.0])


class _Tagged(np.ndarray):
    """A trivial ndarray subclass, as a user's own array type."""


def _host_backend(backend):
    """The CPU backends take host (NumPy) data; the others are not what these tests probe."""
    if backend.device != "cpu" or backend.name == "dask":
        pytest.skip(f"{backend.name} takes arrays of its own kind, not NumPy subclasses")


def _subclassed(kind, a):
    if kind == "matrix":
        return np.matrix(a)
    if kind == "subclass":
        return a.view(_Tagged)
    raise AssertionError(kind)


def _functional_results(x, backend):
    """Every functional forward and backward on ``x`` (shape (3, 4)), as host arrays."""
    w = np.linspace(0.5, 1.5, 4)
    y_bn, mean_bn, rstd_bn = F.batch_norm_with_stats(x, weight=w, training=True, backend=backend)
    gbn = F.batch_norm_backward(x, x, mean_bn, rstd_bn, w, backend=backend)
    y_ln, mean_ln, rstd_ln = F.layer_norm_with_stats(x, 4, w, backend=backend)
    gln = F.layer_norm_backward(x, x, 4, mean_ln, rstd_ln, w, backend=backend)
    y_do = F.dropout(x, 0.5, seed=3, backend=backend)
    g_do = F.dropout_backward(x, 0.5, seed=3, backend=backend)
    fused = F.dropout_add_layer_norm_with_stats(x, x, 4, w, p=0.5, seed=3, backend=backend)
    gf = F.dropout_add_layer_norm_backward(
        x, fused[1], 4, fused[2], fused[3], w, p=0.5, seed=3, bitmask=fused[4], backend=backend
    )
    return [y_bn, *gbn, y_ln, *gln, y_do, g_do, fused[0], fused[1], *gf]


@pytest.mark.parametrize("kind", ["matrix", "subclass"])
def test_ndarray_subclass_data_gives_plain_arrays_with_the_reference_numbers(backend, kind):
    """np.matrix crashed every operation (AxisError, 'shape too large to be a matrix',
    Numba TypingError): it keeps two dimensions through reshape. Subclasses are now
    computed on as plain ndarrays and results are plain ndarrays."""
    _host_backend(backend)
    expected = _functional_results(_X.copy(), "numpy")
    got = _functional_results(_subclassed(kind, _X.copy()), backend.name)
    for g, e in zip(got, expected, strict=True):
        assert type(g) is np.ndarray
        np.testing.assert_allclose(g, e, **tol(np.float64, "reference"))


@pytest.mark.parametrize("kind", ["matrix", "subclass"])
def test_ndarray_subclass_through_every_layer(backend, kind):
    """Every layer, forward and backward, on a subclass gives the plain-array numbers."""
    _host_backend(backend)

    def run(data):
        layers = [
            normdrop.BatchNorm1d(4, dtype="float64", backend=backend.name),
            normdrop.LayerNorm(4, dtype="float64", backend=backend.name),
            normdrop.Dropout(0.4, seed=5, backend=backend.name),
            normdrop.Sequential(
                normdrop.BatchNorm1d(4, dtype="float64", backend=backend.name),
                normdrop.Dropout(0.3, seed=2, backend=backend.name),
            ),
        ]
        results = []
        for layer in layers:
            y = layer(data)
            results += [y, layer.backward(data)]
        fused = normdrop.DropoutAddLayerNorm(
            4, p=0.3, seed=1, dtype="float64", backend=backend.name
        )
        y, r = fused(data, data)
        results += [y, r, *fused.backward(data)]
        return results

    expected = run(_X.copy())
    got = run(_subclassed(kind, _X.copy()))
    for g, e in zip(got, expected, strict=True):
        assert type(g) is np.ndarray
        np.testing.assert_allclose(g, e, **tol(np.float64, "reference"))


@pytest.mark.parametrize("kind", ["matrix", "subclass"])
def test_identity_dropout_returns_the_subclass_object_itself(backend, kind):
    """Evaluation and p == 0 return the input object itself (SPEC), subclasses included;
    so does the fused op's ``r`` without dropout and residual."""
    _host_backend(backend)
    x = _subclassed(kind, _X.copy())
    assert F.dropout(x, 0.5, training=False, backend=backend.name) is x
    assert F.dropout(x, 0.0, backend=backend.name) is x
    assert normdrop.Dropout(0.5, seed=1, backend=backend.name).eval()(x) is x
    assert normdrop.Dropout(0.0, seed=1, backend=backend.name)(x) is x
    # the fused op's r is x itself without dropout and without residual
    assert F.dropout_add_layer_norm(x, None, 4, p=0.0, backend=backend.name)[1] is x
    assert normdrop.DropoutAddLayerNorm(4, backend=backend.name).eval()(x)[1] is x


def test_matrix_out_is_refused_before_anything_is_written(backend):
    """out=np.matrix crashed (a broadcast ValueError or a Numba TypingError)."""
    _host_backend(backend)
    be = backend.name
    calls = [
        lambda out: F.batch_norm(_X, training=True, out=out, backend=be),
        lambda out: F.layer_norm(_X, 4, out=out, backend=be),
        lambda out: F.dropout(_X, 0.5, seed=1, out=out, backend=be),
        lambda out: F.dropout(_X, 0.5, training=False, out=out, backend=be),
        lambda out: F.dropout_backward(_X, 0.5, seed=1, out=out, backend=be),
        lambda out: F.dropout_add_layer_norm(_X, _X, 4, p=0.5, seed=1, out=out, backend=be),
        lambda out: F.batch_norm_backward(_X, _X, np.zeros(4), np.ones(4), out=out, backend=be),
        lambda out: F.layer_norm_backward(_X, _X, 4, np.zeros(3), np.ones(3), out=out, backend=be),
    ]
    for call in calls:
        out = np.matrix(np.full((3, 4), 7.0))
        with pytest.raises(
            normdrop.InvalidParameterError, match=r"out must not be a numpy\.matrix"
        ):
            call(out)
        np.testing.assert_array_equal(out, 7.0)
    # a plain view of the same memory is the way to write into it
    out = np.matrix(np.zeros((3, 4)))
    F.layer_norm(_X, 4, out=np.asarray(out), backend=be)
    np.testing.assert_allclose(np.asarray(out), F.layer_norm(_X, 4, backend="numpy"))


def test_memmap_data_and_out(backend, tmp_path):
    """np.memmap (an ndarray subclass) works as data, as a read-only input and as ``out``."""
    _host_backend(backend)
    path = tmp_path / "x.dat"
    data = np.memmap(path, dtype=np.float64, mode="w+", shape=(3, 4))
    data[:] = _X
    data.flush()
    read_only = np.memmap(path, dtype=np.float64, mode="r", shape=(3, 4))
    out = np.memmap(tmp_path / "out.dat", dtype=np.float64, mode="w+", shape=(3, 4))
    expected = F.layer_norm(_X, 4, backend="numpy")
    np.testing.assert_allclose(F.layer_norm(read_only, 4, backend=backend.name), expected)
    assert F.layer_norm(data, 4, out=out, backend=backend.name) is out
    np.testing.assert_allclose(out, expected, **tol(np.float64, "reference"))
    with pytest.raises(normdrop.InvalidParameterError, match="read-only"):
        F.layer_norm(_X, 4, out=read_only, backend=backend.name)


def test_read_only_and_big_endian_running_stats_in_evaluation(backend):
    """Evaluation only reads the running statistics: big-endian ones and lists are now
    accepted like weight and bias (they were refused with 'it is updated in place')."""
    _host_backend(backend)
    mean, var = np.array([0.5, -1.0, 2.0, 0.0]), np.array([1.5, 0.5, 2.0, 1.0])
    expected = F.batch_norm(_X, mean, var, training=False, backend="numpy")
    read_only = var.copy()
    read_only.flags.writeable = False
    for rm, rv in [
        (mean.astype(">f8"), var.astype(">f8")),
        (mean.tolist(), var.tolist()),
        (mean, read_only),
        (mean.astype(np.float32), var.astype(np.float16)),
    ]:
        got = F.batch_norm(_X, rm, rv, training=False, backend=backend.name)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_running_stats_updated_in_place_must_still_be_native_writeable_arrays(backend):
    """Training updates them in place: a list, a big-endian or a read-only array is refused
    before anything is written (the caller would silently lose the update)."""
    _host_backend(backend)
    var = np.ones(4)
    read_only = np.zeros(4)
    read_only.flags.writeable = False
    for rm, match in [
        ([0.0] * 4, "must be an array"),
        (np.zeros(4, ">f8"), "native byte order"),
        (read_only, "writeable"),
    ]:
        with pytest.raises(normdrop.InvalidParameterError, match=match):
            F.batch_norm(_X, rm, var, training=True, backend=backend.name)
        np.testing.assert_array_equal(var, 1.0)


def test_dropout_backward_with_a_ragged_list_is_a_shape_error():
    """A ragged list as grad_output raised NumPy's raw ValueError from np.shape."""
    layer = normdrop.Dropout(0.5, seed=1)
    layer(np.ones((2, 2)))
    calls = layer.call_count
    with pytest.raises(ShapeError, match="ragged"):
        layer.backward([[1.0], [1.0, 2.0]])
    assert layer.call_count == calls
    np.testing.assert_array_equal(
        layer.backward([[1.0, 1.0], [1.0, 1.0]]), layer.backward(np.ones((2, 2)))
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: normdrop.BatchNorm1d(3),
        lambda: normdrop.LayerNorm(3),
        lambda: normdrop.DropoutAddLayerNorm(3, p=0.1, seed=0),
    ],
)
def test_complex_checkpoint_values_are_refused_not_truncated(make):
    """Complex values loaded with only a ComplexWarning, their imaginary part dropped."""
    layer = make()
    before = {k: v.copy() for k, v in layer.state_dict().items()}
    state = {k: (v.astype(np.complex128) + 1j if v.ndim == 1 else v) for k, v in before.items()}
    for strict in (True, False):
        with pytest.raises(StateDictError, match="imaginary"):
            layer.load_state_dict(state, strict=strict)
        for k, v in layer.state_dict().items():
            np.testing.assert_array_equal(v, before[k])
    # real values of another dtype still load, converted (as PyTorch's copy_ does)
    layer.load_state_dict({k: v.astype(np.float64) for k, v in before.items()})


def _big_endian(a):
    return np.asarray(a).astype(np.asarray(a).dtype.newbyteorder(">"))


def _bn_ln_fused_dropout(x, backend, conv):
    """Forward and backward of every operation, every array argument passed through ``conv``."""
    w, b = conv(np.linspace(0.5, 1.5, 4)), conv(np.linspace(-1, 1, 4))
    y, mean, rstd = F.layer_norm_with_stats(x, 4, w, b, backend=backend)
    g = F.layer_norm_backward(conv(x), x, 4, conv(mean), conv(rstd), w, backend=backend)
    y_bn, m_bn, r_bn = F.batch_norm_with_stats(x, weight=w, bias=b, training=True, backend=backend)
    g_bn = F.batch_norm_backward(conv(x), x, conv(m_bn), conv(r_bn), w, backend=backend)
    fused = F.dropout_add_layer_norm(x, conv(x), 4, w, b, p=0.5, seed=1, backend=backend)
    d = F.dropout(x, 0.5, seed=1, backend=backend)
    return [y, *g, y_bn, *g_bn, *fused, d]


def test_big_endian_everything(backend):
    """Big-endian data, weights, biases, residuals, gradients and statistics give the numbers
    of native ones (never a Numba TypingError), in native dtypes."""
    _host_backend(backend)
    expected = _bn_ln_fused_dropout(_X.copy(), "numpy", lambda a: a)
    got = _bn_ln_fused_dropout(_big_endian(_X), backend.name, _big_endian)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype.isnative
        np.testing.assert_allclose(g, e, **tol(np.float64, "reference"))


def test_errors_are_normdrop_errors_for_hostile_inputs(backend):
    """Non-arrays, objects, complex, ragged: normdrop errors, never raw ones."""
    _host_backend(backend)
    be = backend.name
    for bad in ["abc", None, {}, [[1.0], [1.0, 2.0]], np.ones((3, 4), object), 1j]:
        for call in [
            lambda bad=bad: F.batch_norm(bad, training=True, backend=be),
            lambda bad=bad: F.layer_norm(bad, 4, backend=be),
            lambda bad=bad: F.dropout(bad, 0.5, seed=1, backend=be),
            lambda bad=bad: F.dropout_add_layer_norm(bad, None, 4, p=0.5, seed=1, backend=be),
        ]:
            with pytest.raises(NormdropError):
                call()


def test_big_endian_dask_arrays_are_computed_not_refused():
    """A big-endian Dask array was refused with 'must have dtype float32 or float64, got
    >f8' (it is float64); it is now converted lazily, as big-endian NumPy data is."""
    da = pytest.importorskip("dask.array")
    x = da.from_array(_X.astype(">f8"), chunks=(2, 2))
    expected = _bn_ln_fused_dropout(_X.copy(), "numpy", lambda a: a)
    got = _bn_ln_fused_dropout(x, "dask", lambda a: a)
    for g, e in zip(got, expected, strict=True):
        g = np.asarray(g.compute() if hasattr(g, "compute") else g)
        assert g.dtype.isnative
        np.testing.assert_allclose(g, e, **tol(np.float64, "reference"))


def test_dask_array_of_unknown_sizes_is_a_shape_error():
    """After boolean indexing a Dask array's shape holds NaN: that raised NumPy's raw
    'cannot convert float NaN to integer'; now a ShapeError naming the remedy."""
    da = pytest.importorskip("dask.array")
    x = da.from_array(_X, chunks=2)
    x = x[da.from_array(np.array([True, False, True]), chunks=2)]
    layer = normdrop.BatchNorm1d(4, backend="dask")
    calls = [
        lambda: F.batch_norm(x, training=True, backend="dask"),
        lambda: F.layer_norm(x, 4, backend="dask"),
        lambda: F.dropout(x, 0.5, seed=1, backend="dask"),
        lambda: F.dropout_add_layer_norm(x, None, 4, p=0.5, seed=1, backend="dask"),
        lambda: layer(x),
    ]
    for call in calls:
        with pytest.raises(ShapeError, match=r"compute_chunk_sizes\(\)"):
            call()
    assert int(layer.num_batches_tracked) == 0
    known = x.compute_chunk_sizes()
    np.testing.assert_allclose(
        np.asarray(F.layer_norm(known, 4, backend="dask").compute()),
        F.layer_norm(_X[[0, 2]], 4, backend="numpy"),
        **tol(np.float64, "reference"),
    )


def _calls_from_two_threads(forward, calls_per_thread=40):
    """Run ``forward()`` from two threads at once; return every result."""
    import threading

    results: list = []
    errors: list = []
    start = threading.Barrier(2)

    def work():
        try:
            start.wait()
            for _ in range(calls_per_thread):
                results.append(forward())
        except Exception as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


@pytest.mark.parametrize("kind", ["Dropout", "DropoutAddLayerNorm"])
def test_two_threads_share_a_dropout_layer_each_call_its_own_mask(backend, kind):
    """Two threads calling one layer read the same call_count and both used that call's
    mask, and increments were lost (call_count 50 after 100 calls). Each call now claims
    its own call number: every mask of calls 0..n-1 is used exactly once."""
    if backend.name in SLOW_BACKENDS or backend.name == "dask":
        pytest.skip("many calls; the call counter is backend-independent")
    x = np.ones((4, 16))
    if kind == "Dropout":
        layer = normdrop.Dropout(0.5, seed=7, backend=backend.name)
        results = _calls_from_two_threads(lambda: layer(x))
    else:
        layer = normdrop.DropoutAddLayerNorm(16, p=0.5, seed=7, backend=backend.name)
        results = _calls_from_two_threads(lambda: layer(x)[1])  # r = dropout(x)
    n = len(results)
    assert layer.call_count == n
    got = sorted(tuple(np.asarray(y).ravel() != 0) for y in results)
    expected = sorted(
        tuple(np.asarray(F.dropout_mask(x.shape, 0.5, seed=7, call=c)).ravel()) for c in range(n)
    )
    assert got == expected


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the CUDA simulator's inf - inf
def test_nan_and_inf_propagate_as_in_torch(backend):
    """NaN and infinite inputs: outputs match PyTorch's NaN pattern and finite values on
    every backend, and only the affected channel's running statistics turn non-finite
    (its running mean is inf in PyTorch, NaN on the numba kernels: docs/differences.md)."""
    torch = pytest.importorskip("torch")
    x = np.array([[1.0, 0.5, np.nan], [3.0, np.inf, 2.0], [0.0, 2.0, 1.0]])
    rm, rv = _vec(backend, np.zeros(3)), _vec(backend, np.ones(3))
    dev = lambda a: backend.asarray(a)  # noqa: E731
    y = F.batch_norm(dev(x), rm, rv, training=True, backend=backend)
    trm, trv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ty = torch.nn.functional.batch_norm(torch.from_numpy(x), trm, trv, training=True).numpy()
    np.testing.assert_allclose(backend.to_numpy(y), ty, **tol(np.float64, "torch"))
    for got, expected in ((rm, trm), (rv, trv)):
        got = np.asarray(got) if backend.device == "cpu" else backend.to_numpy(got)
        np.testing.assert_allclose(got[0], expected.numpy()[0], **tol(np.float64, "torch"))
        assert not np.isfinite(got[1:]).any()
    ln = F.layer_norm(dev(x), 3, backend=backend)
    tln = torch.nn.functional.layer_norm(torch.from_numpy(x), (3,)).numpy()
    np.testing.assert_allclose(backend.to_numpy(ln), tln, **tol(np.float64, "torch"))
    fused, _ = F.dropout_add_layer_norm(dev(x), dev(x), 3, p=0.0, backend=backend)
    tf = torch.nn.functional.layer_norm(torch.from_numpy(2 * x), (3,)).numpy()
    np.testing.assert_allclose(backend.to_numpy(fused), tf, **tol(np.float64, "torch"))
    kept = backend.to_numpy(F.dropout(dev(x), 0.5, seed=1, backend=backend))
    mask = np.asarray(F.dropout_mask(x.shape, 0.5, seed=1, backend="numpy"))
    np.testing.assert_array_equal(kept, np.where(mask, 2 * x, 0.0))


def _vec(backend, v):
    """A running-statistics vector as the backend updates it in place (host on CPU)."""
    return v if backend.device == "cpu" else backend.asarray(v)


@pytest.mark.parametrize(
    "make",
    [
        lambda: normdrop.Dropout(0.5, seed=1),
        lambda: normdrop.DropoutAddLayerNorm(4, p=0.5, seed=1),
    ],
    ids=["Dropout", "DropoutAddLayerNorm"],
)
def test_seed_and_call_count_assignments_are_checked(make):
    """``layer.seed = -1`` or ``layer.call_count = "a"`` were stored as given (and failed
    later, or drew masks no backend agrees on); they are checked as the constructor and
    ``functional.dropout`` check them (SPEC: options assigned after construction)."""
    layer = make()
    for name in ("seed", "call_count"):
        for bad in (-1, 2**64, 1.5, "a", None, True):
            with pytest.raises(normdrop.InvalidParameterError, match=name):
                setattr(layer, name, bad)
        setattr(layer, name, np.uint64(2**64 - 1))
        assert getattr(layer, name) == 2**64 - 1 and type(getattr(layer, name)) is int
    assert (layer.seed, layer.call_count) == (2**64 - 1, 2**64 - 1)


@pytest.mark.parametrize("kind", ["Dropout", "DropoutAddLayerNorm"])
def test_call_numbers_run_out_with_a_clear_error(kind):
    """Past call 2**64 - 2 the layer drew masks outside Philox's 64-bit counter (numpy and
    numba disagreed) and get_extra_state raised a raw OverflowError; the last call number
    now gives a clear error that changes nothing."""
    x = np.ones((2, 4))
    if kind == "Dropout":
        layer = normdrop.Dropout(0.5, seed=3)
        forward = lambda: layer(x)  # noqa: E731
    else:
        layer = normdrop.DropoutAddLayerNorm(4, p=0.5, seed=3)
        forward = lambda: layer(x)[1]  # noqa: E731
    layer.call_count = 2**64 - 2
    y = forward()
    mask = np.asarray(F.dropout_mask(x.shape, 0.5, seed=3, call=2**64 - 2))
    np.testing.assert_array_equal(np.asarray(y) != 0, mask)
    assert layer.call_count == 2**64 - 1
    with pytest.raises(normdrop.InvalidParameterError, match="call_count"):
        forward()
    assert layer.call_count == 2**64 - 1
    np.testing.assert_array_equal(layer.get_extra_state(), [3, 2**64 - 1])
    layer.eval()
    forward()  # evaluation draws no mask


def test_demo_with_a_negative_seed_is_a_clear_command_line_error(capsys):
    """``normdrop demo --seed -1`` ended in a NumPy traceback (default_rng's 'expected
    non-negative integer'); it is now the command line's error, exit status 2."""
    from normdrop.cli import main

    assert main(["demo", "--seed", "-1", "--backend", "numpy"]) == 2
    captured = capsys.readouterr()
    assert "normdrop: error: seed must be an integer in [0, 2**64), got -1" in captured.err
    assert "Traceback" not in captured.err
    assert "demo:" not in captured.out  # checked before anything is printed


def test_load_of_a_file_that_is_not_a_checkpoint_is_a_state_dict_error(tmp_path):
    """``load`` of a .npy file raised "'numpy.ndarray' object does not support the context
    manager protocol", of a text file NumPy's pickle ValueError, of an .npz with object
    arrays NumPy's allow_pickle ValueError; each is now a StateDictError, nothing loaded."""
    bn = normdrop.BatchNorm1d(3)
    bn.running_mean[...] = 5.0
    np.save(tmp_path / "one.npy", np.ones(3))
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    np.savez(tmp_path / "objects.npz", weight=np.array([object()] * 3, dtype=object))
    for name, match in [
        ("one.npy", r"\.npy file"),
        ("notes.txt", "not an .npz file"),
        ("objects.npz", "cannot read"),
    ]:
        with pytest.raises(StateDictError, match=match):
            bn.load(tmp_path / name)
        np.testing.assert_array_equal(bn.running_mean, 5.0)
    with pytest.raises(FileNotFoundError):
        bn.load(tmp_path / "missing.npz")
    bn.save(tmp_path / "good")
    normdrop.BatchNorm1d(3).load(tmp_path / "good")


def test_fused_function_accepts_p_one_outside_training_as_dropout_does():
    """``dropout(x, 1.0, training=False)`` is accepted (as in PyTorch: p is unused) but the
    fused function refused the same arguments; now both agree, forward and backward."""
    x = _X.copy()
    y, r = F.dropout_add_layer_norm(x, x, 4, p=1.0, training=False, backend="numpy")
    np.testing.assert_allclose(y, F.layer_norm(2 * x, 4, backend="numpy"), **tol(np.float64))
    np.testing.assert_array_equal(r, 2 * x)
    y, r, mean, rstd, _ = F.dropout_add_layer_norm_with_stats(x, x, 4, p=1.0, training=False)
    gx, gres, _, _ = F.dropout_add_layer_norm_backward(x, r, 4, mean, rstd, p=1.0, training=False)
    expected = F.layer_norm_backward(x, r, 4, mean, rstd)[0]
    np.testing.assert_allclose(gx, expected, **tol(np.float64, "reference"))
    np.testing.assert_allclose(gres, expected, **tol(np.float64, "reference"))
    with pytest.raises(normdrop.InvalidParameterError, match=r"\[0, 1\), got 1.0"):
        F.dropout_add_layer_norm(x, x, 4, p=1.0, training=True, seed=1)
