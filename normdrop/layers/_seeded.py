"""The dropout seed and call counter of a layer, kept as PyTorch-style extra state."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from normdrop import _validation
from normdrop.errors import InvalidParameterError
from normdrop.layers._state_dict import host_array

__all__ = ["SEEDED_CHECKS", "SeededCalls"]

#: ``Module._attribute_checks`` entries: ``layer.seed = ...`` and ``layer.call_count = ...``
#: take integers in [0, 2**64), as the constructor and ``functional.dropout`` do, and
#: ``layer.p = ...`` (PyTorch's plain attribute, set by dropout-rate schedules) a drop
#: probability in [0, 1), as the constructor does.
SEEDED_CHECKS: dict[str, Callable[[Any], Any]] = {
    "seed": _validation.seed,
    "call_count": partial(_validation.seed, name="call_count"),
    "p": _validation.dropout_probability,
}
#: The last call number a layer uses: ``call_count`` after it must still fit in 64 bits.
_LAST_CALL = 2**64 - 2

#: Guards every layer's read-and-increment of ``call_count`` (one lock for all layers: a
#: layer's own would not survive pickling and deep copies, and it is held for nanoseconds).
_CALL_LOCK = threading.Lock()


class SeededCalls:
    """Mixin for layers whose masks come from ``(seed, call_count)``.

    The pair is the layer's extra state (PyTorch's ``get_extra_state`` /
    ``set_extra_state``, stored under ``"_extra_state"``), so that ``save``/``load``
    resume its masks exactly. The layer sets ``seed`` and ``call_count``.
    """

    p: float
    seed: int
    call_count: int
    #: A failed Sequential forward puts the call counter back (see Module).
    _forward_state_attributes: tuple[str, ...] = ("call_count",)

    def _claim_call(self) -> int:
        """Return the next call number and advance ``call_count``, atomically: two threads
        calling one layer get different calls (and so different masks)."""
        with _CALL_LOCK:
            call = self.call_count
            if call > _LAST_CALL:
                raise InvalidParameterError(
                    f"{type(self).__name__} has used every call number of seed {self.seed} "
                    f"(call_count = {call}); assign a new seed and call_count = 0 to draw "
                    "further masks",
                    parameter_name="call_count",
                    value=call,
                )
            # a count just checked above: a plain store, not the attribute check of
            # ``layer.call_count = ...`` on every call
            self.__dict__["call_count"] = call + 1
        return call

    def _release_call(self, call: int) -> None:
        """Undo :meth:`_claim_call` of ``call`` after a failed forward, unless another
        thread has claimed a later call since (then a mask number is skipped, never reused)."""
        with _CALL_LOCK:
            if self.call_count == call + 1:
                self.__dict__["call_count"] = call

    def get_extra_state(self) -> np.ndarray:
        """Return ``[seed, call_count]`` as a uint64 array (stored as ``"_extra_state"``).

        Returns
        -------
        numpy.ndarray
        """
        return np.array([self.seed, self.call_count], dtype=np.uint64)

    def set_extra_state(self, state: Any) -> None:
        """Restore ``seed`` and ``call_count`` from :meth:`get_extra_state`'s array.

        Parameters
        ----------
        state : array of two non-negative integers

        Raises
        ------
        InvalidParameterError
            ``state`` is not two integers in [0, 2**64); nothing is changed.
        """
        try:
            values = host_array(state)
        except (TypeError, ValueError):  # e.g. a ragged list
            values = np.empty(0)
        if values.shape != (2,) or values.dtype.kind not in "iu" or (values < 0).any():
            raise InvalidParameterError(
                f"{type(self).__name__} extra state must be [seed, call_count], two integers "
                f"in [0, 2**64), got {state!r}",
                parameter_name="state",
                value=state,
            )
        self.seed, self.call_count = (int(v) for v in values)
