"""normdrop: BatchNorm1d, LayerNorm and Dropout for NumPy-native code.

PyTorch's numbers without PyTorch, stable float64 statistics, dropout masks that
are identical on every backend, and Numba kernels on the CPU. ``import normdrop``
imports NumPy only; a backend's own dependencies load the first time it is used.
"""

from normdrop import functional
from normdrop._source_tree import map_backends
from normdrop.errors import (
    BackendArrayError,
    BackendError,
    BackendNotInstalledError,
    BackwardBeforeForwardError,
    DTypeError,
    InvalidParameterError,
    InvalidParameterTypeError,
    NormdropError,
    ShapeError,
    StateDictError,
    UnknownBackendError,
)
from normdrop.layers import (
    BatchNorm1d,
    Dropout,
    DropoutAddLayerNorm,
    IncompatibleKeys,
    LayerNorm,
    Module,
    Sequential,
)
from normdrop.protocol import Backend
from normdrop.random import manual_seed
from normdrop.registry import (
    available_backends,
    backend_status,
    get_backend,
    registered_backends,
    set_backend,
    use_backend,
)

__version__ = "0.1.0"

map_backends(__name__)

__all__ = [
    "Backend",
    "BackendArrayError",
    "BackendError",
    "BackendNotInstalledError",
    "BackwardBeforeForwardError",
    "BatchNorm1d",
    "DTypeError",
    "Dropout",
    "DropoutAddLayerNorm",
    "IncompatibleKeys",
    "InvalidParameterError",
    "InvalidParameterTypeError",
    "LayerNorm",
    "Module",
    "NormdropError",
    "Sequential",
    "ShapeError",
    "StateDictError",
    "UnknownBackendError",
    "__version__",
    "available_backends",
    "backend_status",
    "functional",
    "get_backend",
    "manual_seed",
    "registered_backends",
    "set_backend",
    "use_backend",
]
