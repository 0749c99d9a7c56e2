"""asv benchmarks: forward and backward of every layer on every backend, and PyTorch peers.

Every normdrop suite is parametrised over ``normdrop.available_backends()`` (so
the ``numpy`` reference is always among them); the kernel suites also over
float32 and float64 and a small and a large input, the whole-layer-call and
peak-memory suites over float32 only. The ``Torch*`` classes time PyTorch on the CPU under
the same method names and parameters (without the backend), so that
``asv compare`` and the web view line them up; they are skipped when PyTorch
is not installed.

Shapes stay moderate so that ``asv run --python=same --quick`` finishes in about
a minute; the large shapes of the performance issues live in ``normdrop bench``.
Every ``setup`` calls each timed function once, so compilation is never timed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import normdrop
from normdrop import functional

BACKENDS: list[str] = normdrop.available_backends()


def _preload() -> Any:
    """Import what the benchmarks will need, once, in asv's fork server.

    asv forks every benchmark from a process that has imported this module, so
    heavy imports made here (PyTorch, a CPU backend's own dependencies such as
    Dask) are not paid again by each of the hundred-odd benchmarks. The price is
    a higher baseline in the ``peakmem_`` results, the same for every commit.
    GPU backends are not touched: a CUDA context does not survive a fork.
    """
    for name in BACKENDS:
        be = normdrop.get_backend(name)
        if be.device == "cpu":
            be.asarray(np.zeros(1))
    try:
        import torch
    except ImportError:
        return None
    return torch


_TORCH = _preload()
DTYPES = ["float32", "float64"]
SIZES = ["small", "large"]

#: ``(N, C, L)`` BatchNorm inputs and ``(R, D)`` LayerNorm / Dropout inputs.
BN_SHAPES = {"small": (4, 64, 30), "large": (32, 128, 256)}
ROW_SHAPES = {"small": (120, 64), "large": (2048, 512)}

P = 0.15
EPS = 1e-5
MOMENTUM = 0.1
SEED = 1234


def _data(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _backend(name: str) -> Any:
    """The backend called ``name``; a simulated GPU is skipped (its timings mean nothing)."""
    be = normdrop.get_backend(name)
    if be.device != "cpu" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise NotImplementedError(f"backend {name!r} runs on the CUDA simulator")
    return be


def _settler(be: Any) -> Callable[[Any], Any]:
    """A function that waits for a backend's result: GPU sync, Dask compute, else nothing."""
    if be.device != "cpu":
        from numba import cuda

        def sync(result: Any) -> Any:
            cuda.synchronize()
            return result

        return sync
    if be.name == "dask":
        import dask

        def compute(result: Any) -> Any:
            items = result if isinstance(result, tuple) else (result,)
            return dask.compute(*[r for r in items if r is not None])

        return compute
    return lambda result: result


class _NormdropSuite:
    """Shared set-up: the backend, its settle function and array placement."""

    params: list[list[str]] = [BACKENDS, DTYPES, SIZES]
    param_names = ["backend", "dtype", "size"]

    def _start(self, backend: str) -> None:
        self.be = _backend(backend)
        self.settle = _settler(self.be)

    def _array(self, a: np.ndarray) -> Any:
        return self.be.asarray(a)

    @staticmethod
    def _ready(*values: Any) -> tuple[Any, ...]:
        """Persist lazy (Dask) saved values so that a backward does not recompute them."""
        return tuple(v.persist() if hasattr(v, "__dask_graph__") else v for v in values)

    def _warm_up(self, *timers: Callable[..., Any], args: tuple[Any, ...]) -> None:
        for timer in timers:
            timer(*args)


