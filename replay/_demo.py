"""`adaptive demo`: record a short run with both controllers in dry-run, then analyse it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replay._workflow import write_text

DEMO_GRIDS: dict[str, dict[str, list[float]]] = {
    "dwa": {"temperature": [0.5, 1.0, 2.0, 4.0], "adjustment_range": [0.1, 0.2, 0.3]},
    "uncertainty": {"lr": [0.003, 0.01, 0.03], "adjustment_range": [0.1, 0.2, 0.3]},
}
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
    recommended_config: Path | None  # None: no configuration is worth switching on
    heatmap: Path | None
    text: str

    def report(self) -> list[str]:
        """What `adaptive demo` prints: the recommendation, then where everything is."""
        rec = self.recommended_config or "none (nothing worth switching on)"
        return [
            "",
            self.text,
            "",
            f"figure              {self.figure}",
            f"stability table     {self.table}",
            f"recommended config  {rec}",
            f"everything is in    {self.folder}",
        ]


def run_demo(
    out: Path | None = None,
    *,
    quick: bool = False,
    overrides: Sequence[str] = (),
    quiet: bool = False,
    echo: Callable[[str], None] = print,
    train_progress: Callable[[Any], Any] | None = None,
) -> DemoOutput:
    """Train on built-in data (dwa + scheduler in dry-run), compare dwa / uncertainty /
    scheduler over the trace, sweep both loss weightings (`DEMO_GRIDS`) and recommend the
    one configuration worth switching on (by the sweep's rule), or none."""
    from adaptive.trace import read_trace
    from adaptive.train.config import load_config
    from adaptive.train.run import run_training
    from replay._advice import shell_arg, trial_advice
    from replay._runs import load_runs
    from replay._sweep import recommended_toml
    from replay._workflow import compare, sweep_runs

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
    summary = run_training(cfg, quiet=quiet, progress=train_progress, echo=echo)
    trace_path = summary.run_dir / "trace.parquet"
    traces = load_runs(trace_path)
    if not quiet:
        echo("demo: replaying dwa, uncertainty and scheduler over the trace")
    cmp = compare(traces, DEMO_METHODS, folder, source=str(trace_path))
    sweeps = {}
    for method, grid in DEMO_GRIDS.items():
        if not quiet:
            echo(f"demo: sweeping {method} " + " x ".join(grid))
        sweeps[method] = sweep_runs(
            traces, method, grid, folder, stem=f"sweep-{method}", recommend_file=False
        ).result
    pick = pick_sweep(sweeps)
    lines = [cmp.recommendation, ""]
    lines += [
        f"{m} sweep ({len(sw.table)} configurations): {sw.verdict}" for m, sw in sweeps.items()
    ]
    rec_cfg: Path | None = None
    stale = folder / "recommended.toml"
    if pick is None:
        if stale.exists():
            stale.unlink()
        lines.append(
            "\nNothing to switch on: no swept configuration passes the stability checks "
            "while moving the weights. Keep the loss weighting off (no recommended.toml)."
        )
    else:
        sw = sweeps[pick]
        assert sw.best is not None
        text = recommended_toml(pick, sw.best, source=str(trace_path), by="demo", path=str(stale))
        rec_cfg = write_text(stale, text)
        lines.append(
            f"\nRecommended: {pick} ({', '.join(f'{k}={v:g}' for k, v in sw.best.items())}),"
            " the best trade-off of stability and effect (lowest net score) among the"
            " configurations of both sweeps that pass the checks."
        )
        advice = trial_advice(list(traces.values()), pick, sw.best, config_path=rec_cfg)
        lines.append(
            f"Next: check that the run ends better (replay cannot tell; docs/OUTCOMES.md): "
            f"{advice[0]}"
        )
        lines.extend(advice[1:])
        lines.append(
            f"Then, if it does, switch it on: adaptive train --config {shell_arg(str(rec_cfg))}"
        )
    text = "\n".join(lines)
    heatmap = folder / f"sweep-{pick or 'dwa'}.png"
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


def pick_sweep(sweeps: dict[str, Any]) -> str | None:
    """The method whose recommended configuration has the lowest `net` score (None if no
    sweep recommends anything): the sweep's own rule, applied across methods."""
    best = [(float(sw.table.iloc[0]["net"]), m) for m, sw in sweeps.items() if sw.best is not None]
    return min(best)[1] if best else None
