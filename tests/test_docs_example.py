"""The worked example of the docs (docs/examples/mlp_training.py) trains, and a run
resumed from its mid-training checkpoint ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "examples" / "mlp_training.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("mlp_training", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mlp_training"] = module  # pickling the checkpoint needs an importable module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("mlp_training", None)


@pytest.fixture(scope="module")
def result(example):
    return example.main()


def test_the_model_learns(result):
    history = result["full"]["history"]
    assert history["step"][-1] == 300
    assert np.mean(history["loss"][-3:]) < 0.6 * np.mean(history["loss"][:3])
    assert history["train_acc"][-1] > 0.8 and history["test_acc"][-1] > 0.8
    assert history["test_acc"][0] < 0.6  # it starts near chance (1/3)


def test_resume_from_checkpoint_is_exact(example, result):
    full, resumed = result["full"], result["resumed"]
    assert result["identical"] is True
    assert resumed["history"] == full["history"]
    for (key, a, _), (_, b, _) in zip(
        full["model"].parameters_and_grads(), resumed["model"].parameters_and_grads(), strict=True
    ):
        np.testing.assert_array_equal(a, b, err_msg=key)
    for a, b in zip(full["model"].layers, resumed["model"].layers, strict=True):
        if hasattr(a, "running_mean"):
            np.testing.assert_array_equal(a.running_mean, b.running_mean)
            np.testing.assert_array_equal(a.running_var, b.running_var)
        if hasattr(a, "call_count"):
            assert a.call_count == b.call_count == 300


def test_the_script_runs_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(png)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert "identical parameters: True" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
