"""normdrop called from several Python threads at once gives the single-thread results.

Every numba kernel releases the GIL, so thread pools (and Dask's threaded scheduler)
run normdrop truly concurrently: small inputs through a layer plan's bound calls
(``normdrop._ops._arrays.bound_call``, at most ``MAX_BOUND_CALLS`` kept per plan),
large ones through ``parallel=True`` kernels (from
``normdrop.backends.numba_backend.jit.PARALLEL_MIN_SIZE`` elements on). The
oracles are the same seeded calls made on one thread, the ``numpy`` backend in
float64, and, for layers shared between threads, a fresh layer per call (a
training BatchNorm's output depends on its batch only) or the functional API with
an explicit call number. ``tests/test_processes_threads.py`` covers fork, spawn and
the choice of threading layer; here the threads run in this process (whatever layer
it uses) and, once, in a child forced onto the ``workqueue`` layer, whose parallel
kernels abort the process if two threads launch them at once.

Source: written for normdrop (no upstream test ported); the guarantees checked are
PyTorch's (a module may be shared between threads; its running statistics then
race) and normdrop's own (``call_count`` claims each call number atomically).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

import normdrop
from normdrop import functional as F

pytest.importorskip("numba")

from normdrop._ops._arrays import MAX_BOUND_CALLS  # noqa: E402
from normdrop.backends.numba_backend.jit import PARALLEL_MIN_SIZE  # noqa: E402
from normdrop.backends.numpy_backend import NumpyBackend  # noqa: E402

WORKERS = 6

#: (small, large) shapes per kind: the small ones take the serial clones (bound calls
#: for BatchNorm1d and LayerNorm), the large ones the parallel kernels.
SHAPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "bn2_train": ((64, 16), (4096, 16)),
    "bn2_eval": ((48, 16), (4096, 16)),
    "bn3_train": ((8, 8, 32), (32, 16, 128)),
    "bn3_eval": ((6, 8, 32), (32, 16, 128)),
    "ln": ((64, 32), (512, 128)),
    "dropout": ((100, 30), (256, 256)),
    "daln": ((32, 64), (512, 128)),
}
CALLS = 3  # forward calls per layer before the backward pass
REPEATS = 3  # runs of each spec on the pool


def _spec_list() -> list[tuple[str, tuple[int, ...], str, int]]:
    specs = []
    seed = 0
    for kind, shapes in SHAPES.items():
        for shape in shapes:
            for dtype in ("float32", "float64"):
                seed += 1
                specs.append((kind, shape, dtype, seed))
    return specs


SPECS = _spec_list()


@contextmanager
def _short_switch_interval(seconds: float = 1e-5):
    """Switch threads holding the GIL far more often than every 5 ms, to shake out races."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _pool_map(fn, items, workers=WORKERS) -> list:
    """``fn`` over ``items`` on a pool of ``workers`` threads (exceptions re-raised here).

    The items go in rounds of ``workers``, each round's threads released together by a
    barrier, so that their calls overlap as much as possible.
    """
    items = list(items)
    results: list = []
    with _short_switch_interval(), ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(items), workers):
            chunk = items[start : start + workers]
            barrier = threading.Barrier(len(chunk))

            def run(item, barrier=barrier):
                barrier.wait(timeout=120)
                return fn(item)

            results.extend(pool.map(run, chunk))
    return results


