"""The peers of the benchmarks: PyTorch on the CPU and ``jax.jit`` of the same math.

A PyTorch builder takes a CPU tensor (the case's input) and returns the thunk to
time; its thunks run with gradients disabled (:func:`torch_session`). A JAX builder
takes the host input (a NumPy array) and returns a thunk that runs a jitted function
on data already placed on JAX's CPU device and blocks until the result is ready. The
backward builders of both take the saved statistics (mean and ``1 / std``) as normdrop
does; JAX jits the closed-form gradient rather than ``jax.vjp`` of the forward, so that
no implementation recomputes the forward.

PyTorch and JAX are imported only when a builder runs (or by :func:`import_torch` and
:func:`import_jax`); without them the bench shows ``n/a`` in their columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from normdrop.bench.inputs import DROPOUT_P, EPS, FUSED_P, MOMENTUM, SEED, grad_like
from normdrop.bench.target import Thunk

__all__ = [
    "JaxBuilder",
    "TorchBuilder",
    "import_jax",
    "import_torch",
    "jax_bn_backward",
    "jax_bn_forward",
    "jax_dropout_add_ln",
    "jax_dropout_backward",
    "jax_dropout_forward",
    "jax_ln_backward",
    "jax_ln_forward",
    "torch_bn_backward",
    "torch_bn_forward",
    "torch_bn_layer_call",
    "torch_dropout_add_ln",
    "torch_dropout_backward",
    "torch_dropout_forward",
    "torch_dropout_layer_call",
    "torch_ln_backward",
    "torch_ln_forward",
    "torch_ln_layer_call",
    "torch_session",
]

#: ``build(xt)``: a CPU tensor to the thunk to time.
TorchBuilder = Callable[[Any], Thunk]
#: ``build(x)``: the host input to the thunk to time.
JaxBuilder = Callable[[np.ndarray], Thunk]


# ----------------------------------------------------------------------------- PyTorch
def import_torch() -> Any | None:
    """Return the ``torch`` module, or ``None`` when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def torch_session(torch: Any | None, threads: int) -> Iterator[None]:
    """Run PyTorch on ``threads`` threads with autograd off, restoring both afterwards.

    Parameters
    ----------
    torch : module or None
        ``torch``; with ``None`` the context does nothing.
    threads : int
        PyTorch's thread count inside the context.
    """
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(previous)


def _torch_params(xt: Any, n: int) -> tuple[Any, Any]:
    """Weight (ones) and bias (zeros) of ``n`` features in ``xt``'s dtype."""
    import torch

    return torch.ones(n, dtype=xt.dtype), torch.zeros(n, dtype=xt.dtype)


def _torch_grad(xt: Any) -> Any:
    import torch

    return torch.from_numpy(grad_like(xt.numpy()))


def torch_bn_forward(training: bool) -> TorchBuilder:
    """``torch.nn.functional.batch_norm`` in training or evaluation mode."""

    def build(xt: Any) -> Thunk:
        import torch

        w, b = _torch_params(xt, xt.shape[1])
        rv, rm = _torch_params(xt, xt.shape[1])
        return lambda: torch.nn.functional.batch_norm(
            xt, rm, rv, w, b, training=training, momentum=MOMENTUM, eps=EPS
        )

    return build


def torch_bn_backward(xt: Any) -> Thunk:
    """``aten.native_batch_norm_backward`` for input, weight and bias."""
    import torch

    w, b = _torch_params(xt, xt.shape[1])
    rv, rm = _torch_params(xt, xt.shape[1])
    dy, aten = _torch_grad(xt), torch.ops.aten
    _, mean, invstd = aten.native_batch_norm(xt, w, b, rm, rv, True, MOMENTUM, EPS)
    mask = [True, True, True]
    return lambda: aten.native_batch_norm_backward(dy, xt, w, rm, rv, mean, invstd, True, EPS, mask)


def torch_ln_forward(xt: Any) -> Thunk:
    """``torch.nn.functional.layer_norm`` over the last axis."""
    import torch

    d = xt.shape[-1]
    w, b = _torch_params(xt, d)
    return lambda: torch.nn.functional.layer_norm(xt, (d,), w, b, EPS)


def torch_ln_backward(xt: Any) -> Thunk:
    """``aten.native_layer_norm_backward`` for input, weight and bias."""
    import torch

    d = xt.shape[-1]
    w, b = _torch_params(xt, d)
    dy, aten = _torch_grad(xt), torch.ops.aten
    _, mean, rstd = aten.native_layer_norm(xt, [d], w, b, EPS)
    mask = [True, True, True]
    return lambda: aten.native_layer_norm_backward(dy, xt, [d], mean, rstd, w, b, mask)


