"""Backend registry and selection.

Selection, first match wins: the ``backend=`` argument, then
:func:`use_backend` (a context variable), then :func:`set_backend` or the
``NORMDROP_BACKEND`` environment variable (read through ``os.environ`` at each call
that reaches it), then the array's type. Built-in backends are found through a
table here (so start-up never scans entry points); third-party backends register in
the ``normdrop.backends`` entry-point group, which is read the first time an unknown
name is asked for or the list of backends is needed.

Resolution is cheap on every path: a backend object is checked against
:class:`~normdrop.protocol.Backend` once (when it is loaded, set, or first passed),
and the backend of an array type is worked out once per type.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from normdrop.errors import (
    BackendArrayError,
    BackendError,
    BackendNotInstalledError,
    UnknownBackendError,
)
from normdrop.protocol import Backend, implements_backend

__all__ = [
    "PickledByName",
    "available_backends",
    "backend_status",
    "get_backend",
    "registered_backends",
    "resolve_backend",
    "set_backend",
    "use_backend",
]

ENTRY_POINT_GROUP = "normdrop.backends"
ENV_VAR = "NORMDROP_BACKEND"

# name -> (module path holding a `backend` object, pip extra that installs its deps)
_BUILTINS: dict[str, tuple[str, str | None]] = {
    "numpy": ("normdrop.backends.numpy_backend", None),
    "numba": ("normdrop.backends.numba_backend", None),
    "cuda": ("normdrop.backends.cuda_backend", "cuda"),
    "dask": ("normdrop.backends.dask_backend", "dask"),
}

#: The backend of NumPy arrays (and of calls without data) when nothing else is chosen.
_CPU_DEFAULT = "numba"

_loaded: dict[str, Backend] = {}
_plugins: dict[str, Any] | None = None  # name -> EntryPoint, read lazily
_lock = threading.Lock()
# What use_backend and set_backend chose, as backend objects already checked.
_context_backend: ContextVar[Backend | None] = ContextVar("normdrop_backend", default=None)
_global_backend: Backend | None = None
# Backend objects that passed the protocol check, by id: a weak reference whose callback
# drops the entry when the object dies (so an id is never reused while it is here), or the
# object itself when it cannot be weakly referenced (kept alive, so its id stays its own).
_checked: dict[int, Any] = {}
# Array type -> name of the backend that computes on it when nothing else is chosen.
_backend_name_by_type: dict[type, str] = {}


def _plugin_entry_points() -> dict[str, Any]:
    global _plugins
    if _plugins is None:
        from importlib.metadata import entry_points

        found: dict[str, Any] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in _BUILTINS:
                continue
            first = found.setdefault(ep.name, ep)  # the first on sys.path, as for imports
            if first is not ep and first.value != ep.value:
                warnings.warn(
                    f"normdrop backend {ep.name!r} is registered twice, as {first.value!r} "
                    f"and as {ep.value!r}; using {first.value!r}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        _plugins = found
    return _plugins


def registered_backends() -> list[str]:
    """Return the names of every registered backend, installed or not.

    Returns
    -------
    list of str
        Built-in names first, then plugins from the ``normdrop.backends`` entry points.
    """
    return [*_BUILTINS, *sorted(_plugin_entry_points())]


def _missing_package(exc: BaseException) -> bool:
    """Whether an import failure comes from a package that is not installed."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ModuleNotFoundError):
            return True
        cause = cause.__cause__
    return False


def _not_loaded_message(name: str, extra: str | None, exc: ImportError) -> str:
    """Why a built-in backend does not load: a missing package (name the extra to install),
    or a backend that is installed but cannot run on this machine (e.g. no GPU)."""
    if _missing_package(exc):
        hint = f"pip install 'normdrop[{extra}]'" if extra else "reinstall normdrop"
        return f"backend {name!r} is not installed ({exc}); install it with: {hint}"
    return f"backend {name!r} is installed but cannot run here: {exc}"


