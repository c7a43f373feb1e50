"""IMTL-L, the loss-balance half of Impartial Multi-Task Learning (Liu et al., ICLR 2021).

"Towards Impartial Multi-task Learning": each component gets a learnable scale ``s_c``
and the loss ``e^{s_c} L_c - s_c``; the model sees the weight ``e^{s_c}``. The
gradient with respect to ``s_c`` is ``e^{s_c} L_c - 1``, zero at
``s_c = -log L_c``: at equilibrium the weighted losses are all 1 (weights ∝ 1/L_c), so
the result does not depend on each loss's units. We take plain gradient steps on ``s``
ourselves (no autograd, no optimiser of the trainer)::

    g_c = clip(e^{s_c} L_c - 1, -grad_clip, grad_clip)
    s_c ← s_c - lr · g_c

and apply scales ``C · e^{s_c} / Σ_j e^{s_j}`` (mean 1). The scales in force at step
``t`` come from ``s`` before step ``t`` is observed. How fast ``s`` moves depends on the
losses' magnitude (``e^s L`` is in the loss's units) until it reaches the equilibrium.
The clip keeps every update finite, and it binds whenever ``e^s L > 1 + grad_clip``
(> 2 at the default), not only on outliers: with ``init="zero"`` from the first step for
every loss above 2, until ``s`` has come down (docs/ADAPTIVE_LOSS.md, "Against their
references"). A large ``grad_clip`` gives the paper's plain gradient steps.

``init="first"`` (ours, like the uncertainty method's anchor) starts each ``s_c`` at
``-log L_c`` of its first positive finite loss, the optimum for that step, instead of
0: with small losses (say 1e-3) the paper's start spends its first ``log(1/L)/lr``
steps raising every ``s`` alike before the weights move.

Robustness (ours): steps with a non-finite loss leave ``s`` unchanged; a negative loss
makes ``e^s L - s`` unbounded below, so such a component is held (``g = 0``); ``e^s L`` is
computed as ``exp(s + log L)`` (``L = 0`` gives ``g = -1``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from adaptive._checks import check_number

from ._registry import register_method
from ._state import TensorStateMethod

__all__ = ["IMTLL"]

INITS = ("zero", "first")

_DTYPE = torch.float64


@register_method("imtl_l")
class IMTLL(TensorStateMethod):
    """IMTL-L: learnable scales ``s`` minimising ``Σ_c e^{s_c} L_c - s_c``.

    Args:
        num_components: number of loss components ``C``.
        lr: gradient step size on ``s`` (> 0).
        grad_clip: bound on ``|e^s L - 1|`` per step (> 0).
        init: ``"zero"`` (the paper: ``s = 0``) or ``"first"`` (``s = -log`` of the
            first positive loss).
    """

    example_params: ClassVar[dict[str, Any]] = {"lr": 0.05, "init": "first"}
    aggressive_params: ClassVar[dict[str, Any]] = {"lr": 0.3}
    invalid_params = (
        ("lr", 0.0),
        ("lr", -0.1),
        ("grad_clip", 0.0),
        ("grad_clip", math.inf),
        ("init", "last"),
    )
    sweep_configs = (
        {"lr": 0.3, "adjustment_range": 0.05},
        {"lr": 0.01},
        {"lr": 0.1, "grad_clip": 0.5, "init": "first", "adjustment_range": 1.5},
    )
    state_fields = ("_s", "_seen")
    config_fields = ("_lr", "_grad_clip", "_init_first")

    def __init__(
        self,
        num_components: int,
        *,
        lr: float = 0.01,
        grad_clip: float = 1.0,
        init: str = "zero",
    ) -> None:
        super().__init__(num_components)
        self.lr = check_number("lr", lr, low=0.0, low_open=True)
        self.grad_clip = check_number("grad_clip", grad_clip, low=0.0, low_open=True)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS!r}, got {init!r}")
        self.init = init
        self._init_first = torch.full((1, 1), float(init == "first"), dtype=_DTYPE)
        self._lr = torch.full((1, 1), self.lr, dtype=_DTYPE)
        self._grad_clip = torch.full((1, 1), self.grad_clip, dtype=_DTYPE)
        self._s = torch.zeros(1, num_components, dtype=_DTYPE)
        self._seen = torch.zeros(1, num_components, dtype=_DTYPE)  # 1 once L > 0 was seen

    def params(self) -> dict[str, Any]:
        return {"lr": self.lr, "grad_clip": self.grad_clip, "init": self.init}

    def scales(self) -> Tensor:
        return self._row(self.num_components * torch.softmax(self._s, -1))

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        s = self._s
        grad = torch.where(losses > 0, (s + losses.log()).exp() - 1.0, -1.0)
        grad = torch.where(losses < 0, 0.0, grad)
        grad = torch.minimum(torch.maximum(grad, -self._grad_clip), self._grad_clip)
        step = s - self._lr * grad
        pos = finite & (losses > 0)
        start = pos & (self._seen == 0) & (self._init_first > 0)
        self._s = torch.where(finite, torch.where(start, -losses.log(), step), s)
        self._seen = torch.where(pos, 1.0, self._seen)

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        return {"s": self._row(self._s)}
