"""The ``cuda`` backend object: the protocol's methods, each delegating to one kernel module."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _arrays, _batchnorm, _batchnorm_backward, _dropout, _dropout_add_norm, _layernorm
from ._runtime import SIMULATOR

__all__ = ["CudaBackend"]


class CudaBackend:
    """:class:`normdrop.protocol.Backend` on the GPU: numba.cuda kernels on CuPy arrays.

    Any ``__cuda_array_interface__`` array is accepted; kernels launch on CuPy's
    current stream and keep statistics on the device. Under the CUDA simulator
    (``NUMBA_ENABLE_CUDASIM=1``) the same kernels run on NumPy arrays.

    Besides the required members it offers the optional ``batch_norm_forward``,
    ``dropout_add_layer_norm_forward`` and ``alloc_like``; ``row_moments`` and
    ``philox_words`` are helpers beyond the protocol (the tests use them).

    Attributes
    ----------
    name : str
        ``"cuda"``.
    device : str
        ``"cuda"``.
    supports_bitmask : bool
        True: dropout keeps a packed bitmask for the backward pass.
    simulator : bool
        Whether the kernels run on the CUDA simulator.
    """

    name = "cuda"
    device = "cuda"
    supports_bitmask = True
    simulator = SIMULATOR

    # ----- arrays ---------------------------------------------------------------
    def accepts(self, x: Any) -> bool:
        """Cheaply tell whether ``x`` is a device array (a NumPy array in the simulator)."""
        return _arrays.accepts(x)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Return ``x`` as a device array; host data is copied to the device."""
        return _arrays.asarray(x, dtype)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Return an uninitialised device array."""
        return _arrays.empty(shape, dtype)

    def alloc_like(self, x: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        """Return an uninitialised array of ``x``'s kind (numba device arrays stay numba's)."""
        return _arrays.alloc_like(x, shape, dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Return ``x`` copied to a host NumPy array."""
        return _arrays.to_numpy(x)

    def ascontiguous(self, x: Any) -> Any:
        """Return ``x`` C-contiguous (the same object when it already is)."""
        return _arrays.ascontiguous(x)

    # ----- statistics -----------------------------------------------------------
    def channel_moments(self, x: Any) -> tuple[Any, Any]:
        """Per-channel float64 mean and biased variance of ``(N, C, L)`` data."""
        return _batchnorm.channel_moments(x)

    def row_moments(self, x: Any) -> tuple[Any, Any]:
        """Per-row float64 mean and biased variance of ``(R, D)`` data."""
        return _layernorm.row_moments(x)

    # ----- forward transforms ---------------------------------------------------
    def channel_affine(self, x: Any, mean: Any, scale: Any, shift: Any, out: Any) -> Any:
        """Write ``x * scale[c] + shift[c]`` per channel into ``out``."""
        return _batchnorm.channel_affine(x, mean, scale, shift, out)

    def layer_norm_forward(
        self, x: Any, weight: Any | None, bias: Any | None, eps: float, out: Any
    ) -> tuple[Any, Any, Any]:
        """Fused LayerNorm of ``(R, D)`` rows into ``out``; return ``(out, mean, rstd)``."""
        return _layernorm.layer_norm_forward(x, weight, bias, eps, out)

    def batch_norm_forward(
        self,
        x: Any,
        running_mean: Any | None,
        running_var: Any | None,
        weight: Any | None,
        bias: Any | None,
        use_batch: bool,
        update: bool,
        momentum: float,
        eps: float,
        out: Any,
        counter: Any | None = None,
    ) -> tuple[Any, Any, Any]:
        """Whole BatchNorm forward of ``(N, C, L)`` data in two or three launches.

        Batch statistics when ``use_batch`` (else the running ones), the running
        statistics updated in place on the device when ``update`` (and the layer's
        ``counter``, ``num_batches_tracked``, incremented when given), weight and
        bias folded in by a kernel: no per-channel vector arithmetic on the host.
        Return ``(out, mean, rstd)`` with float64 statistics.
        """
        return _batchnorm.batch_norm_forward(
            x, running_mean, running_var, weight, bias, use_batch, update, momentum, eps, out,
            counter,
        )  # fmt: skip

    def dropout_add_layer_norm_forward(
        self,
        x: Any,
        residual: Any | None,
        weight: Any | None,
        bias: Any | None,
        eps: float,
        threshold: int | None,
        scale: Any,
        seed: int | None,
        call: int,
        out: Any,
        r_out: Any,
        bitmask: Any | None,
        offset: int = 0,
    ) -> tuple[Any, Any, Any, Any]:
        """Dropout, residual add and LayerNorm of ``(R, D)`` rows in one kernel.

        Returns ``(out, r_out, mean, rstd)``.
        """
        return _dropout_add_norm.dropout_add_layer_norm_forward(
            x, residual, weight, bias, eps, threshold, scale, seed, call, out, r_out, bitmask,
            offset,
        )  # fmt: skip

    # ----- backward -------------------------------------------------------------
    def channel_backward_reduce(self, dy: Any, x: Any, mean: Any) -> tuple[Any, Any]:
        """Per channel, float64 ``sum(dy)`` and ``sum((x - mean) * dy)``."""
        return _batchnorm_backward.channel_backward_reduce(dy, x, mean)

    def channel_backward_elemt(
        self, dy: Any, x: Any, mean: Any, a: Any, b: Any, c: Any, out: Any
    ) -> Any:
        """Write ``a[c] * dy + b[c] * (x - mean[c]) + c[c]`` per channel into ``out``."""
        return _batchnorm_backward.channel_backward_elemt(dy, x, mean, a, b, c, out)

    #: Whole BatchNorm backward in three launches, no vector arithmetic on the host:
    #: ``(dy, x, mean, rstd, weight, training, out, accumulate=None) -> (out, dweight, dbias)``.
    batch_norm_backward = staticmethod(_batchnorm_backward.batch_norm_backward)

    def layer_norm_backward(
        self,
        dy: Any,
        x: Any,
        mean: Any,
        rstd: Any,
        weight: Any | None,
        out: Any,
        param_grads: bool,
        accumulate: tuple[Any, Any] | None = None,
    ) -> tuple[Any, Any | None, Any | None]:
        """LayerNorm input gradient into ``out``; return ``(out, dweight, dbias)``.

        The parameter gradients are ``None`` unless ``param_grads``; float64, or
        added into ``accumulate``'s pair (a layer's gradient buffers) when given.
        """
        return _layernorm.layer_norm_backward(
            dy, x, mean, rstd, weight, out, param_grads, accumulate
        )

    # ----- dropout --------------------------------------------------------------
    def philox_words(self, n: int, seed: int, call: int, offset: int = 0) -> Any:
        """The uint32 Philox words of elements ``offset .. offset + n - 1``."""
        return _dropout.philox_words(n, seed, call, offset)

    def dropout_forward(
        self,
        x: Any,
        threshold: int,
        scale: Any,
        seed: int,
        call: int,
        out: Any,
        bitmask: Any | None,
        offset: int = 0,
    ) -> Any:
        """Write inverted dropout of ``x`` (C order, global element ``offset + j``) into ``out``.

        Also pack the keep-mask into ``bitmask`` when given (only with ``offset == 0``).
        """
        return _dropout.dropout_forward(x, threshold, scale, seed, call, out, bitmask, offset)

    def dropout_mask(self, n: int, threshold: int, seed: int, call: int) -> Any:
        """The boolean keep-mask of ``n`` elements."""
        return _dropout.dropout_mask(n, threshold, seed, call)

    def dropout_apply_bitmask(self, dy: Any, bitmask: Any, scale: Any, out: Any) -> Any:
        """Write ``dy * scale`` where the packed bitmask is set and 0 elsewhere into ``out``."""
        return _dropout.dropout_apply_bitmask(dy, bitmask, scale, out)

    def __repr__(self) -> str:
        return f"<normdrop cuda backend{' (CUDA simulator)' if self.simulator else ''}>"
