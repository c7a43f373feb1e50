"""Loss-Balanced Task Weighting, LBTW (Liu, Liang & Gitter, AAAI 2019).

"Loss-Balanced Task Weighting to Reduce Negative Transfer in Multi-Task Learning"::

    λ_c(t) = (L_c(t) / L_c(0)) ** α,        α = 0.5 by default

where ``L_c(0)`` is the component's reference loss: a component that has already come
down a long way is down-weighted. Scales are ``C · λ / Σ_j λ_j`` (mean 1; the controller
applies them as a bounded change of the base weights).

Which step is ``L_c(0)`` (``reference``): ``"run"`` (default) keeps the run's first finite
step for the whole run, as the paper's notation reads; ``"epoch"`` takes each epoch's
first finite step, as the authors' code does (``if i == 0: initial_task_loss_list = ...``
inside the epoch loop of ``pcba_run.py``), so the ratio measures progress within the
epoch and every epoch starts from equal weights. With ``"epoch"``, :meth:`end_epoch`
forgets ``L(0)``; the ratio in force is kept until the next finite step sets the new
reference (one-step lag, below), so the first step of an epoch still carries the last
ratio of the previous one, and the next step is neutral (ratio 1).

The paper uses the current batch's ratio; here the scales in force at step ``t`` use the
last finite step before ``t`` (the controller computes scales before observing a step),
so the weights lag one step. The ratio makes the method invariant to the losses' units,
per component.

Robustness (ours): ``L_c(0)`` is the first *finite* step; steps with a non-finite loss
leave the state unchanged; a ratio is neutral (1) where ``L_c(0) <= 0`` or the loss is
negative (a ratio of such losses means nothing); a zero loss gets weight 0 (the
formula), and neutral scales if every loss is 0. The maths runs in log space
(``α · log r``), so large ratios cannot overflow.
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

__all__ = ["LBTW", "REFERENCES"]

REFERENCES = ("run", "epoch")

_DTYPE = torch.float64


@register_method("lbtw")
class LBTW(TensorStateMethod):
    """Loss-Balanced Task Weighting: weights ∝ (L_c(t) / L_c(0)) ** α.

    Args:
        num_components: number of loss components ``C``.
        alpha: exponent ``α >= 0`` (default 0.5; 0 gives equal weights).
        reference: which step is ``L(0)``: ``"run"`` (the run's first finite step,
            default) or ``"epoch"`` (each epoch's first finite step, the authors' code).
    """

    later_params: ClassVar[dict[str, Any]] = {"reference": "run"}  # checkpoints before it
    example_params: ClassVar[dict[str, Any]] = {"alpha": 1.0}
    aggressive_params: ClassVar[dict[str, Any]] = {"alpha": 2.0}
    invalid_params = (
        ("alpha", -0.5),
        ("alpha", math.nan),
        ("alpha", math.inf),
        ("reference", "batch"),
    )
    sweep_configs = (
        {"alpha": 2.0, "adjustment_range": 0.05},
        {"alpha": 0.5, "reference": "epoch"},
        {"alpha": 1.0, "adjustment_range": 1.5},
    )
    state_fields = ("_initial", "_ratio")
    config_fields = ("_alpha", "_per_epoch")

    def __init__(self, num_components: int, *, alpha: float = 0.5, reference: str = "run") -> None:
        super().__init__(num_components)
        self.alpha = check_number("alpha", alpha, low=0.0)
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES!r}, got {reference!r}")
        self.reference = reference
        c = num_components
        self._alpha = torch.full((1, 1), self.alpha, dtype=_DTYPE)
        self._per_epoch = torch.full((1, 1), float(reference == "epoch"), dtype=_DTYPE)
        self._initial = torch.full((1, c), math.nan, dtype=_DTYPE)  # L(0), NaN until seen
        self._ratio = torch.ones(1, c, dtype=_DTYPE)  # L(t-1) / L(0) in force

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "reference": self.reference}

    def end_epoch(self) -> None:
        """``reference="epoch"``: forget ``L(0)``; the epoch's first finite step sets it."""
        self._initial = torch.where(self._per_epoch > 0, math.nan, self._initial)

    def scales(self) -> Tensor:
        r = self._ratio
        pos = r > 0
        # α·log r; a zero ratio is weight 0 (log-weight -inf) unless α = 0 (r**0 = 1)
        z = torch.where(pos, self._alpha * r.log(), torch.where(self._alpha > 0, -math.inf, 0.0))
        z = torch.where(z.amax(-1, keepdim=True) == -math.inf, 0.0, z)  # all zero: neutral
        return self._row(self.num_components * torch.softmax(z, -1))

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        initial = torch.where(finite & self._initial.isnan(), losses, self._initial)
        ratio = losses / initial
        ok = (initial > 0) & (losses >= 0) & ratio.isfinite()
        self._initial = initial
        self._ratio = torch.where(finite, torch.where(ok, ratio, 1.0), self._ratio)

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        return {"ratio": self._row(self._ratio)}

    def scales_and_observe(
        self, losses: Tensor, finite: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Block maths, bit for bit the per-step loop: the ratio of every finite row at once
        (the same elementwise ops), then forward-filled: the ratio in force at row ``t`` is
        the one of the last finite row before ``t``."""
        n = losses.size(0)
        rows = torch.arange(n, device=losses.device)
        first = torch.where(finite, rows, n).amin()  # first finite row (n if none)
        has = first < n
        candidate = losses[first.clamp_max(n - 1)]  # (C,)
        pending = self._initial.isnan() & has
        initial = torch.where(pending, candidate, self._initial)  # (K, C) from row `first` on
        x = losses.unsqueeze(1)  # (T, 1, C)
        ratio = x / initial
        ok = (initial > 0) & (x >= 0) & ratio.isfinite()
        ratio = torch.where(ok, ratio, 1.0)  # (T, K, C), used on finite rows only
        # the ratio before row t: the last finite row < t (index 0 = the state before the block)
        last, before = last_rows(finite)
        k, c = self._ratio.shape
        table = torch.cat([self._ratio.unsqueeze(0), ratio.expand(n, k, c)])  # (T + 1, K, C)
        in_force = table[before]
        z = torch.where(
            in_force > 0,
            self._alpha * in_force.log(),
            torch.where(self._alpha > 0, -math.inf, 0.0),
        )
        z = torch.where(z.amax(-1, keepdim=True) == -math.inf, 0.0, z)
        scales = self.num_components * torch.softmax(z, -1)
        self._initial = initial
        self._ratio = table[last[-1]].clone()
        return scales, {"ratio": in_force}
