"""The optional capabilities a backend may offer beyond :class:`~normdrop.protocol.Backend`.

normdrop uses each when a backend has it (looked up once, when a plan is made) and
works without it: :data:`OPTIONAL_MEMBERS` lists the optional members with the
protocol that declares each, :data:`OPTIONAL_KEYWORDS` the optional keyword
arguments of kernels. :func:`normdrop.testing.check_backend` checks every one a
backend claims against the ``numpy`` reference backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from normdrop.protocol import Array

__all__ = [
    "OPTIONAL_KEYWORDS",
    "OPTIONAL_MEMBERS",
    "BitmaskSupport",
    "BoundKernels",
    "FusedKernels",
    "OutputAllocation",
    "takes_keyword",
]


class FusedKernels(Protocol):
    """Optional whole-layer kernels, each used by the functional op when present.

    A backend may define either or both where one call saves passes over memory
    or per-call overhead; without them normdrop composes the op from the kernels
    of :class:`~normdrop.protocol.Backend` (:mod:`normdrop._ops.fused` for the
    dropout-add-LayerNorm).
    """

    def batch_norm_forward(
        self,
        x: Array,
        running_mean: Array | None,
        running_var: Array | None,
        weight: Array | None,
        bias: Array | None,
        use_batch: bool,
        update: bool,
        momentum: float,
        eps: float,
        out: Array,
    ) -> tuple[Array, Array, Array]:
        """The whole BatchNorm forward of ``(N, C, L)`` data.

        Parameters
        ----------
        x : Array
            ``(N, C, L)`` data with ``N * L >= 2`` when ``use_batch``.
        running_mean, running_var : Array or None
            Vectors of length C of any float dtype, or ``None`` (not tracked).
        weight, bias : Array or None
            Vectors of length C of any float dtype, or ``None``.
        use_batch : bool
            Normalise with the batch statistics, else with the running ones.
        update : bool
            Update the running statistics in place: ``(1 - momentum) * running +
            momentum * batch``, with the unbiased batch variance.
        momentum, eps : float
        out : Array
            ``x``'s shape and dtype; may be ``x``.

        Returns
        -------
        out, mean, rstd : Array
            ``out`` filled, and the float64 statistics used (``rstd = 1 / sqrt(var + eps)``).
        """

    def batch_norm_backward(
        self,
        dy: Array,
        x: Array,
        mean: Array,
        rstd: Array,
        weight: Array | None,
        training: bool,
        out: Array,
    ) -> tuple[Array, Array | None, Array | None]:
        """The whole BatchNorm backward of ``(N, C, L)`` data.

        Parameters
        ----------
        dy, x : Array
            ``(N, C, L)`` gradient and forward input, ``N * L >= 1``.
        mean, rstd : Array
            The float64 statistics the forward used.
        weight : Array or None
            Vector of length C (float32 or float64), or ``None``.
        training : bool
            The forward used batch statistics (their dependence on ``x`` enters
            the input gradient), as
            :meth:`~normdrop.protocol.Backend.channel_backward_elemt` computes.
        out : Array
            ``x``'s shape and dtype; may be ``dy``.

        Returns
        -------
        out, dweight, dbias : Array
            ``out`` filled, and ``sum((x - mean) * dy) * rstd`` and ``sum(dy)`` per
            channel in ``weight``'s dtype (``None`` without ``weight``).
        """

    def dropout_add_layer_norm_forward(
        self,
        x: Array,
        residual: Array | None,
        weight: Array | None,
        bias: Array | None,
        eps: float,
        threshold: int | None,
        scale: Any,
        seed: int | None,
        call: int,
        out: Array,
        r_out: Array,
        bitmask: Array | None,
        offset: int = 0,
    ) -> tuple[Array, Array, Array, Array]:
        """``r = dropout(x) + residual`` and ``out = layer_norm(r)`` of ``(R, D)`` rows.

        ``r`` is rounded to the data dtype after the dropout and after the add, as
        separate calls round it.

        Parameters
        ----------
        x : Array
            ``(R, D)`` rows.
        residual : Array or None
            ``x``'s shape and dtype, or ``None`` for none.
        weight, bias, eps
            As in :meth:`~normdrop.protocol.Backend.layer_norm_forward`.
        threshold : int or None
            ``None``: no dropout.
        scale, seed, call, bitmask, offset
            As in :meth:`~normdrop.protocol.Backend.dropout_forward`.
        out, r_out : Array
            ``x``'s shape and dtype: receive ``y`` and ``r``.

        Returns
        -------
        out, r_out, mean, rstd : Array
            ``y``, ``r``, and the float64 statistics of ``r``'s rows.
        """


class BoundKernels(Protocol):
    """Optional: a kernel call bound once to everything but its data, for small calls.

    A small layer call spends much of its time in Python, holding the GIL, on what
    does not change from call to call: converting the parameters, picking the
    compiled kernel, checking arguments. A layer binds its forward kernel once per
    input shape and dtype and calls what :meth:`bind` returns from then on, so two
    Python threads calling layers overlap for longer. Without ``bind`` (or when it
    returns ``None``) normdrop calls the kernel itself.
    """

    def bind(
        self, kernel: str, x: Array, *args: Any
    ) -> Callable[[Array], tuple[Array, ...]] | None:
        """``getattr(self, kernel)(x, *args, self.empty(x.shape, x.dtype))``, bound to ``args``.

        Parameters
        ----------
        kernel : {"batch_norm_forward", "layer_norm_forward"}
            The kernel, a member of :class:`~normdrop.protocol.Backend` or
            :class:`FusedKernels` whose first argument is the data and last the output.
        x : Array
            An example of the data: the returned call takes arrays of its type,
            shape and dtype, C-contiguous.
        *args
            The kernel's arguments between ``x`` and ``out``. Its arrays are bound
            as they are, not copied: in-place changes to them (an optimiser's step,
            an updated running statistic) reach every later call.

        Returns
        -------
        callable or None
            ``run(x)``, which allocates the output and returns what the kernel
            returns; or ``None`` when the backend binds no such call (e.g. one that
            would need converted copies of the arrays, which in-place changes would
            not reach).
        """


class OutputAllocation(Protocol):
    """Optional: allocate outputs of the input's own array type.

    For a backend that accepts several array types (the ``cuda`` backend takes
    CuPy arrays and numba device arrays): outputs of a non-NumPy input are
    allocated with it, so a numba device array in gives one out.
    """

    def alloc_like(self, x: Array, shape: tuple[int, ...], dtype: Any) -> Array:
        """An uninitialised array of ``x``'s type, on ``x``'s device.

        Parameters
        ----------
        x : Array
            An array this backend accepts.
        shape : tuple of int
        dtype : numpy.dtype

        Returns
        -------
        Array
        """


class BitmaskSupport(Protocol):
    """Optional flag: whether dropout keeps a packed bitmask for the backward pass.

    Attributes
    ----------
    supports_bitmask : bool
        True when absent. A backend that cannot keep one (Dask: lazy arrays) sets it
        False; normdrop then regenerates the mask from ``(seed, call)`` for the
        backward pass, and never passes a ``bitmask`` or calls
        :meth:`~normdrop.protocol.Backend.dropout_apply_bitmask`.
    """

    supports_bitmask: bool


#: The optional members, each with the protocol that declares it.
OPTIONAL_MEMBERS: dict[str, type] = {
    "batch_norm_forward": FusedKernels,
    "batch_norm_backward": FusedKernels,
    "dropout_add_layer_norm_forward": FusedKernels,
    "bind": BoundKernels,
    "alloc_like": OutputAllocation,
    "supports_bitmask": BitmaskSupport,
}

#: Optional keyword arguments of kernels, which a backend's kernel may accept (checked
#: with :func:`takes_keyword` when a plan is made): the ``(C,)``-sized state a layer
#: keeps is then updated by the kernel itself, in place, with no extra array operation.
#:
#: * ``batch_norm_forward(..., counter=None)``: a 0-d int64 array (a layer's
#:   ``num_batches_tracked``) that gets 1 added when the running statistics are updated;
#: * ``batch_norm_backward(..., accumulate=None)`` and
#:   ``layer_norm_backward(..., accumulate=None)``: a pair of a layer's gradient buffers
#:   ``(dweight, dbias)`` (C-contiguous, in weight's dtype) that get the parameter
#:   gradients added in place and are returned in their stead.
OPTIONAL_KEYWORDS: dict[str, tuple[str, ...]] = {
    "batch_norm_forward": ("counter",),
    "batch_norm_backward": ("accumulate",),
    "layer_norm_backward": ("accumulate",),
}


def takes_keyword(backend: Any, member: str, keyword: str) -> bool:
    """Tell whether ``backend.member`` exists and accepts the optional keyword ``keyword``.

    Parameters
    ----------
    backend : Backend
    member : str
        A kernel named in :data:`OPTIONAL_KEYWORDS`.
    keyword : str
        One of its optional keywords.

    Returns
    -------
    bool
    """
    import inspect  # only when a plan is made

    method = getattr(backend, member, None)
    if method is None or keyword not in OPTIONAL_KEYWORDS.get(member, ()):
        return False
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    found = parameters.get(keyword)
    return found is not None and found.kind in (found.POSITIONAL_OR_KEYWORD, found.KEYWORD_ONLY)
