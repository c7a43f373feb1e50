"""Stage schedule: per-epoch base values (teacher forcing, free run, loss weights, lr)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SCHEDULE_PARAMS = ("tf_ratio", "freerun_horizon", "freerun_weight")


def schedule_limits(window: int) -> dict[str, tuple[float, float]]:
    """Bounds of the adjusted schedule values the trainer can run with training windows of
    `window` frames: a free-run horizon shorter than the window, ratios in [0, 1]. The
    scheduler clips to them, live and in replay."""
    return {"freerun_horizon": (1.0, float(window - 1)), "tf_ratio": (0.0, 1.0)}


@dataclass(frozen=True)
class StageValues:
    """The base values of one epoch, as the stage schedule sets them."""

    epoch: int
    stage: str
    schedule: dict[str, float]  # tf_ratio, freerun_horizon, freerun_weight
    loss_weights: dict[str, float]
    lr: float
    stage_index: int = 0  # position of the stage in the schedule (changes mark a new stage)


class StageSchedule:
    """A list of stages, each lasting some epochs; values may ramp linearly within a stage.

    `base_values(epoch)` is the trainer's `_apply_stage_schedule`: it returns what the
    configuration says for that epoch, before any adaptive adjustment. Epochs past the last
    stage keep the last stage's end values.
    """

    def __init__(
        self,
        stages: Sequence[Mapping[str, Any]],
        *,
        loss_weights: Mapping[str, float],
        lr: float,
    ) -> None:
        if not stages:
            raise ValueError("a stage schedule needs at least one stage")
        self.stages = [dict(s) for s in stages]
        self.loss_weights = dict(loss_weights)
        self.lr = float(lr)
        for s in self.stages:
            unknown = set(s.get("loss_weights", {})) - set(self.loss_weights)
            if unknown:
                raise ValueError(
                    f"stage {s.get('name', '?')!r} sets weights of unknown components "
                    f"{sorted(unknown)}; components are {sorted(self.loss_weights)}"
                )

    def _locate(self, epoch: int) -> tuple[int, float]:
        start = 0
        for i, s in enumerate(self.stages):
            n = int(s["epochs"])
            if epoch < start + n:
                return i, (epoch - start) / (n - 1) if n > 1 else 0.0
            start += n
        return len(self.stages) - 1, 1.0

    def base_values(self, epoch: int) -> StageValues:
        """Base values for `epoch` (0-based)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        index, frac = self._locate(epoch)
        stage = self.stages[index]

        def at(key: str, default: float) -> float:
            value = stage.get(key, default)
            lo, hi = (value, value) if isinstance(value, int | float) else value
            return float(lo) + (float(hi) - float(lo)) * frac

        schedule = {
            "tf_ratio": at("tf_ratio", 1.0),
            "freerun_horizon": float(max(1, round(at("freerun_horizon", 1)))),
            "freerun_weight": at("freerun_weight", 0.0),
        }
        weights = dict(self.loss_weights)
        weights.update({k: float(v) for k, v in stage.get("loss_weights", {}).items()})
        return StageValues(
            epoch=epoch,
            stage=str(stage.get("name", f"stage{index}")),
            schedule=schedule,
            loss_weights=weights,
            lr=at("lr", self.lr),
            stage_index=index,
        )
