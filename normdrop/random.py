"""Seeds and the dropout counter layout.

Dropout draws its randomness from the stateless counter-based generator
Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011). With ``seed`` and ``call`` (the layer's call counter), element ``i``
of the C-ordered array gets word ``i % 4`` of::

    philox4x32_10(counter=(lo32(i // 4), hi32(i // 4), lo32(call), hi32(call)),
                  key=(lo32(seed), hi32(seed)))

and is kept when that word is ``>= floor(p * 2**32)``. Every backend produces the
same words, so a mask depends only on ``(seed, call, p, shape)``.

The global generator that ``seed=None`` draws from is reseeded in every child
process created by ``fork`` (``os.fork``, ``multiprocessing``'s fork start
method): each fork spawns an independent child stream of the parent's
:class:`numpy.random.SeedSequence`, so children draw distinct seeds, different
from the parent's, and the same ones again after the same
:func:`manual_seed` and the same sequence of forks. The parent's own draws are
not changed by forking.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from normdrop import _validation

__all__ = ["PHILOX_MULTIPLIERS", "PHILOX_WEYL", "draw_seed", "dropout_threshold", "manual_seed"]

#: Philox4x32's round multipliers ``(M0, M1)`` and key increments (Weyl constants ``(W0, W1)``).
PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)

_lock = threading.Lock()
_seed_sequence = np.random.SeedSequence()
_generator = np.random.default_rng(_seed_sequence)
_child_sequence: np.random.SeedSequence | None = None


def manual_seed(seed: int) -> None:
    """Seed the global generator that ``seed=None`` draws dropout seeds from.

    Parameters
    ----------
    seed : int
        An integer in ``[0, 2**64)``.

    Examples
    --------
    >>> import normdrop
    >>> normdrop.manual_seed(0)
    >>> a = normdrop.Dropout(0.5).seed
    >>> normdrop.manual_seed(0)
    >>> a == normdrop.Dropout(0.5).seed
    True
    """
    global _generator, _seed_sequence
    value = _validation.seed(seed)
    with _lock:
        _seed_sequence = np.random.SeedSequence(value)
        _generator = np.random.default_rng(_seed_sequence)


def draw_seed() -> int:
    """Draw a fresh 64-bit dropout seed from the global generator.

    Returns
    -------
    int
        An integer in ``[0, 2**64)``.
    """
    with _lock:
        return int(_generator.integers(0, 2**64, dtype=np.uint64))


def dropout_threshold(p: float) -> int:
    """Return ``floor(p * 2**32)``: a word at or above it keeps its element.

    Parameters
    ----------
    p : float
        Drop probability in ``[0, 1)``.

    Returns
    -------
    int
    """
    return math.floor(p * 2.0**32)


def _before_fork() -> None:
    """In the parent, just before ``fork``: take the lock, spawn the child's seed sequence."""
    global _child_sequence
    _lock.acquire()
    _child_sequence = _seed_sequence.spawn(1)[0]


def _after_fork_in_parent() -> None:
    global _child_sequence
    _child_sequence = None
    _lock.release()


def _after_fork_in_child() -> None:
    """In the child: a fresh lock and a generator on the spawned sequence."""
    global _lock, _seed_sequence, _generator, _child_sequence
    _lock = threading.Lock()
    if _child_sequence is not None:
        _seed_sequence = _child_sequence
        _generator = np.random.default_rng(_seed_sequence)
    _child_sequence = None


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
