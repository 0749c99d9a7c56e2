"""``normdrop demo``: the book chapter "BatchNorm and Dropout for Stability", with normdrop."""

from __future__ import annotations

from typing import Any

import numpy as np

from normdrop import _validation
from normdrop.layers import BatchNorm1d, Dropout, Sequential
from normdrop.protocol import Backend
from normdrop.registry import get_backend, registered_backends, resolve_backend

__all__ = ["run_demo"]


def _host_stats(label: str, a: np.ndarray) -> str:
    return f"  {label:<22} mean {a.mean():9.3f}   std {a.std():9.3f}"


def run_demo(backend: str | Backend | None = None, seed: int = 0) -> None:
    """Print the walkthrough: BatchNorm1d(64) + Dropout(0.15) on a (4, 64, 30) batch.

    Parameters
    ----------
    backend : str or Backend, optional
        The backend to run on; by default the one the selection order picks
        (``NORMDROP_BACKEND``, :func:`~normdrop.set_backend`, ...), else ``numba``.
    seed : int, default 0
        Seed of the data and of the dropout masks, in [0, 2**64).

    Raises
    ------
    InvalidParameterError
        ``seed`` is not an integer in [0, 2**64) (checked before anything is printed).
    UnknownBackendError
        ``backend`` names no registered backend (checked before anything is printed).
    """
    seed = _validation.seed(seed)
    if isinstance(backend, str) and backend not in registered_backends():
        get_backend(backend)  # raises, naming the registered backends
    # Printed before the backend loads (and maybe compiles), so the command answers at once.
    print("normdrop demo: BatchNorm1d(64) + Dropout(0.15), training and evaluation", flush=True)
    rng = np.random.default_rng(seed)
    host_x = (rng.standard_normal((4, 64, 30)) * 100 + 50).astype(np.float32)
    # the backend the selection order picks (NORMDROP_BACKEND, set_backend, ...); the data
    # then goes onto its own array type, so a choice such as dask takes it as well
    chosen = resolve_backend(None) if backend is None else get_backend(backend)
    x = chosen.asarray(host_x)  # the data on the backend's own array type (e.g. dask)

    def _stats(label: str, a: Any) -> str:
        return _host_stats(label, np.asarray(chosen.to_numpy(a)))

    bn = BatchNorm1d(64, backend=backend)
    drop = Dropout(0.15, seed=seed, backend=backend)
    model = Sequential(bn, drop)
    print(f"on the {chosen.name!r} backend")
    print(f"input: {x.shape} float32 activations, mean ~50, std ~100\n")

    print("Training mode (batch statistics, dropout active)")
    model.train()
    normalised = bn(x)
    y_train = np.asarray(chosen.to_numpy(drop(normalised)))
    print(_stats("x", x))
    print(_stats("after BatchNorm1d", normalised))
    print(_stats("after Dropout(0.15)", y_train))
    print(
        f"  non-zero after dropout: {100 * np.count_nonzero(y_train) / y_train.size:.1f}%"
        f"   zeros: {y_train.size - np.count_nonzero(y_train):,} of {y_train.size:,}\n"
    )

    print("Evaluation mode (running statistics, dropout is the identity)")
    model.eval()
    y_eval = np.asarray(chosen.to_numpy(model(x)))
    print(_stats("output", y_eval))
    print(f"  zeros: {y_eval.size - np.count_nonzero(y_eval)}")
    print("  After one training batch the running statistics have moved only 10% of the way")
    running_mean, running_var = bn.running_mean, bn.running_var
    assert running_mean is not None and running_var is not None  # the layer tracks them
    print(
        f"  (momentum 0.1): running_mean ~ {float(running_mean.mean()):.2f}, "
        f"running_var ~ {float(running_var.mean()):.1f},"
    )
    print("  so eval output is still far from mean 0 / std 1: it needs many batches.")
    print("  (The book chapter's 'eval : 50.05 99.95' is what an untrained layer returns.)\n")

    model.train()
    for _ in range(99):
        bn(x)
    model.eval()
    y_settled = model(x)
    print(f"After 100 training batches ({int(bn.state_dict()['num_batches_tracked'])} tracked):")
    print(_stats("eval output", y_settled))
    print("\nstate_dict keys:", ", ".join(model.state_dict()))
