"""The public types, checked by mypy: functions and layers return the caller's array type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy.api", reason="mypy (the lint extra) is not installed")

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ROOT / "tests" / "type_checks" / "check_types.py"


def _mypy(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    command += ["--cache-dir", str(cache), str(path)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_public_api_types_pass_mypy(tmp_path: Path) -> None:
    result = _mypy(CHECKS, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_array_type_fails_mypy(tmp_path: Path) -> None:
    # The check above can fail: a float32 array in is not a float64 array out.
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "import numpy as np\n"
        "import numpy.typing as npt\n"
        "from typing_extensions import assert_type\n"
        "from normdrop.functional import layer_norm\n"
        "x: npt.NDArray[np.float32] = np.ones((2, 3), np.float32)\n"
        "assert_type(layer_norm(x, 3), npt.NDArray[np.float64])\n"
    )
    result = _mypy(wrong, tmp_path / "cache")
    assert result.returncode == 1, result.stdout + result.stderr
    # an ndarray of another dtype, not Any (mypy abbreviates the rest)
    assert 'wrong.py:6: error: Expression is of type "ndarray[' in result.stdout
