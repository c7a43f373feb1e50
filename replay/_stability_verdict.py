"""The verdict on a replayed controller, derived from its stability score: `verdict` /
`verdicts` (one `Verdict` per configuration: steady or not, whether it acts at all, what
drove the score, what to do next) and `recommend` (the verdicts as a short text).
Thresholds: docs/STABILITY.md."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from replay._engine import ReplayResult
from replay._stability_metrics import result_labels, stability_metrics
from replay._stability_score import (
    SCORE_TIE_DECIMALS,
    is_schedule_metrics,
    net_score,
    score_terms,
    stability_score,
)

#: Thresholds used by `recommend` (documented in docs/STABILITY.md).
THRESHOLDS: dict[str, float] = {
    "clamp_share_high": 0.5,  # the range binds most of the time
    "clamp_share_notable": 0.2,  # the range binds often
    "flips_per_1000_high": 10.0,  # oscillation
    "volatility_step_high": 0.01,  # > 1 % of base per step on average: jittery
    "settle_fraction_late": 0.5,  # settles only in the second half of the trace
    "mean_abs_delta_small": 0.01,  # < 1 % away from base on average: little effect
}


# ------------------------------------------------------------------------------ recommend
#: The verdict threshold: a configuration "looks stable enough to try live" exactly when its
#: score is below this (the score's four terms are each in [0, 1]; one term at its worst,
#: e.g. never settling, is enough to fail). The score, not a separate rule, decides.
READY_SCORE = 1.0


def _caveats(m: Mapping[str, float]) -> list[str]:
    """Things worth knowing that the score does not weigh (effect size, bad input)."""
    caveats: list[str] = []
    effect = float(m.get("mean_abs_delta", 0.0))
    if _barely_moves(m):
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


#: The three verdicts `Verdict.line` prints.
READY_WORDS = "looks stable enough to try live"
INERT_WORDS = "hardly acts — steady, but nothing to switch on"
NOT_YET_WORDS = "not yet"


@dataclass
class Verdict:
    """The verdict on one replayed configuration, derived from its stability score.

    `ready` is exactly `score < READY_SCORE` (steady); `acts` is False when it barely moves
    from base (mean |delta| below `THRESHOLDS["mean_abs_delta_small"]`). Only a steady
    controller that acts "looks stable enough to try live": a steady one that hardly acts
    says so instead, so the verdict and the next step never contradict each other.
    `drivers` are the one or two score terms that weigh most, in words; `next_step` is what
    to do about it.
    """

    label: str
    kind: str  # "weighting" or "schedule"
    score: float
    ready: bool
    drivers: list[str]
    caveats: list[str]
    next_step: str
    acts: bool = True

    @property
    def try_live(self) -> bool:
        """Steady and acting: the only verdict that suggests trying it live."""
        return self.ready and self.acts

    @property
    def words(self) -> str:
        """The verdict in words: `READY_WORDS`, `INERT_WORDS` or `NOT_YET_WORDS`."""
        if not self.ready:
            return NOT_YET_WORDS
        return READY_WORDS if self.acts else INERT_WORDS

    def line(self) -> str:
        """One line: label, verdict, score against the threshold, what drove it."""
        cmp = "<" if self.ready else ">="
        text = f"{self.label}: {self.words} — score {self.score:.2f} {cmp} {READY_SCORE:g}"
        if self.drivers:
            text += "; " + ", ".join(self.drivers)
        return text


def verdict(label: str, m: Mapping[str, float]) -> Verdict:
    """The `Verdict` of one configuration's metrics (see `READY_SCORE`); a `score` entry
    (a `stability_table` row, e.g. pooled over runs) is used as the score when present."""
    schedule = is_schedule_metrics(m)
    given = float(m.get("score", math.nan))  # a table's score row (pooled: mean over runs)
    score = given if math.isfinite(given) else stability_score(m)
    ready = score < READY_SCORE
    terms = sorted(score_terms(m).items(), key=lambda kv: -kv[1][0])
    top = [(k, t, words) for k, (t, words) in terms if t >= 0.05][:2]
    drivers = [f"{words} (+{t:.2f})" for _, t, words in top]
    caveats = _caveats(m)
    acts = not _barely_moves(m)
    method = _method(label)
    if ready and not acts:
        nxt = "it hardly acts as configured: sweep for a setting that moves more"
    elif ready:
        nxt = _try_live(method)
    else:
        keys = [k for k, _, _ in top]
        specific = [k for k, t, _ in top if k != "settle" and t >= 0.3]
        nxt = _advice((specific or keys or ["settle"])[0], method)
    kind = "schedule" if schedule else "weighting"
    return Verdict(label, kind, score, ready, drivers, caveats, nxt, acts=acts)


def _barely_moves(m: Mapping[str, float]) -> bool:
    return float(m.get("mean_abs_delta", 0.0)) < THRESHOLDS["mean_abs_delta_small"]


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
        f"Score 0-3.5, lower is steadier; below {READY_SCORE:g} looks stable enough to try "
        f"live, if it acts (mean |delta| at least {THRESHOLDS['mean_abs_delta_small']:g})."
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
            (round(net_score(m), SCORE_TIE_DECIMALS), v.label, v.acts) for v, m in group if v.ready
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
