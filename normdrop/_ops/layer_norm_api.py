"""The public layer normalisation functions: validate the arguments, plan, execute."""

from __future__ import annotations

from typing import Any, cast

from normdrop._docstrings import fill_doc
from normdrop._ops import _inputs
from normdrop._ops._deprecation import warn_flag
from normdrop._ops.layer_norm import LayerNormPlan, backward, forward, lead_shape, plan, rows
from normdrop.protocol import Array, ArrayLike, ArrayT, Backend

__all__ = ["layer_norm", "layer_norm_backward", "layer_norm_with_stats"]


def _validated(
    x: Any, out: Any, backend: str | Backend | None, *args: Any
) -> tuple[LayerNormPlan, Array]:
    """Check every argument of :func:`layer_norm` (``args``: ``normalized_shape``,
    ``weight``, ``bias``, ``eps``); return its plan and the data."""
    be, x = _inputs.prepare("x", x, backend)
    p = plan(be, *args)
    rows(x, p.shape)
    if out is not None:
        _inputs.check_out(be, out, x)
    return p, x


@fill_doc
def layer_norm(
    x: ArrayT,
    normalized_shape: int | tuple[int, ...],
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float = 1e-5,
    *,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
    return_stats: bool | None = None,
) -> ArrayT:
    """Layer normalisation over the trailing ``normalized_shape`` dimensions of each sample.

    Parameters
    ----------
    x : array
        Its trailing dimensions equal ``normalized_shape``.
    normalized_shape : int or sequence of int
    weight, bias : array of shape normalized_shape, optional
    eps : float, default 1e-5
    %(out)s
    %(backend)s
    %(return_stats)s

    Returns
    -------
    array
        Shape and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from normdrop.functional import layer_norm
    >>> layer_norm(np.array([[1.0, 2.0, 4.0]]), 3).round(4)
    array([[-1.069 , -0.2673,  1.3363]])
    """
    if return_stats is not None:
        warn_flag("layer_norm", "return_stats", "layer_norm_with_stats")
        if return_stats:  # deprecated: the tuple of layer_norm_with_stats (not annotated)
            stats = layer_norm_with_stats(
                x, normalized_shape, weight, bias, eps, out=out, backend=backend
            )
            return cast(ArrayT, stats)
    p, x = _validated(x, out, backend, normalized_shape, weight, bias, eps)
    return forward(p, x, out)[0]


def layer_norm_with_stats(
    x: ArrayT,
    normalized_shape: int | tuple[int, ...],
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    eps: float = 1e-5,
    *,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
) -> tuple[ArrayT, Array, Array]:
    """:func:`layer_norm`, also returning the statistics its backward pass needs.

    Parameters
    ----------
    x, normalized_shape, weight, bias, eps, out, backend
        As in :func:`layer_norm`.

    Returns
    -------
    y : array
        What :func:`layer_norm` returns.
    mean, rstd : array
        The float64 per-sample mean and ``rstd = 1/sqrt(var + eps)``, of shape
        ``x.shape[:-len(normalized_shape)]``, which :func:`layer_norm_backward` takes.

    Examples
    --------
    >>> import numpy as np
    >>> from normdrop.functional import layer_norm_with_stats
    >>> y, mean, rstd = layer_norm_with_stats(np.array([[1.0, 3.0]]), 2)
    >>> mean, rstd.round(4)
    (array([2.]), array([1.]))
    """
    p, x = _validated(x, out, backend, normalized_shape, weight, bias, eps)
    y, mean, rstd = forward(p, x, out)
    lead = lead_shape(x, p)
    return y, mean.reshape(lead), rstd.reshape(lead)


@fill_doc
def layer_norm_backward(
    grad_output: ArrayLike,
    x: ArrayT,
    normalized_shape: int | tuple[int, ...],
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
) -> tuple[ArrayT, Array | None, Array | None]:
    """Gradients of :func:`layer_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array
        Shape of ``x``.
    x : array
        The forward input.
    normalized_shape : int or sequence of int
    mean, rstd : array
        The per-sample statistics from :func:`layer_norm_with_stats`.
    weight : array of shape normalized_shape, optional
        %(weight.backward)s
    %(out.backward)s
    %(backend)s

    Returns
    -------
    grad_input : array
    grad_weight, grad_bias : array of shape normalized_shape or None
        In ``weight``'s dtype, or ``None`` without ``weight``.
    """
    be, x = _inputs.prepare("x", x, backend)
    grad_output = _inputs.prepare_grad(be, grad_output, x)
    p, mean, rstd = checked_backward(be, x, normalized_shape, mean, rstd, weight)
    if out is not None:
        _inputs.check_out(be, out, x)
    return backward(p, grad_output, x, mean, rstd, out)


def checked_backward(
    be: Backend, x: Array, normalized_shape: Any, mean: Any, rstd: Any, weight: Any
) -> tuple[LayerNormPlan, Array, Array]:
    """The backward plan and flat float64 statistics from checked public arguments."""
    p = plan(be, normalized_shape, weight, None, 1.0, for_backward=True)
    rows(x, p.shape)
    lead = lead_shape(x, p)
    mean = _inputs.statistic(be, "mean", mean, lead)
    rstd = _inputs.statistic(be, "rstd", rstd, lead)
    return p, mean, rstd
