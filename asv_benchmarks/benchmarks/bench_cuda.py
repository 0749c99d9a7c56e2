"""asv benchmarks of the cuda backend on a GPU: device time from CUDA events, with peers.

Each case of ``normdrop bench`` (the same shapes) is tracked as the device time
per call measured with CUDA events on CuPy's current stream, next to a same-run
CuPy copy of the same bytes and a plain-CuPy implementation of the same math
(see :mod:`normdrop.bench.cuda`). Skipped where the cuda backend has no GPU (the
CUDA simulator is not timed). Nothing touches CUDA at import time: asv forks each
benchmark from a server process, and a CUDA context does not survive a fork.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from normdrop.bench.cases import CASES, find_case
from normdrop.bench.inputs import DROPOUT_P, EPS
from normdrop.bench.target import Target

NAMES = [c.name for c in CASES if c.dtype == "float32"]


class CudaEvents:
    """The cuda backend's device time per call (s), float32, CUDA events."""

    params = [NAMES]
    param_names = ["case"]
    timeout = 300
    number = 1
    repeat = 1

    def setup(self, case: str) -> None:
        from normdrop.bench import cuda

        if not cuda.gpu_present():
            raise NotImplementedError("the cuda backend has no GPU here")
        import cupy

        spec = find_case(case, "float32")
        x_host = spec.make_input()
        self.fn = spec.build(x_host, Target.named("cuda"))
        nbytes = spec.passes * x_host.nbytes
        half = int(nbytes // 8)
        src, dst = cupy.ones(half, np.float32), cupy.empty(half, np.float32)
        self.copy = lambda: cupy.copyto(dst, src)
        x = cupy.asarray(x_host)
        self.peer = cuda.peers(case, x, cupy, DROPOUT_P, EPS).get("cupy")
        self.timer = cuda.cuda_event_timer

    def track_device_time(self, case: str) -> float:
        return self.timer(self.fn, 20)

    track_device_time.unit = "seconds"  # type: ignore[attr-defined]

    def track_share_of_copy_bandwidth(self, case: str) -> float:
        return self.timer(self.copy, 20) / self.timer(self.fn, 20)

    track_share_of_copy_bandwidth.unit = "fraction"  # type: ignore[attr-defined]

    def track_cupy_peer_time(self, case: str) -> Any:
        return float("nan") if self.peer is None else self.timer(self.peer, 20)

    track_cupy_peer_time.unit = "seconds"  # type: ignore[attr-defined]
