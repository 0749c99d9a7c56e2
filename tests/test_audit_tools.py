"""Audit of the tools around the layers: the command line, the backend registry and the
conformance checks, and the dask and cuda backends on odd inputs.

Each test here was written against a bug found by the audit (or pins a behaviour the
audit checked and found right where nothing else tested it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import normdrop
from normdrop import registry
from normdrop.backends.numpy_backend import NumpyBackend
from normdrop.cli import main
from normdrop.errors import BackendError
from normdrop.testing import check_backend

BENCH = ["bench", "--quick", "--no-progress", "--no-torch", "--no-jax", "--memory-mib", "1"]


def _one_error_line(err: str, *needles: str) -> None:
    """``err`` has one ``normdrop: error:`` line, containing every needle, and no traceback
    (other lines are the library's notices, such as the one that kernels compile)."""
    errors = [line for line in err.splitlines() if line.startswith("normdrop: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in errors[0], err


# ------------------------------------------------------------------------ command line
@pytest.mark.parametrize("value", ["-1", "nan", "-inf", "soon"])
def test_bench_budget_must_be_seconds(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--list", f"--budget={value}"])
    assert exc.value.code == 2
    assert f"argument --budget: must be a number of seconds >= 0, got {value}" in (
        capsys.readouterr().err
    )


def test_bench_budget_zero_is_one_repeat(capsys):
    assert main(["bench", "--list", "--budget", "0", "--cases", "whole"]) == 0


def test_bench_memory_that_cannot_be_allocated_is_an_error(capsys, monkeypatch):
    from normdrop.bench import memory

    def refuse(n):
        raise MemoryError("Unable to allocate 95.4 TiB")

    monkeypatch.setattr(memory, "copy_thunks", refuse)
    args = [*BENCH, "--cases", "LayerNorm forward whole", "--memory-mib", "100000000"]
    assert main(args) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, "--memory-mib", "100000000")
    assert captured.out == ""


@pytest.mark.parametrize(
    "name, needle",
    [
        ("missing/sweep.png", "existing folder"),
        ("sweep.xyz", "file name ending in .png"),
        ("sweep", "file name ending in .png"),
        ("folder.png", "not a folder"),
    ],
)
def test_bench_plot_to_a_file_that_cannot_be_written_fails_before_timing(
    tmp_path, capsys, monkeypatch, name, needle
):
    pytest.importorskip("matplotlib")
    from normdrop.bench import plot

    (tmp_path / "folder.png").mkdir()
    monkeypatch.setattr(plot, "sweep", lambda *a: pytest.fail("timed before checking --plot"))
    path = str(tmp_path / name)
    assert main([*BENCH, "--plot", path, "--plot-sizes", "4K"]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, "--plot", needle, repr(path))
    assert captured.out == ""
    assert not (tmp_path / "sweep.png").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_bench_plot_to_a_read_only_folder(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from normdrop.bench import plot

    monkeypatch.setattr(plot, "sweep", lambda *a: pytest.fail("timed before checking --plot"))
    tmp_path.chmod(0o500)
    try:
        assert main([*BENCH, "--plot", str(tmp_path / "sweep.png")]) == 2
    finally:
        tmp_path.chmod(0o700)
    _one_error_line(capsys.readouterr().err, "can be written")


def test_bench_plot_write_failure_after_the_sweep_is_an_error(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    def fail(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    path = str(tmp_path / "sweep.png")
    args = [*BENCH, "--plot", path, "--plot-sizes", "4K", "--repeat", "1", "--budget", "0"]
    assert main(args) == 2
    _one_error_line(capsys.readouterr().err, "--plot could not write", "Permission denied")


def test_demo_unknown_backend_prints_nothing_but_the_error(capsys):
    assert main(["demo", "--backend", "nonesuch"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _one_error_line(captured.err, "'nonesuch'", "'numpy'")


def test_python_dash_m_normdrop_reports_bad_input_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "normdrop", "demo", "--seed", "-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    _one_error_line(result.stderr, "seed must be an integer in [0, 2**64), got -1")
    assert result.stdout == ""


# ------------------------------------------------------------ registry and conformance
class _Plugin(NumpyBackend):
    """The reference backend under a plugin's name, to break one thing at a time."""

    name = "plugin"


class _FloatOutput(_Plugin):
    def layer_norm_forward(self, x, weight, bias, eps, out):
        y, mean, rstd = super().layer_norm_forward(x, weight, bias, eps, out)
        return y.astype(np.float64), mean, rstd


class _DataDtypeStatistics(_Plugin):
    def channel_moments(self, x):
        return tuple(v.astype(x.dtype) for v in super().channel_moments(x))


class _DataDtypeGradients(_Plugin):
    def layer_norm_backward(self, dy, x, mean, rstd, weight, out, param_grads):
        dx, dw, db = super().layer_norm_backward(dy, x, mean, rstd, weight, out, param_grads)
        return dx, None if dw is None else dw.astype(x.dtype), db


class _Float64Dropout(_Plugin):
    def dropout_forward(self, x, threshold, scale, seed, call, out, bitmask, offset=0):
        y = super().dropout_forward(x, threshold, scale, seed, call, out, bitmask, offset)
        return y.astype(np.float64)


class _ByteMask(_Plugin):
    def dropout_mask(self, n, threshold, seed, call):
        return super().dropout_mask(n, threshold, seed, call).astype(np.uint8)


class _RaisingKernel(_Plugin):
    def channel_affine(self, x, mean, scale, shift, out):
        raise IndexError("index 3 is out of bounds")


class _RaisingDropout(_Plugin):
    def dropout_forward(self, *args):
        raise TypeError("no offset")


class _Nameless(_Plugin):
    name = ""


@pytest.mark.parametrize(
    ("plugin", "match"),
    [
        (
            _FloatOutput,
            r"layer_norm_forward result 0 \(float32\) has dtype float64, expected float32",
        ),
        (
            _DataDtypeStatistics,
            r"channel_moments result 0 \(float32\) has dtype float32, expected float64",
        ),
        (
            _DataDtypeGradients,
            r"layer_norm_backward result 1 \(float32\) has dtype float32, expected float64",
        ),
        (_Float64Dropout, "dropout_forward with an offset has dtype float64, expected float32"),
        (_ByteMask, r"dropout_mask \(seed=11, call=2\) has dtype uint8, expected bool"),
        (_RaisingKernel, r"channel_affine \(float64\) raised IndexError: index 3 is out of bounds"),
        (_RaisingDropout, "dropout_forward raised TypeError: no offset"),
        (_Nameless, "name must be a non-empty str"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_check_backend_fails_a_broken_backend_naming_what_is_wrong(plugin, match):
    with pytest.raises(AssertionError, match=f"^backend '{plugin.name}': {match}"):
        check_backend(plugin())


def test_a_plugin_must_carry_the_name_it_is_registered_under(monkeypatch):
    """A plugin registered as 'fast' whose object says 'numpy' would, once a layer on it
    is pickled, come back on the numpy backend (layers find their backend by name)."""

    class Impostor(NumpyBackend):
        name = "numpy"

    class EntryPoint:
        name, group = "fast", registry.ENTRY_POINT_GROUP

        def load(self):
            return Impostor()

    monkeypatch.setattr(registry, "_plugins", {"fast": EntryPoint()})
    monkeypatch.setattr(registry, "_loaded", dict(registry._loaded))
    with pytest.raises(BackendError, match="'fast' is registered under that name but its name"):
        normdrop.get_backend("fast")
    assert "fast" not in normdrop.available_backends()
    assert "numpy" in normdrop.available_backends()


def test_cache_clear_that_cannot_delete_says_why_in_one_line(monkeypatch, tmp_path, capsys):
    from normdrop import _cache

    root = tmp_path / "root"
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("NORMDROP_CACHE_DIR", str(root))
    folder = root / _cache.version_key()
    folder.mkdir(parents=True)
    (folder / "k.nbi").write_bytes(b"x")

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(_cache.shutil, "rmtree", refuse)
    assert main(["cache", "clear"]) == 1
    captured = capsys.readouterr()
    _one_error_line(captured.err, "could not clear the kernel cache", "Permission denied")
    assert "removed" not in captured.out


def test_output_into_a_closed_pipe_stops_quietly():
    """``normdrop bench --list | head -0``: the reader is gone before anything is written."""
    process = subprocess.Popen(
        [sys.executable, "-m", "normdrop", "bench", "--list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert err == ""


def test_a_backend_class_instead_of_an_instance_is_refused(monkeypatch):
    """A class has every member of the protocol, so it passed the isinstance check and
    failed at the first call with a raw TypeError about a missing argument."""

    class Fast(NumpyBackend):
        name = "fast"

    class EntryPoint:
        name, group = "fast", registry.ENTRY_POINT_GROUP

        def load(self):
            return Fast

    monkeypatch.setattr(registry, "_plugins", {"fast": EntryPoint()})
    monkeypatch.setattr(registry, "_loaded", dict(registry._loaded))
    with pytest.raises(BackendError, match=r"class .*Fast; the entry point must name an instance"):
        normdrop.get_backend("fast")
    with pytest.raises(BackendError, match=r"pass an instance such as .*Fast\(\)"):
        normdrop.functional.layer_norm(np.ones((2, 3)), 3, backend=Fast)
    with pytest.raises(BackendError, match="pass an instance"):
        normdrop.set_backend(Fast)
    with pytest.raises(
        AssertionError, match=r"^backend 'fast': is the class .*Fast; pass an instance"
    ):
        check_backend(Fast)
    normdrop.functional.layer_norm(np.ones((2, 3)), 3, backend=Fast())  # an instance works


def test_a_plugin_name_registered_twice_warns_and_keeps_the_first(monkeypatch):
    """Two installed packages registering one name: the one used used to depend silently
    on the order of the entry points (the last won)."""
    import importlib.metadata

    class Mine(NumpyBackend):
        name = "fast"

    class EntryPoint:
        def __init__(self, value, target):
            self.name, self.group, self.value = "fast", registry.ENTRY_POINT_GROUP, value
            self._target = target

        def load(self):
            return self._target

    first, second = Mine(), Mine()
    points = [EntryPoint("pkg_a:backend", first), EntryPoint("pkg_b:backend", second)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: points)
    monkeypatch.setattr(registry, "_plugins", None)
    monkeypatch.setattr(registry, "_loaded", dict(registry._loaded))
    with pytest.warns(RuntimeWarning, match="'fast' is registered twice.*'pkg_a:backend'"):
        assert normdrop.registered_backends().count("fast") == 1
    assert normdrop.get_backend("fast") is first


# ------------------------------------------------------------------ dask, odd chunkings
def test_dask_layers_on_float16_with_empty_and_single_element_chunks():
    """Chunks of one element, empty chunks, chunks splitting BatchNorm's channels and
    LayerNorm's normalised axes, on float16 data: training (running statistics),
    backward and eval equal the numpy reference in float64 on the same values."""
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((6, 4, 3)) * 3 + 2).astype(np.float16)
    dy = rng.standard_normal((6, 4, 3)).astype(np.float16)
    chunks = ((0, 1, 5), (1, 0, 3), (2, 1))
    xd, dyd = da.from_array(x, chunks=chunks), da.from_array(dy, chunks=chunks)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)

    for make in (
        lambda be, dt: normdrop.BatchNorm1d(4, dtype=dt, backend=be),
        lambda be, dt: normdrop.LayerNorm((4, 3), dtype=dt, backend=be),
    ):
        layer, ref = make("dask", "float32"), make("numpy", "float64")
        y, y_ref = layer(xd), ref(x64)
        grad, grad_ref = layer.backward(dyd), ref.backward(dy64)
        assert isinstance(y, da.Array) and y.dtype == np.float16
        np.testing.assert_allclose(np.asarray(y, np.float64), y_ref, rtol=2e-3, atol=4e-3)
        np.testing.assert_allclose(np.asarray(grad, np.float64), grad_ref, rtol=2e-3, atol=4e-3)
        for key, value in ref.grads.items():
            np.testing.assert_allclose(np.asarray(layer.grads[key]), value, rtol=1e-4, atol=1e-4)
        for key, value in ref.state_dict().items():
            np.testing.assert_allclose(layer.state_dict()[key], value, rtol=1e-6, atol=1e-6)
        layer.eval(), ref.eval()
        np.testing.assert_allclose(
            np.asarray(layer(xd), np.float64), ref(x64), rtol=2e-3, atol=4e-3
        )


# ----------------------------------------------------------- cuda (simulator or GPU)
def _host(a):
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host()
    return a.get() if hasattr(a, "get") else np.asarray(a)


def test_cuda_on_float16_and_strided_device_arrays():
    """float16 numba device arrays, a transposed one and a strided slice of one: the
    same numbers as the numpy reference (dropout bit for bit), the input's dtype out."""
    if "cuda" not in normdrop.available_backends():
        pytest.skip("cuda backend unavailable")
    from numba import cuda

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5)).astype(np.float16)
    bn = normdrop.BatchNorm1d(4, backend="cuda")
    y = bn(cuda.to_device(x))
    ref = normdrop.BatchNorm1d(4, dtype="float64", backend="numpy")
    assert _host(y).dtype == np.float16
    np.testing.assert_allclose(_host(y), ref(x.astype(np.float64)), rtol=2e-3, atol=4e-3)
    np.testing.assert_allclose(_host(bn.running_var), ref.running_var, rtol=1e-6)

    dropped = normdrop.functional.dropout(cuda.to_device(x), 0.3, seed=5, call=2, backend="cuda")
    expected = normdrop.functional.dropout(x, 0.3, seed=5, call=2, backend="numpy")
    np.testing.assert_array_equal(_host(dropped), expected)

    host = rng.standard_normal((6, 5))
    for device, view in (
        (cuda.to_device(host).T, host.T),
        (cuda.to_device(host)[::2], host[::2]),
    ):
        got = normdrop.functional.layer_norm(device, view.shape[-1], backend="cuda")
        want = normdrop.functional.layer_norm(np.ascontiguousarray(view), view.shape[-1])
        np.testing.assert_allclose(_host(got), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("value", "effect"),
    [
        ("nonesuch", "fails: backend must be one of ['numpy', 'numba'"),
        ("numpy", "used by every call that chooses no backend itself"),
    ],
)
def test_info_shows_the_environment_backend_and_whether_it_loads(
    monkeypatch, capsys, value, effect
):
    monkeypatch.setenv("NORMDROP_BACKEND", value)
    assert main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "NORMDROP_BACKEND=" in x)
    assert line.startswith(f"NORMDROP_BACKEND={value}: ") and effect in line
    monkeypatch.delenv("NORMDROP_BACKEND")
    assert main(["info"]) == 0
    assert "NORMDROP_BACKEND" not in capsys.readouterr().out


def test_demo_runs_on_the_backend_that_normdrop_backend_names(monkeypatch, capsys):
    """``NORMDROP_BACKEND=dask normdrop demo`` used to fail: the NumPy data was given to
    the chosen backend, which takes only its own arrays."""
    pytest.importorskip("dask.array")
    monkeypatch.setenv("NORMDROP_BACKEND", "dask")
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "\non the 'dask' backend\n" in out
    assert "After 100 training batches (100 tracked)" in out


def test_bench_times_the_backend_that_normdrop_backend_names(monkeypatch):
    """``NORMDROP_BACKEND=dask normdrop bench`` used to stop with 'does not accept
    numpy.ndarray' before timing anything."""
    pytest.importorskip("dask.array")
    from normdrop.bench.target import Target

    monkeypatch.setenv("NORMDROP_BACKEND", "dask")
    target = Target.named(None)
    assert target.backend.name == "dask" and target.choice is None
    monkeypatch.delenv("NORMDROP_BACKEND")
    assert Target.named(None).backend.name == normdrop.registry._CPU_DEFAULT


def test_bench_plot_size_that_cannot_be_allocated_is_left_out(tmp_path, capsys, monkeypatch):
    """``--plot-sizes 4K,512G``: the sweep ended in a MemoryError traceback at 512G."""
    pytest.importorskip("matplotlib")
    from normdrop.bench import cases

    real = cases.make_input

    def make_input(shape, dtype):
        if np.prod(shape) * np.dtype(dtype).itemsize > 2**20:
            raise MemoryError("Unable to allocate 512 GiB")
        return real(shape, dtype)

    monkeypatch.setattr(cases, "make_input", make_input)
    path = tmp_path / "sweep.png"
    args = [*BENCH, "--plot", str(path), "--plot-sizes", "4K,512G", "--repeat", "1", "--json"]
    assert main([*args, "--budget", "0"]) == 0
    captured = capsys.readouterr()
    assert {p["bytes"] for p in json.loads(captured.out)["points"]} == {4096}
    assert "no memory for the 512 GiB input of LayerNorm forward" in captured.err
    assert path.read_bytes()[:4] == b"\x89PNG"
