"""The protocol's members on a backend, and the arguments its methods take."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from normdrop.capabilities import OPTIONAL_MEMBERS
from normdrop.protocol import REQUIRED_MEMBERS, Backend, missing_members

from .compare import fail

__all__ = ["check_members"]


def _positional_arity(protocol: type, member: str) -> int:
    """How many positional arguments (after ``self``) the protocol's method takes."""
    parameters = list(inspect.signature(getattr(protocol, member)).parameters.values())[1:]
    return len(parameters)


def _check_callable(backend: Any, protocol: type, member: str) -> None:
    """``backend.member`` is callable with the protocol's positional arguments."""
    method = getattr(backend, member)
    if not callable(method):
        raise fail(backend, f"{member} must be callable", repr(method))
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):  # a builtin or compiled callable: nothing to inspect
        return
    arity = _positional_arity(protocol, member)
    try:
        signature.bind(*range(arity))
    except TypeError as exc:
        expected = inspect.signature(getattr(protocol, member))
        raise fail(
            backend, f"{member}{signature} does not take the protocol's arguments {expected}"
        ) from exc


def check_members(backend: Any) -> None:
    """Every required member is there (all missing ones named at once), with the
    protocol's signature, and so is every declared optional member the backend has."""
    if isinstance(backend, type):
        raise fail(backend, f"is the class {backend.__qualname__}; pass an instance of it")
    missing = missing_members(backend)
    if missing:
        raise fail(
            backend,
            "missing required member(s) of normdrop.protocol.Backend: " + ", ".join(missing),
        )
    for member in ("name", "device"):
        if not isinstance(getattr(backend, member), str):
            raise fail(backend, f"{member} must be a str", repr(getattr(backend, member)))
    if not backend.name:
        raise fail(backend, "name must be a non-empty str", repr(backend.name))
    if backend.device not in ("cpu", "cuda"):
        raise fail(backend, "device must be 'cpu' or 'cuda'", repr(backend.device))
    for member in REQUIRED_MEMBERS[2:]:
        _check_callable(backend, Backend, member)
    for member, protocol in OPTIONAL_MEMBERS.items():
        if member == "supports_bitmask":
            flag = getattr(backend, member, True)
            if not isinstance(flag, bool | np.bool_):
                raise fail(backend, "supports_bitmask must be a bool", repr(flag))
        elif hasattr(backend, member):
            _check_callable(backend, protocol, member)
