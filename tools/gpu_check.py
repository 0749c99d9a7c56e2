#!/usr/bin/env python3
"""GPU check of normdrop's cuda backend, run by gpu_check.sh inside its fresh virtual environment.

1. environment: the cuda backend loads for real (numba-cuda + CuPy, not the CUDA simulator);
   the cold start (first calls, kernel compilation) is timed.
2. correctness on the headline shapes against the ``numpy`` reference backend (float64 oracle):
   BatchNorm1d (64, 256, 512) and channels-last (8192, 1024), LayerNorm (8192, 1024) through the
   functional API and the layer (float32 parameters), Dropout (8192, 1024): outputs written into
   NaN-poisoned buffers, float64 statistics, backward passes, bit-identical masks/bitmasks and
   dropout outputs, repeat determinism, chunk offsets; with enough free GPU memory also launches
   over more than 2**31 elements, checked on their head and tail against the reference.
3. benchmark (float32, headline shapes): per backend kernel call and per functional op, device time
   from CUDA events with the queue pre-filled (host launch overhead hidden), host time per call,
   back-to-back time per call (what a loop sees), bytes model, GB/s, share of a same-run CuPy copy
   of the same bytes and of 4.8 TB/s, and a plain CuPy implementation of the same math (PyTorch
   too when importable) as peers.

Prints a table and one final line ``GPU_CHECK PASS ...`` or ``GPU_CHECK FAIL ...``; exits 0 only
when every check passed. ``--simulate`` runs the same code under the CUDA simulator with tiny
shapes and host timers (a dry run of this script without a GPU, not a check of the GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--simulate", action="store_true", help="CUDA simulator, tiny shapes (dry run)")
ap.add_argument("--reps", type=int, default=20, help="calls per timed batch")
ap.add_argument("--trials", type=int, default=5, help="timed batches per op (median)")
ap.add_argument("--no-big", action="store_true", help="skip the > 2**31-element launches")
ap.add_argument("--no-torch", action="store_true", help="no PyTorch peers")
ap.add_argument("--json", default=None, help="write all results here")
args = ap.parse_args()

if args.simulate:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
elif os.environ.get("NUMBA_ENABLE_CUDASIM", "0") != "0":
    sys.exit("GPU_CHECK FAIL: NUMBA_ENABLE_CUDASIM is set: this check is for a real GPU")
else:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"

import numpy as np  # noqa: E402

T_START = time.perf_counter()
import normdrop  # noqa: E402
from normdrop import functional as F  # noqa: E402
from normdrop.random import dropout_threshold  # noqa: E402

SIM = args.simulate
RESULTS: dict = {"checks": [], "bench": [], "env": {}}
FAILED: list[str] = []


def log(msg: str = "") -> None:
    print(msg, flush=True)


def check(name: str, ok: bool, detail: str = "") -> bool:
    ok = bool(ok)
    RESULTS["checks"].append({"name": name, "ok": ok, "detail": detail})
    log(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        FAILED.append(name)
    return ok


def guarded(name: str):
    """Run a check group; an exception fails it instead of stopping the script."""

    def wrap(fn):
        def run(*a, **k):
            try:
                return fn(*a, **k)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                check(f"{name}: raised", False, f"{type(exc).__name__}: {str(exc)[:300]}")
                return None

        return run

    return wrap


# ----------------------------------------------------------------------------- environment
log("== environment")
try:
    be = normdrop.get_backend("cuda")
except Exception as exc:  # noqa: BLE001
    log(f"GPU_CHECK FAIL: the cuda backend does not load: {exc}")
    sys.exit(1)
ref = normdrop.get_backend("numpy")
if SIM:
    xp = np
    check("backend runs on the CUDA simulator (dry run)", be.simulator)
else:
    if not check("cuda backend compiles for the GPU (not the simulator)", not be.simulator):
        log("GPU_CHECK FAIL: the cuda backend runs on the simulator")
        sys.exit(1)
    import cupy as cp

    xp = cp
    dev_ = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev_.id)
    RESULTS["env"] = {
        "gpu": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
        "cc": f"{props['major']}.{props['minor']}",
        "sms": props["multiProcessorCount"],
        "l2_mb": props["l2CacheSize"] / 2**20,
        "mem_gb": props["totalGlobalMem"] / 1e9,
        "driver": cp.cuda.runtime.driverGetVersion(),
        "runtime": cp.cuda.runtime.runtimeGetVersion(),
    }
    log("  " + json.dumps(RESULTS["env"]))
import numba  # noqa: E402

versions = {"numba": numba.__version__, "numpy": np.__version__}
try:
    import numba_cuda

    versions["numba_cuda"] = getattr(numba_cuda, "__version__", "?")
except ImportError:
    pass
if not SIM:
    versions["cupy"] = cp.__version__
RESULTS["env"]["versions"] = versions
log(f"  versions: {versions}; backend: {be!r}")


def sync() -> None:
    if not SIM:
        cp.cuda.get_current_stream().synchronize()


def dev(a):
    return None if a is None else (np.array(a) if SIM else cp.asarray(a))


def host(a):
    return None if a is None else be.to_numpy(a)


def poisoned(shape, dtype):
    return xp.full(shape, np.nan, dtype=dtype)


def relerr(got, expected) -> float:
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    den = float(np.linalg.norm(expected.ravel()))
    return float(np.linalg.norm((got - expected).ravel())) / (den if den else 1.0)


def close(name, got, expected, tol, dtype=None):
    g = host(got)
    ok = g.shape == np.shape(expected)
    if dtype is not None:
        ok = ok and g.dtype == np.dtype(dtype)
    nan = int(np.isnan(g).sum()) if g.dtype.kind == "f" else 0
    err = relerr(g, expected) if ok else float("inf")
    return check(
        name,
        ok and nan == 0 and err <= tol,
        f"rel err {err:.2e} <= {tol:.0e}, NaN {nan}, {g.dtype} {g.shape}",
    )


def same(name, got, expected):
    g = host(got)
    e = np.asarray(expected)
    ok = g.shape == e.shape and g.dtype == e.dtype and np.array_equal(g, e)
    diff = int((g != e).sum()) if g.shape == e.shape else -1
    return check(name, ok, f"bit-identical, {diff} differ of {e.size}, {g.dtype}")


# Shapes: the headline ones on a GPU, tiny ones in the simulator.
BN = (4, 6, 10) if SIM else (64, 256, 512)
BN2 = (9, 7) if SIM else (8192, 1024)
LN = (6, 20) if SIM else (8192, 1024)
DO = (6, 20) if SIM else (8192, 1024)
EPS, MOM = 1e-5, 0.1
RNG = np.random.default_rng(20261130)

# ----------------------------------------------------------------------------- cold start
log("== cold start: first calls compile every kernel a float32 training step uses")
t0 = time.perf_counter()
try:
    _x = dev(RNG.standard_normal((8, 4, 3)).astype(np.float32))
    _y, _m, _r = F.batch_norm_with_stats(_x, training=True, backend="cuda")
    F.batch_norm_backward(_x, _x, _m, _r, dev(np.ones(4, np.float32)), backend="cuda")
    _l = normdrop.LayerNorm(3).to("cuda")
    _l.backward(_l(_x))
    _d = normdrop.Dropout(0.5, seed=1).to("cuda")
    _d.backward(_d(_x))
    sync()
    cold = time.perf_counter() - t0
    check(
        "first float32 training calls (BN, LayerNorm, Dropout fwd+bwd) run",
        True,
        f"cold start {cold:.1f} s including kernel compilation",
    )
    RESULTS["env"]["cold_start_s"] = cold
except Exception as exc:  # noqa: BLE001
    traceback.print_exc()
    check("first float32 training calls run", False, f"{type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------- correctness
@guarded("batchnorm 3-D")
def check_batchnorm(shape, label):
    log(f"== BatchNorm1d {shape} float32 ({label})")
    c = shape[1]
    x = (RNG.standard_normal(shape, dtype=np.float32) * 2 + 0.5).astype(np.float32)
    g = RNG.standard_normal(shape, dtype=np.float32)
    w = (RNG.random(c) + 0.5).astype(np.float32)
    b = RNG.standard_normal(c).astype(np.float32)
    rm, rv = RNG.standard_normal(c).astype(np.float32), (RNG.random(c) + 1).astype(np.float32)
    rm_r, rv_r = rm.copy(), rv.copy()
    y_r, mean_r, rstd_r = F.batch_norm_with_stats(
        x,
        rm_r,
        rv_r,
        w,
        b,
        training=True,
        momentum=MOM,
        eps=EPS,
        backend="numpy",
    )
    xd, rm_d, rv_d, wd, bd = dev(x), dev(rm), dev(rv), dev(w), dev(b)
    out = poisoned(shape, np.float32)
    y, mean, rstd = F.batch_norm_with_stats(
        xd,
        rm_d,
        rv_d,
        wd,
        bd,
        training=True,
        momentum=MOM,
        eps=EPS,
        out=out,
        backend="cuda",
    )
    check(f"bn{label} train forward writes into out=", y is out)
    close(f"bn{label} train forward y vs reference", y, y_r, 1e-6, np.float32)
    close(f"bn{label} batch mean (float64)", mean, mean_r, 1e-10, np.float64)
    close(f"bn{label} batch rstd (float64)", rstd, rstd_r, 1e-10, np.float64)
    close(f"bn{label} running_mean update", rm_d, rm_r, 1e-6)
    close(f"bn{label} running_var update", rv_d, rv_r, 1e-6)
    y2 = F.batch_norm(xd, None, None, wd, bd, training=True, eps=EPS, backend="cuda")
    same(f"bn{label} forward is deterministic (two runs)", y2, host(y))
    dx_r, dw_r, db_r = F.batch_norm_backward(
        g, x, mean_r, rstd_r, w, training=True, backend="numpy"
    )
    dx, dw, db = F.batch_norm_backward(dev(g), xd, mean, rstd, wd, training=True, backend="cuda")
    close(f"bn{label} backward dx", dx, dx_r, 1e-6, np.float32)
    close(f"bn{label} backward dweight", dw, dw_r, 1e-6)
    close(f"bn{label} backward dbias", db, db_r, 1e-6)
    # the backend's whole backward (float32 weight: gradients in float32), training and eval
    k3 = (shape[0], c, -1)
    for training in (True, False):
        e_r = F.batch_norm_backward(g, x, mean_r, rstd_r, w, training=training, backend="numpy")
        got = be.batch_norm_backward(
            dev(g).reshape(k3), xd.reshape(k3), mean, rstd, wd, training,
            poisoned(shape, np.float32).reshape(k3),
        )  # fmt: skip
        name = f"bn{label} whole backward ({'train' if training else 'eval'})"
        close(f"{name} dx", got[0].reshape(shape), e_r[0], 1e-6, np.float32)
        close(f"{name} dweight", got[1], e_r[1], 1e-6, np.float32)
        close(f"{name} dbias", got[2], e_r[2], 1e-6, np.float32)
    ye_r = F.batch_norm(x, rm_r, rv_r, w, b, training=False, eps=EPS, backend="numpy")
    ye = F.batch_norm(
        xd,
        rm_d,
        rv_d,
        wd,
        bd,
        training=False,
        eps=EPS,
        out=poisoned(shape, np.float32),
        backend="cuda",
    )
    close(f"bn{label} eval forward", ye, ye_r, 1e-6, np.float32)
    if not SIM and len(shape) == 3:  # a float64 grad_output for float32 data: mixed-dtype kernels
        dx64 = F.batch_norm_backward(dev(g.astype(np.float64)), xd, mean, rstd, wd, backend="cuda")[
            0
        ]
        dx64_r = F.batch_norm_backward(g.astype(np.float64), x, mean_r, rstd_r, w, backend="numpy")[
            0
        ]
        close(f"bn{label} backward, float64 grad_output on float32 x", dx64, dx64_r, 1e-6)
    layer = normdrop.BatchNorm1d(c, momentum=MOM).to("cuda")
    layer_r = normdrop.BatchNorm1d(c, momentum=MOM, backend="numpy")
    yl, yl_r = layer(xd), layer_r(x)
    close(f"bn{label} layer (float32 params) forward", yl, yl_r, 1e-6, np.float32)
    close(f"bn{label} layer backward", layer.backward(dev(g)), layer_r.backward(g), 1e-6)
    for k in ("weight", "bias"):
        close(f"bn{label} layer grad {k}", layer.grads[k], layer_r.grads[k], 1e-6)


@guarded("layernorm")
def check_layernorm(shape):
    log(f"== LayerNorm {shape} float32")
    d = shape[-1]
    x = (RNG.standard_normal(shape, dtype=np.float32) * 3 - 1).astype(np.float32)
    g = RNG.standard_normal(shape, dtype=np.float32)
    w = (RNG.random(d) + 0.5).astype(np.float32)
    b = RNG.standard_normal(d).astype(np.float32)
    y_r, mean_r, rstd_r = F.layer_norm_with_stats(x, d, w, b, EPS, backend="numpy")
    xd = dev(x)
    out = poisoned(shape, np.float32)
    y, mean, rstd = F.layer_norm_with_stats(xd, d, dev(w), dev(b), EPS, out=out, backend="cuda")
    check("ln forward writes into out=", y is out)
    close("ln forward y vs reference", y, y_r, 1e-6, np.float32)
    close("ln row mean (float64)", mean, mean_r, 1e-10, np.float64)
    close("ln row rstd (float64)", rstd, rstd_r, 1e-10, np.float64)
    y2 = F.layer_norm(xd, d, dev(w), dev(b), EPS, backend="cuda")
    same("ln forward is deterministic (two runs)", y2, host(y))
    dx_r, dw_r, db_r = F.layer_norm_backward(g, x, d, mean_r, rstd_r, w, backend="numpy")
    dx, dw, db = F.layer_norm_backward(dev(g), xd, d, mean, rstd, dev(w), backend="cuda")
    close("ln backward dx", dx, dx_r, 1e-6, np.float32)
    close("ln backward dweight", dw, dw_r, 1e-6)
    close("ln backward dbias", db, db_r, 1e-6)
    dxn = F.layer_norm_backward(dev(g), xd, d, mean, rstd, None, backend="cuda")[0]
    dxn_r = F.layer_norm_backward(g, x, d, mean_r, rstd_r, None, backend="numpy")[0]
    close("ln backward dx without weight", dxn, dxn_r, 1e-6)
    ln = normdrop.LayerNorm(
        d
    )  # float32 parameters: the layer passes them to the kernel as they are
    ln.load_state_dict({"weight": w, "bias": b})
    ln_r = normdrop.LayerNorm(d, backend="numpy")
    ln_r.load_state_dict({"weight": w, "bias": b})
    ln.to("cuda")
    close("ln layer (float32 params) forward", ln(xd), ln_r(x), 1e-6, np.float32)
    close("ln layer backward", ln.backward(dev(g)), ln_r.backward(g), 1e-6)
    for k in ("weight", "bias"):
        close(f"ln layer grad {k}", ln.grads[k], ln_r.grads[k], 1e-6)
    nb = normdrop.LayerNorm(d, bias=False)  # float32 weight, float64 placeholder bias
    nb.load_state_dict({"weight": w})
    nb_r = normdrop.LayerNorm(d, bias=False, backend="numpy")
    nb_r.load_state_dict({"weight": w})
    close("ln layer without bias forward", nb.to("cuda")(xd), nb_r(x), 1e-6)


@guarded("dropout")
def check_dropout(shape, p, dtype):
    log(f"== Dropout {shape} {np.dtype(dtype).name} p={p}")
    seed, call = 0x9E3779B97F4A7C15, 7
    x = RNG.standard_normal(shape).astype(dtype)
    g = RNG.standard_normal(shape).astype(dtype)
    y_r, bits_r = F.dropout_with_bitmask(x, p, seed=seed, call=call, backend="numpy")
    xd = dev(x)
    out = poisoned(shape, dtype)
    y, bits = F.dropout_with_bitmask(xd, p, seed=seed, call=call, out=out, backend="cuda")
    same(f"dropout p={p} forward output", y, y_r)
    same(f"dropout p={p} packed bitmask", bits, bits_r)
    y3 = F.dropout(xd, p, seed=seed, call=call, backend="cuda")  # the kernel without bitmask
    same(f"dropout p={p} forward without bitmask", y3, y_r)
    same(
        f"dropout p={p} keep-mask",
        F.dropout_mask(shape, p, seed=seed, call=call, backend="cuda"),
        F.dropout_mask(shape, p, seed=seed, call=call, backend="numpy"),
    )
    dx_r = F.dropout_backward(g, p, bitmask=bits_r, backend="numpy")
    same(
        f"dropout p={p} backward from bitmask",
        F.dropout_backward(dev(g), p, bitmask=bits, backend="cuda"),
        dx_r,
    )
    same(
        f"dropout p={p} backward regenerated",
        F.dropout_backward(dev(g), p, seed=seed, call=call, backend="cuda"),
        dx_r,
    )
    n = x.size
    flat, thr = x.reshape(-1), dropout_threshold(p)
    real = np.dtype(dtype).type
    scale = real(1.0) / real(1.0 - p)  # as the functional API computes it
    a, bnd = (n // 3) | 1, (2 * n // 3) + 3  # odd offsets: Philox blocks split between chunks
    part = be.dropout_forward(
        dev(flat[a:bnd]), thr, scale, seed, call, poisoned((bnd - a,), dtype), None, a
    )
    same(f"dropout p={p} chunk at offset {a}", part, y_r.reshape(-1)[a:bnd])
    same(
        f"dropout p={p} philox words at offset {a}",
        be.philox_words(bnd - a, seed, call, a),
        ref.philox_words(bnd - a, seed, call, a),
    )


@guarded("over 2**31 elements")
def check_big(rows=8193, ch=256, length=1024, k=8192):
    """Launches over rows * ch * length elements (GPU default: 2**31 + 2**18), checked at both ends.

    The same data serve as 1-D dropout input, (rows, ch, length) BatchNorm input and
    (rows * ch, length) LayerNorm rows; the simulator runs it with a tiny shape.
    """
    n = rows * ch * length
    if not SIM:
        free = cp.cuda.runtime.memGetInfo()[0]
        if free < 6 * 4 * n:
            log(f"== > 2**31 elements: skipped, {free / 1e9:.0f} GB free")
            return
    log(f"== launches over {n} float32 elements{' (> 2**31)' if n > 2**31 else ''}, ends checked")
    seed, call, p = 12345, 2, 0.25
    thr, scale = dropout_threshold(p), np.float32(1 / (1 - p))
    if SIM:
        x = RNG.standard_normal(n, dtype=np.float32)
    else:
        x = cp.random.standard_normal(n, dtype=cp.float32)
    y = xp.full(n, np.nan, np.float32)
    bits = xp.zeros((n + 7) // 8, np.uint8)
    be.dropout_forward(x, thr, scale, seed, call, y, bits)
    for start in (0, n - k):
        xt = host(x[start : start + k])
        yt = ref.dropout_forward(xt, thr, scale, seed, call, np.empty_like(xt), None, start)
        same(f"big dropout output at element {start}", y[start : start + k], yt)
        keep = ref.philox_words(k, seed, call, start) >= np.uint32(thr)
        same(
            f"big dropout bitmask at byte {start // 8}",
            bits[start // 8 : (start + k) // 8],
            np.packbits(keep, bitorder="little"),
        )
    check("big dropout: no element left unwritten", not bool(xp.isnan(y).any()))
    del y, bits
    x3 = x.reshape(rows, ch, length)
    mean, var = be.channel_moments(x3)
    m64 = x3.mean(axis=(0, 2), dtype=np.float64)
    close(f"big BN channel mean over {x3.size} elements", mean, host(m64), 1e-7)
    v64 = xp.empty(ch, np.float64)
    for c0 in range(0, ch, 32):  # per channel slab: bounded float64 temporaries
        v64[c0 : c0 + 32] = x3[:, c0 : c0 + 32].var(axis=(0, 2), dtype=np.float64)
    close("big BN channel var", var, host(v64), 1e-6)
    sc = dev(RNG.random(ch) + 0.5)
    sh = dev(RNG.standard_normal(ch))
    out = xp.full(x3.shape, np.nan, np.float32)
    be.channel_affine(x3, mean, sc, sh, out)
    for sl in (slice(0, 2), slice(rows - 2, rows)):
        xt = host(x3[sl])
        et = ref.channel_affine(xt, host(mean), host(sc), host(sh), np.empty_like(xt))
        close(f"big BN affine rows {sl.start}:{sl.stop}", out[sl], et, 1e-6)
    check("big BN affine: no element left unwritten", not bool(xp.isnan(out).any()))
    del out, x3
    rows2 = n // length
    x2 = x.reshape(rows2, length)
    o2 = xp.full(x2.shape, np.nan, np.float32)
    _, m2, r2 = be.layer_norm_forward(x2, None, None, EPS, o2)
    m = min(64, rows2 // 2)
    for sl in (slice(0, m), slice(rows2 - m, rows2)):
        xt = host(x2[sl])
        et, em, er = ref.layer_norm_forward(xt, None, None, EPS, np.empty_like(xt))
        close(f"big LN rows {sl.start}:{sl.stop}", o2[sl], et, 1e-6)
        close(f"big LN rstd rows {sl.start}:{sl.stop}", r2[sl], er, 1e-10)
    check("big LN: no element left unwritten", not bool(xp.isnan(o2).any()))
    del o2, x2, x
    if not SIM:
        cp.get_default_memory_pool().free_all_blocks()


log("== correctness against the numpy reference backend")
check_batchnorm(BN, "3d")
check_batchnorm(BN2, "2d")
check_layernorm(LN)
check_dropout(DO, 0.1, np.float32)
check_dropout((DO[0] // 2, DO[1] + 3), 0.5, np.float64)
if SIM:
    check_big(rows=5, ch=4, length=8, k=64)  # the same code on a tiny shape
elif not args.no_big:
    check_big()
t_correct = time.perf_counter() - T_START
log(f"   (correctness and cold start took {t_correct:.0f} s)")

# ----------------------------------------------------------------------------- benchmark
log("== benchmark (float32)")
# The headline inputs (32-34 MB) fit in an H200's 60 MB L2: every timed op rotates over ROT
# sets of inputs and outputs so that repeated calls measure HBM, not the cache.
ROT = 1 if SIM else 4
if SIM:

    def _spin(ns):  # nothing to pre-fill on the host
        pass

    def timed(fn, reps, k):
        t = time.perf_counter()
        for i in range(reps):
            fn((k + i) % ROT)
        return (time.perf_counter() - t) / reps
else:
    _spin_k = cp.RawKernel(
        r"""
