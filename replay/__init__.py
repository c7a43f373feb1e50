"""Offline replay: run the live controllers over recorded traces in dry-run, analyse, plot.

`replay(trace, method, **params)` runs one controller; `replay_runs` does so over every run
of a folder and writes its tables and figures (`adaptive replay`); `replay_fleet` replays
many runs each on its own (a process pool or Ray) into one summary table (`adaptive replay
FOLDER --jobs N`); `compare` / `sweep` run several or a grid; `parse_params` reads
`name=value` hyperparameters against the registry; `sweep_runs` also writes a sweep's
outputs (`adaptive sweep`, `adaptive demo`); `trial_advice` is the next step after them,
a pasteable `adaptive trial` command;
`stability_metrics` / `stability_table` / `recommend` judge what they did; `prefilter` tells
`adaptive tune` when a controller would be inert or pinned at its clamp. Whether a run
ends better is the outcome trial's question: it trains, so it lives in `adaptive.trial`.
"""

from replay._advice import config_overrides, is_reference_trace, shell_arg, trial_advice
from replay._compare import plot_compare
from replay._demo import DemoOutput, run_demo
from replay._engine import (
    ReplayError,
    ReplayResult,
    method_parameters,
    metrics_by_epoch,
    replay,
    replay_scheduler,
    replay_weighting,
    run_settings,
    scheduler_inputs,
)
from replay._fleet import FleetOutput, fleet_table, replay_fleet
from replay._params import adaptive_param_overrides, merged_params, parse_params
from replay._plots import method_title, plot_result, plot_scheduler, plot_weighting
from replay._prefilter import prefilter
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
    trace_summary,
    weighting_summary,
    write_frame,
)
from replay._sweep import SweepResult, grid_configs, parse_grid, recommended_toml, sweep
from replay._workflow import (
    CompareOutput,
    ReplayRunsOutput,
    SweepRunsOutput,
    compare,
    output_stem,
    replay_runs,
    sweep_runs,
)

__all__ = [
    "METRIC_DOCS",
    "READY_SCORE",
    "CompareOutput",
    "DemoOutput",
    "FleetOutput",
    "ReplayError",
    "ReplayResult",
    "ReplayRunsOutput",
    "SweepResult",
    "SweepRunsOutput",
    "Verdict",
    "adaptive_param_overrides",
    "compare",
    "config_overrides",
    "fleet_table",
    "grid_configs",
    "is_reference_trace",
    "load_runs",
    "merged_params",
    "method_parameters",
    "method_title",
    "metrics_by_epoch",
    "output_stem",
    "parse_grid",
    "parse_params",
    "per_epoch_scale",
    "plot_compare",
    "plot_result",
    "plot_scheduler",
    "plot_weighting",
    "prefilter",
    "reason_counts",
    "recommend",
    "recommended_toml",
    "replay",
    "replay_fleet",
    "replay_runs",
    "replay_scheduler",
    "replay_weighting",
    "run_demo",
    "run_settings",
    "scheduler_inputs",
    "scheduler_summary",
    "shell_arg",
    "stability_metrics",
    "stability_rank_key",
    "stability_score",
    "stability_table",
    "sweep",
    "sweep_runs",
    "trace_summary",
    "trial_advice",
    "verdicts",
    "weighting_summary",
    "write_frame",
]
