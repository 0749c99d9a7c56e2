"""Deep-learning compilers' and graph libraries' tests of batch norm, layer norm and dropout,
ported to normdrop.

Each test names its source:

- llvm/torch-mlir (commit 0029fc2e) ``projects/pt1/python/torch_mlir_e2e_test/test_suite/``
  ``norm_like.py`` (BatchNorm1DModule, BatchNorm1DWith2DInputModule, BatchNorm2DModule,
  BatchNorm3DModule, BatchNorm1DStaticShapeModule, BatchNormInferenceF16Module,
  NativeBatchNorm{1D,2D,3D}Module, NativeBatchNormNoneWeightModule,
  NativeBatchNorm{1D,2D}TrainingModule, NativeLayerNormModule, NativeLayerNormModule4D,
  LayerNormModule, LayerNormNoBiasModule, LayerNormLastDimModule,
  LayerNormNormalizeOverAllDimsModule, AtenInstanceNormModule) and ``basic.py``
  (DropoutEvalFloatModule, DropoutTrainModule, NativeDropoutEvalFloatModule,
  NativeDropoutTrainModule). Their inputs come from ``TestUtils.rand`` of
  ``torch_mlir_e2e_test/framework.py`` (``torch.manual_seed(0)``, then uniform [0, 1) draws
  in argument order), which :func:`_tu_rand` repeats draw for draw.
- apache/tvm: the Relay tests removed in ccaa534b (read at its parent 21095b98):
  ``tests/python/relay/test_py_converter.py`` (test_batch_norm),
  ``test_pass_simplify_inference.py`` (test_simplify_batchnorm) and ``test_op_level1.py``
  (test_dropout, test_batch_norm_fold_const); and the PyTorch frontend tests removed in
  c2fe97f8 (read at d93f4ad4): ``tests/python/frontend/pytorch/test_forward.py``
  (test_forward_batchnorm, test_forward_layernorm, test_forward_dropout).
  tests/test_ported_runtimes.py already ports TVM's TOPI tests.
- openvinotoolkit/openvino ``tests/layer_tests/pytorch_tests/test_batch_norm.py`` (commit
  1456d71e) and ``test_layer_norm.py`` (commit 025e7912): its PyTorch frontend's layer tests.
  tests/test_ported_runtimes.py already ports OpenVINO's op_reference tests.
- pytorch/TensorRT ``tests/py/dynamo/conversion/test_batch_norm_aten.py`` (commit 0a46984d),
  ``test_layer_norm_aten.py`` (commit 0b62f8fb) and ``test_dropout_aten.py`` (commit
  d6dbdd43).
- hidet-org/hidet ``tests/operators/test_norm.py`` (commit 05ea4061: test_batch_norm_2d,
  test_instance_norm, with ``check_ternary`` of ``python/hidet/testing/utils.py``) and
  ``tests/frontends/torch/test_torch_norm.py`` (commit 65df4baf: test_layer_norm,
  test_group_norm).
- pyg-team/pytorch_geometric (commit 02d3d2a5) ``test/nn/norm/test_batch_norm.py``
  (test_batch_norm, test_batch_norm_single_element, test_hetero_batch_norm) and
  ``test_layer_norm.py`` (test_layer_norm, node mode).

Most of these projects check their compiled kernels against PyTorch or a NumPy formula on
random data. The ports keep their shapes, parameters, data distributions and tolerances,
and compare normdrop with PyTorch 2.13 and with the formula written out here in float64;
the data come from seeded generators (torch-mlir's own seed where the project has one).
Translations, said again in each test: channels-first inputs of rank 3 and more go in as
``(N, C, L)``, their trailing axes flattened (BatchNorm2d/3d are BatchNorm1d on that view);
TVM's channel axis 0 is moved to axis 1; instance norm is layer norm over the spatial axes
(without affine) or, for one sample, a training batch norm (with per-channel affine); group
norm with its default affine is layer norm over ``(N, G, -1)``; PyG's ``BatchNorm`` and
node-mode ``LayerNorm`` are PyTorch's modules. Dropout masks come from Philox
(docs/differences.md), so for dropout in training only properties are checked (the mean,
standard deviation and drop rate, within a stated number of standard errors); in evaluation
the input itself comes back. normdrop accepts ``p = 1`` outside training (docs/
differences.md, "Unused arguments are checked as PyTorch checks them"), as TensorRT's
test needs.

Not ported: the group-norm, RMS-norm, renorm and weight-norm tests of torch-mlir and
TensorRT (no normdrop op), torch-mlir's NativeGroupNormBackwardModule, TVM's Relax tests
of batch norm and layer norm (structural comparisons of the lowered IR; the training
decomposition in ``tests/python/relax/test_transform_decompose_ops.py`` updates the moving
variance with the biased variance, as TVM's TOPI reference that tests/test_ported_runtimes.py
translates), OpenVINO's ``test_normalization.py`` python graph tests (shapes and types of
graph nodes only), timm's ``tests/test_layers.py`` (no batch-norm, layer-norm or dropout
test; its DropBlock/DropPath tests are other ops), PyG's graph-mode LayerNorm (eps outside
the square root, over all nodes of a graph) and its HeteroLayerNorm (per-type affine).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import host, skip_on_slow_backend, tol, vec
from conftest import torch_numpy as _np
from conftest import torch_tensor as _t

import normdrop
from normdrop import functional as F
from normdrop.errors import ShapeError

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def _bn64(x, mean, var, weight=None, bias=None, eps=1e-5):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over axis 1, in float64."""
    shape = (1, -1) + (1,) * (np.ndim(x) - 2)
    y = (np.asarray(x, np.float64) - np.reshape(np.asarray(mean, np.float64), shape)) / np.sqrt(
        np.reshape(np.asarray(var, np.float64), shape) + eps
    )
    if weight is not None:
        y = y * np.reshape(np.asarray(weight, np.float64), shape)
    if bias is not None:
        y = y + np.reshape(np.asarray(bias, np.float64), shape)
    return y


