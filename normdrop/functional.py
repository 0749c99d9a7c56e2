"""Stateless functional API: validate once, pick the backend, fold parameters, call kernels.

The layers in :mod:`normdrop.layers` are thin wrappers over these functions.
Every function takes keyword-only ``out=`` (an array to write the result into,
which may be the input itself) and ``backend=`` (a name or backend object; see
:mod:`normdrop.registry` for how the default is chosen).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from normdrop import _validation
from normdrop.errors import BackendArrayError, DTypeError, InvalidParameterError, ShapeError
from normdrop.protocol import Array, Backend
from normdrop.random import draw_seed, dropout_threshold
from normdrop.registry import resolve_backend

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "dropout",
    "dropout_add_layer_norm",
    "dropout_add_layer_norm_backward",
    "dropout_backward",
    "dropout_mask",
    "layer_norm",
    "layer_norm_backward",
]

_FLOAT_DTYPES = frozenset({np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)})
_FLOAT64 = np.dtype(np.float64)
#: Dtypes the kernels compute in directly (float16 is computed in float32).
_KERNEL_DTYPES = frozenset({np.dtype(np.float32), _FLOAT64})


# ----------------------------------------------------------------------------- helpers
def _coerce(x: Any) -> Any:
    """Turn Python sequences and scalars into NumPy arrays; leave arrays alone."""
    return np.asarray(x) if isinstance(x, (list, tuple, int, float)) else x


def _check_float(name: str, x: Any) -> np.dtype:
    if type(x) is np.ndarray and x.dtype in _FLOAT_DTYPES:
        return x.dtype
    dtype = getattr(x, "dtype", None)
    dtype = np.asarray(x).dtype if dtype is None else np.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise DTypeError(
            f"{name} must have dtype float32 or float64 (float16 is computed in float32), "
            f"got {dtype}"
        )
    return dtype


def _prepare(name: str, x: Any, backend: str | Backend | None) -> tuple[Backend, Any]:
    if type(x) is not np.ndarray:
        x = _coerce(x)
    be = resolve_backend(x, backend)
    if not (type(x) is np.ndarray and x.dtype in _FLOAT_DTYPES):
        _check_float(name, x)
    return be, x


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _is_c_contiguous(a: Any) -> bool:
    flags = getattr(a, "flags", None)
    return bool(flags is not None and flags["C_CONTIGUOUS"])


def _contiguous_input(be: Backend, x: Any, shape: tuple[int, ...]) -> Any:
    """``x`` in its compute dtype, C-contiguous and reshaped to the kernel's canonical shape."""
    if type(x) is np.ndarray and x.flags.c_contiguous and x.dtype in _KERNEL_DTYPES:
        return x if x.shape == shape else x.reshape(shape)
    compute = _compute_dtype(x.dtype)
    if x.dtype != compute:
        x = x.astype(compute)
    return be.ascontiguous(x).reshape(shape)


def _check_out(be: Backend, out: Any, like: Any, name: str = "out") -> None:
    if not be.accepts(out):
        raise InvalidParameterError(
            f"{name} must be an array of the {be.name!r} backend, got {type(out).__name__}",
            parameter_name=name,
            value=type(out).__name__,
        )
    if tuple(out.shape) != tuple(like.shape):
        raise ShapeError(f"{name} must have shape {tuple(like.shape)}, got {tuple(out.shape)}")
    if np.dtype(out.dtype) != np.dtype(like.dtype):
        raise DTypeError(f"{name} must have dtype {like.dtype}, got {out.dtype}")


def _kernel_output(
    be: Backend, x: Any, out: Any | None, shape: tuple[int, ...]
) -> tuple[Any, bool]:
    """Return ``(buffer, direct)``: the canonical-shape buffer that kernels fill.

    When ``out`` is C-contiguous and of the compute dtype the buffer is a view of
    it; otherwise the kernel writes a temporary that :func:`_finish` copies over.
    """
    if out is None and x.dtype in _KERNEL_DTYPES:
        return be.empty(shape, x.dtype), False
    compute = _compute_dtype(x.dtype)
    if out is not None and _is_c_contiguous(out) and out.dtype == compute:
        return out.reshape(shape), True
    return be.empty(shape, compute), False


def _finish(x: Any, out: Any | None, buffer: Any, direct: bool) -> Any:
    """Hand back the result: ``out`` (filled from the buffer if needed) or the buffer."""
    if out is None:
        y = buffer if buffer.shape == x.shape else buffer.reshape(x.shape)
        return y if y.dtype == x.dtype else y.astype(x.dtype)
    if not direct:
        out[...] = buffer.reshape(x.shape)
    return out


