"""Parameter sweeps: replay every configuration of a grid, rank by stability, recommend one."""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptive.trace import Trace
from replay._engine import SCHEDULER, ReplayError, method_parameters, replay

# Scheduler parameters that live in [adaptive] (the rest go to [adaptive.scheduler_law]).
_SCHEDULER_TOP = ("adjustment_rate", "update_interval", "use_epoch_metrics")


def _defaults(method: str) -> dict[str, Any]:
    import inspect

    if method == SCHEDULER:
        from adaptive.scheduler import AdaptiveScheduler

        sig = inspect.signature(AdaptiveScheduler)
    else:
        from adaptive.weighting._base import _get_method_class

        sig = inspect.signature(_get_method_class(method).__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.default is not inspect.Parameter.empty
    }


def parse_grid(method: str, grids: Sequence[str]) -> dict[str, list[Any]]:
    """`["temperature=0.5,1,2", "adjustment_range=0.1,0.2"]` -> {name: [values]}.

    Names must be parameters of the method (or `adjustment_range`); values must have the
    parameter's type. Errors name the parameter and the bad value.
    """
    valid = ["adjustment_range", *method_parameters(method)]
    defaults = {"adjustment_range": 0.3, **_defaults(method)}
    out: dict[str, list[Any]] = {}
    for text in grids:
        if "=" not in text:
            raise ReplayError(f"--grid expects name=v1,v2,..., got {text!r}")
        name, raw = (s.strip() for s in text.split("=", 1))
        if name not in valid:
            raise ReplayError(
                f"--grid: {name!r} is not a parameter of {method!r}; valid: {', '.join(valid)}"
            )
        if name in out:
            raise ReplayError(f"--grid: {name!r} given twice")
        values = []
        for item in (v.strip() for v in raw.split(",")):
            if not item:
                raise ReplayError(f"--grid {name}: empty value in {raw!r}")
            try:
                value = tomllib.loads(f"v = {item}")["v"]
            except tomllib.TOMLDecodeError:
                value = item
            default = defaults.get(name)
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int | float):
                ok = isinstance(value, int | float) and not isinstance(value, bool)
                if ok and isinstance(default, int) and not isinstance(default, bool):
                    ok = isinstance(value, int)
            elif isinstance(default, str) or default is None:
                ok = isinstance(value, str)
            else:
                ok = True
            if not ok:
                kind = {bool: "a boolean", int: "an integer", float: "a number"}.get(
                    type(default), "a string"
                )
                raise ReplayError(f"--grid {name}: value {item!r} is not {kind}")
            values.append(float(value) if isinstance(default, float) else value)
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
    """A ranked table of configurations and the recommended one."""

    method: str
    grid: dict[str, list[Any]]
    table: pd.DataFrame  # one row per configuration, ranked (best first)
    best: dict[str, Any]
    per_run: dict[str, pd.DataFrame] = field(default_factory=dict)


def sweep(
    traces: Mapping[str, Trace],
    method: str,
    grid: Mapping[str, Sequence[Any]],
    *,
    fixed: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SweepResult:
    """Replay every grid configuration over every run; rank by the stability score.

    With several runs the ranking uses the mean score over runs (pooled).
    """
    from replay._stability import stability_score

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
        merged: dict[str, list[float]] = {}
        for rid in traces:
            m = metrics_by_run[rid][i]
            s = stability_score(m)
            scores.append(s)
            effects.append(m.get("mean_abs_delta", math.nan))
            per_run[rid].append({**cfg, "score": s, **m})
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
        rows.append(row)
    table = pd.DataFrame(rows)
    table = rank(table)
    best = {k: table.iloc[0][k] for k in grid}
    best = {k: (v.item() if hasattr(v, "item") else v) for k, v in best.items()}
    return SweepResult(
        method=method,
        grid={k: list(v) for k, v in grid.items()},
        table=table,
        best={**fixed, **best},
        per_run={rid: rank(pd.DataFrame(r)) for rid, r in per_run.items()},
    )


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

    comps, _, base, _ = weighting_inputs(trace)
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
                params={"adjustment_range": cfg.get("adjustment_range", 0.3), **cfg},
                frame=pd.DataFrame(cols),
                names=comps,
                run_id=trace.run_id,
            )
            out.append(stability_metrics(res))
            if progress is not None:
                progress(1)
    return out