extern "C" __global__ void spin(unsigned long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); } while (t - t0 < ns);
}""",
        "spin",
    )

    def _spin(ns):
        _spin_k((1,), (1,), (np.uint64(min(int(ns), 400_000_000)),))

    def timed(fn, reps, k):
        ev0, ev1 = cp.cuda.Event(), cp.cuda.Event()
        ev0.record()
        for i in range(reps):
            fn((k + i) % ROT)
        ev1.record()
        ev1.synchronize()
        return cp.cuda.get_elapsed_time(ev0, ev1) / 1e3 / reps


def measure(fn, reps=args.reps, trials=args.trials):
    """(device s/call with the queue pre-filled, host s/call to enqueue, back-to-back s/call).

    ``fn(i)`` runs the op on input set ``i`` (of ROT).
    """
    for i in range(ROT + 2):
        fn(i % ROT)
    sync()
    t = time.perf_counter()
    for i in range(reps):
        fn(i % ROT)
    t_host = (time.perf_counter() - t) / reps
    sync()
    t_b2b = timed(fn, reps, 1)
    devs = []
    for k in range(trials):
        _spin(reps * t_host * 1.5e9 + 200_000)  # the GPU waits while the host enqueues
        devs.append(timed(fn, reps, k))
    sync()
    return statistics.median(devs), t_host, t_b2b


COPY: dict = {}


def copy_time(nbytes):
    """Seconds for a same-run CuPy device-to-device copy moving ``nbytes`` (read + write)."""
    key = int(nbytes)
    if key not in COPY:
        half = max(1, key // 8)  # float32 elements: half the bytes read, half written
        src = [xp.ones(half, np.float32) for _ in range(ROT)]
        dst = [xp.empty(half, np.float32) for _ in range(ROT)]
        COPY[key] = measure(lambda i: xp.copyto(dst[i], src[i]))[0]
    return COPY[key]


TABLE: list = []
PEAK = 4.8e12


def bench(name, kernels, fn, nbytes, peer=None, peer_name=None, optional=False):
    """Time ``fn``; an exception fails the check unless ``optional`` (an experiment)."""
    try:
        t_dev, t_host, t_b2b = measure(fn)
    except Exception as exc:  # noqa: BLE001
        if optional:
            log(f"  {name}: not possible here ({type(exc).__name__}: {str(exc)[:160]})")
            return None
        traceback.print_exc()
        check(f"bench {name}: raised", False, f"{type(exc).__name__}: {exc}")
        return None
    t_copy = copy_time(nbytes)
    row = {
        "op": name,
        "kernels": kernels,
        "mb": nbytes / 1e6,
        "dev_us": t_dev * 1e6,
        "host_us": t_host * 1e6,
        "b2b_us": t_b2b * 1e6,
        "gbps": nbytes / t_dev / 1e9,
        "copy_share": t_copy / t_dev,
        "peak_share": nbytes / t_dev / PEAK,
        "copy_us": t_copy * 1e6,
        "peer": peer_name,
        "peer_us": None,
    }
    if peer is not None:
        try:
            row["peer_us"] = measure(peer)[0] * 1e6
        except Exception as exc:  # noqa: BLE001
            log(f"  peer {peer_name} of {name} raised {type(exc).__name__}: {exc}")
    TABLE.append(row)
    RESULTS["bench"].append(row)
    log(
        f"  {name:24s} dev {row['dev_us']:9.1f} us  host {row['host_us']:8.1f} us  "
        f"{row['gbps']:7.1f} GB/s  {row['copy_share']:6.1%} of copy"
        + (f"  peer {row['peer_us']:.1f} us" if row["peer_us"] else "")
    )
    return row


torch = None
if not SIM and not args.no_torch:
    try:
        import torch as _torch

        if _torch.cuda.is_available():
            torch = _torch
    except Exception:  # noqa: BLE001
        torch = None


def tt(a):
    return torch.from_dlpack(a)


def rot(shape, dtype=np.float32, fill=None):
    """ROT device arrays: standard-normal data, or ``fill``, or uninitialised."""
    if fill == "empty":
        return [xp.empty(shape, dtype) for _ in range(ROT)]
    return [dev(RNG.standard_normal(shape, dtype=np.float32).astype(dtype)) for _ in range(ROT)]


f32 = np.float32
# --- BatchNorm1d (N, C, L)
X, DY, OUT = rot(BN), rot(BN), rot(BN, fill="empty")
n_el = X[0].size
c = BN[1]
w, b = dev(RNG.random(c).astype(f32) + 0.5), dev(RNG.standard_normal(c).astype(f32))
w64, b64 = w.astype(np.float64), b.astype(np.float64)
rm, rv = xp.zeros(c, f32), xp.ones(c, f32)
mean, var = be.channel_moments(X[0])
rstd = (var + EPS) ** -0.5
scale, shift = rstd * w64, b64 - mean * rstd * w64
ab, bb, cb_ = rstd.copy(), rstd * 0.1, rstd * 0.0


def cupy_bn_fwd(i):
    x = X[i]
    m = x.mean(axis=(0, 2))
    v = x.var(axis=(0, 2))
    s = w / xp.sqrt(v + EPS)
    return x * s[None, :, None] + (b - m * s)[None, :, None]


def cupy_bn_bwd(i):
    x, dy = X[i], DY[i]
    m = x.mean(axis=(0, 2))[None, :, None]
    xmu = x - m
    sdy = dy.sum(axis=(0, 2))
    sdyx = (dy * xmu).sum(axis=(0, 2))
    r = f32(1.0) / xp.sqrt(x.var(axis=(0, 2)) + EPS)
    k = f32(BN[0] * BN[2])
    return (w * r)[None, :, None] * (
        dy - (sdy / k)[None, :, None] - xmu * (sdyx * r * r / k)[None, :, None]
    )


bench("bn.moments", "_partials+_moments_merge", lambda i: be.channel_moments(X[i]), 4 * n_el)
bench(
    "bn.affine",
    "_affine_kernel",
    lambda i: be.channel_affine(X[i], mean, scale, shift, OUT[i]),
    8 * n_el,
)
bench(
    "bn.fwd.train",
    "F.batch_norm",
    lambda i: F.batch_norm(X[i], rm, rv, w, b, training=True, out=OUT[i], backend="cuda"),
    12 * n_el,
    cupy_bn_fwd,
    "cupy",
)
bench(
    "bn.fwd.eval",
    "F.batch_norm",
    lambda i: F.batch_norm(X[i], rm, rv, w, b, training=False, out=OUT[i], backend="cuda"),
    8 * n_el,
)
bench(
    "bn.bwd.reduce",
    "_partials+column_sums2",
    lambda i: be.channel_backward_reduce(DY[i], X[i], mean),
    8 * n_el,
)
bench(
    "bn.bwd.elemt",
    "_backward_elemt_kernel",
    lambda i: be.channel_backward_elemt(DY[i], X[i], mean, ab, bb, cb_, OUT[i]),
    12 * n_el,
)
bench(
    "bn.bwd",
    "F.batch_norm_backward",
    lambda i: F.batch_norm_backward(DY[i], X[i], mean, rstd, w, backend="cuda"),
    20 * n_el,
    cupy_bn_bwd,
    "cupy",
)
bench(
    "bn.bwd.whole",
    "be.batch_norm_backward",
    lambda i: be.batch_norm_backward(DY[i], X[i], mean, rstd, w, True, OUT[i]),
    20 * n_el,
    cupy_bn_bwd,
    "cupy",
)
bench(
    "bn.bwd.whole.eval",
    "be.batch_norm_backward",
    lambda i: be.batch_norm_backward(DY[i], X[i], mean, rstd, w, False, OUT[i]),
    16 * n_el,
)
if torch is not None:
    XT, wt_, bt_ = [tt(a) for a in X], tt(w), tt(b)
    rmt, rvt = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")
    bench(
        "torch.bn.fwd.train",
        "torch",
        lambda i: torch.nn.functional.batch_norm(XT[i], rmt, rvt, wt_, bt_, training=True),
        12 * n_el,
    )
layer = normdrop.BatchNorm1d(c).to("cuda")
bench("bn.layer.fwd.train", "BatchNorm1d()", lambda i: layer(X[i]), 12 * n_el)


def _private():
    """The backend's modules, to launch one kernel alone (None if their layout changed)."""
    try:
        from normdrop.backends.cuda_backend import (
            _arrays,
            _batchnorm,
            _batchnorm_backward,
            _channels,
            _layernorm,
            _reduce,
            _runtime,
        )

        return _arrays, _batchnorm, _batchnorm_backward, _channels, _layernorm, _reduce, _runtime
    except ImportError as exc:
        log(f"  (single-kernel timings skipped: {exc})")
        return None


