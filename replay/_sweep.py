"""Parameter sweeps: replay every configuration of a grid, rank by stability, recommend one."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptive.trace import Trace
from replay._engine import SCHEDULER, ReplayError, method_parameters, replay
from replay._params import check_param_value, method_defaults, parse_value, range_default


def parse_grid(method: str, grids: Sequence[str]) -> dict[str, list[Any]]:
    """`["temperature=0.5,1,2", "adjustment_range=0.1,0.2"]` -> {name: [values]}.

    Names must be parameters of the method (or `adjustment_range`); values must have the
    parameter's type. Errors name the parameter and the bad value.
    """
    valid = ["adjustment_range", *method_parameters(method)]
    defaults = {"adjustment_range": range_default(method), **method_defaults(method)}
    out: dict[str, list[Any]] = {}
    for text in grids:
        if "=" not in text:
            raise ReplayError(f"--grid expects name=v1,v2,..., got {text!r}")
        name, raw = (s.strip() for s in text.split("=", 1))
        if name not in valid:
            raise ReplayError(
                f"--grid {text!r}: {name!r} is not a parameter of {method!r}; "
                f"valid: {', '.join(valid)}"
            )
        if name in out:
            raise ReplayError(f"--grid: {name!r} given twice")
        values = []
        for item in (v.strip() for v in raw.split(",")):
            if not item:
                raise ReplayError(f"--grid {name}: empty value in {raw!r}")
            values.append(
                check_param_value(
                    f"--grid {name}", defaults.get(name), parse_value(item), shown=repr(item)
                )
            )
        out[name] = values
    if not out:
        raise ReplayError("give at least one --grid name=v1,v2,...")
    return out


def grid_configs(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid, in row-major order."""
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


@dataclass
class SweepResult:
    """A ranked table of configurations and the recommended one (if any).

    `table` has one row per configuration, ranked (recommended first), with the columns
    `status` (`recommended`, `eligible`, `inert`, `unstable`), `pareto` (on the front of
    effect vs stability score) and `problems` (why a configuration is unstable). `best` is
    None when no configuration is eligible; `notes` hold warnings (e.g. the pick lies on
    the edge of the grid) and `verdict` says in one or two sentences what to do.
    """

    method: str
    grid: dict[str, list[Any]]
    table: pd.DataFrame
    best: dict[str, Any] | None
    per_run: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    verdict: str = ""


