"""Batch normalisation: its plan, and the forward and backward passes that execute one."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from normdrop import _validation
from normdrop._ops import _arrays, _inputs
from normdrop.capabilities import takes_keyword
from normdrop.errors import InvalidParameterError, ShapeError
from normdrop.protocol import Array, Backend

#: The optional whole-layer kernels of :mod:`normdrop.protocol` (looked up by name: optional).
FUSED_KERNEL = "batch_norm_forward"
FUSED_BACKWARD = "batch_norm_backward"

__all__ = [
    "BatchNormPlan",
    "add_one",
    "backward",
    "batch_shape",
    "forward",
    "forward_ready",
    "make_plan",
    "plan",
]


class BatchNormPlan(NamedTuple):
    """What a BatchNorm forward or backward needs besides the data.

    Attributes
    ----------
    backend : Backend
    weight, bias : array or None
        Flat per-channel vectors; float64 unless ``fused`` is set (it reads any
        float dtype). A layer's plan holds its live parameters (views), so
        in-place updates reach the next call.
    weight_dtype : numpy.dtype or None
        The dtype the caller's weight had: the parameter gradients come back in it.
    running_mean, running_var : array or None
        The running statistics the kernels read (and update when ``update``).
    training : bool
        Batch statistics were asked for (as opposed to implied by the lack of
        running statistics); only error messages tell the two apart.
    use_batch, update : bool
        Normalise with batch statistics; update the running statistics.
    momentum, eps : float
    fused : bool
        The backend has the optional whole-layer ``batch_norm_forward`` kernel
        (looked up once, here; called as ``backend.batch_norm_forward``, because a
        backend may replace its methods after its first kernel call, as the numba
        backend does when it learns its threading layer).
    write_back : tuple of two arrays or None
        The caller's running statistics when ``running_mean``/``running_var`` are
        kernel-ready copies of them: written back after a successful update.
    fused_backward : bool
        The backend has the optional whole-layer ``batch_norm_backward`` kernel
        (looked up here, called on the backend, as for ``fused``).
    counts : bool
        ``batch_norm_forward`` takes the optional ``counter`` keyword.
    accumulates : bool
        ``batch_norm_backward`` takes the optional ``accumulate`` keyword.
    calls : dict or None
        A layer's forward calls bound by the backend, per input shape and dtype
        (:func:`normdrop._ops._arrays.bound_call`); ``None`` when the backend binds
        none (no ``bind``) or the plan is not a layer's.
    """

    backend: Backend
    weight: Array | None = None
    bias: Array | None = None
    weight_dtype: np.dtype | None = None
    running_mean: Array | None = None
    running_var: Array | None = None
    training: bool = True
    use_batch: bool = True
    update: bool = False
    momentum: float = 0.0
    eps: float = 1e-5
    fused: bool = False
    write_back: tuple[Array, Array] | None = None
    fused_backward: bool = False
    counts: bool = False
    accumulates: bool = False
    calls: dict | None = None


def make_plan(
    be: Backend,
    weight: Array | None,
    bias: Array | None,
    running_mean: Array | None,
    running_var: Array | None,
    use_batch: bool,
    update: bool,
    momentum: float,
    eps: float,
) -> BatchNormPlan:
    """The plan of a layer's own arguments (valid by construction: nothing is checked).

    The running statistics are read when not ``use_batch`` and updated when
    ``update``; pass ``None`` for them otherwise.
    """
    return BatchNormPlan(
        be,
        weight,
        bias,
        None if weight is None else weight.dtype,
        running_mean,
        running_var,
        use_batch,
        use_batch,
        update,
        momentum,
        eps,
        hasattr(be, FUSED_KERNEL),
        None,
        hasattr(be, FUSED_BACKWARD),
        takes_keyword(be, FUSED_KERNEL, "counter"),
        takes_keyword(be, FUSED_BACKWARD, "accumulate"),
        {} if hasattr(be, "bind") else None,
    )


def batch_shape(x: Any, layer: bool = False) -> tuple[int, int, int]:
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
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


def _layout(x: Any, n: int, c: int, length: int) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The kernel's ``(A, C, B)`` shape of BatchNorm data and the axis order to read it in.

    Channel statistics do not depend on the order of the other axes, so data in
    Fortran order, channels-last or any other dense layout is read where it lies:
    ``x.transpose(order)`` is C-contiguous, and the axes before and after the
    channel axis in it merge into ``A`` and ``B``. C-ordered or non-dense data is
    read as ``(N, C, L)`` in C order (a C-ordered copy for the latter).
    """
    order = _arrays.memory_order(x)
    if order is None:
        return (n, c, length), None
    k = order.index(1)
    dims = tuple(x.shape[a] for a in order)
    return (math.prod(dims[:k]), dims[k], math.prod(dims[k + 1 :])), order


