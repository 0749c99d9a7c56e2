"""Where a benchmarked normdrop call runs: a backend, and the ``backend=`` argument it passes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from normdrop.protocol import Backend

__all__ = ["Target", "Thunk"]

#: A timed call: no arguments, any result.
Thunk = Callable[[], Any]


@dataclass(frozen=True)
class Target:
    """Where a normdrop call runs: a backend, and the ``backend=`` argument to pass.

    Attributes
    ----------
    backend : Backend
        The backend the data is placed on.
    choice : str or None
        What the calls pass as ``backend=``; ``None`` exercises the automatic choice.
    """

    backend: Backend
    choice: str | None

    @classmethod
    def named(cls, choice: str | None) -> Target:
        """The target ``choice``, or what the selection order picks (``NORMDROP_BACKEND``, ...).

        Parameters
        ----------
        choice : str or None
            A backend name; ``None`` for the automatic choice.

        Returns
        -------
        Target
        """
        import normdrop
        from normdrop.registry import resolve_backend

        if choice is None:
            return cls(resolve_backend(None), None)  # a choice such as dask: data goes onto it
        return cls(normdrop.get_backend(choice), choice)

    def array(self, a: np.ndarray) -> Any:
        """Return the host array ``a`` as an array of the backend."""
        return self.backend.asarray(a)

    def ready(self, *values: Any) -> tuple[Any, ...]:
        """Return ``values`` computed: saved statistics must not be recomputed at every call.

        Lazy (Dask) arrays are persisted; anything else is returned unchanged.
        """
        return tuple(v.persist() if hasattr(v, "__dask_graph__") else v for v in values)

    def wrap(self, fn: Thunk) -> Thunk:
        """Make ``fn`` wait for asynchronous (GPU) or lazy (Dask) results."""
        if self.backend.device != "cpu":
            from numba import cuda

            def synced() -> Any:
                result = fn()
                cuda.synchronize()
                return result

            return synced

        def settled() -> Any:
            result = fn()
            items = result if isinstance(result, tuple) else (result,)
            lazy = [r for r in items if hasattr(r, "__dask_graph__")]
            if lazy:
                import dask

                dask.compute(*lazy)
            return result

        return settled if self.backend.name == "dask" else fn
