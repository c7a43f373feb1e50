"""What a controller needs from a trace: refuse when it is absent, name any fallback used.

A trace from a user's own loop may lack what a controller reads (the schedule it adjusts, the
free-run evaluations it reacts to). Replaying anyway would invent inputs and produce a
confident verdict about nothing, so `check_inputs` either raises `ReplayError` with a one-line
reason or returns notes naming each documented fallback it lets the replay use.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from adaptive.trace import Trace

__all__ = ["check_inputs"]


def _default(name: str) -> Any:
    from adaptive.scheduler import AdaptiveScheduler

    p = inspect.signature(AdaptiveScheduler).parameters.get(name)
    return None if p is None else p.default


def _law_params(params: Mapping[str, Any]) -> tuple[str, ...]:
    """The parameters of the law `params` name (default: the default law)."""
    from adaptive.scheduler import DEFAULT_LAW, law_class

    return law_class(params.get("law", DEFAULT_LAW)).param_names()


def _scheduler(trace: Trace, params: Mapping[str, Any]) -> list[str]:
    from replay._common import SCHEDULE_PARAMS, ReplayError

    steps = trace.steps
    notes: list[str] = []
    if "grad_norm" not in steps.columns:
        raise ReplayError(
            f"{trace.path}: the scheduler needs the gradient norm, and this trace has no "
            "grad_norm column (record it with TraceWriter.log_step(grad_norm=...))"
        )
    if not any(c.startswith(("schedule_base/", "schedule/")) for c in steps.columns):
        raise ReplayError(
            f"{trace.path}: the scheduler needs the schedule it adjusts, and this trace has none "
            f"(no schedule/<p> or schedule_base/<p> columns for {', '.join(SCHEDULE_PARAMS)}); "
            "record it with TraceWriter.log_step(schedule=..., schedule_base=...)"
        )
    use_epoch = params.get("use_epoch_metrics", _default("use_epoch_metrics"))
    if not use_epoch or "free_metric" not in _law_params(params):
        return notes
    epochs = trace.epochs
    vf = epochs[epochs["split"] == "valfree"] if len(epochs) else epochs
    if len(vf) == 0:
        notes.append(
            "no valfree rows: the epoch-level rule (free-run metric) was not used, "
            "batch signals only"
        )
        return notes
    metric = str(params.get("free_metric", _default("free_metric")))
    col = "loss_total" if metric == "loss" else f"metric/{metric}"
    if col not in vf.columns or vf[col].isna().all():
        have = [m for m in trace.metrics if f"metric/{m}" in vf.columns]
        have += ["loss"] if "loss_total" in vf.columns else []
        raise ReplayError(
            f"{trace.path}: free_metric {metric!r} is not in the trace's valfree rows; "
            f"choose one of: {', '.join(have) or 'none recorded'} "
            "(or use_epoch_metrics=false)"
        )
    return notes


def _weighting(trace: Trace) -> list[str]:
    cols = trace.steps.columns
    missing = [
        c for c in trace.components if f"weight_base/{c}" not in cols and f"weight/{c}" not in cols
    ]
    if not missing:
        return []
    which = "any component" if len(missing) == len(trace.components) else ", ".join(missing)
    return [f"no weight_base/<c> or weight/<c> column for {which}: base weight taken as 1"]


def check_inputs(trace: Trace, method: str, params: Mapping[str, Any]) -> list[str]:
    """Refuse (`ReplayError`, one line) a method whose inputs the trace lacks; else return
    notes naming the fallbacks the replay will use (empty when none)."""
    from replay._common import SCHEDULER

    if method == SCHEDULER:
        return _scheduler(trace, params)
    return _weighting(trace)
