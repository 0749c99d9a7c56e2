"""The report of ``normdrop bench``: one JSON-ready row per case, the table, header and footer."""

from __future__ import annotations

import os
import platform
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import normdrop
from normdrop.bench.bound import bound_seconds, bound_share
from normdrop.bench.cases import Case
from normdrop.bench.inputs import DTYPES
from normdrop.bench.memory import MemorySpeed, memory_share
from normdrop.bench.target import Target
from normdrop.bench.timing import (
    EXTRA_ROUNDS,
    NOISE_THRESHOLD,
    OUTLIER_VS_REFERENCE,
    Settings,
    Timing,
    suspect,
)

__all__ = ["PEERS", "footer", "format_table", "header", "machine_info", "make_row"]


def _timing_dict(t: Timing | str | None) -> dict[str, Any] | None:
    if t is None:
        return None
    if isinstance(t, str):
        return {"error": t}
    return {
        "best_s": t.best,
        "median_s": t.median,
        "repeats": t.repeats,
        "number": t.number,
        "first_call_s": t.first_call,
        "rounds": len(t.round_bests),
        "round_best_s": list(t.round_bests),
        "spread": t.spread,
    }


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


#: The timed peers, in the order of the table's columns.
PEERS = ("torch", "jax")


def make_row(
    case: Case,
    settings: Settings,
    timings: dict[str, Timing | str | None],
    memory: MemorySpeed | None = None,
) -> dict:
    """Combine the timings of one case into a JSON-ready row.

    A peer that is not installed (or not asked for) has the timing ``None``; its
    columns are then ``None`` too, with no error.

    Parameters
    ----------
    case : Case
    settings : Settings
        Its ``stat`` chooses the reported statistic.
    timings : dict of str to Timing, str or None
        ``"normdrop"``, ``"reference"``, ``"copy"`` and the peers' timings (or errors).
    memory : MemorySpeed, optional
        The memory speed measured with the case (in its own rounds, or else at the start
        of the run), for ``memory_share`` and ``memory_gbps``, and its read speed and
        cache size, for the same-run bound (``bound_s``, ``bound_share``;
        :mod:`normdrop.bench.bound`).

    Returns
    -------
    dict
    """
    stat = settings.stat
    timings = {"torch": None, "jax": None, **timings}
    t = {k: (v.stat(stat) if isinstance(v, Timing) else None) for k, v in timings.items()}
    nbytes = case.moved_bytes()
    cache = memory.last_level_cache if memory is not None else None
    reread = case.op.reread(case.shape, np.dtype(case.dtype).itemsize, cache)
    bound = bound_seconds(nbytes, reread, memory)
    gbps = _ratio(nbytes / 1e9, t["normdrop"])
    copy_gbps = _ratio(nbytes / 1e9, t["copy"])
    errors = [v for v in timings.values() if isinstance(v, str)]
    spread = {k: (v.spread if isinstance(v, Timing) else None) for k, v in timings.items()}
    reasons = {
        k: suspect(k, timing, timings.get("reference"))
        for k in ("normdrop", "reference", *PEERS)
        if isinstance(timing := timings.get(k), Timing)
    }
    noisy = {k: why for k, why in reasons.items() if why is not None}
    return {
        "case": case.name,
        "shape": list(case.shape),
        "dtype": case.dtype,
        "bytes": nbytes,
        "normdrop_s": t["normdrop"],
        "reference_s": t["reference"],
        "torch_s": t["torch"],
        "jax_s": t["jax"],
        "speedup_vs_torch": _ratio(t["torch"], t["normdrop"]),
        "speedup_vs_jax": _ratio(t["jax"], t["normdrop"]),
        "speedup_vs_reference": _ratio(t["reference"], t["normdrop"]),
        "gbps": gbps,
        "copy_gbps": copy_gbps,
        "copy_share": _ratio(gbps, copy_gbps),
        "memory_share": memory_share(nbytes, t["normdrop"], memory),
        "memory_gbps": memory.bytes_per_s / 1e9 if memory is not None else None,
        "reread_bytes": reread,
        "bound_s": bound,
        "bound_share": bound_share(bound, t["normdrop"]),
        "timings": {k: _timing_dict(v) for k, v in timings.items()},
        "spread": spread,
        "noisy": noisy,
        "errors": errors,
    }


