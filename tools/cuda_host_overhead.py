#!/usr/bin/env python3
"""Python time the cuda backend adds around its kernel launches, measured without a GPU.

Runs the backend on the CUDA simulator with every kernel launch replaced by a stub
that only counts, so what is timed is normdrop's own per-call work: the functional
layer's checks, the launchers (geometry, allocations, placeholders, stream lookup)
and the launch wrapper up to numba-cuda. Not included: numba-cuda's own launch path
(argument typing and marshalling, ``cuLaunchKernel``) and CuPy's allocator, which on a
GPU cost more than the NumPy allocations that stand in for them here; on a GPU,
``gpu_check.py`` reports the whole host time per call (``host us``).

Prints one line per operation: microseconds per call (the best round, the one least disturbed
by other load), launches and array allocations per call.
Usage: ``python tools/cuda_host_overhead.py [--reps N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import time

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402

import normdrop  # noqa: E402
from normdrop import functional as F  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=2000, help="calls per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (best is reported)")
    args = ap.parse_args()

    be = normdrop.get_backend("cuda")
    from normdrop.backends import cuda_backend

    counts = {"launches": 0, "allocs": 0}

    def stub_launch(fn, grid, block, s, *kernel_args):
        counts["launches"] += 1

    def counting(real):
        def alloc(*a, **k):
            counts["allocs"] += 1
            return real(*a, **k)

        return alloc

    empty = counting(cuda_backend._arrays.empty)  # every allocation goes through it here
    for info in pkgutil.iter_modules(cuda_backend.__path__):
        module = importlib.import_module(f"{cuda_backend.__name__}.{info.name}")
        if hasattr(module, "launch"):
            module.launch = stub_launch
        if hasattr(module, "empty"):
            module.empty = empty

    rng = np.random.default_rng(0)
    f32 = np.float32
    x3 = rng.standard_normal((64, 256, 8)).astype(f32)
    c = x3.shape[1]
    w, b = np.ones(c, f32), np.zeros(c, f32)
    rm, rv = np.zeros(c, f32), np.ones(c, f32)
    mean, rstd = np.zeros(c), np.ones(c)
    out3 = np.empty_like(x3)
    x2 = rng.standard_normal((64, 1024)).astype(f32)
    out2 = np.empty_like(x2)
    wl, bl = np.ones(1024, f32), np.zeros(1024, f32)
    ml, rl = np.zeros(64), np.ones(64)
    bits = np.empty(x2.size // 8, np.uint8)
    bn_layer = normdrop.BatchNorm1d(c).to("cuda")
    ln_layer = normdrop.LayerNorm(1024).to("cuda")
    do_layer = normdrop.Dropout(0.1).to("cuda")
    thr = 429496729

    ops = {
        "be.batch_norm_forward (train)": lambda: be.batch_norm_forward(
            x3, rm, rv, w, b, True, True, 0.1, 1e-5, out3
        ),
        "be.batch_norm_backward (train)": lambda: be.batch_norm_backward(
            x3, x3, mean, rstd, w, True, out3
        ),
        "be.layer_norm_forward": lambda: be.layer_norm_forward(x2, wl, bl, 1e-5, out2),
        "be.layer_norm_backward": lambda: be.layer_norm_backward(x2, x2, ml, rl, wl, out2, True),
        "be.dropout_forward": lambda: be.dropout_forward(x2, thr, f32(1.1), 1, 0, out2, bits),
        "F.batch_norm (train)": lambda: F.batch_norm(
            x3, rm, rv, w, b, training=True, out=out3, backend=be
        ),
        "F.batch_norm_backward": lambda: F.batch_norm_backward(
            x3, x3, mean, rstd, w, out=out3, backend=be
        ),
        "F.layer_norm": lambda: F.layer_norm(x2, 1024, wl, bl, out=out2, backend=be),
        "F.dropout": lambda: F.dropout(x2, 0.1, seed=1, out=out2, backend=be),
        "BatchNorm1d() train": lambda: bn_layer(x3),
        "LayerNorm()": lambda: ln_layer(x2),
        "Dropout()": lambda: do_layer(x2),
    }
    print(f"{'operation':34s} {'us/call':>8s} {'launches':>9s} {'allocs':>7s}")
    for name, fn in ops.items():
        try:
            fn()
        except AttributeError as exc:  # a backend without this whole-layer kernel
            print(f"{name:34s} n/a ({exc})")
            continue
        times = []
        for _ in range(args.rounds):
            counts.update(launches=0, allocs=0)
            t = time.perf_counter()
            for _ in range(args.reps):
                fn()
            times.append((time.perf_counter() - t) / args.reps)
        per = {k: v / args.reps for k, v in counts.items()}  # the last round's counts
        print(f"{name:34s} {min(times) * 1e6:8.1f} {per['launches']:9.0f} {per['allocs']:7.0f}")


if __name__ == "__main__":
    main()
