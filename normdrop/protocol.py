"""The backend protocol: the one place that lists what a backend provides.

A backend is any object with the members of :class:`Backend` (listed in
:data:`REQUIRED_MEMBERS`); it may also offer the optional capabilities that
:mod:`normdrop.capabilities` declares (fused kernels, output allocation, the
bitmask flag, optional kernel keywords), which normdrop uses when present.
:func:`normdrop.testing.check_backend` checks both against the ``numpy``
reference backend.

Kernels are pure array-in, array-out functions: no validation and no state (the
functional layer has done both). Shapes are already canonical when a kernel is
called:

* BatchNorm data is a C-contiguous ``(N, C, L)`` array (``(N, C)`` arrives as
  ``(N, C, 1)``), per-channel vectors have length ``C``;
* LayerNorm data is a C-contiguous ``(R, D)`` array: ``R`` samples of ``D`` values;
* dropout data is C-contiguous, of any shape, taken in C order.

Every kernel returns its output array(s): in-memory backends fill ``out`` and
return it, backends of immutable arrays (Dask) ignore ``out`` and return a new
array.

Statistics, the BatchNorm affine coefficients and every other per-channel,
per-feature or per-row vector are float64 (as are the gradients a kernel returns),
except ``weight`` and ``bias`` where a kernel says "any float dtype"
(:meth:`Backend.layer_norm_forward` and the optional whole-layer kernels get the
layer's own, float32 or float64); element-wise arithmetic may run in float64 and rounds once to the
data dtype. Data arrays are float32 or float64, and ``out`` has the data's dtype
and shape (it may be the input itself). Dropout keeps element ``i`` when its
Philox4x32-10 word is ``>= threshold``; see :mod:`normdrop.random` for the counter
layout. A packed bitmask holds element ``i`` in bit ``i % 8`` of byte ``i // 8``.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias, TypeVar, runtime_checkable

import numpy as np

__all__ = [
    "REQUIRED_MEMBERS",
    "Array",
    "ArrayLike",
    "ArrayT",
    "Backend",
    "implements_backend",
    "missing_members",
]


@runtime_checkable
class ArrayLike(Protocol):
    """What normdrop needs of every array a backend computes on.

    A structural type: NumPy, CuPy and Dask arrays, numba device arrays and the
    like all have these attributes, so each is an ``ArrayLike`` without naming it
    (for a type checker, and for ``isinstance`` at run time).
    :func:`normdrop.testing.check_backend` checks that a backend's kernels return
    such arrays.

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    ndim : int
    size : int
    """

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""

    @property
    def dtype(self) -> Any:
        """The array's NumPy dtype."""

    @property
    def ndim(self) -> int:
        """The number of dimensions."""

    @property
    def size(self) -> int:
        """The number of elements."""


ArrayT = TypeVar("ArrayT", bound=ArrayLike)
"""The caller's array type, wherever a function returns an array of its input's kind.

``def layer_norm(x: ArrayT, ...) -> ArrayT``: a type checker sees a NumPy array
come back for a NumPy array (of the same dtype and shape type), a CuPy array for
a CuPy array, and so on.
"""

Array: TypeAlias = Any
"""An array of a backend's kind inside normdrop: kernels' arguments and results.

Every such array is an :class:`ArrayLike`. For the type checker it is ``Any``: each
backend's kernels take only its own array type, and the code that calls them uses
operators and methods whose signatures differ between the array libraries. The
public functions and layers are typed with :data:`ArrayT` and :class:`ArrayLike`.
"""