def _kernel_vector(v: Any) -> Any:
    """A host vector a fused compiled kernel can take: writeable, float32 or float64.

    Read-only vectors (e.g. memory-mapped running statistics used in evaluation)
    are copied, and float16 ones converted to float32, which costs ``C`` values and
    avoids separate kernel specialisations; anything else is passed through.
    """
    if isinstance(v, np.ndarray) and (not v.flags.writeable or v.dtype == np.float16):
        return v.astype(_inputs.compute_dtype(v.dtype))
    return v


def plan(
    be: Backend,
    channels: int,
    running_mean: Any,
    running_var: Any,
    weight: Any,
    bias: Any,
    training: Any,
    momentum: Any,
    eps: Any,
) -> BatchNormPlan:
    """Validate :func:`batch_norm`'s arguments other than the data; return the plan.

    The plan is for the forward pass: its ``weight_dtype`` is not set.
    """
    _validation.boolean("training", training)
    # (never None without allow_none)
    m = (_validation.momentum(momentum, allow_none=False) or 0.0) if training else 0.0
    eps = _validation.positive_finite("eps", eps)
    if (running_mean is None) != (running_var is None):
        raise InvalidParameterError(
            "running_mean and running_var must both be given or both be None, got "
            f"running_mean={'None' if running_mean is None else 'array'}, "
            f"running_var={'None' if running_var is None else 'array'}",
            parameter_name="running_var" if running_var is None else "running_mean",
            value=None,
        )
    rm, rv, write_back = running_mean, running_var, None
    if training:  # updated in place: arrays of the caller's, native and writeable
        for name, v in (("running_mean", running_mean), ("running_var", running_var)):
            if v is not None:
                _check_running(be, name, v, channels)
                if not _inputs.writeable(v):
                    raise _inputs.read_only_error(name, v, "training updates it in place")
    elif running_mean is not None:  # only read: any float vector, as weight and bias
        rm = _inputs.vector(be, "running_mean", running_mean, (channels,), float64=False)
        rv = _inputs.vector(be, "running_var", running_var, (channels,), float64=False)
    fused = hasattr(be, FUSED_KERNEL)
    w = _inputs.vector(be, "weight", weight, (channels,), float64=not fused)
    b = _inputs.vector(be, "bias", bias, (channels,), float64=not fused)
    if fused:
        w, b = _kernel_vector(w), _kernel_vector(b)
        if running_mean is not None:
            rm, rv = _kernel_vector(rm), _kernel_vector(rv)
            if training and (rm is not running_mean or rv is not running_var):
                write_back = (running_mean, running_var)
    use_batch = bool(training) or running_mean is None
    update = bool(training) and running_mean is not None
    return BatchNormPlan(
        be, w, b, None, rm, rv, bool(training), use_batch, update, m, eps, fused, write_back,
        hasattr(be, FUSED_BACKWARD),
    )  # fmt: skip


def _check_running(be: Backend, name: str, v: Any, channels: int) -> None:
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
    _inputs.vector(be, name, v, (channels,))


def add_one(counter: Array) -> None:
    """Add 1 to a 0-d counter (a layer's ``num_batches_tracked``) in place.

    A NumPy counter is added to through its scalar (``counter[()]``), far cheaper than
    an in-place array operation (``counter[...] += 1``), which a layer call pays
    holding the GIL.
    """
    if type(counter) is np.ndarray:
        counter[()] += 1
    else:
        counter[...] += 1


