"""One conformance suite for the backend protocol: every kernel of every registered backend
against the ``numpy`` reference, over backend x dtype x shape (one test body per kernel, as
scikit-learn tests its array namespaces). Statistics and float64 results to ~1e-12, float32
results to a few float32 ulps, dropout outputs, masks and bitmasks bit for bit.

The shapes exercise every work-splitting layout of the in-memory backends (the ``numba``
backend's serial and parallel tasks, long and short rows, channel blocks) and the edges
(one value, no rows); backends in ``SLOW_BACKENDS`` (the CUDA simulator) get the small
shapes that exercise their launches (grid-stride tails, several channel tiles, multi-block
partial buffers, rows shorter and longer than a block). The optional capabilities of
``normdrop.capabilities.OPTIONAL_MEMBERS`` are tested on the backends that have them.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_BACKENDS, backend_params, tol

import normdrop
from normdrop._conformance.optional import reference_batch_norm_forward
from normdrop.capabilities import OPTIONAL_KEYWORDS, OPTIONAL_MEMBERS, takes_keyword
from normdrop.protocol import REQUIRED_MEMBERS, Backend
from normdrop.random import dropout_threshold
from normdrop.registry import PickledByName
from normdrop.testing import check_backend

REF = normdrop.get_backend("numpy")
DTYPES = [np.float64, np.float32]

#: (N, C, L): one value per channel row, (N, C) data (L = 1), few/many channels, rows
#: shorter/longer than the long-row threshold, super-rows with a partial tail, channel
#: blocks, L split into segments, several chunks, past the parallel threshold.
BN_SHAPES = [
    (2, 1, 1),
    (3, 2, 1),
    (7, 5, 3),
    (1000, 7, 1),
    (4, 64, 30),
    (5, 3, 63),
    (2, 3, 64),
    (3, 2, 100),
    (700, 4, 8),
    (70, 2000, 1),
    (3, 900, 20),
    (2, 5000, 2),
    (65, 3, 1),
    (4, 40, 1000),
    (1, 2, 70001),
    (40, 256, 16),
    (9000, 7, 1),
    (7, 13, 1),
    (9, 1, 5),
]
#: For the simulator: channel tiles over the grid cap, L > 1 with channels over the grid
#: cap, one channel over several partial blocks, fewer positions than a block has lanes.
BN_SMALL = [(2, 1, 1), (7, 13, 1), (4, 5, 3), (9, 1, 5), (2, 3, 1)]
#: (R, D): one value, one feature, short rows, many rows, rows split into segments, no rows.
LN_SHAPES = [
    (1, 1),
    (3, 2),
    (5, 1),
    (120, 64),
    (1000, 3),
    (300, 513),
    (64, 1024),
    (3, 70000),
    (0, 4),
    (7, 5),
    (4, 19),
    (3, 33),
]
#: For the simulator (blocks of 8 threads): more rows than blocks, rows wider than a block,
#: several rows per block with a ragged last block, rows over four times a block's lanes.
LN_SMALL = [(7, 5), (4, 19), (1, 1), (0, 4), (9, 3), (11, 2), (3, 33)]
#: Dropout sizes: empty, below/at/over a byte and a Philox block, past the parallel threshold.
DROPOUT_N = [0, 1, 7, 8, 9, 1023, 1024, 1025, 4097, 100_003]
#: For the simulator: around its chunk (4 * 8 elements) and past one sweep of its grid.
DROPOUT_SMALL = [0, 1, 5, 8, 13, 31, 32, 33, 129, 300]
SEED_CALLS = [(0, 0), (2**64 - 1, 2**33 + 7), (12345, 3)]


def grid(shapes, small, having=None):
    """``(backend name, shape)`` params: every registered backend (that has the optional
    member ``having``) with ``shapes``, or ``small`` for the slow ones; unavailable
    backends skip with the reason."""
    return [
        pytest.param(p.values[0], shape, id=f"{p.values[0]}-{shape}", marks=p.marks)
        for p in backend_params()
        if having is None or p.marks or hasattr(normdrop.get_backend(p.values[0]), having)
        for shape in (small if p.values[0] in SLOW_BACKENDS else shapes)
    ]


def data(shape, dtype, loc=2.0, scale=3.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + loc).astype(dtype)


def on(be, a):
    """Host data (or None) onto backend ``be``."""
    return None if a is None else be.asarray(a)


def close(be, got, expected, **tolerance):
    """``got`` (a backend array) equals the reference's ``expected`` to ``tolerance``."""
    got = be.to_numpy(got)
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got, expected, **tolerance)


