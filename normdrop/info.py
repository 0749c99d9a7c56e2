"""``normdrop info``: versions, which backends can run here, and where kernels are cached."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from normdrop.errors import BackendError
from normdrop.registry import ENV_VAR, backend_status, get_backend

__all__ = ["print_info"]

_PACKAGES = ("numpy", "numba", "numba-cuda", "cupy", "dask", "distributed", "torch")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_info() -> None:
    """Print the Python, normdrop and dependency versions, every backend's status, the
    ``NORMDROP_BACKEND`` choice when it is set (and whether it loads), the cache."""
    from normdrop import __version__

    print(f"normdrop {__version__} on Python {platform.python_version()} ({platform.machine()})")
    for package in _PACKAGES:
        print(f"  {package:<12} {_version(package)}")
    print("backends:")
    for name, reason in backend_status().items():
        print(f"  {name:<8} {'available' if reason is None else 'unavailable: ' + reason}")
    choice = os.environ.get(ENV_VAR)
    if choice:
        try:
            get_backend(choice)
            effect = "used by every call that chooses no backend itself"
        except BackendError as exc:
            effect = f"every call that chooses no backend itself fails: {exc}"
        print(f"{ENV_VAR}={choice}: {effect}")
    from normdrop.cache_command import describe, describe_precompiled

    print(f"kernel cache: {describe()}")
    print(f"precompiled kernels: {describe_precompiled()}")
