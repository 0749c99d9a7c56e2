"""The elementwise-affine parameters of the layers that normalise trailing dimensions."""

from __future__ import annotations

from typing import Any

import numpy as np

from normdrop import _validation
from normdrop.layers._properties import parameter_property
from normdrop.protocol import Array

__all__ = ["RowAffine", "row_affine_options"]

#: ``(normalized_shape, eps, elementwise_affine, use_bias, dtype)``, validated.
RowAffineOptions = tuple[tuple[int, ...], float, bool, bool, np.dtype]


def row_affine_options(
    normalized_shape: Any, eps: Any, elementwise_affine: Any, bias: Any, dtype: Any
) -> RowAffineOptions:
    """LayerNorm's constructor options, validated (each failure: InvalidParameterError)."""
    return (
        _validation.normalized_shape(normalized_shape),
        _validation.positive_finite("eps", eps),
        _validation.boolean("elementwise_affine", elementwise_affine),
        _validation.boolean("bias", bias),
        _validation.param_dtype(dtype),
    )


class RowAffine:
    """Mixin for :class:`~normdrop.layers.Module` subclasses with LayerNorm's parameters.

    ``weight`` (ones) and ``bias`` (zeros) of shape ``normalized_shape``, registered
    under LayerNorm's keys so that PyTorch LayerNorm checkpoints load; either may be
    ``None`` (see :meth:`_init_row_affine`).
    """

    _parameters: dict[str, Array | None]
    normalized_shape: tuple[int, ...]
    eps: float
    elementwise_affine: bool
    dtype: np.dtype

    def _init_row_affine(self, options: RowAffineOptions) -> None:
        """Keep the options of :func:`row_affine_options`; register ``weight`` (with
        ``elementwise_affine``) and ``bias`` (with both flags)."""
        normalized_shape, self.eps, elementwise_affine, use_bias, dtype = options
        self.normalized_shape, self.elementwise_affine = normalized_shape, elementwise_affine
        self.dtype = dtype
        weight = np.ones(normalized_shape, dtype) if elementwise_affine else None
        has_bias = elementwise_affine and use_bias
        self.register_parameter("weight", weight)  # type: ignore[attr-defined]
        self.register_parameter(  # type: ignore[attr-defined]
            "bias", np.zeros(normalized_shape, dtype) if has_bias else None
        )

    weight = parameter_property(
        "weight",
        "Scale per element of ``normalized_shape``, or ``None`` without elementwise affine.",
    )
    bias = parameter_property(
        "bias", "Shift per element of ``normalized_shape``, or ``None`` (see ``bias=``)."
    )

    def _affine_grads(self, dweight: Array | None, dbias: Array | None) -> dict[str, Array]:
        """The parameter gradients keyed by name, for the parameters the layer has."""
        grads = {}
        if self.weight is not None:
            grads["weight"] = dweight
        if self.bias is not None:
            grads["bias"] = dbias
        return grads

    def reset_parameters(self) -> None:
        """Reset ``weight`` to ones and ``bias`` to zeros."""
        self._fill(weight=1, bias=0)  # type: ignore[attr-defined]