@guarded("single BN kernels")
def bench_bn_kernels():
    mods = _private()
    if mods is None:
        return
    ar, bnm, bbm, chm, _, rdm, rt = mods
    n, ch, ln_ = BN
    grid, block = chm.partial_geometry(n, ch, ln_)
    s = rt.stream()
    parts = xp.empty((2, grid[1], ch), np.float64)
    pk = parts
    nomean = ar.kernel_in(ar.placeholder(np.float64))
    a1 = [(ar.kernel_in(X[i]), ar.kernel_in(X[i]), nomean, False, pk) for i in range(ROT)]
    bench(
        "k._partials (stats)",
        f"grid {grid} block {block}",
        lambda i: chm._partials_kernel[grid, block, s](*a1[i]),
        4 * n_el,
    )
    mv = xp.empty((2, ch), np.float64)
    a2 = (ar.kernel_in(X[0]), ar.kernel_in(parts), mv)
    g2, b2 = rdm.column_geometry(ch)
    bench(
        "k._moments_merge",
        f"grid {g2} block {b2}",
        lambda i: bnm._moments_merge_kernel[g2, b2, s](*a2),
        8 * (2 * grid[1] + 2) * ch,
    )
    a3 = [
        (ar.kernel_in(DY[i]), ar.kernel_in(X[i]), ar.kernel_in(mean), True, pk) for i in range(ROT)
    ]
    bench(
        "k._partials (backward)",
        f"grid {grid} block {block}",
        lambda i: chm._partials_kernel[grid, block, s](*a3[i]),
        8 * n_el,
    )
    bench(
        "k.column_sums2 (bn)",
        "_reduce.column_sums2",
        lambda i: rdm.column_sums2(parts, mv[0], mv[1], s),
        8 * (2 * grid[1] + 2) * ch,
    )
    coef, grads = xp.empty((3, ch), np.float64), xp.empty((2, ch), np.float32)
    a4 = (ar.kernel_in(parts), ar.kernel_in(rstd), ar.kernel_in(w))
    a4 += (bbm.MERGE_TRAINING | bbm.MERGE_HAS_WEIGHT, float(n * ln_), coef, grads[0], grads[1])
    bench(
        "k._backward_merge",
        f"grid {g2} block {b2}",
        lambda i: bbm._backward_merge_kernel[g2, b2, s](*a4),
        8 * (2 * grid[1] + 5) * ch,
    )


