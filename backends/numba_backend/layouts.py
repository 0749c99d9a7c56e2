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

from .jit import FASTMATH, TASK_SIZE, KernelVariants

__all__ = [
    "BLOCK_BYTES",
    "CHANNEL_BLOCKS",
    "LONG_LAYOUT",
    "LONG_ROW",
    "MIN_FORWARD_BLOCKS",
    "channel_kernel",
    "forward_takes_blocks",
    "is_long",
    "takes_blocks",
]

#: Rows at least this long are reduced along ``L``: the per-row layout overtakes the
#: per-column one between L = 32 and L = 64 (the measurements are in
#: docs/benchmarks.md, "Kernel tuning").
LONG_ROW = 64

#: Which layout a channel kernel's code is for: replaced by True in the long-row
#: clones and by False in the short-row ones (see :func:`channel_kernel`).
LONG_LAYOUT = False

#: Most bytes per channel and array of the channel-block layout: a channel's input
#: and gradient take half of a core's 1 MiB L2 cache, its output a quarter.
BLOCK_BYTES = 256 << 10

#: Fewest tasks (channel blocks) of the BatchNorm training forward in the channel-block
#: layout: fewer channels than this would leave threads idle, where the other task
#: layouts split the samples too.
MIN_FORWARD_BLOCKS = 16

#: True in the clones for the channel-block layout (see :func:`channel_kernel`'s
#: ``blocks``), where a task owns whole channels of long rows (:func:`takes_blocks`).
CHANNEL_BLOCKS = False


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


def takes_blocks(x: Any) -> bool:
    """Whether ``(N, C, L)`` data ``x`` takes the channel-block layout: long rows, and at
    most :data:`BLOCK_BYTES` per channel (from the shape and dtype only).

    Parameters
    ----------
    x : numpy.ndarray

    Returns
    -------
    bool
    """
    n, c, length = x.shape
    return is_long(length) and c > 0 and n * length * x.dtype.itemsize <= BLOCK_BYTES


def forward_takes_blocks(x: Any) -> bool:
    """Whether the BatchNorm training forward of ``(N, C, L)`` data ``x`` takes the
    channel-block layout: float64 data that :func:`takes_blocks`, with at least one sample
    and at least :data:`MIN_FORWARD_BLOCKS` tasks (from the shape and dtype only).

    Only float64: the float32 forward's pace on two threads is set by its conversions to
    float64, not by memory, and it was slower in channel blocks (docs/benchmarks.md,
    "Kernel tuning").

    Parameters
    ----------
    x : numpy.ndarray

    Returns
    -------
    bool
    """
    n, c, length = x.shape
    if not is_long(length) or n == 0:  # the cheap tests first: they turn down small calls
        return False
    per = max(1, TASK_SIZE // (n * length))  # channels per task, as channel_blocks
    return (c + per - 1) // per >= MIN_FORWARD_BLOCKS and x.dtype.itemsize == 8 and takes_blocks(x)


def _layout(x: Any) -> str:
    """The variant of a channel kernel that serves ``(N, C, L)`` data ``x``."""
    return "long" if is_long(x.shape[2]) else "short"


def _layout_or_blocks(test: Callable[[Any], bool]) -> Callable[[Any], str]:
    """As :func:`_layout`, with ``"blocks"`` for the data that ``test`` puts in the
    channel-block layout."""

    def choose(x: Any) -> str:
        return "blocks" if test(x) else _layout(x)

    return choose


def channel_kernel(
    fn: Callable[..., Any] | None = None,
    *,
    fastmath: AbstractSet[str] = FASTMATH,
    blocks: bool | Callable[[Any], bool] = False,
) -> Any:
    """Compile ``fn`` once per layout: variants ``"short"`` and ``"long"`` (and ``"blocks"``).

    Parameters
    ----------
    fn : function
        The kernel source; its first argument has shape ``(N, C, L)`` and it
        branches on :data:`LONG_LAYOUT` (and :data:`CHANNEL_BLOCKS`), imported
        into its module.
    fastmath : set of str
        As for :func:`~.jit.kernel`.
    blocks : bool or callable
        Also compile a ``"blocks"`` variant (``LONG_LAYOUT`` and ``CHANNEL_BLOCKS``
        true) for the data that :func:`takes_blocks` (or, given a predicate such as
        :func:`forward_takes_blocks`, for the data it accepts), so that a call compiles
        either the channel-block code or the other long-row code, not both.

    Returns
    -------
    KernelVariants
    """
    if fn is None:
        return lambda f: channel_kernel(f, fastmath=fastmath, blocks=blocks)
    constants = {"short": {"LONG_LAYOUT": False}, "long": {"LONG_LAYOUT": True}}
    if not blocks:
        return KernelVariants(fn, _layout, constants, fastmath)
    constants["blocks"] = {"LONG_LAYOUT": True, "CHANNEL_BLOCKS": True}
    test = blocks if callable(blocks) else takes_blocks
    return KernelVariants(fn, _layout_or_blocks(test), constants, fastmath)
