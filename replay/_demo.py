"""`adaptive demo`: record a short run with both controllers in dry-run, then analyse it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from replay._workflow import write_csv, write_text

DEMO_GRID = {"temperature": [0.5, 1.0, 2.0, 4.0], "adjustment_range": [0.1, 0.2, 0.3]}
DEMO_METHODS = ("dwa", "uncertainty", "scheduler")

# A reduced size for tests and quick looks (`adaptive demo --quick`).
QUICK = (
    "run.epochs=4",
    "data.train_clips=8",
    "data.val_clips=2",
    "data.clip_frames=120",
    "data.val_windows=16",
    "data.val_horizon=20",
    "model.hidden_size=32",
    "train.batch_size=8",
    "train.steps_per_epoch=15",
    "adaptive.update_interval=5",
    "schedule.stages=[{name='tf', epochs=1, tf_ratio=1.0, freerun_horizon=4, freerun_weight=0.0},"
    " {name='mix', epochs=3, tf_ratio=[0.7, 0.4], freerun_horizon=[4, 12],"
    " freerun_weight=[0.5, 1.0]}]",
)


@dataclass
class DemoOutput:
    """Where the demo put things."""

    folder: Path
    trace: Path
    figure: Path
    table: Path
    recommendation: Path
    recommended_config: Path
    heatmap: Path | None
    text: str


def run_demo(
    out: Path | None = None,
    *,
    quick: bool = False,
    overrides: Sequence[str] = (),
    quiet: bool = False,
    echo: Callable[[str], None] = print,
) -> DemoOutput:
    """Train on built-in data (dwa + scheduler in dry-run), compare dwa / uncertainty /
    scheduler over the trace, sweep dwa's temperature x range, write a recommendation."""
    from adaptive.trace import read_trace
    from adaptive.train.config import load_config
    from adaptive.train.run import run_training
    from replay._runs import load_runs
    from replay._sweep import plot_heatmap, recommended_toml, sweep
    from replay._workflow import compare

    folder = Path(out) if out is not None else Path("demo-output") / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    sets = [
        *(QUICK if quick else ()),
        f"run.out={str(folder)!r}",
        "run.name='demo'",
        "adaptive.loss='dwa'",
        "adaptive.scheduler=true",
        "adaptive.dry_run=true",
        *overrides,
    ]
    cfg = load_config(overrides=sets)
    if not quiet:
        echo(f"demo: training on built-in locomotion data, controllers in dry-run -> {folder}")
    summary = run_training(cfg, quiet=quiet)
    trace_path = summary.run_dir / "trace.parquet"
    traces = load_runs(trace_path)
    if not quiet:
        echo("demo: replaying dwa, uncertainty and scheduler over the trace")
    cmp = compare(traces, DEMO_METHODS, folder)
    if not quiet:
        echo("demo: sweeping dwa temperature x adjustment_range")
    sw = sweep(traces, "dwa", DEMO_GRID)
    write_csv(sw.table, folder / "sweep-dwa.csv", index=False)
    heatmap = plot_heatmap(sw, folder / "sweep-dwa.png")
    rec_cfg = write_text(
        folder / "recommended.toml", recommended_toml("dwa", sw.best, source=str(trace_path))
    )
    best = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sw.best.items()
    )
    from replay._stability import READY_SCORE

    best_score = float(sw.table["score"].iloc[0]) if "score" in sw.table else float("nan")
    if best_score < READY_SCORE:
        advice = f"Switch it on live with: adaptive train --config {rec_cfg}"
    else:  # the verdict follows the score: no configuration is ready
        advice = (
            f"Its score is {best_score:.2f} >= {READY_SCORE:g}, so none of them looks stable "
            f"enough yet: replay a longer run before switching it on "
            f"(adaptive train --config {rec_cfg} when it is)."
        )
    text = (
        f"{cmp.recommendation}\n\n"
        f"DWA sweep ({len(sw.table)} configurations): most stable adapting configuration "
        f"{best} (score {best_score:.2f}) -> {rec_cfg}\n"
        f"{advice}"
    )
    rec = write_text(folder / "recommendation.md", text + "\n")
    read_trace(trace_path)  # the trace the figures came from is valid
    return DemoOutput(
        folder=folder,
        trace=trace_path,
        figure=cmp.figures[0],
        table=folder / "stability.csv",
        recommendation=rec,
        recommended_config=rec_cfg,
        heatmap=heatmap,
        text=text,
    )
