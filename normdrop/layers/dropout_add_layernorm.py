"""DropoutAddLayerNorm: dropout, residual add and LayerNorm as one layer (fused kernels)."""

from __future__ import annotations

from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np

from normdrop import _validation
from normdrop._docstrings import fill_doc
from normdrop._ops import _inputs, fused, layer_norm
from normdrop.errors import BackwardBeforeForwardError
from normdrop.layers import _devices
from normdrop.layers._row_affine import RowAffine, row_affine_options
from normdrop.layers._seeded import SEEDED_CHECKS, SeededCalls
from normdrop.layers.module import Module
from normdrop.protocol import Array, ArrayT, Backend
from normdrop.random import draw_seed

__all__ = ["DropoutAddLayerNorm"]


@fill_doc
class DropoutAddLayerNorm(RowAffine, SeededCalls, Module):
    """``r = dropout(x) + residual``, ``y = layer_norm(r)``: a transformer block's epilogue.

    One call does what ``Dropout``, an add and ``LayerNorm`` do, in one pass over
    memory where the backend has the fused kernel. Call ``k`` (counting training
    calls from 0) drops the elements that ``Dropout(p, seed=self.seed)`` drops at its
    call ``k``. Its checkpoints are a ``LayerNorm``'s (``weight``, ``bias``), so a
    ``torch.nn.LayerNorm``'s ``state_dict`` loads into it.

    The layer takes two inputs and gives two outputs: ``layer(x, residual)`` returns
    ``(y, r)``, and ``layer.backward(grad_y, grad_r=None)`` returns
    ``(grad_x, grad_residual)`` (``grad_residual`` is ``None`` when the forward had no
    residual). In a :class:`~normdrop.layers.Sequential` it takes part in ``train``,
    ``eval``, ``to``, ``zero_grad``, ``grads`` and checkpoints, but a Sequential's
    forward passes one array from layer to layer, so call this layer's forward and
    backward yourself: a Sequential raises :class:`~normdrop.ShapeError` where it
    would hand ``(y, r)`` to a next layer. As its last layer it gets the previous
    layer's output and no residual, and the Sequential returns ``(y, r)``.

    Parameters
    ----------
    %(layer.normalized_shape)s
    %(layer.p)s
    %(layer.eps)s
    %(layer.elementwise_affine)s
    %(layer.seed)s
    dtype : {"float32", "float64"}, default "float32"
        Dtype of the parameters.
    %(layer.backend)s

    Attributes
    ----------
    p : float
        The drop probability; assignable, as :attr:`Dropout.p <normdrop.Dropout.p>`.
    seed : int
    %(layer.call_count)s
    weight, bias : array of shape normalized_shape or None
    %(layer.grads)s

    Notes
    -----
    ``seed`` and ``call_count`` are the layer's extra state, as in ``Dropout``
    (:meth:`get_extra_state`): :meth:`save` stores them, so a run resumed from a
    checkpoint draws the same masks as an uninterrupted one. A call that raises
    changes no state; in a :class:`~normdrop.layers.Sequential` whose forward
    raises, ``call_count`` is put back as well.

    Examples
    --------
    >>> import numpy as np
    >>> import normdrop
    >>> block = normdrop.DropoutAddLayerNorm(4, p=0.5, seed=0)
    >>> y, r = block(np.ones((1, 4)), np.arange(4.0)[None])
    >>> r
    array([[0., 3., 4., 5.]])
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        p: float = 0.5,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        seed: int | None = None,
        dtype: str | np.dtype = "float32",
        backend: str | Backend | None = None,
    ) -> None:
        options = row_affine_options(normalized_shape, eps, elementwise_affine, bias, dtype)
        p = _validation.dropout_probability(p)
        seed = draw_seed() if seed is None else _validation.seed(seed)
        super().__init__(backend)
        self._init_row_affine(options)
        self.p = p
        self.seed = seed
        self.call_count = 0

    _plan_attributes = Module._plan_attributes | {"eps", "p"}
    _attribute_checks = MappingProxyType(
        {"eps": partial(_validation.positive_finite, "eps"), **SEEDED_CHECKS}
    )

    # Two inputs and two outputs where every other layer has one of each: a deliberate
    # departure from Module's one-array call (see the class docstring).
    def __call__(  # type: ignore[override]
        self, x: ArrayT, residual: ArrayT | None = None
    ) -> tuple[ArrayT, ArrayT]:
        """Same as :meth:`forward`, after checking that both inputs are on the layer's device."""
        if type(x) is not np.ndarray or self._array_backend.device != "cpu":
            self._check_device("the input", x)
        if residual is not None and (
            type(residual) is not np.ndarray or self._array_backend.device != "cpu"
        ):
            self._check_device("the residual", residual)
        return self.forward(x, residual)

    def forward(self, x: ArrayT, residual: ArrayT | None = None) -> tuple[ArrayT, ArrayT]:
        """Return ``(y, r)``: ``r = dropout(x) + residual`` (training) and ``y = layer_norm(r)``.

        Parameters
        ----------
        x : array
            Its trailing dimensions equal ``normalized_shape``.
        residual : array, optional
            Shape and dtype of ``x``; ``None`` adds nothing.

        Returns
        -------
        y, r : array
            Shape and dtype of ``x``. Without dropout (evaluation, ``p == 0``) and
            without ``residual``, ``r`` is ``x`` itself.
        """
        original = x
        be, x = _inputs.prepare("x", x, self._backend_choice)
        plan = self._plan
        if plan is None or plan.norm.backend is not be:
            plan = fused.make_plan(
                be, self.normalized_shape, self.weight, self.bias, self.eps, self.p, self.training
            )
            self.__dict__["_plan"] = plan
        layer_norm.rows(x, self.normalized_shape)
        if residual is not None:
            residual = _inputs.check_partner(be, "residual", residual, x)
        call = self._claim_call() if self.training else self.call_count
        try:
            y, r, mean, rstd, bitmask = fused.forward(plan, x, residual, self.seed, call)
        except BaseException:
            if self.training:
                self._release_call(call)
            raise
        drop = plan.dropout.active
        self.save_for_backward(
            r, mean, rstd, bitmask, call if drop else None, residual is not None, plan
        )
        return y, _inputs.caller_array(original, r)  # x itself without dropout and residual

    def backward(
        self, grad_output: Array, grad_r: Array | None = None
    ) -> tuple[Array, Array | None]:
        """Return ``(grad_x, grad_residual)`` of the last forward pass.

        Parameter gradients are added into the arrays of :attr:`grads` (in place)
        until :meth:`zero_grad`.

        Parameters
        ----------
        grad_output : array
            Gradient of the loss with respect to ``y``.
        grad_r : array, optional
            Gradient of the loss with respect to ``r`` from elsewhere (the next
            block's residual path).

        Returns
        -------
        grad_x : array
        grad_residual : array or None
            ``None`` when the forward had no residual.

        Raises
        ------
        BackwardBeforeForwardError
            No forward pass has run since construction (or unpickling, or :meth:`to`).
        BackendArrayError
            ``grad_output`` or ``grad_r`` lives on another device than the layer,
            or is an array no backend takes (e.g. a torch tensor).
        """
        for name, grad in (("grad_output", grad_output), ("grad_r", grad_r)):
            if grad is not None and (
                type(grad) is not np.ndarray or self._array_backend.device != "cpu"
            ):
                self._check_device(name, grad)
                _devices.check_array_kind(self, name, grad)
        saved = self._saved
        if saved is None:
            raise BackwardBeforeForwardError(
                f"{type(self).__name__}.backward() called before any forward pass"
            )
        grad_inputs, param_grads = self.compute_backward(grad_output, *saved, grad_r=grad_r)
        self._accumulate(param_grads)
        return grad_inputs

    def compute_backward(
        self, grad_output: Array, *saved: Any, grad_r: Array | None = None
    ) -> tuple[tuple[Array, Array | None], dict[str, Array]]:
        """Input and parameter gradients of the forward pass that saved ``saved``.

        Parameters
        ----------
        grad_output : array
            Gradient of the loss with respect to ``y``.
        *saved
            What the last :meth:`forward` saved.
        grad_r : array, optional
            Gradient of the loss with respect to ``r`` from elsewhere.

        Returns
        -------
        (grad_x, grad_residual) : tuple
            ``grad_residual`` is ``None`` when the forward had no residual.
        param_grads : dict
            ``weight`` and ``bias`` gradients, for the parameters the layer has.
        """
        r, mean, rstd, bitmask, call, has_residual, plan = saved
        be = plan.norm.backend
        grad_output = _inputs.prepare_grad(be, grad_output, r)
        if grad_r is not None:
            grad_r = _inputs.check_partner(be, "grad_r", grad_r, r)
        dx, dres, dweight, dbias = fused.backward(
            plan, grad_output, r, mean, rstd, grad_r, self.seed, call or 0, bitmask, has_residual
        )
        return (dx, dres), self._affine_grads(dweight, dbias)

    def extra_repr(self) -> str:
        """The constructor arguments in PyTorch's format (``repr`` shows them)."""
        return (
            f"{self.normalized_shape}, p={self.p}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )
