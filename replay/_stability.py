"""Stability metrics of a replayed controller: is it calm enough to switch on live?

`stability_metrics` reduces one `ReplayResult` to a flat dict of plain floats,
`stability_score` folds the main ones into one number (lower = more stable) for ranking a
sweep, `stability_table` puts several results side by side and `recommend` turns them into
a short verdict. Definitions, thresholds and the score formula: docs/STABILITY.md.

All weight quantities are taken **relative to the base weight**: the multiplier
`rho = proposed / base` (= `1 + delta`), so a stage schedule that changes the base weights
does not count as controller movement. For the scheduler the multiplier is `1 + delta`.
Replay is open loop (the recorded losses do not react to the proposed values), so these
metrics describe the controller's reaction to the recorded training, not the closed loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from replay._engine import ReplayResult

#: Default relative tolerance of the settle epoch.
SETTLE_TOLERANCE = 0.02

#: Reference levels of the score's saturating terms (each term is x / (x + ref), 0.5 at ref).
SCORE_VOLATILITY_REF = 0.01  # mean |change of w/base| per step: 1 % of base per step
SCORE_FLIPS_REF = 10.0  # delta sign flips per 1000 steps
#: Scores closer than this count as tied; ties rank the larger `mean_abs_delta` first.
SCORE_TIE_DECIMALS = 3
#: Effect at which the ranking's effect bonus is half its maximum (mean |delta| of 5 %).
EFFECT_REF = 0.05

#: Thresholds used by `recommend` (documented in docs/STABILITY.md).
THRESHOLDS: dict[str, float] = {
    "clamp_share_high": 0.5,  # the range binds most of the time
    "clamp_share_notable": 0.2,  # the range binds often
    "flips_per_1000_high": 10.0,  # oscillation
    "volatility_step_high": 0.01,  # > 1 % of base per step on average: jittery
    "settle_fraction_late": 0.5,  # settles only in the second half of the trace
    "mean_abs_delta_small": 0.01,  # < 1 % away from base on average: little effect
}

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


# ------------------------------------------------------------------------------ score
def _sat(x: float, ref: float) -> float:
    x = max(0.0, float(x)) if math.isfinite(x) else math.inf
    return 1.0 if math.isinf(x) else x / (x + ref)


def _clamp_share(metrics: Mapping[str, float]) -> float:
    if "at_clamp_share_max" in metrics:
        return float(metrics["at_clamp_share_max"])
    return float(metrics.get("at_bound_share", 0.0))


def stability_score(metrics: Mapping[str, float] | ReplayResult) -> float:
    """One number per configuration, **lower = more stable**, in [0, 4).

        score = clamp + v / (v + 0.01) + f / (f + 10) + settle_fraction

    with clamp = `at_clamp_share_max` (weighting) or `at_bound_share` (scheduler),
    v = `volatility_step`, f = `sign_flips_per_1000`. Effect size is not part of it: rank
    with `stability_rank_key` to break ties by the larger `mean_abs_delta`.
    """
    m = stability_metrics(metrics) if isinstance(metrics, ReplayResult) else metrics
    clamp = _clamp_share(m)
    clamp = min(max(clamp, 0.0), 1.0) if math.isfinite(clamp) else 1.0
    settle = float(m.get("settle_fraction", 1.0))
    settle = min(max(settle, 0.0), 1.0) if math.isfinite(settle) else 1.0
    return float(
        clamp
        + _sat(m.get("volatility_step", 0.0), SCORE_VOLATILITY_REF)
        + _sat(m.get("sign_flips_per_1000", 0.0), SCORE_FLIPS_REF)
        + settle
    )


def effect_bonus(metrics: Mapping[str, float]) -> float:
    """`e / (e + EFFECT_REF)` of the effect `e = mean_abs_delta`, in [0, 1): what moving the
    values is worth in the ranking (0.5 at a mean |delta| of 5 %)."""
    return _sat(float(metrics.get("mean_abs_delta", 0.0)), EFFECT_REF)


def net_score(metrics: Mapping[str, float] | ReplayResult) -> float:
    """The ranking's trade-off, lower = better: `stability_score - effect_bonus`, in
    (-1, 4). A controller that never moves gets no bonus, so calm alone does not win."""
    m = stability_metrics(metrics) if isinstance(metrics, ReplayResult) else metrics
    return stability_score(m) - effect_bonus(m)


def stability_rank_key(metrics: Mapping[str, float] | ReplayResult) -> tuple[float, float]:
    """Sort key for a sweep: score rounded to 3 decimals, then larger effect first."""
    m = stability_metrics(metrics) if isinstance(metrics, ReplayResult) else metrics
    effect = float(m.get("mean_abs_delta", 0.0))
    return (round(stability_score(m), SCORE_TIE_DECIMALS), -effect)


# ------------------------------------------------------------------------------ table
def _fmt_param(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def result_labels(results: Sequence[ReplayResult]) -> list[str]:
    """Column labels: the method name, plus the differing params when a method repeats.

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