class BatchNorm1dSuite(_NormdropSuite):
    """``functional.batch_norm`` and its backward on ``(N, C, L)`` data."""

    def setup(self, backend: str, dtype: str, size: str) -> None:
        self._start(backend)
        x = _data(BN_SHAPES[size], dtype)
        c = x.shape[1]
        self.x = self._array(x)
        self.dy = self._array(_data(x.shape, dtype, seed=1))
        self.w = self._array(np.ones(c, dtype))
        self.b = self._array(np.zeros(c, dtype))
        self.rm = self._array(np.zeros(c, dtype))
        self.rv = self._array(np.ones(c, dtype))
        _, self.mean, self.rstd = functional.batch_norm_with_stats(
            self.x, None, None, self.w, self.b, training=True, eps=EPS,
            backend=backend,
        )
        self.mean, self.rstd = self._ready(self.mean, self.rstd)
        self._warm_up(
            self.time_forward_train, self.time_forward_eval, self.time_backward,
            args=(backend, dtype, size),
        )

    def time_forward_train(self, backend: str, dtype: str, size: str) -> None:
        self.settle(functional.batch_norm(
            self.x, self.rm, self.rv, self.w, self.b, training=True, momentum=MOMENTUM,
            eps=EPS, backend=backend,
        ))

    def time_forward_eval(self, backend: str, dtype: str, size: str) -> None:
        self.settle(functional.batch_norm(
            self.x, self.rm, self.rv, self.w, self.b, training=False, eps=EPS, backend=backend
        ))

    def time_backward(self, backend: str, dtype: str, size: str) -> None:
        self.settle(functional.batch_norm_backward(
            self.dy, self.x, self.mean, self.rstd, self.w, training=True, backend=backend
        ))


class LayerNormSuite(_NormdropSuite):
    """``functional.layer_norm`` and its backward on ``(R, D)`` data."""

    def setup(self, backend: str, dtype: str, size: str) -> None:
        self._start(backend)
        x = _data(ROW_SHAPES[size], dtype)
        d = x.shape[-1]
        self.shape = (d,)
        self.x = self._array(x)
        self.dy = self._array(_data(x.shape, dtype, seed=1))
        self.w = self._array(np.ones(d, dtype))
        self.b = self._array(np.zeros(d, dtype))
        _, self.mean, self.rstd = functional.layer_norm_with_stats(
            self.x, self.shape, self.w, self.b, EPS, backend=backend)
        self.mean, self.rstd = self._ready(self.mean, self.rstd)
        self._warm_up(self.time_forward, self.time_backward, args=(backend, dtype, size))

    def time_forward(self, backend: str, dtype: str, size: str) -> None:
        self.settle(functional.layer_norm(
            self.x, self.shape, self.w, self.b, EPS, backend=backend
        ))

    def time_backward(self, backend: str, dtype: str, size: str) -> None:
        self.settle(functional.layer_norm_backward(
            self.dy, self.x, self.shape, self.mean, self.rstd, self.w, backend=backend
        ))


class DropoutSuite(_NormdropSuite):
    """``functional.dropout`` (keeping the bitmask, as a training layer does) and its backward."""

    def setup(self, backend: str, dtype: str, size: str) -> None:
        self._start(backend)
        x = _data(ROW_SHAPES[size], dtype)
        self.x = self._array(x)
        self.dy = self._array(_data(x.shape, dtype, seed=1))
        _, self.bitmask = functional.dropout_with_bitmask(
            self.x, P, seed=SEED, backend=backend)
        (self.bitmask,) = self._ready(self.bitmask)
        self._warm_up(
            self.time_forward, self.time_backward, self.time_backward_regenerate,
            args=(backend, dtype, size),
        )

    def time_forward(self, backend: str, dtype: str, size: str) -> None:
        self.settle(functional.dropout_with_bitmask(
            self.x, P, seed=SEED, backend=backend))

    def time_backward(self, backend: str, dtype: str, size: str) -> None:
        # With no bitmask (a backend that keeps none), the mask is regenerated.
        self.settle(functional.dropout_backward(
            self.dy, P, seed=SEED, bitmask=self.bitmask, backend=backend
        ))

    def time_backward_regenerate(self, backend: str, dtype: str, size: str) -> None:
        """Backward that regenerates the mask from ``(seed, call)`` instead of a bitmask."""
        self.settle(functional.dropout_backward(self.dy, P, seed=SEED, backend=backend))


