"""Stability of a replayed controller: is it calm enough to switch on live?

The public face of three rooms: `replay._stability_metrics` (`stability_metrics` reduces one
`ReplayResult` to a flat dict of plain floats), `replay._stability_score`
(`stability_score` folds the main ones into one number, lower = more stable, for ranking a
sweep; `stability_table` puts several results side by side) and `replay._stability_verdict`
(`verdict` / `recommend` turn them into a short verdict). Definitions, thresholds and the
score formula: docs/STABILITY.md.
"""

from __future__ import annotations

from replay._stability_metrics import (
    FLIP_DEADBAND,
    METRIC_DOCS,
    SETTLE_TOLERANCE,
    result_labels,
    stability_metrics,
)
from replay._stability_score import (
    EFFECT_REF,
    SCORE_FLIPS_REF,
    SCORE_SETTLE_WEIGHT,
    SCORE_TIE_DECIMALS,
    SCORE_VOLATILITY_REF,
    effect_bonus,
    net_score,
    score_terms,
    stability_rank_key,
    stability_score,
    stability_table,
)
from replay._stability_verdict import (
    READY_SCORE,
    THRESHOLDS,
    Verdict,
    recommend,
    verdict,
    verdicts,
)

__all__ = [
    "EFFECT_REF",
    "FLIP_DEADBAND",
    "METRIC_DOCS",
    "READY_SCORE",
    "SCORE_FLIPS_REF",
    "SCORE_SETTLE_WEIGHT",
    "SCORE_TIE_DECIMALS",
    "SCORE_VOLATILITY_REF",
    "SETTLE_TOLERANCE",
    "THRESHOLDS",
    "Verdict",
    "effect_bonus",
    "net_score",
    "recommend",
    "result_labels",
    "score_terms",
    "stability_metrics",
    "stability_rank_key",
    "stability_score",
    "stability_table",
    "verdict",
    "verdicts",
]
