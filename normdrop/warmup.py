"""``normdrop warmup``: compile the ``numba`` backend's kernels for the common cases ahead of time.

Kernels compile on first use and are cached on disk (see :mod:`normdrop._cache`).
A wheel build compiles a part of them (:func:`install_steps`, by :func:`precompile`)
and ships them in the wheel, which the first process on the machine copies into its
cache. Running ``normdrop warmup`` once, for example while building a container
image or before starting jobs on a cluster, moves the rest of that wait out of the
first real call. It runs every layer, forward in training and evaluation mode and
backward, on float32 and float64 inputs of a small size (the single-threaded
kernels) and a large one (the parallel kernels), each with short and with long
rows (the kernels compile each row layout on its own).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from normdrop import _compile_log
from normdrop._progress import CompileProgress, progress_bar
from normdrop.layers import BatchNorm1d, Dropout, LayerNorm, Module

__all__ = ["WarmupStep", "add_arguments", "install_steps", "precompile", "run", "steps"]

BACKEND = "numba"

#: (label, BatchNorm1d and Dropout input shape, LayerNorm input shape, normalising the last
#: axis): below and above the size where the backend switches to its parallel kernels, with
#: rows shorter and longer than where the kernels change layout (BatchNorm L < 64 or >= 64,
#: LayerNorm D <= 256 or above).
_SIZES = (
    ("small", (8, 16, 12), (8, 12, 64)),
    ("small, long rows", (4, 8, 64), (4, 512)),
    ("large", (64, 32, 32), (1024, 64)),
    ("large, long rows", (64, 16, 64), (128, 512)),
)

#: (input dtype, parameter dtype) pairs: the default float32 parameters with either
#: input, and float64 parameters with float64 input.
_DTYPES = (("float32", "float32"), ("float64", "float32"), ("float64", "float64"))

#: What a wheel build compiles (:func:`install_steps`): short rows at both sizes, float32
#: and float64 inputs with the default float32 parameters. The full set would make
#: every ``pip install`` much longer for cases a first script rarely needs.
_INSTALL_SIZES = ("small", "large")
_INSTALL_DTYPES = (("float32", "float32"), ("float64", "float32"))


@dataclass(frozen=True)
class WarmupStep:
    """One layer run forward (training and evaluation) and backward on one input.

    Attributes
    ----------
    label : str
        What the step compiles, e.g. ``"LayerNorm float32 large"``.
    build : callable
        Returns the layer, on the ``numba`` backend.
    shape : tuple of int
        Input shape.
    dtype : str
        Input dtype.
    """

    label: str
    build: Callable[[], Module]
    shape: tuple[int, ...]
    dtype: str

    def run(self) -> None:
        """Run the layer forward in training mode, backward, and forward in evaluation mode."""
        x = np.random.default_rng(0).standard_normal(self.shape).astype(self.dtype)
        layer = self.build()
        layer.train()
        y = layer(x)
        layer.backward(np.ones_like(y))
        layer.eval()
        layer(x)


def steps() -> list[WarmupStep]:
    """Return the warm-up steps: every layer, size and dtype pair.

    Returns
    -------
    list of WarmupStep
    """
    return _steps([s[0] for s in _SIZES], _DTYPES)


def install_steps() -> list[WarmupStep]:
    """Return the steps a wheel build compiles: a subset of :func:`steps`.

    Every layer on short rows, small and large, float32 and float64 inputs with the
    default float32 parameters: what a first script most likely runs.

    Returns
    -------
    list of WarmupStep
    """
    return _steps(_INSTALL_SIZES, _INSTALL_DTYPES)


def _steps(sizes: Sequence[str], dtypes: Sequence[tuple[str, str]]) -> list[WarmupStep]:
    """The steps of every layer for the sizes named ``sizes`` and the dtype pairs ``dtypes``."""
    found = []
    for size, bn_shape, ln_shape in _SIZES:
        if size not in sizes:
            continue
        for x_dtype, p_dtype in dtypes:
            suffix = f"{x_dtype} {size}" + (", float64 parameters" if p_dtype != "float32" else "")
            channels, features = bn_shape[1], ln_shape[-1]
            found += [
                WarmupStep(
                    f"BatchNorm1d {suffix}",
                    partial(BatchNorm1d, channels, dtype=p_dtype, backend=BACKEND),
                    bn_shape,
                    x_dtype,
                ),
                WarmupStep(
                    f"LayerNorm {suffix}",
                    partial(LayerNorm, features, dtype=p_dtype, backend=BACKEND),
                    ln_shape,
                    x_dtype,
                ),
            ]
            if p_dtype == "float32" and "long rows" not in size:  # no parameters, no layouts
                found.append(
                    WarmupStep(
                        f"Dropout {suffix}",
                        partial(Dropout, 0.1, seed=0, backend=BACKEND),
                        bn_shape,
                        x_dtype,
                    )
                )
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``normdrop warmup``'s options (none) to its parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``warmup`` subcommand's parser.
    """


def run(args: argparse.Namespace) -> int:
    """Compile the kernels of every :func:`steps` entry, with a progress bar on stderr.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (none are used).

    Returns
    -------
    int
        0 when the kernels are cached on disk, 1 when no cache folder is writable
        (the kernels were compiled, but only for this process).
    """
    from normdrop.registry import get_backend

    get_backend(BACKEND)  # a missing Numba fails here, with the reinstall hint
    from normdrop.backends.numba_backend.disk_cache import kernel_cache_folder

    folder = kernel_cache_folder()
    todo = steps()
    bar = progress_bar(len(todo), "normdrop warmup")
    compiled = CompileProgress(live=False)  # counts only: the bar is the display
    start = time.perf_counter()
    with _compile_log.observe(compiled):
        for step in todo:
            bar.set_postfix_str(step.label)
            step.run()
            bar.update()
    bar.close()
    elapsed = time.perf_counter() - start
    print(f"compiled {compiled.compiled} kernels in {elapsed:.1f} s")
    if folder is None:
        print("no writable cache folder: the kernels were not saved (see the warning above)")
        return 1
    print(f"cached in {folder}")
    return 0


def precompile(destination: str, labels: Sequence[str] = ()) -> int:
    """Compile the :func:`install_steps` kernels and export them to ``destination``.

    What a wheel build runs, in a fresh process whose ``NORMDROP_CACHE_DIR`` is an
    empty temporary folder (see ``_build_backend.py``): the kernels compile into
    that cache, and its files go to ``destination`` with a manifest saying which
    Numba, Python and CPU they are for. Prints a line per step on stdout.

    Parameters
    ----------
    destination : str
        The folder to create and fill (the package's ``_precompiled`` folder).
    labels : sequence of str, optional
        Run only the install steps with these labels (default: all of them).

    Returns
    -------
    int
        0 when the kernels were exported, 1 when no cache folder was writable.
    """
    from normdrop.registry import get_backend

    get_backend(BACKEND)
    from normdrop.backends.numba_backend import precompiled
    from normdrop.backends.numba_backend.disk_cache import kernel_cache_folder

    folder = kernel_cache_folder()
    if folder is None:
        return 1
    todo = [s for s in install_steps() if not labels or s.label in labels]
    start = time.perf_counter()
    for i, step in enumerate(todo, 1):
        print(f"normdrop: compiling kernels [{i}/{len(todo)}] {step.label}", flush=True)
        step.run()
    exported = precompiled.export(folder, Path(destination))
    elapsed = time.perf_counter() - start
    print(f"normdrop: compiled in {elapsed:.0f} s; {exported} kernels shipped in {destination}")
    return 0
