"""The ``cuda`` backend object: the protocol's methods, each delegating to one kernel module."""

from __future__ import annotations

from normdrop.registry import PickledByName

from . import _arrays, _batchnorm, _batchnorm_backward, _dropout, _dropout_add_norm, _layernorm
from ._runtime import SIMULATOR

__all__ = ["CudaBackend"]


class CudaBackend(PickledByName):
    """:class:`normdrop.protocol.Backend` on the GPU: numba.cuda kernels on CuPy arrays.

    Any ``__cuda_array_interface__`` array is accepted; kernels launch on CuPy's
    current stream and keep statistics on the device. Under the CUDA simulator
    (``NUMBA_ENABLE_CUDASIM=1``) the same kernels run on NumPy arrays.

    Besides the required members it offers the optional ``batch_norm_forward``,
    ``dropout_add_layer_norm_forward`` and ``alloc_like``; ``row_moments`` and
    ``philox_words`` are helpers beyond the protocol (the tests use them).

    Attributes
    ----------
    name : str
        ``"cuda"``.
    device : str
        ``"cuda"``.
    supports_bitmask : bool
        True: dropout keeps a packed bitmask for the backward pass.
    simulator : bool
        Whether the kernels run on the CUDA simulator.
    """

    name = "cuda"
    device = "cuda"
    supports_bitmask = True
    simulator = SIMULATOR

    # ----- arrays ---------------------------------------------------------------
    accepts = staticmethod(_arrays.accepts)

    asarray = staticmethod(_arrays.asarray)

    empty = staticmethod(_arrays.empty)

    alloc_like = staticmethod(_arrays.alloc_like)

    to_numpy = staticmethod(_arrays.to_numpy)

    ascontiguous = staticmethod(_arrays.ascontiguous)

    # ----- statistics -----------------------------------------------------------
    channel_moments = staticmethod(_batchnorm.channel_moments)

    row_moments = staticmethod(_layernorm.row_moments)

    # ----- forward transforms ---------------------------------------------------
    channel_affine = staticmethod(_batchnorm.channel_affine)

    layer_norm_forward = staticmethod(_layernorm.layer_norm_forward)

    batch_norm_forward = staticmethod(_batchnorm.batch_norm_forward)

    dropout_add_layer_norm_forward = staticmethod(_dropout_add_norm.dropout_add_layer_norm_forward)

    # ----- backward -------------------------------------------------------------
    channel_backward_reduce = staticmethod(_batchnorm_backward.channel_backward_reduce)

    channel_backward_elemt = staticmethod(_batchnorm_backward.channel_backward_elemt)

    #: Whole BatchNorm backward in three launches, no vector arithmetic on the host:
    #: ``(dy, x, mean, rstd, weight, training, out, accumulate=None) -> (out, dweight, dbias)``.
    batch_norm_backward = staticmethod(_batchnorm_backward.batch_norm_backward)

    layer_norm_backward = staticmethod(_layernorm.layer_norm_backward)

    # ----- dropout --------------------------------------------------------------
    philox_words = staticmethod(_dropout.philox_words)

    dropout_forward = staticmethod(_dropout.dropout_forward)

    dropout_mask = staticmethod(_dropout.dropout_mask)

    dropout_apply_bitmask = staticmethod(_dropout.dropout_apply_bitmask)

    def __repr__(self) -> str:
        return f"<normdrop cuda backend{' (CUDA simulator)' if self.simulator else ''}>"
