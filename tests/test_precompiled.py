"""Kernels compiled when the wheel is built: the build hook, the content stamp, the seeding.

The end-to-end test runs the build hook (``_build_backend.py``) on one cheap step in a
copy of the package laid out as in a wheel, moves that copy elsewhere with new file
times (as ``pip install`` does), and checks that a fresh process with a fresh cache
compiles nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

numba = pytest.importorskip("numba")

from normdrop import _cache  # noqa: E402
from normdrop.backends.numba_backend import precompiled  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: The cheapest install step: two small kernels.
_STEP = "Dropout float32 small"

_PROBE = textwrap.dedent(
    """
    import json, logging
    compiled = []
    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno == logging.DEBUG and record.getMessage().startswith("compiling "):
                compiled.append(record.getMessage())
    logger = logging.getLogger("normdrop")
    logger.addHandler(Collect())
    logger.setLevel(logging.DEBUG)
    import numpy as np, normdrop
    x = np.random.default_rng(0).standard_normal((8, 16, 12)).astype(np.float32)
    layer = normdrop.Dropout(0.1, seed=0, backend="numba")
    got = layer(x)
    want = normdrop.Dropout(0.1, seed=0, backend="numpy")(x)
    from normdrop.backends.numba_backend.disk_cache import kernel_cache_folder
    print(json.dumps({"compiled": compiled, "equal": bool((got == want).all()),
                      "normdrop": normdrop.__file__, "folder": str(kernel_cache_folder())}))
    """
)


def _build_backend():
    spec = importlib.util.spec_from_file_location("_build_backend", REPO / "_build_backend.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package_copy(site: Path) -> Path:
    """The package as a wheel lays it out (``backends/`` as ``normdrop/backends``) in ``site``."""
    ignore = shutil.ignore_patterns("__pycache__", _cache.PRECOMPILED_FOLDER)
    shutil.copytree(REPO / "normdrop", site / "normdrop", ignore=ignore)
    shutil.copytree(REPO / "backends", site / "normdrop" / "backends", ignore=ignore)
    return site


def _probe(site: Path, **cache_env: str) -> dict:
    skip = {"NUMBA_CACHE_DIR", "NORMDROP_CACHE_DIR", "NORMDROP_BACKEND", "PYTHONPATH"}
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env.update(cache_env, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=env,
        cwd=site,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_build_hook_ships_kernels_that_a_fresh_install_loads_without_compiling(tmp_path):
    build_lib = _package_copy(tmp_path / "build")
    assert _build_backend().precompile(build_lib, (_STEP,))
    shipped = build_lib / _build_backend().PRECOMPILED
    manifest = json.loads((shipped / _cache.MANIFEST_NAME).read_text())
    indexes = sorted(p.name for p in shipped.glob("*.nbi"))
    assert indexes and all(p.name.startswith("dropout.") for p in shipped.glob("*.nb?"))
    assert manifest["kernels"] == len(indexes)
    assert manifest["numba"] == numba.__version__ and manifest["normdrop"] == "0.1.0"
    assert precompiled.mismatch(manifest) is None
    assert not list(build_lib.rglob("__pycache__")), "the compiling process wrote .pyc files"

    # Installed elsewhere, every file with a new modification time, as pip does.
    site = tmp_path / "site"
    shutil.copytree(build_lib, site)
    later = time.time() + 3600
    for path in site.rglob("*.py"):
        os.utime(path, (later, later))

    fresh = _probe(site, NORMDROP_CACHE_DIR=str(tmp_path / "cache"))
    assert fresh["normdrop"].startswith(str(site)) and fresh["equal"]
    assert fresh["compiled"] == [], "the shipped kernels were compiled again"
    seeded = sorted(p.name for p in Path(fresh["folder"]).glob("*.nbi"))
    assert seeded == indexes
    # The same with NUMBA_CACHE_DIR, which names another folder.
    numba_dir = tmp_path / "numba-cache"
    fresh = _probe(site, NUMBA_CACHE_DIR=str(numba_dir), NORMDROP_CACHE_DIR=str(tmp_path / "x"))
    assert Path(fresh["folder"]).parent == numba_dir
    assert fresh["compiled"] == [] and fresh["equal"]


def test_the_build_hook_ships_nothing_when_told_not_to_or_when_compiling_fails(
    tmp_path, monkeypatch, capsys
):
    build_lib = _package_copy(tmp_path / "build")
    backend = _build_backend()
    stale = build_lib / backend.PRECOMPILED
    stale.mkdir()
    (stale / _cache.MANIFEST_NAME).write_text("{}")  # what an earlier build left
    monkeypatch.setenv(backend.SKIP_ENV_VAR, "1")
    assert not backend.precompile(build_lib, (_STEP,))
    assert not stale.exists()
    assert "kernels not precompiled (NORMDROP_NO_PRECOMPILE is set)" in capsys.readouterr().out
    # A compiling process that fails (no Numba, a compile error) leaves no folder either.
    monkeypatch.delenv(backend.SKIP_ENV_VAR)
    monkeypatch.setattr(
        backend, "_COMPILE", "import os, sys; os.makedirs(sys.argv[1]); sys.exit(3)"
    )
    assert not backend.precompile(build_lib, (_STEP,))
    assert not stale.exists()
    assert "kernels not precompiled (exit status 3)" in capsys.readouterr().out
    monkeypatch.setattr(backend, "_COMPILE", "import numba_is_not_installed")
    assert not backend.precompile(build_lib, (_STEP,))
    said = capsys.readouterr().out.splitlines()[-1]
    assert said == (
        "normdrop: kernels not precompiled (ModuleNotFoundError: No module named "
        "'numba_is_not_installed'); they compile on first use"
    )


def test_only_a_wheel_build_requires_numba(monkeypatch):
    backend = _build_backend()
    stub = types.SimpleNamespace(get_requires_for_build_wheel=lambda config_settings=None: ["x"])
    monkeypatch.setattr(backend, "_setuptools", stub)
    monkeypatch.delenv(backend.SKIP_ENV_VAR, raising=False)
    assert backend.get_requires_for_build_wheel() == ["x", *backend.KERNEL_REQUIRES]
    assert any(r.startswith("numba") for r in backend.KERNEL_REQUIRES)
    monkeypatch.setenv(backend.SKIP_ENV_VAR, "1")
    assert backend.get_requires_for_build_wheel() == ["x"]
    # every other hook, the editable install's among them, is setuptools' own
    from setuptools import build_meta

    assert backend.get_requires_for_build_editable is build_meta.get_requires_for_build_editable
    assert backend.build_editable is build_meta.build_editable


def test_a_changed_kernel_source_recompiles_every_kernel_that_may_inline_it(tmp_path):
    # dropout.py's kernel inlines helpers from philox.py and bitmask.py: Numba's own stamp
    # (the defining file only) would load the old machine code after such a helper changed.
    site = _package_copy(tmp_path / "site")
    cache = {"NORMDROP_CACHE_DIR": str(tmp_path / "cache")}
    assert _probe(site, **cache)["compiled"], "a fresh cache compiled nothing"
    later = time.time() + 3600
    for path in site.rglob("*.py"):  # new times, same content: still loaded
        os.utime(path, (later, later))
    assert _probe(site, **cache)["compiled"] == []
    helper = site / "normdrop" / "backends" / "numba_backend" / "philox.py"
    helper.write_text(helper.read_text() + "\n# edited\n")
    again = _probe(site, **cache)
    assert again["equal"]
    assert any("dropout" in message for message in again["compiled"]), again["compiled"]


def _cache_files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_seeding_copies_whole_functions_that_are_missing_and_overwrites_nothing(tmp_path):
    source = _cache_files(
        tmp_path / "shipped",
        {
            "m.a-1.py311.nbi": "a index",
            "m.a-1.py311.1.nbc": "a data",
            "m.b-9.py311.nbi": "b index",
            "m.b-9.py311.1.nbc": "b data",
            "m.c-5.py311.nbi": "c index",
            "m.c-5.py311.1.nbc": "c data",
            "m.c-5.py311.2.nbc": "c data 2",
        },
    )
    target = _cache_files(
        tmp_path / "cache",
        {"m.b-9.py311.nbi": "user's b index", "m.c-5.py311.2.nbc": "a stray data file"},
    )
    assert _cache.seed(source, target) == 1
    found = {p.name: p.read_text() for p in target.iterdir()}
    assert found == {
        "m.a-1.py311.nbi": "a index",
        "m.a-1.py311.1.nbc": "a data",
        "m.b-9.py311.nbi": "user's b index",
        "m.c-5.py311.2.nbc": "a stray data file",
    }
    assert _cache.seed(source, target) == 0  # a second process finds them


def test_seeding_needs_a_manifest_for_this_numba_python_and_cpu(tmp_path, monkeypatch):
    shipped = _cache_files(tmp_path / "shipped", {"m.a-1.py311.nbi": "i", "m.a-1.py311.1.nbc": "d"})
    monkeypatch.setattr(precompiled, "FOLDER", shipped)
    target = tmp_path / "cache"
    target.mkdir()
    assert precompiled.seed(target) == 0  # no manifest
    here = precompiled.current_manifest()
    for key, other in (("numba", "0.1.0"), ("python", "cpython-29"), ("target", ["x", "cpu", ""])):
        (shipped / _cache.MANIFEST_NAME).write_text(json.dumps({**here, key: other}))
        assert precompiled.seed(target) == 0
        assert key in (precompiled.mismatch({**here, key: other}) or "")
    assert not list(target.iterdir())
    (shipped / _cache.MANIFEST_NAME).write_text(json.dumps(here))
    assert precompiled.seed(target) == 1
    assert sorted(p.name for p in target.iterdir()) == ["m.a-1.py311.1.nbc", "m.a-1.py311.nbi"]


def test_info_says_whether_precompiled_kernels_are_shipped(tmp_path, monkeypatch):
    from normdrop import cache_command

    monkeypatch.setattr(_cache, "precompiled_folder", lambda: None)
    assert cache_command.describe_precompiled().startswith("none shipped")
    (tmp_path / _cache.MANIFEST_NAME).write_text(
        json.dumps({**precompiled.current_manifest(), "kernels": 7})
    )
    monkeypatch.setattr(_cache, "precompiled_folder", lambda: tmp_path)
    line = cache_command.describe_precompiled()
    assert line.startswith(f"7 shipped (numba {numba.__version__}") and "copied into" in line
    (tmp_path / _cache.MANIFEST_NAME).write_text(json.dumps({"numba": "0.1.0", "kernels": 7}))
    assert "not used: built for normdrop None" in cache_command.describe_precompiled()


def test_build_py_precompiles_for_a_wheel_but_not_for_an_editable_install(monkeypatch, tmp_path):
    from setuptools.command.build_py import build_py
    from setuptools.dist import Distribution

    backend = _build_backend()
    calls = []
    monkeypatch.setattr(build_py, "run", lambda self: None)  # copying the sources: not tested
    monkeypatch.setattr(backend, "precompile", calls.append)
    for editable in (True, False):
        command = backend.BuildPy(Distribution())
        command.build_lib, command.editable_mode = str(tmp_path), editable
        command.run()
    assert calls == [tmp_path]
