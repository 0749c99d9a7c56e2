"""The public dropout functions: validate the arguments, plan, execute."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np

from normdrop import _validation
from normdrop._docstrings import fill_doc
from normdrop._ops import _inputs
from normdrop._ops._deprecation import warn_flag
from normdrop._ops.dropout import backward, check_bitmask, forward, make_plan, require_seed
from normdrop.errors import InvalidParameterError
from normdrop.protocol import Array, ArrayLike, ArrayT, Backend
from normdrop.random import draw_seed, dropout_threshold
from normdrop.registry import resolve_backend

__all__ = ["dropout", "dropout_backward", "dropout_mask", "dropout_with_bitmask"]


def _run(bitmask: bool, x: Any, p: Any, training: Any, *args: Any) -> tuple[Array, Array | None]:
    """Check every argument of :func:`dropout` (``args``: ``seed``, ``call``, ``out``,
    ``backend``), plan and execute; keep a bitmask if ``bitmask``."""
    seed, call, out, backend = args
    original = x
    be, x = _inputs.prepare("x", x, backend)
    _validation.boolean("training", training)
    p = _validation.dropout_probability(p, allow_one=not training)
    seed = None if seed is None else _validation.seed(seed)
    call = _validation.call_index(call)
    plan = make_plan(be, p, training, bitmask)
    if not plan.active:  # the identity: checks out itself
        y, _ = forward(plan, x, 0, call, out)
        return (y if out is not None else _inputs.caller_array(original, y)), None
    if out is not None:
        _inputs.check_out(be, out, x)
    seed = draw_seed() if seed is None else seed  # drawn only when a mask is needed
    return forward(plan, x, seed, call, out)


@fill_doc
def dropout(
    x: ArrayT,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    call: int = 0,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
    return_bitmask: bool | None = None,
) -> ArrayT:
    """Inverted dropout with a reproducible Philox4x32-10 mask.

    Element ``i`` (C order) is kept when its Philox word for ``(seed, call)`` is
    ``>= floor(p * 2**32)``; kept elements are multiplied by ``1 / (1 - p)`` and
    dropped ones are 0 (even where ``x`` is NaN or infinite).
    Outside training, or with ``p == 0``, ``x`` itself is returned.

    Parameters
    ----------
    x : array
        NumPy data in another dense memory order (Fortran order, a transposed
        array) gives a result with the same layout, as in PyTorch; the mask still
        follows the C-order element index, which costs a C-ordered copy.
    p : float, default 0.5
        Drop probability in [0, 1) when training; with ``training=False`` any value
        in [0, 1] is accepted (it is not used), as in PyTorch.
    training : bool, default True
    %(seed)s
    %(call)s
    %(out)s
    %(backend)s
    return_bitmask : bool, optional
        Deprecated: use :func:`dropout_with_bitmask`. ``True`` returns
        ``(y, bitmask)`` as it does; passing it at all warns.

    Returns
    -------
    array

    Examples
    --------
    >>> import numpy as np
    >>> from normdrop.functional import dropout
    >>> dropout(np.ones(8), p=0.5, seed=0)
    array([0., 2., 2., 2., 2., 0., 2., 0.])
    """
    if return_bitmask is not None:
        warn_flag("dropout", "return_bitmask", "dropout_with_bitmask")
        if return_bitmask:  # deprecated: the pair of dropout_with_bitmask (not annotated)
            return cast(ArrayT, _run(True, x, p, training, seed, call, out, backend))
    return _run(False, x, p, training, seed, call, out, backend)[0]


def dropout_with_bitmask(
    x: ArrayT,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    call: int = 0,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
) -> tuple[ArrayT, Array | None]:
    """:func:`dropout`, also returning the packed keep-mask its backward pass can read.

    Parameters
    ----------
    x, p, training, seed, call, out, backend
        As in :func:`dropout`.

    Returns
    -------
    y : array
        What :func:`dropout` returns.
    bitmask : array or None
        The keep-mask packed as uint8 (bit ``i % 8`` of byte ``i // 8`` for element
        ``i``), for :func:`dropout_backward`; ``None`` when nothing was dropped
        (evaluation, ``p == 0``) or when the backend keeps no bitmask (then the
        backward regenerates the mask from ``seed`` and ``call``).

    Examples
    --------
    >>> import numpy as np
    >>> from normdrop.functional import dropout_with_bitmask
    >>> y, bitmask = dropout_with_bitmask(np.ones(8), p=0.5, seed=0)
    >>> bitmask
    array([94], dtype=uint8)
    """
    return _run(True, x, p, training, seed, call, out, backend)


@fill_doc
def dropout_backward(
    grad_output: ArrayT,
    p: float,
    *,
    seed: int | None = None,
    call: int = 0,
    bitmask: ArrayLike | None = None,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
) -> ArrayT:
    """Gradient of :func:`dropout` with respect to its input.

    The mask comes from ``bitmask`` when given (fastest), otherwise it is
    regenerated from ``(seed, call)``. With ``p == 0`` the gradient is
    ``grad_output`` itself.

    Parameters
    ----------
    grad_output : array
        NumPy data in another dense memory order gives a gradient with the same
        layout (see :func:`dropout`).
    p : float
        The forward's drop probability.
    %(seed.backward)s
    %(call.backward)s
    bitmask : array, optional
        The packed keep-mask from :func:`dropout_with_bitmask`.
    %(out.backward)s
    %(backend)s

    Returns
    -------
    array
    """
    be, dy = _inputs.prepare("grad_output", grad_output, backend)
    p = _validation.dropout_probability(p)
    call = _validation.call_index(call)
    plan = make_plan(be, p, True, False)
    if plan.active:
        if bitmask is None:
            require_seed(seed)
            seed = _validation.seed(seed)
        else:
            check_bitmask(bitmask, dy.size)
        if out is not None:
            _inputs.check_out(be, out, dy)
    return backward(plan, dy, seed, call, bitmask, out)


@fill_doc
def dropout_mask(
    shape: int | tuple[int, ...],
    p: float,
    *,
    seed: int,
    call: int = 0,
    backend: str | Backend | None = None,
) -> Array:
    """The boolean keep-mask :func:`dropout` uses for ``(shape, p, seed, call)``.

    Parameters
    ----------
    shape : int or tuple of int
    p : float
        Drop probability in [0, 1).
    seed : int
    %(call)s
    %(backend)s

    Returns
    -------
    array of bool
        ``True`` where the element is kept.
    """
    try:
        dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    except TypeError:
        dims = None
    if dims is None or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims
    ):
        raise InvalidParameterError(
            f"shape must be a non-negative int or a tuple of non-negative ints, got {shape!r}",
            parameter_name="shape",
            value=shape,
        )
    p = _validation.dropout_probability(p)
    seed = _validation.seed(seed)
    call = _validation.call_index(call)
    be = resolve_backend(None, backend)
    size = math.prod(dims)
    return be.dropout_mask(size, dropout_threshold(p), seed, call).reshape(dims)
