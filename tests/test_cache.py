"""Where the numba backend caches its kernels: per user and version, never in the package.

Each test runs Python in a subprocess, because the cache folder is decided once per
process. When the suite runs as root, which ignores file modes, the subprocesses that
need read-only folders run without the capabilities that let root write anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import normdrop
from normdrop import _cache

REPO = Path(__file__).resolve().parents[1]

#: Two masks on the numba backend (two signatures of its cheapest kernels) and the reference.
_PROBE = textwrap.dedent(
    """
    import json, logging, warnings
    messages = []
    class Collect(logging.Handler):
        def emit(self, record):
            messages.append((record.levelno, record.getMessage()))
    logger = logging.getLogger("normdrop")
    logger.addHandler(Collect())
    logger.setLevel(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import normdrop
        from normdrop.functional import dropout_mask
        got = [dropout_mask(n, 0.5, seed=1, backend="numba") for n in (32, 40)]
        want = [dropout_mask(n, 0.5, seed=1, backend="numpy") for n in (32, 40)]
    import normdrop.backends.numba_backend as nb
    from normdrop.backends.numba_backend.disk_cache import kernel_cache_folder
    folder = kernel_cache_folder()
    print(json.dumps({
        "equal": all(bool((g == w).all()) for g, w in zip(got, want)),
        "compiled": [m for level, m in messages if level == logging.DEBUG
                     and m.startswith("compiling ")],
        "notices": [m for level, m in messages if level == logging.INFO],
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
        "folder": None if folder is None else str(folder),
        "package": nb.__path__[0],
        "version": normdrop.__version__,
        "normdrop": normdrop.__file__,
    }))
    """
)

_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
#: Root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: file modes apply to it again.
_UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment minus every cache setting, with ``home`` as HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "NUMBA_CACHE_DIR",
            "NORMDROP_CACHE_DIR",
            "XDG_CACHE_HOME",
            "NUMBA_CACHE_LOCATOR_CLASSES",
            "NORMDROP_BACKEND",
        }
    }
    env["HOME"] = str(home)
    env.update(extra)
    return env


def _probe(env, python=sys.executable, cwd=None, unprivileged=False):
    """Run the probe; with ``unprivileged``, so that file modes apply even to root."""
    prefix = []
    if unprivileged and _AS_ROOT:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder read-only")
        prefix = _UNPRIVILEGED
    out = subprocess.run(
        [*prefix, python, "-c", _PROBE],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or tempfile.gettempdir(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _open_dir(path: Path, mode: int = 0o755) -> Path:
    """Make the folder ``path`` with permissions ``mode``."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def _kernel_files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.suffix in {".nbi", ".nbc"}}


def test_kernels_go_to_the_user_cache_folder_and_a_second_process_loads_them(tmp_path):
    home = _open_dir(tmp_path / "home")
    package = Path(normdrop.__file__).parent
    package_kernels = _kernel_files(package.parent / "backends") | _kernel_files(package)
    env = _clean_env(home)

    first = _probe(env)
    assert first["equal"]
    expected = home / ".cache" / "normdrop" / _cache.version_key()
    assert first["folder"] == str(expected)
    assert first["compiled"], "a fresh cache must compile"
    assert len(first["notices"]) == 1 and "compiling Numba kernels" in first["notices"][0]
    assert _kernel_files(expected), "no index or data files in the cache folder"
    # nothing written next to the kernels' sources
    installed = Path(first["package"])
    assert not _kernel_files(installed) - package_kernels
    assert not Path(first["folder"]).is_relative_to(installed.parent.parent)

    second = _probe(env)
    assert second["equal"]
    assert second["compiled"] == [] and second["notices"] == [], "the cache was not reused"


def test_xdg_cache_home_and_normdrop_cache_dir_move_the_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("NORMDROP_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert _cache.cache_root() == tmp_path / "xdg" / "normdrop"
        monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # invalid by the spec: ignored
        assert _cache.cache_root() == tmp_path / "home" / ".cache" / "normdrop"
    monkeypatch.setenv("NORMDROP_CACHE_DIR", str(tmp_path / "mine"))
    assert _cache.cache_root() == tmp_path / "mine"
    key = _cache.version_key()
    assert key.startswith(f"normdrop-{normdrop.__version__}-py{sys.version_info[0]}")
    assert _cache.kernel_cache_dir() == tmp_path / "mine" / key


def test_numba_cache_dir_wins_over_normdrop_cache_dir(tmp_path):
    numba_dir = _open_dir(tmp_path / "numba")
    env = _clean_env(
        _open_dir(tmp_path / "home"),
        NUMBA_CACHE_DIR=str(numba_dir),
        NORMDROP_CACHE_DIR=str(tmp_path / "normdrop"),
    )
    result = _probe(env)
    assert result["equal"]
    assert Path(result["folder"]).parent == numba_dir
    assert _kernel_files(numba_dir)
    assert not (tmp_path / "normdrop").exists()


def test_a_read_only_package_folder_works(tmp_path):
    # A copy of the package laid out as installed, with no write permission anywhere in it.
    site = tmp_path / "site"
    shutil.copytree(
        REPO / "normdrop", site / "normdrop", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(
        REPO / "backends",
        site / "normdrop" / "backends",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for path in [site, *site.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    home = _open_dir(tmp_path / "home")
    env = _clean_env(home, PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")

    result = _probe(env, unprivileged=True)
    assert result["normdrop"].startswith(str(site))
    assert result["equal"] and result["warnings"] == []
    assert Path(result["folder"]).is_relative_to(home)
    assert _kernel_files(Path(result["folder"]))
    assert not _kernel_files(site)


def test_no_writable_cache_folder_warns_once_and_still_computes(tmp_path):
    home = _open_dir(tmp_path / "home", 0o555)  # a read-only home, no override
    package = Path(normdrop.__file__).parent.parent
    before = _kernel_files(package)
    result = _probe(_clean_env(home), unprivileged=True)
    assert result["equal"]
    assert result["folder"] is None
    assert len(result["warnings"]) == 1, result["warnings"]
    assert "NORMDROP_CACHE_DIR" in result["warnings"][0]
    assert result["compiled"] and "not cached on disk" in result["notices"][0]
    assert not list(home.iterdir())
    assert _kernel_files(package) == before