def stability_table(
    results: Sequence[ReplayResult],
    *,
    tolerance: float = SETTLE_TOLERANCE,
    score: bool = True,
) -> pd.DataFrame:
    """Metrics side by side: one column per result, one row per metric (union, in order of
    first appearance; NaN where a metric does not apply). With `score`, a last row
    `score` holds `stability_score`."""
    labels = result_labels(results)
    cols: dict[str, dict[str, float]] = {}
    for lab, r in zip(labels, results, strict=True):
        m = stability_metrics(r, tolerance=tolerance)
        if score:
            m = {**m, "score": stability_score(m)}
        cols[lab] = m
    rows: list[str] = []
    for m in cols.values():
        rows.extend(k for k in m if k not in rows)
    if score and "score" in rows:
        rows.remove("score")
        rows.append("score")
    table = pd.DataFrame(
        {lab: [m.get(k, math.nan) for k in rows] for lab, m in cols.items()},
        index=pd.Index(rows, name="metric"),
        dtype=np.float64,
        columns=labels,
    )
    return table


# ------------------------------------------------------------------------------ recommend
def _is_schedule(m: Mapping[str, float]) -> bool:
    return "at_bound_share" in m or "changes" in m


def assess(m: Mapping[str, float]) -> tuple[list[str], list[str]]:
    """(problems, caveats) of one configuration, in words."""
    t = THRESHOLDS
    problems: list[str] = []
    caveats: list[str] = []
    clamp = _clamp_share(m)
    what = "delta sits at ±adjustment_range" if _is_schedule(m) else "weights sit at the clamp"
    if clamp > t["clamp_share_high"]:
        advice = (
            "the range binds most of the time — the controller wants larger moves: consider "
            "raising adjustment_range, or it is fighting the base schedule"
        )
        problems.append(f"{what} on {clamp:.0%} of steps ({advice})")
    elif clamp > t["clamp_share_notable"]:
        caveats.append(f"{what} on {clamp:.0%} of steps")
    flips = float(m.get("sign_flips_per_1000", 0.0))
    if flips > t["flips_per_1000_high"]:
        problems.append(f"delta changes sign {flips:.1f} times per 1000 steps (oscillation)")
    vol = float(m.get("volatility_step", 0.0))
    if vol > t["volatility_step_high"]:
        problems.append(f"jittery: moves {vol:.2%} of base per step on average")
    settle = float(m.get("settle_fraction", 1.0))
    if math.isnan(float(m.get("settle_epoch", math.nan))) and m.get("epochs", 0) > 1:
        # a caveat, not a problem: an epoch-wise method (DWA) keeps adapting by a few
        # percent per epoch; oscillation, pinning and jitter are the problems
        caveats.append("never settles: still moving at the end of the trace")
    elif settle > t["settle_fraction_late"]:
        caveats.append(f"settles late (epoch {m.get('settle_epoch', math.nan):g})")
    effect = float(m.get("mean_abs_delta", 0.0))
    if effect < t["mean_abs_delta_small"]:
        caveats.append(
            f"inert: barely moves from base (mean |delta| {effect:.3f}); switching it on "
            "would change little"
        )
    skipped = float(m.get("skipped_steps", 0.0))
    if skipped > 0:
        share = float(m.get("skipped_share", 0.0))
        caveats.append(f"{skipped:g} step(s) ({share:.1%}) had non-finite losses (skipped)")
    nonfinite = float(m.get("nonfinite_changes", 0.0))
    if nonfinite > 0:
        caveats.append(f"{nonfinite:g} change(s) caused by non-finite values in the trace")
    return problems, caveats