def rank(table: pd.DataFrame) -> pd.DataFrame:
    """Sort like `stability_rank_key`: score rounded to 3 decimals (lower is more stable),
    ties to the larger effect (`mean_abs_delta`), so a do-nothing configuration does not win
    a tie against one that adapts as stably."""
    from replay._stability import SCORE_TIE_DECIMALS

    key = table.assign(
        _score=table["score"].round(SCORE_TIE_DECIMALS),
        _effect=-table["mean_abs_delta"].fillna(0.0),
    )
    t = key.sort_values(["_score", "_effect"], kind="stable")
    return t.drop(columns=["_score", "_effect"]).reset_index(drop=True)


def recommended_toml(method: str, params: Mapping[str, Any], *, source: str = "") -> str:
    """A config snippet that `adaptive train --config` accepts, enabling the method live."""
    from adaptive.train.config import dumps_toml

    p = dict(params)
    adaptive: dict[str, Any] = {}
    if method == SCHEDULER:
        adaptive["scheduler"] = True
        if "adjustment_range" in p:
            adaptive["adjustment_range"] = float(p.pop("adjustment_range"))
        for k in _SCHEDULER_TOP:
            if k in p:
                adaptive[k] = p.pop(k)
        law = {k: ("" if v is None else v) for k, v in p.items()}
        if law:
            adaptive["scheduler_law"] = law
    else:
        adaptive["loss"] = method
        if "adjustment_range" in p:
            adaptive["adjustment_range"] = float(p.pop("adjustment_range"))
        if p:
            adaptive[method] = p
    head = f"# Recommended by `adaptive sweep`{' over ' + source if source else ''}.\n"
    head += "# Use: adaptive train --config THIS_FILE\n"
    return head + dumps_toml({"adaptive": adaptive})


def plot_heatmap(result: SweepResult, path: Path) -> Path | None:
    """Score heat-map for a two-parameter grid (None for other grids)."""
    from replay._plots import _pyplot, save

    names = list(result.grid)
    if len(names) != 2:
        return None
    plt = _pyplot()
    a, b = names
    t = result.table
    mat = np.full((len(result.grid[a]), len(result.grid[b])), np.nan)
    for i, va in enumerate(result.grid[a]):
        for j, vb in enumerate(result.grid[b]):
            sel = t[(t[a] == va) & (t[b] == vb)]
            if len(sel):
                mat[i, j] = float(sel["score"].iloc[0])
    fig, ax = plt.subplots(figsize=(1.4 * len(result.grid[b]) + 3, 1.0 * len(result.grid[a]) + 2))
    im = ax.imshow(mat, cmap="viridis_r", aspect="auto")
    ax.set_xticks(
        range(len(result.grid[b])),
        [f"{v:g}" if isinstance(v, float) else str(v) for v in result.grid[b]],
    )
    ax.set_yticks(
        range(len(result.grid[a])),
        [f"{v:g}" if isinstance(v, float) else str(v) for v in result.grid[a]],
    )
    ax.set_xlabel(b)
    ax.set_ylabel(a)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isfinite(mat[i, j]):
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.3g}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if mat[i, j] > np.nanmean(mat) else "black",
                )
    ia = result.grid[a].index(result.best[a])
    ib = result.grid[b].index(result.best[b])
    ax.add_patch(plt.Rectangle((ib - 0.5, ia - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    fig.colorbar(im, ax=ax, label="stability score (lower = more stable)")
    ax.set_title(f"{result.method} sweep: stability score per configuration (red box: recommended)")
    return save(fig, path)
