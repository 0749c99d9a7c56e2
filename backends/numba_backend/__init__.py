"""The ``numba`` backend: parallel Numba CPU kernels on NumPy arrays.

Importing this package imports Numba; :mod:`normdrop` does so only when the
registry first loads the backend. Kernels compile on first use (once per dtype)
and are cached on disk. Loading it picks a fork- and thread-safe Numba threading
layer unless the user chose one (see :mod:`.threading_layer`).
"""

from . import threading_layer

threading_layer.configure()  # before anything starts Numba's threads

from .backend import NumbaBackend, backend  # noqa: E402

threading_layer.serialise_under_workqueue(backend)

__all__ = ["NumbaBackend", "backend"]
