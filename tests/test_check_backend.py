"""``normdrop.testing.check_backend`` finds what does not conform: missing members (all
named at once), wrong signatures, wrong results of required kernels, and wrong optional
capabilities where a backend has them."""

from __future__ import annotations

import numpy as np
import pytest

from normdrop._conformance.optional import reference_batch_norm_forward
from normdrop.backends.numpy_backend import NumpyBackend
from normdrop.capabilities import takes_keyword
from normdrop.protocol import REQUIRED_MEMBERS
from normdrop.testing import check_backend

REF = NumpyBackend()


class Plugin(NumpyBackend):
    """A conforming backend to break one member at a time."""

    name = "plugin"


def test_a_conforming_backend_passes():
    check_backend(Plugin())


def test_every_missing_member_is_named():
    class Partial:
        name = "partial"
        device = "cpu"

        def accepts(self, x):
            return True

    with pytest.raises(AssertionError) as info:
        check_backend(Partial())
    message = str(info.value)
    assert "'partial'" in message and "normdrop.protocol.Backend" in message
    for member in REQUIRED_MEMBERS:
        assert (member in message) == (member not in ("name", "device", "accepts")), member


def test_a_wrong_signature_is_named():
    class NoOffset(Plugin):
        def dropout_forward(self, x, threshold, scale, seed, call, out, bitmask):
            return super().dropout_forward(x, threshold, scale, seed, call, out, bitmask)

    with pytest.raises(AssertionError, match=r"dropout_forward\(.*protocol's arguments"):
        check_backend(NoOffset())


def test_a_bad_device_is_refused():
    class OnTpu(Plugin):
        device = "tpu"

    with pytest.raises(AssertionError, match="device must be 'cpu' or 'cuda'"):
        check_backend(OnTpu())


class UnbiasedVariance(Plugin):
    def channel_moments(self, x):
        mean, var = super().channel_moments(x)
        n = x.shape[0] * x.shape[2]
        return mean, var * n / (n - 1)


class FloatStatistics(Plugin):
    def layer_norm_forward(self, x, weight, bias, eps, out):
        out, mean, rstd = super().layer_norm_forward(x, weight, bias, eps, out)
        return out, mean.astype(np.float16), rstd


class LateWords(Plugin):
    def philox_words(self, n, seed, call, offset=0):
        return super().philox_words(n, seed, call, offset + 1)


class BigEndianBits(Plugin):
    def dropout_forward(self, x, threshold, scale, seed, call, out, bitmask, offset=0):
        out = super().dropout_forward(x, threshold, scale, seed, call, out, bitmask, offset)
        if bitmask is not None:
            bitmask[...] = np.packbits(np.unpackbits(bitmask, bitorder="little"))
        return out


class ReturnsAList(Plugin):
    def channel_backward_reduce(self, dy, x, mean):
        return tuple(list(v) for v in super().channel_backward_reduce(dy, x, mean))


