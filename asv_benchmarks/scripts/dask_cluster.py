"""BatchNorm1d train forward on a 2 GiB array: Dask on a local cluster vs Numba in memory.

Run: ``python asv_benchmarks/scripts/dask_cluster.py`` (needs ``normdrop[dask]``).
The Dask array is generated and persisted on the workers first, so the timing
covers the layer call (statistics computed by a tree reduction, running
statistics updated) and then materialising the normalised output on the workers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import normdrop


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _in_memory_time(shape: tuple[int, ...], channels: int, repeat: int) -> float:
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    bn = normdrop.BatchNorm1d(channels)
    bn(x)  # compile
    return _best(lambda: bn(x), repeat)


def main() -> None:
    """Print one table row per configuration."""
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="array size in GiB (float32)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    channels, length = 256, 256
    n = int(args.gib * 2**30 / 4 / channels / length)
    shape, chunks = (n, channels, length), (max(1, n // 32), channels, length)
    gib = np.prod(shape) * 4 / 2**30

    in_memory = _in_memory_time(shape, channels, args.repeat)

    rows = [("numba, in memory", in_memory, in_memory)]
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="6GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        xd = da.random.default_rng(0).standard_normal(shape, chunks=chunks, dtype=np.float32)
        xd = xd.persist()
        wait(xd)
        bn_d = normdrop.BatchNorm1d(channels)
        y = bn_d(xd)  # warm up the workers (compile the per-block kernels)
        wait(y.persist())
        del y
        stats = _best(lambda: bn_d(xd), args.repeat)

        def full():
            out = bn_d(xd).persist()
            wait(out)

        total = _best(full, args.repeat)
        rows.append((f"dask, LocalCluster {args.workers} workers x 1 thread", stats, total))
        client.cancel(xd)

    print(f"BatchNorm1d(256) train forward, float32 {shape} = {gib:.2f} GiB, chunks {chunks}")
    print(f"{'configuration':<40} {'layer call':>11} {'+ output on workers':>20} {'GB/s':>6}")
    for name, call, total in rows:
        rate = 2 * gib * 2**30 / total / 1e9
        print(f"{name:<40} {call:>10.3f}s {total:>19.3f}s {rate:>6.2f}")


if __name__ == "__main__":
    main()