def _job(spec: tuple[str, tuple[int, ...], str, int], backend: str = "numba") -> dict:
    """One layer made from ``spec`` alone: ``CALLS`` forwards, then a backward pass.

    Returns every output, input gradient, parameter gradient and buffer by name.
    """
    kind, shape, dtype, seed = spec
    rng = np.random.default_rng(seed)

    def data(scale=1.0, shift=0.0):
        return (rng.standard_normal(shape) * scale + shift).astype(dtype)

    out: dict[str, Any] = {}
    if kind.startswith("bn"):
        c = shape[1]
        layer = normdrop.BatchNorm1d(c, dtype=dtype, backend=backend)
        layer.weight[...] = rng.uniform(0.5, 1.5, c)
        layer.bias[...] = rng.standard_normal(c)
        if kind.endswith("eval"):
            layer.running_mean[...] = rng.standard_normal(c)
            layer.running_var[...] = rng.uniform(0.5, 2.0, c)
            layer.eval()
        for k in range(CALLS):
            out[f"y{k}"] = layer(data(2.0, 1.0))
        out["dx"] = layer.backward(data())
        out["running_mean"] = layer.running_mean.copy()
        out["running_var"] = layer.running_var.copy()
        out["tracked"] = np.asarray(layer.num_batches_tracked).copy()
    elif kind == "ln":
        d = shape[-1]
        layer = normdrop.LayerNorm(d, dtype=dtype, backend=backend)
        layer.weight[...] = rng.uniform(0.5, 1.5, d)
        layer.bias[...] = rng.standard_normal(d)
        for k in range(CALLS):
            out[f"y{k}"] = layer(data(2.0, 1.0))
        out["dx"] = layer.backward(data())
    elif kind == "dropout":
        layer = normdrop.Dropout(0.3, seed=seed, backend=backend)
        for k in range(CALLS):
            out[f"y{k}"] = layer(data())
        out["dx"] = layer.backward(data())
    elif kind == "daln":
        d = shape[-1]
        layer = normdrop.DropoutAddLayerNorm(d, p=0.2, seed=seed, dtype=dtype, backend=backend)
        layer.weight[...] = rng.uniform(0.5, 1.5, d)
        layer.bias[...] = rng.standard_normal(d)
        for k in range(CALLS):
            out[f"y{k}"], out[f"r{k}"] = layer(data(), data())
        out["dx"], out["dres"] = layer.backward(data(), data())
    else:  # pragma: no cover
        raise AssertionError(kind)
    for name, g in layer.grads.items():
        out[f"grad_{name}"] = g.copy()
    return out


def _assert_same(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), what
    for name in want:
        assert np.asarray(got[name]).dtype == np.asarray(want[name]).dtype, (what, name)
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{what}: {name}")


# ------------------------------------------------------------------ 1. separate layers
def test_shapes_cross_the_parallel_threshold():
    """The small shapes take the serial clones, the large ones the parallel kernels."""
    for small, large in SHAPES.values():
        assert np.prod(small) < PARALLEL_MIN_SIZE <= np.prod(large)


def check_separate_layers() -> int:
    """Every spec ``REPEATS`` times on a pool, bit for bit equal to the one-thread run.

    The pool runs first, so that in a fresh process the first kernel calls (loading the
    kernels, and on the workqueue layer deciding to lock their launches) are concurrent.
    """
    # each kind's specs REPEATS times in a row, so the pool runs the same kernels at once
    per_kind = len(SPECS) // len(SHAPES)
    order = [
        start + j
        for start in range(0, len(SPECS), per_kind)
        for j in list(range(per_kind)) * REPEATS
    ]
    got = _pool_map(lambda i: _job(SPECS[i]), order)
    want = [_job(s) for s in SPECS]
    for i, result in zip(order, got, strict=True):
        _assert_same(result, want[i], f"{SPECS[i]} on a thread")
    return len(order)


def test_separate_layers_match_one_thread():
    """Separate layers per thread (BatchNorm1d train/eval on (N,C) and (N,C,L), LayerNorm,
    seeded Dropout, DropoutAddLayerNorm; float32/float64; both sides of
    PARALLEL_MIN_SIZE; forward and backward): bit-identical to the one-thread run."""
    assert check_separate_layers() == REPEATS * len(SPECS)