def _ln64(x, ndims, weight=None, bias=None, eps=1e-5):
    """Layer norm over the last ``ndims`` axes (biased variance), in float64; also the mean
    and ``rstd`` per sample."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - ndims, x.ndim))
    mean = x.mean(axes, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(axes, keepdims=True) + eps)
    y = (x - mean) * rstd
    if weight is not None:
        y = y * np.asarray(weight, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y, mean.reshape(x.shape[: x.ndim - ndims]), rstd.reshape(x.shape[: x.ndim - ndims])


def _ncl(x):
    """A channels-first array of rank >= 2 as ``(N, C, L)`` (rank 2 stays ``(N, C)``)."""
    return x if x.ndim == 2 else x.reshape(x.shape[0], x.shape[1], -1)


#: The most elements of one call under the CUDA simulator, which runs every GPU thread in
#: Python (conftest.SLOW_BACKENDS): larger cases run on the CPU backends only.
SIM_LIMIT = 1000


def _limit_on_slow_backend(backend, *shapes):
    """Skip on the CUDA simulator where the largest of ``shapes`` exceeds :data:`SIM_LIMIT`."""
    n = max(int(np.prod(s)) for s in shapes)
    if n > SIM_LIMIT:
        skip_on_slow_backend(backend, f"{n} elements per call under the CUDA simulator")


def _tu_rand(*shapes):
    """torch-mlir's test inputs: ``TestUtils()`` seeds ``torch.manual_seed(0)`` and each
    ``tu.rand(*shape)`` is ``torch.empty(shape).uniform_(0.0, 1.0)``; drawn here from a
    generator seeded 0 (the same stream), as float32 NumPy arrays."""
    g = torch.Generator().manual_seed(0)
    return [torch.empty(s).uniform_(0.0, 1.0, generator=g).numpy() for s in shapes]


# ================================================================================ torch-mlir
# norm_like.py: BatchNorm{1D,2D,3D}Module hold these running statistics and parameters and run
# in eval mode; BatchNorm1DWith2DInputModule is the 1-D one on (10, 4).
MLIR_BN_MODULES = {
    "BatchNorm1DModule": ((10, 4, 3), [0.5, 0.4, 0.3, 0.6], [3.0, 2.0, 4.0, 5.0]),
    "BatchNorm1DWith2DInputModule": ((10, 4), [0.5, 0.4, 0.3, 0.6], [3.0, 2.0, 4.0, 5.0]),
    "BatchNorm2DModule": ((10, 2, 3, 3), [0.5, 0.4], [3.0, 2.0]),
    "BatchNorm3DModule": ((2, 5, 3, 6, 4), [0.5, 0.4, 0.3, 0.2, 0.4], [3.0, 2.0, 4.0, 2.0, 3.0]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(MLIR_BN_MODULES))
def test_torch_mlir_batch_norm_modules(backend, name, dtype):
    """torch-mlir BatchNorm1DModule_basic, BatchNorm1DWith2DInputModule_basic,
    BatchNorm2DModule_basic and BatchNorm3DModule_basic: a BatchNorm in eval mode with
    running_mean = bias and running_var = weight as hard-coded there, on ``tu.rand`` data.
    BatchNorm2d/3d are BatchNorm1d on the ``(N, C, H*W[*D])`` view. normdrop's layer
    (state loaded, eval) equals the float64 formula and the torch module of that rank; the
    running statistics do not move."""
    shape, mean_bias, var_weight = MLIR_BN_MODULES[name]
    (x,) = _tu_rand(shape)
    x = x.astype(dtype)
    c = shape[1]
    state = {"weight": var_weight, "bias": mean_bias, "running_mean": mean_bias,
             "running_var": var_weight}  # fmt: skip
    layer = normdrop.BatchNorm1d(c, dtype=dtype, backend=backend.name)
    layer.load_state_dict({k: np.array(v, dtype) for k, v in state.items()})
    layer.eval()
    y = backend.to_numpy(layer(backend.asarray(_ncl(x)))).reshape(shape)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, _bn64(x, mean_bias, var_weight, var_weight, mean_bias),
                               **tol(dtype))  # fmt: skip
    module = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
              5: torch.nn.BatchNorm3d}[len(shape)](c, dtype=_t(x).dtype)  # fmt: skip
    module.load_state_dict({k: torch.tensor(v, dtype=_t(x).dtype) for k, v in state.items()},
                           strict=False)  # fmt: skip
    with torch.no_grad():
        want = _np(module.eval()(_t(x)))
    np.testing.assert_allclose(y, want, **tol(dtype, "torch"))
    np.testing.assert_array_equal(host(backend, layer.running_mean), np.array(mean_bias, dtype))
    np.testing.assert_array_equal(host(backend, layer.running_var), np.array(var_weight, dtype))


# (x shape, whether a weight is given, eps, dtype): the inputs are tu.rand draws of
# x, [weight,] bias, running_mean, running_var in the modules' argument order.
MLIR_NATIVE_BN_INFERENCE = {
    "BatchNorm1DStaticShapeModule": ((2, 5), True, 1e-5, np.float32),
    "NativeBatchNorm1DModule": ((2, 5, 3), True, 1e-5, np.float32),
    "NativeBatchNorm2DModule": ((2, 5, 2, 3), True, 1e-5, np.float32),
    "NativeBatchNorm3DModule": ((2, 5, 2, 2, 3), True, 1e-5, np.float32),
    "NativeBatchNormNoneWeightModule": ((2, 5, 2, 2, 3), False, 1e-5, np.float32),
    "BatchNormInferenceF16Module": ((2, 2, 3), True, 0.5, np.float16),
}


@pytest.mark.parametrize("name", list(MLIR_NATIVE_BN_INFERENCE))
def test_torch_mlir_batch_norm_inference(backend, name):
    """torch-mlir BatchNorm1DStaticShapeModule_basic, NativeBatchNorm{1D,2D,3D}Module_basic,
    NativeBatchNormNoneWeightModule_basic and BatchNormInferenceF16Module_basic:
    ``aten.batch_norm`` / ``aten.native_batch_norm`` with ``training=False`` and every
    argument a ``tu.rand`` draw (so running variances in [0, 1)), eps 1e-5 (0.5 for the
    float16 module, whose data normdrop computes in float32 and rounds to float16).
    ``normdrop.functional.batch_norm`` on the ``(N, C, L)`` view equals the float64 formula
    and PyTorch's op, and leaves the running statistics as they were."""
    shape, with_weight, eps, dtype = MLIR_NATIVE_BN_INFERENCE[name]
    c = shape[1]
    draws = _tu_rand(shape, *[(c,)] * (4 if with_weight else 3))
    x, *vecs = (a.astype(dtype) for a in draws)
    weight = vecs.pop(0) if with_weight else None
    bias, mean, var = vecs
    rm, rv = vec(backend, mean), vec(backend, var)
    y = F.batch_norm(backend.asarray(_ncl(x)), rm, rv, vec(backend, weight), vec(backend, bias),
                     False, 0.1, eps, backend=backend)  # fmt: skip
    y = backend.to_numpy(y).reshape(shape)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, _bn64(x, mean, var, weight, bias, eps), **tol(dtype))
    t32 = [None if a is None else _t(a.astype(np.float32)) for a in (weight, bias, mean, var)]
    want = torch.ops.aten.native_batch_norm(_t(x.astype(np.float32)), *t32, False, 0.1, eps)[0]
    np.testing.assert_allclose(y, _np(want).astype(dtype), **tol(dtype, "torch"))
    np.testing.assert_array_equal(host(backend, rm), mean)
    np.testing.assert_array_equal(host(backend, rv), var)


@pytest.mark.parametrize("shape", [(2, 5, 3), (2, 5, 2, 3)], ids=["1D", "2D"])
def test_torch_mlir_native_batch_norm_training(backend, shape):
    """torch-mlir NativeBatchNorm1DTrainingModule_basic and NativeBatchNorm2DTrainingModule_basic:
    ``aten.native_batch_norm(x, weight, bias, None, None, training=True, 0.1, 1e-5)`` returns
    the output, the batch mean and the inverse standard deviation (biased variance).
    ``batch_norm_with_stats`` returns the same three (its ``rstd``), equal to the float64
    formula and to PyTorch's op."""
    c = shape[1]
    x, weight, bias = _tu_rand(shape, (c,), (c,))
    y, mean, rstd = F.batch_norm_with_stats(
        backend.asarray(_ncl(x)), None, None, vec(backend, weight), vec(backend, bias), True,
        0.1, 1e-5, backend=backend,
    )  # fmt: skip
    y = backend.to_numpy(y).reshape(shape)
    axes = (0, *range(2, len(shape)))
    x64 = x.astype(np.float64)
    want_mean, want_var = x64.mean(axes), x64.var(axes)
    np.testing.assert_allclose(y, _bn64(x, want_mean, want_var, weight, bias), **tol(np.float32))
    np.testing.assert_allclose(host(backend, mean), want_mean, **tol(np.float64))
    np.testing.assert_allclose(host(backend, rstd), 1 / np.sqrt(want_var + 1e-5), **tol(np.float64))
    t_y, t_mean, t_invstd = torch.ops.aten.native_batch_norm(
        _t(x), _t(weight), _t(bias), None, None, True, 0.1, 1e-5
    )
    np.testing.assert_allclose(y, _np(t_y), **tol(np.float32, "torch"))
    np.testing.assert_allclose(host(backend, mean), _np(t_mean), **tol(np.float32, "torch"))
    np.testing.assert_allclose(host(backend, rstd), _np(t_invstd), **tol(np.float32, "torch"))


