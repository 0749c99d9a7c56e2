"""The ``*_with_stats`` / ``*_with_bitmask`` functions and the deprecated return-arity flags."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import to_numpy, vec
from test_dropout import expected_mask

import normdrop
import normdrop.functional as F
from normdrop.random import dropout_threshold

EPS = 1e-5


# ----------------------------------------------------------------------------- new functions
def test_batch_norm_with_stats_returns_the_batch_statistics(backend, rng):
    x = rng.standard_normal((6, 3, 4)) * 2.0 + 1.0
    y, mean, rstd = F.batch_norm_with_stats(backend.asarray(x), training=True, backend=backend)
    np.testing.assert_allclose(to_numpy(backend, mean), x.mean(axis=(0, 2)), rtol=1e-12)
    expected_rstd = 1.0 / np.sqrt(x.var(axis=(0, 2)) + EPS)
    np.testing.assert_allclose(to_numpy(backend, rstd), expected_rstd, rtol=1e-12)
    plain = F.batch_norm(x, training=True, backend="numpy")
    np.testing.assert_allclose(to_numpy(backend, y), plain, rtol=1e-12, atol=1e-12)


def test_batch_norm_with_stats_in_evaluation_reports_the_running_statistics(backend, rng):
    x = rng.standard_normal((5, 2))
    rm, rv = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    _, mean, rstd = F.batch_norm_with_stats(
        backend.asarray(x), vec(backend, rm), vec(backend, rv), backend=backend
    )
    np.testing.assert_allclose(to_numpy(backend, mean), rm)
    np.testing.assert_allclose(to_numpy(backend, rstd), 1.0 / np.sqrt(rv + EPS))


def test_layer_norm_with_stats_has_one_statistic_per_sample(backend, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    y, mean, rstd = F.layer_norm_with_stats(backend.asarray(x), (4, 5), backend=backend)
    assert mean.shape == rstd.shape == (2, 3)
    np.testing.assert_allclose(to_numpy(backend, mean), x.mean(axis=(2, 3)), rtol=1e-12)
    expected_rstd = 1.0 / np.sqrt(x.var(axis=(2, 3)) + EPS)
    np.testing.assert_allclose(to_numpy(backend, rstd), expected_rstd, rtol=1e-12)
    plain = F.layer_norm(x, (4, 5), backend="numpy")
    np.testing.assert_allclose(to_numpy(backend, y), plain, rtol=1e-12, atol=1e-12)


def test_dropout_with_bitmask_packs_the_keep_mask(backend):
    x = np.ones(37)
    y, bitmask = F.dropout_with_bitmask(backend.asarray(x), 0.3, seed=5, call=2, backend=backend)
    keep = expected_mask((37,), 0.3, 5, 2)
    np.testing.assert_array_equal(to_numpy(backend, y) != 0, keep)
    if getattr(backend, "supports_bitmask", True):
        packed = np.packbits(keep, bitorder="little")
        np.testing.assert_array_equal(to_numpy(backend, bitmask), packed)
    else:
        assert bitmask is None


def test_dropout_add_layer_norm_with_stats_returns_what_the_backward_takes(rng):
    x, res = rng.standard_normal((4, 8)), rng.standard_normal((4, 8))
    w = rng.standard_normal(8)
    y, r, mean, rstd, bitmask = F.dropout_add_layer_norm_with_stats(
        x, res, 8, w, None, 0.25, seed=3, call=1, backend="numpy"
    )
    keep = expected_mask((4, 8), 0.25, 3, 1)
    np.testing.assert_array_equal(r, np.where(keep, x * (1.0 / 0.75), 0.0) + res)
    np.testing.assert_allclose(mean, r.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(rstd, 1.0 / np.sqrt(r.var(axis=1) + EPS), rtol=1e-12)
    np.testing.assert_array_equal(bitmask, np.packbits(keep.ravel(), bitorder="little"))
    y2, r2 = F.dropout_add_layer_norm(x, res, 8, w, None, 0.25, seed=3, call=1, backend="numpy")
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(r2, r)


def test_the_new_functions_are_public_and_documented():
    for name in (
        "batch_norm_with_stats",
        "layer_norm_with_stats",
        "dropout_with_bitmask",
        "dropout_add_layer_norm_with_stats",
    ):
        assert name in F.__all__
        assert "Returns" in getattr(F, name).__doc__


# ----------------------------------------------------------------------------- deprecations
X = np.arange(12.0).reshape(4, 3) ** 1.5


def _deprecated_calls():
    """``(old call, replacement call, replacement name)`` triples."""
    return [
        (
            lambda: F.batch_norm(X, training=True, return_stats=True),
            lambda: F.batch_norm_with_stats(X, training=True),
            "batch_norm_with_stats",
        ),
        (
            lambda: F.layer_norm(X, 3, return_stats=True),
            lambda: F.layer_norm_with_stats(X, 3),
            "layer_norm_with_stats",
        ),
        (
            lambda: F.dropout(X, 0.5, seed=1, return_bitmask=True),
            lambda: F.dropout_with_bitmask(X, 0.5, seed=1),
            "dropout_with_bitmask",
        ),
        (
            lambda: F.dropout_add_layer_norm(X, X, 3, p=0.5, seed=1, return_stats=True),
            lambda: F.dropout_add_layer_norm_with_stats(X, X, 3, p=0.5, seed=1),
            "dropout_add_layer_norm_with_stats",
        ),
    ]


@pytest.mark.parametrize("case", range(4))
def test_old_flags_still_work_but_warn_naming_the_replacement(case):
    old, new, replacement = _deprecated_calls()[case]
    with pytest.warns(DeprecationWarning, match=replacement) as caught:
        got = old()
    assert caught[0].filename == __file__  # points at the caller, not at normdrop
    expected = new()
    assert len(got) == len(expected)
    for a, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, e)


def test_flag_set_to_false_warns_and_returns_the_plain_result():
    with pytest.warns(DeprecationWarning, match="batch_norm_with_stats"):
        y = F.batch_norm(X, training=True, return_stats=False)
    np.testing.assert_array_equal(y, F.batch_norm(X, training=True))
    with pytest.warns(DeprecationWarning, match="dropout_with_bitmask"):
        y = F.dropout(X, 0.5, seed=1, return_bitmask=False)
    np.testing.assert_array_equal(y, F.dropout(X, 0.5, seed=1))
    with pytest.warns(DeprecationWarning, match="dropout_add_layer_norm_with_stats"):
        pair = F.dropout_add_layer_norm(X, X, 3, p=0.5, seed=1, return_stats=False)
    assert len(pair) == 2


def test_plain_calls_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.batch_norm(X, training=True)
        F.layer_norm(X, 3)
        F.dropout(X, 0.5, seed=1)
        F.dropout_add_layer_norm(X, X, 3, p=0.5, seed=1)
        layers = [normdrop.BatchNorm1d(3), normdrop.LayerNorm(3), normdrop.Dropout(0.5, seed=1)]
        for layer in layers:
            layer(X)
            layer.backward(np.ones_like(X))


def test_dropout_threshold_matches_the_mask_rule():
    """The bitmask tests above rely on this rule: kept where the word >= floor(p * 2**32)."""
    assert dropout_threshold(0.25) == 2**30
