"""The trial's analysis and report: reduce each run's metric series to one number, pair
the runs by seed, apply the statistics, word the verdicts and write trial.md / trial.csv.

Divergence rule (a run whose reduced value is NaN or inf *diverged*): a seed where only the
candidate diverged counts against it, a seed where only the baseline diverged counts for
it, and a seed where both diverged is a tie; all three counts are in the table. When the
one-sided counts differ, the side that diverged more often loses ("worse/better
(diverged)"); otherwise the verdict comes from the interval over the seeds where both are
finite. Nothing leaves the analysis without being counted.
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

from adaptive.trial._stats import ALPHA, POWER, holm, mde, paired_t, sign_flip_p
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
#: Secondary metrics of the reference trainer (lower is better), Holm-corrected.
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


def _compare(cand: Sequence[float], base: Sequence[float], higher: bool) -> dict[str, Any]:
    c, b = np.asarray(cand, dtype=np.float64), np.asarray(base, dtype=np.float64)
    fc, fb = np.isfinite(c), np.isfinite(b)
    ok = fc & fb
    d = (c - b)[ok]
    t = paired_t(list(d), alpha=ALPHA)
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
        "sd_diff": t["sd"],
        "rel_sd": t["sd"] / scale,
        "p_t": t["p"],
        "p_signflip": sign_flip_p(list(d)) if len(d) else math.nan,
    }
    m = mde(t["sd"], len(d)) if len(d) >= 2 else math.nan
    row["mde"], row["mde_rel"] = m, m / scale
    return row


def _verdict(row: dict[str, Any], higher: bool, p_key: str) -> tuple[str, str]:
    """(verdict, note) of one comparison; p_key is the p value deciding it (t or Holm)."""
    kc, kb = row["diverged_candidate"], row["diverged_baseline"]
    if kc != kb:
        v = "worse" if kc > kb else "better"
        return v, f"diverged on {kc} seed(s) where the baseline did not, baseline on {kb}"
    if row["n"] < 2 or not math.isfinite(row["ci_low"]):
        return NO_DIFF, "fewer than 2 finite pairs: no interval"
    if p_key == "p_t":
        below, above = row["ci_high"] < 0, row["ci_low"] > 0
    else:  # Holm-adjusted: significant in the direction of the mean
        sig = row[p_key] < ALPHA
        below, above = sig and row["diff"] < 0, sig and row["diff"] > 0
    note = ""
    if below or above:
        v = "better" if (above if higher else below) else "worse"
        floor = 2.0 / 2 ** int(row["n"])  # the smallest p any sign pattern test can give
        if row["p_signflip"] >= ALPHA and floor >= ALPHA:
            note = (
                f"the sign-flip test cannot confirm it at n = {int(row['n'])} (p = "
                f"{row['p_signflip']:.3g}; its smallest possible p is {floor:.3g}): add seeds"
            )
        elif row["p_signflip"] >= ALPHA:
            note = f"the sign-flip test disagrees (p = {row['p_signflip']:.3g})"
    else:
        v = NO_DIFF
        if row["p_signflip"] < ALPHA:
            note = f"the sign-flip test disagrees (p = {row['p_signflip']:.3g})"
    return v, note


def verdict_text(row: Mapping[str, Any]) -> str:
    """The verdict as printed: "no clear difference" always with its MDE."""
    v = str(row["verdict"])
    if v == NO_DIFF:
        if math.isfinite(row["mde_rel"]):
            v += f" (no difference larger than {pct(row['mde_rel'])} at n = {int(row['n'])})"
        else:
            v += f" (n = {int(row['n'])}: no interval, nothing can be told)"
    elif v in ("better", "worse") and row["diverged_candidate"] != row["diverged_baseline"]:
        v += " (diverged)"
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
    metric (verdict from the paired t interval), each secondary one (verdict from
    Holm-adjusted p over all secondary comparisons of the trial) and the primary's best
    epoch (`role` optimistic: no verdict). Only seeds present in both arms are paired;
    the others are named in the notes.
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
                            "per_seed": "; ".join(
                                f"s{s}: {bv:.4g} → {cv:.4g}"
                                for s, bv, cv in zip(seeds, bb, cb, strict=True)
                            ),
                        }
                    )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame, notes
    sec = frame["role"] == "secondary"
    frame["p_holm"] = math.nan
    if sec.any():
        frame.loc[sec, "p_holm"] = holm(list(frame.loc[sec, "p_t"]))
    verdicts, vnotes = [], []
    for _, r in frame.iterrows():
        if r["role"] == "optimistic":
            verdicts.append("optimistic: no verdict")
            vnotes.append("best epoch, chosen on the set it is reported on")
            continue
        v, note = _verdict(
            r.to_dict(), bool(r["higher_is_better"]), "p_t" if r["role"] == "primary" else "p_holm"
        )
        verdicts.append(v)
        vnotes.append(note)
    frame["verdict"], frame["note"] = verdicts, vnotes
    return frame, notes


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

    def headline(self) -> str:
        """Every verdict that is not "no clear difference", with warnings on small n and
        many comparisons."""
        f = self.frame
        judged = f[f["role"] != "optimistic"] if len(f) else f
        hits = judged[judged["verdict"] != NO_DIFF] if len(judged) else judged
        if len(hits):
            parts = [
                f"{r['candidate']} {r['verdict']} on {r['metric']}"
                + (" (secondary, Holm)" if r["role"] == "secondary" else "")
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
            mde_txt = f"MDE {pct(r['mde_rel'])}" if math.isfinite(r["mde_rel"]) else "MDE n/a"
            k = str(r["reduce"])
            red = "final" if k == "final" else f"mean of last {k[4:]}"
            lines.append(
                f"{r['candidate']}: {r['metric']} ({red}) {r['mean_baseline']:.4g} -> "
                f"{r['mean_candidate']:.4g}{u} ({pct(r['rel_diff'], sign=True)}, {ci}, "
                f"n = {int(r['n'])}, "
                f"{mde_txt}): {verdict_text(r)}"
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
        out.append(
            "Paired by seed; 95 % CI of the mean difference by paired t, checked by an exact "
            "sign-flip test; MDE at 80 % power. Full table: trial.md."
        )
        if self.folder is not None:
            out += [f"wrote {self.folder / name}" for name in REPORT_FILES]
        return out

    def markdown(self) -> str:
        """The full table: primary, secondary (Holm) and optimistic rows."""
        f = self.frame
        if f.empty:
            return "(nothing to compare)"
        lines = [
            "| candidate | role | metric | reduce | n | baseline | candidate | diff (95 % CI) "
            "| rel. | MDE | p (t) | p (Holm) | p (sign-flip) | diverged c/b/both | verdict "
            "| per seed (baseline → candidate) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in f.iterrows():
            ci = (
                f"{r['diff']:+.4g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]"
                if math.isfinite(r["ci_low"])
                else f"{r['diff']:+.4g} (no interval)"
            )
            verdict = r["verdict"] if r["role"] == "optimistic" else f"**{verdict_text(r)}**"
            lines.append(
                f"| {r['candidate']} | {r['role']} | {r['metric']} | {r['reduce']} | {int(r['n'])} "
                f"| {r['mean_baseline']:.4g} | {r['mean_candidate']:.4g} | {ci} "
                f"| {pct(r['rel_diff'], sign=True)} | {pct(r['mde_rel'])} | {_p(r['p_t'])} "
                f"| {_p(r['p_holm'])} | {_p(r['p_signflip'])} "
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
            "exact sign-flip permutation test (all 2^n sign patterns up to n = 16, a "
            "fixed-seed Monte Carlo of 2^16 beyond) as the distribution-free check. "
            f"MDE: the smallest true difference found with {POWER:.0%} power at two-sided "
            f"{ALPHA:.0%}, from the measured sd of the paired differences (noncentral t), "
            "in % of the baseline mean. Secondary metrics: verdicts from Holm-adjusted p "
            "over all secondary comparisons. `best` (the best epoch, chosen on the set it is "
            "reported on) is optimistic and gets no verdict. Divergence: a seed where only "
            "one side diverged (NaN/inf) counts against that side, both diverged is a tie; "
            "the side that diverged more often loses, otherwise the interval decides over "
            "the seeds finite on both sides."
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
    """A fraction as a percentage: one decimal, or two significant digits below 0.1 %."""
    if not math.isfinite(x):
        return "–"
    s = "+" if sign and x >= 0 else ""
    return f"{s}{100 * x:.2g}%" if 0 < abs(x) < 0.001 else f"{s}{100 * x:.1f}%"


def _p(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "–"