@pytest.mark.parametrize("shape", [(2, 5, 2, 2, 3), (5, 2, 2, 3)], ids=["5D", "4D"])
def test_torch_mlir_native_layer_norm(backend, shape):
    """torch-mlir NativeLayerNormModule_basic (and NativeLayerNormDynamicModule_basic, the
    same call) and NativeLayerNormModule4D_basic: ``aten.native_layer_norm(x, [2, 2, 3],
    weight, bias, eps=0.5)`` on ``tu.rand`` data, weight and bias, which returns the output,
    the mean and the rstd per sample. ``layer_norm_with_stats`` returns the same three,
    equal to the float64 formula and to PyTorch's op (whose statistics keep size-1 axes)."""
    x, weight, bias = _tu_rand(shape, (2, 2, 3), (2, 2, 3))
    y, mean, rstd = F.layer_norm_with_stats(backend.asarray(x), (2, 2, 3), vec(backend, weight),
                                            vec(backend, bias), 0.5, backend=backend)  # fmt: skip
    y = backend.to_numpy(y)
    want, want_mean, want_rstd = _ln64(x, 3, weight, bias, 0.5)
    np.testing.assert_allclose(y, want, **tol(np.float32))
    np.testing.assert_allclose(host(backend, mean), want_mean, **tol(np.float64))
    np.testing.assert_allclose(host(backend, rstd), want_rstd, **tol(np.float64))
    t_y, t_mean, t_rstd = torch.ops.aten.native_layer_norm(_t(x), [2, 2, 3], _t(weight),
                                                           _t(bias), 0.5)  # fmt: skip
    np.testing.assert_allclose(y, _np(t_y), **tol(np.float32, "torch"))
    np.testing.assert_allclose(host(backend, mean), _np(t_mean).reshape(shape[:-3]),
                               **tol(np.float32, "torch"))  # fmt: skip
    np.testing.assert_allclose(host(backend, rstd), _np(t_rstd).reshape(shape[:-3]),
                               **tol(np.float32, "torch"))  # fmt: skip


MLIR_LN_WEIGHT = [[[3.0, 2.0, 4.0], [2.0, 3.0, 3.0]], [[3.0, 2.0, 4.0], [2.0, 3.0, 3.0]]]
MLIR_LN_BIAS = [[[0.5, 0.4, 0.3], [0.2, 0.4, 0.3]], [[0.5, 0.4, 0.3], [0.2, 0.4, 0.3]]]
# (x shape, normalized_shape, weight, bias or None for bias=False)
MLIR_LN_MODULES = {
    "LayerNormModule": ((2, 5, 2, 2, 3), (2, 2, 3), MLIR_LN_WEIGHT, MLIR_LN_BIAS),
    "LayerNormNoBiasModule": ((2, 5, 2, 2, 3), (2, 2, 3), MLIR_LN_WEIGHT, None),
    "LayerNormLastDimModule": ((2, 5, 2, 2, 3), (3,), [2.0, 3.0, 2.0], [0.2, 0.4, 0.3]),
    "LayerNormNormalizeOverAllDimsModule": ((2, 2, 3), (2, 2, 3), MLIR_LN_WEIGHT, MLIR_LN_BIAS),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(MLIR_LN_MODULES))
def test_torch_mlir_layer_norm_modules(backend, name, dtype):
    """torch-mlir LayerNormModule_basic, LayerNormNoBiasModule_basic,
    LayerNormLastDimModule_basic and LayerNormNormalizeOverAllDimsModule_basic: a
    ``torch.nn.LayerNorm`` (eval mode, ``bias=False`` for the NoBias one) with the
    hard-coded weight and bias, on ``tu.rand`` data; in the last one the normalized shape is
    the whole input (one sample without a batch axis). normdrop's LayerNorm with the same
    state equals the float64 formula and the torch module."""
    shape, normalized, weight, bias = MLIR_LN_MODULES[name]
    (x,) = _tu_rand(shape)
    x = x.astype(dtype)
    layer = normdrop.LayerNorm(normalized, bias=bias is not None, dtype=dtype,
                               backend=backend.name)  # fmt: skip
    state = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    layer.load_state_dict({k: np.array(v, dtype) for k, v in state.items()})
    layer.eval()
    y = backend.to_numpy(layer(backend.asarray(x)))
    np.testing.assert_allclose(y, _ln64(x, len(normalized), weight, bias)[0], **tol(dtype))
    module = torch.nn.LayerNorm(normalized, bias=bias is not None, dtype=_t(x).dtype)
    module.load_state_dict({k: torch.tensor(v, dtype=_t(x).dtype) for k, v in state.items()})
    with torch.no_grad():
        np.testing.assert_allclose(y, _np(module.eval()(_t(x))), **tol(dtype, "torch"))


def test_torch_mlir_instance_norm(backend):
    """torch-mlir AtenInstanceNormModule_basic: ``aten.instance_norm(x, w, b, None, None,
    use_input_stats=True, 0.0, 1e-5, False)`` on a (1, 2, 1, 3) ``tu.rand`` input. With one
    sample, instance norm is batch norm in training mode with per-channel weight and bias
    (statistics over N * H * W = H * W values per channel): ``normdrop.functional.batch_norm``
    on the (1, 2, 3) view equals the float64 formula and PyTorch's ``instance_norm``. Without
    affine it is also layer norm over the spatial axes."""
    x, w, b = _tu_rand((1, 2, 1, 3), (2,), (2,))
    y = F.batch_norm(backend.asarray(_ncl(x)), None, None, vec(backend, w), vec(backend, b),
                     True, 0.0, 1e-5, backend=backend)  # fmt: skip
    y = backend.to_numpy(y).reshape(x.shape)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, _bn64(x, x64.mean((0, 2, 3)), x64.var((0, 2, 3)), w, b),
                               **tol(np.float32))  # fmt: skip
    want = torch.ops.aten.instance_norm(_t(x), _t(w), _t(b), None, None, True, 0.0, 1e-5, False)
    np.testing.assert_allclose(y, _np(want), **tol(np.float32, "torch"))
    plain = backend.to_numpy(F.layer_norm(backend.asarray(x), (1, 3), backend=backend))
    np.testing.assert_allclose(plain, _np(TF.instance_norm(_t(x))), **tol(np.float32, "torch"))


def test_torch_mlir_dropout_eval(backend):
    """torch-mlir DropoutEvalFloatModule_basic and NativeDropoutEvalFloatModule_basic:
    ``torch.dropout(x, 0.1, train=False)`` (and ``native_dropout``'s output) on a (3, 4)
    ``tu.rand`` input is ``x``. normdrop returns the input object itself, from the function
    with ``training=False`` and from an eval-mode Dropout layer."""
    p = 0.1
    (x,) = _tu_rand((3, 4))
    xb = backend.asarray(x)
    assert F.dropout(xb, p, training=False, backend=backend) is xb
    assert normdrop.Dropout(p, seed=0, backend=backend.name).eval()(xb) is xb
    np.testing.assert_array_equal(_np(torch.dropout(_t(x), p, train=False)), x)
    np.testing.assert_array_equal(_np(torch.native_dropout(_t(x), p, train=False)[0]), x)


