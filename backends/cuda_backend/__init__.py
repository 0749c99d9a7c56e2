"""The ``cuda`` backend: numba.cuda kernels on CuPy (or any ``__cuda_array_interface__``) arrays.

Modules, one job each:

* ``_runtime``: numba-cuda import, simulator switch, CuPy, streams, launch sizes;
* ``_arrays``: which arrays are accepted, allocation, host <-> device moves;
* ``_reduce``: Welford/Chan merges, shared-memory trees, partial-buffer merges;
* ``_batchnorm``, ``_layernorm``, ``_dropout``: the kernels and their launches;
* ``_backend``: the :class:`CudaBackend` object the registry loads.

Importing raises :class:`ImportError` when numba-cuda is missing or, outside the
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), when there is no GPU or no CuPy.
"""

from ._backend import CudaBackend

__all__ = ["CudaBackend", "backend"]

backend = CudaBackend()
