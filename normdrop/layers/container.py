"""Sequential: a chain of layers."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from normdrop import _validation
from normdrop.errors import InvalidParameterError
from normdrop.layers.module import IncompatibleKeys, Module, _raise_problems
from normdrop.protocol import Array

__all__ = ["Sequential"]


class Sequential(Module):
    """Apply layers in order; backward runs them in reverse.

    ``state_dict`` keys are prefixed with each layer's index (``"0.weight"``),
    as in ``torch.nn.Sequential``.

    Parameters
    ----------
    *layers : Module
        The layers, applied first to last.

    Examples
    --------
    >>> import numpy as np
    >>> import normdrop
    >>> model = normdrop.Sequential(normdrop.BatchNorm1d(4), normdrop.Dropout(0.1, seed=0))
    >>> list(model.state_dict())
    ['0.weight', '0.bias', '0.running_mean', '0.running_var', '0.num_batches_tracked']
    """

    def __init__(self, *layers: Module) -> None:
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise InvalidParameterError(
                    f"layers must be normdrop layers, got {type(layer).__name__} at index {index}",
                    parameter_name="layers",
                    value=layer,
                )
        super().__init__(None)
        self.layers = list(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def forward(self, x: Array) -> Array:
        """Apply every layer in order; if one raises, every layer's state is rolled back."""
        snapshots = [layer._snapshot() for layer in self.layers]
        try:
            for layer in self.layers:
                x = layer(x)
        except BaseException:
            for layer, snapshot in zip(self.layers, snapshots, strict=True):
                layer._restore(snapshot)
            raise
        self._saved = True
        return x

    def backward(self, grad_output: Array) -> Array:
        """Back-propagate through every layer in reverse order.

        Parameters
        ----------
        grad_output : array

        Returns
        -------
        array
            Gradient with respect to the input of the first layer.
        """
        for layer in reversed(self.layers):
            grad_output = layer.backward(grad_output)
        return grad_output

    def train(self, mode: bool = True) -> Sequential:
        """Set the mode of every layer and return ``self``."""
        mode = _validation.boolean("mode", mode)
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    def _check_device(self, name: str, x: Array) -> None:
        """Leave device checks to the layers (they may be on different devices)."""

    @property
    def device(self) -> str:
        """The device of every layer (``"cpu"`` when empty, ``"mixed"`` when they differ)."""
        devices = {layer.device for layer in self.layers}
        return devices.pop() if len(devices) == 1 else ("mixed" if devices else "cpu")

    def to(self, device: str) -> Sequential:
        """Move every layer to ``device`` (see :meth:`Module.to`) and return ``self``.

        Parameters
        ----------
        device : {"cpu", "cuda"}

        Returns
        -------
        Sequential
            ``self``.
        """
        for layer in self.layers:
            layer.to(device)
        return self

    def zero_grad(self) -> None:
        """Zero the gradients of every layer."""
        for layer in getattr(self, "layers", []):
            layer.zero_grad()

    @property
    def grads(self) -> dict[str, Array]:
        """Every layer's gradients, keys prefixed with the layer index."""
        return {
            f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()
        }

    def named_parameters(self) -> Iterator[tuple[str, Array]]:
        """Yield ``("index.name", array)`` for every layer's parameters."""
        for i, layer in enumerate(self.layers):
            for k, v in layer.named_parameters():
                yield f"{i}.{k}", v

    def named_buffers(self) -> Iterator[tuple[str, Array]]:
        """Yield ``("index.name", array)`` for every layer's buffers."""
        for i, layer in enumerate(self.layers):
            for k, v in layer.named_buffers():
                yield f"{i}.{k}", v

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Every layer's state, keys prefixed with the layer index."""
        return OrderedDict(
            (f"{i}.{k}", v)
            for i, layer in enumerate(self.layers)
            for k, v in layer.state_dict().items()
        )

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Load every layer's state; all layers are checked before any is written.

        Parameters
        ----------
        state_dict : mapping
        strict : bool, default True

        Returns
        -------
        IncompatibleKeys
        """
        _validation.boolean("strict", strict)
        parts: list[dict[str, Any]] = [{} for _ in self.layers]
        unexpected = []
        for key, value in state_dict.items():
            index, _, name = key.partition(".")
            if index.isdigit() and int(index) < len(self.layers):
                parts[int(index)][name] = value
            else:
                unexpected.append(key)
        problems = (
            ["Unexpected key(s) in state_dict: " + ", ".join(unexpected)]
            if strict and unexpected
            else []
        )
        plans = [
            layer._plan_load(part, strict, prefix=f"{i}.")
            for i, (layer, part) in enumerate(zip(self.layers, parts, strict=True))
        ]
        for plan in plans:
            problems += plan[3]
        _raise_problems("Sequential", problems)
        missing: list[str] = []
        for i, (layer, (values, layer_missing, layer_unexpected, _)) in enumerate(
            zip(self.layers, plans, strict=True)
        ):
            layer._apply_load(values)
            missing += [f"{i}.{k}" for k in layer_missing]
            unexpected += [f"{i}.{k}" for k in layer_unexpected]
        return IncompatibleKeys(missing, unexpected)

    def reset_parameters(self) -> None:
        """Reset every layer's parameters."""
        for layer in self.layers:
            layer.reset_parameters()

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"
