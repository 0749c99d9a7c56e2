"""Modules inside modules: registering them (``add_module``) and finding members by path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from normdrop.errors import InvalidParameterError
from normdrop.layers._state_dict import EXTRA_STATE_KEY
from normdrop.protocol import Array

if TYPE_CHECKING:
    from normdrop.layers.module import Module

__all__ = ["Submodules"]


class Submodules:
    """The part of :class:`~normdrop.layers.Module` that holds other modules, as PyTorch's.

    A module assigned to an attribute (``self.norm = LayerNorm(8)``) or given to
    :meth:`add_module` becomes a child: its parameters, buffers and gradients join this
    module's (``"norm.weight"``), and ``train``, ``eval``, ``to``, ``zero_grad``,
    ``state_dict`` and checkpoints reach it.
    """

    _modules: dict[str, Module | None]

    def add_module(self, name: str, module: Module | None) -> None:
        """Add ``module`` as a child named ``name``, readable as ``self.<name>``.

        Parameters
        ----------
        name : str
            Not empty, without ``"."``, and not already an attribute, parameter or
            buffer (an existing child of that name is replaced).
        module : Module or None
            ``None`` keeps the name as an empty slot, as in PyTorch.

        Raises
        ------
        InvalidParameterError
            ``module`` is not a :class:`~normdrop.layers.Module` or ``None``, or
            ``name`` is not allowed; nothing is changed.
        """
        from normdrop.layers.module import Module

        owner = type(self).__name__
        if module is not None and not isinstance(module, Module):
            raise InvalidParameterError(
                f"{owner}.add_module: module must be a normdrop Module or None, got "
                f"{type(module).__name__}",
                parameter_name="module",
                value=module,
            )
        state = self.__dict__
        if (
            not isinstance(name, str)
            or not name
            or "." in name
            or name == EXTRA_STATE_KEY
            or (name not in self._modules and (name in state or hasattr(type(self), name)))
        ):
            raise InvalidParameterError(
                f"{owner} cannot add a module named {name!r}: the name must be a non-empty "
                "string without '.' that is not already an attribute, parameter or buffer",
                parameter_name="name",
                value=name,
            )
        self._modules[name] = state[name] = module

    def register_module(self, name: str, module: Module | None) -> None:
        """Same as :meth:`add_module` (PyTorch's other name for it).

        Parameters
        ----------
        name : str
            The child's name, as for :meth:`add_module`.
        module : Module or None
            The child, or ``None`` for an empty slot.
        """
        self.add_module(name, module)

    def get_submodule(self, target: str) -> Module:
        """Return the module at the dotted path ``target`` (``""`` is this module).

        As PyTorch's: ``model.get_submodule("2.0")`` is layer 0 of the
        :class:`~normdrop.layers.Sequential` at position 2.

        Parameters
        ----------
        target : str
            Child names joined by ``"."``, as :meth:`named_modules` gives them.

        Returns
        -------
        Module

        Raises
        ------
        AttributeError
            A name on the path is not an attribute of its module
            (``"BatchNorm1d has no attribute `x`"``) or not a module
            (``"`weight` is not a Module"``), as in PyTorch.
        InvalidParameterError
            ``target`` is not a string.
        """
        module: Any = self
        if _checked_target(self, target) == "":
            return module
        for item in target.split("."):
            child = module._modules.get(item)
            if child is None:
                if item not in module._modules and not hasattr(module, item):
                    raise AttributeError(f"{type(module).__name__} has no attribute `{item}`")
                raise AttributeError(f"`{item}` is not a Module")
            module = child
        return module

    def get_parameter(self, target: str) -> Array:
        """Return the parameter at the dotted path ``target``, as PyTorch's ``get_parameter``.

        Parameters
        ----------
        target : str
            E.g. ``"0.weight"``: a module path (see :meth:`get_submodule`) and a
            parameter name.

        Returns
        -------
        array
            The layer's own array (not a copy).

        Raises
        ------
        AttributeError
            The path does not lead to a module, the module has no such attribute,
            or it is not a parameter (``"`running_mean` is not a parameter"``; a
            parameter the layer was built without, such as ``bias`` with
            ``bias=False``, is not one either, as in PyTorch).
        InvalidParameterError
            ``target`` is not a string.
        """
        path, _, name = _checked_target(self, target).rpartition(".")
        module = self.get_submodule(path)
        value = module._parameters.get(name)
        if value is None:
            _missing(module, name, "a parameter")
        return value

    def get_buffer(self, target: str) -> Array | None:
        """Return the buffer at the dotted path ``target``, as PyTorch's ``get_buffer``.

        Parameters
        ----------
        target : str
            E.g. ``"0.running_mean"``: a module path (see :meth:`get_submodule`)
            and a buffer name.

        Returns
        -------
        array or None
            The layer's own array (not a copy); ``None`` for a buffer the layer was
            built without (``running_mean`` with ``track_running_stats=False``), as
            in PyTorch.

        Raises
        ------
        AttributeError
            The path does not lead to a module, the module has no such attribute,
            or it is not a buffer (``"`weight` is not a buffer"``).
        InvalidParameterError
            ``target`` is not a string.
        """
        path, _, name = _checked_target(self, target).rpartition(".")
        module = self.get_submodule(path)
        if name not in module._buffers:
            _missing(module, name, "a buffer")
        return module._buffers[name]


def _checked_target(owner: Any, target: Any) -> str:
    if not isinstance(target, str):
        raise InvalidParameterError(
            f"{type(owner).__name__}: target must be a string of names joined by '.', "
            f"got {target!r}",
            parameter_name="target",
            value=target,
        )
    return target


def _missing(module: Module, name: str, kind: str) -> NoReturn:
    """Raise PyTorch's AttributeError for ``name``, which is not ``kind`` of ``module``."""
    if not hasattr(module, name):
        raise AttributeError(f"{type(module).__name__} has no attribute `{name}`")
    raise AttributeError(f"`{name}` is not {kind}")