def test_numpy_backend_on_threads_matches_one_thread():
    """The same separate-layer jobs on the numpy backend (small shapes, to stay cheap):
    bit-identical to the numpy backend's one-thread run."""
    specs = [s for s in SPECS if np.prod(s[1]) < PARALLEL_MIN_SIZE]
    got = _pool_map(lambda s: _job(s, backend="numpy"), specs * 2)
    for spec, result in zip(specs * 2, got, strict=True):
        _assert_same(result, _job(spec, backend="numpy"), f"{spec} on numpy on a thread")


@pytest.mark.parametrize("kind", ["bn3_train", "bn2_eval", "ln", "dropout", "daln"])
def test_threaded_float64_matches_numpy_backend(kind):
    """Independent oracle: the numpy backend's float64 results (run on this thread)
    agree with the numba float64 results computed on a pool of threads."""
    specs = [s for s in SPECS if s[0] == kind and s[2] == "float64"]
    got = _pool_map(_job, specs * 2)
    for spec, result in zip(specs * 2, got, strict=True):
        want = _job(spec, backend="numpy")
        assert result.keys() == want.keys()
        for name in want:
            np.testing.assert_allclose(
                result[name], want[name], rtol=1e-9, atol=1e-9, err_msg=f"{spec}: {name}"
            )


# ------------------------------------------------------------------ 2. shared layers
BN_SHAPES = [(8, 16, 24), (32, 16, 128), (40, 16), (4096, 16)]  # serial and parallel
THREADS_SHARED = 8
CALLS_SHARED = 25


def _inputs(i: int, shapes, dtype="float32") -> list[np.ndarray]:
    rng = np.random.default_rng(100 + i)
    return [
        (rng.standard_normal(shapes[(i + k) % len(shapes)]) * 3 + i).astype(dtype)
        for k in range(CALLS_SHARED)
    ]


@pytest.mark.parametrize("momentum", [0.1, None])
def test_shared_batchnorm_training(momentum):
    """One training BatchNorm1d called by 8 threads (PyTorch allows sharing a module; the
    running statistics then race). A training output depends only on the batch, the
    weight and the bias, so each must equal a fresh layer's output bit for bit; the
    running statistics stay finite and within the range of the batch means / variances
    seen; ``num_batches_tracked`` counts every call."""
    weight = np.linspace(0.5, 1.5, 16, dtype=np.float32)
    bias = np.linspace(-1, 1, 16, dtype=np.float32)
    shared = normdrop.BatchNorm1d(16, momentum=momentum)
    shared.weight[...] = weight
    shared.bias[...] = bias
    inputs = [_inputs(i, BN_SHAPES) for i in range(THREADS_SHARED)]

    got = _pool_map(lambda xs: [shared(x) for x in xs], inputs, THREADS_SHARED)

    assert int(shared.num_batches_tracked) == THREADS_SHARED * CALLS_SHARED
    means, variances = [np.zeros(16)], [np.ones(16)]
    for xs, ys in zip(inputs, got, strict=True):
        for x, y in zip(xs, ys, strict=True):
            fresh = normdrop.BatchNorm1d(16)
            fresh.weight[...] = weight
            fresh.bias[...] = bias
            assert y.shape == x.shape and y.dtype == x.dtype
            np.testing.assert_array_equal(y, fresh(x))
            axes = (0, 2) if x.ndim == 3 else (0,)
            means.append(x.astype(np.float64).mean(axes))
            variances.append(x.astype(np.float64).var(axes, ddof=1))
    for running, seen in ((shared.running_mean, means), (shared.running_var, variances)):
        assert np.isfinite(running).all()
        lo, hi = np.min(seen, axis=0), np.max(seen, axis=0)
        assert (running >= lo - 1e-3 * abs(lo) - 1e-4).all()
        assert (running <= hi + 1e-3 * abs(hi) + 1e-4).all()