@pytest.mark.parametrize("native", [False, True], ids=["dropout", "native_dropout"])
def test_torch_mlir_dropout_train_statistics(backend, native):
    """torch-mlir DropoutTrainModule_basic / DropoutTrainStaticShapeModule_basic and
    NativeDropoutTrainModule_basic / NativeDropoutTrainStaticShapeModule_basic: dropout with
    p = 0.3 in training on a (1024, 1536) ``tu.rand`` input, checked through the mean and
    standard deviation of the output (and, for ``native_dropout``, of the float mask), which
    torch-mlir compares with PyTorch's with rtol 1e-3. PyTorch's numbers come from another
    generator, so the port compares with what they estimate, given ``x``: mean
    ``mean(x)``, second moment ``mean(x**2) / 0.7``, mask mean 0.7 and mask standard
    deviation ``sqrt(0.7 * 0.3)``, each within 5 standard errors of an independent keep
    decision per element (about 1e-3 relative here, torch-mlir's tolerance)."""
    _limit_on_slow_backend(backend, (1024, 1536))
    (x,) = _tu_rand((1024, 1536))
    n, q = x.size, 0.7
    if native:
        res = backend.to_numpy(
            F.dropout_with_bitmask(backend.asarray(x), 0.3, seed=2024, backend=backend)[0]
        )
        keep = host(backend, F.dropout_mask(x.shape, 0.3, seed=2024, backend=backend))
        np.testing.assert_array_equal(res != 0, keep)  # no x is exactly 0
    else:
        res = backend.to_numpy(F.dropout(backend.asarray(x), 0.3, seed=2024, backend=backend))
        keep = res != 0
    x64, r64 = x.astype(np.float64), res.astype(np.float64)
    np.testing.assert_allclose(r64[keep], x64[keep] / q, rtol=1e-6)
    # E[res] = mean(x); Var(mean(res)) = sum(x**2) (1 - q) / q / n**2.
    se_mean = np.sqrt((x64**2).sum() * (1 - q) / q) / n
    assert abs(r64.mean() - x64.mean()) < 5 * se_mean
    second = (x64**2).mean() / q
    se_second = np.sqrt((x64**4).sum() * (1 - q) / q**3) / n
    assert abs((r64**2).mean() - second) < 5 * se_second
    std = r64.std(ddof=1)
    assert abs(std - np.sqrt(second - x64.mean() ** 2)) < 5 * se_second / (2 * std) + 5 * se_mean
    se_rate = np.sqrt(q * (1 - q) / n)
    assert abs(keep.mean() - q) < 5 * se_rate
    if native:
        kept = keep.astype(np.float64)
        assert abs(kept.std(ddof=1) - np.sqrt(q * (1 - q))) < 5 * se_rate
        t_res, t_mask = torch.native_dropout(_t(x), 0.3, True)
        # the oracle's own sample obeys the same bounds
        assert abs(_np(t_mask).mean() - q) < 5 * se_rate
        assert abs(_np(t_res).astype(np.float64).mean() - x64.mean()) < 5 * se_mean


# ======================================================================================= TVM
@pytest.mark.parametrize("shape", [(10, 20), (20, 10), (10, 50), (30, 40)])
def test_tvm_relay_py_converter_batch_norm(backend, shape):
    """TVM tests/python/relay/test_py_converter.py test_batch_norm: ``relay.nn.batch_norm``
    (inference: moving statistics) of ``|N(0, 1)|`` float32 data, gamma, beta, moving mean
    and moving variance, eps 1e-5, against its reference ``(x - moving_mean) /
    sqrt(moving_var + eps) * gamma + beta`` with rtol = atol = 1e-5 (here the reference in
    float64, within normdrop's float32 tolerance, and PyTorch)."""
    rng = np.random.default_rng(300 + shape[1])
    c = shape[1]
    x, gamma, beta, mm, mv = (
        np.abs(rng.normal(size=s)).astype(np.float32) for s in (shape, (c,), (c,), (c,), (c,))
    )
    y = F.batch_norm(backend.asarray(x), vec(backend, mm), vec(backend, mv), vec(backend, gamma),
                     vec(backend, beta), eps=1e-5, backend=backend)  # fmt: skip
    y = backend.to_numpy(y)
    want = _bn64(x, mm, mv, gamma, beta, 1e-5)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, want, **tol(np.float32))
    tout = TF.batch_norm(_t(x), _t(mm), _t(mv), _t(gamma), _t(beta), False, 0.1, 1e-5)
    np.testing.assert_allclose(y, _np(tout), **tol(np.float32, "torch"))


@pytest.mark.parametrize(("dim", "axis", "nstep"), [(2, 1, 1), (4, 1, 1), (4, 0, 3)])
def test_tvm_relay_simplify_inference(backend, dim, axis, nstep):
    """TVM tests/python/relay/test_pass_simplify_inference.py test_simplify_batchnorm:
    ``nstep`` times ``y = dropout(batch_norm(y + 1))`` in inference (eps 0.01, channels on
    ``axis`` of a ``(10,) * dim`` input) is simplified to ``y = (y + 1) * scale + shift``
    with ``scale = gamma / sqrt(moving_var + eps)`` and ``shift = beta - moving_mean *
    scale``, dropout vanishing. TVM checks the rewritten graph's structure; the port runs
    the chain through normdrop (an eval-mode BatchNorm1d with the given state on the
    ``(N, C, L)`` view, channels moved from axis 0 to axis 1 where TVM has them on axis 0, and
    an eval-mode Dropout of TVM's default rate 0.5) and checks that the simplified formula,
    evaluated in float64, gives its numbers, as PyTorch's chain does."""
    _limit_on_slow_backend(backend, (10,) * dim)
    rng = np.random.default_rng(310 + dim + nstep)
    x = rng.normal(size=(10,) * dim).astype(np.float32)
    gamma, beta, mm = rng.normal(size=(3, 10)).astype(np.float32)
    mv = rng.uniform(0.5, 2.0, size=10).astype(np.float32)
    bn = normdrop.BatchNorm1d(10, eps=0.01, backend=backend.name)
    bn.load_state_dict({"weight": gamma, "bias": beta, "running_mean": mm, "running_var": mv})
    chain = normdrop.Sequential(bn, normdrop.Dropout(0.5, seed=1, backend=backend.name)).eval()
    xc = np.moveaxis(x, axis, 1)
    y = backend.asarray(_ncl(np.ascontiguousarray(xc)))
    for _ in range(nstep):
        y = chain(backend.asarray(backend.to_numpy(y) + np.float32(1)))
    y = np.moveaxis(backend.to_numpy(y).reshape(xc.shape), 1, axis)
    scale = gamma.astype(np.float64) / np.sqrt(mv.astype(np.float64) + 0.01)
    shift = beta - mm * scale
    bshape = [1] * dim
    bshape[axis] = 10
    want = x.astype(np.float64)
    for _ in range(nstep):
        want = (want + 1) * scale.reshape(bshape) + shift.reshape(bshape)
    np.testing.assert_allclose(y, want, **tol(np.float32, factor=nstep))
    ty = torch.from_numpy(np.ascontiguousarray(xc))
    for _ in range(nstep):
        ty = TF.dropout(TF.batch_norm(ty + 1, _t(mm), _t(mv), _t(gamma), _t(beta), False, 0.1,
                                      0.01), 0.5, training=False)  # fmt: skip
    np.testing.assert_allclose(y, np.moveaxis(_np(ty), 1, axis), **tol(np.float32, "torch"))


