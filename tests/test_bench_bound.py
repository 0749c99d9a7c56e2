"""The same-run bound of ``normdrop bench``: re-reads, the bound's arithmetic, the read pass
and the last-level cache reader. Expected values are worked out by hand in each test."""

from __future__ import annotations

import numpy as np
import pytest

from normdrop import bench
from normdrop.bench import memory, ops, report
from normdrop.bench.bound import bound_seconds, bound_share

MIB = 2**20


def _speed(read_s=5e-7, cache=10_000):
    """Memory speed 1e9 B/s (2000 moved bytes in 2 us), read speed 2e9 B/s (1000 in 0.5 us)."""
    return memory.MemorySpeed(1000, {"np.copyto": 2e-6}, read_s, cache)


def _timing(best):
    return bench.Timing(best, best, 1, 10, best, (best,), (best,))


def _row(name, shape, op, dtype, speed, seconds):
    case = bench.Case(name, shape, op, dtype)
    timings = {"reference": _timing(1.0), "normdrop": _timing(seconds), "copy": _timing(1.0)}
    return report.make_row(case, bench.Settings(0.01, 1, 1e-4, "min", 1), timings, speed)


def test_fake_speeds():
    speed = _speed()
    assert speed.bytes_per_s == pytest.approx(1e9)
    assert speed.read_bytes_per_s == pytest.approx(2e9)
    summary = speed.as_dict()
    assert summary["read_gbps"] == pytest.approx(2.0)
    assert summary["last_level_cache_bytes"] == 10_000
    assert memory.MemorySpeed(1000, {"np.copyto": 2e-6}).read_bytes_per_s is None


def test_batch_norm_forward_rereads_what_a_channel_cannot_keep_in_cache():
    """(4, 3, 1000) float32: a channel is 4 * 1000 * 4 = 16000 bytes; with a 10000-byte
    cache, 6000 bytes of each of the 3 channels are read twice: 18000 bytes.
    Bound: 2 * 48000 moved bytes at 1e9 B/s (96 us) + 18000 at 2e9 B/s (9 us) = 105 us."""
    row = _row("bn", (4, 3, 1000), ops.BN_TRAIN, "float32", _speed(), 210e-6)
    assert row["bytes"] == 96_000
    assert row["reread_bytes"] == 18_000
    assert row["bound_s"] == pytest.approx(105e-6)
    assert row["bound_share"] == pytest.approx(0.5)
    assert row["memory_share"] == pytest.approx(96e-6 / 210e-6)
    cells = bench.format_table([row]).splitlines()[-1].split()
    assert cells[-3:-1] == ["46%", "50%"]  # of mem, of bound


def test_batch_norm_backward_rereads_x_and_dy_of_a_channel():
    """The backward's sums read x and dy: 2 * 16000 = 32000 bytes a channel, 22000 over the
    cache, 66000 for 3 channels (33 us at 2e9 B/s); 3 * 48000 moved (144 us): 177 us."""
    row = _row("bn back", (4, 3, 1000), ops.BN_BACKWARD, "float32", _speed(), 354e-6)
    assert row["reread_bytes"] == 66_000
    assert row["bound_s"] == pytest.approx(177e-6)
    assert row["bound_share"] == pytest.approx(0.5)


def test_channels_last_channel_is_one_column():
    """(1000, 4) float32: a channel is 1000 * 4 = 4000 bytes; a 3000-byte cache leaves
    1000 bytes of each of the 4 channels to read twice."""
    assert ops.BN_TRAIN.reread((1000, 4), 4, 3000) == 4000
    assert ops.BN_TRAIN.reread((1000, 4), 4, 4000) == 0  # exactly fits


def test_layer_norm_rereads_rows_that_do_not_fit():
    """(8, 5000) float64: a row is 40000 bytes; with 30000 of cache, 10000 of each of the
    8 rows are read twice (80000); the backward's rows of x and dy: 8 * (80000 - 30000)."""
    assert ops.LN_FORWARD.reread((8, 5000), 8, 30_000) == 80_000
    assert ops.LN_BACKWARD.reread((8, 5000), 8, 30_000) == 400_000
    assert ops.DROPOUT_ADD_LN.reread((8, 5000), 8, 30_000) == 80_000


def test_no_reread_without_statistics_or_without_a_cache_size():
    for op in (ops.DROPOUT_FORWARD, ops.DROPOUT_BACKWARD, ops.BN_EVAL):
        assert op.reread((64, 256, 512), 4, 1000) == 0
    assert ops.BN_TRAIN.reread((4, 3, 1000), 4, None) == 0
    row = _row("bn", (4, 3, 1000), ops.BN_TRAIN, "float32", _speed(cache=None), 192e-6)
    assert row["reread_bytes"] == 0
    assert row["bound_s"] == pytest.approx(96e-6)  # the memory time alone
    assert row["bound_share"] == pytest.approx(0.5)


