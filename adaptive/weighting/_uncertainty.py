"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

"Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and
Semantics". With learnable log-variances ``s_c = log σ_c²`` the objective is::

    J(s) = Σ_c ( exp(-s_c) · L_c + s_c )

Unlike the usual implementation, ``s`` is *not* a model parameter: the controller
updates it itself from the raw losses with the analytic gradient
``∂J/∂s_c = 1 − exp(−s_c) · L_c`` and its own Adam optimiser. No autograd graph is
touched and nothing is added to the model's optimiser. The stationary point is
``s_c = log L_c`` (for ``L_c > 0``).

Settling, scale and robustness (ours; docs/ADAPTIVE_LOSS.md):

* ``s_c`` starts at ``log L_c`` of the first finite, positive loss of the component (the
  *anchor* ``a_c``), i.e. at equilibrium from the first step, instead of at 0 (which
  needed ``|log L| / lr`` steps to settle). Internally ``x_c = s_c − log a_c`` is updated
  from ``L_c / a_c``, so the whole recursion, and the weights, are invariant to a common
  rescaling of the losses (× 1e−8 and × 1e8 give the same weights). A component whose
  loss has not yet been finite and positive stays neutral.
* ``x`` is clamped to ``[s_min, s_max]`` (bounds *relative to the anchor*, within
  ``±20``) after every update (projected Adam).
