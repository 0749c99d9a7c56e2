"""normdrop's build backend: setuptools', plus the common Numba kernels compiled into the wheel.

Like ``compileall`` for ``.pyc`` files: when a wheel is built (``pip install .``,
``pip wheel .``, ``python -m build``), :class:`BuildPy` runs, after setuptools has
copied the sources into the build folder, a fresh Python process that imports
normdrop from there and compiles the kernels of :func:`normdrop.warmup.install_steps`
into an empty cache, then exports them into the wheel's
``normdrop/backends/numba_backend/_precompiled`` folder with a manifest
(see ``backends/numba_backend/precompiled.py``). The first process on the machine
copies them into its kernel cache instead of compiling.

An editable install (``pip install -e .``) compiles nothing and needs no Numba to
build. If the kernels cannot be compiled (no Numba, an error, or
``NORMDROP_NO_PRECOMPILE=1``), the wheel is built without them, with one line
saying so: the kernels then compile on first use, as they always could. Code
compiled here is for this machine's CPU; another CPU compiles its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 (every hook but the one below, unchanged)
from setuptools.command.build_py import build_py

#: Set to a non-empty value other than ``0`` to build the wheel without precompiled kernels.
SKIP_ENV_VAR = "NORMDROP_NO_PRECOMPILE"

#: What compiling the kernels needs in the build environment (the runtime floors).
KERNEL_REQUIRES = ["numba>=0.59", "numpy>=1.24"]

#: The folder inside the build folder (and the wheel) that receives the kernels.
PRECOMPILED = Path("normdrop", "backends", "numba_backend", "_precompiled")

#: Run by the compiling process: ``python -c CODE <destination> [step label ...]``.
_COMPILE = (
    "import sys; from normdrop.warmup import precompile; "
    "sys.exit(precompile(sys.argv[1], sys.argv[2:]))"
)


def _skipped() -> bool:
    return os.environ.get(SKIP_ENV_VAR, "") not in ("", "0")


def get_requires_for_build_wheel(config_settings=None):
    """setuptools' requirements, plus Numba and NumPy to compile the kernels (a wheel only)."""
    requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    return requires if _skipped() else requires + KERNEL_REQUIRES


def precompile(build_lib: Path, labels: tuple[str, ...] = ()) -> bool:
    """Compile the kernels of the normdrop in ``build_lib`` into its ``_precompiled`` folder.

    Parameters
    ----------
    build_lib : pathlib.Path
        A folder holding the ``normdrop`` package as it goes into the wheel.
    labels : tuple of str
        Compile only the install steps with these labels (default: all of them).

    Returns
    -------
    bool
        Whether the folder was written. When it was not, one line on stdout says why
        and no ``_precompiled`` folder is left in ``build_lib``.
    """
    build_lib = build_lib.resolve()  # the compiling process runs in another folder
    target = build_lib / PRECOMPILED
    shutil.rmtree(target, ignore_errors=True)  # never ship what an earlier build left
    if _skipped():
        print(f"normdrop: kernels not precompiled ({SKIP_ENV_VAR} is set)", flush=True)
        return False
    with tempfile.TemporaryDirectory(prefix="normdrop-precompile-") as cache:
        drop = ("NUMBA_CACHE_DIR", "NORMDROP_CACHE_DIR", "NORMDROP_BACKEND")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        path = [str(build_lib), *filter(None, [os.environ.get("PYTHONPATH")])]
        env.update(
            NORMDROP_CACHE_DIR=cache, PYTHONPATH=os.pathsep.join(path), PYTHONDONTWRITEBYTECODE="1"
        )
        print("normdrop: compiling the common Numba kernels for this machine", flush=True)
        try:  # cwd: not the source tree, whose normdrop/ would shadow build_lib's
            done = subprocess.run(
                [sys.executable, "-c", _COMPILE, str(target), *labels],
                env=env,
                cwd=cache,
                stderr=subprocess.PIPE,  # a traceback becomes its last line, below
                text=True,
            )
            ok = done.returncode == 0 and target.is_dir()
            errors = [line for line in done.stderr.splitlines() if line.strip()]
            reason = errors[-1].strip() if errors else f"exit status {done.returncode}"
        except OSError as exc:
            ok, reason = False, str(exc)
    if not ok:
        shutil.rmtree(target, ignore_errors=True)
        print(f"normdrop: kernels not precompiled ({reason}); they compile on first use")
    return ok


class BuildPy(build_py):
    """setuptools' ``build_py``, then :func:`precompile` (not for an editable install)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode and not self.dry_run:
            precompile(Path(self.build_lib))
