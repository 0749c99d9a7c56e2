"""What is specific to the cuda backend: device arrays (CuPy's, numba's), layers on the GPU,
launches (signature table, devices, streams), installation. Its kernels against the numpy
reference are in tests/test_kernels.py, with shapes that exercise every path of the
launches.

Without a GPU these run on the CUDA simulator (``tests/conftest.py`` turns it on),
which executes every CUDA thread in Python: shapes stay small.
"""

from __future__ import annotations

import functools
import types

import numpy as np
import pytest
from conftest import run_python

import normdrop
from normdrop import functional as F
from normdrop.errors import BackendArrayError, BackendError, InvalidParameterError

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")
try:
    cb = normdrop.get_backend("cuda")
except BackendError as exc:  # e.g. a GPU machine without CuPy
    pytest.skip(f"cuda backend unavailable: {exc}", allow_module_level=True)

from numba import cuda  # noqa: E402  (after the skip: numba-cuda is there)

ref = normdrop.get_backend("numpy")
TOL = 1e-9


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


# ----------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("mode", ["train", "batch-only", "eval"])
def test_batch_norm_forward_counts_batches_in_the_kernel(mode, rng):
    """``counter`` (a layer's 0-d num_batches_tracked) goes up by one only when the running
    statistics are updated, and the fallback for float16 vectors passes it on."""
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    for dtype in (np.float32, np.float16):
        rm, rv = dev(np.zeros(3, dtype)), dev(np.ones(3, dtype))
        counter = dev(np.array(5, np.int64).copy())
        use_batch, update = mode != "eval", mode == "train"
        out = cb.empty(x.shape, np.float32)
        args = (rm, rv, None, None, use_batch, update, 0.1, 1e-5, out)
        cb.batch_norm_forward(dev(x), *args, counter)
        assert host(counter).shape == () and int(host(counter)) == (6 if update else 5)


def test_batch_norm_layer_path_runs_no_host_vector_math(rng, monkeypatch):
    """A BatchNorm1d training forward on the backend is the fused kernels on the layer's own
    float32 state: no float64 copies of its vectors (the fallback for float16 or mixed
    vectors calls the whole-layer function again on copies)."""
    from normdrop.backends.cuda_backend import _batchnorm

    calls = []
    real = _batchnorm.batch_norm_forward

    def counting(*args):
        calls.append(args)
        return real(*args)

    # the backend's member and the module function its fallback calls again
    monkeypatch.setattr(_batchnorm, "batch_norm_forward", counting)
    monkeypatch.setattr(type(cb), "batch_norm_forward", staticmethod(counting))
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
    assert len(calls) == 2


