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
def _coerce(x: Any, name: str = "x") -> Any:
    """Turn Python sequences and (Python or NumPy) scalars into NumPy arrays; leave arrays alone."""
    if not isinstance(x, (list, tuple, int, float, np.generic)):
        return x
    try:
        return np.asarray(x)
    except ValueError:  # a ragged nested sequence
        raise ShapeError(
            f"{name} must be a rectangular nested sequence of numbers (every row the same "
            f"length), got a ragged {type(x).__name__}"
        ) from None


def _foreign_hint(x: Any) -> str:
    """What to do with an array of another library, for error messages."""
    if type(x).__module__.split(".", 1)[0] == "torch":
        return "; convert it with .detach().cpu().numpy() (a NumPy view of a CPU tensor)"
    return "; move it there first"


def _host_array(name: str, x: Any) -> Any:
    """Coerce ``x`` and check its kind: masked arrays and foreign tensors are refused.

    NumPy arrays in non-native byte order (big-endian files) are converted to native
    order of the same kind, so the result always has a native dtype.
    """
    x = _coerce(x, name)
    if isinstance(x, np.ndarray):
        if isinstance(x, np.ma.MaskedArray):
            raise InvalidParameterError(
                f"{name} must not be a numpy.ma.MaskedArray: normdrop computes on every "
                "element and would silently include the masked ones; pass "
                f"{name}.filled(value) or {name}.compressed() to decide what they mean",
                parameter_name=name,
                value=type(x).__name__,
            )
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
    elif type(x).__module__.split(".", 1)[0] == "torch":
        raise BackendArrayError(
            f"{name} must be an array of a normdrop backend (NumPy, CuPy, Dask), got "
            f"{type(x).__module__}.{type(x).__qualname__}{_foreign_hint(x)}"
        )
    return x


def _check_float(name: str, x: Any) -> np.dtype:
    if type(x) is np.ndarray and x.dtype in _FLOAT_DTYPES:
        return x.dtype
    dtype = getattr(x, "dtype", None)
    try:
        dtype = np.asarray(x).dtype if dtype is None else np.dtype(dtype)
    except TypeError:  # a dtype NumPy does not know (another library's)
        raise DTypeError(f"{name} must have dtype float32 or float64, got {dtype}") from None
    if dtype not in _FLOAT_DTYPES:
        raise DTypeError(
            f"{name} must have dtype float32 or float64 (float16 is computed in float32), "
            f"got {dtype}"
        )
    return dtype


def _prepare(name: str, x: Any, backend: str | Backend | None) -> tuple[Backend, Any]:
    if not (type(x) is np.ndarray and x.dtype in _FLOAT_DTYPES):
        x = _host_array(name, x)
    be = resolve_backend(x, backend)
    if not (type(x) is np.ndarray and x.dtype in _FLOAT_DTYPES):
        _check_float(name, x)
    return be, x


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _is_c_contiguous(a: Any) -> bool:
    flags = getattr(a, "flags", None)
    return bool(flags is not None and flags["C_CONTIGUOUS"])


def _writeable(a: Any) -> bool:
    """False for read-only NumPy arrays (e.g. ``np.load(..., mmap_mode="r")``)."""
    return not isinstance(a, np.ndarray) or bool(a.flags.writeable)


def _read_only_error(name: str, a: Any, why: str) -> InvalidParameterError:
    return InvalidParameterError(
        f"{name} must be a writeable array ({why}), got a read-only {type(a).__name__} "
        "(e.g. from np.load(..., mmap_mode='r')); pass a writeable copy such as "
        f"np.array({name})",
        parameter_name=name,
        value=a,
    )


def _memory_order(x: Any) -> tuple[int, ...] | None:
    """The axes of ``x`` from outermost to innermost in memory, when that is not C order.

    ``None`` when ``x`` is C-contiguous, or is not a NumPy array that is dense in
    some order of its axes (then a C-ordered copy is made instead). For the rest
    (Fortran order, channels-last, any transposed contiguous array),
    ``x.transpose(order)`` is a C-contiguous view of the same memory.
    """
    if not isinstance(x, np.ndarray) or x.flags.c_contiguous or x.ndim < 2:
        return None
    order = tuple(sorted(range(x.ndim), key=lambda a: (-x.strides[a], a)))
    return order if x.transpose(order).flags.c_contiguous else None


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(a) for a in np.argsort(order))


