"""``normdrop bench --backend cuda`` on a GPU: device times from CUDA events, with peers.

Each case of :data:`normdrop.bench.cases.CASES` runs on the cuda backend and is timed
with CUDA events on CuPy's current stream (calls queued back to back, so host
launch overhead hides behind the GPU unless it is the larger cost), next to:

* a CuPy copy of the same number of bytes in the same run (the bandwidth a
  kernel could reach, as share ``%copy``);
* a plain-CuPy implementation of the same math (the peer any CuPy user has);
* PyTorch on the GPU, when it is importable and sees a GPU.

The host time per call (what Python spends enqueueing one call) is reported
too. On the CUDA simulator, or without a GPU, :func:`gpu_present` is False and
``normdrop bench`` times the backend as it does any other. The timer and the
array module are parameters, so the tests run the same code on the simulator
with a host clock and NumPy.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["cuda_event_timer", "gpu_present", "peers", "run", "time_cases"]

Thunk = Callable[[], Any]
Timer = Callable[[Thunk, int], float]


def gpu_present() -> bool:
    """Whether the cuda backend loads on a real GPU (not the CUDA simulator).

    Returns
    -------
    bool
    """
    import normdrop
    from normdrop.errors import BackendError

    try:
        return not getattr(normdrop.get_backend("cuda"), "simulator", True)
    except BackendError:
        return False


def cuda_event_timer(fn: Thunk, reps: int) -> float:
    """Seconds per call of ``fn``: CUDA events around ``reps`` queued calls, median of 5.

    Parameters
    ----------
    fn : callable
        Launches work on CuPy's current stream.
    reps : int
        Calls between the two events.

    Returns
    -------
    float
    """
    import cupy

    fn()
    cupy.cuda.get_current_stream().synchronize()
    samples = []
    for _ in range(5):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(reps):
            fn()
        stop.record()
        stop.synchronize()
        samples.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3 / reps)
    return statistics.median(samples)


def _host_time(fn: Thunk, reps: int, sync: Thunk) -> float:
    """Seconds of Python per call to enqueue ``fn`` (the queue drained before and after)."""
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    elapsed = time.perf_counter() - t0
    sync()
    return elapsed / reps


def peers(name: str, x: Any, xp: Any, p: float, eps: float) -> dict[str, Thunk]:
    """A plain array-module implementation (CuPy on a GPU) of case ``name``'s math.

    Parameters
    ----------
    name : str
        A :class:`normdrop.bench.Case` name.
    x : array
        The input, on the device of ``xp``.
    xp : module
        ``cupy`` (or ``numpy`` for tests).
    p, eps : float
        Dropout probability and normalisation epsilon of the cases.

    Returns
    -------
    dict
        ``{"cupy": thunk}``; empty when the case has no peer.
    """
    dt = x.dtype.type
    rng = np.random.default_rng(1)
    if name.startswith("BatchNorm1d"):
        axes = (0, 2) if x.ndim == 3 else (0,)
        c = x.shape[1]
        w, b = xp.ones(c, x.dtype), xp.zeros(c, x.dtype)

        def bcast(v: Any) -> Any:
            return v[None, :, None] if x.ndim == 3 else v[None, :]

        if "eval" in name:
            rm, rv = xp.zeros(c, x.dtype), xp.ones(c, x.dtype)
            return {"cupy": lambda: x * bcast(w / xp.sqrt(rv + dt(eps))) + bcast(b - rm)}
        if "backward" in name:
            dy = xp.asarray(rng.standard_normal(x.shape).astype(x.dtype))
            k = dt(x.size // c)

            def bn_backward() -> Any:
                xmu = x - bcast(x.mean(axis=axes))
                r = dt(1) / xp.sqrt(x.var(axis=axes) + dt(eps))
                sdy = dy.sum(axis=axes)
                sdyx = (dy * xmu).sum(axis=axes)
                return bcast(w * r) * (dy - bcast(sdy / k) - xmu * bcast(sdyx * r * r / k))

            return {"cupy": bn_backward}

        def bn_forward() -> Any:
            s = w / xp.sqrt(x.var(axis=axes) + dt(eps))
            return x * bcast(s) + bcast(b - x.mean(axis=axes) * s)

        return {"cupy": bn_forward}
    if name.startswith("LayerNorm"):
        d = x.shape[-1]
        w, b = xp.ones(d, x.dtype), xp.zeros(d, x.dtype)

        def ln_stats() -> tuple[Any, Any]:
            mu = x.mean(axis=-1, keepdims=True)
            return mu, dt(1) / xp.sqrt(x.var(axis=-1, keepdims=True) + dt(eps))

        if "backward" in name:
            dy = xp.asarray(rng.standard_normal(x.shape).astype(x.dtype))

            def ln_backward() -> Any:
                mu, r = ln_stats()
                xhat = (x - mu) * r
                g = dy * w
                gm = g.mean(axis=-1, keepdims=True)
                dx = r * (g - gm - xhat * (g * xhat).mean(axis=-1, keepdims=True))
                return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)

            return {"cupy": ln_backward}

        def ln_forward() -> Any:
            mu, r = ln_stats()
            return (x - mu) * r * w + b

        return {"cupy": ln_forward}
    if name.startswith("Dropout"):
        scale = dt(1 / (1 - p))
        if "backward" in name:
            bits = xp.asarray(rng.integers(0, 256, (x.size + 7) // 8, dtype=np.uint8))
            return {
                "cupy": lambda: xp.where(
                    xp.unpackbits(bits, bitorder="little")[: x.size].reshape(x.shape) == 1,
                    x * scale,
                    dt(0),
                )
            }
        if xp is np:
            return {"cupy": lambda: np.where(rng.random(x.shape) >= p, x * scale, dt(0))}
        return {
            "cupy": lambda: xp.where(xp.random.random(x.shape, dtype=x.dtype) >= p, x * scale, 0)
        }
    return {}


def _torch_peer(name: str, xt: Any, p: float, eps: float) -> Thunk | None:
    """PyTorch (CUDA tensors) doing case ``name``'s forward, or None for other cases."""
    import torch

    f = torch.nn.functional
    if name.startswith("BatchNorm1d") and "backward" not in name:
        c = xt.shape[1]
        rm = torch.zeros(c, device=xt.device, dtype=xt.dtype)
        rv = torch.ones(c, device=xt.device, dtype=xt.dtype)
        return lambda: f.batch_norm(xt, rm, rv, training="eval" not in name, eps=eps)
    if name.startswith("LayerNorm") and "backward" not in name:
        return lambda: f.layer_norm(xt, (xt.shape[-1],), eps=eps)
    if name.startswith("Dropout") and "backward" not in name:
        return lambda: f.dropout(xt, p, True)
    return None


