"""Run from a source checkout: its top-level ``backends/`` folder is ``normdrop.backends``.

pyproject.toml installs ``backends/`` as the subpackage ``normdrop.backends``, and an
editable install maps it with an import finder. When Python imports ``normdrop``
from the source tree by other means (started in the repository root while normdrop
is installed non-editable elsewhere, or not installed at all), nothing maps it:
:func:`map_backends` registers it then.
"""

from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["map_backends"]


def map_backends(package: str) -> None:
    """Register the sibling ``backends/`` folder as ``<package>.backends`` when nothing else does.

    Imports no backend: only the subpackage's ``__init__`` (a docstring) runs.

    Parameters
    ----------
    package : str
        The name of the package being imported (``"normdrop"``).
    """
    here = os.path.dirname(os.path.abspath(sys.modules[package].__file__ or ""))
    if os.path.isdir(os.path.join(here, "backends")):
        return  # an installed package: normdrop/backends/ is right here
    init = os.path.join(os.path.dirname(here), "backends", "__init__.py")
    name = f"{package}.backends"
    if not os.path.isfile(init) or importlib.util.find_spec(name) is not None:
        return  # not a source checkout, or an editable install maps it already
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[os.path.dirname(init)]
    )
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    setattr(sys.modules[package], "backends", module)  # noqa: B010 (what an import does)
