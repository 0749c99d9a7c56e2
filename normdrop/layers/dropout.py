"""Dropout: inverted dropout with reproducible, backend-independent masks."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import numpy as np

from normdrop import _validation
from normdrop._docstrings import fill_doc
from normdrop._ops import _inputs, dropout
from normdrop.errors import ShapeError
from normdrop.layers._seeded import SEEDED_CHECKS, SeededCalls
from normdrop.layers.module import Module
from normdrop.protocol import Array, ArrayT, Backend
from normdrop.random import draw_seed

__all__ = ["Dropout"]


@fill_doc
class Dropout(SeededCalls, Module):
    """Inverted dropout, as ``torch.nn.Dropout``, with a counter-based mask.

    In training each element is zeroed with probability ``p`` and survivors
    are scaled by ``1 / (1 - p)``; in evaluation (or with ``p == 0``) the input
    itself is returned. Call ``k`` (counting training calls from 0) uses the mask
    of ``normdrop.functional.dropout_mask(shape, p, seed=self.seed, call=k)``.

    Parameters
    ----------
    %(layer.p)s
    %(layer.seed)s
    %(layer.backend)s

    Attributes
    ----------
    p : float
        The drop probability. Assignable, as PyTorch's (a schedule of dropout rates sets
        it between calls), and checked as the constructor checks it; the next forward
        call uses it, and a backward pass uses its own forward's.
    seed : int
        The seed of every mask.
    %(layer.call_count)s

    Notes
    -----
    ``seed`` and ``call_count`` are the layer's extra state
    (:meth:`get_extra_state`): :meth:`save` stores them, so a run resumed from
    a checkpoint draws the same masks as an uninterrupted one.

    Examples
    --------
    >>> import numpy as np
    >>> import normdrop
    >>> drop = normdrop.Dropout(0.5, seed=0)
    >>> drop(np.ones(8))
    array([0., 2., 2., 2., 2., 0., 2., 0.])
    >>> x = np.ones(3)
    >>> drop.eval()(x) is x
    True
    """

    def __init__(
        self, p: float = 0.5, *, seed: int | None = None, backend: str | Backend | None = None
    ) -> None:
        p = _validation.dropout_probability(p)
        seed = draw_seed() if seed is None else _validation.seed(seed)
        super().__init__(backend)
        self.p = p
        self.seed = seed
        self.call_count = 0

    _plan_attributes = Module._plan_attributes | {"p"}
    _attribute_checks = MappingProxyType(SEEDED_CHECKS)

    @property
    def dropout_rate(self) -> float:
        """The drop probability (the Deepbox API's name for :attr:`p`)."""
        return self.p

    @dropout_rate.setter
    def dropout_rate(self, value: float) -> None:
        self.p = value

    def forward(self, x: ArrayT) -> ArrayT:
        """Apply dropout in training; return ``x`` itself in evaluation.

        Parameters
        ----------
        x : array
            Any shape; the mask of call ``call_count`` follows its C-order index.

        Returns
        -------
        array
            Shape and dtype of ``x``: the kept elements scaled by ``1 / (1 - p)``,
            the others 0 (``x`` itself in evaluation or with ``p == 0``).
        """
        original = x
        be, x = _inputs.prepare("x", x, self._backend_choice)
        plan = self._plan
        if plan is None or plan.backend is not be:
            plan = self.__dict__["_plan"] = dropout.make_plan(be, self.p, self.training, True)
        if not plan.active:  # evaluation, or p == 0: the identity
            self.save_for_backward(None, None, x.shape, x.dtype, plan)
            if self.training:
                self._claim_call()
            return _inputs.caller_array(original, x)
        call = self._claim_call()
        try:
            y, bitmask = dropout.forward(plan, x, self.seed, call)
        except BaseException:
            self._release_call(call)
            raise
        self.save_for_backward(call, bitmask, x.shape, y.dtype, plan)
        return y

    @fill_doc
    def compute_backward(self, grad_output: Array, *saved: Any) -> tuple[Array, dict[str, Array]]:
        """The input gradient (the forward's mask and scale applied to ``grad_output``).

        Parameters
        ----------
        %(layer.compute_backward)s

        Returns
        -------
        grad_input : array
            ``grad_output`` with the mask and scale applied.
        param_grads : dict
            Empty: dropout has no parameters.

        Raises
        ------
        ShapeError
            ``grad_output`` does not have the last input's shape.
        """
        call, bitmask, shape, dtype, plan = saved
        if type(grad_output) is not np.ndarray:  # a ragged list raises ShapeError here
            grad_output = _inputs.coerce(grad_output, "grad_output")
        got = grad_output.shape if type(grad_output) is np.ndarray else np.shape(grad_output)
        if got != shape:
            raise ShapeError(
                f"Dropout.backward expected grad_output of shape {shape} (the last "
                f"input's), got {tuple(got)}"
            )
        if call is None:  # evaluation, or p == 0: the identity
            dx = grad_output
        else:
            be, dy = _inputs.prepare("grad_output", grad_output, self._backend_choice)
            if be is not plan.backend:  # the mask is regenerated on that backend
                plan, bitmask = dropout.make_plan(be, plan.p, True, False), None
            # bitmask is None where the backend keeps none: the mask is regenerated
            dx = dropout.backward(plan, dy, self.seed, call, bitmask)
        if getattr(dx, "dtype", None) != dtype:
            # the input's dtype, as BatchNorm, LayerNorm and PyTorch
            dx = dx.astype(dtype) if hasattr(dx, "astype") else np.asarray(dx, dtype=dtype)
        return dx, {}

    def extra_repr(self) -> str:
        """The drop probability in PyTorch's format (``repr`` shows it)."""
        return f"p={self.p}"
