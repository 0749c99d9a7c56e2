"""The same-run bound of ``normdrop bench``: the least time this machine needs for a case.

A case's **bound** is the time this run's measured speeds (:mod:`normdrop.bench.memory`)
need for the traffic that no algorithm for the case can avoid:

    bound = (bytes read and written once) / memory speed
            + (bytes that must be read a second time) / read speed

The first part is the case's moved bytes (:meth:`~normdrop.bench.cases.Case.moved_bytes`,
the *of mem* column's count). The second part, the **re-read**, is defined per operation
(:attr:`Operation.reread <normdrop.bench.ops.Operation.reread>`) by the functions below,
and counts only what *any* algorithm must re-read, not what normdrop's kernels happen to:
a re-read is forced only where a result must be complete before the first output
element can be written, *and* the values that feed it cannot all stay in the cache
until then.

- **BatchNorm, statistics before output** (:func:`channel_reread`). A channel's
  outputs need that channel's mean and variance (in training) or its ``sum(dy)`` and
  ``sum(dy * xhat)`` (in the backward), so every value of the channel is read before
  its first output and again for it. Nothing ties one channel to another: an algorithm
  may take the channels one at a time, so what must stay in cache between the two
  reads is one channel's values (``N * L`` values of ``x``, and of ``dy`` in the
  backward), not the whole input. With ``S`` bytes of last-level cache, at most ``S``
  of a channel's ``U`` bytes can still be there for the second read, so at least
  ``max(0, U - S)`` bytes per channel come from memory twice. This is a lower bound:
  it counts values, not the cache lines that hold them (a channels-last channel's
  values lie in lines shared with other channels), it ignores what the output and
  the private L1/L2 caches displace, and the cache is taken as ideal. At the
  headline shapes a channel is well inside the cache, so the bound forces no re-read
  there: a forward that reads all of ``x`` for the statistics and then all of it
  again is one algorithm, not the only one.
- **LayerNorm and the fused dropout + add + LayerNorm, statistics before output**
  (:func:`row_reread`): the same argument per row (``D`` values of each tensor the
  row's sums read). Rows of thousands of values fit the L1 or L2 cache: no re-read.
- **Dropout, BatchNorm in evaluation**: each output element needs only its own
  inputs: no re-read (:func:`no_reread`).

Without a known last-level cache size, no re-read is counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from normdrop.bench.memory import MemorySpeed

__all__ = ["Reread", "bound_seconds", "bound_share", "channel_reread", "no_reread", "row_reread"]

#: ``reread(shape, itemsize, cache_bytes)``: the bytes of a call on an input of ``shape``
#: (values of ``itemsize`` bytes) that any algorithm must read a second time, with a
#: last-level cache of ``cache_bytes`` (``None``: unknown, no re-read).
Reread = Callable[[Sequence[int], int, int | None], float]


def no_reread(shape: Sequence[int], itemsize: int, cache_bytes: int | None) -> float:
    """No re-read: every output element needs only its own inputs.

    Parameters
    ----------
    shape : sequence of int
        The input's shape.
    itemsize : int
        Bytes per value.
    cache_bytes : int or None
        The last-level cache size.

    Returns
    -------
    float
        0.
    """
    return 0.0


def _forced(units: int, unit_bytes: int, cache_bytes: int | None) -> float:
    """Bytes read twice when ``units`` groups of ``unit_bytes`` each must be read in full
    before their first output, with ``cache_bytes`` of cache (see the module notes)."""
    if cache_bytes is None:
        return 0.0
    return float(units * max(0, unit_bytes - cache_bytes))


def channel_reread(tensors: int) -> Reread:
    """The re-read of a BatchNorm call whose per-channel sums come before its output.

    Parameters
    ----------
    tensors : int
        How many input-sized tensors the sums read: 1 for the training forward
        (``x``), 2 for the backward (``x`` and ``dy``).

    Returns
    -------
    Reread
        ``C * max(0, tensors * N * L * itemsize - cache)`` for ``(N, C, L)`` or
        ``(N, C)`` (``L = 1``) input: per channel, the part of its values that cannot
        still be in the cache when its outputs are computed.
    """

    def reread(shape: Sequence[int], itemsize: int, cache_bytes: int | None) -> float:
        channels = shape[1]
        per_channel = math.prod(shape) // channels if channels else 0
        return _forced(channels, tensors * per_channel * itemsize, cache_bytes)

    return reread


def row_reread(tensors: int) -> Reread:
    """The re-read of a row-wise normalisation whose per-row sums come before its output.

    Parameters
    ----------
    tensors : int
        How many input-sized tensors the sums read: 1 for a forward, 2 for a backward
        (``x`` or the saved ``r``, and ``dy``).

    Returns
    -------
    Reread
        ``rows * max(0, tensors * D * itemsize - cache)`` for rows of ``D`` values
        (the last dimension).
    """

    def reread(shape: Sequence[int], itemsize: int, cache_bytes: int | None) -> float:
        length = shape[-1]
        rows = math.prod(shape) // length if length else 0
        return _forced(rows, tensors * length * itemsize, cache_bytes)

    return reread


def bound_seconds(
    moved_bytes: float, reread_bytes: float, speed: MemorySpeed | None
) -> float | None:
    """The least time this run's speeds need for a case's unavoidable traffic.

    Parameters
    ----------
    moved_bytes : float
        Bytes the case must read plus bytes it must write, once each.
    reread_bytes : float
        Bytes it must read a second time (its operation's :data:`Reread`).
    speed : MemorySpeed or None
        This run's memory and read speeds; ``None`` when not measured.

    Returns
    -------
    float or None
        ``moved_bytes / memory speed + reread_bytes / read speed``; ``None`` without a
        memory speed, or with a re-read but no read speed.
    """
    if speed is None:
        return None
    seconds = moved_bytes / speed.bytes_per_s
    if reread_bytes > 0:
        read = speed.read_bytes_per_s
        if read is None:
            return None
        seconds += reread_bytes / read
    return seconds


def bound_share(bound: float | None, seconds: float | None) -> float | None:
    """Share of the bound that a case reaches: the bound's time / the case's time.

    Parameters
    ----------
    bound : float or None
        :func:`bound_seconds`.
    seconds : float or None
        The case's time.

    Returns
    -------
    float or None
        ``None`` when either is missing.
    """
    if bound is None or seconds is None or seconds <= 0:
        return None
    return bound / seconds
