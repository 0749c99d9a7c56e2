"""Stateful layers: thin wrappers over :mod:`normdrop.functional`."""

from normdrop.layers.batchnorm import BatchNorm1d
from normdrop.layers.container import Sequential
from normdrop.layers.dropout import Dropout
from normdrop.layers.dropout_add_layernorm import DropoutAddLayerNorm
from normdrop.layers.layernorm import LayerNorm
from normdrop.layers.module import IncompatibleKeys, Module

__all__ = [
    "BatchNorm1d",
    "Dropout",
    "DropoutAddLayerNorm",
    "IncompatibleKeys",
    "LayerNorm",
    "Module",
    "Sequential",
]
