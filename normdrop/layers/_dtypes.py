"""The dtype of a layer's floating arrays: reading ``to(...)`` arguments and converting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from normdrop import _validation
from normdrop.errors import InvalidParameterError
from normdrop.layers._devices import DEVICE_BACKENDS
from normdrop.protocol import Array

if TYPE_CHECKING:
    from normdrop.layers.module import Module

#: Half-precision dtypes, refused with a hint (NumPy knows no bfloat16).
_HALF_NAMES = frozenset({"float16", "half", "bfloat16"})


def split_to_arguments(device: Any, dtype: Any) -> tuple[Any, Any]:
    """Sort ``to(device, dtype)``'s arguments as PyTorch does: ``to(np.float64)`` gives a dtype.

    A first argument that is not a device name but reads as a NumPy dtype (or names a
    half-precision one) is the dtype, when no ``dtype`` is given as well.
    """
    if dtype is None and device is not None and not is_device_name(device):
        if _reads_as_dtype(device):
            return None, device
    return device, dtype


def is_device_name(value: Any) -> bool:
    """True for the device names :meth:`Module.to` knows (``"cpu"``, ``"cuda"``)."""
    return isinstance(value, str) and value in DEVICE_BACKENDS


def _reads_as_dtype(value: Any) -> bool:
    if isinstance(value, str) and value in _HALF_NAMES:
        return True
    try:
        np.dtype(value)
    except (TypeError, ValueError):
        return False
    return True


def checked_dtype(value: Any) -> np.dtype:
    """``value`` as float32 or float64; else an :class:`InvalidParameterError` naming it.

    Raises
    ------
    InvalidParameterError
        ``value`` is another dtype than float32 and float64; for half precision, the
        message names the alternative. An :class:`InvalidParameterTypeError` (also a
        ``TypeError``) when it is not a dtype at all, as the constructors raise.
    """
    try:
        return _validation.param_dtype(value)  # the constructors' check
    except InvalidParameterError as refused:  # the message below also names half
        kind = type(refused)  # precision's alternative; a non-dtype stays a TypeError
    try:
        dtype: np.dtype | None = np.dtype(value) if value is not None else None
    except (TypeError, ValueError):
        dtype = None
    shown = str(dtype) if dtype is not None and not isinstance(value, str) else repr(value)
    hint = ""
    if (dtype is not None and dtype == np.float16) or (
        isinstance(value, str) and value in _HALF_NAMES
    ):
        hint = (
            "; half-precision parameters are not supported: keep float32 parameters "
            "(layer.float()), which take float16 input, compute in float32 and return "
            "float16 output"
        )
    raise kind(
        f"dtype must be 'float32' or 'float64' (the dtypes of a layer's parameters and "
        f"buffers), got {shown}{hint}",
        parameter_name="dtype",
        value=value,
    )


def convert_arrays(module: Module, dtype: np.dtype) -> bool:
    """Give ``module``'s own floating parameters, buffers and gradients the dtype ``dtype``.

    Arrays of that dtype already, and integer buffers (``num_batches_tracked``), are
    kept as they are. A ``dtype`` attribute holding a NumPy dtype (the layers') is set
    to ``dtype`` too. Returns whether anything changed.
    """
    be = module._array_backend

    def convert(value: Array | None) -> Array | None:
        if value is None or np.dtype(value.dtype) == dtype:
            return value
        if not np.issubdtype(np.dtype(value.dtype), np.floating):
            return value
        return be.asarray(np.asarray(be.to_numpy(value)).astype(dtype))

    stores = (module._parameters, module._buffers, module._grads)
    converted = [{k: convert(v) for k, v in store.items()} for store in stores]
    changed = any(
        new is not old
        for store, new_store in zip(stores, converted, strict=True)
        for old, new in zip(store.values(), new_store.values(), strict=True)
    )
    layer_dtype = module.__dict__.get("dtype")
    if isinstance(layer_dtype, np.dtype) and layer_dtype != dtype:
        module.__dict__["dtype"] = dtype
        changed = True
    if changed:
        module._parameters, module._buffers, module._grads = converted
        module.__dict__.update(module._parameters)  # the arrays are also plain attributes
        module.__dict__.update(module._buffers)
    return changed
