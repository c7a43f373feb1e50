"""The trial's figure: per candidate, the paired difference of the primary metric on every
seed with the mean, its interval and zero, so the picture shows what the verdict says."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from adaptive.trial._report import TrialResult, verdict_text

__all__ = ["plot_trial", "trial_figure"]


def _pyplot() -> Any:
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pairs(result: TrialResult, cand: str, metric: str) -> tuple[list[int], np.ndarray, list[int]]:
    """Seeds, paired differences in % of the baseline mean, and seeds that diverged."""
    runs = result.runs
    col = "primary"
    base = runs[runs["arm"] == "baseline"].set_index("seed")[col]
    c = runs[runs["arm"] == cand].set_index("seed")[col]
    seeds = sorted(set(base.index) & set(c.index))
    b = base.loc[seeds].to_numpy(dtype=np.float64)
    v = c.loc[seeds].to_numpy(dtype=np.float64)
    ok = np.isfinite(b) & np.isfinite(v)
    scale = abs(float(b[ok].mean())) if ok.any() else math.nan
    d = np.where(ok, (v - b) / scale * 100.0, np.nan)
    return seeds, d, [s for s, good in zip(seeds, ok, strict=True) if not good]


def trial_figure(result: TrialResult) -> Any:
    """The figure (a matplotlib Figure): one panel per candidate, title with its verdict."""
    plt = _pyplot()
    prim = result.rows("primary")
    n = max(1, len(prim))
    cols = min(n, 4)  # many candidates wrap into rows of four panels
    rows = math.ceil(n / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows + 0.4), squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    for i, (ax, (_, r)) in enumerate(zip(axes, prim.iterrows(), strict=False)):
        seeds, d, bad = _pairs(result, str(r["candidate"]), str(r["metric"]))
        scale = abs(r["mean_baseline"]) / 100.0
        x = np.arange(len(seeds))
        ax.axhline(0.0, color="black", lw=0.8, label="no difference")
        ax.plot(x, d, "o", color="tab:blue", label="per seed (candidate − baseline)")
        if math.isfinite(r["ci_low"]):
            lo, hi = r["ci_low"] / scale, r["ci_high"] / scale
            ax.axhspan(
                lo, hi, color="tab:orange", alpha=0.25, label="95 % CI of the mean (paired t)"
            )
        ax.axhline(r["diff"] / scale, color="tab:orange", lw=1.6, label="mean difference")
        for s in bad:
            i = seeds.index(s)
            ax.annotate("diverged", (i, 0.0), ha="center", va="bottom", fontsize=8, color="red")
        ax.set_xticks(x, [str(s) for s in seeds])
        ax.set_xlabel("seed")
        better = "higher" if r["higher_is_better"] else "lower"
        if i % cols == 0:
            ax.set_ylabel(f"{r['metric']} difference\n(% of baseline; {better} is better)")
        ax.set_title(f"{r['candidate']}: {r['verdict']!s}", fontsize=10)
        ax.grid(alpha=0.3)
        if i == 0:  # the same four entries in every panel: once
            ax.legend(fontsize=7, loc="best")
        ax.text(
            0.01,
            0.01,
            verdict_text(r).split(";")[0],
            transform=ax.transAxes,
            fontsize=7,
            va="bottom",
        )
    k = int(result.design.get("reduce_k", 1))
    red = "final evaluation" if k == 1 else f"mean of the last {k} evaluations"
    fig.suptitle(f"Outcome trial: paired differences per seed ({red})")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    return fig


def plot_trial(result: TrialResult, path: str | os.PathLike[str]) -> Path:
    """Write `trial_figure(result)` atomically to `path`."""
    from adaptive._checks import atomic_write

    plt = _pyplot()
    fig = trial_figure(result)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
