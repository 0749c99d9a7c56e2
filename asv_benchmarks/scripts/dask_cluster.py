"""BatchNorm1d train forward on a 2 GiB array: Dask (threaded scheduler and a local cluster)
against Numba in memory, for several chunk sizes.

Run: ``python asv_benchmarks/scripts/dask_cluster.py`` (needs ``normdrop[dask]``);
``--help`` lists the options (size, chunk sizes, rounds, workers).

Each timing is one layer call (statistics computed by a tree reduction, running
statistics updated) plus materialising the normalised output: ``persist`` keeps
every output block in memory (in the process for the threaded scheduler, on the
workers for the cluster), so no block is gathered or concatenated. The Dask input
is in memory before timing starts: the threaded scheduler wraps the same NumPy
array as the in-memory run (``da.from_array``, no copy); the cluster (a fresh one
per configuration, spilling off, one untimed call first so that every worker has
loaded the kernels) generates and persists it on its workers. Configurations are
run interleaved, round after round, two calls each, and each row reports its best
time, since a shared machine is noisy.
GB/s counts the bytes the layer must move: the input read and the output written
(``2 x`` the array size).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import numpy as np

import normdrop

CHANNELS, LENGTH = 256, 256


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _chunks(n: int, mib: int) -> tuple[int, int, int]:
    rows = max(1, mib * 2**20 // (4 * CHANNELS * LENGTH))
    return (min(n, rows), CHANNELS, LENGTH)


def main() -> None:
    """Print one table row per configuration (best time over the rounds)."""
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="array size in GiB (float32)")
    parser.add_argument("--chunk-mib", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--workers", type=int, default=2, help="0: no LocalCluster")
    parser.add_argument("--threads", type=int, default=2, help="threaded scheduler threads")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = int(args.gib * 2**30 / 4 / CHANNELS / LENGTH)
    shape = (n, CHANNELS, LENGTH)
    nbytes = 4 * n * CHANNELS * LENGTH
    best: dict[str, float] = {}

    def record(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    bn = normdrop.BatchNorm1d(CHANNELS)
    bn(x)  # compile (or load) the kernels

    def threaded(mib: int) -> float:
        xd = da.from_array(x, chunks=_chunks(n, mib), name=False)  # no hashing of x
        with dask.config.set(scheduler="threads", num_workers=args.threads):
            bn_d = normdrop.BatchNorm1d(CHANNELS)
            seconds = min(_time(lambda: dask.persist(bn_d(xd))) for _ in range(2))
        gc.collect()
        return seconds

    def on_cluster(mib: int) -> float:
        # a fresh cluster per configuration: no worker memory left over from the last one
        with (
            dask.config.set(
                {
                    "distributed.worker.memory.target": False,
                    "distributed.worker.memory.spill": False,
                }
            ),
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
                memory_limit=f"{max(4, int(3 * args.gib / args.workers) + 2)}GiB",
            ) as cluster,
            Client(cluster) as client,
        ):
            rng = da.random.default_rng(0)
            xd = rng.standard_normal(shape, chunks=_chunks(n, mib), dtype=np.float32)
            xd = client.persist(xd)
            wait(xd)
            bn_d = normdrop.BatchNorm1d(CHANNELS)
            wait(client.persist(bn_d(xd)))  # load the kernels on every worker
            return min(_time(lambda: wait(client.persist(bn_d(xd)))) for _ in range(2))

    for _ in range(args.rounds):
        record("numba, in memory", min(_time(lambda: bn(x)) for _ in range(2)))
        for mib in args.chunk_mib:
            record(f"dask threads x{args.threads}, {mib} MiB chunks", threaded(mib))
            if args.workers:
                name = f"dask LocalCluster {args.workers}x1, {mib} MiB chunks"
                record(name, on_cluster(mib))

    reference = best["numba, in memory"]
    print(f"BatchNorm1d({CHANNELS}) train forward + output materialised, float32 {shape}")
    print(f"= {nbytes / 2**30:.2f} GiB, best of {args.rounds} interleaved rounds")
    print(f"{'configuration':<44} {'seconds':>8} {'GB/s':>6} {'vs numba':>9}")
    for name, seconds in best.items():
        rate = 2 * nbytes / seconds / 1e9
        print(f"{name:<44} {seconds:>8.3f} {rate:>6.2f} {reference / seconds:>8.0%}")


if __name__ == "__main__":
    main()
