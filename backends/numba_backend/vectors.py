"""Parameter vectors as the kernels read them.

The backend hands every kernel its optional vectors (weight, bias, running
statistics) as arrays, an empty one standing for ``None``, so that a layer with or
without them compiles the same specialisation; :func:`float64_or` turns such a
vector into the float64 values a kernel computes with.
"""

from __future__ import annotations

import numpy as np

from .jit import cold, task_jit

__all__ = ["float64_or"]


@task_jit
def float64_or(d: int, v: np.ndarray, fill: float) -> np.ndarray:
    """``v`` as float64, or ``fill`` repeated ``d`` times when it is empty (``None``).

    A loop into ``np.empty``: ``np.ones``/``astype`` would compile overloads of their own.
    Cold code (:func:`~.jit.cold`), compiled once per vector dtype.
    """
    cold()
    out = np.empty(d)
    empty = v.size == 0
    for j in range(d):
        out[j] = fill if empty else v[j]
    return out
