"""Stability metrics of a replayed controller: `stability_metrics` reduces one
`ReplayResult` to a flat dict of plain floats (definitions: `METRIC_DOCS`, docs/STABILITY.md),
and `result_labels` names results for a table.

All weight quantities are taken **relative to the base weight**: the multiplier
`rho = proposed / base` (= `1 + delta`), so a stage schedule that changes the base weights
does not count as controller movement. For the scheduler the multiplier is `1 + delta`.
Replay is open loop (the recorded losses do not react to the proposed values), so these
metrics describe the controller's reaction to the recorded training, not the closed loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from replay._engine import ReplayResult

#: Default relative tolerance of the settle epoch.
SETTLE_TOLERANCE = 0.02

# The scheduler's known change reasons, always reported (0 when absent).
_SCHEDULER_REASONS = (
    "nonfinite",
    "grad_spike",
    "loss_rising",
    "valfree_worse",
    "both_worse",
    "recovered",
)

#: One line per metric. `<c>`: a loss component; `<reason>`: a scheduler change reason.
METRIC_DOCS: dict[str, str] = {
    # --- common -------------------------------------------------------------------------
    "steps": "Number of replayed step rows.",
    "epochs": "Number of distinct epochs in the replay.",
    "mean_abs_delta": (
        "Effect size: mean abs(delta) over steps (and components), i.e. how far from base "
        "the controller moves on average (0 = does nothing)."
    ),
    "volatility_step": (
        "Mean abs(change of w/base) from one step to the next (mean over components; "
        "scheduler: of delta)."
    ),
    "volatility_epoch": (
        "Mean over epochs of the std of w/base within the epoch (mean over components; "
        "scheduler: of delta)."
    ),
    "sign_flips": (
        "Sign changes of delta, |delta| ≤ 0.001 ignored (weighting: max over components)."
    ),
    "sign_flips_per_1000": "sign_flips per 1000 steps (weighting: max over components).",
    "max_step_change": (
        "Largest single change of w/base between consecutive steps (weighting: max over "
        "components; scheduler: largest abs(new_delta - old_delta))."
    ),
    "settle_epoch": (
        "First epoch from which the per-epoch mean of w/base (scheduler: 1 + delta) stays "
        "within the tolerance (default 2 % relative) of the final epoch's mean; NaN if "
        "only the final epoch qualifies (never settled). Weighting: max over components."
    ),
    "settle_fraction": (
        "Position of settle_epoch among the epochs, 0 = first epoch, 1 = never settled."
    ),
    # --- weighting ----------------------------------------------------------------------
    "at_clamp_share/<c>": "Share of steps at which the component's scale was clamped to ±r.",
    "at_clamp_share_max": "Largest at_clamp_share over components.",
    "mean_abs_delta/<c>": "Mean abs(delta) of the component (clamped Δ, relative to base).",
    "volatility_step/<c>": "Mean abs(change of w/base) from one step to the next.",
    "volatility_epoch/<c>": "Mean over epochs of the std of w/base within the epoch.",
    "sign_flips/<c>": "Sign changes of the component's delta, |delta| ≤ 0.001 ignored.",
    "sign_flips_per_1000/<c>": "sign_flips/<c> per 1000 steps.",
    "max_step_change/<c>": "Largest abs(change of w/base) between consecutive steps.",
    "settle_epoch/<c>": "Settle epoch of the component's per-epoch mean w/base (NaN: never).",
    "skipped_steps": "Steps whose losses were non-finite and not fed to the method.",
    "skipped_share": "skipped_steps / steps.",
    # --- scheduler ----------------------------------------------------------------------
    "changes": "Number of delta changes (batch and epoch level).",
    "changes_per_1000": "changes per 1000 steps.",
    "changes/<reason>": "Number of delta changes with this reason (known reasons always shown).",
    "at_bound_share": "Share of steps with delta pinned at ±adjustment_range (0 when r = 0).",
    "nonfinite_changes": "Changes caused by NaN/inf losses, grad norms or epoch metrics.",
}


# ------------------------------------------------------------------------------ helpers
FLIP_DEADBAND = 1e-3  # |delta| below 0.1 % of base is "at base", not a side of an oscillation


def _sign_flips(x: np.ndarray) -> int:
    """Sign changes of `x` in order, ignoring NaN and values within ±FLIP_DEADBAND of 0."""
    s = np.sign(x[np.isfinite(x) & (np.abs(x) > FLIP_DEADBAND)])
    return int(np.count_nonzero(s[1:] != s[:-1])) if s.size > 1 else 0


def _step_changes(x: np.ndarray) -> np.ndarray:
    d = np.abs(np.diff(x))
    return d[np.isfinite(d)]


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else 0.0


def _within_epoch_std(x: np.ndarray, epochs: np.ndarray) -> float:
    s = pd.Series(x).groupby(epochs).std(ddof=0).to_numpy(dtype=np.float64)
    s = s[np.isfinite(s)]
    return float(s.mean()) if s.size else 0.0


def _settle(x: np.ndarray, epochs: np.ndarray, tolerance: float) -> tuple[float, float]:
    """(settle_epoch, settle_fraction) of the per-epoch mean of the multiplier `x`.

    settle_epoch is the first epoch from which every epoch's mean is within
    `tolerance * |final mean|` of the final epoch's mean. When only the final epoch
    qualifies (and there is more than one epoch) the series never settled: (NaN, 1.0).
    """
    means = pd.Series(x).groupby(epochs).mean()  # sorted by epoch
    means = means[np.isfinite(means.to_numpy(dtype=np.float64))]
    if len(means) == 0:
        return math.nan, 1.0
    vals = means.to_numpy(dtype=np.float64)
    labels = means.index.to_numpy()
    final = vals[-1]
    ok = np.abs(vals - final) <= tolerance * abs(final) + 1e-12
    # first index from which all later epochs are within tolerance
    bad = np.flatnonzero(~ok)
    first = 0 if bad.size == 0 else int(bad[-1]) + 1
    n = len(vals)
    if n > 1 and first == n - 1:
        return math.nan, 1.0
    return float(labels[first]), (first / (n - 1) if n > 1 else 0.0)


def _relative_weight(f: pd.DataFrame, c: str) -> np.ndarray:
    """w/base per step; 1 + delta where the base is 0 or missing."""
    delta = f[f"delta/{c}"].to_numpy(dtype=np.float64)
    fallback = 1.0 + delta
    if f"proposed/weight/{c}" not in f.columns or f"base/{c}" not in f.columns:
        return fallback
    w = f[f"proposed/weight/{c}"].to_numpy(dtype=np.float64)
    base = f[f"base/{c}"].to_numpy(dtype=np.float64)
    usable = np.isfinite(base) & (base != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(usable, w / np.where(usable, base, 1.0), fallback)
    return rel


# ------------------------------------------------------------------------------ metrics
def _weighting_metrics(result: ReplayResult, tolerance: float) -> dict[str, float]:
    f = result.frame
    n = len(f)
    epochs = f["epoch"].to_numpy()
    out: dict[str, float] = {"steps": float(n), "epochs": float(len(np.unique(epochs)))}
    per: dict[str, dict[str, float]] = {}
    settle_fracs = []
    for c in result.names:
        delta = f[f"delta/{c}"].to_numpy(dtype=np.float64)
        rel = _relative_weight(f, c)
        clamped = f[f"clamped/{c}"].to_numpy(dtype=bool) if f"clamped/{c}" in f else None
        changes = _step_changes(rel)
        flips = _sign_flips(delta)
        settle_epoch, settle_frac = _settle(rel, epochs, tolerance)
        settle_fracs.append(settle_frac)
        per[c] = {
            "at_clamp_share": float(clamped.mean()) if clamped is not None and n else 0.0,
            "mean_abs_delta": _mean(np.abs(delta)),
            "volatility_step": float(changes.mean()) if changes.size else 0.0,
            "volatility_epoch": _within_epoch_std(rel, epochs),
            "sign_flips": float(flips),
            "sign_flips_per_1000": 1000.0 * flips / n if n else 0.0,
            "max_step_change": float(changes.max()) if changes.size else 0.0,
            "settle_epoch": settle_epoch,
        }
    for key in per[result.names[0]] if result.names else []:
        for c in result.names:
            out[f"{key}/{c}"] = per[c][key]
    if result.names:
        vals = {k: np.array([per[c][k] for c in result.names]) for k in per[result.names[0]]}
        out["at_clamp_share_max"] = float(vals["at_clamp_share"].max())
        out["mean_abs_delta"] = float(vals["mean_abs_delta"].mean())
        out["volatility_step"] = float(vals["volatility_step"].mean())
        out["volatility_epoch"] = float(vals["volatility_epoch"].mean())
        out["sign_flips"] = float(vals["sign_flips"].max())
        out["sign_flips_per_1000"] = float(vals["sign_flips_per_1000"].max())
        out["max_step_change"] = float(vals["max_step_change"].max())
        se = vals["settle_epoch"]
        out["settle_epoch"] = math.nan if np.isnan(se).any() else float(se.max())
        out["settle_fraction"] = float(max(settle_fracs))
    skipped = int(f["skipped"].to_numpy(dtype=bool).sum()) if "skipped" in f.columns else 0
    out["skipped_steps"] = float(skipped)
    out["skipped_share"] = skipped / n if n else 0.0
    return out


def _schedule_metrics(result: ReplayResult, tolerance: float) -> dict[str, float]:
    f = result.frame
    n = len(f)
    epochs = f["epoch"].to_numpy()
    delta = f["delta"].to_numpy(dtype=np.float64)
    r = float(result.params.get("adjustment_range", math.nan))
    out: dict[str, float] = {"steps": float(n), "epochs": float(len(np.unique(epochs)))}
    events = list(result.events)
    out["changes"] = float(len(events))
    out["changes_per_1000"] = 1000.0 * len(events) / n if n else 0.0
    counts = dict.fromkeys(_SCHEDULER_REASONS, 0)
    for ev in events:
        reason = str(ev.get("reason") or "unknown")
        counts[reason] = counts.get(reason, 0) + 1
    for reason, k in counts.items():
        out[f"changes/{reason}"] = float(k)
    out["nonfinite_changes"] = float(counts["nonfinite"])
    out["mean_abs_delta"] = _mean(np.abs(delta))
    changes = _step_changes(delta)
    out["volatility_step"] = float(changes.mean()) if changes.size else 0.0
    out["volatility_epoch"] = _within_epoch_std(delta, epochs)
    # the frame shows delta before each step, so a change after the last step is only in
    # the events; the events may be truncated by history_size, the frame is not
    jumps = [abs(float(ev["new_delta"]) - float(ev["old_delta"])) for ev in events]
    jumps += changes.tolist()
    out["max_step_change"] = float(max(jumps)) if jumps else 0.0
    flips = _sign_flips(delta)
    out["sign_flips"] = float(flips)
    out["sign_flips_per_1000"] = 1000.0 * flips / n if n else 0.0
    if n and math.isfinite(r) and r > 0:
        out["at_bound_share"] = float(np.mean(np.abs(delta) >= r - 1e-9))
    else:
        out["at_bound_share"] = 0.0
    out["settle_epoch"], out["settle_fraction"] = _settle(1.0 + delta, epochs, tolerance)
    return out


def stability_metrics(
    result: ReplayResult, *, tolerance: float = SETTLE_TOLERANCE
) -> dict[str, float]:
    """Flat dict of plain-float stability metrics of one replayed controller.

    Keys: see `METRIC_DOCS` (`<c>`: each component of a weighting method). `tolerance` is
    the relative tolerance of the settle epoch. `settle_epoch` is NaN when never settled;
    every other value is finite for a finite replay.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if result.kind == "schedule":
        return _schedule_metrics(result, tolerance)
    return _weighting_metrics(result, tolerance)


