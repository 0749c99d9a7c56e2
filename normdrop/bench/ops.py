"""The operations the benchmarks time: one normdrop call each, with its PyTorch and JAX peers.

An :class:`Operation` is independent of the input's shape and dtype: ``prepare``
places the input, the parameters and whatever a backward reads (from one forward
pass) on a :class:`~normdrop.bench.target.Target`; ``call`` is the normdrop call that is
timed. ``normdrop bench``'s cases (:mod:`normdrop.bench.cases`) and the asv suite
both time these operations, at their own shapes.

The calls that keep a forward's statistics or a dropout's bitmask go through the
four ``*_with_stats`` / ``*_with_bitmask`` functions below, and only through them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import normdrop
from normdrop import functional
from normdrop.bench import peers
from normdrop.bench.bound import Reread, channel_reread, no_reread, row_reread
from normdrop.bench.inputs import DROPOUT_P, EPS, FUSED_P, MOMENTUM, SEED, grad_like
from normdrop.bench.target import Target, Thunk

__all__ = [
    "BN_BACKWARD",
    "BN_EVAL",
    "BN_LAYER_BACKWARD",
    "BN_LAYER_CALL",
    "BN_TRAIN",
    "DROPOUT_ADD_LN",
    "DROPOUT_ADD_LN_BACKWARD",
    "DROPOUT_ADD_LN_THREE_CALLS",
    "DROPOUT_BACKWARD",
    "DROPOUT_BACKWARD_REGENERATE",
    "DROPOUT_FORWARD",
    "DROPOUT_LAYER_BACKWARD",
    "DROPOUT_LAYER_CALL",
    "Inputs",
    "LN_BACKWARD",
    "LN_FORWARD",
    "LN_LAYER_BACKWARD",
    "LN_LAYER_CALL",
    "Operation",
]

#: What ``prepare`` places on the target for ``call``: ``x``, ``dy``, ``w``, ``b``, ...
Inputs = dict[str, Any]


@dataclass(frozen=True)
class Operation:
    """One timed normdrop call and its peers, for any input shape and dtype.

    Attributes
    ----------
    name : str
        Short name, for errors and listings.
    passes : float
        Bytes moved, in units of the input's size: 2 for a forward (read x, write y),
        3 for a normalisation backward (read x and dy, write dx), 2 for the dropout
        backward (read dy and a 1-bit mask, write dx).
    prepare : callable
        ``prepare(x_host, target)`` returns the call's :data:`Inputs` on ``target``.
    call : callable
        ``call(inputs, target)`` runs the normdrop call that is timed.
    torch : callable or None
        ``torch(xt)`` returns the PyTorch thunk for a CPU tensor (:mod:`normdrop.bench.peers`).
    jax : callable or None
        ``jax(x_host)`` returns the ``jax.jit`` thunk.
    reread : Reread
        The bytes any algorithm for the call must read twice, at a shape and cache
        size (:mod:`normdrop.bench.bound`); none by default.
    """

    name: str
    passes: float
    prepare: Callable[[np.ndarray, Target], Inputs] = field(repr=False)
    call: Callable[[Inputs, Target], Any] = field(repr=False)
    torch: peers.TorchBuilder | None = field(default=None, repr=False)
    jax: peers.JaxBuilder | None = field(default=None, repr=False)
    reread: Reread = field(default=no_reread, repr=False)

    def build(self, x_host: np.ndarray, target: Target) -> Thunk:
        """Prepare the inputs from ``x_host`` on ``target``; return the thunk to time.

        Parameters
        ----------
        x_host : numpy.ndarray
            The input.
        target : Target
            Where the call runs.

        Returns
        -------
        callable
            Runs the call once per invocation (not yet waiting for lazy or GPU results:
            see :meth:`Target.wrap`).
        """
        # partial, not a lambda: no Python frame of its own around the timed call
        return functools.partial(self.call, self.prepare(x_host, target), target)


# ----------------------------------------------------------------------------- inputs
def _params(target: Target, n: int, dtype: np.dtype) -> tuple[Any, Any]:
    """Ones and zeros of ``n`` features on ``target``: a weight and a bias."""
    return target.array(np.ones(n, dtype)), target.array(np.zeros(n, dtype))


def _bn_inputs(x_host: np.ndarray, target: Target) -> Inputs:
    c, dtype = x_host.shape[1], x_host.dtype
    x = target.array(x_host)
    w, b = _params(target, c, dtype)
    rv, rm = _params(target, c, dtype)
    return {"x": x, "w": w, "b": b, "rm": rm, "rv": rv}


def _bn_backward_inputs(x_host: np.ndarray, target: Target) -> Inputs:
    c, dtype = x_host.shape[1], x_host.dtype
    x, dy = target.array(x_host), target.array(grad_like(x_host))
    w, b = _params(target, c, dtype)
    _, mean, rstd = functional.batch_norm_with_stats(
        x, None, None, w, b, training=True, eps=EPS, backend=target.choice
    )
    mean, rstd = target.ready(mean, rstd)
    return {"x": x, "dy": dy, "w": w, "mean": mean, "rstd": rstd}


def _rows_inputs(x_host: np.ndarray, target: Target) -> Inputs:
    """``x``, the residual (or upstream gradient) ``dy`` and LayerNorm's ``w`` and ``b``."""
    d, dtype = x_host.shape[-1], x_host.dtype
    x, dy = target.array(x_host), target.array(grad_like(x_host))
    w, b = _params(target, d, dtype)
    return {"x": x, "dy": dy, "w": w, "b": b}


