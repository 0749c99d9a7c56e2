"""Fused dropout + residual add + LayerNorm: the transformer block's sub-layer epilogue.

``h = dropout(x); r = h + residual; y = layer_norm(r)`` in one call. Backends that
define the optional ``dropout_add_layer_norm_forward`` kernel (see
:mod:`normdrop.protocol`) do it in one pass over memory; for any other backend the
op is composed from its dropout and LayerNorm kernels, with the same result.

The dropout mask of ``(seed, call)`` is the one :func:`normdrop.functional.dropout`
draws for the same ``(seed, call)``: element ``i`` of the C-ordered ``x`` gets
Philox word ``i``. ``r`` is what the three separate calls give: the dropout output
in the data dtype plus ``residual`` in the data dtype (float16 is computed in
float32 and rounded once).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from normdrop import _validation
from normdrop.errors import DTypeError, InvalidParameterError, ShapeError
from normdrop.functional import (
    _check_float,
    _check_out,
    _coerce,
    _compute_dtype,
    _contiguous_input,
    _dropout_scale,
    _finish,
    _kernel_output,
    _layer_norm_rows,
    _layer_shape,
    _prepare,
    _vector,
    dropout_backward,
    layer_norm_backward,
)
from normdrop.protocol import Array, Backend
from normdrop.random import draw_seed, dropout_threshold
from normdrop.registry import resolve_backend

__all__ = ["dropout_add_layer_norm", "dropout_add_layer_norm_backward"]


def _check_partner(be: Backend, name: str, a: Any, x: Any) -> Any:
    """``a`` (residual or grad_r) checked against ``x``: same backend, shape and dtype."""
    a = _coerce(a)
    _check_float(name, a)
    if not be.accepts(a):
        resolve_backend(a, be)  # raises BackendArrayError naming both kinds
    if tuple(a.shape) != tuple(x.shape):
        raise ShapeError(f"{name} must have the shape of x {tuple(x.shape)}, got {tuple(a.shape)}")
    if np.dtype(a.dtype) != np.dtype(x.dtype):
        raise DTypeError(f"{name} must have the dtype of x ({x.dtype}), got {a.dtype}")
    return a


def dropout_add_layer_norm(
    x: Array,
    residual: Array | None,
    normalized_shape: int | tuple[int, ...],
    weight: Array | None = None,
    bias: Array | None = None,
    p: float = 0.5,
    eps: float = 1e-5,
    training: bool = True,
    *,
    seed: int | None = None,
    call: int = 0,
    out: Array | None = None,
    backend: str | Backend | None = None,
    return_stats: bool = False,
) -> tuple[Array, Array] | tuple[Array, Array, Array, Array, Array | None]:
    """Dropout, residual add and LayerNorm in one call: ``r = dropout(x) + residual``,
    ``y = layer_norm(r)``.

    Equal to ``dropout(x, p, training, seed=seed, call=call)``, then ``+ residual``,
    then ``layer_norm(r, normalized_shape, weight, bias, eps)``: the same mask, the
    same ``r`` bit for bit, and ``y`` to rounding.

    Parameters
    ----------
    x : array
        Float input whose trailing dimensions equal ``normalized_shape``.
    residual : array or None
        Added after dropout; shape, dtype and backend of ``x``. ``None``: no add.
    normalized_shape : int or sequence of int
    weight, bias : array of shape normalized_shape, optional
    p : float, default 0.5
        Drop probability in [0, 1).
    eps : float, default 1e-5
    training : bool, default True
        Dropout only in training (and with ``p > 0``).
    seed : int, optional
        Dropout seed; drawn from the global generator when ``None`` (only if a mask
        is needed).
    call : int, default 0
        Dropout call counter.
    out : array, optional
        Where to write ``y`` (shape and dtype of ``x``); may be ``x`` or ``residual``.
    backend : str or Backend, optional
    return_stats : bool, default False
        Also return what :func:`dropout_add_layer_norm_backward` needs besides ``r``:
        the float64 per-sample ``mean`` and ``rstd`` (shape
        ``x.shape[:-len(normalized_shape)]``) and the packed keep-mask (``None``
        without dropout or on a backend that keeps none).

    Returns
    -------
    y : array
        The normalised output, shape and dtype of ``x``.
    r : array
        The pre-norm sum (the next block's residual), shape and dtype of ``x``;
        ``x`` itself without dropout and without ``residual``.
    mean, rstd, bitmask : array
        Only with ``return_stats``.

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
    be, x = _prepare("x", x, backend)
    shape = _validation.normalized_shape(normalized_shape)
    p = _validation.dropout_probability(p)
    eps = _validation.positive_finite("eps", eps)
    _validation.boolean("training", training)
    _validation.boolean("return_stats", return_stats)
    seed = None if seed is None else _validation.seed(seed)
    call = _validation.call_index(call)
    rows, features = _layer_shape(x, shape)
    if residual is not None:
        residual = _check_partner(be, "residual", residual, x)
    w = _vector(be, "weight", weight, shape)
    b = _vector(be, "bias", bias, shape)
    if out is not None:
        _check_out(be, out, x)
    drop = training and p > 0.0
    if drop and seed is None:
        seed = draw_seed()  # drawn only when a mask is needed, after every check
    y, r, mean, rstd, bitmask = _forward_rows(
        be, x, residual, shape, w, b, eps, p if drop else None, seed, call, out, return_stats
    )
    if not return_stats:
        return y, r
    lead = tuple(x.shape[: x.ndim - len(shape)])
    return y, r, mean.reshape(lead), rstd.reshape(lead), bitmask


def _forward_rows(
    be: Backend,
    x: Array,
    residual: Array | None,
    shape: tuple[int, ...],
    weight: Array | None,
    bias: Array | None,
    eps: float,
    p: float | None,
    seed: int | None,
    call: int,
    out: Array | None,
    keep_bitmask: bool,
) -> tuple[Array, Array, Array, Array, Array | None]:
    """The fused op on validated arguments (layers call it directly).

    ``p`` is ``None`` without dropout. Returns ``(y, r, mean, rstd, bitmask)`` with
    flat float64 statistics; the bitmask only when ``keep_bitmask`` and the backend
    keeps one.
    """
    if p is None and residual is None:  # nothing before the norm: r is x itself
        y, mean, rstd = _layer_norm_rows(be, x, shape, weight, bias, eps, out)
        return y, x, mean, rstd, None
    rows, features = _layer_shape(x, shape)
    canonical = (rows, features)
    x2 = _contiguous_input(be, x, canonical)
    res2 = None if residual is None else _contiguous_input(be, residual, canonical)
    buffer, direct = _kernel_output(be, x, out, canonical)
    r_buffer = be.empty(canonical, _compute_dtype(x.dtype))
    threshold = scale = bitmask = None
    if p is not None:
        threshold, scale = dropout_threshold(p), _dropout_scale(p, x.dtype)
        if keep_bitmask and getattr(be, "supports_bitmask", True):
            bitmask = be.empty(((x.size + 7) // 8,), np.uint8)
    kernel = getattr(be, "dropout_add_layer_norm_forward", None) or _composed_kernel(be)
    buffer, r2, mean, rstd = kernel(
        x2, res2, weight, bias, eps, threshold, scale, seed, call, buffer, r_buffer, bitmask
    )
    y = _finish(x, out, buffer, direct)
    r = r2 if r2.shape == x.shape else r2.reshape(x.shape)
    if r.dtype != x.dtype:
        r = r.astype(x.dtype)
    return y, r, mean, rstd, bitmask


def _composed_kernel(be: Backend) -> Any:
    """The fused kernel composed from ``be``'s dropout and LayerNorm kernels.

    For backends without ``dropout_add_layer_norm_forward``: three passes over
    memory instead of one, the same values.
    """

    def kernel(x, residual, weight, bias, eps, threshold, scale, seed, call, out, r_out, bitmask):
        if threshold is None:
            r = x + residual
        else:
            r = be.dropout_forward(x, threshold, scale, seed, call, r_out, bitmask)
            if residual is not None:
                r += residual  # in place on mutable arrays; a new (lazy) array otherwise
        out, mean, rstd = be.layer_norm_forward(r, weight, bias, eps, out)
        return out, r, mean, rstd

    return kernel


def dropout_add_layer_norm_backward(
    grad_output: Array,
    r: Array,
    normalized_shape: int | tuple[int, ...],
    mean: Array,
    rstd: Array,
    weight: Array | None = None,
    p: float = 0.5,
    training: bool = True,
    *,
    grad_r: Array | None = None,
    seed: int | None = None,
    call: int = 0,
    bitmask: Array | None = None,
    has_residual: bool = True,
    out: Array | None = None,
    backend: str | Backend | None = None,
) -> tuple[Array, Array | None, Array | None, Array | None]:
    """Gradients of :func:`dropout_add_layer_norm` from what its forward saved.

    The forward saves ``r`` and, with ``return_stats=True``, ``mean``, ``rstd`` and
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
        The forward's statistics (``return_stats=True``).
    weight : array of shape normalized_shape, optional
        The forward's weight; the parameter gradients are computed only with it.
    p : float, default 0.5
        The forward's drop probability.
    training : bool, default True
        Whether the forward was in training mode (dropout applied when ``p > 0``).
    grad_r : array, optional
        Gradient of the loss with respect to ``r`` from elsewhere (the next block's
        residual path); shape and dtype of ``r``.
    seed : int, optional
        The forward's seed; required with dropout when no ``bitmask`` is given.
    call : int, default 0
        The forward's call counter.
    bitmask : array, optional
        The packed keep-mask from the forward.
    has_residual : bool, default True
        Whether the forward added a residual (else ``grad_residual`` is ``None``).
    out : array, optional
        Where to write ``grad_x``.
    backend : str or Backend, optional

    Returns
    -------
    grad_x : array
    grad_residual : array or None
    grad_weight, grad_bias : array of shape normalized_shape or None
        In ``weight``'s dtype, or ``None`` without ``weight``.
    """
    be, r = _prepare("r", r, backend)
    p = _validation.dropout_probability(p)
    _validation.boolean("training", training)
    _validation.boolean("has_residual", has_residual)
    call = _validation.call_index(call)
    drop = training and p > 0.0
    if drop and bitmask is None and seed is None:
        raise InvalidParameterError(
            "seed must be given when no bitmask is (the forward used dropout), got None",
            parameter_name="seed",
            value=None,
        )
    if grad_r is not None:
        grad_r = _check_partner(be, "grad_r", grad_r, r)
    if out is not None:
        _check_out(be, out, r)
    g_r, grad_weight, grad_bias = layer_norm_backward(
        grad_output, r, normalized_shape, mean, rstd, weight, backend=be
    )
    if grad_r is not None:
        g_r += grad_r  # in place on mutable arrays; a new (lazy) array otherwise
    if drop:
        grad_x = dropout_backward(
            g_r, p, seed=seed, call=call, bitmask=bitmask, out=out, backend=be
        )
    elif out is not None:
        out[...] = g_r
        grad_x = out
    else:  # the identity: a copy, so that grad_x and grad_residual never alias
        grad_x = g_r.copy() if has_residual else g_r
    return grad_x, (g_r if has_residual else None), grad_weight, grad_bias