def _vector(be: Backend, name: str, v: Any, shape: tuple[int, ...], float64: bool = True) -> Any:
    """A per-channel or per-feature argument as a flat array of the backend.

    It is converted to float64 unless ``float64`` is False (for fused kernels that
    read any float dtype).
    """
    if v is None:
        return None
    v = _coerce(v)
    host_ok = be.device == "cpu" and type(v) is np.ndarray  # CPU backends share host vectors
    if not (host_ok or be.accepts(v)):
        raise BackendArrayError(
            f"{name} must be an array of the {be.name!r} backend (device {be.device!r}), "
            f"got {type(v).__module__}.{type(v).__qualname__}; move it there first"
        )
    if v.shape != shape:
        raise ShapeError(f"{name} must have shape {shape}, got {tuple(v.shape)}")
    if v.dtype not in _FLOAT_DTYPES:
        _check_float(name, v)
    v = v.reshape(-1)
    return v if v.dtype == _FLOAT64 or not float64 else v.astype(np.float64)


def _check_grad(grad_output: Any, x: Any) -> None:
    if tuple(grad_output.shape) != tuple(x.shape):
        raise ShapeError(
            f"grad_output must have the input's shape {tuple(x.shape)}, "
            f"got {tuple(grad_output.shape)}"
        )


# ----------------------------------------------------------------------------- batch norm
def _batch_shape(x: Any) -> tuple[int, int, int]:
    if x.ndim not in (2, 3):
        raise ShapeError(
            f"BatchNorm1d expected 2D (N, C) or 3D (N, C, L) input, got shape {tuple(x.shape)}"
        )
    n, c = x.shape[0], x.shape[1]
    return n, c, (x.shape[2] if x.ndim == 3 else 1)


def batch_norm(
    x: Array,
    running_mean: Array | None = None,
    running_var: Array | None = None,
    weight: Array | None = None,
    bias: Array | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    out: Array | None = None,
    backend: str | Backend | None = None,
    return_stats: bool = False,
    _trusted: bool = False,
) -> Array | tuple[Array, Array, Array]:
    """Batch normalisation over the channels of ``(N, C)`` or ``(N, C, L)`` data.

    Batch statistics are used when ``training`` or when no running statistics
    are given; otherwise the running statistics are. When training with running
    statistics, they are updated in place:
    ``running = (1 - momentum) * running + momentum * batch`` (unbiased variance).

    Parameters
    ----------
    x : array of shape (N, C) or (N, C, L)
        Float data.
    running_mean, running_var : array of shape (C,), optional
        Running statistics; both or neither.
    weight, bias : array of shape (C,), optional
        Affine parameters (gamma, beta).
    training : bool, default False
        Use (and, with running statistics, update from) batch statistics.
    momentum : float, default 0.1
        Weight of the batch statistics in the update, in [0, 1].
    eps : float, default 1e-5
        Added to the variance for numerical stability, > 0.
    out : array, optional
        Where to write the result (shape and dtype of ``x``); may be ``x``.
    backend : str or Backend, optional
        The backend to compute with.
    return_stats : bool, default False
        Also return the float64 ``mean`` and ``rstd = 1/sqrt(var + eps)`` used,
        which :func:`batch_norm_backward` needs.

    Returns
    -------
    y : array
        Normalised data, shape and dtype of ``x``.
    mean, rstd : array of shape (C,)
        Only with ``return_stats``.

    Raises
    ------
    ShapeError
        Wrong rank or sizes, or fewer than 2 values per channel when batch
        statistics are needed.

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
    be, x = _prepare("x", x, backend)
    n, c, length = _batch_shape(x)
    fused = getattr(be, "batch_norm_forward", None)  # optional whole-layer kernel
    if _trusted:  # a layer's own, already validated arguments
        m = momentum
        w = None if weight is None else weight.reshape(-1)
        b = None if bias is None else bias.reshape(-1)
        if fused is None:
            w = None if w is None else w.astype(np.float64)
            b = None if b is None else b.astype(np.float64)
    else:
        _validation.boolean("training", training)
        m = _validation.momentum(momentum, allow_none=False)
        eps = _validation.positive_finite("eps", eps)
        w, b = _batch_norm_vectors(be, c, running_mean, running_var, weight, bias, fused)
    if out is not None:
        _check_out(be, out, x)
    use_batch = training or running_mean is None
    count = n * length
    if use_batch and count < 2:
        when = "when training" if training else "to compute batch statistics"
        raise ShapeError(
            f"Expected more than 1 value per channel {when}, got input shape {tuple(x.shape)}"
        )

    x3 = _contiguous_input(be, x, (n, c, length))
    buffer, direct = _kernel_output(be, x, out, (n, c, length))
    if fused is not None:
        update = training and running_mean is not None
        buffer, mean, rstd = fused(
            x3, running_mean, running_var, w, b, use_batch, update, m, eps, buffer
        )
        y = _finish(x, out, buffer, direct)
        return (y, mean, rstd) if return_stats else y
    if use_batch:
        mean, var = be.channel_moments(x3)
        if training and running_mean is not None:
            unbiased = var * (count / (count - 1))
            running_mean[...] = (1.0 - m) * running_mean + m * mean
            running_var[...] = (1.0 - m) * running_var + m * unbiased
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    rstd = (var + eps) ** -0.5
    scale = rstd * w if w is not None else rstd
    shift = mean * 0.0 if b is None else b
    buffer = be.channel_affine(x3, mean, scale, shift, buffer)
    y = _finish(x, out, buffer, direct)
    return (y, mean, rstd) if return_stats else y


def _batch_norm_vectors(
    be: Backend,
    c: int,
    running_mean: Any,
    running_var: Any,
    weight: Any,
    bias: Any,
    fused: Any,
) -> tuple[Any, Any]:
    """Validate batch_norm's per-channel arguments; return the flat weight and bias."""
    if (running_mean is None) != (running_var is None):
        raise InvalidParameterError(
            "running_mean and running_var must both be given or both be None, got "
            f"running_mean={'None' if running_mean is None else 'array'}, "
            f"running_var={'None' if running_var is None else 'array'}",
            parameter_name="running_var" if running_var is None else "running_mean",
            value=None,
        )
    for name, v in (("running_mean", running_mean), ("running_var", running_var)):
        if v is not None:
            if not hasattr(v, "shape"):
                raise InvalidParameterError(
                    f"{name} must be an array (it is updated in place), got {type(v).__name__}",
                    parameter_name=name,
                    value=v,
                )
            _vector(be, name, v, (c,))
    w = _vector(be, "weight", weight, (c,), float64=fused is None)
    b = _vector(be, "bias", bias, (c,), float64=fused is None)
    return w, b


