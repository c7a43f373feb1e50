"""The `adaptive` command line: a thin Typer layer over the `adaptive` and `replay` libraries.

Heavy modules (torch, matplotlib) are imported inside the commands that need them, so
`adaptive --help`, `inspect` and `compact` start quickly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from adaptive._version import __version__

if TYPE_CHECKING:
    from adaptive.trace import Trace

T = TypeVar("T")

app = typer.Typer(
    name="adaptive",
    help=(
        "Adaptive loss weighting and training-schedule control with offline replay.\n\n"
        "Record a training trace, replay controllers over it in dry-run, then switch them on."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit with `code` (2: bad input)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _check_namespace() -> None:
    """Fail in one line when another package named `replay` shadows the offline engine."""
    from adaptive._namespace import replay_clash

    clash = replay_clash()
    if clash is not None:
        fail(clash)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"adaptive {__version__}")
        _check_namespace()
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Adaptive loss weighting and schedule control with offline replay."""
    _check_namespace()


def _read(reader: Callable[[Path], T], path: Path) -> T:
    """Call `reader(path)`; a TraceError becomes the one-line error, skipped parts warnings."""
    import warnings

    from adaptive.trace import TraceError, TraceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TraceWarning)
        try:
            result = reader(path)
        except TraceError as exc:
            fail(str(exc))
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    return result


def _load(path: Path) -> Trace:
    from adaptive.trace import read_trace

    return _read(read_trace, path)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Trace: a .parquet file or a directory of parts.")],
) -> None:
    """Summarise a trace: run, components, metrics, row counts, columns, per-epoch losses.

    Example:

        adaptive inspect runs/demo/trace.parquet
    """
    trace = _load(path)
    steps, epochs = trace.steps, trace.epochs
    out = [
        f"trace      {trace.path}",
        f"version    {trace.version}",
        f"run id     {', '.join(trace.run_ids) or '-'}",
        f"components {', '.join(trace.components)}",
        f"metrics    {', '.join(trace.metrics) or '-'}",
        f"rows       {len(steps)} step, {len(epochs)} epoch"
        + (f" ({', '.join(sorted(epochs['split'].unique()))})" if len(epochs) else ""),
    ]
    if len(steps):
        out.append(
            f"steps      {int(steps['step'].min())}..{int(steps['step'].max())}, "
            f"epochs {int(steps['epoch'].min())}..{int(steps['epoch'].max())}"
        )
    if "time" in trace.columns:
        times = [df["time"] for df in (steps, epochs) if "time" in df and len(df)]
        if times:
            t_min = min(float(t.min()) for t in times)
            t_max = max(float(t.max()) for t in times)
            out.append(f"time span  {t_min:.1f} s .. {t_max:.1f} s ({t_max - t_min:.1f} s)")
    if trace.skipped_parts:
        out.append(f"skipped    {len(trace.skipped_parts)} unreadable part(s)")
    parts = _part_count(path)
    if parts > 1:
        out.append(f"parts      {parts} part files (`adaptive compact {path}` merges them)")
    out.append("columns    " + ", ".join(trace.columns))
    typer.echo("\n".join(out))
    if len(steps):
        loss_cols = [f"loss/{c}" for c in trace.components]
        table = steps.groupby("epoch")[loss_cols].mean()
        table.columns = trace.components
        typer.echo("\nmean raw training loss per epoch:")
        typer.echo(table.to_string(float_format=lambda v: f"{v:.4g}"))


def _part_count(path: Path) -> int:
    """Part files of a trace directory (PATH itself, or PATH/trace.parquet of a run folder)."""
    from adaptive.trace import part_files

    for d in (path, path / "trace.parquet"):
        if d.is_dir():
            n = len(part_files(d))
            if n:
                return n
    return 0


@app.command()
def compact(
    path: Annotated[Path, typer.Argument(help="Trace directory of part files.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of replacing PATH.")
    ] = None,
    single_file: Annotated[
        bool,
        typer.Option(
            "--single-file", help="Replace PATH by one plain file (train --resume cannot append)."
        ),
    ] = False,
) -> None:
    """Merge a trace directory's part files into one Parquet part, atomically.

    The row count is verified before anything is replaced. Without --out PATH stays a
    directory holding one part, so `adaptive train --resume` can still append to it;
    --single-file replaces it by a single file of the same name.

    Example:

        adaptive compact runs/demo/trace.parquet
    """
    from adaptive.trace import TraceError, compact_trace

    try:
        dest = compact_trace(path, out, keep_directory=not single_file)
    except TraceError as exc:
        fail(str(exc))
    typer.echo(f"compacted {path} -> {dest}")


# Help texts that list the loss weighting methods say METHODS; `_tidy_help` fills in the
# registered ones when help is rendered (importing the registry at CLI import would load torch).
METHODS = "{registered-methods}"


def _params(
    methods: list[str], texts: list[str], *, flag: str = "--param", adjustment_range: bool = True
) -> dict[str, dict[str, object]]:
    """`name=value` / `method.name=value` -> {method: {name: value}}, checked against the
    registry (`replay.parse_params`); the one parser and error style of every command."""
    from replay import ReplayError, parse_params

    try:
        return parse_params(methods, texts, flag=flag, adjustment_range=adjustment_range)
    except ReplayError as exc:
        fail(str(exc))