def equal(be, got, expected):
    """``got`` equals ``expected`` bit for bit, dtype included."""
    got = be.to_numpy(got)
    assert got.dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(got, expected)


def needs(be, member):
    if not hasattr(be, member):
        pytest.skip(f"backend {be.name!r} has no {member}")


# ----------------------------------------------------------------------------- the protocol
def test_check_backend(backend):
    check_backend(backend)
    assert isinstance(backend, Backend)


def test_required_members_are_the_protocol():
    """``REQUIRED_MEMBERS`` lists exactly what :class:`Backend` declares."""
    declared = {k for k in vars(Backend) if not k.startswith("_")} | set(Backend.__annotations__)
    assert set(REQUIRED_MEMBERS) == declared
    assert not set(OPTIONAL_MEMBERS) & declared


@pytest.mark.parametrize("name", ["numpy", "numba", "cuda", "dask"])
def test_built_in_backends_define_every_member_themselves(name):
    """Each built-in backend class defines (or explicitly delegates) every required
    member and every optional one it has: nothing is inherited, so a kernel forgotten in
    a backend fails loudly instead of running another backend's."""
    try:
        be = normdrop.get_backend(name)
    except normdrop.errors.BackendError as exc:
        pytest.skip(str(exc))
    cls = type(be)
    assert cls.__mro__ == (cls, PickledByName, object)  # pickled as its name, nothing more
    own = vars(cls)
    assert [m for m in REQUIRED_MEMBERS if m not in own] == []
    assert [m for m in OPTIONAL_MEMBERS if hasattr(be, m) and m not in own] == []


# ----------------------------------------------------------------------------- BatchNorm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "shape"), grid(BN_SHAPES, BN_SMALL))
def test_channel_kernels(name, shape, dtype):
    be = normdrop.get_backend(name)
    x, dy = data(shape, dtype), data(shape, dtype, 0.0, 1.0, seed=1)
    rng = np.random.default_rng(2)
    a, b, c = rng.standard_normal((3, shape[1]))
    mean, var = be.channel_moments(on(be, x))
    rmean, rvar = REF.channel_moments(x)
    close(be, mean, rmean, **tol(np.float64, "reference"))
    close(be, var, rvar, **tol(np.float64, "reference"))
    assert be.to_numpy(mean).dtype == np.float64 == be.to_numpy(var).dtype
    sums = be.channel_backward_reduce(on(be, dy), on(be, x), on(be, rmean))
    for got, expected in zip(sums, REF.channel_backward_reduce(dy, x, rmean), strict=True):
        close(be, got, expected, **tol(np.float64, "reference", factor=100))
    y = be.channel_affine(on(be, x), on(be, b), on(be, a), on(be, b), be.empty(shape, dtype))
    expected = REF.channel_affine(x, b, a, b, np.empty_like(x))
    close(be, y, expected, **tol(dtype, "reference"))
    y = be.channel_backward_elemt(
        on(be, dy),
        on(be, x),
        on(be, rmean),
        on(be, a),
        on(be, b),
        on(be, c),
        be.empty(shape, dtype),
    )
    expected = REF.channel_backward_elemt(dy, x, rmean, a, b, c, np.empty_like(x))
    close(be, y, expected, **tol(dtype, "reference"))


def test_channel_moments_of_no_channels(backend):
    mean, var = backend.channel_moments(on(backend, np.ones((2, 0, 3))))
    assert backend.to_numpy(mean).shape == backend.to_numpy(var).shape == (0,)


def test_statistics_are_stable_and_deterministic(backend):
    """Mean 1e4, std 1e-2 in float32 (an E[x^2] - E[x]^2 would lose the variance), and an
    outlier of 1e4 standard deviations first in a channel or row: accurate statistics,
    the same bits on a second call."""
    small = backend.name in SLOW_BACKENDS
    x = data((6, 2, 5) if small else (256, 3, 40), np.float32, 1e4, 1e-2)
    first = backend.channel_moments(on(backend, x))
    rmean, rvar = REF.channel_moments(x)
    close(backend, first[0], rmean, rtol=1e-12, atol=0)
    close(backend, first[1], rvar, rtol=1e-9, atol=0)
    again = backend.channel_moments(on(backend, x))
    for a, b in zip(first, again, strict=True):
        assert backend.to_numpy(a).tobytes() == backend.to_numpy(b).tobytes()
    x = data((40, 2, 1), np.float64, 0.0, 1.0)
    x[0] = 1e4
    close(
        backend,
        backend.channel_moments(on(backend, x))[1],
        REF.channel_moments(x)[1],
        rtol=1e-7,
        atol=0,
    )
    rows = x.reshape(2, 40)
    rows[:, 0] = -1e4
    _, _, rstd = backend.layer_norm_forward(
        on(backend, rows), None, None, 0.0, be_empty(backend, rows)
    )
    close(
        backend,
        rstd,
        REF.layer_norm_forward(rows, None, None, 0.0, rows.copy())[2],
        rtol=1e-7,
        atol=0,
    )


