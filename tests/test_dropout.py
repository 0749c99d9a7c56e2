"""Dropout (SPEC "Dropout"): Philox4x32-10 words, the mask rule, scaling, counters, seeds."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import SLOW_BACKENDS

import normdrop
from normdrop import functional as F
from normdrop.backends.numpy_backend import philox4x32_10
from normdrop.random import dropout_threshold

KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

SEEDS = [0, 1, 0xDEADBEEFCAFEBABE, 2**64 - 1]
CALLS = [0, 1, 2**32 + 5, 2**64 - 1]


def _small(backend):
    return backend.name in SLOW_BACKENDS


def _supports_bitmask(backend):
    return getattr(backend, "supports_bitmask", True)


def _words_helper(backend):
    """``philox_words``: a helper of the built-in in-memory backends, not in the protocol."""
    if not hasattr(backend, "philox_words"):
        pytest.skip(f"backend {backend.name!r} has no philox_words helper")
    return backend.philox_words


def expected_words(n, seed, call, offset=0):
    """Element i's word from the SPEC's counter layout, one Philox call per element."""
    i = np.arange(offset, offset + n, dtype=np.uint64)
    block = i // np.uint64(4)
    mask = np.uint64(0xFFFFFFFF)
    counter = (block & mask, block >> np.uint64(32), call & 0xFFFFFFFF, call >> 32)
    words = philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))
    return words[np.arange(n), (i % np.uint64(4)).astype(np.intp)]


def expected_mask(shape, p, seed, call):
    n = int(np.prod(shape))
    return (expected_words(n, seed, call) >= dropout_threshold(p)).reshape(shape)


def torch_like_scale(p, dtype):
    """1/(1-p) computed in the input's dtype (as torch does: float32(1) / float32(1 - p))."""
    t = np.dtype(dtype).type
    return t(1.0) / t(1.0 - p)


# ----------------------------------------------------------------------------- Philox
@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    out = philox4x32_10(counter, key)
    assert out.dtype == np.uint32
    assert [int(w) for w in out] == list(expected)


def test_philox_known_answers_vectorised():
    counters = [np.array([ka[0][j] for ka in KNOWN_ANSWERS], np.uint64) for j in range(4)]
    # the key is per call: vectorise over counters with one key at a time
    for idx, (_, key, expected) in enumerate(KNOWN_ANSWERS):
        out = philox4x32_10(tuple(c for c in counters), key)
        assert out.shape == (3, 4)
        assert [int(w) for w in out[idx]] == list(expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("call", CALLS)
def test_philox_words_counter_layout(backend, seed, call):
    for n, offset in [(1, 0), (13, 0), (5, 3), (9, 4), (6, 2**34 + 3), (4, 2**40 + 1)]:
        words = backend.to_numpy(_words_helper(backend)(n, seed, call, offset))
        assert words.dtype == np.uint32 and words.shape == (n,)
        np.testing.assert_array_equal(words, expected_words(n, seed, call, offset))


def test_philox_words_known_answer_first_block(backend):
    words = backend.to_numpy(_words_helper(backend)(4, 0, 0))
    assert [int(w) for w in words] == list(KNOWN_ANSWERS[0][2])


def test_words_do_not_depend_on_chunking(backend):
    n = 70 if _small(backend) else 4099
    words = _words_helper(backend)
    whole = backend.to_numpy(words(n, 7, 3))
    for start, stop in [(0, 1), (1, 6), (5, 37), (37, n)]:
        part = backend.to_numpy(words(stop - start, 7, 3, start))
        np.testing.assert_array_equal(part, whole[start:stop])


# ----------------------------------------------------------------------------- masks vs reference
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (1, 1), (257,)])
@pytest.mark.parametrize("seed", [0, 12345, 2**64 - 1])
@pytest.mark.parametrize("call", [0, 1, 2**33 + 1])
def test_mask_equal_across_backends(backend, reference, shape, seed, call):
    for p in (0.1, 0.5, 0.9):
        ours = backend.to_numpy(F.dropout_mask(shape, p, seed=seed, call=call, backend=backend))
        ref = reference.to_numpy(F.dropout_mask(shape, p, seed=seed, call=call, backend=reference))
        assert ours.dtype == np.bool_ and ours.shape == shape
        np.testing.assert_array_equal(ours, ref)
        np.testing.assert_array_equal(ours, expected_mask(shape, p, seed, call))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_values_equal_reference(backend, reference, rng, dtype):
    shapes = [(5,), (3, 7), (2, 3, 5)] if _small(backend) else [(5,), (3, 7), (4, 33, 17)]
    for shape in shapes:
        x = rng.standard_normal(shape).astype(dtype)
        for seed, call in [(0, 0), (99, 4), (2**63 + 17, 2**32)]:
            y = F.dropout(backend.asarray(x), 0.3, seed=seed, call=call, backend=backend)
            assert backend.accepts(y)
            assert y.shape == shape and np.dtype(y.dtype) == dtype
            r = F.dropout(x, 0.3, seed=seed, call=call, backend=reference)
            np.testing.assert_array_equal(backend.to_numpy(y), r)


