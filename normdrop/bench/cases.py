"""The cases of ``normdrop bench``: each an operation of :mod:`normdrop.bench.ops` at a shape.

:data:`CASES` is the one list of what ``normdrop bench`` times; the asv suite
(``asv_benchmarks/benchmarks/``) times the same operations and takes its headline
shapes from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from normdrop.bench import ops
from normdrop.bench.inputs import BN_SHAPE, DROPOUT_P, DTYPES, FUSED_P, ROWS_SHAPE, make_input
from normdrop.bench.ops import Operation
from normdrop.bench.target import Target, Thunk

__all__ = ["CASES", "Case", "find_case", "select_cases"]


@dataclass(frozen=True)
class Case:
    """One row of the benchmark: an operation at an input shape and dtype.

    Attributes
    ----------
    name : str
        What is timed; ``--cases`` matches substrings of it.
    shape : tuple of int
        Shape of the input.
    op : Operation
        The normdrop call and its peers.
    dtype : str
        The data's dtype: each case runs once per entry of
        :data:`~normdrop.bench.inputs.DTYPES`.
    """

    name: str
    shape: tuple[int, ...]
    op: Operation = field(repr=False)
    dtype: str = "float32"

    @property
    def passes(self) -> float:
        """Bytes moved, in units of the input's size (see :class:`Operation`)."""
        return self.op.passes

    def moved_bytes(self) -> float:
        """Bytes the case must read plus bytes it must write."""
        return self.passes * int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def make_input(self) -> np.ndarray:
        """The case's input ``x`` on the host."""
        return make_input(self.shape, self.dtype)

    def build(self, x_host: np.ndarray, target: Target) -> Thunk:
        """The normdrop thunk to time on ``target`` (see :meth:`Operation.build`)."""
        return self.op.build(x_host, target)

    def build_torch(self, xt: Any) -> Thunk:
        """The PyTorch thunk to time on the CPU tensor ``xt``."""
        return _peer(self.op.torch, "PyTorch", self.name)(xt)

    def build_jax(self, x_host: np.ndarray) -> Thunk:
        """The ``jax.jit`` thunk to time; raises ImportError when JAX is not installed."""
        return _peer(self.op.jax, "JAX", self.name)(x_host)


def _peer(builder: Any, peer: str, case: str) -> Any:
    if builder is None:
        raise NotImplementedError(f"{peer} has no peer of {case!r}")
    return builder


#: Every case in float32, in the order of the table (:data:`CASES` adds the dtypes).
_FLOAT32_CASES: tuple[Case, ...] = (
    Case("BatchNorm1d train forward", BN_SHAPE, ops.BN_TRAIN),
    Case("BatchNorm1d eval forward", BN_SHAPE, ops.BN_EVAL),
    Case("BatchNorm1d train forward channels-last", (65536, 64), ops.BN_TRAIN),
    Case("LayerNorm forward", ROWS_SHAPE, ops.LN_FORWARD),
    Case(f"Dropout p={DROPOUT_P} forward", ROWS_SHAPE, ops.DROPOUT_FORWARD),
    Case("BatchNorm1d backward", BN_SHAPE, ops.BN_BACKWARD),
    Case("LayerNorm backward", ROWS_SHAPE, ops.LN_BACKWARD),
    Case("Dropout backward", ROWS_SHAPE, ops.DROPOUT_BACKWARD),
    Case("BatchNorm1d train forward whole layer call", (4, 64, 30), ops.BN_LAYER_CALL),
    Case("LayerNorm forward whole layer call", (120, 64), ops.LN_LAYER_CALL),
    Case(f"Dropout+add+LayerNorm p={FUSED_P} fused forward", ROWS_SHAPE, ops.DROPOUT_ADD_LN),
    Case(
        f"Dropout+add+LayerNorm p={FUSED_P} three calls forward",
        ROWS_SHAPE,
        ops.DROPOUT_ADD_LN_THREE_CALLS,
    ),
)

#: Every case in every dtype: all float32 cases, then all float64 ones.
CASES: tuple[Case, ...] = tuple(replace(c, dtype=d) for d in DTYPES for c in _FLOAT32_CASES)


def select_cases(patterns: Sequence[str] | None, dtypes: Sequence[str] | None = None) -> list[Case]:
    """Return the cases whose name contains any of ``patterns`` (case-insensitive).

    Parameters
    ----------
    patterns : sequence of str or None
        Substrings; ``None`` or empty selects every case.
    dtypes : sequence of str or None
        Keep only the cases in these dtypes; ``None`` or empty keeps every dtype.

    Returns
    -------
    list of Case
    """
    wanted = [p.lower() for p in patterns or ()]
    return [
        c
        for c in CASES
        if (not wanted or any(p in c.name.lower() for p in wanted))
        and (not dtypes or c.dtype in dtypes)
    ]


def find_case(name: str, dtype: str = "float32") -> Case:
    """The case called exactly ``name``, in ``dtype``.

    Parameters
    ----------
    name : str
    dtype : str, default "float32"

    Returns
    -------
    Case

    Raises
    ------
    KeyError
        When no case has that name and dtype.
    """
    for case in CASES:
        if case.name == name and case.dtype == dtype:
            return case
    raise KeyError(f"no benchmark case {name!r} in {dtype}")
