"""The `gtf` scheduler law: free-run pacing from the error growth per free-run step, after
Generalized Teacher Forcing (Hess et al., ICML 2023), with the guard able to ease off.

Hess et al. force a fraction ``α`` of each state back to the data so that the expected
growth of errors (and gradients) along the rollout stays bounded: with per-step growth
``G``, ``α ≈ 1 - 1/G`` keeps the product of Jacobians from exploding. This trainer's knob
is the schedule (``tf_ratio``, ``freerun_horizon``, ``freerun_weight``) moved by delta, and
its measurable growth is the free-run loss relative to the teacher-forced loss of the same
batch: ``g = (L_fr / L_tf) ** (1 / H)`` over a horizon of ``H`` free-run frames. The law
keeps an EMA of the window median of ``g`` and steps delta toward more free run while the
growth is below ``target_growth`` and toward more forcing above it (see docs/SCHEDULER.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from adaptive._checks import check_number, decode_float, encode_float
from adaptive.scheduler._guarded import GUARD_REASONS, GuardOffset
from adaptive.scheduler._law import Control, Decision, SchedulerLaw, Window, register_law
from adaptive.scheduler._stats import median
from adaptive.scheduler._values import check_int

__all__ = ["GTFLaw"]


@register_law("gtf")
class GTFLaw(SchedulerLaw):
    """Free-run pacing from the per-step error growth ``(L_fr / L_tf) ** (1 / H)``.

    Args:
        target_growth: per-step growth the law steers to (> 1 means errors may grow).
        tolerance: relative band around the target in which delta holds.
        momentum: EMA momentum of the growth estimate over windows, in ``[0, 1)``.
        min_samples: free-run batches with finite positive losses a window needs.
        guard: let the guard's batch-level easing off act on top (an offset).
    """

    reasons: ClassVar[Mapping[str, int]] = {"growth_low": +1, "growth_high": -1, **GUARD_REASONS}
    inputs: ClassVar[Mapping[str, str]] = {
        "loss_fr": "loss_fr_total",
        "horizon": "schedule/freerun_horizon",
    }
    signal_keys = ("growth", "window_growth", "samples", "pace", "guard_offset")
    plot_signals = ("growth", "pace", "guard_offset")
    state_keys = ("gtf_growth", "gtf_pace", "gtf_guard")
    example_params: ClassVar[Mapping[str, Any]] = {
        "target_growth": 1.2,
        "tolerance": 0.02,
        "min_samples": 2,
    }
    invalid_params = (
        ("target_growth", 0.0),
        ("tolerance", -0.1),
        ("momentum", 1.0),
        ("min_samples", 0),
        ("guard", "yes"),
    )

    def __init__(
        self,
        *,
        target_growth: float = 1.3,
        tolerance: float = 0.05,
        momentum: float = 0.5,
        min_samples: int = 3,
        guard: bool = True,
    ) -> None:
        super().__init__()
        self.target_growth = check_number("target_growth", target_growth, low=0.0, low_open=True)
        self.tolerance = check_number("tolerance", tolerance, low=0.0, high=1.0, high_open=True)
        self.momentum = check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.min_samples = check_int("min_samples", min_samples, low=1)
        self._guard = GuardOffset(guard)
        self.growth: float | None = None  # EMA of the window medians
        self.pace = 0.0  # the law's own delta (the guard's offset is added)

    @property
    def guard(self) -> bool:
        return self._guard.enabled

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def thresholds(self) -> dict[str, float]:
        return {"growth": self.target_growth}

    def window(self, window: Window, control: Control) -> Decision:
        growths = []
        for lt, lf, h, r in zip(
            window.losses,
            window.inputs["loss_fr"],
            window.inputs["horizon"],
            window.regimes,
            strict=True,
        ):
            if r >= 1 and h >= 1.0 and 0.0 < lt < math.inf and 0.0 < lf < math.inf:
                growths.append((lf / lt) ** (1.0 / h))
        sig = self.signals
        sig["samples"] = float(len(growths))
        sig["window_growth"] = None
        reason: str | None = None
        detail = ""
        if len(growths) >= self.min_samples:
            g = median(sorted(growths))
            sig["window_growth"] = g
            m = self.momentum
            self.growth = g if self.growth is None else m * self.growth + (1.0 - m) * g
            lo = self.target_growth * (1.0 - self.tolerance)
            hi = self.target_growth * (1.0 + self.tolerance)
            if self.growth < lo and self.pace < control.bound:
                reason = "growth_low"
                self.pace = min(control.bound, self.pace + control.rate)
            elif self.growth > hi and self.pace > -control.bound:
                reason = "growth_high"
                self.pace = max(-control.bound, self.pace - control.rate)
            if reason is not None:
                detail = (
                    f"free-run error growth {self.growth:.4g}/step (window median {g:.4g} over "
                    f"{len(growths)} free-run batches) vs target {self.target_growth:g} "
                    f"+-{self.tolerance:.0%}: pace {self.pace:+.3f}"
                )
        sig["growth"] = self.growth
        guard = self._guard.window(window, control)
        sig["pace"] = self.pace
        sig["guard_offset"] = self._guard.offset
        new = self.pace + self._guard.offset
        if guard is not None:  # the guard's easing off takes precedence in the record
            reason, detail = guard.reason, guard.detail
        if reason is None:
            return Decision.hold("batch", control)
        if new == control.delta:
            return Decision("batch", "at_bound", reason, control.delta, detail)
        return Decision("batch", "change", reason, new, detail)

    def state_dict(self) -> dict[str, Any]:
        return {
            "gtf_growth": encode_float(self.growth),
            "gtf_pace": encode_float(self.pace),
            "gtf_guard": self._guard.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            growth = decode_float(state["gtf_growth"], "gtf_growth", optional=True)
            pace = decode_float(state["gtf_pace"], "gtf_pace")
            guard = state["gtf_guard"]
        except KeyError as e:
            raise ValueError(f"state is missing entry {e.args[0]!r}") from None
        if pace is None or not math.isfinite(pace):
            raise ValueError(f"state entry 'gtf_pace' is invalid: {state['gtf_pace']!r}")
        self._guard.load_state_dict(guard, "gtf_guard")
        self.growth, self.pace = growth, pace
