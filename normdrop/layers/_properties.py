"""Read-only layer properties for registered parameters and buffers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from normdrop.protocol import Array

if TYPE_CHECKING:
    from normdrop.layers.module import Module

__all__ = ["buffer_property", "parameter_property"]


def parameter_property(name: str, doc: str) -> property:
    """A property returning the parameter registered as ``name`` (or ``None``); ``doc`` is
    its docstring."""

    def get(module: Module) -> Array | None:
        return module._parameters[name]

    return property(get, doc=doc)


def buffer_property(name: str, doc: str) -> property:
    """A property returning the buffer registered as ``name`` (or ``None``); ``doc`` is its
    docstring."""

    def get(module: Module) -> Array | None:
        return module._buffers[name]

    return property(get, doc=doc)
