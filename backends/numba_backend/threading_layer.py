"""Make Numba's parallel kernels safe under ``fork`` and under user threads.

Numba runs ``prange`` loops on one of three threading layers, chosen once per
process when the first parallel kernel runs:

- ``tbb`` (Intel oneTBB): safe to use from several threads and across
  ``fork``; normdrop depends on the ``tbb`` wheel where PyPI has one;
- ``omp`` (GNU OpenMP on Linux): thread-safe, but a process forked after it
  started its threads is terminated (``fork() called from a process already
  using GNU OpenMP``), which hangs a ``multiprocessing`` fork pool;
- ``workqueue``: fork-safe, but two threads launching parallel kernels at once
  abort the process (``Concurrent access has been detected``).

When the numba backend is first loaded (not at ``import normdrop``), and only
if the user has not chosen a layer (``NUMBA_THREADING_LAYER`` or
``NUMBA_THREADING_LAYER_PRIORITY`` in the environment, or
``numba.config.THREADING_LAYER`` / ``THREADING_LAYER_PRIORITY`` changed from
their defaults) and Numba has not started its threads yet, normdrop asks Numba
for its ``"safe"`` layer (tbb) when tbb loads, else for ``"forksafe"``
(workqueue on Linux). Under ``workqueue``, whoever chose it, the backend's
kernel launches are serialised by one lock, so threads calling normdrop wait for
each other instead of aborting the process.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import sys
import threading
import types
from collections.abc import Callable
from importlib import metadata
from typing import Any

from numba.core import config as _numba_config
from numba.np.ufunc import parallel

#: Numba's settings module; its attributes are set at run time, so typed as Any.
config: Any = _numba_config

__all__ = ["configure", "launch_lock", "serialise_under_workqueue"]

_ENV_VARS = ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")
_DEFAULT_PRIORITY = ["tbb", "omp", "workqueue"]

#: Held around every kernel launch of the numba backend under the workqueue layer.
launch_lock = threading.Lock()


def _libtbb_name() -> str | None:
    if sys.platform.startswith("linux"):
        return "libtbb.so.12"
    if sys.platform == "darwin":
        return "libtbb.12.dylib"
    return None  # Windows finds the wheel's DLLs itself


def _preload_tbb() -> None:
    """Load the ``tbb`` wheel's library so that Numba's ``tbbpool`` finds it.

    The wheel puts ``libtbb`` in ``<prefix>/lib``, which the dynamic loader does
    not search in a virtual environment; once loaded by path, later loads by its
    soname (Numba's) resolve to it.
    """
    name = _libtbb_name()
    if name is None:
        return
    try:
        files = metadata.distribution("tbb").files or []
    except metadata.PackageNotFoundError:
        return
    for file in files:
        if file.name == name:
            try:
                ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass
            return


def _tbb_usable() -> bool:
    try:
        parallel._check_tbb_version_compatible()
        importlib.import_module("numba.np.ufunc.tbbpool")
    except ImportError:
        return False
    return True


def _user_chose() -> bool:
    return (
        any(os.environ.get(var) for var in _ENV_VARS)
        or str(config.THREADING_LAYER).lower() != "default"
        or list(config.THREADING_LAYER_PRIORITY) != _DEFAULT_PRIORITY
    )


def configure() -> None:
    """Prefer a fork- and thread-safe threading layer, unless the user chose one.

    Call before Numba starts its threads; afterwards (or when the user chose a
    layer) it only makes the ``tbb`` wheel loadable.
    """
    if parallel._is_initialized:
        return
    _preload_tbb()
    if _user_chose():
        return
    config.THREADING_LAYER = "safe" if _tbb_usable() else "forksafe"


def threading_layer() -> str:
    """Start Numba's threads if needed and return the name of the layer in use.

    Returns
    -------
    str
        ``"tbb"``, ``"omp"`` or ``"workqueue"``.
    """
    parallel._launch_threads()
    return parallel.threading_layer()


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with launch_lock:
            return method(*args, **kwargs)

    return call


_decision_lock = threading.Lock()


def serialise_under_workqueue(backend: Any) -> Any:
    """Run ``backend``'s kernel methods under :data:`launch_lock` if the layer is workqueue.

    The kernel methods are the public functions defined in the backend's own class
    (not inherited array helpers). Until the first kernel call they go through a
    wrapper that starts Numba's threads (the first parallel kernel would), reads
    the layer, and then either removes itself (tbb, omp: no cost afterwards) or
    installs the locked methods (workqueue). Threads are not started at import,
    so a process that forks before its first kernel call stays safe to fork
    whatever the layer.

    Parameters
    ----------
    backend : object
        The backend instance; wrappers are instance attributes over its class's methods.

    Returns
    -------
    object
        ``backend`` itself.
    """
    names = [
        name
        for name, value in vars(type(backend)).items()
        if isinstance(value, types.FunctionType) and not name.startswith("_")
    ]

    def decide() -> None:
        with _decision_lock:
            if not any(name in vars(backend) for name in names):
                return  # decided by another thread meanwhile
            workqueue = threading_layer() == "workqueue"
            for name in names:
                method = getattr(type(backend), name).__get__(backend)
                if workqueue:
                    setattr(backend, name, _locked(method))
                else:
                    delattr(backend, name)

    def first_call(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            decide()
            return getattr(backend, name)(*args, **kwargs)

        return call

    for name in names:
        setattr(backend, name, first_call(name))
    return backend
