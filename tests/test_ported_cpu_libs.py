"""CPU inference and training libraries' reference tests of batch norm, layer norm and
dropout, ported to normdrop: their reference implementations written out in float64, on
their own problem shapes and data fills.

Each test names its source:

- uxlfoundation/oneDNN (formerly oneapi-src/oneDNN) benchdnn: the reference implementations
  ``tests/benchdnn/bnorm/ref_bnorm.cpp`` and ``tests/benchdnn/lnorm/ref_lnorm.cpp``
  (``compute_ref_fwd``, ``compute_ref_bwd``), the data fills of ``tests/benchdnn/bnorm/bnorm.cpp``
  and ``tests/benchdnn/lnorm/lnorm.cpp`` (``fill_mean``, ``fill_src``, ``fill_variance``,
  ``fill_scale``, ``fill_shift``, ``prepare_bwd``, ``fill_*_bwd``) and problems from
  ``tests/benchdnn/inputs/bnorm/shapes_ci``, ``shapes_1d`` and ``inputs/lnorm/shapes_ci`` (the
  larger ones reduced), with the flags of ``test_bnorm_ci`` / ``test_lnorm_ci``.
- ARM-software/ComputeLibrary: ``tests/validation/reference/BatchNormalizationLayer.cpp``
  (``batch_normalization_layer``) with ``tests/datasets/RandomBatchNormalizationLayerDataset.h``
  and ``tests/validation/fixtures/BatchNormalizationLayerFixture.h``;
  ``tests/validation/reference/MeanStdDevNormalizationLayer.cpp`` (layer norm without affine)
  with ``tests/validation/NEON/MeanStdDevNormalizationLayer.cpp`` and ``Small2DShapes`` of
  ``tests/datasets/ShapeDatasets.h``.
- Tencent/ncnn: ``tests/test_batchnorm.cpp``, ``tests/test_layernorm.cpp`` and
  ``tests/test_dropout.cpp``, with the layers' naive semantics in ``src/layer/batchnorm.cpp``,
  ``src/layer/layernorm.cpp`` and ``src/layer/dropout.cpp``.

Mapping the conventions. oneDNN's batch and layer normalisation use the **biased** variance
and add ``eps`` to the variance, ``(x - mean) / sqrt(var + eps)``, as PyTorch and normdrop
normalise; oneDNN has no running statistics, and its training forward *returns* that biased
batch variance, where normdrop returns ``rstd = 1 / sqrt(var + eps)`` and stores the
**unbiased** variance ``var * L / (L - 1)`` in ``running_var`` (checked below with
``momentum=1``). benchdnn's default ``eps`` is 1/16. oneDNN's flags: ``C`` (use scale) is
normdrop's ``weight``, ``H`` (use shift) its ``bias`` (``H`` alone: a bias without a weight),
``G`` (use global statistics) is normdrop's evaluation with running statistics, and its backward
(``diff_src = rcp_denom * diff_dst * gamma``) is ``batch_norm_backward(..., training=False)``.
oneDNN's inference without ``G`` normalises with the batch's own statistics: that is
``functional.batch_norm`` with ``training=False`` and no running statistics
(docs/differences.md). normdrop's ``*_backward`` functions return parameter gradients only with
a ``weight`` (docs/differences.md), so the ``H``-only diff_shift is checked with a weight of ones
(``gamma = 1`` in oneDNN's reference). The benchdnn fills for data are ported exactly (they are
deterministic formulas, chosen so that the mean and variance are exact in float32); its
``diff_dst`` fills draw from ``std::minstd_rand`` through libstdc++'s distributions, so the
port draws values of the same kind (sparse integers in [-2, 2] for bnorm, signed powers of two
2^-4..2^2 for lnorm) from NumPy. Arm Compute Library's and ncnn's fixtures draw uniform data
from their own seeded generators; the ports draw from the same ranges with NumPy. ncnn's
BatchNorm is an inference layer (slope, mean, var, bias): normdrop's evaluation mode with
running statistics. ncnn's Dropout multiplies by ``scale`` at inference (Caffe's dropout with
``scale_train: false``, whose converter writes ``scale = 1 - dropout_ratio``); normdrop's
inverted dropout is the identity at inference and divides kept values by ``1 - p`` in training,
which the port checks with ``p = 1 - scale``. Expected numbers come from the sources' reference
formulas written in float64 in this file, never from normdrop. On the CUDA simulator
(``conftest.SLOW_BACKENDS``) problems of more than 1200 values are skipped.

Not ported: oneDNN's fused ReLU and Add+ReLU (flags ``R``, ``A``) and post-ops (normdrop fuses
no activation), int8/bf16/f16 data types and blocked layouts (``--tag`` other than plain),
RMS normalisation (lnorm flag ``M``: no RMSNorm in normdrop), layer normalisation with given
statistics (lnorm flag ``G``: normdrop's layer_norm always computes each sample's statistics,
and its backward assumes they depend on the input), and bnorm's ``ALG_0`` fill (problems with
more than 2^16 values per channel, too large for this file). Arm Compute Library's fused
activations (RELU, BOUNDED_RELU, LU_BOUNDED_RELU), its QS8/QS16/QASYMM8 data and its float16
tolerance runs. ncnn's BatchNorm with ``eps = 0`` (normdrop requires ``eps > 0``; the port
checks the refusal instead), its int8/packing/Vulkan variants (``test_layer`` compares those
with the naive layer) and ncnn's LayerNorm/BatchNorm parameter files.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, host, vec

import normdrop
from normdrop import functional as F
from normdrop.errors import InvalidParameterError, ShapeError


def _close(got, want, dtype, factor=1.0):
    """``got`` equals the float64 ``want`` to ``dtype``'s rounding: relative to each value, and
    absolutely relative to the largest one (sums with cancellation)."""
    rtol = (2e-5 if np.dtype(dtype) == np.float32 else 1e-9) * factor
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=rtol * scale)


#: Problems larger than this are skipped on the backends of SLOW_BACKENDS (the CUDA simulator
#: runs every GPU thread in Python).
_SLOW_LIMIT = 1200


def _too_big(backend, shape) -> bool:
    """Whether a problem of ``shape`` is too large for a slow backend."""
    return backend.name in SLOW_BACKENDS and int(np.prod(shape)) > _SLOW_LIMIT


def _skip_if_too_big(backend, shape) -> None:
    if _too_big(backend, shape):
        pytest.skip("too many elements for the CUDA simulator")


def _chan(a, ndim):
    """A per-channel vector shaped to broadcast over axis 1 of ``ndim``-dimensional data."""
    return np.reshape(a, (1, -1) + (1,) * (ndim - 2))


# ================================================================================== oneDNN
# benchdnn's default epsilon (bnorm_aux.cpp str2desc and lnorm.hpp settings_t: 1.f / 16).
DNNL_EPS = 1.0 / 16


def _dnnl_flex_bits(L):
    """bnorm.hpp / lnorm.hpp cfg_t for f32 (24 exact bits): the ALG_1 fill's flex bits. The
    ports use problems small enough for ALG_1 (``free_bits >= min_flex_bits = 3``)."""
    log_l = math.ceil(math.log2(L)) if L > 1 else 0
    free_bits = (24 - log_l) // 2 - 1
    assert free_bits >= 3, "problem too large for benchdnn's ALG_1 fill"
    return min(24, free_bits)


def _dnnl_bnorm_problem(shape, flags):
    """benchdnn bnorm.cpp prepare_fwd for f32: fill_mean, fill_src, fill_variance, fill_scale
    and fill_shift of an ``(mb, ic, spatial...)`` problem. Returns float32 src and float64
    mean, (biased) variance, scale and shift."""
    mb, ic = shape[0], shape[1]
    sp_total = int(np.prod(shape[2:], dtype=np.int64))
    L = mb * sp_total
    glob = "G" in flags
    c = np.arange(ic)
    mean = 0.25 * (1 << (c % 7)).astype(np.float64)
    n_idx = np.arange(mb)[:, None, None]
    sp = np.arange(sp_total)[None, None, :]
    # l_base = mb * id * ih * iw + c * 239 * 2; l = l_base + sp (``ell`` here)
    ell = n_idx * sp_total + c[None, :, None] * 478 + sp
    if glob:
        src = (ell % 65 - 32).astype(np.float64)
        var = ((c % 7) << 1).astype(np.float64)
    else:
        flex_bits = _dnnl_flex_bits(L)
        gen = (ell // 2 * 1637) & ((1 << flex_bits) - 1)
        sgn = np.where(ell % 2 == 0, 1.0, -1.0)  # s_{i} + s_{i+1} = 2 * m
        f = sgn * gen / (1 << flex_bits)
        src = mean[None, :, None] * (1.0 + f)
        if L % 2:
            last = (n_idx * sp_total + sp) == L - 1
            src = np.where(last, mean[None, :, None], src)
        var = ((src - mean[None, :, None]) ** 2).sum(axis=(0, 2)) / L
    scale = (1.0 / 8) * (1 << (c % 7)) * (8.0 if glob else 1.0)
    shift = ((c % 3) - 1) * (1.0 / 512 * (1 << (c % 7))) * (512.0 if glob else 1.0)
    src32 = src.astype(np.float32)
    assert np.array_equal(src32, src)  # the fill is exact in float32
    return src32.reshape(shape), mean, var, scale, shift


def _dnnl_bnorm_fwd_ref(src, mean, var, scale, shift, flags, eps=DNNL_EPS):
    """ref_bnorm.cpp compute_ref_fwd: ``gamma * (src - mean) / sqrt(var + eps) + beta`` with
    ``gamma = 1`` without ``C`` and ``beta = 0`` without ``H`` (no ReLU, no post-ops)."""
    nd = src.ndim
    gamma = scale if "C" in flags else np.ones_like(scale)
    beta = shift if "H" in flags else np.zeros_like(shift)
    x_hat = (src.astype(np.float64) - _chan(mean, nd)) / np.sqrt(_chan(var, nd) + eps)
    return _chan(gamma, nd) * x_hat + _chan(beta, nd)


def _dnnl_bnorm_bwd_ref(src, mean, var, d_dst, scale, flags, eps=DNNL_EPS):
    """ref_bnorm.cpp compute_ref_bwd: d_gamma = sum(dd * src_hat), d_beta = sum(dd), and
    ``d_src = rcp_denom * gamma * (dd - (d_beta + src_hat * d_gamma) / MB_SP)``, without the
    correction term under global statistics (``G``)."""
    nd = src.ndim
    axes = (0, *range(2, nd))
    L = src.size // src.shape[1]
    rcp = 1.0 / np.sqrt(var + eps)
    gamma = scale if "C" in flags else np.ones_like(scale)
    src_hat = (src.astype(np.float64) - _chan(mean, nd)) * _chan(rcp, nd)
    dd = d_dst.astype(np.float64)
    d_gamma = (dd * src_hat).sum(axis=axes)
    d_beta = dd.sum(axis=axes)
    ds = dd
    if "G" not in flags:
        ds = dd - (_chan(d_beta, nd) + src_hat * _chan(d_gamma, nd)) / L
    return _chan(rcp * gamma, nd) * ds, d_gamma, d_beta


def _dnnl_bnorm_diff_dst(shape, seed):
    """bnorm.cpp prepare_bwd's kind of diff_dst: integers in [-2, 2], sparse (density
    ``max(0.05, min(1, 20 / nelems))``), drawn with NumPy instead of std::minstd_rand."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    sparsity = max(0.05, min(1.0, 20.0 / n))
    vals = rng.integers(-2, 3, size=n).astype(np.float32)
    return np.where(rng.random(n) < sparsity, vals, np.float32(0)).reshape(shape)


