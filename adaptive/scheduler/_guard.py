"""The `guard` scheduler law: a stability guard that eases off on grad-norm outliers, rising
loss and non-finite values, and pushes toward free run when the free-run metric worsens while
the teacher-forced one does not (see docs/SCHEDULER.md).

Batch level, per regime (an int per batch, e.g. 0 = teacher forced only, 1 = free run drawn;
batches of different regimes are never compared with each other): each regime keeps a
reference of its log grad norm and log loss (centre and spread: EMAs of window medians and
scaled MADs), updated at every window end. Epoch level: relative changes of the free-run and
teacher-forced metrics against the previous epoch, with a patience. Delta moves by
``adjustment_rate`` per change, freezes for ``cooldown`` decision points after a change, and
moves back toward 0 after ``recover_patience`` calm decision points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from adaptive._checks import check_number, decode_float, encode_float
from adaptive.scheduler._law import Control, Decision, SchedulerLaw, Window, register_law
from adaptive.scheduler._stats import median, rel_change, robust
from adaptive.scheduler._values import check_int, is_real

__all__ = ["FREE_METRICS", "NONFINITE_POLICIES", "REASONS", "GuardLaw"]

#: Reasons a change can carry (direction: -1 eases off, +1 pushes toward free run, 0 moves
#: delta back toward 0 after calm decision points).
REASONS: dict[str, int] = {
    "nonfinite": -1,
    "grad_spike": -1,
    "loss_rising": -1,
    "valfree_worse": +1,
    "both_worse": -1,
    "recovered": 0,
}
#: What a window holding non-finite losses / grad norms does: ease off, or skip the values.
NONFINITE_POLICIES = ("ease_off", "skip")
#: The reference motion task's validation metrics (lower is better); ``free_metric`` and
#: ``val_metric`` may name any metric the trainer passes to ``step_epoch``.
FREE_METRICS = ("YawAbsDeg", "MPJPE", "RootDrift", "loss")

_SIGNAL_KEYS = (
    # batch level (last window; the worst regime where several were judged)
    "window_size",
    "window_nonfinite",
    "regimes",
    "loss_trend",
    "grad_z",
    "grad_outliers",
    "grad_median",
    "grad_reference",
    "calm_streak",
    # epoch level (last epoch)
    "free_metric",
    "free_trend",
    "val_metric",
    "val_trend",
)
_COUNTERS = ("cooldown_left", "calm_streak", "gap_streak", "both_streak")


def _dec(x: Any, name: str = "value") -> float | None:
    return decode_float(x, name, optional=True)


def _check_regime(regime: Any) -> int:
    if isinstance(regime, bool) or not isinstance(regime, int) or regime < 0:
        raise ValueError(f"regime must be an int >= 0, got {regime!r}")
    return regime


@register_law("guard")
class GuardLaw(SchedulerLaw):
    """Stability guard: ease off on trouble, push on a free-run / teacher-forced gap.

    Args:
        free_metric: key of the free-run validation metric (lower is better).
        val_metric: key of the teacher-forced metric; ``None`` = ``free_metric``.
        spike_z: robust z-score of a batch's log grad norm above which it is an outlier.
        spike_count: outlier batches in one window that make a ``grad_spike``.
        rising_threshold: relative rise of a regime's window median loss over its
            reference that counts as ``loss_rising``.
        baseline_momentum: EMA momentum of the per-regime references, in ``[0, 1)``.
        min_samples: finite values a regime needs in a window to be judged (at most
            ``update_interval`` are required).
        recover_patience: consecutive calm decision points before delta moves back toward 0.
        on_nonfinite: ``"ease_off"`` or ``"skip"`` NaN/inf losses and grad norms.
        patience: consecutive epochs a trend must last before an epoch-level change.
        epoch_tolerance: relative epoch-to-epoch change treated as flat.
        cooldown: decision points after a change during which delta is frozen.
    """

    reasons = REASONS
    signal_keys = _SIGNAL_KEYS
    plot_signals = ("grad_z", "grad_outliers", "loss_trend", "calm_streak", "free_trend")
    state_keys = ("references", "cooldown_left", "calm_streak", "prev_free", "prev_val")
    state_keys += ("gap_streak", "both_streak")
    example_params: ClassVar[Mapping[str, Any]] = {
        "spike_z": 3.0,
        "min_samples": 4,
        "cooldown": 1,
        "patience": 1,
    }
    invalid_params = (
        ("spike_z", 0.0),
        ("spike_count", 0),
        ("min_samples", 1),
        ("on_nonfinite", "ignore"),
        ("baseline_momentum", 1.0),
        ("free_metric", ""),
    )

    def __init__(
        self,
        *,
        free_metric: str = "YawAbsDeg",
        val_metric: str | None = None,
        spike_z: float = 4.0,
        spike_count: int = 2,
        rising_threshold: float = 0.25,
        baseline_momentum: float = 0.8,
        min_samples: int = 8,
        recover_patience: int = 4,
        on_nonfinite: str = "ease_off",
        patience: int = 2,
        epoch_tolerance: float = 0.01,
        cooldown: int = 2,
    ) -> None:
        super().__init__()
        self.free_metric, self.val_metric = check_epoch_metrics(free_metric, val_metric)
        self.spike_z = check_number("spike_z", spike_z, low=0.0, low_open=True)
        self.spike_count = check_int("spike_count", spike_count, low=1)
        self.rising_threshold = check_number(
            "rising_threshold", rising_threshold, low=0.0, low_open=True
        )
        self.baseline_momentum = check_number(
            "baseline_momentum", baseline_momentum, low=0.0, high=1.0, high_open=True
        )
        self.min_samples = check_int("min_samples", min_samples, low=2)
        self.recover_patience = check_int("recover_patience", recover_patience, low=1)
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"on_nonfinite must be one of {NONFINITE_POLICIES!r}, got {on_nonfinite!r}"
            )
        self.on_nonfinite = on_nonfinite
        self.patience = check_int("patience", patience, low=1)
        self.epoch_tolerance = check_number("epoch_tolerance", epoch_tolerance, low=0.0)
        self.cooldown = check_int("cooldown", cooldown, low=0)
        # regime -> [loss centre, loss spread, grad centre, grad spread] (log units)
        self._refs: dict[int, list[float | None]] = {}
        self.cooldown_left = 0
        self.calm_streak = 0
        self.gap_streak = 0
        self.both_streak = 0
        self._prev_free: float | None = None
        self._prev_val: float | None = None

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    # ------------------------------------------------------------------ batch level
    def window(self, window: Window, control: Control) -> Decision:
        losses, grads = window.losses, window.grads
        need = min(self.min_samples, control.interval)
        isfinite, log = math.isfinite, math.log
        nonfinite = sum(not isfinite(x) for x in losses) + sum(not isfinite(x) for x in grads)
        by_regime: dict[int, tuple[list[float], list[float]]] = {}
        for lv, gv, r in zip(losses, grads, window.regimes, strict=True):
            ls, gs = by_regime.setdefault(r, ([], []))
            if isfinite(lv) and lv > 0.0:
                ls.append(log(lv))
            if isfinite(gv) and gv > 0.0:
                gs.append(log(gv))
        z_max: float | None = None
        z_regime: int | None = None
        outliers = 0
        trend: float | None = None
        judged = 0
        stats: dict[int, tuple[float | None, float | None, float | None, float | None]] = {}
        for r in sorted(by_regime):
            ls, gs = by_regime[r]
            loss_c, loss_sp = robust(ls) if len(ls) >= need else (None, None)
            grad_c, grad_sp = robust(gs) if len(gs) >= need else (None, None)
            stats[r] = (loss_c, loss_sp, grad_c, grad_sp)
            ref = self._refs.get(r)
            if ref is None or max(len(ls), len(gs)) < need:
                continue
            judged += 1
            ref_lc, _, ref_gc, ref_gs = ref
            if ref_gc is not None and ref_gs is not None and gs:
                zs = [(g - ref_gc) / ref_gs for g in gs]
                outliers += sum(z > self.spike_z for z in zs)
                zm = max(zs)
                if z_max is None or zm > z_max:
                    z_max, z_regime = zm, r
            if ref_lc is not None and loss_c is not None:
                # capped below exp's overflow (a 1e300-fold rise): still far above any threshold
                t = math.expm1(min(loss_c - ref_lc, 700.0))
                trend = t if trend is None else max(trend, t)
        sig = self.signals
        sig["window_size"] = float(len(losses))
        sig["window_nonfinite"] = float(nonfinite)
        sig["regimes"] = float(judged)
        sig["loss_trend"] = trend
        sig["grad_z"] = z_max
        sig["grad_outliers"] = float(outliers)
        if z_regime is not None:
            gs = by_regime[z_regime][1]
            sig["grad_median"] = math.exp(median(sorted(gs)))  # type: ignore[arg-type]
            sig["grad_reference"] = math.exp(self._refs[z_regime][2])  # type: ignore[arg-type]
        else:
            sig["grad_median"] = sig["grad_reference"] = None

        reason: str | None = None
        detail = ""
        if nonfinite and self.on_nonfinite == "ease_off":
            reason = "nonfinite"
            detail = (
                f"{nonfinite} non-finite loss/grad-norm value(s) in the last {len(losses)} batches"
            )
        elif outliers >= min(self.spike_count, control.interval):
            reason = "grad_spike"
            detail = (
                f"{outliers} batch(es) in the last {len(losses)} with a grad-norm z-score above "
                f"{self.spike_z:g} (max z {z_max:.3g}: window median "
                f"{sig['grad_median']:.6g} vs reference {sig['grad_reference']:.6g}, "
                f"regime {z_regime})"
            )
        elif trend is not None and trend > self.rising_threshold:
            reason = "loss_rising"
            detail = (
                f"window median loss is {trend:+.2%} above its reference "
                f"(> {self.rising_threshold:+.2%})"
            )
        decision = self.decide("batch", reason, detail, control)

        # References follow every window with enough samples (spikes barely move a median).
        m = self.baseline_momentum
        for r, (loss_c, loss_sp, grad_c, grad_sp) in stats.items():
            ref = self._refs.get(r)
            if ref is None:
                if loss_c is None and grad_c is None:
                    continue
                ref = self._refs[r] = [None, None, None, None]
            for i, v in enumerate((loss_c, loss_sp, grad_c, grad_sp)):
                if v is not None:
                    old = ref[i]
                    ref[i] = v if old is None else m * old + (1.0 - m) * v
        sig["calm_streak"] = float(self.calm_streak)
        return decision

    # ------------------------------------------------------------------ epoch level
    def epoch(
        self,
        metrics: Mapping[str, float],
        val_metrics: Mapping[str, float] | None,
        control: Control,
    ) -> Decision:
        free, val = read_epoch_metrics(metrics, val_metrics, self.free_metric, self.val_metric)
        free_trend = rel_change(self._prev_free, free)
        val_trend = rel_change(self._prev_val, val)
        self._prev_free, self._prev_val = free, val
        self.signals.update(
            free_metric=free, free_trend=free_trend, val_metric=val, val_trend=val_trend
        )

        reason: str | None = None
        detail = ""
        name, tol = self.free_metric, self.epoch_tolerance
        if not math.isfinite(free) or (val is not None and not math.isfinite(val)):
            self.gap_streak = self.both_streak = 0
            reason = "nonfinite"
            detail = f"non-finite validation metric (valfree {name}={free!r}, val={val!r})"
        elif free_trend is None or val_trend is None or free_trend <= tol:
            # first epoch, no val metrics, or free-run metric flat/improving: hold.
            self.gap_streak = self.both_streak = 0
        elif val_trend > tol:
            self.both_streak += 1
            self.gap_streak = 0
            if self.both_streak >= self.patience:
                reason = "both_worse"
                detail = (
                    f"valfree {name} and val both worse for {self.both_streak} epoch(s) "
                    f"(last: valfree {free_trend:+.2%}, val {val_trend:+.2%})"
                )
        else:
            self.gap_streak += 1
            self.both_streak = 0
            if self.gap_streak >= self.patience:
                reason = "valfree_worse"
                detail = (
                    f"valfree {name} worse for {self.gap_streak} epoch(s) while val is "
                    f"not (last: valfree {free_trend:+.2%}, val {val_trend:+.2%})"
                )

        if not control.epoch_decisions:
            return Decision("epoch", "disabled", reason, control.delta, detail)
        decision = self.decide("epoch", reason, detail, control)
        if decision.action == "change":
            if reason == "both_worse":
                self.both_streak = 0
            elif reason == "valfree_worse":
                self.gap_streak = 0
        return decision

    # ------------------------------------------------------------------ decisions
    def decide(self, level: str, reason: str | None, detail: str, control: Control) -> Decision:
        """One decision point: a reason (or None: calm) -> the decision on delta.

        A point without a reason is calm; after ``recover_patience`` calm points in a row
        delta moves one ``adjustment_rate`` back toward 0 (reason ``recovered``). A change
        for a reason starts a cooldown of ``cooldown`` points (``nonfinite`` overrides it).
        """
        rate, old = control.rate, control.delta
        cooling = self.cooldown_left > 0
        if cooling:
            self.cooldown_left -= 1
        if reason is None:
            self.calm_streak += 1
            if self.calm_streak < self.recover_patience or old == 0.0 or cooling:
                return Decision(level, "hold", None, old)
            new = max(0.0, old - rate) if old > 0.0 else min(0.0, old + rate)
            if abs(new) < 1e-9 * rate:  # float residue of repeated steps: land on 0
                new = 0.0
            self.calm_streak = 0
            why = f"{self.recover_patience} calm decision point(s) in a row: back toward 0"
            return Decision(level, "change", "recovered", new, why)
        self.calm_streak = 0
        if cooling and reason != "nonfinite":
            return Decision(level, "cooldown", reason, old, detail)
        new = min(control.bound, max(-control.bound, old + REASONS[reason] * rate))
        if new == old:
            return Decision(level, "at_bound", reason, old, detail)
        self.cooldown_left = self.cooldown
        return Decision(level, "change", reason, new, detail)

    # ------------------------------------------------------------------ reporting
    def references(self) -> dict[int, dict[str, float | None]]:
        """Per-regime references, in the signals' units: ``loss`` and ``grad_norm`` are
        the reference levels (exp of the log centres), ``*_spread`` the log-unit spreads."""
        out: dict[int, dict[str, float | None]] = {}
        for r, (lc, ls, gc, gs) in sorted(self._refs.items()):
            out[r] = {
                "loss": None if lc is None else math.exp(lc),
                "loss_spread": ls,
                "grad_norm": None if gc is None else math.exp(gc),
                "grad_spread": gs,
            }
        return out

    def thresholds(self) -> dict[str, float]:
        return {
            "grad_z": self.spike_z,
            "grad_outliers": float(self.spike_count),
            "loss_trend": self.rising_threshold,
            "calm_streak": float(self.recover_patience),
            "free_trend": self.epoch_tolerance,
        }

    def diagnostics(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in _COUNTERS},
            "references": self.references(),
        }

    def status(self) -> str:
        s = self.signals
        return (
            f"grad_z={_fmt(s['grad_z'])} outliers={int(s['grad_outliers'] or 0)} "
            f"loss_trend={_fmt(s['loss_trend'])} nonfinite={int(s['window_nonfinite'] or 0)} "
            f"cooldown_left={self.cooldown_left} calm={self.calm_streak}"
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "references": {str(r): [encode_float(v) for v in ref] for r, ref in self._refs.items()},
            "cooldown_left": self.cooldown_left,
            "calm_streak": self.calm_streak,
            "prev_free": encode_float(self._prev_free),
            "prev_val": encode_float(self._prev_val),
            "gap_streak": self.gap_streak,
            "both_streak": self.both_streak,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            counters = {k: check_int(f"state entry {k!r}", state[k], low=0) for k in _COUNTERS}
            refs: dict[int, list[float | None]] = {}
            for key, ref in state["references"].items():
                if not isinstance(ref, list) or len(ref) != 4:
                    raise ValueError(f"state entry 'references'[{key!r}] is invalid: {ref!r}")
                refs[_check_regime(int(key))] = [_dec(v, "references") for v in ref]
            prev_free = _dec(state["prev_free"], "prev_free")
            prev_val = _dec(state["prev_val"], "prev_val")
        except KeyError as e:
            raise ValueError(f"state is missing entry {e.args[0]!r}") from None
        for k, v in counters.items():
            setattr(self, k, v)
        self._refs = refs
        self._prev_free, self._prev_val = prev_free, prev_val


def check_epoch_metrics(free_metric: Any, val_metric: Any) -> tuple[str, str | None]:
    """`free_metric` and `val_metric` as a law's constructor takes them: a non-empty name,
    and None (the same key) or a non-empty name; ValueError repeating a bad value."""
    if not isinstance(free_metric, str) or not free_metric:
        raise ValueError(f"free_metric must be a non-empty metric name, got {free_metric!r}")
    if val_metric is not None and (not isinstance(val_metric, str) or not val_metric):
        raise ValueError(f"val_metric must be None or a metric name, got {val_metric!r}")
    return free_metric, val_metric


def read_epoch_metrics(
    metrics: Mapping[str, float],
    val_metrics: Mapping[str, float] | None,
    free_metric: str,
    val_metric: str | None,
) -> tuple[float, float | None]:
    """The free-run metric and its teacher-forced counterpart (`val_metric`, by default the
    same key; None without `val_metrics`) of one `step_epoch` call, checked."""
    free = _read_metric(metrics, free_metric, "metrics")
    if val_metrics is None:
        return free, None
    return free, _read_metric(val_metrics, val_metric or free_metric, "val_metrics")


def _read_metric(metrics: Mapping[str, float], key: str, what: str) -> float:
    if not isinstance(metrics, Mapping):
        raise TypeError(f"{what} must be a mapping name -> float, got {metrics!r}")
    if key not in metrics:
        raise KeyError(f"{what} has no key {key!r}; available keys: {sorted(metrics)!r}")
    v = metrics[key]
    if isinstance(v, torch.Tensor):
        v = v.item()
    if not is_real(v):
        raise TypeError(f"{what}[{key!r}] must be a number, got {v!r}")
    return float(v)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"
