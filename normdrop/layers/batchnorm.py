"""BatchNorm1d: per-channel normalisation with running statistics."""

from __future__ import annotations

from functools import partial
from types import MappingProxyType
from typing import Any, cast

import numpy as np

from normdrop import _validation
from normdrop._docstrings import fill_doc
from normdrop._ops import _inputs, batch_norm
from normdrop.errors import InvalidParameterError, ShapeError
from normdrop.layers._properties import buffer_property, parameter_property
from normdrop.layers.module import Module
from normdrop.protocol import Array, ArrayT, Backend
from normdrop.registry import resolve_backend

__all__ = ["BatchNorm1d"]


@fill_doc
class BatchNorm1d(Module):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` data, as ``torch.nn.BatchNorm1d``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel, with the
    batch's statistics in training (updating the running ones) and the running
    statistics in evaluation.

    Parameters
    ----------
    num_features : int
        Number of channels C.
    %(layer.eps)s
    momentum : float or None, default 0.1
        Weight of each batch in the running statistics, in [0, 1]; ``None`` for a
        cumulative moving average (``1 / num_batches_tracked``).
    affine : bool, default True
        Learn ``weight`` and ``bias``.
    track_running_stats : bool, default True
        Keep running statistics; without them batch statistics are always used.
    dtype : {"float32", "float64"}, default "float32"
        Dtype of parameters and buffers.
    %(layer.backend)s

    Attributes
    ----------
    weight, bias : array of shape (C,) or None
        Affine parameters (ones and zeros at first); ``None`` without ``affine``.
    running_mean, running_var : array of shape (C,) or None
        Running statistics (zeros and ones at first); ``None`` without tracking.
    num_batches_tracked : 0-d int64 array or None
        Training calls that updated the running statistics.
    %(layer.grads)s

    Examples
    --------
    >>> import numpy as np
    >>> import normdrop
    >>> bn = normdrop.BatchNorm1d(2, dtype="float64")
    >>> y = bn(np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]]))
    >>> bn.running_mean
    array([0.3, 0.5])
    """

    _optional_state_keys = frozenset({"num_batches_tracked"})
    _plan_attributes = Module._plan_attributes | {"eps", "momentum", "track_running_stats"}
    _attribute_checks = MappingProxyType(
        {
            "eps": partial(_validation.positive_finite, "eps"),
            "momentum": partial(_validation.momentum, allow_none=True),
            "track_running_stats": partial(_validation.boolean, "track_running_stats"),
        }
    )

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        dtype: str | np.dtype = "float32",
        backend: str | Backend | None = None,
    ) -> None:
        num_features = _validation.positive_int("num_features", num_features)
        eps = _validation.positive_finite("eps", eps)
        momentum = _validation.momentum(momentum, allow_none=True)
        affine = _validation.boolean("affine", affine)
        track_running_stats = _validation.boolean("track_running_stats", track_running_stats)
        dtype = _validation.param_dtype(dtype)
        super().__init__(backend)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.dtype = dtype
        c, track = num_features, track_running_stats
        self.register_parameter("weight", np.ones(c, dtype) if affine else None)
        self.register_parameter("bias", np.zeros(c, dtype) if affine else None)
        self.register_buffer("running_mean", np.zeros(c, dtype) if track else None)
        self.register_buffer("running_var", np.ones(c, dtype) if track else None)
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64) if track else None)

    weight = parameter_property(
        "weight", "Scale per channel (gamma), or ``None`` without ``affine``."
    )
    bias = parameter_property("bias", "Shift per channel (beta), or ``None`` without ``affine``.")
    running_mean = buffer_property(
        "running_mean", "Running mean per channel, or ``None`` without tracking."
    )
    running_var = buffer_property(
        "running_var", "Running unbiased variance per channel, or ``None`` without tracking."
    )
    num_batches_tracked = buffer_property(
        "num_batches_tracked",
        "0-d int64 count of tracked training calls, or ``None`` without tracking.",
    )

    def reset_running_stats(self) -> None:
        """Set running statistics back to zeros, ones and a count of 0."""
        self._fill(running_mean=0, running_var=1, num_batches_tracked=0)

    def reset_parameters(self) -> None:
        """Reset running statistics, ``weight`` to ones and ``bias`` to zeros."""
        self.reset_running_stats()
        self._fill(weight=1, bias=0)

    def forward(self, x: ArrayT) -> ArrayT:
        """Normalise ``x`` of shape ``(N, C)`` or ``(N, C, L)``.

        Parameters
        ----------
        x : array of shape (N, C) or (N, C, L)
            ``C`` is ``num_features``.

        Returns
        -------
        array
            ``x`` normalised per channel, in its shape and dtype.
        """
        y = self._forward_bound(x)  # bound by forward_ready, with the plan's own momentum
        plan = self._plan
        if y is not None:
            if plan.update:
                batch_norm.add_one(self._buffers["num_batches_tracked"])
            return y
        if (  # the common case, in few operations: C-contiguous float32/float64 data
            type(x) is np.ndarray
            and x.dtype in _inputs.KERNEL_DTYPES
            and x.flags.c_contiguous  # type: ignore[attr-defined]
            and 2 <= x.ndim <= 3
            and x.shape[1] == self.num_features
        ):
            be = resolve_backend(x, self._backend_choice)
            shape = x.shape
            count = shape[0] if len(shape) == 2 else shape[0] * shape[2]
        else:
            be, x = self._checked_input(x)
            count = 0  # the general path below
        if plan is None or plan.backend is not be:
            plan = self._make_plan(be)
        momentum = None
        tracked = self._buffers["num_batches_tracked"]
        if plan.update and self.momentum is None:  # cumulative moving average
            momentum = _cumulative_momentum(int(tracked))
        if count >= 2 and plan.fused:
            y, mean, rstd = batch_norm.forward_ready(plan, cast(np.ndarray, x), momentum, tracked)
        else:
            # the kernel adds 1 to the count in the launch that updates the running
            # statistics where the backend takes a counter (else forward adds it after)
            y, mean, rstd = batch_norm.forward(plan, x, None, momentum, tracked)
        self.__dict__["_saved"] = (x, mean, rstd, plan)  # save_for_backward, inlined
        return y

    def _checked_input(self, x: Any) -> tuple[Backend, Array]:
        """Check any input: the channel count, kind, dtype and rank; return its backend and
        the data as an array."""
        if type(x) is not np.ndarray:
            x = _inputs.coerce(x)  # a ragged list raises ShapeError here, not in np.shape
        shape = x.shape if type(x) is np.ndarray else np.shape(x)
        if len(shape) in (2, 3) and shape[1] != self.num_features:
            raise ShapeError(
                f"BatchNorm1d({self.num_features}) expected input with {self.num_features} "
                f"channels, (N, {self.num_features}) or (N, {self.num_features}, L), "
                f"got shape {tuple(shape)}"
            )
        be, x = _inputs.prepare("x", x, self._backend_choice)
        batch_norm.batch_shape(x, layer=True)
        return be, x

    def _make_plan(self, be: Backend) -> batch_norm.BatchNormPlan:
        """The plan of this layer's parameters, mode and options on backend ``be``."""
        # PyTorch's rule, which decides by the buffers, not by the flag alone: after
        # ``bn.track_running_stats = False`` on a layer that has running statistics,
        # evaluation still reads them and training leaves them alone; a layer built
        # without them uses batch statistics in both modes, whatever the flag says later
        has_running = self.running_mean is not None and self.running_var is not None
        use_batch = self.training or not has_running
        update = self.training and self.track_running_stats and has_running
        running = update or not use_batch
        plan = batch_norm.make_plan(
            be,
            self.weight,
            self.bias,
            self.running_mean if running else None,
            self.running_var if running else None,
            use_batch,
            update,
            0.0 if self.momentum is None else self.momentum,
            self.eps,
        )
        if be.device != self._array_backend.device:  # buffers elsewhere: no kernel updates them
            plan = plan._replace(counts=False, accumulates=False)
        self.__dict__["_plan"] = plan
        return plan

    @fill_doc
    def compute_backward(self, grad_output: Array, *saved: Any) -> tuple[Array, dict[str, Array]]:
        """Input and parameter gradients of the forward pass that saved ``saved``.

        Parameters
        ----------
        %(layer.compute_backward)s

        Returns
        -------
        %(layer.norm_gradients)s
        """
        x, mean, rstd, plan = saved
        grad_output = _inputs.prepare_grad(plan.backend, grad_output, x)
        if plan.accumulates and self.affine:
            # the backend's kernel adds the parameter gradients into the buffers itself
            buffers = (self._grads["weight"], self._grads["bias"])
            dx = batch_norm.backward(
                plan, grad_output, x, mean, rstd, plan.use_batch, None, buffers
            )[0]
            return dx, {}
        dx, dweight, dbias = batch_norm.backward(plan, grad_output, x, mean, rstd, plan.use_batch)
        return dx, ({"weight": dweight, "bias": dbias} if self.affine else {})

    def extra_repr(self) -> str:
        """The constructor arguments in PyTorch's format (``repr`` shows them)."""
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


def _cumulative_momentum(tracked: int) -> float:
    """The weight of this call's batch in the cumulative average over ``tracked + 1`` batches.

    Raises
    ------
    InvalidParameterError
        ``tracked`` (a layer's ``num_batches_tracked``, set by hand or loaded) is negative,
        which would divide by zero or give a negative weight.
    """
    if tracked < 0:
        raise InvalidParameterError(
            f"num_batches_tracked is {tracked}: BatchNorm1d(momentum=None) averages the "
            "running statistics over num_batches_tracked + 1 batches, so it must be >= 0 "
            "(reset it with reset_running_stats())",
            parameter_name="num_batches_tracked",
            value=tracked,
        )
    return 1.0 / (tracked + 1)
