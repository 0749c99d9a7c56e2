"""asv benchmarks of the cuda backend on a GPU: device time from CUDA events, with peers.

Each case of ``normdrop bench`` (the same shapes) is tracked as the device time
per call measured with CUDA events on CuPy's current stream, next to a same-run
CuPy copy of the same bytes and a plain-CuPy implementation of the same math
(see :mod:`normdrop._bench_cuda`). Skipped where the cuda backend has no GPU (the
CUDA simulator is not timed). Nothing touches CUDA at import time: asv forks each
benchmark from a server process, and a CUDA context does not survive a fork.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from normdrop import bench

CASES = [c.name for c in bench.CASES]


class CudaEvents:
    """The cuda backend's device time per call (s), float32, CUDA events."""

    params = [CASES]
    param_names = ["case"]
    timeout = 300
    number = 1
    repeat = 1

    def setup(self, case: str) -> None:
        from normdrop import _bench_cuda

        if not _bench_cuda.gpu_present():
            raise NotImplementedError("the cuda backend has no GPU here")
        import cupy

        import normdrop

        spec = next(c for c in bench.CASES if c.name == case)
        x_host = np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)
        target = bench.Target(normdrop.get_backend("cuda"), "cuda")
        self.fn = spec.build(x_host, target)
        nbytes = spec.passes * x_host.nbytes
        half = int(nbytes // 8)
        src, dst = cupy.ones(half, np.float32), cupy.empty(half, np.float32)
        self.copy = lambda: cupy.copyto(dst, src)
        x = cupy.asarray(x_host)
        self.peer = _bench_cuda.peers(case, x, cupy, bench.DROPOUT_P, bench.EPS).get("cupy")
        self.timer = _bench_cuda.cuda_event_timer

    def track_device_time(self, case: str) -> float:
        return self.timer(self.fn, 20)

    track_device_time.unit = "seconds"  # type: ignore[attr-defined]

    def track_share_of_copy_bandwidth(self, case: str) -> float:
        return self.timer(self.copy, 20) / self.timer(self.fn, 20)

    track_share_of_copy_bandwidth.unit = "fraction"  # type: ignore[attr-defined]

    def track_cupy_peer_time(self, case: str) -> Any:
        return float("nan") if self.peer is None else self.timer(self.peer, 20)

    track_cupy_peer_time.unit = "seconds"  # type: ignore[attr-defined]
