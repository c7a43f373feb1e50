"""Replay engine: run the live controller classes over a recorded trace, in dry-run.

The engine drives the controller classes the trainer uses, in the trainer's order, with the
values the trainer recorded: per epoch `set_base_weights` / `set_base_values`, the epoch's
steps as one `step_block` (the same core that the trainer's per-step `__call__` and
`step_batch` run with T = 1), then `end_epoch` / `step_epoch`. There is no second
implementation of any controller's maths; `tests/reference_replay.py` replays per step and
the tests check both agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

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
    "as_recorded",
    "first_run_id",
    "method_parameters",
    "metrics_by_epoch",
    "recorded_config",
    "recorded_setting",
    "replay",
    "replay_scheduler",
    "replay_weighting",
    "run_settings",
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


def run_settings(trace: Trace, method: str) -> dict[str, Any]:
    """The hyperparameters a run recorded for `method`, if it had `method` on (live or in
    dry-run; reference trainer's config in the trace's run_info), else empty.

    Only names `method` takes are returned (plus `adjustment_range`), so a replay with these
    settings reproduces the controller the run ran.
    """
    return config_settings(recorded_config(trace), method)


def config_settings(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The replay parameters of `method` in a reference-trainer config (its `[adaptive]`
    table), if that config switches `method` on, else empty: what `run_settings` reads from
    a trace's recorded config, and what `adaptive tune`'s pre-filter replays a candidate
    config with."""
    a = config.get("adaptive") if isinstance(config, Mapping) else None
    if not isinstance(a, Mapping):
        return {}
    if method == SCHEDULER:
        if a.get("scheduler") is not True:
            return {}
        from adaptive.train.config import SCHEDULER_TOP, ConfigError, scheduler_law_params

        out = {k: a[k] for k in SCHEDULER_TOP if k in a}
        law = a.get("scheduler_law")
        if isinstance(law, Mapping):  # the law the run ran, with that law's own parameters
            try:
                out.update(scheduler_law_params(law))
            except ConfigError:  # a law this installation does not know: its defaults apply
                pass
        rng = a.get("scheduler_adjustment_range")
    else:
        if a.get("loss") != method:
            return {}
        table = a.get(method)
        out = dict(table) if isinstance(table, Mapping) else {}
        rng = a.get("loss_adjustment_range")
    valid = set(method_parameters(method))
    out = {k: v for k, v in out.items() if k in valid}
    if isinstance(rng, int | float) and not isinstance(rng, bool):
        out["adjustment_range"] = float(rng)
    return out


def replay(trace: Trace, method: str, **params: Any) -> ReplayResult:
    """Replay one controller (`dwa`, `uncertainty`, any registered method, or `scheduler`).

    When the run had `method` on (live or in dry-run), its recorded settings are the
    defaults (`run_settings`; `params` override them) and `result.notes` says so. A method
    whose inputs the trace lacks is refused with a `ReplayError`; where a documented
    fallback applies instead, `result.notes` names it.
    """
    if method != SCHEDULER:
        from adaptive.weighting import available_methods

        if method not in available_methods():
            valid = ", ".join([*available_methods(), SCHEDULER])
            raise ReplayError(f"unknown method {method!r}; valid methods: {valid}")
    recorded = {k: v for k, v in run_settings(trace, method).items() if k not in params}
    run_note = []
    changed = {k: v for k, v in recorded.items() if _defaults(method).get(k, object()) != v}
    if changed:  # say so where the run's own settings change what a replay would use
        shown = ", ".join(f"{k}={v:g}" if _num(v) else f"{k}={v}" for k, v in changed.items())
        run_note = [
            f"replayed with the settings the run had {method} on with: {shown} (-p overrides)"
        ]
    params = {**recorded, **params}
    if method == SCHEDULER:
        _check_scheduler_params(params)
    notes = run_note + check_inputs(trace, method, params)
    if method == SCHEDULER:
        result = replay_scheduler(trace, **params)
    else:
        result = replay_weighting(trace, method, **params)
    # the input check's notes first, then the fallbacks the replay itself took
    result.notes = list(dict.fromkeys([*notes, *result.notes]))
    as_recorded(result, trace)
    return result


#: Proposal column prefix of a result -> the trace columns whose dtype it takes, in order.
_RECORDED = {
    "proposed/weight/": ("weight/", "proposed/weight/", "weight_base/"),
    "proposed/schedule/": ("schedule/", "proposed/schedule/", "schedule_base/"),
}


def as_recorded(result: ReplayResult, trace: Trace) -> ReplayResult:
    """Give `result`'s proposals (`proposed/weight/<c>`, `proposed/schedule/<p>`) the dtype
    the trace records them in (float32 in a trace written by this package): the replay
    computes the live controller's float64 values, the trace stored them rounded to float32,
    so after this a replay of a run equals what it recorded with a plain comparison
    (`np.array_equal`, `pd.testing.assert_series_equal`). A trace that records no such
    column, or records float64, keeps float64. `replay()` does this; returns `result`."""
    frame, cols = result.frame, trace.steps.columns
    for prefix, sources in _RECORDED.items():
        for name in result.names:
            col = prefix + name
            src = next((p + name for p in sources if p + name in cols), None)
            if col not in frame or src is None:
                continue
            if trace.steps[src].dtype == np.float32 and frame[col].dtype == np.float64:
                frame[col] = frame[col].to_numpy().astype(np.float32)
    return result


def _defaults(method: str) -> dict[str, Any]:
    """The values a replay of `method` uses when neither the run nor the user sets them."""
    import inspect

    from adaptive.util import LOSS_ADJUSTMENT_RANGE, SCHEDULER_ADJUSTMENT_RANGE

    if method == SCHEDULER:
        from adaptive.scheduler import AdaptiveScheduler

        sig = inspect.signature(AdaptiveScheduler)
        rng = SCHEDULER_ADJUSTMENT_RANGE
    else:
        from adaptive.weighting import method_class

        sig = inspect.signature(method_class(method).__init__)
        rng = LOSS_ADJUSTMENT_RANGE
    out = {p.name: p.default for p in sig.parameters.values() if p.default is not p.empty}
    return {**out, "adjustment_range": rng}


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_scheduler_params(params: dict[str, Any]) -> None:
    """Construct the scheduler once with the user's values: a value it refuses is bad
    input (`ParameterError`), told before the replay starts."""
    import inspect

    from adaptive.errors import InputError, ParameterError
    from adaptive.scheduler import AdaptiveScheduler

    names = inspect.signature(AdaptiveScheduler).parameters
    kw = {k: v for k, v in params.items() if k in names}
    try:
        AdaptiveScheduler(**kw)
    except InputError:
        raise
    except ValueError as exc:
        raise ParameterError(f"scheduler: {exc}") from exc