def test_shared_batchnorm_eval_and_layernorm():
    """Stateless shared layers (BatchNorm1d in eval, LayerNorm) give exactly the outputs
    of the same layer called on one thread afterwards."""
    bn = normdrop.BatchNorm1d(16)
    bn.running_mean[...] = np.linspace(-1, 1, 16)
    bn.running_var[...] = np.linspace(0.5, 2, 16)
    bn.eval()
    ln = normdrop.LayerNorm(128, dtype="float64")
    ln.weight[...] = np.linspace(0.5, 1.5, 128)
    ln_shapes = [(4, 128), (512, 128), (3, 7, 128)]

    def work(i):
        return [bn(x) for x in _inputs(i, BN_SHAPES)], [
            ln(x) for x in _inputs(i, ln_shapes, "float64")
        ]

    got = _pool_map(work, range(THREADS_SHARED), THREADS_SHARED)
    for i, (bn_out, ln_out) in enumerate(got):
        for x, y in zip(_inputs(i, BN_SHAPES), bn_out, strict=True):
            np.testing.assert_array_equal(y, bn(x))
        for x, y in zip(_inputs(i, ln_shapes, "float64"), ln_out, strict=True):
            assert y.dtype == np.float64
            np.testing.assert_array_equal(y, ln(x))


def test_shared_dropout_calls_are_distinct_masks():
    """A Dropout shared by 8 threads: each training call claims its own call number, so the
    outputs are exactly ``F.dropout(x, p, seed=seed, call=k)`` for k = 0 .. calls-1, each k
    used once (as the ``call_count`` docstring promises)."""
    shapes = [(100, 30), (256, 256)]
    layer = normdrop.Dropout(0.4, seed=1234)
    total = THREADS_SHARED * CALLS_SHARED
    got = _pool_map(lambda i: [(x, layer(x)) for x in _inputs(i, shapes)], range(THREADS_SHARED))
    assert layer.call_count == total
    calls_by_mask = {
        (s, (F.dropout(np.ones(s, np.float32), 0.4, seed=1234, call=k) != 0).tobytes()): k
        for s in shapes
        for k in range(total)
    }
    used = []
    for pairs in got:
        for x, y in pairs:
            k = calls_by_mask.get((x.shape, (y != 0).tobytes()))
            assert k is not None, "output matches no call's mask"
            used.append(k)
            np.testing.assert_array_equal(y, F.dropout(x, 0.4, seed=1234, call=k, backend="numpy"))
    assert sorted(used) == list(range(total))


def test_shared_dropout_add_layer_norm():
    """A DropoutAddLayerNorm shared by 8 threads: no exception, every call counted, outputs
    finite, of the input's shape and dtype, and ``r`` exactly the functional dropout of
    ``x`` plus the residual for call numbers 0 .. calls-1, each used once."""
    shapes = [(32, 64), (512, 128)]
    layers = {d: normdrop.DropoutAddLayerNorm(d, p=0.25, seed=99) for d in (64, 128)}

    def work(i):
        xs, res = _inputs(i, shapes), _inputs(i + 50, shapes)
        return [(x, rr, *layers[x.shape[-1]](x, rr)) for x, rr in zip(xs, res, strict=True)]

    got = _pool_map(work, range(THREADS_SHARED), THREADS_SHARED)
    per_layer = {d: [] for d in layers}
    for quads in got:
        for x, residual, y, r in quads:
            assert y.shape == r.shape == x.shape and y.dtype == r.dtype == np.float32
            assert np.isfinite(y).all() and np.isfinite(r).all()
            per_layer[x.shape[-1]].append((x, residual, r))
    for d, layer in layers.items():
        calls = per_layer[d]
        assert layer.call_count == len(calls)
        shape = calls[0][0].shape
        calls_by_mask = {
            (F.dropout(np.ones(shape, np.float32), 0.25, seed=99, call=k) != 0).tobytes(): k
            for k in range(len(calls))
        }
        used = []
        for x, residual, r in calls:
            k = calls_by_mask.get((r != residual).tobytes())
            assert k is not None, "r matches no call's mask"
            used.append(k)
            want = F.dropout(x, 0.25, seed=99, call=k, backend="numpy") + residual
            np.testing.assert_array_equal(r, want)
        assert sorted(used) == list(range(len(calls)))