def _contiguous_input(
    be: Backend, x: Any, shape: tuple[int, ...], order: tuple[int, ...] | None = None
) -> Any:
    """``x`` in its compute dtype, C-contiguous and reshaped to the kernel's canonical shape.

    With ``order`` (see :func:`_memory_order`), ``x.transpose(order)`` is used,
    which costs no copy when ``x`` is laid out in that order.
    """
    if order is not None:
        x = x.transpose(order)
    if type(x) is np.ndarray and x.flags.c_contiguous and x.dtype in _KERNEL_DTYPES:
        return x if x.shape == shape else x.reshape(shape)
    compute = _compute_dtype(x.dtype)
    if x.dtype != compute:
        x = x.astype(compute)
    return be.ascontiguous(x).reshape(shape)


def _check_out(be: Backend, out: Any, like: Any, name: str = "out") -> None:
    if not be.accepts(out) or isinstance(out, np.ma.MaskedArray):
        raise InvalidParameterError(
            f"{name} must be an array of the {be.name!r} backend, got {type(out).__name__}",
            parameter_name=name,
            value=type(out).__name__,
        )
    if tuple(out.shape) != tuple(like.shape):
        raise ShapeError(f"{name} must have shape {tuple(like.shape)}, got {tuple(out.shape)}")
    if np.dtype(out.dtype).newbyteorder("=") != np.dtype(like.dtype):
        raise DTypeError(f"{name} must have dtype {like.dtype}, got {out.dtype}")
    if not _writeable(out):
        raise _read_only_error(name, out, "the result is written into it")


def _interface(a: Any) -> dict | None:
    """The array interface of a NumPy array or a CUDA array; ``None`` for other kinds."""
    if isinstance(a, np.ndarray):
        return a.__array_interface__
    return getattr(a, "__cuda_array_interface__", None)


def _byte_range(iface: dict) -> tuple[int, int]:
    """``[first, last)`` bytes an array interface spans (empty arrays span nothing)."""
    start = int(iface["data"][0])
    shape = tuple(iface["shape"])
    itemsize = np.dtype(iface["typestr"]).itemsize
    if math.prod(shape) == 0:
        return start, start
    strides = iface.get("strides")
    if strides is None:  # C-contiguous
        strides = tuple(itemsize * math.prod(shape[i + 1 :]) for i in range(len(shape)))
    low = start + sum(s * (n - 1) for s, n in zip(strides, shape, strict=True) if s < 0)
    high = start + sum(s * (n - 1) for s, n in zip(strides, shape, strict=True) if s > 0) + itemsize
    return low, high


def _same_elements(a: dict, b: dict) -> bool:
    """Whether two array interfaces describe exactly the same elements."""
    return (
        a["data"][0] == b["data"][0]
        and tuple(a["shape"]) == tuple(b["shape"])
        and a.get("strides") == b.get("strides")
        and np.dtype(a["typestr"]).itemsize == np.dtype(b["typestr"]).itemsize
    )


def _overlaps(out: Any, data: Any, *others: Any) -> bool:
    """Whether ``out`` may share memory with what a kernel reads, other than in place.

    ``out`` exactly aliasing ``data`` (same elements: in-place operation) is fine;
    any other sharing with ``data`` or with ``others`` (weights, statistics,
    bitmasks) counts, because a kernel could overwrite values it has not read yet.
    Arrays without a memory interface (Dask) never overlap.
    """
    target = _interface(out)
    if target is None:
        return False
    span = _byte_range(target)
    for a in (data, *others):
        if a is None or a is out and a is data:
            continue
        iface = _interface(a)
        if iface is None:
            continue
        if a is data and _same_elements(target, iface):
            continue
        low, high = _byte_range(iface)
        if low < span[1] and span[0] < high and span[0] < span[1] and low < high:
            return True
    return False


