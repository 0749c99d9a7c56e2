"""Failure messages and comparisons of a backend's results with the reference backend's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from normdrop.protocol import ArrayLike

__all__ = ["close", "equal", "fail", "run_both"]


def fail(backend: Any, what: str, detail: str = "") -> AssertionError:
    """The error that names ``backend`` and what it got wrong."""
    name = getattr(backend, "name", None)
    who = f"backend {name!r}" if isinstance(name, str) else repr(backend)
    return AssertionError(f"{who}: {what}" + (f" ({detail})" if detail else ""))


def close(backend: Any, what: str, got: Any, expected: Any, tol: float) -> None:
    """``got`` is an array of ``expected``'s shape, equal to it within ``tol``."""
    if not isinstance(got, ArrayLike):
        raise fail(backend, f"{what} is not an array", type(got).__name__)
    got = backend.to_numpy(got)
    expected = np.asarray(expected)
    if got.shape != expected.shape:
        raise fail(backend, f"{what} has shape {got.shape}, expected {expected.shape}")
    if not np.allclose(got, expected, rtol=tol, atol=tol):
        err = np.max(np.abs(got.astype(np.float64) - expected))
        raise fail(backend, f"{what} differs from the numpy reference", f"max error {err}")


def equal(backend: Any, what: str, got: Any, expected: Any) -> None:
    """``got`` is an array equal to ``expected`` bit for bit."""
    if not isinstance(got, ArrayLike):
        raise fail(backend, f"{what} is not an array", type(got).__name__)
    if not np.array_equal(backend.to_numpy(got), expected):
        raise fail(backend, f"{what} differs from the numpy reference bit for bit")


def run_both(
    backend: Any,
    ref: Any,
    name: str,
    make_args: Callable[[Any, Callable[[Any], Any]], tuple],
    tol: float,
    label: str = "",
) -> None:
    """Call kernel ``name`` on both backends with the same data; compare every result."""
    got = getattr(backend, name)(*make_args(backend, backend.asarray))
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