def sweep(
    traces: Mapping[str, Trace],
    method: str,
    grid: Mapping[str, Sequence[Any]],
    *,
    fixed: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:
    """Replay every grid configuration over every run; rank them (see `rank`).

    With several runs the score and effect are means over runs and a configuration is
    unstable if it scores `READY_SCORE` or more in any run.
    """
    from replay._stability import READY_SCORE, stability_score, verdict

    configs = grid_configs(grid)
    fixed = dict(fixed or {})
    rows = []
    per_run: dict[str, list[dict[str, Any]]] = {rid: [] for rid in traces}
    metrics_by_run = {
        rid: _config_metrics(tr, method, [{**fixed, **c} for c in configs], progress)
        for rid, tr in traces.items()
    }
    for i, cfg in enumerate(configs):
        scores, effects = [], []
        problems: list[str] = []
        merged: dict[str, list[float]] = {}
        for rid in traces:
            m = metrics_by_run[rid][i]
            s = stability_score(m)
            scores.append(s)
            effects.append(m.get("mean_abs_delta", math.nan))
            why = ""
            if s >= READY_SCORE:  # the verdict rule of `compare`: score against READY_SCORE
                why = f"score {s:.2f} >= {READY_SCORE:g}: " + ", ".join(verdict(rid, m).drivers)
                problems.append(f"{rid}: {why}" if len(traces) > 1 else why)
            per_run[rid].append({**cfg, "score": s, **m, "problems": why})
            for k, v in m.items():
                merged.setdefault(k, []).append(v)
        row = {
            "config": i,
            **cfg,
            "score": float(np.mean(scores)),
            "mean_abs_delta": float(np.mean(effects)) if effects else math.nan,
        }
        for k in (
            "at_clamp_share_max",
            "at_bound_share",
            "sign_flips_per_1000",
            "volatility_step",
            "settle_epoch",
        ):
            vals = np.asarray(merged.get(k, []), dtype=np.float64)
            if np.isfinite(vals).any():
                row[k] = float(np.nanmean(vals))
            elif vals.size:
                row[k] = math.nan
        row["problems"] = "; ".join(problems)
        rows.append(row)
    table = rank(pd.DataFrame(rows))
    best: dict[str, Any] | None = None
    notes: list[str] = []
    if len(table) and table["status"].iloc[0] == "recommended":
        best = {k: table.iloc[0][k] for k in grid}
        best = {**fixed, **{k: (v.item() if hasattr(v, "item") else v) for k, v in best.items()}}
        notes = edge_notes(grid, best)
    if method != SCHEDULER:
        from adaptive.weighting import method_class
        from replay._weighting_replay import open_loop_note

        if method_class(method).after_extras():
            notes.append(
                open_loop_note(
                    method,
                    "every configuration other than the one the run applied is replayed open "
                    "loop; check the pick with adaptive trial",
                )
            )
    return SweepResult(
        method=method,
        grid={k: list(v) for k, v in grid.items()},
        table=table,
        best=best,
        per_run={rid: rank(pd.DataFrame(r)) for rid, r in per_run.items()},
        notes=notes,
        verdict=sweep_verdict(method, table, best, notes),
    )


def edge_notes(grid: Mapping[str, Sequence[Any]], best: Mapping[str, Any]) -> list[str]:
    """Warnings for grid parameters whose recommended value is the smallest or largest
    value tried: the best value may lie beyond the grid."""
    out = []
    for name, values in grid.items():
        nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(nums) < 2 or len(nums) != len(values) or name not in best:
            continue
        v = best[name]
        if v == max(nums) or v == min(nums):
            side = "largest" if v == max(nums) else "smallest"
            out.append(
                f"{name}={v:g} is the {side} value in the grid: the best value may lie "
                "beyond it; widen the grid to check"
            )
    return out


def sweep_verdict(
    method: str, table: pd.DataFrame, best: Mapping[str, Any] | None, notes: Sequence[str]
) -> str:
    """One or two sentences: what the sweep recommends, or why it recommends nothing."""
    from replay._stability import THRESHOLDS

    n = len(table)
    counts = table["status"].value_counts().to_dict() if n else {}
    inert, unstable = counts.get("inert", 0), counts.get("unstable", 0)
    small = THRESHOLDS["mean_abs_delta_small"]
    if best is None:
        text = (
            f"No {method} configuration is worth switching on: of {n}, {inert} barely move "
            f"the weights (mean |delta| < {small:g}: inert) and {unstable} fail the "
            "stability checks. Keep the controller off, or widen the grid."
        )
        return text + (" Note: " + "; ".join(notes) + "." if notes else "")
    row = table.iloc[0]
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in best.items())
    text = (
        f"Recommended {method}: {shown} (mean |delta| {row['mean_abs_delta']:.3f}, "
        f"score {row['score']:.2f}): the best trade-off of stability and effect among the "
        f"{counts.get('recommended', 0) + counts.get('eligible', 0)} of {n} configurations "
        f"that pass the stability checks and are not inert."
    )
    if notes:
        text += " Note: " + "; ".join(notes) + "."
    return text


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


SWEEP_CHUNK = 64  # most configurations advanced together
SWEEP_MEMORY = 300e6  # bytes of (T, chunk, C) outputs held at once (float64 delta + bool clamp)