@runtime_checkable
class Backend(Protocol):
    """What every normdrop backend provides: the required members.

    Attributes
    ----------
    name : str
        The registry name (``"numpy"``, ``"numba"``, ...). A plugin's must be the
        name of its entry point: pickled layers and Dask graphs find it again by it.
    device : str
        Where its arrays live: ``"cpu"`` or ``"cuda"``. Layer parameters are
        allocated with :meth:`asarray` of a backend on the layer's device.
    """

    name: str
    device: str

    # ----- arrays ---------------------------------------------------------------
    def accepts(self, x: Any) -> bool:
        """Tell cheaply whether ``x`` is an array this backend computes on.

        Parameters
        ----------
        x : object
            Anything a user passed as data.

        Returns
        -------
        bool
            Decided without importing anything (look at ``type(x).__module__``,
            ``sys.modules`` or ``__cuda_array_interface__``).
        """

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """Return ``x`` as an array of this backend.

        Parameters
        ----------
        x : array_like
            Host data is copied to the backend's device.
        dtype : numpy.dtype, optional
            The dtype of the result; ``x``'s own by default.

        Returns
        -------
        Array
        """

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """Return an uninitialised array of this backend.

        Parameters
        ----------
        shape : tuple of int
        dtype : numpy.dtype

        Returns
        -------
        Array
        """

    def to_numpy(self, x: Array) -> np.ndarray:
        """Return ``x`` as a host NumPy array (computed, for lazy arrays).

        Parameters
        ----------
        x : Array

        Returns
        -------
        numpy.ndarray
        """

    def ascontiguous(self, x: Array) -> Array:
        """Return ``x`` C-contiguous.

        Parameters
        ----------
        x : Array

        Returns
        -------
        Array
            ``x`` itself when it already is (or when the backend's blocks are made
            contiguous later, as Dask's are).
        """

    # ----- BatchNorm ------------------------------------------------------------
    def channel_moments(self, x: Array) -> tuple[Array, Array]:
        """Per-channel mean and biased variance of ``(N, C, L)`` data.

        Parameters
        ----------
        x : Array
            ``(N, C, L)`` data with ``N * L >= 1``.

        Returns
        -------
        mean, var : Array
            float64 vectors of length C, accumulated in float64 and never as
            ``E[x^2] - E[x]^2`` (two passes, or Welford with Chan's merges).
        """

    def channel_affine(
        self, x: Array, mean: Array, scale: Array, shift: Array, out: Array
    ) -> Array:
        """Write ``(x - mean[c]) * scale[c] + shift[c]`` per channel of ``(N, C, L)`` data.

        Subtracting the mean first (rather than folding it into ``shift``) keeps
        large-mean data accurate and makes a constant channel give ``shift`` exactly.

        Parameters
        ----------
        x : Array
            ``(N, C, L)`` data.
        mean, scale, shift : Array
            float64 vectors of length C.
        out : Array
            ``x``'s shape and dtype; may be ``x``.

        Returns
        -------
        Array
            ``out``, filled (or a new array, for backends of immutable arrays).
        """

    def channel_backward_reduce(self, dy: Array, x: Array, mean: Array) -> tuple[Array, Array]:
        """Per channel, ``sum(dy)`` and ``sum((x - mean[c]) * dy)`` in one pass.

        Parameters
        ----------
        dy, x : Array
            ``(N, C, L)`` gradient and data.
        mean : Array
            float64 vector of length C.

        Returns
        -------
        sum_dy, sum_dy_xmu : Array
            float64 vectors of length C.
        """

    def channel_backward_elemt(
        self, dy: Array, x: Array, mean: Array, a: Array, b: Array, c: Array, out: Array
    ) -> Array:
        """Write ``a[c] * dy + b[c] * (x - mean[c]) + c[c]`` per channel into ``out``.

        Parameters
        ----------
        dy, x : Array
            ``(N, C, L)`` gradient and data.
        mean, a, b, c : Array
            float64 vectors of length C.
        out : Array
            ``x``'s shape and dtype; may be ``dy``.

        Returns
        -------
        Array
            ``out``, filled (or a new array).
        """

    # ----- LayerNorm ------------------------------------------------------------
    def layer_norm_forward(
        self, x: Array, weight: Array | None, bias: Array | None, eps: float, out: Array
    ) -> tuple[Array, Array, Array]:
        """Fused LayerNorm of ``(R, D)`` rows: ``(x - mean) * rstd * weight + bias``.

        Parameters
        ----------
        x : Array
            ``(R, D)`` rows.
        weight, bias : Array or None
            Vectors of length D of any float dtype (a layer passes its own, float32
            or float64), or ``None`` for none.
        eps : float
            Added to the variance: ``rstd = 1 / sqrt(var + eps)``.
        out : Array
            ``x``'s shape and dtype; may be ``x``.

        Returns
        -------
        out, mean, rstd : Array
            ``out`` filled, and the float64 row statistics of length R.
        """

    def layer_norm_backward(
        self,
        dy: Array,
        x: Array,
        mean: Array,
        rstd: Array,
        weight: Array | None,
        out: Array,
        param_grads: bool,
    ) -> tuple[Array, Array | None, Array | None]:
        """The input gradient of LayerNorm over ``(R, D)`` rows, into ``out``.

        Parameters
        ----------
        dy, x : Array
            ``(R, D)`` gradient and data.
        mean, rstd : Array
            float64 row statistics of length R, from :meth:`layer_norm_forward`.
        weight : Array or None
            Vector of length D, or ``None``.
        out : Array
            ``x``'s shape and dtype; may be ``dy``.
        param_grads : bool
            Whether to also return the weight and bias gradients.

        Returns
        -------
        out, dweight, dbias : Array
            ``out`` filled; ``dweight`` (``sum(dy * xhat)``) and ``dbias``
            (``sum(dy)``), float64 of length D, when ``param_grads``, else ``None``.
        """

    # ----- dropout --------------------------------------------------------------
    def dropout_forward(
        self,
        x: Array,
        threshold: int,
        scale: Any,
        seed: int,
        call: int,
        out: Array,
        bitmask: Array | None,
        offset: int = 0,
    ) -> Array:
        """Inverted dropout: ``x * scale`` where kept, 0 elsewhere, into ``out``.

        Parameters
        ----------
        x : Array
            Data of any shape, taken in C order.
        threshold : int
            Element ``j`` is kept when its Philox word is ``>= threshold``.
        scale : numpy.floating
            In ``x``'s dtype.
        seed, call : int
            The Philox key and the call counter (unsigned 64-bit).
        out : Array
            ``x``'s shape and dtype; may be ``x``.
        bitmask : Array or None
            uint8, ``ceil(x.size / 8)`` bytes: also pack the keep-mask into it
            (only with ``offset == 0``, and only when :class:`BitmaskSupport`).
        offset : int, optional
            Element ``j`` of ``x`` is element ``offset + j`` of the whole array (a
            chunk of a larger one).

        Returns
        -------
        Array
            ``out``, filled (or a new array).
        """

    def dropout_mask(self, n: int, threshold: int, seed: int, call: int) -> Array:
        """The boolean keep-mask of ``n`` elements: word ``>= threshold``.

        Parameters
        ----------
        n : int
        threshold, seed, call : int
            As in :meth:`dropout_forward`.

        Returns
        -------
        Array
            bool, length ``n``.
        """

    def dropout_apply_bitmask(self, dy: Array, bitmask: Array, scale: Any, out: Array) -> Array:
        """Write ``dy * scale`` where the packed bitmask is set and 0 elsewhere into ``out``.

        Only called on backends whose ``supports_bitmask`` is not False.

        Parameters
        ----------
        dy : Array
            Gradient of any shape, taken in C order.
        bitmask : Array
            uint8 keep-mask packed by :meth:`dropout_forward`.
        scale : numpy.floating
            In ``dy``'s dtype.
        out : Array
            ``dy``'s shape and dtype; may be ``dy``.

        Returns
        -------
        Array
            ``out``, filled (or a new array).
        """


