"""LayerNorm: per-sample normalisation over the trailing dimensions."""

from __future__ import annotations

from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np

from normdrop import _validation
from normdrop._docstrings import fill_doc
from normdrop._ops import _inputs, layer_norm
from normdrop.layers._row_affine import RowAffine, row_affine_options
from normdrop.layers.module import Module
from normdrop.protocol import Array, ArrayT, Backend
from normdrop.registry import resolve_backend

__all__ = ["LayerNorm"]


@fill_doc
class LayerNorm(RowAffine, Module):
    """Layer normalisation over the trailing ``normalized_shape`` dims, as ``torch.nn.LayerNorm``.

    Identical in training and evaluation.

    Parameters
    ----------
    %(layer.normalized_shape)s
    %(layer.eps)s
    %(layer.elementwise_affine)s
    dtype : {"float32", "float64"}, default "float32"
        Dtype of the parameters.
    %(layer.backend)s

    Attributes
    ----------
    weight : array of shape normalized_shape or None
    bias : array of shape normalized_shape or None
    %(layer.grads)s

    Examples
    --------
    >>> import numpy as np
    >>> import normdrop
    >>> normdrop.LayerNorm(3)(np.array([[1.0, 2.0, 4.0]])).round(4)
    array([[-1.069 , -0.2673,  1.3363]])
    """

    _plan_attributes = Module._plan_attributes | {"eps"}
    _attribute_checks = MappingProxyType({"eps": partial(_validation.positive_finite, "eps")})

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: str | np.dtype = "float32",
        backend: str | Backend | None = None,
    ) -> None:
        options = row_affine_options(normalized_shape, eps, elementwise_affine, bias, dtype)
        super().__init__(backend)
        self._init_row_affine(options)

    def forward(self, x: ArrayT) -> ArrayT:
        """Normalise each sample of ``x`` over its trailing ``normalized_shape`` dims.

        Parameters
        ----------
        x : array
            Its trailing dimensions equal ``normalized_shape``.

        Returns
        -------
        array
            Shape and dtype of ``x``.
        """
        y = self._forward_bound(x)  # bound by layer_norm.forward
        if y is not None:
            return y
        plan = self._plan
        if type(x) is np.ndarray and x.dtype in _inputs.FLOAT_DTYPES:  # prepare's fast path
            be = resolve_backend(x, self._backend_choice)
        else:
            be, x = _inputs.prepare("x", x, self._backend_choice)
        if plan is None or plan.backend is not be:
            plan = layer_norm.make_plan(be, self.normalized_shape, self.weight, self.bias, self.eps)
            self.__dict__["_plan"] = plan
        y, mean, rstd = layer_norm.forward(plan, x)
        self.__dict__["_saved"] = (x, mean, rstd, plan)  # save_for_backward, inlined
        return y

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
        if (
            plan.accumulates
            and self.bias is not None
            and plan.backend.device == self._array_backend.device
        ):
            # the backend's column-sum kernel adds the parameter gradients into the buffers
            buffers = (self._grads["weight"], self._grads["bias"])
            return layer_norm.backward(plan, grad_output, x, mean, rstd, None, buffers)[0], {}
        dx, dweight, dbias = layer_norm.backward(plan, grad_output, x, mean, rstd)
        return dx, self._affine_grads(dweight, dbias)

    def extra_repr(self) -> str:
        """The constructor arguments in PyTorch's format (``repr`` shows them)."""
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )
