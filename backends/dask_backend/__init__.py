"""The ``dask`` backend: normalisation and dropout on arrays larger than memory.

Dask arrays in, Dask arrays out. Each block runs the kernels of an in-memory
CPU backend (``numba`` when it loads, else ``numpy``), chosen when the graph is
built: context such as :func:`normdrop.use_backend` does not reach workers.

* BatchNorm statistics are a tree reduction over chunks: each chunk gives
  float64 ``(n, mean, M2)`` per channel, merged with Chan's formula. They are
  computed when called (running statistics must be updated); every
  element-wise transform stays lazy and blockwise.
* LayerNorm needs whole normalised dimensions per chunk; Dask's reshape and a
  rechunk of those dimensions only provide them.
* Dropout is blockwise: every block knows its global C-order element offsets,
  so masks equal the in-memory ones bit for bit whatever the chunking.
* No packed bitmask is kept: the backward regenerates the mask from
  ``(seed, call)``.
"""

from __future__ import annotations

from ._backend import DaskBackend

__all__ = ["DaskBackend", "backend"]

backend = DaskBackend()