@pytest.mark.parametrize("shape", [(7, 5), (3, 33)], ids=str)  # registers / memory partials
@pytest.mark.parametrize("wdt", [np.float32, np.float64], ids=str)
def test_layer_norm_backward_accumulates_into_given_gradient_buffers(shape, wdt, rng):
    """``accumulate=(dweight, dbias)``: the column sums are added to a layer's buffers, in
    their dtype, and those are returned."""
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    w = (rng.standard_normal(shape[1]) + 1).astype(wdt)
    mean_r, var_r = ref.row_moments(x)
    rstd_r = 1.0 / np.sqrt(var_r + 1e-5)
    _, dw_r, db_r = ref.layer_norm_backward(
        dy, x, mean_r, rstd_r, w.astype(np.float64), np.empty(shape), True
    )
    held = [rng.standard_normal(shape[1]).astype(wdt) for _ in range(2)]
    buffers = tuple(dev(h.copy()) for h in held)  # the simulator's arrays are NumPy's
    args = (dev(dy), dev(x), dev(mean_r), dev(rstd_r), dev(w), cb.empty(shape, x.dtype), True)
    _, dw, db = cb.layer_norm_backward(*args, accumulate=buffers)
    assert dw is buffers[0] and db is buffers[1]
    tol = 1e-6 if wdt == np.float32 else TOL
    assert_close(dw, held[0] + dw_r, tol)
    assert_close(db, held[1] + db_r, tol)


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
    y, mean, rstd = F.batch_norm_with_stats(dev(x), rm_d, rv_d, training=True, backend="cuda")
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
def test_missing_numba_cuda_names_the_extra():
    result = run_python(
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


@pytest.mark.skipif(not cb.simulator, reason="a fix of the CUDA simulator")
def test_simulator_gives_every_thread_of_a_block_the_same_shared_array():
    """Regression: numba-cuda's simulator allocated a block's shared array with an unlocked
    check-then-set, so a thread switch in between gave two threads private arrays and a
    block's tree reduction a wrong sum (a BatchNorm output with channel 0 wrong in a few of
    hundreds of calls). A shape whose ``__index__`` sleeps holds every thread in that window."""
    import threading
    import time

    from numba.cuda.simulator import kernelapi

    class SlowSize:
        def __index__(self):
            time.sleep(0.01)  # releases the GIL inside np.empty, between lookup and store
            return 4

    shared = kernelapi.FakeCUDAShared(0)
    start = threading.Barrier(8)
    got = []

    def thread():
        start.wait()
        got.append(shared.array(SlowSize(), np.float64))  # one call site for every thread

    threads = [threading.Thread(target=thread) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8
    assert len({id(a) for a in got}) == 1


def test_layers_use_the_whole_backward_and_let_kernels_update_their_state(monkeypatch, rng):
    """BatchNorm1d's backward is the one batch_norm_backward call (no reduce/elemt kernels and
    host vector math), its counter and gradient buffers are updated by the kernels, and the
    results match the numpy layer; LayerNorm hands its buffers to layer_norm_backward."""
    passed = {}

    def spy(name):
        kernel = getattr(cb, name)

        @functools.wraps(kernel)  # keeps the signature: the plans read its keywords
        def call(*args, **kwargs):
            passed.setdefault(name, []).append(kwargs)
            return kernel(*args, **kwargs)

        return call

    for name in ("batch_norm_forward", "batch_norm_backward", "layer_norm_backward"):
        monkeypatch.setattr(cb, name, spy(name))
    monkeypatch.setattr(cb, "channel_backward_reduce", None)  # must not be called
    bn = normdrop.BatchNorm1d(3, momentum=None, backend="cuda")
    ref = normdrop.BatchNorm1d(3, momentum=None, backend="numpy")
    for _ in range(2):
        x = rng.standard_normal((4, 3, 5)).astype(np.float32)
        g = rng.standard_normal((4, 3, 5)).astype(np.float32)
        np.testing.assert_allclose(cb.to_numpy(bn(dev(x))), ref(x), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cb.to_numpy(bn.backward(dev(g))), ref.backward(g), atol=1e-5)
    for k, v in ref.state_dict().items():
        np.testing.assert_allclose(cb.to_numpy(bn.state_dict()[k]), v, rtol=1e-5, atol=1e-5)
    for name in ("weight", "bias"):
        np.testing.assert_allclose(cb.to_numpy(bn.grads[name]), ref.grads[name], atol=1e-5)
    assert all(
        k["counter"] is bn._buffers["num_batches_tracked"] for k in passed["batch_norm_forward"]
    )
    buffers = (bn._grads["weight"], bn._grads["bias"])
    assert all(k["accumulate"] == buffers for k in passed["batch_norm_backward"])
    ln = normdrop.LayerNorm(4, backend="cuda")
    ln(dev(rng.standard_normal((3, 4)).astype(np.float32)))
    ln.backward(dev(rng.standard_normal((3, 4)).astype(np.float32)))
    (kwargs,) = passed["layer_norm_backward"]
    assert (
        kwargs["accumulate"][0].base is ln._grads["weight"]
        or kwargs["accumulate"][0] is ln._grads["weight"]
    )


def test_kernels_compile_on_numpy_without_row_stack():
    """NumPy 2.5 removed ``numpy.row_stack``, whose overload numba-cuda (0.30.4) registers
    when its GPU target loads: loading the backend's runtime imports those overloads with
    the alias put back for the moment, so the target loads, and leaves NumPy without it.
    (No GPU here: the runtime then refuses to load, after the overloads are in.)"""
    out = run_python(
        """
        import numpy as np
        if hasattr(np, "row_stack"):
            del np.row_stack  # as in NumPy 2.5
        try:
            import normdrop.backends.cuda_backend._runtime
        except ImportError as exc:
            assert "GPU" in str(exc), exc
        from numba.cuda.descriptor import cuda_target
        cuda_target.target_context.refresh()  # what a kernel's first compile does
        print("loaded", hasattr(np, "row_stack"))
        """,
        NUMBA_ENABLE_CUDASIM="0",
    )
    assert out.stdout.split() == ["loaded", "False"], out.stderr[-2000:]


def test_device_code_widens_elements_with_float64_not_float():
    """On the GPU ``float(v)`` of a float32 ``v`` stays float32 (numba-cuda types
    ``float()`` of a real as that real), while the simulator's Python ``float`` widens:
    statistics of float32 data were then summed from float32 differences on a real GPU
    only (caught there: LayerNorm row means off by 1e-7). Kernels and device functions
    widen array elements with ``np.float64()``."""
    import ast
    import inspect
    import pkgutil

    from normdrop.backends import cuda_backend

    def gpu_code(fn: ast.FunctionDef) -> bool:
        return any("jit" in ast.unparse(d) or ast.unparse(d) == "kernel" for d in fn.decorator_list)

    found = []
    for info in pkgutil.iter_modules(cuda_backend.__path__):
        module = __import__(f"{cuda_backend.__name__}.{info.name}", fromlist=["_"])
        tree = ast.parse(inspect.getsource(module))
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef) and gpu_code(fn):
                found += [
                    f"{info.name}.{fn.name}: {ast.unparse(call)}"
                    for call in ast.walk(fn)
                    if isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Name)
                    and call.func.id == "float"
                    and any(isinstance(a, ast.Subscript) for a in call.args)
                ]
    assert not found, found