* The gradient is clipped to ``[−grad_clip, 1]`` (it is ≤ 1 by construction): an outlier
  loss moves ``s`` at most like a loss of ``(1 + grad_clip)·σ²`` and cannot inflate
  Adam's second moment, which used to stall the update for thousands of steps after an
  outlier. With ``step_limit=True`` (default) each update moves ``s`` by at most ``lr``
  (Adam's step is clipped to ``±lr``), so a stretch of ``N`` steps of extreme losses costs
  at most ``N`` steps to come back from. The limit is not only an outlier guard: Adam's
  bias-corrected step ``lr·m̂/(√v̂ + eps)`` exceeds ``lr`` whenever the recent gradients are
  larger than their running RMS, e.g. under steadily falling losses, where it binds on
  most steps (diagnostic ``step_limited``). ``step_limit=False`` leaves Adam's step as it
  is: Kendall's / LibMTL's update (docs/ADAPTIVE_LOSS.md).
* A loss of exactly 0 (or below) marks the component absent at that step: its state
  (``s``, Adam moments, step count) is left as it is.

Why Adam and not SGD: the gradient ``1 − e^{−s}L`` scales with the loss magnitude,
which differs by orders of magnitude between components and over training. SGD with a
single learning rate would either crawl on small losses or overshoot / diverge on large
ones; Adam's per-component normalisation makes each update at most about ``lr`` in
``s`` (i.e. a relative weight change of about ``lr``) whatever the loss scale.

Scales (``anchor="first"``, default): ``scale_c = exp(−x_c) / mean_j exp(−x_j)``: the
inverse-variance weights *relative to where each component started*, so the base weights
from the config stay the reference and the method moves them by at most ``±r``. With
``anchor="none"`` the scales are Kendall's ``exp(−s_c) / mean_j exp(−s_j)`` (∝ 1/L_c),
which at a small range sits at the clamp whenever the components' losses differ in
scale; set ``adjustment_range`` large (e.g. 1e6) for Kendall's unbounded weights.
The weights actually applied are ``base_c·(1 + clamp(scale_c − 1, −r, r)) ≥ 0``, so the
total loss ``Σ w_c L_c`` never goes negative for non-negative losses, unlike ``J``.
``J`` (evaluated at the ``s`` used for the step) is reported as diagnostic
``objective``.

Step 0 under ``anchor="none"``: the anchors are only known once a step has been observed,
so at step 0 every ``s`` is 0 and every scale is 1; Kendall's ``∝ 1/L`` weights start at
step 1 (where ``s = log L(0)``). A component whose first positive loss comes later keeps
``s = 0`` until then (weighted as a loss of 1 would be).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from adaptive._checks import check_number as _check_number

from ._diagnostics import LazyState
from ._registry import register_method
from ._state import StateField, TensorStateMethod

__all__ = ["ANCHORS", "UncertaintyWeighting"]

_DTYPE = torch.float64


_MAX_CHUNK = 1024  # steps per workspace (longer blocks run as consecutive chunks)
_S_LIMIT = 20.0  # |s - log a| bounds beyond this overflow exp() for large losses
ANCHORS = ("first", "none")


def _negate(t: Tensor) -> Tensor:
    return 0.0 - t


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

        self.neg, self.hist = empty(capacity, k, c), empty(capacity + 1, k, c)
        # Per-step, per-component coefficients (a component may be absent at a step); the
        # constant bounds at full (K, C) size (broadcast operands iterate slower).
        self.w, self.f = empty(capacity, 2, k, c), empty(capacity, k, c)
        self.e, self.lo, self.hi = empty(capacity, k, c), empty(k, c), empty(k, c)
        self.rows, self.us = self.neg.unbind(0), self.hist.unbind(0)
        self.ws, self.fs, self.es = self.w.unbind(0), self.f.unbind(0), self.e.unbind(0)
        self.gmin = empty(k, c)  # -grad_clip at full (K, C) size
        self.lr_hi, self.lr_lo = empty(k, c), empty(k, c)  # ±lr: the largest step (or ±inf)
        self.raw = empty(capacity, k, c)  # Adam's step before the ±lr limit, per step
        self.raws = self.raw.unbind(0)
        self.mv, self.g2 = empty(2, k, c), empty(2, k, c)  # [m, v], [grad, grad²]
        self.m, self.v = self.mv.unbind(0)
        self.grad, self.grad_sq = self.g2.unbind(0)
        self.eu, self.d = empty(k, c), empty(k, c)
        self.one = torch.ones((), dtype=_DTYPE, device=device)
        self.zero = torch.zeros((), dtype=_DTYPE, device=device)


def _softmax_scales(u: Tensor, c: int) -> Tensor:
    """``C·softmax(u)`` over the last dimension, i.e. scale_c = e^{-x_c} / mean_j e^{-x_j},
    written out (much faster than torch.softmax over a short last dimension); the one
    expression behind both :meth:`UncertaintyWeighting.scales` and the block core."""
    ex = (u - u.amax(-1, keepdim=True)).exp()  # in (0, 1], max 1
    return ex.mul_(c / ex.sum(-1, keepdim=True))  # sum in [1, C]


@register_method("uncertainty")
class UncertaintyWeighting(TensorStateMethod):
    """Homoscedastic uncertainty weighting with a self-contained Adam on ``s``.

    Args:
        num_components: number of loss components ``K``.
        lr: Adam learning rate on the log-variances (``> 0``, default ``1e-2``).
        s_min: lower bound of ``s − log a`` (default ``-10``), in ``[-20, 0)``.
        s_max: upper bound of ``s − log a`` (default ``10``), in ``(0, 20]``.
        beta1: Adam first-moment decay, ``0 <= beta1 < 1`` (default ``0.9``).
        beta2: Adam second-moment decay, ``0 <= beta2 < 1`` (default ``0.999``).
        eps: Adam epsilon ``> 0`` (default ``1e-8``).
        grad_clip: the gradient is clipped below at ``-grad_clip`` (``> 0``, default 1).
        anchor: ``"first"`` (scales relative to the first losses) or ``"none"``
            (Kendall's scales ∝ 1/L).
        step_limit: clip each Adam step on ``s`` to ``±lr`` (default ``True``);
            ``False`` gives Adam's step unchanged (Kendall's / LibMTL's update).

    State: the anchors ``a`` (NaN until a component's first finite positive loss),
    ``x = s − log a`` (init 0, clamped into the bounds), Adam moments ``m``, ``v``, the
    number of updates ``t`` (skipped steps do not count) and the bias-correction
    products ``beta1**t``, ``beta2**t`` (kept as running products). Internally ``u = -x``
    is stored (exact negation); all state tensors carry a leading configuration dimension
    ``K`` (``1`` unless batched).

    Cost: the update is a nonlinear recursion, so a block of ``T`` steps loops over its
    steps; everything that does not depend on ``s`` (masks, bias corrections, step sizes,
    the scales and diagnostics) is computed for the whole block at once, leaving 11 tensor
    ops per step on preallocated buffers.
    """

    later_params: ClassVar[dict[str, Any]] = {"step_limit": True}  # checkpoints before it
    example_params: ClassVar[dict[str, Any]] = {"lr": 0.05}
    aggressive_params: ClassVar[dict[str, Any]] = {"lr": 0.2}
    invalid_params = (
        ("lr", -0.01),
        ("lr", 0.0),
        ("s_min", 20.0),
        ("beta1", 1.0),
        ("eps", -3.0),
        ("step_limit", "yes"),
    )
    sweep_configs = (
        {"lr": 0.2, "adjustment_range": 0.05},
        {"lr": 0.01, "beta1": 0.5, "beta2": 0.9, "step_limit": False},
        {"lr": 0.05, "s_min": -0.5, "s_max": 0.7, "eps": 1e-3, "adjustment_range": 2.0},
        {},
    )
    state_fields = (
        "_anchor",
        # u = -x is stored; x is written (0.0 - u: exact, and a zero is written as +0.0)
        StateField("_u", key="rel_log_var", transform=_negate, inverse=_negate),
        StateField("_m", key="adam_m"),
        StateField("_v", key="adam_v"),
        StateField("_t", key="adam_t", kind="counts"),
        StateField("_b1_pow", key="adam_beta1_pow"),
        StateField("_b2_pow", key="adam_beta2_pow"),
    )
    config_fields = (
        "_lr",
        "_s_min",
        "_s_max",
        "_beta1",
        "_beta2",
        "_eps",
        "_grad_clip",
        "_kendall",
        "_step_limit",
    )

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
        grad_clip: float = 1.0,
        anchor: str = "first",
        step_limit: bool = True,
    ) -> None:
        super().__init__(num_components)
        self.lr = _check_number("lr", lr)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.s_min = _check_number("s_min", s_min)
        self.s_max = _check_number("s_max", s_max)
        if not -_S_LIMIT <= self.s_min < 0.0:
            raise ValueError(f"s_min must be in [-{_S_LIMIT:g}, 0), got {s_min!r}")
        if not 0.0 < self.s_max <= _S_LIMIT:
            raise ValueError(f"s_max must be in (0, {_S_LIMIT:g}], got {s_max!r}")
        self.beta1 = _check_number("beta1", beta1)
        if not 0.0 <= self.beta1 < 1.0:
            raise ValueError(f"beta1 must be in [0, 1), got {beta1!r}")
        self.beta2 = _check_number("beta2", beta2)
        if not 0.0 <= self.beta2 < 1.0:
            raise ValueError(f"beta2 must be in [0, 1), got {beta2!r}")
        self.eps = _check_number("eps", eps)
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.grad_clip = _check_number("grad_clip", grad_clip)
        if self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0, got {grad_clip!r}")
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS!r}, got {anchor!r}")
        self.anchor = anchor
        if not isinstance(step_limit, bool):
            raise ValueError(f"step_limit must be a bool, got {step_limit!r}")
        self.step_limit = step_limit
        c = num_components
        hp = {"_lr": self.lr, "_s_min": self.s_min, "_s_max": self.s_max}
        hp |= {"_beta1": self.beta1, "_beta2": self.beta2, "_eps": self.eps}
        hp |= {"_grad_clip": self.grad_clip, "_kendall": float(anchor == "none")}
        hp |= {"_step_limit": float(step_limit)}
        for attr, value in hp.items():  # (K, 1) per-configuration tensors
            setattr(self, attr, torch.full((1, 1), value, dtype=_DTYPE))
        # The state holds u = -s (exact negation), so the step needs exp(u), not exp(-s).
        self._u = torch.zeros(1, c, dtype=_DTYPE)
        self._anchor = torch.full((1, c), math.nan, dtype=_DTYPE)
        self._m = torch.zeros(1, c, dtype=_DTYPE)
        self._v = torch.zeros(1, c, dtype=_DTYPE)
        self._t = torch.zeros(1, c, dtype=_DTYPE)
        # beta1**t and beta2**t kept as running products (plain multiplications, no pow).
        self._b1_pow = torch.ones(1, c, dtype=_DTYPE)
        self._b2_pow = torch.ones(1, c, dtype=_DTYPE)
        self._ws: _Workspace | None = None  # scratch buffers, not state

    def params(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "s_min": self.s_min,
            "s_max": self.s_max,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "grad_clip": self.grad_clip,
            "anchor": self.anchor,
            "step_limit": self.step_limit,
        }

    @property
    def log_var(self) -> Tensor:
        """Current log-variances ``s = x + log a`` (float64, ``(C,)``; ``(K, C)`` when
        batched); ``x`` alone for components without an anchor yet."""
        return self._row(self._log_anchor() - self._u)

    def _log_anchor(self) -> Tensor:
        a = self._anchor
        return torch.where(a.isnan(), 0.0, a.log())

    def _shift(self, log_anchor: Tensor) -> Tensor:
        """What is subtracted from ``u`` before the softmax: ``log a`` for Kendall's
        scales (``anchor="none"``), 0 for scales relative to the anchor."""
        return log_anchor * self._kendall

    def scales(self) -> Tensor:
        u = self._u - self._shift(self._log_anchor())
        return self._row(_softmax_scales(u, self.num_components))

    def observe(self, losses: Tensor, finite: Tensor) -> None:
        self.scales_and_observe(losses.reshape(1, -1), finite.reshape(1))

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        log_a = self._log_anchor()
        s = log_a - self._u
        objective = (torch.exp(-s) * losses + s).sum(-1)
        return {"log_var": self._row(s), "objective": self._row(objective)}

    def _anchor_block(self, losses: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Anchors over a block: ``(anchor before each step (T, K, C), anchor after the
        block (K, C), normalised losses (T, K, C))``. A component's anchor is its first
        observed (finite, positive) loss; before it the normalised loss is 1."""
        n = losses.size(0)
        first = valid.to(torch.int64).argmax(0)  # first valid row (0 if none)
        has = valid.any(0)
        candidate = losses.gather(0, first.unsqueeze(0)).squeeze(0)  # (C,)
        rows = torch.arange(n, device=losses.device).unsqueeze(-1)  # (T, 1)
        pending = self._anchor.isnan()  # (K, C)
        newly = pending & has  # set inside this block
        after = torch.where(newly, candidate, self._anchor)
        # before step t: set if it was set before the block, or at an earlier row here
        set_before = (~pending) | (newly & (rows.unsqueeze(-1) > first))  # (T, K, C)
        before = torch.where(set_before, after, math.nan)
        active = (~pending) | (newly & (rows.unsqueeze(-1) >= first))
        norm = torch.where(active, losses.unsqueeze(1) / after, 1.0)
        return before, after, norm

    def _coefficients(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per-step Adam coefficients of a block, vectorised over steps and configs.

        ``obs`` ``(T, C)`` marks the components observed at each step (finite step, loss
        > 0). Returns ``(w, f, e, b1_pow, b2_pow)``: ``w`` ``(T, 2, K, C)`` the lerp
        weights of ``m`` and ``v`` (``1 - beta``; 0 where not observed), ``f``, ``e``
        ``(T, K, C)`` such that the step is ``u += m / (sqrt(v)·f + e)`` (``f = 0``,
        ``e = inf`` where not observed: an exact no-op), and the bias-correction
        products after the block.
        """
        n, c = obs.shape
        ob = obs.view(n, 1, c)
        b1, b2 = self._beta1, self._beta2
        # beta**t as running products, advanced only where observed (x * 1.0 == x); a
        # cumprod is a sequential scan: bit-identical to T successive multiplications.
        p1 = torch.cat([self._b1_pow.unsqueeze(0), torch.where(ob, b1, 1.0)]).cumprod(0)[1:]
        p2 = torch.cat([self._b2_pow.unsqueeze(0), torch.where(ob, b2, 1.0)]).cumprod(0)[1:]
        # Adam with bias correction: u += (lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps), written
        # as u += m / (sqrt(v)·f + e) with f = 1/(sqrt(bc2)·lr/bc1), e = eps/(lr/bc1).
        step = self._lr / (1.0 - p1)
        f = torch.where(ob, 1.0 / ((1.0 - p2).sqrt() * step), 0.0)
        e = torch.where(ob, self._eps / step, math.inf)
        betas = torch.stack([1.0 - b1, 1.0 - b2]).expand(2, *p1.shape[1:])  # (2, K, C)
        w = torch.where(ob.unsqueeze(1), betas, 0.0)
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
        # observed: a finite step and a positive loss (0 = the component is absent)
        obs = finite.unsqueeze(-1) & (losses > 0.0)
        w, f, e, b1_pow, b2_pow = self._coefficients(obs)
        anchor_before, anchor_after, norm = self._anchor_block(losses, obs)
        ws.w[:n].copy_(w)
        ws.f[:n].copy_(f)
        ws.e[:n].copy_(e)
        # -L/a, and 0 where not observed (the update is made a no-op by w, f, e above).
        torch.where(obs.unsqueeze(1), norm, ws.zero, out=ws.neg[:n]).neg_()
        lo, hi = ws.lo, ws.hi
        lo.copy_(self._s_max).neg_()  # bounds of u = -x, at full (K, C) size
        hi.copy_(self._s_min).neg_()
        ws.gmin.copy_(self._grad_clip).neg_()
        # ±lr where the step limit is on, ±inf (clamp is then an exact no-op) where it is off
        ws.lr_hi.copy_(torch.where(self._step_limit > 0, self._lr, math.inf))
        ws.lr_lo.copy_(ws.lr_hi).neg_()
        us, rows, ws_, fs, es, gmin, raws = ws.us, ws.rows, ws.ws, ws.fs, ws.es, ws.gmin, ws.raws
        lr_lo, lr_hi = ws.lr_lo, ws.lr_hi
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
        # The sequential part: 11 tensor ops per step on preallocated buffers and views.
        for t in range(n):
            u = us[t]
            torch.exp(u, out=eu)
            torch.addcmul(one, eu, rows[t], out=grad)  # ∂J/∂x = 1 - e^{-x}·L/a  (<= 1)
            torch.maximum(grad, gmin, out=grad)  # clipped: outliers cannot inflate v
            torch.mul(grad, grad, out=grad_sq)
            mv.lerp_(g2, ws_[t])  # m, v moving averages
            torch.sqrt(v, out=d)
            torch.addcmul(es[t], d, fs[t], out=d)
            torch.div(m, d, out=raws[t])  # Adam's step (on u = -x), kept for diagnostics
            torch.clamp(raws[t], lr_lo, lr_hi, out=d)  # at most lr per update (step_limit)
            torch.add(u, d, out=d)
            torch.clamp(d, lo, hi, out=us[t + 1])  # projected onto [s_min, s_max]
        hist = ws.hist[: n + 1].clone()  # the workspace is reused by the next block
        raw = ws.raw[:n].clone()
        lr, limit_on = self._lr, self._step_limit
        self._u = hist[n]
        self._m, self._v = m.clone(), v.clone()
        self._t = self._t + obs.sum(0)
        self._b1_pow, self._b2_pow = b1_pow, b2_pow
        self._anchor = anchor_after
        u_before = hist[:n]
        log_a = torch.where(anchor_before.isnan(), 0.0, anchor_before.log())  # (T, K, C)
        u_eff = u_before - self._shift(log_a)
        scales = _softmax_scales(u_eff, c)

        def log_var() -> Tensor:  # the s behind each step's weights
            return log_a - u_before

        def objective() -> Tensor:  # Kendall's J at (s_t, L_t)
            s_t = log_a - u_before
            return (torch.exp(-s_t) * losses.unsqueeze(1) + s_t).sum(-1)

        def step_limited() -> Tensor:  # 1 where the ±lr limit shortened this step's update
            return ((raw.abs() > lr) & (limit_on > 0)).to(_DTYPE)

        state = {"log_var": log_var, "objective": objective, "step_limited": step_limited}
        return scales, LazyState(state)

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

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if isinstance(state, Mapping) and "anchor" not in state:
            raise ValueError(
                "uncertainty state from an older version (no 'anchor'); it cannot be resumed"
            )
        super().load_state_dict(state)