# tests/benchdnn/inputs/bnorm/shapes_ci (mb defaults to 2; "ihN" alone is N x N, "idN" alone
# N x N x N), the larger ones reduced, and shapes_1d "bnorm1d:5".
DNNL_BNORM_SHAPES = {
    "bnorm_ci_0d:1 ic23": (2, 23),
    "bnorm_ci_1d:1 ic32iw32": (2, 32, 32),
    "bnorm_ci_1d:2 mb5ic33iw27": (5, 33, 27),
    "bnorm_ci_2d:1 ic256ih28 (ic16ih7)": (2, 16, 7, 7),
    "bnorm_ci_2d:2 mb4ic200ih17iw16 (ic20)": (4, 20, 17, 16),
    "bnorm_ci_3d:1 ic16id12 (id4)": (2, 16, 4, 4, 4),
    "bnorm_ci_3d:2 mb1ic19id4ih6iw6": (1, 19, 4, 6, 6),
    "bnorm1d:5 mb9ic128iw1": (9, 128, 1),
}
_BN_SHAPE_IDS = list(DNNL_BNORM_SHAPES)


def _params(flags, backend, scale, shift):
    """normdrop's float32 weight and bias for oneDNN's scale (``C``) and shift (``H``) flags."""
    return (
        vec(backend, scale.astype(np.float32)) if "C" in flags else None,
        vec(backend, shift.astype(np.float32)) if "H" in flags else None,
    )


