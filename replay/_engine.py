"""Replay engine: run the live controller classes over a recorded trace, in dry-run.

The engine drives the controller classes the trainer uses, in the trainer's order, with the
values the trainer recorded: per epoch `set_base_weights` / `set_base_values`, the epoch's
steps as one `step_block` (the same core that the trainer's per-step `__call__` and
`step_batch` run with T = 1), then `end_epoch` / `step_epoch`. There is no second
implementation of any controller's maths; `tests/reference_replay.py` replays per step and
the tests check both agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adaptive.trace import Trace
from adaptive.util import LOSS_ADJUSTMENT_RANGE
from replay._common import (  # re-exported: the engine's public names
    SCHEDULE_PARAMS,
    SCHEDULER,
    ReplayError,
    ReplayResult,
    _col,
    _epoch_bounds,
    _epoch_metric_dicts,
    first_run_id,
    method_parameters,
    metrics_by_epoch,
    recorded_config,
    recorded_setting,
    scheduler_inputs,
)
from replay._inputs import check_inputs

__all__ = [
    "SCHEDULER",
    "SCHEDULE_PARAMS",
    "ReplayError",
    "ReplayResult",
    "_col",
    "_epoch_bounds",
    "_epoch_metric_dicts",
    "first_run_id",
    "method_parameters",
    "metrics_by_epoch",
    "recorded_config",
    "recorded_setting",
    "replay",
    "replay_scheduler",
    "replay_weighting",
    "scheduler_inputs",
]


def replay_weighting(
    trace: Trace,
    method: str,
    *,
    adjustment_range: float = LOSS_ADJUSTMENT_RANGE,
    loss_input: str | None = None,
    restart_on_stage_change: bool | None = None,
    progress: Callable[[int], None] | None = None,
    **method_params: Any,
) -> ReplayResult:
    """Replay `AdaptiveLossWeighting(method=...)` over a trace's step rows in dry-run.

    Base weights come from `weight_base/<c>` (or `weight/<c>`, else 1); epoch ends are the
    changes of `epoch` between consecutive step rows. Each epoch is one `step_block` call of
    the live controller (bit-identical to per-step calls). `loss_input` (`tf`: the
    `loss_tf/<c>` columns, `total`: `loss/<c>`) and `restart_on_stage_change` default to
    what the run recorded in its config, else `tf` and True (see `weighting_inputs`).
    """
    from replay._weighting_replay import replay_weighting_fast  # deferred: imports torch

    return replay_weighting_fast(
        trace,
        method,
        adjustment_range=adjustment_range,
        loss_input=loss_input,
        restart_on_stage_change=restart_on_stage_change,
        progress=progress,
        **method_params,
    )


def replay_scheduler(
    trace: Trace, *, progress: Callable[[int], None] | None = None, **params: Any
) -> ReplayResult:
    """Replay `AdaptiveScheduler` over a trace in dry-run, in the trainer's call order.

    Per epoch: `set_base_values` from `schedule_base/<p>` (or `schedule/<p>`), one
    `step_block` over the epoch's steps (equal to per-step `proposed()` + `step_batch`),
    then `step_epoch(valfree metrics, val metrics)` when the trace has them.
    """
    from replay._scheduler_replay import replay_scheduler_fast  # deferred: imports torch

    return replay_scheduler_fast(trace, progress=progress, **params)


def replay(trace: Trace, method: str, **params: Any) -> ReplayResult:
    """Replay one controller (`dwa`, `uncertainty`, any registered method, or `scheduler`).

    A method whose inputs the trace lacks is refused with a `ReplayError`; where a documented
    fallback applies instead, `result.notes` names it.
    """
    if method != SCHEDULER:
        from adaptive.weighting import available_methods

        if method not in available_methods():
            valid = ", ".join([*available_methods(), SCHEDULER])
            raise ReplayError(f"unknown method {method!r}; valid methods: {valid}")
    notes = check_inputs(trace, method, params)
    if method == SCHEDULER:
        result = replay_scheduler(trace, **params)
    else:
        result = replay_weighting(trace, method, **params)
    # the input check's notes first, then the fallbacks the replay itself took
    result.notes = list(dict.fromkeys([*notes, *result.notes]))
    return result
