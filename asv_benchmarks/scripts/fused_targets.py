"""Side-by-side timing of the fused dropout + add + LayerNorm forward (issue 14's targets).

Times, interleaved in rounds so that machine noise hits every contender alike, and
reports the best of each:

* ``fused``: ``functional.dropout_add_layer_norm`` keeping its statistics and bitmask;
* ``three calls``: ``functional.dropout`` (with its bitmask), ``+ residual``,
  ``functional.layer_norm`` (with its statistics);
* ``torch``: PyTorch's ``native_dropout``, add and ``native_layer_norm`` on as many
  threads as Numba uses;
* the memory speed: the best of ``np.copyto`` and a 2-thread Numba copy of a 256 MiB
  array.

The fused op must move the bytes of reading ``x`` and ``residual`` and writing ``y``
and ``r``, plus the bitmask; its share of the memory speed is printed next to the
speed-ups. Run as ``python asv_benchmarks/scripts/fused_targets.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from normdrop import functional as F

COPY_BYTES = 256 * 2**20


@njit(parallel=True, nogil=True, cache=True)
def _copy_two_threads(src: np.ndarray, dst: np.ndarray) -> None:
    half = (src.size + 1) // 2
    for t in prange(2):
        lo = t * half
        hi = min(src.size, lo + half)
        dst[lo:hi] = src[lo:hi]


def _contenders(rows: int, features: int, p: float, torch: Any) -> dict[str, Callable[[], Any]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, features)).astype(np.float32)
    res = rng.standard_normal((rows, features)).astype(np.float32)
    w, b = np.ones(features, np.float32), np.zeros(features, np.float32)

    def fused() -> Any:
        return F.dropout_add_layer_norm_with_stats(x, res, features, w, b, p, seed=1)

    def three() -> Any:
        h, bitmask = F.dropout_with_bitmask(x, p, seed=1)
        return F.layer_norm_with_stats(h + res, features, w, b), bitmask

    src = np.ones(COPY_BYTES // 4, np.float32)
    dst = np.empty_like(src)

    def numba_copy() -> None:
        previous = numba.get_num_threads()
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        try:
            _copy_two_threads(src, dst)
        finally:
            numba.set_num_threads(previous)

    found: dict[str, Callable[[], Any]] = {
        "fused": fused,
        "three calls": three,
        "np.copyto": lambda: np.copyto(dst, src),
        "numba copy": numba_copy,
    }
    if torch is not None:
        xt, rt, wt, bt = (torch.from_numpy(a) for a in (x, res, w, b))
        aten = torch.ops.aten

        def torch_three() -> Any:
            h, mask = aten.native_dropout(xt, p, True)
            return aten.native_layer_norm(h + rt, [features], wt, bt, 1e-5), mask

        found["torch"] = torch_three
    return found


def main() -> None:
    """Parse the options, time the contenders in interleaved rounds, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--p", type=float, default=0.1)
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(numba.get_num_threads())
        torch.set_grad_enabled(False)
    except ImportError:
        torch = None
    contenders = _contenders(args.rows, args.features, args.p, torch)
    for fn in contenders.values():
        fn()  # compile and warm up
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    memory = 2 * COPY_BYTES / min(best["np.copyto"], best["numba copy"])
    moved = args.rows * args.features * (4 * 4 + 1 / 8)
    print(f"float32 ({args.rows}, {args.features}), p={args.p}, numba threads "
          f"{numba.get_num_threads()}, best of {args.rounds} interleaved rounds")  # fmt: skip
    for name, t in best.items():
        print(f"  {name:12s} {t * 1e3:8.2f} ms")
    print(f"  fused vs three calls: {best['three calls'] / best['fused']:.2f}x")
    if "torch" in best:
        print(f"  fused vs torch:       {best['torch'] / best['fused']:.2f}x")
    print(f"  fused moves {moved / best['fused'] / 1e9:.1f} GB/s; memory speed "
          f"{memory / 1e9:.1f} GB/s: {moved / best['fused'] / memory:.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
