"""The ``normdrop`` command line: ``demo``, ``info``, ``bench``, ``warmup`` and ``cache``.

While a command runs, the ``normdrop`` logger's INFO messages (such as the notice
that kernels are being compiled) are shown on stderr.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    from normdrop import __version__

    parser = argparse.ArgumentParser(
        prog="normdrop",
        description="BatchNorm1d, LayerNorm and Dropout for NumPy-native code.",
    )
    parser.add_argument("--version", action="version", version=f"normdrop {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="re-run the BatchNorm + Dropout walkthrough with normdrop"
    )
    demo.add_argument("--backend", default=None, help="backend to run on (default: automatic)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the mask")
    demo.set_defaults(handler=_run_demo)

    info = commands.add_parser("info", help="versions and available backends")
    info.set_defaults(handler=_run_info)

    bench = commands.add_parser(
        "bench", help="time every layer against the NumPy reference and PyTorch"
    )
    from normdrop import bench as bench_module

    bench_module.add_arguments(bench)
    bench.set_defaults(handler=bench_module.run)

    warmup = commands.add_parser(
        "warmup", help="compile the numba backend's kernels for the common cases ahead of time"
    )
    from normdrop import warmup as warmup_module

    warmup_module.add_arguments(warmup)
    warmup.set_defaults(handler=warmup_module.run)

    cache = commands.add_parser("cache", help="where the compiled kernels are cached; clear them")
    from normdrop import cache_command

    cache_command.add_arguments(cache)
    cache.set_defaults(handler=cache_command.run)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from normdrop import _compile_log
    from normdrop._progress import CompileProgress
    from normdrop.demo import run_demo

    progress = CompileProgress()
    try:
        with _compile_log.observe(progress):
            run_demo(backend=args.backend, seed=args.seed)
    finally:
        progress.close()
    return 0


def _run_info(args: argparse.Namespace) -> int:
    from normdrop.info import print_info

    print_info()
    return 0


def _discard_stdout() -> None:
    """Point stdout at the null device, so that the flush at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # no real file behind stdout
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``normdrop`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status.
    """
    from normdrop.errors import NormdropError

    args = _build_parser().parse_args(argv)
    # Show the library's notices (INFO and up) on stderr while the command runs.
    logger = logging.getLogger("normdrop")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("normdrop: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        status = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except NormdropError as exc:
        print(f"normdrop: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`normdrop info | head -1`): stop quietly
        _discard_stdout()
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
