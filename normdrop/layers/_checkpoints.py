"""The checkpoint methods of every layer: ``state_dict``, ``load_state_dict``, ``.npz`` files."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import numpy as np

from normdrop import _validation
from normdrop.errors import InvalidParameterError, StateDictError
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

MappingT = TypeVar("MappingT", bound=MutableMapping[str, Any])


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
        """Restore what :meth:`get_extra_state` returned; raise on a bad value, changing nothing.

        Parameters
        ----------
        state : object
            The value stored under ``"_extra_state"`` (as loaded: an array from a
            ``.npz`` file).
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no extra state")

    @overload
    def state_dict(
        self,
        *,
        destination: None = None,
        prefix: str = "",
        keep_vars: bool = False,
        extra_state: bool = False,
    ) -> OrderedDict[str, Any]: ...

    @overload
    def state_dict(
        self,
        *,
        destination: MappingT,
        prefix: str = "",
        keep_vars: bool = False,
        extra_state: bool = False,
    ) -> MappingT: ...

    def state_dict(
        self,
        *,
        destination: MutableMapping[str, Any] | None = None,
        prefix: str = "",
        keep_vars: bool = False,
        extra_state: bool = False,
    ) -> MutableMapping[str, Any]:
        """Return host NumPy copies of every parameter and buffer, keyed as in PyTorch.

        Parameters
        ----------
        destination : mutable mapping, optional
            Write the entries into this mapping and return it (PyTorch's
            ``destination=``); a new ``OrderedDict`` otherwise.
        prefix : str, default ""
            Put before every key, as given (PyTorch's ``prefix=``, e.g. ``"encoder."``).
        keep_vars : bool, default False
            Accepted for PyTorch compatibility and ignored: without autograd there
            are no variables to keep, and the values are always copies.
        extra_state : bool, default False
            Also include each :meth:`get_extra_state` under ``"_extra_state"``
            (e.g. Dropout's seed and call counter), for an exact resume.
            PyTorch's modules do not know these keys, so the default leaves them out.

        Returns
        -------
        collections.OrderedDict or the ``destination``
            ``weight, bias, running_mean, running_var, num_batches_tracked`` order,
            module by module (``"0."``, ``"1."``, ... in a Sequential).

        Raises
        ------
        InvalidParameterError
            ``destination`` is not a mutable mapping, ``prefix`` not a string, or a
            flag not a bool; nothing is written.
        """
        if destination is not None and not isinstance(destination, MutableMapping):
            raise InvalidParameterError(
                f"destination must be a mutable mapping (e.g. a dict) or None, got "
                f"{type(destination).__name__}",
                parameter_name="destination",
                value=destination,
            )
        if not isinstance(prefix, str):
            raise InvalidParameterError(
                f"prefix must be a string, got {prefix!r}", parameter_name="prefix", value=prefix
            )
        _validation.boolean("keep_vars", keep_vars)
        extra_state = _validation.boolean("extra_state", extra_state)
        state: OrderedDict[str, Any] = OrderedDict()
        for path, module in self._walk(prefix):
            to_numpy = module._array_backend.to_numpy
            for k, v in module._state_items():
                state[path + k] = np.array(to_numpy(v), copy=True)
            if extra_state and has_extra_state(module):
                state[path + EXTRA_STATE_KEY] = module.get_extra_state()
        if destination is None:
            return state
        destination.update(state)
        return destination

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

        Raises
        ------
        StateDictError
            The file is not an ``.npz`` archive of plain arrays (a ``.npy`` file, a
            pickle, any other file), or :meth:`load_state_dict` refuses its contents.
        OSError
            The file cannot be read (e.g. it does not exist).
        """
        file = npz_path(path, reading=True)
        try:
            archive = np.load(file)  # allow_pickle=False: a pickle raises ValueError
        except ValueError as exc:
            raise StateDictError(f"{path!r} is not an .npz file written by save(): {exc}") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise StateDictError(
                f"{path!r} is a .npy file holding one array, not an .npz file written by save()"
            )
        with archive as data:
            try:
                values = {k: data[k] for k in data.files}
            except ValueError as exc:  # object arrays, which need allow_pickle
                raise StateDictError(f"cannot read {path!r}: {exc}") from None
        return self.load_state_dict(values, strict=strict)
