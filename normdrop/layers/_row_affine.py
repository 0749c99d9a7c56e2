"""The elementwise-affine parameters of the layers that normalise trailing dimensions."""

from __future__ import annotations

import numpy as np

from normdrop.protocol import Array

__all__ = ["RowAffine"]


class RowAffine:
    """Mixin for :class:`~normdrop.layers.Module` subclasses with LayerNorm's parameters.

    ``weight`` (ones) and ``bias`` (zeros) of shape ``normalized_shape``, registered
    under LayerNorm's keys so that PyTorch LayerNorm checkpoints load; either may be
    ``None`` (see :meth:`_register_row_affine`).
    """

    _parameters: dict[str, Array | None]

    def _register_row_affine(
        self,
        normalized_shape: tuple[int, ...],
        elementwise_affine: bool,
        use_bias: bool,
        dtype: np.dtype,
    ) -> None:
        """Register ``weight`` (with ``elementwise_affine``) and ``bias`` (with both flags)."""
        weight = np.ones(normalized_shape, dtype) if elementwise_affine else None
        has_bias = elementwise_affine and use_bias
        self.register_parameter("weight", weight)  # type: ignore[attr-defined]
        self.register_parameter(  # type: ignore[attr-defined]
            "bias", np.zeros(normalized_shape, dtype) if has_bias else None
        )

    @property
    def weight(self) -> Array | None:
        """Scale per element of ``normalized_shape``, or ``None`` without elementwise affine."""
        return self._parameters["weight"]

    @property
    def bias(self) -> Array | None:
        """Shift per element of ``normalized_shape``, or ``None`` (see ``bias=``)."""
        return self._parameters["bias"]

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
        if self.weight is not None:
            self.weight[...] = 1
        if self.bias is not None:
            self.bias[...] = 0
