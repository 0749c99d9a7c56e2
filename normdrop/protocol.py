"""The backend protocol: the one place that lists what a backend provides.

A backend is any object with these attributes. Kernels are pure array-in,
array-out functions: no validation and no state (the functional layer has done
both). Shapes are already canonical when a kernel is called:

* BatchNorm data is a C-contiguous ``(N, C, L)`` array (``(N, C)`` arrives as
  ``(N, C, 1)``), per-channel vectors have length ``C``;
* LayerNorm data is a C-contiguous ``(R, D)`` array: ``R`` samples of ``D`` values;
* dropout data is C-contiguous, of any shape, taken in C order.

Every kernel returns its output array(s): in-memory backends fill ``out`` and
return it, backends of immutable arrays (Dask) ignore ``out`` and return a new
array. Backends that cannot keep a packed bitmask set ``supports_bitmask = False``.

Statistics, weights, biases, the BatchNorm affine coefficients and every other
per-channel, per-feature or per-row vector are float64 (as are the gradients a
kernel returns); element-wise arithmetic may run in float64 and rounds once to the
data dtype. Data arrays are float32 or float64, and ``out`` has the data's dtype
and shape (it may be the input itself). Dropout keeps element ``i`` when its Philox4x32-10 word is
``>= threshold``; see :mod:`normdrop.random` for the counter layout. A packed
bitmask holds element ``i`` in bit ``i % 8`` of byte ``i // 8``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

Array = Any  # an array of the backend's kind (NumPy, CuPy, Dask, ...)

__all__ = ["Array", "Backend"]


@runtime_checkable
class Backend(Protocol):
    """What every normdrop backend provides.

    Attributes
    ----------
    name : str
        The registry name (``"numpy"``, ``"numba"``, ...).
    device : str
        Where its arrays live: ``"cpu"`` or ``"cuda"``. Layer parameters are
        allocated with :meth:`asarray` of a backend on the layer's device.
    """

    name: str
    device: str

    # ----- arrays ---------------------------------------------------------------
    def accepts(self, x: Any) -> bool:
        """Cheaply tell whether ``x`` is an array this backend computes on (no imports)."""

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """Return ``x`` as an array of this backend (host data is copied to its device)."""

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Array:
        """Return an uninitialised array of this backend."""

    def to_numpy(self, x: Array) -> np.ndarray:
        """Return ``x`` as a host NumPy array."""

    def ascontiguous(self, x: Array) -> Array:
        """Return ``x`` C-contiguous (the same object when it already is)."""

    # ----- statistics -----------------------------------------------------------
    def channel_moments(self, x: Array) -> tuple[Array, Array]:
        """Per-channel mean and biased variance (float64, length C) of ``(N, C, L)`` data."""

    def row_moments(self, x: Array) -> tuple[Array, Array]:
        """Per-row mean and biased variance (float64, length R) of ``(R, D)`` data."""

    # ----- forward transforms ---------------------------------------------------
    def channel_affine(
        self, x: Array, mean: Array, scale: Array, shift: Array, out: Array
    ) -> Array:
        """Write ``(x - mean[c]) * scale[c] + shift[c]`` per channel of ``(N, C, L)`` data.

        Subtracting the mean first (rather than folding it into ``shift``) keeps
        large-mean data accurate and makes a constant channel give ``shift`` exactly.
        """

    def layer_norm_forward(
        self, x: Array, weight: Array | None, bias: Array | None, eps: float, out: Array
    ) -> tuple[Array, Array, Array]:
        """Fused LayerNorm of ``(R, D)`` rows into ``out``; return ``(out, mean, rstd)``.

        ``weight`` and ``bias`` are vectors of length D of any float dtype (a layer
        passes its own, float32 or float64), or ``None``; ``mean`` and ``rstd`` are
        float64 of length R.
        """

    # Optional: a backend may also define a whole-layer kernel that the functional
    # op uses when present, to save passes or per-call overhead:
    #
    #   batch_norm_forward(x, running_mean, running_var, weight, bias, use_batch,
    #                      update, momentum, eps, out) -> (out, mean, rstd)
    #
    # (batch statistics when ``use_batch``, else the running ones; running
    # statistics updated in place when ``update``; vectors of any float dtype or None).
    #
    #   dropout_add_layer_norm_forward(x, residual, weight, bias, eps, threshold, scale,
    #                                  seed, call, out, r_out, bitmask, offset=0)
    #       -> (out, r, mean, rstd)
    #
    # (``r = dropout(x) + residual`` into ``r_out`` and ``out = layer_norm(r)`` for
    # ``(R, D)`` rows in one pass; ``residual`` may be None; ``threshold`` None means
    # no dropout; the mask and ``offset`` as in ``dropout_forward``; ``r`` rounded to
    # the data dtype after the dropout and after the add, as separate calls round it.
    # Without it, :mod:`normdrop._fused` composes ``dropout_forward``, an add and
    # ``layer_norm_forward``.)

    # ----- backward -------------------------------------------------------------
    def channel_backward_reduce(self, dy: Array, x: Array, mean: Array) -> tuple[Array, Array]:
        """Per channel, float64 ``sum(dy)`` and ``sum((x - mean) * dy)`` in one pass."""

    def channel_backward_elemt(
        self, dy: Array, x: Array, mean: Array, a: Array, b: Array, c: Array, out: Array
    ) -> Array:
        """Write ``a[c] * dy + b[c] * (x - mean[c]) + c[c]`` per channel into ``out``."""

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
        """Write the input gradient of ``(R, D)`` rows into ``out``.

        Return ``(out, dweight, dbias)``: float64 gradients of length D when
        ``param_grads``, else ``None``.
        """

    # ----- dropout --------------------------------------------------------------
    def philox_words(self, n: int, seed: int, call: int, offset: int = 0) -> Array:
        """The uint32 Philox words of elements ``offset .. offset + n - 1``."""

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
        """Write ``x * scale`` where kept and 0 elsewhere into ``out``; return ``out``.

        Element ``j`` of ``x`` (C order) is element ``offset + j`` of the whole array (a chunk
        of a larger one). When ``bitmask`` (uint8, ``ceil(n / 8)`` bytes; only with
        ``offset == 0``) is given, also pack the keep-mask into it.
        """

    def dropout_mask(self, n: int, threshold: int, seed: int, call: int) -> Array:
        """The boolean keep-mask of ``n`` elements."""

    def dropout_apply_bitmask(self, dy: Array, bitmask: Array, scale: Any, out: Array) -> Array:
        """Write ``dy * scale`` where the packed bitmask is set and 0 elsewhere into ``out``."""
