"""Fast scheduler replay: `AdaptiveScheduler.step_block` per epoch instead of per-step calls.

Same calls, same order, same inputs as the trainer (and the per-step reference replay in tests):
per epoch `set_base_values` from the epoch's first step row, then the epoch's batches, then
`step_epoch(valfree, val)` when the trace has valfree metrics for that epoch. The batches go
through `AdaptiveScheduler.step_block`, which is exactly equivalent to reading `proposed()`
and calling `step_batch` once per batch, and which runs the one window-decision code path
the live `step_batch` runs. There is no second implementation of the control law here: this
module only lays the block records out as per-step columns.

Output columns are bit-identical to the per-step replay: `step`, `epoch`, `delta` (in force
when the batch was read), `base/<p>`, `proposed/schedule/<p>`, `reason` (set on the step
after which a window-end change happened, else ""), and `signal/<k>` for each of the law's
`plot_signals` (the value `diagnostics()` shows after the step; the guard's: `grad_z`, the
largest grad-norm z-score in the window, `grad_outliers`, `loss_trend`, `calm_streak`,
`free_trend`).
The signal columns are piecewise constant: batch signals only change at window ends and
`free_trend` only at `step_epoch`. `events` holds every change, in order (not truncated to
`history_size`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from adaptive.trace import Trace
    from replay._common import ReplayResult

__all__ = ["law_inputs", "replay_scheduler_fast"]


def _schedule_base(trace: Trace) -> tuple[list[str], np.ndarray]:
    """(parameter names, base values per step row) exactly as `replay_scheduler` reads them:
    `schedule_base/<p>`, else `schedule/<p>`, else all three parameters at 1.0."""
    from adaptive.train.schedule import SCHEDULE_PARAMS
    from replay._common import _col

    steps = trace.steps
    names = list(
        dict.fromkeys(
            [c.split("/", 1)[1] for c in steps.columns if c.startswith("schedule_base/")]
            + [c.split("/", 1)[1] for c in steps.columns if c.startswith("schedule/")]
        )
    )
    if not names:
        return list(SCHEDULE_PARAMS), np.ones((len(steps), len(SCHEDULE_PARAMS)))
    cols = []
    for p in names:
        col = _col(steps, f"schedule_base/{p}")
        if col is None:
            col = _col(steps, f"schedule/{p}")
        cols.append(col)
    return names, np.stack(cols, axis=1)


def law_inputs(trace: Trace, law: str) -> dict[str, np.ndarray]:
    """The per-batch inputs scheduler law ``law`` reads (its ``inputs``: name -> trace
    column), as float32 arrays like the loss; a one-line ``ReplayError`` saying what is not
    recorded (the columns, or the evaluation splits of ``epoch_splits``) and how to record
    it."""
    from adaptive.scheduler import law_class
    from replay._common import ReplayError, _col

    cls = law_class(law)
    steps = trace.steps
    missing = [c for c in cls.inputs.values() if c not in steps.columns]
    if missing:
        raise ReplayError(
            f"{trace.path}: scheduler law {law!r} needs {missing!r}, not recorded in this "
            "trace; record them with `adaptive train` or TraceRecorder.log_step(schedule=..., "
            "loss_fr_total=...) (docs/TRACE_FORMAT.md)"
        )
    splits = set(trace.epochs["split"].astype(str)) if len(trace.epochs) else set()
    absent = [s for s in cls.epoch_splits if s not in splits]
    if absent:
        raise ReplayError(
            f"{trace.path}: scheduler law {law!r} needs evaluation rows of {absent!r}, not "
            "recorded in this trace; record them with TraceRecorder.log_epoch(split=...)"
        )
    return {
        k: _col(steps, c).astype(np.float32)  # type: ignore[union-attr]
        for k, c in cls.inputs.items()
    }


def _ffill(rows: list[int], values: list[Any], n: int, dtype: Any = np.float64) -> np.ndarray:
    """Per-row array from change points: ``values[k]`` applies from ``rows[k]`` on.

    ``rows`` must start at 0 and be non-decreasing; of equal rows the last one wins. With a
    float dtype, None becomes NaN (``np.asarray([None], float)``) and floats stay exact."""
    edges = np.asarray([*rows, n], dtype=np.int64)
    return np.repeat(np.asarray(values, dtype=dtype), np.diff(edges), axis=0)


def replay_scheduler_fast(
    trace: Trace,
    *,
    progress: Callable[[int], None] | None = None,
    **params: Any,
) -> ReplayResult:
    """Replay `AdaptiveScheduler` (any registered law: `law=NAME` among `params`) over a
    trace in dry-run, one `step_block` per epoch.

    Same arguments and frame as the per-step reference replay; `events` is the full list
    of changes (the per-step replay returns only the last `history_size`).
    """
    from adaptive.scheduler import AdaptiveScheduler, map_value
    from replay._common import (
        SCHEDULER,
        ReplayError,
        ReplayResult,
        _epoch_bounds,
        _epoch_metric_dicts,
        first_run_id,
        scheduler_inputs,
    )

    steps = trace.steps
    n = len(steps)
    if n == 0:
        raise ReplayError(f"{trace.path}: no step rows to replay")
    loss, grad, regime, notes = scheduler_inputs(trace)
    names, base = _schedule_base(trace)
    valfree = _epoch_metric_dicts(trace, "valfree")
    val = _epoch_metric_dicts(trace, "val")
    params.pop("dry_run", None)
    if "limits" not in params:
        params["limits"] = recorded_limits(trace)
    ctrl = AdaptiveScheduler(dry_run=True, **params)
    keys = ctrl.law_impl.plot_signals  # the law's signal columns
    inputs = law_inputs(trace, ctrl.law)

    def _sig(signals: dict[str, float | None]) -> tuple[float | None, ...]:
        return tuple(signals[k] for k in keys)

    epochs = steps["epoch"].to_numpy()

    # Change points: delta in force before row r; signals after row r; reasons at row r.
    d_rows: list[int] = [0]
    d_vals: list[float] = [ctrl.delta]
    s_rows: list[int] = [0]
    s_vals: list[tuple[float | None, ...]] = []  # None -> NaN in _ffill
    r_rows: list[int] = []
    r_vals: list[str] = []
    seg_rows: list[int] = []  # epoch starts, with the base values set there
    seg_base: list[dict[str, float]] = []
    events: list[dict[str, Any]] = []
    for ep, start, stop in _epoch_bounds(epochs):
        bvals = {p: float(v) for p, v in zip(names, base[start], strict=True) if not math.isnan(v)}
        ctrl.set_base_values(bvals)
        seg_rows.append(start)
        seg_base.append(ctrl.base_values)
        rec = ctrl.step_block(
            loss[start:stop],
            grad[start:stop],
            regime[start:stop],
            {k: v[start:stop] for k, v in inputs.items()},
        )
        if not s_vals:
            s_vals.append(_sig(rec.signals_before))
        rows = [start + off for off in rec.closes]
        d_rows += [row + 1 for row in rows]
        d_vals += rec.deltas
        s_rows += rows
        s_vals += [_sig(sg) for sg in rec.signals]
        for row, dec in zip(rows, rec.decisions, strict=True):
            if dec["action"] == "change":
                r_rows.append(row)
                r_vals.append(dec["reason"])
        events.extend(rec.changes)
        if ep in valfree:
            changes = ctrl.num_changes
            ctrl.step_epoch(valfree[ep], val.get(ep))
            if ctrl.num_changes != changes:
                events.append(ctrl.last_change())  # type: ignore[arg-type]
            d_rows.append(stop)
            d_vals.append(ctrl.delta)
            s_rows.append(stop)
            s_vals.append(_sig(ctrl.diagnostics()["signals"]))
        if progress is not None:
            progress(stop - start)

    delta = _ffill(d_rows, d_vals, n)
    sig_arr = _ffill(s_rows, s_vals, n).reshape(n, len(keys))
    seg_idx = _ffill(seg_rows, list(range(len(seg_rows))), n, dtype=np.int64)
    # proposed(): map_value once per run of constant (base values, delta)
    cut = np.flatnonzero((delta[1:] != delta[:-1]) | (seg_idx[1:] != seg_idx[:-1])) + 1
    run_start = np.concatenate([[0], cut])
    counts = np.diff(np.concatenate([run_start, [n]]))
    run_delta = delta[run_start].tolist()
    run_seg = seg_idx[run_start].tolist()
    proposed = np.empty((len(run_start), len(names)))
    limits = ctrl.config()["limits"] or {}
    rules = ctrl.config()["param_rules"] or {}
    for k, (d, si) in enumerate(zip(run_delta, run_seg, strict=True)):
        b = seg_base[si]
        proposed[k] = [
            map_value(p, b[p], d, limits.get(p), rules.get(p)) if p in b else math.nan
            for p in names
        ]
    proposed = np.repeat(proposed, counts, axis=0)
    reason: list[str] = [""] * n
    for row, why in zip(r_rows, r_vals, strict=True):
        reason[row] = why

    frame = pd.DataFrame({"step": steps["step"].to_numpy(), "epoch": epochs, "delta": delta})
    for j, p in enumerate(names):
        frame[f"base/{p}"] = base[:, j]
        frame[f"proposed/schedule/{p}"] = proposed[:, j]
    frame["reason"] = reason
    for j, k in enumerate(keys):
        frame[f"signal/{k}"] = sig_arr[:, j]
    return ReplayResult(
        method=SCHEDULER,
        params=ctrl.config(),
        frame=frame,
        names=names,
        run_id=first_run_id(trace),
        events=events,
        notes=notes,
    )


def recorded_limits(trace: Trace) -> dict[str, tuple[float, float]] | None:
    """The bounds the reference trainer gave its scheduler (from the run's recorded
    `data.window`), so a replay clips the proposed values as the live run did."""
    from adaptive.train.schedule import schedule_limits
    from replay._common import recorded_setting

    window = recorded_setting(trace, "window", None, section="data")
    if not isinstance(window, int) or window < 2:
        return None
    return schedule_limits(window)