@pytest.mark.parametrize(
    ("plugin", "match"),
    [
        (UnbiasedVariance, "channel_moments result 1"),
        (FloatStatistics, "layer_norm_forward result 1"),
        (LateWords, "Philox4x32-10 known-answer test failed"),
        (BigEndianBits, "dropout_forward's bitmask"),
        (ReturnsAList, "channel_backward_reduce result 0 .* is not an array"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_a_wrong_kernel_is_named(plugin, match):
    with pytest.raises(AssertionError, match=match):
        check_backend(plugin())


def test_without_bitmask_support_no_bitmask_is_checked():
    class NoBits(BigEndianBits):
        supports_bitmask = False

        def dropout_apply_bitmask(self, dy, bitmask, scale, out):
            raise NotImplementedError

    check_backend(NoBits())


# ----------------------------------------------------------------------------- optional
class IgnoresResidual(Plugin):
    def dropout_add_layer_norm_forward(self, x, residual, *args):
        return REF.dropout_add_layer_norm_forward(x, None, *args)


class NoRunningUpdate(Plugin):
    def batch_norm_forward(self, x, rm, rv, w, b, use_batch, update, momentum, eps, out):
        mean, var = self.channel_moments(x) if use_batch else (rm, rv)
        rstd = 1 / np.sqrt(var + eps)
        scale = rstd * w if w is not None else rstd
        shift = b if b is not None else np.zeros_like(mean)
        return self.channel_affine(x, mean, scale, shift, out), mean, rstd


class AllocatesOnTheWrongDevice(Plugin):
    def accepts(self, x):
        return isinstance(x, np.ndarray) and x.dtype != np.float64

    def alloc_like(self, x, shape, dtype):
        return np.empty(shape, dtype)


class BitmaskFlagNotABool(Plugin):
    supports_bitmask = "yes"


@pytest.mark.parametrize(
    ("plugin", "match"),
    [
        (IgnoresResidual, "dropout_add_layer_norm_forward"),
        (NoRunningUpdate, "batch_norm_forward's running_mean"),
        (AllocatesOnTheWrongDevice, "alloc_like must return an array the backend accepts"),
        (BitmaskFlagNotABool, "supports_bitmask must be a bool"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_a_wrong_optional_member_is_named(plugin, match):
    with pytest.raises(AssertionError, match=match):
        check_backend(plugin())


def test_a_wrong_optional_signature_is_named():
    class ShortFused(Plugin):
        def batch_norm_forward(self, x, running_mean, running_var):
            raise AssertionError("never called")

    with pytest.raises(AssertionError, match=r"batch_norm_forward\(.*protocol's arguments"):
        check_backend(ShortFused())


# ----------------------------------------------------------------------------- optional keywords
class WholeBatchNorm(Plugin):
    """Conforming ``batch_norm_backward`` and ``counter``/``accumulate`` keywords, composed from
    the reference kernels."""

    def batch_norm_forward(self, *args, counter=None):
        result = reference_batch_norm_forward(self, *args)
        if counter is not None and args[6]:  # update
            counter[...] += 1
        return result

    def batch_norm_backward(self, dy, x, mean, rstd, weight, training, out, accumulate=None):
        sum_dy, sum_dy_xmu = self.channel_backward_reduce(dy, x, mean)
        a = rstd if weight is None else rstd * weight
        count = x.shape[0] * x.shape[2]
        b = -a * rstd**2 * sum_dy_xmu / count if training else 0 * a
        shift = -a * sum_dy / count if training else 0 * a
        out = self.channel_backward_elemt(dy, x, mean, a, b, shift, out)
        if weight is None:
            return out, None, None
        dw, db = (sum_dy_xmu * rstd).astype(weight.dtype), sum_dy.astype(weight.dtype)
        if accumulate is None:
            return out, dw, db
        accumulate[0][...] += dw
        accumulate[1][...] += db
        return out, accumulate[0], accumulate[1]


class IgnoresCounter(WholeBatchNorm):
    def batch_norm_forward(self, *args, counter=None):
        return reference_batch_norm_forward(self, *args)


class WrongDbias(WholeBatchNorm):
    def batch_norm_backward(self, *args, **kwargs):
        out, dw, db = super().batch_norm_backward(*args, **kwargs)
        return out, dw, None if db is None else -db


class CopiesInsteadOfAccumulating(WholeBatchNorm):
    def batch_norm_backward(self, *args, accumulate=None):
        out, dw, db = super().batch_norm_backward(*args, accumulate=accumulate)
        return out, None if dw is None else dw.copy(), None if db is None else db.copy()


def test_a_backend_with_the_optional_keywords_passes():
    check_backend(WholeBatchNorm())


@pytest.mark.parametrize(
    ("plugin", "match"),
    [
        (IgnoresCounter, r"batch_norm_forward\(update=True\) must add 1 to counter"),
        (WrongDbias, "batch_norm_backward's dbias"),
        (CopiesInsteadOfAccumulating, "must return the buffers it added into"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_a_wrong_optional_keyword_or_backward_is_named(plugin, match):
    with pytest.raises(AssertionError, match=match):
        check_backend(plugin())


def test_takes_keyword_reads_the_kernel_signature():
    assert takes_keyword(WholeBatchNorm(), "batch_norm_forward", "counter")
    assert takes_keyword(WholeBatchNorm(), "batch_norm_backward", "accumulate")
    assert not takes_keyword(Plugin(), "batch_norm_backward", "accumulate")  # no such member
    assert not takes_keyword(NoRunningUpdate(), "batch_norm_forward", "counter")
    assert not takes_keyword(WholeBatchNorm(), "batch_norm_forward", "weight")  # not declared