def _ln_backward_inputs(x_host: np.ndarray, target: Target) -> Inputs:
    inputs = _rows_inputs(x_host, target)
    x, w, b = inputs["x"], inputs["w"], inputs["b"]
    _, mean, rstd = functional.layer_norm_with_stats(
        x, (x.shape[-1],), w, b, EPS, backend=target.choice
    )
    inputs["mean"], inputs["rstd"] = target.ready(mean, rstd)
    return inputs


def _x_only(x_host: np.ndarray, target: Target) -> Inputs:
    return {"x": target.array(x_host)}


def _dropout_backward_inputs(x_host: np.ndarray, target: Target) -> Inputs:
    x, dy = target.array(x_host), target.array(grad_like(x_host))
    _, bitmask = functional.dropout_with_bitmask(
        x, DROPOUT_P, seed=SEED, call=0, backend=target.choice
    )
    # A backend that keeps no bitmask returns None; the backward then regenerates the mask.
    (bitmask,) = target.ready(bitmask)
    return {"dy": dy, "bitmask": bitmask}


def _fused_backward_inputs(x_host: np.ndarray, target: Target) -> Inputs:
    inputs = _rows_inputs(x_host, target)
    _, r, mean, rstd, bitmask = _fused(inputs, target)
    inputs["r"], inputs["mean"], inputs["rstd"] = target.ready(r, mean, rstd)
    inputs["bitmask"] = bitmask
    return inputs


def _layer(make: Callable[[np.ndarray, Target], Any]) -> Callable[[np.ndarray, Target], Inputs]:
    """Inputs of a whole layer call: the layer ``make`` builds, and ``x``."""

    def prepare(x_host: np.ndarray, target: Target) -> Inputs:
        return {"layer": make(x_host, target), "x": target.array(x_host)}

    return prepare


def _after_forward(
    prepare: Callable[[np.ndarray, Target], Inputs],
) -> Callable[[np.ndarray, Target], Inputs]:
    """Inputs of a layer's backward: the layer after one forward call, and ``dy``."""

    def prepare_backward(x_host: np.ndarray, target: Target) -> Inputs:
        inputs = prepare(x_host, target)
        inputs["layer"](inputs["x"])
        inputs["dy"] = target.array(grad_like(x_host))
        return inputs

    return prepare_backward