def be_empty(be, like):
    return be.empty(like.shape, like.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("name", "shape"),
    grid([(4, 64, 30), (6, 5, 1), (64, 32, 64)], [(5, 3, 2)], having="batch_norm_forward"),
)
@pytest.mark.parametrize("mode", ["train", "train-untracked", "eval"])
@pytest.mark.parametrize(
    ("wdt", "bdt", "rdt"),
    [
        (None, None, np.float64),
        (np.float32, np.float32, np.float32),
        (np.float64, None, np.float32),
        (None, np.float32, np.float64),
        (np.float32, np.float64, np.float32),
        (np.float16, np.float16, np.float32),
        (np.float16, np.float16, np.float16),
    ],
    ids=lambda t: "none" if t is None else np.dtype(t).name,
)
def test_batch_norm_forward(name, shape, dtype, mode, wdt, bdt, rdt):
    """The optional whole-layer kernel, on the backends that have it: output, statistics
    (float64) and the in-place running update (in the running statistics' own dtype), for
    weight, bias and running statistics of any float dtype, each possibly None."""
    be = normdrop.get_backend(name)
    c = shape[1]
    rng = np.random.default_rng(3)
    x = data(shape, dtype)
    w = None if wdt is None else (rng.random(c) + 0.5).astype(wdt)
    b = None if bdt is None else rng.standard_normal(c).astype(bdt)
    tracked = mode != "train-untracked"
    rm = rng.standard_normal(c).astype(rdt) if tracked else None
    rv = (rng.random(c) + 0.5).astype(rdt) if tracked else None
    use_batch, update = mode != "eval", mode == "train"
    rm_ref = None if rm is None else rm.astype(np.float64)
    rv_ref = None if rv is None else rv.astype(np.float64)
    ref_w = None if w is None else w.astype(np.float64)
    ref_b = None if b is None else b.astype(np.float64)
    expected = reference_batch_norm_forward(
        REF,
        x,
        rm_ref,
        rv_ref,
        ref_w,
        ref_b,
        use_batch or not tracked,
        update,
        0.3,
        1e-5,
        np.empty_like(x),
    )
    rm_be, rv_be = on(be, rm), on(be, rv)
    out, mean, rstd = be.batch_norm_forward(
        on(be, x),
        rm_be,
        rv_be,
        on(be, w),
        on(be, b),
        use_batch or not tracked,
        update,
        0.3,
        1e-5,
        be.empty(shape, x.dtype),
    )
    assert be.to_numpy(mean).dtype == np.float64 == be.to_numpy(rstd).dtype
    low = np.float16 in (wdt, bdt, rdt)
    close(be, out, expected[0], **tol(np.float16 if low else dtype, "formula"))
    close(be, mean, expected[1], **tol(np.float64, "formula"))
    close(be, rstd, expected[2], **tol(np.float64, "formula"))
    if tracked:  # updated like the reference's, or untouched, in their own dtype
        for got, want, given in ((rm_be, rm_ref, rm), (rv_be, rv_ref, rv)):
            got = be.to_numpy(got)
            assert got.dtype == rdt
            np.testing.assert_allclose(got, want.astype(rdt), **tol(rdt, "formula", factor=50))
            assert update or np.array_equal(got, given)


