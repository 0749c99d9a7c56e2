"""``normdrop bench --backend cuda``'s GPU module, run on the simulator with a host clock.

On a GPU the module times with CUDA events and CuPy; here the same code runs with
NumPy and a fake timer, which checks the table it builds and that every plain
array-module peer computes the math of its case (the reference backend's numbers).
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest

import normdrop
from normdrop import bench
from normdrop import functional as F
from normdrop.bench import cuda as bench_cuda
from normdrop.errors import BackendError

try:
    CUDA = normdrop.get_backend("cuda")
except BackendError as exc:
    pytest.skip(f"cuda backend unavailable: {exc}", allow_module_level=True)


def _tiny(case):
    shape = (6, 3, 4) if len(case.shape) == 3 else (5, 8)
    return dataclasses.replace(case, shape=shape)


def test_gpu_present_only_on_a_real_gpu():
    assert bench_cuda.gpu_present() == (not CUDA.simulator)


@pytest.mark.skipif(not CUDA.simulator, reason="the fake-clock run uses NumPy arrays")
def test_every_case_gets_a_row_with_its_peers():
    calls = []

    def timer(fn, reps):
        fn()
        calls.append(reps)
        return 1e-3

    cases = [_tiny(c) for c in bench.CASES]
    rows = bench_cuda.time_cases(cases, np.dtype(np.float32), timer, np, reps=2)
    assert [r["case"] for r in rows] == [c.name for c in bench.CASES]
    for row, case in zip(rows, cases, strict=True):
        assert row["dev_us"] == pytest.approx(1e3) and row["copy_share"] == pytest.approx(1)
        nbytes = case.passes * np.prod(case.shape) * 4
        assert row["mb"] == pytest.approx(nbytes / 1e6)
        assert row["cupy_us"] == pytest.approx(1e3) and row["torch_us"] is None
        assert row["host_us"] > 0
        # the keys the CPU report's rows have too
        assert row["dtype"] == "float32" and row["bytes"] == nbytes and row["errors"] == []
        assert row["normdrop_s"] == pytest.approx(1e-3) and row["torch_s"] is None
    table = bench_cuda.format_rows(rows)
    assert "LayerNorm backward" in table and "%copy" in table


def test_the_peers_compute_the_cases_math(rng):
    x = rng.standard_normal((6, 3, 4))
    p, eps = bench.DROPOUT_P, bench.EPS
    fwd = bench_cuda.peers("BatchNorm1d train forward", x, np, p, eps)["cupy"]()
    np.testing.assert_allclose(fwd, F.batch_norm(x, training=True, eps=eps), atol=1e-12)
    ev = bench_cuda.peers("BatchNorm1d eval forward", x, np, p, eps)["cupy"]()
    np.testing.assert_allclose(ev, x / np.sqrt(1 + eps), atol=1e-12)
    bwd = bench_cuda.peers("BatchNorm1d backward", x, np, p, eps)["cupy"]()
    dy = np.random.default_rng(1).standard_normal(x.shape)
    _, mean, rstd = F.batch_norm_with_stats(x, training=True, eps=eps)
    expected = F.batch_norm_backward(dy, x, mean, rstd, np.ones(3))[0]
    np.testing.assert_allclose(bwd, expected, atol=1e-12)
    z = x.reshape(6, 12)
    ln = bench_cuda.peers("LayerNorm forward", z, np, p, eps)["cupy"]()
    np.testing.assert_allclose(ln, F.layer_norm(z, 12, eps=eps), atol=1e-12)
    dx, dw, db = bench_cuda.peers("LayerNorm backward", z, np, p, eps)["cupy"]()
    dz = np.random.default_rng(1).standard_normal(z.shape)
    _, mean, rstd = F.layer_norm_with_stats(z, 12, eps=eps)
    e_dx, e_dw, e_db = F.layer_norm_backward(dz, z, 12, mean, rstd, np.ones(12))
    np.testing.assert_allclose(dx, e_dx, atol=1e-12)
    np.testing.assert_allclose(dw, e_dw, atol=1e-12)
    np.testing.assert_allclose(db, e_db, atol=1e-12)
    y = bench_cuda.peers("Dropout p=0.15 forward", z, np, p, eps)["cupy"]()
    kept = y != 0
    np.testing.assert_allclose(y[kept], z[kept] / (1 - p))
    assert bench_cuda.peers("something else", z, np, p, eps) == {}


def test_bench_cli_hands_cuda_to_the_gpu_module_only_on_a_gpu(monkeypatch):
    seen = []
    monkeypatch.setattr(bench_cuda, "gpu_present", lambda: True)
    monkeypatch.setattr(bench_cuda, "run", lambda args, cases: seen.append(cases) or 0)
    args = types.SimpleNamespace(
        cases=["LayerNorm forward"], dtype=None, list=False, backend="cuda"
    )
    assert bench.run(args) == 0
    names = ["LayerNorm forward", "LayerNorm forward whole layer call"]
    assert [(c.name, c.dtype) for c in seen[0]] == [
        (name, dtype) for dtype in ("float32", "float64") for name in names
    ]
