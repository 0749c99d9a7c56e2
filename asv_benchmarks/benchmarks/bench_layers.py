"""asv benchmarks: forward and backward of every layer on every backend, and PyTorch peers.

The operations timed here are ``normdrop bench``'s: each class maps its ``time_``
methods to operations of :mod:`normdrop.bench.ops` (the normdrop call and its PyTorch
and JAX peers, defined once there) and only chooses their parameters. Every normdrop
suite is parametrised over ``normdrop.available_backends()`` (so the ``numpy``
reference is always among them); the kernel suites also over float32 and float64 and
a small and a large input, the whole-layer-call and peak-memory suites over float32
only. The ``Torch*`` and ``Jax*`` classes time the peers under the same method names
and parameters (without the backend), so that ``asv compare`` and the web view line
them up; they are skipped when PyTorch or JAX is not installed.

Shapes stay moderate so that ``asv run --python=same --quick`` finishes in about
a minute; the large shapes of the performance issues live in ``normdrop bench``
(:class:`HeadlineSuite` takes three of its cases). Every ``setup`` calls each timed
function once, so compilation is never timed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import normdrop
from normdrop.bench import memory, ops, peers, threads
from normdrop.bench.cases import find_case
from normdrop.bench.inputs import DROPOUT_P, DTYPES, make_input
from normdrop.bench.ops import Operation
from normdrop.bench.target import Target
from normdrop.bench.timing import Settings

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
    return peers.import_torch()


_TORCH = _preload()
SIZES = ["small", "large"]

#: ``(N, C, L)`` BatchNorm inputs and ``(R, D)`` LayerNorm / Dropout inputs.
BN_SHAPES: dict[str, tuple[int, ...]] = {"small": (4, 64, 30), "large": (32, 128, 256)}
ROW_SHAPES: dict[str, tuple[int, ...]] = {"small": (120, 64), "large": (2048, 512)}

#: What a suite times: ``{method suffix: (operation, shape of each size)}``.
Timed = dict[str, tuple[Operation, dict[str, tuple[int, ...]]]]


def _target(name: str) -> Target:
    """The backend called ``name``; a simulated GPU is skipped (its timings mean nothing)."""
    target = Target.named(name)
    if target.backend.device != "cpu" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise NotImplementedError(f"backend {name!r} runs on the CUDA simulator")
    return target


def _timer(name: str) -> Callable[..., None]:
    def timer(self: Any, *params: str) -> None:
        self.run[name]()

    timer.__name__ = f"time_{name}"
    timer.__doc__ = f"Time ``{name}``."
    return timer


def _timers(cls: type) -> type:
    """Give ``cls`` a method ``time_X(self, *params)`` running ``self.run["X"]`` for each
    ``X`` of its ``timed`` operations that it runs (a peer class: those with that peer)."""
    for name, (op, _) in cls.timed.items():  # type: ignore[attr-defined]
        if cls.runs(op):  # type: ignore[attr-defined]
            setattr(cls, f"time_{name}", _timer(name))
    return cls


def _warmed(thunks: dict[str, Callable[[], Any]]) -> dict[str, Callable[[], Any]]:
    """Call every thunk once (compilation is never timed); return them."""
    for thunk in thunks.values():
        thunk()
    return thunks


class _NormdropSuite:
    """Builds :attr:`timed`'s operations on the backend into ``self.run``."""

    params: list[list[str]] = [BACKENDS, list(DTYPES), SIZES]
    param_names = ["backend", "dtype", "size"]
    timed: Timed = {}

    @staticmethod
    def runs(op: Operation) -> bool:
        """Whether this class times ``op``: every normdrop operation."""
        return True

    def setup(self, backend: str, dtype: str, size: str = "small") -> None:
        target = _target(backend)
        self.run = _warmed({
            name: target.wrap(op.build(make_input(shapes[size], dtype), target))
            for name, (op, shapes) in self.timed.items()
        })  # fmt: skip


@_timers
class BatchNorm1dSuite(_NormdropSuite):
    """``functional.batch_norm`` and its backward on ``(N, C, L)`` data."""

    timed: Timed = {
        "forward_train": (ops.BN_TRAIN, BN_SHAPES),
        "forward_eval": (ops.BN_EVAL, BN_SHAPES),
        "backward": (ops.BN_BACKWARD, BN_SHAPES),
    }


