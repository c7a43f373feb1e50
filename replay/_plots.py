"""Figures of replayed controllers (headless: the Agg backend, files only)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from adaptive.trace import Trace
    from replay._engine import ReplayResult

METHOD_TITLES = {
    "dwa": "DWA (dynamic weight averaging)",
    "uncertainty": "uncertainty weighting",
    "scheduler": "adaptive scheduler",
}


def _pyplot():
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def component_colors(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One fixed colour per component / parameter name, the same in every panel."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def epoch_lines(ax: Axes, steps: np.ndarray, epochs: np.ndarray, label: bool = True) -> None:
    """Dotted vertical lines at the first step of each epoch after the first."""
    if len(steps) == 0:
        return
    starts = steps[np.flatnonzero(np.diff(epochs)) + 1]
    for i, s in enumerate(starts):
        ax.axvline(
            s, color="0.75", lw=0.7, ls=":", label="epoch boundary" if label and i == 0 else None
        )


MAX_POINTS = 4000  # per plotted line; longer series are drawn as a min/max envelope


def envelope(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple:
    """Thin a long per-step series for plotting without hiding spikes: each of
    `max_points // 2` buckets keeps its minimum and its maximum (NaN buckets stay NaN)."""
    x, y = np.asarray(x), np.asarray(y, dtype=np.float64)
    n = len(y)
    if n <= max_points:
        return x, y
    starts = np.linspace(0, n, max_points // 2, endpoint=False).astype(np.int64)
    lo = np.minimum.reduceat(y, starts)
    hi = np.maximum.reduceat(y, starts)
    xs = np.repeat(x[starts], 2)
    ys = np.empty(2 * len(starts))
    ys[0::2], ys[1::2] = lo, hi
    return xs, ys


def line(ax: Axes, x: np.ndarray, y: np.ndarray, *args: object, **kw: object) -> None:
    """`ax.plot` of a per-step series, thinned by `envelope` when long."""
    ax.plot(*envelope(x, y), *args, **kw)


def save(fig: Figure, path: Path) -> Path:
    """Save a figure atomically (temporary name, then rename); the format follows the suffix."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_weighting_ax(ax: Axes, result: ReplayResult, colors: dict, r: float) -> None:
    """Proposed weight per component, with its base weight and the ±r clamp band."""
    f = result.frame
    steps = f["step"].to_numpy()
    bases = {c: f[f"base/{c}"].to_numpy() for c in result.names}
    first = bases[result.names[0]]
    shared = all(np.array_equal(b, first) for b in bases.values())
    # One band and one base line serve every component when they share base weights.
    for c in result.names[:1] if shared else result.names:
        base = bases[c]
        color = "0.3" if shared else colors[c]
        xs, lo = envelope(steps, base * (1 - r))
        _, hi = envelope(steps, base * (1 + r))
        ax.fill_between(xs, lo, hi, color=color, alpha=0.12, lw=0)
        line(ax, steps, base, color=color, lw=0.8, ls="--")
    for c in result.names:
        line(ax, steps, f[f"proposed/weight/{c}"].to_numpy(), color=colors[c], lw=1.4, label=c)
    ax.set_ylabel("loss weight")


