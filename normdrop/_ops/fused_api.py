"""The public fused dropout + add + LayerNorm functions: validate, plan, execute."""

from __future__ import annotations

from typing import Any

from normdrop import _validation
from normdrop._docstrings import fill_doc
from normdrop._ops import _inputs, dropout, layer_norm
from normdrop._ops._deprecation import warn_flag
from normdrop._ops.fused import backward, forward, plan_from
from normdrop._ops.layer_norm_api import checked_backward
from normdrop.protocol import Array, ArrayLike, ArrayT, Backend
from normdrop.random import draw_seed

__all__ = [
    "dropout_add_layer_norm",
    "dropout_add_layer_norm_backward",
    "dropout_add_layer_norm_with_stats",
]


def _run(stats: bool, x: Any, residual: Any, *args: Any) -> tuple[Array, ...]:
    """Check every argument of :func:`dropout_add_layer_norm` (``args``: those after
    ``residual``), plan and execute: ``(y, r)``, and with ``stats`` also the per-sample
    statistics and the bitmask."""
    normalized_shape, weight, bias, p, eps, training, seed, call, out, backend = args
    original = x
    be, x = _inputs.prepare("x", x, backend)
    norm = layer_norm.plan(be, normalized_shape, weight, bias, eps)
    _validation.boolean("training", training)
    p = _validation.dropout_probability(p, allow_one=not training)  # unused outside training
    seed = None if seed is None else _validation.seed(seed)
    call = _validation.call_index(call)
    layer_norm.rows(x, norm.shape)
    if residual is not None:
        residual = _inputs.check_partner(be, "residual", residual, x)
    plan = plan_from(norm, dropout.make_plan(be, p, training, stats))
    if out is not None:
        _inputs.check_out(be, out, x)
    if plan.dropout.active and seed is None:
        seed = draw_seed()  # drawn only when a mask is needed, after every check
    y, r, mean, rstd, bitmask = forward(plan, x, residual, seed, call, out)
    r = _inputs.caller_array(original, r)  # r is x itself without dropout and residual
    if not stats:
        return y, r
    lead = layer_norm.lead_shape(x, norm)
    return y, r, mean.reshape(lead), rstd.reshape(lead), bitmask


@fill_doc
def dropout_add_layer_norm(
    x: ArrayT,
    residual: ArrayT | None,
    normalized_shape: int | tuple[int, ...],
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    p: float = 0.5,
    eps: float = 1e-5,
    training: bool = True,
    *,
    seed: int | None = None,
    call: int = 0,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
    return_stats: bool | None = None,
) -> tuple[ArrayT, ArrayT]:
    """Dropout, residual add and LayerNorm in one call: ``r = dropout(x) + residual``,
    ``y = layer_norm(r)``.

    Equal to ``dropout(x, p, training, seed=seed, call=call)``, then ``+ residual``,
    then ``layer_norm(r, normalized_shape, weight, bias, eps)``: the same mask, the
    same ``r`` bit for bit (float16: computed in float32 and rounded once), and ``y``
    to rounding.

    Parameters
    ----------
    x : array
        Float input whose trailing dimensions equal ``normalized_shape``.
    residual : array or None
        Added after dropout; shape, dtype and backend of ``x``. ``None``: no add.
    normalized_shape : int or sequence of int
    weight, bias : array of shape normalized_shape, optional
    %(layer.p)s
    eps : float, default 1e-5
    training : bool, default True
        Dropout only in training (and with ``p > 0``). With ``training=False`` any
        ``p`` in [0, 1] is accepted (it is not used), as :func:`dropout` accepts it.
    %(seed)s
    %(call)s
    out : array, optional
        Where to write ``y`` (shape and dtype of ``x``); may be ``x`` or ``residual``.
        Without dropout and without ``residual``, ``r`` is ``x`` itself, so with
        ``out=x`` it holds ``y`` afterwards.
    %(backend)s
    %(return_stats)s

    Returns
    -------
    y : array
        The normalised output, shape and dtype of ``x``.
    r : array
        The pre-norm sum (the next block's residual), shape and dtype of ``x``;
        ``x`` itself without dropout and without ``residual``.

    Examples
    --------
    >>> import numpy as np
    >>> from normdrop.functional import dropout_add_layer_norm
    >>> y, r = dropout_add_layer_norm(np.ones((1, 4)), np.arange(4.0)[None], 4, p=0.5, seed=0)
    >>> r
    array([[0., 3., 4., 5.]])
    >>> y.round(4)
    array([[-1.6036,  0.    ,  0.5345,  1.069 ]])
    """
    stats = False
    if return_stats is not None:
        warn_flag("dropout_add_layer_norm", "return_stats", "dropout_add_layer_norm_with_stats")
        stats = _validation.boolean("return_stats", return_stats)
    args = (normalized_shape, weight, bias, p, eps, training, seed, call, out, backend)
    return _run(stats, x, residual, *args)


