"""``normdrop bench``'s command line: its options, and the run that times every case.

For each case (in float32 and in float64) the same run times normdrop's default
backend (or ``--backend``), the ``numpy`` reference backend, PyTorch on the CPU and
``jax.jit`` of the same math on JAX's CPU device (each peer when it is installed),
and a NumPy copy of the same number of bytes; see :mod:`normdrop.bench`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

import numpy as np

import normdrop
from normdrop.bench import memory, peers, report, threads
from normdrop.bench.cases import Case, select_cases
from normdrop.bench.inputs import DTYPES
from normdrop.bench.memory import MemorySpeed
from normdrop.bench.target import Target, Thunk
from normdrop.bench.timing import (
    FULL,
    QUICK,
    ROUNDS,
    Settings,
    Timing,
    build_thunk,
    measure_rounds,
    progress_bar,
)

__all__ = ["add_arguments", "run", "run_case"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``bench`` sub-command's parser.
    """
    parser.add_argument(
        "--backend",
        default=None,
        metavar="NAME",
        help="backend timed in the normdrop column (default: the automatic choice)",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        action="append",
        default=None,
        help="run only the cases in this dtype (repeatable; default: float32 and float64)",
    )
    parser.add_argument(
        "--cases",
        action="append",
        metavar="TEXT",
        help="run only cases whose name contains TEXT (case-insensitive; repeatable)",
    )
    parser.add_argument("--quick", action="store_true", help="a fast, rough pass")
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"most timed repeats per measurement (default {FULL[1]}, quick {QUICK[1]})",
    )
    parser.add_argument(
        "--budget",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=f"seconds of timed repeats per measurement, after the warm-up "
        f"(default {FULL[0]}, quick {QUICK[0]})",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"interleaved timing rounds per measurement, sharing its budget and repeats "
        f"(default {ROUNDS[0]}, quick {ROUNDS[1]})",
    )
    parser.add_argument(
        "--stat",
        choices=("min", "median"),
        default="min",
        help="statistic of the repeats to report (default: min)",
    )
    parser.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    parser.add_argument("--no-jax", action="store_true", help="do not time JAX")
    parser.add_argument(
        "--memory-mib",
        type=_positive_int,
        default=memory.MEMORY_BYTES // 2**20,
        metavar="MIB",
        help="size of the array copied to measure the memory speed "
        f"(default {memory.MEMORY_BYTES // 2**20})",
    )
    parser.add_argument(
        "--plot",
        default=None,
        metavar="FILE.png",
        help="instead of the table, sweep each layer's forward over sizes and plot GB/s "
        "against size for normdrop and every peer (needs matplotlib: the bench extra)",
    )
    parser.add_argument(
        "--plot-sizes",
        type=_plot_sizes,
        default=None,
        metavar="LIST",
        help="input sizes of the --plot sweep, e.g. 4K,1M,256M "
        "(default: 4 KiB to 256 MiB in steps of 4x)",
    )
    parser.add_argument(
        "--torch-threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="PyTorch's thread count (default: Numba's, the threads normdrop's kernels use)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="list the (selected) cases and exit")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def _plot_sizes(text: str) -> tuple[int, ...]:
    from normdrop.bench import plot

    try:
        return plot.parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _selected_peers(args: argparse.Namespace) -> dict[str, Any | None]:
    """The peers to time: each installed and not switched off, else ``None``."""
    return {
        "torch": None if args.no_torch else peers.import_torch(),
        "jax": None if getattr(args, "no_jax", False) else peers.import_jax(),
    }


def _thread_count() -> int:
    """Numba's thread count (what normdrop's kernels use), else the CPU count."""
    try:
        import numba
    except ImportError:
        return os.cpu_count() or 1
    return int(numba.get_num_threads())


#: Prefix of the memory speed's thunks among a case's own (:func:`run_case`).
MEMORY_PREFIX = "memory speed: "


def _copy_thunk(nbytes: float, dtype: np.dtype) -> Thunk:
    """``np.copyto`` moving ``nbytes`` in all (half read, half written)."""
    n = max(1, int(nbytes // (2 * dtype.itemsize)))
    src = np.random.default_rng(2).standard_normal(n).astype(dtype)
    dst = np.empty_like(src)
    return lambda: np.copyto(dst, src)


def run_case(
    case: Case,
    settings: Settings,
    target: Target,
    reference: Target,
    timed_peers: dict[str, Any | None],
    speed: MemorySpeed | None,
    bar: Any,
    probe: memory.MemoryProbe | None = None,
) -> dict:
    """Time one case every way and return its row (:func:`normdrop.bench.report.make_row`).

    Parameters
    ----------
    case : Case
    settings : Settings
    target, reference : Target
        The backend timed as normdrop, and the ``numpy`` reference.
    timed_peers : dict of str to module or None
        ``"torch"`` and ``"jax"``: the imported module, or ``None`` when that peer is
        not installed or not asked for.
    speed : MemorySpeed or None
        This run's memory speed, for a case whose own rounds time no ``probe``.
    bar : progress bar
    probe : MemoryProbe, optional
        The memory speed's thunks, timed in the case's own interleaved rounds; the
        row's share of memory speed then uses that memory speed, not ``speed``.

    Returns
    -------
    dict
    """
    torch, jax = timed_peers.get("torch"), timed_peers.get("jax")
    x = case.make_input()
    thunks: dict[str, Thunk | str] = {}
    thunks["reference"] = build_thunk("reference", lambda: reference.wrap(case.build(x, reference)))
    same_code = target.backend.name == reference.backend.name and target.choice in (None, "numpy")
    if not same_code:
        thunks["normdrop"] = build_thunk("normdrop", lambda: target.wrap(case.build(x, target)))
    if torch is not None:
        thunks["torch"] = build_thunk("torch", lambda: case.build_torch(torch.from_numpy(x)))
    if jax is not None:
        thunks["jax"] = build_thunk("jax", lambda: case.build_jax(x))
    thunks["copy"] = build_thunk("copy", lambda: _copy_thunk(case.passes * x.nbytes, x.dtype))
    if probe is not None:
        thunks.update({MEMORY_PREFIX + k: t for k, t in probe.thunks.items()})
    timings: dict[str, Timing | str | None] = dict(measure_rounds(thunks, settings, bar, case.name))
    if same_code:
        timings["normdrop"] = timings["reference"]  # the same code: do not time it twice
        bar.update()
    if probe is not None:
        own = {
            k[len(MEMORY_PREFIX) :]: timings.pop(k)
            for k in list(timings)
            if k.startswith(MEMORY_PREFIX)
        }
        own_speed = probe.speed({k: t.best for k, t in own.items() if isinstance(t, Timing)})
        speed = own_speed if own_speed.copies else speed
    return report.make_row(case, settings, timings, speed)


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks and print a table (or JSON) to stdout.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``bench`` arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0 on success, 2 when no case matches ``--cases``.

    Raises
    ------
    InvalidParameterError
        ``--memory-mib`` cannot be allocated, or ``--plot`` names a file that cannot
        be written (checked before anything is timed).

    Notes
    -----
    ``--list`` prints the selected cases instead of running them.
    """
    cases = select_cases(args.cases, args.dtype)
    thread_cases = threads.select_thread_cases(args.cases, args.dtype)
    if not cases and not thread_cases:
        print(f"normdrop: error: no case matches {args.cases}; see --list", file=sys.stderr)
        return 2
    if args.list:
        listed = [(c.name, c.dtype, c.shape) for c in cases]
        listed += [(t.name, t.case.dtype, t.case.shape) for t in thread_cases]
        width = max(len(name) for name, _, _ in listed)
        print("\n".join(f"{name:<{width}}  {dtype}  {shape}" for name, dtype, shape in listed))
        return 0
    if args.backend == "cuda":
        from normdrop.bench import cuda  # CUDA-event timings on a GPU

        if cuda.gpu_present():
            return cuda.run(args, cases)
    settings = Settings.from_args(args)
    target = Target.named(args.backend)
    reference = Target(normdrop.get_backend("numpy"), "numpy")
    timed_peers = _selected_peers(args)
    torch = timed_peers["torch"]
    numba_threads = _thread_count()
    torch_threads = numba_threads if args.torch_threads is None else args.torch_threads
    if args.plot is not None:
        from normdrop.bench import plot

        with peers.torch_session(torch, torch_threads):
            return plot.run(args, settings, target, timed_peers)

    probe = memory.probe_of_option(args.memory_mib) if cases else None
    probes = len(probe.thunks) if probe is not None else 0
    # each case times its own thunks and the memory speed's; the run starts with the latter
    timed = 3 + sum(p is not None for p in timed_peers.values()) + probes
    total = len(cases) * timed + probes + len(thread_cases)
    bar = progress_bar(total, enabled=not args.no_progress)
    speed = None
    try:
        if probe is not None:
            speed = memory.run_memory_speed(settings, bar, probe.array_bytes, probe)
        with peers.torch_session(torch, torch_threads):
            rows = [
                run_case(c, settings, target, reference, timed_peers, speed, bar, probe)
                for c in cases
            ]
        thread_rows = []
        for t in thread_cases:
            bar.set_postfix_str(t.name)
            thread_rows.append(threads.run_thread_case(t, settings, target))
            bar.update()
    finally:
        bar.close()

    selected = cases or [t.case for t in thread_cases]
    info = report.machine_info(
        target, timed_peers, numba_threads, torch_threads, settings, selected, speed
    )
    if args.json:
        print(json.dumps({"machine": info, "rows": rows, "threads": thread_rows}, indent=2))
    else:
        parts = [report.header(info)]
        if rows:
            parts += [report.format_table(rows), report.footer(rows)]
        if thread_rows:
            parts.append(threads.format_thread_table(thread_rows))
        print(*parts, sep="\n\n")
    return 0
