"""The base class of every layer: mode, parameters, buffers, gradients, checkpoints.

Subclassing :class:`Module` is also the public way to write a layer of your own
(the guide page "Writing your own layer" shows a ``Linear``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from normdrop import _validation
from normdrop.errors import BackwardBeforeForwardError, InvalidParameterError
from normdrop.layers import _devices, _grads
from normdrop.layers._checkpoints import Checkpointing
from normdrop.layers._placement import Placement
from normdrop.layers._state_dict import (
    IncompatibleKeys,
    assignment_value,
    registered_value,
)
from normdrop.layers._submodules import Submodules
from normdrop.protocol import Array, ArrayT, Backend
from normdrop.registry import get_backend, resolve_backend

__all__ = ["IncompatibleKeys", "Module"]


class Module(Checkpointing, Placement, Submodules):
    """Common behaviour of every normdrop layer, and the base class of your own.

    A subclass calls ``super().__init__(backend)``, creates its arrays with
    :meth:`register_parameter` and :meth:`register_buffer`, and implements
    :meth:`forward` (keeping what the backward pass needs with
    :meth:`save_for_backward`) and :meth:`compute_backward`. Everything else
    (calling, :meth:`backward` with gradient accumulation, :attr:`grads`,
    :meth:`zero_grad`, modes, ``state_dict``, ``.npz`` checkpoints, :meth:`to`,
    pickling, use inside :class:`~normdrop.Sequential`) comes from this class. A
    module assigned to an attribute (``self.norm = LayerNorm(8)``) becomes a child,
    as in PyTorch (see :meth:`add_module`).

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
    """

    #: Keys a checkpoint may omit (older PyTorch checkpoints lack them).
    _optional_state_keys: frozenset[str] = frozenset()
    #: Plain attributes a forward pass changes; a failed Sequential forward restores them.
    _forward_state_attributes: tuple[str, ...] = ()
    #: Plain attributes a layer's plan is made from: assigning one drops the plan.
    _plan_attributes: frozenset[str] = frozenset({"training"})
    #: Plain attributes checked on every assignment (``bn.eps = 0.0`` raises, as at
    #: construction): name -> function returning the value to store, or raising.
    _attribute_checks: Mapping[str, Callable[[Any], Any]] = MappingProxyType({})

    _array_backend: Backend
    _backend_choice: str | Backend | None
    _parameters: dict[str, Any]
    _buffers: dict[str, Any]
    _modules: dict[str, Module | None]
    _grads: dict[str, Any]
    _saved: tuple[Any, ...] | None
    _plan: Any

    def __init__(self, backend: str | Backend | None = None) -> None:
        state = self.__dict__  # plain writes: __setattr__ needs the stores first
        state["_array_backend"] = _devices.array_backend(backend)
        state["_backend_choice"] = backend
        state["training"] = True
        state["_parameters"] = {}
        state["_buffers"] = {}
        state["_modules"] = {}
        state["_grads"] = {}
        state["_saved"] = None
        state["_plan"] = None

    # ----- registration and attribute access --------------------------------------
    def register_parameter(self, name: str, value: Array | None) -> None:
        """Add a learnable parameter, readable as ``self.<name>``, with a zero gradient.

        Parameters
        ----------
        name : str
            An identifier; becomes a ``state_dict`` key and a :attr:`grads` key.
        value : array or None
            A floating array (converted to the layer's device when it is not
            there already; a NumPy array on the CPU is kept, not copied), or
            ``None`` for a parameter the layer was configured without.

        Raises
        ------
        InvalidParameterError
            ``name`` is taken or not an identifier, or ``value`` is not a floating array.
        """
        value = registered_value(self, name, value, "_parameters", floating=True)
        self._parameters[name] = self.__dict__[name] = value
        self.__dict__["_plan"] = None
        if value is None:
            self._grads.pop(name, None)
        else:
            zeros = np.zeros(tuple(value.shape), dtype=np.dtype(value.dtype))
            self._grads[name] = self._array_backend.asarray(zeros)

    def register_buffer(self, name: str, value: Array | None) -> None:
        """Add a buffer (state that is saved but not learnt), readable as ``self.<name>``.

        A forward pass may change buffers in place; if a :class:`~normdrop.Sequential`
        forward raises, every buffer is put back.

        Parameters
        ----------
        name : str
        value : array or None

        Raises
        ------
        InvalidParameterError
            ``name`` is taken or not an identifier, or ``value`` is not an array.
        """
        value = registered_value(self, name, value, "_buffers", floating=False)
        self._buffers[name] = self.__dict__[name] = value
        self.__dict__["_plan"] = None

    def __setattr__(self, name: str, value: Any) -> None:
        """Assigning to a parameter or buffer copies the value into it, after checks.

        A :class:`Module` (or ``None`` for a child's name) is registered as a child
        with :meth:`add_module`, as in PyTorch. Other attributes are set as usual;
        those in ``_attribute_checks`` (such as ``eps`` and ``momentum``) are checked
        as the constructor checks them.

        Raises
        ------
        InvalidParameterError
            The value is not an array of the parameter's or buffer's shape, or its
            dtype does not cast to theirs (``same_kind``); a checked attribute gets
            a value its constructor argument would refuse; a child's name gets
            something else than a module or ``None``. Nothing is changed.
        """
        state = self.__dict__
        parameters = state.get("_parameters")
        if parameters is not None and (name in parameters or name in state["_buffers"]):
            target = self._own_state(name)
            if value is not target:  # `layer.weight -= step` assigns the array to itself
                host = assignment_value(type(self).__name__, name, target, value)
                target[...] = self._array_backend.asarray(host)
        elif isinstance(value, Module) or (parameters is not None and name in state["_modules"]):
            self._set_child(name, value)
        else:
            check = self._attribute_checks.get(name)
            if check is not None:
                value = check(value)
            object.__setattr__(self, name, value)
            if name in self._plan_attributes:
                state["_plan"] = None

    def _set_child(self, name: str, value: Any) -> None:
        """Assign a child module by attribute, with PyTorch's checks."""
        if "_modules" not in self.__dict__:
            raise AttributeError("cannot assign module before Module.__init__() call")
        if value is not None and not isinstance(value, Module):
            raise InvalidParameterError(
                f"{type(self).__name__}.{name} is a child module: assign a normdrop Module "
                f"or None, got {type(value).__name__}",
                parameter_name=name,
                value=value,
            )
        self.add_module(name, value)

    def _own_state(self, name: str) -> Any:
        return self._parameters[name] if name in self._parameters else self._buffers[name]

    def _walk(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Yield ``(key prefix, module)`` for this module, then every module inside it."""
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child._walk(f"{prefix}{name}.")

    def _walk_unique(self) -> Iterator[tuple[str, Module]]:
        """:meth:`_walk` without repeats: a module used at several positions is yielded at
        its first (as PyTorch's ``named_parameters`` and ``named_modules`` do)."""
        seen: set[int] = set()
        for prefix, module in self._walk():
            if id(module) not in seen:
                seen.add(id(module))
                yield prefix, module

    # ----- calling ---------------------------------------------------------------
    def __call__(self, x: ArrayT) -> ArrayT:
        """Same as :meth:`forward`, after checking that ``x`` is on the layer's device.

        Raises
        ------
        BackendArrayError
            ``x`` lives on another device than the layer's parameters and buffers.
        """
        if type(x) is not np.ndarray or self._array_backend.device != "cpu":
            self._check_device("the input", x)
        return self.forward(x)

    def reset_parameters(self) -> None:
        """Put parameters and buffers back to their initial values.

        Layers with parameters override it; this default has nothing to reset (so
        :meth:`Sequential.reset_parameters <normdrop.Sequential.reset_parameters>`
        can call it on every layer).
        """

    def _fill(self, **values: float) -> None:
        """Set every element of each named parameter or buffer that exists to its value."""
        for name, value in values.items():
            array = self._own_state(name)
            if array is not None:
                array[...] = value

    def forward(self, x: Array) -> Array:
        """Apply the layer to ``x``; subclasses implement it.

        A subclass that has a backward pass calls :meth:`save_for_backward` here.

        Parameters
        ----------
        x : array
            The layer's input.

        Returns
        -------
        array
            The layer's output.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def save_for_backward(self, *values: Any) -> None:
        """Keep ``values`` for the next :meth:`backward`; call it from :meth:`forward`.

        They are passed to :meth:`compute_backward` after ``grad_output``, and
        dropped by pickling, copying and :meth:`to`.
        """
        self.__dict__["_saved"] = values

    def compute_backward(self, grad_output: Array, *saved: Any) -> tuple[Array, dict[str, Array]]:
        """Return the input gradient and the parameter gradients; subclasses implement it.

        Parameters
        ----------
        grad_output : array
            Gradient of the loss with respect to the last output.
        *saved
            What the last :meth:`forward` passed to :meth:`save_for_backward`.

        Returns
        -------
        grad_input : array
            Gradient with respect to the last input.
        param_grads : dict
            Gradient of each parameter, keyed by its registered name (parameters
            without a gradient may be left out). :meth:`backward` adds them into
            :attr:`grads`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement compute_backward()")

    def backward(self, grad_output: Array) -> Array:
        """Return the input gradient of the last forward pass.

        Parameter gradients are added into the arrays of :attr:`grads` (in place)
        until :meth:`zero_grad`.

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
            ``grad_output`` lives on another device than the layer, or is an
            array no backend takes (e.g. a torch tensor).
        """
        if type(grad_output) is not np.ndarray or self._array_backend.device != "cpu":
            self._check_device("grad_output", grad_output)
            _devices.check_array_kind(self, "grad_output", grad_output)
        saved = self._saved
        if saved is None:
            raise BackwardBeforeForwardError(
                f"{type(self).__name__}.backward() called before any forward pass"
            )
        grad_input, param_grads = self.compute_backward(grad_output, *saved)
        self._accumulate(param_grads)
        return grad_input

    def _accumulate(self, param_grads: Mapping[str, Array]) -> None:
        """Add each gradient into its :attr:`grads` array in place, after checking them all."""
        _grads.accumulate(self, param_grads)

    def _check_device(self, name: str, x: Any) -> None:
        _devices.check_device(self, name, x)

    def _forward_bound(self, x: Any) -> Any | None:
        """Run the forward call the backend bound for ``x``'s shape and dtype, or ``None``.

        A layer's plan keeps, per input shape and dtype, the call its backend bound in an
        earlier forward, for valid inputs only (``calls``; see
        :func:`normdrop._ops._arrays.bound_call`): a key that matches proves the shape and
        dtype, so a C-contiguous NumPy input on the plan's backend takes the fewest checks.
        Saves what the backward pass needs, as the general path does.
        """
        plan = self._plan
        if type(x) is not np.ndarray or plan is None:
            return None
        calls = plan.calls
        run = calls.get((x.shape, x.dtype)) if calls else None
        if (
            run is None
            or not x.flags.c_contiguous
            or resolve_backend(x, self._backend_choice) is not plan.backend
        ):
            return None
        y, mean, rstd = run(x)
        self.__dict__["_saved"] = (x, mean, rstd, plan)  # save_for_backward, inlined
        return y

    @property
    def grads(self) -> dict[str, Array]:
        """Accumulated parameter gradients, keyed like :meth:`named_parameters`.

        Zeros after construction and after :meth:`zero_grad`. :meth:`backward`
        and :meth:`zero_grad` write into these arrays in place, so a reference
        to one (e.g. held by an optimiser) stays current; only a move or a
        dtype conversion (:meth:`to`, :meth:`float`, :meth:`double`) replaces them.
        """
        if not self._modules:
            return self._grads
        return {prefix + k: v for prefix, m in self._walk_unique() for k, v in m._grads.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Set every gradient in :attr:`grads` to zero, in place.

        Parameters
        ----------
        set_to_none : bool, default True
            Accepted for PyTorch compatibility. Either way the gradients become
            zeros in place, never ``None``: :attr:`grads` keeps its arrays, so
            references an optimiser holds stay current.
        """
        _validation.boolean("set_to_none", set_to_none)
        for _, module in self._walk():
            for grad in module._grads.values():
                grad[...] = 0

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
        mode = _validation.boolean("mode", mode)
        self.training = mode
        for child in self._modules.values():
            if child is not None:
                child.train(mode)
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
    def _named(
        self, store: str, prefix: str, recurse: bool, remove_duplicate: bool
    ) -> Iterator[tuple[str, Array]]:
        """``(key, array)`` of every array in ``store`` (an attribute) of each module inside,
        after checking PyTorch's keyword arguments."""
        _check_prefix(prefix)
        recurse = _validation.boolean("recurse", recurse)
        remove_duplicate = _validation.boolean("remove_duplicate", remove_duplicate)
        modules = (
            self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
            if recurse
            else iter([(prefix, self)])
        )
        return (
            (f"{path}.{k}" if path else k, v)
            for path, m in modules
            for k, v in getattr(m, store).items()
            if v is not None
        )

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Array]]:
        """Yield ``(name, array)`` for every learnable parameter, as PyTorch does.

        Parameters
        ----------
        prefix : str, default ""
            Put before every name, with a ``"."``.
        recurse : bool, default True
            Include the modules inside this one; ``False``: only its own parameters.
        remove_duplicate : bool, default True
            List a module used at several positions once, at its first; ``False``:
            at every position. (An array registered in two modules is listed under
            each: each has its own gradient in :attr:`grads`.)

        Raises
        ------
        InvalidParameterError
            ``prefix`` is not a string, or a flag is not a bool.
        """
        return self._named("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Array]:
        """Yield every learnable parameter (see :meth:`named_parameters`).

        Parameters
        ----------
        recurse : bool, default True
            Include the modules inside this one.
        """
        return (v for _, v in self.named_parameters(recurse=recurse))

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Array]]:
        """Yield ``(name, array)`` for every buffer (running statistics and counters).

        Parameters
        ----------
        prefix, recurse, remove_duplicate
            As in :meth:`named_parameters`.

        Raises
        ------
        InvalidParameterError
            ``prefix`` is not a string, or a flag is not a bool.
        """
        return self._named("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Array]:
        """Yield every buffer (see :meth:`named_buffers`).

        Parameters
        ----------
        recurse : bool, default True
            Include the modules inside this one.
        """
        return (v for _, v in self.named_buffers(recurse=recurse))

    # ----- modules inside ----------------------------------------------------------
    def named_modules(
        self, memo: set[Module] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """Yield ``(name, module)`` for this module and every module inside it, as PyTorch does.

        This module comes first, named ``prefix`` (``""``); the others are named by
        their path (``"0"``, ``"2.1"`` in nested :class:`~normdrop.Sequential`
        containers, ``"block.norm"`` for attributes).

        Parameters
        ----------
        memo : set of Module, optional
            Modules to leave out; each yielded module is added to it (when
            ``remove_duplicate``).
        prefix : str, default ""
            Put before every name, with a ``"."``.
        remove_duplicate : bool, default True
            Yield a module used at several positions once, at its first; ``False``:
            at every position.

        Raises
        ------
        InvalidParameterError
            ``memo`` is not a set, ``prefix`` not a string or ``remove_duplicate``
            not a bool.
        """
        if memo is not None and not isinstance(memo, set):
            raise InvalidParameterError(
                f"memo must be a set of modules or None, got {type(memo).__name__}",
                parameter_name="memo",
                value=memo,
            )
        _check_prefix(prefix)
        remove_duplicate = _validation.boolean("remove_duplicate", remove_duplicate)
        return self._named_modules(set() if memo is None else memo, prefix, remove_duplicate)

    def _named_modules(
        self, memo: set[Module], prefix: str, remove_duplicate: bool
    ) -> Iterator[tuple[str, Module]]:
        if self in memo:
            return
        if remove_duplicate:
            memo.add(self)
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                path = f"{prefix}.{name}" if prefix else name
                yield from child._named_modules(memo, path, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        """Yield this module and every module inside it, each once (see :meth:`named_modules`)."""
        return (module for _, module in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Yield ``(name, module)`` for the modules directly inside this one, each once."""
        seen: set[int] = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        """Yield the modules directly inside this one, each once."""
        return (child for _, child in self.named_children())

    def apply(self, fn: Callable[[Module], object]) -> Module:
        """Call ``fn`` on every module inside this one, then on this one, as PyTorch does.

        Parameters
        ----------
        fn : callable
            Called with each module (children before their container; a module at
            several positions once per position, as PyTorch does); its result is
            ignored.

        Returns
        -------
        Module
            ``self``.
        """
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def _state_items(self) -> Iterator[tuple[str, Array]]:
        """This module's own parameters and buffers (not those of modules inside it)."""
        for store in (self._parameters, self._buffers):
            yield from ((k, v) for k, v in store.items() if v is not None)

    # ----- representation ---------------------------------------------------------
    def extra_repr(self) -> str:
        """The arguments that ``repr(layer)`` shows in its parentheses, as in PyTorch.

        ``repr(layer)`` is ``ClassName(<extra_repr>)``. Override this method, not
        ``__repr__``, to describe a layer of your own; here it returns ``""``.

        Returns
        -------
        str
            E.g. ``"p=0.15"`` for ``Dropout(0.15)``.
        """
        return ""

    def __repr__(self) -> str:
        """``ClassName(extra_repr)``, with one ``(name): repr`` line per child, as PyTorch's."""
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = [
            f"({name}): " + repr(child).replace("\n", "\n  ")
            for name, child in self._modules.items()
        ]
        if not children and len(lines) <= 1:
            return f"{type(self).__name__}({extra})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines + children) + "\n)"

    # ----- pickling --------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array_backend"] = self._array_backend.name
        state["_saved"] = None  # the forward context holds inputs; never persist it
        state["_plan"] = None  # made again from the parameters at the next call
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_array_backend"] = get_backend(state["_array_backend"])
        self.__dict__.update(state)


def _check_prefix(prefix: Any) -> None:
    if not isinstance(prefix, str):
        raise InvalidParameterError(
            f"prefix must be a string, got {prefix!r}", parameter_name="prefix", value=prefix
        )
