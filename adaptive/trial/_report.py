"""The trial's analysis and report: reduce each run's metric series to one number, pair
the runs by seed, apply the statistics, word the verdicts and write trial.md / trial.csv.

Divergence rule (a run whose reduced value is NaN or inf *diverged*): the seeds where only
one side diverged are counted for each side, a seed where both diverged is a tie; all three
counts are in the table. Divergence decides the verdict only with evidence: when the exact
sign test on the one-sided seeds (the candidate's count against the baseline's) gives p <
0.05, the side that diverged more often loses ("worse/better (diverged)"); otherwise the
verdict comes from the interval over the seeds where both are finite, and the counts are
named beside it. Nothing leaves the analysis without being counted.

Wording: a verdict says what its interval says. "no clear difference" comes with the interval
in % of the baseline and the MDE as what it is, a power statement ("80 % power to detect X %
at n = k"), never as a bound; "within ±X %" only where the interval lies inside a stated
margin. Secondary rows are judged as one family at the Bonferroni level 0.05 / m: their
interval, MDE, t and sign-flip p are all at that level, so nothing on the row is unadjusted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptive.trial._stats import (
    ALPHA,
    EXACT_MAX_N,
    POWER,
    bonferroni,
    mde,
    paired_t,
    sign_flip_p,
    sign_test_p,
)
from adaptive.trial._targets import TrialError

__all__ = [
    "DEFAULT_METRIC",
    "DEFAULT_REDUCE",
    "Metric",
    "TrialResult",
    "analyse",
    "parse_metric",
    "parse_reduce",
    "reduce_series",
]

#: The default primary metric and its reduction: the free-run MPJPE of the weights' moving
#: average (`train.ema_decay`) at the last evaluation. In the noise study (docs/OUTCOMES.md)
#: a placebo moved it by a paired sd of about 1 % of the baseline, against about 10 % for the
#: last weights' own final valfree MPJPE and 4-5 % for their mean over the last 5 epochs.
DEFAULT_METRIC, DEFAULT_REDUCE = "valfree_ema/MPJPE", "final"
#: Secondary metrics of the reference trainer (lower is better), Bonferroni-corrected.
REFERENCE_SECONDARY = (
    "valfree/MPJPE",
    "valfree/YawAbsDeg",
    "valfree/RootDrift",
    "valfree/loss",
    "val/MPJPE",
    "val/YawAbsDeg",
    "val/RootDrift",
    "val/loss",
)
UNITS = {"MPJPE": "mm", "YawAbsDeg": "deg", "RootDrift": "m", "LocalMPJPE": "mm"}
#: Below this many pairs the headline warns that n is small.
SMALL_N = 6
NO_DIFF = "no clear difference"
#: A candidate whose metric ends this many times (or this fraction of) the baseline's on a
#: seed is flagged: off by an order of magnitude, the interval's width says nothing useful.
BLOWUP = 10.0
REPORT_FILES = ("trial.md", "trial.csv", "runs.csv", "trial.png")  # what a trial writes


@dataclass(frozen=True)
class Metric:
    """`split/name` of the trace's epoch rows (`metric/<name>`; `loss` is `loss_total`)."""

    split: str
    name: str
    higher_is_better: bool = False

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}"

    @property
    def column(self) -> str:
        return "loss_total" if self.name == "loss" else f"metric/{self.name}"

    @property
    def unit(self) -> str:
        return UNITS.get(self.name, "")


def parse_metric(text: str, higher_is_better: bool = False) -> Metric:
    """`"valfree/MPJPE"` -> Metric."""
    split, sep, name = str(text).partition("/")
    if not sep or not split or not name or "/" in name:
        raise TrialError(f"--metric {text!r}: expected split/name, e.g. valfree/MPJPE")
    return Metric(split, name, higher_is_better)


def parse_reduce(text: str) -> int:
    """`final` -> 1, `lastK` -> K: the mean of the last K evaluations."""
    t = str(text).strip().lower()
    if t == "final":
        return 1
    m = re.fullmatch(r"last(\d+)", t)
    if not m or int(m.group(1)) < 1:
        raise TrialError(f"--reduce {text!r}: expected final or lastK (e.g. last5)")
    return int(m.group(1))