def machine_info(
    target: Target,
    peers: dict[str, Any | None],
    threads: int,
    torch_threads: int,
    settings: Settings,
    cases: Sequence[Case],
    memory: MemorySpeed | None,
) -> dict:
    """The ``machine`` object of the report: platform, versions, threads and settings.

    Parameters
    ----------
    target : Target
        The backend timed as normdrop.
    peers : dict of str to module or None
        ``"torch"`` and ``"jax"``: the module, or ``None`` when not timed.
    threads, torch_threads : int
        Numba's and PyTorch's thread counts.
    settings : Settings
    cases : sequence of Case
        The cases run.
    memory : MemorySpeed or None

    Returns
    -------
    dict
    """
    torch, jax = peers.get("torch"), peers.get("jax")
    try:
        import numba

        numba_version: str | None = numba.__version__
    except ImportError:
        numba_version = None
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(affinity) if affinity is not None else None,
        "numba_threads": threads,
        "torch_threads": torch_threads if torch is not None else None,
        "python": platform.python_version(),
        "normdrop": normdrop.__version__,
        "numpy": np.__version__,
        "numba": numba_version,
        "torch": torch.__version__ if torch is not None else None,
        "jax": jax.__version__ if jax is not None else None,
        "backend": target.backend.name,
        "available_backends": normdrop.available_backends(),
        "dtypes": sorted({c.dtype for c in cases}, key=DTYPES.index),
        "memory": memory.as_dict() if memory is not None else None,
        "stat": settings.stat,
        "budget_s": settings.budget,
        "repeat": settings.repeat,
        "rounds": settings.rounds,
        "noise_threshold": NOISE_THRESHOLD,
    }


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if t >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _fmt_peer(row: dict, peer: str, value: Callable[[dict], str]) -> str:
    """A peer's cell: ``n/a`` when the peer was not timed (not installed or not asked for)."""
    return "n/a" if row["timings"].get(peer) is None else value(row)


def _fmt_float(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


_COLUMNS: tuple[tuple[str, str, Callable[[dict], str]], ...] = (
    # (header, alignment, formatter)
    ("case", "<", lambda r: r["case"]),
    ("dtype", "<", lambda r: r["dtype"]),
    ("shape", "<", lambda r: "(" + ", ".join(str(d) for d in r["shape"]) + ")"),
    ("normdrop", ">", lambda r: _fmt_time(r["normdrop_s"])),
    ("numpy ref", ">", lambda r: _fmt_time(r["reference_s"])),
    ("torch", ">", lambda r: _fmt_peer(r, "torch", lambda r: _fmt_time(r["torch_s"]))),
    ("jax", ">", lambda r: _fmt_peer(r, "jax", lambda r: _fmt_time(r["jax_s"]))),
    ("vs torch", ">", lambda r: _fmt_peer(r, "torch", lambda r: _fmt_ratio(r["speedup_vs_torch"]))),
    ("vs jax", ">", lambda r: _fmt_peer(r, "jax", lambda r: _fmt_ratio(r["speedup_vs_jax"]))),
    ("vs ref", ">", lambda r: _fmt_ratio(r["speedup_vs_reference"])),
    ("GB/s", ">", lambda r: _fmt_float(r["gbps"], ".1f")),
    ("of copy", ">", lambda r: _fmt_float(r["copy_share"], ".0%")),
    ("mem GB/s", ">", lambda r: _fmt_float(r.get("memory_gbps"), ".1f")),
    ("of mem", ">", lambda r: _fmt_float(r["memory_share"], ".0%")),
    ("of bound", ">", lambda r: _fmt_float(r["bound_share"], ".0%")),
    ("spread", ">", lambda r: _fmt_spread(r)),
)


def _fmt_spread(row: dict) -> str:
    """The largest spread of the row's timed implementations, ``!`` when the row is noisy."""
    values = [row["spread"].get(k) for k in ("normdrop", "reference", *PEERS)]
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{max(values):.0%}" + (" !" if row["noisy"] else "")


def format_table(rows: Sequence[dict]) -> str:
    """Render rows as an aligned plain-text table.

    Parameters
    ----------
    rows : sequence of dict
        Rows as :func:`make_row` returns them.

    Returns
    -------
    str
    """
    cells = [[fmt(r) for _, _, fmt in _COLUMNS] for r in rows]
    headers = [h for h, _, _ in _COLUMNS]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            f"{v:{align}{w}}" for v, (_, align, _), w in zip(values, _COLUMNS, widths, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(c) for c in cells)])