def batch_norm_backward(
    grad_output: Array,
    x: Array,
    mean: Array,
    rstd: Array,
    weight: Array | None = None,
    *,
    training: bool = True,
    out: Array | None = None,
    backend: str | Backend | None = None,
) -> tuple[Array, Array | None, Array | None]:
    """Gradients of :func:`batch_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array
        Gradient of the loss with respect to the output, shape of ``x``.
    x : array of shape (N, C) or (N, C, L)
        The forward input.
    mean, rstd : array of shape (C,)
        The statistics the forward used (``return_stats=True``).
    weight : array of shape (C,), optional
        The forward's weight; the parameter gradients are computed only with it.
    training : bool, default True
        Whether the forward used batch statistics (their dependence on ``x`` then
        enters the input gradient).
    out : array, optional
        Where to write the input gradient; may be ``grad_output``.
    backend : str or Backend, optional

    Returns
    -------
    grad_input : array
        Shape and dtype of ``x``.
    grad_weight, grad_bias : array of shape (C,) or None
        In ``weight``'s dtype, or ``None`` without ``weight``.
    """
    be, x = _prepare("x", x, backend)
    grad_output = _coerce(grad_output)
    _check_float("grad_output", grad_output)
    if not be.accepts(grad_output):
        resolve_backend(grad_output, be)
    _check_grad(grad_output, x)
    n, c, length = _batch_shape(x)
    mean = _vector(be, "mean", mean, (c,))
    rstd = _vector(be, "rstd", rstd, (c,))
    w = _vector(be, "weight", weight, (c,))
    if out is not None:
        _check_out(be, out, x)
    x3 = _contiguous_input(be, x, (n, c, length))
    dy3 = _contiguous_input(be, grad_output, (n, c, length))
    need_sums = training or w is not None
    sum_dy = sum_dy_xmu = None
    if need_sums:
        sum_dy, sum_dy_xmu = be.channel_backward_reduce(dy3, x3, mean)
    a = rstd * w if w is not None else rstd
    buffer, direct = _kernel_output(be, x, out, (n, c, length))
    if training:
        count = n * length
        b = -a * rstd * rstd * sum_dy_xmu / count
        shift = -a * sum_dy / count
        buffer = be.channel_backward_elemt(dy3, x3, mean, a, b, shift, buffer)
    else:
        zeros = a * 0.0
        buffer = be.channel_affine(dy3, zeros, a, zeros, buffer)
    grad_input = _finish(x, out, buffer, direct)
    if w is None:
        return grad_input, None, None
    dtype = _coerce(weight).dtype
    return grad_input, (sum_dy_xmu * rstd).astype(dtype), sum_dy.astype(dtype)


