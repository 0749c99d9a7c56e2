"""Where normdrop keeps its compiled Numba kernels, and how to measure and clear that place.

The kernels are cached per user, never inside the installed package: in
``$NORMDROP_CACHE_DIR`` when it is set, else in the platform's user cache folder
(``$XDG_CACHE_HOME/normdrop`` or ``~/.cache/normdrop`` on Linux,
``~/Library/Caches/normdrop`` on macOS, ``%LOCALAPPDATA%\\normdrop\\Cache`` on Windows).
Inside that root, each combination of normdrop, Python and Numba versions has its
own folder, so an upgrade never loads machine code built for another version.
``NUMBA_CACHE_DIR``, Numba's own setting, takes precedence over all of this.

A wheel can ship kernels compiled when it was built, in the ``numba`` backend's
``_precompiled`` folder with a JSON manifest (:func:`precompiled_folder`,
:func:`read_manifest`); :func:`seed` copies them into a cache folder.

This module imports neither Numba nor anything else heavy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = [
    "ENV_VAR",
    "MANIFEST_NAME",
    "NUMBA_ENV_VAR",
    "PRECOMPILED_FOLDER",
    "CacheUsage",
    "cache_root",
    "clear_cache",
    "ensure_writable",
    "kernel_cache_dir",
    "precompiled_folder",
    "read_manifest",
    "seed",
    "usage",
    "version_folders",
    "version_key",
]

#: Environment variable naming the folder that holds normdrop's kernel cache.
ENV_VAR = "NORMDROP_CACHE_DIR"

#: Numba's own cache folder setting; when set, Numba caches normdrop's kernels there.
NUMBA_ENV_VAR = "NUMBA_CACHE_DIR"

#: The ``numba`` backend's folder of kernels compiled when the wheel was built.
PRECOMPILED_FOLDER = "_precompiled"

#: The file in :data:`PRECOMPILED_FOLDER` that says what its kernels were built for.
MANIFEST_NAME = "manifest.json"

#: Prefix of the per-version folders inside the cache root (what ``clear_cache`` removes).
_KEY_PREFIX = "normdrop-"


def _user_cache_home() -> Path:
    """The platform's per-user cache folder (raises RuntimeError when there is no home)."""
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "normdrop" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "normdrop"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "normdrop"


def cache_root() -> Path | None:
    """Return the folder that holds normdrop's kernel caches for every version.

    Returns
    -------
    pathlib.Path or None
        ``$NORMDROP_CACHE_DIR`` when set, else the platform's user cache folder
        followed by ``normdrop``; None when neither is set and there is no home folder.
    """
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    try:
        return _user_cache_home()
    except RuntimeError:  # Path.home() with no HOME and no password entry
        return None


def version_key(numba_version: str | None = None) -> str:
    """Return the name of this installation's cache folder inside :func:`cache_root`.

    Parameters
    ----------
    numba_version : str, optional
        Numba's version; read from the installed distribution's metadata by default.

    Returns
    -------
    str
        ``normdrop-<version>-py<major><minor>-numba<version>``.
    """
    from normdrop import __version__

    if numba_version is None:
        try:
            numba_version = metadata.version("numba")
        except metadata.PackageNotFoundError:
            numba_version = "none"
    python = f"{sys.version_info[0]}{sys.version_info[1]}"
    return f"{_KEY_PREFIX}{__version__}-py{python}-numba{numba_version}"


def kernel_cache_dir(numba_version: str | None = None) -> Path | None:
    """Return the folder this installation's compiled kernels go to (absent ``NUMBA_CACHE_DIR``).

    Parameters
    ----------
    numba_version : str, optional
        Numba's version, as for :func:`version_key`.

    Returns
    -------
    pathlib.Path or None
        ``cache_root() / version_key()``, or None when there is no cache root.
    """
    root = cache_root()
    return None if root is None else root / version_key(numba_version)