@pytest.mark.parametrize("flags", ["", "C", "H", "CH"])
@pytest.mark.parametrize("name", _BN_SHAPE_IDS)
def test_onednn_bnorm_forward_training(backend, name, flags):
    """oneDNN benchdnn bnorm, ``--dir=FWD_D`` with flags '', C, H, CH (test_bnorm_ci) on the
    shapes_ci problems: ref_bnorm.cpp compute_ref_fwd on bnorm.cpp's fill, whose source values
    come in pairs around ``mean = 2^(c % 7 - 2)`` so that the batch mean and the biased batch
    variance are exact. normdrop's training batch_norm returns that mean and
    ``rstd = 1 / sqrt(var + eps)`` (eps 1/16, added to the biased variance as oneDNN adds it)
    and oneDNN's dst. With momentum 1 its running mean is oneDNN's mean and its running
    variance the unbiased ``var * L / (L - 1)``, where oneDNN reports the biased one."""
    shape = DNNL_BNORM_SHAPES[name]
    _skip_if_too_big(backend, shape)
    src, mean, var, scale, shift = _dnnl_bnorm_problem(shape, flags)
    L = src.size // shape[1]
    w, b = _params(flags, backend, scale, shift)
    rm = vec(backend, np.zeros(shape[1], np.float32))
    rv = vec(backend, np.ones(shape[1], np.float32))
    y, m, rstd = F.batch_norm_with_stats(
        backend.asarray(src), rm, rv, w, b, True, 1.0, DNNL_EPS, backend=backend
    )
    _close(host(backend, m), mean, np.float64)
    _close(host(backend, rstd), 1.0 / np.sqrt(var + DNNL_EPS), np.float64)
    _close(
        backend.to_numpy(y), _dnnl_bnorm_fwd_ref(src, mean, var, scale, shift, flags), np.float32
    )
    _close(host(backend, rm), mean, np.float32)
    _close(host(backend, rv), var * L / (L - 1), np.float32)


@pytest.mark.parametrize("flags", ["", "CH"])
@pytest.mark.parametrize("name", _BN_SHAPE_IDS[:4])
def test_onednn_bnorm_inference_batch_stats(backend, name, flags):
    """oneDNN benchdnn bnorm, ``--dir=FWD_I`` with flags '' and CH (test_bnorm_ci "inference"):
    without ``G`` oneDNN's inference computes the batch's statistics. normdrop's
    ``batch_norm(training=False)`` without running statistics does the same
    (docs/differences.md) and gives compute_ref_fwd's dst."""
    shape = DNNL_BNORM_SHAPES[name]
    _skip_if_too_big(backend, shape)
    src, mean, var, scale, shift = _dnnl_bnorm_problem(shape, flags)
    w, b = _params(flags, backend, scale, shift)
    y = F.batch_norm(backend.asarray(src), None, None, w, b, False, eps=DNNL_EPS, backend=backend)
    _close(
        backend.to_numpy(y), _dnnl_bnorm_fwd_ref(src, mean, var, scale, shift, flags), np.float32
    )


@pytest.mark.parametrize("flags", ["G", "GC", "GH", "GCH"])
@pytest.mark.parametrize("name", _BN_SHAPE_IDS)
def test_onednn_bnorm_forward_global_stats(backend, name, flags):
    """oneDNN benchdnn bnorm with ``G`` (use_global_stats; ``--dir=FWD_D`` and ``FWD_I``,
    flags G, GC, GH, GCH of test_bnorm_ci): the mean ``2^(c % 7 - 2)``, variance
    ``2 * (c % 7)`` (0 for every seventh channel: only eps remains), scale and shift are given,
    and the source is ``(l % 65) - 32``. normdrop's evaluation with those as running statistics
    gives compute_ref_fwd's dst and leaves them unchanged."""
    shape = DNNL_BNORM_SHAPES[name]
    _skip_if_too_big(backend, shape)
    src, mean, var, scale, shift = _dnnl_bnorm_problem(shape, flags)
    w, b = _params(flags, backend, scale, shift)
    rm, rv = vec(backend, mean.astype(np.float32)), vec(backend, var.astype(np.float32))
    y = F.batch_norm(backend.asarray(src), rm, rv, w, b, False, eps=DNNL_EPS, backend=backend)
    _close(
        backend.to_numpy(y), _dnnl_bnorm_fwd_ref(src, mean, var, scale, shift, flags), np.float32
    )
    np.testing.assert_array_equal(host(backend, rm), mean)
    np.testing.assert_array_equal(host(backend, rv), var)


