"""Every cuda kernel, for every argument-type combination its launchers pass, compiled for the GPU.

The CUDA simulator never compiles a kernel, so this is what catches typing errors
and register spills of the GPU path on machines without a GPU: each entry of the
backend's signature table (``backends/cuda_backend/_signatures.py``, which every
launch in the test suite is checked against) is compiled to PTX with NVVM for
compute capability 8.0 and 9.0 and assembled by ``ptxas -v``, whose register and
spill report must show no spills. Needs the CUDA toolkit's NVVM and ptxas
(``pip install -e ".[cuda-compile]"``, no GPU); without them the test skips,
except where ``NORMDROP_REQUIRE_CUDA_COMPILE=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")

REQUIRED = os.environ.get("NORMDROP_REQUIRE_CUDA_COMPILE") == "1"
ARCHS = ((8, 0), (9, 0))

# Runs in a fresh interpreter: the suite itself runs the backend on the simulator.
_COMPILE = textwrap.dedent(
    """
    import json, os, re, shutil, subprocess, sys, tempfile, types
    from concurrent.futures import ThreadPoolExecutor
    from numba import cuda
    from numba.cuda import types as T

    # Import the backend as on a GPU machine (compiling to PTX needs no driver), before the
    # probe: its runtime makes numba-cuda's target load on NumPy 2.5 too.
    import numba.cuda.dispatcher
    cuda.is_available = lambda: True
    numba.cuda.dispatcher.get_current_device = lambda: types.SimpleNamespace(
        compute_capability=(9, 0)
    )
    sys.modules["cupy"] = types.ModuleType("cupy")
    import importlib, pkgutil
    from normdrop.backends import cuda_backend
    from normdrop.backends.cuda_backend import _signatures

    modules = [
        importlib.import_module(f"{cuda_backend.__name__}.{info.name}")
        for info in pkgutil.iter_modules(cuda_backend.__path__)
    ]

    def probe(a):
        a[0] = 1.0

    try:
        cuda.compile_ptx(probe, (T.float64[::1],), cc=(9, 0))
    except Exception as exc:
        print(json.dumps({"missing": f"NVVM: {exc}"[:300]}))
        sys.exit(0)
    try:
        import nvidia.cuda_nvcc
        ptxas = os.path.join(list(nvidia.cuda_nvcc.__path__)[0], "bin", "ptxas")
    except ImportError:
        ptxas = None
    if not (ptxas and os.access(ptxas, os.X_OK)):
        ptxas = shutil.which("ptxas")
    if ptxas is None:
        print(json.dumps({"missing": "ptxas (nvidia-cuda-nvcc-cu12 wheel or a CUDA toolkit)"}))
        sys.exit(0)


    def numba_type(spec):
        if spec.endswith("d]"):
            name, ndim = spec[:-2].split("[")
            return T.Array(getattr(T, name), int(ndim), "C")
        return T.boolean if spec == "bool" else getattr(T, spec)

    table = _signatures.signatures()
    kernels = {id(k) for _, k, _ in table}
    uncovered, uncached = [], []
    for mod in modules:
        for name, obj in vars(mod).items():
            opts = getattr(obj, "targetoptions", None)
            if opts is None or opts.get("device") or obj.py_func.__module__ != mod.__name__:
                continue
            if id(obj) not in kernels:
                uncovered.append(f"{mod.__name__}.{name}")
            if type(getattr(obj, "_cache", None)).__name__ != "CUDACache":
                uncached.append(f"{mod.__name__}.{name}")

    work = tempfile.mkdtemp()
    jobs = []
    for i, (name, kernel, sig) in enumerate(table):
        argtypes = tuple(numba_type(s) for s in sig)
        for cc in ARCHS:
            ptx, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=cc)
            path = os.path.join(work, f"k{i}_{cc[0]}{cc[1]}.ptx")
            with open(path, "w") as fh:
                fh.write(ptx)
            jobs.append((name, sig, cc, path))

    def assemble(job):
        name, sig, cc, path = job
        arch = f"sm_{cc[0]}{cc[1]}"
        res = subprocess.run(
            [ptxas, "-v", f"-arch={arch}", "-o", path + ".cubin", path],
            capture_output=True, text=True,
        )
        log = res.stdout + res.stderr
        regs = [int(m) for m in re.findall(r"Used (\\d+) registers", log)]
        spills = [int(m) for m in re.findall(r"(\\d+) bytes spill (?:stores|loads)", log)]
        return {
            "kernel": name, "sig": list(sig), "arch": arch, "rc": res.returncode,
            "registers": max(regs, default=-1), "spill_bytes": sum(spills),
            "log": log[-400:] if res.returncode else "",
        }

    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(assemble, jobs))
    print(json.dumps({"results": results, "uncovered": uncovered, "uncached": uncached}))
    """
).replace("ARCHS", repr(ARCHS))


@pytest.fixture(scope="module")
def compiled():
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if "missing" in report:
        message = f"cannot compile CUDA kernels here: no {report['missing']}"
        if REQUIRED:
            pytest.fail(message + " (NORMDROP_REQUIRE_CUDA_COMPILE=1)")
        pytest.skip(message)
    return report


def test_every_kernel_has_signatures_and_the_disk_cache(compiled):
    assert compiled["uncovered"] == [], "kernels missing from _signatures.py"
    assert compiled["uncached"] == [], "kernels without cache=True"


def test_every_signature_compiles_for_sm80_and_sm90_without_spills(compiled):
    from normdrop.backends.cuda_backend import _signatures

    results = compiled["results"]
    assert len(results) == len(_signatures.signatures()) * len(ARCHS)
    failed = [r for r in results if r["rc"] != 0]
    assert failed == [], failed[:3]
    spilled = [r for r in results if r["spill_bytes"]]
    assert spilled == [], spilled[:3]
    assert all(0 < r["registers"] <= 255 for r in results)
    # the report: the most registers each kernel needs, per architecture
    worst: dict[tuple[str, str], int] = {}
    for r in results:
        key = (r["kernel"], r["arch"])
        worst[key] = max(worst.get(key, 0), r["registers"])
    print("\nregisters per thread (most over the kernel's signatures), no spills:")
    for (kernel, arch), regs in sorted(worst.items()):
        print(f"  {kernel:48s} {arch}: {regs}")


def test_the_table_covers_the_layer_paths():
    """The combinations the issue found missing are in the table (layers' float32 parameters,
    float64 gradients of float32 data)."""
    from normdrop.backends.cuda_backend import _signatures

    sigs = {(name, sig) for name, _, sig in _signatures.signatures()}
    f4, f8, v = "float32[2d]", "float64[2d]", "float64[1d]"
    assert (
        "_layernorm._forward_kernel",
        (f4, "float32[1d]", "float32[1d]", "bool", "bool", "float64", f4, v, v),
    ) in sigs
    assert any(n == "_layernorm._backward_kernel" and s[:2] == (f8, f4) for n, s in sigs)
    assert any(
        n == "_channels._partials_kernel" and s[:2] == ("float64[3d]", "float32[3d]")
        for n, s in sigs
    )
