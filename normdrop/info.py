"""``normdrop info``: versions, which backends can run here, and where kernels are cached."""

from __future__ import annotations

import platform
from importlib import metadata

from normdrop.registry import backend_status

__all__ = ["print_info"]

_PACKAGES = ("numpy", "numba", "numba-cuda", "cupy", "dask", "distributed", "torch")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_info() -> None:
    """Print the Python, normdrop and dependency versions, every backend's status, the cache."""
    from normdrop import __version__

    print(f"normdrop {__version__} on Python {platform.python_version()} ({platform.machine()})")
    for package in _PACKAGES:
        print(f"  {package:<12} {_version(package)}")
    print("backends:")
    for name, reason in backend_status().items():
        print(f"  {name:<8} {'available' if reason is None else 'unavailable: ' + reason}")
    from normdrop.cache_command import describe, describe_precompiled

    print(f"kernel cache: {describe()}")
    print(f"precompiled kernels: {describe_precompiled()}")