# ------------------------------------------------------------------ 3. bound-call churn
def test_many_shapes_clear_bound_calls_while_in_use():
    """Threads cycle one LayerNorm and one training and one eval BatchNorm1d through more
    input shapes than a plan keeps bound calls (``MAX_BOUND_CALLS``), so one thread clears
    the dict while others read and fill it: no KeyError / "dictionary changed size", and
    every output equals that of a fresh layer on one thread."""
    rows = list(range(2, 2 + 3 * MAX_BOUND_CALLS))  # 24 shapes, all below the threshold
    ln = normdrop.LayerNorm(32)
    ln.weight[...] = np.linspace(0.5, 1.5, 32)
    bn_train = normdrop.BatchNorm1d(8)
    bn_train.weight[...] = np.linspace(0.5, 1.5, 8)
    bn_eval = normdrop.BatchNorm1d(8)
    bn_eval.running_var[...] = np.linspace(0.5, 2, 8)
    bn_eval.eval()

    def x_for(n, width, i):  # each thread its own data, so shared buffers would show
        return np.random.default_rng([n, i]).standard_normal((n, width, 3)).astype(np.float32)

    def work(i):
        order = np.random.default_rng(i).permutation(rows * 4)
        out = []
        for n in order:
            n = int(n)
            out.append(
                (
                    (n, i),
                    ln(x_for(n, 32, i)[:, :, 0].copy()),
                    bn_train(x_for(n, 8, i)),
                    bn_eval(x_for(n, 8, i)),
                )
            )
        return out

    got = _pool_map(work, range(WORKERS))

    for layer in (ln, bn_train, bn_eval):
        assert 0 < len(layer._plan.calls) <= MAX_BOUND_CALLS  # the bound path was taken
    assert int(bn_train.num_batches_tracked) == WORKERS * len(rows) * 4
    want = {}
    for n, i in ((n, i) for n in rows for i in range(WORKERS)):
        fresh_ln = normdrop.LayerNorm(32)
        fresh_ln.weight[...] = np.linspace(0.5, 1.5, 32)
        fresh_bn = normdrop.BatchNorm1d(8)
        fresh_bn.weight[...] = np.linspace(0.5, 1.5, 8)
        want[n, i] = (
            fresh_ln(x_for(n, 32, i)[:, :, 0].copy()),
            fresh_bn(x_for(n, 8, i)),
            bn_eval(x_for(n, 8, i)),
        )
    for results in got:
        for n, y_ln, y_train, y_eval in results:
            np.testing.assert_array_equal(y_ln, want[n][0])
            np.testing.assert_array_equal(y_train, want[n][1])
            np.testing.assert_array_equal(y_eval, want[n][2])


