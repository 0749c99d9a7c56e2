"""Backend registry and selection (DESIGN "The backend protocol"): first match wins --
``backend=`` > ``use_backend`` > ``set_backend`` / ``NORMDROP_BACKEND`` > the array's type."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
import weakref

import numpy as np
import pytest

import normdrop
from normdrop import functional as F
from normdrop import registry
from normdrop.backends.numpy_backend import NumpyBackend
from normdrop.errors import (
    BackendArrayError,
    BackendError,
    BackendNotInstalledError,
    UnknownBackendError,
)
from normdrop.protocol import Backend, implements_backend, missing_members


class SpyBackend(NumpyBackend):
    """The reference kernels under another name, counting kernel calls."""

    def __init__(self, name="spy", accept=True):
        self.name = name
        self.calls = 0
        self._accept = accept

    def accepts(self, x):
        return self._accept and super().accepts(x)

    def channel_affine(self, *args):
        self.calls += 1
        return super().channel_affine(*args)

    def layer_norm_forward(self, *args):
        self.calls += 1
        return super().layer_norm_forward(*args)

    def dropout_forward(self, *args, **kwargs):
        self.calls += 1
        return super().dropout_forward(*args, **kwargs)

    def dropout_mask(self, *args):
        self.calls += 1
        return super().dropout_mask(*args)


class FakeEntryPoint:
    def __init__(self, name, target):
        self.name = name
        self.group = registry.ENTRY_POINT_GROUP
        self._target = target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


@pytest.fixture(autouse=True)
def clean_selection(monkeypatch):
    """Every test starts (and ends) with no global choice and no environment variable."""
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    monkeypatch.setattr(registry, "_loaded", dict(registry._loaded))
    normdrop.set_backend(None)
    yield
    normdrop.set_backend(None)


@pytest.fixture
def plugins(monkeypatch):
    """A fake entry-point table (name -> entry point) in place of the installed one."""
    table = {}
    monkeypatch.setattr(registry, "_plugins", table)
    return table


def _cpu_default():
    return "numba" if "numba" in normdrop.registered_backends() else "numpy"


X = np.arange(6.0).reshape(3, 2)


# ----------------------------------------------------------------------------- listing & lookup
def test_registered_and_available():
    registered = normdrop.registered_backends()
    assert registered[0] == "numpy"
    assert len(registered) == len(set(registered))
    available = normdrop.available_backends()
    assert "numpy" in available
    assert set(available) <= set(registered)
    status = normdrop.backend_status()
    assert list(status) == registered
    assert [k for k, v in status.items() if v is None] == available
    for name, reason in status.items():
        if reason is not None:
            assert isinstance(reason, str) and name in reason


def test_get_backend():
    be = normdrop.get_backend("numpy")
    assert be is normdrop.get_backend("numpy")
    assert be.name == "numpy" and be.device == "cpu"
    assert isinstance(be, Backend)
    spy = SpyBackend()
    assert normdrop.get_backend(spy) is spy
    with pytest.raises(UnknownBackendError, match="nope"):
        normdrop.get_backend("nope")
    with pytest.raises(UnknownBackendError):
        normdrop.get_backend(object())
    for name in normdrop.available_backends():
        be = normdrop.get_backend(name)
        assert be.name == name and isinstance(be, Backend)


def test_protocol_runtime_check():
    assert isinstance(NumpyBackend(), Backend)
    assert not isinstance(object(), Backend)

    class Partial:
        name = "partial"
        device = "cpu"

        def accepts(self, x):
            return True

    assert not isinstance(Partial(), Backend)


# ----------------------------------------------------------------------------- selection order
def test_default_is_by_array_type():
    assert registry.resolve_backend(X).name == _cpu_default()
    assert registry.resolve_backend(None).name == _cpu_default()
    assert registry.resolve_backend(np.float32(1.0) * np.ones(2)).name == _cpu_default()


def test_dask_arrays_pick_dask():
    da = pytest.importorskip("dask.array")
    if "dask" not in normdrop.available_backends():
        pytest.skip("dask backend not available")
    assert registry.resolve_backend(da.ones((4, 2), chunks=2)).name == "dask"


def test_cuda_like_arrays_are_never_taken_by_the_cpu():
    class CudaLike:
        __cuda_array_interface__ = {
            "shape": (3, 2),
            "typestr": "<f8",
            "version": 3,
            "data": (0, False),
        }
        shape = (3, 2)
        dtype = np.dtype(np.float64)

    try:  # a GPU's backend may take it (its pointer is never read here)
        assert registry.resolve_backend(CudaLike()).device != "cpu"
    except BackendError:  # no GPU backend loads here
        pass
    with pytest.raises(BackendArrayError):
        registry.resolve_backend(CudaLike(), "numpy")


def test_set_backend():
    spy = SpyBackend()
    normdrop.set_backend(spy)
    assert registry.resolve_backend(X) is spy
    F.batch_norm(X, training=True)
    assert spy.calls == 1
    normdrop.set_backend("numpy")
    assert registry.resolve_backend(X).name == "numpy"
    with pytest.raises(UnknownBackendError):
        normdrop.set_backend("nope")
    assert registry.resolve_backend(X).name == "numpy"  # unchanged by the failure
    normdrop.set_backend(None)
    assert registry.resolve_backend(X).name == _cpu_default()


def test_environment_variable(monkeypatch):
    monkeypatch.setenv(registry.ENV_VAR, "numpy")
    assert registry.resolve_backend(X).name == "numpy"
    monkeypatch.setenv(registry.ENV_VAR, "")
    assert registry.resolve_backend(X).name == _cpu_default()
    monkeypatch.setenv(registry.ENV_VAR, "nope")
    with pytest.raises(UnknownBackendError) as info:
        F.batch_norm(X, training=True)
    # the message names the variable, the value and the registered backends
    assert "NORMDROP_BACKEND" in str(info.value)
    assert "'nope'" in str(info.value) and "numba" in str(info.value)
    spy = SpyBackend()
    normdrop.set_backend(spy)  # set_backend wins over the environment
    assert registry.resolve_backend(X) is spy
    normdrop.set_backend(None)
    monkeypatch.delenv(registry.ENV_VAR)  # unset again: by array type from the next call
    assert registry.resolve_backend(X).name == _cpu_default()


def test_use_backend_context():
    outer, inner = SpyBackend("outer"), SpyBackend("inner")
    with normdrop.use_backend(outer) as chosen:
        assert chosen is outer
        assert registry.resolve_backend(X) is outer
        with normdrop.use_backend(inner):
            assert registry.resolve_backend(X) is inner
            F.layer_norm(X, 2)
        assert registry.resolve_backend(X) is outer
        F.layer_norm(X, 2)
    assert (outer.calls, inner.calls) == (1, 1)
    assert registry.resolve_backend(X).name == _cpu_default()
    with normdrop.use_backend("numpy") as chosen:
        assert chosen is normdrop.get_backend("numpy")
    with pytest.raises(UnknownBackendError):
        with normdrop.use_backend("nope"):
            pass


def test_use_backend_restored_after_exception():
    spy = SpyBackend()
    with pytest.raises(RuntimeError, match="boom"):
        with normdrop.use_backend(spy):
            with normdrop.use_backend("numpy"):
                raise RuntimeError("boom")
    assert registry.resolve_backend(X).name == _cpu_default()
    with pytest.raises(normdrop.ShapeError):
        with normdrop.use_backend(spy):
            F.layer_norm(X, 5)
    assert registry.resolve_backend(X).name == _cpu_default()


def test_use_backend_is_per_thread_and_per_task():
    spy = SpyBackend()
    seen = {}

    def worker():
        seen["thread"] = registry.resolve_backend(X).name

    async def task(name, backend):
        with normdrop.use_backend(backend):
            await asyncio.sleep(0)
            seen[name] = registry.resolve_backend(X).name
            await asyncio.sleep(0)
            seen[name + "-after"] = registry.resolve_backend(X).name

    async def main():
        await asyncio.gather(task("a", spy), task("b", "numpy"))

    with normdrop.use_backend(spy):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    # a new thread starts with an empty context, or with a copy of its starter's where
    # Python says so (on by default in 3.14's free-threaded build)
    inherits = getattr(sys.flags, "thread_inherit_context", False)
    assert seen["thread"] == ("spy" if inherits else _cpu_default())
    asyncio.run(main())
    assert seen["a"] == seen["a-after"] == "spy"
    assert seen["b"] == seen["b-after"] == "numpy"


def test_precedence(monkeypatch):
    env, glob, ctx, arg = (SpyBackend(n) for n in ("env", "glob", "ctx", "arg"))
    monkeypatch.setenv(registry.ENV_VAR, "numpy")
    assert registry.resolve_backend(X).name == "numpy"
    normdrop.set_backend(glob)
    assert registry.resolve_backend(X) is glob
    with normdrop.use_backend(ctx):
        assert registry.resolve_backend(X) is ctx
        assert registry.resolve_backend(X, arg) is arg
        assert registry.resolve_backend(X, "numpy").name == "numpy"
        F.dropout(X, 0.5, seed=0, backend=arg)
        F.dropout(X, 0.5, seed=0)
    assert (arg.calls, ctx.calls, glob.calls, env.calls) == (1, 1, 0, 0)


def test_layer_backend_argument_wins(monkeypatch):
    spy, other = SpyBackend("spy"), SpyBackend("other")
    ln = normdrop.LayerNorm(2, backend=spy)
    with normdrop.use_backend(other):
        ln(X)
    assert (spy.calls, other.calls) == (1, 0)
    ln_auto = normdrop.LayerNorm(2)
    with normdrop.use_backend(other):
        ln_auto(X)
    assert other.calls == 1


def test_chosen_backend_must_accept_the_array():
    picky = SpyBackend("picky", accept=False)
    with pytest.raises(BackendArrayError, match="picky"):
        F.batch_norm(X, training=True, backend=picky)
    with normdrop.use_backend(picky):
        with pytest.raises(BackendArrayError):
            F.layer_norm(X, 2)
    assert picky.calls == 0


def test_third_party_backend_object_directly():
    spy = SpyBackend("thirdparty")
    y = F.batch_norm(X, training=True, backend=spy)
    np.testing.assert_allclose(y, F.batch_norm(X, training=True, backend="numpy"))
    mask = F.dropout_mask((3, 2), 0.5, seed=1, backend=spy)
    np.testing.assert_array_equal(mask, F.dropout_mask((3, 2), 0.5, seed=1, backend="numpy"))
    bn = normdrop.BatchNorm1d(2, backend=spy)
    bn(X)
    assert spy.calls == 3


# ----------------------------------------------------------------------------- resolution cost
@pytest.fixture
def protocol_checks(monkeypatch):
    """Count the registry's protocol checks (``implements_backend``; a list of checked
    objects)."""
    checked = []

    def counting(obj):
        checked.append(obj)
        return implements_backend(obj)

    monkeypatch.setattr(registry, "implements_backend", counting)
    return checked


def test_backend_object_is_checked_once(protocol_checks):
    spy = SpyBackend()
    with normdrop.use_backend(spy):
        for _ in range(3):
            F.layer_norm(X, 2)
    for _ in range(3):
        F.layer_norm(X, 2, backend=spy)
    normdrop.set_backend(spy)
    for _ in range(3):
        F.layer_norm(X, 2)
        registry.resolve_backend(X)
    assert spy.calls == 9
    assert [obj for obj in protocol_checks if obj is spy] == [spy]


def test_loaded_backends_are_not_checked_per_call(protocol_checks):
    numpy_backend = normdrop.get_backend("numpy")
    with normdrop.use_backend("numpy"):
        F.layer_norm(X, 2)
    F.layer_norm(X, 2, backend=numpy_backend)
    normdrop.set_backend(numpy_backend)
    F.layer_norm(X, 2)
    assert protocol_checks == []


def test_objects_that_are_not_backends_are_refused_every_time():
    class NotABackend:
        name = "fake"

    fake = NotABackend()
    for _ in range(2):
        with pytest.raises(UnknownBackendError, match="NotABackend"):
            normdrop.get_backend(fake)
        with pytest.raises(UnknownBackendError):
            F.layer_norm(X, 2, backend=fake)
        with pytest.raises(UnknownBackendError):
            normdrop.set_backend(fake)
    assert registry.resolve_backend(X).name == _cpu_default()


def test_a_dead_backend_leaves_no_trace():
    spy = SpyBackend()
    normdrop.get_backend(spy)
    key = id(spy)
    assert key in registry._checked
    del spy
    gc.collect()
    assert key not in registry._checked  # its id may now belong to any other object


def test_backend_without_weak_references_is_checked_once(protocol_checks):
    # NumpyBackend's kernels on a class whose instances take no weak references
    methods = {k: v for k, v in vars(NumpyBackend).items() if not k.startswith("__")}
    slotted = type("Slotted", (), {**methods, "__slots__": (), "name": "slotted"})()
    with pytest.raises(TypeError):
        weakref.ref(slotted)
    for _ in range(3):
        assert registry.resolve_backend(X, slotted) is slotted
    assert [obj for obj in protocol_checks if obj is slotted] == [slotted]


def test_backend_by_array_type_is_worked_out_once_per_type(monkeypatch):
    class Sub(np.ndarray):
        pass

    class CudaLike:
        __cuda_array_interface__ = {"shape": (1,), "typestr": "<f8", "version": 3}

    asked = []
    work_out = registry._default_name_for
    monkeypatch.setattr(
        registry, "_default_name_for", lambda x: asked.append(type(x)) or work_out(x)
    )
    sub = X.view(Sub)
    for _ in range(3):
        assert registry.resolve_backend(sub).name == _cpu_default()
    for _ in range(2):
        with pytest.raises(BackendError):  # not accepted by the CPU, or cuda not installed
            registry.resolve_backend(CudaLike())
    assert asked == [Sub, CudaLike]
    assert registry._backend_name_by_type[CudaLike] == "cuda"


def test_environment_variable_sees_every_change_made_through_os_environ(monkeypatch):
    """The variable is read at each call as ``os.environ.get`` reads it, whichever way
    ``os.environ`` was changed, non-ASCII values included."""
    env = os.environ
    monkeypatch.setitem(env, registry.ENV_VAR, "numpy")  # restored (deleted) afterwards
    changes = [
        lambda: env.__setitem__(registry.ENV_VAR, "numpy"),
        lambda: env.pop(registry.ENV_VAR),
        lambda: env.setdefault(registry.ENV_VAR, "numpy"),
        lambda: env.__delitem__(registry.ENV_VAR),
        lambda: env.update({registry.ENV_VAR: "nümpy"}),
        lambda: env.__ior__({registry.ENV_VAR: ""}),
        lambda: monkeypatch.setenv(registry.ENV_VAR, "numpy"),
    ]
    for change in changes:
        change()
        value = os.environ.get(registry.ENV_VAR)
        assert registry._environment_choice() == value
        if value == "numpy":
            assert registry.resolve_backend(X).name == "numpy"
        elif not value:
            assert registry.resolve_backend(X).name == _cpu_default()
        else:
            with pytest.raises(UnknownBackendError, match="NORMDROP_BACKEND.*'nümpy'"):
                registry.resolve_backend(X)


def test_environment_variable_read_through_a_replaced_mapping(monkeypatch):
    """An ``os.environ`` replaced by another mapping is read through that mapping, at each
    call."""
    monkeypatch.setattr(os, "environ", {registry.ENV_VAR: "numpy"})
    assert registry.resolve_backend(X).name == "numpy"
    os.environ[registry.ENV_VAR] = ""
    assert registry.resolve_backend(X).name == _cpu_default()
    os.environ[registry.ENV_VAR] = "nope"
    with pytest.raises(UnknownBackendError, match="NORMDROP_BACKEND"):
        registry.resolve_backend(X)


# ----------------------------------------------------------------------------- plugins
def test_plugin_entry_point(plugins):
    spy = SpyBackend("thirdparty")
    plugins["thirdparty"] = FakeEntryPoint("thirdparty", spy)
    assert "thirdparty" in normdrop.registered_backends()
    assert normdrop.registered_backends().index("thirdparty") > 0  # after the built-ins
    assert normdrop.get_backend("thirdparty") is spy
    assert "thirdparty" in normdrop.available_backends()
    F.layer_norm(X, 2, backend="thirdparty")
    with normdrop.use_backend("thirdparty"):
        F.layer_norm(X, 2)
    assert spy.calls == 2
    with pytest.raises(UnknownBackendError) as info:
        normdrop.get_backend("other")
    assert "thirdparty" in str(info.value) and "numpy" in str(info.value)


def test_broken_plugin_warns_and_is_not_installed(plugins):
    plugins["broken"] = FakeEntryPoint("broken", ImportError("missing dependency xyz"))
    with pytest.warns(RuntimeWarning, match="broken"):
        with pytest.raises(BackendNotInstalledError, match="xyz"):
            normdrop.get_backend("broken")
    with pytest.warns(RuntimeWarning):
        status = normdrop.backend_status()
    assert status["broken"] is not None and "broken" in status["broken"]
    with pytest.warns(RuntimeWarning):
        assert "broken" not in normdrop.available_backends()
    assert "broken" in normdrop.registered_backends()
    # normdrop itself keeps working
    F.batch_norm(X, training=True, backend="numpy")


def test_plugin_that_is_not_a_backend(plugins):
    plugins["bogus"] = FakeEntryPoint("bogus", object())
    with pytest.raises(BackendError, match="bogus"):
        normdrop.get_backend("bogus")


def test_builtin_names_are_not_shadowed_by_plugins(monkeypatch):
    monkeypatch.setattr(registry, "_plugins", None)

    class EP(FakeEntryPoint):
        pass

    def fake_entry_points(group=None):
        return [EP("numpy", SpyBackend("numpy")), EP("extra", SpyBackend("extra"))]

    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    names = normdrop.registered_backends()
    assert names.count("numpy") == 1
    assert "extra" in names
    assert not isinstance(normdrop.get_backend("numpy"), SpyBackend)


class _Proxy:
    """A backend that wraps another and forwards every member through ``__getattr__``."""

    def __init__(self, inner: object, hide: str | None = None) -> None:
        self._inner, self._hide = inner, hide

    def __getattr__(self, member: str) -> object:
        if member == self._hide:
            raise AttributeError(member)
        return getattr(self._inner, member)


def test_a_backend_whose_members_come_from_getattr_is_accepted():
    """A proxy backend counts as implementing the protocol on every Python: on 3.12 and
    later ``isinstance`` with a runtime protocol looks members up statically and would
    reject it; a proxy missing a required member, or a class, is still rejected."""
    numpy_backend = normdrop.get_backend("numpy")
    proxy = _Proxy(numpy_backend)
    assert implements_backend(proxy)
    assert normdrop.get_backend(proxy) is proxy
    x = np.arange(6.0).reshape(3, 2)
    y = F.layer_norm(x, (2,), backend=proxy)
    np.testing.assert_array_equal(y, F.layer_norm(x, (2,), backend="numpy"))
    assert not implements_backend(_Proxy(numpy_backend, hide="dropout_mask"))
    with pytest.raises(normdrop.errors.UnknownBackendError):
        normdrop.get_backend(_Proxy(numpy_backend, hide="dropout_mask"))
    assert not implements_backend(_Proxy)


def test_missing_members_names_what_a_proxy_hides():
    """``missing_members`` (used by the registry and by ``check_backend``) looks members
    up by attribute access and names exactly the hidden one."""
    numpy_backend = normdrop.get_backend("numpy")
    assert missing_members(_Proxy(numpy_backend)) == []
    assert missing_members(_Proxy(numpy_backend, hide="dropout_mask")) == ["dropout_mask"]
