"""Random Loss Weighting, RLW (Lin, Ye, Xu, Shi & Zhang, 2021).

"Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task Learning"
(TMLR 2022, arXiv:2111.10603): at every step draw ``z ~ N(0, I_C)`` and weight
the losses by::

    λ = softmax(z)

Scales are ``C · λ`` (mean 1). RLW reads no loss value: it is a baseline that any
method worth its cost should beat, and scale-free by construction.

Reproducibility (ours): the draw for the ``n``-th finite step is a pure function of
``(seed, n, component)``: a counter-based generator (an integer hash of the three,
32-bit uniforms, Box-Muller), computed with tensor ops on the losses' device. So the
state is one counter, a step with a non-finite loss consumes no draw (it leaves no
trace), a replay over a trace reproduces the live weights exactly, a block of ``T``
steps equals ``T`` single steps, batched configurations each follow their own seed, and
no host synchronisation or host-to-device copy happens per step (a stateful
``torch.Generator`` would need one on CUDA, and its stream differs between devices).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._registry import register_method
from ._state import TensorStateMethod

__all__ = ["RLW", "standard_normal"]

_DTYPE = torch.float64
_MASK = 0xFFFFFFFF
_SEED_LIMIT = 2**32


def _hash32(x: Tensor) -> Tensor:
    """32-bit integer hash (Wellons' hash-prospector 2-round family) on int64 tensors
    holding values in [0, 2**32); constants < 2**31 so no product overflows int64."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK
    return x ^ (x >> 15)


def standard_normal(seed: Tensor, count: Tensor, num_components: int) -> Tensor:
    """Standard-normal draws ``(..., K, C)`` for draw number ``count`` (``(..., K, 1)``,
    exact integers as float64) of generator ``seed`` (``(K, 1)`` int64)."""
    n = count.to(torch.int64)
    lo, hi = n & _MASK, (n >> 32) & _MASK
    idx = torch.arange(2 * num_components, dtype=torch.int64, device=count.device)
    x = _hash32(_hash32(_hash32(_hash32(idx + 1) ^ seed) ^ lo) ^ hi)  # (K, 2C)
    u = (x.to(_DTYPE) + 0.5) * 2.0**-32  # uniform in (0, 1)
    u1, u2 = u[..., :num_components], u[..., num_components:]
    return (-2.0 * u1.log()).sqrt() * torch.cos(2.0 * math.pi * u2)


@register_method("rlw")
class RLW(TensorStateMethod):
    """Random loss weighting: ``λ = softmax(z)``, ``z ~ N(0, I)`` drawn per finite step.

    Args:
        num_components: number of loss components ``C``.
        seed: the generator's seed, an int in ``[0, 2**32)``.
    """

    example_params: ClassVar[dict[str, Any]] = {"seed": 7}
    invalid_params = (("seed", -1), ("seed", 2**32), ("seed", 1.5))
    sweep_configs = (
        {"seed": 1, "adjustment_range": 0.05},
        {"seed": 2},
        {"seed": 3, "adjustment_range": 1.5},
    )
    order_equivariant = False  # draw c goes to column c, whatever its name
    state_fields = ("_count",)
    config_fields = ("_seed",)

    def __init__(self, num_components: int, *, seed: int = 0) -> None:
        super().__init__(num_components)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _SEED_LIMIT:
            raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
        self.seed = seed
        self._seed = torch.full((1, 1), seed, dtype=torch.int64)
        self._count = torch.zeros(1, 1, dtype=_DTYPE)  # finite steps observed

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def scales(self) -> Tensor:
        z = standard_normal(self._seed, self._count, self.num_components)
        return self._row(self.num_components * torch.softmax(z, -1))

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        self._count = self._count + finite.to(_DTYPE)

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        return {"draw": self._row(self._count[:, 0])}

    def scales_and_observe(
        self, losses: Tensor, finite: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Block maths, bit for bit the per-step loop: the draw number before each row is
        the counter plus the finite rows before it (exact integers), and the counter-based
        draws of all rows are computed at once."""
        n = losses.size(0)
        f = finite.to(_DTYPE)
        done = f.cumsum(0)  # finite rows up to and including each row (exact integers)
        count = self._count.unsqueeze(0) + (done - f).view(n, 1, 1)  # (T, K, 1)
        z = standard_normal(self._seed, count, self.num_components)  # (T, K, C)
        self._count = self._count + done[-1]
        return self.num_components * torch.softmax(z, -1), {"draw": count[..., 0]}
