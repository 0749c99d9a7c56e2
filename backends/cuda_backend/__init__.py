"""The ``cuda`` backend: numba.cuda kernels on CuPy (or any ``__cuda_array_interface__``) arrays.

Modules, one job each:

* ``_runtime``: numba-cuda import, simulator switch, CuPy, streams, launch sizes;
* ``_arrays``: which arrays are accepted, allocation, host <-> device moves;
* ``_reduce``: shifted-sum moments, shared-memory trees, column sums of partial sums;
* ``_channels``: the ``(N, C, L)`` walk and the partial-sums kernel BatchNorm shares;
* ``_batchnorm``, ``_batchnorm_backward``, ``_layernorm``, ``_dropout``,
  ``_dropout_add_norm``: the kernels and their launches;
* ``_signatures``: every argument-type combination the launches pass (checked, compiled);
* ``_backend``: the :class:`CudaBackend` object the registry loads.

Importing raises :class:`ImportError` when numba-cuda is missing or, outside the
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), when there is no GPU or no CuPy.
"""

from ._backend import CudaBackend

__all__ = ["CudaBackend", "backend"]

backend = CudaBackend()