def plot_weighting(result: ReplayResult, path: Path, *, trace: Trace | None = None) -> Path:
    """Weights a loss-weighting method would have produced, over optimizer steps."""
    plt = _pyplot()
    f = result.frame
    r = float(result.params.get("adjustment_range", 0.0))
    colors = component_colors(result.names)
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    plot_weighting_ax(ax, result, colors, r)
    steps, epochs = f["step"].to_numpy(), f["epoch"].to_numpy()
    epoch_lines(ax, steps, epochs)
    ax.plot([], [], color="0.3", lw=0.8, ls="--", label="base weight")
    ax.fill_between([], [], [], color="0.3", alpha=0.12, label=f"clamp band (base ±{r:.0%})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    run = f" — run {result.run_id}" if result.run_id else ""
    ax.set_title(
        f"{METHOD_TITLES.get(result.method, result.method)}: proposed loss weights "
        f"(dry-run replay{run})"
    )
    for c in result.names:
        line(ax2, steps, f[f"delta/{c}"].to_numpy(), color=colors[c], lw=1.2, label=c)
    ax2.axhline(r, color="0.4", lw=0.8, ls="--")
    ax2.axhline(-r, color="0.4", lw=0.8, ls="--")
    epoch_lines(ax2, steps, epochs, label=False)
    ax2.set_ylabel("delta Δ (fraction of base)")
    ax2.set_xlabel("optimizer step")
    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    ax2.set_title(f"clamped delta per component ({params})", fontsize=9)
    return save(fig, path)


def plot_scheduler(result: ReplayResult, path: Path, *, trace: Trace | None = None) -> Path:
    """Base versus adjusted schedule values, the delta with its reasons, and the signals."""
    plt = _pyplot()
    f = result.frame
    steps, epochs = f["step"].to_numpy(), f["epoch"].to_numpy()
    names = result.names
    colors = component_colors(names)
    n = len(names)
    fig, axes = plt.subplots(n + 2, 1, figsize=(11, 2.1 * (n + 2) + 0.5), sharex=True)
    for ax, p in zip(axes[:n], names, strict=True):
        line(ax, steps, f[f"base/{p}"].to_numpy(), color="0.4", lw=1.0, ls="--", label="base")
        line(
            ax,
            steps,
            f[f"proposed/schedule/{p}"].to_numpy(),
            color=colors[p],
            lw=1.4,
            label="proposed",
        )
        epoch_lines(ax, steps, epochs, label=False)
        ax.set_ylabel(p + (" (frames)" if "horizon" in p else ""))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    run = f" — run {result.run_id}" if result.run_id else ""
    axes[0].set_title(f"adaptive scheduler: base vs proposed schedule (dry-run replay{run})")
    ax = axes[n]
    line(ax, steps, f["delta"].to_numpy(), color="black", lw=1.3, label="delta (+ = harder)")
    r = float(result.params.get("adjustment_range", 0.3))
    ax.axhline(r, color="0.5", ls="--", lw=0.8, label=f"±range {r}")
    ax.axhline(-r, color="0.5", ls="--", lw=0.8)
    reasons = f["reason"].to_numpy()
    marks = [i for i, x in enumerate(reasons) if x]
    reason_colors = component_colors(sorted({reasons[i] for i in marks}))
    for reason, color in reason_colors.items():
        idx = [i for i in marks if reasons[i] == reason]
        ax.scatter(
            steps[idx], f["delta"].to_numpy()[idx], color=color, s=18, zorder=3, label=reason
        )
    # epoch-level changes (recorded at epoch ends) from the event history
    for ev in result.events:
        if ev.get("level") == "epoch":
            ax.annotate(
                ev["reason"],
                (steps[min(int(ev["step"]), len(steps) - 1)], ev["new_delta"]),
                fontsize=7,
                rotation=30,
            )
    epoch_lines(ax, steps, epochs, label=False)
    ax.set_ylabel("delta")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax = axes[n + 1]
    for col, label in (
        ("signal/grad_z", "largest grad-norm z-score in the window"),
        ("signal/loss_trend", "loss trend vs reference (rel.)"),
    ):
        if col in f.columns:
            line(ax, steps, f[col].to_numpy(), lw=1.0, label=label)
    if trace is not None and len(trace.epochs):
        metric = str(result.params.get("free_metric", "YawAbsDeg"))
        vf = trace.split_metrics("valfree")
        col = f"metric/{metric}" if f"metric/{metric}" in vf.columns else "loss_total"
        if col in vf.columns and "step" in vf.columns:
            ax3 = ax.twinx()
            ax3.plot(
                vf["step"].to_numpy(),
                vf[col].to_numpy(),
                "o-",
                color="tab:red",
                ms=3,
                lw=1.0,
                label=f"valfree {metric}",
            )
            ax3.set_ylabel(f"valfree {metric}", color="tab:red")
    epoch_lines(ax, steps, epochs, label=False)
    ax.set_ylabel("signal")
    ax.set_xlabel("optimizer step")
    ax.legend(loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize=8)
    return save(fig, path)


def plot_result(result: ReplayResult, path: Path, *, trace: Trace | None = None) -> Path:
    """The figure for one replayed controller."""
    if result.kind == "schedule":
        return plot_scheduler(result, path, trace=trace)
    return plot_weighting(result, path, trace=trace)
