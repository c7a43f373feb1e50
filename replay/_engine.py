"""Replay engine: run the live controller classes over a recorded trace, in dry-run.

The engine calls exactly what the trainer calls (`AdaptiveLossWeighting.__call__`,
`end_epoch`, `set_base_weights`; `AdaptiveScheduler.set_base_values`, `values`/`proposed`,
`step_batch`, `step_epoch`) in the trainer's order, with the values the trainer recorded.
There is no second implementation of any controller's maths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from adaptive.trace import Trace

SCHEDULER = "scheduler"
SCHEDULE_PARAMS = ("tf_ratio", "freerun_horizon", "freerun_weight")


class ReplayError(ValueError):
    """A trace lacks what a method needs, or a method / parameter is unknown."""


@dataclass
class ReplayResult:
    """Per-step output of one controller replayed over one trace."""

    method: str
    params: dict[str, Any]
    frame: pd.DataFrame  # one row per trace step row, aligned by `step`
    names: list[str]  # components (weighting) or schedule parameters (scheduler)
    run_id: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)  # scheduler changes

    @property
    def kind(self) -> str:
        """`weighting` or `schedule`."""
        return "schedule" if self.method == SCHEDULER else "weighting"


def _col(df: pd.DataFrame, name: str) -> np.ndarray | None:
    return df[name].to_numpy(dtype=np.float64) if name in df.columns else None


def _epoch_bounds(epochs: np.ndarray) -> list[tuple[int, int, int]]:
    """(epoch, start, stop) runs of equal epoch values in step order."""
    if len(epochs) == 0:
        return []
    cuts = np.flatnonzero(np.diff(epochs)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(epochs)]])
    return [(int(epochs[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def replay_weighting(
    trace: Trace,
    method: str,
    *,
    adjustment_range: float = 0.3,
    progress: Callable[[int], None] | None = None,
    **method_params: Any,
) -> ReplayResult:
    """Replay `AdaptiveLossWeighting(method=...)` over a trace's step rows in dry-run.

    Base weights come from `weight_base/<c>` (or `weight/<c>` when no base column exists,
    else 1). Epoch ends are the changes of `epoch` between consecutive step rows.
    """
    import torch

    from adaptive.weighting import AdaptiveLossWeighting

    steps = trace.steps
    comps = list(trace.components)
    if not comps:
        raise ReplayError(f"{trace.path}: no loss/<component> columns to replay")
    if len(steps) == 0:
        raise ReplayError(f"{trace.path}: no step rows to replay")
    base_cols = []
    for c in comps:
        col = _col(steps, f"weight_base/{c}")
        if col is None:
            col = _col(steps, f"weight/{c}")
        base_cols.append(np.ones(len(steps)) if col is None else col)
    base = np.stack(base_cols, axis=1)
    losses = torch.from_numpy(
        np.stack([steps[f"loss/{c}"].to_numpy(dtype=np.float32) for c in comps], axis=1)
    ).double()
    ctrl = AdaptiveLossWeighting(
        comps,
        dict(zip(comps, base[0].tolist(), strict=True)),
        method=method,
        adjustment_range=adjustment_range,
        dry_run=True,
        log_every=0,
        **method_params,
    )
    keys = ("scales", "deltas", "clamped", "proposed", "base")
    out: dict[str, list[Any]] = {k: [] for k in keys}
    skipped = []
    state_keys: list[str] | None = None
    state: dict[str, list[Any]] = {}
    epochs = steps["epoch"].to_numpy()
    bounds = _epoch_bounds(epochs)
    current_base = base[0]
    done = 0
    for i, (_, start, stop) in enumerate(bounds):
        if i > 0:
            ctrl.end_epoch()
        for r in range(start, stop):
            if not np.array_equal(base[r], current_base):
                current_base = base[r]
                ctrl.set_base_weights(dict(zip(comps, current_base.tolist(), strict=True)))
            row = losses[r]
            _, _, diag = ctrl(dict(zip(comps, row.unbind(0), strict=True)))
            for k in keys:
                out[k].append(getattr(diag, k))
            skipped.append(diag.skipped)
            if state_keys is None:
                state_keys = list(diag.method_state)
                state = {k: [] for k in state_keys}
            for k in state_keys:
                state[k].append(diag.method_state[k])
        done += stop - start
        if progress is not None:
            progress(stop - start)
    frame = pd.DataFrame({"step": steps["step"].to_numpy(), "epoch": epochs})
    names = {
        "scales": "scale",
        "deltas": "delta",
        "clamped": "clamped",
        "proposed": "proposed/weight",
        "base": "base",
    }
    cols: dict[str, Any] = {}
    for k in keys:
        arr = torch.stack(out[k]).cpu().numpy()
        for j, c in enumerate(comps):
            cols[f"{names[k]}/{c}"] = arr[:, j]
    cols["skipped"] = torch.stack(skipped).cpu().numpy()
    for k, values in state.items():
        arr = torch.stack(values).cpu().numpy()
        if arr.ndim == 1:
            cols[f"{method}/{k}"] = arr
        else:
            for j, c in enumerate(comps):
                cols[f"{method}/{k}/{c}"] = arr[:, j]
    frame = pd.concat([frame, pd.DataFrame(cols)], axis=1)
    params = {"adjustment_range": adjustment_range, **ctrl.method_impl.params()}
    return ReplayResult(method=method, params=params, frame=frame, names=comps, run_id=trace.run_id)


def _epoch_metric_dicts(trace: Trace, split: str) -> dict[int, dict[str, float]]:
    """{epoch: {metric: value, 'loss': loss_total}} from the epoch rows of one split."""
    rows = trace.epochs[trace.epochs["split"] == split] if len(trace.epochs) else trace.epochs
    out: dict[int, dict[str, float]] = {}
    for _, row in rows.iterrows():
        d = {
            m: float(row[f"metric/{m}"])
            for m in trace.metrics
            if f"metric/{m}" in row.index and not pd.isna(row[f"metric/{m}"])
        }
        if "loss_total" in row.index and not pd.isna(row["loss_total"]):
            d["loss"] = float(row["loss_total"])
        out[int(row["epoch"])] = d
    return out


def scheduler_inputs(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Batch signals the scheduler sees: (loss, grad_norm) per step row.

    The loss is `loss_total` where recorded, else the sum of the raw component losses.
    """
    steps = trace.steps
    if "grad_norm" not in steps.columns:
        raise ReplayError(
            f"{trace.path}: the scheduler needs a grad_norm column on step rows "
            "(and loss_total or loss/<c>); this trace has none"
        )
    loss = _col(steps, "loss_total")
    if loss is None:
        loss = np.stack(
            [steps[f"loss/{c}"].to_numpy(dtype=np.float32) for c in trace.components], axis=1
        ).sum(axis=1, dtype=np.float32)
    return loss.astype(np.float32), steps["grad_norm"].to_numpy(dtype=np.float32)