def _kernel_output(
    be: Backend,
    x: Any,
    out: Any | None,
    shape: tuple[int, ...],
    order: tuple[int, ...] | None = None,
    reads: tuple[Any, ...] = (),
    inplace: Any = None,
) -> tuple[Any, bool]:
    """Return ``(buffer, direct)``: the canonical-shape buffer that kernels fill.

    When ``out`` is laid out like the kernel's buffer (C order, or ``order``), has
    the compute dtype and shares no memory with the kernel's inputs ``reads`` and
    ``inplace`` (default ``x``) except by aliasing ``inplace`` exactly (an in-place
    operation), the buffer is a view of it; otherwise the
    kernel writes a temporary that :func:`_finish` copies over. A partly
    overlapping ``out`` therefore gets the same numbers as a separate one.
    """
    if out is None and x.dtype in _KERNEL_DTYPES:
        if type(x) is np.ndarray:
            return be.empty(shape, x.dtype), False
        return _empty_for(be, x, shape, x.dtype), False
    compute = _compute_dtype(x.dtype)
    if out is not None and out.dtype == compute:
        target = out if order is None else out.transpose(order)
        if _is_c_contiguous(target) and not _overlaps(
            out, x if inplace is None else inplace, *reads
        ):
            return target.reshape(shape), True
    return _empty_for(be, x, shape, compute), False


