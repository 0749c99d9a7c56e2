"""Warnings for the keyword flags that changed how many values a public function returns."""

from __future__ import annotations

import warnings


def warn_flag(function: str, flag: str, replacement: str) -> None:
    """Warn that ``function(..., flag=...)`` is deprecated in favour of ``replacement``.

    Call it directly from the public function: the warning points at its caller.
    """
    warnings.warn(
        f"{function}(..., {flag}=...) is deprecated and will be removed in the next release; "
        f"use normdrop.functional.{replacement}(...), which returns the extra values, or "
        f"normdrop.functional.{function}(...) without {flag}",
        DeprecationWarning,
        stacklevel=3,
    )
