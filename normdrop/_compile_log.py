"""Tell the user when kernels are compiled: once through :mod:`logging`, and to observers.

A backend that compiles code on first use (the ``numba`` backend) calls
:func:`compile_started` and :func:`compile_finished` around each compilation.
The first compilation in a process is announced once at INFO level on the
``normdrop`` logger, which is silent unless the application (or the ``normdrop``
command line) shows INFO messages; each compilation is logged at DEBUG level.
Observers registered with :func:`observe` (the command line's progress display)
see every compilation.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

__all__ = ["CompileObserver", "compile_finished", "compile_started", "logger", "observe"]

#: The library's logger; normdrop adds no handler to it.
logger = logging.getLogger("normdrop")

_lock = threading.Lock()
_announced = False
_observers: list[CompileObserver] = []


class CompileObserver(Protocol):
    """What :func:`observe` calls about each compilation."""

    def started(self, kernel: str) -> None:
        """A compilation of ``kernel`` began."""

    def finished(self, kernel: str, seconds: float) -> None:
        """The compilation of ``kernel`` ended after ``seconds``."""


def compile_started(kernel: str, cache_folder: Path | None) -> None:
    """Report that ``kernel`` is being compiled (announced at INFO level once per process).

    Parameters
    ----------
    kernel : str
        A name for the kernel, e.g. ``"rows.forward_rows"``.
    cache_folder : pathlib.Path or None
        Where the compiled code will be cached, or None when it is not cached on disk.
    """
    global _announced
    with _lock:
        first, _announced = not _announced, True
    if first:
        if cache_folder is None:
            where = "they are not cached on disk, so each new process compiles them again"
        else:
            where = f"they are cached in {cache_folder}, so this happens once per kernel and dtype"
        logger.info(
            "compiling Numba kernels on first use (this can take a minute); %s. "
            "`normdrop warmup` compiles the common ones ahead of time.",
            where,
        )
    logger.debug("compiling %s", kernel)
    for observer in list(_observers):
        observer.started(kernel)


def compile_finished(kernel: str, seconds: float) -> None:
    """Report that the compilation of ``kernel`` ended.

    Parameters
    ----------
    kernel : str
        The name given to :func:`compile_started`.
    seconds : float
        How long it took.
    """
    logger.debug("compiled %s in %.2f s", kernel, seconds)
    for observer in list(_observers):
        observer.finished(kernel, seconds)


@contextlib.contextmanager
def observe(observer: CompileObserver) -> Iterator[CompileObserver]:
    """Call ``observer`` about every compilation while the block runs.

    Parameters
    ----------
    observer : CompileObserver
        Receives :meth:`~CompileObserver.started` and :meth:`~CompileObserver.finished`.

    Yields
    ------
    CompileObserver
        The same observer.
    """
    _observers.append(observer)
    try:
        yield observer
    finally:
        _observers.remove(observer)
