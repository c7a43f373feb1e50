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

from ._base import (
    LazyState,
    WeightingMethod,
    decode_tensor,
    encode_tensor,
    register_method,
)

__all__ = ["UncertaintyWeighting"]

_DTYPE = torch.float64


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


_MAX_CHUNK = 1024  # steps per workspace (longer blocks run as consecutive chunks)


class _Workspace:
    """Scratch buffers of the step loop and their per-step views, reused across blocks.

    Creating a tensor view costs about as much as a small op, so the views the loop
    needs (inputs and history row of every step) are built once per controller, not once
    per block. Only scratch: the state is copied in and out of it on every block.
    """

    def __init__(self, capacity: int, k: int, c: int, device: torch.device) -> None:
        self.capacity = capacity
        self.key = (k, c, device)

        def empty(*shape: int) -> Tensor:
            return torch.empty(shape, dtype=_DTYPE, device=device)

        self.neg, self.hist = empty(capacity, c), empty(capacity + 1, k, c)
        # Per-step coefficients broadcast over components (less memory traffic for large
        # K); the constant bounds at full (K, C) size (broadcast operands iterate slower).
        self.w, self.f = empty(capacity, 2, k, 1), empty(capacity, k, 1)
        self.e, self.lo, self.hi = empty(capacity, k, 1), empty(k, c), empty(k, c)
        self.rows, self.us = self.neg.unbind(0), self.hist.unbind(0)
        self.ws, self.fs, self.es = self.w.unbind(0), self.f.unbind(0), self.e.unbind(0)
        self.mv, self.g2 = empty(2, k, c), empty(2, k, c)  # [m, v], [grad, grad²]
        self.m, self.v = self.mv.unbind(0)
        self.grad, self.grad_sq = self.g2.unbind(0)
        self.eu, self.d = empty(k, c), empty(k, c)
        self.one = torch.ones((), dtype=_DTYPE, device=device)
        self.zero = torch.zeros((), dtype=_DTYPE, device=device)


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
    products ``beta1**t``, ``beta2**t`` (kept as running products). Internally ``u = -s``
    is stored (exact negation); all state tensors carry a leading configuration dimension
    ``K`` (``1`` unless batched).

    Cost: the update is a nonlinear recursion, so a block of ``T`` steps loops over its
    steps; everything that does not depend on ``s`` (masks, bias corrections, step sizes,
    the scales and diagnostics) is computed for the whole block at once, leaving 8 tensor
    ops per step on preallocated buffers.
    """

    supports_batching = True

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
        c = num_components
        hp = {"_lr": self.lr, "_s_min": self.s_min, "_s_max": self.s_max}
        hp |= {"_beta1": self.beta1, "_beta2": self.beta2, "_eps": self.eps}
        for attr, value in hp.items():  # (K, 1) per-configuration tensors
            setattr(self, attr, torch.full((1, 1), value, dtype=_DTYPE))
        # The state holds u = -s (exact negation), so the step needs exp(u), not exp(-s).
        self._u = torch.zeros(1, c, dtype=_DTYPE).clamp(-self.s_max, -self.s_min)
        self._m = torch.zeros(1, c, dtype=_DTYPE)
        self._v = torch.zeros(1, c, dtype=_DTYPE)
        self._t = torch.zeros(1, 1, dtype=_DTYPE)
        # beta1**t and beta2**t kept as running products (plain multiplications, no pow).
        self._b1_pow = torch.ones(1, 1, dtype=_DTYPE)
        self._b2_pow = torch.ones(1, 1, dtype=_DTYPE)
        self._ws: _Workspace | None = None  # scratch buffers, not state

    def params(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "s_min": self.s_min,
            "s_max": self.s_max,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
        }

    def _row(self, t: Tensor) -> Tensor:
        return t[0] if self.num_configs == 1 else t

    @property
    def log_var(self) -> Tensor:
        """Current log-variances ``s`` (float64, ``(C,)``; ``(K, C)`` when batched)."""
        return self._row(0.0 - self._u)  # 0 - u: +0.0 rather than -0.0 for u = 0

    def scales(self) -> Tensor:
        return self._row(self.num_components * torch.softmax(self._u, -1))

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        self.scales_and_observe(losses.reshape(1, -1), finite.reshape(1))

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        s = 0.0 - self._u
        objective = (torch.exp(self._u) * losses + s).sum(-1)
        return {"log_var": self._row(s), "objective": self._row(objective)}

    def _coefficients(self, finite: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per-step Adam coefficients of a block, vectorised over steps and configs.

        Returns ``(w, f, e, b1_pow, b2_pow)``: ``w`` ``(T, 2, K, 1)`` the lerp weights of
        ``m`` and ``v`` (``1 - beta``; 0 on skipped steps), ``f``, ``e`` ``(T, K, 1)`` such
        that the step is ``u += m / (sqrt(v)·f + e)`` (``f = 0``, ``e = inf`` on skipped
        steps: an exact no-op), and the bias-correction products after the block.
        """
        n = finite.size(0)
        fin = finite.view(n, 1, 1)
        b1, b2 = self._beta1, self._beta2
        # beta**t as running products, advanced only on finite steps (x * 1.0 == x); a
        # cumprod is a sequential scan: bit-identical to T successive multiplications.
        p1 = torch.cat([self._b1_pow.unsqueeze(0), torch.where(fin, b1, 1.0)]).cumprod(0)[1:]
        p2 = torch.cat([self._b2_pow.unsqueeze(0), torch.where(fin, b2, 1.0)]).cumprod(0)[1:]
        # Adam with bias correction: u += (lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps), written
        # as u += m / (sqrt(v)·f + e) with f = 1/(sqrt(bc2)·lr/bc1), e = eps/(lr/bc1).
        step = self._lr / (1.0 - p1)
        f = torch.where(fin, 1.0 / ((1.0 - p2).sqrt() * step), 0.0)
        e = torch.where(fin, self._eps / step, math.inf)
        w = torch.where(fin.unsqueeze(1), torch.stack([1.0 - b1, 1.0 - b2]), 0.0)
        return w, f, e, p1[-1], p2[-1]

    def scales_and_observe(
        self, losses: Tensor, finite: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        n = losses.size(0)
        if n > _MAX_CHUNK:  # bounded workspace: chunks in sequence (same steps, same maths)
            parts = [
                self.scales_and_observe(losses[a : a + _MAX_CHUNK], finite[a : a + _MAX_CHUNK])
                for a in range(0, n, _MAX_CHUNK)
            ]
            state = {key: torch.cat([p[1][key] for p in parts]) for key in parts[0][1]}
            return torch.cat([p[0] for p in parts]), state
        c = self._u.size(1)
        ws = self._workspace(n)
        w, f, e, b1_pow, b2_pow = self._coefficients(finite)
        ws.w[:n].copy_(w)
        ws.f[:n].copy_(f)
        ws.e[:n].copy_(e)
        # -L, and 0 on skipped steps (their update is made a no-op by w, f, e above).
        torch.where(finite.unsqueeze(-1), losses, ws.zero, out=ws.neg[:n]).neg_()
        lo, hi = ws.lo, ws.hi
        lo.copy_(self._s_max).neg_()  # bounds of u = -s, at full (K, C) size
        hi.copy_(self._s_min).neg_()
        us, rows, ws_, fs, es = ws.us, ws.rows, ws.ws, ws.fs, ws.es
        eu, grad, grad_sq, g2, mv, m, v, d, one = (
            ws.eu,
            ws.grad,
            ws.grad_sq,
            ws.g2,
            ws.mv,
            ws.m,
            ws.v,
            ws.d,
            ws.one,
        )
        us[0].copy_(self._u)
        torch.stack([self._m, self._v], out=mv)  # (2, K, C): one lerp updates both moments
        # The sequential part: 8 tensor ops per step on preallocated buffers and views.
        for t in range(n):
            u = us[t]
            torch.exp(u, out=eu)
            torch.addcmul(one, eu, rows[t], out=grad)  # ∂J/∂s = 1 - e^{-s}·L
            torch.mul(grad, grad, out=grad_sq)
            mv.lerp_(g2, ws_[t])  # m, v moving averages
            torch.sqrt(v, out=d)
            torch.addcmul(es[t], d, fs[t], out=d)
            torch.addcdiv(u, m, d, out=d)  # u + step (s - step)
            torch.clamp(d, lo, hi, out=us[t + 1])  # projected onto [s_min, s_max]
        hist = ws.hist[: n + 1].clone()  # the workspace is reused by the next block
        self._u = hist[n]
        self._m, self._v = m.clone(), v.clone()
        self._t = self._t + finite.sum()
        self._b1_pow, self._b2_pow = b1_pow, b2_pow
        u_before = hist[:n]
        # scale_c = e^{-s_c} / mean_j e^{-s_j} = C·softmax(u)_c (written out: much faster
        # than torch.softmax over a short last dimension).
        ex = (u_before - u_before.amax(-1, keepdim=True)).exp_()  # in (0, 1], max 1
        scales = ex.mul_(c / ex.sum(-1, keepdim=True))  # sum in [1, C]

        def log_var() -> Tensor:  # the s behind each step's weights
            return 0.0 - u_before

        def objective() -> Tensor:  # Kendall's J at (s_t, L_t)
            return (torch.exp(u_before) * losses.unsqueeze(1) - u_before).sum(-1)

        return scales, LazyState({"log_var": log_var, "objective": objective})

    def _workspace(self, n: int) -> _Workspace:
        k, c = self._u.shape
        ws = self._ws
        if ws is None or ws.capacity < n or ws.key != (k, c, self._u.device):
            capacity = min(_MAX_CHUNK, 1 << max(0, n - 1).bit_length())
            ws = self._ws = _Workspace(capacity, k, c, self._u.device)
        return ws

    def select(self, k: int) -> UncertaintyWeighting:
        new = super().select(k)
        assert isinstance(new, UncertaintyWeighting)
        new._ws = None
        return new

    def state_tensors(self) -> dict[str, Tensor]:
        return {
            "_u": self._u,
            "_m": self._m,
            "_v": self._v,
            "_t": self._t,
            "_b1_pow": self._b1_pow,
            "_b2_pow": self._b2_pow,
        }

    def config_tensors(self) -> dict[str, Tensor]:
        return {
            "_lr": self._lr,
            "_s_min": self._s_min,
            "_s_max": self._s_max,
            "_beta1": self._beta1,
            "_beta2": self._beta2,
            "_eps": self._eps,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "log_var": encode_tensor(0.0 - self._u),
            "adam_m": encode_tensor(self._m),
            "adam_v": encode_tensor(self._v),
            "adam_t": int(self._t),
            "adam_beta1_pow": encode_tensor(self._b1_pow)[0],
            "adam_beta2_pow": encode_tensor(self._b2_pow)[0],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        c = self.num_components
        t = state["adam_t"]
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"state entry 'adam_t' must be an int >= 0, got {t!r}")
        s = decode_tensor(state["log_var"], size=c, name="log_var")
        m = decode_tensor(state["adam_m"], size=c, name="adam_m")
        v = decode_tensor(state["adam_v"], size=c, name="adam_v")
        b1_pow = decode_tensor([state["adam_beta1_pow"]], size=1, name="adam_beta1_pow")
        b2_pow = decode_tensor([state["adam_beta2_pow"]], size=1, name="adam_beta2_pow")
        self._u = (0.0 - s).reshape(1, c)
        self._m, self._v = m.reshape(1, c), v.reshape(1, c)
        self._t = torch.tensor([[float(t)]], dtype=_DTYPE)
        self._b1_pow = b1_pow.reshape(1, 1)
        self._b2_pow = b2_pow.reshape(1, 1)
        for attr, value in self.config_tensors().items():
            setattr(self, attr, value.cpu())