bench_bn_kernels()
X = DY = OUT = XT = None  # free them
# --- BatchNorm1d channels-last (N, C)
X2, OUT2 = rot(BN2), rot(BN2, fill="empty")
bench(
    "bn2d.moments",
    "_moments_partials+_moments_merge",
    lambda i: be.channel_moments(X2[i].reshape(BN2[0], BN2[1], 1)),
    4 * X2[0].size,
)
bench(
    "bn2d.fwd.train",
    "F.batch_norm",
    lambda i: F.batch_norm(X2[i], training=True, out=OUT2[i], backend="cuda"),
    12 * X2[0].size,
    lambda i: (X2[i] - X2[i].mean(0)) / xp.sqrt(X2[i].var(0) + EPS),
    "cupy",
)
X2 = OUT2 = None
# --- LayerNorm (R, D)
XL, DYL, OUTL = rot(LN), rot(LN), rot(LN, fill="empty")
d = LN[1]
n_el = XL[0].size
wl, bl = dev(RNG.random(d).astype(f32) + 0.5), dev(RNG.standard_normal(d).astype(f32))
wl64, bl64 = wl.astype(np.float64), bl.astype(np.float64)
_, meanl, rstdl = be.layer_norm_forward(XL[0], wl64, bl64, EPS, OUTL[0])


