"""Gradient accumulation: checking what ``compute_backward`` returned, then adding it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from normdrop.errors import InvalidParameterError, ShapeError
from normdrop.layers._state_dict import host_array
from normdrop.protocol import Array

if TYPE_CHECKING:
    from normdrop.layers.module import Module


def accumulate(module: Module, param_grads: Mapping[str, Array]) -> None:
    """Add each gradient into ``module``'s :attr:`~Module.grads` in place, after checking all.

    Raises
    ------
    InvalidParameterError
        A gradient for a name that is not a parameter; nothing is added.
    ShapeError
        A gradient of another shape than its parameter; nothing is added.
    """
    owner = type(module).__name__
    be, grads, pairs = module._array_backend, module._grads, []
    for name, grad in param_grads.items():
        total = grads.get(name)
        if total is None:
            raise InvalidParameterError(
                f"{owner}.compute_backward returned a gradient for {name!r}, "
                f"which is not a parameter (parameters: {sorted(grads)})",
                parameter_name="param_grads",
                value=name,
            )
        if not be.accepts(grad):
            grad = be.asarray(host_array(grad))
        if tuple(grad.shape) != tuple(total.shape):
            raise ShapeError(
                f"{owner}.compute_backward returned a gradient of shape "
                f"{tuple(grad.shape)} for {name!r}, whose shape is {tuple(total.shape)}"
            )
        pairs.append((total, grad))
    for total, grad in pairs:
        total += grad
