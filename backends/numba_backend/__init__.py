"""The ``numba`` backend: parallel Numba CPU kernels on NumPy arrays.

Importing this package imports Numba; :mod:`normdrop` does so only when the
registry first loads the backend. Kernels compile on first use (once per dtype)
and are cached on disk.
"""

from .backend import NumbaBackend, backend

__all__ = ["NumbaBackend", "backend"]
