"""Shared fixtures: one ``backend`` fixture runs each test body on every backend.

A test receives a :class:`normdrop.protocol.Backend`; it moves NumPy data onto
the backend with ``backend.asarray`` and results back with ``backend.to_numpy``,
and compares them with the ``numpy`` reference backend in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import normdrop
from normdrop.errors import BackendError

#: Backends that run every thread in Python (the CUDA simulator): tests keep shapes small.
SLOW_BACKENDS = {"cuda"}


def _backend_params():
    params = []
    for name in normdrop.registered_backends():
        try:
            normdrop.get_backend(name)
            marks = ()
        except BackendError as exc:
            marks = (pytest.mark.skip(reason=f"backend {name!r} unavailable: {exc}"),)
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.fixture(params=_backend_params())
def backend(request):
    """Every registered backend; unavailable ones skip with the reason."""
    return normdrop.get_backend(request.param)


@pytest.fixture
def reference():
    """The ``numpy`` reference backend: the oracle."""
    return normdrop.get_backend("numpy")


@pytest.fixture
def rng():
    """A seeded NumPy generator for test data."""
    return np.random.default_rng(12345)


def to_numpy(backend, a):
    """Bring a backend array (or None) back to the host."""
    return None if a is None else backend.to_numpy(a)