def _empty_for(be: Backend, x: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """An output buffer of the input's own kind where the backend offers ``alloc_like``
    (the cuda backend: numba device arrays in, numba device arrays out)."""
    if type(x) is not np.ndarray:
        alloc_like = getattr(be, "alloc_like", None)
        if alloc_like is not None:
            return alloc_like(x, shape, dtype)
    return be.empty(shape, dtype)


def _finish(
    x: Any, out: Any | None, buffer: Any, direct: bool, order: tuple[int, ...] | None = None
) -> Any:
    """Hand back the result: ``out`` (filled from the buffer if needed) or the buffer.

    With ``order`` the buffer holds the data in that axis order, and the result
    is its transpose back: an array laid out in memory like ``x``.
    """
    if order is None:
        y = buffer if buffer.shape == x.shape else buffer.reshape(x.shape)
    else:
        y = buffer.reshape(tuple(x.shape[a] for a in order)).transpose(_inverse(order))
    if out is None:
        return y if y.dtype == x.dtype else y.astype(x.dtype, order="K")
    if not direct:
        out[...] = y
    return out


def _vector(be: Backend, name: str, v: Any, shape: tuple[int, ...], float64: bool = True) -> Any:
    """A per-channel or per-feature argument as a flat array of the backend.

    It is converted to float64 unless ``float64`` is False (for fused kernels that
    read any float dtype); non-native byte order is converted to native, and a
    read-only NumPy vector is copied (never written here).
    """
    if v is None:
        return None
    v = _host_array(name, v)
    host_ok = be.device == "cpu" and type(v) is np.ndarray  # CPU backends share host vectors
    if not (host_ok or be.accepts(v)):
        raise BackendArrayError(
            f"{name} must be an array of the {be.name!r} backend (device {be.device!r}), "
            f"got {type(v).__module__}.{type(v).__qualname__}{_foreign_hint(v)}"
        )
    if v.shape != shape:
        raise ShapeError(f"{name} must have shape {shape}, got {tuple(v.shape)}")
    if v.dtype not in _FLOAT_DTYPES:
        _check_float(name, v)
    if isinstance(v, np.ndarray) and not v.flags.writeable:
        v = np.array(v)  # kernels take writeable arrays; a vector costs little to copy
    v = v.reshape(-1)
    return v if v.dtype == _FLOAT64 or not float64 else v.astype(np.float64)


def _prepare_grad(be: Backend, grad_output: Any, x: Any) -> Any:
    """Check ``grad_output`` against the forward input ``x``; return it as an array."""
    if not (type(grad_output) is np.ndarray and grad_output.dtype in _FLOAT_DTYPES):
        grad_output = _host_array("grad_output", grad_output)
        _check_float("grad_output", grad_output)
    if not be.accepts(grad_output):
        resolve_backend(grad_output, be)
    if tuple(grad_output.shape) != tuple(x.shape):
        raise ShapeError(
            f"grad_output must have the input's shape {tuple(x.shape)}, "
            f"got {tuple(grad_output.shape)}"
        )
    return grad_output


# ----------------------------------------------------------------------------- batch norm
def _batch_shape(x: Any, layer: bool = False) -> tuple[int, int, int]:
    """``(N, C, L)`` of BatchNorm input: ``L`` is the product of the dims after ``C``.

    The functional form takes any rank >= 2, as ``torch.nn.functional.batch_norm``
    does; the layer (``layer=True``) keeps BatchNorm1d's 2-D/3-D rule.
    """
    if layer and x.ndim not in (2, 3):
        raise ShapeError(
            f"BatchNorm1d expected 2D (N, C) or 3D (N, C, L) input, got shape {tuple(x.shape)}"
        )
    if x.ndim < 2:
        raise ShapeError(
            f"batch_norm expected input of rank >= 2, (N, C, ...), got shape {tuple(x.shape)}"
        )
    n, c = x.shape[0], x.shape[1]
    return n, c, math.prod(x.shape[2:])


def _batch_layout(x: Any) -> tuple[tuple[int, int, int] | None, tuple[int, ...] | None]:
    """The kernel's ``(A, C, B)`` view of BatchNorm data laid out in another memory order.

    Channel statistics do not depend on the order of the other axes, so data in
    Fortran order, channels-last or any other dense layout is read where it lies:
    ``x.transpose(order)`` is C-contiguous, and the axes before and after the
    channel axis in it merge into ``A`` and ``B``. ``(None, None)`` when ``x`` is
    C-contiguous or not dense (then a C-ordered copy is used).
    """
    order = _memory_order(x)
    if order is None:
        return None, None
    k = order.index(1)
    dims = tuple(x.shape[a] for a in order)
    return (math.prod(dims[:k]), dims[k], math.prod(dims[k + 1 :])), order


def _empty_batch_norm(
    be: Backend, x: Any, out: Any | None, c: int, eps: float
) -> tuple[Any, Any, Any]:
    """An empty batch, as in PyTorch: an empty output and nothing to update.

    The statistics reported are those of mean 0 and variance 0.
    """
    y = out if out is not None else be.empty(tuple(x.shape), x.dtype)
    return y, be.asarray(np.zeros(c)), be.asarray(np.full(c, 1.0 / math.sqrt(eps)))


def _kernel_vector(v: Any) -> Any:
    """A host vector a fused compiled kernel can take: writeable, float32 or float64.

    Read-only vectors (e.g. memory-mapped running statistics used in evaluation)
    are copied, and float16 ones converted to float32, which costs ``C`` values and
    avoids separate kernel specialisations; anything else is passed through.
    """
    if isinstance(v, np.ndarray) and (not v.flags.writeable or v.dtype == np.float16):
        return v.astype(_compute_dtype(v.dtype))
    return v


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
    out : array, optional
        Where to write the result (shape and dtype of ``x``, writeable); may be
        ``x`` itself. An ``out`` that partly overlaps ``x`` (another view of the
        same memory) is safe: the result is computed into a temporary first.
    backend : str or Backend, optional
        The backend to compute with.
    return_stats : bool, default False
        Also return the float64 ``mean`` and ``rstd = 1/sqrt(var + eps)`` used,
        which :func:`batch_norm_backward` needs.

    Returns
    -------
    y : array
        Normalised data, shape and dtype of ``x``. NumPy data laid out in another
        dense memory order (Fortran order, channels-last) is computed where it
        lies, and ``y`` has the same layout.
    mean, rstd : array of shape (C,)
        Only with ``return_stats``.

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
    be, x = _prepare("x", x, backend)
    n, c, length = _batch_shape(x, layer=_trusted)
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
        m = _validation.momentum(momentum, allow_none=False) if training else 0.0
        eps = _validation.positive_finite("eps", eps)
        w, b = _batch_norm_vectors(be, c, running_mean, running_var, weight, bias, fused)
        if training and running_mean is not None:
            for name, v in (("running_mean", running_mean), ("running_var", running_var)):
                if not _writeable(v):
                    raise _read_only_error(name, v, "training updates it in place")
        if fused is not None:
            w, b = _kernel_vector(w), _kernel_vector(b)
            if running_mean is not None:
                rm, rv = _kernel_vector(running_mean), _kernel_vector(running_var)
                if rm is not running_mean or rv is not running_var:
                    return _batch_norm_via_copies(
                        x,
                        running_mean,
                        running_var,
                        rm,
                        rv,
                        w,
                        b,
                        training,
                        m,
                        eps,
                        out,
                        be,
                        return_stats,
                    )
    if out is not None:
        _check_out(be, out, x)
    use_batch = training or running_mean is None
    count = n * length
    if count == 0:
        y, mean, rstd = _empty_batch_norm(be, x, out, c, eps)
        return (y, mean, rstd) if return_stats else y
    if use_batch and count < 2:
        when = "when training" if training else "to compute batch statistics"
        raise ShapeError(
            f"Expected more than 1 value per channel {when}, got input shape {tuple(x.shape)}"
        )

    shape, order = _batch_layout(x)
    shape = shape or (n, c, length)
    x3 = _contiguous_input(be, x, shape, order)
    reads = (w, b) if out is None else (w, b, running_mean, running_var)
    buffer, direct = _kernel_output(be, x, out, shape, order, reads)
    if fused is not None:
        update = training and running_mean is not None
        buffer, mean, rstd = fused(
            x3, running_mean, running_var, w, b, use_batch, update, m, eps, buffer
        )
        y = _finish(x, out, buffer, direct, order)
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
    shift = np.zeros_like(mean) if b is None else b
    buffer = be.channel_affine(x3, mean, scale, shift, buffer)
    y = _finish(x, out, buffer, direct, order)
    return (y, mean, rstd) if return_stats else y


def _batch_norm_via_copies(
    x: Any,
    running_mean: Any,
    running_var: Any,
    rm: Any,
    rv: Any,
    w: Any,
    b: Any,
    training: bool,
    m: float,
    eps: float,
    out: Any,
    be: Backend,
    return_stats: bool,
) -> Any:
    """:func:`batch_norm` on kernel-ready copies ``rm``, ``rv`` of the running statistics.

    The copies are written back (when training) only after the kernel succeeded.
    """
    result = batch_norm(x, rm, rv, w, b, training, m, eps, out=out, backend=be, return_stats=True)
    if training:
        running_mean[...] = rm
        running_var[...] = rv
    return result if return_stats else result[0]


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
            if isinstance(v, np.ndarray) and not v.dtype.isnative:
                raise InvalidParameterError(
                    f"{name} must be in native byte order (it is updated in place), got "
                    f"{v.dtype.str}; pass {name}.astype({v.dtype.newbyteorder('=').name!r})",
                    parameter_name=name,
                    value=v.dtype.str,
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
    x : array of shape (N, C, ...)
        The forward input.
    mean, rstd : array of shape (C,)
        The statistics the forward used (``return_stats=True``).
    weight : array of shape (C,), optional
        The forward's weight; the parameter gradients are computed only with it.
    training : bool, default True
        Whether the forward used batch statistics (their dependence on ``x`` then
        enters the input gradient).
    out : array, optional
        Where to write the input gradient (writeable); may be ``grad_output``.
        An ``out`` that shares memory with an input in any other way is safe: the
        gradient is computed into a temporary first.
    backend : str or Backend, optional

    Returns
    -------
    grad_input : array
        Shape and dtype of ``x``.
    grad_weight, grad_bias : array of shape (C,) or None
        In ``weight``'s dtype, or ``None`` without ``weight``; zeros for an empty batch.
    """
    be, x = _prepare("x", x, backend)
    grad_output = _prepare_grad(be, grad_output, x)
    n, c, length = _batch_shape(x)
    mean = _vector(be, "mean", mean, (c,))
    rstd = _vector(be, "rstd", rstd, (c,))
    w = _vector(be, "weight", weight, (c,))
    if out is not None:
        _check_out(be, out, x)
    if x.size == 0:
        grad_input = out if out is not None else be.empty(tuple(x.shape), x.dtype)
        if w is None:
            return grad_input, None, None
        zeros = be.asarray(np.zeros(c, _host_array("weight", weight).dtype))
        return grad_input, zeros, zeros.copy()
    shape, order = _batch_layout(x)
    shape = shape or (n, c, length)
    x3 = _contiguous_input(be, x, shape, order)
    dy3 = _contiguous_input(be, grad_output, shape, order)
    need_sums = training or w is not None
    sum_dy = sum_dy_xmu = None
    if need_sums:
        sum_dy, sum_dy_xmu = be.channel_backward_reduce(dy3, x3, mean)
    a = rstd * w if w is not None else rstd
    buffer, direct = _kernel_output(be, x, out, shape, order, (x, mean, rstd, w), grad_output)
    if training:
        count = n * length
        b = -a * rstd * rstd * sum_dy_xmu / count
        shift = -a * sum_dy / count
        buffer = be.channel_backward_elemt(dy3, x3, mean, a, b, shift, buffer)
    else:
        zeros = np.zeros_like(a)
        buffer = be.channel_affine(dy3, zeros, a, zeros, buffer)
    grad_input = _finish(x, out, buffer, direct, order)
    if w is None:
        return grad_input, None, None
    dtype = _host_array("weight", weight).dtype
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
        Where to write the result (writeable); may be ``x`` itself. An ``out``
        that partly overlaps ``x`` (another view of the same memory) is safe: the
        result is computed into a temporary first.
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
    buffer, direct = _kernel_output(be, x, out, (rows, features), reads=(weight, bias))
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
        Where to write the input gradient (writeable); may be ``grad_output``.
        An ``out`` that shares memory with an input in any other way is safe: the
        gradient is computed into a temporary first.
    backend : str or Backend, optional

    Returns
    -------
    grad_input : array
    grad_weight, grad_bias : array of shape normalized_shape or None
        In ``weight``'s dtype, or ``None`` without ``weight``.
    """
    be, x = _prepare("x", x, backend)
    grad_output = _prepare_grad(be, grad_output, x)
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
    reads = (x, mean, rstd, w)
    buffer, direct = _kernel_output(be, x, out, (rows, features), None, reads, grad_output)
    buffer, dweight, dbias = be.layer_norm_backward(dy2, x2, mean, rstd, w, buffer, w is not None)
    grad_input = _finish(x, out, buffer, direct)
    if w is None:
        return grad_input, None, None
    return (
        grad_input,
        dweight.reshape(shape).astype(_host_array("weight", weight).dtype),
        dbias.reshape(shape).astype(_host_array("weight", weight).dtype),
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
    out[...] = x.copy() if _overlaps(out, x) else x
    return out


def _copy_into(out: Any, x: Any) -> None:
    """``out[...] = x`` with the reference backend's tiled copy for transposed layouts."""
    from normdrop.backends.numpy_backend import copy_into  # only for non-C layouts

    copy_into(out, x)


def _dropout_layout(be: Backend, x: Any) -> tuple[Any, Any]:
    """``(x1, result)`` for data in another dense memory order (Fortran, permuted).

    The mask follows the C-order element index, so the kernel runs on a C-ordered
    copy ``x1``; ``result`` is an uninitialised array laid out like
    ``x`` (as ``numpy.empty_like`` and PyTorch keep it) that the caller fills from
    ``x1``. ``(None, None)`` for C-ordered data, other array kinds and non-dense
    views (whose result is C-ordered).
    """
    if _memory_order(x) is None:
        return None, None
    x1 = be.ascontiguous(x)  # a copy: x is not C-contiguous
    return x1.astype(_compute_dtype(x.dtype), copy=False), np.empty_like(x)


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
    seed : int, optional
        64-bit seed; when ``None`` a fresh one is drawn from the global generator
        (:func:`normdrop.manual_seed`), only if a mask is needed.
    call : int, default 0
        Call counter: a different mask per call with one seed.
    out : array, optional
        Where to write the result (writeable); may be ``x`` itself. An ``out`` that
        partly overlaps ``x`` is safe: the result is computed into a temporary first.
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
    _validation.boolean("training", training)
    p = _validation.dropout_probability(p, allow_one=not training)
    seed = None if seed is None else _validation.seed(seed)
    call = _validation.call_index(call)
    if not training or p == 0.0:
        y = _identity(x, out, be)
        return (y, None) if return_bitmask else y
    if out is not None:
        _check_out(be, out, x)
    size = x.size
    seed = draw_seed() if seed is None else seed  # drawn only when a mask is needed
    keep_bitmask = return_bitmask and getattr(be, "supports_bitmask", True)
    bitmask = be.empty(((size + 7) // 8,), np.uint8) if keep_bitmask else None
    threshold, scale = dropout_threshold(p), _dropout_scale(p, x.dtype)
    x1, result = _dropout_layout(be, x) if out is None else (None, None)
    if x1 is not None:
        buffer = be.dropout_forward(
            x1, threshold, scale, seed, call, be.empty(x1.shape, x1.dtype), bitmask
        )
        _copy_into(result, buffer)
        return (result, bitmask) if return_bitmask else result
    x1 = _contiguous_input(be, x, tuple(x.shape))
    buffer, direct = _kernel_output(be, x, out, tuple(x.shape))
    buffer = be.dropout_forward(x1, threshold, scale, seed, call, buffer, bitmask)
    y = _finish(x, out, buffer, direct)
    return (y, bitmask) if return_bitmask else y


def _check_bitmask(bitmask: Any, size: int) -> None:
    expected = (size + 7) // 8
    if not hasattr(bitmask, "shape") or not hasattr(bitmask, "dtype"):
        raise InvalidParameterError(
            f"bitmask must be the uint8 array of shape ({expected},) that "
            f"dropout(..., return_bitmask=True) returned, got {type(bitmask).__name__}",
            parameter_name="bitmask",
            value=type(bitmask).__name__,
        )
    if tuple(bitmask.shape) != (expected,) or np.dtype(bitmask.dtype) != np.uint8:
        raise ShapeError(
            f"bitmask must be a uint8 array of shape ({expected},), "
            f"got {bitmask.dtype} {tuple(bitmask.shape)}"
        )


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
        NumPy data in another dense memory order gives a gradient with the same
        layout (see :func:`dropout`).
    p : float
        The forward's drop probability.
    seed : int, optional
        The forward's seed; required without ``bitmask``.
    call : int, default 0
        The forward's call counter.
    bitmask : array, optional
        The packed keep-mask from ``dropout(..., return_bitmask=True)``.
    out : array, optional
        Where to write the gradient (writeable); may be ``grad_output``. An ``out``
        that shares memory with an input in any other way is safe: the gradient is
        computed into a temporary first.
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
    else:
        _check_bitmask(bitmask, size)
    if out is not None:
        _check_out(be, out, dy)
    scale = _dropout_scale(p, dy.dtype)
    dy1, result = _dropout_layout(be, dy) if out is None else (None, None)
    if dy1 is not None:
        buffer, direct = be.empty(dy1.shape, dy1.dtype), False
    else:
        dy1 = _contiguous_input(be, dy, tuple(dy.shape))
        buffer, direct = _kernel_output(be, dy, out, tuple(dy.shape), reads=(bitmask,))
    if bitmask is None:
        buffer = be.dropout_forward(dy1, dropout_threshold(p), scale, seed, call, buffer, None)
    else:
        buffer = be.dropout_apply_bitmask(dy1, bitmask, scale, buffer)
    if result is not None:
        _copy_into(result, buffer)
        return result
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


# The fused dropout + add + LayerNorm lives in its own module, built on the helpers above.
from normdrop._fused import (  # noqa: E402
    dropout_add_layer_norm,
    dropout_add_layer_norm_backward,
)