# ----------------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "shape"), grid(LN_SHAPES, LN_SMALL))
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_row_kernels(name, shape, dtype, affine):
    be = normdrop.get_backend(name)
    x, dy = data(shape, dtype, -0.5, 2.0), data(shape, dtype, 0.0, 1.0, seed=1)
    d = shape[1]
    rng = np.random.default_rng(2)
    w = rng.standard_normal(d) + 1 if affine != "none" else None
    b = rng.standard_normal(d) if affine == "both" else None
    y, mean, rstd = be.layer_norm_forward(on(be, x), on(be, w), on(be, b), 1e-5, be_empty(be, x))
    ry, rmean, rrstd = REF.layer_norm_forward(x, w, b, 1e-5, np.empty_like(x))
    close(be, y, ry, **tol(dtype, "reference"))
    close(be, mean, rmean, **tol(np.float64, "reference"))
    close(be, rstd, rrstd, **tol(np.float64, "reference"))
    for grads in (True, False):
        got = be.layer_norm_backward(
            on(be, dy), on(be, x), on(be, rmean), on(be, rrstd), on(be, w), be_empty(be, x), grads
        )
        expected = REF.layer_norm_backward(dy, x, rmean, rrstd, w, np.empty_like(x), grads)
        close(be, got[0], expected[0], **tol(dtype, "reference", factor=10))
        for g, e in zip(got[1:], expected[1:], strict=True):
            if grads:
                close(be, g, e, **tol(np.float64, "reference", factor=1000))
            else:
                assert g is None and e is None


@pytest.mark.parametrize("d", [64, 300], ids=["short rows", "long rows"])
@pytest.mark.parametrize("param_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_weight, with_bias", [(False, True), (True, False), (True, True)])
def test_layer_norm_forward_parameter_dtypes(backend, d, param_dtype, with_weight, with_bias):
    """weight and bias in their own float dtype, each possibly None."""
    rows = 5 if backend.name in SLOW_BACKENDS else 37
    d = 9 if backend.name in SLOW_BACKENDS else d
    x = data((rows, d), np.float64)
    rng = np.random.default_rng(4)
    w = rng.standard_normal(d).astype(param_dtype) if with_weight else None
    b = rng.standard_normal(d).astype(param_dtype) if with_bias else None
    y, mean, rstd = backend.layer_norm_forward(
        on(backend, x), on(backend, w), on(backend, b), 1e-5, be_empty(backend, x)
    )
    ry, rmean, rrstd = REF.layer_norm_forward(x, w, b, 1e-5, np.empty_like(x))
    close(backend, y, ry, **tol(np.float64, "reference"))
    close(backend, mean, rmean, **tol(np.float64, "reference"))
    close(backend, rstd, rrstd, **tol(np.float64, "reference"))


# ----------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("p", [0.0001, 0.15, 0.5, 0.999])
@pytest.mark.parametrize(("seed", "call"), SEED_CALLS)
@pytest.mark.parametrize(("name", "n"), grid(DROPOUT_N, DROPOUT_SMALL))
def test_dropout_kernels(name, n, p, seed, call):
    """Masks, outputs, bitmasks and the bitmask backward, bit for bit."""
    be = normdrop.get_backend(name)
    x = data(n, np.float32, 0.0, 1.0)
    threshold, scale = dropout_threshold(p), np.float32(1 / (1 - p))
    mask = REF.dropout_mask(n, threshold, seed, call)
    equal(be, be.dropout_mask(n, threshold, seed, call), mask)
    expected = np.where(mask, x * scale, np.float32(0))
    equal(
        be,
        be.dropout_forward(on(be, x), threshold, scale, seed, call, be_empty(be, x), None),
        expected,
    )
    if not getattr(be, "supports_bitmask", True):
        return
    bits = on(be, np.full((n + 7) // 8, 0xA5, np.uint8))
    y = be.dropout_forward(on(be, x), threshold, scale, seed, call, be_empty(be, x), bits)
    equal(be, y, expected)
    equal(be, bits, np.packbits(mask, bitorder="little"))
    equal(be, be.dropout_apply_bitmask(on(be, x), bits, scale, be_empty(be, x)), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 4)], ids=str)
def test_dropout_of_any_shape_in_c_order(backend, shape, dtype):
    x = data(shape, dtype)
    threshold, scale = dropout_threshold(0.3), dtype(1 / 0.7)
    keep = REF.dropout_mask(x.size, threshold, 99, 4).reshape(shape)
    y = backend.dropout_forward(on(backend, x), threshold, scale, 99, 4, be_empty(backend, x), None)
    equal(backend, y, np.where(keep, x * scale, dtype(0)))


@pytest.mark.parametrize("offset", [1, 2, 3, 5, 8, 4093, 2**40 + 3, 4 * (2**64 - 1) - 70004])
@pytest.mark.parametrize(("name", "n"), grid([1, 2, 6, 1500, 70001], [1, 2, 6, 23]))
def test_dropout_with_an_offset(name, n, offset):
    """A chunk whose first element is element ``offset`` of the whole array."""
    be = normdrop.get_backend(name)
    x = data(n, np.float64)
    threshold, scale = dropout_threshold(0.3), np.float64(1 / 0.7)
    keep = REF.philox_words(n, 99, 7, offset) >= threshold
    y = be.dropout_forward(on(be, x), threshold, scale, 99, 7, be_empty(be, x), None, offset)
    equal(be, y, np.where(keep, x * scale, 0.0))


