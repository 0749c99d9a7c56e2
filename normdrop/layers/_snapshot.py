"""Transactional forward passes: copy what a forward may change, put it back if it raises."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from normdrop.protocol import Array

if TYPE_CHECKING:
    from normdrop.layers.module import Module

#: One module's saved context, forward-state attributes and buffer copies.
Snapshot = tuple[Any, dict[str, Any], dict[str, Array]]


def take(root: Module) -> list[tuple[Module, Snapshot]]:
    """Copy what a forward pass may change in ``root`` and every module inside it.

    That is the saved forward context, the attributes a class lists in
    ``_forward_state_attributes`` (e.g. Dropout's ``call_count``) and every buffer.
    """
    return [
        (
            module,
            (
                module._saved,
                {name: getattr(module, name) for name in module._forward_state_attributes},
                {k: v.copy() for k, v in module._buffers.items() if v is not None},
            ),
        )
        for _, module in root._walk()
    ]


def restore(snapshots: list[tuple[Module, Snapshot]]) -> None:
    """Undo a forward pass from :func:`take`, writing buffers back in place."""
    for module, (saved, attributes, buffers) in snapshots:
        module.__dict__["_saved"] = saved
        module.__dict__.update(attributes)
        for key, value in buffers.items():
            module._buffers[key][...] = value
