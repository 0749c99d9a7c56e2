"""A minimal third-party normdrop backend: the required members of normdrop.protocol.Backend.

The kernels are plain NumPy in float64, written for clarity. A real plugin replaces
each body with its own library's kernels and keeps the contracts stated in
normdrop.protocol. normdrop validates every argument and brings the data into the
canonical shapes before any kernel is called. Kernels only compute.

It offers none of the optional capabilities (normdrop.capabilities.OPTIONAL_MEMBERS):
normdrop composes the fused ops from these kernels, and keeps a packed bitmask
(``supports_bitmask`` defaults to True).

Register it in the plugin's pyproject.toml:

    [project.entry-points."normdrop.backends"]
    example = "normdrop_example:backend"
"""

from __future__ import annotations

import numpy as np

# The masks must equal normdrop's bit for bit: reuse (or port) the reference Philox.
from normdrop.backends.numpy_backend import philox4x32_10


def _philox_words(n, seed, call, offset):
    """The uint32 words of elements offset .. offset + n - 1: element i is word i % 4 of
    Philox(counter=(lo32(i // 4), hi32(i // 4), lo32(call), hi32(call)),
    key=(lo32(seed), hi32(seed)))."""
    if n == 0:
        return np.empty(0, np.uint32)
    first, last = offset // 4, (offset + n - 1) // 4
    block = np.arange(last - first + 1, dtype=np.uint64) + np.uint64(first)
    words = philox4x32_10(
        (block & np.uint64(0xFFFFFFFF), block >> np.uint64(32), call & 0xFFFFFFFF, call >> 32),
        (seed & 0xFFFFFFFF, seed >> 32),
    ).reshape(-1)
    start = offset - 4 * first
    return words[start : start + n]


class ExampleBackend:
    name = "example"  # the registry name (the entry point's name)
    device = "cpu"  # where its arrays live: "cpu" or "cuda"

    # ----- arrays: cheap checks, no imports ------------------------------------
    def accepts(self, x):
        return isinstance(x, np.ndarray)

    def asarray(self, x, dtype=None):
        return np.asarray(x, dtype=dtype)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype=dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def ascontiguous(self, x):
        return np.ascontiguousarray(x)

    # ----- BatchNorm: (N, C, L) data, float64 per-channel vectors ----------------
    def channel_moments(self, x):  # mean and biased variance; two passes, never E[x²] - E[x]²
        x = x.astype(np.float64)
        mean = x.mean(axis=(0, 2))
        return mean, np.square(x - mean[:, None]).mean(axis=(0, 2))

    def channel_affine(self, x, mean, scale, shift, out):  # compute in float64, round once
        out[...] = (x - mean[:, None]) * scale[:, None] + shift[:, None]
        return out

    def channel_backward_reduce(self, dy, x, mean):
        dy = dy.astype(np.float64)
        return dy.sum(axis=(0, 2)), ((x - mean[:, None]) * dy).sum(axis=(0, 2))

    def channel_backward_elemt(self, dy, x, mean, a, b, c, out):
        out[...] = a[:, None] * dy + b[:, None] * (x - mean[:, None]) + c[:, None]
        return out

    # ----- LayerNorm: (R, D) rows --------------------------------------------------
    def layer_norm_forward(self, x, weight, bias, eps, out):
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=1)
        rstd = 1.0 / np.sqrt(np.square(x64 - mean[:, None]).mean(axis=1) + eps)
        y = (x64 - mean[:, None]) * rstd[:, None]
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        out[...] = y
        return out, mean, rstd

    def layer_norm_backward(self, dy, x, mean, rstd, weight, out, param_grads):
        dy = dy.astype(np.float64)
        xhat = (x - mean[:, None]) * rstd[:, None]
        g = dy * weight if weight is not None else dy
        out[...] = rstd[:, None] * (
            g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True)
        )
        if not param_grads:
            return out, None, None
        return out, (dy * xhat).sum(axis=0), dy.sum(axis=0)

    # ----- dropout: Philox4x32-10 words, identical to every other backend --------
    def dropout_forward(self, x, threshold, scale, seed, call, out, bitmask, offset=0):
        # x may be a chunk: its element j (C order) is element offset + j of the whole array
        keep = _philox_words(x.size, seed, call, offset).reshape(x.shape) >= threshold
        out[...] = np.where(keep, x * scale, 0)
        if bitmask is not None:  # element i -> bit i % 8 of byte i // 8
            bitmask[...] = np.packbits(keep.reshape(-1), bitorder="little")
        return out

    def dropout_mask(self, n, threshold, seed, call):
        return _philox_words(n, seed, call, 0) >= threshold

    def dropout_apply_bitmask(self, dy, bitmask, scale, out):
        keep = np.unpackbits(bitmask, count=dy.size, bitorder="little").astype(bool)
        out[...] = np.where(keep.reshape(dy.shape), dy * scale, 0)
        return out


#: The object the entry point names.
backend = ExampleBackend()
