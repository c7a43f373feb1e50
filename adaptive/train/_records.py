"""What a training run reports: its error type, the per-step records the loop hands to
observers and progress displays, the end-of-run summary, and the run folder's file names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptive.errors import InputError

TRACE_NAME = "trace.parquet"
CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.toml"
LOG_NAME = "logs/train.txt"


class TrainingError(InputError, RuntimeError):
    """A run that cannot start or continue (bad data path, mismatched checkpoint, ...)."""


@dataclass(frozen=True)
class StepRecord:
    """What `on_step` sees after each optimizer step: what was applied, as device tensors
    (or floats) that nothing has read to the host, so an observer adds no sync unless it
    reads them itself."""

    step: int
    epoch: int
    weights: dict[str, Any]
    proposed_weights: dict[str, Any] | None
    schedule: dict[str, Any]
    loss_total: Any
    grad_norm: Any


@dataclass
class StepInfo:
    """What the progress callback sees after each optimizer step (host floats only when
    `loss` is not None, which happens every `run.log_every` steps)."""

    epoch: int
    epochs: int
    step: int
    step_in_epoch: int
    steps_per_epoch: int
    loss: float | None = None
    phase: str = "train"


@dataclass
class RunSummary:
    """End-of-run figures."""

    run_dir: Path
    epochs_done: int
    steps_done: int
    seconds: float
    first: dict[str, float] = field(default_factory=dict)  # valfree metrics, first epoch
    last: dict[str, float] = field(default_factory=dict)  # valfree metrics, last epoch
    interrupted: bool = False
    threads: int = 0  # torch CPU threads the run used
    controllers: str = ""  # which adaptive controllers ran, live or dry-run
