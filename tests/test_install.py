"""A built wheel, installed non-editable in a fresh virtual environment.

Runs the numba backend from it, uninstalls it (nothing may be left in site-packages),
installs a newer build, and imports the source tree from the repository root while
the wheel is installed. The environment reuses this interpreter's NumPy and Numba
(through a ``.pth`` file) and installs with ``--no-deps --no-index``: no network.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_PROBE = textwrap.dedent(
    """
    import json, numpy as np, normdrop
    from normdrop.functional import dropout_mask
    layer = normdrop.BatchNorm1d(3)  # resolves the default (numba) backend
    mask = dropout_mask(40, 0.5, seed=1, backend="numba")
    from normdrop.backends.numba_backend.disk_cache import kernel_cache_folder
    print(json.dumps({
        "file": normdrop.__file__, "backends": list(normdrop.backends.__path__),
        "version": normdrop.__version__, "backend": layer.device,
        "mask": bool((mask == dropout_mask(40, 0.5, seed=1, backend="numpy")).all()),
        "folder": str(kernel_cache_folder()),
    }))
    """
)

#: Distributions the wheel needs at run time, shared from this interpreter.
_SHARED = ("numpy", "numba", "llvmlite")


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert out.returncode == 0, f"{args}\n{out.stdout}\n{out.stderr}"
    return out


def _build_wheel(source: Path, dest: Path, isolated: bool) -> Path:
    """Build a wheel of ``source``; ``isolated`` fetches setuptools from the package index."""
    options = [] if isolated else ["--no-build-isolation", "--no-index"]
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        *options,
        "-w",
        str(dest),
        str(source),
        # the kernels a wheel build compiles are tested in test_precompiled.py; not again here
        env={**os.environ, "NORMDROP_NO_PRECOMPILE": "1"},
    )
    (wheel,) = dest.glob("normdrop-*.whl")
    return wheel


def _setuptools_is_recent() -> bool:
    """Whether this environment's setuptools meets the build requirement (77)."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    return int(version.split(".")[0]) >= 77


@pytest.fixture(scope="module")
def isolated() -> bool:
    """Build in pip's isolated environment when setuptools here is too old to build normdrop."""
    return not _setuptools_is_recent()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, isolated) -> Path:
    """A wheel of this checkout."""
    try:
        return _build_wheel(REPO, tmp_path_factory.mktemp("dist"), isolated)
    except AssertionError as exc:
        if not isolated:
            raise
        pytest.skip(f"setuptools here is older than 77 and pip could not fetch it: {exc}")


class Venv:
    """A virtual environment without pip, driven by this interpreter's pip."""

    def __init__(self, path: Path, shared_from: Path) -> None:
        _run(sys.executable, "-m", "venv", "--without-pip", str(path))
        self.python = path / ("Scripts" if os.name == "nt" else "bin") / "python"
        purelib = _run(
            str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        )
        self.site = Path(purelib.stdout.strip())
        # NumPy, Numba and llvmlite (with their metadata) from this interpreter, nothing else.
        shared_from.mkdir()
        here = Path(sysconfig.get_paths()["purelib"])
        for entry in here.iterdir():
            name = entry.name.split("-")[0].split(".")[0].lower()
            if name in _SHARED:
                (shared_from / entry.name).symlink_to(entry)
        (self.site / "_normdrop_test_deps.pth").write_text(f"{shared_from}\n")

    def pip(self, *args: str) -> subprocess.CompletedProcess:
        return _run(sys.executable, "-m", "pip", "--python", str(self.python), *args)

    def probe(self, env, cwd) -> dict:
        out = _run(str(self.python), "-c", _PROBE, env=env, cwd=cwd)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.site.iterdir() if p.name.lower().startswith("normdrop"))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The environment without cache settings but one cache folder for the whole module."""
    skip = {"NUMBA_CACHE_DIR", "NORMDROP_CACHE_DIR", "NORMDROP_BACKEND", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env["NORMDROP_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    return env


def test_uninstall_leaves_nothing_and_a_newer_build_installs(wheel, isolated, env, tmp_path):
    venv = Venv(tmp_path / "venv", tmp_path / "shared")
    venv.pip("install", "-q", "--no-deps", "--no-index", str(wheel))
    result = venv.probe(env, cwd=tmp_path)
    assert result["file"].startswith(str(venv.site)) and result["mask"]
    assert Path(result["folder"]).is_relative_to(env["NORMDROP_CACHE_DIR"])

    venv.pip("uninstall", "-q", "-y", "normdrop")
    assert venv.leftovers() == [], "pip uninstall left files behind"

    # A newer build of the same sources installs and runs, with its own cache folder.
    source = tmp_path / "newer"
    for part in ("normdrop", "backends"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "_build_backend.py"):
        shutil.copy(REPO / name, source / name)
    for file, pattern in (
        (source / "pyproject.toml", r'^version = "[^"]+"'),
        (source / "normdrop" / "__init__.py", r'^__version__ = "[^"]+"'),
    ):
        text = file.read_text()
        new = re.sub(pattern, lambda m: m.group(0).split("=")[0] + '= "99.0"', text, flags=re.M)
        assert new != text
        file.write_text(new)
    newer = _build_wheel(source, tmp_path / "dist-newer", isolated)
    venv.pip("install", "-q", "--no-deps", "--no-index", str(wheel))
    venv.pip("install", "-q", "--no-deps", "--no-index", str(newer))
    result = venv.probe(env, cwd=tmp_path)
    assert result["version"] == "99.0" and result["mask"]
    assert "normdrop-99.0-" in result["folder"]
    venv.pip("uninstall", "-q", "-y", "normdrop")
    assert venv.leftovers() == []


def test_python_started_in_the_repository_root_imports_the_source_tree(wheel, env, tmp_path):
    venv = Venv(tmp_path / "venv", tmp_path / "shared")
    venv.pip("install", "-q", "--no-deps", "--no-index", str(wheel))
    result = venv.probe(env, cwd=REPO)
    assert result["file"] == str(REPO / "normdrop" / "__init__.py")
    assert result["backends"] == [str(REPO / "backends")]
    assert result["backend"] == "cpu" and result["mask"]