def cupy_ln_fwd(i):
    x = XL[i]
    mu = x.mean(axis=1, keepdims=True)
    r = 1 / xp.sqrt(x.var(axis=1, keepdims=True) + EPS)
    return (x - mu) * r * wl + bl


def cupy_ln_bwd(i):
    x, dy = XL[i], DYL[i]
    mu = x.mean(axis=1, keepdims=True)
    r = 1 / xp.sqrt(x.var(axis=1, keepdims=True) + EPS)
    xhat = (x - mu) * r
    g = dy * wl
    dx = r * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


bench(
    "ln.fwd.kernel",
    "_forward_kernel",
    lambda i: be.layer_norm_forward(XL[i], wl64, bl64, EPS, OUTL[i]),
    8 * n_el,
    cupy_ln_fwd,
    "cupy",
)
bench(
    "ln.fwd",
    "F.layer_norm",
    lambda i: F.layer_norm(XL[i], d, wl, bl, EPS, out=OUTL[i], backend="cuda"),
    8 * n_el,
)
lnl = normdrop.LayerNorm(d).to("cuda")
bench("ln.layer.fwd", "LayerNorm() f32 params", lambda i: lnl(XL[i]), 8 * n_el)
bench(
    "ln.bwd.kernel+grads",
    "_backward_kernel+column_sums2",
    lambda i: be.layer_norm_backward(DYL[i], XL[i], meanl, rstdl, wl64, OUTL[i], True),
    12 * n_el,
    cupy_ln_bwd,
    "cupy",
)
bench(
    "ln.bwd.kernel.nograds",
    "_backward_kernel",
    lambda i: be.layer_norm_backward(DYL[i], XL[i], meanl, rstdl, wl64, OUTL[i], False),
    12 * n_el,
)
bench(
    "ln.bwd",
    "F.layer_norm_backward",
    lambda i: F.layer_norm_backward(DYL[i], XL[i], d, meanl, rstdl, wl, backend="cuda"),
    12 * n_el,
)
bench("ln.row_moments", "_row_moments_kernel", lambda i: be.row_moments(XL[i]), 4 * n_el)
if torch is not None:
    XLT, wlt, blt = [tt(a) for a in XL], tt(wl), tt(bl)
    bench(
        "torch.ln.fwd",
        "torch",
        lambda i: torch.nn.functional.layer_norm(XLT[i], (d,), wlt, blt, EPS),
        8 * n_el,
    )


