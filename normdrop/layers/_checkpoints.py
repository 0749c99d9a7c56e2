"""The checkpoint methods of every layer: ``state_dict``, ``load_state_dict``, ``.npz`` files."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from normdrop import _validation
from normdrop.layers._state_dict import (
    EXTRA_STATE_KEY,
    IncompatibleKeys,
    apply_load,
    has_extra_state,
    npz_path,
    plan_load,
)

if TYPE_CHECKING:
    from normdrop.layers.module import Module

__all__ = ["Checkpointing"]


class Checkpointing:
    """Saving and loading: the part of :class:`~normdrop.layers.Module` that handles state.

    Keys and order are PyTorch's; loads check everything before writing anything.
    """

    if TYPE_CHECKING:

        def _walk(self, prefix: str = "") -> Iterator[tuple[str, Module]]: ...

    def get_extra_state(self) -> Any:
        """Return state that is neither a parameter nor a buffer (override to have some).

        As in PyTorch, a class that overrides this method (and
        :meth:`set_extra_state`) gets a ``"_extra_state"`` entry; normdrop writes
        it with ``state_dict(extra_state=True)`` and :meth:`save`. For ``.npz``
        files it must be an array (e.g. Dropout's ``[seed, call_count]``).
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no extra state")

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` returned; raise on a bad value, changing nothing."""
        raise NotImplementedError(f"{type(self).__name__} keeps no extra state")

    def state_dict(self, *, extra_state: bool = False) -> OrderedDict[str, Any]:
        """Return host NumPy copies of every parameter and buffer, keyed as in PyTorch.

        Parameters
        ----------
        extra_state : bool, default False
            Also include each :meth:`get_extra_state` under ``"_extra_state"``
            (e.g. Dropout's seed and call counter), for an exact resume.
            PyTorch's modules do not know these keys, so the default leaves them out.

        Returns
        -------
        collections.OrderedDict
            ``weight, bias, running_mean, running_var, num_batches_tracked`` order,
            module by module (``"0."``, ``"1."``, ... in a Sequential).
        """
        extra_state = _validation.boolean("extra_state", extra_state)
        state: OrderedDict[str, Any] = OrderedDict()
        for prefix, module in self._walk():
            to_numpy = module._array_backend.to_numpy
            for k, v in module._state_items():
                state[prefix + k] = np.array(to_numpy(v), copy=True)
            if extra_state and has_extra_state(module):
                state[prefix + EXTRA_STATE_KEY] = module.get_extra_state()
        return state

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy parameters and buffers from ``state_dict``; all checks run before any write.

        Parameters
        ----------
        state_dict : mapping
            From :meth:`state_dict`, an ``.npz`` file, or a PyTorch ``state_dict``
            (tensors are copied to host NumPy arrays; bfloat16 and float16 ones
            widened to float32 on the way). ``"_extra_state"`` entries are
            optional.
        strict : bool, default True
            Raise on missing or unexpected keys. Size mismatches always raise.

        Returns
        -------
        IncompatibleKeys
            The missing and unexpected keys (both empty when ``strict``); prints
            ``<All keys matched successfully>`` when both are empty.

        Raises
        ------
        StateDictError
            ``state_dict`` is not a mapping; missing or unexpected keys (when
            ``strict``), mismatched shapes or unreadable values.
        """
        strict = _validation.boolean("strict", strict)
        root = cast("Module", self)
        plan = plan_load(root, state_dict, strict)
        apply_load(root, plan)
        return IncompatibleKeys(plan.missing, plan.unexpected)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save ``state_dict(extra_state=True)`` to an ``.npz`` file.

        Parameters
        ----------
        path : str or path-like
            The file; ``.npz`` is appended when the name lacks it (as
            :func:`numpy.savez` does, and :meth:`load` does the same).
        """
        np.savez(npz_path(path, reading=False), **self.state_dict(extra_state=True))

    def load(self, path: str | os.PathLike[str], strict: bool = True) -> IncompatibleKeys:
        """Load a file written by :meth:`save`: parameters, buffers and extra state.

        Parameters
        ----------
        path : str or path-like
            As given to :meth:`save` (with or without ``.npz``).
        strict : bool, default True
            As in :meth:`load_state_dict`.

        Returns
        -------
        IncompatibleKeys
        """
        with np.load(npz_path(path, reading=True)) as data:
            return self.load_state_dict({k: data[k] for k in data.files}, strict=strict)