def _normalise(
    results_or_metrics: Any,
) -> list[tuple[str, Mapping[str, float]]]:
    if isinstance(results_or_metrics, ReplayResult):
        results_or_metrics = [results_or_metrics]
    if isinstance(results_or_metrics, Mapping):
        items = list(results_or_metrics.items())
        if items and all(isinstance(v, (int, float)) for _, v in items):
            return [("config", results_or_metrics)]  # one metrics dict
        return [
            (str(k), stability_metrics(v) if isinstance(v, ReplayResult) else v) for k, v in items
        ]
    seq = list(results_or_metrics)
    if seq and all(isinstance(x, ReplayResult) for x in seq):
        return list(zip(result_labels(seq), [stability_metrics(r) for r in seq], strict=True))
    out = []
    for i, x in enumerate(seq, 1):
        if isinstance(x, ReplayResult):
            out.append((f"{x.method} ({i})", stability_metrics(x)))
        else:
            out.append((f"config {i}", x))
    return out


def _pick(items: Iterable[tuple[str, Mapping[str, float], list[str]]]) -> str | None:
    """The candidate to try, as in a sweep's ranking: passes every check, is not inert,
    and has the lowest `net_score` (stability score minus effect bonus)."""
    small = THRESHOLDS["mean_abs_delta_small"]
    ok = [
        (round(net_score(m), SCORE_TIE_DECIMALS), -float(m.get("mean_abs_delta", 0.0)), lab)
        for lab, m, problems in items
        if not problems and float(m.get("mean_abs_delta", 0.0)) >= small
    ]
    return min(ok)[2] if ok else None


def recommend(
    results_or_metrics: ReplayResult
    | Mapping[str, float]
    | Mapping[str, Mapping[str, float] | ReplayResult]
    | Sequence[ReplayResult | Mapping[str, float]],
) -> str:
    """A short recommendation: which controller looks stable enough to enable live.

    Accepts one result or metrics dict, a sequence of them, or a mapping label -> result or
    metrics. Thresholds: `THRESHOLDS` (docs/STABILITY.md). Ends with the open-loop caveat.
    """
    items = _normalise(results_or_metrics)
    if not items:
        return "Nothing to recommend: no replay results."
    lines: list[str] = []
    assessed = []
    for lab, m in items:
        problems, caveats = assess(m)
        assessed.append((lab, m, problems))
        score = stability_score(m)
        if problems:
            verdict = f"{lab}: not yet (score {score:.2f}) — " + "; ".join(problems)
        else:
            verdict = f"{lab}: looks stable enough to try live (score {score:.2f})"
        if caveats:
            verdict += "; caveat: " + "; ".join(caveats)
        lines.append(verdict + ".")
    for kind, name in (("weighting", "loss weighting"), ("schedule", "schedule control")):
        group = [a for a in assessed if _is_schedule(a[1]) == (kind == "schedule")]
        if len(group) < 2:
            continue
        best = _pick(group)
        if best is None:
            lines.append(
                f"No {name} configuration both passes the stability checks and moves the "
                "values (mean |delta| >= "
                f"{THRESHOLDS['mean_abs_delta_small']:g}): keep it off for now."
            )
        else:
            lines.append(
                f"Best {name} candidate: {best} (passes the checks and is not inert; best "
                "trade-off of stability score and effect)."
            )
    lines.append(
        "Replay is open loop: the recorded losses did not react to the proposed values, so "
        "live feedback can damp or amplify this behaviour — enable with logging on and "
        "watch the first epochs."
    )
    return "\n".join(lines)


__all__ = [
    "METRIC_DOCS",
    "SETTLE_TOLERANCE",
    "THRESHOLDS",
    "assess",
    "effect_bonus",
    "net_score",
    "recommend",
    "result_labels",
    "stability_metrics",
    "stability_rank_key",
    "stability_score",
    "stability_table",
]
