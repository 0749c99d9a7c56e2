"""Fused dropout + residual add + LayerNorm: its plan, forward and backward passes.

``h = dropout(x); r = h + residual; y = layer_norm(r)`` in one call. Backends that
define the optional ``dropout_add_layer_norm_forward`` kernel (see
:mod:`normdrop.protocol`) do it in one pass over memory; for any other backend the
plan composes it from the dropout and LayerNorm kernels, with the same result.

The dropout mask of ``(seed, call)`` is the one :func:`normdrop.functional.dropout`
draws for the same ``(seed, call)``: element ``i`` of the C-ordered ``x`` gets
Philox word ``i``. ``r`` is what the three separate calls give: the dropout output
in the data dtype plus ``residual`` in the data dtype (float16 is computed in
float32 and rounded once).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from normdrop._ops import _arrays, _inputs, dropout, layer_norm
from normdrop._ops.dropout import DropoutPlan
from normdrop._ops.layer_norm import LayerNormPlan
from normdrop.protocol import Array, Backend

#: The optional one-pass kernel of :mod:`normdrop.protocol` (looked up by name: optional).
FUSED_KERNEL = "dropout_add_layer_norm_forward"

__all__ = ["FusedPlan", "backward", "forward", "make_plan", "plan_from"]


class FusedPlan(NamedTuple):
    """The LayerNorm and dropout plans of the fused op, and the kernel that runs both.

    Attributes
    ----------
    norm : LayerNormPlan
    dropout : DropoutPlan
        Inactive without dropout (evaluation, ``p == 0``).
    fused : bool
        The backend has the optional ``dropout_add_layer_norm_forward`` kernel
        (looked up once, here; called on the backend, which may replace its
        methods after its first kernel call); otherwise the same computation is
        composed from its dropout and LayerNorm kernels.
    """

    norm: LayerNormPlan
    dropout: DropoutPlan
    fused: bool


def plan_from(norm: LayerNormPlan, drop: DropoutPlan) -> FusedPlan:
    """The fused plan of a LayerNorm plan and a dropout plan (of the same backend)."""
    return FusedPlan(norm, drop, hasattr(norm.backend, FUSED_KERNEL))


def make_plan(
    be: Backend,
    shape: tuple[int, ...],
    weight: Array | None,
    bias: Array | None,
    eps: float,
    p: float,
    training: bool,
) -> FusedPlan:
    """The plan of a layer's own arguments (valid by construction); keeps a bitmask."""
    norm = layer_norm.make_plan(be, shape, weight, bias, eps)
    return plan_from(norm, dropout.make_plan(be, p, training, True))


def _composed(
    be: Backend,
    x: Any,
    residual: Any,
    weight: Any,
    bias: Any,
    eps: float,
    threshold: int | None,
    scale: Any,
    seed: int | None,
    call: int,
    out: Any,
    r_out: Any,
    bitmask: Any,
) -> tuple[Array, Array, Array, Array]:
    """The fused kernel composed from ``be``'s dropout and LayerNorm kernels.

    For backends without ``dropout_add_layer_norm_forward``: three passes over
    memory instead of one, the same values.
    """
    if threshold is None:
        r = x + residual
    else:
        assert seed is not None  # a mask is drawn
        r = be.dropout_forward(x, threshold, scale, seed, call, r_out, bitmask)
        if residual is not None:
            r += residual  # in place on mutable arrays; a new (lazy) array otherwise
    out, mean, rstd = be.layer_norm_forward(r, weight, bias, eps, out)
    return out, r, mean, rstd


def forward(
    p: FusedPlan,
    x: Array,
    residual: Array | None,
    seed: int | None,
    call: int,
    out: Array | None = None,
) -> tuple[Array, Array, Array, Array, Array | None]:
    """Run the op on checked arrays; return ``(y, r, mean, rstd, bitmask)``.

    The statistics are flat float64; ``bitmask`` is ``None`` unless the dropout
    plan keeps one. Without dropout and residual ``r`` is ``x`` itself.
    """
    norm, drop = p.norm, p.dropout
    if not drop.active and residual is None:  # nothing before the norm: r is x itself
        y, mean, rstd = layer_norm.forward(norm, x, out)
        return y, x, mean, rstd, None
    be = norm.backend
    canonical = layer_norm.rows(x, norm.shape)
    x2 = _arrays.contiguous_input(be, x, canonical)
    res2 = None if residual is None else _arrays.contiguous_input(be, residual, canonical)
    r_dtype = _inputs.compute_dtype(x.dtype)
    if out is None and x.dtype == r_dtype and type(x) is np.ndarray:
        buffer, r_buffer = _arrays.empty_pair(be, canonical, r_dtype)
        direct = False
    else:
        buffer, direct = _arrays.kernel_output(be, x, out, canonical)
        r_buffer = be.empty(canonical, r_dtype)
    threshold = scale = bitmask = None
    if drop.active:
        threshold, scale = drop.threshold, drop.scale(x.dtype)
        if drop.bitmask:
            bitmask = be.empty(((x.size + 7) // 8,), np.uint8)
    args = (x2, res2, norm.weight, norm.bias, norm.eps, threshold, scale, seed, call, buffer)
    if p.fused:
        buffer, r2, mean, rstd = getattr(be, FUSED_KERNEL)(*args, r_buffer, bitmask)
    else:
        buffer, r2, mean, rstd = _composed(be, *args, r_buffer, bitmask)
    y = _arrays.finish(x, out, buffer, direct)
    r = r2 if r2.shape == x.shape else r2.reshape(x.shape)
    if r.dtype != x.dtype:
        r = r.astype(x.dtype)
    return y, r, mean, rstd, bitmask


def backward(
    p: FusedPlan,
    grad_output: Array,
    r: Array,
    mean: Array,
    rstd: Array,
    grad_r: Array | None,
    seed: int | None,
    call: int,
    bitmask: Array | None,
    has_residual: bool,
    out: Array | None = None,
) -> tuple[Array, Array | None, Array | None, Array | None]:
    """Gradients from checked arrays: ``(grad_x, grad_residual, grad_weight, grad_bias)``.

    With ``g_r`` the gradient reaching ``r`` (through the norm, plus ``grad_r``):
    ``grad_residual = g_r`` (``None`` without a residual) and ``grad_x`` is the
    dropout backward of ``g_r`` (a copy of it without dropout).
    """
    pair: tuple[Array, Array] | None = None
    if out is None and has_residual and type(r) is np.ndarray and r.dtype in _inputs.KERNEL_DTYPES:
        # both gradients are returned: one allocation (see _arrays.empty_pair)
        pair = _arrays.empty_pair(p.norm.backend, tuple(r.shape), r.dtype)
    g_r, grad_weight, grad_bias = layer_norm.backward(
        p.norm, grad_output, r, mean, rstd, None if pair is None else pair[0]
    )
    if grad_r is not None:
        g_r += grad_r  # in place on mutable arrays; a new (lazy) array otherwise
    if p.dropout.active:
        into = None if pair is None else pair[1]
        grad_x = dropout.backward(p.dropout, g_r, seed, call, bitmask, out, into)
    elif out is not None:
        out[...] = g_r
        grad_x = out
    elif pair is not None:
        pair[1][...] = g_r
        grad_x = pair[1]
    else:  # the identity: a copy, so that grad_x and grad_residual never alias
        grad_x = g_r.copy() if has_residual else g_r
    return grad_x, (g_r if has_residual else None), grad_weight, grad_bias