#: The members every backend must have (those of :class:`Backend`).
REQUIRED_MEMBERS: tuple[str, ...] = (
    "name",
    "device",
    "accepts",
    "asarray",
    "empty",
    "to_numpy",
    "ascontiguous",
    "channel_moments",
    "channel_affine",
    "channel_backward_reduce",
    "channel_backward_elemt",
    "layer_norm_forward",
    "layer_norm_backward",
    "dropout_forward",
    "dropout_mask",
    "dropout_apply_bitmask",
)


def missing_members(obj: Any) -> list[str]:
    """The members of :class:`Backend` that ``obj`` lacks, in :data:`REQUIRED_MEMBERS` order.

    Each member is looked up as any attribute access would, so members a class provides
    through ``__getattr__`` (a proxy that wraps another backend) count. ``isinstance(obj,
    Backend)`` does not see those on Python 3.12 and later, where a runtime protocol's
    check looks members up statically.

    Parameters
    ----------
    obj : object

    Returns
    -------
    list of str
    """
    return [m for m in REQUIRED_MEMBERS if not hasattr(obj, m)]


def implements_backend(obj: Any) -> bool:
    """Whether ``obj`` is an instance with every member of :class:`Backend`
    (:func:`missing_members` finds none).

    Parameters
    ----------
    obj : object

    Returns
    -------
    bool
        ``False`` for a class (pass an instance of it).
    """
    return not isinstance(obj, type) and not missing_members(obj)