def test_tvm_relay_batch_norm_fold_const(backend):
    """TVM tests/python/relay/test_op_level1.py test_batch_norm_fold_const: inference
    batch norm of a (4, 5, 6) uniform input with uniform gamma, beta and moving statistics,
    axis 1, eps 1e-5, evaluated two ways (folded as constants, and through the
    SimplifyInference path), must give the same output, moving mean and moving variance. The
    port's two ways are ``normdrop.functional.batch_norm`` and an eval-mode BatchNorm1d with
    the same state: equal outputs, equal to the float64 formula and PyTorch, and the moving
    statistics returned unchanged by both."""
    rng = np.random.default_rng(320)
    x = rng.random((4, 5, 6)).astype(np.float32)
    beta, gamma, mm, mv = rng.random((4, 5)).astype(np.float32)
    rm, rv = vec(backend, mm), vec(backend, mv)
    y1 = backend.to_numpy(F.batch_norm(backend.asarray(x), rm, rv, vec(backend, gamma),
                                       vec(backend, beta), backend=backend))  # fmt: skip
    layer = normdrop.BatchNorm1d(5, backend=backend.name)
    layer.load_state_dict({"weight": gamma, "bias": beta, "running_mean": mm, "running_var": mv})
    y2 = backend.to_numpy(layer.eval()(backend.asarray(x)))
    np.testing.assert_allclose(y1, y2, **tol(np.float32, "reference"))
    np.testing.assert_allclose(y1, _bn64(x, mm, mv, gamma, beta), **tol(np.float32))
    tout = TF.batch_norm(_t(x), _t(mm), _t(mv), _t(gamma), _t(beta), False, 0.1, 1e-5)
    np.testing.assert_allclose(y1, _np(tout), **tol(np.float32, "torch"))
    for got in (host(backend, rm), host(backend, layer.running_mean)):
        np.testing.assert_array_equal(got, mm)
    for got in (host(backend, rv), host(backend, layer.running_var)):
        np.testing.assert_array_equal(got, mv)


@pytest.mark.parametrize("ndim", [4, 5], ids=["BatchNorm2d", "BatchNorm3d"])
@pytest.mark.parametrize("variant", ["module", "functional_weight", "functional_weight_bias"])
def test_tvm_pytorch_frontend_batchnorm(backend, ndim, variant):
    """TVM tests/python/frontend/pytorch/test_forward.py test_forward_batchnorm: an eval-mode
    BatchNorm2d(16) / BatchNorm3d(16) on a (1, 16, 10, 10[, 10]) uniform input, weight
    ``N(0, 0.01)`` and bias ``N(0, 1)`` (``init_weight``), and the functional
    ``batch_norm`` with running statistics zeros / ones, given the weight only or weight and
    bias; TVM compares with PyTorch at rtol = atol = 1e-5. normdrop on the (1, 16, L) view
    (eval mode; one sample is fine with running statistics) does the same, and equals the
    float64 formula."""
    shape = (1, 16, 10, 10, 10)[:ndim]
    _limit_on_slow_backend(backend, shape)
    rng = np.random.default_rng(330 + ndim)
    x = rng.random(shape).astype(np.float32)
    weight = rng.normal(0, 0.01, 16).astype(np.float32)
    bias = rng.normal(0, 1, 16).astype(np.float32)
    b = None if variant == "functional_weight" else bias
    zeros, ones = np.zeros(16, np.float32), np.ones(16, np.float32)
    if variant == "module":
        layer = normdrop.BatchNorm1d(16, backend=backend.name)
        layer.load_state_dict({"weight": weight, "bias": bias}, strict=False)
        y = layer.eval()(backend.asarray(_ncl(x)))
    else:
        y = F.batch_norm(backend.asarray(_ncl(x)), vec(backend, zeros), vec(backend, ones),
                         vec(backend, weight), vec(backend, b), backend=backend)  # fmt: skip
    y = backend.to_numpy(y).reshape(shape)
    np.testing.assert_allclose(y, _bn64(x, zeros, ones, weight, b), **tol(np.float32))
    want = TF.batch_norm(_t(x), _t(zeros), _t(ones), _t(weight), None if b is None else _t(b))
    np.testing.assert_allclose(y, _np(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 16, 10, 10), (1, 16, 10, 10, 10)], ids=["4d", "5d"])
def test_tvm_pytorch_frontend_layernorm(backend, shape):
    """TVM tests/python/frontend/pytorch/test_forward.py test_forward_layernorm: an eval-mode
    ``LayerNorm(10)`` with weight ``N(0, 0.01)`` and bias ``N(0.02, 1)`` on (1, 16, 10, 10)
    and (1, 16, 10, 10, 10) uniform inputs, compared with PyTorch at rtol = atol = 1e-5.
    normdrop's LayerNorm with that state equals PyTorch and the float64 formula."""
    _limit_on_slow_backend(backend, shape)
    rng = np.random.default_rng(340 + len(shape))
    x = rng.random(shape).astype(np.float32)
    weight = rng.normal(0, 0.01, 10).astype(np.float32)
    bias = rng.normal(0.02, 1, 10).astype(np.float32)
    layer = normdrop.LayerNorm(10, backend=backend.name)
    layer.load_state_dict({"weight": weight, "bias": bias})
    y = backend.to_numpy(layer.eval()(backend.asarray(x)))
    np.testing.assert_allclose(y, _ln64(x, 1, weight, bias)[0], **tol(np.float32))
    want = TF.layer_norm(_t(x), (10,), _t(weight), _t(bias))
    np.testing.assert_allclose(y, _np(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "rate"), [((4, 5, 6), 0.5), ((10, 10), 0.5)], ids=["relay_op", "pytorch_frontend"]
)
def test_tvm_dropout_inference(backend, shape, rate):
    """TVM tests/python/relay/test_op_level1.py test_dropout (``relay.nn.dropout(x,
    rate=0.5)`` of a (4, 5, 6) uniform constant evaluates to ``x``: Relay's dropout is the
    identity at inference) and tests/python/frontend/pytorch/test_forward.py
    test_forward_dropout (``torch.nn.Dropout(p=0.5).eval()`` on a (10, 10) slice of a uniform
    input, compared with PyTorch). normdrop returns the input itself from an eval-mode
    Dropout and from ``dropout(training=False)``, as PyTorch's eval module returns it."""
    x = np.random.default_rng(350).random(shape).astype(np.float32)
    xb = backend.asarray(x)
    assert normdrop.Dropout(rate, seed=3, backend=backend.name).eval()(xb) is xb
    assert F.dropout(xb, rate, training=False, backend=backend) is xb
    tx = _t(x)
    assert torch.nn.Dropout(rate).eval()(tx) is tx