def _load(name: str) -> Backend:
    if name in _loaded:
        return _loaded[name]
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _BUILTINS:
            module_path, extra = _BUILTINS[name]
            try:
                backend = importlib.import_module(module_path).backend
            except ImportError as exc:
                raise BackendNotInstalledError(_not_loaded_message(name, extra, exc)) from exc
        else:
            plugins = _plugin_entry_points()
            if name not in plugins:
                raise UnknownBackendError(
                    f"backend must be one of {registered_backends()}, got {name!r}"
                )
            try:
                backend = plugins[name].load()
            except Exception as exc:  # a broken plugin must not break normdrop
                warnings.warn(
                    f"normdrop backend plugin {name!r} failed to load: {exc!r}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                raise BackendNotInstalledError(
                    f"backend {name!r} is registered but failed to load: {exc!r}"
                ) from exc
        if isinstance(backend, type):
            raise BackendError(
                f"backend {name!r} is registered as the class {backend.__qualname__}; "
                "the entry point must name an instance of it (such as `backend = "
                f"{backend.__qualname__}()`)"
            )
        if not implements_backend(backend):
            raise BackendError(f"backend {name!r} does not implement normdrop.protocol.Backend")
        if backend.name != name:  # pickled layers and Dask graphs find it again by its name
            raise BackendError(
                f"backend {name!r} is registered under that name but its name attribute is "
                f"{backend.name!r}; they must be the same"
            )
        _remember_checked(backend)
        _loaded[name] = backend
        return backend


def _remember_checked(backend: Backend) -> None:
    """Record that ``backend`` implements the protocol, so it is never checked again."""
    key = id(backend)
    try:
        _checked[key] = weakref.ref(backend, lambda _ref: _checked.pop(key, None))
    except TypeError:  # no weak references to it (e.g. __slots__ without __weakref__)
        _checked[key] = backend


def get_backend(name: str | Backend) -> Backend:
    """Return the backend called ``name`` (a backend object is returned unchanged).

    Parameters
    ----------
    name : str or Backend
        A registered name, or an object implementing :class:`normdrop.protocol.Backend`.

    Returns
    -------
    Backend

    Raises
    ------
    UnknownBackendError
        No backend of that name is registered; the message lists the registered ones.
    BackendNotInstalledError
        The backend's dependencies are missing; the message names the extra to install.
    """
    if isinstance(name, str):
        loaded = _loaded.get(name)
        return loaded if loaded is not None else _load(name)
    if id(name) in _checked:
        return name
    if implements_backend(name):
        _remember_checked(name)
        return name
    hint = f"; pass an instance such as {name.__qualname__}()" if isinstance(name, type) else ""
    raise UnknownBackendError(
        f"backend must be a name in {registered_backends()} or a Backend object, got {name!r}{hint}"
    )


class PickledByName:
    """Base for a registered backend: pickled and copied as its name.

    Unpickling (and ``copy.deepcopy``) gives ``get_backend(name)``, the registered
    instance, so a layer built with ``backend=<the backend object>`` pickles without the
    backend's state (compiled dispatchers, wrappers installed at run time, device
    handles) and comes back bound to the same backend. Every built-in backend derives
    from it; a plugin backend can too, when its entry point names an instance.
    """

    name: str

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return get_backend, (self.name,)


def backend_status() -> dict[str, str | None]:
    """Return, for every registered backend, ``None`` if it loads or the reason it does not.

    Returns
    -------
    dict
        Maps each registered name to ``None`` (available) or an explanation.
    """
    status: dict[str, str | None] = {}
    for name in registered_backends():
        try:
            _load(name)
            status[name] = None
        except BackendError as exc:
            status[name] = str(exc)
    return status


def available_backends() -> list[str]:
    """Return the names of the backends that load on this machine.

    Returns
    -------
    list of str
    """
    return [name for name, reason in backend_status().items() if reason is None]


def set_backend(name: str | Backend | None) -> None:
    """Set the process-wide backend (``None`` restores selection by array type).

    It takes precedence over ``NORMDROP_BACKEND`` and yields to :func:`use_backend`
    and to a ``backend=`` argument.

    Parameters
    ----------
    name : str, Backend or None
    """
    global _global_backend
    # fail now on a bad name, not at the next call
    _global_backend = None if name is None else get_backend(name)


