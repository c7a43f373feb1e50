"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

"Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and
Semantics". With learnable log-variances ``s_c = log σ_c²`` the objective is::

    J(s) = Σ_c ( exp(-s_c) · L_c + s_c )

Unlike the usual implementation, ``s`` is *not* a model parameter: the controller
updates it itself from the raw losses with the analytic gradient
``∂J/∂s_c = 1 − exp(−s_c) · L_c`` and its own Adam optimiser. No autograd graph is
touched and nothing is added to the model's optimiser. The stationary point is
``s_c = log L_c`` (for ``L_c > 0``); ``s`` is clamped to ``[s_min, s_max]`` after every
update (projected Adam) so a loss going to zero (or a negative loss) cannot blow the
weight up.

Why Adam and not SGD: the gradient ``1 − e^{−s}L`` scales with the loss magnitude,
which differs by orders of magnitude between components and over training. SGD with a
single learning rate would either crawl on small losses or overshoot / diverge on large
ones; Adam's per-component normalisation makes each update at most about ``lr`` in
``s`` (i.e. a relative weight change of about ``lr``) whatever the loss scale.

Scales: ``scale_c = exp(−s_c) / mean_j exp(−s_j)`` (computed as ``K·softmax(−s)``).
The weights actually applied are ``base_c·(1 + clamp(scale_c − 1, −r, r)) ≥ 0``, so the
total loss ``Σ w_c L_c`` never goes negative for non-negative losses, unlike ``J``.
``J`` (evaluated at the ``s`` used for the step) is reported as diagnostic
``objective``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ._base import WeightingMethod, decode_tensor, encode_tensor, register_method

__all__ = ["UncertaintyWeighting"]

_DTYPE = torch.float64


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@register_method("uncertainty")
class UncertaintyWeighting(WeightingMethod):
    """Homoscedastic uncertainty weighting with a self-contained Adam on ``s``.

    Args:
        num_components: number of loss components ``K``.
        lr: Adam learning rate on the log-variances (``> 0``, default ``1e-2``).
        s_min: lower bound of ``s`` (default ``-10``: weight ratio up to ``e^10``).
        s_max: upper bound of ``s`` (default ``10``); ``s_min < s_max``.
        beta1: Adam first-moment decay, ``0 <= beta1 < 1`` (default ``0.9``).
        beta2: Adam second-moment decay, ``0 <= beta2 < 1`` (default ``0.999``).
        eps: Adam epsilon ``> 0`` (default ``1e-8``).

    State: ``s`` (init 0, clamped into the bounds), Adam moments ``m``, ``v``, the
    number of updates ``t`` (skipped steps do not count) and the bias-correction
    products ``beta1**t``, ``beta2**t`` (kept as running products).
    """

    def __init__(
        self,
        num_components: int,
        *,
        lr: float = 1e-2,
        s_min: float = -10.0,
        s_max: float = 10.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(num_components)
        self.lr = _check_number("lr", lr)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.s_min = _check_number("s_min", s_min)
        self.s_max = _check_number("s_max", s_max)
        if not self.s_min < self.s_max:
            raise ValueError(f"s_min must be < s_max, got s_min={s_min!r}, s_max={s_max!r}")
        self.beta1 = _check_number("beta1", beta1)
        if not 0.0 <= self.beta1 < 1.0:
            raise ValueError(f"beta1 must be in [0, 1), got {beta1!r}")
        self.beta2 = _check_number("beta2", beta2)
        if not 0.0 <= self.beta2 < 1.0:
            raise ValueError(f"beta2 must be in [0, 1), got {beta2!r}")
        self.eps = _check_number("eps", eps)
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        k = num_components
        self._s = torch.zeros(k, dtype=_DTYPE).clamp(self.s_min, self.s_max)
        self._m = torch.zeros(k, dtype=_DTYPE)
        self._v = torch.zeros(k, dtype=_DTYPE)
        self._t = torch.zeros((), dtype=_DTYPE)
        # beta1**t and beta2**t kept as running products (plain multiplications, no pow).
        self._b1_pow = torch.ones((), dtype=_DTYPE)
        self._b2_pow = torch.ones((), dtype=_DTYPE)
        self._weighted_cache: tuple[Tensor, Tensor, Tensor] | None = None

    def params(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "s_min": self.s_min,
            "s_max": self.s_max,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
        }

    @property
    def log_var(self) -> Tensor:
        """Current log-variances ``s`` (float64, ``(K,)``)."""
        return self._s

    def scales(self) -> Tensor:
        return self.num_components * torch.softmax(-self._s, 0)

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        s, m, v = self._s, self._m, self._v
        cached = self._weighted_cache
        if cached is not None and cached[0] is s and cached[1] is losses:
            weighted = cached[2]  # exp(-s)·L already computed by diagnostics() this step
        else:
            weighted = torch.exp(-s) * losses
        self._weighted_cache = None
        grad = 1.0 - weighted
        m_new = torch.lerp(m, grad, 1.0 - self.beta1)
        v_new = torch.lerp(v, grad * grad, 1.0 - self.beta2)
        b1_pow = self._b1_pow * self.beta1
        b2_pow = self._b2_pow * self.beta2
        m_hat = m_new / (1.0 - b1_pow)
        v_hat = v_new / (1.0 - b2_pow)
        s_new = (s - self.lr * m_hat / (v_hat.sqrt() + self.eps)).clamp(self.s_min, self.s_max)
        self._s = torch.where(finite, s_new, s)
        self._m = torch.where(finite, m_new, m)
        self._v = torch.where(finite, v_new, v)
        self._t = self._t + finite  # float64 + bool -> float64
        self._b1_pow = torch.where(finite, b1_pow, self._b1_pow)
        self._b2_pow = torch.where(finite, b2_pow, self._b2_pow)

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        s = self._s
        weighted = torch.exp(-s) * losses
        # Host-side identity check only (no sync): lets observe() reuse exp(-s)·L.
        self._weighted_cache = (s, losses, weighted)
        return {"log_var": s, "objective": (weighted + s).sum()}

    def state_tensors(self) -> dict[str, Tensor]:
        return {
            "_s": self._s,
            "_m": self._m,
            "_v": self._v,
            "_t": self._t,
            "_b1_pow": self._b1_pow,
            "_b2_pow": self._b2_pow,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "log_var": encode_tensor(self._s),
            "adam_m": encode_tensor(self._m),
            "adam_v": encode_tensor(self._v),
            "adam_t": int(self._t),
            "adam_beta1_pow": encode_tensor(self._b1_pow)[0],
            "adam_beta2_pow": encode_tensor(self._b2_pow)[0],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        k = self.num_components
        t = state["adam_t"]
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"state entry 'adam_t' must be an int >= 0, got {t!r}")
        s = decode_tensor(state["log_var"], size=k, name="log_var")
        m = decode_tensor(state["adam_m"], size=k, name="adam_m")
        v = decode_tensor(state["adam_v"], size=k, name="adam_v")
        b1_pow = decode_tensor([state["adam_beta1_pow"]], size=1, name="adam_beta1_pow")
        b2_pow = decode_tensor([state["adam_beta2_pow"]], size=1, name="adam_beta2_pow")
        self._s, self._m, self._v = s, m, v
        self._t = torch.tensor(float(t), dtype=_DTYPE)
        self._b1_pow = b1_pow.reshape(())
        self._b2_pow = b2_pow.reshape(())