def test_headline_shapes_fit_a_32_mib_cache():
    """A channel of (64, 256, 512) float32 is 128 KiB (x) or 256 KiB (x and dy), a
    channels-last channel of (65536, 64) is 256 KiB, a LayerNorm row 4 KiB: channel by
    channel (or row by row), no algorithm has to read anything twice from memory."""
    cache = 32 * MIB
    assert ops.BN_TRAIN.reread((64, 256, 512), 4, cache) == 0
    assert ops.BN_BACKWARD.reread((64, 256, 512), 4, cache) == 0
    assert ops.BN_TRAIN.reread((65536, 64), 4, cache) == 0
    assert ops.LN_BACKWARD.reread((8192, 1024), 4, cache) == 0


def test_bound_needs_the_read_speed_only_for_a_reread():
    no_read = _speed(read_s=None)
    assert bound_seconds(4000, 0, no_read) == pytest.approx(4e-6)
    assert bound_seconds(4000, 1000, no_read) is None  # a re-read with no read speed
    assert bound_seconds(4000, 1000, None) is None
    assert bound_seconds(4000, 1000, _speed()) == pytest.approx(4.5e-6)
    assert bound_share(4.5e-6, 9e-6) == pytest.approx(0.5)
    assert bound_share(None, 9e-6) is None and bound_share(4.5e-6, None) is None
    row = _row("bn", (4, 3, 1000), ops.BN_TRAIN, "float32", no_read, 1e-4)
    assert row["bound_s"] is None and row["bound_share"] is None
    assert bench.format_table([row]).splitlines()[-1].split()[-2] == "-"


def test_read_pass_sums_every_value():
    numba = pytest.importorskip("numba")
    kernel = memory._sum_kernel(numba)
    values = np.arange(1001, dtype=np.uint64)
    for blocks in (1, 2, 3):
        assert kernel(values, blocks) == 1001 * 1000 // 2
    wrapping = np.full(4, 2**63, np.uint64)  # 4 * 2**63 wraps around to 0
    assert kernel(wrapping, 2) == 0
    read = memory.read_thunk(8 * 1000)
    assert read is not None
    values = np.random.default_rng(4).integers(0, 2**62, 1000, np.uint64)
    assert read() == int(values.sum(dtype=np.uint64))


# ----------------------------------------------------------------------------- cache size
def _cache_dir(tmp_path, caches):
    for i, (level, kind, size) in enumerate(caches):
        index = tmp_path / f"index{i}"
        index.mkdir()
        (index / "level").write_text(f"{level}\n")
        (index / "type").write_text(f"{kind}\n")
        (index / "size").write_text(f"{size}\n")
    return tmp_path


def _no_sysconf(name):
    raise ValueError(f"unrecognized configuration name {name!r}")


def test_cache_size_from_sysconf_first(tmp_path):
    assert memory.last_level_cache_bytes(lambda name: 8 * MIB, tmp_path) == 8 * MIB


def test_cache_size_falls_back_to_sysfs(tmp_path):
    caches = [(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "1024K")]
    cache_dir = _cache_dir(tmp_path, [*caches, (3, "Unified", "32768K")])
    assert memory.last_level_cache_bytes(_no_sysconf, cache_dir) == 32 * MIB
    assert memory.last_level_cache_bytes(lambda name: 0, cache_dir) == 32 * MIB
    assert memory.last_level_cache_bytes(lambda name: -1, cache_dir) == 32 * MIB


def test_cache_size_highest_level_and_units(tmp_path):
    # no L3: the L2 is the last level; an instruction cache never counts; "M" suffix
    cache_dir = _cache_dir(tmp_path, [(1, "Data", "32K"), (2, "Unified", "2M"), (3, "x", "?")])
    assert memory.last_level_cache_bytes(_no_sysconf, cache_dir) == 2 * MIB


def test_cache_size_unknown_is_none(tmp_path):
    assert memory.last_level_cache_bytes(_no_sysconf, tmp_path / "missing") is None
    assert memory.last_level_cache_bytes(_no_sysconf, tmp_path) is None
    only_instructions = _cache_dir(tmp_path, [(3, "Instruction", "64K")])
    assert memory.last_level_cache_bytes(lambda name: 0, only_instructions) is None
