"""Reference replays for tests: the trainer's per-step call sequence, one call per step.

The library's replay engine advances whole epochs with `step_block`; these drive the public
per-step API (`AdaptiveLossWeighting.__call__`, `AdaptiveScheduler.step_batch`) exactly as the
trainer does, so tests can check that the block path is the same computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from adaptive.trace import Trace
from replay._engine import (
    SCHEDULER,
    ReplayError,
    ReplayResult,
    _epoch_bounds,
    _epoch_metric_dicts,
    scheduler_inputs,
)


def replay_weighting(
    trace: Trace,
    method: str,
    *,
    adjustment_range: float = 0.3,
    loss_input: str | None = None,
    restart_on_stage_change: bool | None = None,
    progress: Callable[[int], None] | None = None,
    **method_params: Any,
) -> ReplayResult:
    """Replay `AdaptiveLossWeighting(method=...)` over a trace's step rows in dry-run.

    Base weights come from `weight_base/<c>` (or `weight/<c>` when no base column exists,
    else 1). Epoch ends are the changes of `epoch` between consecutive step rows.
    """
    import torch

    from adaptive.weighting import AdaptiveLossWeighting
    from replay._weighting_replay import weighting_inputs

    steps = trace.steps
    inputs = weighting_inputs(  # the inputs, not the maths
        trace,
        loss_input=loss_input,
        restart_on_stage_change=restart_on_stage_change,
        method=method,
    )
    extras = {k: torch.from_numpy(v.astype(np.float64)) for k, v in inputs.extras.items()}
    comps, losses_np, base = inputs.components, inputs.losses, inputs.base
    losses = torch.from_numpy(losses_np.astype(np.float64))
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
            if inputs.restarts[start]:
                ctrl.restart()
        for r in range(start, stop):
            if not np.array_equal(base[r], current_base):
                current_base = base[r]
                ctrl.set_base_weights(dict(zip(comps, current_base.tolist(), strict=True)))
            row = losses[r]

            def per_comp(t: torch.Tensor) -> dict[str, torch.Tensor]:
                return dict(zip(comps, t.unbind(0), strict=True))

            # the live trainer's order: before-step extras with the step, then after_step
            before = {k: per_comp(v[r]) for k, v in extras.items() if k != "loss_after"}
            _, _, diag = ctrl(per_comp(row), extras=before or None)
            if ctrl.needs_after_step:
                ctrl.after_step({"loss_after": per_comp(extras["loss_after"][r])})
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
    loss, grad, regime, _ = scheduler_inputs(trace)
    from replay._scheduler_replay import _schedule_base, recorded_limits

    params_present, base = _schedule_base(trace)  # the inputs, not the control law
    valfree = _epoch_metric_dicts(trace, "valfree")
    val = _epoch_metric_dicts(trace, "val")
    params.pop("dry_run", None)
    params.setdefault("limits", recorded_limits(trace))
    ctrl = AdaptiveScheduler(dry_run=True, **params)
    from replay._scheduler_replay import law_inputs

    inputs = law_inputs(trace, ctrl.law)
    epochs = steps["epoch"].to_numpy()
    proposed = np.empty((len(steps), len(params_present)))
    delta = np.empty(len(steps))
    reason: list[str] = []
    signals: dict[str, list[float]] = {k: [] for k in ctrl.law_impl.plot_signals}
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
            ctrl.step_batch(
                float(loss[r]),
                float(grad[r]),
                regime=int(regime[r]),
                inputs={k: float(v[r]) for k, v in inputs.items()},
            )
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
