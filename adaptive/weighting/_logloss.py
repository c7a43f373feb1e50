"""Scale-invariant log-loss weighting.

Minimising ``Σ_c log L_c`` instead of ``Σ_c L_c`` is the "scale-invariant" (SI)
baseline of Navon et al., "Multi-Task Learning as a Bargaining Game" (ICML 2022,
Nash-MTL) and of Liu et al., "FAMO" (NeurIPS 2023). Its gradient is
``Σ_c ∇L_c / L_c``, i.e. the plain sum weighted by::

    λ_c ∝ 1 / L_c

so each component contributes its *relative* change, whatever its units: rescaling one
component's loss by any factor leaves the weighted gradient direction unchanged.
Scales are ``C · (1/L_c) / Σ_j (1/L_j)`` (mean 1), computed as a softmax of ``-m_c``
where ``m_c`` is ``log L_c`` of the last finite step (optionally an exponential moving
average of it, ``smoothing`` > 0, to calm noisy batches). The scales in force at step
``t`` use the steps before ``t`` (one-step lag: the controller computes scales before
observing a step).

Robustness (ours): steps with a non-finite loss leave the state unchanged; ``log L``
is undefined for ``L <= 0``, so such a component (and one never seen) gets the mean
log-weight of the others (neutral among them); with none defined the scales are 1.
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

__all__ = ["LogLossWeighting"]

_DTYPE = torch.float64


@register_method("logloss")
class LogLossWeighting(TensorStateMethod):
    """Scale-invariant log-loss weighting: weights ∝ 1 / L_c (minimises Σ log L_c).

    Args:
        num_components: number of loss components ``C``.
        smoothing: EMA coefficient in ``[0, 1)`` on ``log L_c`` (0: the last step only).
    """

    example_params: ClassVar[dict[str, Any]] = {"smoothing": 0.9}
    aggressive_params: ClassVar[dict[str, Any]] = {}
    invalid_params = (("smoothing", 1.0), ("smoothing", -0.1), ("smoothing", math.nan))
    sweep_configs = (
        {"adjustment_range": 0.05},
        {"smoothing": 0.9},
        {"smoothing": 0.5, "adjustment_range": 1.5},
    )
    state_fields = ("_log_loss",)
    config_fields = ("_smoothing",)

    def __init__(self, num_components: int, *, smoothing: float = 0.0) -> None:
        super().__init__(num_components)
        self.smoothing = check_number("smoothing", smoothing, low=0.0, high=1.0, high_open=True)
        self._smoothing = torch.full((1, 1), self.smoothing, dtype=_DTYPE)
        # (EMA of) log L_c; NaN until a positive finite loss is seen
        self._log_loss = torch.full((1, num_components), math.nan, dtype=_DTYPE)

    def params(self) -> dict[str, Any]:
        return {"smoothing": self.smoothing}

    def scales(self) -> Tensor:
        return self._row(self._scales_of(self._log_loss))

    def _scales_of(self, log_loss: Tensor) -> Tensor:
        """Scales from (the EMA of) log L, ``(..., K, C)`` (any leading dims)."""
        z = -log_loss
        ok = z.isfinite()
        n = ok.sum(-1, keepdim=True)
        masked = torch.where(ok, z, -math.inf)
        # log of the mean of exp(z) over the defined components (-inf when none)
        mean = masked.logsumexp(-1, keepdim=True) - n.to(_DTYPE).log()
        z = torch.where(ok, z, torch.where(n > 0, mean, 0.0))
        return self.num_components * torch.softmax(z, -1)

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        log = losses.log()  # NaN for L < 0, -inf for L = 0: not defined
        ok = finite & log.isfinite()
        prev = self._log_loss
        a = self._smoothing
        ema = torch.where(prev.isnan(), log, a * prev + (1.0 - a) * log)
        self._log_loss = torch.where(ok, ema, prev)

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        return {"log_loss": self._row(self._log_loss)}

    def scales_and_observe(
        self, losses: Tensor, finite: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Without smoothing (the default) the state is the last defined log L of each
        component: block maths, a per-component forward fill, bit for bit the per-step
        loop. With smoothing (an EMA, a recursion) the per-step loop runs."""
        if any(p["smoothing"] != 0.0 for p in self.config_params()):
            return super().scales_and_observe(losses, finite)
        n = losses.size(0)
        k, c = self._log_loss.shape
        log = losses.log()  # NaN for L < 0, -inf for L = 0: not defined
        ok = finite.unsqueeze(-1) & log.isfinite()  # (T, C)
        last, before = last_rows(ok)  # per component
        table = torch.cat([self._log_loss.unsqueeze(0), log.unsqueeze(1).expand(n, k, c)])
        in_force = table.gather(0, before.unsqueeze(1).expand(n, k, c))
        self._log_loss = table.gather(0, last[-1:].unsqueeze(1).expand(1, k, c))[0].clone()
        return self._scales_of(in_force), {"log_loss": in_force}
