"""Where a layer computes and in which dtype: ``device``, :meth:`~normdrop.layers.Module.to`
and its shorthands (``cpu``, ``cuda``, ``float``, ``double``, ``half``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from normdrop import _validation
from normdrop.layers import _devices, _dtypes
from normdrop.protocol import Backend
from normdrop.registry import get_backend

if TYPE_CHECKING:
    from normdrop.layers.module import Module

__all__ = ["Placement"]


class Placement:
    """Devices and dtypes: the part of :class:`~normdrop.layers.Module` that moves and
    converts its arrays.

    The checks of each call's arrays are in :mod:`._devices`.
    """

    _array_backend: Backend

    @property
    def device(self) -> str:
        """Where the parameters, buffers and gradients live: ``"cpu"`` or ``"cuda"``."""
        return self._array_backend.device

    def to(
        self,
        device: str | npt.DTypeLike | None = None,
        dtype: npt.DTypeLike | None = None,
        *,
        non_blocking: bool = False,
    ) -> Module:
        """Move parameters, buffers and gradients to ``device``, convert them to ``dtype``.

        As PyTorch's ``Module.to``: ``to("cuda")``, ``to("float64")`` (or
        ``to(np.float64)``), ``to("cuda", "float64")`` and the keyword forms
        ``to(device=..., dtype=...)`` all work, on this module and every module
        inside it.

        ``to("cuda")`` makes the layer use the ``cuda`` backend; ``to("cpu")``
        brings the arrays back as NumPy arrays and restores automatic backend
        selection. A dtype converts every floating parameter, buffer and gradient
        (integer buffers such as ``num_batches_tracked`` keep theirs) and the
        layer's ``dtype`` attribute. A move or a conversion discards the saved
        forward context (run forward again before backward) and replaces the
        arrays of :attr:`grads`; moving to the current device, or converting to
        the current dtype, does nothing.

        Parameters
        ----------
        device : {"cpu", "cuda"} or dtype, optional
            The device; a dtype here (with ``dtype`` not given) is read as ``dtype``.
        dtype : {"float32", "float64"} or NumPy dtype, optional
            The dtype of the floating arrays. Half precision is refused (see
            :meth:`half`).
        non_blocking : bool, default False
            Accepted for PyTorch compatibility; copies always complete before
            ``to`` returns.

        Returns
        -------
        Module
            ``self``.

        Raises
        ------
        InvalidParameterError
            ``device`` is neither ``"cpu"``, ``"cuda"`` nor a dtype, or ``dtype``
            is not float32 or float64. Nothing is changed.
        BackendNotInstalledError
            ``"cuda"`` was asked for and the cuda backend cannot load; nothing is
            changed.

        Examples
        --------
        >>> import normdrop
        >>> normdrop.BatchNorm1d(3).to("cpu").device
        'cpu'
        >>> normdrop.BatchNorm1d(3).to("float64").running_mean.dtype
        dtype('float64')
        """
        _validation.boolean("non_blocking", non_blocking)
        device, dtype = _dtypes.split_to_arguments(device, dtype)
        device = None if device is None else _devices.validate_device(device)
        dtype = None if dtype is None else _dtypes.checked_dtype(dtype)
        target = None if device is None else get_backend(_devices.DEVICE_BACKENDS[device])
        root = cast("Module", self)
        for _, module in root._walk():
            changed = False
            if target is not None and module._array_backend.device != device:
                _devices.move_arrays(module, target)
                module._backend_choice = target.name if device != "cpu" else None
                changed = True
            if dtype is not None:
                changed = _dtypes.convert_arrays(module, dtype) or changed
            if changed:
                module.__dict__["_saved"] = None
                module.__dict__["_plan"] = None
        return root

    def cpu(self) -> Module:
        """Move to the host: ``to("cpu")``.

        Returns
        -------
        Module
            ``self``.
        """
        return self.to("cpu")

    def cuda(self) -> Module:
        """Move to the GPU: ``to("cuda")`` (normdrop's cuda backend uses the current device).

        Returns
        -------
        Module
            ``self``.

        Raises
        ------
        BackendNotInstalledError
            The cuda backend cannot load; nothing is changed.
        """
        return self.to("cuda")

    def float(self) -> Module:
        """Make every floating parameter, buffer and gradient float32: ``to("float32")``.

        Returns
        -------
        Module
            ``self``.
        """
        return self.to(dtype="float32")

    def double(self) -> Module:
        """Make every floating parameter, buffer and gradient float64: ``to("float64")``.

        Returns
        -------
        Module
            ``self``.
        """
        return self.to(dtype="float64")

    def half(self) -> Module:
        """Refused: parameters and buffers are float32 or float64 (PyTorch converts to float16).

        A float32 layer takes float16 input, computes in float32 and returns
        float16 output, which is what half precision is mostly used for.

        Raises
        ------
        InvalidParameterError
            Always; the layer is not changed.
        """
        return self.to(dtype=np.float16)
