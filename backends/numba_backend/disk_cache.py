"""Where Numba caches normdrop's kernels: the user's cache folder, never the installed package.

Numba's default is a ``__pycache__`` folder next to the source, which writes
into site-packages (files that ``pip uninstall`` does not know about) and fails
on a read-only install. :func:`kernel_cache_folder` picks the folder instead,
in this order: ``NUMBA_CACHE_DIR`` (Numba's own setting, which Numba applies
itself), then normdrop's per-version folder (:mod:`normdrop._cache`). The
:class:`KernelCacheLocator` that points Numba at the latter answers only for
the files of this package. When no folder is writable, the kernels are not
cached on disk (one warning) and every process compiles them again.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numba
from numba.core import caching, config

from normdrop import _cache

__all__ = ["KernelCacheLocator", "kernel_cache_folder"]

_KERNEL_DIR = os.path.dirname(os.path.realpath(__file__))

# Numba's base class of the cache implementations, whose list of locators it tries in order
# (``_CacheImpl`` before Numba 0.61).
_CACHE_IMPL = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # type: ignore[attr-defined]


class KernelCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Numba cache locator for this package's kernels: the folder of :func:`kernel_cache_folder`.

    For a function defined anywhere else, :meth:`from_function` returns None and
    Numba tries its next locator, so other code's caching is untouched.
    """

    #: The folder the kernels are cached in; set by :func:`kernel_cache_folder`.
    folder: Path | None = None

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno

    def get_cache_path(self) -> str:
        """Return the folder the function's index and data files go to."""
        return str(self.folder)

    @classmethod
    def from_function(cls, py_func, py_file):
        """Return a locator for a function of this package, None for any other."""
        if cls.folder is None or os.path.dirname(os.path.realpath(py_file)) != _KERNEL_DIR:
            return None
        return super().from_function(py_func, py_file)


def _register_locator() -> None:
    """Put :class:`KernelCacheLocator` right after Numba's ``NUMBA_CACHE_DIR`` locator."""
    locators = _CACHE_IMPL._locator_classes
    if KernelCacheLocator in locators:
        return
    after = caching.UserProvidedCacheLocator
    locators.insert(locators.index(after) + 1 if after in locators else 0, KernelCacheLocator)


@functools.cache
def kernel_cache_folder() -> Path | None:
    """Return the folder Numba caches this package's kernels in, or None if nowhere is writable.

    The first call decides for the whole process (the kernels' ``cache=`` option
    depends on it), registers :class:`KernelCacheLocator` when normdrop's own
    folder is used, and warns once when no folder is writable.

    Returns
    -------
    pathlib.Path or None
        ``$NUMBA_CACHE_DIR/<Numba's subfolder for this package>`` when that is set
        and writable, else normdrop's per-version folder when writable, else None.
    """
    refused = []
    numba_dir = getattr(config, "CACHE_DIR", "")  # NUMBA_CACHE_DIR, as Numba read it
    if numba_dir:
        subfolder = caching._CacheLocator.get_suitable_cache_subpath(__file__)
        numba_folder = Path(numba_dir) / subfolder
        error = _cache.ensure_writable(numba_folder)
        if error is None:
            return numba_folder
        refused.append(f"{_cache.NUMBA_ENV_VAR}: {error}")
    folder = _cache.kernel_cache_dir(numba.__version__)
    if folder is None:
        refused.append("no home folder to put a cache folder in")
    else:
        error = _cache.ensure_writable(folder)
        if error is None:
            KernelCacheLocator.folder = folder
            _register_locator()
            return folder
        refused.append(str(error))
    message = (
        "normdrop found no writable folder for its compiled Numba kernels ("
        + "; ".join(refused)
        + "), so they are not cached on disk and every new process compiles them again. "
        f"Set {_cache.ENV_VAR} to a writable folder to keep them."
    )
    # Attributed to the module "normdrop" (no source line to show; `-W ignore:::normdrop`
    # or a filter on that module silences it), not to whichever import first loaded us.
    warnings.warn_explicit(message, RuntimeWarning, "normdrop", 0, module="normdrop")
    return None
