"""Offline replay: run the live controllers over recorded traces in dry-run, and plot them."""

from replay._engine import (
    ReplayError,
    ReplayResult,
    method_parameters,
    metrics_by_epoch,
    replay,
    replay_scheduler,
    replay_weighting,
    scheduler_inputs,
)
from replay._plots import plot_result, plot_scheduler, plot_weighting
from replay._summary import (
    per_epoch_scale,
    reason_counts,
    scheduler_summary,
    weighting_summary,
    write_frame,
)

__all__ = [
    "ReplayError",
    "ReplayResult",
    "method_parameters",
    "metrics_by_epoch",
    "per_epoch_scale",
    "plot_result",
    "plot_scheduler",
    "plot_weighting",
    "reason_counts",
    "replay",
    "replay_scheduler",
    "replay_weighting",
    "scheduler_inputs",
    "scheduler_summary",
    "weighting_summary",
    "write_frame",
]
