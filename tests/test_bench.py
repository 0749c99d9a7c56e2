"""``normdrop bench`` and the asv suite: fast smoke tests on the smallest cases."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import normdrop
from normdrop import bench, functional
from normdrop.bench import gil as bench_gil
from normdrop.bench import inputs, ops, report, timing
from normdrop.bench import memory as bench_memory
from normdrop.bench import peers as bench_peers
from normdrop.bench import plot as bench_plot
from normdrop.bench import threads as bench_threads
from normdrop.cli import main

ROOT = Path(__file__).resolve().parents[1]
ASV_SUITE = ROOT / "asv_benchmarks" / "benchmarks" / "bench_layers.py"
TINY = [
    "bench", "--quick", "--cases", "LayerNorm forward whole", "--no-progress", "--memory-mib", "2"
]  # fmt: skip
ROW_KEYS = {
    "case",
    "shape",
    "dtype",
    "bytes",
    "normdrop_s",
    "reference_s",
    "torch_s",
    "jax_s",
    "speedup_vs_torch",
    "speedup_vs_jax",
    "speedup_vs_reference",
    "gbps",
    "copy_gbps",
    "copy_share",
    "memory_share",
    "memory_gbps",
    "reread_bytes",
    "bound_s",
    "bound_share",
    "timings",
    "spread",
    "noisy",
    "errors",
}


def _bench_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main([*TINY, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_structure(capsys):
    report = _bench_json(capsys, "--budget", "0.02", "--dtype", "float32")
    machine, rows = report["machine"], report["rows"]
    assert machine["cpu_count"] >= 1
    assert machine["numba_threads"] >= 1
    assert machine["backend"] in normdrop.available_backends()
    assert machine["dtypes"] == ["float32"]
    assert {"python", "numpy", "numba", "torch", "jax", "normdrop"} <= set(machine)
    memory = machine["memory"]
    assert memory["array_bytes"] == 2 * 2**20 and memory["moved_bytes"] == 2 * 2 * 2**20
    assert memory["gbps"] == max(memory["copies_gbps"].values())
    if machine["numba"] is not None:
        assert memory["read"] == bench_memory.READ_NAME and memory["read_gbps"] > 0

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
    # the share uses the memory speed timed in the case's own rounds, not the header's
    assert row["memory_gbps"] > 0
    assert row["memory_share"] == pytest.approx(row["gbps"] / row["memory_gbps"])
    assert not any(k.startswith("memory speed") for k in row["timings"])
    # rows of 64 values fit any cache: nothing to read twice, so the bound is the memory time
    assert row["reread_bytes"] == 0
    assert row["bound_s"] == pytest.approx(row["bytes"] / 1e9 / row["memory_gbps"])
    assert row["bound_share"] == pytest.approx(row["memory_share"])
    assert machine["rounds"] == 2 and machine["noise_threshold"] == bench.NOISE_THRESHOLD
    for key in ("normdrop", "reference", "copy"):
        timing = row["timings"][key]
        # 2 rounds of 1 repeat (quick: 3 repeats shared by 2 rounds), up to 2 extra rounds
        assert 2 <= timing["repeats"] <= 4 and timing["rounds"] == timing["repeats"]
        assert 0 < timing["best_s"] <= timing["median_s"]
        assert timing["best_s"] == min(timing["round_best_s"])
        assert row["spread"][key] == pytest.approx(timing["spread"])
    assert set(row["noisy"]) <= {"normdrop", "reference", "torch", "jax"}
    for peer in ("torch", "jax"):
        if machine[peer] is None:
            assert row[f"{peer}_s"] is None and row[f"speedup_vs_{peer}"] is None
        else:
            speedup = row[f"{peer}_s"] / row["normdrop_s"]
            assert row[f"speedup_vs_{peer}"] == pytest.approx(speedup)


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
    columns = ("normdrop", "numpy ref", "torch", "vs torch", "vs ref", "GB/s", "of copy")
    for column in (*columns, "of mem", "of bound"):
        assert column in header
    assert "read speed" in out and "last-level cache" in out
    row = next(line for line in lines if line.startswith("LayerNorm forward whole layer call"))
    assert "(120, 64)" in row
    assert len(row) <= len(header) + 1  # right-aligned under the header


def test_unknown_case_and_list(capsys):
    assert main(["bench", "--cases", "no such case"]) == 2
    assert "no case matches" in capsys.readouterr().err
    assert main(["bench", "--list", "--cases", "backward"]) == 0
    listed = [re.split(r"\s{2,}", line)[:2] for line in capsys.readouterr().out.splitlines()]
    names = ["BatchNorm1d backward", "LayerNorm backward", "Dropout backward"]
    assert listed == [[name, dtype] for dtype in ("float32", "float64") for name in names]
    assert main(["bench", "--list", "--cases", "backward", "--dtype", "float64"]) == 0
    assert [re.split(r"\s{2,}", line)[1] for line in capsys.readouterr().out.splitlines()] == [
        "float64"
    ] * 3


THREADS = ["bench", "--quick", "--cases", "two threads", "--dtype", "float32", "--no-progress"]


def test_two_thread_case_is_reported(capsys):
    """``--cases "two threads"`` times each small layer call, its np.sin calibration and a
    compiled call of the same length on one and on two threads, and the lock hand-over (no
    speed is asserted: only that the numbers are produced, and that the compiled call was
    made about as long as the layer call)."""
    assert main([*THREADS, "--json", "--budget", "0.02"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == []  # no single-thread case matches
    rows = report["threads"]
    names = [f"{bench_threads.NAME}: {name}" for name in bench_threads.LAYER_CALLS]
    assert [r["case"] for r in rows] == names
    assert [r["shape"] for r in rows] == [[4, 64, 30], [120, 64]]
    for r in (*rows, *(r["calibration"] for r in rows), *(r["nogil_call"] for r in rows)):
        assert r["per_call_s"] > 0 and r["one_thread"] > 0 and r["two_threads"] > 0
        assert r["ratio"] == pytest.approx(r["two_threads"] / r["one_thread"])
    assert all(r["calibration"]["elements"] >= bench_threads.MIN_SIN_ELEMENTS for r in rows)
    for r in rows:
        assert 0.25 < r["nogil_call"]["per_call_s"] / r["per_call_s"] < 4
        assert 0 < r["handover_s"] < 0.1
    assert main([*THREADS, "--budget", "0.02"]) == 0
    out = capsys.readouterr().out
    assert "np.sin calibration" in out and "its ratio" in out
    assert "nogil call's ratio" in out and "hand-over" in out
    assert sum(line.startswith(bench_threads.NAME) for line in out.splitlines()) == 2


def test_two_thread_case_is_selected_by_its_own_name():
    """The thread rows run by default and for a pattern naming the thread part, not for a
    pattern that names a single-thread case too."""
    assert len(bench_threads.select_thread_cases(None)) == 4
    assert len(bench_threads.select_thread_cases(["Two Threads"], ["float64"])) == 2
    assert bench_threads.select_thread_cases(["LayerNorm forward whole"]) == []
    picked = bench_threads.select_thread_cases(["small layers: LayerNorm"])
    assert [t.case.shape for t in picked] == [(120, 64), (120, 64)]


def test_calls_per_second_on_one_and_two_threads():
    calls = []
    assert bench_threads.calls_per_second([lambda: calls.append(1)], 10) > 0
    assert len(calls) == 10
    assert bench_threads.calls_per_second([lambda: calls.append(2), lambda: calls.append(3)], 7)
    assert calls.count(2) == calls.count(3) == 7


def test_nogil_call_releases_the_gil():
    """The bench's compiled call runs without the GIL: this thread wakes from a 10 ms sleep
    while a call of about 0.3 s runs in another thread. Holding the GIL, the call would keep
    this thread asleep until it returned."""
    call = bench_gil.nogil_call_maker(0.3)()
    call()  # compiled, and its length on one thread
    start = time.perf_counter()
    call()
    length = time.perf_counter() - start
    entered: list[float] = []
    started = threading.Event()

    def work() -> None:
        entered.append(time.perf_counter())
        started.set()
        call()

    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    time.sleep(0.01)
    woke = time.perf_counter()
    worker.join()
    assert woke - entered[0] < length / 2


def test_handover_passes_the_turn_both_ways():
    """The hand-over measurement ends its threads, returns a time per one-way pass, and
    pins only its own threads: the calling thread's CPUs are as they were."""
    before = threading.active_count()
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    assert 0 < bench_gil.handover_seconds(number=50, repeat=2) < 0.1
    assert threading.active_count() == before
    if cpus is not None:
        assert os.sched_getaffinity(0) == cpus