@pytest.mark.parametrize("flags", ["", "C", "H", "CH", "G", "GC", "GH", "GCH"])
@pytest.mark.parametrize("name", _BN_SHAPE_IDS)
def test_onednn_bnorm_backward(backend, name, flags):
    """oneDNN benchdnn bnorm, ``--dir=BWD_D`` (flags '', G) and ``BWD_DW`` (C, H, CH, GC, GH,
    GCH) of test_bnorm_ci: ref_bnorm.cpp compute_ref_bwd on the forward fill's statistics (the
    batch's, or the given ones with ``G``). normdrop's batch_norm_backward, with
    ``training=False`` for ``G``, gives its diff_src, and with a weight its grad_weight and
    grad_bias are diff_scale and diff_shift (with ``H`` alone a weight of ones is passed:
    without one normdrop returns no parameter gradients, docs/differences.md)."""
    shape = DNNL_BNORM_SHAPES[name]
    _skip_if_too_big(backend, shape)
    src, mean, var, scale, shift = _dnnl_bnorm_problem(shape, flags)
    dd = _dnnl_bnorm_diff_dst(shape, seed=len(name) * 31 + len(flags))
    d_src, d_gamma, d_beta = _dnnl_bnorm_bwd_ref(src, mean, var, dd, scale, flags)
    glob = "G" in flags
    rstd = 1.0 / np.sqrt(var + DNNL_EPS)
    weight = scale.astype(np.float32) if "C" in flags else None
    gx, gw, gb = F.batch_norm_backward(
        backend.asarray(dd), backend.asarray(src), vec(backend, mean), vec(backend, rstd),
        vec(backend, weight), training=not glob, backend=backend,
    )  # fmt: skip
    _close(backend.to_numpy(gx), d_src, np.float32)
    if "C" in flags:
        _close(host(backend, gw), d_gamma, np.float32)
        _close(host(backend, gb), d_beta, np.float32)
    else:
        assert gw is None and gb is None
    if "H" in flags and "C" not in flags:
        ones = np.ones(shape[1], np.float32)
        gx, gw, gb = F.batch_norm_backward(
            backend.asarray(dd), backend.asarray(src), vec(backend, mean), vec(backend, rstd),
            vec(backend, ones), training=not glob, backend=backend,
        )  # fmt: skip
        _close(backend.to_numpy(gx), d_src, np.float32)
        _close(host(backend, gb), d_beta, np.float32)


@pytest.mark.parametrize("name", _BN_SHAPE_IDS[:3])
def test_onednn_bnorm_layer(backend, name):
    """oneDNN benchdnn bnorm with flags CH (``FWD_D`` then ``BWD_DW``) and GCH (``FWD_I``)
    through a BatchNorm1d layer on the 2-D and 3-D shapes_ci problems: training forward and
    backward give compute_ref_fwd's dst and compute_ref_bwd's diff_src, diff_scale and
    diff_shift; in evaluation with the ``G`` fill's statistics as running statistics the layer
    gives the global-statistics dst."""
    shape = DNNL_BNORM_SHAPES[name]
    _skip_if_too_big(backend, shape)
    src, mean, var, scale, shift = _dnnl_bnorm_problem(shape, "CH")
    dd = _dnnl_bnorm_diff_dst(shape, seed=7)
    bn = normdrop.BatchNorm1d(shape[1], eps=DNNL_EPS, backend=backend.name)
    bn.weight = vec(backend, scale.astype(np.float32))
    bn.bias = vec(backend, shift.astype(np.float32))
    y = bn(backend.asarray(src))
    _close(backend.to_numpy(y), _dnnl_bnorm_fwd_ref(src, mean, var, scale, shift, "CH"), np.float32)
    gx = bn.backward(backend.asarray(dd))
    d_src, d_gamma, d_beta = _dnnl_bnorm_bwd_ref(src, mean, var, dd, scale, "CH")
    _close(backend.to_numpy(gx), d_src, np.float32)
    _close(host(backend, bn.grads["weight"]), d_gamma, np.float32)
    _close(host(backend, bn.grads["bias"]), d_beta, np.float32)
    src, mean, var, scale, shift = _dnnl_bnorm_problem(shape, "GCH")
    bn = normdrop.BatchNorm1d(shape[1], eps=DNNL_EPS, backend=backend.name).eval()
    bn.weight, bn.bias = (
        vec(backend, scale.astype(np.float32)),
        vec(backend, shift.astype(np.float32)),
    )
    bn.running_mean = vec(backend, mean.astype(np.float32))
    bn.running_var = vec(backend, var.astype(np.float32))
    y = bn(backend.asarray(src))
    _close(
        backend.to_numpy(y), _dnnl_bnorm_fwd_ref(src, mean, var, scale, shift, "GCH"), np.float32
    )


def test_onednn_bnorm_single_value_training_refused(backend):
    """oneDNN benchdnn inputs/bnorm/shapes_1d "bnorm1d:1" (mb1ic16iw1): one value per channel.
    oneDNN's training forward normalises it (variance 0, output ``beta``); normdrop, as
    PyTorch, refuses one value per channel in training (SPEC.md) and leaves the running
    statistics alone. Its evaluation with the ``G`` fill gives compute_ref_fwd's dst."""
    shape = (1, 16, 1)
    src, *_ = _dnnl_bnorm_problem(shape, "")
    rm = vec(backend, np.zeros(16, np.float32))
    with pytest.raises(ShapeError, match="Expected more than 1 value per channel"):
        F.batch_norm(backend.asarray(src), rm, vec(backend, np.ones(16, np.float32)),
                     training=True, eps=DNNL_EPS, backend=backend)  # fmt: skip
    np.testing.assert_array_equal(host(backend, rm), np.zeros(16))
    src, mean, var, scale, shift = _dnnl_bnorm_problem(shape, "GCH")
    y = F.batch_norm(
        backend.asarray(src), vec(backend, mean.astype(np.float32)),
        vec(backend, var.astype(np.float32)), vec(backend, scale.astype(np.float32)),
        vec(backend, shift.astype(np.float32)), False, eps=DNNL_EPS, backend=backend,
    )  # fmt: skip
    _close(
        backend.to_numpy(y), _dnnl_bnorm_fwd_ref(src, mean, var, scale, shift, "GCH"), np.float32
    )


# ------------------------------------------------------------------------- oneDNN lnorm
# tests/benchdnn/inputs/lnorm/shapes_ci: the last axis is normalised; the larger problems keep
# their normalised size and have fewer rows.
DNNL_LNORM_SHAPES = {
    "lnorm_ci_0d:0 15x3": (15, 3),
    "lnorm_ci_0d:1 30x300": (30, 300),
    "lnorm_ci_0d:2 256x768 (8x768)": (8, 768),
    "lnorm_ci_0d:3 257x768 (9x768)": (9, 768),
    "lnorm_ci_1d:0 128x1x1024 (4x1x1024)": (4, 1, 1024),
    "lnorm_ci_2d:0 6x2x128x1024 (2x2x3x1024)": (2, 2, 3, 1024),
}
_LN_SHAPE_IDS = list(DNNL_LNORM_SHAPES)