class DropoutAddLayerNormSuite(_NormdropSuite):
    """``functional.dropout_add_layer_norm`` (fused) and the three separate calls it replaces."""

    def setup(self, backend: str, dtype: str, size: str) -> None:
        self._start(backend)
        x = _data(ROW_SHAPES[size], dtype)
        d = x.shape[-1]
        self.x = self._array(x)
        self.res = self._array(_data(x.shape, dtype, seed=2))
        self.dy = self._array(_data(x.shape, dtype, seed=1))
        self.w, self.b = self._array(np.ones(d, dtype)), self._array(np.zeros(d, dtype))
        forward = functional.dropout_add_layer_norm_with_stats
        _, self.r, self.mean, self.rstd, self.bitmask = forward(
            self.x, self.res, d, self.w, self.b, P, EPS, seed=SEED, backend=backend,
        )
        self.r, self.mean, self.rstd = self._ready(self.r, self.mean, self.rstd)
        self._warm_up(
            self.time_forward, self.time_three_calls_forward, self.time_backward,
            args=(backend, dtype, size),
        )

    def time_forward(self, backend: str, dtype: str, size: str) -> None:
        self.settle(functional.dropout_add_layer_norm_with_stats(
            self.x, self.res, self.x.shape[-1], self.w, self.b, P, EPS, seed=SEED,
            backend=backend,
        ))

    def time_three_calls_forward(self, backend: str, dtype: str, size: str) -> None:
        h, bitmask = functional.dropout_with_bitmask(
            self.x, P, seed=SEED, backend=backend)
        self.settle(functional.layer_norm_with_stats(
            h + self.res, self.x.shape[-1], self.w, self.b, EPS, backend=backend,
        ))

    def time_backward(self, backend: str, dtype: str, size: str) -> None:
        self.settle(functional.dropout_add_layer_norm_backward(
            self.dy, self.r, self.x.shape[-1], self.mean, self.rstd, self.w, P,
            grad_r=self.dy, seed=SEED, bitmask=self.bitmask, backend=backend,
        ))


class LayerCallSuite(_NormdropSuite):
    """Whole layer calls on small inputs: per-call overhead of ``layer(x)`` and ``backward``.

    Float32 only: the overhead does not depend on the dtype, and every parameter
    combination costs asv a process.
    """

    params = [BACKENDS, ["float32"]]
    param_names = ["backend", "dtype"]

    def setup(self, backend: str, dtype: str) -> None:
        self._start(backend)
        bn_x, rows_x = _data(BN_SHAPES["small"], dtype), _data(ROW_SHAPES["small"], dtype)
        self.bn_x, self.rows_x = self._array(bn_x), self._array(rows_x)
        self.bn_dy = self._array(_data(bn_x.shape, dtype, seed=1))
        self.rows_dy = self._array(_data(rows_x.shape, dtype, seed=1))
        self.bn = normdrop.BatchNorm1d(bn_x.shape[1], dtype=dtype, backend=backend)
        self.ln = normdrop.LayerNorm(rows_x.shape[-1], dtype=dtype, backend=backend)
        self.drop = normdrop.Dropout(P, seed=SEED, backend=backend)
        for timer in (
            self.time_batchnorm_forward, self.time_layernorm_forward, self.time_dropout_forward,
            self.time_batchnorm_backward, self.time_layernorm_backward,
            self.time_dropout_backward,
        ):
            timer(backend, dtype)

    def time_batchnorm_forward(self, backend: str, dtype: str) -> None:
        self.settle(self.bn(self.bn_x))

    def time_batchnorm_backward(self, backend: str, dtype: str) -> None:
        self.settle(self.bn.backward(self.bn_dy))

    def time_layernorm_forward(self, backend: str, dtype: str) -> None:
        self.settle(self.ln(self.rows_x))

    def time_layernorm_backward(self, backend: str, dtype: str) -> None:
        self.settle(self.ln.backward(self.rows_dy))

    def time_dropout_forward(self, backend: str, dtype: str) -> None:
        self.settle(self.drop(self.rows_x))

    def time_dropout_backward(self, backend: str, dtype: str) -> None:
        self.settle(self.drop.backward(self.rows_dy))


