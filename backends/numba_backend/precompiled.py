"""Kernels compiled when the wheel was built: exported by the build, seeded into the cache.

A wheel build (``_build_backend.py`` at the repository root) runs
:func:`normdrop.warmup.precompile` in a fresh process, which compiles the common
kernels into an empty cache folder and calls :func:`export`: the cache files go to
this package's ``_precompiled`` folder with a manifest saying which normdrop, Numba,
Python, platform and code-generation target (CPU name and features) they were
built for. In an installed process, :func:`seed` copies them into the kernel cache
folder when the manifest matches, so the first process loads them instead of
compiling. Numba checks each cached function's source stamp (a content hash, see
:class:`.disk_cache.KernelCacheLocator`) and its own version when it loads one, and
keys each compiled signature by the CPU name and features: code built for another
CPU is never loaded, only compiled afresh.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

import numba

from normdrop import __version__, _cache

__all__ = ["FOLDER", "current_manifest", "export", "mismatch", "seed"]

#: Where the wheel ships the precompiled kernels (absent in a source checkout).
FOLDER = Path(__file__).resolve().with_name(_cache.PRECOMPILED_FOLDER)


def _target() -> list[str]:
    """Numba's code-generation key: target triple, CPU name, CPU features."""
    from numba.core.registry import cpu_target

    return list(cpu_target.target_context.codegen().magic_tuple())


def current_manifest() -> dict[str, Any]:
    """Return what this process would write in a manifest (and needs to find in one).

    Returns
    -------
    dict
        ``normdrop``, ``numba``, ``python`` (cache tag and ABI flags), ``platform``
        (operating system and machine) and ``target`` (Numba's target triple, CPU
        name and CPU features).
    """
    return {
        "normdrop": __version__,
        "numba": numba.__version__,
        "python": sys.implementation.cache_tag + getattr(sys, "abiflags", ""),
        "platform": f"{sys.platform}-{platform.machine()}",
        "target": _target(),
    }


def mismatch(manifest: dict[str, object]) -> str | None:
    """Say why kernels built for ``manifest`` cannot run here, or None when they can.

    Parameters
    ----------
    manifest : dict
        A manifest, as :func:`normdrop._cache.read_manifest` returns it.

    Returns
    -------
    str or None
        E.g. ``"built for numba 0.60.0, this is 0.61.0"``.
    """
    for key, here in current_manifest().items():
        built = manifest.get(key)
        if built != here:
            if key == "target":  # the feature list is long: name the CPUs only
                built = built[1] if isinstance(built, list) and len(built) > 1 else built
                here = here[1]
            return f"built for {key} {built}, this is {here}"
    return None


def seed(cache_folder: Path) -> int:
    """Copy the precompiled kernels into ``cache_folder`` when they are built for this process.

    Parameters
    ----------
    cache_folder : pathlib.Path
        The kernel cache folder in use (it exists and is writable).

    Returns
    -------
    int
        The number of cached functions copied (0 when there are none, when they
        are built for another Numba, Python or CPU, or when the folder has them).
    """
    manifest = _cache.read_manifest(FOLDER)
    if manifest is None or mismatch(manifest) is not None:
        return 0
    return _cache.seed(FOLDER, cache_folder)


def export(cache_folder: Path, destination: Path) -> int:
    """Copy the cache files of ``cache_folder`` to ``destination`` and write its manifest.

    Parameters
    ----------
    cache_folder : pathlib.Path
        The kernel cache folder the kernels were just compiled into.
    destination : pathlib.Path
        The folder to create (``_precompiled`` in the wheel's build folder).

    Returns
    -------
    int
        The number of cached functions (index files) exported.
    """
    destination.mkdir(parents=True, exist_ok=True)
    kernels = 0
    for path in sorted(cache_folder.iterdir()):
        if path.suffix in (".nbi", ".nbc"):
            shutil.copyfile(path, destination / path.name)
            kernels += path.suffix == ".nbi"
    manifest = {**current_manifest(), "kernels": kernels}
    (destination / _cache.MANIFEST_NAME).write_text(
        json.dumps(manifest, indent=1) + "\n", encoding="utf-8"
    )
    return kernels