def _dnnl_lnorm_scale_shift(C):
    """lnorm.cpp fill_scale and fill_shift (without ``G``)."""
    c = np.arange(C)
    return (1.0 / 8) * (1 << (c % 7)), ((c % 3) - 1) * (1.0 / 512 * (1 << (c % 7)))


def _dnnl_lnorm_fwd_problem(shape):
    """lnorm.cpp prepare_fwd for f32 (ALG_1): the mean ``2^(n % 7 - 2)`` of row n, source
    values in pairs around it (the last one equal to it when C is odd), and the exact biased
    variance."""
    C = shape[-1]
    N = int(np.prod(shape[:-1]))
    flex_bits = _dnnl_flex_bits(C)
    n = np.arange(N)[:, None]
    c = np.arange(C)[None, :]
    mean = 0.25 * (1 << (np.arange(N) % 7)).astype(np.float64)
    ell = c + n * 478  # benchdnn's l
    gen = (ell // 2 * 1637) & ((1 << flex_bits) - 1)
    f = np.where(ell % 2 == 0, 1.0, -1.0) * gen / (1 << flex_bits)
    src = mean[:, None] * (1.0 + f)
    if C % 2:
        src[:, -1] = mean
    var = ((src - mean[:, None]) ** 2).sum(axis=1) / C
    src32 = src.astype(np.float32)
    assert np.array_equal(src32, src)
    return src32.reshape(shape), mean, var


def _dnnl_lnorm_fwd_ref(src, mean, var, scale, shift, flags, eps=DNNL_EPS):
    """ref_lnorm.cpp compute_ref_fwd: ``gamma / sqrt(var + eps) * (src - mean) + beta`` per row
    (no RMS norm, scales or post-ops)."""
    C = src.shape[-1]
    x = src.reshape(-1, C).astype(np.float64)
    gamma = (scale if "C" in flags else np.ones(C))[None, :] / np.sqrt(var + eps)[:, None]
    beta = shift if "H" in flags else np.zeros(C)
    return (gamma * (x - mean[:, None]) + beta[None, :]).reshape(src.shape)


@pytest.mark.parametrize("flags", ["", "C", "H", "CH"])
@pytest.mark.parametrize("name", _LN_SHAPE_IDS)
def test_onednn_lnorm_forward(backend, name, flags):
    """oneDNN benchdnn lnorm, ``--dir=FWD_D`` with flags '', C, H, CH (test_lnorm_ci) on the
    shapes_ci problems: ref_lnorm.cpp compute_ref_fwd on lnorm.cpp's fill (exact per-row mean
    and biased variance, eps 1/16 added to the variance). normdrop's layer_norm_with_stats
    returns that mean and ``rstd = 1 / sqrt(var + eps)`` and oneDNN's dst; a LayerNorm layer
    (``elementwise_affine`` for C, ``bias`` for H) gives the same dst where it has those
    parameters (it has no bias without a weight)."""
    shape = DNNL_LNORM_SHAPES[name]
    _skip_if_too_big(backend, shape)
    C = shape[-1]
    src, mean, var = _dnnl_lnorm_fwd_problem(shape)
    scale, shift = _dnnl_lnorm_scale_shift(C)
    w = vec(backend, scale.astype(np.float32)) if "C" in flags else None
    b = vec(backend, shift.astype(np.float32)) if "H" in flags else None
    want = _dnnl_lnorm_fwd_ref(src, mean, var, scale, shift, flags)
    y, m, rstd = F.layer_norm_with_stats(backend.asarray(src), C, w, b, DNNL_EPS, backend=backend)
    _close(backend.to_numpy(y), want, np.float32)
    _close(host(backend, m).ravel(), mean, np.float64)
    _close(host(backend, rstd).ravel(), 1.0 / np.sqrt(var + DNNL_EPS), np.float64)
    if flags == "H":
        return
    layer = normdrop.LayerNorm(
        C, DNNL_EPS, elementwise_affine=flags != "", bias="H" in flags, backend=backend.name
    )
    if "C" in flags:
        layer.weight = vec(backend, scale.astype(np.float32))
    if "H" in flags:
        layer.bias = vec(backend, shift.astype(np.float32))
    _close(backend.to_numpy(layer(backend.asarray(src))), want, np.float32)


@pytest.mark.parametrize("flags", ["", "C", "H", "CH"])
@pytest.mark.parametrize("name", _LN_SHAPE_IDS)
def test_onednn_lnorm_backward(backend, name, flags):
    """oneDNN benchdnn lnorm, ``--dir=BWD_D`` (flags '') and ``BWD_DW`` (C, H, CH) of
    test_lnorm_ci: ref_lnorm.cpp compute_ref_bwd on lnorm.cpp's backward fill, whose
    statistics are *given* (mean ``2^(n % 7 - 2)``, variance ``{0.25, 1, 4}[n % 3] - eps``,
    source ``mean -/+ 1``), not those of the source. normdrop's layer_norm_backward takes the
    statistics as arguments too, and with them gives oneDNN's diff_src, diff_scale and
    diff_shift (``H`` alone: with a weight of ones, docs/differences.md)."""
    shape = DNNL_LNORM_SHAPES[name]
    _skip_if_too_big(backend, shape)
    C = shape[-1]
    N = int(np.prod(shape[:-1]))
    n = np.arange(N)
    mean = 0.25 * (1 << (n % 7)).astype(np.float64)
    var = 0.25 * (1 << ((n % 3) * 2)).astype(np.float64) - DNNL_EPS
    c = np.arange(C)
    src = np.where(c[None, :] % 2 == 0, mean[:, None] - 1.0, mean[:, None] + 1.0)
    rng = np.random.default_rng(len(name) * 7 + len(flags))
    dd = rng.choice([-1.0, 1.0], size=(N, C)) * 0.0625 * 2.0 ** rng.integers(0, 7, size=(N, C))
    scale, _ = _dnnl_lnorm_scale_shift(C)
    gamma = scale if "C" in flags else np.ones(C)
    # compute_ref_bwd, in float64
    rcp = 1.0 / np.sqrt(var + DNNL_EPS)
    x = src - mean[:, None]
    d_gamma = (dd * x * rcp[:, None]).sum(axis=0)
    d_beta = dd.sum(axis=0)
    dd_gamma = (gamma[None, :] * dd).sum(axis=1)
    dd_gamma_x = (gamma[None, :] * dd * x).sum(axis=1) * rcp
    ds = dd * gamma[None, :] - (dd_gamma[:, None] + x * (dd_gamma_x * rcp)[:, None]) / C
    d_src = rcp[:, None] * ds

    src32, dd32 = src.astype(np.float32).reshape(shape), dd.astype(np.float32).reshape(shape)
    stat_shape = shape[:-1]
    weight = gamma.astype(np.float32) if flags else None  # H alone: ones
    gx, gw, gb = F.layer_norm_backward(
        backend.asarray(dd32), backend.asarray(src32), C,
        vec(backend, mean.reshape(stat_shape)), vec(backend, rcp.reshape(stat_shape)),
        vec(backend, weight), backend=backend,
    )  # fmt: skip
    _close(backend.to_numpy(gx).reshape(N, C), d_src, np.float32)
    if flags:
        _close(host(backend, gw), d_gamma, np.float32)
        _close(host(backend, gb), d_beta, np.float32)
    else:
        assert gw is None and gb is None


# ======================================================================= Arm Compute Library
# tests/datasets/RandomBatchNormalizationLayerDataset.h: (src TensorShape (W, H, C, N), C,
# epsilon); NumPy's order is (N, C, H, W).
ACL_BN_DATASET = [((15, 16, 2, 12), 2, 0.1), ((21, 11, 12, 7), 12, 0.1), ((7, 3, 6, 11), 6, 0.1)]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("use_gamma", [False, True])
@pytest.mark.parametrize("use_beta", [False, True])
@pytest.mark.parametrize("case", range(3), ids=["15x16x2x12", "21x11x12x7", "7x3x6x11"])
def test_acl_batch_normalization_layer(backend, case, use_beta, use_gamma, layout):
    """Arm Compute Library NEON/BatchNormalizationLayer.cpp Float/FP32/Random
    (BatchNormalizationLayerValidationFixture, RandomBatchNormalizationLayerDataset, UseBeta and
    UseGamma false/true, DataLayout NCHW and NHWC, no activation): src, mean, beta and gamma
    uniform in [-1, 1] and var in [0, 1] (get_batchnormalization_layer_test_bounds), epsilon
    0.1; without beta ACL uses 0 and without gamma 1 (normdrop: bias/weight None). The result
    equals reference::batch_normalization_layer, ``beta + (src - mean) / sqrt(var + eps) *
    gamma``, within ACL's tolerance_f32 (absolute 1e-5). NHWC data is a transposed view of an
    (N, H, W, C) array, which normdrop takes where it lies."""
    (w_, h_, c_, n_), c, eps = ACL_BN_DATASET[case]
    _skip_if_too_big(backend, (w_, h_, c_, n_))
    assert c == c_
    rng = np.random.default_rng(1000 + case)
    if layout == "NCHW":
        src = rng.uniform(-1, 1, (n_, c_, h_, w_)).astype(np.float32)
    else:
        src = rng.uniform(-1, 1, (n_, h_, w_, c_)).astype(np.float32).transpose(0, 3, 1, 2)
    mean = rng.uniform(-1, 1, c).astype(np.float32)
    var = rng.uniform(0, 1, c).astype(np.float32)
    beta = rng.uniform(-1, 1, c).astype(np.float32) if use_beta else np.zeros(c, np.float32)
    gamma = rng.uniform(-1, 1, c).astype(np.float32) if use_gamma else np.ones(c, np.float32)
    want = _chan(beta, 4) + (src.astype(np.float64) - _chan(mean, 4)) / np.sqrt(
        _chan(var.astype(np.float64), 4) + np.float64(np.float32(eps))
    ) * _chan(gamma, 4)
    y = F.batch_norm(
        backend.asarray(src), vec(backend, mean), vec(backend, var),
        vec(backend, gamma) if use_gamma else None, vec(backend, beta) if use_beta else None,
        False, eps=float(np.float32(eps)), backend=backend,
    )  # fmt: skip
    y = backend.to_numpy(y)
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-5)
    _close(y, want, np.float32)


