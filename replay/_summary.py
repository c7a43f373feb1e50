"""Short tables of what a replayed controller did (the CLI prints these)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from replay._engine import ReplayResult


def per_epoch_scale(result: ReplayResult) -> pd.DataFrame:
    """Mean unclamped scale per component per epoch (weighting methods)."""
    f = result.frame
    cols = [f"scale/{c}" for c in result.names]
    table = f.groupby("epoch")[cols].mean()
    table.columns = result.names
    return table


def weighting_summary(result: ReplayResult) -> pd.DataFrame:
    """Per component: share of steps at the clamp, largest step-to-step weight change."""
    f = result.frame
    rows = {}
    for c in result.names:
        w = f[f"proposed/weight/{c}"].to_numpy()
        change = np.abs(np.diff(w)) if len(w) > 1 else np.zeros(1)
        rows[c] = {
            "at_clamp_%": 100.0 * float(f[f"clamped/{c}"].mean()),
            "max_step_change": float(np.nanmax(change)) if change.size else 0.0,
            "final_weight": float(w[-1]),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def scheduler_summary(result: ReplayResult) -> pd.DataFrame:
    """Per parameter: base and proposed range, plus the delta's range and reasons."""
    f = result.frame
    rows = {}
    for p in result.names:
        prop = f[f"proposed/schedule/{p}"]
        base = f[f"base/{p}"]
        rows[p] = {
            "base_min": float(base.min()),
            "base_max": float(base.max()),
            "proposed_min": float(prop.min()),
            "proposed_max": float(prop.max()),
            "steps_differing_%": 100.0 * float((prop != base).mean()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def reason_counts(result: ReplayResult) -> dict[str, int]:
    """How often each reason changed the scheduler's delta."""
    counts: dict[str, int] = {}
    for ev in result.events:
        counts[ev["reason"]] = counts.get(ev["reason"], 0) + 1
    return counts


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """Write a replay table to Parquet atomically (never a partial file under the name)."""
    from adaptive.util import atomic_write

    # dictionary encoding only where values repeat (text); on float columns it is wasted
    # work (half a 100 k-step replay table's write time) and a larger file
    text = [str(c) for c, t in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(t)
            and not pd.api.types.is_bool_dtype(t)]  # fmt: skip
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False, use_dictionary=text))


def trace_summary(trace: Any, parts: int = 0, path: Path | str | None = None) -> list[str]:
    """What `adaptive inspect` prints: run, components, metrics, row counts (step rows and
    evaluation rows told apart), span, columns, then the mean raw loss per epoch."""
    steps, epochs = trace.steps, trace.epochs
    splits = f": {', '.join(sorted(epochs['split'].unique()))}" if len(epochs) else ""
    out = [
        f"trace      {trace.path}",
        f"version    {trace.version}",
        f"run id     {', '.join(trace.run_ids) or '-'}",
        f"components {', '.join(trace.components)}",
        f"metrics    {', '.join(trace.metrics) or '-'}",
        f"rows       {len(steps)} step rows (training batches), "
        f"{len(epochs)} evaluation rows (epoch rows{splits})",
    ]
    if len(steps):
        out.append(
            f"steps      {int(steps['step'].min())}..{int(steps['step'].max())}, "
            f"in epochs {int(steps['epoch'].min())}..{int(steps['epoch'].max())}"
            + ("" if len(epochs) else " (no evaluation recorded)")
        )
    if "time" in trace.columns:
        times = [df["time"] for df in (steps, epochs) if "time" in df and len(df)]
        if times:
            t_min = min(float(t.min()) for t in times)
            t_max = max(float(t.max()) for t in times)
            out.append(f"time span  {t_min:.1f} s .. {t_max:.1f} s ({t_max - t_min:.1f} s)")
    if trace.skipped_parts:
        out.append(f"skipped    {len(trace.skipped_parts)} unreadable part(s)")
    if parts > 1:
        out.append(f"parts      {parts} part files (`adaptive compact {path}` merges them)")
    out.append("columns    " + ", ".join(trace.columns))
    if len(steps):
        loss_cols = [f"loss/{c}" for c in trace.components]
        table = steps.groupby("epoch")[loss_cols].mean()
        table.columns = trace.components
        out += ["", "mean raw training loss per epoch:"]
        out.append(table.to_string(float_format=lambda v: f"{v:.4g}"))
    return out
