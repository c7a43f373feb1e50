"""The `competence` scheduler law: competence-based pacing (Platanios et al., NAACL 2019,
*Competence-based Curriculum Learning*) that advances the free-run curriculum one step each
epoch the model is ready, with the guard able to ease off.

Platanios et al. raise a competence ``c`` in ``[c0, 1]`` along the square-root schedule
``c(t) = min(1, sqrt(t (1 - c0²) / T + c0²))`` and train on the examples of difficulty at
most ``c``. Here the clock ``t`` is not time but the number of epochs at which the model
was ready (the teacher-forced validation metric has plateaued and the free-run metric has
not worsened), a worsening free-run metric steps it back, and competence sets delta:
``delta = adjustment_range · (2c - 1)`` (from the easiest schedule at ``c = 0`` to the
hardest at ``c = 1``; see docs/SCHEDULER.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from adaptive._checks import check_number, decode_float, encode_float
from adaptive.scheduler._guard import check_epoch_metrics, read_epoch_metrics
from adaptive.scheduler._guarded import GUARD_REASONS, GuardOffset
from adaptive.scheduler._law import Control, Decision, SchedulerLaw, Window, register_law
from adaptive.scheduler._stats import rel_change
from adaptive.scheduler._values import check_int

__all__ = ["CompetenceLaw"]


@register_law("competence")
class CompetenceLaw(SchedulerLaw):
    """Competence pacing: advance when the teacher-forced metric plateaus and the free-run
    metric holds, step back when the free-run metric worsens.

    Args:
        free_metric: key of the free-run (``valfree``) validation metric (lower is better).
        val_metric: key of the teacher-forced (``val``) metric; ``None`` = ``free_metric``.
        start: initial competence ``c0`` in ``[0, 1]``.
        ramp: ready epochs from ``c0`` to full competence (``T``).
        plateau_tolerance: the teacher-forced metric has plateaued when it improved by
            less than this relative amount since the previous epoch.
        free_tolerance: the free-run metric worsened when it rose by more than this
            relative amount since the previous epoch (then competence steps back).
        guard: let the guard's batch-level easing off act on top (an offset).
    """

    reasons: ClassVar[Mapping[str, int]] = {
        "start": -1,
        "ready": +1,
        "free_worse": -1,
        **GUARD_REASONS,
    }
    epoch_splits = ("valfree", "val")
    signal_keys = ("competence", "ready_epochs", "val_trend", "free_trend", "guard_offset")
    plot_signals = ("competence", "val_trend", "free_trend", "guard_offset")
    state_keys = ("competence_steps", "competence_prev", "competence_guard")
    example_params: ClassVar[Mapping[str, Any]] = {
        "start": 0.3,
        "ramp": 3,
        "plateau_tolerance": 0.05,
    }
    invalid_params = (
        ("start", 1.5),
        ("ramp", 0),
        ("plateau_tolerance", -0.1),
        ("free_tolerance", math.nan),
        ("free_metric", ""),
        ("guard", 1),
    )

    def __init__(
        self,
        *,
        free_metric: str = "YawAbsDeg",
        val_metric: str | None = None,
        start: float = 0.1,
        ramp: int = 5,
        plateau_tolerance: float = 0.02,
        free_tolerance: float = 0.05,
        guard: bool = True,
    ) -> None:
        super().__init__()
        self.free_metric, self.val_metric = check_epoch_metrics(free_metric, val_metric)
        self.start = check_number("start", start, low=0.0, high=1.0)
        self.ramp = check_int("ramp", ramp, low=1)
        self.plateau_tolerance = check_number("plateau_tolerance", plateau_tolerance, low=0.0)
        self.free_tolerance = check_number("free_tolerance", free_tolerance, low=0.0)
        self._guard = GuardOffset(guard)
        self.steps = 0  # ready epochs counted (the competence clock)
        self.started = False
        self._prev: tuple[float | None, float | None] = (None, None)

    @property
    def guard(self) -> bool:
        return self._guard.enabled

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    def thresholds(self) -> dict[str, float]:
        return {
            "competence": 1.0,
            "val_trend": -self.plateau_tolerance,
            "free_trend": self.free_tolerance,
        }

    def competence(self) -> float:
        """``min(1, sqrt(t (1 - c0²) / T + c0²))`` at ``t`` = ready epochs so far."""
        c0 = self.start
        return min(1.0, math.sqrt(self.steps * (1.0 - c0 * c0) / self.ramp + c0 * c0))

    def _pace(self, control: Control) -> float:
        return control.bound * (2.0 * self.competence() - 1.0)

    def _decide(self, level: str, reason: str | None, detail: str, control: Control) -> Decision:
        self.signals["competence"] = self.competence()
        self.signals["ready_epochs"] = float(self.steps)
        self.signals["guard_offset"] = self._guard.offset
        if reason is None:
            return Decision.hold(level, control)
        new = self._pace(control) + self._guard.offset
        if new == control.delta:
            return Decision(level, "at_bound", reason, control.delta, detail)
        return Decision(level, "change", reason, new, detail)

    def window(self, window: Window, control: Control) -> Decision:
        reason: str | None = None
        detail = ""
        guard = self._guard.window(window, control)
        if guard is not None:
            reason, detail = guard.reason, guard.detail
        if not self.started:  # the first decision point puts delta at c0's pace
            self.started = True
            if reason is None:
                reason = "start"
                detail = f"competence starts at c0={self.start:g}"
        return self._decide("batch", reason, detail, control)

    def epoch(
        self,
        metrics: Mapping[str, float],
        val_metrics: Mapping[str, float] | None,
        control: Control,
    ) -> Decision:
        free, val = read_epoch_metrics(metrics, val_metrics, self.free_metric, self.val_metric)
        prev_free, prev_val = self._prev
        free_trend, val_trend = rel_change(prev_free, free), rel_change(prev_val, val)
        self._prev = (free, val)
        self.signals.update(free_trend=free_trend, val_trend=val_trend)
        if not control.epoch_decisions:
            self._decide("epoch", None, "", control)
            return Decision.hold("epoch", control, action="disabled")
        reason: str | None = None
        detail = ""
        finite = math.isfinite(free) and (val is None or math.isfinite(val))
        if not self.started:
            self.started = True
            reason, detail = "start", f"competence starts at c0={self.start:g}"
        elif not finite or free_trend is None or val_trend is None:
            pass  # first epoch, no teacher-forced metrics or a non-finite one: hold
        elif free_trend > self.free_tolerance:
            if self.steps > 0:
                self.steps -= 1
                reason = "free_worse"
                detail = (
                    f"valfree {self.free_metric} {free_trend:+.2%} (> {self.free_tolerance:+.2%}):"
                    f" competence back to {self.competence():.3f}"
                )
        elif val_trend >= -self.plateau_tolerance and self.competence() < 1.0:
            self.steps += 1
            reason = "ready"
            detail = (
                f"val {self.val_metric or self.free_metric} plateaued ({val_trend:+.2%}, "
                f">= {-self.plateau_tolerance:+.2%}) and valfree held ({free_trend:+.2%}): "
                f"competence {self.competence():.3f}"
            )
        return self._decide("epoch", reason, detail, control)

    def state_dict(self) -> dict[str, Any]:
        return {
            "competence_steps": self.steps,
            "competence_prev": {
                "started": self.started,
                "free": encode_float(self._prev[0]),
                "val": encode_float(self._prev[1]),
            },
            "competence_guard": self._guard.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            steps = check_int("state entry 'competence_steps'", state["competence_steps"], low=0)
            prev = state["competence_prev"]
            started = prev["started"]
            if not isinstance(started, bool):
                raise ValueError(f"state entry 'competence_prev' is invalid: {prev!r}")
            free = decode_float(prev["free"], "competence_prev.free", optional=True)
            val = decode_float(prev["val"], "competence_prev.val", optional=True)
            guard = state["competence_guard"]
        except KeyError as e:
            raise ValueError(f"state is missing entry {e.args[0]!r}") from None
        except TypeError:
            raise ValueError(
                f"state entry 'competence_prev' is invalid: {state['competence_prev']!r}"
            ) from None
        self._guard.load_state_dict(guard, "competence_guard")
        self.steps, self.started, self._prev = steps, started, (free, val)
