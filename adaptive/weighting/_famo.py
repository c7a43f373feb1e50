"""FAMO: Fast Adaptive Multitask Optimization (Liu, Liu, Ji, Stone & Liu, NeurIPS 2023).

"FAMO: Fast Adaptive Multitask Optimization" (arXiv:2306.03792), Algorithm 1, with the
authors' reference code's update and defaults (``famo.py``: ``gamma = 0.01``,
``w_lr = 0.025``) but not all of it: their ``min_losses`` (a known lower bound subtracted
from each loss, 0 by default) is not offered, and their clip of the shared parameters'
gradient norm (``max_norm = 1`` after the weighted backward) acts on the model's
gradient, not on the weights, so it is left to the trainer (docs/ADAPTIVE_LOSS.md,
"Against their references"). Task logits
``ξ`` (init 0), ``z = softmax(ξ)``; the step minimises ``Σ_i z_i log L_i / c`` with
``c = Σ_j z_j / L_j`` held constant, i.e. applies the weights::

    ω_i = (z_i / L_i) / Σ_j (z_j / L_j)          (scales = C · ω, mean 1)

After the optimiser step the same batch's losses ``L'`` give the log-loss decrease
``δ_i = log L_i − log L'_i``, and ``ξ`` takes one Adam step (lr ``w_lr``, weight decay
``gamma``, betas 0.9/0.999, eps 1e-8) on the gradient ``J_softmax(ξ)ᵀ δ = z ⊙ (δ − zᵀδ)``
(the reference code's ``autograd.grad(softmax(w), w, grad_outputs=δ)``); tasks whose loss
fell least gain weight. As in the reference code, ``L`` is taken as ``L + 1e-8``.

The weights of step ``t`` depend on ``L(t)`` itself (computed at the step, never stored
before it is observed) and the logits move only once ``L'(t)`` is known: live through
``AdaptiveLossWeighting.after_step(extras={"loss_after": ...})``, in replay from the
recorded ``loss_after/<c>`` columns, through the same :meth:`FAMO.observe_after`.

Robustness (ours): a step whose losses are not all finite and > -1e-8 applies the weights
``z`` (no ``1/L`` factor) and does not update the logits; an after-step record that is not
finite and > -1e-8 does not update them either.

Replay exactness: with the recorded ``loss_after`` the replay reproduces a live FAMO run
bit for bit. But ``δ`` measures what the step *taken with the applied weights* did, so a
dry-run (or a replay over a run trained with other weights) updates the logits from steps
FAMO did not choose: it is open loop (docs/ADAPTIVE_LOSS.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from adaptive._checks import check_number

from ._method import MethodInputs
from ._registry import register_method
from ._state import TensorStateMethod

__all__ = ["FAMO"]

_DTYPE = torch.float64
_EPS_LOSS = 1e-8  # the reference code's shift of the losses inside the logs
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam defaults (reference code)


@register_method("famo")
class FAMO(TensorStateMethod):
    """FAMO: balance the components' log-loss decrease with O(1) extra cost per step.

    Args:
        num_components: number of loss components ``C``.
        w_lr: Adam learning rate of the task logits (reference code: 0.025).
        gamma: weight decay of the logits (reference code: 0.01), ``>= 0``.
    """

    requires = ("loss_after",)
    title = "FAMO"
    example_params: ClassVar[dict[str, Any]] = {"w_lr": 0.05, "gamma": 0.001}
    aggressive_params: ClassVar[dict[str, Any]] = {"w_lr": 0.5, "gamma": 0.0}
    invalid_params = (("w_lr", 0.0), ("w_lr", -1.0), ("gamma", -0.1), ("gamma", math.inf))
    sweep_configs = (
        {"w_lr": 0.5, "adjustment_range": 0.05},
        {"w_lr": 0.025},
        {"w_lr": 0.1, "gamma": 0.0, "adjustment_range": 1.5},
    )
    state_fields = ("_xi", "_m", "_v", "_t", "_prev")
    config_fields = ("_w_lr", "_gamma")

    def __init__(self, num_components: int, *, w_lr: float = 0.025, gamma: float = 0.01) -> None:
        super().__init__(num_components)
        self.w_lr = check_number("w_lr", w_lr, low=0.0, low_open=True)
        self.gamma = check_number("gamma", gamma, low=0.0)
        c = num_components
        self._w_lr = torch.full((1, 1), self.w_lr, dtype=_DTYPE)
        self._gamma = torch.full((1, 1), self.gamma, dtype=_DTYPE)
        self._xi = torch.zeros(1, c, dtype=_DTYPE)  # task logits
        self._m = torch.zeros(1, c, dtype=_DTYPE)  # Adam moments
        self._v = torch.zeros(1, c, dtype=_DTYPE)
        self._t = torch.zeros(1, 1, dtype=_DTYPE)  # Adam steps taken
        self._prev = torch.full((1, c), math.nan, dtype=_DTYPE)  # L(t), awaiting L'(t)

    def params(self) -> dict[str, Any]:
        return {"w_lr": self.w_lr, "gamma": self.gamma}

    def scales(self) -> Tensor:
        """``C · softmax(ξ)``: the weights before the step's ``1/L`` factor."""
        return self._row(self.num_components * torch.softmax(self._xi, -1))

    def scales_at(self, inputs: MethodInputs) -> Tensor:
        z = torch.softmax(self._xi, -1)
        d = inputs.losses + _EPS_LOSS
        ok = inputs.finite & (d > 0).all()
        q = z / torch.where(ok, d, 1.0)
        w = torch.where(ok, q / q.sum(-1, keepdim=True), z)
        return self._row(self.num_components * w)

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        raise TypeError("famo needs the losses after the optimiser step: use observe_inputs")

    def observe_inputs(self, inputs: MethodInputs) -> None:
        d = inputs.losses + _EPS_LOSS
        ok = inputs.finite & (d > 0).all()
        self._prev = torch.where(ok, d, math.nan).expand_as(self._xi).clone()

    def observe_after(self, extras: Mapping[str, Tensor]) -> None:
        after = extras["loss_after"] + _EPS_LOSS
        delta = self._prev.log() - after.log()  # NaN where L or L' is missing or <= 0
        ok = delta.isfinite().all(-1, keepdim=True)  # (K, 1)
        z = torch.softmax(self._xi, -1)
        d = torch.where(ok, delta, 0.0)
        grad = z * (d - (z * d).sum(-1, keepdim=True))  # softmax Jacobianᵀ δ
        # one torch.optim.Adam step (weight decay, bias correction), where ok
        grad = grad + self._gamma * self._xi
        t = self._t + 1.0
        m = self._m.lerp(grad, 1.0 - _BETA1)
        v = self._v * _BETA2 + (1.0 - _BETA2) * grad * grad
        bc1 = 1.0 - _BETA1**t
        bc2_sqrt = (1.0 - _BETA2**t).sqrt()
        xi = self._xi - (self._w_lr / bc1) * m / (v.sqrt() / bc2_sqrt + _ADAM_EPS)
        self._xi = torch.where(ok, xi, self._xi)
        self._m = torch.where(ok, m, self._m)
        self._v = torch.where(ok, v, self._v)
        self._t = torch.where(ok, t, self._t)
        self._prev = torch.full_like(self._prev, math.nan)

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        return {"logit": self._row(self._xi)}
