"""Sequential: a chain of layers."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator
from typing import Any

from normdrop.errors import BackwardBeforeForwardError, InvalidParameterError, ShapeError
from normdrop.layers import _snapshot
from normdrop.layers.module import Module
from normdrop.protocol import Array

__all__ = ["Sequential"]


class Sequential(Module):
    """Apply layers in order; backward runs them in reverse.

    ``state_dict`` keys are prefixed with each layer's index (``"0.weight"``),
    as in ``torch.nn.Sequential``. Like PyTorch's, it takes only modules: a
    plain function becomes a layer by subclassing :class:`Module` (see the
    guide page "Writing your own layer").

    If a layer raises during :meth:`forward`, every layer at every depth
    (nested ``Sequential`` included) gets back its buffers, dropout call
    counter and saved forward context, and the original error propagates.

    Parameters
    ----------
    *layers : Module
        The layers, applied first to last.

    Raises
    ------
    InvalidParameterError
        A layer is not a :class:`Module`.

    Examples
    --------
    >>> import numpy as np
    >>> import normdrop
    >>> model = normdrop.Sequential(normdrop.BatchNorm1d(4), normdrop.Dropout(0.1, seed=0))
    >>> list(model.state_dict())
    ['0.weight', '0.bias', '0.running_mean', '0.running_var', '0.num_batches_tracked']
    >>> len(model.append(normdrop.LayerNorm(4)))
    3
    """

    _modules: dict[str, Module]  # type: ignore[assignment]  # never None here: see add_module

    def __init__(self, *layers: Module) -> None:
        super().__init__(None)
        self.extend(layers)

    # ----- the list of layers ------------------------------------------------------
    def _set_layers(self, layers: list[Module]) -> None:
        self._modules = {str(i): layer for i, layer in enumerate(layers)}

    @staticmethod
    def _checked(layers: Iterable[Any], first_index: int) -> list[Module]:
        if not isinstance(layers, Iterable):
            raise InvalidParameterError(
                f"extend takes an iterable of layers, got {type(layers).__name__}; "
                "use append for one layer",
                parameter_name="layers",
                value=layers,
            )
        layers = list(layers)
        for index, layer in enumerate(layers, first_index):
            if not isinstance(layer, Module):
                hint = (
                    "; to use a function, write a Module subclass (see 'Writing your own "
                    "layer' in the guide), as torch.nn.Sequential also takes only modules"
                    if callable(layer)
                    else ""
                )
                raise InvalidParameterError(
                    f"layers must be normdrop layers (Module instances), got "
                    f"{type(layer).__name__} at index {index}{hint}",
                    parameter_name="layers",
                    value=layer,
                )
        return layers

    def append(self, layer: Module) -> Sequential:
        """Add ``layer`` at the end and return ``self``.

        Parameters
        ----------
        layer : Module
            The layer to add.

        Returns
        -------
        Sequential
            ``self``.

        Raises
        ------
        InvalidParameterError
            ``layer`` is not a :class:`Module`.
        """
        self.insert(len(self), layer)
        return self

    def extend(self, layers: Iterable[Module]) -> Sequential:
        """Add every layer of ``layers`` at the end (all or none) and return ``self``.

        Parameters
        ----------
        layers : iterable of Module
            The layers to add, in order.

        Returns
        -------
        Sequential
            ``self``.

        Raises
        ------
        InvalidParameterError
            One of ``layers`` is not a :class:`Module`; none is added.
        """
        self._set_layers(list(self) + self._checked(layers, len(self)))
        return self

    def insert(self, index: int, layer: Module) -> Sequential:
        """Insert ``layer`` before position ``index`` (as ``list.insert``) and return ``self``.

        Later layers' ``state_dict`` keys shift by one, as in PyTorch.

        Parameters
        ----------
        index : int
            The position the layer takes; negative counts from the end.
        layer : Module
            The layer to insert.

        Returns
        -------
        Sequential
            ``self``.

        Raises
        ------
        InvalidParameterError
            ``index`` is not an integer or ``layer`` is not a :class:`Module`.
        IndexError
            ``index`` is outside ``[-len(self), len(self)]`` (PyTorch refuses it too;
            ``list.insert`` would clamp it silently).
        """
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise InvalidParameterError(
                f"index must be an integer, got {index!r}", parameter_name="index", value=index
            )
        layers = list(self)
        index = int(index)
        if not -len(layers) <= index <= len(layers):
            raise IndexError(
                f"index {index} is out of range for inserting into a Sequential of "
                f"{len(layers)}: expected {-len(layers)} <= index <= {len(layers)}"
            )
        layers.insert(index, self._checked([layer], index)[0])
        self._set_layers(layers)
        return self

    def add_module(self, name: str, module: Module | None) -> None:
        """Refused: a Sequential names its layers by position; use :meth:`append`.

        PyTorch's ``Sequential.add_module(name, layer)`` appends a layer under a
        name of its own; normdrop's keys are always the positions ``"0"``, ``"1"``, ...
        (the same holds for assigning a module to an attribute of a Sequential).

        Parameters
        ----------
        name : str
            Not used: any name is refused.
        module : Module or None
            Not used.

        Raises
        ------
        InvalidParameterError
            Always; nothing is changed.
        """
        raise InvalidParameterError(
            f"Sequential names its layers by position ('0', '1', ...), so it cannot add a "
            f"module named {name!r}: use append(layer) or insert(index, layer)",
            parameter_name="name",
            value=name,
        )

    @property
    def layers(self) -> list[Module]:
        """The layers, first to last, as a new list (change them with ``append``, ``insert``)."""
        return list(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, index: int | slice) -> Any:
        """The layer at ``index``, or a new ``Sequential`` of the same layers for a slice."""
        layers = list(self)
        if isinstance(index, slice):
            return Sequential(*layers[index])
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise InvalidParameterError(
                f"index must be an integer or a slice, got {index!r}",
                parameter_name="index",
                value=index,
            )
        if not -len(layers) <= index < len(layers):
            raise IndexError(f"index {index} is out of range for a Sequential of {len(layers)}")
        return layers[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    # ----- computing ---------------------------------------------------------------
    def forward(self, x: Array) -> Array:
        """Apply every layer in order; if one raises, every layer's state is rolled back.

        A layer object used at more than one position (shared weights, as
        ``torch.nn.Sequential(ln, dropout, ln)``) keeps one saved forward pass per
        position, so :meth:`backward` gives each use its own gradients, as
        PyTorch's autograd does.

        Parameters
        ----------
        x : array
            The first layer's input.

        Returns
        -------
        array
            The last layer's output (a tuple where the last layer returns one, as
            :class:`~normdrop.DropoutAddLayerNorm` does).

        Raises
        ------
        ShapeError
            A layer before the last returned a tuple (a
            :class:`~normdrop.DropoutAddLayerNorm`'s ``(y, r)``): the next layer takes
            one array. Nothing is changed.
        """
        snapshots = _snapshot.take(self)
        contexts: list[list[tuple[Module, Any]]] | None = None
        if len({id(module) for module, _ in snapshots}) < len(snapshots):
            contexts = []  # a layer is used twice: keep each use's saved passes
        last = len(self._modules) - 1
        try:
            for position, (name, layer) in enumerate(self._modules.items()):
                x = layer(x)
                if isinstance(x, tuple) and position < last:
                    raise ShapeError(
                        "Sequential passes one array from layer to layer, but layer "
                        f"{name} ({type(layer).__name__}) returned a tuple of {len(x)}; "
                        "call that layer's forward and backward yourself"
                    )
                if contexts is not None:
                    contexts.append([(m, m._saved) for _, m in layer._walk()])
        except BaseException:
            _snapshot.restore(snapshots)
            raise
        if contexts is None:
            self.save_for_backward()
        else:
            self.save_for_backward(contexts)
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

        Raises
        ------
        BackwardBeforeForwardError
            A layer at any depth has no saved forward pass; checked before any
            layer's backward runs, so no gradient changes.
        """
        for prefix, module in self._walk():
            if module._saved is None:
                where = f"layer {prefix[:-1]} ({type(module).__name__})" if prefix else "it"
                raise BackwardBeforeForwardError(
                    f"Sequential.backward() called before any forward pass of {where}"
                )
        layers = list(self._modules.values())
        contexts = self._saved[0] if self._saved else None
        for position in reversed(range(len(layers))):
            if contexts is not None:  # a shared layer: put back this position's passes
                for module, saved in contexts[position]:
                    module.__dict__["_saved"] = saved
            grad_output = layers[position].backward(grad_output)
            if isinstance(grad_output, tuple) and position > 0:
                # a last layer with two inputs (DropoutAddLayerNorm) had only the
                # previous layer's output here, so its other gradient is None
                grad_output = grad_output[0]
        return grad_output

    def _check_device(self, name: str, x: Any) -> None:
        """Leave device checks to the layers (they may be on different devices)."""

    @property
    def device(self) -> str:
        """The device of every layer (``"cpu"`` when empty, ``"mixed"`` when they differ)."""
        devices = {layer.device for layer in self}
        return devices.pop() if len(devices) == 1 else ("mixed" if devices else "cpu")

    def reset_parameters(self) -> None:
        """Reset every layer's parameters (layers without ``reset_parameters`` are skipped)."""
        for layer in self:
            reset = getattr(layer, "reset_parameters", None)
            if reset is not None:
                reset()
