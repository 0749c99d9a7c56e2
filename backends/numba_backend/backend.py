"""The ``numba`` backend object: picks the serial or parallel clone of each kernel and
hands every kernel arguments of few types, so that each compiles few specialisations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from normdrop.backends._host_pool import pooled_empty
from normdrop.backends.numpy_backend import NumpyBackend
from normdrop.registry import PickledByName

from . import (
    channel_backward,
    channel_sums,
    dropout,
    dropout_add_norm,
    elementwise,
    fused,
    philox,
    rows,
    rows_backward,
    stats,
)
from .jit import PARALLEL_MIN_SIZE, Kernel
from .stream import STREAM_MIN_BYTES

__all__ = ["NumbaBackend", "backend"]

_NO_BITS = np.empty(0, np.uint8)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
#: The reference backend: this one shares its array helpers (both compute on NumPy arrays).
_NUMPY = NumpyBackend()
#: An empty vector stands for ``None`` in the kernels (one specialisation for both).
_NONE: dict[np.dtype, np.ndarray] = {_F32: np.empty(0, _F32), _F64: np.empty(0, _F64)}


def _clone(kernel: Kernel, size: int) -> Any:
    """The serial clone of ``kernel`` below :data:`PARALLEL_MIN_SIZE` elements, else the
    parallel one."""
    return kernel.serial if size < PARALLEL_MIN_SIZE else kernel.parallel


class _Interface:
    """Holds an ``__array_interface__`` and the array whose memory it describes."""

    __slots__ = ("__array_interface__", "base")

    def __init__(self, interface: dict[str, Any], base: np.ndarray) -> None:
        self.__array_interface__ = interface
        self.base = base


def _readable(a: np.ndarray) -> np.ndarray:
    """``a``, or a writable-typed view of the same memory when ``a`` is read-only.

    Numba compiles a separate specialisation for read-only arrays; the kernels
    only read these arguments, so they get the one compiled for writable arrays.
    Nothing is copied, and the view keeps ``a`` alive.
    """
    if a.flags.writeable:
        return a
    interface = dict(a.__array_interface__)
    interface["data"] = (interface["data"][0], False)
    return np.asarray(_Interface(interface, a))


def _as_type(kind: type, value: Any) -> Any:
    """``kind(value)``, without converting a ``value`` that already is of type ``kind``.

    The dropout kernels take their scale in the data's scalar type, which the layers
    already pass (a plan's ``scale32`` or ``scale64``): converting it again would cost
    about 0.2 us per call, holding the GIL, for the same number.
    """
    return value if type(value) is kind else kind(value)


def _vector_dtype(x: np.ndarray, *vectors: np.ndarray | None) -> np.dtype:
    """float32 when ``x`` and every given vector are float32, else float64."""
    if x.dtype is not _F32:  # identity: the cheapest test on the per-call path
        return _F64
    for v in vectors:
        if v is not None and v.dtype is not _F32:
            return _F64
    return _F32


def _updated_vector(v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A vector that the kernel updates in place: ``v`` itself when the kernel can
    write it directly, else a C-contiguous ``dtype`` copy to write back afterwards."""
    if v.dtype == dtype and v.flags.carray:
        return v
    return np.array(v, dtype, order="C")


def _read_vector(v: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    """A vector that the kernel only reads, as a C-contiguous, writable-typed ``dtype``
    array (the empty one for ``None``)."""
    if v is None:
        return _NONE[dtype]
    if v.dtype is dtype and v.flags.carray:  # C-contiguous, aligned, writable
        return v
    if v.dtype == dtype and v.flags.c_contiguous and v.flags.aligned:
        return _readable(v)
    return np.ascontiguousarray(v, dtype)


class NumbaBackend(PickledByName):
    """Numba CPU kernels on NumPy arrays: the default backend for NumPy input.

    Every kernel is compiled as a parallel (``prange``) and a serial clone of one
    source (see :func:`~normdrop.backends.numba_backend.jit.kernel`), which split
    the work into the same shape-dependent tasks and so give identical results;
    inputs of fewer than :data:`~normdrop.backends.numba_backend.jit.PARALLEL_MIN_SIZE`
    elements take the serial one, which wakes no threads. Vectors are handed to
    the kernels as float32 or float64 (float16 parameters are converted), an empty
    vector for ``None``, and read-only inputs as writable-typed views, so each
    kernel compiles few specialisations.

    Every member of the protocol is defined here: the array helpers are delegated
    explicitly to :class:`~normdrop.backends.numpy_backend.NumpyBackend` (same
    arrays), the kernels are this backend's own, so a kernel missing here fails
    loudly rather than running the slow reference. ``row_moments`` and
    ``philox_words`` are helpers beyond the protocol (the ``dask`` backend's blocks
    and the tests use them).
    """

    name = "numba"
    device = "cpu"
    supports_bitmask = True

    # ----- arrays: the reference backend's (static: no per-call thread-layer wrapper) --
    #: Accept NumPy arrays: the reference backend's ``isinstance(x, numpy.ndarray)``, called
    #: as ``numpy.ndarray``'s bound ``__instancecheck__`` (what ``isinstance`` calls for a
    #: plain class), a builtin: backend selection asks it on every layer call, holding the
    #: GIL, and a Python function around ``isinstance`` costs a frame (about 0.04 us).
    accepts = staticmethod(np.ndarray.__instancecheck__)
    asarray = staticmethod(_NUMPY.asarray)
    to_numpy = staticmethod(_NUMPY.to_numpy)
    ascontiguous = staticmethod(_NUMPY.ascontiguous)
    #: An uninitialised array; large ones are recycled (see :mod:`.._host_pool`).
    empty = staticmethod(pooled_empty)

    # ----- statistics -----------------------------------------------------------
    def channel_moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel float64 mean and biased variance of ``(N, C, L)`` data."""
        return _clone(stats.channel_moments.pick(x), x.size)(_readable(x))

    def row_moments(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row float64 mean and biased variance of ``(R, D)`` data."""
        return _clone(rows.row_moments.pick(x), x.size)(_readable(x))

    # ----- forward transforms ---------------------------------------------------
    def channel_affine(
        self,
        x: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
        shift: np.ndarray,
        out: np.ndarray,
    ) -> np.ndarray:
        """Write ``(x - mean[c]) * scale[c] + shift[c]`` per channel into ``out``; return it."""
        _clone(elementwise.channel_affine.pick(x), x.size)(
            _readable(x),
            _read_vector(mean, _F64),
            _read_vector(scale, _F64),
            _read_vector(shift, _F64),
            out,
        )
        return out

    def layer_norm_forward(
        self,
        x: np.ndarray,
        weight: np.ndarray | None,
        bias: np.ndarray | None,
        eps: float,
        out: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fused LayerNorm of ``(R, D)`` rows into ``out``; return ``(out, mean, rstd)``.

        ``weight``/``bias`` may have any float dtype, or be ``None``.
        """
        r, d = x.shape
        stats = np.empty((2, r))
        dtype = _vector_dtype(x, weight, bias)
        _clone(rows.layer_norm_forward.pick(x), r * d)(
            _readable(x),
            _read_vector(weight, dtype),
            _read_vector(bias, dtype),
            float(eps),
            out,
            stats,
        )
        return out, stats[0], stats[1]

    def batch_norm_forward(
        self,
        x: np.ndarray,
        running_mean: np.ndarray | None,
        running_var: np.ndarray | None,
        weight: np.ndarray | None,
        bias: np.ndarray | None,
        use_batch: bool,
        update: bool,
        momentum: float,
        eps: float,
        out: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Whole BatchNorm forward of ``(N, C, L)`` data in one compiled call.

        The optional fused kernel of the design notes: batch statistics when
        ``use_batch`` (else the running ones), the running statistics updated in
        place when ``update`` (``running = (1 - momentum) * running + momentum *
        batch``, unbiased variance), ``weight``/``bias`` folded in, output written to
        ``out``. Vectors may have any float dtype, or be ``None``.

        Returns
        -------
        out, mean, rstd : numpy.ndarray
            ``out``, and the float64 statistics used (``rstd = 1/sqrt(var + eps)``).
        """
        dtype = _vector_dtype(x, running_mean, running_var, weight, bias)
        update = bool(update) and running_mean is not None and running_var is not None
        if update and running_mean is not None and running_var is not None:
            rm = _updated_vector(running_mean, dtype)
            rv = _updated_vector(running_var, dtype)
        else:
            rm = _read_vector(running_mean, dtype)
            rv = _read_vector(running_var, dtype)
        stats = np.empty((2, x.shape[1]))
        _clone(fused.batch_norm_forward.pick(x), x.size)(
            _readable(x),
            rm,
            rv,
            _read_vector(weight, dtype),
            _read_vector(bias, dtype),
            bool(use_batch),
            update,
            float(momentum),
            float(eps),
            out,
            stats,
        )
        if update and running_mean is not None and rm is not running_mean:
            running_mean[...] = rm  # computed in a converted copy
        if update and running_var is not None and rv is not running_var:
            running_var[...] = rv
        return out, stats[0], stats[1]

    def dropout_add_layer_norm_forward(
        self,
        x: np.ndarray,
        residual: np.ndarray | None,
        weight: np.ndarray | None,
        bias: np.ndarray | None,
        eps: float,
        threshold: int | None,
        scale: Any,
        seed: int | None,
        call: int,
        out: np.ndarray,
        r_out: np.ndarray,
        bitmask: np.ndarray | None,
        offset: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Dropout, residual add and LayerNorm of ``(R, D)`` rows in one pass per row.

        Returns ``(out, r_out, mean, rstd)``; see :mod:`.dropout_add_norm`.
        """
        rows_, _ = x.shape
        stats = np.empty((2, rows_))
        drop = threshold is not None
        pack = bitmask is not None
        _clone(dropout_add_norm.dropout_add_layer_norm_rows, x.size)(
            x,
            residual,
            weight,
            bias,
            float(eps),
            drop,
            philox.uint64(0 if threshold is None else threshold),
            _as_type(x.dtype.type, scale if drop else 1),
            philox.key_words(seed if drop and seed is not None else 0, call),
            out,
            r_out,
            bitmask if pack else _NO_BITS,
            pack,
            stats,
            philox.uint64(offset // 4),
            offset % 4,
            x.nbytes >= STREAM_MIN_BYTES,
        )
        return out, r_out, stats[0], stats[1]

    # ----- bound calls (optional: normdrop.capabilities.BoundKernels) -------------
    def bind(self, kernel: str, x: np.ndarray, *args: Any) -> Callable[..., Any] | None:
        """``layer_norm_forward`` or ``batch_norm_forward`` bound to its vectors and options.

        Only calls that take the serial clone are bound (the small ones, where the
        per-call work counts), and only when every vector reaches the kernel as it
        is (no converted copy); otherwise ``None``. The call picks nothing and
        converts nothing: the clone and the vectors were chosen here, once. A
        serial clone starts no threads, so the bound call needs no launch lock under
        the workqueue threading layer.
        """
        if type(x) is not np.ndarray or x.size >= PARALLEL_MIN_SIZE:
            return None
        if kernel == "layer_norm_forward":
            return _bind_layer_norm(self, x, *args)
        if kernel == "batch_norm_forward":
            return _bind_batch_norm(self, x, *args)
        return None

    # ----- backward -------------------------------------------------------------
    def channel_backward_reduce(
        self, dy: np.ndarray, x: np.ndarray, mean: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per channel float64 ``sum(dy)`` and ``sum((x - mean) * dy)``, one pass."""
        return _clone(channel_sums.channel_sums.pick(x), x.size)(
            _readable(dy), _readable(x), _read_vector(mean, _F64)
        )

    def channel_backward_elemt(
        self,
        dy: np.ndarray,
        x: np.ndarray,
        mean: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        c: np.ndarray,
        out: np.ndarray,
    ) -> np.ndarray:
        """Write ``a[c] * dy + b[c] * (x - mean[c]) + c[c]`` per channel into ``out``."""
        coefficients = tuple(_read_vector(v, _F64) for v in (a, b, c, mean))
        _clone(elementwise.channel_backward_elemt.pick(x), x.size)(
            _readable(dy), _readable(x), coefficients, out
        )
        return out

    def batch_norm_backward(
        self,
        dy: np.ndarray,
        x: np.ndarray,
        mean: np.ndarray,
        rstd: np.ndarray,
        weight: np.ndarray | None,
        training: bool,
        out: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Whole BatchNorm backward of ``(N, C, L)`` data in one compiled call (see
        :mod:`.channel_backward`); return ``(out, dweight, dbias)``, the parameter
        gradients in ``weight``'s dtype (``None`` without ``weight``)."""
        grads = weight is not None
        dtype = _vector_dtype(x, weight)
        dw, db = _clone(channel_backward.batch_norm_backward.pick(x), x.size)(
            _readable(dy),
            _readable(x),
            _read_vector(mean, _F64),
            _read_vector(rstd, _F64),
            _read_vector(weight, dtype),
            bool(training),
            grads,
            out,
        )
        if weight is None:
            return out, None, None
        if weight.dtype != _F64:
            return out, dw.astype(weight.dtype), db.astype(weight.dtype)
        return out, dw, db

    def layer_norm_backward(
        self,
        dy: np.ndarray,
        x: np.ndarray,
        mean: np.ndarray,
        rstd: np.ndarray,
        weight: np.ndarray | None,
        out: np.ndarray,
        param_grads: bool,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """LayerNorm input gradient into ``out``; return ``(out, dweight, dbias)``."""
        grads = bool(param_grads)
        dw, db = _clone(rows_backward.layer_norm_backward.pick(x), x.size)(
            _readable(dy),
            _readable(x),
            _read_vector(mean, _F64),
            _read_vector(rstd, _F64),
            _read_vector(weight, _F64),
            out,
            grads,
        )
        return (out, dw, db) if grads else (out, None, None)

    # ----- dropout --------------------------------------------------------------
    def philox_words(self, n: int, seed: int, call: int, offset: int = 0) -> np.ndarray:
        """The uint32 Philox words of elements ``offset .. offset + n - 1``."""
        return _clone(philox.philox_words, n)(
            int(n), philox.uint64(offset // 4), offset % 4, philox.key_words(seed, call)
        )

    def dropout_forward(
        self,
        x: np.ndarray,
        threshold: int,
        scale: Any,
        seed: int,
        call: int,
        out: np.ndarray,
        bitmask: np.ndarray | None,
        offset: int = 0,
    ) -> np.ndarray:
        """Write ``x * scale`` where kept and 0 elsewhere into ``out``; return ``out``.

        ``bitmask`` (uint8, ``ceil(n / 8)`` bytes, only with ``offset == 0``) also
        receives the packed keep-mask.
        """
        pack = bitmask is not None
        _clone(dropout.dropout, x.size)(
            _readable(x).reshape(-1),
            philox.uint64(threshold),
            _as_type(x.dtype.type, scale),
            philox.key_words(seed, call),
            out.reshape(-1),
            bitmask if pack else _NO_BITS,
            pack,
            philox.uint64(offset // 4),
            offset % 4,
        )
        return out

    def dropout_mask(self, n: int, threshold: int, seed: int, call: int) -> np.ndarray:
        """The boolean keep-mask of ``n`` elements."""
        return _clone(dropout.dropout_mask, n)(
            int(n), philox.uint64(threshold), philox.key_words(seed, call)
        )

    def dropout_apply_bitmask(
        self, dy: np.ndarray, bitmask: np.ndarray, scale: Any, out: np.ndarray
    ) -> np.ndarray:
        """Write ``dy * scale`` where the packed bitmask is set and 0 elsewhere into ``out``."""
        _clone(dropout.apply_bitmask, dy.size)(
            _readable(dy).reshape(-1),
            _readable(bitmask),
            _as_type(dy.dtype.type, scale),
            out.reshape(-1),
        )
        return out


def _same_vectors(given: tuple[Any, ...], passed: tuple[np.ndarray, ...]) -> bool:
    """Whether each given vector reaches the kernel as itself (``None`` as the empty one)."""
    return all(g is None or g is p for g, p in zip(given, passed, strict=True))


def _compiled(dispatcher: Any, *args: Any) -> Callable[..., Any]:
    """The machine code of ``dispatcher`` for arguments of exactly the Numba types of
    ``args``, compiled or loaded from the disk cache now if need be.

    A bound call runs it directly: the dispatcher would find the same code, after
    typing every argument and looking the types up, which costs a bound call a tenth
    of its GIL-held time. Like any compiled function, it releases the GIL while it
    runs (every kernel is ``nogil``), but it checks no type: the caller hands it only
    arguments of the types of ``args`` (a C-contiguous, aligned, writable array
    stands for any such array of its dtype and rank), and the dispatcher anything else.
    """
    from numba.core.typing.typeof import Purpose, typeof

    return dispatcher.compile(tuple(typeof(a, Purpose.argument) for a in args))


def _bind_layer_norm(
    owner: NumbaBackend,
    x: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float,
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """:meth:`NumbaBackend.layer_norm_forward` of ``owner`` bound to ``weight``, ``bias`` and
    ``eps``: the compiled code for C-contiguous, aligned, writable data, the unbound method
    for the rest."""
    shape, dtype, rows_ = x.shape, x.dtype, x.shape[0]
    vector_dtype = _vector_dtype(x, weight, bias)
    w, b = _read_vector(weight, vector_dtype), _read_vector(bias, vector_dtype)
    if not _same_vectors((weight, bias), (w, b)):
        return None
    kernel, e = rows.layer_norm_forward.pick(x).serial, float(eps)
    sample, stats_shape, empty = np.empty(shape, dtype), (2, rows_), np.empty
    compiled = _compiled(kernel, sample, w, b, e, sample, empty(stats_shape))

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = empty(shape, dtype)
        if not x.flags.carray:  # read-only or unaligned: not the compiled code's type
            return owner.layer_norm_forward(x, weight, bias, e, out)
        stats = empty(stats_shape)
        compiled(x, w, b, e, out, stats)
        return out, stats[0], stats[1]

    return run


def _bind_batch_norm(
    owner: NumbaBackend,
    x: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    use_batch: bool,
    update: bool,
    momentum: float,
    eps: float,
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """:meth:`NumbaBackend.batch_norm_forward` of ``owner`` bound to its vectors and options:
    the compiled code for C-contiguous, aligned, writable data and running statistics it
    may write, the unbound method for the rest."""
    shape, dtype, channels = x.shape, x.dtype, x.shape[1]
    vector_dtype = _vector_dtype(x, running_mean, running_var, weight, bias)
    update = bool(update) and running_mean is not None and running_var is not None
    if update and running_mean is not None and running_var is not None:
        rm = _updated_vector(running_mean, vector_dtype)
        rv = _updated_vector(running_var, vector_dtype)
    else:
        rm = _read_vector(running_mean, vector_dtype)
        rv = _read_vector(running_var, vector_dtype)
    w, b = _read_vector(weight, vector_dtype), _read_vector(bias, vector_dtype)
    if not _same_vectors((running_mean, running_var, weight, bias), (rm, rv, w, b)):
        return None
    kernel = fused.batch_norm_forward.pick(x).serial
    batch, m, e = bool(use_batch), float(momentum), float(eps)
    sample, stats_shape, empty = np.empty(shape, dtype), (2, channels), np.empty
    compiled = _compiled(
        kernel, sample, rm, rv, w, b, batch, update, m, e, sample, empty(stats_shape)
    )

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = empty(shape, dtype)
        # the running statistics were writable when bound; the user may have locked them
        if not x.flags.carray or update and not (rm.flags.writeable and rv.flags.writeable):
            vectors = (running_mean, running_var, weight, bias)
            return owner.batch_norm_forward(x, *vectors, batch, update, m, e, out)
        stats = empty(stats_shape)
        compiled(x, rm, rv, w, b, batch, update, m, e, out, stats)
        return out, stats[0], stats[1]

    return run


backend = NumbaBackend()