@_timers
class LayerNormSuite(_NormdropSuite):
    """``functional.layer_norm`` and its backward on ``(R, D)`` data."""

    timed: Timed = {
        "forward": (ops.LN_FORWARD, ROW_SHAPES),
        "backward": (ops.LN_BACKWARD, ROW_SHAPES),
    }


@_timers
class DropoutSuite(_NormdropSuite):
    """``functional.dropout`` (keeping the bitmask, as a training layer does) and its backward:
    from the bitmask, and regenerating the mask from ``(seed, call)``."""

    timed: Timed = {
        "forward": (ops.DROPOUT_FORWARD, ROW_SHAPES),
        "backward": (ops.DROPOUT_BACKWARD, ROW_SHAPES),
        "backward_regenerate": (ops.DROPOUT_BACKWARD_REGENERATE, ROW_SHAPES),
    }


@_timers
class DropoutAddLayerNormSuite(_NormdropSuite):
    """``functional.dropout_add_layer_norm`` (fused) and the three separate calls it replaces."""

    timed: Timed = {
        "forward": (ops.DROPOUT_ADD_LN, ROW_SHAPES),
        "three_calls_forward": (ops.DROPOUT_ADD_LN_THREE_CALLS, ROW_SHAPES),
        "backward": (ops.DROPOUT_ADD_LN_BACKWARD, ROW_SHAPES),
    }


#: The small inputs of the whole layer calls, the only size of :class:`LayerCallSuite`.
_SMALL_BN: dict[str, tuple[int, ...]] = {"small": BN_SHAPES["small"]}
_SMALL_ROWS: dict[str, tuple[int, ...]] = {"small": ROW_SHAPES["small"]}


@_timers
class LayerCallSuite(_NormdropSuite):
    """Whole layer calls on small inputs: per-call overhead of ``layer(x)`` and ``backward``.

    Float32 only: the overhead does not depend on the dtype, and every parameter
    combination costs asv a process.
    """

    params = [BACKENDS, ["float32"]]
    param_names = ["backend", "dtype"]
    timed: Timed = {
        "batchnorm_forward": (ops.BN_LAYER_CALL, _SMALL_BN),
        "batchnorm_backward": (ops.BN_LAYER_BACKWARD, _SMALL_BN),
        "layernorm_forward": (ops.LN_LAYER_CALL, _SMALL_ROWS),
        "layernorm_backward": (ops.LN_LAYER_BACKWARD, _SMALL_ROWS),
        "dropout_forward": (ops.DROPOUT_LAYER_CALL, _SMALL_ROWS),
        "dropout_backward": (ops.DROPOUT_LAYER_BACKWARD, _SMALL_ROWS),
    }


#: The headline cases of ``normdrop bench``, by method suffix.
HEADLINE = {
    "batchnorm_forward_train": find_case("BatchNorm1d train forward"),
    "layernorm_forward": find_case("LayerNorm forward"),
    "dropout_forward": find_case(f"Dropout p={DROPOUT_P} forward"),
}
#: CPU backends only: the headline shapes take minutes on the CUDA simulator.
CPU_BACKENDS = [name for name in BACKENDS if normdrop.get_backend(name).device == "cpu"]


@_timers
class HeadlineSuite(_NormdropSuite):
    """The headline cases of ``normdrop bench`` in float32 and float64: every forward."""

    params = [CPU_BACKENDS, list(DTYPES)]
    param_names = ["backend", "dtype"]
    timed: Timed = {name: (case.op, {"small": case.shape}) for name, case in HEADLINE.items()}


