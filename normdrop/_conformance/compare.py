"""Failure messages and comparisons of a backend's results with the reference backend's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from normdrop.protocol import ArrayLike

__all__ = ["call", "close", "equal", "fail", "run_both"]


def fail(backend: Any, what: str, detail: str = "") -> AssertionError:
    """The error that names ``backend`` and what it got wrong."""
    name = getattr(backend, "name", None)
    who = f"backend {name!r}" if isinstance(name, str) else repr(backend)
    return AssertionError(f"{who}: {what}" + (f" ({detail})" if detail else ""))


def _same_dtype(backend: Any, what: str, got: np.ndarray, expected: np.ndarray) -> None:
    """``got`` has ``expected``'s dtype: the data's for outputs, float64 for statistics and
    gradients, bool for masks, uint8 for bitmasks (the protocol's dtypes)."""
    if got.dtype != expected.dtype:
        raise fail(backend, f"{what} has dtype {got.dtype}, expected {expected.dtype}")


def close(backend: Any, what: str, got: Any, expected: Any, tol: float) -> None:
    """``got`` is an array of ``expected``'s shape and dtype, equal to it within ``tol``."""
    if not isinstance(got, ArrayLike):
        raise fail(backend, f"{what} is not an array", type(got).__name__)
    got = backend.to_numpy(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        raise fail(backend, f"{what} has shape {got.shape}, expected {expected.shape}")
    _same_dtype(backend, what, got, expected)
    if not np.allclose(got, expected, rtol=tol, atol=tol):
        err = np.max(np.abs(got.astype(np.float64) - expected))
        raise fail(backend, f"{what} differs from the numpy reference", f"max error {err}")


def equal(backend: Any, what: str, got: Any, expected: Any) -> None:
    """``got`` is an array of ``expected``'s dtype, equal to it bit for bit."""
    if not isinstance(got, ArrayLike):
        raise fail(backend, f"{what} is not an array", type(got).__name__)
    got = backend.to_numpy(got)
    _same_dtype(backend, what, got, np.asarray(expected))
    if not np.array_equal(got, expected):
        raise fail(backend, f"{what} differs from the numpy reference bit for bit")


def call(backend: Any, what: str, kernel: Callable[..., Any], *args: Any) -> Any:
    """``kernel(*args)``; an exception it raises fails the check, naming ``what``."""
    try:
        return kernel(*args)
    except Exception as exc:
        raise fail(backend, f"{what} raised {type(exc).__name__}: {exc}") from exc


def run_both(
    backend: Any,
    ref: Any,
    name: str,
    make_args: Callable[[Any, Callable[[Any], Any]], tuple],
    tol: float,
    label: str = "",
) -> None:
    """Call kernel ``name`` on both backends with the same data; compare every result."""
    got = call(backend, name + label, getattr(backend, name), *make_args(backend, backend.asarray))
    expected = getattr(ref, name)(*make_args(ref, np.asarray))
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    if len(got) != len(expected):
        raise fail(backend, f"{name} returned {len(got)} values, expected {len(expected)}")
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        what = f"{name} result {i}{label}"
        if e is None:
            if g is not None:
                raise fail(backend, f"{what} should be None")
            continue
        close(backend, what, g, e, tol)
