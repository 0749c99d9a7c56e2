"""Stateful layers: thin wrappers over :mod:`normdrop.functional`."""

from normdrop.layers.batchnorm import BatchNorm1d
from normdrop.layers.container import Sequential
from normdrop.layers.dropout import Dropout
from normdrop.layers.layernorm import LayerNorm
from normdrop.layers.module import IncompatibleKeys, Module

__all__ = ["BatchNorm1d", "Dropout", "IncompatibleKeys", "LayerNorm", "Module", "Sequential"]