# ================================================================================== OpenVINO
@pytest.mark.parametrize("ndim", [3, 4, 5])
@pytest.mark.parametrize(
    ("train", "running_stats"), [(True, False), (True, True), (False, False)],
    ids=["train", "train_running_stats", "inference"],
)  # fmt: skip
@pytest.mark.parametrize("eps", [1.0, 0.00005, 0.5, 0.042])
def test_openvino_pytorch_batch_norm(backend, eps, train, running_stats, ndim):
    """OpenVINO tests/layer_tests/pytorch_tests/test_batch_norm.py TestBatchNorm
    test_batch_norm: ``F.batch_norm`` of a ``randn`` input of shape ``[20, 6, 10, 10, 10][:ndim]``
    with ``randn`` weight and bias (each present or None), eps 1.0, 5e-5, 0.5 or 0.042,
    in inference with ``randn`` running statistics, or in training with or without them.
    ``randn`` running variances are negative for some channels: there ``var + eps`` may be
    negative and the inference output NaN, in PyTorch as in normdrop. Inputs of rank 4 and 5
    go in as ``(N, C, L)`` views. normdrop equals PyTorch (NaN where PyTorch has NaN), and
    the running statistics it updates in training equal PyTorch's (unbiased variance)."""
    shape = (20, 6, 10, 10, 10)[:ndim]
    _limit_on_slow_backend(backend, shape)
    g = torch.Generator().manual_seed(int(ndim * 1000 + eps * 100) + 10 * train + running_stats)
    x = torch.randn(shape, generator=g)
    params = torch.randn(4, 6, generator=g).numpy()
    for weights in (True, False):
        for bias in (True, False):
            w = params[0] if weights else None
            b = params[1] if bias else None
            mean = params[2].copy() if (running_stats or not train) else None
            var = params[3].copy() if (running_stats or not train) else None
            rm, rv = vec(backend, mean), vec(backend, var)
            with np.errstate(invalid="ignore", divide="ignore"):
                y = F.batch_norm(backend.asarray(_ncl(_np(x))), rm, rv, vec(backend, w),
                                 vec(backend, b), train, eps=eps, backend=backend)  # fmt: skip
            y = backend.to_numpy(y).reshape(shape)
            tm, tv = (None if a is None else _t(a.copy()) for a in (mean, var))
            want = _np(TF.batch_norm(x, tm, tv, None if w is None else _t(w),
                                     None if b is None else _t(b), train, eps=eps))  # fmt: skip
            np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
            if not train:  # NaN exactly in the channels whose var + eps is negative
                bad = (params[3] + np.float32(eps)) < 0
                assert np.isnan(y).any(axis=tuple(set(range(ndim)) - {1})).tolist() == bad.tolist()
            np.testing.assert_allclose(y, want, **tol(np.float32, "torch"))
            if running_stats:
                np.testing.assert_allclose(host(backend, rm), _np(tm), **tol(np.float32, "torch"))
                np.testing.assert_allclose(host(backend, rv), _np(tv), **tol(np.float32, "torch"))


@pytest.mark.parametrize("eps", [1e-5, 0.005])
@pytest.mark.parametrize("normalized_shape", [(10,), (10, 10), (5, 10, 10)])
def test_openvino_pytorch_layer_norm(backend, normalized_shape, eps):
    """OpenVINO tests/layer_tests/pytorch_tests/test_layer_norm.py TestLayerNorm
    test_layer_norm: ``F.layer_norm`` of a (20, 5, 10, 10) ``randn`` input over
    normalized_shape [10], [10, 10] or [5, 10, 10], eps 1e-5 or 0.005, with the weight None,
    ones or ``randn`` and the bias None, zeros or ``randn`` (all nine pairs, a bias without
    a weight among them). normdrop equals PyTorch and the float64 formula."""
    _limit_on_slow_backend(backend, (20, 5, 10, 10))
    g = torch.Generator().manual_seed(400 + len(normalized_shape) + int(eps * 1000))
    x = torch.randn((20, 5, 10, 10), generator=g)
    rand_w = torch.randn(normalized_shape, generator=g)
    rand_b = torch.randn(normalized_shape, generator=g)
    weights = {None: None, "ones": torch.ones(normalized_shape), "random": rand_w}
    biases = {None: None, "zeros": torch.zeros(normalized_shape), "random": rand_b}
    xb = backend.asarray(_np(x))
    for w in weights.values():
        for b in biases.values():
            wn, bn = (None if a is None else _np(a) for a in (w, b))
            y = F.layer_norm(xb, normalized_shape, vec(backend, wn), vec(backend, bn), eps,
                             backend=backend)  # fmt: skip
            y = backend.to_numpy(y)
            want = TF.layer_norm(x, normalized_shape, w, b, eps)
            np.testing.assert_allclose(y, _np(want), **tol(np.float32, "torch"))
            np.testing.assert_allclose(y, _ln64(_np(x), len(normalized_shape), wn, bn, eps)[0],
                                       **tol(np.float32))  # fmt: skip


# ============================================================================ Torch-TensorRT
# (name, input shapes, weight, bias, running_mean, running_var) of test_batch_norm_aten.py;
# None for an absent weight. "w3" is torch.full((3,), 3).
TRT_BN_CASES = {
    "test_batchnorm_static_weights": ([(1, 3, 224, 224)], "w3", "zeros", "zeros", "w3"),
    "test_batchnorm_static_bias_only": ([(1, 3, 224, 224)], None, "zeros", "zeros", "ones"),
    "test_batchnorm1d_with_dynamic_shape": ([(2, 3, 5), (6, 3, 5), (10, 3, 5)], "ones", "zeros",
                                            "zeros", "ones"),
    "test_batchnorm2d_with_dynamic_shape": ([(1, 3, 1, 1), (1, 3, 5, 5), (2, 3, 10, 10)],
                                            "ones", "zeros", "zeros", "ones"),
    "test_native_batchnorm_legit_no_training_with_trt_tensor": ([(1, 3, 224, 224)], "ones",
                                                                "zeros", "zeros", "ones"),
}  # fmt: skip
TRT_VECS = {"w3": np.full(3, 3, np.float32), "zeros": np.zeros(3, np.float32),
            "ones": np.ones(3, np.float32), None: None}  # fmt: skip


@pytest.mark.parametrize("name", list(TRT_BN_CASES))
def test_torch_tensorrt_batch_norm(backend, name):
    """Torch-TensorRT tests/py/dynamo/conversion/test_batch_norm_aten.py
    (TestBatchNormConverter, TestNativeBatchNormConverter): ``aten.batch_norm`` /
    ``native_batch_norm`` / ``_native_batch_norm_legit_no_training`` in inference (eps 1e-5)
    with the constant statistics of each test (weight 3 and variance 3; no weight, bias 0;
    the identity statistics) on ``randn`` inputs, the dynamic-shape tests at their min, opt
    and max shapes (one value per channel at (1, 3, 1, 1): fine in inference). The
    native_batch_norm twins of these tests use the same statistics and are covered by the
    last case. normdrop on the ``(N, C, L)`` view equals PyTorch and the float64 formula."""
    shapes, w, b, m, v = TRT_BN_CASES[name]
    _limit_on_slow_backend(backend, *shapes)
    g = torch.Generator().manual_seed(500 + len(name))
    weight, bias, mean, var = (TRT_VECS[k] for k in (w, b, m, v))
    for shape in shapes:
        x = torch.randn(shape, generator=g)
        y = F.batch_norm(backend.asarray(_ncl(_np(x))), vec(backend, mean), vec(backend, var),
                         vec(backend, weight), vec(backend, bias), backend=backend)  # fmt: skip
        y = backend.to_numpy(y).reshape(shape)
        tw = None if weight is None else _t(weight)
        want = torch.ops.aten.batch_norm(x, tw, _t(bias), _t(mean), _t(var), False, 0.1, 1e-5,
                                         True)  # fmt: skip
        np.testing.assert_allclose(y, _np(want), **tol(np.float32, "torch"))
        np.testing.assert_allclose(y, _bn64(_np(x), mean, var, weight, bias), **tol(np.float32))


TRT_LN_CASES = [
    ((5, 3, 2, 4), (4,), "randn"),
    ((5, 3, 2, 4), (2, 4), "randn"),
    ((5, 3, 2, 4), (3, 2, 4), "randn"),
    ((5, 3, 2, 4), (5, 3, 2, 4), "randn"),
    ((5, 3, 2, 4), (2, 4), None),
    ((1, 2, 3), (3,), "identity"),
    ((3, 3, 3), (3,), "identity"),
    ((4, 5, 3), (3,), "identity"),
    ((1, 3, 224, 224), (3, 224, 224), "identity"),
]


