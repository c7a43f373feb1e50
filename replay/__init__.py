"""Offline replay: run the live controllers over recorded traces in dry-run, analyse, plot.

`replay(trace, method, **params)` runs one controller; `replay_runs` does so over every run
of a folder and writes its tables and figures (`adaptive replay`); `compare` / `sweep` run
several or a grid; `parse_params` reads `name=value` hyperparameters against the registry;
`stability_metrics` / `stability_table` / `recommend` judge what they did. Whether a run
ends better is the outcome trial's question: it trains, so it lives in `adaptive.trial`.
"""

from replay._compare import plot_compare
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
from replay._params import parse_params
from replay._plots import method_title, plot_result, plot_scheduler, plot_weighting
from replay._runs import load_runs
from replay._stability import (
    METRIC_DOCS,
    READY_SCORE,
    Verdict,
    recommend,
    stability_metrics,
    stability_rank_key,
    stability_score,
    stability_table,
    verdicts,
)
from replay._summary import (
    per_epoch_scale,
    reason_counts,
    scheduler_summary,
    weighting_summary,
    write_frame,
)
from replay._sweep import SweepResult, parse_grid, recommended_toml, sweep
from replay._workflow import CompareOutput, ReplayRunsOutput, compare, replay_runs

__all__ = [
    "METRIC_DOCS",
    "READY_SCORE",
    "CompareOutput",
    "ReplayError",
    "ReplayResult",
    "ReplayRunsOutput",
    "SweepResult",
    "Verdict",
    "compare",
    "load_runs",
    "method_parameters",
    "method_title",
    "metrics_by_epoch",
    "parse_grid",
    "parse_params",
    "per_epoch_scale",
    "plot_compare",
    "plot_result",
    "plot_scheduler",
    "plot_weighting",
    "reason_counts",
    "recommend",
    "recommended_toml",
    "replay",
    "replay_runs",
    "replay_scheduler",
    "replay_weighting",
    "scheduler_inputs",
    "scheduler_summary",
    "stability_metrics",
    "stability_rank_key",
    "stability_score",
    "stability_table",
    "sweep",
    "verdicts",
    "weighting_summary",
    "write_frame",
]