def ensure_writable(path: Path) -> OSError | None:
    """Create ``path`` if needed and check that a file can be written in it.

    Parameters
    ----------
    path : pathlib.Path
        The folder to create and probe.

    Returns
    -------
    OSError or None
        None when the folder is usable, else the error that showed it is not.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        return exc
    return None


@dataclass(frozen=True)
class CacheUsage:
    """What a cache folder holds.

    Attributes
    ----------
    files : int
        Number of files.
    size : int
        Their total size in bytes.
    """

    files: int
    size: int


def usage(path: Path) -> CacheUsage:
    """Count the files under ``path`` and their total size (zero when it does not exist).

    Parameters
    ----------
    path : pathlib.Path
        The folder to measure.

    Returns
    -------
    CacheUsage
    """
    files = size = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                size += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:  # removed while we walked
                continue
            files += 1
    return CacheUsage(files, size)


def version_folders(root: Path) -> list[Path]:
    """Return the per-version kernel folders under the cache root ``root``, oldest name first.

    ``root`` is a :class:`pathlib.Path` as :func:`cache_root` returns it; a root that
    does not exist has no folders (an empty list).
    """
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_KEY_PREFIX))


def clear_cache(root: Path) -> CacheUsage:
    """Delete every per-version kernel folder under ``root``, and ``root`` if it is left empty.

    Only folders normdrop created (named ``normdrop-...``) are deleted, so a
    ``NORMDROP_CACHE_DIR`` pointing at a shared folder loses nothing else.

    Parameters
    ----------
    root : pathlib.Path
        A cache root, as returned by :func:`cache_root`.

    Returns
    -------
    CacheUsage
        What was deleted.
    """
    files = size = 0
    for folder in version_folders(root):
        found = usage(folder)
        shutil.rmtree(folder)
        files += found.files
        size += found.size
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    return CacheUsage(files, size)


def precompiled_folder() -> Path | None:
    """Return the installed package's folder of precompiled kernels, if it has one.

    Finds the ``numba`` backend's package folder without importing it (so without Numba).

    Returns
    -------
    pathlib.Path or None
        ``.../normdrop/backends/numba_backend/_precompiled`` when it holds a manifest,
        else None (an editable install, or a wheel built without precompiled kernels).
    """
    try:
        spec = importlib.util.find_spec("normdrop.backends.numba_backend")
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / PRECOMPILED_FOLDER
    return folder if (folder / MANIFEST_NAME).is_file() else None


def read_manifest(folder: Path) -> dict[str, object] | None:
    """Return the manifest of a precompiled-kernel folder, or None when it is missing or broken.

    Parameters
    ----------
    folder : pathlib.Path
        A folder written by a wheel build (see :func:`precompiled_folder`).

    Returns
    -------
    dict or None
        The manifest's fields (``normdrop``, ``numba``, ``python``, ``platform``,
        ``target``, ``kernels``).
    """
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _copy_new(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` in one step; FileExistsError if ``target`` exists."""
    partial = target.with_name(f"{target.name}.tmp.{uuid.uuid4().hex[:16]}")
    shutil.copyfile(source, partial)
    try:
        os.link(partial, target)  # fails if target exists: nothing is ever overwritten
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        if target.exists():
            raise FileExistsError(target) from None
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()


def seed(source: Path, target: Path) -> int:
    """Copy the cached functions of ``source`` that ``target`` lacks into ``target``.

    A cached function is Numba's index file (``<name>.nbi``) and its data files
    (``<name>.<n>.nbc``). One is copied only when neither its index nor any of its
    data files exists in ``target``, data files first and the index last, each
    under a temporary name first, so that a process reading ``target`` meanwhile
    never finds an index without its data; nothing in ``target`` is overwritten.

    Parameters
    ----------
    source : pathlib.Path
        A folder of cached functions (the package's precompiled kernels).
    target : pathlib.Path
        The kernel cache folder in use; it must exist.

    Returns
    -------
    int
        The number of functions copied.
    """
    data: dict[str, list[str]] = {}
    for name in os.listdir(source):
        if name.endswith(".nbc"):
            data.setdefault(name[: -len(".nbc")].rpartition(".")[0], []).append(name)
    present = set(os.listdir(target))
    copied = 0
    for name in sorted(os.listdir(source)):
        base = name[: -len(".nbi")]
        if not name.endswith(".nbi") or name in present:
            continue
        files = data.get(base, [])
        if any(f in present for f in files):
            continue
        placed: list[Path] = []
        try:
            for file in [*files, name]:
                _copy_new(source / file, target / file)
                placed.append(target / file)
        except FileExistsError:  # another process is writing this function: leave it
            for path in placed:  # data files only: the index comes last
                path.unlink(missing_ok=True)
            continue
        copied += 1
    return copied