def forward_ready(
    p: BatchNormPlan, x: np.ndarray, momentum: float | None = None, counter: Array | None = None
) -> tuple[Array, Array, Array]:
    """:func:`forward` without ``out`` for the common case of a layer call, in few operations.

    ``x`` is a C-contiguous NumPy float32/float64 array of shape ``(N, C, L)`` or
    ``(N, C)`` with ``N * L >= 2`` (the caller checked), and the plan has the fused
    kernel; the results are those of :func:`forward`.
    """
    be = p.backend
    x3 = x if x.ndim == 3 else x.reshape(x.shape[0], x.shape[1], 1)
    update = p.update and counter is not None
    rm, rv = p.running_mean, p.running_var
    run = None
    if p.calls is not None and momentum is None:  # bound with the plan's momentum
        run = p.calls.get((x3.shape, x3.dtype))
        if run is None:
            options = (p.use_batch, p.update, p.momentum, p.eps)
            run = _arrays.bound_call(
                p.calls, be, FUSED_KERNEL, x3, rm, rv, p.weight, p.bias, *options
            )
    if run is not None:
        buffer, mean, rstd = run(x3)
    else:
        buffer = be.empty(x3.shape, x.dtype)
        m = p.momentum if momentum is None else momentum
        args = (x3, rm, rv, p.weight, p.bias, p.use_batch, p.update, m, p.eps, buffer)
        if update and p.counts:  # the kernel adds 1 in the launch that updates the statistics
            buffer, mean, rstd = getattr(be, FUSED_KERNEL)(*args, counter=counter)
            update = False
        else:
            buffer, mean, rstd = getattr(be, FUSED_KERNEL)(*args)
    if update and counter is not None:
        add_one(counter)
    if p.write_back is not None:
        p.write_back[0][...] = rm
        p.write_back[1][...] = rv
    return (buffer if x3 is x else buffer.reshape(x.shape)), mean, rstd


def forward(
    p: BatchNormPlan,
    x: Array,
    out: Array | None = None,
    momentum: float | None = None,
    counter: Array | None = None,
) -> tuple[Array, Array, Array]:
    """Run the kernels on checked ``x`` (and ``out``); return ``(y, mean, rstd)``.

    ``momentum`` overrides the plan's (a layer's cumulative average changes it
    per call). ``mean`` and ``rstd`` are float64 of length C. ``counter`` (a
    layer's 0-d ``num_batches_tracked``) gets 1 added when the plan updates the
    running statistics: by the fused kernel, in the launch that updates them,
    when the plan ``counts``, else here after the kernels succeeded.
    """
    be = p.backend
    n, c, length = batch_shape(x)
    count = n * length
    if count == 0:  # an empty batch, as in PyTorch: nothing to normalise or update
        y = out if out is not None else be.empty(tuple(x.shape), x.dtype)
        if p.update and counter is not None:
            add_one(counter)
        return y, be.asarray(np.zeros(c)), be.asarray(np.full(c, 1.0 / math.sqrt(p.eps)))
    if p.use_batch and count < 2:
        when = "when training" if p.training else "to compute batch statistics"
        raise ShapeError(
            f"Expected more than 1 value per channel {when}, got input shape {tuple(x.shape)}"
        )
    m = p.momentum if momentum is None else momentum
    rm, rv = p.running_mean, p.running_var
    if out is None and _inputs.is_kernel_ready(x):  # the common case, in few operations
        x3 = x if x.ndim == 3 else x.reshape(n, c, length)
        order, direct = None, False
        buffer = be.empty(x3.shape, x.dtype)
    else:
        shape, order = _layout(x, n, c, length)
        x3 = _arrays.contiguous_input(be, x, shape, order)
        reads = (p.weight, p.bias) if out is None else (p.weight, p.bias, rm, rv)
        buffer, direct = _arrays.kernel_output(be, x, out, shape, order, reads)
    if p.fused:
        args = (x3, rm, rv, p.weight, p.bias, p.use_batch, p.update, m, p.eps, buffer)
        if p.counts and counter is not None and p.update:
            buffer, mean, rstd = getattr(be, FUSED_KERNEL)(*args, counter=counter)
        else:
            buffer, mean, rstd = getattr(be, FUSED_KERNEL)(*args)
            if p.update and counter is not None:
                add_one(counter)
        if p.write_back is not None:
            p.write_back[0][...] = rm
            p.write_back[1][...] = rv
        return _arrays.finish(x, out, buffer, direct, order), mean, rstd
    if p.use_batch:
        mean, var = be.channel_moments(x3)
        if p.update:
            assert rm is not None and rv is not None  # a plan that updates has them
            unbiased = var * (count / (count - 1))
            # in float64, rounded once (NumPy would compute (1 - m) * rm in rm's dtype)
            rm[...] = (1.0 - m) * _inputs.as_float64(rm) + m * mean
            rv[...] = (1.0 - m) * _inputs.as_float64(rv) + m * unbiased
        rstd = (var + p.eps) ** -0.5
    else:
        assert rm is not None and rv is not None  # a plan without batch statistics has them
        mean, var = rm.astype(np.float64), rv.astype(np.float64)
        with np.errstate(invalid="ignore"):  # a negative running_var gives NaN, as in PyTorch
            rstd = (var + p.eps) ** -0.5
    w = _inputs.as_float64(p.weight)
    scale = rstd * w if w is not None else rstd
    shift = np.zeros_like(mean) if p.bias is None else _inputs.as_float64(p.bias)
    buffer = be.channel_affine(x3, mean, scale, shift, buffer)
    if p.update and counter is not None:
        add_one(counter)
    return _arrays.finish(x, out, buffer, direct, order), mean, rstd


