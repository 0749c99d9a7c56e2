"""The numba backend's on-disk cache: kernels compiled in one process and loaded from
the cache in later processes give the same bits and never crash.

A cached single-threaded function that calls a parallel one crashes when loaded
from the cache (numba/numba#8578); the kernels are built so that this cannot
happen (see ``normdrop.backends.numba_backend.jit``). Each test runs fresh
processes with a private temporary ``NUMBA_CACHE_DIR``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from conftest import numba_modules, run_python  # noqa: E402

from normdrop.backends.numba_backend.jit import Kernel, KernelVariants, kernels_in  # noqa: E402

#: Every module of the backend (``kernels_in`` finds the kernels of each).
MODULES = numba_modules()


def _run(code: str, cache: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# ----------------------------------------------------------------------------- the crash
_BATCH_NORM = """
import sys
import numpy as np
import normdrop.functional as F

x = np.random.default_rng(0).standard_normal((64, 32, 48)).astype(np.float32)  # parallel path
w = np.linspace(0.5, 1.5, 32).astype(np.float32) if sys.argv[1] == "weight" else None
rm, rv = np.zeros(32, np.float32), np.ones(32, np.float32)
y = F.batch_norm(x, rm, rv, w, None, training=True, backend="numba")
np.savez(sys.argv[2], y=y, rm=rm, rv=rv)
"""


def test_batch_norm_signatures_in_later_processes_load_from_the_cache(tmp_path):
    """The numba/numba#8578 crash: from a clean cache, BatchNorm with weight, then
    without, then without, each in its own process; the third one crashed."""
    cache = str(tmp_path / "cache")
    results = []
    for i, kind in enumerate(["weight", "none", "none"]):
        path = str(tmp_path / f"{i}.npz")
        proc = _run(_BATCH_NORM, cache, kind, path)
        assert proc.returncode == 0, f"process {i} ({kind}): rc {proc.returncode}\n{proc.stderr}"
        with np.load(path) as saved:
            results.append({k: saved[k] for k in saved.files})
    x = np.random.default_rng(0).standard_normal((64, 32, 48)).astype(np.float32)
    for res, w in zip(results, [np.linspace(0.5, 1.5, 32), None, None], strict=True):
        x64 = x.astype(np.float64)
        mean = x64.mean((0, 2), keepdims=True)
        expected = (x64 - mean) / np.sqrt(x64.var((0, 2), keepdims=True) + 1e-5)
        if w is not None:
            expected = expected * w.astype(np.float32)[:, None]
        np.testing.assert_allclose(res["y"], expected, rtol=2e-6, atol=2e-6)
    for key in ("y", "rm", "rv"):  # compiled afresh in process 1, loaded in process 2
        np.testing.assert_array_equal(results[1][key], results[2][key])


# ----------------------------------------------------------------------------- every kernel
_EVERY_KERNEL = """
import importlib
import sys
import numpy as np
import normdrop
import normdrop.functional as F
from normdrop.backends.numba_backend.jit import kernels_in

NB = normdrop.get_backend("numba")
rng = np.random.default_rng(1)
out = []
# both clones of every kernel in float32; the whole-layer BatchNorm also in float64 and
# with float64 vectors on float32 data (the signatures of the numba#8578 crash)
for shape in ((4, 64, 30), (64, 32, 48)):  # serial and parallel clones
    for dtype, pdtype in ((np.float32, np.float32), (np.float64, np.float64), (np.float32, None)):
        c = shape[1]
        x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        vec = pdtype or np.float64
        for affine in (True, False):
            w = np.linspace(0.5, 1.5, c).astype(vec) if affine else None
            for tracked in (True, False):
                rm = np.zeros(c, vec) if tracked else None
                rv = np.ones(c, vec) if tracked else None
                y, mean, rstd = F.batch_norm_with_stats(
                    x, rm, rv, w, w, training=True, backend="numba")
                out += [y, mean, rstd] + ([rm, rv] if tracked else [])
        if dtype != np.float32 or pdtype is None:
            continue
        w = np.linspace(0.5, 1.5, c).astype(dtype)
        rm, rv = np.zeros(c, dtype), np.ones(c, dtype) * 2
        out.append(F.batch_norm(x, rm, rv, w, w, training=False, backend="numba"))
        dx, dw, db = F.batch_norm_backward(g, x, mean, rstd, w, backend="numba")
        out += [dx, dw, db, F.batch_norm_backward(g, x, mean, rstd, w, training=False)[0]]
        x2, d = x.reshape(-1, shape[2]), shape[2]
        wl = np.linspace(0.5, 1.5, d).astype(dtype)
        y, mean, rstd = F.layer_norm_with_stats(x2, d, wl, wl, backend="numba")
        out += list(F.layer_norm_backward(g.reshape(x2.shape), x2, d, mean, rstd, wl))
        out += list(NB.channel_moments(x)) + list(NB.row_moments(x2))
        y, bits = F.dropout_with_bitmask(x, 0.15, seed=3, call=5, backend="numba")
        out += [y, bits, F.dropout_backward(g, 0.15, bitmask=bits)]
        out.append(F.dropout_mask(shape, 0.15, seed=3, call=5, backend="numba"))
        out.append(NB.philox_words(x.size, 3, 5, 7))
