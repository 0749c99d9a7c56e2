"""``normdrop bench``: time every layer against the NumPy reference, PyTorch and JAX on the CPU.

Each case (in float32 and in float64) is timed in the same run: with normdrop's
default backend (or ``--backend``), with the ``numpy`` reference backend, with
PyTorch on the CPU and with ``jax.jit`` of the same math on JAX's CPU device, each
peer when it is installed. Every row also carries the effective bandwidth of the
normdrop call, the share it reaches of a plain NumPy copy (``np.copyto``) of the
same number of bytes, its share of this run's memory speed
(:mod:`normdrop.bench.memory`) and its share of the same-run bound
(:mod:`normdrop.bench.bound`). Absolute times on shared machines are noisy; the
ratios are what to read. ``--plot`` sweeps the sizes instead (:mod:`normdrop.bench.plot`).

The package has one module per job:

- :mod:`~normdrop.bench.inputs`: the fixed parameters (eps, p, seed), shapes, dtypes and input data;
- :mod:`~normdrop.bench.target`: where a normdrop call runs (backend, ``backend=``);
- :mod:`~normdrop.bench.ops`: each timed normdrop call with its PyTorch and JAX peers;
- :mod:`~normdrop.bench.peers`: the PyTorch and ``jax.jit`` builders;
- :mod:`~normdrop.bench.cases`: :data:`CASES`, the one list of cases (the asv suite uses
  the same operations);
- :mod:`~normdrop.bench.timing`: warm-up, loops, repeats and interleaved rounds;
- :mod:`~normdrop.bench.memory`: this run's memory speed, read speed and cache size;
- :mod:`~normdrop.bench.bound`: the same-run bound (what each case must read twice);
- :mod:`~normdrop.bench.report`: the rows, the table, its header and footer;
- :mod:`~normdrop.bench.threads`: the two-thread case (small layer calls on one and two
  Python threads, with an ``np.sin`` calibration);
- :mod:`~normdrop.bench.plot`: ``--plot``'s size sweep;
- :mod:`~normdrop.bench.cuda`: ``--backend cuda`` on a GPU, with CUDA events;
- :mod:`~normdrop.bench.cli`: the options and the run.

Nothing heavy is imported at import time: PyTorch, JAX, Numba, tqdm and
matplotlib are imported only when a benchmark runs. ``import normdrop`` does not
import this package; the ``normdrop bench`` command does.
"""

from __future__ import annotations

from normdrop.bench.cases import CASES, Case, find_case, select_cases
from normdrop.bench.cli import add_arguments, run
from normdrop.bench.inputs import BN_SHAPE, DROPOUT_P, DTYPES, EPS, FUSED_P, ROWS_SHAPE
from normdrop.bench.ops import Operation
from normdrop.bench.report import format_table
from normdrop.bench.target import Target
from normdrop.bench.timing import NOISE_THRESHOLD, Settings, Timing, combine_rounds, time_call

__all__ = [
    "BN_SHAPE",
    "CASES",
    "DROPOUT_P",
    "DTYPES",
    "EPS",
    "FUSED_P",
    "NOISE_THRESHOLD",
    "ROWS_SHAPE",
    "Case",
    "Operation",
    "Settings",
    "Target",
    "Timing",
    "add_arguments",
    "combine_rounds",
    "find_case",
    "format_table",
    "run",
    "select_cases",
    "time_call",
]
