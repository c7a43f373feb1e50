"""An exponential moving average of the model's weights, evaluated beside the weights
themselves (splits `val_ema`, `valfree_ema`).

Why: free-run validation of the last weights is chaotic: a change as small as the learning
rate × (1 + 1e-5) moves the final valfree MPJPE of a seed by up to 16 %, so an outcome trial
needs many seeds to see a 5 % effect. Evaluated on the average of the last ~100 steps'
weights, the same placebo moves it by about 1 % (docs/OUTCOMES.md, "Where the noise comes
from"). The average never feeds back into training or the controllers.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

__all__ = ["WeightEMA"]


class WeightEMA:
    """`ema ← decay·ema + (1 − decay)·weights` after every optimizer step; buffers are copied.

    Runs on the model's device without a host sync; its state is the averaged model's
    `state_dict()`, so a resumed run continues the same average.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must lie in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.model.eval()

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average toward `model`'s current weights."""
        for avg, new in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.mul_(self.decay).add_(new.detach(), alpha=1.0 - self.decay)
        for avg, new in zip(self.model.buffers(), model.buffers(), strict=True):
            avg.copy_(new)

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)
