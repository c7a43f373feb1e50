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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from replay._engine import ReplayResult

#: Default relative tolerance of the settle epoch.
SETTLE_TOLERANCE = 0.02

#: Reference levels of the score's saturating terms (each term is x / (x + ref), 0.5 at ref).
SCORE_VOLATILITY_REF = 0.01  # mean |change of w/base| per step: 1 % of base per step
SCORE_FLIPS_REF = 10.0  # delta sign flips per 1000 steps
SCORE_SETTLE_WEIGHT = 0.5  # weight of settle_fraction in the score
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
    """One number per configuration, **lower = more stable**, in [0, 3.5).

        score = clamp + v / (v + 0.01) + f / (f + 10) + 0.5 · settle_fraction

    with clamp = `at_clamp_share_max` (weighting) or `at_bound_share` (scheduler),
    v = `volatility_step`, f = `sign_flips_per_1000`. Settling counts half
    (`SCORE_SETTLE_WEIGHT`): a controller still adapting at the end of a run (DWA moves a
    few percent every epoch by design) is a caveat more than a danger, and at full weight
    it alone would keep every epoch-wise method from `READY_SCORE`. Effect size is not part
    of it: `net_score` weighs it against the score for ranking.
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
        + SCORE_SETTLE_WEIGHT * settle
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
#: The verdict threshold: a configuration "looks stable enough to try live" exactly when its
#: score is below this (the score's four terms are each in [0, 1]; one term at its worst,
#: e.g. never settling, is enough to fail). The score, not a separate rule, decides.
READY_SCORE = 1.0


def _is_schedule(m: Mapping[str, float]) -> bool:
    return any(not math.isnan(float(m.get(k, math.nan))) for k in ("at_bound_share", "changes"))


def score_terms(m: Mapping[str, float]) -> dict[str, tuple[float, str]]:
    """The score's four terms, each `(term value in [0, 1], what it means in words)`; they
    add up to `stability_score(m)`."""
    clamp = _clamp_share(m)
    clamp = min(max(clamp, 0.0), 1.0) if math.isfinite(clamp) else 1.0
    what = "delta at ±adjustment_range" if _is_schedule(m) else "weights at the clamp"
    vol = float(m.get("volatility_step", 0.0))
    flips = float(m.get("sign_flips_per_1000", 0.0))
    settle = float(m.get("settle_fraction", 1.0))
    settle = min(max(settle, 0.0), 1.0) if math.isfinite(settle) else 1.0
    never = math.isnan(float(m.get("settle_epoch", math.nan))) and m.get("epochs", 0) > 1
    return {
        "clamp": (clamp, f"{what} on {clamp:.0%} of steps"),
        "volatility": (
            _sat(vol, SCORE_VOLATILITY_REF),
            ("jittery: " if vol > 0.01 else "") + f"moves {vol:.2%} of base per step",
        ),
        "flips": (
            _sat(flips, SCORE_FLIPS_REF),
            ("oscillation: " if flips > 10 else "") + f"{flips:.1f} sign flips per 1000 steps",
        ),
        "settle": (
            SCORE_SETTLE_WEIGHT * settle,
            "never settles: still moving at the end"
            if never
            else f"settles at epoch {m.get('settle_epoch', math.nan):g}",
        ),
    }


def _caveats(m: Mapping[str, float]) -> list[str]:
    """Things worth knowing that the score does not weigh (effect size, bad input)."""
    caveats: list[str] = []
    effect = float(m.get("mean_abs_delta", 0.0))
    if effect < THRESHOLDS["mean_abs_delta_small"]:
        caveats.append(f"barely moves from base (mean |delta| {effect:.3f}): little effect")
    skipped = float(m.get("skipped_steps", 0.0))
    if skipped > 0:
        share = float(m.get("skipped_share", 0.0))
        caveats.append(f"{skipped:g} step(s) ({share:.1%}) had non-finite losses (skipped)")
    nonfinite = float(m.get("nonfinite_changes", 0.0))
    if nonfinite > 0:
        caveats.append(f"{nonfinite:g} change(s) caused by non-finite values in the trace")
    return caveats


def _method(label: str) -> str:
    return label.split("(", 1)[0].split("[", 1)[0].split("#", 1)[0].strip()


def _advice(key: str, method: str) -> str:
    """What to try when the term `key` drove a configuration's score up."""
    if key == "clamp":
        return (
            "the range binds: it wants larger moves — raise adjustment_range, or it is "
            "fighting the base schedule"
        )
    if key in ("flips", "volatility"):
        return {
            "dwa": "calm it with a higher temperature (sweep -m dwa -g temperature=1,2,4)",
            "uncertainty": "calm it with a smaller lr (sweep -m uncertainty -g lr=0.001,0.003)",
            "scheduler": (
                "calm it with a smaller adjustment_rate or a longer update_interval "
                "(sweep -m scheduler -g adjustment_rate=0.05,0.1)"
            ),
        }.get(method) or _sweep_hint(method)
    return "record a longer run (it may settle later) or sweep for a calmer setting"


def _sweep_hint(method: str) -> str:
    """Advice for a method without a hand-written hint: its parameters, from the registry."""
    from replay._engine import ReplayError, method_parameters

    try:
        names = method_parameters(method)
    except ReplayError:
        names = []
    which = f" ({', '.join(names)})" if names else ""
    return f"sweep {method}'s parameters{which} for a calmer setting"


