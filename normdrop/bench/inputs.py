"""The benchmarks' fixed parameters and input data, shared by every case and every peer.

normdrop, PyTorch and JAX each get the same input (:func:`make_input`), the same
upstream gradient or residual (:func:`grad_like`) and the same layer parameters.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BN_SHAPE",
    "DROPOUT_P",
    "DTYPES",
    "EPS",
    "FUSED_P",
    "MOMENTUM",
    "ROWS_SHAPE",
    "SEED",
    "grad_like",
    "make_input",
]

#: Drop probability of the dropout cases.
DROPOUT_P = 0.15
#: Drop probability of the fused dropout + add + LayerNorm cases (a transformer block's).
FUSED_P = 0.1
#: Seed of normdrop's dropout masks.
SEED = 1234
#: The normalisations' epsilon.
EPS = 1e-5
#: BatchNorm's running-statistics momentum.
MOMENTUM = 0.1

#: The headline ``(N, C, L)`` BatchNorm input.
BN_SHAPE = (64, 256, 512)
#: The headline ``(R, D)`` LayerNorm and Dropout input.
ROWS_SHAPE = (8192, 1024)
#: The dtypes every case runs in, in the order of the table.
DTYPES = ("float32", "float64")


def make_input(shape: tuple[int, ...], dtype: str | np.dtype) -> np.ndarray:
    """The input ``x`` of a case: standard normal values of ``shape`` in ``dtype``.

    Parameters
    ----------
    shape : tuple of int
    dtype : str or numpy.dtype

    Returns
    -------
    numpy.ndarray
    """
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def grad_like(x: np.ndarray) -> np.ndarray:
    """An upstream gradient (or residual) for ``x``: other standard normal values, same dtype.

    Parameters
    ----------
    x : numpy.ndarray
        A case's input; only its shape and dtype are used.

    Returns
    -------
    numpy.ndarray
        Independent of ``x``'s values, the same for every implementation timed.
    """
    return np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype)