# ----------------------------------------------------------------------------- layer norm
def _layer_shape(x: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    k = len(shape)
    if x.ndim < k or (x.shape[x.ndim - k :] != shape and tuple(x.shape[x.ndim - k :]) != shape):
        expected = ", ".join(str(d) for d in shape)
        raise ShapeError(
            f"LayerNorm expected input with shape (..., {expected}), got {tuple(x.shape)}"
        )
    features = shape[0] if k == 1 else math.prod(shape)
    return (x.size // features if features else 0), features


def layer_norm(
    x: Array,
    normalized_shape: int | tuple[int, ...],
    weight: Array | None = None,
    bias: Array | None = None,
    eps: float = 1e-5,
    *,
    out: Array | None = None,
    backend: str | Backend | None = None,
    return_stats: bool = False,
) -> Array | tuple[Array, Array, Array]:
    """Layer normalisation over the trailing ``normalized_shape`` dimensions of each sample.

    Parameters
    ----------
    x : array
        Its trailing dimensions equal ``normalized_shape``.
    normalized_shape : int or sequence of int
    weight, bias : array of shape normalized_shape, optional
    eps : float, default 1e-5
    out : array, optional
        Where to write the result; may be ``x``.
    backend : str or Backend, optional
    return_stats : bool, default False
        Also return the float64 per-sample ``mean`` and ``rstd`` (shape
        ``x.shape[:-len(normalized_shape)]``), which :func:`layer_norm_backward` needs.

    Returns
    -------
    y : array
        Shape and dtype of ``x``.
    mean, rstd : array
        Only with ``return_stats``.

    Examples
    --------
    >>> import numpy as np
    >>> from normdrop.functional import layer_norm
    >>> layer_norm(np.array([[1.0, 2.0, 4.0]]), 3).round(4)
    array([[-1.069 , -0.2673,  1.3363]])
    """
    be, x = _prepare("x", x, backend)
    shape = _validation.normalized_shape(normalized_shape)
    eps = _validation.positive_finite("eps", eps)
    _layer_shape(x, shape)
    w = _vector(be, "weight", weight, shape)
    b = _vector(be, "bias", bias, shape)
    if out is not None:
        _check_out(be, out, x)
    y, mean, rstd = _layer_norm_rows(be, x, shape, w, b, eps, out)
    if not return_stats:
        return y
    lead = tuple(x.shape[: x.ndim - len(shape)])
    return y, mean.reshape(lead), rstd.reshape(lead)


def _layer_norm_rows(
    be: Backend,
    x: Array,
    normalized_shape: tuple[int, ...],
    weight: Array | None,
    bias: Array | None,
    eps: float,
    out: Array | None = None,
) -> tuple[Array, Array, Array]:
    """LayerNorm of already validated arguments; statistics come back flat.

    The work of :func:`layer_norm` after its checks, which layers call directly
    (their parameters are valid by construction, and a whole call of a small
    layer costs little more than its kernel).

    Parameters
    ----------
    be : Backend
        The resolved backend, which accepts ``x``.
    x : array
        Float input whose trailing dims are ``normalized_shape``.
    normalized_shape : tuple of int
    weight, bias : 1-D array of any float dtype, or None
        Of length ``prod(normalized_shape)``.
    eps : float
    out : array, optional
        Already checked against ``x``.

    Returns
    -------
    y : array
    mean, rstd : array
        float64, one value per normalised row (shape ``(rows,)``).
    """
    rows, features = _layer_shape(x, normalized_shape)
    if out is None and type(x) is np.ndarray and x.dtype in _KERNEL_DTYPES and x.flags.c_contiguous:
        # the common case, in as few Python operations as possible
        flat = x.ndim == 2 and len(normalized_shape) == 1
        x2 = x if flat else x.reshape(rows, features)
        y, mean, rstd = be.layer_norm_forward(x2, weight, bias, eps, be.empty(x2.shape, x.dtype))
        return (y if flat else y.reshape(x.shape)), mean, rstd
    x2 = _contiguous_input(be, x, (rows, features))
    buffer, direct = _kernel_output(be, x, out, (rows, features))
    buffer, mean, rstd = be.layer_norm_forward(x2, weight, bias, eps, buffer)
    return _finish(x, out, buffer, direct), mean, rstd


def layer_norm_backward(
    grad_output: Array,
    x: Array,
    normalized_shape: int | tuple[int, ...],
    mean: Array,
    rstd: Array,
    weight: Array | None = None,
    *,
    out: Array | None = None,
    backend: str | Backend | None = None,
) -> tuple[Array, Array | None, Array | None]:
    """Gradients of :func:`layer_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : array
        Shape of ``x``.
    x : array
        The forward input.
    normalized_shape : int or sequence of int
    mean, rstd : array
        The per-sample statistics from ``layer_norm(..., return_stats=True)``.
    weight : array of shape normalized_shape, optional
        The forward's weight; the parameter gradients are computed only with it.
    out : array, optional
        Where to write the input gradient; may be ``grad_output``.
    backend : str or Backend, optional

    Returns
    -------
    grad_input : array
    grad_weight, grad_bias : array of shape normalized_shape or None
        In ``weight``'s dtype, or ``None`` without ``weight``.
    """
    be, x = _prepare("x", x, backend)
    grad_output = _coerce(grad_output)
    _check_float("grad_output", grad_output)
    if not be.accepts(grad_output):
        resolve_backend(grad_output, be)
    _check_grad(grad_output, x)
    shape = _validation.normalized_shape(normalized_shape)
    rows, features = _layer_shape(x, shape)
    lead = tuple(x.shape[: x.ndim - len(shape)])
    mean = _vector(be, "mean", mean, lead)
    rstd = _vector(be, "rstd", rstd, lead)
    w = _vector(be, "weight", weight, shape)
    if out is not None:
        _check_out(be, out, x)
    x2 = _contiguous_input(be, x, (rows, features))
    dy2 = _contiguous_input(be, grad_output, (rows, features))
    buffer, direct = _kernel_output(be, x, out, (rows, features))
    buffer, dweight, dbias = be.layer_norm_backward(dy2, x2, mean, rstd, w, buffer, w is not None)
    grad_input = _finish(x, out, buffer, direct)
    if w is None:
        return grad_input, None, None
    return (
        grad_input,
        dweight.reshape(shape).astype(_coerce(weight).dtype),
        dbias.reshape(shape).astype(_coerce(weight).dtype),
    )


# ----------------------------------------------------------------------------- dropout
def _dropout_scale(p: float, dtype: np.dtype) -> Any:
    """``1 / (1 - p)`` computed in the compute dtype, as PyTorch does."""
    real = _compute_dtype(dtype).type
    return real(1.0) / real(1.0 - p)


def _identity(x: Any, out: Any | None, be: Backend) -> Any:
    if out is None or out is x:
        return x
    _check_out(be, out, x)
    out[...] = x
    return out


def dropout(
    x: Array,
    p: float = 0.5,
    training: bool = True,
    *,
    seed: int | None = None,
    call: int = 0,
    out: Array | None = None,
    backend: str | Backend | None = None,
    return_bitmask: bool = False,
) -> Array | tuple[Array, Array | None]:
    """Inverted dropout with a reproducible Philox4x32-10 mask.

    Element ``i`` (C order) is kept when its Philox word for ``(seed, call)`` is
    ``>= floor(p * 2**32)``; kept elements are multiplied by ``1 / (1 - p)``.
    Outside training, or with ``p == 0``, ``x`` itself is returned.

    Parameters
    ----------
    x : array
    p : float, default 0.5
        Drop probability in [0, 1).
    training : bool, default True
    seed : int, optional
        64-bit seed; when ``None`` a fresh one is drawn from the global generator
        (:func:`normdrop.manual_seed`), only if a mask is needed.
    call : int, default 0
        Call counter: a different mask per call with one seed.
    out : array, optional
        Where to write the result; may be ``x``.
    backend : str or Backend, optional
    return_bitmask : bool, default False
        Also return the packed keep-mask (uint8, bit ``i % 8`` of byte ``i // 8``)
        for :func:`dropout_backward`; ``None`` when nothing was dropped (evaluation,
        ``p == 0``) or when the backend keeps no bitmask (then the backward
        regenerates the mask from ``seed`` and ``call``).

    Returns
    -------
    y : array
    bitmask : array or None
        Only with ``return_bitmask``.

    Examples
    --------
    >>> import numpy as np
    >>> from normdrop.functional import dropout
    >>> dropout(np.ones(8), p=0.5, seed=0)
    array([0., 2., 2., 2., 2., 0., 2., 0.])
    """
    be, x = _prepare("x", x, backend)
    p = _validation.dropout_probability(p)
    _validation.boolean("training", training)
    seed = None if seed is None else _validation.seed(seed)
    call = _validation.call_index(call)
    if not training or p == 0.0:
        y = _identity(x, out, be)
        return (y, None) if return_bitmask else y
    if out is not None:
        _check_out(be, out, x)
    size = x.size
    x1 = _contiguous_input(be, x, tuple(x.shape))
    buffer, direct = _kernel_output(be, x, out, tuple(x.shape))
    seed = draw_seed() if seed is None else seed  # drawn only when a mask is needed
    keep_bitmask = return_bitmask and getattr(be, "supports_bitmask", True)
    bitmask = be.empty(((size + 7) // 8,), np.uint8) if keep_bitmask else None
    buffer = be.dropout_forward(
        x1, dropout_threshold(p), _dropout_scale(p, x.dtype), seed, call, buffer, bitmask
    )
    y = _finish(x, out, buffer, direct)
    return (y, bitmask) if return_bitmask else y


def dropout_backward(
    grad_output: Array,
    p: float,
    *,
    seed: int | None = None,
    call: int = 0,
    bitmask: Array | None = None,
    out: Array | None = None,
    backend: str | Backend | None = None,
) -> Array:
    """Gradient of :func:`dropout` with respect to its input.

    The mask comes from ``bitmask`` when given (fastest), otherwise it is
    regenerated from ``(seed, call)``. With ``p == 0`` the gradient is
    ``grad_output`` itself.

    Parameters
    ----------
    grad_output : array
    p : float
        The forward's drop probability.
    seed : int, optional
        The forward's seed; required without ``bitmask``.
    call : int, default 0
        The forward's call counter.
    bitmask : array, optional
        The packed keep-mask from ``dropout(..., return_bitmask=True)``.
    out : array, optional
        Where to write the gradient; may be ``grad_output``.
    backend : str or Backend, optional

    Returns
    -------
    array
    """
    be, dy = _prepare("grad_output", grad_output, backend)
    p = _validation.dropout_probability(p)
    call = _validation.call_index(call)
    if p == 0.0:
        return _identity(dy, out, be)
    size = dy.size
    if bitmask is None:
        if seed is None:
            raise InvalidParameterError(
                "seed must be given when no bitmask is, got None",
                parameter_name="seed",
                value=None,
            )
        seed = _validation.seed(seed)
    elif tuple(bitmask.shape) != ((size + 7) // 8,) or np.dtype(bitmask.dtype) != np.uint8:
        raise ShapeError(
            f"bitmask must be a uint8 array of shape ({(size + 7) // 8},), "
            f"got {bitmask.dtype} {tuple(bitmask.shape)}"
        )
    if out is not None:
        _check_out(be, out, dy)
    dy1 = _contiguous_input(be, dy, tuple(dy.shape))
    buffer, direct = _kernel_output(be, dy, out, tuple(dy.shape))
    scale = _dropout_scale(p, dy.dtype)
    if bitmask is None:
        buffer = be.dropout_forward(dy1, dropout_threshold(p), scale, seed, call, buffer, None)
    else:
        buffer = be.dropout_apply_bitmask(dy1, bitmask, scale, buffer)
    return _finish(dy, out, buffer, direct)


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
    call : int, default 0
    backend : str or Backend, optional

    Returns
    -------
    array of bool
        ``True`` where the element is kept.
    """
    dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims
    ):
        raise InvalidParameterError(
            f"shape must be a tuple of non-negative ints, got {shape!r}",
            parameter_name="shape",
            value=shape,
        )
    p = _validation.dropout_probability(p)
    seed = _validation.seed(seed)
    call = _validation.call_index(call)
    be = resolve_backend(None, backend)
    size = math.prod(dims)
    return be.dropout_mask(size, dropout_threshold(p), seed, call).reshape(dims)


# The fused dropout + add + LayerNorm lives in its own module, built on the helpers above.
from normdrop._fused import (  # noqa: E402
    dropout_add_layer_norm,
    dropout_add_layer_norm_backward,
)
