"""Shared fixtures: one ``backend`` fixture runs each test body on every backend.

A test receives a :class:`normdrop.protocol.Backend`; it moves NumPy data onto
the backend with ``backend.asarray`` and results back with ``backend.to_numpy``,
and compares them with the ``numpy`` reference backend in float64.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import shutil
import subprocess
import sys
import tempfile
import textwrap

# Before anything imports numba: the cuda backend runs on the GPU when there is one and CuPy is
# installed (the cuda extra), and on the CUDA simulator otherwise.
_GPU = shutil.which("nvidia-smi") is not None and os.path.exists("/dev/nvidia0")
_CUPY = importlib.util.find_spec("cupy") is not None
if "NUMBA_ENABLE_CUDASIM" not in os.environ and not (_GPU and _CUPY):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
# Every test run compiles into a kernel cache of its own, so that a cache entry broken by an
# earlier run (or by a Numba bug such as numba/numba#8578) can never fail a whole run; the
# pytest-xdist workers of a run share the run's cache (the controller makes it, they inherit
# its name), so that each kernel compiles once per run, not once per worker.
# NORMDROP_TEST_CACHE_DIR names a folder to reuse across runs instead (faster, at that risk).
_RUN_CACHE = (
    os.environ.get("NORMDROP_TEST_RUN_CACHE_DIR") if "PYTEST_XDIST_WORKER" in os.environ else None
)
_OWN_CACHE = not (os.environ.get("NORMDROP_TEST_CACHE_DIR") or _RUN_CACHE)
TEST_CACHE_DIR = (
    os.environ.get("NORMDROP_TEST_CACHE_DIR")
    or _RUN_CACHE
    or tempfile.mkdtemp(prefix="normdrop-test-cache-")
)
os.environ["NUMBA_CACHE_DIR"] = os.environ["NORMDROP_TEST_RUN_CACHE_DIR"] = TEST_CACHE_DIR
# Every cuda kernel launch checks its argument types against the table CI compiles.
os.environ.setdefault("NORMDROP_CUDA_CHECK_SIGNATURES", "1")
if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    # The simulator runs each CUDA thread as a Python thread and polls them at every
    # syncthreads while holding the GIL; a short switch interval makes that ~4x faster.
    sys.setswitchinterval(5e-4)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import normdrop  # noqa: E402
from normdrop.errors import BackendError  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    """Remove this run's private kernel cache."""
    if _OWN_CACHE:
        shutil.rmtree(TEST_CACHE_DIR, ignore_errors=True)


def pytest_report_header(config):
    """Say where this run caches kernels, and whether the cuda backend's tests run on a GPU
    or on the CUDA simulator."""
    return [f"kernel cache: {TEST_CACHE_DIR} ({'private to this run' if _OWN_CACHE else 'reused'})",
            _cuda_header()]  # fmt: skip


def _cuda_header() -> str:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        why = "a GPU is here but CuPy is not: pip install -e '.[test,cuda]'" if _GPU else "no GPU"
        return f"cuda backend: CUDA simulator (NUMBA_ENABLE_CUDASIM=1; {why})"
    try:
        status = normdrop.backend_status().get("cuda")
    except Exception as exc:  # noqa: BLE001  (a header must not break the run)
        status = f"{type(exc).__name__}: {exc}"
    if status is None:
        return "cuda backend: real GPU (NUMBA_ENABLE_CUDASIM=0)"
    return f"cuda backend: GPU run requested but not available ({status})"


#: Backends that run every thread in Python (the CUDA simulator): tests keep shapes small.
SLOW_BACKENDS = {"cuda"}


def backend_params():
    """One ``pytest.param`` per registered backend name; unavailable ones skip with the reason."""
    params = []
    for name in normdrop.registered_backends():
        try:
            normdrop.get_backend(name)
            marks = ()
        except BackendError as exc:
            marks = (pytest.mark.skip(reason=f"backend {name!r} unavailable: {exc}"),)
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` (dedented) in a fresh interpreter with ``env`` added to the environment;
    its output is captured as text."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def numba_modules():
    """Every module of the numba backend package, imported: found on disk, so that a new
    kernel module is in each test that goes over them (``jit.kernels_in`` lists its
    kernels)."""
    from normdrop.backends import numba_backend

    return [
        importlib.import_module(f"{numba_backend.__name__}.{info.name}")
        for info in pkgutil.iter_modules(numba_backend.__path__)
    ]


@pytest.fixture(params=backend_params())
def backend(request):
    """Every registered backend; unavailable ones skip with the reason."""
    return normdrop.get_backend(request.param)


#: ``(rtol, atol)`` by oracle, for float64 and float32 results.
_TOLERANCES = {
    # the numpy reference backend: the same float64 arithmetic, in another order
    "reference": {np.float64: (1e-12, 1e-12), np.float32: (2e-6, 2e-6), np.float16: (1e-3, 1e-3)},
    # a float64 formula written out in the test
    "formula": {np.float64: (1e-9, 1e-10), np.float32: (2e-5, 2e-5), np.float16: (1e-3, 1e-3)},
    # PyTorch's own kernels
    "torch": {np.float64: (1e-10, 1e-10), np.float32: (1e-5, 1e-5), np.float16: (1e-3, 1e-3)},
}


def central_differences(f, a, h=1e-6):
    """d f() / d a by central differences (``f`` returns a scalar of the current ``a``),
    perturbing ``a`` in place one element at a time and restoring it."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + h
        plus = f()
        a[i] = keep - h
        minus = f()
        a[i] = keep
        grad[i] = (plus - minus) / (2 * h)
    return grad


def tol(dtype, oracle="formula", factor=1.0):
    """``assert_allclose`` keywords for results of ``dtype`` compared with ``oracle``
    (``"reference"``, ``"formula"`` or ``"torch"``), loosened by ``factor`` for results
    that go through more rounding steps (gradients)."""
    rtol, atol = _TOLERANCES[oracle][np.dtype(dtype).type]
    return {"rtol": rtol * factor, "atol": atol * factor}


@pytest.fixture
def reference():
    """The ``numpy`` reference backend: the oracle."""
    return normdrop.get_backend("numpy")


@pytest.fixture
def rng():
    """A seeded NumPy generator for test data."""
    return np.random.default_rng(12345)


def skip_on_slow_backend(backend, why: str) -> None:
    """Skip a test with many or large calls on the backends of :data:`SLOW_BACKENDS`
    (the CUDA simulator runs every GPU thread in Python)."""
    if backend.name in SLOW_BACKENDS:
        pytest.skip(why)


def torch_tensor(a):
    """A CPU tensor sharing (a C-contiguous copy of) ``a`` (torch must be installed)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(a))


def torch_numpy(t):
    """A tensor's values as a NumPy array (a view of a CPU tensor)."""
    return t.detach().numpy()


def to_numpy(backend, a):
    """Bring a backend array (or None) back to the host."""
    return None if a is None else backend.to_numpy(a)


def host(backend, a):
    """Like :func:`to_numpy`, but host NumPy arrays (CPU layers' parameters) pass through."""
    if a is None or isinstance(a, np.ndarray):
        return a
    return backend.to_numpy(a)


def vec(backend, a):
    """A per-channel/per-feature vector as the backend takes it: host NumPy on CPU backends
    (they share host vectors), a device array elsewhere."""
    if a is None:
        return None
    return np.array(a, copy=True) if backend.device == "cpu" else backend.asarray(np.array(a))


def param_ok(backend, a):
    """Layer parameters and buffers live on the backend's device (host NumPy for CPU ones)."""
    return backend.accepts(a) or (backend.device == "cpu" and isinstance(a, np.ndarray))