def test_dropout_chunks_with_offsets_rebuild_the_whole(backend):
    x = data(23, np.float64)
    threshold, scale = dropout_threshold(0.5), np.float64(2.0)
    whole = REF.dropout_forward(x, threshold, scale, 5, 1, np.empty_like(x), None)
    parts = [
        backend.to_numpy(
            backend.dropout_forward(
                on(backend, x[a:b]),
                threshold,
                scale,
                5,
                1,
                backend.empty((b - a,), x.dtype),
                None,
                a,
            )
        )
        for a, b in ((0, 6), (6, 7), (7, 18), (18, 23))
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_dropout_drops_nan_and_inf_to_zero(backend):
    x = np.array([np.nan, np.inf, -np.inf, 1.0] * 4)
    threshold, scale = dropout_threshold(0.5), np.float64(2.0)
    expected = REF.dropout_forward(x, threshold, scale, 1, 0, np.empty_like(x), None)
    assert (expected == 0).any() and np.isnan(expected).any()
    y = backend.dropout_forward(on(backend, x), threshold, scale, 1, 0, be_empty(backend, x), None)
    equal(backend, y, expected)


# ----------------------------------------------------------------------------- out may be x
@pytest.mark.parametrize("dtype", DTYPES)
def test_out_may_be_the_input(backend, dtype):
    """Every kernel that takes ``out`` accepts the input itself (backends of immutable
    arrays return a new array instead)."""
    x3, x2 = data((3, 4, 2), dtype), data((5, 20), dtype)
    vec = np.random.default_rng(5).standard_normal((4, 4))
    d = on(backend, x3.copy())
    y = backend.channel_affine(d, *(on(backend, v) for v in vec[:3]), d)
    close(
        backend, y, REF.channel_affine(x3, *vec[:3], np.empty_like(x3)), **tol(dtype, "reference")
    )
    d = on(backend, x3.copy())
    y = backend.channel_backward_elemt(d, on(backend, x3), *(on(backend, v) for v in vec), d)
    close(
        backend,
        y,
        REF.channel_backward_elemt(x3, x3, *vec, np.empty_like(x3)),
        **tol(dtype, "reference"),
    )
    d = on(backend, x2.copy())
    y = backend.layer_norm_forward(d, None, None, 1e-5, d)[0]
    close(
        backend,
        y,
        REF.layer_norm_forward(x2, None, None, 1e-5, np.empty_like(x2))[0],
        **tol(dtype, "reference"),
    )
    _, mean, rstd = REF.layer_norm_forward(x2, None, None, 1e-5, np.empty_like(x2))
    d = on(backend, x2.copy())
    y = backend.layer_norm_backward(
        d, on(backend, x2), on(backend, mean), on(backend, rstd), None, d, False
    )[0]
    expected = REF.layer_norm_backward(x2, x2, mean, rstd, None, np.empty_like(x2), False)[0]
    close(backend, y, expected, **tol(dtype, "reference", factor=10))
    d = on(backend, x2.copy())
    y = backend.dropout_forward(d, 2**31, dtype(2), 3, 0, d, None)
    equal(backend, y, REF.dropout_forward(x2, 2**31, dtype(2), 3, 0, np.empty_like(x2), None))


# ----------------------------------------------------------------------------- fused
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("name", "shape"),
    grid(
        [(6, 10), (37, 64), (3, 3000), (200, 300)],
        [(6, 10), (3, 33)],
        having="dropout_add_layer_norm_forward",
    ),
)
@pytest.mark.parametrize("case", ["dropout+residual", "dropout", "residual", "offset"])
def test_dropout_add_layer_norm_forward(name, shape, dtype, case):
    """The optional fused kernel, on the backends that have it: ``r`` bit for bit."""
    be = normdrop.get_backend(name)
    x, res = data(shape, dtype), data(shape, dtype, 0.0, 1.0, seed=1)
    w = np.random.default_rng(6).standard_normal(shape[1]) + 1
    threshold = None if case == "residual" else dropout_threshold(0.3)
    residual = None if case == "dropout" else res
    offset = 5 if case == "offset" else 0
    keeps = getattr(be, "supports_bitmask", True) and threshold is not None and not offset
    nbytes = (x.size + 7) // 8
    bits = on(be, np.zeros(nbytes, np.uint8)) if keeps else None
    ref_bits = np.zeros(nbytes, np.uint8) if keeps else None
    args = (1e-5, threshold, dtype(1 / 0.7), 11, 2)
    got = be.dropout_add_layer_norm_forward(
        on(be, x),
        on(be, residual),
        on(be, w),
        None,
        *args,
        be_empty(be, x),
        be_empty(be, x),
        bits,
        offset,
    )
    expected = REF.dropout_add_layer_norm_forward(
        x, residual, w, None, *args, np.empty_like(x), np.empty_like(x), ref_bits, offset
    )
    equal(be, got[1], expected[1])
    close(be, got[0], expected[0], **tol(dtype, "reference"))
    for g, e in zip(got[2:], expected[2:], strict=True):
        close(be, g, e, **tol(np.float64, "reference"))
    if keeps:
        equal(be, bits, ref_bits)


