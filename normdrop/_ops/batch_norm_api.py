"""The public batch normalisation functions: validate the arguments, plan, execute."""

from __future__ import annotations

from typing import Any, cast

from normdrop._docstrings import fill_doc
from normdrop._ops import _inputs
from normdrop._ops._deprecation import warn_flag
from normdrop._ops.batch_norm import (
    FUSED_BACKWARD,
    BatchNormPlan,
    backward,
    batch_shape,
    forward,
    plan,
)
from normdrop.protocol import Array, ArrayLike, ArrayT, Backend

__all__ = ["batch_norm", "batch_norm_backward", "batch_norm_with_stats"]


def _validated(
    x: Any, out: Any, backend: str | Backend | None, *args: Any
) -> tuple[BatchNormPlan, Array]:
    """Check every argument of :func:`batch_norm` (``args``: the ones after ``x``, up to
    ``eps``); return its plan and the data."""
    be, x = _inputs.prepare("x", x, backend)
    p = plan(be, batch_shape(x)[1], *args)
    if out is not None:
        _inputs.check_out(be, out, x)
    return p, x


@fill_doc
def batch_norm(
    x: ArrayT,
    running_mean: ArrayLike | None = None,
    running_var: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
    return_stats: bool | None = None,
) -> ArrayT:
    """Batch normalisation over the channels (axis 1) of ``(N, C, ...)`` data.

    Batch statistics are used when ``training`` or when no running statistics
    are given; otherwise the running statistics are. When training with running
    statistics, they are updated in place:
    ``running = (1 - momentum) * running + momentum * batch`` (unbiased variance).

    Parameters
    ----------
    x : array of shape (N, C) or (N, C, L1, L2, ...)
        Float data (any rank >= 2, as in ``torch.nn.functional.batch_norm``; the
        :class:`~normdrop.BatchNorm1d` layer takes rank 2 or 3). An empty batch
        (no values per channel) gives an empty output and updates nothing.
        Big-endian data is accepted and converted to native byte order.
    running_mean, running_var : array of shape (C,), optional
        Running statistics; both or neither. When they are updated (training)
        they must be writeable: a read-only array raises before anything changes.
    weight, bias : array of shape (C,), optional
        Affine parameters (gamma, beta).
    training : bool, default False
        Use (and, with running statistics, update from) batch statistics.
    momentum : float, default 0.1
        Weight of the batch statistics in the update, in [0, 1]; checked only when
        ``training`` (PyTorch ignores it in evaluation, and so does normdrop).
    eps : float, default 1e-5
        Added to the variance for numerical stability, > 0.
    %(out)s
    %(backend)s
    %(return_stats)s

    Returns
    -------
    array
        Normalised data, shape and dtype of ``x``. NumPy data laid out in another
        dense memory order (Fortran order, channels-last) is computed where it
        lies, and the result has the same layout.

    Raises
    ------
    ShapeError
        Wrong rank or sizes, or exactly 1 value per channel when batch
        statistics are needed.
    InvalidParameterError
        A bad argument, including a read-only ``out`` or read-only running
        statistics that would be updated.

    Examples
    --------
    >>> import numpy as np
    >>> from normdrop.functional import batch_norm
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]])
    >>> batch_norm(x, training=True).round(4)
    array([[-1.2247, -1.3887],
           [ 0.    ,  0.4629],
           [ 1.2247,  0.9258]])
    """
    if return_stats is not None:
        warn_flag("batch_norm", "return_stats", "batch_norm_with_stats")
    args = (running_mean, running_var, weight, bias, training, momentum, eps)
    p, x = _validated(x, out, backend, *args)
    result = forward(p, x, out)
    if return_stats:  # deprecated: the tuple batch_norm_with_stats returns (not annotated)
        return cast(ArrayT, result)
    return result[0]


def batch_norm_with_stats(
    x: ArrayT,
    running_mean: ArrayLike | None = None,
    running_var: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
) -> tuple[ArrayT, Array, Array]:
    """:func:`batch_norm`, also returning the statistics its backward pass needs.

    Parameters
    ----------
    x, running_mean, running_var, weight, bias, training, momentum, eps, out, backend
        As in :func:`batch_norm`.

    Returns
    -------
    y : array
        What :func:`batch_norm` returns.
    mean, rstd : array of shape (C,)
        The float64 mean and ``rstd = 1/sqrt(var + eps)`` used, which
        :func:`batch_norm_backward` takes.

    Examples
    --------
    >>> import numpy as np
    >>> from normdrop.functional import batch_norm_with_stats
    >>> y, mean, rstd = batch_norm_with_stats(np.array([[1.0], [3.0]]), training=True)
    >>> mean, rstd.round(4)
    (array([2.]), array([1.]))
    """
    args = (running_mean, running_var, weight, bias, training, momentum, eps)
    p, x = _validated(x, out, backend, *args)
    return forward(p, x, out)


@fill_doc
def batch_norm_backward(
    grad_output: ArrayLike,
    x: ArrayT,
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    *,
    training: bool = True,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
) -> tuple[ArrayT, Array | None, Array | None]:
    """Gradients of :func:`batch_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array
        Gradient of the loss with respect to the output, shape of ``x``.
    x : array of shape (N, C, ...)
        The forward input.
    mean, rstd : array of shape (C,)
        The statistics the forward used (:func:`batch_norm_with_stats`).
    weight : array of shape (C,), optional
        %(weight.backward)s
    training : bool, default True
        Whether the forward used batch statistics (their dependence on ``x`` then
        enters the input gradient).
    %(out.backward)s
    %(backend)s

    Returns
    -------
    grad_input : array
        Shape and dtype of ``x``.
    grad_weight, grad_bias : array of shape (C,) or None
        In ``weight``'s dtype, or ``None`` without ``weight``; zeros for an empty batch.
    """
    be, x = _inputs.prepare("x", x, backend)
    grad_output = _inputs.prepare_grad(be, grad_output, x)
    c = batch_shape(x)[1]
    mean = _inputs.statistic(be, "mean", mean, (c,))
    rstd = _inputs.statistic(be, "rstd", rstd, (c,))
    w = _inputs.vector(be, "weight", weight, (c,))
    weight_dtype = None if weight is None else _inputs.host_array("weight", weight).dtype
    if out is not None:
        _inputs.check_out(be, out, x)
    p = BatchNormPlan(be, w, weight_dtype=weight_dtype, fused_backward=hasattr(be, FUSED_BACKWARD))
    return backward(p, grad_output, x, mean, rstd, training, out)
