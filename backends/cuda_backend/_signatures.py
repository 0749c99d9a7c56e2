"""The argument types every kernel can be launched with: one table for the launchers and CI.

Each launcher passes arrays of a few dtypes (float32 or float64 data, possibly
different for ``dy`` and ``x``; float32 or float64 parameters, the layers' own;
float64 statistics and partials) and scalars of fixed types. :func:`signatures`
lists every combination, kernel by kernel. Two checks keep it true:

* the test suite sets ``NORMDROP_CUDA_CHECK_SIGNATURES=1``, and then every launch
  (:func:`._runtime.launch`) checks its argument types against this table, so a
  launcher that starts passing a new combination fails the tests;
* ``tests/test_cuda_compile.py`` compiles every entry to PTX for compute
  capability 8.0 and 9.0 and assembles it with ``ptxas`` (no spills allowed).

Types are written as short strings: ``"float32[2d]"`` is a C-contiguous 2-D
float32 array, ``"uint64"`` a scalar, ``"bool"`` a boolean.
"""

from __future__ import annotations

from itertools import product
from typing import Any

import numpy as np

__all__ = ["check_launch", "describe", "signatures"]

_FLOATS = ("float32", "float64")


def _a(dtype: str, ndim: int) -> str:
    """The spec of a C-contiguous array."""
    return f"{dtype}[{ndim}d]"


def _table() -> list[tuple[Any, tuple[str, ...]]]:
    from . import _batchnorm as bn
    from . import _batchnorm_backward as bb
    from . import _channels as ch
    from . import _dropout as dr
    from . import _dropout_add_norm as fu
    from . import _layernorm as ln
    from . import _reduce as rd

    # float64 vectors, 2-D statistics and coefficients, [2, rows, K] partial sums
    v, p, p3 = _a("float64", 1), _a("float64", 2), _a("float64", 3)
    u64, i64, f64, b1 = "uint64", "int64", "float64", "bool"
    key = (u64, u64, u64, u64)
    rows: list[tuple[Any, tuple[str, ...]]] = [
        # Philox words, or the keep-mask as 0/1 bytes
        (dr._words_kernel, (u64, i64, i64, *key, b1, u64, _a("uint32", 1))),
        (dr._words_kernel, (u64, i64, i64, *key, b1, u64, _a("uint8", 1))),
        (fu._pack_kernel, (i64, u64, *key, _a("uint8", 1))),
    ]
    # the whole BatchNorm backward's merge: parameter gradients in the weight's dtype (float64
    # placeholders without a weight)
    for w1 in (_a(w, 1) for w in _FLOATS):
        rows.append((bb._backward_merge_kernel, (p3, v, w1, i64, f64, p, w1, w1)))
        # column sums: float64 sums, or added into a LayerNorm layer's gradient buffers
        rows.append((rd.column_sums2_kernel, (p3, w1, w1, b1)))
    for x in _FLOATS:
        x1, x2, x3 = _a(x, 1), _a(x, 2), _a(x, 3)
        rows += [
            (bn._moments_merge_kernel, (x3, p3, p)),
            (ln._row_moments_kernel, (x2, v, v)),
            (
                dr._dropout_kernel,
                (x1, u64, x, u64, i64, i64, *key, x1, _a("uint8", 1), b1),
            ),
            (dr._apply_bitmask_kernel, (x1, _a("uint8", 1), x, x1)),
        ]
        # running statistics (one dtype for both) and weight/bias (one dtype for both)
        for r, w in product(_FLOATS, _FLOATS):
            r1, w1 = _a(r, 1), _a(w, 1)
            fold = (x3, p3, r1, r1, w1, w1, i64, f64, f64, p, _a("int64", 1))
            rows.append((bn._fold_kernel, fold))
        # weight and bias each float32 or float64 (an absent one takes the other's dtype)
        for w, b in product(_FLOATS, _FLOATS):
            fwd = (x2, _a(w, 1), _a(b, 1), b1, b1, f64, x2, v, v)
            rows.append((ln._forward_kernel, fwd))
            # dropout + residual add + LayerNorm (the residual has x's dtype)
            fused = (x2, x2, b1, _a(w, 1), _a(b, 1), b1, b1, f64, b1, u64, x, x, i64, *key)
            rows.append((fu._fused_kernel, (*fused, b1, x2, x2, v, v, _a("uint8", 1))))
        # gradients may come in another dtype than the data
        for dy in _FLOATS:
            d1, d2, d3 = _a(dy, 1), _a(dy, 2), _a(dy, 3)
            rows += [
                # the backward sums; the statistics pass x as dy (the dy == x entry)
                (ch._partials_kernel, (d3, x3, v, b1, p3)),
                (bb._backward_elemt_kernel, (d1, x1, v, v, v, v, b1, i64, x1)),
                # the evaluation-mode backward writes dy * a into an output of x's dtype
                (bn._affine_kernel, (d1, v, v, v, i64, x1)),
            ]
            for w in _FLOATS:
                bwd = (d2, x2, v, v, _a(w, 1), b1, b1, x2, p3)
                rows.append((ln._backward_kernel, bwd))
    return rows


_TABLE: dict[Any, set[tuple[str, ...]]] | None = None


def signatures() -> list[tuple[str, Any, tuple[str, ...]]]:
    """Every ``(name, kernel, argument types)`` the launchers can pass.

    Returns
    -------
    list of tuple
        ``name`` is ``module.kernel``; ``kernel`` the numba dispatcher.
    """
    return [
        (f"{k.py_func.__module__.rsplit('.', 1)[-1]}.{k.py_func.__name__}", k, sig)
        for k, sig in _table()
    ]


def describe(arg: Any) -> str:
    """The spec string of one kernel argument (see the module docstring).

    Parameters
    ----------
    arg : array, argument hint or scalar

    Returns
    -------
    str
    """
    arg = getattr(arg, "value", arg) if type(arg).__name__ in ("In", "Out", "InOut") else arg
    if isinstance(arg, (bool, np.bool_)):
        return "bool"
    if isinstance(arg, int):
        return "int64"
    if isinstance(arg, float):
        return "float64"
    if isinstance(arg, np.generic):
        return arg.dtype.name
    is_c_contiguous = getattr(arg, "is_c_contiguous", None)  # numba's device arrays
    # (their ``flags`` is a dict); NumPy and CuPy arrays have ``flags.c_contiguous``
    contiguous = is_c_contiguous() if callable(is_c_contiguous) else bool(arg.flags.c_contiguous)
    spec = _a(np.dtype(arg.dtype).name, arg.ndim)
    return spec if contiguous else spec + " (not C-contiguous)"


def check_launch(fn: Any, args: tuple[Any, ...]) -> None:
    """Raise AssertionError unless ``fn``'s argument types are in the table.

    Parameters
    ----------
    fn : numba dispatcher
    args : tuple
    """
    global _TABLE
    if _TABLE is None:
        table: dict[Any, set[tuple[str, ...]]] = {}
        for kernel, sig in _table():
            table.setdefault(kernel, set()).add(sig)
        _TABLE = table
    got = tuple(describe(a) for a in args)
    if got not in _TABLE.get(fn, ()):
        raise AssertionError(
            f"cuda kernel {fn.py_func.__name__} launched with argument types {got}, which "
            "are not in backends/cuda_backend/_signatures.py (the table CI compiles): add them"
        )
