"""Compilation options and work-splitting constants shared by every Numba kernel.

Every kernel is compiled lazily (on first use, once per signature) and cached
on disk in the user's cache folder (:mod:`.disk_cache`; not at all when no folder
is writable). A kernel is one Python function compiled as two
clones (see :func:`kernel`): a single-threaded one for small inputs and a
``prange`` one. Both split their work into the same tasks, whose boundaries
depend only on the array's shape, never on the thread count, so results are
bit-identical on any number of threads and on either clone.

Two rules keep the on-disk cache sound: parallel clones are entry points
called from Python only, and the helpers they call are single-threaded. A
cached single-threaded function that calls a parallel one crashes when it is
loaded from the cache (numba/numba#8578). Every compiled function releases the
GIL, so Python threads run kernels side by side.
"""

from __future__ import annotations

import types
from typing import Any, NamedTuple

from numba import njit
from numba.core.cpu import ParallelOptions

from .compile_events import listen
from .disk_cache import kernel_cache_folder

__all__ = [
    "FASTMATH",
    "PARALLEL_MIN_SIZE",
    "TASK_SIZE",
    "Kernel",
    "inline_jit",
    "jit_options",
    "kernel",
    "rsqrt_jit",
    "serial_jit",
]

#: ``reassoc`` and ``contract``: what lets LLVM vectorise the float64 reductions
#: (and fuse multiply-adds). Left out: ``arcp``/``afn`` (a division turned into a
#: multiplication by a reciprocal makes ``sum / n`` of ``n`` equal values inexact,
#: so a constant row would not normalise to exactly ``bias``), ``nsz`` (the
#: summation order LLVM picked was seen to differ between a kernel compiled
#: in-process and the same kernel loaded from the cache), ``nnan``/``ninf`` (they
#: would let it assume away the NaN and inf that the reference propagates).
FASTMATH = {"reassoc", "contract"}

listen()  # tell the user when kernels compile (not when they load from the cache)
_OPTIONS = {
    "fastmath": FASTMATH,
    "error_model": "numpy",
    "boundscheck": False,
    "nogil": True,
    "cache": kernel_cache_folder() is not None,
}

#: Only ``prange`` loops run on threads: no array expression or ``np.zeros`` of a
#: parallel clone becomes a hidden parallel loop. A ``ParallelOptions`` object,
#: not a dict: Numba empties a dict option while compiling the first signature,
#: so later signatures would get every parallel transform.
_PRANGE_ONLY = ParallelOptions(
    {
        "prange": True,
        "numpy": False,
        "reduction": False,
        "setitem": False,
        "stencil": False,
        "fusion": False,
        "comprehension": False,
        "inplace_binop": False,
    }
)

#: Decorator for single-threaded helpers (and the serial clones of kernels).
serial_jit = njit(parallel=False, **_OPTIONS)

#: Decorator for the reciprocal square roots ``1 / sqrt(var + eps)`` only: with
#: ``arcp`` and ``afn`` LLVM computes them as a vectorised approximate reciprocal
#: square root refined by a Newton step, several times faster than a square root and
#: a division per row. No mean is computed under these flags.
rsqrt_jit = njit(parallel=False, **{**_OPTIONS, "fastmath": FASTMATH | {"arcp", "afn"}})

#: Decorator for tiny helpers inlined into their callers at Numba IR level, so that
#: the loop around the call can be vectorised.
inline_jit = njit(parallel=False, inline="always", **_OPTIONS)


class Kernel(NamedTuple):
    """The two compiled clones of one kernel source.

    Attributes
    ----------
    serial : numba dispatcher
        ``prange`` runs as ``range``: no thread is woken.
    parallel : numba dispatcher
        ``prange`` loops spread their tasks over Numba's threads.
    """

    serial: Any
    parallel: Any

    def __call__(self, parallel: bool, *args: Any) -> Any:
        """Run the parallel clone when ``parallel`` is true, else the serial one."""
        return (self.parallel if parallel else self.serial)(*args)


def jit_options(fastmath: set[str] | None = None) -> dict[str, Any]:
    """The compile options of every normdrop kernel, with other fast-math flags if given.

    Parameters
    ----------
    fastmath : set of str, optional
        LLVM fast-math flags replacing :data:`FASTMATH` (a kernel whose rounding
        must follow separate operations leaves out ``contract``, for instance).

    Returns
    -------
    dict
        Keyword arguments for :func:`numba.njit` (cache, GIL, error model, ...).
    """
    return _OPTIONS if fastmath is None else {**_OPTIONS, "fastmath": set(fastmath)}


def kernel(fn: types.FunctionType | None = None, *, fastmath: set[str] | None = None) -> Any:
    """Compile ``fn`` (whose task loops use ``prange``) as a serial and a parallel clone.

    The parallel clone is a copy of the function under the qualified name
    ``<name>__parallel``, so that the two clones have their own on-disk cache
    entries. Only the clones that are called get compiled. Used bare
    (``@kernel``) or with other fast-math flags (``@kernel(fastmath={...})``).

    Parameters
    ----------
    fn : function
        The kernel source; it may call :func:`serial_jit`/:func:`inline_jit`
        helpers but no other kernel.
    fastmath : set of str, optional
        See :func:`jit_options`.

    Returns
    -------
    Kernel
    """
    if fn is None:
        return lambda f: kernel(f, fastmath=fastmath)
    options = jit_options(fastmath)
    clone = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    clone.__qualname__ = fn.__qualname__ + "__parallel"
    clone.__doc__ = fn.__doc__
    clone.__module__ = fn.__module__
    return Kernel(
        njit(parallel=False, **options)(fn), njit(parallel=_PRANGE_ONLY, **options)(clone)
    )


#: Elements per parallel task: big enough that a thread's share of a two-pass
#: reduction (at most 256 KiB of float64) stays in its L2 cache between the passes,
#: small enough to balance many threads.
TASK_SIZE = 32768

#: Below this many elements the backend calls the serial clones, which wake no
#: threads: with one task (up to TASK_SIZE elements) the parallel kernels only add
#: their launch cost; from two tasks on they win when the threads are hot and break
#: even when they are cold (the measurements are in docs/benchmarks.md, "Kernel tuning").
PARALLEL_MIN_SIZE = 3 * TASK_SIZE // 2