@pytest.mark.parametrize(("shape", "normalized_shape", "params"), TRT_LN_CASES)
def test_torch_tensorrt_layer_norm(backend, shape, normalized_shape, params):
    """Torch-TensorRT tests/py/dynamo/conversion/test_layer_norm_aten.py: test_layer_norm of
    TestLayerNormConverter and TestNativeLayerNormConverter (a (5, 3, 2, 4) ``randn`` input
    over its last 1 to 4 axes, ``randn`` weight and bias, eps 1e-5),
    test_layer_norm_without_Scaling (no weight or bias) and the dynamic-shape tests at their
    min, opt and max shapes (normalized [3] on (1, 2, 3) to (4, 5, 3); [3, 224, 224] with
    ones and zeros on the min shape (1, 3, 224, 224)). normdrop equals PyTorch's
    ``native_layer_norm`` and the float64 formula."""
    _limit_on_slow_backend(backend, shape)
    g = torch.Generator().manual_seed(600 + sum(shape) + len(normalized_shape))
    if params == "randn":
        w, b = (
            torch.randn(normalized_shape, generator=g),
            torch.randn(normalized_shape, generator=g),
        )
    elif params == "identity":
        w, b = torch.ones(normalized_shape), torch.zeros(normalized_shape)
    else:
        w = b = None
    x = torch.randn(shape, generator=g)
    wn, bn = (None if a is None else _np(a) for a in (w, b))
    y = F.layer_norm(backend.asarray(_np(x)), normalized_shape, vec(backend, wn), vec(backend, bn),
                     1e-5, backend=backend)  # fmt: skip
    y = backend.to_numpy(y)
    want = torch.ops.aten.native_layer_norm(x, list(normalized_shape), w, b, 1e-5)[0]
    np.testing.assert_allclose(y, _np(want), **tol(np.float32, "torch"))
    np.testing.assert_allclose(y, _ln64(_np(x), len(normalized_shape), wn, bn)[0],
                               **tol(np.float32))  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "p"), [((10,), 0.0), ((1, 3), 0.3), ((2, 2, 2), 0.5), ((2, 2, 2, 2), 1.0)]
)
def test_torch_tensorrt_native_dropout_eval(backend, shape, p):
    """Torch-TensorRT tests/py/dynamo/conversion/test_dropout_aten.py test_native_dropout
    and test_native_dropout_pytorch: ``aten.native_dropout(x, p, train=False)`` of a
    ``randn`` input returns ``x`` (and an all-true mask) for p = 0, 0.3, 0.5 and 1.
    normdrop's ``dropout(training=False)`` returns the input object itself, p = 1 included
    (accepted outside training, docs/differences.md). A Dropout layer refuses p = 1 at
    construction (normdrop's documented departure), so the layer is checked for p < 1."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(700 + len(shape))).numpy()
    xb = backend.asarray(x)
    assert F.dropout(xb, p, training=False, backend=backend) is xb
    if p < 1:
        assert normdrop.Dropout(p, seed=5, backend=backend.name).eval()(xb) is xb
    out, mask = torch.native_dropout(_t(x), p, False)
    np.testing.assert_array_equal(backend.to_numpy(xb), _np(out))
    assert bool(mask.all())


# ===================================================================================== hidet
HIDET_BN_SHAPES = [(1, 1, 1, 1), (1, 200, 20, 20), (1, 10, 1, 1), (1, 128, 32, 32), (1, 32, 24, 24)]


@pytest.mark.parametrize(
    "shape", HIDET_BN_SHAPES, ids=["x".join(map(str, s)) for s in HIDET_BN_SHAPES]
)
def test_hidet_batch_norm_infer(backend, shape):
    """hidet tests/operators/test_norm.py test_batch_norm_2d: ``ops.batch_norm_infer(x,
    running_mean, running_var, 1e-5, axis=1)`` (no weight or bias) with ``check_ternary``'s
    data (``randn`` input and mean, ``|randn|`` variance) against its numpy reference
    ``(x - mean) * reciprocal(sqrt(var + eps))`` at atol = rtol = 1e-5. normdrop's inference
    batch norm on the ``(N, C, H*W)`` view equals that reference (float64 here) and
    PyTorch."""
    _limit_on_slow_backend(backend, shape)
    rng = np.random.default_rng(800 + shape[1])
    x = rng.standard_normal(shape).astype(np.float32)
    mean = rng.standard_normal(shape[1]).astype(np.float32)
    var = np.abs(rng.standard_normal(shape[1])).astype(np.float32)
    y = F.batch_norm(backend.asarray(_ncl(x)), vec(backend, mean), vec(backend, var), eps=1e-5,
                     backend=backend)  # fmt: skip
    y = backend.to_numpy(y).reshape(shape)
    want = (x.astype(np.float64) - mean.reshape(1, -1, 1, 1)) * np.reciprocal(
        np.sqrt(var.astype(np.float64).reshape(1, -1, 1, 1) + 1e-5)
    )
    np.testing.assert_allclose(y, want, atol=1e-5, rtol=1e-5)
    tout = TF.batch_norm(_t(x), _t(mean), _t(var), training=False, eps=1e-5)
    np.testing.assert_allclose(y, _np(tout), **tol(np.float32, "torch"))


HIDET_IN_SHAPES = [(1, 1, 1, 1), (1, 2, 1, 1), (1, 32, 48), (1, 20, 20, 20), (1, 20, 20, 5, 5),
                   (1, 32, 26214), (10, 3, 3, 3, 4)]  # fmt: skip


@pytest.mark.parametrize(
    "shape", HIDET_IN_SHAPES, ids=["x".join(map(str, s)) for s in HIDET_IN_SHAPES]
)
def test_hidet_instance_norm(backend, shape):
    """hidet tests/operators/test_norm.py test_instance_norm (both: against its numpy
    reference, mean and biased variance over the spatial axes, eps 1e-5, atol = rtol = 1e-4,
    and against ``F.instance_norm`` on (10, 3, 3, 3, 4)) with ``randn`` data. Instance norm
    without affine is layer norm over the spatial axes: ``normdrop.functional.layer_norm``
    with ``normalized_shape = shape[2:]`` equals the reference (float64 here) and PyTorch's
    ``instance_norm``. Spatial size 1 gives 0 (``(x - x) / sqrt(0 + eps)``) in hidet's
    reference and in normdrop; PyTorch's ``instance_norm`` refuses it ("Expected more than 1
    spatial element when training"), which the port checks instead of comparing."""
    _limit_on_slow_backend(backend, shape)
    x = np.random.default_rng(810 + len(shape)).standard_normal(shape).astype(np.float32)
    y = backend.to_numpy(F.layer_norm(backend.asarray(x), shape[2:], backend=backend))
    want = _ln64(x, len(shape) - 2)[0]
    np.testing.assert_allclose(y, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(y, want, **tol(np.float32))
    if np.prod(shape[2:]) == 1:
        assert not y.any()
        # PyTorch refuses one spatial element with batch statistics
        with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
            TF.instance_norm(_t(x))
    else:
        np.testing.assert_allclose(y, _np(TF.instance_norm(_t(x))), **tol(np.float32, "torch"))


@pytest.mark.parametrize("num_groups", [None, 1, 2, 4], ids=["layer_norm", "G1", "G2", "G4"])
def test_hidet_torch_frontend_norms(backend, num_groups):
    """hidet tests/frontends/torch/test_torch_norm.py test_layer_norm (``LayerNorm(2)`` on a
    (2, 2) ``randn`` input) and test_group_norm (``GroupNorm(G, 4)`` on (1, 4, 32, 32),
    G = 1, 2, 4; default affine: ones and zeros), compiled by hidet and compared with
    PyTorch. Group norm with an identity affine is layer norm over each group:
    ``layer_norm`` of the ``(N, G, C // G * H * W)`` view. normdrop equals PyTorch and the
    float64 formula; a row of two values ``a, b`` normalises to ``+-d / sqrt(d**2 + eps)``,
    ``d = |a - b| / 2``."""
    g = torch.Generator().manual_seed(820 + (num_groups or 0))
    if num_groups is None:
        x = torch.randn((2, 2), generator=g)
        layer = normdrop.LayerNorm(2, backend=backend.name)
        y = backend.to_numpy(layer(backend.asarray(_np(x))))
        want = _np(torch.nn.LayerNorm(2)(x).detach())
        # two values a, b: y = +-d / sqrt(d**2 + eps) with d = |a - b| / 2
        d = np.abs(np.diff(_np(x).astype(np.float64), axis=1)) / 2
        np.testing.assert_allclose(np.abs(y), np.repeat(d / np.sqrt(d**2 + 1e-5), 2, axis=1),
                                   **tol(np.float32))  # fmt: skip
        np.testing.assert_allclose(y, _ln64(_np(x), 1)[0], **tol(np.float32))
    else:
        _limit_on_slow_backend(backend, (1, 4, 32, 32))
        x = torch.randn((1, 4, 32, 32), generator=g)
        xv = _np(x).reshape(1, num_groups, -1)
        y = backend.to_numpy(F.layer_norm(backend.asarray(xv), xv.shape[-1], backend=backend))
        y = y.reshape(x.shape)
        want = _np(torch.nn.GroupNorm(num_groups, 4)(x).detach())
        np.testing.assert_allclose(y.reshape(xv.shape), _ln64(xv, 1)[0], **tol(np.float32))
    np.testing.assert_allclose(y, want, **tol(np.float32, "torch"))


# ======================================================================================= PyG
@pytest.mark.parametrize("conf", [True, False])
def test_pyg_batch_norm(backend, conf):
    """PyG test/nn/norm/test_batch_norm.py test_batch_norm: ``BatchNorm(16, affine=conf,
    track_running_stats=conf)`` (a wrapper of ``torch.nn.BatchNorm1d``) on (100, 16)
    ``randn`` node features keeps the shape. normdrop's BatchNorm1d with those options, in
    training, equals ``torch.nn.BatchNorm1d``: the output, and the running statistics where
    they are tracked; parameters and buffers are absent where PyTorch's are."""
    _limit_on_slow_backend(backend, (100, 16))
    x = torch.randn((100, 16), generator=torch.Generator().manual_seed(900 + conf))
    layer = normdrop.BatchNorm1d(16, affine=conf, track_running_stats=conf, backend=backend.name)
    module = torch.nn.BatchNorm1d(16, affine=conf, track_running_stats=conf)
    y = backend.to_numpy(layer(backend.asarray(_np(x))))
    assert y.shape == (100, 16)
    np.testing.assert_allclose(y, _np(module(x)), **tol(np.float32, "torch"))
    assert (layer.weight is None) == (module.weight is None)
    assert (layer.running_mean is None) == (module.running_mean is None)
    if conf:
        np.testing.assert_allclose(host(backend, layer.running_mean), _np(module.running_mean),
                                   **tol(np.float32, "torch"))  # fmt: skip
        np.testing.assert_allclose(host(backend, layer.running_var), _np(module.running_var),
                                   **tol(np.float32, "torch"))  # fmt: skip
        assert layer.num_batches_tracked == int(module.num_batches_tracked)


def test_pyg_batch_norm_single_element(backend):
    """PyG test/nn/norm/test_batch_norm.py test_batch_norm_single_element: a (1, 16) batch in
    training raises ``ValueError`` matching "Expected more than 1 value" (normdrop: its
    ShapeError, a ValueError, with PyTorch's message; nothing is updated). PyG's
    ``allow_single_element=True`` (which needs tracked statistics) then normalises with the
    running statistics, so the output equals ``x`` (``torch.allclose``): normdrop's layer in
    evaluation does the same with its fresh statistics (mean 0, variance 1)."""
    x = torch.randn((1, 16), generator=torch.Generator().manual_seed(910)).numpy()
    layer = normdrop.BatchNorm1d(16, backend=backend.name)
    with pytest.raises(ValueError, match="Expected more than 1 value") as info:
        layer(backend.asarray(x))
    assert isinstance(info.value, ShapeError)
    assert layer.num_batches_tracked == 0
    np.testing.assert_array_equal(host(backend, layer.running_mean), np.zeros(16))
    with pytest.raises(ValueError, match="Expected more than 1 value"):
        torch.nn.BatchNorm1d(16)(_t(x))
    y = backend.to_numpy(layer.eval()(backend.asarray(x)))
    assert torch.allclose(_t(y), _t(x))
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), **tol(np.float32))


