"""The ``normdrop`` command line: ``info`` tells a missing package from a missing GPU,
``demo`` runs on every available backend."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import run_python

import normdrop
from normdrop import registry
from normdrop.cli import main
from normdrop.errors import BackendNotInstalledError


def test_info_lists_every_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in registry.registered_backends():
        assert f"  {name} " in out
    assert "numpy    available" in out


def test_installed_backend_without_its_device_is_not_called_uninstalled(monkeypatch):
    """A backend whose packages import but whose hardware is missing raises ImportError
    itself (no ModuleNotFoundError behind it): say so, and do not ask for a reinstall."""
    monkeypatch.setattr(registry, "_loaded", dict(registry._loaded))
    fake = type(sys)("normdrop_test_no_device")

    def refuse(name):
        raise ImportError("no CUDA GPU found; use the CUDA simulator: NUMBA_ENABLE_CUDASIM=1")

    fake.__getattr__ = refuse
    monkeypatch.setitem(sys.modules, "normdrop_test_no_device", fake)
    monkeypatch.setitem(registry._BUILTINS, "gpuish", ("normdrop_test_no_device", "gpuish"))
    with pytest.raises(BackendNotInstalledError) as info:
        normdrop.get_backend("gpuish")
    message = str(info.value)
    assert "installed but cannot run here" in message
    assert "NUMBA_ENABLE_CUDASIM=1" in message
    assert "pip install" not in message


def test_info_without_gpu_says_cuda_is_installed():
    pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")
    result = run_python(
        """
        import numba.cuda
        if numba.cuda.is_available():
            print("HAS-GPU")
        else:
            from normdrop.cli import main
            main(["info"])
        """,
        NUMBA_ENABLE_CUDASIM="0",
    )
    assert result.returncode == 0, result.stderr
    if "HAS-GPU" in result.stdout:
        pytest.skip("this machine has a GPU")
    cuda_line = next(line for line in result.stdout.splitlines() if line.startswith("  cuda "))
    assert "installed but cannot run here" in cuda_line
    assert "no CUDA GPU" in cuda_line and "NUMBA_ENABLE_CUDASIM=1" in cuda_line
    assert "normdrop[cuda]" not in cuda_line


def test_info_names_the_extra_when_a_package_is_missing():
    result = run_python(
        """
        import sys
        sys.modules["numba_cuda"] = None  # as if numba-cuda were not installed
        from normdrop.cli import main
        main(["info"])
        """
    )
    assert result.returncode == 0, result.stderr
    cuda_line = next(line for line in result.stdout.splitlines() if line.startswith("  cuda "))
    assert "is not installed" in cuda_line and "pip install 'normdrop[cuda]'" in cuda_line


def test_unknown_environment_backend_names_the_variable():
    result = run_python(
        "from normdrop.cli import main; raise SystemExit(main(['demo']))",
        NORMDROP_BACKEND="nonesuch",
    )
    assert result.returncode == 2
    assert "NORMDROP_BACKEND" in result.stderr and "'nonesuch'" in result.stderr


@pytest.mark.parametrize("name", registry.registered_backends())
def test_demo_runs_on_every_available_backend(name, capsys):
    if name not in normdrop.available_backends():
        pytest.skip(f"backend {name!r} unavailable")
    if name == "cuda" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("101 BatchNorm batches take minutes on the CUDA simulator")
    assert main(["demo", "--backend", name]) == 0
    out = capsys.readouterr().out
    assert f"\non the {name!r} backend\n" in out
    assert "after BatchNorm1d      mean     0.000   std     1.000" in out
    assert "After 100 training batches (100 tracked)" in out