def test_cases_cover_the_brief():
    names = [case.name for case in bench.CASES if case.dtype == "float32"]
    assert len(names) == len(set(names)) == 12
    backward = [case for case in bench.CASES if "backward" in case.name]
    assert {case.passes for case in backward if "Norm" in case.name} == {3}


def test_every_case_runs_in_float64_too():
    """The dtype is a dimension of the case list: every float32 case has a float64 twin."""
    assert bench.DTYPES == ("float32", "float64")
    by_dtype = {d: [c for c in bench.CASES if c.dtype == d] for d in bench.DTYPES}
    assert len(bench.CASES) == 24 and len(by_dtype["float64"]) == 12
    for single, double in zip(by_dtype["float32"], by_dtype["float64"], strict=True):
        assert (double.name, double.shape, double.passes) == (
            single.name,
            single.shape,
            single.passes,
        )
        assert double.moved_bytes() == 2 * single.moved_bytes()
    headline = bench.select_cases(["LayerNorm forward"], ["float64"])[0]
    assert (headline.name, headline.shape, headline.dtype) == (
        "LayerNorm forward",
        (8192, 1024),
        "float64",
    )
    assert headline.moved_bytes() == 2 * 8192 * 1024 * 8


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
    return bench.Settings(0.01, rounds, 1e-4, "min", rounds)


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

    monkeypatch.setattr(timing, "time_call", fake_time_call)
    thunks = {key: (lambda key=key: key) for key in ("reference", "normdrop", "torch", "copy")}
    timings = timing.measure_rounds(thunks, _settings(2), _Bar(), "case")
    assert calls == {"reference": 2, "normdrop": 4, "torch": 3, "copy": 2}
    assert not timings["torch"].noisy and timings["torch"].best == 2e-5
    assert timings["normdrop"].noisy

    slow_peer = {"reference": _timing(3e-5), "torch": _timing(9e-3), "normdrop": _timing(1e-5)}
    case = bench.select_cases(["LayerNorm forward whole layer call"], ["float32"])[0]
    row = report.make_row(case, _settings(2), {**slow_peer, "copy": _timing(1e-6)})
    assert list(row["noisy"]) == ["torch"]
    assert "300x slower than the NumPy reference" in row["noisy"]["torch"]
    table = bench.format_table([row])
    assert table.splitlines()[-1].endswith("!")
    footer = report.footer([row])
    assert "noisy: LayerNorm forward whole layer call (float32): torch 300x slower" in footer


