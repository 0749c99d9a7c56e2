"""Where a layer computes: its ``device`` and :meth:`~normdrop.layers.Module.to`."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from normdrop.layers import _devices
from normdrop.protocol import Backend
from normdrop.registry import get_backend

if TYPE_CHECKING:
    from normdrop.layers.module import Module

__all__ = ["Placement"]


class Placement:
    """Devices: the part of :class:`~normdrop.layers.Module` that moves its arrays.

    The checks of each call's arrays are in :mod:`._devices`.
    """

    _array_backend: Backend

    @property
    def device(self) -> str:
        """Where the parameters, buffers and gradients live: ``"cpu"`` or ``"cuda"``."""
        return self._array_backend.device

    def to(self, device: str) -> Module:
        """Move parameters, buffers and gradients to ``device``; compute there from now on.

        ``to("cuda")`` makes the layer use the ``cuda`` backend; ``to("cpu")``
        brings the arrays back as NumPy arrays and restores automatic backend
        selection. Moving discards the saved forward context (run forward again
        before backward) and replaces the arrays of :attr:`grads`. Moving to the
        current device does nothing.

        Parameters
        ----------
        device : {"cpu", "cuda"}

        Returns
        -------
        Module
            ``self``.

        Raises
        ------
        InvalidParameterError
            ``device`` is not ``"cpu"`` or ``"cuda"``.
        BackendNotInstalledError
            ``"cuda"`` was asked for and the cuda backend cannot load.

        Examples
        --------
        >>> import normdrop
        >>> normdrop.BatchNorm1d(3).to("cpu").device
        'cpu'
        """
        device = _devices.validate_device(device)
        target = get_backend(_devices.DEVICE_BACKENDS[device])
        root = cast("Module", self)
        for _, module in root._walk():
            if module._array_backend.device != device:
                _devices.move_arrays(module, target)
                module._backend_choice = target.name if device != "cpu" else None
                module.__dict__["_saved"] = None
                module.__dict__["_plan"] = None
        return root