def parse_fraction(text: str) -> float:
    """`"5%"` or `"0.05"` -> 0.05 (the --target-mde syntax)."""
    t = str(text).strip()
    try:
        v = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError:
        raise TrialError(f"--target-mde {text!r}: expected a percentage such as 5%") from None
    if not 0.0 < v < 1.0:
        raise TrialError(f"--target-mde {text!r}: must be between 0 % and 100 %")
    return v


def reduce_label(k: int) -> str:
    return "final evaluation" if k == 1 else f"mean of the last {k} evaluations"


def series(epochs: pd.DataFrame, metric: Metric) -> np.ndarray:
    """The metric's values over a run's evaluations of its split, in epoch order."""
    if epochs is None or not len(epochs) or metric.column not in epochs.columns:
        return np.array([], dtype=np.float64)
    rows = epochs[epochs["split"] == metric.split].sort_values("epoch")
    return rows[metric.column].to_numpy(dtype=np.float64)


def reduce_series(values: np.ndarray, k: int) -> float:
    """The mean of the last `k` values (NaN/inf if any of them is: the run diverged)."""
    if len(values) == 0:
        return math.nan
    tail = values[-k:]
    return float(tail.mean()) if np.isfinite(tail).all() else float(tail[~np.isfinite(tail)][0])


def best(values: np.ndarray, higher: bool) -> float:
    """The best finite value over epochs: optimistic, chosen on the set it reports."""
    f = values[np.isfinite(values)]
    if not len(f):
        return math.nan
    return float(f.max() if higher else f.min())


