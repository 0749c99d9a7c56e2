"""The third-party backend of the docs (docs/examples/plugin_backend.py), which implements
only the required members of the protocol: it passes ``check_backend``, registers through
the ``normdrop.backends`` entry-point group, and runs every layer like the reference."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import tol

import normdrop
from normdrop.capabilities import OPTIONAL_MEMBERS
from normdrop.protocol import REQUIRED_MEMBERS
from normdrop.testing import check_backend

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "examples" / "plugin_backend.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("plugin_backend", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.backend


def test_it_has_only_the_required_members(example):
    public = {k for k in [*vars(type(example)), *vars(example)] if not k.startswith("_")}
    assert public == set(REQUIRED_MEMBERS)
    assert not any(hasattr(example, m) for m in OPTIONAL_MEMBERS)


def test_it_passes_check_backend(example):
    check_backend(example)


def _run_layers(be):
    """A forward and backward pass of every layer on ``be``; every result, on the host."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6))
    g = rng.standard_normal(x.shape)
    results = []
    for layer in (
        normdrop.BatchNorm1d(6, dtype="float64", backend=be),
        normdrop.LayerNorm(6, dtype="float64", backend=be),
        normdrop.Dropout(0.3, seed=5, backend=be),
        normdrop.DropoutAddLayerNorm(6, p=0.3, seed=5, dtype="float64", backend=be),
    ):
        results.append(layer(x))
        results.append(layer.backward(g))
        layer.eval()
        results.append(layer(x))
    return [np.asarray(r[0] if isinstance(r, tuple) else r) for r in results]


def test_layers_run_on_it_like_on_the_reference(example):
    for got, expected in zip(_run_layers(example), _run_layers("numpy"), strict=True):
        np.testing.assert_allclose(got, expected, **tol(np.float64, "reference", factor=10))


def test_it_registers_through_the_entry_point_group(tmp_path):
    """Installed as the docs say (a package and an entry point), a fresh process finds it
    by name among the registered backends and uses it."""
    package = tmp_path / "normdrop_example"
    package.mkdir()
    (package / "__init__.py").write_text(EXAMPLE.read_text())
    info = tmp_path / "normdrop_example-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: normdrop-example\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[normdrop.backends]\nexample = normdrop_example:backend\n"
    )
    code = textwrap.dedent(
        """
        import numpy as np
        import normdrop
        from normdrop.testing import check_backend

        assert "example" in normdrop.registered_backends(), normdrop.registered_backends()
        check_backend("example")
        x = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
        with normdrop.use_backend("example"):
            y = normdrop.LayerNorm(3, dtype="float64")(x)
        np.testing.assert_allclose(y, normdrop.LayerNorm(3, dtype="float64", backend="numpy")(x))
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
