"""Dynamic Weight Averaging (Liu, Johns & Davison, CVPR 2019).

"End-to-End Multi-Task Learning with Attention", eq. (7)::

    λ_c(e) = K · exp(r_c(e-1) / T) / Σ_j exp(r_j(e-1) / T),
    r_c(e-1) = L̄_c(e-1) / L̄_c(e-2)

where ``L̄_c(e)`` is the mean raw training loss of component ``c`` over the steps of
epoch ``e``. Epochs 0 and 1 use ``λ = 1`` (as in the authors' mtan code and LibMTL).

Robustness rules (ours, documented in docs/ADAPTIVE_LOSS.md):

* only finite steps enter the epoch means (the controller skips a step if any loss is
  NaN/inf, so all components share the same step count);
* an epoch without any finite step has an undefined (NaN) mean;
* a ratio ``r_c`` that is not finite (zero or undefined denominator, undefined
  numerator, overflow) is replaced by the neutral value 1 for that component.
  A zero *numerator* is a legitimate ratio of 0;
* DWA's ratio means nothing for losses that can be negative (a log-likelihood, say): a
  ratio whose numerator is negative or whose denominator is not positive is neutral (1);
* :meth:`AdaptiveLossWeighting.restart` (the trainer calls it at a curriculum stage
  change, ``adaptive.restart_on_stage_change``) starts the history afresh, so epoch means
  from before a stage change are never compared with those after it (two neutral
  epochs follow, as at the start).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._registry import register_method
from ._state import StateField, TensorStateMethod

__all__ = ["DWA"]

_DTYPE = torch.float64


@register_method("dwa")
class DWA(TensorStateMethod):
    """Dynamic Weight Averaging.

    Args:
        num_components: number of loss components ``C``.
        temperature: softmax temperature ``T > 0`` (paper default 2). Larger ``T``
            gives softer (closer to 1) scales.

    State: running sum and count of the current epoch's finite losses, the means of the
    last two completed epochs, the number of completed epochs, and the ratios/scales in
    force for the current epoch. All state tensors carry a leading configuration
    dimension ``K`` (``1`` unless batched).

    Cost: the scales only change at :meth:`end_epoch`, so a block of ``T`` steps is a
    handful of tensor ops whatever ``T`` (the scales are returned as a broadcast view; the
    epoch sum is one sequential ``cumsum``, bit-identical to ``T`` successive additions).
    """

    example_params: ClassVar[dict[str, Any]] = {"temperature": 0.5}
    aggressive_params: ClassVar[dict[str, Any]] = {"temperature": 0.1}
    invalid_params = (("temperature", 0.0), ("temperature", -1.5), ("temperature", math.inf))
    sweep_configs = (
        {"temperature": 0.1, "adjustment_range": 0.05},
        {"temperature": 2.0},
        {"temperature": 0.5, "adjustment_range": 1.5},
    )
    state_fields = (
        StateField("_sum", key="epoch_sum"),
        StateField("_count", key="epoch_count", kind="float"),
        "_mean_prev",
        "_mean_prev2",
        "_ratio",
        "_scales",
        StateField("_epochs_done", kind="int"),  # host int: end_epoch reads it, no sync
    )
    config_fields = ("_temperature",)

    def __init__(self, num_components: int, *, temperature: float = 2.0) -> None:
        super().__init__(num_components)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        c = num_components
        self._temperature = torch.full((1, 1), self.temperature, dtype=_DTYPE)
        self._sum = torch.zeros(1, c, dtype=_DTYPE)
        self._count = torch.zeros(1, 1, dtype=_DTYPE)
        self._mean_prev = torch.full((1, c), math.nan, dtype=_DTYPE)  # L̄(e-1)
        self._mean_prev2 = torch.full((1, c), math.nan, dtype=_DTYPE)  # L̄(e-2)
        self._ratio = torch.ones(1, c, dtype=_DTYPE)
        self._scales = torch.ones(1, c, dtype=_DTYPE)
        self._epochs_done = 0

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def scales(self) -> Tensor:
        return self._row(self._scales)

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        self.scales_and_observe(losses.reshape(1, -1), finite.reshape(1))

    def scales_and_observe(
        self, losses: Tensor, finite: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        n = losses.size(0)
        k, c = self._scales.shape
        # Constant over the epoch: broadcast views, no per-step work.
        scales = self._scales.expand(n, k, c)
        ratio = self._ratio.expand(n, k, c)
        masked = torch.where(finite.view(n, 1, 1), losses.unsqueeze(1), 0.0)  # (T, 1, C)
        if k > 1:
            masked = masked.expand(n, k, c)
        # cumsum is a sequential scan: its last row is ((sum + x_0) + x_1) + ..., exactly
        # what T successive additions give.
        self._sum = torch.cat([self._sum.unsqueeze(0), masked]).cumsum(0)[-1]
        self._count = self._count + finite.sum()  # exact integer count, float64
        return scales, {"ratio": ratio}

    def end_epoch(self) -> None:
        mean = self._sum / self._count  # count == 0 -> NaN (0/0): undefined epoch mean
        self._mean_prev2 = self._mean_prev
        self._mean_prev = mean
        self._sum = torch.zeros_like(self._sum)
        self._count = torch.zeros_like(self._count)
        self._epochs_done += 1
        if self._epochs_done >= 2:  # host int, no sync
            ratio = self._mean_prev / self._mean_prev2
            # x * 0 == 0 exactly for finite x (NaN for NaN/±inf): non-finite -> neutral 1;
            # so are ratios of negative losses (meaningless for DWA).
            ok = ratio.mul(0.0).eq(0.0) & (self._mean_prev >= 0.0) & (self._mean_prev2 > 0.0)
            self._ratio = torch.where(ok, ratio, 1.0)
            self._scales = self.num_components * torch.softmax(self._ratio / self._temperature, -1)

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        return {"ratio": self._row(self._ratio)}