def _compare(
    cand: Sequence[float], base: Sequence[float], higher: bool, alpha: float = ALPHA
) -> dict[str, Any]:
    c, b = np.asarray(cand, dtype=np.float64), np.asarray(base, dtype=np.float64)
    fc, fb = np.isfinite(c), np.isfinite(b)
    ok = fc & fb
    d = (c - b)[ok]
    t = paired_t(list(d), alpha=alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(c[ok]) / np.abs(b[ok])
    mb = float(b[ok].mean()) if ok.any() else math.nan
    scale = abs(mb) if mb and math.isfinite(mb) else math.nan
    row: dict[str, Any] = {
        "n": int(ok.sum()),
        "diverged_candidate": int((~fc & fb).sum()),
        "diverged_baseline": int((fc & ~fb).sum()),
        "diverged_both": int((~fc & ~fb).sum()),
        "mean_baseline": mb,
        "mean_candidate": float(c[ok].mean()) if ok.any() else math.nan,
        "diff": t["mean"],
        "rel_diff": t["mean"] / scale,
        "ci_low": t["low"],
        "ci_high": t["high"],
        "rel_ci_low": t["low"] / scale,
        "rel_ci_high": t["high"] / scale,
        "level": 1.0 - alpha,
        "seeds_lower": int((d < 0).sum()),
        "seeds_higher": int((d > 0).sum()),
        "blown_up": int(((ratio >= BLOWUP) | (ratio <= 1.0 / BLOWUP)).sum()),
        "sd_diff": t["sd"],
        "rel_sd": t["sd"] / scale,
        "p_t": t["p"],
        "p_signflip": sign_flip_p(list(d)) if len(d) else math.nan,
    }
    m = mde(t["sd"], len(d), alpha=alpha) if len(d) >= 2 else math.nan
    row["mde"], row["mde_rel"] = m, m / scale
    return row


def _verdict(row: dict[str, Any], higher: bool) -> tuple[str, str]:
    """(verdict, note) of one comparison, at the row's own level: its interval decides, its
    sign-flip p (adjusted alike) checks. Divergence decides only by the exact sign test."""
    kc, kb = row["diverged_candidate"], row["diverged_baseline"]
    notes = []
    if kc or kb:
        p_div = sign_test_p(kc, kc + kb)
        what = f"diverged on {kc} candidate seed(s) and {kb} baseline seed(s) where the other "
        if p_div < ALPHA:
            v = "worse" if kc > kb else "better"
            return v, what + f"side did not (exact sign test p = {_p(p_div)}: decisive)"
        notes.append(what + f"did not (exact sign test p = {_p(p_div)}: not decisive)")
    if row["blown_up"]:
        notes.append(
            f"ends more than {BLOWUP:g}x off the baseline on {row['blown_up']} of "
            f"{int(row['n'])} seed(s): blown up, or another scale"
        )
    if row["n"] < 2 or not math.isfinite(row["ci_low"]):
        return NO_DIFF, "; ".join(["fewer than 2 finite pairs: no interval", *notes])
    alpha = 1.0 - float(row["level"])
    below, above = row["ci_high"] < 0, row["ci_low"] > 0
    p_flip = row["p_signflip_adj"]
    if below or above:
        v = "better" if (above if higher else below) else "worse"
        # the smallest p any sign pattern test can give, on the same adjusted scale
        floor = min(1.0, 2.0 / 2 ** int(row["n"]) * alpha_factor(row))
        if p_flip >= alpha and floor >= alpha:
            notes.insert(0, (
                f"the sign-flip test cannot confirm it at n = {int(row['n'])} (p = "
                f"{_p(p_flip)}; its smallest possible p is {floor:.3g}): add seeds"
            ))
        elif p_flip >= alpha:
            notes.insert(0, f"the sign-flip test disagrees (p = {_p(p_flip)})")
    else:
        v = NO_DIFF
        if p_flip < alpha:
            notes.insert(0, f"the sign-flip test disagrees (p = {_p(p_flip)})")
    return v, "; ".join(notes)


def alpha_factor(row: Mapping[str, Any]) -> float:
    """How many times a row's p values were multiplied (Bonferroni's m; 1 on primary rows)."""
    return float(row.get("family", 1) or 1)


def verdict_text(row: Mapping[str, Any], margin: float | None = None) -> str:
    """The verdict as printed: what the interval says, in % of the baseline; the seeds on
    each side; the MDE as a power statement; "within ±X %" only inside a stated `margin`."""
    v = str(row["verdict"])
    n = int(row["n"])
    level = f"{100 * float(row.get('level', 1 - ALPHA)):.3g} %"
    if v == NO_DIFF:
        if math.isfinite(row.get("rel_ci_low", math.nan)):
            lo, hi = row["rel_ci_low"], row["rel_ci_high"]
            v += f" ({level} CI {pct(lo, sign=True)} to {pct(hi, sign=True)}"
            if margin is not None and -margin < lo and hi < margin:
                v += f": within ±{pct(margin)}"
            v += ")"
        else:
            v += f" (n = {n}: no interval, nothing can be told)"
    elif v in ("better", "worse") and ": decisive)" in str(row.get("note", "")):
        v += " (diverged)"
    if n:
        v += f"; lower on {int(row['seeds_lower'])}, higher on {int(row['seeds_higher'])} of {n}"
    if math.isfinite(row.get("mde_rel", math.nan)):
        v += f"; {POWER:.0%} power to detect {pct(row['mde_rel'])} at n = {n}"
    if row.get("note"):
        v += f"; {row['note']}"
    return v


def analyse(
    values: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
    primary: Metric,
    reduce_k: int,
    secondary: Sequence[Metric] = (),
    baseline: str = "baseline",
) -> tuple[pd.DataFrame, list[str]]:
    """Paired statistics of every arm against `baseline`.

    `values[arm][seed][metric key]` is that run's series. Rows: per candidate the primary
    metric (verdict from the paired t interval at 95 %), each secondary one (the whole row,
    interval, MDE and p values, at the Bonferroni level 0.05 / m over the m secondary
    comparisons of the trial) and the primary's best epoch (`role` optimistic: no verdict).
    Only seeds present in both arms are paired; the others are named in the notes.
    """
    if baseline not in values:
        raise TrialError(f"no {baseline!r} runs to compare against; arms: {sorted(values)}")
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    base = values[baseline]
    for arm, runs in values.items():
        if arm == baseline:
            continue
        seeds = sorted(set(runs) & set(base))
        unpaired = sorted(set(runs) ^ set(base))
        if unpaired:
            notes.append(f"{arm}: seed(s) {unpaired} have no partner in {baseline!r}: left out")
        if not seeds:
            continue
        for role, metrics in (("primary", [primary]), ("secondary", list(secondary))):
            for m in metrics:
                lengths = {len(runs[s].get(m.key, ())) for s in seeds} | {
                    len(base[s].get(m.key, ())) for s in seeds
                }
                if lengths == {0}:
                    continue
                if len(lengths) > 1:
                    notes.append(
                        f"{arm}: {m.key} has {sorted(lengths)} evaluations across runs "
                        "(unfinished runs?): reductions compare different epochs"
                    )
                c = [reduce_series(runs[s].get(m.key, np.array([])), reduce_k) for s in seeds]
                b = [reduce_series(base[s].get(m.key, np.array([])), reduce_k) for s in seeds]
                row = {
                    "candidate": arm,
                    "role": role,
                    "metric": m.key,
                    "reduce": "final" if reduce_k == 1 else f"last{reduce_k}",
                    **_compare(c, b, m.higher_is_better),
                    "higher_is_better": m.higher_is_better,
                    "_c": c,
                    "_b": b,
                    "seeds": ",".join(str(s) for s in seeds),
                    "per_seed": "; ".join(
                        f"s{s}: {bv:.4g} → {cv:.4g}" for s, bv, cv in zip(seeds, b, c, strict=True)
                    ),
                }
                rows.append(row)
                if role == "primary":
                    cb = [best(runs[s].get(m.key, np.array([])), m.higher_is_better) for s in seeds]
                    bb = [best(base[s].get(m.key, np.array([])), m.higher_is_better) for s in seeds]
                    rows.append(
                        {
                            **row,
                            "role": "optimistic",
                            "reduce": "best",
                            **_compare(cb, bb, m.higher_is_better),
                            "_c": cb,
                            "_b": bb,
                            "per_seed": "; ".join(
                                f"s{s}: {bv:.4g} → {cv:.4g}"
                                for s, bv, cv in zip(seeds, bb, cb, strict=True)
                            ),
                        }
                    )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame, notes
    frame["family"], frame["p_adj"] = 1, frame["p_t"]
    frame["p_signflip_adj"] = frame["p_signflip"]
    sec = frame["role"] == "secondary"
    m = int((sec & frame["p_t"].notna()).sum())
    if m > 1:  # the whole secondary row at the Bonferroni level, so nothing on it mixes levels
        for i in frame.index[sec]:
            r = frame.loc[i]
            again = _compare(r["_c"], r["_b"], bool(r["higher_is_better"]), alpha=ALPHA / m)
            for k, val in again.items():
                frame.at[i, k] = val
        frame.loc[sec, "family"] = m
        frame.loc[sec, "p_adj"] = bonferroni(list(frame.loc[sec, "p_t"]))
        frame.loc[sec, "p_signflip_adj"] = [min(1.0, m * p) for p in frame.loc[sec, "p_signflip"]]
    verdicts, vnotes = [], []
    for _, r in frame.iterrows():
        if r["role"] == "optimistic":
            verdicts.append("optimistic: no verdict")
            vnotes.append("best epoch, chosen on the set it is reported on")
            continue
        v, note = _verdict(r.to_dict(), bool(r["higher_is_better"]))
        verdicts.append(v)
        vnotes.append(note)
    frame["verdict"], frame["note"] = verdicts, vnotes
    return frame.drop(columns=["_c", "_b"]), notes


@dataclass
class TrialResult:
    """A finished comparison: `frame` (one row per candidate, role and metric with the
    paired statistics), `runs` (one row per run), `curves` (per-epoch values of every run),
    `design` (what ran: metric, reduction, target, engine, seeds, sequential design),
    `notes` (pairing and divergence remarks)."""

    frame: pd.DataFrame
    runs: pd.DataFrame
    curves: pd.DataFrame
    design: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None
    notes: list[str] = field(default_factory=list)

    def rows(self, role: str) -> pd.DataFrame:
        f = self.frame
        return f[f["role"] == role] if len(f) else f

    @property
    def margin(self) -> float | None:
        """The stated margin (a fraction of the baseline) that "within ±X %" may claim: the
        design's `margin`, else its target MDE; None when the trial stated none."""
        m = self.design.get("margin") or self.design.get("target_mde")
        return float(m) if m else None

    def headline(self) -> str:
        """Every verdict that is not "no clear difference", with warnings on small n and
        many comparisons."""
        f = self.frame
        judged = f[f["role"] != "optimistic"] if len(f) else f
        hits = judged[judged["verdict"] != NO_DIFF] if len(judged) else judged
        if len(hits):
            parts = [
                f"{r['candidate']} {r['verdict']} on {r['metric']}"
                + (" (secondary, Bonferroni)" if r["role"] == "secondary" else "")
                for _, r in hits.iterrows()
            ]
            text = "Verdicts other than no clear difference: " + "; ".join(parts) + "."
        else:
            text = "No clear difference on any metric."
        warn = []
        prim = self.rows("primary")
        if len(prim) and int(prim["n"].min()) < SMALL_N:
            warn.append(
                f"n = {int(prim['n'].min())} is small: wide intervals, one odd seed moves them"
            )
        if len(prim) > 2:
            warn.append(
                f"{len(prim)} primary comparisons at 5 % each: expect about "
                f"{0.05 * len(prim):.1f} false 'better'/'worse' among them by chance"
            )
        if warn:
            text += " Warning: " + "; ".join(warn) + "."
        return text

    def summary(self) -> str:
        """Per candidate: the primary metric and its reduction, both means, the difference
        with its interval, n, the MDE and the verdict; then the headline."""
        lines = []
        for _, r in self.rows("primary").iterrows():
            unit = UNITS.get(str(r["metric"]).split("/")[-1], "")
            u = f" {unit}" if unit else ""
            ci = (
                f"95 % CI [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]{u}"
                if math.isfinite(r["ci_low"])
                else "no interval"
            )
            k = str(r["reduce"])
            red = "final" if k == "final" else f"mean of last {k[4:]}"
            lines.append(
                f"{r['candidate']}: {r['metric']} ({red}) {r['mean_baseline']:.4g} -> "
                f"{r['mean_candidate']:.4g}{u} ({pct(r['rel_diff'], sign=True)}, {ci}, "
                f"n = {int(r['n'])}): {verdict_text(r, self.margin)}"
            )
        if lines:
            lines.append(self.headline())
        return "\n".join(lines)

    def lines(self) -> list[str]:
        """What `adaptive trial` prints: the summary, the notes, the sequential design, how
        the comparison was made and the report files written into `folder`."""
        out = [self.summary() or "nothing to compare"]
        out += [f"note: {note}" for note in self.notes]
        if self.design.get("sequential"):
            out.append(f"design: {self.design['sequential']}")
        n_max = int(self.frame["n"].max()) if len(self.frame) else 0
        flip = "an exact" if n_max <= EXACT_MAX_N else "a Monte Carlo (2^16 draws)"
        out.append(
            f"Paired by seed; 95 % CI of the mean difference by paired t, checked by {flip} "
            "sign-flip test; MDE at 80 % power (a power statement, not a bound). "
            "Full table: trial.md."
        )
        if self.folder is not None:
            out += [f"wrote {self.folder / name}" for name in REPORT_FILES]
        return out

    def markdown(self) -> str:
        """The full table: primary, secondary (Bonferroni) and optimistic rows."""
        f = self.frame
        if f.empty:
            return "(nothing to compare)"
        lines = [
            "| candidate | role | metric | reduce | n | baseline | candidate | diff (CI) "
            "| level | rel. | MDE | p (t) | p (adj.) | p (sign-flip, adj.) | diverged c/b/both "
            "| verdict | per seed (baseline → candidate) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in f.iterrows():
            ci = (
                f"{r['diff']:+.4g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]"
                if math.isfinite(r["ci_low"])
                else f"{r['diff']:+.4g} (no interval)"
            )
            verdict = (
                r["verdict"] if r["role"] == "optimistic" else f"**{verdict_text(r, self.margin)}**"
            )
            lines.append(
                f"| {r['candidate']} | {r['role']} | {r['metric']} | {r['reduce']} | {int(r['n'])} "
                f"| {r['mean_baseline']:.4g} | {r['mean_candidate']:.4g} | {ci} "
                f"| {100 * r['level']:.3g} % "
                f"| {pct(r['rel_diff'], sign=True)} | {pct(r['mde_rel'])} | {_p(r['p_t'])} "
                f"| {_p(r['p_adj'])} | {_p(r['p_signflip_adj'])} "
                f"| {r['diverged_candidate']}/{r['diverged_baseline']}/{r['diverged_both']} "
                f"| {verdict} | {r['per_seed']} |"
            )
        return "\n".join(lines)

    def report(self) -> str:
        """trial.md: design, method, summary, notes, table."""
        d = self.design
        method = (
            f"Primary metric (declared before training): {d.get('metric')} "
            f"({'higher' if d.get('higher_is_better') else 'lower'} is better), "
            f"{reduce_label(int(d.get('reduce_k', 1)))}. Paired by seed; difference = "
            f"candidate − baseline; {100 * (1 - ALPHA):.0f} % interval by paired t, with the "
            "sign-flip permutation test (exact, all 2^n sign patterns, up to n = 16; a "
            "fixed-seed Monte Carlo of 2^16 beyond) as the distribution-free check. "
            f"MDE: the smallest true difference found with {POWER:.0%} power at two-sided "
            f"{ALPHA:.0%}, from the measured sd of the paired differences (noncentral t), "
            "in % of the baseline mean: a power statement, not a bound on the effect (the "
            "interval is what bounds it). Secondary metrics: one family, every figure of the "
            "row (interval, MDE, t and sign-flip p) at the Bonferroni level 5 % / m. `best` "
            "(the best epoch, chosen on the set it is reported on) is optimistic and gets no "
            "verdict. Divergence: the seeds where only one side diverged (NaN/inf) decide "
            "the verdict only when the exact sign test on them gives p < 5 % (the side that "
            "diverged more often loses); otherwise the interval decides over the seeds finite "
            "on both sides, with the counts named."
        )
        parts = ["# Outcome trial", _design_text(d), method, self.summary() or "(no candidate)"]
        if self.notes:
            parts.append("Notes:\n" + "\n".join(f"- {n}" for n in self.notes))
        parts.append(self.markdown())
        return "\n\n".join(parts) + "\n"


def _design_text(d: Mapping[str, Any]) -> str:
    lines = [f"- target: {d.get('target', '?')}", f"- engine: {d.get('engine', '?')}"]
    lines.append(f"- arms: {', '.join(d.get('arms', {}))}")
    seq = d.get("sequential")
    if seq:
        lines.append(f"- design: {seq}")
    else:
        lines.append(f"- design: fixed, {d.get('seeds', '?')} seeds from {d.get('first_seed', 0)}")
    return "\n".join(lines)


def pct(x: float, *, sign: bool = False) -> str:
    """A fraction as a percentage: one decimal, two significant digits below 0.1 %, three
    in exponent form from 10,000 % (a blown-up run)."""
    if not math.isfinite(x):
        return "–"
    s = "+" if sign and x >= 0 else ""
    if abs(x) >= 100.0:
        return f"{s}{100 * x:.3g}%"
    return f"{s}{100 * x:.2g}%" if 0 < abs(x) < 0.001 else f"{s}{100 * x:.1f}%"


def _p(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "–"
