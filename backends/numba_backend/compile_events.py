"""Report the compilation of this package's kernels (not loads from the disk cache).

Numba fires its ``numba:compile`` event only when it really compiles a function,
never when it loads one from the on-disk cache; :func:`listen` forwards the events
of this package's functions to :mod:`normdrop._compile_log`.
"""

from __future__ import annotations

import time

from numba.core import event

from normdrop import _compile_log

from .disk_cache import kernel_cache_folder

__all__ = ["listen"]

_PACKAGE = __name__.rpartition(".")[0]


class _KernelCompileListener(event.Listener):
    """Times each compilation of a function defined in this package."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}

    @staticmethod
    def _kernel(ev: event.Event) -> str | None:
        py_func = getattr(ev.data.get("dispatcher"), "py_func", None)
        module = getattr(py_func, "__module__", None) or ""
        if py_func is None or (module != _PACKAGE and not module.startswith(_PACKAGE + ".")):
            return None
        return f"{module.rpartition('.')[2]}.{py_func.__qualname__}"

    def on_start(self, ev: event.Event) -> None:
        kernel = self._kernel(ev)
        if kernel is not None:
            self._started[id(ev.data)] = time.perf_counter()
            _compile_log.compile_started(kernel, kernel_cache_folder())

    def on_end(self, ev: event.Event) -> None:
        kernel = self._kernel(ev)
        if kernel is not None:
            start = self._started.pop(id(ev.data), time.perf_counter())
            _compile_log.compile_finished(kernel, time.perf_counter() - start)


_listener: _KernelCompileListener | None = None


def listen() -> None:
    """Start forwarding compile events of this package's kernels (once per process)."""
    global _listener
    if _listener is None:
        _listener = _KernelCompileListener()
        event.register("numba:compile", _listener)