class _PeakMemory(_NormdropSuite):
    """Peak resident memory of a forward and a backward on a larger input.

    asv reports the peak of the whole process, set-up included, so ``setup``
    compiles on a tiny input of the same dtype, then allocates the inputs
    directly in their dtype (no float64 temporaries) and makes up the saved
    statistics instead of running a forward pass. Float32 only: it is where a
    backend's float64 temporaries would show, and float64 needs twice the bytes.
    """

    params = [BACKENDS, ["float32"]]
    param_names = ["backend", "dtype"]
    shape: tuple[int, ...] = ()
    tiny: tuple[int, ...] = ()

    def setup(self, backend: str, dtype: str) -> None:
        self._start(backend)
        for shape in (self.tiny, self.shape):
            self._allocate(shape, dtype)
            if shape == self.tiny:  # compile outside the measured size
                self.peakmem_forward(backend, dtype)
                self.peakmem_backward(backend, dtype)

    def _allocate(self, shape: tuple[int, ...], dtype: str) -> None:
        rng = np.random.default_rng(0)
        self.x = self._array(rng.random(shape, dtype=dtype))
        self.dy = self._array(rng.random(shape, dtype=dtype))
        self._extras(shape, dtype)

    def _extras(self, shape: tuple[int, ...], dtype: str) -> None:
        """Allocate the parameters and saved statistics for ``shape``."""


class PeakMemBatchNorm1d(_PeakMemory):
    """Peak memory of :func:`normdrop.functional.batch_norm` and its backward."""

    shape = (64, 128, 512)
    tiny = (2, 128, 3)

    def _extras(self, shape: tuple[int, ...], dtype: str) -> None:
        c = shape[1]
        self.w, self.b = self._array(np.ones(c, dtype)), self._array(np.zeros(c, dtype))
        self.mean, self.rstd = self._array(np.zeros(c)), self._array(np.ones(c))

    def peakmem_forward(self, backend: str, dtype: str) -> None:
        self.settle(functional.batch_norm(
            self.x, None, None, self.w, self.b, training=True, backend=backend
        ))

    def peakmem_backward(self, backend: str, dtype: str) -> None:
        self.settle(functional.batch_norm_backward(
            self.dy, self.x, self.mean, self.rstd, self.w, backend=backend
        ))


class PeakMemLayerNorm(_PeakMemory):
    """Peak memory of :func:`normdrop.functional.layer_norm` and its backward."""

    shape = (4096, 1024)
    tiny = (2, 1024)

    def _extras(self, shape: tuple[int, ...], dtype: str) -> None:
        r, d = shape
        self.w, self.b = self._array(np.ones(d, dtype)), self._array(np.zeros(d, dtype))
        self.mean, self.rstd = self._array(np.zeros(r)), self._array(np.ones(r))

    def peakmem_forward(self, backend: str, dtype: str) -> None:
        d = self.x.shape[-1]
        self.settle(functional.layer_norm(self.x, d, self.w, self.b, backend=backend))

    def peakmem_backward(self, backend: str, dtype: str) -> None:
        self.settle(functional.layer_norm_backward(
            self.dy, self.x, self.x.shape[-1], self.mean, self.rstd, self.w, backend=backend
        ))