@guarded("single LN kernels")
def bench_ln_kernels():
    mods = _private()
    if mods is None:
        return
    ar, _, _, _, lnm, rdm, rt = mods
    rows, feats = LN
    blocks, threads = lnm._geometry(rows, feats)
    prow = blocks * threads[1]
    s = rt.stream()
    partial = xp.empty((2, prow, feats), np.float64)
    a1 = [
        (
            ar.kernel_in(DYL[i]),
            ar.kernel_in(XL[i]),
            ar.kernel_in(meanl),
            ar.kernel_in(rstdl),
            ar.kernel_in(wl64),
            True,
            True,
            OUTL[i],
            partial,
        )
        for i in range(ROT)
    ]
    bench(
        "k.ln_backward(grads)",
        f"grid {blocks} block {threads}",
        lambda i: lnm._backward_kernel[blocks, threads, s](*a1[i]),
        12 * n_el + 32 * prow * feats,
    )
    dw_, db_ = xp.empty(feats, np.float64), xp.empty(feats, np.float64)
    bench(
        "k.column_sums2 (ln)",
        "_reduce.column_sums2",
        lambda i: rdm.column_sums2(partial, dw_, db_, s),
        8 * (2 * prow + 2) * feats,
    )


bench_ln_kernels()
XL = DYL = OUTL = XLT = None
# --- Dropout
XD, OUTD = rot(DO), rot(DO, fill="empty")
n_el = XD[0].size
p = 0.1
thr, dscale = dropout_threshold(p), f32(1 / (1 - p))
BITS = [xp.empty(((n_el + 7) // 8,), np.uint8) for _ in range(ROT)]
for i_ in range(ROT):
    be.dropout_forward(XD[i_], thr, dscale, 1, i_, OUTD[i_], BITS[i_])
KEEP = [dev(host(F.dropout_mask(DO, p, seed=1, call=i_, backend="cuda"))) for i_ in range(ROT)]
bench(
    "do.fwd.bitmask",
    "_dropout_bitmask_kernel",
    lambda i: be.dropout_forward(XD[i], thr, dscale, 1, 0, OUTD[i], BITS[i]),
    8 * n_el + n_el // 8,
    lambda i: xp.where(KEEP[i], XD[i] * dscale, f32(0)),
    "cupy where(mask)",
)
bench(
    "do.fwd.nobitmask",
    "_dropout_kernel",
    lambda i: be.dropout_forward(XD[i], thr, dscale, 1, 0, OUTD[i], None),
    8 * n_el,
    (lambda i: xp.where(xp.random.random(DO, dtype=f32) >= f32(p), XD[i] * dscale, f32(0)))
    if not SIM
    else None,
    "cupy random+where",
)
bench(
    "do.bwd.bitmask",
    "_apply_bitmask_kernel",
    lambda i: be.dropout_apply_bitmask(XD[i], BITS[i], dscale, OUTD[i]),
    8 * n_el + n_el // 8,
    lambda i: xp.where(
        xp.unpackbits(BITS[i], bitorder="little").reshape(DO).astype(bool), XD[i] * dscale, f32(0)
    ),
    "cupy unpackbits+where",
)
bench("do.mask", "_words_kernel (mask)", lambda i: be.dropout_mask(n_el, thr, 1, i), n_el)
bench("do.philox_words", "_words_kernel", lambda i: be.philox_words(n_el, 1, i), 4 * n_el)
bench(
    "do.fwd",
    "F.dropout",
    lambda i: F.dropout_with_bitmask(XD[i], p, seed=1, call=0, out=OUTD[i], backend="cuda"),
    8 * n_el + n_el // 8,
)
if torch is not None:
    XDT = [tt(a) for a in XD]
    bench("torch.do.fwd", "torch", lambda i: torch.nn.functional.dropout(XDT[i], p, True), 8 * n_el)
XD = OUTD = BITS = KEEP = XDT = None

# --- specialisations compiled in this process (re-typing / recompiles)
spec = {}
for modname in (
    "_batchnorm",
    "_batchnorm_backward",
    "_channels",
    "_layernorm",
    "_dropout",
    "_dropout_add_norm",
    "_reduce",
):
    mod = sys.modules.get(f"normdrop.backends.cuda_backend.{modname}")
    for k, v in vars(mod or {}).items():
        if (
            hasattr(v, "overloads")
            and hasattr(v, "py_func")
            and v.py_func.__module__ == mod.__name__
        ):
            if not getattr(v, "targetoptions", {}).get("device", False):
                spec[f"{modname}.{k}"] = len(v.overloads)
RESULTS["env"]["specialisations"] = spec
log(f"  kernel specialisations compiled in this run: {sum(spec.values())} over {len(spec)} kernels")

# ----------------------------------------------------------------------------- table
log("")
log(
    f"device {RESULTS['env'].get('gpu', 'simulator')}; copy = same-run CuPy copy of the same bytes;"
    " dev = CUDA-event time per call, queue pre-filled; host = Python time to enqueue one call;"
    " b2b = per call in a back-to-back loop;"
    " bound = host when enqueueing takes longer than the GPU;"
    " x peer = peer time / ours (> 1: ours faster); k.* = one kernel launched alone"
)
hdr = (
    f"{'op':24s} {'kernels':30s} {'MB':>7s} {'dev us':>9s} {'GB/s':>7s} {'%copy':>6s} "
    f"{'%4.8TB':>6s} {'host us':>8s} {'b2b us':>8s} {'bound':>5s} {'peer us':>8s} {'x peer':>6s}"
)
log(hdr)
log("-" * len(hdr))
for r in TABLE:
    peer = (
        f"{r['peer_us']:8.1f} {r['peer_us'] / r['dev_us']:6.2f}"
        if r["peer_us"]
        else f"{'':8s} {'':6s}"
    )
    log(
        f"{r['op']:24s} {r['kernels'][:30]:30s} {r['mb']:7.1f} {r['dev_us']:9.1f} {r['gbps']:7.1f} "
        f"{r['copy_share']:6.1%} {r['peak_share']:6.1%} {r['host_us']:8.1f} {r['b2b_us']:8.1f} "
        f"{'host' if r['host_us'] > r['dev_us'] else 'gpu':>5s} {peer}"
    )
if COPY:
    big = max(COPY)
    log(f"copy reference: {big / COPY[big] / 1e9:.0f} GB/s (CuPy copy of {big / 1e6:.0f} MB)")

if args.json:
    with open(args.json, "w") as fh:
        json.dump(RESULTS, fh, indent=1, default=str)

ok_checks = sum(1 for c_ in RESULTS["checks"] if c_["ok"])
head = {r["op"]: r for r in TABLE}


def share(op):
    if op not in head:
        return "n/a"
    r = head[op]
    return (
        f"{r['copy_share']:.0%} ({r['dev_us']:.0f} us on the GPU, "
        f"{r['b2b_us']:.0f} us per call in a loop)"
    )


summary = (
    f"checks {ok_checks}/{len(RESULTS['checks'])}; of copy bandwidth: BN fwd train "
    f"{share('bn.fwd.train')}, LN fwd {share('ln.fwd.kernel')}, Dropout fwd "
    f"{share('do.fwd.bitmask')}; {time.perf_counter() - T_START:.0f} s"
    + (" (SIMULATOR dry run)" if SIM else "")
)
if FAILED:
    log(
        f"GPU_CHECK FAIL: {len(FAILED)} failed ({', '.join(FAILED[:6])}"
        f"{', ...' if len(FAILED) > 6 else ''}); {summary}"
    )
    sys.exit(1)
log(f"GPU_CHECK PASS: {summary}")