for par in (False, True):  # LayerNorm rows split in segments
    x = rng.standard_normal((2 if par else 1, 70000)).astype(np.float32)
    y, mean, rstd = F.layer_norm_with_stats(x, 70000, backend="numba")
    out += [y, mean, rstd, *F.layer_norm_backward(x, x, 70000, mean, rstd)[:1]]
np.savez(sys.argv[1], *out)

# which kernels this process compiled rather than loaded from the cache (the modules: argv)
mods = [importlib.import_module(name) for name in sys.argv[2:]]
kernels = [k for m in mods for k in kernels_in(m).values()]
misses = sum(sum(d.stats.cache_misses.values()) for k in kernels for d in k)
hits = sum(sum(d.stats.cache_hits.values()) for k in kernels for d in k)
print(misses, hits)
"""


def test_every_kernel_from_the_cache_gives_the_fresh_bits(tmp_path):
    """One process compiles several signatures of every kernel (both clones; float32 and
    float64 data and vectors for BatchNorm, with and without weight, bias and running
    statistics);
    a later process loads every one of them from the cache, without crashing, and gets
    the same bits."""
    cache = str(tmp_path / "cache")
    runs = []
    for i in range(2):
        path = str(tmp_path / f"{i}.npz")
        proc = _run(_EVERY_KERNEL, cache, path, *(m.__name__ for m in MODULES))
        assert proc.returncode == 0, f"process {i}: rc {proc.returncode}\n{proc.stderr}"
        misses, hits = map(int, proc.stdout.split())
        with np.load(path) as saved:
            runs.append([saved[f"arr_{j}"] for j in range(len(saved.files))])
        if i == 0:
            assert misses > 0
        else:
            assert (misses, hits > 0) == (0, True), "the second process compiled kernels"
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- the rule
def _referenced_dispatchers(dispatcher):
    """The compiled functions that ``dispatcher``'s Python source refers to by name."""
    py_func = dispatcher.py_func
    names = set()
    codes = [py_func.__code__]
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if hasattr(c, "co_names"))
    found = py_func.__globals__
    return {name: found[name] for name in names if name in found}


def _dispatchers():
    seen = {}
    for mod in MODULES:
        for name, k in kernels_in(mod).items():
            seen[f"{mod.__name__}.{name}.serial"] = k.serial
            seen[f"{mod.__name__}.{name}.parallel"] = k.parallel
        for name, obj in vars(mod).items():
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                seen[f"{mod.__name__}.{name}"] = obj
    return seen


def test_no_compiled_function_calls_a_kernel_and_every_one_releases_the_gil():
    """Parallel clones are entry points only: no compiled function refers to a kernel
    or a parallel function (numba/numba#8578). Every function releases the GIL."""
    dispatchers = _dispatchers()
    assert len(dispatchers) > 30
    for name, disp in dispatchers.items():
        opts = disp.targetoptions
        assert opts.get("nogil") is True, name
        is_kernel_clone = name.endswith((".serial", ".parallel"))
        parallel = opts.get("parallel", False)
        assert bool(parallel) == name.endswith(".parallel"), name
        if parallel:
            assert not parallel.numpy and not parallel.setitem and parallel.prange, name
        for ref_name, ref in _referenced_dispatchers(disp).items():
            assert not isinstance(ref, Kernel | KernelVariants), f"{name} calls {ref_name}"
            if isinstance(ref, numba.core.registry.CPUDispatcher):
                assert not ref.targetoptions.get("parallel"), f"{name} calls parallel {ref_name}"
        assert is_kernel_clone or not parallel


def test_the_suite_compiles_into_a_private_cache():
    """Each test run has its own kernel cache (tests/conftest.py), so a cache entry broken by
    an earlier run can never fail a whole run: the numba backend caches into that folder."""
    from conftest import TEST_CACHE_DIR

    from normdrop.backends.numba_backend.disk_cache import kernel_cache_folder

    assert os.environ["NUMBA_CACHE_DIR"] == TEST_CACHE_DIR
    folder = os.path.realpath(kernel_cache_folder())
    assert os.path.commonpath([folder, os.path.realpath(TEST_CACHE_DIR)]) == os.path.realpath(
        TEST_CACHE_DIR
    )
    if not os.environ.get("NORMDROP_TEST_CACHE_DIR"):
        assert os.path.basename(TEST_CACHE_DIR).startswith("normdrop-test-cache-")


def test_garbage_collector_paused_only_while_normdrop_compiles(tmp_path):
    """The collector is off during a normdrop compile, back on after it, and a process
    that turned it off itself keeps it off."""
    result = run_python(
        """
        import gc
        import numpy as np
        from numba.core import event
        import normdrop
        import normdrop.backends.numba_backend.jit  # its listener goes first

        seen = []

        class Probe(event.Listener):
            def on_start(self, ev):
                if ev.data["dispatcher"].py_func.__module__.startswith("normdrop."):
                    seen.append(gc.isenabled())

            def on_end(self, ev):
                pass

        event.register("numba:compile", Probe())
        normdrop.functional.layer_norm(np.ones((2, 3), np.float32), 3, backend="numba")
        print(len(seen) > 0, any(seen), gc.isenabled())
        gc.disable()
        normdrop.functional.layer_norm(np.ones((2, 3), np.float64), 3, backend="numba")
        print(gc.isenabled())
        """,
        NUMBA_CACHE_DIR=str(tmp_path),
        NORMDROP_CACHE_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False", "True", "False"]
