"""The stability score of a replayed controller: one number per configuration, lower =
steadier (`stability_score`), its four terms in words (`score_terms`), the effect bonus and
net score a sweep ranks by, and `stability_table` (metrics side by side with the score).
Formula and reference levels: docs/STABILITY.md."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from replay._engine import ReplayResult
from replay._stability_metrics import SETTLE_TOLERANCE, result_labels, stability_metrics

#: Reference levels of the score's saturating terms (each term is x / (x + ref), 0.5 at ref).
SCORE_VOLATILITY_REF = 0.01  # mean |change of w/base| per step: 1 % of base per step
SCORE_FLIPS_REF = 10.0  # delta sign flips per 1000 steps
SCORE_SETTLE_WEIGHT = 0.5  # weight of settle_fraction in the score
#: Scores closer than this count as tied; ties rank the larger `mean_abs_delta` first.
SCORE_TIE_DECIMALS = 3
#: Effect at which the ranking's effect bonus is half its maximum (mean |delta| of 5 %).
EFFECT_REF = 0.05


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


def is_schedule_metrics(m: Mapping[str, float]) -> bool:
    """Whether `m` are a scheduler's metrics (it has scheduler-only keys)."""
    return any(not math.isnan(float(m.get(k, math.nan))) for k in ("at_bound_share", "changes"))


def score_terms(m: Mapping[str, float]) -> dict[str, tuple[float, str]]:
    """The score's four terms, each `(term value in [0, 1], what it means in words)`; they
    add up to `stability_score(m)`."""
    clamp = _clamp_share(m)
    clamp = min(max(clamp, 0.0), 1.0) if math.isfinite(clamp) else 1.0
    what = "delta at ±adjustment_range" if is_schedule_metrics(m) else "weights at the clamp"
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


# ------------------------------------------------------------------------------ table
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