# ------------------------------------------------------------------ 4. use_backend per thread
class RecordingBackend(NumpyBackend):
    """The numpy backend, noting which thread ran each kernel."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.threads: set[int] = set()

    def layer_norm_forward(self, *args, **kwargs):
        self.threads.add(threading.get_ident())
        return super().layer_norm_forward(*args, **kwargs)

    def dropout_forward(self, *args, **kwargs):
        self.threads.add(threading.get_ident())
        return super().dropout_forward(*args, **kwargs)


def test_use_backend_is_per_thread():
    """Threads inside different ``use_backend`` blocks at the same time (a barrier holds
    them all inside): each thread's functional calls run on its own backend (recording
    backends list exactly their threads) and give that backend's one-thread results."""
    rec_a, rec_b = RecordingBackend("rec_a"), RecordingBackend("rec_b")
    choices = ["numpy", "numba", rec_a, rec_b] * 2
    barrier = threading.Barrier(len(choices))
    x = np.random.default_rng(3).standard_normal((256, 256)).astype(np.float32)
    default = normdrop.registry.resolve_backend(x, None)

    def work(i):
        with normdrop.use_backend(choices[i]) as be:
            barrier.wait()
            outs = []
            for k in range(5):
                outs.append(F.layer_norm(x, 256))
                outs.append(F.dropout(x, 0.3, seed=7, call=k))
                outs.append(F.batch_norm(x, training=True))
            barrier.wait()
        return threading.get_ident(), be, outs

    with _short_switch_interval(), ThreadPoolExecutor(len(choices)) as pool:
        got = list(pool.map(work, range(len(choices))))
    for rec in (rec_a, rec_b):
        assert rec.threads == {tid for tid, be, _ in got if be is rec}
    for i, (_, be, outs) in enumerate(got):
        assert be is normdrop.get_backend(choices[i])
        for k in range(5):
            np.testing.assert_array_equal(outs[3 * k], F.layer_norm(x, 256, backend=be))
            np.testing.assert_array_equal(
                outs[3 * k + 1], F.dropout(x, 0.3, seed=7, call=k, backend=be)
            )
            np.testing.assert_array_equal(
                outs[3 * k + 2], F.batch_norm(x, training=True, backend=be)
            )
    # the blocks on the pool's threads left this thread's choice alone
    assert normdrop.registry.resolve_backend(x, None) is default


# ------------------------------------------------------------------ 5. dask threaded
def check_dask_threads() -> int:
    """Dask's threaded scheduler running numba kernels on chunks at once (some chunks past
    the parallel threshold): dropout and layer norm bit-identical to the numba backend on
    the whole array, batch norm equal within float64 rounding."""
    import dask
    import dask.array as da

    rng = np.random.default_rng(11)
    x = rng.standard_normal((4096, 64))
    rows = (1024, 256, 768, 64, 1024, 960)  # 65536 elements (parallel) down to 4096
    xd = da.from_array(x, chunks=(rows, 64))
    x3 = rng.standard_normal((96, 16, 64))
    x3d = da.from_array(x3, chunks=((48, 8, 40), 16, 64))
    with dask.config.set(scheduler="threads", num_workers=4):
        for _ in range(3):
            np.testing.assert_array_equal(
                F.dropout(xd, 0.3, seed=5, call=2).compute(),
                F.dropout(x, 0.3, seed=5, call=2, backend="numba"),
            )
            np.testing.assert_array_equal(
                F.layer_norm(xd, 64).compute(), F.layer_norm(x, 64, backend="numba")
            )
            np.testing.assert_allclose(
                F.batch_norm(x3d, training=True).compute(),
                F.batch_norm(x3, training=True, backend="numba"),
                rtol=1e-12,
                atol=1e-12,
            )
    return 3


def test_dask_threaded_scheduler_matches_numba():
    """See :func:`check_dask_threads`."""
    pytest.importorskip("dask.array")
    assert check_dask_threads() == 3


# ------------------------------------------------------------------ workqueue child
def test_threads_under_workqueue_layer():
    """The separate-layer and Dask checks in a child on the ``workqueue`` layer, where two
    threads launching parallel kernels at once abort the process unless normdrop holds its
    launch lock."""
    pytest.importorskip("dask.array")
    here = os.path.dirname(os.path.abspath(__file__))
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {here!r})
        import numba, test_threads_stress as t
        n = t.check_separate_layers() + t.check_dask_threads()
        print(json.dumps([numba.threading_layer(), n]))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    env.pop("NORMDROP_BACKEND", None)
    env["NUMBA_THREADING_LAYER"] = "workqueue"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240
        )
    except subprocess.TimeoutExpired as exc:  # pragma: no cover
        pytest.fail(f"hung; stderr: {exc.stderr!r}")
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        "workqueue",
        REPEATS * len(SPECS) + 3,
    ]
