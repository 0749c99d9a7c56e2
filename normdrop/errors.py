"""The exceptions normdrop raises.

Every class derives from :class:`NormdropError`, and most also from the built-in
exception a Python user would expect (``ValueError``, ``TypeError``, ...), so both
``except normdrop.NormdropError`` and ``except ValueError`` work.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "NormdropError",
    "InvalidParameterError",
    "InvalidParameterTypeError",
    "ShapeError",
    "DTypeError",
    "StateDictError",
    "BackwardBeforeForwardError",
    "BackendError",
    "UnknownBackendError",
    "BackendNotInstalledError",
    "BackendArrayError",
]


class NormdropError(Exception):
    """Base class of every error raised by normdrop."""


class InvalidParameterError(NormdropError, ValueError):
    """A constructor or function argument has an invalid value.

    Parameters
    ----------
    message : str
        The full message; it names the parameter, the value and the expectation.
    parameter_name : str
        Name of the offending parameter.
    value : object
        The value that was received.
    """

    def __init__(self, message: str, *, parameter_name: str, value: Any) -> None:
        super().__init__(message)
        self.parameter_name = parameter_name
        self.value = value

    def __reduce__(self):  # keep pickling (e.g. across processes) working
        args = (str(self), self.parameter_name, self.value, type(self))
        return (_rebuild_invalid_parameter, args)


class InvalidParameterTypeError(InvalidParameterError, TypeError):
    """An argument is not of a kind the parameter takes (a string for a number, ``None``
    for a shape, a dict for a bool).

    Also a :class:`TypeError`, as PyTorch raises for such arguments
    (``torch.nn.Dropout("0.5")``, ``torch.nn.BatchNorm1d({})``), and still an
    :class:`InvalidParameterError` (and so a ``ValueError``) with its attributes.
    """


def _rebuild_invalid_parameter(
    message: str, name: str, value: Any, cls: type[InvalidParameterError] | None = None
) -> InvalidParameterError:
    return (cls or InvalidParameterError)(message, parameter_name=name, value=value)


class ShapeError(NormdropError, ValueError):
    """An input's rank or sizes do not fit the layer, or too few values per channel."""


class DTypeError(NormdropError, TypeError):
    """An input's dtype is not a supported floating type."""


class StateDictError(NormdropError, RuntimeError):
    """``load_state_dict`` received missing or unexpected keys or mismatched shapes."""


class BackwardBeforeForwardError(NormdropError, RuntimeError):
    """``backward`` was called on a layer that has no saved forward pass."""


class BackendError(NormdropError):
    """Base class of backend selection and compatibility errors."""


class UnknownBackendError(BackendError, ValueError):
    """No backend of that name is registered; the message lists the registered ones."""


class BackendNotInstalledError(BackendError, ImportError):
    """A registered backend cannot load; the message names the extra to install."""


class BackendArrayError(BackendError, TypeError):
    """The chosen backend does not accept the array (arrays never move devices silently)."""