# ------------------------------------------------------------------------------ labels
def _fmt_param(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def result_labels(results: Sequence[ReplayResult]) -> list[str]:
    """Column labels: the method name, plus the differing params when a method repeats
    (only those every result sets, when they tell the results apart: `scheduler(law=gtf)`).

    If the params of a repeated method are equal, the run id is added; if that does not
    separate them either, `#1`, `#2`, ... (in input order).
    """
    labels = [r.method for r in results]
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(results):
        groups.setdefault(r.method, []).append(i)
    for method, idx in groups.items():
        if len(idx) < 2:
            continue
        keys = sorted({k for i in idx for k in results[i].params})
        differing = [k for k in keys if len({repr(results[i].params.get(k)) for i in idx}) > 1]
        # keys some results leave at None (another scheduler law's parameters) say nothing
        # when a key every result sets (`law`) already tells them apart
        shared = [k for k in differing if all(results[i].params.get(k) is not None for i in idx)]
        if shared and len({tuple(repr(results[i].params[k]) for k in shared) for i in idx}) == len(
            idx
        ):
            differing = shared
        for i in idx:
            if differing:
                p = results[i].params
                inner = ", ".join(f"{k}={_fmt_param(p.get(k))}" for k in differing)
                labels[i] = f"{method}({inner})"
            elif len({results[j].run_id for j in idx}) == len(idx):
                labels[i] = f"{method}[{results[i].run_id}]"
    seen: dict[str, int] = {}
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
    counter: dict[str, int] = {}
    for i, lab in enumerate(labels):
        if seen[lab] > 1:
            counter[lab] = counter.get(lab, 0) + 1
            labels[i] = f"{lab}#{counter[lab]}"
    return labels