def _threads(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def header(info: dict) -> str:
    """The lines above the table: versions, backend, threads and the memory speed.

    Parameters
    ----------
    info : dict
        As :func:`machine_info` returns it.

    Returns
    -------
    str
    """
    torch = (
        f"torch {info['torch']} on {_threads(info['torch_threads'])}"
        if info["torch"]
        else ("torch not timed")
    )
    jax = f"jax {info['jax']} (CPU, its own threads)" if info["jax"] else "jax not timed"
    stat = "best" if info["stat"] == "min" else "median"
    line = (
        f"normdrop {info['normdrop']} bench: backend {info['backend']!r}, "
        f"{' and '.join(info['dtypes'])}, {stat} of repeats; {info['cpu_count']} CPUs, "
        f"numba on {_threads(info['numba_threads'])}, {torch}, {jax}"
    )
    memory = info["memory"]
    if memory is None:
        return line
    copies = ", ".join(f"{k} {v:.1f}" for k, v in memory["copies_gbps"].items())
    read = "not measured" if memory["read_gbps"] is None else f"{memory['read_gbps']:.1f} GB/s"
    cache = memory["last_level_cache_bytes"]
    llc = "unknown" if cache is None else f"{cache / 2**20:g} MiB"
    return (
        f"{line}\nmemory speed at the start {memory['gbps']:.1f} GB/s: best copy of "
        f"{memory['array_bytes'] / 2**20:.0f} MiB (GB/s: {copies}); read speed {read} "
        f"({memory['read'] or 'numba read'}, the same array); last-level cache {llc}"
    )


def footer(rows: Sequence[dict]) -> str:
    """The lines under the table: the legend, then any noisy row and error.

    Parameters
    ----------
    rows : sequence of dict
        As :func:`make_row` returns them.

    Returns
    -------
    str
    """
    legend = (
        "vs torch, vs jax, vs ref: speed-up of normdrop over PyTorch, over jax.jit and over "
        "the numpy reference (above 1 is faster; n/a: that peer is not installed or was not "
        "asked for). GB/s: bytes moved (read + written) per second by normdrop (forward 2x "
        "the input, normalisation backward 3x, dropout backward 2x). of copy: normdrop's "
        "share of np.copyto's GB/s moving the same bytes in this run. mem GB/s: the memory "
        "speed timed in the case's own interleaved rounds (the header's is the run's first). "
        "of mem: the time that memory speed needs for the bytes normdrop moves, divided by "
        "normdrop's time (a copy's read and write both count as moved bytes). of bound: the "
        "least time those speeds need for the traffic no algorithm for the case can avoid "
        "(the moved bytes at the memory speed, plus any bytes it must read twice at the "
        "read speed), divided by normdrop's time."
    )
    notes = [textwrap.fill(legend, width=100)]
    noise = (
        f"spread: how far the second-fastest of a measurement's timed rounds is above the "
        f"fastest (the fastest is reported). '!' marks a noisy row: after {EXTRA_ROUNDS} extra "
        f"rounds, a spread above {NOISE_THRESHOLD:.0%}, or a call more than "
        f"{OUTLIER_VS_REFERENCE:.0f}x slower than the NumPy reference's. The machine was busy: "
        f"rerun that case (--cases; for PyTorch also --torch-threads 1) before trusting its ratios."
    )
    notes.append(textwrap.fill(noise, width=100))
    for r in rows:
        if r["noisy"]:
            notes.append(f"noisy: {r['case']} ({r['dtype']}): {'; '.join(r['noisy'].values())}")
    notes += [f"error: {r['case']} ({r['dtype']}): {e}" for r in rows for e in r["errors"]]
    return "\n".join(notes)