# ----------------------------------------------------------------------------- peak memory
class _PeakMemory:
    """Peak resident memory of a forward and a backward on a larger input.

    asv reports the peak of the whole process, set-up included, so ``setup``
    compiles on a tiny input of the same dtype, then allocates the inputs
    directly in their dtype (no float64 temporaries) and makes up the saved
    statistics (:meth:`_saved`) instead of running a forward pass; the calls are
    the operations' own. Float32 only: it is where a backend's float64 temporaries
    would show, and float64 needs twice the bytes.
    """

    params = [BACKENDS, ["float32"]]
    param_names = ["backend", "dtype"]
    forward: Operation
    backward: Operation
    shape: tuple[int, ...] = ()
    tiny: tuple[int, ...] = ()

    def setup(self, backend: str, dtype: str) -> None:
        self.target = _target(backend)
        for shape in (self.tiny, self.shape):
            self.inputs = self._allocate(shape, dtype)
            if shape == self.tiny:  # compile outside the measured size
                self.peakmem_forward(backend, dtype)
                self.peakmem_backward(backend, dtype)

    def _allocate(self, shape: tuple[int, ...], dtype: str) -> ops.Inputs:
        rng = np.random.default_rng(0)
        x, dy = rng.random(shape, dtype=dtype), rng.random(shape, dtype=dtype)
        n = shape[1] if len(shape) == 3 else shape[-1]
        host = {
            "x": x, "dy": dy, "w": np.ones(n, dtype), "b": np.zeros(n, dtype),
            "rm": np.zeros(n, dtype), "rv": np.ones(n, dtype), **self._saved(shape),
        }  # fmt: skip
        return {k: None if v is None else self.target.array(v) for k, v in host.items()}

    def _saved(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """Made-up saved values that the backward reads, for ``shape``."""
        return {}

    def peakmem_forward(self, backend: str, dtype: str) -> None:
        self.target.wrap(lambda: self.forward.call(self.inputs, self.target))()

    def peakmem_backward(self, backend: str, dtype: str) -> None:
        self.target.wrap(lambda: self.backward.call(self.inputs, self.target))()


class PeakMemBatchNorm1d(_PeakMemory):
    """Peak memory of :func:`normdrop.functional.batch_norm` and its backward."""

    forward, backward = ops.BN_TRAIN, ops.BN_BACKWARD
    shape = (64, 128, 512)
    tiny = (2, 128, 3)

    def _saved(self, shape: tuple[int, ...]) -> dict[str, Any]:
        return {"mean": np.zeros(shape[1]), "rstd": np.ones(shape[1])}


class PeakMemLayerNorm(_PeakMemory):
    """Peak memory of :func:`normdrop.functional.layer_norm` and its backward."""

    forward, backward = ops.LN_FORWARD, ops.LN_BACKWARD
    shape = (4096, 1024)
    tiny = (2, 1024)

    def _saved(self, shape: tuple[int, ...]) -> dict[str, Any]:
        return {"mean": np.zeros(shape[0]), "rstd": np.ones(shape[0])}


class PeakMemDropout(_PeakMemory):
    """Peak memory of :func:`normdrop.functional.dropout` and its backward."""

    forward, backward = ops.DROPOUT_FORWARD, ops.DROPOUT_BACKWARD
    shape = (4096, 1024)
    tiny = (2, 1024)

    def _saved(self, shape: tuple[int, ...]) -> dict[str, Any]:
        n = int(np.prod(shape))
        bits = np.random.default_rng(2).integers(0, 256, (n + 7) // 8, dtype=np.uint8)
        # A backend that keeps no bitmask regenerates the mask from (seed, call).
        keeps = getattr(self.target.backend, "supports_bitmask", True)
        return {"bitmask": bits if keeps else None}


# ----------------------------------------------------------------------------- peers
def _torch_input() -> Callable[[np.ndarray], Any]:
    """Set PyTorch up (normdrop's thread count, autograd off); return ``torch.from_numpy``."""
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
    return torch.from_numpy


def _jax_input() -> Callable[[np.ndarray], Any]:
    """Check that JAX is installed; the JAX builders take the host input as it is."""
    if peers.import_jax() is None:
        raise NotImplementedError("JAX is not installed")
    return lambda x: x


class _PeerSuite:
    """A peer (``"torch"`` or ``"jax"``) timing the operations of a normdrop suite."""

    params: list[list[str]] = [list(DTYPES), SIZES]
    param_names = ["dtype", "size"]
    timed: Timed = {}
    peer = ""

    @classmethod
    def runs(cls, op: Operation) -> bool:
        """Whether this class times ``op``: those with a builder for its peer."""
        return getattr(op, cls.peer) is not None

    def setup(self, dtype: str, size: str = "small") -> None:
        convert = _torch_input() if self.peer == "torch" else _jax_input()
        self.run = _warmed({
            name: getattr(op, self.peer)(convert(make_input(shapes[size], dtype)))
            for name, (op, shapes) in self.timed.items() if self.runs(op)
        })  # fmt: skip


def _peer_suite(name: str, peer: str, of: type, doc: str, **attrs: Any) -> type:
    """The class ``name`` timing ``of``'s operations with ``peer``, under the same method names."""
    timed: Timed = of.timed  # type: ignore[attr-defined]
    namespace = {"__doc__": doc, "peer": peer, "timed": timed, **attrs}
    return _timers(type(name, (_PeerSuite,), namespace))


TorchBatchNorm1d = _peer_suite(
    "TorchBatchNorm1d", "torch", BatchNorm1dSuite, "PyTorch peer of :class:`BatchNorm1dSuite`."
)
TorchLayerNorm = _peer_suite(
    "TorchLayerNorm", "torch", LayerNormSuite, "PyTorch peer of :class:`LayerNormSuite`."
)
TorchDropout = _peer_suite(
    "TorchDropout", "torch", DropoutSuite,
    "PyTorch peer of :class:`DropoutSuite` (``native_dropout`` keeps the mask too).",
)  # fmt: skip
TorchDropoutAddLayerNorm = _peer_suite(
    "TorchDropoutAddLayerNorm", "torch", DropoutAddLayerNormSuite,
    "PyTorch peer of :class:`DropoutAddLayerNormSuite`: its three modules' operations.",
    timed={"forward": DropoutAddLayerNormSuite.timed["forward"]},
)  # fmt: skip
TorchLayerCall = _peer_suite(
    "TorchLayerCall", "torch", LayerCallSuite,
    "PyTorch peer of :class:`LayerCallSuite`: ``torch.nn`` module calls under ``no_grad``.",
    params=[["float32"]], param_names=["dtype"],
)  # fmt: skip
TorchHeadline = _peer_suite(
    "TorchHeadline", "torch", HeadlineSuite,
    "PyTorch peer of :class:`HeadlineSuite`, float32 and float64.",
    params=[list(DTYPES)], param_names=["dtype"],
)  # fmt: skip
JaxBatchNorm1d = _peer_suite(
    "JaxBatchNorm1d", "jax", BatchNorm1dSuite, "JAX peer of :class:`BatchNorm1dSuite`."
)
JaxLayerNorm = _peer_suite(
    "JaxLayerNorm", "jax", LayerNormSuite, "JAX peer of :class:`LayerNormSuite`."
)
JaxDropout = _peer_suite("JaxDropout", "jax", DropoutSuite, "JAX peer of :class:`DropoutSuite`.")


# ----------------------------------------------------------------------------- memory speed
class MemorySpeed:
    """This machine's memory speed, as ``normdrop bench`` defines it, tracked in GB/s.

    The best of ``np.copyto`` and a 2-thread Numba copy of a 256 MiB array; a copy's
    read and write both count as moved bytes. Read the kernels' GB/s against it.
    """

    unit = "GB/s"
    timeout = 120

    def track_memory_gbps(self) -> float:
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

        return memory.memory_speed(best_of_five).bytes_per_s / 1e9


# ----------------------------------------------------------------------------- two threads
class TwoThreads:
    """Two Python threads calling separate small layers, as ``normdrop bench``'s thread case.

    Tracks the ratio of calls per second on two threads to calls per second on one
    (2 at most) for each whole layer call of :data:`normdrop.bench.threads.LAYER_CALLS`,
    on the default backend, and the same ratio, in the same rounds, of the ``np.sin``
    calibration of the same per-call time and of a compiled call as long that holds the
    GIL only for Numba's dispatch (what any call of that length can get from two threads
    on the machine): read the first against the other two.
    """

    params = [list(threads.LAYER_CALLS), list(DTYPES)]
    param_names = ["case", "dtype"]
    unit = "ratio"
    timeout = 120
    settings = Settings(budget=1.0, repeat=25, min_time=0.005, stat="min", rounds=5)

    def setup(self, case: str, dtype: str) -> None:
        thread_case = threads.ThreadCase(find_case(case, dtype))
        self.row = threads.run_thread_case(thread_case, self.settings, Target.named(None))

    def track_two_thread_ratio(self, case: str, dtype: str) -> float:
        return float(self.row["ratio"])

    def track_calibration_ratio(self, case: str, dtype: str) -> float:
        return float(self.row["calibration"]["ratio"])

    def track_nogil_call_ratio(self, case: str, dtype: str) -> float:
        return float(self.row["nogil_call"]["ratio"])