def test_layer_masks_equal_reference(backend, reference, rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    ours = normdrop.Dropout(0.4, seed=77, backend=backend.name)
    ref = normdrop.Dropout(0.4, seed=77, backend=reference.name)
    for _ in range(3):
        np.testing.assert_array_equal(backend.to_numpy(ours(backend.asarray(x))), ref(x))


# ----------------------------------------------------------------------------- the keep rule
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 1 / 3, 0.9, 0.999])
def test_threshold_rule(backend, p):
    n = 64 if _small(backend) else 1000
    words = expected_words(n, 5, 2)
    mask = backend.to_numpy(F.dropout_mask(n, p, seed=5, call=2, backend=backend))
    assert dropout_threshold(p) == int(np.floor(p * 2**32))
    np.testing.assert_array_equal(mask, words >= np.floor(p * 2**32))


def test_threshold_boundary_is_inclusive(backend):
    words = expected_words(16, 3, 0)
    for j in (0, 5, 11):
        w = int(words[j])
        p_equal = w / 2**32  # exact: floor(p * 2**32) == w
        assert dropout_threshold(p_equal) == w
        mask = backend.to_numpy(F.dropout_mask(16, p_equal, seed=3, call=0, backend=backend))
        assert mask[j]  # word == threshold: kept
        p_above = (w + 1) / 2**32
        mask = backend.to_numpy(F.dropout_mask(16, p_above, seed=3, call=0, backend=backend))
        assert not mask[j]  # word < threshold: dropped


