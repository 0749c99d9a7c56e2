"""Argument checks shared by the functional API and the layers.

Each helper returns the normalised value or raises :class:`InvalidParameterError`
with a message naming the parameter, the value received and what was expected.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from normdrop.errors import InvalidParameterError, InvalidParameterTypeError

SUPPORTED_PARAM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _fail(name: str, value: Any, expected: str, wrong_type: bool = False) -> InvalidParameterError:
    """The error for ``value``; an :class:`InvalidParameterTypeError` (also a ``TypeError``,
    as PyTorch raises) when it is not even of the kind the parameter takes."""
    cls = InvalidParameterTypeError if wrong_type else InvalidParameterError
    return cls(f"{name} must be {expected}, got {value!r}", parameter_name=name, value=value)


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is a positive integer (bools rejected)."""
    if not _is_integer(value) or value <= 0:
        raise _fail(name, value, "a positive integer", not _is_integer(value))
    return int(value)


def positive_finite(name: str, value: Any) -> float:
    """Return ``value`` as a ``float`` if it is a finite real number > 0."""
    if type(value) is float and 0.0 < value < math.inf:  # the common case, without ABCs
        return value
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise _fail(name, value, "a finite number > 0", not _is_real(value))
    return float(value)


def momentum(value: Any, *, allow_none: bool) -> float | None:
    """Return a momentum in [0, 1] (or ``None`` for a cumulative average when allowed)."""
    if value is None and allow_none:
        return None
    if not _is_real(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        expected = "a finite number in [0, 1]" + (" or None" if allow_none else "")
        raise _fail("momentum", value, expected, not _is_real(value))
    return float(value)


def dropout_probability(value: Any, *, allow_one: bool = False) -> float:
    """Return ``p`` if it is a finite real number in [0, 1) (in [0, 1] with ``allow_one``).

    ``allow_one`` is for calls that drop nothing (``training=False``), where PyTorch
    accepts ``p = 1`` too.
    """
    if type(value) is float and 0.0 <= value < 1.0:  # the common case, without ABCs
        return value
    if (
        not _is_real(value)
        or not math.isfinite(value)
        or not (0.0 <= value and (value <= 1.0 if allow_one else value < 1.0))
    ):
        interval = "[0, 1]" if allow_one else "[0, 1)"
        cls = InvalidParameterError if _is_real(value) else InvalidParameterTypeError
        raise cls(
            f"Dropout probability must be in {interval}, got {value!r}",
            parameter_name="p",
            value=value,
        )
    return float(value)


def seed(value: Any, name: str = "seed") -> int:
    """Return a seed if it is an integer in [0, 2**64)."""
    if type(value) is int and 0 <= value < 2**64:  # the common case, without ABCs
        return value
    if not _is_integer(value) or not 0 <= value < 2**64:
        raise _fail(name, value, "an integer in [0, 2**64)", not _is_integer(value))
    return int(value)


def call_index(value: Any) -> int:
    """Return a dropout call counter if it is an integer in [0, 2**64)."""
    return seed(value, "call")


def boolean(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool (NumPy bools included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(name, value, "a bool", wrong_type=True)
    return bool(value)


def param_dtype(value: Any) -> np.dtype:
    """Return the NumPy dtype for a layer's ``dtype`` argument (float32 or float64)."""
    try:
        dtype = np.dtype(value) if value is not None else None
    except TypeError:  # not a dtype at all
        raise _fail("dtype", value, "'float32' or 'float64'", wrong_type=True) from None
    if dtype is None or dtype not in SUPPORTED_PARAM_DTYPES:
        raise _fail("dtype", value, "'float32' or 'float64'")
    return dtype


_SHAPE_EXPECTED = "a positive int or a non-empty sequence of positive ints"


def normalized_shape(value: Any) -> tuple[int, ...]:
    """Return ``normalized_shape`` as a tuple of positive ints."""
    if type(value) is tuple and value and all(type(d) is int and d > 0 for d in value):
        return value  # the common, already-normalised case, checked without ABCs
    if type(value) is int and value > 0:
        return (value,)
    if _is_integer(value):
        dims: Sequence[Any] = (value,)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) > 0:
        dims = value
    elif isinstance(value, np.ndarray) and value.ndim == 1 and value.size > 0:
        dims = value.tolist()  # a 1-D array of sizes, as PyTorch's tuple(normalized_shape) takes
    else:  # an empty sequence or array is a value error, anything else a type error
        empty = isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes))
        raise _fail("normalized_shape", value, _SHAPE_EXPECTED, wrong_type=not empty)
    if not all(_is_integer(d) and d > 0 for d in dims):
        wrong_type = not all(_is_integer(d) for d in dims)
        raise _fail("normalized_shape", value, _SHAPE_EXPECTED, wrong_type)
    return tuple(int(d) for d in dims)