def _rich_bar(*columns: str, transient: bool = False) -> Any:
    """The one progress-bar style of the CLI: text columns, a bar after the first, ETA."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    first, *rest = (TextColumn(c) for c in columns)
    return Progress(first, BarColumn(), *rest, TimeRemainingColumn(), transient=transient)


class _TrainBar:
    """Training progress: epoch, step, loss, ETA (`run_training`'s progress factory)."""

    def __init__(self, cfg: Any) -> None:
        self.progress = _rich_bar(
            "[bold]train[/] epoch {task.fields[epoch]}",
            "step {task.completed}/{task.total}",
            "loss {task.fields[loss]}",
            "{task.fields[phase]}",
        )
        self.task = None
        self.loss = "-"

    def start(self, trainer: Any) -> None:
        self.progress.start()
        total = trainer.epochs * trainer.steps_per_epoch
        self.task = self.progress.add_task(
            "train",
            total=total,
            completed=trainer.step,
            epoch=f"{trainer.epoch}/{trainer.epochs}",
            loss="-",
            phase="",
        )

    def __call__(self, info: Any) -> None:
        if self.task is None:
            return
        if info.loss is not None:
            self.loss = f"{info.loss:.4g}"
        self.progress.update(
            self.task,
            completed=info.step,
            epoch=f"{info.epoch + 1}/{info.epochs}",
            loss=self.loss,
            phase="(evaluating)" if info.phase == "eval" else "",
        )

    def stop(self) -> None:
        self.progress.stop()


class _Progress:
    """A progress bar over replayed steps, replays or imported rows (silent with --quiet)."""

    def __init__(self, total: int, label: str, quiet: bool, unit: str = "steps") -> None:
        self.quiet = quiet
        if quiet:
            return
        self.bar = _rich_bar(
            "{task.description}", "{task.completed}/{task.total} " + unit, transient=True
        )
        self.bar.start()
        self.task = self.bar.add_task(label, total=total)

    def __call__(self, n: int) -> None:
        if not self.quiet:
            self.bar.advance(self.task, n)

    def close(self) -> None:
        if not self.quiet:
            self.bar.stop()


@app.command("replay")
def replay_cmd(
    path: Annotated[Path, typer.Argument(help="Trace: a .parquet file or a directory of parts.")],
    method: Annotated[
        str,
        typer.Option("--method", "-m", help=f"scheduler, or a loss weighting method: {METHODS}."),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="A method hyperparameter, name=value, e.g. temperature=2 for dwa (repeatable).",
        ),
    ] = None,
    adjustment_range: Annotated[
        float | None,
        typer.Option(help="Bound r on |delta| (0 reproduces the base values; default 0.3)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: RUN/replays)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Figure format: png, svg or pdf.")] = "png",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Replay a controller over a trace in dry-run: the weights / schedule it would have produced.

    Writes replay-<method>.parquet (per-step scales, deltas, proposals) and
    replay-<method>.png into the run's replays/ folder (never taken for trace parts), and
    prints a short table. Method hyperparameters come with --param name=value; a name the
    method does not take is refused with the list of those it does.

    Example:

        adaptive replay runs/demo/trace.parquet --method dwa --param temperature=2
    """
    if fmt not in ("png", "svg", "pdf"):
        fail(f"--format must be png, svg or pdf, got {fmt!r}")
    if adjustment_range is not None and adjustment_range < 0:
        fail(f"--adjustment-range must be >= 0, got {adjustment_range!r}")
    from replay import ReplayError, replay_runs
    from replay._params import merged_params

    given = _params([method], param or [])[method]
    try:
        params = merged_params(given, "--adjustment-range", adjustment_range)
    except ReplayError as exc:
        fail(str(exc))
    runs = _load_runs(path)
    base = out if out is not None else _default_out(path, "replays")
    bar = _Progress(sum(len(t.steps) for t in runs.values()), f"replay {method}", quiet)
    try:
        res = replay_runs(runs, method, base, params=params, fmt=fmt, progress=bar)
    except (ReplayError, ValueError, TypeError, KeyError) as exc:
        bar.close()
        fail(str(exc).strip("'\""))
    bar.close()
    typer.echo(res.text())


@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a config key: section.key=value (repeatable)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs to train (run.epochs).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Parent folder of run folders (run.out).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Run folder name (run.name).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (run.seed).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (run.device).")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Folder of .bvh files instead of built-in data.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Run folder to continue from its last checkpoint.")
    ] = None,
    adaptive_loss: Annotated[
        str | None,
        typer.Option(
            "--adaptive-loss",
            "--adaptive_loss",
            help=f"none or a loss weighting method: {METHODS}.",
        ),
    ] = None,
    adaptive_dry_run: Annotated[
        bool | None,
        typer.Option(
            "--adaptive-dry-run",
            "--adaptive_dry_run",
            help="Controllers compute and record proposals; base values are applied.",
        ),
    ] = None,
    adaptive_loss_range: Annotated[
        float | None,
        typer.Option(
            "--adaptive-loss-range",
            "--adaptive_loss_range",
            help="Loss weighting: largest relative change of a weight (>= 0).",
        ),
    ] = None,
    adaptive_scheduler_range: Annotated[
        float | None,
        typer.Option(
            "--adaptive-scheduler-range",
            "--adaptive_scheduler_range",
            help="Scheduler: bound on |delta|, in [0, 1).",
        ),
    ] = None,
    adjustment_range: Annotated[
        float | None,
        typer.Option(
            "--adjustment-range",
            "--adjustment_range",
            help="Deprecated: sets both ranges above.",
            hidden=True,
        ),
    ] = None,
    adaptive_log_every: Annotated[
        int | None,
        typer.Option(
            "--adaptive-log-every",
            "--adaptive_log_every",
            help="Steps between controller log lines.",
        ),
    ] = None,
    adaptive_scheduler: Annotated[
        bool | None,
        typer.Option(
            "--adaptive-scheduler",
            "--adaptive_scheduler",
            help="Turn on the adaptive TF / free-run scheduler.",
        ),
    ] = None,
    adaptive_adjustment_rate: Annotated[
        float | None,
        typer.Option(
            "--adaptive-adjustment-rate",
            "--adaptive_adjustment_rate",
            help="Scheduler: most the delta moves per update.",
        ),
    ] = None,
    adaptive_update_interval: Annotated[
        int | None,
        typer.Option(
            "--adaptive-update-interval",
            "--adaptive_update_interval",
            help="Scheduler: batches between batch-level updates.",
        ),
    ] = None,
    adaptive_use_epoch_metrics: Annotated[
        bool | None,
        typer.Option(
            "--adaptive-use-epoch-metrics/--no-adaptive-use-epoch-metrics",
            "--adaptive_use_epoch_metrics/--no_adaptive_use_epoch_metrics",
            help="Scheduler: react to val / valfree metrics.",
        ),
    ] = None,
    adaptive_param: Annotated[
        list[str] | None,
        typer.Option(
            "--adaptive-param",
            "--adaptive_param",
            help="A hyperparameter of the loss weighting method, name=value, e.g. "
            "temperature=1 with dwa (repeatable; sets adaptive.<method>.<name>).",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train the reference motion model and record its trace (runs/<name>/trace.parquet).

    Built-in procedural locomotion data by default; --data DIR trains on your .bvh files.
    Adaptive controllers are off unless asked for.

    Example:

        adaptive train --adaptive-loss dwa --adaptive-param temperature=1 --adaptive-dry-run
    """
    from adaptive.train.config import ConfigError, load_config

    extra: dict[str, dict[str, object]] = {"run": {}, "data": {}, "adaptive": {}}
    for key, value in (
        ("epochs", epochs),
        ("out", str(out) if out else None),
        ("name", name),
        ("seed", seed),
        ("device", device),
    ):
        if value is not None:
            extra["run"][key] = value
    if data is not None:
        extra["data"].update(source="bvh", path=str(data))
    for key, value in (
        ("loss", adaptive_loss),
        ("dry_run", adaptive_dry_run),
        ("adjustment_range", adjustment_range),
        ("loss_adjustment_range", adaptive_loss_range),
        ("scheduler_adjustment_range", adaptive_scheduler_range),
        ("log_every", adaptive_log_every),
        ("scheduler", adaptive_scheduler),
        ("adjustment_rate", adaptive_adjustment_rate),
        ("update_interval", adaptive_update_interval),
        ("use_epoch_metrics", adaptive_use_epoch_metrics),
    ):
        if value is not None:
            extra["adaptive"][key] = value
    if adaptive_loss is not None and adaptive_loss != "none":
        from adaptive.weighting import available_methods

        if adaptive_loss not in available_methods():
            fail(
                f"--adaptive-loss must be none or one of {', '.join(available_methods())}, "
                f"got {adaptive_loss!r}"
            )
    if resume is not None:
        if config is not None:
            fail("--resume continues a run with its saved config; do not pass --config")
        config = resume / "config.toml"
        if not config.is_file():
            fail(f"{resume}: not a run folder (no config.toml)")
        extra["run"]["out"] = str(resume.parent)
        extra["run"]["name"] = resume.name
    try:
        cfg = load_config(config, set_ or [], extra={k: v for k, v in extra.items() if v})
        if adaptive_param:  # the active method is known once the config is resolved
            method = cfg["adaptive"]["loss"]
            if method == "none":
                fail(
                    "--adaptive-param sets a loss weighting parameter; choose a method first "
                    "(--adaptive-loss)"
                )
            given = _params(
                [method], adaptive_param, flag="--adaptive-param", adjustment_range=False
            )[method]
            extra["adaptive"][method] = given
            cfg = load_config(config, set_ or [], extra={k: v for k, v in extra.items() if v})
    except ConfigError as exc:
        fail(str(exc))
    from adaptive.train.run import run_training

    try:
        summary = run_training(
            cfg, resume=resume is not None, quiet=quiet, progress=_TrainBar, echo=typer.echo
        )
    except Exception as exc:  # one line for known input problems, traceback otherwise
        from adaptive.train.trainer import TrainingError

        if isinstance(exc, TrainingError | ValueError | FileNotFoundError):
            fail(str(exc))
        raise
    if summary.interrupted:
        raise typer.Exit(130)


def _load_runs(path: Path) -> dict[str, Trace]:
    """Runs under PATH (a trace, a run folder, a folder of runs, a hive dataset)."""
    from replay import load_runs

    return _read(load_runs, path)


@app.command()
def compare(
    path: Annotated[Path, typer.Argument(help="A trace, a run folder or a folder of runs.")],
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            "-m",
            help=f"scheduler or a loss weighting method: {METHODS} (repeatable; default "
            "dwa, uncertainty and scheduler).",
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="A method hyperparameter, method.name=value, e.g. dwa.temperature=1 "
            "(name=value with one method; repeatable).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: <run>/compare).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Figure format: png, svg or pdf.")] = "png",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Replay several controllers over a trace: one aligned figure, one stability table.

    Prints one verdict line per controller (the score against its threshold, the one or
    two things that drove it, what to do next); the full table goes to stability.csv.
    With a folder of runs, one figure per run and a table pooled over runs (mean).

    Example:

        adaptive compare runs/base/trace.parquet -m dwa -m uncertainty -m scheduler
    """
    if fmt not in ("png", "svg", "pdf"):
        fail(f"--format must be png, svg or pdf, got {fmt!r}")
    methods = list(dict.fromkeys(method or ["dwa", "uncertainty", "scheduler"]))
    from replay import ReplayError
    from replay import compare as run_compare

    params = _params(methods, param or [])  # refuses an unknown method or parameter
    runs = _load_runs(path)
    dest = out if out is not None else _default_out(path, "compare")
    bar = _Progress(len(runs) * len(methods), "compare", quiet, unit="replays")
    try:
        res = run_compare(runs, methods, dest, params=params, fmt=fmt, progress=bar)
    except (ReplayError, ValueError, TypeError, KeyError) as exc:
        bar.close()
        fail(str(exc).strip("'\""))
    bar.close()
    pooled = f" (pooled over runs: mean of {len(runs)})" if len(runs) > 1 else ""
    typer.echo(f"verdict per controller{pooled}; score 0-3.5, lower is steadier:")
    typer.echo(res.summary())
    typer.echo("replay is open loop: confirm live with logging on (recommendation.md says more)")
    typer.echo("")
    typer.echo(f"full stability table ({len(res.table)} metrics): {dest / 'stability.csv'}")
    for f in [*res.figures, *res.files]:
        typer.echo(f"wrote {f}")


def _run_folder(path: Path) -> Path:
    """Where outputs about PATH go by default: beside a trace, inside a folder of runs."""
    return path.parent if path.name.endswith(".parquet") else path


def _default_out(path: Path, name: str) -> Path:
    return _run_folder(path) / name


@app.command()
def sweep(
    path: Annotated[Path, typer.Argument(help="A trace, a run folder or a folder of runs.")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            "-m",
            help=f"scheduler, or a loss weighting method: {METHODS}.",
        ),
    ],
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid", "-g", help="name=v1,v2,... (repeatable; the grid is their product)."
        ),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="A fixed method hyperparameter, name=value (repeatable)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: <run>/sweep-<method>)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Figure format: png, svg or pdf.")] = "png",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Replay every configuration of a grid, rank by stability score, recommend one.

    Writes sweep.csv (ranked), a heat-map for two-parameter grids, and recommended.toml,
    which `adaptive train --config` accepts to switch the chosen configuration on live.

    Example:

        adaptive sweep runs/base/trace.parquet -m dwa -g temperature=1,2 -g adjustment_range=0.1,0.3
    """
    if fmt not in ("png", "svg", "pdf"):
        fail(f"--format must be png, svg or pdf, got {fmt!r}")
    from replay import ReplayError, parse_grid, recommended_toml
    from replay import sweep as run_sweep
    from replay._sweep import grid_configs, plot_heatmap
    from replay._workflow import write_csv, write_text

    try:
        g = parse_grid(method, grid)
    except ReplayError as exc:
        fail(str(exc))
    fixed = _params([method], param or [])[method]
    clash = sorted(set(fixed) & set(g))
    if clash:
        fail(f"{', '.join(clash)} given both as --param and --grid")
    runs = _load_runs(path)
    from replay._inputs import check_inputs

    for trace in runs.values():  # refuse a method whose inputs the trace lacks, before sweeping
        try:
            notes = check_inputs(trace, method, fixed)
        except ReplayError as exc:
            fail(str(exc))
    for note in notes:
        typer.echo(f"input: {note}")
    n = len(grid_configs(g)) * len(runs)
    dest = out if out is not None else _default_out(path, f"sweep-{method}")
    bar = _Progress(n, f"sweep {method}", quiet, unit="replays")
    try:
        res = run_sweep(runs, method, g, fixed=fixed, progress=bar)
    except (ReplayError, ValueError, TypeError, KeyError) as exc:
        bar.close()
        fail(str(exc).strip("'\""))
    bar.close()
    files = [write_csv(res.table, dest / "sweep.csv", index=False)]
    if len(runs) > 1:
        for rid, t in res.per_run.items():
            files.append(write_csv(t, dest / f"sweep-{rid}.csv", index=False))
    heat = plot_heatmap(res, dest / f"sweep.{fmt}")
    if heat is not None:
        files.append(heat)
    stale = dest / "recommended.toml"
    if res.best is not None:
        files.append(write_text(stale, recommended_toml(method, res.best, source=str(path))))
    elif stale.exists():
        stale.unlink()  # an older sweep's advice must not outlive this one
    pooled = " (pooled over runs: mean score and effect)" if len(runs) > 1 else ""
    shown = res.table.drop(columns=["problems"], errors="ignore").head(10)
    typer.echo(
        f"{len(res.table)} configurations{pooled}; effect = mean |delta|, score: lower = "
        "more stable (0-3.5); recommended first:"
    )
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    typer.echo("")
    typer.echo(res.verdict)
    if res.best is not None:
        typer.echo(
            f"Check that the run ends better first: adaptive trial --candidate {stale} --seeds 3"
        )
        typer.echo(f"Switch it on live with: adaptive train --config {stale}")
    for f in files:
        typer.echo(f"wrote {f}")


