"""Types and input helpers shared by the replay modules (no replay module imported here).

`_engine` (the dispatcher), `_weighting_replay`, `_scheduler_replay` and `_inputs` all
import from this module and never from each other's internals, so the replay package has no
import cycle (tests/test_layering.py checks every module's imports, deferred ones included).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from adaptive.errors import InputError
from adaptive.trace import Trace
from adaptive.train.schedule import SCHEDULE_PARAMS

__all__ = [
    "SCHEDULER",
    "SCHEDULE_PARAMS",
    "ReplayError",
    "ReplayResult",
    "first_run_id",
    "method_parameters",
    "metrics_by_epoch",
    "recorded_config",
    "recorded_setting",
    "scheduler_inputs",
    "split_law",
]

SCHEDULER = "scheduler"


class ReplayError(InputError):
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
    notes: list[str] = field(default_factory=list)  # fallbacks taken for missing inputs

    @property
    def kind(self) -> str:
        """`weighting` or `schedule`."""
        return "schedule" if self.method == SCHEDULER else "weighting"


def split_law(token: str) -> tuple[str, str | None]:
    """`"scheduler:gtf"` -> `("scheduler", "gtf")`; any other method name -> `(name, None)`.

    The `scheduler:LAW` form lets one command list the scheduler under several laws side by
    side (`adaptive compare -m scheduler:guard -m scheduler:gtf`); an unknown law, or a law
    given to a loss weighting method, is a `ReplayError` naming the valid ones."""
    method, sep, law = token.partition(":")
    if not sep:
        return token, None
    if method != SCHEDULER:
        raise ReplayError(
            f"method {token!r}: only the scheduler takes a law (scheduler:LAW), not {method!r}"
        )
    from adaptive.scheduler import available_laws

    if law not in available_laws():
        raise ReplayError(
            f"method {token!r}: unknown scheduler law {law!r}; valid laws: "
            + ", ".join(available_laws())
        )
    return method, law


def first_run_id(trace: Trace) -> str:
    """`trace.run_id` without scanning every row: with step rows present, the first run id
    in order of appearance is the first step row's."""
    col = trace.steps.get("run_id")
    if col is None or len(col) == 0:
        return trace.run_id
    return str(col.iloc[:1].astype(str).iloc[0])


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


def recorded_config(trace: Trace) -> Mapping[str, Any]:
    """The training config the trace's run recorded (reference trainer), else empty."""
    cfg = trace.run.get("config") if isinstance(trace.run, Mapping) else None
    return cfg if isinstance(cfg, Mapping) else {}


def recorded_setting(trace: Trace, key: str, default: Any, section: str = "adaptive") -> Any:
    """`<section>.<key>` of the config the trace's run recorded, else `default`: a replay
    reproduces what the live run did unless told otherwise."""
    table = recorded_config(trace).get(section)
    if isinstance(table, Mapping) and key in table:
        return table[key]
    return default


def scheduler_inputs(trace: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Batch signals the scheduler sees: (loss, grad_norm, regime, notes) per step row.

    The loss is `loss_tf_total` (the teacher-forced part, what the reference trainer feeds
    the scheduler) where recorded, else `loss_total`, else the sum of the raw component
    losses; the regime is the `regime` column, else 0 for every batch. `notes` says which
    fallback was taken (for traces of the reference trainer from before these columns, and
    whenever the loss is a sum of raw losses).
    """
    steps = trace.steps
    if "grad_norm" not in steps.columns:
        raise ReplayError(
            f"{trace.path}: the scheduler needs a grad_norm column on step rows "
            "(and loss_total or loss/<c>); this trace has none"
        )
    notes: list[str] = []
    reference = bool(recorded_config(trace))  # the reference trainer's trace: say so
    loss = _col(steps, "loss_tf_total")
    if loss is None:
        loss = _col(steps, "loss_total")
        what = "loss_total" if loss is not None else "the sum of the raw losses loss/<c>"
        if reference or loss is None:
            notes.append(f"no loss_tf_total column: the scheduler's loss signal is {what}")
    if loss is None:
        loss = np.stack(
            [steps[f"loss/{c}"].to_numpy(dtype=np.float32) for c in trace.components], axis=1
        ).sum(axis=1, dtype=np.float32)
    if "regime" in steps.columns:
        regime = steps["regime"].fillna(0).to_numpy(dtype=np.int64)
    else:
        regime = np.zeros(len(steps), dtype=np.int64)
        if reference:
            notes.append("no regime column: every batch is judged against one reference")
    return (
        loss.astype(np.float32),
        steps["grad_norm"].to_numpy(dtype=np.float32),
        regime,
        notes,
    )


def metrics_by_epoch(trace: Trace, split: str) -> Mapping[int, Mapping[str, float]]:
    """Epoch metrics of one split as the trainer hands them to the scheduler."""
    return _epoch_metric_dicts(trace, split)


def method_parameters(method: str) -> list[str]:
    """Names of the parameters a method accepts (besides `adjustment_range`)."""
    if method == SCHEDULER:  # the controller's, `law`, and every registered law's
        from adaptive.scheduler import scheduler_parameters

        skip = {"dry_run", "logger", "log_every", "history_size", "adjustment_range"}
        return [p for p in scheduler_parameters() if p not in skip]
    from adaptive.weighting import available_methods, method_class

    if method not in available_methods():
        valid = ", ".join([*available_methods(), SCHEDULER])
        raise ReplayError(f"unknown method {method!r}; valid methods: {valid}")
    return list(method_class(method).param_names())
