"""Find the setting, not only judge it: `run_tune` searches loss weights, schedules and
controllers of any trainer with Optuna, every configuration on the same development seeds
and paired against the current one, then confirms the frozen winner once on held-out seeds
with the powered trial (`adaptive.trial`). `parse_space` reads `NAME=SPEC` parameters.
See docs/TUNE.md. Optuna is the optional extra `tune`."""

from adaptive.tune._command import run_tune_command
from adaptive.tune._space import Param, TuneError, parse_space, read_space_file
from adaptive.tune._study import Prefilter, TuneResult, run_tune

__all__ = [
    "Param",
    "Prefilter",
    "TuneError",
    "TuneResult",
    "parse_space",
    "read_space_file",
    "run_tune",
    "run_tune_command",
]