@app.command()
def trial(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="With --runs: finished run folders (or traces) to compare."),
    ] = None,
    candidate: Annotated[
        list[str] | None,
        typer.Option(
            "--candidate",
            "-c",
            help="A setting to try against the baseline: for the reference trainer a config "
            "file (recommended.toml) or overrides separated by ';'; for --command the string "
            "put in {overrides}. Optionally named 'NAME: ...'. Repeatable.",
        ),
    ] = None,
    runs: Annotated[
        bool,
        typer.Option(
            "--runs",
            help="Compare finished runs (the PATHS) instead of training: grouped into arms by "
            "their recorded configuration, paired by seed.",
        ),
    ] = False,
    command: Annotated[
        str | None,
        typer.Option(
            help="Your trainer: a shell command with {seed}, {run_dir} and {overrides} that "
            "records {run_dir}/trace.parquet (TraceRecorder or the Lightning callback).",
        ),
    ] = None,
    baseline_args: Annotated[
        str, typer.Option(help="With --command: the baseline's {overrides} (default empty).")
    ] = "",
    metric: Annotated[
        str | None,
        typer.Option(
            help="Primary metric, split/name (metric/<name> of that split's evaluations); "
            "default: adaptive.trial.DEFAULT_METRIC (the report names it)."
        ),
    ] = None,
    reduce: Annotated[
        str | None,
        typer.Option(
            help="How a run's evaluations reduce: final, or lastK (mean of the last K); "
            "default: adaptive.trial.DEFAULT_REDUCE."
        ),
    ] = None,
    higher_is_better: Annotated[
        bool, typer.Option(help="The primary metric is accuracy-like.")
    ] = False,
    secondary: Annotated[
        list[str] | None,
        typer.Option(
            help="Secondary metric split/name (append :higher if higher is better); "
            "Holm-corrected. Repeatable. Default: the reference trainer's other metrics.",
        ),
    ] = None,
    placebo: Annotated[
        bool, typer.Option(help="Add a placebo arm (reference trainer: train.lr × (1 + 1e-5)).")
    ] = False,
    placebo_override: Annotated[
        str | None, typer.Option(help="The placebo's overrides (needed with --command).")
    ] = None,
    seeds: Annotated[
        int, typer.Option(help="Seeds per arm (paired across arms); with --target-mde the pilot.")
    ] = 3,
    first_seed: Annotated[int, typer.Option(help="The first seed.")] = 0,
    target_mde: Annotated[
        str | None,
        typer.Option(help="Size the trial from a pilot for this MDE, e.g. 5% (needs --max-seeds)."),
    ] = None,
    max_seeds: Annotated[
        int | None, typer.Option(help="With --target-mde: the most seeds to run.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Base training config (TOML) of every arm.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a training config key of every arm."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per run.")] = None,
    quick: Annotated[
        bool, typer.Option(help="A smaller task and 8 epochs: a first look (docs/TRIAL.md).")
    ] = False,
    engine: Annotated[
        str, typer.Option(help="Where runs execute: pool (this machine) or ray.")
    ] = "pool",
    jobs: Annotated[
        int,
        typer.Option(
            help="Runs at a time (pool: processes, each with run.threads threads; local ray: "
            "CPUs = jobs × cpus-per-run)."
        ),
    ] = 1,
    cpus_per_run: Annotated[float, typer.Option(help="--engine ray: CPUs per run.")] = 1.0,
    gpus_per_run: Annotated[float, typer.Option(help="--engine ray: GPUs per run.")] = 0.0,
    address: Annotated[
        str | None,
        typer.Option(help="--engine ray: an existing cluster (HOST:PORT, ray://HOST:PORT, auto)."),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="With --runs: the arm to compare against (default off).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: trial-output).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Does a setting make the run end better? Train the baseline and each candidate on the
    same seeds, pair them by seed, and say what the trial can and cannot see.

    Reports per candidate the primary metric (declared before training), n, the paired
    difference with its 95 % interval (paired t, checked by an exact sign-flip test), the
    minimum detectable effect (MDE, 80 % power) and a verdict: better, worse, or no clear
    difference with the MDE beside it. Trains the reference task, or your trainer with
    --command; on this machine, or on Ray with --engine ray. Finished runs are reused when
    the same command runs again. Writes trial.md, trial.csv, runs.csv and trial.png
    (paired differences per seed). See docs/TRIAL.md.

    Examples:

        adaptive trial --quick --seeds 4 --placebo -c "adaptive.loss='dwa'"

        adaptive trial --command './train.sh {seed} {run_dir} {overrides}' -c '--lr 0.01'

        adaptive trial --runs runs/base runs/live
    """
    from adaptive.errors import InputError
    from adaptive.trial import (
        DEFAULT_METRIC,
        DEFAULT_REDUCE,
        CommandTarget,
        LocalEngine,
        RayEngine,
        TrialError,
        compare_runs,
        run_trial,
    )
    from adaptive.trial._report import parse_fraction

    dest = out if out is not None else Path("trial-output")
    echo = (lambda _m: None) if quiet else (lambda m: typer.echo(m, err=True))
    metric = metric or DEFAULT_METRIC
    reduce = reduce or DEFAULT_REDUCE
    try:
        if runs or paths:
            if not runs:
                fail("PATHS are finished runs to compare: add --runs")
            if candidate or command:
                fail("give either --candidate (train) or --runs (compare finished runs)")
            if not paths:
                fail("--runs needs the run folders to compare, e.g. --runs runs/base runs/live")
            res = compare_runs(
                paths,
                baseline=baseline,
                out=dest,
                metric=metric,
                reduce=reduce,
                higher_is_better=higher_is_better,
                secondary=secondary,
            )
        else:
            if not candidate and not placebo:
                fail("give at least one --candidate, e.g. --candidate \"adaptive.loss='dwa'\"")
            if engine not in ("pool", "ray"):
                fail(f"--engine must be pool or ray, got {engine!r}")
            if engine == "pool" and (address or cpus_per_run != 1.0 or gpus_per_run):
                fail("--address, --cpus-per-run and --gpus-per-run go with --engine ray")
            target = None
            if command is not None:
                if config or set_ or quick or epochs is not None:
                    fail("--config, --set, --quick and --epochs are for the reference trainer")
                target = CommandTarget(command, baseline_args)
            runner: LocalEngine | RayEngine = LocalEngine(jobs)
            if engine == "ray":
                local_cpus = max(1, round(jobs * cpus_per_run)) if jobs > 1 else None
                runner = RayEngine(address, cpus_per_run, gpus_per_run, local_cpus)
            res = run_trial(
                dest,
                candidate or [],
                target=target,
                seeds=seeds,
                first_seed=first_seed,
                config=config,
                sets=set_ or [],
                epochs=epochs,
                quick=quick,
                metric=metric,
                reduce=reduce,
                higher_is_better=higher_is_better,
                secondary=secondary,
                placebo=placebo,
                placebo_override=placebo_override,
                target_mde=parse_fraction(target_mde) if target_mde is not None else None,
                max_seeds=max_seeds,
                engine=runner,
                jobs=jobs,
                progress=echo,
            )
    except (TrialError, InputError, OSError) as exc:
        fail(str(exc).strip("'\"").splitlines()[0])
    except KeyboardInterrupt:
        fail("interrupted: finished runs are kept; run the same command again to resume", 130)
    typer.echo(res.summary() or "nothing to compare")
    for note in res.notes:
        typer.echo(f"note: {note}")
    if res.design.get("sequential"):
        typer.echo(f"design: {res.design['sequential']}")
    typer.echo(
        "Paired by seed; 95 % CI of the mean difference by paired t, checked by an exact "
        "sign-flip test; MDE at 80 % power. Full table: trial.md."
    )
    for name in ("trial.md", "trial.csv", "runs.csv", "trial.png"):
        typer.echo(f"wrote {dest / name}")


@app.command()
def demo(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (default: demo-output/<time>)."),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="A reduced size: seconds instead of a minute.")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a training config key (repeatable)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """The main job end to end on built-in data: record, replay, compare, sweep, recommend.

    Trains the reference motion model with DWA and the scheduler in dry-run, replays dwa,
    uncertainty and scheduler over its trace, sweeps DWA and uncertainty weighting, and
    writes the comparison figure, the stability table, a recommendation and, when a
    configuration is worth switching on, a recommended config into one folder.

    Example:

        adaptive demo --out demo-output/first
    """
    from adaptive.train.config import ConfigError
    from adaptive.train.trainer import TrainingError
    from replay._demo import run_demo

    try:
        res = run_demo(
            out,
            quick=quick,
            overrides=set_ or [],
            quiet=quiet,
            echo=typer.echo,
            train_progress=_TrainBar,
        )
    except (ConfigError, TrainingError) as exc:
        fail(str(exc))
    typer.echo("")
    typer.echo(res.text)
    typer.echo("")
    typer.echo(f"figure              {res.figure}")
    typer.echo(f"stability table     {res.table}")
    typer.echo(
        f"recommended config  {res.recommended_config or 'none (nothing worth switching on)'}"
    )
    typer.echo(f"everything is in    {res.folder}")


# ---------------------------------------------------------------------------- import
import_app = typer.Typer(
    help="Import existing training logs (TensorBoard, MLflow, CSV) as traces.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(import_app, name="import")

_Comp = Annotated[
    list[str] | None,
    typer.Option("--component", "-c", help="Loss component NAME=TAG (or TAG); repeatable."),
]
_Comps = Annotated[
    list[str] | None,
    typer.Option("--components", help="Tag pattern, e.g. 'train/loss_*' (* names it)."),
]
_Metric = Annotated[
    list[str] | None,
    typer.Option("--metric", "-m", help="Evaluation metric NAME=TAG (or TAG); repeatable."),
]
_Split = Annotated[str, typer.Option(help="Split of the metrics' epoch rows.")]
_Run = Annotated[str | None, typer.Option(help="Which run, where the source holds several.")]
_Spe = Annotated[
    int | None,
    typer.Option(help="Epoch = step // N, instead of the logged 'epoch' scalar.", min=1),
]
_EpochTag = Annotated[str, typer.Option(help="Scalar that holds the epoch.")]
_RunId = Annotated[str | None, typer.Option(help="Run id in the trace (default: run name).")]
_Out = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Trace to write (default: runs/<run>/trace.parquet)."),
]
_Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


class _PhaseProgress:
    """One progress bar per import phase (`read` event bytes, `write` trace rows)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.phase, self.bar = quiet, "", None

    def __call__(self, phase: str, n: int, total: int) -> None:
        if self.quiet:
            return
        if phase != self.phase:
            self.close()
            unit = "bytes" if phase == "read" else "rows"
            self.bar, self.phase = _Progress(total, f"{phase}", False, unit=unit), phase
        self.bar(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _run_import(
    importer: Callable[..., object], source: object, out: Path | None, **kw: object
) -> None:
    """Map the shared options, run `importer`, print its report; errors are one line."""
    import tempfile

    from adaptive.importers import TraceImportError, parse_mapping

    quiet = bool(kw.pop("quiet"))
    try:
        kw["components"] = parse_mapping(kw.pop("component") or [], "--component")
        kw["metrics"] = parse_mapping(kw.pop("metric") or [], "--metric")
    except TraceImportError as exc:
        fail(str(exc))
    kw["patterns"] = kw.pop("components_pattern") or []
    bar = _PhaseProgress(quiet)
    try:
        if out is None:  # the run's name is known only once read: stage, then place
            Path("runs").mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(dir="runs", prefix=".import-") as tmp:
                report = importer(source, Path(tmp) / "trace.parquet", progress=bar, **kw)
                dest = Path("runs") / report.run_id / "trace.parquet"
                if dest.exists():
                    fail(f"{dest}: already exists; choose another --out or remove it")
                dest.parent.mkdir(parents=True, exist_ok=True)
                report.trace.replace(dest)
                report.trace = dest
        else:
            report = importer(source, out, progress=bar, **kw)
    except (TraceImportError, FileExistsError) as exc:
        bar.close()
        fail(str(exc))
    bar.close()
    typer.echo("\n".join(report.lines()))


@import_app.command("tensorboard")
def import_tensorboard_cmd(
    logdir: Annotated[Path, typer.Argument(help="TensorBoard log directory (or event file).")],
    component: _Comp = None,
    components_pattern: _Comps = None,
    metric: _Metric = None,
    split: _Split = "val",
    run: _Run = None,
    steps_per_epoch: _Spe = None,
    epoch_tag: _EpochTag = "epoch",
    run_id: _RunId = None,
    out: _Out = None,
    quiet: _Quiet = False,
) -> None:
    """Import a TensorBoard run (every scalar, no downsampling) as a trace.

    Example:

        adaptive import tensorboard lightning_logs/version_0 --components 'train/loss_*' -m val_acc
    """
    from adaptive.importers import import_tensorboard

    _run_import(
        import_tensorboard,
        logdir,
        out,
        component=component,
        components_pattern=components_pattern,
        metric=metric,
        split=split,
        run=run,
        steps_per_epoch=steps_per_epoch,
        epoch_tag=epoch_tag,
        run_id=run_id,
        quiet=quiet,
    )


@import_app.command("mlflow")
def import_mlflow_cmd(
    store: Annotated[
        str, typer.Argument(help="sqlite:///mlflow.db, the .db file, or an mlruns folder.")
    ] = "mlruns",
    component: _Comp = None,
    components_pattern: _Comps = None,
    metric: _Metric = None,
    split: _Split = "val",
    run: _Run = None,
    steps_per_epoch: _Spe = None,
    epoch_tag: _EpochTag = "epoch",
    run_id: _RunId = None,
    out: _Out = None,
    quiet: _Quiet = False,
) -> None:
    """Import an MLflow run (SQLite tracking store or file store) as a trace.

    Example:

        adaptive import mlflow sqlite:///mlflow.db --run bright-owl-42 --components 'loss_*'
    """
    from adaptive.importers import import_mlflow

    _run_import(
        import_mlflow,
        store,
        out,
        component=component,
        components_pattern=components_pattern,
        metric=metric,
        split=split,
        run=run,
        steps_per_epoch=steps_per_epoch,
        epoch_tag=epoch_tag,
        run_id=run_id,
        quiet=quiet,
    )


@import_app.command("csv")
def import_csv_cmd(
    file: Annotated[Path, typer.Argument(help="CSV: wide (step + a column per tag) or long.")],
    component: _Comp = None,
    components_pattern: _Comps = None,
    metric: _Metric = None,
    split: _Split = "val",
    run: _Run = None,
    step_column: Annotated[
        str | None, typer.Option(help="Step column (default: step, _step, global_step, ...).")
    ] = None,
    steps_per_epoch: _Spe = None,
    epoch_tag: _EpochTag = "epoch",
    run_id: _RunId = None,
    out: _Out = None,
    quiet: _Quiet = False,
) -> None:
    """Import a CSV log (a W&B or MLflow history export, or any wide or long CSV) as a trace.

    Example:

        adaptive import csv wandb_export.csv -c fk=train/loss_fk -c rot=train/loss_rot
    """
    from adaptive.importers import import_csv

    _run_import(
        import_csv,
        file,
        out,
        component=component,
        components_pattern=components_pattern,
        metric=metric,
        split=split,
        run=run,
        steps_per_epoch=steps_per_epoch,
        epoch_tag=epoch_tag,
        run_id=run_id,
        quiet=quiet,
        step_column=step_column,
    )


def _one_spelling(opts: list[str]) -> list[str]:
    """Drop `--a_b` where `--a-b` is there too: the underscore alias parses, help hides it."""
    shown = set(opts)
    return [o for o in opts if not ("_" in o and o.replace("_", "-") in shown)]


def _registered_methods() -> str:
    from adaptive.weighting import available_methods

    return ", ".join(available_methods())


def _tidy_help() -> None:
    """Help shows `PATH`, `N`, `X`, `TEXT` rather than typer's `{path}` / `<list[str]>`, one
    spelling per option, and the registered methods where a help text says METHODS.

    Recent typer renders types as `<list[str]>` and required arguments as `{path}`; this
    rewrites those labels (only where no metavar was given) and leaves older typer alone.
    Underscore aliases (`--adaptive_loss`) stay accepted but are left out of help. The
    method list is read from the registry when help is rendered, so importing the CLI
    (`adaptive --version`) does not load torch.
    """
    try:
        from typer import core
    except ImportError:  # pragma: no cover
        return
    for cls in (getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)):
        if cls is None or not hasattr(cls, "get_help_record"):
            continue
        record = cls.get_help_record

        def help_record(self, ctx, _record=record):  # type: ignore[no-untyped-def]
            opts, secondary = self.opts, self.secondary_opts
            self.opts, self.secondary_opts = _one_spelling(opts), _one_spelling(secondary)
            try:
                rv = _record(self, ctx)
            finally:
                self.opts, self.secondary_opts = opts, secondary
            if rv is not None and METHODS in rv[1]:
                rv = (rv[0], rv[1].replace(METHODS, _registered_methods()))
            return rv

        cls.get_help_record = help_record
    names = {"str": "TEXT", "path": "PATH", "int": "N", "float": "X", "bool": ""}

    def label(text: str | None) -> str | None:
        if not text or not (text.startswith("<") and text.endswith(">")):
            return text
        inner = text[1:-1]
        if inner.startswith("list[") and inner.endswith("]"):
            inner = inner[5:-1]
        return names.get(inner, inner.upper()) or None

    for cls in (getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)):
        if cls is None or not hasattr(cls, "display_type_rich"):
            continue
        original = cls.display_type_rich

        def display_type(self, ctx, _original=original, _cls=cls):  # type: ignore[no-untyped-def]
            if self.metavar is not None:
                return self.metavar
            if _cls.__name__ == "TyperArgument":
                return None  # the argument's name says it
            return label(_original(self, ctx))

        cls.display_type_rich = display_type
    arg = getattr(core, "TyperArgument", None)
    if arg is not None and hasattr(arg, "_usage_display_name"):

        def usage(self) -> str:  # type: ignore[no-untyped-def]
            name = self.display_name_raw.upper()
            return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")

        arg._usage_display_name = usage
    if arg is not None and hasattr(arg, "_rich_display_name"):
        listed = arg._rich_display_name

        def listed_upper(self) -> str:  # type: ignore[no-untyped-def]
            return listed(self).upper()

        arg._rich_display_name = listed_upper


_tidy_help()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="adaptive")


if __name__ == "__main__":
    sys.exit(main())