def _try_live(method: str) -> str:
    flag = "--adaptive-scheduler" if method == "scheduler" else f"--adaptive-loss {method}"
    return f"try it live with logging on: adaptive train {flag}"


@dataclass
class Verdict:
    """The verdict on one replayed configuration, derived from its stability score.

    `ready` is exactly `score < READY_SCORE`; `drivers` are the one or two score terms that
    weigh most, in words; `next_step` is what to do about it.
    """

    label: str
    kind: str  # "weighting" or "schedule"
    score: float
    ready: bool
    drivers: list[str]
    caveats: list[str]
    next_step: str

    def line(self) -> str:
        """One line: label, verdict, score against the threshold, what drove it."""
        word = "looks stable enough to try live" if self.ready else "not yet"
        cmp = "<" if self.ready else ">="
        text = f"{self.label}: {word} — score {self.score:.2f} {cmp} {READY_SCORE:g}"
        if self.drivers:
            text += "; " + ", ".join(self.drivers)
        return text


def verdict(label: str, m: Mapping[str, float]) -> Verdict:
    """The `Verdict` of one configuration's metrics (see `READY_SCORE`); a `score` entry
    (a `stability_table` row, e.g. pooled over runs) is used as the score when present."""
    schedule = _is_schedule(m)
    given = float(m.get("score", math.nan))  # a table's score row (pooled: mean over runs)
    score = given if math.isfinite(given) else stability_score(m)
    ready = score < READY_SCORE
    terms = sorted(score_terms(m).items(), key=lambda kv: -kv[1][0])
    top = [(k, t, words) for k, (t, words) in terms if t >= 0.05][:2]
    drivers = [f"{words} (+{t:.2f})" for _, t, words in top]
    caveats = _caveats(m)
    method = _method(label)
    if ready and caveats and caveats[0].startswith("barely moves"):
        nxt = "it hardly acts as configured: sweep for a setting that moves more"
    elif ready:
        nxt = _try_live(method)
    else:
        keys = [k for k, _, _ in top]
        specific = [k for k, t, _ in top if k != "settle" and t >= 0.3]
        nxt = _advice((specific or keys or ["settle"])[0], method)
    return Verdict(
        label, "schedule" if schedule else "weighting", score, ready, drivers, caveats, nxt
    )


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


def _acts(v: Verdict) -> bool:
    """Whether the configuration moves enough to matter (no "barely moves" caveat)."""
    return not any(c.startswith("barely moves") for c in v.caveats)


def verdicts(
    results_or_metrics: ReplayResult
    | Mapping[str, float]
    | Mapping[str, Mapping[str, float] | ReplayResult]
    | Sequence[ReplayResult | Mapping[str, float]],
) -> list[Verdict]:
    """One `Verdict` per configuration (same inputs as `recommend`)."""
    return [verdict(lab, m) for lab, m in _normalise(results_or_metrics)]


def recommend(
    results_or_metrics: ReplayResult
    | Mapping[str, float]
    | Mapping[str, Mapping[str, float] | ReplayResult]
    | Sequence[ReplayResult | Mapping[str, float]],
) -> str:
    """A short recommendation: which controller looks stable enough to enable live.

    Accepts one result or metrics dict, a sequence of them, or a mapping label -> result or
    metrics. The verdict is the score against `READY_SCORE` (docs/STABILITY.md). Ends with
    the open-loop caveat.
    """
    items = _normalise(results_or_metrics)
    if not items:
        return "Nothing to recommend: no replay results."
    lines: list[str] = [
        f"Score 0-3.5, lower is steadier; below {READY_SCORE:g} looks stable enough to try live."
    ]
    vs = [verdict(lab, m) for lab, m in items]
    for v in vs:
        text = v.line()
        if v.caveats:
            text += "; caveat: " + "; ".join(v.caveats)
        lines.append(f"{text}. Next: {v.next_step}.")
    for kind, name in (("weighting", "loss weighting"), ("schedule", "schedule control")):
        group = [(v, m) for v, (_, m) in zip(vs, items, strict=True) if v.kind == kind]
        if len(group) < 2:
            continue
        ok = [
            (round(net_score(m), SCORE_TIE_DECIMALS), v.label, _acts(v))
            for v, m in group
            if v.ready
        ]
        acting = [x for x in ok if x[2]]
        if not ok:
            lines.append(f"No {name} configuration scores below {READY_SCORE:g}.")
        elif acting:
            best = min(acting)[1]
            lines.append(
                f"Best {name} candidate: {best} (score below {READY_SCORE:g}, not inert; the "
                "best trade-off of stability and effect)."
            )
        else:
            lines.append(
                f"No {name} configuration is worth switching on: those scoring below "
                f"{READY_SCORE:g} barely move from base (inert)."
            )
    lines.append(
        "Replay is open loop: the recorded losses did not react to the proposed values, so "
        "live feedback can damp or amplify this behaviour — enable with logging on and "
        "watch the first epochs."
    )
    return "\n".join(lines)


__all__ = [
    "METRIC_DOCS",
    "READY_SCORE",
    "SETTLE_TOLERANCE",
    "THRESHOLDS",
    "Verdict",
    "effect_bonus",
    "net_score",
    "recommend",
    "result_labels",
    "stability_metrics",
    "stability_rank_key",
    "stability_score",
    "stability_table",
    "verdict",
    "verdicts",
]
