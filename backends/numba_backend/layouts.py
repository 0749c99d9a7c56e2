"""The two task layouts of the per-channel kernels of ``(N, C, L)`` data.

Rows of at least :data:`LONG_ROW` values are walked along ``L`` (the long-row
layout), shorter ones across the ``C * L`` columns of each sample (the short-row
layout); see :mod:`.stats` and :mod:`.elementwise`. Each channel kernel is one
source compiled once per layout (:func:`channel_kernel`): the source branches on
:data:`LONG_LAYOUT`, which each clone sees as a constant, so a call compiles
only the code of its input's layout.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

from .jit import FASTMATH, KernelVariants

__all__ = ["LONG_LAYOUT", "LONG_ROW", "channel_kernel", "is_long"]

#: Rows at least this long are reduced along ``L``: the per-row layout overtakes the
#: per-column one between L = 32 and L = 64 (the measurements are in
#: docs/benchmarks.md, "Kernel tuning").
LONG_ROW = 64

#: Which layout a channel kernel's code is for: replaced by True in the long-row
#: clones and by False in the short-row ones (see :func:`channel_kernel`).
LONG_LAYOUT = False


def is_long(length: int) -> bool:
    """Whether rows of ``length`` values take the long-row layout.

    Parameters
    ----------
    length : int
        ``L`` of ``(N, C, L)`` data.

    Returns
    -------
    bool
    """
    return length >= LONG_ROW


def _layout(x: Any) -> str:
    """The variant of a channel kernel that serves ``(N, C, L)`` data ``x``."""
    return "long" if is_long(x.shape[2]) else "short"


def channel_kernel(
    fn: Callable[..., Any] | None = None, *, fastmath: AbstractSet[str] = FASTMATH
) -> Any:
    """Compile ``fn`` once per layout: variants ``"short"`` and ``"long"``.

    Parameters
    ----------
    fn : function
        The kernel source; its first argument has shape ``(N, C, L)`` and it
        branches on :data:`LONG_LAYOUT` (imported into its module).
    fastmath : set of str
        As for :func:`~.jit.kernel`.

    Returns
    -------
    KernelVariants
    """
    if fn is None:
        return lambda f: channel_kernel(f, fastmath=fastmath)
    constants = {"short": {"LONG_LAYOUT": False}, "long": {"LONG_LAYOUT": True}}
    return KernelVariants(fn, _layout, constants, fastmath)
