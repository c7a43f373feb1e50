"""Outcome trials: does a setting make the run end better? Train the baseline and each
candidate on the same seeds, pair them by seed, and say what the trial can and cannot see.

`run_trial` trains any target (the reference trainer, your command, your function) on an
engine (this process, a process pool, Ray) and writes the report; `run_trial_command` is
the `adaptive trial` command behind its options; `read_trial` reads a trial folder back;
`compare_runs` compares finished runs of the reference trainer; the statistics (`paired_t`,
`sign_flip_p`, `sign_test_p`, `mde`, `seeds_needed`, `pilot_sd`, `holm`, `bonferroni`) work on
any numbers, and `simulate_pilot_design` gives the sequential design's error rate and sizes.
See docs/TRIAL.md. This package trains models; the offline `replay` package never imports it.
"""

from adaptive.trial._command import run_trial_command
from adaptive.trial._compare import compare_runs
from adaptive.trial._design import simulate_pilot_design
from adaptive.trial._engines import Job, LocalEngine, RayEngine
from adaptive.trial._figure import plot_trial, trial_figure
from adaptive.trial._report import (
    DEFAULT_METRIC,
    DEFAULT_REDUCE,
    Metric,
    TrialResult,
    analyse,
    parse_metric,
    parse_reduce,
    reduce_series,
)
from adaptive.trial._runner import read_trial, run_trial
from adaptive.trial._stats import (
    bonferroni,
    holm,
    mde,
    paired_t,
    pilot_sd,
    power,
    seeds_needed,
    sign_flip_p,
    sign_test_p,
    t_cdf,
    t_ppf,
    t_sf,
)
from adaptive.trial._targets import (
    CONTROLLERS_OFF,
    PLACEBO_FACTOR,
    QUICK_TRIAL,
    Arm,
    CommandTarget,
    FunctionTarget,
    ReferenceTarget,
    Target,
    TrialError,
)

__all__ = [
    "CONTROLLERS_OFF",
    "DEFAULT_METRIC",
    "DEFAULT_REDUCE",
    "PLACEBO_FACTOR",
    "QUICK_TRIAL",
    "Arm",
    "CommandTarget",
    "FunctionTarget",
    "Job",
    "LocalEngine",
    "Metric",
    "RayEngine",
    "ReferenceTarget",
    "Target",
    "TrialError",
    "TrialResult",
    "analyse",
    "bonferroni",
    "compare_runs",
    "holm",
    "mde",
    "paired_t",
    "parse_metric",
    "parse_reduce",
    "pilot_sd",
    "plot_trial",
    "power",
    "read_trial",
    "reduce_series",
    "run_trial",
    "run_trial_command",
    "seeds_needed",
    "sign_flip_p",
    "sign_test_p",
    "simulate_pilot_design",
    "t_cdf",
    "t_ppf",
    "t_sf",
    "trial_figure",
]