def _batch_norm_layer(x_host: np.ndarray, target: Target) -> Any:
    return normdrop.BatchNorm1d(x_host.shape[1], dtype=x_host.dtype, backend=target.choice)


def _layer_norm_layer(x_host: np.ndarray, target: Target) -> Any:
    return normdrop.LayerNorm(x_host.shape[-1], dtype=x_host.dtype, backend=target.choice)


def _dropout_layer(x_host: np.ndarray, target: Target) -> Any:
    return normdrop.Dropout(DROPOUT_P, seed=SEED, backend=target.choice)


# ----------------------------------------------------------------------------- calls
def _bn_forward(training: bool) -> Callable[[Inputs, Target], Any]:
    def call(i: Inputs, target: Target) -> Any:
        return functional.batch_norm(
            i["x"], i["rm"], i["rv"], i["w"], i["b"], training=training, momentum=MOMENTUM,
            eps=EPS, backend=target.choice,
        )  # fmt: skip

    return call


def _bn_backward(i: Inputs, target: Target) -> Any:
    return functional.batch_norm_backward(
        i["dy"], i["x"], i["mean"], i["rstd"], i["w"], training=True, backend=target.choice
    )


def _ln_forward(i: Inputs, target: Target) -> Any:
    d = i["x"].shape[-1]
    return functional.layer_norm(i["x"], (d,), i["w"], i["b"], EPS, backend=target.choice)


def _ln_backward(i: Inputs, target: Target) -> Any:
    d = i["x"].shape[-1]
    return functional.layer_norm_backward(
        i["dy"], i["x"], (d,), i["mean"], i["rstd"], i["w"], backend=target.choice
    )


def _dropout_forward(i: Inputs, target: Target) -> Any:
    # As a training layer does: keep the packed bitmask that backward reads.
    return functional.dropout_with_bitmask(
        i["x"], DROPOUT_P, seed=SEED, call=0, backend=target.choice
    )


def _dropout_backward(i: Inputs, target: Target) -> Any:
    return functional.dropout_backward(
        i["dy"], DROPOUT_P, seed=SEED, call=0, bitmask=i.get("bitmask"), backend=target.choice
    )


def _fused(i: Inputs, target: Target) -> Any:
    # As a training layer does: keep the statistics and the bitmask that backward reads.
    d = i["x"].shape[-1]
    return functional.dropout_add_layer_norm_with_stats(
        i["x"], i["dy"], (d,), i["w"], i["b"], FUSED_P, EPS, seed=SEED, backend=target.choice
    )


def _three_calls(i: Inputs, target: Target) -> Any:
    # The same work as three separate normdrop calls, each keeping what backward reads.
    d = i["x"].shape[-1]
    h, bitmask = functional.dropout_with_bitmask(i["x"], FUSED_P, seed=SEED, backend=target.choice)
    y = functional.layer_norm_with_stats(
        h + i["dy"], (d,), i["w"], i["b"], EPS, backend=target.choice
    )
    return (*y, bitmask)


def _fused_backward(i: Inputs, target: Target) -> Any:
    d = i["x"].shape[-1]
    return functional.dropout_add_layer_norm_backward(
        i["dy"], i["r"], d, i["mean"], i["rstd"], i["w"], FUSED_P, grad_r=i["dy"], seed=SEED,
        bitmask=i["bitmask"], backend=target.choice,
    )  # fmt: skip


def _layer_call(i: Inputs, target: Target) -> Any:
    return i["layer"](i["x"])


def _layer_backward(i: Inputs, target: Target) -> Any:
    return i["layer"].backward(i["dy"])


