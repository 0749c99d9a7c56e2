"""Seeds and the dropout counter layout.

Dropout draws its randomness from the stateless counter-based generator
Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
SC 2011). With ``seed`` and ``call`` (the layer's call counter), element ``i``
of the C-ordered array gets word ``i % 4`` of::

    philox4x32_10(counter=(lo32(i // 4), hi32(i // 4), lo32(call), hi32(call)),
                  key=(lo32(seed), hi32(seed)))

and is kept when that word is ``>= floor(p * 2**32)``. Every backend produces the
same words, so a mask depends only on ``(seed, call, p, shape)``.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from normdrop import _validation

__all__ = ["draw_seed", "dropout_threshold", "manual_seed"]

_lock = threading.Lock()
_generator = np.random.default_rng()


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
    global _generator
    value = _validation.seed(seed)
    with _lock:
        _generator = np.random.default_rng(value)


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