def _config_metrics(
    trace: Trace,
    method: str,
    configs: Sequence[Mapping[str, Any]],
    progress: Callable[[int], None] | None,
) -> list[dict[str, float]]:
    """Stability metrics of each configuration replayed over one trace.

    Weighting methods advance up to `SWEEP_CHUNK` configurations together (a leading
    configuration dimension in the controller state), fewer on long traces so the outputs
    held at once stay under `SWEEP_MEMORY`; the scheduler replays one at a time.
    """
    from replay._stability import stability_metrics

    out: list[dict[str, float]] = []
    if method == SCHEDULER:
        for cfg in configs:
            out.append(stability_metrics(replay(trace, method, **cfg)))
            if progress is not None:
                progress(1)
        return out
    from replay._engine import ReplayResult
    from replay._weighting_replay import sweep_weighting, weighting_inputs

    inputs = weighting_inputs(trace)
    comps, base = inputs.components, inputs.base
    per_config = max(1, len(trace.steps) * len(comps) * 9)
    size = int(max(1, min(SWEEP_CHUNK, SWEEP_MEMORY // per_config)))
    for lo in range(0, len(configs), size):
        chunk = [dict(c) for c in configs[lo : lo + size]]
        arrays = sweep_weighting(trace, method, chunk, outputs=("deltas", "clamped"))
        head = {"step": arrays["step"], "epoch": arrays["epoch"], "skipped": arrays["skipped"]}
        for k, cfg in enumerate(chunk):
            cols = dict(head)
            for j, c in enumerate(comps):
                cols[f"delta/{c}"] = arrays["deltas"][:, k, j]
                cols[f"clamped/{c}"] = arrays["clamped"][:, k, j]
                # the controller's own formula: proposed = base * (1 + delta), in float64
                cols[f"proposed/weight/{c}"] = base[:, j] * (1.0 + arrays["deltas"][:, k, j])
                cols[f"base/{c}"] = base[:, j]
            res = ReplayResult(
                method=method,
                params={
                    "adjustment_range": cfg.get("adjustment_range", range_default(method)),
                    **cfg,
                },
                frame=pd.DataFrame(cols),
                names=comps,
                run_id=trace.run_id,
            )
            out.append(stability_metrics(res))
            if progress is not None:
                progress(1)
    return out


def rank(table: pd.DataFrame) -> pd.DataFrame:
    """Rank configurations by what switching them on would do (docs/STABILITY.md).

    Eligible configurations score below `READY_SCORE` in every run (no `problems`: the
    verdict rule of `compare`) and are not *inert* (mean |delta| of at least
    `THRESHOLDS["mean_abs_delta_small"]`). Among them the lowest
    `net = score - effect / (effect + EFFECT_REF)` ranks first (the trade-off of stability
    and effect; ties to the larger effect). Then the unstable ones, then the inert ones (a
    controller that does nothing is never recommended, however calm), each by `net`. Adds
    `net`, `status` and `pareto` (no other configuration has both a larger effect and a
    lower score).
    """
    from replay._stability import EFFECT_REF, SCORE_TIE_DECIMALS, THRESHOLDS

    t = table.copy()
    if "problems" not in t.columns:
        t["problems"] = ""
    effect = t["mean_abs_delta"].fillna(0.0).to_numpy(dtype=np.float64)
    score = t["score"].round(SCORE_TIE_DECIMALS).to_numpy(dtype=np.float64)
    inert = effect < THRESHOLDS["mean_abs_delta_small"]
    unstable = t["problems"].fillna("").astype(str).str.len().to_numpy() > 0
    status = np.where(inert, "inert", np.where(unstable, "unstable", "eligible"))
    pareto = np.ones(len(t), dtype=bool)
    for i in range(len(t)):
        dominated = (effect >= effect[i]) & (score <= score[i])
        dominated &= (effect > effect[i]) | (score < score[i])
        pareto[i] = not dominated.any()
    group = np.where(status == "eligible", 0, np.where(status == "unstable", 1, 2))
    net = np.round(t["score"].to_numpy(dtype=np.float64) - effect / (effect + EFFECT_REF), 6)
    t = t.assign(net=net, status=status, pareto=pareto, _g=group, _n=np.round(net, 3))
    t = t.assign(_e=-effect)
    t = t.sort_values(["_g", "_n", "_e"], kind="stable").reset_index(drop=True)
    if len(t) and t.loc[0, "status"] == "eligible":
        t.loc[0, "status"] = "recommended"
    return t.drop(columns=["_g", "_n", "_e"])


def recommended_toml(
    method: str,
    params: Mapping[str, Any],
    *,
    source: str = "",
    by: str = "sweep",
    path: str = "",
) -> str:
    """A config snippet enabling the method live, in the reference trainer's config format,
    with a header that says how to use it: `adaptive train --config` (the reference
    trainer), `adaptive.controllers_from_config` (your own loop) and `--adaptive-config`
    (a `--command` trial of your own script). `path`: where it is written (the header
    names it; default THIS_FILE)."""
    import shlex

    from adaptive.train.config import dumps_toml
    from replay._advice import ADAPTIVE_CONFIG_FLAG, COMMAND_TEMPLATE, adaptive_section, shell_arg

    where = shell_arg(path) if path else "THIS_FILE"
    candidate = shell_arg(f"{ADAPTIVE_CONFIG_FLAG} {shlex.quote(path) if path else 'THIS_FILE'}")
    pyname = repr(path) if path else "'THIS_FILE'"
    head = f"# Recommended by `adaptive {by}`{' over ' + source if source else ''}.\n"
    head += "# Use it with\n"
    head += f"#   the reference trainer:  adaptive train --config {where}\n"
    head += (
        f"#     (a trial of it first: adaptive trial --candidate {where} --seeds 10 --placebo)\n"
    )
    head += (
        f"#   your own loop:          adaptive.controllers_from_config({pyname}, "
        "components=[...])\n"
        "#                           (.weighting / .scheduler; docs/INTEGRATION.md)\n"
    )
    head += (
        f"#   a trial of your own script (it takes {ADAPTIVE_CONFIG_FLAG} PATH and builds its "
        "controllers so):\n"
        f"#     adaptive trial --command {shlex.quote(COMMAND_TEMPLATE)} -c {candidate} "
        "--metric SPLIT/NAME\n"
    )
    return head + dumps_toml({"adaptive": adaptive_section(method, params)})


_STATUS_STYLE = {
    "recommended": ("tab:red", "*", 180),
    "eligible": ("tab:green", "o", 50),
    "unstable": ("tab:orange", "x", 50),
    "inert": ("tab:gray", "o", 40),
}


def plot_heatmap(result: SweepResult, path: Path) -> Path:
    """The sweep's figure: effect vs stability score of every configuration (status,
    Pareto front, the inert threshold) and, for a two-parameter grid, the score heat-map."""
    from replay._plots import _pyplot, save
    from replay._stability import THRESHOLDS

    plt = _pyplot()
    names = list(result.grid)
    two = len(names) == 2
    fig, axes = plt.subplots(1, 2 if two else 1, figsize=(13 if two else 7, 5), squeeze=False)
    ax = axes[0][0]
    t = result.table
    for status, (color, marker, size) in _STATUS_STYLE.items():
        sel = t[t["status"] == status]
        if len(sel):
            ax.scatter(
                sel["mean_abs_delta"],
                sel["score"],
                c=color,
                marker=marker,
                s=size,
                label=f"{status} ({len(sel)})",
                zorder=3,
            )
    front = t[t["pareto"]].sort_values("mean_abs_delta")
    if len(front) > 1:
        ax.plot(
            front["mean_abs_delta"],
            front["score"],
            "--",
            c="0.4",
            lw=1,
            label="Pareto front",
            zorder=2,
        )
    small = THRESHOLDS["mean_abs_delta_small"]
    ax.axvline(small, c="0.5", lw=1, ls=":", label=f"inert below mean |delta| {small:g}")
    ax.set_xlabel("effect: mean |delta| (relative change from base)")
    ax.set_ylabel("stability score (0-3.5, lower = more stable)")
    ax.set_title(f"{result.method} sweep: effect vs stability ({len(t)} configurations)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if two:
        _heat(axes[0][1], fig, result)
    return save(fig, path)


def _heat(ax: Any, fig: Any, result: SweepResult) -> None:
    from matplotlib.patches import Rectangle

    a, b = list(result.grid)
    t = result.table
    mat = np.full((len(result.grid[a]), len(result.grid[b])), np.nan)
    for i, va in enumerate(result.grid[a]):
        for j, vb in enumerate(result.grid[b]):
            sel = t[(t[a] == va) & (t[b] == vb)]
            if len(sel):
                mat[i, j] = float(sel["score"].iloc[0])
    im = ax.imshow(mat, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(result.grid[b])), [_fmt(v) for v in result.grid[b]])
    ax.set_yticks(range(len(result.grid[a])), [_fmt(v) for v in result.grid[a]])
    ax.set_xlabel(b)
    ax.set_ylabel(a)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isfinite(mat[i, j]):
                sel = t[(t[a] == result.grid[a][i]) & (t[b] == result.grid[b][j])]
                tag = {"inert": "\ninert", "unstable": "\nunstable"}.get(
                    str(sel["status"].iloc[0]), ""
                )
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.3g}{tag}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if mat[i, j] > np.nanmean(mat) else "black",
                )
    title = f"{result.method}: stability score per configuration"
    if result.best is not None:
        ia = result.grid[a].index(result.best[a])
        ib = result.grid[b].index(result.best[b])
        ax.add_patch(Rectangle((ib - 0.5, ia - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
        title += " (red box: recommended)"
    else:
        title += " (none recommended)"
    fig.colorbar(im, ax=ax, label="stability score (lower = more stable)")
    ax.set_title(title)