def torch_dropout_forward(xt: Any) -> Thunk:
    """``aten.native_dropout``, which returns the mask too, as autograd's training forward does."""
    import torch

    return lambda: torch.ops.aten.native_dropout(xt, DROPOUT_P, True)


def torch_dropout_backward(xt: Any) -> Thunk:
    """``aten.native_dropout_backward``: ``grad * mask * scale``."""
    import torch

    dy = _torch_grad(xt)
    _, mask = torch.ops.aten.native_dropout(xt, DROPOUT_P, True)
    scale = 1.0 / (1.0 - DROPOUT_P)
    return lambda: torch.ops.aten.native_dropout_backward(dy, mask, scale)


def torch_bn_layer_call(xt: Any) -> Thunk:
    """A ``torch.nn.BatchNorm1d`` module call in training mode."""
    import torch

    layer = torch.nn.BatchNorm1d(xt.shape[1], dtype=xt.dtype).train()
    return lambda: layer(xt)


def torch_ln_layer_call(xt: Any) -> Thunk:
    """A ``torch.nn.LayerNorm`` module call."""
    import torch

    layer = torch.nn.LayerNorm(xt.shape[-1], dtype=xt.dtype)
    return lambda: layer(xt)


def torch_dropout_layer_call(xt: Any) -> Thunk:
    """A ``torch.nn.Dropout`` module call in training mode."""
    import torch

    layer = torch.nn.Dropout(DROPOUT_P).train()
    return lambda: layer(xt)


def torch_dropout_add_ln(xt: Any) -> Thunk:
    """``native_dropout``, ``+ residual`` and ``native_layer_norm``: a transformer block's."""
    import torch

    d = xt.shape[-1]
    w, b = _torch_params(xt, d)
    res, aten = _torch_grad(xt), torch.ops.aten

    def three() -> Any:
        h, mask = aten.native_dropout(xt, FUSED_P, True)
        return aten.native_layer_norm(h + res, [d], w, b, EPS), mask

    return three


# ----------------------------------------------------------------------------- JAX
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


def _need_jax() -> Any:
    jax = import_jax()
    if jax is None:
        raise ImportError("jax is not installed")
    return jax


def _put(jax: Any, *arrays: np.ndarray) -> list[Any]:
    cpu = jax.devices("cpu")[0]
    return [jax.device_put(a, cpu) for a in arrays]


def _jitted(jax: Any, fn: Callable[..., Any], *args: Any) -> Thunk:
    jitted = jax.jit(fn)
    return lambda: jax.block_until_ready(jitted(*args))


def _bn_axes(ndim: int) -> tuple[int, ...]:
    """The axes BatchNorm reduces over: all but the channel axis 1."""
    return (0, *range(2, ndim))


def _bn_view(ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector against ``(N, C, ...)``."""
    return (1, -1) + (1,) * (ndim - 2)


def jax_bn_forward(training: bool) -> JaxBuilder:
    """BatchNorm's forward (with the running statistics' update in training mode)."""

    def build(x_host: np.ndarray) -> Thunk:
        jax = _need_jax()
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
            rstd = jax.lax.rsqrt(var + EPS)
            y = (x - mean.reshape(view)) * (rstd * w).reshape(view) + b.reshape(view)
            new_rm = (1 - MOMENTUM) * rm + MOMENTUM * mean
            new_rv = (1 - MOMENTUM) * rv + MOMENTUM * var * (n / max(n - 1, 1))
            return y, mean, rstd, new_rm, new_rv

        def evaluate(x: Any, w: Any, b: Any, rm: Any, rv: Any) -> Any:
            scale = jax.lax.rsqrt(rv + EPS) * w
            return (x - rm.reshape(view)) * scale.reshape(view) + b.reshape(view)

        return _jitted(jax, train if training else evaluate, x, w, b, rm, rv)

    return build


def jax_bn_backward(x_host: np.ndarray) -> Thunk:
    """BatchNorm's closed-form backward from the saved statistics."""
    jax = _need_jax()
    jnp = jax.numpy
    c, dtype, view = x_host.shape[1], x_host.dtype, _bn_view(x_host.ndim)
    axes = _bn_axes(x_host.ndim)
    mean = x_host.mean(axis=axes)
    rstd = 1.0 / np.sqrt(x_host.var(axis=axes) + EPS)
    x, dy, w, m, r = _put(
        jax, x_host, grad_like(x_host), np.ones(c, dtype), mean.astype(dtype), rstd.astype(dtype)
    )

    def backward(dy: Any, x: Any, mean: Any, rstd: Any, w: Any) -> Any:
        xhat = (x - mean.reshape(view)) * rstd.reshape(view)
        db = jnp.sum(dy, axis=axes)
        dw = jnp.sum(dy * xhat, axis=axes)
        n = x.size // x.shape[1]
        dx = (rstd * w).reshape(view) * (
            dy - (db / n).reshape(view) - xhat * (dw / n).reshape(view)
        )
        return dx, dw, db

    return _jitted(jax, backward, dy, x, m, r, w)


