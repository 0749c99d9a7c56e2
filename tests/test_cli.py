"""The ``normdrop`` command line: ``cache``, ``warmup``, ``info`` and what ``demo`` reports."""

from __future__ import annotations

import io
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from normdrop import _cache, warmup
from normdrop._progress import CompileProgress, TextProgress
from normdrop.cli import main


@pytest.fixture
def cache_root(monkeypatch, tmp_path):
    """NORMDROP_CACHE_DIR at a fresh folder, with NUMBA_CACHE_DIR unset."""
    root = tmp_path / "root"
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("NORMDROP_CACHE_DIR", str(root))
    return root


def _fill(folder: Path, name: str, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"x" * size)


def test_cache_info_shows_the_folder_and_size_and_clear_deletes_only_kernel_folders(
    cache_root, capsys
):
    current = cache_root / _cache.version_key()
    old = cache_root / "normdrop-0.0.1-py39-numba0.59.0"
    _fill(current, "a.nbi", 100)
    _fill(current, "a.1.nbc", 924)
    _fill(old, "b.nbi", 10)
    _fill(cache_root, "not-ours.txt", 5)

    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"kernel cache: {current}" in out
    assert "NORMDROP_CACHE_DIR is set" in out
    assert "2 files, 1.0 KiB" in out
    assert "other version: normdrop-0.0.1-py39-numba0.59.0" in out

    assert main(["cache", "clear"]) == 0
    assert f"removed 3 files (1.0 KiB) from {cache_root}" in capsys.readouterr().out
    assert sorted(p.name for p in cache_root.iterdir()) == ["not-ours.txt"]

    assert main(["cache", "info"]) == 0
    assert "0 files, 0 bytes" in capsys.readouterr().out
    assert not current.exists(), "cache info must not create the folder"


def test_cache_commands_follow_numba_cache_dir(monkeypatch, tmp_path, capsys):
    numba_dir = tmp_path / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(numba_dir))
    monkeypatch.setenv("NORMDROP_CACHE_DIR", str(tmp_path / "unused"))
    _fill(numba_dir / "someone_elses_code", "x.nbi", 3)
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert f"kernel cache: {numba_dir}{os.sep}numba_backend_" in out
    assert "NUMBA_CACHE_DIR is set" in out
    folder = Path(out.split("kernel cache: ")[1].splitlines()[0])
    _fill(folder, "k.nbi", 7)
    assert main(["cache", "clear"]) == 0
    assert "removed 1 files (7 bytes)" in capsys.readouterr().out
    assert not folder.exists()
    assert (numba_dir / "someone_elses_code" / "x.nbi").exists()


def test_info_shows_the_kernel_cache(cache_root, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"kernel cache: {cache_root / _cache.version_key()} (NORMDROP_CACHE_DIR is set" in out


def test_warmup_covers_every_layer_dtype_and_both_kernel_paths():
    from normdrop.backends.numba_backend.jit import PARALLEL_MIN_SIZE

    found = warmup.steps()
    labels = {s.label for s in found}
    for layer in ("BatchNorm1d", "LayerNorm", "Dropout"):
        for dtype in ("float32", "float64"):
            for size in ("small", "large"):
                assert f"{layer} {dtype} {size}" in labels
    for step in found:
        elements = math.prod(step.shape)
        if "small" in step.label:
            assert elements < PARALLEL_MIN_SIZE, step
        else:
            assert elements >= PARALLEL_MIN_SIZE, step


def test_warmup_runs_each_step_with_progress_and_says_where_it_cached(monkeypatch, capsys):
    (step,) = [s for s in warmup.steps() if s.label == "Dropout float32 small"]
    ran = []
    monkeypatch.setattr(warmup, "steps", lambda: [step])
    monkeypatch.setattr(step.__class__, "run", lambda self: ran.append(self.label))
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the plain progress display
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert main(["warmup"]) == 0
    captured = capsys.readouterr()
    assert ran == ["Dropout float32 small"]
    assert "normdrop warmup: [1/1] Dropout float32 small" in captured.err
    assert "cached in " in captured.out


def test_warmup_fails_when_nothing_can_be_cached(monkeypatch, capsys):
    from normdrop.backends.numba_backend import disk_cache

    monkeypatch.setattr(disk_cache, "kernel_cache_folder", lambda: None)
    monkeypatch.setattr(warmup, "steps", lambda: [])
    assert main(["warmup"]) == 1
    assert "not saved" in capsys.readouterr().out


def test_commands_leave_the_library_logger_as_they_found_it(cache_root, capsys):
    logger = logging.getLogger("normdrop")
    before = (list(logger.handlers), logger.level)
    main(["cache", "info"])
    assert (list(logger.handlers), logger.level) == before


def test_text_progress_writes_a_line_per_step_when_not_a_terminal():
    out = io.StringIO()
    bar = TextProgress(2, "job", file=out)
    bar.set_postfix_str("first")
    bar.update()
    bar.set_postfix_str("second")
    bar.update()
    bar.close()
    assert out.getvalue() == "job: [1/2] first\njob: [2/2] second\n"


def test_compile_progress_sums_up_on_close(capsys):
    progress = CompileProgress()
    progress.close()
    assert capsys.readouterr().err == ""  # nothing compiled: nothing to say
    progress.started("a")
    progress.finished("a", 0.5)
    progress.finished("b", 0.5)
    progress.close()
    assert capsys.readouterr().err.startswith("normdrop: compiled 2 kernels in ")


def test_demo_says_it_compiles_then_reuses_the_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"NUMBA_CACHE_DIR", "NORMDROP_BACKEND"}}
    env["NORMDROP_CACHE_DIR"] = str(tmp_path / "cache")

    def demo():
        return subprocess.run(
            [sys.executable, "-m", "normdrop", "demo"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=True,
        )

    cold = demo()
    assert cold.stdout.startswith("normdrop demo: ")
    assert "normdrop: compiling Numba kernels on first use" in cold.stderr
    assert str(tmp_path / "cache") in cold.stderr
    assert "normdrop: compiled " in cold.stderr
    warm = demo()
    assert warm.stdout == cold.stdout
    assert "compil" not in warm.stderr


def test_compile_progress_on_a_terminal_erases_its_line_when_compilation_ends(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    progress = CompileProgress()
    progress.started("kernel")
    progress.started("helper")  # compiled as part of the kernel
    progress.finished("helper", 0.1)
    assert (
        term.getvalue()
        .rpartition("\r\033[K")[2]
        .startswith("normdrop: compiled helper (compiled 1 kernels in ")
    )
    progress.finished("kernel", 0.2)
    assert term.getvalue().endswith("\r\033[K"), "the live line must be erased"
