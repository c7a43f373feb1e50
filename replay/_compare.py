"""One figure with aligned panels comparing several controllers replayed over one trace."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from adaptive.trace import Trace
from replay._engine import ReplayResult
from replay._plots import (
    _pyplot,
    component_colors,
    epoch_lines,
    legend_with,
    line,
    method_title,
    plot_weighting_ax,
    save,
)


def plot_compare(trace: Trace, results: Sequence[ReplayResult], path: Path) -> Path:
    """Raw losses (log), proposed weights per method, scheduler base vs proposed, grad norm,
    valfree metrics per epoch; all panels share the optimizer-step axis."""
    plt = _pyplot()
    steps_df = trace.steps
    steps = steps_df["step"].to_numpy()
    epochs = steps_df["epoch"].to_numpy()
    colors = component_colors(trace.components)
    weighting = [r for r in results if r.kind == "weighting"]
    schedulers = [r for r in results if r.kind == "schedule"]
    has_grad = "grad_norm" in steps_df.columns
    vf = trace.split_metrics("valfree") if len(trace.epochs) else None
    has_vf = vf is not None and len(vf) > 0 and "step" in vf.columns
    n = 1 + len(weighting) + len(schedulers) + int(has_grad) + int(has_vf)
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.3 * n + 0.6), sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    i = 0
    ax = axes[i]
    # the teacher-forced part where recorded (what the loss weighting reads by default),
    # thin, over the combined loss (what was optimised)
    has_tf = all(f"loss_tf/{c}" in steps_df.columns for c in trace.components)
    for c in trace.components:
        y = steps_df[f"loss/{c}"].to_numpy(np.float64)
        line(
            ax,
            steps,
            np.where(y > 0, y, np.nan),
            color=colors[c],
            lw=0.9,
            alpha=0.35 if has_tf else 1.0,
            label=f"{c} (TF + free run)" if has_tf else c,
        )
        if has_tf:
            y = steps_df[f"loss_tf/{c}"].to_numpy(np.float64)
            line(
                ax,
                steps,
                np.where(y > 0, y, np.nan),
                color=colors[c],
                lw=1.1,
                label=f"{c} (TF part)",
            )
    ax.set_yscale("log")
    ax.set_ylabel("raw loss (log)")
    what = (
        "raw training loss per component: combined (faint) and its teacher-forced part, "
        "which the loss weighting reads"
        if has_tf
        else "raw (unweighted) training loss per component"
    )
    ax.set_title(
        f"Controllers replayed over run {trace.run_id} (dry-run, open loop)\n{what}",
        fontsize=10,
    )
    epoch_lines(ax, steps, epochs)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="component")
    for r in weighting:
        i += 1
        ax = axes[i]
        rr = float(r.params.get("adjustment_range", 0.0))
        entries = plot_weighting_ax(ax, r, colors, rr)
        epoch_lines(ax, steps, epochs, label=False)
        ax.set_title(
            f"{method_title(r.method)}: proposed weights (dashed: base, band: ±{rr:g} clamp)",
            fontsize=9,
        )
        legend_with(
            ax, entries, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title=r.method
        )
    for r in schedulers:
        i += 1
        ax = axes[i]
        pcolors = component_colors(r.names)
        for p in r.names:
            base = r.frame[f"base/{p}"].to_numpy()
            prop = r.frame[f"proposed/schedule/{p}"].to_numpy()
            ratio = np.divide(prop, base, out=np.ones_like(prop), where=base != 0)
            line(ax, r.frame["step"].to_numpy(), ratio, color=pcolors[p], lw=1.3, label=p)
        ax.axhline(1.0, color="0.4", lw=0.8, ls="--", label="base (= 1)")
        epoch_lines(ax, steps, epochs, label=False)
        ax.set_ylabel("proposed / base")
        law = r.params.get("law")
        ax.set_title(
            f"adaptive scheduler{f' (law {law})' if law else ''}: proposed schedule relative "
            "to the stage schedule",
            fontsize=9,
        )
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if has_grad:
        i += 1
        ax = axes[i]
        g = steps_df["grad_norm"].to_numpy(np.float64)
        line(ax, steps, np.where(g > 0, g, np.nan), color="0.2", lw=0.8, label="grad norm")
        ax.set_yscale("log")
        ax.set_ylabel("grad norm (L2, log)")
        ax.set_title("gradient norm per step (as recorded, before clipping)", fontsize=9)
        epoch_lines(ax, steps, epochs, label=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if has_vf:
        i += 1
        ax = axes[i]
        vsteps = vf["step"].to_numpy()
        metrics = [m for m in ("MPJPE", "YawAbsDeg", "RootDrift") if f"metric/{m}" in vf.columns]
        metrics = metrics or [m for m in trace.metrics if f"metric/{m}" in vf.columns][:3]
        units = {"MPJPE": "mm", "YawAbsDeg": "deg", "RootDrift": "m"}
        # one y-axis per metric (their units differ), each with its own colour, marker and
        # line style so that lines on different axes stay apart even where they overlap
        mcolors = ["tab:red", "tab:purple", "tab:brown"]
        styles = [("o", "-"), ("s", "--"), ("^", ":")]
        host = ax
        handles = []
        for k, m in enumerate(metrics):
            target = host if k == 0 else host.twinx()
            if k > 1:
                target.spines["right"].set_position(("axes", 1.0 + 0.1 * (k - 1)))
            unit = units.get(m, "")
            (h,) = target.plot(
                vsteps,
                vf[f"metric/{m}"].to_numpy(),
                marker=styles[k % 3][0],
                ls=styles[k % 3][1],
                ms=4,
                lw=1.3,
                color=mcolors[k % 3],
                label=f"valfree {m}"
                + (f" ({unit})" if unit else "")
                + (" — left axis" if k == 0 else " — right axis" + (f" {k}" if k > 1 else "")),
            )
            handles.append(h)
            target.set_ylabel(f"{m}" + (f" ({unit})" if unit else ""), color=mcolors[k % 3])
            target.tick_params(axis="y", colors=mcolors[k % 3])
        if not metrics and "loss_total" in vf.columns:
            (h,) = ax.plot(vsteps, vf["loss_total"].to_numpy(), "o-", ms=3, label="valfree loss")
            handles.append(h)
            ax.set_ylabel("valfree loss")
        epoch_lines(ax, steps, epochs, label=False)
        ax.set_title("free-run validation (valfree) per epoch", fontsize=9)
        if handles:
            # right of the outermost right-hand axis and its labels
            n = len(metrics)
            offset = 1.01 if n < 2 else 1.11 + 0.1 * (n - 2)
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(offset, 1.0), fontsize=8)
    axes[-1].set_xlabel("optimizer step")
    return save(fig, path)
