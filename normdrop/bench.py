"""``normdrop bench`` (placeholder until the benchmark module lands)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``."""


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks."""
    raise SystemExit("normdrop bench is not available yet")
