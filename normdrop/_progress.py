"""Progress on stderr for the command line: a tqdm bar when tqdm is installed, plain text if not.

Also :class:`CompileProgress`, which shows the kernels compiling while a command runs.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["CompileProgress", "TextProgress", "progress_bar"]


class TextProgress:
    """A progress display without tqdm: one updating line on a terminal, else a line per step.

    Parameters
    ----------
    total : int
        Number of steps.
    desc : str
        What the steps are part of, shown before the count.
    file : text stream, optional
        Where to write (default: ``sys.stderr`` at the time of each write).
    """

    def __init__(self, total: int, desc: str, file: TextIO | None = None) -> None:
        self.total = total
        self.desc = desc
        self.n = 0
        self._label = ""
        self._file = file

    @property
    def _out(self) -> TextIO:
        return self._file if self._file is not None else sys.stderr

    def _line(self) -> str:
        width = len(str(self.total))
        return f"{self.desc}: [{self.n:>{width}}/{self.total}] {self._label}".rstrip()

    def set_postfix_str(self, s: str) -> None:
        """Show ``s`` as the current step's label."""
        self._label = s
        if self._out.isatty():
            self._out.write("\r\033[K" + self._line())
            self._out.flush()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps as done."""
        self.n += n
        if self._out.isatty():
            self._out.write("\r\033[K" + self._line())
        else:
            self._out.write(self._line() + "\n")
        self._out.flush()

    def close(self) -> None:
        """End the display (a newline after the updating line on a terminal)."""
        if self._out.isatty():
            self._out.write("\n")
            self._out.flush()


def progress_bar(total: int, desc: str) -> Any:
    """Return a tqdm bar on stderr, or a :class:`TextProgress` when tqdm is not installed.

    Parameters
    ----------
    total : int
        Number of steps.
    desc : str
        Label of the bar.

    Returns
    -------
    tqdm.tqdm or TextProgress
        Either has ``update``, ``set_postfix_str`` and ``close``.
    """
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return TextProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)


class CompileProgress:
    """Count compiled kernels on stderr: a live line on a terminal, a summary line at the end.

    On a terminal the live line shows while a compilation runs and is erased as soon as
    the outermost one ends, so the command's own output never lands on it. Use it with
    :func:`normdrop._compile_log.observe`; call :meth:`close` when done.

    Parameters
    ----------
    live : bool, default True
        Write to stderr; with False it only counts (``compiled``, ``seconds``).
    """

    def __init__(self, live: bool = True) -> None:
        self.live = live
        self.compiled = 0
        self.seconds = 0.0
        self._first: float | None = None
        self._depth = 0  # compilations in progress (a kernel compiles the helpers it calls)

    def _show(self, text: str) -> None:
        if self.live and sys.stderr.isatty():
            sys.stderr.write("\r\033[K" + text)
            sys.stderr.flush()

    def started(self, kernel: str) -> None:
        """Note the start of a compilation and show it on a terminal."""
        if self._first is None:
            self._first = time.perf_counter()
        self._depth += 1
        self._show(f"normdrop: compiling {kernel} ({self._summary()})")

    def finished(self, kernel: str, seconds: float) -> None:
        """Count a finished compilation; erase the live line when none is left running."""
        self.compiled += 1
        self._depth = max(self._depth - 1, 0)
        if self._first is not None:
            self.seconds = time.perf_counter() - self._first
        self._show("" if self._depth == 0 else f"normdrop: compiled {kernel} ({self._summary()})")

    def _summary(self) -> str:
        return f"compiled {self.compiled} kernels in {self.seconds:.1f} s"

    def close(self) -> None:
        """Print the total, if anything was compiled."""
        if self.live and self.compiled:
            sys.stderr.write(f"normdrop: {self._summary()}\n")
            sys.stderr.flush()
