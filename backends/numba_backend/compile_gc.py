"""Pause Python's cyclic garbage collector while this package's functions compile.

Numba's compiler makes millions of short-lived objects; the collector's passes over
them take a sizeable share of a cold first call (most of what the compiler drops is
freed by reference counting anyway). :func:`pause_while_compiling` pauses the
collector from the start of the outermost compilation of one of this package's
functions to its end, and then restores it as it was: a process that disabled it
keeps it disabled. Numba compiles under one process-wide lock, so compilations,
and these pauses, never overlap.
"""

from __future__ import annotations

import gc

from numba.core import event

__all__ = ["pause_while_compiling"]

_PACKAGE = __name__.rpartition(".")[0]


class _GcPause(event.Listener):
    """Disables the collector for the outermost compilation of this package's functions."""

    def __init__(self) -> None:
        self._depth = 0
        self._was_enabled = False

    @staticmethod
    def _ours(ev: event.Event) -> bool:
        module = getattr(getattr(ev.data.get("dispatcher"), "py_func", None), "__module__", "")
        return module == _PACKAGE or (module or "").startswith(_PACKAGE + ".")

    def on_start(self, ev: event.Event) -> None:
        if self._ours(ev):
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def on_end(self, ev: event.Event) -> None:
        if self._ours(ev):
            self._depth -= 1
            if self._depth == 0 and self._was_enabled:
                gc.enable()


_listener: _GcPause | None = None


def pause_while_compiling() -> None:
    """Pause the collector during this package's compilations from now on (once per process)."""
    global _listener
    if _listener is None:
        _listener = _GcPause()
        event.register("numba:compile", _listener)
