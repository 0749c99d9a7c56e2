"""``normdrop cache``: where the compiled Numba kernels are cached, their size, and clearing them.

Reads the same settings as the ``numba`` backend (see :mod:`normdrop._cache`)
but creates nothing: ``normdrop cache info`` after ``normdrop cache clear``
finds an empty cache.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from normdrop import _cache

__all__ = ["KernelCacheLocation", "add_arguments", "describe_precompiled", "locate", "run"]


@dataclass(frozen=True)
class KernelCacheLocation:
    """Where this installation's kernels are cached.

    Attributes
    ----------
    folder : pathlib.Path or None
        The folder holding this installation's kernels; None when there is no home folder.
    root : pathlib.Path or None
        The folder holding normdrop's kernel folders of every version (None when
        ``NUMBA_CACHE_DIR`` decides instead, or there is no home folder).
    source : str
        Which setting chose the folder.
    """

    folder: Path | None
    root: Path | None
    source: str


def _numba_subfolder(numba_dir: str) -> Path:
    """The folder Numba's ``NUMBA_CACHE_DIR`` locator uses for the numba backend's files."""
    from numba.core.caching import _CacheLocator

    spec = importlib.util.find_spec("normdrop.backends.numba_backend")
    origin = spec.origin if spec is not None and spec.origin else __file__
    return Path(numba_dir) / _CacheLocator.get_suitable_cache_subpath(origin)


def locate() -> KernelCacheLocation:
    """Return where the ``numba`` backend caches its kernels, by the current settings.

    Returns
    -------
    KernelCacheLocation
    """
    numba_dir = os.environ.get(_cache.NUMBA_ENV_VAR)
    if numba_dir:
        return KernelCacheLocation(
            _numba_subfolder(numba_dir), None, f"{_cache.NUMBA_ENV_VAR} is set"
        )
    root = _cache.cache_root()
    if root is None:
        return KernelCacheLocation(None, None, "no home folder: kernels are not cached on disk")
    source = f"{_cache.ENV_VAR} is set" if os.environ.get(_cache.ENV_VAR) else "user cache folder"
    return KernelCacheLocation(root / _cache.version_key(), root, source)


def _is_writable(folder: Path) -> bool:
    """Whether ``folder``, or the nearest existing folder above it, accepts new files."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def _size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} bytes"
    if n_bytes < 1024**2:
        return f"{n_bytes / 1024:.1f} KiB"
    return f"{n_bytes / 1024**2:.1f} MiB"


def describe() -> str:
    """One line for ``normdrop info``: where the kernels are cached and how much is there.

    Returns
    -------
    str
    """
    where = locate()
    if where.folder is None:
        return where.source
    found = _cache.usage(where.folder)
    state = "" if _is_writable(where.folder) else ", not writable: kernels are not cached"
    return f"{where.folder} ({where.source}; {found.files} files, {_size(found.size)}{state})"


def describe_precompiled() -> str:
    """One line for ``normdrop info``: the kernels compiled when the wheel was built, if any.

    Returns
    -------
    str
        How many are shipped and what for, and whether this process can use them.
    """
    folder = _cache.precompiled_folder()
    manifest = None if folder is None else _cache.read_manifest(folder)
    if manifest is None:
        return "none shipped with this install (they compile on first use)"
    target = manifest.get("target")
    cpu = target[1] if isinstance(target, list) and len(target) > 1 else "?"
    shipped = f"{manifest.get('kernels', '?')} shipped (numba {manifest.get('numba')}, CPU {cpu})"
    try:
        from normdrop.backends.numba_backend.precompiled import mismatch
    except ImportError as exc:
        return f"{shipped}, not usable: {exc}"
    reason = mismatch(manifest)
    if reason is not None:
        return f"{shipped}, not used: {reason}"
    return f"{shipped}, copied into the kernel cache on first use"


def _info() -> int:
    where = locate()
    if where.folder is None:
        print(f"kernel cache: none ({where.source})")
        return 0
    found = _cache.usage(where.folder)
    print(f"kernel cache: {where.folder}")
    print(f"  chosen by:  {where.source}")
    print(f"  contents:   {found.files} files, {_size(found.size)}")
    if not _is_writable(where.folder):
        print("  not writable: kernels are compiled in every process and not cached")
    print(f"  precompiled: {describe_precompiled()}")
    if where.root is not None:
        others = [p for p in _cache.version_folders(where.root) if p != where.folder]
        for other in others:
            print(f"  other version: {other.name} ({_size(_cache.usage(other).size)})")
        print(f"cache root: {where.root} (`normdrop cache clear` empties it)")
    else:
        print("`normdrop cache clear` deletes this folder")
    return 0


def _clear() -> int:
    import shutil

    where = locate()
    if where.folder is None:
        print(f"nothing to clear ({where.source})")
        return 0
    try:
        if where.root is not None:
            removed = _cache.clear_cache(where.root)
            place = where.root
        else:  # NUMBA_CACHE_DIR: only the numba backend's own subfolder
            removed = _cache.usage(where.folder)
            if where.folder.is_dir():
                shutil.rmtree(where.folder)
            place = where.folder
    except OSError as exc:  # e.g. a folder of another user's, or a file in use
        print(f"normdrop: error: could not clear the kernel cache: {exc}", file=sys.stderr)
        return 1
    print(f"removed {removed.files} files ({_size(removed.size)}) from {place}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``info`` and ``clear`` subcommands to the ``normdrop cache`` parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``cache`` subcommand's parser.
    """
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("info", help="where the compiled kernels are cached, and their size")
    actions.add_parser("clear", help="delete the compiled kernels of every normdrop version")


def run(args: argparse.Namespace) -> int:
    """Run ``normdrop cache info`` or ``normdrop cache clear``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments with ``action``.

    Returns
    -------
    int
        The exit status: 1 when ``clear`` could not delete a file (say which).
    """
    return _info() if args.action == "info" else _clear()
