"""Where Numba caches normdrop's kernels: the user's cache folder, never the installed package.

Numba's default is a ``__pycache__`` folder next to the source, which writes
into site-packages (files that ``pip uninstall`` does not know about) and fails
on a read-only install. :func:`kernel_cache_folder` picks the folder instead,
in this order: ``NUMBA_CACHE_DIR`` (Numba's own setting; the same subfolder
Numba would use there), then normdrop's per-version folder (:mod:`normdrop._cache`).
The :class:`KernelCacheLocator` that points Numba at it answers only for the files
of this package, and stamps every kernel with a hash of the whole folder's
sources: a change to a helper that a kernel inlines recompiles the kernel, and
a cache built from the same sources elsewhere (the kernels a wheel build
compiled, see :mod:`.precompiled`) is loaded. Once per process, before any kernel loads,
those precompiled kernels are copied into the folder. When no folder is writable,
the kernels are not cached on disk (one warning) and every process compiles them
again.
"""

from __future__ import annotations

import functools
import hashlib
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

    def get_source_stamp(self) -> tuple[str, str]:
        """Return a SHA-256 of every source file of the kernels' folder, wherever it is installed.

        Numba's own stamp covers only the file that defines the function (its
        modification time and size before Numba 0.68, numba/numba#10659). That
        misses two cases: a reinstalled or copied file gets a new time (so the
        kernels a wheel build compiled would never load), and a kernel that
        inlines helpers from another file of this folder keeps its stale machine
        code when only that other file changes. Hashing the whole folder's
        sources covers both: any change to any kernel source recompiles them all.
        """
        return ("sha256-kernels", _kernel_sources_hash())

    @classmethod
    def from_function(cls, py_func, py_file):
        """Return a locator for a function of this package, None for any other."""
        if cls.folder is None or os.path.dirname(os.path.realpath(py_file)) != _KERNEL_DIR:
            return None
        return super().from_function(py_func, py_file)


@functools.cache
def _kernel_sources_hash() -> str:
    """SHA-256 over the names and bytes of this folder's ``.py`` files (once per process)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(_KERNEL_DIR)):
        if name.endswith(".py"):
            digest.update(name.encode() + b"\0")
            with open(os.path.join(_KERNEL_DIR, name), "rb") as file:
                digest.update(hashlib.sha256(file.read()).digest())
    return digest.hexdigest()


def _register_locator() -> None:
    """Put :class:`KernelCacheLocator` first, before Numba's ``NUMBA_CACHE_DIR`` locator."""
    locators = _CACHE_IMPL._locator_classes
    if KernelCacheLocator not in locators:
        locators.insert(0, KernelCacheLocator)


def _use(folder: Path) -> Path:
    """Point :class:`KernelCacheLocator` at ``folder`` and seed it with precompiled kernels."""
    from . import precompiled

    KernelCacheLocator.folder = folder
    _register_locator()
    try:
        precompiled.seed(folder)
    except OSError:  # a full disk or a vanished file: the kernels compile instead
        pass
    return folder


@functools.cache
def kernel_cache_folder() -> Path | None:
    """Return the folder Numba caches this package's kernels in, or None if nowhere is writable.

    The first call decides for the whole process (the kernels' ``cache=`` option
    depends on it), registers :class:`KernelCacheLocator` for the folder, copies
    the package's precompiled kernels into it (:func:`.precompiled.seed`), and
    warns once when no folder is writable.

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
            return _use(numba_folder)
        refused.append(f"{_cache.NUMBA_ENV_VAR}: {error}")
    folder = _cache.kernel_cache_dir(numba.__version__)
    if folder is None:
        refused.append("no home folder to put a cache folder in")
    else:
        error = _cache.ensure_writable(folder)
        if error is None:
            return _use(folder)
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
