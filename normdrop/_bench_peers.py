"""JAX as an optional peer of ``normdrop bench``: ``jax.jit`` of the same math, on the CPU.

Each builder takes the host input (a NumPy array) and returns a thunk that runs a
jitted function on data already placed on JAX's CPU device and blocks until the
result is ready. The backward builders take the saved statistics (mean and
``1 / std``) as normdrop and PyTorch do, and jit the closed-form gradient rather
than ``jax.vjp`` of the forward, so that no implementation recomputes the forward.

JAX is imported only by :func:`import_jax`, when a benchmark runs; without JAX the
bench shows ``n/a`` in its columns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Thunk = Callable[[], Any]
JaxBuilder = Callable[[np.ndarray], Thunk]

__all__ = ["JaxBuilder", "import_jax", "jax_builders"]


def import_jax() -> Any | None:
    """Return the ``jax`` module set up for CPU float64 work, or ``None`` when not installed.

    Returns
    -------
    module or None
        ``jax`` with ``jax_enable_x64`` on (so float64 inputs stay float64) and its
        CPU platform chosen.
    """
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax


def _put(jax: Any, *arrays: np.ndarray) -> list[Any]:
    cpu = jax.devices("cpu")[0]
    return [jax.device_put(a, cpu) for a in arrays]


def _thunk(jax: Any, fn: Callable[..., Any], *args: Any) -> Thunk:
    jitted = jax.jit(fn)
    return lambda: jax.block_until_ready(jitted(*args))


def _grad_like(x: np.ndarray) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype)


def _bn_axes(ndim: int) -> tuple[int, ...]:
    """The axes BatchNorm reduces over: all but the channel axis 1."""
    return (0, *range(2, ndim))


def _bn_view(ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector against ``(N, C, ...)``."""
    return (1, -1) + (1,) * (ndim - 2)


