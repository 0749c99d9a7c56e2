"""The base class of normdrop layers: mode, parameters, buffers, gradients, checkpoints."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from normdrop import _validation
from normdrop.errors import (
    BackendArrayError,
    BackwardBeforeForwardError,
    InvalidParameterError,
    StateDictError,
)
from normdrop.protocol import Array, Backend
from normdrop.registry import get_backend

__all__ = ["IncompatibleKeys", "Module"]

#: What :meth:`Module.to` accepts, and the backend whose arrays hold each device's state.
_DEVICE_BACKENDS = {"cpu": "numpy", "cuda": "cuda"}


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` could not match.

    Attributes
    ----------
    missing_keys : list of str
        Keys the layer has and the state lacked.
    unexpected_keys : list of str
        Keys the state had and the layer lacks.
    """

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Common behaviour of every normdrop layer.

    Subclasses declare their parameters and buffers (in PyTorch's order) by
    filling ``self._parameters`` and ``self._buffers``, and implement
    ``forward`` and ``_backward``.

    Parameters
    ----------
    backend : str, Backend or None
        The backend every call uses; ``None`` follows the selection rules of
        :func:`normdrop.registry.resolve_backend` per call. Parameters and
        buffers live on the device of this backend (the host when ``None``);
        :meth:`to` moves them.

    Attributes
    ----------
    training : bool
        True in training mode (after construction), False in evaluation mode.
    grads : dict
        Accumulated parameter gradients, keyed like :meth:`named_parameters`;
        zeros after construction and after :meth:`zero_grad`.
    """

    #: Keys a checkpoint may omit (older PyTorch checkpoints lack them).
    _optional_state_keys: frozenset[str] = frozenset()

    def __init__(self, backend: str | Backend | None = None) -> None:
        self.training = True
        self._backend_choice = backend
        chosen = get_backend(backend) if backend is not None else None
        # CPU backends (numpy, numba, dask) keep parameters as host NumPy arrays
        on_device = chosen is not None and chosen.device != "cpu"
        self._array_backend = chosen if on_device else get_backend("numpy")
        self._parameters: dict[str, Array | None] = {}
        self._buffers: dict[str, Array | None] = {}
        self._saved: Any = None

    # ----- calling ---------------------------------------------------------------
    def __call__(self, x: Array) -> Array:
        """Same as :meth:`forward`, after checking that ``x`` is on the layer's device.

        Raises
        ------
        BackendArrayError
            ``x`` lives on another device than the layer's parameters and buffers.
        """
        if type(x) is not np.ndarray or self._array_backend.device != "cpu":
            self._check_device("the input", x)
        return self.forward(x)

    def forward(self, x: Array) -> Array:  # pragma: no cover - abstract
        """Apply the layer to ``x``."""
        raise NotImplementedError

    def backward(self, grad_output: Array) -> Array:
        """Return the input gradient of the last forward pass.

        Parameter gradients are added into :attr:`grads` until :meth:`zero_grad`.

        Parameters
        ----------
        grad_output : array
            Gradient of the loss with respect to the last output.

        Returns
        -------
        array
            Gradient with respect to the last input.

        Raises
        ------
        BackwardBeforeForwardError
            No forward pass has run since construction (or since unpickling or
            :meth:`to` moved the layer).
        BackendArrayError
            ``grad_output`` lives on another device than the layer.
        """
        self._check_device("grad_output", grad_output)
        if self._saved is None:
            raise BackwardBeforeForwardError(
                f"{type(self).__name__}.backward() called before any forward pass"
            )
        grad_input, param_grads = self._backward(grad_output)
        for name, grad in param_grads.items():
            self.grads[name] = self.grads[name] + grad
        return grad_input

    def _backward(self, grad_output: Array) -> tuple[Array, dict[str, Array]]:  # pragma: no cover
        raise NotImplementedError

    def _check_device(self, name: str, x: Any) -> None:
        """Raise :class:`BackendArrayError` naming the fix when ``x`` is on the wrong device.

        A layer on the GPU takes only arrays its backend accepts. A CPU layer
        with parameters or buffers refuses GPU arrays; without state it follows
        the array (selection by array type).
        """
        be = self._array_backend
        what = f"{type(x).__module__}.{type(x).__qualname__}"
        if be.device == "cpu":
            if _is_gpu_array(x) and next(self._state_items(), None) is not None:
                raise BackendArrayError(
                    f"{type(self).__name__} is on the CPU but {name} is a GPU array ({what}); "
                    "move the layer with layer.to('cuda'), or the array to the host "
                    "(e.g. cupy.asnumpy(x)); arrays are never moved between devices implicitly"
                )
        elif not be.accepts(x):
            raise BackendArrayError(
                f"{type(self).__name__} is on {be.device!r} (backend {be.name!r}) but {name} is "
                f"a {what}; move the array there (e.g. cupy.asarray(x)), or the layer with "
                "layer.to('cpu'); arrays are never moved between devices implicitly"
            )

    # ----- devices ----------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the parameters, buffers and gradients live: ``"cpu"`` or ``"cuda"``."""
        return self._array_backend.device

    def to(self, device: str) -> Module:
        """Move parameters, buffers and gradients to ``device``; compute there from now on.

        ``to("cuda")`` makes the layer use the ``cuda`` backend; ``to("cpu")``
        brings the arrays back as NumPy arrays and restores automatic backend
        selection. Moving discards the saved forward context (run forward again
        before backward). Moving to the current device does nothing.

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
        if not isinstance(device, str) or device not in _DEVICE_BACKENDS:
            raise InvalidParameterError(
                f"device must be one of {sorted(_DEVICE_BACKENDS)}, got {device!r}",
                parameter_name="device",
                value=device,
            )
        if device == self.device:
            return self
        source, target = self._array_backend, get_backend(_DEVICE_BACKENDS[device])

        def move(value: Array | None) -> Array | None:
            return None if value is None else target.asarray(source.to_numpy(value))

        self._parameters = {k: move(v) for k, v in self._parameters.items()}
        self._buffers = {k: move(v) for k, v in self._buffers.items()}
        self.grads = {k: move(v) for k, v in self.grads.items()}
        self._array_backend = target
        self._backend_choice = target.name if device != "cpu" else None
        self._saved = None
        return self

    def zero_grad(self) -> None:
        """Reset every entry of :attr:`grads` to zeros."""
        self.grads = {
            name: self._array_backend.asarray(np.zeros(value.shape, dtype=value.dtype))
            for name, value in self.named_parameters()
        }

    # ----- mode ------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=False`` is evaluation mode) and return the layer.

        Parameters
        ----------
        mode : bool, default True

        Returns
        -------
        Module
            ``self``.
        """
        self.training = _validation.boolean("mode", mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode and return the layer.

        Returns
        -------
        Module
            ``self``.
        """
        return self.train(False)

    # ----- parameters and buffers -------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, Array]]:
        """Yield ``(name, array)`` for every learnable parameter."""
        return ((k, v) for k, v in self._parameters.items() if v is not None)

    def parameters(self) -> Iterator[Array]:
        """Yield every learnable parameter."""
        return (v for _, v in self.named_parameters())

    def named_buffers(self) -> Iterator[tuple[str, Array]]:
        """Yield ``(name, array)`` for every buffer (running statistics and counters)."""
        return ((k, v) for k, v in self._buffers.items() if v is not None)

    def buffers(self) -> Iterator[Array]:
        """Yield every buffer."""
        return (v for _, v in self.named_buffers())

    @property
    def weight(self) -> Array | None:
        """The scale parameter (gamma), or ``None`` without affine parameters."""
        return self._parameters.get("weight")

    @property
    def bias(self) -> Array | None:
        """The shift parameter (beta), or ``None`` when the layer has none."""
        return self._parameters.get("bias")

    # ----- checkpoints -------------------------------------------------------------
    def _state_items(self) -> Iterator[tuple[str, Array]]:
        yield from self.named_parameters()
        yield from self.named_buffers()

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Return host NumPy copies of every parameter and buffer, keyed as in PyTorch.

        Returns
        -------
        collections.OrderedDict
            ``weight, bias, running_mean, running_var, num_batches_tracked`` order.
        """
        return OrderedDict(
            (k, np.array(self._array_backend.to_numpy(v), copy=True))
            for k, v in self._state_items()
        )

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy parameters and buffers from ``state_dict``; all checks run before any write.

        Parameters
        ----------
        state_dict : mapping
            From :meth:`state_dict`, an ``.npz`` file, or a PyTorch ``state_dict``
            (tensors are copied to host NumPy arrays).
        strict : bool, default True
            Raise on missing or unexpected keys. Size mismatches always raise.

        Returns
        -------
        IncompatibleKeys
            The missing and unexpected keys (both empty when ``strict``).

        Raises
        ------
        StateDictError
            Missing or unexpected keys (when ``strict``) or mismatched shapes.
        """
        _validation.boolean("strict", strict)
        values, missing, unexpected, problems = self._plan_load(state_dict, strict)
        _raise_problems(type(self).__name__, problems)
        self._apply_load(values)
        return IncompatibleKeys(missing, unexpected)

    def _plan_load(
        self, state_dict: Mapping[str, Any], strict: bool, prefix: str = ""
    ) -> tuple[dict[str, np.ndarray], list[str], list[str], list[str]]:
        """Check and convert ``state_dict`` without writing anything.

        Returns the converted values, the missing and unexpected keys, and the
        problems found (messages name keys with ``prefix``).
        """
        current = dict(self._state_items())
        missing = [k for k in current if k not in state_dict and k not in self._optional_state_keys]
        unexpected = [k for k in state_dict if k not in current]
        values: dict[str, np.ndarray] = {}
        problems: list[str] = []
        for key, target in current.items():
            if key not in state_dict:
                continue
            try:
                value = _host_array(state_dict[key]).astype(target.dtype)
            except (TypeError, ValueError) as exc:
                problems.append(f"cannot read {prefix}{key} as {target.dtype}: {exc}")
                continue
            if tuple(value.shape) != tuple(target.shape):
                problems.append(
                    f"size mismatch for {prefix}{key}: copying a value with shape "
                    f"{tuple(value.shape)} from the checkpoint, the shape in the current "
                    f"layer is {tuple(target.shape)}"
                )
            values[key] = value
        if strict:
            if missing:
                problems.insert(
                    0, "Missing key(s) in state_dict: " + ", ".join(prefix + k for k in missing)
                )
            if unexpected:
                problems.insert(
                    0,
                    "Unexpected key(s) in state_dict: " + ", ".join(prefix + k for k in unexpected),
                )
        return values, missing, unexpected, problems

    def _snapshot(self) -> tuple[dict[str, Any], dict[str, Array]]:
        """Copies of what a forward call may change (attributes and buffers)."""
        attributes = {k: v for k, v in self.__dict__.items() if k in ("_saved", "call_count")}
        return attributes, {k: v.copy() for k, v in self.named_buffers()}

    def _restore(self, snapshot: tuple[dict[str, Any], dict[str, Array]]) -> None:
        """Undo a forward call from a :meth:`_snapshot`."""
        attributes, buffers = snapshot
        self.__dict__.update(attributes)
        for key, value in buffers.items():
            self._buffers[key][...] = value

    def _apply_load(self, values: dict[str, np.ndarray]) -> None:
        current = dict(self._state_items())
        for key, value in values.items():
            current[key][...] = self._array_backend.asarray(value)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save :meth:`state_dict` to an ``.npz`` file.

        Parameters
        ----------
        path : str or path-like
            The file; NumPy appends ``.npz`` when the name lacks it, so pass a
            name ending in ``.npz`` to :meth:`load` the same path back.
        """
        np.savez(path, **self.state_dict())

    def load(self, path: str | os.PathLike[str], strict: bool = True) -> IncompatibleKeys:
        """Load parameters and buffers from an ``.npz`` file written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
        strict : bool, default True
            As in :meth:`load_state_dict`.

        Returns
        -------
        IncompatibleKeys
        """
        with np.load(path) as data:
            return self.load_state_dict({k: data[k] for k in data.files}, strict=strict)

    # ----- pickling --------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array_backend"] = self._array_backend.name
        state["_saved"] = None  # the forward context holds inputs; never persist it
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_array_backend"] = get_backend(state["_array_backend"])
        self.__dict__.update(state)

    def _new_array(self, values: np.ndarray) -> Array:
        return self._array_backend.asarray(values)


def _is_gpu_array(x: Any) -> bool:
    """Tell, without imports, whether ``x`` is a device array (CuPy, numba, CUDA interface)."""
    if type(x) is np.ndarray:
        return False
    return (
        type(x).__module__.split(".", 1)[0] == "cupy"
        or hasattr(x, "__cuda_array_interface__")
        or bool(getattr(type(x), "__cuda_ndarray__", False))  # numba's, the simulator's too
    )


def _raise_problems(owner: str, problems: list[str]) -> None:
    if problems:
        raise StateDictError(
            f"Error(s) in loading state_dict for {owner}:\n  " + "\n  ".join(problems)
        )


def _host_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    elif hasattr(value, "get") and hasattr(value, "__cuda_array_interface__"):  # CuPy
        value = value.get()
    elif getattr(type(value), "__cuda_ndarray__", False):  # a numba device array
        value = value.copy_to_host()
    return np.asarray(value)
