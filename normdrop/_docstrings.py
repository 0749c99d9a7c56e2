"""Numpydoc entries that several docstrings share, each written once.

A docstring names a shared entry with a ``%(name)s`` line; :func:`fill_doc`
replaces that line by the entry, indented as the placeholder is, and ``{name}`` in
the entry by the documented object's name. The filled text
is the object's ``__doc__``, so ``help()`` and Sphinx show it whole (the same
technique as SciPy's ``doccer`` and MNE's ``fill_doc``).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

__all__ = ["ENTRIES", "fill_doc"]

T = TypeVar("T")

#: The shared entries: a parameter or attribute line and its description, or a description.
ENTRIES: dict[str, str] = {
    # ----- layers -------------------------------------------------------------------
    "layer.normalized_shape": """\
normalized_shape : int or sequence of int
    The trailing dimensions normalised together; stored as a tuple.""",
    "layer.p": """\
p : float, default 0.5
    Drop probability in [0, 1).""",
    "layer.eps": """\
eps : float, default 1e-5
    Added to the variance, > 0.""",
    "layer.elementwise_affine": """\
elementwise_affine : bool, default True
    Learn a per-element ``weight`` (and ``bias``).
bias : bool, default True
    Learn ``bias`` too (only with ``elementwise_affine``).""",
    "layer.seed": """\
seed : int, optional
    64-bit seed of the masks; drawn from the global generator
    (:func:`normdrop.manual_seed`) when ``None``.""",
    "layer.backend": """\
backend : str or Backend, optional
    Backend for every call (default: chosen per call from the input).""",
    "layer.call_count": """\
call_count : int
    Training calls so far: the ``call`` of the next mask. Each call claims its number
    atomically, so threads sharing a layer never share a mask.""",
    "layer.grads": """\
grads : dict
    Accumulated gradients, keyed like :meth:`named_parameters`.""",
    "layer.compute_backward": """\
grad_output : array
    Gradient of the loss with respect to the last output.
*saved
    What the last :meth:`forward` saved.""",
    "layer.norm_gradients": """\
grad_input : array
    Gradient with respect to the last input, in its dtype.
param_grads : dict
    ``"weight"`` and ``"bias"`` gradients (empty without them, or when the
    backend's kernel added them into :attr:`grads` itself).""",
    # ----- functions ----------------------------------------------------------------
    "out": """\
out : array, optional
    Where to write the result (shape and dtype of ``x``, writeable); may be ``x``
    itself. An ``out`` that partly overlaps ``x`` (another view of the same memory)
    is safe: the result is computed into a temporary first.""",
    "out.backward": """\
out : array, optional
    Where to write the input gradient (writeable); may be ``grad_output``. An
    ``out`` that shares memory with an input in any other way is safe: the
    gradient is computed into a temporary first.""",
    "backend": """\
backend : str or Backend, optional
    The backend to compute with; :mod:`normdrop.registry` says how the default is
    chosen.""",
    "seed": """\
seed : int, optional
    64-bit dropout seed; when ``None`` a fresh one is drawn from the global
    generator (:func:`normdrop.manual_seed`), only if a mask is needed.""",
    "call": """\
call : int, default 0
    Call counter: a different mask per call with one seed.""",
    "seed.backward": """\
seed : int, optional
    The forward's seed; required when the forward dropped elements and no
    ``bitmask`` is given.""",
    "call.backward": """\
call : int, default 0
    The forward's call counter.""",
    "weight.backward": "The forward's weight; the parameter gradients are computed only with it.",
    "return_stats": """\
return_stats : bool, optional
    Deprecated: use :func:`{name}_with_stats`.
    ``True`` returns what that returns; passing it at all warns.""",
}

_PLACEHOLDER = re.compile(r"^([ \t]*)%\(([\w.]+)\)s[ \t]*$", re.MULTILINE)


def fill_doc(obj: T) -> T:
    """Replace every ``%(name)s`` line of ``obj``'s docstring by ``ENTRIES[name]``.

    Each line of the entry gets the placeholder's indentation, and ``{name}`` in it
    becomes ``obj.__name__``. A docstring without
    placeholders is left alone, as is a missing one (``python -OO``).

    Parameters
    ----------
    obj : function or class
        Decorated: its ``__doc__`` is filled in place.

    Returns
    -------
    function or class
        ``obj`` itself.

    Raises
    ------
    KeyError
        A placeholder names no entry (a mistake in normdrop's own docstrings).
    """
    doc = obj.__doc__
    if doc:
        target: Any = obj

        def entry(match: re.Match[str]) -> str:
            indent, name = match.groups()
            lines = ENTRIES[name].replace("{name}", target.__name__).split("\n")
            return "\n".join(indent + line if line else line for line in lines)

        target.__doc__ = _PLACEHOLDER.sub(entry, doc)
    return obj