def jax_builders(*, eps: float, momentum: float, p: float, fused_p: float) -> dict[str, JaxBuilder]:
    """Return the JAX builder of each kind of benchmark case.

    Parameters
    ----------
    eps, momentum : float
        The normalisations' epsilon and BatchNorm's running-statistics momentum.
    p, fused_p : float
        Drop probabilities of the dropout cases and of the fused dropout + add +
        LayerNorm cases.

    Returns
    -------
    dict of str to callable
        Keys ``"bn_train"``, ``"bn_eval"``, ``"bn_backward"``, ``"ln_forward"``,
        ``"ln_backward"``, ``"dropout_forward"``, ``"dropout_backward"`` and
        ``"dropout_add_ln"``; each value maps the host input to a thunk.
    """

    def need() -> Any:
        jax = import_jax()
        if jax is None:
            raise ImportError("jax is not installed")
        return jax

    def bn_forward(training: bool) -> JaxBuilder:
        def build(x_host: np.ndarray) -> Thunk:
            jax = need()
            jnp = jax.numpy
            c, dtype, view = x_host.shape[1], x_host.dtype, _bn_view(x_host.ndim)
            axes = _bn_axes(x_host.ndim)
            n = x_host.size // c
            x, w, b, rm, rv = _put(
                jax, x_host, np.ones(c, dtype), np.zeros(c, dtype),
                np.zeros(c, dtype), np.ones(c, dtype),
            )  # fmt: skip

            def train(x: Any, w: Any, b: Any, rm: Any, rv: Any) -> Any:
                mean = jnp.mean(x, axis=axes)
                var = jnp.mean(jnp.square(x - mean.reshape(view)), axis=axes)
                rstd = jax.lax.rsqrt(var + eps)
                y = (x - mean.reshape(view)) * (rstd * w).reshape(view) + b.reshape(view)
                new_rm = (1 - momentum) * rm + momentum * mean
                new_rv = (1 - momentum) * rv + momentum * var * (n / max(n - 1, 1))
                return y, mean, rstd, new_rm, new_rv

            def evaluate(x: Any, w: Any, b: Any, rm: Any, rv: Any) -> Any:
                scale = jax.lax.rsqrt(rv + eps) * w
                return (x - rm.reshape(view)) * scale.reshape(view) + b.reshape(view)

            return _thunk(jax, train if training else evaluate, x, w, b, rm, rv)

        return build

    def bn_backward(x_host: np.ndarray) -> Thunk:
        jax = need()
        jnp = jax.numpy
        c, dtype, view = x_host.shape[1], x_host.dtype, _bn_view(x_host.ndim)
        axes = _bn_axes(x_host.ndim)
        mean = x_host.mean(axis=axes)
        rstd = 1.0 / np.sqrt(x_host.var(axis=axes) + eps)
        x, dy, w, m, r = _put(
            jax, x_host, _grad_like(x_host), np.ones(c, dtype), mean.astype(dtype),
            rstd.astype(dtype),
        )  # fmt: skip

        def backward(dy: Any, x: Any, mean: Any, rstd: Any, w: Any) -> Any:
            xhat = (x - mean.reshape(view)) * rstd.reshape(view)
            db = jnp.sum(dy, axis=axes)
            dw = jnp.sum(dy * xhat, axis=axes)
            n = x.size // x.shape[1]
            dx = (rstd * w).reshape(view) * (
                dy - (db / n).reshape(view) - xhat * (dw / n).reshape(view)
            )
            return dx, dw, db

        return _thunk(jax, backward, dy, x, m, r, w)

    def ln_forward(x_host: np.ndarray) -> Thunk:
        jax = need()
        d, dtype = x_host.shape[-1], x_host.dtype
        x, w, b = _put(jax, x_host, np.ones(d, dtype), np.zeros(d, dtype))
        return _thunk(jax, lambda x, w, b: _layer_norm(jax, x, w, b, eps), x, w, b)

    def ln_backward(x_host: np.ndarray) -> Thunk:
        jax = need()
        jnp = jax.numpy
        d, dtype = x_host.shape[-1], x_host.dtype
        mean = x_host.mean(axis=-1, keepdims=True)
        rstd = 1.0 / np.sqrt(x_host.var(axis=-1, keepdims=True) + eps)
        x, dy, w, m, r = _put(
            jax, x_host, _grad_like(x_host), np.ones(d, dtype), mean.astype(dtype),
            rstd.astype(dtype),
        )  # fmt: skip

        def backward(dy: Any, x: Any, mean: Any, rstd: Any, w: Any) -> Any:
            xhat = (x - mean) * rstd
            g = dy * w
            dx = rstd * (
                g - jnp.mean(g, axis=-1, keepdims=True)
                - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True)
            )  # fmt: skip
            lead = tuple(range(x.ndim - 1))
            return dx, jnp.sum(dy * xhat, axis=lead), jnp.sum(dy, axis=lead)

        return _thunk(jax, backward, dy, x, m, r, w)

    def dropout_forward(x_host: np.ndarray) -> Thunk:
        jax = need()
        (x,) = _put(jax, x_host)
        key = jax.random.PRNGKey(1234)
        return _thunk(jax, lambda x, key: _dropout(jax, x, key, p), x, key)

    def dropout_backward(x_host: np.ndarray) -> Thunk:
        jax = need()
        jnp = jax.numpy
        keep = np.random.default_rng(2).random(x_host.shape) >= p
        dy, mask = _put(jax, _grad_like(x_host), keep)
        scale = 1.0 / (1.0 - p)
        return _thunk(jax, lambda dy, mask: jnp.where(mask, dy * scale, 0), dy, mask)

    def dropout_add_ln(x_host: np.ndarray) -> Thunk:
        jax = need()
        d, dtype = x_host.shape[-1], x_host.dtype
        x, res, w, b = _put(jax, x_host, _grad_like(x_host), np.ones(d, dtype), np.zeros(d, dtype))
        key = jax.random.PRNGKey(1234)

        def fused(x: Any, res: Any, w: Any, b: Any, key: Any) -> Any:
            h, mask = _dropout(jax, x, key, fused_p)
            r = h + res
            return (*_layer_norm(jax, r, w, b, eps), r, mask)

        return _thunk(jax, fused, x, res, w, b, key)

    return {
        "bn_train": bn_forward(True),
        "bn_eval": bn_forward(False),
        "bn_backward": bn_backward,
        "ln_forward": ln_forward,
        "ln_backward": ln_backward,
        "dropout_forward": dropout_forward,
        "dropout_backward": dropout_backward,
        "dropout_add_ln": dropout_add_ln,
    }


def _layer_norm(jax: Any, x: Any, w: Any, b: Any, eps: float) -> tuple[Any, Any, Any]:
    """LayerNorm over the last axis: ``(y, mean, rstd)``."""
    jnp = jax.numpy
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(var + eps)
    return (x - mean) * rstd * w + b, mean, rstd


def _dropout(jax: Any, x: Any, key: Any, p: float) -> tuple[Any, Any]:
    """Inverted dropout: ``(y, keep_mask)``, the mask kept as a training forward does."""
    keep = jax.random.bernoulli(key, 1.0 - p, x.shape)
    return jax.numpy.where(keep, x * (1.0 / (1.0 - p)), 0), keep
