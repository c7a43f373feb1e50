"""SoftAdapt (Heydari, Thompson & Mehmood, 2019).

"SoftAdapt: Techniques for Adaptive Loss Weighting of Neural Networks with Multi-Part
Loss Functions" (arXiv:1912.12355)::

    s_c(t) = L_c(t) - L_c(t-1)                       (rate of change, finite difference)
    ŝ_c    = s_c / Σ_j |s_j|                         (normalised variant)
    α_c    = exp(β s_c) / Σ_j exp(β s_j)             (plain)
    α_c    = L_c exp(β s_c) / Σ_j L_j exp(β s_j)     (loss-weighted variant)

A component whose loss rises (or falls slowest) gets more weight; ``β > 0`` sets how
sharply. Scales are ``C · α`` (mean 1). The scales in force at step ``t`` use the two
last finite steps before ``t`` (the controller computes them before observing step ``t``).

Scale awareness (as in the paper): the plain rate ``s`` carries the losses' units, so
``β`` must suit their magnitude; the normalised variant (default) divides by ``Σ|s|`` and
is invariant to a common rescaling of the losses. The loss-weighted variant multiplies
by the loss itself, so components of larger magnitude get more weight (by design).

Against the authors' package (``softadapt``; docs/ADAPTIVE_LOSS.md, "Against their
references"), which differs in three places: its rate is a finite-difference slope over a
window of the last ``n`` losses (ours: the two-point ``L(t-1) - L(t-2)``); its
loss-weighted variant multiplies by the window's mean loss (ours: the last loss); its
normalised variant divides by ``Σ s`` (ours: ``Σ |s|``; a signed sum flips every rate's sign
when the losses fall overall). Its softmax also adds 1e-8 to the denominator.

Robustness (ours): steps with a non-finite loss leave the state unchanged; before two
finite steps the rates are 0 (neutral); a zero ``Σ|s|`` gives neutral rates; in the
loss-weighted variant a non-positive loss counts as 0 and, if every ``L_j exp(β s_j)``
is 0, the scales are neutral.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from adaptive._checks import check_number

from ._method import last_rows
from ._registry import register_method
from ._state import TensorStateMethod

__all__ = ["SoftAdapt"]

_DTYPE = torch.float64


@register_method("softadapt")
class SoftAdapt(TensorStateMethod):
    """SoftAdapt: softmax of the losses' rate of change.

    Args:
        num_components: number of loss components ``C``.
        beta: softmax sharpness ``β >= 0`` (default 0.1; 0 gives equal weights).
        normalized: divide the rates by ``Σ_j |s_j|`` (the paper's normalised SoftAdapt).
        loss_weighted: multiply by the current loss (the paper's loss-weighted SoftAdapt).
    """

    example_params: ClassVar[dict[str, Any]] = {"beta": 1.0, "loss_weighted": True}
    aggressive_params: ClassVar[dict[str, Any]] = {"beta": 5.0}
    invalid_params = (("beta", -0.5), ("beta", math.inf), ("normalized", "yes"))
    sweep_configs = (
        {"beta": 5.0, "adjustment_range": 0.05},
        {"beta": 0.1},
        {"beta": 1.0, "normalized": False, "loss_weighted": True, "adjustment_range": 1.5},
    )
    state_fields = ("_prev", "_rate")
    config_fields = ("_beta", "_normalized", "_loss_weighted")

    def __init__(
        self,
        num_components: int,
        *,
        beta: float = 0.1,
        normalized: bool = True,
        loss_weighted: bool = False,
    ) -> None:
        super().__init__(num_components)
        self.beta = check_number("beta", beta, low=0.0)
        for name, flag in (("normalized", normalized), ("loss_weighted", loss_weighted)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be a bool, got {flag!r}")
        self.normalized = normalized
        self.loss_weighted = loss_weighted
        c = num_components
        self._beta = torch.full((1, 1), self.beta, dtype=_DTYPE)
        self._normalized = torch.full((1, 1), float(normalized), dtype=_DTYPE)
        self._loss_weighted = torch.full((1, 1), float(loss_weighted), dtype=_DTYPE)
        self._prev = torch.full((1, c), math.nan, dtype=_DTYPE)  # last finite losses
        self._rate = torch.zeros(1, c, dtype=_DTYPE)  # s(t-1) = L(t-1) - L(t-2)

    def params(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "normalized": self.normalized,
            "loss_weighted": self.loss_weighted,
        }

    def scales(self) -> Tensor:
        return self._row(self._scales_of(self._rate, self._prev))

    def _scales_of(self, rate: Tensor, prev: Tensor) -> Tensor:
        """Scales from a rate and the last losses, ``(..., K, C)`` (any leading dims)."""
        s = rate
        den = s.abs().sum(-1, keepdim=True)
        norm = torch.where(den > 0, s / den, 0.0)
        s = torch.where(self._normalized > 0, norm, s)
        z = self._beta * s
        # log(L_c) + β s_c for the loss-weighted variant; non-positive L_c -> weight 0.
        last = torch.where(prev.isfinite(), prev, 1.0)  # 1 until a step is seen
        pos = last > 0
        logl = torch.where(pos, last.log(), -math.inf)
        lw = self._loss_weighted > 0
        z = torch.where(lw, z + logl, z)
        none = (lw & ~pos).all(-1, keepdim=True)  # every weight 0: neutral
        z = torch.where(none, 0.0, z)
        return self.num_components * torch.softmax(z, -1)

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        seen = self._prev.isfinite()  # False until the first finite step
        rate = torch.where(seen, losses - self._prev, 0.0)
        self._rate = torch.where(finite, rate, self._rate)
        self._prev = torch.where(finite, losses, self._prev)

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        return {"rate": self._row(self._rate)}

    def scales_and_observe(
        self, losses: Tensor, finite: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Block maths, bit for bit the per-step loop: the last finite losses and the rate
        in force at each row are forward-filled from the finite rows before it."""
        n = losses.size(0)
        k, c = self._rate.shape
        last, before = last_rows(finite)  # the last finite row <= t / < t (0: the state)
        x = losses.unsqueeze(1).expand(n, k, c)
        prev_table = torch.cat([self._prev.unsqueeze(0), x])  # (T + 1, K, C)
        prev = prev_table[before]  # the last finite losses before each row
        rate = torch.where(prev.isfinite(), x - prev, 0.0)  # each row's rate, if finite
        rate_table = torch.cat([self._rate.unsqueeze(0), rate])
        in_force = rate_table[before]
        scales = self._scales_of(in_force, prev)
        self._prev = prev_table[last[-1]].clone()
        self._rate = rate_table[last[-1]].clone()
        return scales, {"rate": in_force}