def time_cases(
    cases: list[Any],
    dtype: np.dtype,
    timer: Timer,
    xp: Any,
    reps: int = 20,
    sync: Thunk = lambda: None,
    torch: Any | None = None,
) -> list[dict[str, Any]]:
    """Time ``cases`` on the cuda backend with ``timer``, with a copy and peers alongside.

    Parameters
    ----------
    cases : list of normdrop.bench.Case
    dtype : numpy.dtype
    timer : callable
        ``timer(fn, reps)`` -> seconds per call (:func:`cuda_event_timer` on a GPU).
    xp : module
        The backend's array module (``cupy``; ``numpy`` on the simulator).
    reps : int, default 20
    sync : callable
        Waits for the device (for host times).
    torch : module, optional
        PyTorch with a GPU, for its peers.

    Returns
    -------
    list of dict
        One row per case: ``case``, ``dtype``, ``shape``, ``bytes``, ``normdrop_s`` and
        ``torch_s`` (seconds per call, as in the CPU report), ``errors``, then ``mb``,
        ``dev_us``, ``host_us``, ``gbps``, ``copy_share``, ``cupy_us``, ``torch_us``.
    """
    from normdrop.bench.inputs import DROPOUT_P, EPS, make_input
    from normdrop.bench.target import Target

    target = Target.named("cuda")
    rows = []
    for case in cases:
        x_host = make_input(case.shape, dtype)
        fn = case.build(x_host, target)
        nbytes = case.passes * x_host.nbytes
        dev = timer(fn, reps)
        half = max(1, int(nbytes // 2 // dtype.itemsize))
        src, dst = xp.ones(half, dtype), xp.empty(half, dtype)

        def copy_same_bytes(src: Any = src, dst: Any = dst) -> None:
            xp.copyto(dst, src)

        copy = timer(copy_same_bytes, reps)
        x = xp.asarray(x_host)
        peer = peers(case.name, x, xp, DROPOUT_P, EPS).get("cupy")
        torch_fn = None
        if torch is not None:
            torch_fn = _torch_peer(case.name, torch.from_dlpack(x), DROPOUT_P, EPS)
        torch_s = None if torch_fn is None else timer(torch_fn, reps)
        rows.append(
            {
                "case": case.name,
                "dtype": dtype.name,
                "shape": list(case.shape),
                "bytes": nbytes,
                "normdrop_s": dev,
                "torch_s": torch_s,
                "errors": [],
                "mb": nbytes / 1e6,
                "dev_us": dev * 1e6,
                "host_us": _host_time(fn, reps, sync) * 1e6,
                "gbps": nbytes / dev / 1e9 if dev > 0 else float("inf"),
                "copy_share": copy / dev if dev > 0 else float("inf"),
                "cupy_us": None if peer is None else timer(peer, reps) * 1e6,
                "torch_us": None if torch_s is None else torch_s * 1e6,
            }
        )
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table.

    Parameters
    ----------
    rows : list of dict
        From :func:`time_cases`.

    Returns
    -------
    str
    """

    def us(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    head = (
        f"{'case':44s} {'MB':>7s} {'dev us':>9s} {'GB/s':>8s} {'%copy':>6s} "
        f"{'host us':>8s} {'cupy us':>8s} {'torch us':>9s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['case'][:44]:44s} {r['mb']:7.1f} {r['dev_us']:9.1f} {r['gbps']:8.1f} "
            f"{r['copy_share']:6.0%} {r['host_us']:8.1f} {us(r['cupy_us']):>8s} "
            f"{us(r['torch_us']):>9s}"
        )
    return "\n".join(lines)


def run(args: Any, cases: list[Any]) -> int:
    """Benchmark ``cases`` on the GPU and print the table (or JSON).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``bench`` arguments (``json``, ``no_torch``, ``quick``).
    cases : list of normdrop.bench.Case

    Returns
    -------
    int
        0.
    """
    import cupy

    torch = None
    if not args.no_torch:
        try:
            import torch as _torch

            torch = _torch if _torch.cuda.is_available() else None
        except ImportError:
            torch = None
    stream = cupy.cuda.get_current_stream()
    dtypes = list(dict.fromkeys(case.dtype for case in cases))  # each case has its dtype
    rows = [
        row
        for dtype in dtypes
        for row in time_cases(
            [case for case in cases if case.dtype == dtype],
            np.dtype(dtype),
            cuda_event_timer,
            cupy,
            reps=5 if args.quick else 20,
            sync=stream.synchronize,
            torch=torch,
        )
    ]
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    if args.json:
        machine = {"backend": "cuda", "gpu": gpu, "timer": "cuda events", "dtypes": dtypes}
        print(json.dumps({"machine": machine, "rows": rows}))
    else:
        print(
            f"cuda backend on {gpu}: device time per call from CUDA events (calls queued back "
            "to back); %copy = a CuPy copy of the same bytes in this run / ours; host = Python "
            "time to enqueue one call; cupy = the same math in plain CuPy\n"
        )
        print(format_rows(rows))
    return 0
