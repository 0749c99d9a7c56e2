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

The contenders are ``normdrop bench``'s operations (:mod:`normdrop.bench.ops`) and
memory copies (:mod:`normdrop.bench.memory`), at p = 0.1 (``FUSED_P``).

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

from normdrop.bench import memory, ops, peers
from normdrop.bench.inputs import FUSED_P, make_input
from normdrop.bench.target import Target

COPY_BYTES = memory.MEMORY_BYTES
#: The contenders: ``normdrop bench``'s fused and three-calls operations.
FUSED, THREE_CALLS = ops.DROPOUT_ADD_LN, ops.DROPOUT_ADD_LN_THREE_CALLS


def _contenders(rows: int, features: int, torch: Any) -> dict[str, Callable[[], Any]]:
    x = make_input((rows, features), "float32")
    target = Target.named(None)
    found = {"fused": FUSED.build(x, target), "three calls": THREE_CALLS.build(x, target)}
    if torch is not None and FUSED.torch is not None:
        found["torch"] = FUSED.torch(torch.from_numpy(x))
    return found


def main() -> None:
    """Parse the options, time the contenders in interleaved rounds, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--features", type=int, default=1024)
    args = parser.parse_args()
    torch = peers.import_torch()
    if torch is not None:
        torch.set_num_threads(numba.get_num_threads())
        torch.set_grad_enabled(False)
    copies = memory.copy_thunks(COPY_BYTES)
    contenders = {**_contenders(args.rows, args.features, torch), **copies}
    for fn in contenders.values():
        fn()  # compile and warm up
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    speed = memory.MemorySpeed(COPY_BYTES, {name: best[name] for name in copies}).bytes_per_s
    moved = FUSED.passes * args.rows * args.features * 4
    print(f"float32 ({args.rows}, {args.features}), p={FUSED_P}, numba threads "
          f"{numba.get_num_threads()}, best of {args.rounds} interleaved rounds")  # fmt: skip
    for name, t in best.items():
        print(f"  {name:12s} {t * 1e3:8.2f} ms")
    print(f"  fused vs three calls: {best['three calls'] / best['fused']:.2f}x")
    if "torch" in best:
        print(f"  fused vs torch:       {best['torch'] / best['fused']:.2f}x")
    print(f"  fused moves {moved / best['fused'] / 1e9:.1f} GB/s; memory speed "
          f"{speed / 1e9:.1f} GB/s: {moved / best['fused'] / speed:.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