def replay_scheduler(
    trace: Trace,
    *,
    progress: Callable[[int], None] | None = None,
    **params: Any,
) -> ReplayResult:
    """Replay `AdaptiveScheduler` over a trace in dry-run, in the trainer's call order.

    Per epoch: `set_base_values` from `schedule_base/<p>` (or `schedule/<p>`) of the
    epoch's first step; per step: read `proposed()`, then `step_batch(loss, grad_norm)`;
    after the epoch's last step: `step_epoch(valfree metrics, val metrics)` when the trace
    has them.
    """
    from adaptive.scheduler import AdaptiveScheduler

    steps = trace.steps
    if len(steps) == 0:
        raise ReplayError(f"{trace.path}: no step rows to replay")
    loss, grad = scheduler_inputs(trace)
    params_present = [
        p
        for p in dict.fromkeys(
            [c.split("/", 1)[1] for c in steps.columns if c.startswith("schedule_base/")]
            + [c.split("/", 1)[1] for c in steps.columns if c.startswith("schedule/")]
        )
    ]
    if not params_present:
        params_present = list(SCHEDULE_PARAMS)
        base = np.tile(np.array([[1.0, 1.0, 1.0]]), (len(steps), 1))
    else:
        cols = []
        for p in params_present:
            col = _col(steps, f"schedule_base/{p}")
            if col is None:
                col = _col(steps, f"schedule/{p}")
            cols.append(col)
        base = np.stack(cols, axis=1)
    valfree = _epoch_metric_dicts(trace, "valfree")
    val = _epoch_metric_dicts(trace, "val")
    params.pop("dry_run", None)
    ctrl = AdaptiveScheduler(dry_run=True, **params)
    epochs = steps["epoch"].to_numpy()
    proposed = np.empty((len(steps), len(params_present)))
    delta = np.empty(len(steps))
    reason: list[str] = []
    signals: dict[str, list[float]] = {"grad_ratio": [], "loss_trend": [], "free_trend": []}
    for ep, start, stop in _epoch_bounds(epochs):
        ctrl.set_base_values(
            {
                p: float(v)
                for p, v in zip(params_present, base[start], strict=True)
                if not math.isnan(v)
            }
        )
        for r in range(start, stop):
            prop = ctrl.proposed()
            proposed[r] = [prop.get(p, math.nan) for p in params_present]
            delta[r] = ctrl.delta
            ctrl.step_batch(float(loss[r]), float(grad[r]))
            d = ctrl.diagnostics()
            dec = d["decision"]
            changed = dec is not None and dec["action"] == "change" and dec["step"] == d["step"]
            reason.append(dec["reason"] if changed else "")
            sig = d["signals"]
            for k in signals:
                v = sig.get(k)
                signals[k].append(math.nan if v is None else float(v))
        if ep in valfree:
            ctrl.step_epoch(valfree[ep], val.get(ep))
        if progress is not None:
            progress(stop - start)
    frame = pd.DataFrame({"step": steps["step"].to_numpy(), "epoch": epochs, "delta": delta})
    for j, p in enumerate(params_present):
        frame[f"base/{p}"] = base[:, j]
        frame[f"proposed/schedule/{p}"] = proposed[:, j]
    frame["reason"] = reason
    for k, v in signals.items():
        frame[f"signal/{k}"] = v
    return ReplayResult(
        method=SCHEDULER,
        params=ctrl.config() if hasattr(ctrl, "config") else dict(params),
        frame=frame,
        names=params_present,
        run_id=trace.run_id,
        events=ctrl.history(),
    )


