"""Dropout: its plan, and the forward and backward passes that execute one."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from normdrop._ops import _arrays, _inputs
from normdrop.errors import InvalidParameterError, ShapeError
from normdrop.protocol import Array, Backend
from normdrop.random import dropout_threshold

__all__ = ["DropoutPlan", "backward", "check_bitmask", "forward", "make_plan"]


class DropoutPlan(NamedTuple):
    """What a dropout forward or backward needs besides the data, seed and call.

    Attributes
    ----------
    backend : Backend
    p : float
        The drop probability.
    active : bool
        Something is dropped (training with ``p > 0``); otherwise the op is the identity.
    threshold : int
        ``floor(p * 2**32)``: a Philox word below it drops its element.
    scale32, scale64 : numpy.float32, numpy.float64
        ``1 / (1 - p)`` computed in each compute dtype, as PyTorch does.
    bitmask : bool
        Keep a packed bitmask for the backward pass (asked for, and the backend's
        ``supports_bitmask`` allows it).
    """

    backend: Backend
    p: float
    active: bool
    threshold: int
    scale32: np.float32
    scale64: np.float64
    bitmask: bool

    def scale(self, dtype: np.dtype) -> np.floating:
        """``1 / (1 - p)`` in the compute dtype of data of ``dtype``."""
        return self.scale64 if dtype == _inputs.FLOAT64 else self.scale32


@functools.lru_cache(maxsize=64)
def _constants(p: float) -> tuple[int, np.float32, np.float64]:
    """The threshold and the scales of drop probability ``p`` (few distinct ``p`` occur)."""
    return (
        dropout_threshold(p),
        np.float32(1.0) / np.float32(1.0 - p),
        np.float64(1.0) / np.float64(1.0 - p),
    )


def make_plan(be: Backend, p: float, active: bool, bitmask: bool) -> DropoutPlan:
    """The plan of checked arguments: ``p`` in [0, 1) when ``active``.

    ``bitmask`` asks for a packed keep-mask, which only backends whose
    ``supports_bitmask`` is not False keep.
    """
    active = bool(active) and p > 0.0
    threshold, scale32, scale64 = _constants(p if active else 0.0)
    keep = active and bitmask and getattr(be, "supports_bitmask", True)
    return DropoutPlan(be, p, active, threshold, scale32, scale64, keep)


def _layout(be: Backend, x: Any) -> tuple[Any, Any]:
    """``(x1, result)`` for data whose axes lie in memory in another order than C's.

    The mask follows the C-order element index, so the kernel runs on a C-ordered
    copy ``x1``; ``result`` is an uninitialised array laid out like ``x`` (as
    ``numpy.empty_like`` and PyTorch keep it) that the caller fills from ``x1``.
    That covers dense data in another order (Fortran, permuted) and views of it
    (a slice of a Fortran-ordered array gives a Fortran-ordered result, as in
    PyTorch). ``(None, None)`` for data in C order, even with gaps (whose result
    is C-contiguous), and for other array kinds.
    """
    if _arrays.memory_order(x) is None and not _arrays.axes_permuted(x):
        return None, None
    x1 = be.ascontiguous(x)  # a copy: x is not C-contiguous
    return x1.astype(_inputs.compute_dtype(x.dtype), copy=False), np.empty_like(x)


def forward(
    p: DropoutPlan, x: Array, seed: int, call: int, out: Array | None = None
) -> tuple[Array, Array | None]:
    """Apply the plan's dropout to checked ``x`` (and ``out``); return ``(y, bitmask)``.

    ``bitmask`` is ``None`` unless the plan keeps one. Without dropout ``y`` is
    ``x`` itself (or ``out`` filled with it).
    """
    be = p.backend
    if not p.active:
        return _arrays.identity(be, x, out), None
    bitmask = be.empty(((x.size + 7) // 8,), np.uint8) if p.bitmask else None
    scale = p.scale64 if x.dtype == _inputs.FLOAT64 else p.scale32
    if out is None and _inputs.is_kernel_ready(x):  # the common case, in few operations
        y = be.empty(x.shape, x.dtype)
        return be.dropout_forward(x, p.threshold, scale, seed, call, y, bitmask), bitmask
    x1, result = _layout(be, x) if out is None else (None, None)
    if x1 is not None:
        empty = be.empty(x1.shape, x1.dtype)
        buffer = be.dropout_forward(x1, p.threshold, scale, seed, call, empty, bitmask)
        _arrays.copy_into(result, buffer)
        return result, bitmask
    x1 = _arrays.contiguous_input(be, x, tuple(x.shape))
    buffer, direct = _arrays.kernel_output(be, x, out, tuple(x.shape))
    buffer = be.dropout_forward(x1, p.threshold, scale, seed, call, buffer, bitmask)
    return _arrays.finish(x, out, buffer, direct), bitmask


def backward(
    p: DropoutPlan,
    grad_output: Array,
    seed: int | None,
    call: int,
    bitmask: Array | None,
    out: Array | None = None,
    into: Array | None = None,
) -> Array:
    """The input gradient from checked arrays: the forward's mask and scale on ``grad_output``.

    The mask is read from ``bitmask`` when given, else regenerated from
    ``(seed, call)``; without dropout the gradient is ``grad_output`` itself.
    ``into``, a new C-contiguous array of ``grad_output``'s shape and dtype that
    the caller made for it (not a user's ``out``: it is not checked), receives
    the gradient when ``grad_output`` goes to the kernel as it is.
    """
    be, dy = p.backend, grad_output
    if not p.active:
        return _arrays.identity(be, dy, out)
    scale = p.scale64 if dy.dtype == _inputs.FLOAT64 else p.scale32
    if bitmask is None:
        require_seed(seed)
    words_seed = 0 if seed is None else seed  # used only without a bitmask
    if out is None and _inputs.is_kernel_ready(dy):  # the common case, in few operations
        dx = be.empty(dy.shape, dy.dtype) if into is None else into
        if bitmask is None:
            return be.dropout_forward(dy, p.threshold, scale, words_seed, call, dx, None)
        return be.dropout_apply_bitmask(dy, bitmask, scale, dx)
    dy1, result = _layout(be, dy) if out is None else (None, None)
    if dy1 is not None:
        buffer, direct = be.empty(dy1.shape, dy1.dtype), False
    else:
        dy1 = _arrays.contiguous_input(be, dy, tuple(dy.shape))
        buffer, direct = _arrays.kernel_output(be, dy, out, tuple(dy.shape), reads=(bitmask,))
    if bitmask is None:
        buffer = be.dropout_forward(dy1, p.threshold, scale, words_seed, call, buffer, None)
    else:
        buffer = be.dropout_apply_bitmask(dy1, bitmask, scale, buffer)
    if result is not None:
        _arrays.copy_into(result, buffer)
        return result
    return _arrays.finish(dy, out, buffer, direct)


def check_bitmask(bitmask: Any, size: int) -> None:
    """Check a packed keep-mask for ``size`` elements: uint8 of shape ``(ceil(size / 8),)``."""
    expected = (size + 7) // 8
    if not hasattr(bitmask, "shape") or not hasattr(bitmask, "dtype"):
        raise InvalidParameterError(
            f"bitmask must be the uint8 array of shape ({expected},) that "
            f"dropout_with_bitmask returned, got {type(bitmask).__name__}",
            parameter_name="bitmask",
            value=type(bitmask).__name__,
        )
    if tuple(bitmask.shape) != (expected,) or np.dtype(bitmask.dtype) != np.uint8:
        raise ShapeError(
            f"bitmask must be a uint8 array of shape ({expected},), "
            f"got {bitmask.dtype} {tuple(bitmask.shape)}"
        )


def require_seed(seed: Any, why: str = "") -> None:
    """Raise when ``seed`` is ``None`` but the mask must be regenerated from it."""
    if seed is None:
        raise InvalidParameterError(
            f"seed must be given when no bitmask is{why}, got None",
            parameter_name="seed",
            value=None,
        )