def dropout_add_layer_norm_with_stats(
    x: ArrayT,
    residual: ArrayT | None,
    normalized_shape: int | tuple[int, ...],
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    p: float = 0.5,
    eps: float = 1e-5,
    training: bool = True,
    *,
    seed: int | None = None,
    call: int = 0,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
) -> tuple[ArrayT, ArrayT, Array, Array, Array | None]:
    """:func:`dropout_add_layer_norm`, also returning what its backward pass needs.

    Parameters
    ----------
    x, residual, normalized_shape, weight, bias, p, eps, training, seed, call, out, backend
        As in :func:`dropout_add_layer_norm`.

    Returns
    -------
    y, r : array
        What :func:`dropout_add_layer_norm` returns.
    mean, rstd : array
        The float64 per-sample statistics of ``r`` (shape
        ``x.shape[:-len(normalized_shape)]``).
    bitmask : array or None
        The packed keep-mask (as :func:`dropout_with_bitmask` returns it); ``None``
        without dropout or on a backend that keeps none.

    Examples
    --------
    >>> import numpy as np
    >>> from normdrop.functional import dropout_add_layer_norm_with_stats
    >>> y, r, mean, rstd, bitmask = dropout_add_layer_norm_with_stats(
    ...     np.ones((1, 4)), np.arange(4.0)[None], 4, p=0.5, seed=0
    ... )
    >>> mean
    array([3.])
    """
    args = (normalized_shape, weight, bias, p, eps, training, seed, call, out, backend)
    return _run(True, x, residual, *args)


@fill_doc
def dropout_add_layer_norm_backward(
    grad_output: ArrayLike,
    r: ArrayT,
    normalized_shape: int | tuple[int, ...],
    mean: ArrayLike,
    rstd: ArrayLike,
    weight: ArrayLike | None = None,
    p: float = 0.5,
    training: bool = True,
    *,
    grad_r: ArrayLike | None = None,
    seed: int | None = None,
    call: int = 0,
    bitmask: ArrayLike | None = None,
    has_residual: bool = True,
    out: ArrayT | None = None,
    backend: str | Backend | None = None,
) -> tuple[ArrayT, ArrayT | None, Array | None, Array | None]:
    """Gradients of :func:`dropout_add_layer_norm` from what its forward saved.

    :func:`dropout_add_layer_norm_with_stats` returns ``r``, ``mean``, ``rstd`` and
    the packed keep-mask: exactly what this function takes (the mask may instead be
    regenerated from ``seed`` and ``call``). With ``g_r`` the gradient reaching ``r``
    (through the norm, plus ``grad_r`` from the next block's residual path):
    ``grad_residual = g_r`` and ``grad_x = dropout_backward(g_r)``.

    Parameters
    ----------
    grad_output : array
        Gradient of the loss with respect to ``y``, shape of ``r``.
    r : array
        The forward's pre-norm sum.
    normalized_shape : int or sequence of int
    mean, rstd : array
        The forward's statistics.
    weight : array of shape normalized_shape, optional
        %(weight.backward)s
    p : float, default 0.5
        The forward's drop probability (any value in [0, 1] with ``training=False``).
    training : bool, default True
        Whether the forward was in training mode (dropout applied when ``p > 0``).
    grad_r : array, optional
        Gradient of the loss with respect to ``r`` from elsewhere (the next block's
        residual path); shape and dtype of ``r``.
    %(seed.backward)s
    %(call.backward)s
    bitmask : array, optional
        The packed keep-mask from the forward.
    has_residual : bool, default True
        Whether the forward added a residual (else ``grad_residual`` is ``None``).
    out : array, optional
        Where to write ``grad_x``.
    %(backend)s

    Returns
    -------
    grad_x : array
    grad_residual : array or None
    grad_weight, grad_bias : array of shape normalized_shape or None
        In ``weight``'s dtype, or ``None`` without ``weight``.
    """
    be, r = _inputs.prepare("r", r, backend)
    _validation.boolean("training", training)
    p = _validation.dropout_probability(p, allow_one=not training)  # unused outside training
    _validation.boolean("has_residual", has_residual)
    call = _validation.call_index(call)
    drop = dropout.make_plan(be, p, training, False)
    if drop.active and bitmask is None:
        dropout.require_seed(seed, " (the forward used dropout)")
    if grad_r is not None:
        grad_r = _inputs.check_partner(be, "grad_r", grad_r, r)
    if out is not None:
        _inputs.check_out(be, out, r)
    grad_output = _inputs.prepare_grad(be, grad_output, r)
    norm, mean, rstd = checked_backward(be, r, normalized_shape, mean, rstd, weight)
    if drop.active:
        if bitmask is None:
            seed = _validation.seed(seed)
        else:
            dropout.check_bitmask(bitmask, r.size)
    plan = plan_from(norm, drop)
    args = (grad_r, seed, call, bitmask, has_residual, out)
    return backward(plan, grad_output, r, mean, rstd, *args)
