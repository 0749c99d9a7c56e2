"""Checkpoints: reading foreign arrays, checking a state before writing it, ``.npz`` paths."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from normdrop.errors import InvalidParameterError, NormdropError, StateDictError

if TYPE_CHECKING:
    from normdrop.layers.module import Module

#: The key under which a module's :meth:`~Module.get_extra_state` is stored, as in PyTorch.
EXTRA_STATE_KEY = "_extra_state"


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` could not match.

    As PyTorch's, it prints ``<All keys matched successfully>`` when both
    lists are empty.

    Attributes
    ----------
    missing_keys : list of str
        Keys the layer has and the state lacked.
    unexpected_keys : list of str
        Keys the state had and the layer lacks.
    """

    missing_keys: list[str]
    unexpected_keys: list[str]

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return (
            f"IncompatibleKeys(missing_keys={self.missing_keys!r}, "
            f"unexpected_keys={self.unexpected_keys!r})"
        )

    def __str__(self) -> str:
        return repr(self)


class LoadPlan:
    """Everything a load will write, found and converted before anything is written."""

    def __init__(self) -> None:
        self.arrays: list[tuple[Module, str, np.ndarray]] = []
        self.extra: list[tuple[str, Module, Any]] = []
        self.missing: list[str] = []
        self.unexpected: list[str] = []
        self.problems: list[str] = []


def has_extra_state(module: Module) -> bool:
    """True when ``module``'s class overrides :meth:`Module.get_extra_state` (PyTorch's rule)."""
    from normdrop.layers.module import Module

    return type(module).get_extra_state is not Module.get_extra_state


def plan_load(root: Module, state_dict: Any, strict: bool) -> LoadPlan:
    """Check and convert ``state_dict`` for ``root`` and every module inside it; write nothing."""
    if not isinstance(state_dict, Mapping):
        raise StateDictError(
            f"state_dict must be a mapping (e.g. a dict or an opened .npz file) from keys to "
            f"arrays, got {type(state_dict).__name__}; for a list of (key, value) pairs pass "
            "dict(pairs) (PyTorch refuses non-mappings too)"
        )
    plan = LoadPlan()
    expected: set[str] = set()
    for prefix, module in root._walk():
        for key, target in module._state_items():
            full = prefix + key
            expected.add(full)
            if full not in state_dict:
                if key not in module._optional_state_keys:
                    plan.missing.append(full)
                continue
            value = _converted(full, state_dict[full], target.dtype, plan.problems)
            if value is None:
                continue
            if len(target.shape) == 0 and value.shape == (1,):
                # PyTorch's rule for 0-d arrays saved as 1-D (PyTorch 0.3, tinygrad's
                # num_batches_tracked): a one-element vector loads into a 0-d buffer.
                value = value.reshape(())
            if tuple(value.shape) != tuple(target.shape):
                plan.problems.append(
                    f"size mismatch for {full}: copying a value with shape "
                    f"{tuple(value.shape)} from the checkpoint, the shape in the current "
                    f"layer is {tuple(target.shape)}"
                )
            plan.arrays.append((module, key, value))
        if has_extra_state(module):
            full = prefix + EXTRA_STATE_KEY
            expected.add(full)
            if full in state_dict:  # optional: PyTorch's checkpoints lack normdrop's extra state
                plan.extra.append((full, module, state_dict[full]))
    plan.unexpected = [k for k in state_dict if k not in expected]
    if strict:
        if plan.missing:
            plan.problems.insert(0, "Missing key(s) in state_dict: " + ", ".join(plan.missing))
        if plan.unexpected:
            plan.problems.insert(
                0, "Unexpected key(s) in state_dict: " + ", ".join(map(str, plan.unexpected))
            )
    return plan