# ----------------------------------------------------------------------------- operations
BN_TRAIN = Operation(
    "batch_norm train", 2, _bn_inputs, _bn_forward(True),
    peers.torch_bn_forward(True), peers.jax_bn_forward(True), reread=channel_reread(1),
)  # fmt: skip
BN_EVAL = Operation(
    "batch_norm eval", 2, _bn_inputs, _bn_forward(False),
    peers.torch_bn_forward(False), peers.jax_bn_forward(False),
)  # fmt: skip
BN_BACKWARD = Operation(
    "batch_norm_backward", 3, _bn_backward_inputs, _bn_backward,
    peers.torch_bn_backward, peers.jax_bn_backward, reread=channel_reread(2),
)  # fmt: skip
LN_FORWARD = Operation(
    "layer_norm",
    2,
    _rows_inputs,
    _ln_forward,
    peers.torch_ln_forward,
    peers.jax_ln_forward,
    reread=row_reread(1),
)
LN_BACKWARD = Operation(
    "layer_norm_backward", 3, _ln_backward_inputs, _ln_backward,
    peers.torch_ln_backward, peers.jax_ln_backward, reread=row_reread(2),
)  # fmt: skip
DROPOUT_FORWARD = Operation(
    "dropout", 2, _x_only, _dropout_forward,
    peers.torch_dropout_forward, peers.jax_dropout_forward,
)  # fmt: skip
#: Reads dy (and a 1-bit mask) and writes dx: two passes, not three.
DROPOUT_BACKWARD = Operation(
    "dropout_backward", 2, _dropout_backward_inputs, _dropout_backward,
    peers.torch_dropout_backward, peers.jax_dropout_backward,
)  # fmt: skip
#: The backward without a bitmask: the mask is regenerated from ``(seed, call)``.
DROPOUT_BACKWARD_REGENERATE = Operation(
    "dropout_backward regenerate", 2, _rows_inputs, _dropout_backward
)
#: Reads x and the residual, writes y and r (4 passes), plus the float32 data's bitmask.
DROPOUT_ADD_LN = Operation(
    "dropout_add_layer_norm", 4 + 1 / 32, _rows_inputs, _fused,
    peers.torch_dropout_add_ln, peers.jax_dropout_add_ln, reread=row_reread(1),
)  # fmt: skip
DROPOUT_ADD_LN_THREE_CALLS = Operation(
    "dropout, add, layer_norm", 4 + 1 / 32, _rows_inputs, _three_calls,
    peers.torch_dropout_add_ln, peers.jax_dropout_add_ln, reread=row_reread(1),
)  # fmt: skip
#: With a gradient into ``r`` too: reads dy, that gradient and r, writes dx.
DROPOUT_ADD_LN_BACKWARD = Operation(
    "dropout_add_layer_norm_backward",
    4,
    _fused_backward_inputs,
    _fused_backward,
    reread=row_reread(2),
)
BN_LAYER_CALL = Operation(
    "BatchNorm1d layer call", 2, _layer(_batch_norm_layer), _layer_call,
    peers.torch_bn_layer_call, peers.jax_bn_forward(True), reread=channel_reread(1),
)  # fmt: skip
LN_LAYER_CALL = Operation(
    "LayerNorm layer call", 2, _layer(_layer_norm_layer), _layer_call,
    peers.torch_ln_layer_call, peers.jax_ln_forward, reread=row_reread(1),
)  # fmt: skip
DROPOUT_LAYER_CALL = Operation(
    "Dropout layer call", 2, _layer(_dropout_layer), _layer_call, peers.torch_dropout_layer_call
)
BN_LAYER_BACKWARD = Operation(
    "BatchNorm1d layer backward",
    3,
    _after_forward(_layer(_batch_norm_layer)),
    _layer_backward,
    reread=channel_reread(2),
)
LN_LAYER_BACKWARD = Operation(
    "LayerNorm layer backward",
    3,
    _after_forward(_layer(_layer_norm_layer)),
    _layer_backward,
    reread=row_reread(2),
)
DROPOUT_LAYER_BACKWARD = Operation(
    "Dropout layer backward", 2, _after_forward(_layer(_dropout_layer)), _layer_backward
)