# ----------------------------------------------------------------------------- scaling
@pytest.mark.parametrize("p", [0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9, 1 / 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_in_input_dtype(backend, rng, p, dtype):
    x = rng.standard_normal(64).astype(dtype)
    y = backend.to_numpy(F.dropout(backend.asarray(x), p, seed=1, backend=backend))
    keep = expected_mask((64,), p, 1, 0)
    scale = torch_like_scale(p, dtype)
    np.testing.assert_array_equal(y[keep], x[keep] * scale)
    assert np.all(y[~keep] == 0)
    ones = backend.to_numpy(
        F.dropout(backend.asarray(np.ones(64, dtype)), p, seed=1, backend=backend)
    )
    assert set(np.unique(ones).tolist()) <= {0.0, float(scale)}


def test_float16_scaled_and_kept_as_float16(backend):
    x = np.linspace(-2, 2, 32).astype(np.float16)
    y = F.dropout(backend.asarray(x), 0.5, seed=1, backend=backend)
    assert np.dtype(y.dtype) == np.float16
    keep = expected_mask((32,), 0.5, 1, 0)
    expected = (x[keep] * np.float32(2)).astype(np.float16)
    np.testing.assert_array_equal(backend.to_numpy(y)[keep], expected)


# ----------------------------------------------------------------------------- identity cases
def test_eval_and_p0_return_the_same_object(backend, rng):
    x = backend.asarray(rng.standard_normal((3, 4)))
    d = normdrop.Dropout(0.5, seed=1, backend=backend.name)
    d.eval()
    assert d(x) is x
    assert normdrop.Dropout(0.0, seed=1, backend=backend.name)(x) is x
    assert F.dropout(x, 0.5, training=False, seed=1, backend=backend) is x
    assert F.dropout(x, 0.0, seed=1, backend=backend) is x
    assert F.dropout(x, 0.0, backend=backend) is x
    # backward of the identity is the identity
    g = backend.asarray(rng.standard_normal((3, 4)))
    d(x)
    assert d.backward(g) is g


def test_call_counter(backend, rng):
    x = rng.standard_normal((5, 4))
    d = normdrop.Dropout(0.5, seed=123, backend=backend.name)
    assert d.call_count == 0
    outs = []
    for k in range(3):
        outs.append(backend.to_numpy(d(backend.asarray(x))))
        assert d.call_count == k + 1
        keep = expected_mask(x.shape, 0.5, 123, k)
        np.testing.assert_array_equal(outs[-1] != 0, keep & (x != 0))
        np.testing.assert_array_equal(
            outs[-1] != 0,
            backend.to_numpy(F.dropout_mask(x.shape, 0.5, seed=123, call=k, backend=backend)),
        )
    assert not np.array_equal(outs[0], outs[1])
    d.eval()
    d(backend.asarray(x))
    assert d.call_count == 3  # evaluation does not count
    d.train()
    y = backend.to_numpy(d(backend.asarray(x)))
    np.testing.assert_array_equal(y != 0, expected_mask(x.shape, 0.5, 123, 3))


def test_same_seed_and_call_same_mask(backend, rng):
    x = backend.asarray(rng.standard_normal((6, 5)).astype(np.float32))
    a = normdrop.Dropout(0.3, seed=42, backend=backend.name)
    b = normdrop.Dropout(0.3, seed=42, backend=backend.name)
    for _ in range(2):
        np.testing.assert_array_equal(backend.to_numpy(a(x)), backend.to_numpy(b(x)))
    c = normdrop.Dropout(0.3, seed=43, backend=backend.name)
    c.call_count = a.call_count
    assert not np.array_equal(backend.to_numpy(a(x)), backend.to_numpy(c(x)))


def test_mask_independent_of_dtype_and_layout(backend, rng):
    x = rng.standard_normal((6, 5, 3))
    base = backend.to_numpy(F.dropout(backend.asarray(x), 0.5, seed=9, backend=backend))
    for variant in (np.asfortranarray(x), x.transpose(2, 1, 0).copy().transpose(2, 1, 0)):
        y = backend.to_numpy(F.dropout(backend.asarray(variant), 0.5, seed=9, backend=backend))
        np.testing.assert_array_equal(y, base)
    y32 = backend.to_numpy(
        F.dropout(backend.asarray(x.astype(np.float32)), 0.5, seed=9, backend=backend)
    )
    np.testing.assert_array_equal(y32 != 0, base != 0)
    # a strided view takes the mask of its own C order, not of the parent
    big = rng.standard_normal((12, 10))
    view = big[::2, 1::2]
    y = backend.to_numpy(F.dropout(backend.asarray(view), 0.5, seed=9, backend=backend))
    np.testing.assert_array_equal(y != 0, expected_mask(view.shape, 0.5, 9, 0))


def test_mask_prefix_property(backend):
    n, m = (37, 101) if _small(backend) else (1000, 5003)
    short = backend.to_numpy(F.dropout_mask(n, 0.5, seed=4, backend=backend))
    long = backend.to_numpy(F.dropout_mask(m, 0.5, seed=4, backend=backend))
    np.testing.assert_array_equal(short, long[:n])


# ----------------------------------------------------------------------------- seeds
def test_manual_seed_reproducible(backend):
    x = backend.asarray(np.ones((4, 8)))
    normdrop.manual_seed(2024)
    d1 = normdrop.Dropout(0.5, backend=backend.name)
    y1 = backend.to_numpy(F.dropout(x, 0.5, backend=backend))
    normdrop.manual_seed(2024)
    d2 = normdrop.Dropout(0.5, backend=backend.name)
    y2 = backend.to_numpy(F.dropout(x, 0.5, backend=backend))
    assert d1.seed == d2.seed
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(backend.to_numpy(d1(x)), backend.to_numpy(d2(x)))


def test_seed_none_draws_fresh_seeds():
    normdrop.manual_seed(5)
    seeds = {normdrop.Dropout(0.5).seed for _ in range(5)}
    assert len(seeds) == 5
    assert all(0 <= s < 2**64 for s in seeds)
    a = F.dropout(np.ones(256), 0.5)
    b = F.dropout(np.ones(256), 0.5)
    assert not np.array_equal(a, b)


def test_explicit_seed_does_not_consume_global_generator():
    normdrop.manual_seed(8)
    expected = normdrop.Dropout(0.5).seed
    normdrop.manual_seed(8)
    normdrop.Dropout(0.5, seed=1)(np.ones(4))
    F.dropout(np.ones(4), 0.5, seed=3)
    assert normdrop.Dropout(0.5).seed == expected


def test_identity_calls_do_not_consume_global_generator():
    """Evaluation and p == 0 draw nothing: they must not shift later seed=None draws."""
    normdrop.manual_seed(8)
    expected = normdrop.Dropout(0.5).seed
    normdrop.manual_seed(8)
    normdrop.Dropout(0.5, seed=1).eval()(np.ones(4))
    normdrop.Dropout(0.0, seed=1)(np.ones(4))
    F.dropout(np.ones(4), 0.5, training=False)
    F.dropout(np.ones(4), 0.0)
    assert normdrop.Dropout(0.5).seed == expected


# ----------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_keep_fraction(backend, p):
    n = 20_000 if _small(backend) else 1_000_000
    mask = backend.to_numpy(F.dropout_mask(n, p, seed=31337, call=1, backend=backend))
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(mask.mean() - (1 - p)) < 6 * sigma
    for lane in range(4):  # every one of Philox's four output words is uniform
        part = mask[lane::4]
        assert abs(part.mean() - (1 - p)) < 6 * np.sqrt(p * (1 - p) / part.size)
    # mean of dropout(ones) is ~1 (inverted dropout keeps the expectation)
    y = backend.to_numpy(F.dropout(backend.asarray(np.ones(n)), p, seed=5, backend=backend))
    assert abs(y.mean() - 1.0) < 6 * sigma / (1 - p)


# ----------------------------------------------------------------------------- masks & bitmasks
def test_dropout_mask_api(backend):
    m = F.dropout_mask((3, 4), 0.5, seed=0, backend=backend)
    assert backend.accepts(m)
    m = backend.to_numpy(m)
    assert m.dtype == np.bool_ and m.shape == (3, 4)
    assert backend.to_numpy(F.dropout_mask(5, 0.5, seed=0, backend=backend)).shape == (5,)
    assert backend.to_numpy(F.dropout_mask((0,), 0.5, seed=0, backend=backend)).shape == (0,)
    assert backend.to_numpy(F.dropout_mask(np.int64(6), 0.5, seed=0, backend=backend)).shape == (6,)
    assert backend.to_numpy(F.dropout_mask((4,), 0.0, seed=0, backend=backend)).all()
    y = backend.to_numpy(
        F.dropout(backend.asarray(np.ones((3, 4))), 0.5, seed=0, call=2, backend=backend)
    )
    np.testing.assert_array_equal(
        y != 0, backend.to_numpy(F.dropout_mask((3, 4), 0.5, seed=0, call=2, backend=backend))
    )


@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 100])
def test_bitmask_format(backend, n):
    if not _supports_bitmask(backend):
        pytest.skip(f"backend {backend.name!r} keeps no bitmask")
    x = backend.asarray(np.ones(n, np.float32))
    y, bitmask = F.dropout_with_bitmask(x, 0.5, seed=21, call=1, backend=backend)
    bits = backend.to_numpy(bitmask)
    assert bits.dtype == np.uint8 and bits.shape == ((n + 7) // 8,)
    keep = expected_mask((n,), 0.5, 21, 1)
    for i in range(n):
        assert bool((bits[i // 8] >> (i % 8)) & 1) == keep[i]
    np.testing.assert_array_equal(backend.to_numpy(y) != 0, keep)


def test_bitmask_none_for_identity(backend):
    x = backend.asarray(np.ones(5))
    assert F.dropout_with_bitmask(x, 0.0, seed=1, backend=backend) == (x, None)
    y, bitmask = F.dropout_with_bitmask(x, 0.5, training=False, seed=1, backend=backend)
    assert y is x and bitmask is None


@pytest.mark.parametrize("shape", [(13,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_bitmask_equals_regenerated(backend, rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    p, seed, call = 0.35, 1234, 6
    y, bitmask = F.dropout_with_bitmask(
        backend.asarray(x), p, seed=seed, call=call, backend=backend
    )
    keep = expected_mask(shape, p, seed, call)
    expected = np.where(keep, g * torch_like_scale(p, dtype), 0).astype(dtype)
    regen = F.dropout_backward(backend.asarray(g), p, seed=seed, call=call, backend=backend)
    assert backend.accepts(regen)
    assert regen.shape == shape and np.dtype(regen.dtype) == dtype
    np.testing.assert_array_equal(backend.to_numpy(regen), expected)
    if bitmask is not None:
        from_bits = F.dropout_backward(backend.asarray(g), p, bitmask=bitmask, backend=backend)
        np.testing.assert_array_equal(backend.to_numpy(from_bits), expected)
    else:
        assert not _supports_bitmask(backend)


def test_layer_backward(backend, rng):
    x = rng.standard_normal((4, 5))
    g = rng.standard_normal((4, 5))
    d = normdrop.Dropout(0.25, seed=10, backend=backend.name)
    d(backend.asarray(x))
    d(backend.asarray(x))  # the backward belongs to call 1
    dx = d.backward(backend.asarray(g))
    assert backend.accepts(dx)
    keep = expected_mask((4, 5), 0.25, 10, 1)
    np.testing.assert_array_equal(
        backend.to_numpy(dx), np.where(keep, g * torch_like_scale(0.25, np.float64), 0)
    )
    assert d.grads == {}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "bad_shape", [(8, 2), (16,), (2, 2, 4), (4, 5)], ids=["same-bytes", "flat", "rank3", "more"]
)
def test_layer_backward_checks_grad_shape(backend, rng, training, bad_shape):
    """A gradient of another shape is refused before any mask is applied, naming both shapes,
    also where the packed bitmask would have the same byte count (2 x 8 and 8 x 2)."""
    d = normdrop.Dropout(0.5, seed=4, backend=backend.name).train(training)
    d(backend.asarray(rng.standard_normal((2, 8))))
    with pytest.raises(normdrop.ShapeError, match=r"shape \(2, 8\).*got \(" + str(bad_shape[0])):
        d.backward(backend.asarray(rng.standard_normal(bad_shape)))
    d.backward(backend.asarray(rng.standard_normal((2, 8))))  # the right shape still works


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    ("x_dtype", "g_dtype"), [(np.float32, np.float64), (np.float64, np.float32)]
)
def test_layer_backward_returns_the_input_dtype(backend, rng, training, x_dtype, g_dtype):
    """As BatchNorm1d, LayerNorm and PyTorch: the input gradient has the input's dtype."""
    d = normdrop.Dropout(0.3, seed=7, backend=backend.name).train(training)
    x = rng.standard_normal((3, 5)).astype(x_dtype)
    g = rng.standard_normal((3, 5)).astype(g_dtype)
    d(backend.asarray(x))
    dx = d.backward(backend.asarray(g))
    assert np.dtype(dx.dtype) == np.dtype(x_dtype)
    keep = expected_mask((3, 5), 0.3, 7, 0) if training else np.ones((3, 5), bool)
    scale = torch_like_scale(0.3, np.dtype(g_dtype)) if training else 1
    np.testing.assert_allclose(
        backend.to_numpy(dx), np.where(keep, g * scale, 0).astype(x_dtype), rtol=1e-6
    )


def test_bitmask_wrong_shape_rejected():
    x = np.ones(20)
    _, bitmask = F.dropout_with_bitmask(x, 0.5, seed=0)
    with pytest.raises(normdrop.ShapeError):
        F.dropout_backward(np.ones(30), 0.5, bitmask=bitmask)
    with pytest.raises(normdrop.ShapeError):
        F.dropout_backward(x, 0.5, bitmask=bitmask.astype(np.int64))


# ----------------------------------------------------------------------------- properties
def test_p_and_dropout_rate():
    d = normdrop.Dropout(0.3, seed=0)
    assert d.p == 0.3 and d.dropout_rate == 0.3
    assert isinstance(d.p, float)
    assert normdrop.Dropout().p == 0.5
    assert normdrop.Dropout(0, seed=0).dropout_rate == 0.0


@pytest.mark.parametrize("name", ["p", "dropout_rate"])
def test_p_can_be_assigned_as_in_pytorch_and_is_checked(backend, name):
    """``drop.p = q`` (PyTorch's plain attribute, set by dropout-rate schedules) takes
    effect at the next forward call; a bad value raises as the constructor does and
    changes nothing; a backward pass uses the probability of its own forward."""
    x = np.random.default_rng(0).standard_normal((6, 50))
    d = normdrop.Dropout(0.2, seed=5, backend=backend.name)
    d(backend.asarray(x))  # call 0 at p = 0.2 (and a plan made for it)
    setattr(d, name, np.float32(0.75))
    assert d.p == d.dropout_rate == 0.75 and type(d.p) is float and repr(d) == "Dropout(p=0.75)"
    y = backend.to_numpy(d(backend.asarray(x)))  # call 1 at p = 0.75
    expected = F.dropout(x, 0.75, seed=5, call=1, backend="numpy")
    np.testing.assert_array_equal(y, expected)
    for bad in (1.0, -0.1, float("nan"), "0.5", None):
        with pytest.raises(normdrop.InvalidParameterError):
            setattr(d, name, bad)
        assert d.p == 0.75
    d.p = 0.0  # between the forward and its backward
    dy = np.ones_like(x)
    dx = backend.to_numpy(d.backward(backend.asarray(dy)))
    np.testing.assert_array_equal(dx, F.dropout_backward(dy, 0.75, seed=5, call=1))
    assert d(backend.asarray(x)) is not None and d.call_count == 3
    np.testing.assert_array_equal(backend.to_numpy(d(backend.asarray(x))), x)  # p = 0: identity


def test_copy_keeps_seed_and_counter(rng):
    d = normdrop.Dropout(0.5, seed=99)
    x = rng.standard_normal(16)
    d(x)
    e = copy.deepcopy(d)
    assert e.seed == 99 and e.call_count == 1
    np.testing.assert_array_equal(d(x), e(x))


def test_out_argument(backend, rng):
    x = rng.standard_normal((3, 5))
    expected = F.dropout(x, 0.5, seed=3, backend="numpy")
    out = backend.asarray(np.zeros((3, 5)))
    assert F.dropout(backend.asarray(x), 0.5, seed=3, out=out, backend=backend) is out
    np.testing.assert_array_equal(backend.to_numpy(out), expected)
    xb = backend.asarray(x.copy())
    assert F.dropout(xb, 0.5, seed=3, out=xb, backend=backend) is xb
    np.testing.assert_array_equal(backend.to_numpy(xb), expected)
    out = backend.asarray(np.zeros((5, 3)).T)
    assert F.dropout(backend.asarray(x), 0.5, seed=3, out=out, backend=backend) is out
    np.testing.assert_array_equal(backend.to_numpy(out), expected)
    # in evaluation out= receives a copy of the input
    out = backend.asarray(np.zeros((3, 5)))
    assert F.dropout(backend.asarray(x), 0.5, training=False, out=out, backend=backend) is out
    np.testing.assert_array_equal(backend.to_numpy(out), x)


@pytest.mark.parametrize("shape", [(100_003,), (7, 3, 4999), (262_147,)])
def test_large_vs_reference(backend, reference, shape):
    """Sizes past the parallel threshold, not multiples of 4 or of any chunk size."""
    if _small(backend):
        shape = (1_003,)
    gen = np.random.default_rng(9)
    x = gen.standard_normal(shape).astype(np.float32)
    g = gen.standard_normal(shape).astype(np.float32)
    seed, call = 0xC0FFEE_1234_5678, 2**32 + 3
    y, bitmask = F.dropout_with_bitmask(
        backend.asarray(x), 0.3, seed=seed, call=call, backend=backend
    )
    ref_y, ref_bits = F.dropout_with_bitmask(x, 0.3, seed=seed, call=call, backend=reference)
    np.testing.assert_array_equal(backend.to_numpy(y), ref_y)
    if bitmask is not None:
        np.testing.assert_array_equal(backend.to_numpy(bitmask), ref_bits)
        dx = F.dropout_backward(backend.asarray(g), 0.3, bitmask=bitmask, backend=backend)
        np.testing.assert_array_equal(
            backend.to_numpy(dx), F.dropout_backward(g, 0.3, bitmask=ref_bits, backend=reference)
        )
    dx = F.dropout_backward(backend.asarray(g), 0.3, seed=seed, call=call, backend=backend)
    np.testing.assert_array_equal(
        backend.to_numpy(dx), F.dropout_backward(g, 0.3, seed=seed, call=call, backend=reference)
    )
    mask = F.dropout_mask(shape, 0.3, seed=seed, call=call, backend=backend)
    np.testing.assert_array_equal(backend.to_numpy(mask), ref_y != 0)