def _converted(key: str, value: Any, dtype: np.dtype, problems: list[str]) -> np.ndarray | None:
    try:
        host = host_array(value)
        if host.dtype.kind == "c":  # astype would drop the imaginary part with only a warning
            raise TypeError(f"complex values ({host.dtype}) would lose their imaginary part")
        return host.astype(dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        problems.append(f"cannot read {key} as {dtype}: {exc}")
        return None


def apply_load(root: Module, plan: LoadPlan) -> None:
    """Write a checked plan: extra states first (undone if one fails), then the arrays.

    Raises
    ------
    StateDictError
        A module's :meth:`~Module.set_extra_state` refused its value; nothing is changed.
    """
    raise_problems(type(root).__name__, plan.problems)
    done: list[tuple[Module, Any]] = []
    for key, module, value in plan.extra:
        previous = module.get_extra_state()
        try:
            module.set_extra_state(value)
        except (NormdropError, TypeError, ValueError) as exc:
            for earlier, old in reversed(done):
                earlier.set_extra_state(old)
            raise_problems(type(root).__name__, [f"cannot set {key}: {exc}"])
        done.append((module, previous))
    for module, key, value in plan.arrays:
        module._own_state(key)[...] = module._array_backend.asarray(value)


def raise_problems(owner: str, problems: list[str]) -> None:
    """Raise one :class:`StateDictError` listing every problem, if there are any."""
    if problems:
        raise StateDictError(
            f"Error(s) in loading state_dict for {owner}:\n  " + "\n  ".join(problems)
        )


def registered_value(module: Module, name: Any, value: Any, own: str, *, floating: bool) -> Any:
    """Check a name and value given to ``register_parameter``/``register_buffer``.

    Returns the value on the module's device (kept as it is when already there).

    Raises
    ------
    InvalidParameterError
        The name is taken (an attribute, or in the other store than ``own``) or not
        an identifier; the value is not an array (``floating``: a floating one).
    """
    owner = type(module).__name__
    other = "_buffers" if own == "_parameters" else "_parameters"
    attribute = getattr(type(module), name, None) if isinstance(name, str) else None
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or name == EXTRA_STATE_KEY
        or (name in module.__dict__ and name not in module.__dict__[own])
        or name in module.__dict__[other]
        or name in module._modules
        or (attribute is not None and not isinstance(attribute, property))
    ):
        raise InvalidParameterError(
            f"{owner} cannot register {name!r}: the name must be an identifier that is "
            "not already an attribute, parameter or buffer",
            parameter_name="name",
            value=name,
        )
    if value is None:
        return None
    kind = "a floating array" if floating else "an array"
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise InvalidParameterError(
            f"{owner}.{name} must be {kind} or None, got {type(value).__name__}",
            parameter_name=name,
            value=value,
        )
    if not module._array_backend.accepts(value):
        value = module._array_backend.asarray(host_array(value))
    if floating and not np.issubdtype(np.dtype(value.dtype), np.floating):
        raise InvalidParameterError(
            f"{owner}.{name} must be {kind} or None, got dtype {value.dtype}",
            parameter_name=name,
            value=value,
        )
    return value


def assignment_value(owner: str, name: str, target: Any, value: Any) -> np.ndarray:
    """Check a value assigned to a parameter or buffer attribute; return it on the host.

    Raises
    ------
    InvalidParameterError
        ``value`` is not an array, or its shape or dtype does not fit ``target``.
    """
    if target is None or value is None:
        what = "has no" if target is None else "cannot remove its"
        raise InvalidParameterError(
            f"{owner} {what} {name}: assignment copies values into an existing array "
            f"(register_parameter/register_buffer create or remove one), got {value!r}",
            parameter_name=name,
            value=value,
        )
    expected = f"an array of shape {tuple(target.shape)} and dtype {np.dtype(target.dtype)}"
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise InvalidParameterError(
            f"{owner}.{name} must be {expected}, got {type(value).__name__}",
            parameter_name=name,
            value=value,
        )
    host = host_array(value)
    if tuple(host.shape) != tuple(target.shape) or not np.can_cast(
        host.dtype, target.dtype, "same_kind"
    ):
        raise InvalidParameterError(
            f"{owner}.{name} must be {expected}, got shape {tuple(host.shape)} and dtype "
            f"{host.dtype}",
            parameter_name=name,
            value=value,
        )
    return host.astype(target.dtype)


def host_array(value: Any) -> np.ndarray:
    """``value`` as a host NumPy array: torch tensors, CuPy and numba device arrays included.

    Floating torch tensors narrower than 32 bits (bfloat16, float16, float8) are
    widened to float32 first, exactly: NumPy has no bfloat16. torch is never
    imported; tensors are recognised by their type's module.
    """
    if type(value) is np.ndarray:
        return value
    if type(value).__module__.split(".", 1)[0] == "torch" and hasattr(value, "detach"):
        tensor = value.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    if hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):  # CuPy
        value = value.get()
    elif getattr(type(value), "__cuda_ndarray__", False):  # a numba device array
        value = value.copy_to_host()
    return np.asarray(value)


def npz_path(path: str | os.PathLike[str], *, reading: bool) -> Any:
    """The file :meth:`Module.save` writes and :meth:`Module.load` reads for ``path``.

    Like :func:`numpy.savez`, a name without the ``.npz`` suffix gets it; when
    reading, a file that exists under the name as given is read as it is.
    File objects pass through.
    """
    if not isinstance(path, (str, os.PathLike)):
        return path
    text = os.fspath(path)
    if isinstance(text, bytes) or text.endswith(".npz"):
        return path
    if reading and os.path.exists(text):
        return path
    return text + ".npz"
