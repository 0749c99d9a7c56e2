"""Compilation options and work-splitting constants shared by every Numba kernel.

Every kernel is compiled lazily (on first use, once per signature) and cached
on disk in the user's cache folder (:mod:`.disk_cache`; not at all when no folder
is writable). A kernel is one Python function compiled as two
clones (see :func:`kernel`): a single-threaded one for small inputs and a
``prange`` one. Both split their work into the same tasks, whose boundaries
depend only on the array's shape, never on the thread count, so results are
bit-identical on any number of threads and on either clone.

What a kernel calls comes in two kinds, chosen to keep compilation short:

* functions compiled on their own (:data:`task_jit`): the *task* function that a
  ``prange`` loop body calls (a real call, so that the parallel clone's loop body
  stays one call), the few helpers that were measured to run slower inlined
  (BatchNorm's parameter fold: twice the time of a whole small forward), and the
  *cold* helpers, per-channel or per-row bookkeeping that several kernels share or
  that LLVM compiles for size (:func:`cold`), compiled once per process instead of
  once per kernel that inlines them;
* everything else (:data:`inline_jit`), inlined into its caller before typing:
  no compilation, optimisation, machine code and cache entry of its own, which
  a separately compiled helper costs on top of the copy LLVM inlines anyway.
  An inlined helper may hold a kernel's ``prange`` task loop (shared by the
  kernels that run it), which then is the calling kernel's own loop.

Only kernels are cached on disk; what they call is compiled into them. A kernel
source that serves several data layouts is compiled once per layout
(:class:`KernelVariants`), so that a call compiles only its layout's code.

Two rules keep the on-disk cache sound: parallel clones are entry points
called from Python only, and the functions they call are single-threaded. A
cached single-threaded function that calls a parallel one crashes when it is
loaded from the cache (numba/numba#8578). Every compiled function releases the
GIL, so Python threads run kernels side by side.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, NamedTuple, cast

import numba
from numba import types as nbtypes
from numba.core.cpu import ParallelOptions
from numba.extending import intrinsic

from .compile_events import listen
from .compile_gc import pause_while_compiling
from .disk_cache import kernel_cache_folder

__all__ = [
    "FASTMATH",
    "PARALLEL_MIN_SIZE",
    "TASK_SIZE",
    "Kernel",
    "KernelVariants",
    "cold",
    "inline_jit",
    "jit",
    "kernel",
    "kernels_in",
    "rsqrt_jit",
    "task_jit",
]

#: ``reassoc`` and ``contract``: what lets LLVM vectorise the float64 reductions
#: (and fuse multiply-adds). Left out: ``arcp``/``afn`` (a division turned into a
#: multiplication by a reciprocal makes ``sum / n`` of ``n`` equal values inexact,
#: so a constant row would not normalise to exactly ``bias``), ``nsz`` (the
#: summation order LLVM picked was seen to differ between a kernel compiled
#: in-process and the same kernel loaded from the cache), ``nnan``/``ninf`` (they
#: would let it assume away the NaN and inf that the reference propagates).
FASTMATH = frozenset({"reassoc", "contract"})

listen()  # tell the user when kernels compile (not when they load from the cache)
pause_while_compiling()  # no garbage collection passes over the compiler's objects

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


def jit(
    *,
    fastmath: AbstractSet[str] = FASTMATH,
    parallel: bool | ParallelOptions = False,
    cache: bool = False,
    inline: str = "never",
    python_callable: bool = False,
) -> Callable[[Callable[..., Any]], Any]:
    """The decorator that compiles one normdrop function with Numba.

    Every function gets the same error model, no bounds checks and a released GIL;
    the arguments are what differs between kernels and what they call.

    Parameters
    ----------
    fastmath : set of str
        LLVM fast-math flags (default :data:`FASTMATH`).
    parallel : bool or ParallelOptions
        Numba's ``parallel`` option (kernels' parallel clones only).
    cache : bool
        Cache the compiled function on disk (kernels only; only when a cache folder
        is writable).
    inline : {"never", "always"}
        Numba's ``inline`` option.
    python_callable : bool
        Build the wrapper that lets Python call the function (kernels only): a
        function that only compiled code calls goes without, which saves lowering
        and optimising that wrapper.

    Returns
    -------
    callable
        A decorator returning a Numba dispatcher.
    """
    options: dict[str, Any] = {
        "fastmath": set(fastmath),
        "parallel": parallel,
        "cache": cache and kernel_cache_folder() is not None,
        "inline": inline,
        "error_model": "numpy",
        "boundscheck": False,
        "nogil": True,
        "no_cpython_wrapper": not python_callable,
        "no_cfunc_wrapper": True,
    }
    njit: Callable[..., Callable[[Callable[..., Any]], Any]] = numba.njit
    return njit(**options)


#: Decorator for the task functions that ``prange`` loop bodies call, and for helpers
#: that run faster compiled on their own than inlined.
task_jit = jit()

#: Decorator for everything else a kernel calls: inlined into the caller at Numba IR
#: level, never compiled on its own.
inline_jit = jit(inline="always")


def _cold(typingctx: Any) -> Any:
    """Mark the function that calls this as cold code: LLVM optimises it for size and
    never inlines it.

    For the :data:`task_jit` helpers that do per-channel or per-row bookkeeping
    (merging partial results, folding parameters), whose loops run over a few hundred
    values: vectorised, unswitched on every loop-invariant test and unrolled, as hot
    code is, they take several times as long to compile and run no faster. Called as
    the first statement; only in functions compiled on their own (an inlined one would
    mark its caller).
    """

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        for attribute in ("optsize", "minsize", "noinline"):
            builder.function.attributes.add(attribute)
        return context.get_dummy_value()

    return nbtypes.void(), codegen


#: Called from compiled code as ``cold()`` (see :func:`_cold`).
cold = cast("Callable[[], None]", intrinsic(_cold))


#: Decorator for the reciprocal square roots ``1 / sqrt(var + eps)`` only: with
#: ``arcp`` and ``afn`` LLVM computes them as a vectorised approximate reciprocal
#: square root refined by a Newton step, several times faster than a square root and
#: a division per row. No mean is computed under these flags. Not inlined: an inlined
#: function takes its caller's flags.
rsqrt_jit = jit(fastmath=FASTMATH | {"arcp", "afn"})


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


def _clone(
    fn: Callable[..., Any], suffix: str, constants: Mapping[str, object]
) -> types.FunctionType:
    """A copy of ``fn`` named ``<qualname><suffix>`` whose globals ``constants`` replace."""
    assert isinstance(fn, types.FunctionType)
    scope = {**fn.__globals__, **constants} if constants else fn.__globals__
    clone = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    clone.__qualname__ = fn.__qualname__ + suffix
    clone.__doc__ = fn.__doc__
    clone.__module__ = fn.__module__
    return clone


def kernel(
    fn: Callable[..., Any] | None = None,
    *,
    fastmath: AbstractSet[str] = FASTMATH,
    constants: Mapping[str, object] | None = None,
    suffix: str = "",
) -> Any:
    """Compile ``fn`` (whose task loops use ``prange``) as a serial and a parallel clone.

    The clones are copies of the function under the qualified names
    ``<name><suffix>`` and ``<name><suffix>__parallel``, so that each has its own
    on-disk cache entries. Only the clones that are called get compiled. Used bare
    (``@kernel``) or with options (``@kernel(fastmath={...})``).

    Parameters
    ----------
    fn : function
        The kernel source; it may call :data:`task_jit`, :data:`inline_jit` and
        :data:`rsqrt_jit` functions but no other kernel.
    fastmath : set of str
        LLVM fast-math flags (a kernel whose rounding must follow separate
        operations leaves out ``contract``, for instance).
    constants : mapping, optional
        Module globals that take other values in these clones. Numba reads globals
        as compile-time constants and drops the branches an ``if`` on one of them
        never takes, so one source can serve several data layouts, each compiling
        only its own code.
    suffix : str
        Added to the clones' qualified names (required with ``constants``).

    Returns
    -------
    Kernel
    """
    if fn is None:
        return lambda f: kernel(f, fastmath=fastmath, constants=constants, suffix=suffix)
    constants = constants or {}
    assert suffix or not constants, "clones with other constants need their own names"
    compile_serial = jit(fastmath=fastmath, cache=True, python_callable=True)
    compile_parallel = jit(
        fastmath=fastmath, parallel=_PRANGE_ONLY, cache=True, python_callable=True
    )
    return Kernel(
        compile_serial(_clone(fn, suffix, constants)),
        compile_parallel(_clone(fn, suffix + "__parallel", constants)),
    )


class KernelVariants:
    """One kernel source compiled per variant (data layout), each variant a :class:`Kernel`.

    Each variant's clones see other values of some module globals (see
    :func:`kernel`'s ``constants``), so a call compiles only its variant's code.

    Parameters
    ----------
    fn : function
        The kernel source.
    choose : callable
        Maps the kernel's first argument to the name of the variant that serves it.
    constants : mapping
        For each variant name, the globals its clones see.
    fastmath : set of str
        As for :func:`kernel`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        choose: Callable[[Any], str],
        constants: Mapping[str, Mapping[str, object]],
        fastmath: AbstractSet[str] = FASTMATH,
    ) -> None:
        self.choose = choose
        self.kernels: dict[str, Kernel] = {
            name: kernel(fn, fastmath=fastmath, constants=values, suffix="__" + name)
            for name, values in constants.items()
        }

    def pick(self, first: Any) -> Kernel:
        """The clones of the variant that serves ``first``, the kernel's first argument."""
        return self.kernels[self.choose(first)]

    def __call__(self, parallel: bool, *args: Any) -> Any:
        """Run the parallel or serial clone of the variant that serves ``args``."""
        return self.pick(args[0])(parallel, *args)


def kernels_in(module: types.ModuleType) -> dict[str, Kernel]:
    """Every kernel that ``module`` defines, by name.

    Parameters
    ----------
    module : module
        A module of this package.

    Returns
    -------
    dict
        ``{name: Kernel}``; each variant of a :class:`KernelVariants` as
        ``name[variant]``.
    """
    found = {}
    for name, obj in vars(module).items():
        if isinstance(obj, Kernel):
            found[name] = obj
        elif isinstance(obj, KernelVariants):
            found.update({f"{name}[{v}]": k for v, k in obj.kernels.items()})
    return found


#: Elements per parallel task: big enough that a thread's share of a two-pass
#: reduction (at most 256 KiB of float64) stays in its L2 cache between the passes,
#: small enough to balance many threads.
TASK_SIZE = 32768

#: Below this many elements the backend calls the serial clones, which wake no
#: threads: with one task (up to TASK_SIZE elements) the parallel kernels only add
#: their launch cost; from two tasks on they win when the threads are hot and break
#: even when they are cold (the measurements are in docs/benchmarks.md, "Kernel tuning").
PARALLEL_MIN_SIZE = 3 * TASK_SIZE // 2