#: The optional members of each built-in backend (``supports_bitmask``: its value).
BUILT_IN_CAPABILITIES = {
    "numpy": ({"dropout_add_layer_norm_forward"}, True),
    "numba": (
        {"batch_norm_forward", "batch_norm_backward", "dropout_add_layer_norm_forward", "bind"},
        True,
    ),
    "cuda": (
        {
            "batch_norm_forward",
            "batch_norm_backward",
            "dropout_add_layer_norm_forward",
            "alloc_like",
        },
        True,
    ),
    "dask": ({"dropout_add_layer_norm_forward"}, False),
}


@pytest.mark.parametrize("name", list(BUILT_IN_CAPABILITIES))
def test_built_in_capabilities(name):
    """Which optional members the built-in backends offer (so that the tests over the
    backends having each one cannot silently lose a backend)."""
    try:
        be = normdrop.get_backend(name)
    except normdrop.errors.BackendError as exc:
        pytest.skip(str(exc))
    members, bitmask = BUILT_IN_CAPABILITIES[name]
    assert {m for m in OPTIONAL_MEMBERS if m != "supports_bitmask" and hasattr(be, m)} == members
    assert be.supports_bitmask is bitmask
    # the optional keywords (layer state updated by the kernels): the cuda backend's only
    keywords = {
        (m, k) for m, ks in OPTIONAL_KEYWORDS.items() for k in ks if takes_keyword(be, m, k)
    }
    assert keywords == (set(OPTIONAL_KEYWORDS_TAKEN) if name == "cuda" else set())


OPTIONAL_KEYWORDS_TAKEN = (
    ("batch_norm_forward", "counter"),
    ("batch_norm_backward", "accumulate"),
    ("layer_norm_backward", "accumulate"),
)


def test_alloc_like(backend):
    needs(backend, "alloc_like")
    x = on(backend, np.zeros((2, 3), np.float32))
    y = backend.alloc_like(x, (4, 2), np.float64)
    assert type(y) is type(x) and tuple(y.shape) == (4, 2) and y.dtype == np.float64


# ----------------------------------------------------------------------------- helpers
# ``row_moments`` and ``philox_words``: not in the protocol, but the built-in in-memory
# backends have them (the dask backend's blocks call them), so they are tested here too.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "shape"), grid(LN_SHAPES, LN_SMALL, having="row_moments"))
def test_row_moments_helper(name, shape, dtype):
    be = normdrop.get_backend(name)
    x = data(shape, dtype)
    for got, expected in zip(be.row_moments(on(be, x)), REF.row_moments(x), strict=True):
        close(be, got, expected, **tol(np.float64, "reference"))


@pytest.mark.parametrize(
    ("seed", "call"), [(0, 0), (1, 2**32 - 1), (2**32, 2**32 + 5), (0x243F6A8885A308D3, 2**64 - 1)]
)
@pytest.mark.parametrize(
    ("name", "n"),
    grid([0, 1, 3, 9, 1023, 5000, 70001], [0, 1, 5, 8, 13, 37], having="philox_words"),
)
def test_philox_words_helper(name, n, seed, call):
    be = normdrop.get_backend(name)
    for offset in (0, 1, 3, 6, 2**40 + 1, 4 * (2**64 - 1) - 4 * (n // 4 + 1)):
        equal(be, be.philox_words(n, seed, call, offset), REF.philox_words(n, seed, call, offset))
