"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

"GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
Networks", eqs. (1)-(2). With task weights ``w_i`` (mean 1), the raw losses ``L_i(t)``,
their first values ``L_i(0)`` and ``g_i = ‖∇_W L_i‖`` on the shared parameters ``W``::

    G_i   = w_i g_i                         (weighted gradient norm)
    Ḡ     = mean_j G_j
    L̃_i   = L_i(t) / L_i(0)                (inverse training rate)
    r_i   = L̃_i / mean_j L̃_j
    L_grad = Σ_i | G_i − Ḡ r_i^α |          (the target Ḡ r_i^α is a constant)
    ∂L_grad/∂w_i = sign(G_i − Ḡ r_i^α) · g_i

then a gradient step on ``w`` and a renormalisation to ``Σ w = C``. A task that trains
slower (larger ``r_i``) gets a larger target gradient norm, hence more weight; ``α``
sets how strongly (paper: 1.5 for most tasks).

Ours (documented in docs/ADAPTIVE_LOSS.md): the step is ``lr · ∂L_grad/∂w_i / ḡ`` with
``ḡ = mean_j g_j`` so that ``lr`` is in weight units whatever the scale of the gradients
(the paper leaves this to the optimiser; LibMTL's Adam is scale-free too); weights are
floored at ``min_weight`` before the renormalisation; the update is skipped on a step
whose losses are not all finite, whose gradient norms are not all finite and >= 0, or
whose ``ḡ`` is 0; a component whose first finite loss is not positive has ``L̃ = 1``.

Live, the trainer computes ``g_i`` (one ``autograd.grad`` per component on the model's
last layer) before the weighted backward: the weights of step ``t`` come from the state
before step ``t`` and ``g(t)`` then updates it, like every other method. Replay reads
the recorded ``grad_norm/<c>``: it reproduces the live weights exactly on that trace,
but the norms themselves were produced by the weights that were applied, so a replay
over a run trained with other weights is open loop (docs/ADAPTIVE_LOSS.md).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from adaptive._checks import check_number

from ._method import MethodInputs
from ._registry import register_method
from ._state import TensorStateMethod

__all__ = ["GradNorm"]

_DTYPE = torch.float64


@register_method("gradnorm")
class GradNorm(TensorStateMethod):
    """GradNorm: balance the components' gradient norms by their training rates.

    Args:
        num_components: number of loss components ``C``.
        alpha: asymmetry ``α >= 0`` (paper default 1.5; 0 equalises the gradient norms).
        lr: step on the weights per update, in weight units (default 0.025).
        min_weight: floor of a weight before renormalisation, in ``(0, 1)`` (default 0.01).
    """

    requires = ("grad_norm",)
    title = "GradNorm"
    example_params: ClassVar[dict[str, Any]] = {"alpha": 0.5, "lr": 0.05}
    aggressive_params: ClassVar[dict[str, Any]] = {"alpha": 1.5, "lr": 0.2}
    invalid_params = (("alpha", -1.0), ("lr", 0.0), ("lr", math.nan), ("min_weight", 1.0))
    sweep_configs = (
        {"alpha": 1.5, "adjustment_range": 0.05},
        {"alpha": 0.0, "lr": 0.1},
        {"alpha": 3.0, "lr": 0.01, "min_weight": 0.2, "adjustment_range": 1.5},
    )
    state_fields = ("_w", "_l0")
    config_fields = ("_alpha", "_lr", "_min_weight")

    def __init__(
        self,
        num_components: int,
        *,
        alpha: float = 1.5,
        lr: float = 0.025,
        min_weight: float = 0.01,
    ) -> None:
        super().__init__(num_components)
        self.alpha = check_number("alpha", alpha, low=0.0)
        self.lr = check_number("lr", lr, low=0.0, low_open=True)
        self.min_weight = check_number(
            "min_weight", min_weight, low=0.0, high=1.0, low_open=True, high_open=True
        )
        c = num_components
        self._alpha = torch.full((1, 1), self.alpha, dtype=_DTYPE)
        self._lr = torch.full((1, 1), self.lr, dtype=_DTYPE)
        self._min_weight = torch.full((1, 1), self.min_weight, dtype=_DTYPE)
        self._w = torch.ones(1, c, dtype=_DTYPE)  # the weights, mean 1: the scales
        self._l0 = torch.full((1, c), math.nan, dtype=_DTYPE)  # L(0), NaN until seen

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "lr": self.lr, "min_weight": self.min_weight}

    def scales(self) -> Tensor:
        return self._row(self._w)

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        raise TypeError("gradnorm needs the per-component gradient norms: use observe_inputs")

    def observe_inputs(self, inputs: MethodInputs) -> None:
        losses, g = inputs.losses, inputs.extras["grad_norm"]  # (C,), (C,)
        c = self.num_components
        finite = inputs.finite
        self._l0 = torch.where(self._l0.isnan() & finite, losses, self._l0)
        g_bar = g.mean()
        ok = finite & g.isfinite().all() & (g >= 0).all() & (g_bar > 0)
        weighted = self._w * g  # G_i (K, C)
        ratio = losses / self._l0
        ratio = torch.where((self._l0 > 0) & (losses >= 0), ratio, 1.0)
        r = ratio / ratio.mean(-1, keepdim=True)
        target = weighted.mean(-1, keepdim=True) * r.pow(self._alpha)
        grad = torch.sign(weighted - target) * g / g_bar
        w = (self._w - self._lr * grad).clamp_min(self._min_weight)
        w = c * w / w.sum(-1, keepdim=True)
        ok = ok & w.isfinite().all(-1, keepdim=True)  # e.g. every loss 0: no rate to compare
        self._w = torch.where(ok, w, self._w)

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        return {"weight": self._row(self._w)}
