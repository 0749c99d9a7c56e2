"""Static checks of normdrop's public types, run by mypy (never imported by pytest).

``assert_type`` fails under mypy when an expression's type is not exactly the one
named, ``Any`` included: so these lines fail if the public functions and layers
stopped returning the caller's array type (e.g. if ``ArrayT`` became ``Any``).
``tests/test_typing.py`` runs mypy over this file; CI's ``mypy`` checks it too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import assert_type

import normdrop
from normdrop import functional as F
from normdrop.protocol import ArrayLike

x32: npt.NDArray[np.float32] = np.ones((4, 3), np.float32)
x64: npt.NDArray[np.float64] = np.ones((4, 3), np.float64)

# ----- the functions return the caller's array type ------------------------------------
assert_type(F.batch_norm(x32, training=True), npt.NDArray[np.float32])
assert_type(F.batch_norm(x64, out=x64), npt.NDArray[np.float64])
assert_type(F.layer_norm(x32, 3), npt.NDArray[np.float32])
assert_type(F.dropout(x64, 0.5, seed=0), npt.NDArray[np.float64])
y, r = F.dropout_add_layer_norm(x32, x32, 3, seed=0)
assert_type(y, npt.NDArray[np.float32])
assert_type(r, npt.NDArray[np.float32])

y32, mean, rstd = F.layer_norm_with_stats(x32, 3)
assert_type(y32, npt.NDArray[np.float32])
y64, bitmask = F.dropout_with_bitmask(x64, 0.5, seed=0)
assert_type(y64, npt.NDArray[np.float64])
y32, mean, rstd = F.batch_norm_with_stats(x32, training=True)
assert_type(y32, npt.NDArray[np.float32])

dx, dw, db = F.layer_norm_backward(x32, x32, 3, mean, rstd)
assert_type(dx, npt.NDArray[np.float32])
dx, dw, db = F.batch_norm_backward(x32, x32, mean, rstd)
assert_type(dx, npt.NDArray[np.float32])
assert_type(F.dropout_backward(x64, 0.5, seed=0), npt.NDArray[np.float64])

# ----- and so do the layers' forward passes ---------------------------------------------
assert_type(normdrop.LayerNorm(3).forward(x32), npt.NDArray[np.float32])
assert_type(normdrop.BatchNorm1d(3).forward(x64), npt.NDArray[np.float64])
assert_type(normdrop.Dropout(0.1).forward(x32), npt.NDArray[np.float32])
assert_type(normdrop.LayerNorm(3)(x32), npt.NDArray[np.float32])
assert_type(normdrop.BatchNorm1d(3)(x64), npt.NDArray[np.float64])
assert_type(normdrop.Sequential(normdrop.Dropout(0.1))(x32), npt.NDArray[np.float32])
assert_type(
    normdrop.DropoutAddLayerNorm(3)(x32, x32),
    tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
)


# ----- any array with shape, dtype, ndim and size is accepted ---------------------------
class Duck:
    """A minimal array type of a third-party library."""

    shape: tuple[int, ...] = (2, 3)
    dtype: Any = np.dtype(np.float32)
    ndim: int = 2
    size: int = 6


duck: ArrayLike = Duck()  # structural: no base class needed
assert_type(F.layer_norm(Duck(), 3), Duck)
F.layer_norm("not an array", 3)  # type: ignore[type-var]
