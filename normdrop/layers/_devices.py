"""Where a layer's arrays live: device checks on call and moves between devices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from normdrop.errors import BackendArrayError, InvalidParameterError
from normdrop.protocol import Array, Backend
from normdrop.registry import get_backend, resolve_backend

if TYPE_CHECKING:
    from normdrop.layers.module import Module

#: What :meth:`Module.to` accepts, and the backend whose arrays hold each device's state.
DEVICE_BACKENDS = {"cpu": "numpy", "cuda": "cuda"}


def array_backend(choice: str | Backend | None) -> Backend:
    """The backend whose arrays hold the state of a layer computing on ``choice``.

    CPU backends (numpy, numba, dask) keep parameters as host NumPy arrays.
    """
    chosen = get_backend(choice) if choice is not None else None
    return chosen if chosen is not None and chosen.device != "cpu" else get_backend("numpy")


def check_device(module: Module, name: str, x: Any) -> None:
    """Raise :class:`BackendArrayError` naming the fix when ``x`` is on the wrong device.

    A layer on the GPU takes only arrays its backend accepts. A CPU layer with
    parameters or buffers refuses GPU arrays; without state it follows the
    array (selection by array type).
    """
    be = module._array_backend
    what = f"{type(x).__module__}.{type(x).__qualname__}"
    if be.device == "cpu":
        if is_gpu_array(x) and next(module._state_items(), None) is not None:
            raise BackendArrayError(
                f"{type(module).__name__} is on the CPU but {name} is a GPU array ({what}); "
                "move the layer with layer.to('cuda'), or the array to the host "
                "(e.g. cupy.asnumpy(x)); arrays are never moved between devices implicitly"
            )
    elif not be.accepts(x):
        raise BackendArrayError(
            f"{type(module).__name__} is on {be.device!r} (backend {be.name!r}) but {name} is "
            f"a {what}; move the array there (e.g. cupy.asarray(x)), or the layer with "
            "layer.to('cpu'); arrays are never moved between devices implicitly"
        )


def check_array_kind(module: Module, name: str, x: Any) -> None:
    """Raise :class:`BackendArrayError` when no backend the layer may use accepts ``x``.

    Catches arrays of other libraries (e.g. a torch tensor as ``grad_output``)
    before they reach a kernel. Plain sequences (lists) and NumPy scalars pass:
    the functional API converts them.
    """
    if (
        type(x) is not np.ndarray
        and not isinstance(x, np.generic)
        and hasattr(x, "shape")
        and hasattr(x, "dtype")
    ):
        try:
            resolve_backend(x, module._backend_choice)
        except BackendArrayError as exc:
            raise BackendArrayError(f"{type(module).__name__}: {name}: {exc}") from None


def validate_device(device: Any) -> str:
    """Return ``device`` if :meth:`Module.to` knows it; else raise InvalidParameterError."""
    if not isinstance(device, str) or device not in DEVICE_BACKENDS:
        raise InvalidParameterError(
            f"device must be one of {sorted(DEVICE_BACKENDS)}, got {device!r}",
            parameter_name="device",
            value=device,
        )
    return device


def move_arrays(module: Module, target: Backend) -> None:
    """Copy ``module``'s own parameters, buffers and gradients onto ``target``'s device."""
    source = module._array_backend

    def move(value: Array | None) -> Array | None:
        return None if value is None else target.asarray(source.to_numpy(value))

    module._parameters = {k: move(v) for k, v in module._parameters.items()}
    module._buffers = {k: move(v) for k, v in module._buffers.items()}
    module._grads = {k: move(v) for k, v in module._grads.items()}
    module.__dict__.update(module._parameters)  # the arrays are also plain attributes
    module.__dict__.update(module._buffers)
    module._array_backend = target


def is_gpu_array(x: Any) -> bool:
    """Tell, without imports, whether ``x`` is a device array (CuPy, numba, CUDA interface)."""
    if type(x) is np.ndarray:
        return False
    return (
        type(x).__module__.split(".", 1)[0] == "cupy"
        or hasattr(x, "__cuda_array_interface__")
        or bool(getattr(type(x), "__cuda_ndarray__", False))  # numba's, the simulator's too
    )