def replay(trace: Trace, method: str, **params: Any) -> ReplayResult:
    """Replay one controller (`dwa`, `uncertainty`, any registered method, or `scheduler`)."""
    if method == SCHEDULER:
        return replay_scheduler(trace, **params)
    from adaptive.weighting import available_methods

    if method not in available_methods():
        valid = ", ".join([*available_methods(), SCHEDULER])
        raise ReplayError(f"unknown method {method!r}; valid methods: {valid}")
    return replay_weighting(trace, method, **params)


def metrics_by_epoch(trace: Trace, split: str) -> Mapping[int, Mapping[str, float]]:
    """Epoch metrics of one split as the trainer hands them to the scheduler."""
    return _epoch_metric_dicts(trace, split)


def method_parameters(method: str) -> list[str]:
    """Names of the parameters a method accepts (besides `adjustment_range`)."""
    import inspect

    if method == SCHEDULER:
        from adaptive.scheduler import AdaptiveScheduler

        sig = inspect.signature(AdaptiveScheduler)
        skip = {"dry_run", "logger", "log_every", "history_size", "adjustment_range"}
        return [p for p in sig.parameters if p not in skip]
    from adaptive.weighting import available_methods
    from adaptive.weighting._base import _get_method_class

    if method not in available_methods():
        valid = ", ".join([*available_methods(), SCHEDULER])
        raise ReplayError(f"unknown method {method!r}; valid methods: {valid}")
    return list(_get_method_class(method).param_names())