def backward(
    p: BatchNormPlan,
    grad_output: Array,
    x: Array,
    mean: Array,
    rstd: Array,
    training: bool,
    out: Array | None = None,
    accumulate: tuple[Array, Array] | None = None,
) -> tuple[Array, Array | None, Array | None]:
    """Gradients from checked arrays: ``(grad_input, grad_weight, grad_bias)``.

    ``mean`` and ``rstd`` are flat float64; the parameter gradients are computed
    with the plan's weight only (in ``p.weight_dtype``). ``accumulate``, a layer's
    gradient buffers ``(dweight, dbias)`` in that dtype (only with a weight), gets
    the parameter gradients added in place and is returned in their stead: by the
    fused kernel when the plan ``accumulates``, else here after the kernels.
    """
    be = p.backend
    n, c, length = batch_shape(x)
    if x.size == 0:
        grad_input = out if out is not None else be.empty(tuple(x.shape), x.dtype)
        if p.weight is None:
            return grad_input, None, None
        if accumulate is not None:  # adding zeros
            return grad_input, accumulate[0], accumulate[1]
        zeros = be.asarray(np.zeros(c, p.weight_dtype))
        return grad_input, zeros, zeros.copy()
    shape, order = _layout(x, n, c, length)
    x3 = _arrays.contiguous_input(be, x, shape, order)
    dy3 = _arrays.contiguous_input(be, grad_output, shape, order)
    if p.fused_backward:
        reads = (x, mean, rstd, p.weight)
        buffer, direct = _arrays.kernel_output(be, x, out, shape, order, reads, grad_output)
        kernel = getattr(be, FUSED_BACKWARD)
        args = (dy3, x3, mean, rstd, p.weight, bool(training), buffer)
        if p.accumulates and accumulate is not None:
            buffer, dw, db = kernel(*args, accumulate=accumulate)
        else:
            buffer, dw, db = kernel(*args)
        grad_input = _arrays.finish(x, out, buffer, direct, order)
        if dw is None or db is None:
            return grad_input, None, None
        if dw.dtype != p.weight_dtype:
            dw, db = dw.astype(p.weight_dtype), db.astype(p.weight_dtype)
        return grad_input, *_added(accumulate, dw, db, p.accumulates)
    w = _inputs.as_float64(p.weight)
    sum_dy = sum_dy_xmu = None
    if training or w is not None:
        sum_dy, sum_dy_xmu = be.channel_backward_reduce(dy3, x3, mean)
    a = rstd * w if w is not None else rstd
    reads = (x, mean, rstd, w)
    buffer, direct = _arrays.kernel_output(be, x, out, shape, order, reads, grad_output)
    if training:
        count = n * length
        b = -a * rstd * rstd * sum_dy_xmu / count
        shift = -a * sum_dy / count
        buffer = be.channel_backward_elemt(dy3, x3, mean, a, b, shift, buffer)
    else:
        zeros = np.zeros_like(a)
        buffer = be.channel_affine(dy3, zeros, a, zeros, buffer)
    grad_input = _arrays.finish(x, out, buffer, direct, order)
    if w is None:
        return grad_input, None, None
    assert sum_dy is not None and sum_dy_xmu is not None  # computed whenever w is given
    dw, db = (sum_dy_xmu * rstd).astype(p.weight_dtype), sum_dy.astype(p.weight_dtype)
    return grad_input, *_added(accumulate, dw, db, False)


def _added(
    accumulate: tuple[Array, Array] | None, dw: Array, db: Array, done: bool
) -> tuple[Array, Array]:
    """``(dw, db)``, or ``accumulate`` with them added (``done``: the kernel added them)."""
    if accumulate is None:
        return dw, db
    if not done:
        accumulate[0][...] += dw
        accumulate[1][...] += db
    return accumulate
