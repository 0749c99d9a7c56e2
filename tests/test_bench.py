"""``normdrop bench`` and the asv suite: fast smoke tests on the smallest cases."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import normdrop
from normdrop import bench
from normdrop.cli import main

ROOT = Path(__file__).resolve().parents[1]
ASV_SUITE = ROOT / "asv_benchmarks" / "benchmarks" / "bench_layers.py"
TINY = ["bench", "--quick", "--cases", "LayerNorm forward whole", "--no-progress"]
ROW_KEYS = {
    "case",
    "shape",
    "dtype",
    "bytes",
    "normdrop_s",
    "reference_s",
    "torch_s",
    "speedup_vs_torch",
    "speedup_vs_reference",
    "gbps",
    "copy_gbps",
    "copy_share",
    "timings",
    "spread",
    "noisy",
    "errors",
}


def _bench_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main([*TINY, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_structure(capsys):
    report = _bench_json(capsys, "--budget", "0.02")
    machine, rows = report["machine"], report["rows"]
    assert machine["cpu_count"] >= 1
    assert machine["numba_threads"] >= 1
    assert machine["backend"] in normdrop.available_backends()
    assert machine["dtype"] == "float32"
    assert {"python", "numpy", "numba", "torch", "normdrop"} <= set(machine)

    assert len(rows) == 1
    row = rows[0]
    assert set(row) == ROW_KEYS
    assert row["case"] == "LayerNorm forward whole layer call"
    assert row["shape"] == [120, 64]
    assert row["bytes"] == 2 * 120 * 64 * 4
    assert row["errors"] == []
    assert row["normdrop_s"] > 0 and row["reference_s"] > 0
    assert row["speedup_vs_reference"] == pytest.approx(row["reference_s"] / row["normdrop_s"])
    assert row["gbps"] == pytest.approx(row["bytes"] / 1e9 / row["normdrop_s"])
    assert row["copy_share"] == pytest.approx(row["gbps"] / row["copy_gbps"])
    assert machine["rounds"] == 2 and machine["noise_threshold"] == bench.NOISE_THRESHOLD
    for key in ("normdrop", "reference", "copy"):
        timing = row["timings"][key]
        # 2 rounds of 1 repeat (quick: 3 repeats shared by 2 rounds), up to 2 extra rounds
        assert 2 <= timing["repeats"] <= 4 and timing["rounds"] == timing["repeats"]
        assert 0 < timing["best_s"] <= timing["median_s"]
        assert timing["best_s"] == min(timing["round_best_s"])
        assert row["spread"][key] == pytest.approx(timing["spread"])
    assert set(row["noisy"]) <= {"normdrop", "reference", "torch"}
    if machine["torch"] is None:
        assert row["torch_s"] is None and row["speedup_vs_torch"] is None
    else:
        assert row["speedup_vs_torch"] == pytest.approx(row["torch_s"] / row["normdrop_s"])


@pytest.mark.parametrize("name", normdrop.available_backends())
def test_every_backend_and_float64(capsys, name):
    report = _bench_json(
        capsys, "--backend", name, "--dtype", "float64", "--no-torch", "--repeat", "1"
    )
    (row,) = report["rows"]
    assert report["machine"]["backend"] == normdrop.get_backend(name).name
    assert row["dtype"] == "float64" and row["bytes"] == 2 * 120 * 64 * 8
    assert row["errors"] == [] and row["normdrop_s"] > 0
    assert row["torch_s"] is None


def test_table_output(capsys):
    assert main([*TINY, "--no-torch", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("case"))
    for column in ("normdrop", "numpy ref", "torch", "vs torch", "vs ref", "GB/s", "of copy"):
        assert column in header
    row = next(line for line in lines if line.startswith("LayerNorm forward whole layer call"))
    assert "(120, 64)" in row
    assert len(row) <= len(header) + 1  # right-aligned under the header


def test_unknown_case_and_list(capsys):
    assert main(["bench", "--cases", "no such case"]) == 2
    assert "no case matches" in capsys.readouterr().err
    assert main(["bench", "--list", "--cases", "backward"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in listed] == [
        "BatchNorm1d backward",
        "LayerNorm backward",
        "Dropout backward",
    ]


def test_cases_cover_the_brief():
    names = [case.name for case in bench.CASES]
    assert len(names) == len(set(names)) == 12
    backward = [case for case in bench.CASES if "backward" in case.name]
    assert {case.passes for case in backward if "Norm" in case.name} == {3}


def test_time_call_loops_fast_functions():
    timing = bench.time_call(lambda: None, budget=0.01, repeat=3, min_time=1e-4)
    assert timing.number > 1
    assert 1 <= timing.repeats <= 3
    assert 0 < timing.best <= timing.median


def _timing(best, median=None):
    median = best if median is None else median
    return bench.Timing(best, median, 1, 10, best, (best,), (best,))


def test_spread_is_between_the_two_fastest_rounds():
    merged = bench.combine_rounds([_timing(2e-5), _timing(9e-3), _timing(2.2e-5)])
    assert merged.best == 2e-5 and merged.repeats == 3
    assert merged.round_bests == (2e-5, 9e-3, 2.2e-5)
    assert merged.spread == pytest.approx(0.1)  # the 9 ms round is an outlier, outvoted
    assert not merged.noisy
    lone = bench.combine_rounds([_timing(2e-5), _timing(9e-3)])
    assert lone.noisy and lone.spread == pytest.approx(449)
    single = _timing(1e-5, median=2e-5)
    assert single.spread == pytest.approx(1.0)  # one round: median against best


class _Bar:
    def set_postfix_str(self, s):
        pass

    def update(self, n=1):
        pass


def _settings(rounds):
    return bench.Settings(np.dtype("float32"), 0.01, rounds, 1e-4, "min", rounds)


def test_noisy_and_outlying_measurements_get_extra_rounds(monkeypatch):
    """A measurement whose rounds disagree, or that is far slower than the reference in the
    same run (torch's tiny calls at ms instead of us on a busy machine), is timed again;
    if it stays so, its row is flagged and the footer says why."""
    script = {
        "reference": iter([3e-5] * 10),
        "torch": iter([2e-5, 9e-3, 2.1e-5, 2e-5]),  # one bad round, outvoted by an extra one
        "normdrop": iter([1e-5, 1e-2, 1e-2, 1e-2]),  # one fast round, never confirmed
        "copy": iter([1e-6] * 10),
    }
    calls = {key: 0 for key in script}

    def fake_time_call(fn, **kwargs):
        key = fn()
        calls[key] += 1
        return _timing(next(script[key]))

    monkeypatch.setattr(bench, "time_call", fake_time_call)
    thunks = {key: (lambda key=key: key) for key in ("reference", "normdrop", "torch", "copy")}
    timings = bench._measure_rounds(thunks, _settings(2), _Bar(), "case")
    assert calls == {"reference": 2, "normdrop": 4, "torch": 3, "copy": 2}
    assert not timings["torch"].noisy and timings["torch"].best == 2e-5
    assert timings["normdrop"].noisy

    slow_peer = {"reference": _timing(3e-5), "torch": _timing(9e-3), "normdrop": _timing(1e-5)}
    case = next(c for c in bench.CASES if c.name == "LayerNorm forward whole layer call")
    row = bench._row(case, _settings(2), {**slow_peer, "copy": _timing(1e-6)})
    assert list(row["noisy"]) == ["torch"]
    assert "300x slower than the NumPy reference" in row["noisy"]["torch"]
    table = bench.format_table([row])
    assert table.splitlines()[-1].endswith("!")
    assert "noisy: LayerNorm forward whole layer call: torch 300x slower" in bench._footer([row])


def test_importing_bench_stays_light():
    code = (
        "import sys, normdrop; before = set(sys.modules); import normdrop.bench; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(new & {'torch', 'tqdm', 'numba', 'dask', 'llvmlite'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- asv suite
@pytest.fixture(scope="module")
def asv_suite():
    if not ASV_SUITE.exists():
        pytest.skip("the asv suite is not part of this checkout")
    spec = importlib.util.spec_from_file_location("normdrop_asv_bench_layers", ASV_SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_asv_suite_runs_a_tiny_benchmark(asv_suite):
    assert asv_suite.BatchNorm1dSuite.params[0] == normdrop.available_backends()
    assert "numpy" in asv_suite.BACKENDS
    suite = asv_suite.LayerNormSuite()
    suite.setup("numpy", "float32", "small")
    suite.time_forward("numpy", "float32", "small")
    suite.time_backward("numpy", "float32", "small")
    drop = asv_suite.DropoutSuite()
    drop.setup("numpy", "float64", "small")
    drop.time_backward("numpy", "float64", "small")


def test_asv_torch_peer_runs_or_skips(asv_suite):
    peer = asv_suite.TorchLayerNorm()
    try:
        peer.setup("float32", "small")
    except NotImplementedError:
        assert asv_suite._TORCH is None
        return
    try:
        peer.time_forward("float32", "small")
        peer.time_backward("float32", "small")
    finally:  # asv's setup turns autograd off process-wide; give it back to other tests
        asv_suite._TORCH.set_grad_enabled(True)