def jax_ln_forward(x_host: np.ndarray) -> Thunk:
    """LayerNorm's forward over the last axis."""
    jax = _need_jax()
    d, dtype = x_host.shape[-1], x_host.dtype
    x, w, b = _put(jax, x_host, np.ones(d, dtype), np.zeros(d, dtype))
    return _jitted(jax, lambda x, w, b: _layer_norm(jax, x, w, b), x, w, b)


def jax_ln_backward(x_host: np.ndarray) -> Thunk:
    """LayerNorm's closed-form backward from the saved statistics."""
    jax = _need_jax()
    jnp = jax.numpy
    d, dtype = x_host.shape[-1], x_host.dtype
    mean = x_host.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(x_host.var(axis=-1, keepdims=True) + EPS)
    x, dy, w, m, r = _put(
        jax, x_host, grad_like(x_host), np.ones(d, dtype), mean.astype(dtype), rstd.astype(dtype)
    )

    def backward(dy: Any, x: Any, mean: Any, rstd: Any, w: Any) -> Any:
        xhat = (x - mean) * rstd
        g = dy * w
        dx = rstd * (
            g - jnp.mean(g, axis=-1, keepdims=True)
            - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True)
        )  # fmt: skip
        lead = tuple(range(x.ndim - 1))
        return dx, jnp.sum(dy * xhat, axis=lead), jnp.sum(dy, axis=lead)

    return _jitted(jax, backward, dy, x, m, r, w)


def jax_dropout_forward(x_host: np.ndarray) -> Thunk:
    """Inverted dropout that returns its keep mask, as a training forward keeps it."""
    jax = _need_jax()
    (x,) = _put(jax, x_host)
    key = jax.random.PRNGKey(SEED)
    return _jitted(jax, lambda x, key: _dropout(jax, x, key, DROPOUT_P), x, key)


def jax_dropout_backward(x_host: np.ndarray) -> Thunk:
    """Dropout's backward from a saved keep mask."""
    jax = _need_jax()
    jnp = jax.numpy
    keep = np.random.default_rng(2).random(x_host.shape) >= DROPOUT_P
    dy, mask = _put(jax, grad_like(x_host), keep)
    scale = 1.0 / (1.0 - DROPOUT_P)
    return _jitted(jax, lambda dy, mask: jnp.where(mask, dy * scale, 0), dy, mask)


def jax_dropout_add_ln(x_host: np.ndarray) -> Thunk:
    """Dropout, ``+ residual`` and LayerNorm in one jitted function."""
    jax = _need_jax()
    d, dtype = x_host.shape[-1], x_host.dtype
    x, res, w, b = _put(jax, x_host, grad_like(x_host), np.ones(d, dtype), np.zeros(d, dtype))
    key = jax.random.PRNGKey(SEED)

    def fused(x: Any, res: Any, w: Any, b: Any, key: Any) -> Any:
        h, mask = _dropout(jax, x, key, FUSED_P)
        r = h + res
        return (*_layer_norm(jax, r, w, b), r, mask)

    return _jitted(jax, fused, x, res, w, b, key)


def _layer_norm(jax: Any, x: Any, w: Any, b: Any) -> tuple[Any, Any, Any]:
    """LayerNorm over the last axis: ``(y, mean, rstd)``."""
    jnp = jax.numpy
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(var + EPS)
    return (x - mean) * rstd * w + b, mean, rstd


def _dropout(jax: Any, x: Any, key: Any, p: float) -> tuple[Any, Any]:
    """Inverted dropout: ``(y, keep_mask)``, the mask kept as a training forward does."""
    keep = jax.random.bernoulli(key, 1.0 - p, x.shape)
    return jax.numpy.where(keep, x * (1.0 / (1.0 - p)), 0), keep
