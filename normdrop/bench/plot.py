"""``normdrop bench --plot FILE.png``: each layer's speed against the input's size.

Every layer's forward (BatchNorm1d training, LayerNorm, Dropout) runs at sizes from
4 KiB to 256 MiB of input, with normdrop and with each installed peer (PyTorch,
``jax.jit``), timed the same way as the table's cases. The plot shows GB/s (bytes read
+ written per second) against the input size, one panel per layer, with this run's
memory speed as a dashed line, so that the sizes where one implementation overtakes
another are visible. matplotlib (the ``bench`` extra) is imported only here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from normdrop.bench import memory
from normdrop.bench.cases import CASES, Case
from normdrop.bench.inputs import DROPOUT_P, DTYPES
from normdrop.bench.target import Target, Thunk
from normdrop.bench.timing import NoProgress, Settings, Timing, build_thunk, measure_rounds
from normdrop.errors import InvalidParameterError

__all__ = ["DEFAULT_SIZES", "LAYERS", "check_path", "parse_sizes", "run", "shape_for", "sweep"]

#: Input sizes of the default sweep, in bytes: 4 KiB to 256 MiB in steps of 4x.
DEFAULT_SIZES: tuple[int, ...] = tuple(4 * 2**10 * 4**k for k in range(9))
#: Names of the table's cases that the sweep resizes, one panel each.
LAYERS: tuple[str, ...] = (
    "BatchNorm1d train forward",
    "LayerNorm forward",
    f"Dropout p={DROPOUT_P} forward",
)
#: Elements of one sample of the sweep's shapes: BatchNorm ``(n, 64, 16)``, rows ``(n, 1024)``.
_ROW = 1024
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
_SERIES = ("normdrop", "torch", "jax")


def parse_sizes(text: str) -> tuple[int, ...]:
    """Parse a comma-separated list of sizes such as ``"4K,1M,256M"`` into bytes.

    Parameters
    ----------
    text : str
        Sizes in bytes, with an optional ``K``, ``M`` or ``G`` suffix (powers of 1024).

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        When an entry is not a positive size.
    """
    sizes = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", item, re.IGNORECASE)
        if match is None or int(match.group(1)) == 0:
            raise ValueError(f"expected sizes such as 4K,1M,256M, got {item.strip()!r}")
        sizes.append(int(match.group(1)) * _UNITS[match.group(2).upper()])
    return tuple(sizes)


def shape_for(case_name: str, nbytes: int, itemsize: int) -> tuple[int, ...]:
    """The input shape of ``case_name`` closest to ``nbytes`` (at least one sample).

    BatchNorm inputs are ``(n, 64, 16)``; LayerNorm and Dropout inputs ``(n, 1024)``.
    """
    n = max(1, nbytes // (itemsize * _ROW))
    return (n, 64, 16) if case_name.startswith("BatchNorm") else (n, _ROW)


def sweep(
    settings: Settings,
    target: Target,
    peers: dict[str, Any | None],
    sizes: tuple[int, ...],
    dtype: str,
) -> list[dict]:
    """Time every layer at every size; return one point per layer, size and implementation.

    Returns
    -------
    list of dict
        ``{"layer", "impl", "bytes" (the input's), "moved_bytes", "seconds", "gbps"}``;
        an implementation that failed at a size has no point there, and neither has
        any at a size whose input cannot be allocated (a notice on stderr says so).
    """
    points = []
    bar = NoProgress()
    for name in LAYERS:
        base = next(c for c in CASES if c.name == name and c.dtype == dtype)
        for size in sizes:
            case = replace(base, shape=shape_for(name, size, np.dtype(dtype).itemsize))
            try:
                x = case.make_input()
            except MemoryError:
                print(
                    f"normdrop: no memory for the {_size_label(size)} input of {name}; "
                    "no points at that size",
                    file=sys.stderr,
                )
                continue
            thunks = _thunks(case, x, target, peers)
            timings = measure_rounds(thunks, settings, bar, f"{name} {x.nbytes}")
            for impl, timing in timings.items():
                if isinstance(timing, Timing):
                    seconds = timing.stat(settings.stat)
                    moved = case.moved_bytes()
                    points.append(
                        {
                            "layer": name,
                            "impl": impl,
                            "bytes": x.nbytes,
                            "moved_bytes": moved,
                            "seconds": seconds,
                            "gbps": moved / seconds / 1e9,
                        }
                    )
    return points


def _thunks(
    case: Case, x: np.ndarray, target: Target, peers: dict[str, Any | None]
) -> dict[str, Thunk | str]:
    """The thunks of one point: normdrop's and each installed peer's (or their errors)."""
    thunks = {"normdrop": build_thunk("normdrop", lambda: target.wrap(case.build(x, target)))}
    torch, jax = peers.get("torch"), peers.get("jax")
    if torch is not None:
        thunks["torch"] = build_thunk("torch", lambda: case.build_torch(torch.from_numpy(x)))
    if jax is not None:
        thunks["jax"] = build_thunk("jax", lambda: case.build_jax(x))
    return thunks


def check_path(path: str) -> None:
    """Refuse, before anything is timed, a ``--plot`` file that could not be written.

    Parameters
    ----------
    path : str
        The plot's file: its extension names the format (one that matplotlib writes)
        and its folder must exist and be writable.

    Raises
    ------
    InvalidParameterError
        Naming what is wrong with ``path``.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    target = Path(path)
    folder = target.parent
    problem = None
    if target.suffix[1:].lower() not in formats:
        others = ", ".join(f".{f}" for f in formats if f != "png")
        problem = f"a file name ending in .png or another format matplotlib writes ({others})"
    elif target.is_dir():
        problem = "a file, not a folder"
    elif not folder.is_dir():
        problem = f"a file in an existing folder ({str(folder)!r} is not one)"
    elif not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        problem = "a file that can be written"
    if problem is not None:
        raise InvalidParameterError(
            f"--plot must be {problem}, got {path!r}", parameter_name="--plot", value=path
        )


def _size_label(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.0f} {unit}"
    return f"{nbytes:.0f} B"


def draw(points: list[dict], path: str, title: str, memory_gbps: float | None) -> None:
    """Write the plot of ``points`` (as :func:`sweep` returns them) to ``path``.

    Raises
    ------
    InvalidParameterError
        When the file cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LAYERS), figsize=(4 * len(LAYERS), 3.4), sharey=True)
    for ax, layer in zip(np.atleast_1d(axes), LAYERS, strict=True):
        for impl in _SERIES:
            mine = sorted((p["bytes"], p["gbps"]) for p in points
                          if p["layer"] == layer and p["impl"] == impl)  # fmt: skip
            if mine:
                xs, ys = zip(*mine, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=impl)
        if memory_gbps is not None:
            ax.axhline(memory_gbps, color="grey", linestyle="--", linewidth=1, label="memory speed")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # small sizes' GB/s stay readable next to large ones
        sizes = sorted({p["bytes"] for p in points if p["layer"] == layer})
        ax.set_xticks(sizes, [_size_label(s) for s in sizes], rotation=45, fontsize=7)
        ax.minorticks_off()
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("input size", fontsize=8)
        ax.grid(True, alpha=0.3)
    first = np.atleast_1d(axes)[0]
    first.set_ylabel("GB/s (read + written)", fontsize=8)
    first.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=80)
    except OSError as exc:
        raise InvalidParameterError(
            f"--plot could not write {path!r}: {exc.strerror or exc}",
            parameter_name="--plot",
            value=path,
        ) from None
    finally:
        plt.close(fig)


def run(
    args: argparse.Namespace,
    settings: Settings,
    target: Target,
    peers: dict[str, Any | None],
) -> int:
    """Sweep, plot to ``args.plot`` and print the points (a table, or JSON with ``--json``).

    Returns
    -------
    int
        0 on success, 2 when matplotlib is missing (nothing is timed then).

    Raises
    ------
    InvalidParameterError
        When ``--plot`` names a file that cannot be written (see :func:`check_path`)
        or ``--memory-mib`` an array that cannot be allocated; nothing is timed then.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "normdrop: error: --plot needs matplotlib; install it with "
            "pip install 'normdrop[bench]' (or pip install matplotlib)",
            file=sys.stderr,
        )
        return 2
    check_path(args.plot)
    dtype = args.dtype[0] if args.dtype else DTYPES[0]
    sizes = args.plot_sizes or DEFAULT_SIZES
    probe = memory.probe_of_option(args.memory_mib)
    speed = memory.run_memory_speed(settings, NoProgress(), probe.array_bytes, probe)
    points = sweep(settings, target, peers, sizes, dtype)
    memory_gbps = speed.bytes_per_s / 1e9 if speed is not None else None
    title = f"normdrop {target.backend.name} backend and peers, {dtype}, forward"
    draw(points, args.plot, title, memory_gbps)
    if args.json:
        print(json.dumps({"memory_gbps": memory_gbps, "points": points}, indent=2))
    else:
        for p in points:
            print(f"{p['layer']:<28} {p['impl']:<9} {_size_label(p['bytes']):>8} "
                  f"{p['gbps']:7.2f} GB/s")  # fmt: skip
        print(f"wrote {args.plot}")
    return 0