@contextlib.contextmanager
def use_backend(name: str | Backend) -> Iterator[Backend]:
    """Use ``name`` inside a ``with`` block (per thread and per asyncio task).

    A context variable: a thread started inside the block sees it only where Python copies
    the starting thread's context into new threads (``sys.flags.thread_inherit_context``,
    on by default in Python 3.14's free-threaded build).

    Parameters
    ----------
    name : str or Backend

    Yields
    ------
    Backend
        The backend now in use.
    """
    backend = get_backend(name)
    token = _context_backend.set(backend)
    try:
        yield backend
    finally:
        _context_backend.reset(token)


def _default_name_for(x: Any) -> str:
    """The backend name for arrays of ``x``'s type when nothing else is chosen."""
    module = type(x).__module__.split(".", 1)[0]
    if module == "numpy":
        return _CPU_DEFAULT
    if module == "cupy" or hasattr(x, "__cuda_array_interface__"):
        return "cuda"
    if getattr(type(x), "__cuda_ndarray__", False):  # numba device arrays, simulated ones too
        return "cuda"
    if module == "dask":
        return "dask"
    return _CPU_DEFAULT


def _backend_for_type(x: Any) -> Backend:
    """The backend for ``x`` chosen by its type, worked out once per type (as einops does)."""
    name = _backend_name_by_type.get(type(x))
    if name is None:
        name = _backend_name_by_type[type(x)] = _default_name_for(x)
    loaded = _loaded.get(name)
    return loaded if loaded is not None else get_backend(name)


#: The process environment as Python started it, and the dict behind it, which holds every
#: change made through ``os.environ``. A miss through the public mapping (the variable is
#: usually unset) raises and catches two ``KeyError``s, which costs more than the rest of a
#: resolution and is paid holding the GIL on every small layer call; the dict answers a miss
#: in one lookup. Where ``os.environ`` was replaced (or on an interpreter without that dict),
#: the public mapping is read.
_PROCESS_ENVIRON: Any = os.environ
_ENVIRON_DATA: dict | None = getattr(os.environ, "_data", None)
_ENV_KEY: Any = os.environ.encodekey(ENV_VAR) if _ENVIRON_DATA is not None else ENV_VAR


def _environment_choice() -> str | None:
    """The value of ``NORMDROP_BACKEND`` in ``os.environ`` at this moment (``None`` when
    unset): what ``os.environ.get`` returns."""
    environ = os.environ
    if environ is not _PROCESS_ENVIRON or _ENVIRON_DATA is None:
        return environ.get(ENV_VAR)
    raw = _ENVIRON_DATA.get(_ENV_KEY)
    return None if raw is None else environ.decodevalue(raw)


def _environment_backend(name: str) -> Backend:
    """Load the backend that ``NORMDROP_BACKEND`` names; a failure names the variable."""
    loaded = _loaded.get(name)
    if loaded is not None:
        return loaded
    try:
        return get_backend(name)
    except BackendError as exc:
        raise type(exc)(f"{ENV_VAR} (environment variable): {exc}") from exc


def resolve_backend(x: Any, backend: str | Backend | None = None) -> Backend:
    """Pick the backend for array ``x`` and check that it accepts ``x``.

    Parameters
    ----------
    x : array or None
        The data; ``None`` when there is none (e.g. a bare dropout mask), in which
        case the CPU default applies after the explicit choices.
    backend : str, Backend or None
        An explicit choice; ``None`` follows the selection order.

    Returns
    -------
    Backend

    Raises
    ------
    BackendArrayError
        The chosen backend does not accept ``x``.
    """
    chosen = get_backend(backend) if backend is not None else _context_backend.get()
    if chosen is None:
        chosen = _global_backend
    if chosen is None:
        # read at every call, so a change made through os.environ takes effect at once
        name = _environment_choice()
        if name:
            chosen = _environment_backend(name)
        else:  # the type's backend when it is known and loaded, without a call
            known = _backend_name_by_type.get(type(x))
            chosen = _loaded.get(known) if known is not None else None
            if chosen is None:
                chosen = _backend_for_type(x)
    if x is not None and not chosen.accepts(x):
        raise BackendArrayError(
            f"backend {chosen.name!r} does not accept arrays of type "
            f"{type(x).__module__}.{type(x).__qualname__}; pass an array of its kind "
            f"(arrays are never moved between devices implicitly) or choose another backend"
        )
    return chosen