# tests/datasets/ShapeDatasets.h Small2DShapes: TensorShape (cols, rows).
ACL_SMALL_2D_SHAPES = [(7, 7), (27, 13), (128, 64)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("in_place", [False, True], ids=["out", "in_place"])
@pytest.mark.parametrize("shape", ACL_SMALL_2D_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_acl_mean_std_dev_normalization_layer(backend, shape, in_place, dtype):
    """Arm Compute Library NEON/MeanStdDevNormalizationLayer.cpp Float/FP32/RunSmall
    (MeanStdDevNormalizationLayerValidationFixture: Small2DShapes, InPlace false/true,
    Epsilon 1e-8; src uniform in [-1, 1]). reference::mean_std_normalization_layer normalises
    each row of ``cols`` values by its mean and ``1 / sqrt(E[x^2] - mean^2 + eps)`` (the biased
    variance, single-pass): layer norm over the last axis without affine, which normdrop
    computes into a separate array or in place (``out=x``). float64 is an addition."""
    cols, rows = shape
    _skip_if_too_big(backend, shape)
    rng = np.random.default_rng(cols * rows)
    x = rng.uniform(-1, 1, (rows, cols)).astype(dtype)
    x64 = x.astype(np.float64)
    mean = x64.sum(axis=1) / cols
    var = (x64 * x64).sum(axis=1) / cols - mean * mean + 1e-8
    want = (x64 - mean[:, None]) / np.sqrt(var)[:, None]
    xb = backend.asarray(x.copy())
    y = F.layer_norm(xb, cols, eps=1e-8, out=xb if in_place else None, backend=backend)
    if in_place:
        assert y is xb
    y = backend.to_numpy(y)
    assert y.dtype == dtype
    _close(y, want, dtype, factor=5.0)
    layer = normdrop.LayerNorm(
        cols, 1e-8, elementwise_affine=False, dtype=dtype, backend=backend.name
    )
    _close(backend.to_numpy(layer(backend.asarray(x))), want, dtype, factor=5.0)


# ====================================================================================== ncnn
def _ncnn_shape(dims):
    """An ncnn Mat ``RandomMat(w[, h[, d]], c)`` as normdrop's (N=1, C, ...) batch-norm input:
    1-D: each of the w values is a channel; 2-D (w, h): h channels of w values; 3-D (w, h, c)
    and 4-D (w, h, d, c): c channels of h*w (d*h*w) values."""
    if len(dims) == 1:
        return (1, dims[0])
    if len(dims) == 2:
        return (1, dims[1], dims[0])
    if len(dims) == 3:
        return (1, dims[2], dims[1], dims[0])
    return (1, dims[3], dims[2], dims[1], dims[0])


# tests/test_batchnorm.cpp test_batchnorm_0 .. _3 (RandomMat sizes, eps), eps > 0 only.
NCNN_BN_CASES = [
    ((5, 6, 7, 24), 0.01), ((7, 8, 9, 12), 0.001), ((3, 4, 5, 32), 0.001),
    ((5, 7, 24), 0.01), ((7, 9, 12), 0.001), ((3, 5, 13), 0.001), ((3, 5, 16), 0.001),
    ((3, 5, 32), 0.001),
    ((15, 24), 0.01), ((17, 12), 0.001), ((19, 15), 0.001), ((16, 128), 0.001),
    ((128,), 0.001), ((124,), 0.1), ((127,), 0.1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("dims", "eps"), NCNN_BN_CASES, ids=[f"{'x'.join(map(str, d))}-{e}" for d, e in NCNN_BN_CASES]
)
def test_ncnn_batchnorm(backend, dims, eps):
    """ncnn tests/test_batchnorm.cpp test_batchnorm_0 .. _3 (the cases with eps > 0): slope,
    mean and bias from RandomMat (uniform in [-1.2, 1.2]) and var uniform in [0.001, 2]
    ("var must be positive"). ncnn's BatchNorm (src/layer/batchnorm.cpp) is an inference
    layer: ``b = slope / sqrt(var + eps)``, ``a = bias - slope * mean / sqrt(var + eps)``,
    ``y = b * x + a`` per channel (the Mat's c, or h for 2-D, or each value for 1-D). normdrop's
    evaluation with running statistics gives it: functional batch_norm, and BatchNorm1d in
    evaluation for the 1-D and 2-D Mats."""
    shape = _ncnn_shape(dims)
    _skip_if_too_big(backend, shape)
    C = shape[1]
    rng = np.random.default_rng(sum(dims) + int(eps * 1000))
    x = rng.uniform(-1.2, 1.2, shape).astype(np.float32)
    slope, mean, bias = (rng.uniform(-1.2, 1.2, C).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.001, 2.0, C).astype(np.float32)
    eps32 = float(np.float32(eps))
    sqrt_var = np.sqrt(var.astype(np.float64) + eps32)
    a = bias - slope.astype(np.float64) * mean / sqrt_var
    b = slope / sqrt_var
    want = _chan(b, x.ndim) * x + _chan(a, x.ndim)
    y = F.batch_norm(
        backend.asarray(x), vec(backend, mean), vec(backend, var), vec(backend, slope),
        vec(backend, bias), False, eps=eps32, backend=backend,
    )  # fmt: skip
    _close(backend.to_numpy(y), want, np.float32)
    if x.ndim <= 3:
        bn = normdrop.BatchNorm1d(C, eps=eps32, backend=backend.name).eval()
        bn.weight, bn.bias = vec(backend, slope), vec(backend, bias)
        bn.running_mean, bn.running_var = vec(backend, mean), vec(backend, var)
        _close(backend.to_numpy(bn(backend.asarray(x))), want, np.float32)


def test_ncnn_batchnorm_eps_zero_refused(backend):
    """ncnn tests/test_batchnorm.cpp runs half its cases with ``eps = 0`` (e.g.
    ``RandomMat(5, 6, 7, 24), 0.f``), which ncnn accepts (a zero ``sqrt(var + eps)`` becomes
    0.0001). normdrop requires ``eps > 0`` (docs/differences.md): the layer and the functional
    form raise InvalidParameterError."""
    with pytest.raises(InvalidParameterError, match="eps"):
        normdrop.BatchNorm1d(24, eps=0.0, backend=backend.name)
    x = backend.asarray(np.zeros((1, 24, 5), np.float32))
    ones = vec(backend, np.ones(24, np.float32))
    with pytest.raises(InvalidParameterError, match="eps"):
        F.batch_norm(x, ones, ones, eps=0.0, backend=backend)


# tests/test_layernorm.cpp: (RandomMat dims (w, h[, d], c), affine_size, eps), with affine 0
# and 1 each.
NCNN_LN_GROUPS = {
    "test_layernorm_0": [
        ((6, 4, 2), 6, 0.01), ((4, 5, 6), 4, 0.01), ((3, 3, 8), 3, 0.002), ((5, 6, 12), 5, 0.02),
        ((4, 7, 16), 4, 0.02), ((6, 7, 24), 6, 0.001), ((5, 8, 32), 5, 0.001),
    ],
    "test_layernorm_1": [
        ((6, 4, 2), 24, 0.01), ((4, 5, 6), 20, 0.01), ((3, 3, 8), 9, 0.002),
        ((5, 6, 12), 30, 0.02), ((4, 7, 16), 28, 0.02), ((6, 7, 24), 42, 0.001),
        ((5, 8, 32), 40, 0.001),
    ],
    "test_layernorm_2": [
        ((4, 2), 4, 0.01), ((5, 6), 5, 0.01), ((3, 8), 3, 0.002), ((6, 12), 6, 0.02),
        ((4, 16), 4, 0.02), ((7, 24), 7, 0.001), ((8, 32), 8, 0.001),
    ],
    "test_layernorm_3": [
        ((2,), 2, 0.01), ((6,), 6, 0.01), ((8,), 8, 0.002), ((12,), 12, 0.02), ((16,), 16, 0.02),
        ((24,), 24, 0.001), ((32,), 32, 0.001),
    ],
    "test_layernorm_4": [
        ((5, 3, 2, 8), 5, 0.01), ((4, 3, 2, 5), 4, 0.01), ((5, 3, 2, 8), 15, 0.002),
        ((4, 3, 2, 5), 12, 0.002), ((5, 3, 2, 8), 30, 0.001), ((4, 3, 2, 5), 24, 0.001),
    ],
}  # fmt: skip


@pytest.mark.parametrize("affine", [0, 1])
@pytest.mark.parametrize("group", list(NCNN_LN_GROUPS))
def test_ncnn_layernorm(backend, group, affine):
    """ncnn tests/test_layernorm.cpp test_layernorm_0 .. _4 (every case, affine 0 and 1):
    src/layer/layernorm.cpp normalises the trailing ``affine_size`` values (w, w*h or w*h*d of
    the Mat) by their mean and ``1 / sqrt(var + eps)`` (biased variance),
    ``(x * a + b) * gamma + beta`` with ``a = 1 / sqrt(var + eps)``, ``b = -mean * a``, and
    gamma and beta (RandomMat(affine_size), uniform in [-1.2, 1.2]) only with ``affine``.
    normdrop's layer_norm over those trailing axes (gamma reshaped to them) gives it, and so
    does a LayerNorm layer (``elementwise_affine=affine``)."""
    for k, (dims, affine_size, eps) in enumerate(NCNN_LN_GROUPS[group]):
        shape = tuple(reversed(dims))  # (c, [d,] h, w)
        if _too_big(backend, shape):
            continue
        rng = np.random.default_rng(100 * k + affine)
        x = rng.uniform(-1.2, 1.2, shape).astype(np.float32)
        ndims, size = 0, 1
        while size < affine_size:
            ndims += 1
            size *= shape[-ndims]
        assert size == affine_size
        norm_shape = shape[-ndims:]
        gamma = rng.uniform(-1.2, 1.2, affine_size).astype(np.float32)
        beta = rng.uniform(-1.2, 1.2, affine_size).astype(np.float32)
        eps32 = float(np.float32(eps))
        rows = x.reshape(-1, affine_size).astype(np.float64)
        mean = rows.sum(axis=1, keepdims=True) / affine_size
        var = ((rows - mean) ** 2).sum(axis=1, keepdims=True) / affine_size
        a = 1.0 / np.sqrt(var + eps32)
        want = rows * a + (-mean * a)
        if affine:
            want = want * gamma + beta
        want = want.reshape(shape)
        w = vec(backend, gamma.reshape(norm_shape)) if affine else None
        b = vec(backend, beta.reshape(norm_shape)) if affine else None
        y = F.layer_norm(backend.asarray(x), norm_shape, w, b, eps32, backend=backend)
        _close(backend.to_numpy(y), want, np.float32)
        layer = normdrop.LayerNorm(norm_shape, eps32, elementwise_affine=bool(affine),
                                   backend=backend.name)  # fmt: skip
        if affine:
            layer.weight, layer.bias = w, b
        _close(backend.to_numpy(layer(backend.asarray(x))), want, np.float32)


# tests/test_dropout.cpp: (RandomMat dims, scale).
NCNN_DROPOUT_CASES = [
    ((5, 6, 7, 24), 1.0), ((5, 6, 7, 24), 0.2), ((7, 8, 9, 12), 0.3), ((3, 4, 5, 13), 0.5),
    ((5, 7, 24), 1.0), ((5, 7, 24), 0.2), ((7, 9, 12), 1.0), ((7, 9, 12), 0.3),
    ((3, 5, 13), 1.0), ((3, 5, 13), 0.5),
    ((15, 24), 1.0), ((15, 24), 0.6), ((19, 12), 1.0), ((19, 12), 0.4), ((17, 15), 1.0),
    ((17, 15), 0.7),
    ((128,), 1.0), ((128,), 0.4), ((124,), 1.0), ((124,), 0.1), ((127,), 1.0), ((127,), 0.5),
]  # fmt: skip


@pytest.mark.parametrize("group", ["test_dropout_0", "test_dropout_1", "test_dropout_2"])
def test_ncnn_dropout(backend, group):
    """ncnn tests/test_dropout.cpp test_dropout_0 .. _2 (every case): ncnn's Dropout
    (src/layer/dropout.cpp) is the identity for ``scale == 1`` and otherwise multiplies by
    ``scale`` at inference, Caffe's non-inverted dropout with ``scale = 1 - dropout_ratio``.
    normdrop's inverted dropout with ``p = 1 - scale`` puts that factor into training instead:
    in evaluation it returns the input itself, so ncnn's output is ``scale`` times normdrop's;
    in training every kept value is ``x / scale`` (so ``scale`` times normdrop's training output
    is Caffe's ``x * mask``), dropped ones are 0, about a fraction ``1 - scale`` is dropped,
    and a Dropout layer does the same. ``scale = 1`` is ``p = 0``: the identity in training
    too."""
    groups = {
        "test_dropout_0": NCNN_DROPOUT_CASES[:10],
        "test_dropout_1": NCNN_DROPOUT_CASES[10:16],
        "test_dropout_2": NCNN_DROPOUT_CASES[16:],
    }
    for k, (dims, scale) in enumerate(groups[group]):
        shape = tuple(reversed(dims))
        if _too_big(backend, shape):
            continue
        x = np.random.default_rng(k).uniform(-1.2, 1.2, shape).astype(np.float32)
        xb = backend.asarray(x)
        p = 1.0 - scale
        y = F.dropout(xb, p, training=False, backend=backend)
        assert y is xb
        np.testing.assert_allclose(backend.to_numpy(y) * np.float32(scale), x * np.float32(scale))
        y = backend.to_numpy(F.dropout(xb, p, training=True, seed=k, backend=backend))
        if scale == 1.0:
            np.testing.assert_array_equal(y, x)
            continue
        kept = backend.to_numpy(F.dropout_mask(shape, p, seed=k, backend=backend))
        np.testing.assert_array_equal(y[~kept], 0)
        _close(y[kept], x[kept].astype(np.float64) / np.float32(scale), np.float32)
        _close((y * np.float32(scale))[kept], x[kept], np.float32)
        assert abs((~kept).mean() - p) < 4 * math.sqrt(p * (1 - p) / x.size) + 1e-3
        layer = normdrop.Dropout(p, seed=k, backend=backend.name)
        np.testing.assert_array_equal(backend.to_numpy(layer(xb)), y)
        assert layer.eval()(xb) is xb