class PeakMemDropout(_PeakMemory):
    """Peak memory of :func:`normdrop.functional.dropout` and its backward."""

    shape = (4096, 1024)
    tiny = (2, 1024)

    def _extras(self, shape: tuple[int, ...], dtype: str) -> None:
        n = int(np.prod(shape))
        bits = np.random.default_rng(2).integers(0, 256, (n + 7) // 8, dtype=np.uint8)
        # A backend that keeps no bitmask regenerates the mask from (seed, call).
        keeps = getattr(self.be, "supports_bitmask", True)
        self.bitmask = self._array(bits) if keeps else None

    def peakmem_forward(self, backend: str, dtype: str) -> None:
        self.settle(functional.dropout_with_bitmask(
            self.x, P, seed=SEED, backend=backend))

    def peakmem_backward(self, backend: str, dtype: str) -> None:
        self.settle(functional.dropout_backward(
            self.dy, P, seed=SEED, bitmask=self.bitmask, backend=backend
        ))


# ----------------------------------------------------------------------------- PyTorch peers
def _torch(dtype: str) -> tuple[Any, Any]:
    """PyTorch for a peer benchmark, on normdrop's thread count, with autograd off."""
    torch = _TORCH
    if torch is None:
        raise NotImplementedError("PyTorch is not installed")
    try:
        import numba

        threads = numba.get_num_threads()
    except ImportError:
        threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    return torch, getattr(torch, dtype)


def _tensor(torch: Any, shape: tuple[int, ...], dtype: str, seed: int = 0) -> Any:
    return torch.from_numpy(_data(shape, dtype, seed))


class TorchBatchNorm1d:
    """PyTorch peer of :class:`BatchNorm1dSuite`."""

    params = [DTYPES, SIZES]
    param_names = ["dtype", "size"]

    def setup(self, dtype: str, size: str) -> None:
        torch, tdtype = _torch(dtype)
        self.aten = torch.ops.aten
        self.F = torch.nn.functional
        self.x = _tensor(torch, BN_SHAPES[size], dtype)
        self.dy = _tensor(torch, BN_SHAPES[size], dtype, seed=1)
        c = self.x.shape[1]
        self.w, self.b = torch.ones(c, dtype=tdtype), torch.zeros(c, dtype=tdtype)
        self.rm, self.rv = torch.zeros(c, dtype=tdtype), torch.ones(c, dtype=tdtype)
        _, self.mean, self.invstd = self.aten.native_batch_norm(
            self.x, self.w, self.b, self.rm, self.rv, True, MOMENTUM, EPS
        )
        self.time_backward(dtype, size)

    def time_forward_train(self, dtype: str, size: str) -> None:
        self.F.batch_norm(self.x, self.rm, self.rv, self.w, self.b, True, MOMENTUM, EPS)

    def time_forward_eval(self, dtype: str, size: str) -> None:
        self.F.batch_norm(self.x, self.rm, self.rv, self.w, self.b, False, MOMENTUM, EPS)

    def time_backward(self, dtype: str, size: str) -> None:
        self.aten.native_batch_norm_backward(
            self.dy, self.x, self.w, self.rm, self.rv, self.mean, self.invstd, True, EPS,
            [True, True, True],
        )


class TorchLayerNorm:
    """PyTorch peer of :class:`LayerNormSuite`."""

    params = [DTYPES, SIZES]
    param_names = ["dtype", "size"]

    def setup(self, dtype: str, size: str) -> None:
        torch, tdtype = _torch(dtype)
        self.aten = torch.ops.aten
        self.F = torch.nn.functional
        self.x = _tensor(torch, ROW_SHAPES[size], dtype)
        self.dy = _tensor(torch, ROW_SHAPES[size], dtype, seed=1)
        d = self.x.shape[-1]
        self.shape = [d]
        self.w, self.b = torch.ones(d, dtype=tdtype), torch.zeros(d, dtype=tdtype)
        _, self.mean, self.rstd = self.aten.native_layer_norm(
            self.x, self.shape, self.w, self.b, EPS
        )
        self.time_backward(dtype, size)

    def time_forward(self, dtype: str, size: str) -> None:
        self.F.layer_norm(self.x, self.shape, self.w, self.b, EPS)

    def time_backward(self, dtype: str, size: str) -> None:
        self.aten.native_layer_norm_backward(
            self.dy, self.x, self.shape, self.mean, self.rstd, self.w, self.b,
            [True, True, True],
        )


class TorchDropout:
    """PyTorch peer of :class:`DropoutSuite` (``native_dropout`` keeps the mask too)."""

    params = [DTYPES, SIZES]
    param_names = ["dtype", "size"]

    def setup(self, dtype: str, size: str) -> None:
        torch, _ = _torch(dtype)
        self.aten = torch.ops.aten
        self.x = _tensor(torch, ROW_SHAPES[size], dtype)
        self.dy = _tensor(torch, ROW_SHAPES[size], dtype, seed=1)
        _, self.mask = self.aten.native_dropout(self.x, P, True)
        self.scale = 1.0 / (1.0 - P)
        self.time_backward(dtype, size)

    def time_forward(self, dtype: str, size: str) -> None:
        self.aten.native_dropout(self.x, P, True)

    def time_backward(self, dtype: str, size: str) -> None:
        self.aten.native_dropout_backward(self.dy, self.mask, self.scale)


class TorchLayerCall:
    """PyTorch peer of :class:`LayerCallSuite`: ``torch.nn`` module calls under ``no_grad``."""

    params = [["float32"]]
    param_names = ["dtype"]

    def setup(self, dtype: str) -> None:
        torch, tdtype = _torch(dtype)
        self.bn_x = _tensor(torch, BN_SHAPES["small"], dtype)
        self.rows_x = _tensor(torch, ROW_SHAPES["small"], dtype)
        self.bn = torch.nn.BatchNorm1d(self.bn_x.shape[1], dtype=tdtype).train()
        self.ln = torch.nn.LayerNorm(self.rows_x.shape[-1], dtype=tdtype)
        self.drop = torch.nn.Dropout(P).train()
        self.time_batchnorm_forward(dtype)

    def time_batchnorm_forward(self, dtype: str) -> None:
        self.bn(self.bn_x)

    def time_layernorm_forward(self, dtype: str) -> None:
        self.ln(self.rows_x)

    def time_dropout_forward(self, dtype: str) -> None:
        self.drop(self.rows_x)


class TorchDropoutAddLayerNorm:
    """PyTorch peer of :class:`DropoutAddLayerNormSuite`: its three modules' operations."""

    params = [DTYPES, SIZES]
    param_names = ["dtype", "size"]

    def setup(self, dtype: str, size: str) -> None:
        torch, tdtype = _torch(dtype)
        self.aten = torch.ops.aten
        self.x = _tensor(torch, ROW_SHAPES[size], dtype)
        self.res = _tensor(torch, ROW_SHAPES[size], dtype, seed=2)
        d = self.x.shape[-1]
        self.w, self.b = torch.ones(d, dtype=tdtype), torch.zeros(d, dtype=tdtype)
        self.time_forward(dtype, size)

    def time_forward(self, dtype: str, size: str) -> None:
        h, _ = self.aten.native_dropout(self.x, P, True)
        self.aten.native_layer_norm(h + self.res, [self.x.shape[-1]], self.w, self.b, EPS)


# ----------------------------------------------------------------------------- headline shapes
#: The headline inputs of ``normdrop bench``: ``(N, C, L)`` BatchNorm and ``(R, D)`` rows.
HEADLINE_BN = (64, 256, 512)
HEADLINE_ROWS = (8192, 1024)
#: CPU backends only: the headline shapes take minutes on the CUDA simulator.
CPU_BACKENDS = [name for name in BACKENDS if normdrop.get_backend(name).device == "cpu"]


class HeadlineSuite(_NormdropSuite):
    """The headline shapes of ``normdrop bench`` in float32 and float64: every forward."""

    params = [CPU_BACKENDS, DTYPES]
    param_names = ["backend", "dtype"]

    def setup(self, backend: str, dtype: str) -> None:
        self._start(backend)
        bn_x, rows_x = _data(HEADLINE_BN, dtype), _data(HEADLINE_ROWS, dtype)
        c, d = bn_x.shape[1], rows_x.shape[-1]
        self.bn_x, self.rows_x = self._array(bn_x), self._array(rows_x)
        self.bn_w, self.bn_b = self._array(np.ones(c, dtype)), self._array(np.zeros(c, dtype))
        self.ln_w, self.ln_b = self._array(np.ones(d, dtype)), self._array(np.zeros(d, dtype))
        self._warm_up(
            self.time_batchnorm_forward_train, self.time_layernorm_forward,
            self.time_dropout_forward, args=(backend, dtype),
        )

    def time_batchnorm_forward_train(self, backend: str, dtype: str) -> None:
        self.settle(functional.batch_norm(
            self.bn_x, None, None, self.bn_w, self.bn_b, training=True, eps=EPS, backend=backend
        ))

    def time_layernorm_forward(self, backend: str, dtype: str) -> None:
        self.settle(functional.layer_norm(
            self.rows_x, self.rows_x.shape[-1], self.ln_w, self.ln_b, EPS, backend=backend
        ))

    def time_dropout_forward(self, backend: str, dtype: str) -> None:
        self.settle(functional.dropout_with_bitmask(
            self.rows_x, P, seed=SEED, backend=backend))


class TorchHeadline:
    """PyTorch peer of :class:`HeadlineSuite`, float32 and float64."""

    params = [DTYPES]
    param_names = ["dtype"]

    def setup(self, dtype: str) -> None:
        torch, tdtype = _torch(dtype)
        self.aten = torch.ops.aten
        self.F = torch.nn.functional
        self.bn_x = _tensor(torch, HEADLINE_BN, dtype)
        self.rows_x = _tensor(torch, HEADLINE_ROWS, dtype)
        c, d = self.bn_x.shape[1], self.rows_x.shape[-1]
        self.bn_w, self.bn_b = torch.ones(c, dtype=tdtype), torch.zeros(c, dtype=tdtype)
        self.ln_w, self.ln_b = torch.ones(d, dtype=tdtype), torch.zeros(d, dtype=tdtype)
        self.time_batchnorm_forward_train(dtype)

    def time_batchnorm_forward_train(self, dtype: str) -> None:
        self.F.batch_norm(self.bn_x, None, None, self.bn_w, self.bn_b, True, MOMENTUM, EPS)

    def time_layernorm_forward(self, dtype: str) -> None:
        self.F.layer_norm(self.rows_x, [self.rows_x.shape[-1]], self.ln_w, self.ln_b, EPS)

    def time_dropout_forward(self, dtype: str) -> None:
        self.aten.native_dropout(self.rows_x, P, True)


# ----------------------------------------------------------------------------- JAX peers
def _jax_thunks(kinds: dict[str, str], shape: tuple[int, ...], dtype: str) -> dict[str, Any]:
    """``{method: thunk}`` of ``jax.jit`` of the same math (normdrop._bench_peers), warmed up.

    Raises NotImplementedError (asv's skip) when JAX is not installed.
    """
    from normdrop import _bench_peers

    if _bench_peers.import_jax() is None:
        raise NotImplementedError("JAX is not installed")
    builders = _bench_peers.jax_builders(eps=EPS, momentum=MOMENTUM, p=P, fused_p=P)
    x = _data(shape, dtype)
    thunks = {method: builders[kind](x) for method, kind in kinds.items()}
    for thunk in thunks.values():
        thunk()  # compile outside the timing
    return thunks


class JaxBatchNorm1d:
    """JAX peer of :class:`BatchNorm1dSuite` (skipped when JAX is not installed)."""

    params = [DTYPES, SIZES]
    param_names = ["dtype", "size"]

    def setup(self, dtype: str, size: str) -> None:
        self.run = _jax_thunks(
            {"forward_train": "bn_train", "forward_eval": "bn_eval", "backward": "bn_backward"},
            BN_SHAPES[size], dtype,
        )

    def time_forward_train(self, dtype: str, size: str) -> None:
        self.run["forward_train"]()

    def time_forward_eval(self, dtype: str, size: str) -> None:
        self.run["forward_eval"]()

    def time_backward(self, dtype: str, size: str) -> None:
        self.run["backward"]()


class JaxLayerNorm:
    """JAX peer of :class:`LayerNormSuite` (skipped when JAX is not installed)."""

    params = [DTYPES, SIZES]
    param_names = ["dtype", "size"]

    def setup(self, dtype: str, size: str) -> None:
        self.run = _jax_thunks(
            {"forward": "ln_forward", "backward": "ln_backward"}, ROW_SHAPES[size], dtype
        )

    def time_forward(self, dtype: str, size: str) -> None:
        self.run["forward"]()

    def time_backward(self, dtype: str, size: str) -> None:
        self.run["backward"]()


class JaxDropout:
    """JAX peer of :class:`DropoutSuite` (skipped when JAX is not installed)."""

    params = [DTYPES, SIZES]
    param_names = ["dtype", "size"]

    def setup(self, dtype: str, size: str) -> None:
        self.run = _jax_thunks(
            {"forward": "dropout_forward", "backward": "dropout_backward"}, ROW_SHAPES[size], dtype
        )

    def time_forward(self, dtype: str, size: str) -> None:
        self.run["forward"]()

    def time_backward(self, dtype: str, size: str) -> None:
        self.run["backward"]()


# ----------------------------------------------------------------------------- memory speed
class MemorySpeed:
    """This machine's memory speed, as ``normdrop bench`` defines it, tracked in GB/s.

    The best of ``np.copyto`` and a 2-thread Numba copy of a 256 MiB array; a copy's
    read and write both count as moved bytes. Read the kernels' GB/s against it.
    """

    unit = "GB/s"
    timeout = 120

    def track_memory_gbps(self) -> float:
        from normdrop import _bench_memory

        def best_of_five(thunks: dict[str, Callable[[], Any]]) -> dict[str, float]:
            best = {}
            for name, thunk in thunks.items():
                thunk()  # warm-up (and compilation)
                times = []
                for _ in range(5):
                    start = time.perf_counter()
                    thunk()
                    times.append(time.perf_counter() - start)
                best[name] = min(times)
            return best

        return _bench_memory.memory_speed(best_of_five).bytes_per_s / 1e9
