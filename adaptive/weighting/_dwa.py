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
  A zero *numerator* is a legitimate ratio of 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ._base import WeightingMethod, decode_tensor, encode_tensor, register_method

__all__ = ["DWA"]

_DTYPE = torch.float64


@register_method("dwa")
class DWA(WeightingMethod):
    """Dynamic Weight Averaging.

    Args:
        num_components: number of loss components ``K``.
        temperature: softmax temperature ``T > 0`` (paper default 2). Larger ``T``
            gives softer (closer to 1) scales.

    State: running sum and count of the current epoch's finite losses, the means of the
    last two completed epochs, the number of completed epochs, and the ratios/scales in
    force for the current epoch.
    """

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
        k = num_components
        self._sum = torch.zeros(k, dtype=_DTYPE)
        self._count = torch.zeros((), dtype=_DTYPE)
        self._mean_prev = torch.full((k,), math.nan, dtype=_DTYPE)  # L̄(e-1)
        self._mean_prev2 = torch.full((k,), math.nan, dtype=_DTYPE)  # L̄(e-2)
        self._ratio = torch.ones(k, dtype=_DTYPE)
        self._scales = torch.ones(k, dtype=_DTYPE)
        self._epochs_done = 0

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def scales(self) -> Tensor:
        return self._scales

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        self._sum = self._sum + torch.where(finite, losses, 0.0)
        self._count = self._count + finite  # float64 + bool -> float64

    def end_epoch(self) -> None:
        mean = self._sum / self._count  # count == 0 -> NaN (0/0): undefined epoch mean
        self._mean_prev2 = self._mean_prev
        self._mean_prev = mean
        self._sum = torch.zeros_like(self._sum)
        self._count = torch.zeros_like(self._count)
        self._epochs_done += 1
        if self._epochs_done >= 2:  # host int, no sync
            ratio = self._mean_prev / self._mean_prev2
            self._ratio = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
            self._scales = self.num_components * torch.softmax(self._ratio / self.temperature, 0)

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        return {"ratio": self._ratio}

    def state_tensors(self) -> dict[str, Tensor]:
        return {
            "_sum": self._sum,
            "_count": self._count,
            "_mean_prev": self._mean_prev,
            "_mean_prev2": self._mean_prev2,
            "_ratio": self._ratio,
            "_scales": self._scales,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch_sum": encode_tensor(self._sum),
            "epoch_count": encode_tensor(self._count)[0],
            "mean_prev": encode_tensor(self._mean_prev),
            "mean_prev2": encode_tensor(self._mean_prev2),
            "ratio": encode_tensor(self._ratio),
            "scales": encode_tensor(self._scales),
            "epochs_done": self._epochs_done,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        k = self.num_components
        epochs = state["epochs_done"]
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"state entry 'epochs_done' must be an int >= 0, got {epochs!r}")
        new = {
            "_sum": decode_tensor(state["epoch_sum"], size=k, name="epoch_sum"),
            "_count": decode_tensor([state["epoch_count"]], size=1, name="epoch_count").reshape(()),
            "_mean_prev": decode_tensor(state["mean_prev"], size=k, name="mean_prev"),
            "_mean_prev2": decode_tensor(state["mean_prev2"], size=k, name="mean_prev2"),
            "_ratio": decode_tensor(state["ratio"], size=k, name="ratio"),
            "_scales": decode_tensor(state["scales"], size=k, name="scales"),
        }
        for attr, t in new.items():
            setattr(self, attr, t)
        self._epochs_done = epochs