def test_importing_bench_stays_light():
    code = (
        "import sys, normdrop; print('normdrop.bench' in sys.modules); "
        "before = set(sys.modules); import normdrop.bench; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(new & {'torch', 'tqdm', 'numba', 'dask', 'llvmlite', 'jax', 'matplotlib'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["False", "[]"]  # import normdrop leaves the bench package out


def test_operations_prepare_once_and_call_each_time():
    """An operation's inputs (here a backward's saved statistics, from one forward) are
    prepared when the thunk is built; each call of the thunk runs only the timed call."""
    x = inputs.make_input((6, 5, 7), "float64")
    target = bench.Target.named("numpy")
    dx, dw, db = ops.BN_BACKWARD.build(x, target)()
    _, mean, rstd = functional.batch_norm_with_stats(x, None, None, training=True, eps=bench.EPS)
    want = functional.batch_norm_backward(inputs.grad_like(x), x, mean, rstd, np.ones(5))
    np.testing.assert_allclose(dx, want[0], rtol=1e-12, atol=1e-12)
    assert dw.shape == db.shape == (5,)

    seen = []
    counting = ops.Operation(
        "count", 2, lambda x, t: seen.append("prepare") or {"x": x}, lambda i, t: seen.append(1)
    )
    thunk = counting.build(x, target)
    thunk()
    thunk()
    assert seen == ["prepare", 1, 1]


def test_every_case_has_both_peers_and_find_case_is_exact():
    for case in bench.CASES:
        assert case.op.torch is not None and case.op.jax is not None, case.name
    case = bench.find_case("LayerNorm forward", "float64")
    assert case.op is ops.LN_FORWARD and case.dtype == "float64"
    with pytest.raises(KeyError, match="no benchmark case 'LayerNorm'"):
        bench.find_case("LayerNorm")
    lone = bench.Case("no peers", (2, 3), ops.DROPOUT_BACKWARD_REGENERATE)
    with pytest.raises(NotImplementedError, match="PyTorch has no peer of 'no peers'"):
        lone.build_torch(None)


# ----------------------------------------------------------------------------- memory speed
def test_memory_speed_from_scripted_timings():
    """Memory speed = the fastest copy's read + written bytes per second; a kernel's share =
    the time that speed needs for the kernel's moved bytes / the kernel's time."""
    seen = {}

    def scripted(thunks):
        for name, thunk in thunks.items():
            thunk()  # each copy (and the read pass) runs for real on the small array
            seen[name] = thunk
        return {"np.copyto": 4e-6, "numba 2 threads": 2e-6, "numba read 2 threads": 5e-7}

    speed = bench_memory.memory_speed(scripted, array_bytes=1024)
    assert set(seen) == {"np.copyto", "numba 2 threads", "numba read 2 threads"}
    assert speed.array_bytes == 1024 and speed.moved_bytes == 2048
    # the read pass is not a copy: it leaves the memory speed alone
    assert set(speed.copies) == {"np.copyto", "numba 2 threads"}
    assert speed.read_bytes_per_s == pytest.approx(1024 / 5e-7)  # 2.048 GB/s
    assert speed.best == "numba 2 threads"
    assert speed.bytes_per_s == pytest.approx(2048 / 2e-6)  # 1.024 GB/s
    summary = speed.as_dict()
    assert summary["gbps"] == pytest.approx(1.024)
    assert summary["copies_gbps"] == pytest.approx({"np.copyto": 0.512, "numba 2 threads": 1.024})
    assert summary["read_gbps"] == pytest.approx(2.048)
    # 4096 bytes need 4 us at 1.024 GB/s; a kernel taking 16 us reaches a quarter of it.
    assert bench_memory.memory_share(4096, 16e-6, speed) == pytest.approx(0.25)
    assert bench_memory.memory_share(4096, None, speed) is None
    assert bench_memory.memory_share(4096, 16e-6, None) is None

    case = bench.select_cases(["LayerNorm forward whole layer call"], ["float64"])[0]
    timings = {"reference": _timing(3e-5), "normdrop": _timing(1e-4), "copy": _timing(1e-5)}
    row = report.make_row(case, _settings(1), timings, speed)
    expected_bytes = 2 * 120 * 64 * 8  # x read, y written
    assert row["bytes"] == expected_bytes
    assert row["memory_share"] == pytest.approx(expected_bytes / 1.024e9 / 1e-4)
    cells = bench.format_table([row]).splitlines()[-1].split()
    assert cells[-4:-1] == ["1.0", "120%", "120%"]  # mem GB/s, of mem, of bound (no re-reads)


def test_each_row_uses_the_memory_speed_of_its_own_rounds():
    """On a machine whose memory speed changes during a run, a row's share of memory speed
    is taken against the copies timed in that case's own interleaved rounds."""
    from normdrop.bench import cli as bench_cli

    probe = bench_memory.MemoryProbe(2 * 2**20)
    slow = {"np.copyto": lambda: __import__("time").sleep(0.004)}  # 4 MiB moved in >= 4 ms
    probe.thunks = slow
    start = bench_memory.MemorySpeed(2 * 2**20, {"np.copyto": 1e-6})  # 4 TB/s at the start
    case = bench.select_cases(["LayerNorm forward whole layer call"], ["float32"])[0]
    target = bench.Target.named("numpy")
    row = bench_cli.run_case(
        case, _settings(1), target, target, {"torch": None, "jax": None}, start,
        timing.NoProgress(), probe,
    )  # fmt: skip
    assert 0 < row["memory_gbps"] <= 4 * 2**20 / 0.004 / 1e9
    assert row["memory_share"] == pytest.approx(row["gbps"] / row["memory_gbps"])
    without = bench_cli.run_case(
        case, _settings(1), target, target, {"torch": None, "jax": None}, start,
        timing.NoProgress(),
    )  # fmt: skip
    assert without["memory_gbps"] == pytest.approx(start.bytes_per_s / 1e9)


def test_copy_thunks_are_the_memory_speed_copies():
    pytest.importorskip("numba")
    thunks = bench_memory.copy_thunks(4096)
    assert list(thunks) == ["np.copyto", "numba 2 threads"]
    for thunk in thunks.values():
        thunk()


def test_numba_copy_copies():
    pytest.importorskip("numba")
    src, dst = np.arange(1001.0), np.zeros(1001)
    copy = bench_memory._numba_copy(src, dst)
    copy()
    np.testing.assert_array_equal(dst, src)


# ----------------------------------------------------------------------------- JAX peer
def test_jax_absent_shows_na_without_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax raises ImportError
    assert bench_peers.import_jax() is None
    report = _bench_json(capsys, "--no-torch", "--repeat", "1", "--dtype", "float32")
    (row,) = report["rows"]
    assert report["machine"]["jax"] is None
    assert row["jax_s"] is None and row["speedup_vs_jax"] is None and row["errors"] == []
    assert main([*TINY, "--no-torch", "--repeat", "1", "--dtype", "float32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("case"))
    line = next(line for line in lines if line.startswith("LayerNorm forward whole layer call"))
    for column in ("jax", "vs jax", "torch", "vs torch"):
        end = header.index(f" {column} ") + 1 + len(column)  # right-aligned under the header
        assert line[end - 3 : end] == "n/a"
    assert "error" not in "\n".join(lines)
    with pytest.raises(ImportError, match="jax is not installed"):
        bench.select_cases(["LayerNorm forward whole"])[0].build_jax(np.ones((2, 4)))


def test_no_jax_flag_skips_the_peer(capsys):
    report = _bench_json(capsys, "--no-torch", "--no-jax", "--repeat", "1", "--dtype", "float32")
    assert report["machine"]["jax"] is None and report["rows"][0]["jax_s"] is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jax_peer_computes_the_same_math(dtype):
    jax = pytest.importorskip("jax")
    bench_peers.import_jax()
    rtol = 1e-4 if dtype == "float32" else 1e-10

    def jax_of(name, x):
        return bench.select_cases([name], [dtype])[0].build_jax(x)()

    x = np.random.default_rng(0).standard_normal((6, 5, 7)).astype(dtype)
    rows = x.reshape(6, 35)
    ones5, ones35 = np.ones(5, dtype), np.ones(35, dtype)
    y, *_ = jax_of("BatchNorm1d train forward", x)
    want = functional.batch_norm(x, None, None, training=True, eps=bench.EPS, backend="numpy")
    assert y.dtype == jax.numpy.dtype(dtype)
    np.testing.assert_allclose(np.asarray(y), want, rtol=rtol, atol=rtol)
    y, *_ = jax_of("LayerNorm forward", rows)
    want = functional.layer_norm(rows, 35, eps=bench.EPS, backend="numpy")
    np.testing.assert_allclose(np.asarray(y), want, rtol=rtol, atol=rtol)

    dx, _, _ = jax_of("LayerNorm backward", rows)
    _, m, r = functional.layer_norm_with_stats(rows, 35, eps=bench.EPS, backend="numpy")
    want = functional.layer_norm_backward(inputs.grad_like(rows), rows, 35, m, r, ones35)
    np.testing.assert_allclose(np.asarray(dx), want[0], rtol=rtol, atol=rtol)
    dx, _, _ = jax_of("BatchNorm1d backward", x)
    _, m, r = functional.batch_norm_with_stats(
        x, None, None, training=True, eps=bench.EPS, backend="numpy"
    )
    want = functional.batch_norm_backward(inputs.grad_like(x), x, m, r, ones5, training=True)
    np.testing.assert_allclose(np.asarray(dx), want[0], rtol=rtol, atol=rtol)

    y, keep = jax_of(f"Dropout p={bench.DROPOUT_P}", rows)
    y, kept = np.asarray(y), np.asarray(keep)
    np.testing.assert_allclose(y[kept], rows[kept] / (1 - bench.DROPOUT_P), rtol=rtol)
    assert not y[~kept].any() and 0 < kept.mean() < 1


# ----------------------------------------------------------------------------- --plot
PLOT = ["bench", "--quick", "--no-progress", "--no-torch", "--no-jax", "--memory-mib", "1"]


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "sweep.png"
    args = [*PLOT, "--plot", str(out), "--plot-sizes", "4K,16K", "--repeat", "1", "--json"]
    assert main(args) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = json.loads(capsys.readouterr().out)["points"]
    assert {p["layer"] for p in points} == set(bench_plot.LAYERS)
    assert sorted({p["bytes"] for p in points}) == [4096, 16384]
    assert {p["impl"] for p in points} == {"normdrop"}
    for p in points:
        assert p["gbps"] == pytest.approx(p["moved_bytes"] / p["seconds"] / 1e9)
        assert p["moved_bytes"] == 2 * p["bytes"]  # the forwards read x and write y


def test_plot_without_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "sweep.png"
    assert main([*PLOT, "--plot", str(out)]) == 2
    assert "pip install 'normdrop[bench]'" in capsys.readouterr().err
    assert not out.exists()


def test_plot_sizes_and_shapes():
    assert bench_plot.parse_sizes("4K, 1M,256MiB,100") == (4096, 2**20, 256 * 2**20, 100)
    assert bench_plot.DEFAULT_SIZES[0] == 4 * 2**10 and bench_plot.DEFAULT_SIZES[-1] == 2**28
    for bad in ("0K", "4X", ""):
        with pytest.raises(ValueError, match="expected sizes such as 4K,1M,256M"):
            bench_plot.parse_sizes(bad)
    assert bench_plot.shape_for("BatchNorm1d train forward", 2**20, 4) == (256, 64, 16)
    assert bench_plot.shape_for("LayerNorm forward", 4096, 8) == (1, 1024)  # at least one row


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
    drop.time_backward_regenerate("numpy", "float64", "small")
    calls = asv_suite.LayerCallSuite()
    calls.setup("numpy", "float32")
    calls.time_batchnorm_backward("numpy", "float32")
    calls.time_dropout_forward("numpy", "float32")


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


def test_asv_headline_shapes_in_both_dtypes(asv_suite):
    assert asv_suite.HeadlineSuite.params[1] == ["float32", "float64"]
    assert asv_suite.TorchHeadline.params == [["float32", "float64"]]
    timed = asv_suite.HeadlineSuite.timed
    case = bench.find_case("BatchNorm1d train forward")
    assert timed["batchnorm_forward_train"] == (case.op, {"small": bench.BN_SHAPE})
    assert timed["layernorm_forward"][1] == {"small": bench.ROWS_SHAPE}


def test_asv_suite_times_the_bench_operations(asv_suite):
    """The asv suite defines no operation of its own: every one it times is in
    normdrop.bench.ops, and each of its time_ methods has an operation (and a peer)."""
    shared = {id(v) for v in vars(ops).values() if isinstance(v, ops.Operation)}
    classes = [c for c in vars(asv_suite).values() if isinstance(c, type) and hasattr(c, "timed")]
    assert {c.__name__ for c in classes} >= {"BatchNorm1dSuite", "TorchLayerCall", "JaxDropout"}
    for cls in classes:
        methods = {m[len("time_") :] for m in dir(cls) if m.startswith("time_")}
        assert methods == {n for n, (op, _) in cls.timed.items() if cls.runs(op)}, cls
        assert all(id(op) in shared for op, _ in cls.timed.values())
    for cls in (asv_suite.PeakMemBatchNorm1d, asv_suite.PeakMemDropout):
        assert id(cls.forward) in shared and id(cls.backward) in shared
    assert set(dir(asv_suite.TorchDropout)) >= {"time_forward", "time_backward"}
    assert "time_backward_regenerate" not in dir(asv_suite.TorchDropout)  # no PyTorch peer


def test_asv_peak_memory_runs_on_made_up_statistics(asv_suite):
    for cls in (asv_suite.PeakMemBatchNorm1d, asv_suite.PeakMemLayerNorm, asv_suite.PeakMemDropout):
        suite = cls()
        suite.shape = suite.tiny  # the measured size is tens of MB: keep the test small
        suite.setup("numpy", "float32")
        suite.peakmem_forward("numpy", "float32")
        suite.peakmem_backward("numpy", "float32")


def test_asv_jax_peer_runs_or_skips(asv_suite):
    peer = asv_suite.JaxLayerNorm()
    try:
        peer.setup("float64", "small")
    except NotImplementedError:
        assert bench_peers.import_jax() is None
        return
    peer.time_forward("float64", "small")
    peer.time_backward("float64", "small")


def test_asv_two_thread_ratio_is_tracked(asv_suite):
    suite = asv_suite.TwoThreads()
    suite.settings = timing.Settings(budget=0.01, repeat=1, min_time=0.001, stat="min", rounds=1)
    case = bench_threads.LAYER_CALLS[1]
    suite.setup(case, "float32")
    assert suite.track_two_thread_ratio(case, "float32") > 0
    assert suite.track_calibration_ratio(case, "float32") > 0
    assert suite.track_nogil_call_ratio(case, "float32") > 0
