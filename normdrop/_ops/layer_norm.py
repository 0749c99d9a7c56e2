"""Layer normalisation: its plan, and the forward and backward passes that execute one."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from normdrop import _validation
from normdrop._ops import _arrays, _inputs
from normdrop.capabilities import takes_keyword
from normdrop.errors import ShapeError
from normdrop.protocol import Array, Backend

__all__ = ["LayerNormPlan", "backward", "forward", "make_plan", "plan", "rows"]


class LayerNormPlan(NamedTuple):
    """What a LayerNorm forward or backward needs besides the data.

    Attributes
    ----------
    backend : Backend
    shape : tuple of int
        ``normalized_shape``: the trailing dims normalised together.
    features : int
        ``prod(shape)``, the length of each normalised row.
    weight, bias : array or None
        Flat vectors of length ``features`` of any float dtype. A layer's plan
        holds views of its live parameters, so in-place updates reach the next call.
    weight_dtype : numpy.dtype or None
        The dtype the caller's weight had: the parameter gradients come back in it.
    eps : float
    accumulates : bool
        ``layer_norm_backward`` takes the optional ``accumulate`` keyword.
    calls : dict or None
        A layer's forward calls bound by the backend, per input shape and dtype
        (:func:`normdrop._ops._arrays.bound_call`); ``None`` when the backend binds
        none (no ``bind``) or the plan is not a layer's.
    """

    backend: Backend
    shape: tuple[int, ...]
    features: int
    weight: Array | None = None
    bias: Array | None = None
    weight_dtype: np.dtype | None = None
    eps: float = 1e-5
    accumulates: bool = False
    calls: dict | None = None


def make_plan(
    be: Backend, shape: tuple[int, ...], weight: Array | None, bias: Array | None, eps: float
) -> LayerNormPlan:
    """The plan of a layer's own arguments (valid by construction: nothing is checked).

    ``weight`` and ``bias`` have shape ``shape`` (or are ``None``).
    """
    return LayerNormPlan(
        be,
        shape,
        math.prod(shape),
        None if weight is None else weight.reshape(-1),
        None if bias is None else bias.reshape(-1),
        None if weight is None else weight.dtype,
        eps,
        takes_keyword(be, "layer_norm_backward", "accumulate"),
        {} if hasattr(be, "bind") else None,
    )


def plan(
    be: Backend,
    normalized_shape: Any,
    weight: Any,
    bias: Any,
    eps: Any,
    float64: bool = True,
    for_backward: bool = False,
) -> LayerNormPlan:
    """Validate LayerNorm's arguments other than the data; return the plan.

    The vectors are converted to float64 unless ``float64`` is False; the dtype of
    the parameter gradients (``weight_dtype``) is set only ``for_backward``.
    """
    shape = _validation.normalized_shape(normalized_shape)
    eps = _validation.positive_finite("eps", eps)
    w = _inputs.vector(be, "weight", weight, shape, float64)
    b = _inputs.vector(be, "bias", bias, shape, float64)
    weight_dtype = None
    if weight is not None and for_backward:
        weight_dtype = _inputs.host_array("weight", weight).dtype
    return LayerNormPlan(be, shape, math.prod(shape), w, b, weight_dtype, eps)


def rows(x: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(rows, features)`` of data whose trailing dims must be ``shape``."""
    k = len(shape)
    if x.ndim < k or (x.shape[x.ndim - k :] != shape and tuple(x.shape[x.ndim - k :]) != shape):
        expected = ", ".join(str(d) for d in shape)
        raise ShapeError(
            f"LayerNorm expected input with shape (..., {expected}), got {tuple(x.shape)}"
        )
    features = shape[0] if k == 1 else math.prod(shape)
    return (x.size // features if features else 0), features


def lead_shape(x: Any, p: LayerNormPlan) -> tuple[int, ...]:
    """The shape of the per-sample statistics of ``x``: its dims before ``p.shape``."""
    return tuple(x.shape[: x.ndim - len(p.shape)])


def forward(p: LayerNormPlan, x: Array, out: Array | None = None) -> tuple[Array, Array, Array]:
    """Normalise ``x`` (checked: a float array of the plan's backend); ``out`` is checked.

    Returns ``(y, mean, rstd)``; the float64 statistics are flat (one per row).
    Raises :class:`ShapeError` when the trailing dims of ``x`` are not ``p.shape``.
    """
    calls = p.calls
    be = p.backend
    if (  # the common case, in few operations: C-contiguous float rows of the plan's length
        out is None
        and type(x) is np.ndarray
        and x.ndim == 2
        and len(p.shape) == 1
        and x.shape[1] == p.features
        and x.dtype in _inputs.KERNEL_DTYPES
        and x.flags.c_contiguous
    ):
        if calls is not None:
            run = _arrays.bound_call(calls, be, "layer_norm_forward", x, p.weight, p.bias, p.eps)
            if run is not None:
                return run(x)
        return be.layer_norm_forward(x, p.weight, p.bias, p.eps, be.empty(x.shape, x.dtype))
    n, features = rows(x, p.shape)
    if out is None and _inputs.is_kernel_ready(x):  # any rank, in few operations
        x2 = x.reshape(n, features)
        y2 = be.empty(x2.shape, x.dtype)
        y, mean, rstd = be.layer_norm_forward(x2, p.weight, p.bias, p.eps, y2)
        return y.reshape(x.shape), mean, rstd
    x2 = _arrays.contiguous_input(be, x, (n, features))
    buffer, direct = _arrays.kernel_output(be, x, out, (n, features), reads=(p.weight, p.bias))
    buffer, mean, rstd = be.layer_norm_forward(x2, p.weight, p.bias, p.eps, buffer)
    return _arrays.finish(x, out, buffer, direct), mean, rstd


def backward(
    p: LayerNormPlan,
    grad_output: Array,
    x: Array,
    mean: Array,
    rstd: Array,
    out: Array | None = None,
    accumulate: tuple[Array, Array] | None = None,
) -> tuple[Array, Array | None, Array | None]:
    """Gradients from checked arrays: ``(grad_input, grad_weight, grad_bias)``.

    ``mean`` and ``rstd`` are flat float64; the parameter gradients are computed
    with the plan's weight only (in ``p.weight_dtype``, shaped like ``p.shape``).
    ``accumulate``, a layer's C-contiguous gradient buffers ``(dweight, dbias)``
    (only with a weight), gets them added in place and is returned in their
    stead: by the backend's kernel when the plan ``accumulates``, else here.
    """
    be = p.backend
    n, features = rows(x, p.shape)
    w = _inputs.as_float64(p.weight)
    x2 = _arrays.contiguous_input(be, x, (n, features))
    dy2 = _arrays.contiguous_input(be, grad_output, (n, features))
    reads = (x, mean, rstd, w)
    buffer, direct = _arrays.kernel_output(be, x, out, (n, features), None, reads, grad_output)
    if p.accumulates and accumulate is not None and w is not None:
        flat = (accumulate[0].reshape(-1), accumulate[1].reshape(-1))  # views: contiguous
        kernel: Any = be.layer_norm_backward  # with the optional keyword (plan checked it)
        buffer = kernel(dy2, x2, mean, rstd, w, buffer, True, accumulate=flat)[0]
        return _arrays.finish(x, out, buffer, direct), accumulate[0], accumulate[1]
    buffer, dweight, dbias = be.layer_norm_backward(dy2, x2, mean, rstd, w, buffer, w is not None)
    grad_input = _arrays.finish(x, out, buffer, direct)
    if w is None:
        return grad_input, None, None
    assert dweight is not None and dbias is not None  # asked for with param_grads
    dw = dweight.reshape(p.shape).astype(p.weight_dtype)
    db = dbias.reshape(p.shape).astype(p.weight_dtype)
    if accumulate is None:
        return grad_input, dw, db
    accumulate[0][...] += dw
    accumulate[1][...] += db
    return grad_input, accumulate[0], accumulate[1]
