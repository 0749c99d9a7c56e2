"""Stateless functional API: validate the arguments, plan, run the kernels.

The layers in :mod:`normdrop.layers` are thin wrappers over the same plans and
kernels (:mod:`normdrop._ops`). Every function takes keyword-only ``out=`` (an
array to write the result into, which may be the input itself) and ``backend=``
(a name or backend object; see :mod:`normdrop.registry` for how the default is
chosen). Each forward function returns one value (two for
:func:`dropout_add_layer_norm`); its ``*_with_stats`` / ``*_with_bitmask`` twin
also returns what the backward function takes.
"""

from __future__ import annotations

from normdrop._ops.batch_norm_api import batch_norm, batch_norm_backward, batch_norm_with_stats
from normdrop._ops.dropout_api import (
    dropout,
    dropout_backward,
    dropout_mask,
    dropout_with_bitmask,
)
from normdrop._ops.fused_api import (
    dropout_add_layer_norm,
    dropout_add_layer_norm_backward,
    dropout_add_layer_norm_with_stats,
)
from normdrop._ops.layer_norm_api import layer_norm, layer_norm_backward, layer_norm_with_stats

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_with_stats",
    "dropout",
    "dropout_add_layer_norm",
    "dropout_add_layer_norm_backward",
    "dropout_add_layer_norm_with_stats",
    "dropout_backward",
    "dropout_mask",
    "dropout_with_bitmask",
    "layer_norm",
    "layer_norm_backward",
    "layer_norm_with_stats",
]