@pytest.mark.parametrize("affine", [True, False])
def test_pyg_layer_norm_node_mode(backend, affine):
    """PyG test/nn/norm/test_layer_norm.py test_layer_norm, ``mode='node'`` (PyG's node mode
    is ``F.layer_norm`` over the 16 features of each node): on (100, 16) ``randn`` features,
    the output keeps the shape, and normalising two stacked copies of ``x`` (PyG: two graphs
    in one batch) gives the single-copy output for both halves (atol 1e-6). normdrop's
    LayerNorm (affine or not; a fresh affine is the identity) does the same, equal to
    PyTorch's."""
    _limit_on_slow_backend(backend, (200, 16))
    x = _np(torch.randn((100, 16), generator=torch.Generator().manual_seed(920 + affine)))
    layer = normdrop.LayerNorm(16, elementwise_affine=affine, backend=backend.name)
    out1 = backend.to_numpy(layer(backend.asarray(x)))
    assert out1.shape == (100, 16)
    out2 = backend.to_numpy(layer(backend.asarray(np.concatenate([x, x]))))
    np.testing.assert_allclose(out2[:100], out1, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out2[100:], out1, atol=1e-6, rtol=0)
    module = torch.nn.LayerNorm(16, elementwise_affine=affine)
    np.testing.assert_allclose(out1, _np(module(_t(x))), **tol(np.float32, "torch"))


def test_pyg_hetero_batch_norm(backend):
    """PyG test/nn/norm/test_batch_norm.py test_hetero_batch_norm (``conf=False``): with one
    node type, HeteroBatchNorm equals ``torch.nn.BatchNorm1d(16)`` in training on (100, 16)
    ``randn`` features (atol 1e-6); with five types, each type's nodes are normalised on
    their own, so the per-type means of the output are 0 (atol 1e-6). normdrop's training
    batch norm, on all nodes and on each type's nodes, does both."""
    _limit_on_slow_backend(backend, (100, 16))
    g = torch.Generator().manual_seed(930)
    x = torch.randn((100, 16), generator=g)
    types = torch.randint(5, (100,), generator=g).numpy()
    real = _np(torch.nn.BatchNorm1d(16)(x))
    y = backend.to_numpy(F.batch_norm(backend.asarray(_np(x)), training=True, backend=backend))
    np.testing.assert_allclose(y, real, atol=1e-6, rtol=0)
    out = np.empty_like(y)
    for t in range(5):
        rows = types == t
        assert rows.sum() > 1
        out[rows] = backend.to_numpy(
            F.batch_norm(backend.asarray(_np(x)[rows]), training=True, backend=backend)
        )
    for t in range(5):
        np.testing.assert_allclose(out[types == t].mean(0), 0.0, atol=1e-6)
