"""The `adaptive` command line: parsing, printing and exit codes over the libraries.

The workflows live in `adaptive` and `replay`; this module turns options into calls and
results into lines. Bad input (`adaptive.errors.InputError`) is one line on stderr and exit
code 2; anything else is a bug: its traceback, then a line saying so. Heavy modules (torch,
matplotlib) load inside the commands that need them, so `--help` answers at once.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from adaptive import __version__
from adaptive.cli_support import (
    TrainBar,
    import_command,
    one_line,
    registered_placeholder,
    replay_clash,
    tidy_help,
    train_command_config,
)
from adaptive.errors import InputError

BUG_REPORT = (
    "this is a bug in adaptive {version}, not a problem with your input: please report it "
    "to the adaptive-replay maintainers with the command and the traceback above"
)


class CommandGroup(TyperGroup):
    """Runs a command: bad input (`InputError`) becomes `error: <one line>` on stderr and
    exit code 2; any other exception is a bug and keeps its traceback, followed by a line
    saying so (`BUG_REPORT`) and exit code 1. Click's own exits and usage errors pass."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors, exits
            raise
        except Exception:
            traceback.print_exc()
            typer.echo(f"error: {BUG_REPORT.format(version=__version__)}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="adaptive",
    cls=CommandGroup,
    help=(
        "Adaptive loss weighting and training-schedule control with offline replay.\n\n"
        "Record a training trace, replay controllers over it in dry-run, then switch them on."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Help texts name the registered loss weighting methods through this placeholder;
# `tidy_help` fills it from a static table, so help imports no registry (and no torch).
METHODS = registered_placeholder("weighting")


def _flag(name: str, help: str, **kw: Any) -> Any:
    """Option `--name`, also parsed as `--name_with_underscores` (help shows one spelling)."""
    return typer.Option(f"--{name}", f"--{name.replace('-', '_')}", help=help, **kw)


_Format = Annotated[str, typer.Option("--format", help="Figure format: png, svg or pdf.")]
_Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
_Traces = Annotated[Path, typer.Argument(help="A trace, a run folder or a folder of runs.")]
_Method = Annotated[
    str, typer.Option("--method", "-m", help=f"scheduler, or a loss weighting method: {METHODS}.")
]
_Param = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        help="A method hyperparameter, name=value, e.g. temperature=2 for dwa (method.name=value "
        "with several methods; repeatable; default: the run's own setting where it had the "
        "method on, else the method's default).",
    ),
]


def _out(default: str) -> Any:
    """Option `--out`/`-o`, an output folder, with its `default` named in the help."""
    return typer.Option("--out", "-o", help=f"Output folder (default: {default}).")


def _set(help: str) -> Any:
    """Option `--set`/`-s`: a training config override, section.key=value (repeatable)."""
    return typer.Option("--set", "-s", help=help)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit with `code` (2: bad input; most bad input
    is raised as an `InputError` and turned into this line by `CommandGroup`)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _check_namespace() -> None:
    """Fail in one line when another package named `replay` shadows the offline engine."""
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


def _err(message: str) -> None:
    """Print one line to stderr (warnings, progress lines)."""
    typer.echo(message, err=True)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Trace: a .parquet file or a directory of parts.")],
) -> None:
    """Summarise a trace: run, components, metrics, row counts, columns, per-epoch losses.

    Example:

        adaptive inspect runs/demo/trace.parquet
    """
    from replay._commands import inspect_lines

    typer.echo("\n".join(inspect_lines(path, _err)))


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
    from adaptive.trace import compact_trace

    dest = compact_trace(path, out, keep_directory=not single_file)
    typer.echo(f"compacted {path} -> {dest}")


@app.command("replay")
def replay_cmd(
    path: _Traces,
    method: _Method,
    param: _Param = None,
    adjustment_range: Annotated[
        float | None,
        typer.Option(help="Bound r on |delta| (0 reproduces the base values; default 0.3)."),
    ] = None,
    out: Annotated[Path | None, _out("RUN/replays")] = None,
    fmt: _Format = "png",
    quiet: _Quiet = False,
    jobs: Annotated[int | None, _opt("Replay PATH's runs as a fleet, N at a time.")] = None,
    engine: Annotated[str, _opt("A fleet's engine: pool or ray (docs/INTEGRATION.md).")] = "pool",
) -> None:
    """Replay a controller over a trace in dry-run: the weights / schedule it would have produced.

    Writes replay-<method>.parquet (per-step scales, deltas, proposals) and .png into the
    run's replays/ folder (never taken for trace parts) and prints a short table; several
    runs also get one table across them (replay-<method>-fleet.parquet and .csv). With
    --param values the file names carry them (replay-dwa-temperature=1.png), so replays sit
    side by side. A method the run had on replays its recorded settings; --param overrides.

    Example:

        adaptive replay runs/demo/trace.parquet --method dwa --param temperature=2
    """
    from replay._commands import replay_command

    args = (path, method, param, adjustment_range, out, fmt, quiet, _err, jobs, engine)
    typer.echo(replay_command(*args))


@app.command()
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")] = None,
    set_: Annotated[
        list[str] | None, _set("Override a config key: section.key=value (repeatable).")
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
        str | None, _flag("adaptive-loss", f"none or a loss weighting method: {METHODS}.")
    ] = None,
    adaptive_dry_run: Annotated[
        bool | None,
        _flag("adaptive-dry-run", "Controllers record proposals; base values are applied."),
    ] = None,
    adaptive_loss_range: Annotated[
        float | None,
        _flag("adaptive-loss-range", "Loss weighting: largest relative weight change (>= 0)."),
    ] = None,
    adaptive_scheduler_range: Annotated[
        float | None, _flag("adaptive-scheduler-range", "Scheduler: bound on |delta|, in [0, 1).")
    ] = None,
    adjustment_range: Annotated[
        float | None, _flag("adjustment-range", "Deprecated: sets both ranges.", hidden=True)
    ] = None,
    adaptive_log_every: Annotated[
        int | None, _flag("adaptive-log-every", "Steps between controller log lines.")
    ] = None,
    adaptive_scheduler: Annotated[
        bool | None, _flag("adaptive-scheduler", "Turn on the adaptive TF / free-run scheduler.")
    ] = None,
    adaptive_adjustment_rate: Annotated[
        float | None,
        _flag("adaptive-adjustment-rate", "Scheduler: most the delta moves per update."),
    ] = None,
    adaptive_update_interval: Annotated[
        int | None, _flag("adaptive-update-interval", "Scheduler: batches between updates.")
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
        _flag(
            "adaptive-param",
            "A hyperparameter of the loss weighting method or the scheduler, name=value, "
            "e.g. temperature=1 with dwa, law=gtf with --adaptive-scheduler (repeatable; "
            "with both on, write method.name=value).",
        ),
    ] = None,
    quiet: _Quiet = False,
) -> None:
    """Train the reference motion model and record its trace (runs/<name>/trace.parquet).

    Built-in procedural locomotion data by default; --data DIR trains on your .bvh files.
    Adaptive controllers are off unless asked for.

    Example:

        adaptive train --adaptive-loss dwa --adaptive-param temperature=1 --adaptive-dry-run
    """
    from adaptive.train.run import run_training
    from replay import adaptive_param_overrides

    # the options by name, as the config resolves them
    cfg = train_command_config(ctx.params, adaptive_param_overrides)
    summary = run_training(
        cfg, resume=resume is not None, quiet=quiet, progress=TrainBar, echo=typer.echo
    )
    if summary.interrupted:
        raise typer.Exit(130)


@app.command()
def compare(
    path: _Traces,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            "-m",
            help=f"scheduler or a loss weighting method: {METHODS} (repeatable; default "
            "dwa, uncertainty and scheduler); scheduler:LAW replays the scheduler under that "
            "law.",
        ),
    ] = None,
    laws: Annotated[
        bool,
        typer.Option(
            "--laws", help="Add the scheduler once per registered law (scheduler:LAW each)."
        ),
    ] = False,
    param: _Param = None,
    out: Annotated[Path | None, _out("<run>/compare")] = None,
    fmt: _Format = "png",
    quiet: _Quiet = False,
) -> None:
    """Replay several controllers over a trace: one aligned figure, one stability table.

    Prints one verdict line per controller (the score against its threshold, the one or
    two things that drove it, what to do next: for one that looks ready, the trial that
    checks whether the run ends better); the full table goes to stability.csv. With a
    folder of runs, one figure per run and a table pooled over runs (mean).

    Example:

        adaptive compare runs/base/trace.parquet -m dwa -m uncertainty -m scheduler

        adaptive compare runs/base/trace.parquet --laws
    """
    from replay._commands import compare_command

    typer.echo("\n".join(compare_command(path, method, laws, param, out, fmt, quiet, _err)))


@app.command()
def sweep(
    path: _Traces,
    method: _Method,
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid", "-g", help="name=v1,v2,... (repeatable; the grid is their product)."
        ),
    ],
    param: _Param = None,
    out: Annotated[Path | None, _out("<run>/sweep-<method>")] = None,
    fmt: _Format = "png",
    quiet: _Quiet = False,
) -> None:
    """Replay every configuration of a grid, rank by stability score, recommend one.

    Writes sweep.csv (ranked), a heat-map for two-parameter grids, and recommended.toml,
    which `adaptive trial --candidate` and `adaptive train --config` accept. Prints the
    best ten configurations and the trial that checks the pick.

    Example:

        adaptive sweep runs/base/trace.parquet -m dwa -g temperature=1,2 -g adjustment_range=0.1,0.3
    """
    from replay._commands import sweep_command

    typer.echo(sweep_command(path, method, grid, param, out, fmt, quiet, _err))


@app.command()
def trial(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="With --runs: finished run folders (or traces) to compare."),
    ] = None,
    candidates: Annotated[
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
            "Bonferroni-corrected. Repeatable. Default: the reference trainer's other metrics.",
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
    sets: Annotated[list[str] | None, _set("Override a training config key of every arm.")] = None,
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
    out: Annotated[Path | None, _out("trial-output")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Does a setting make the run end better? Train the baseline and each candidate on the
    same seeds, pair them by seed, and say what the trial can and cannot see.

    Reports per candidate the primary metric (declared before training), n, the paired
    difference with its 95 % interval (paired t, checked by a sign-flip test), the
    minimum detectable effect (MDE, 80 % power: a power statement, not a bound) and a
    verdict: better, worse, or no clear difference with its interval in %. Trains the
    reference task, or your trainer with --command; on this machine, or on Ray with --engine
    ray. Finished runs are reused when
    the same command runs again. Writes trial.md, trial.csv, runs.csv and trial.png
    (paired differences per seed). See docs/TRIAL.md.

    Examples:

        adaptive trial --quick --seeds 4 --placebo -c "adaptive.loss='dwa'"

        adaptive trial --command './train.sh {seed} {run_dir} {overrides}' -c '--lr 0.01'

        adaptive trial --runs runs/base runs/live
    """
    from adaptive.trial import run_trial_command

    echo = (lambda _m: None) if quiet else _err
    options = {k: v for k, v in ctx.params.items() if k not in ("out", "quiet")}
    try:  # the options are run_trial_command's keywords
        res = run_trial_command(out or Path("trial-output"), progress=echo, **options)
    except OSError as exc:  # bad input the library raises as InputError reaches CommandGroup
        fail(one_line(exc))
    except KeyboardInterrupt:
        fail("interrupted: finished runs are kept; run the same command again to resume", 130)
    typer.echo("\n".join(res.lines()))


def _opt(help: str, *names: str) -> Any:
    """An option with its help (short spellings in `names`)."""
    return typer.Option(*names, help=help)


@app.command()
def tune(
    ctx: typer.Context,
    space: Annotated[
        list[str] | None,
        _opt(
            "NAME=SPEC: float(lo,hi), log(lo,hi), int(lo,hi) "
            "or choice(a,b,...); NAME a config key (schedule.STAGE.KEY[.start|.end] "
            "for the stages) or, with --command, an argument. Repeatable."
        ),
    ] = None,
    space_file: Annotated[Path | None, _opt("A TOML file with a [tune.space] table.")] = None,
    trials: Annotated[int, _opt("Configurations in all (a resumed search counts its own).")] = 20,
    seeds: Annotated[int, _opt("Development seeds every configuration runs on.")] = 3,
    first_seed: Annotated[int, _opt("The first development seed.")] = 0,
    confirm_seeds: Annotated[int, _opt("Held-out seeds confirming the frozen best (0: none).")] = 0,
    confirm_first_seed: Annotated[int, _opt("The first held-out seed.")] = 1000,
    metric: Annotated[str | None, _opt("Objective, split/name (default: the trial's).")] = None,
    reduce: Annotated[str | None, _opt("final or lastK (default: the trial's).")] = None,
    higher_is_better: Annotated[bool, _opt("The objective is accuracy-like.")] = False,
    prune: Annotated[bool, _opt("Stop configurations worse than 3 in 4 others early.")] = True,
    prefilter: Annotated[bool, _opt("Skip controllers replay shows inert or pinned.")] = True,
    audit_skipped: Annotated[int, _opt("Train this many skipped ones anyway, to check.")] = 0,
    audit_pruned: Annotated[int, _opt("Train this many pruned ones to the end, to check.")] = 0,
    command: Annotated[str | None, _opt("Your trainer, as for adaptive trial --command.")] = None,
    baseline_args: Annotated[str, _opt("With --command: the baseline's {overrides}.")] = "",
    override_format: Annotated[str, _opt("With --command: one value's form.")] = "--{name} {value}",
    storage: Annotated[str | None, _opt("An Optuna storage URL shared by workers.")] = None,
    study_name: Annotated[str, _opt("The study's name in the storage.")] = "tune",
    sampler_seed: Annotated[int, _opt("Seed of the TPE sampler.")] = 0,
    config: Annotated[Path | None, _opt("Base training config (TOML).", "--config")] = None,
    sets: Annotated[list[str] | None, _set("Override a training config key.")] = None,
    epochs: Annotated[int | None, _opt("Epochs per run.")] = None,
    quick: Annotated[bool, _opt("The trial's smaller task and 8 epochs.")] = False,
    engine: Annotated[str, _opt("Where runs execute: pool or ray.")] = "pool",
    jobs: Annotated[int, _opt("Runs at a time (the seeds of a configuration).")] = 1,
    cpus_per_run: Annotated[float, _opt("--engine ray: CPUs per run.")] = 1.0,
    gpus_per_run: Annotated[float, _opt("--engine ray: GPUs per run.")] = 0.0,
    address: Annotated[str | None, _opt("--engine ray: an existing cluster.")] = None,
    out: Annotated[Path | None, _out("tune-output")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Find the setting: an Optuna search over config keys (or your trainer's arguments),
    each configuration on the same development seeds and paired against the current one,
    then the best frozen and confirmed once on held-out seeds (docs/TUNE.md).

    The study lives in --out: the same command resumes and reuses every finished run.

    Examples:

        adaptive tune --quick --space "train.lr=log(0.0005,0.005)" --space
        "adaptive.loss=choice(none,dwa)" --trials 6 --seeds 2 --confirm-seeds 3 --out T

        adaptive tune --command 'python train.py --seed {seed} --out {run_dir} {overrides}'
        --space "lr=log(1e-4,1e-1)" --metric val/loss --out T2
    """
    from adaptive.tune import run_tune_command

    echo = (lambda _m: None) if quiet else _err
    options = {k: v for k, v in ctx.params.items() if k not in ("out", "quiet", "prefilter")}
    pre = None
    if prefilter:
        from replay import prefilter as pre
    try:
        res = run_tune_command(out or Path("tune-output"), prefilter=pre, progress=echo, **options)
    except OSError as exc:
        fail(one_line(exc))
    except KeyboardInterrupt:
        fail("interrupted: finished runs are kept; run the same command again to resume", 130)
    typer.echo("\n".join(res.lines()))


@app.command()
def demo(
    out: Annotated[Path | None, _out("demo-output/<time>")] = None,
    quick: Annotated[
        bool, typer.Option(help="A reduced size: seconds instead of a minute.")
    ] = False,
    set_: Annotated[list[str] | None, _set("Override a training config key (repeatable).")] = None,
    quiet: _Quiet = False,
) -> None:
    """The main job end to end on built-in data: record, replay, compare, sweep, recommend.

    Trains the reference motion model with DWA and the scheduler in dry-run, replays dwa,
    uncertainty and scheduler over its trace, sweeps DWA and uncertainty weighting, and
    writes the comparison figure, the stability table, a recommendation and, when a
    configuration is worth switching on, a recommended config into one folder.

    Example:

        adaptive demo --out demo-output/first
    """
    from replay import run_demo

    res = run_demo(
        out,
        quick=quick,
        overrides=set_ or [],
        quiet=quiet,
        echo=typer.echo,
        train_progress=TrainBar,
    )
    typer.echo("\n".join(res.report()))


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="The log's kind: tensorboard, mlflow or csv.")],
    source: Annotated[
        str | None,
        typer.Argument(
            help="tensorboard: a log directory or event file; mlflow: sqlite:///mlflow.db, "
            "the .db file or an mlruns folder (default mlruns); csv: a wide or long CSV."
        ),
    ] = None,
    component: Annotated[
        list[str] | None,
        typer.Option("--component", "-c", help="Loss component NAME=TAG (or TAG); repeatable."),
    ] = None,
    components: Annotated[
        list[str] | None,
        typer.Option("--components", help="Tag pattern, e.g. 'train/loss_*' (* names it)."),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="Evaluation metric NAME=TAG (or TAG); repeatable."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split of the metrics' epoch rows.")] = "val",
    run: Annotated[
        str | None, typer.Option(help="Which run, where the source has several.")
    ] = None,
    step_column: Annotated[
        str | None, typer.Option(help="csv: the step column (default: step, _step, ...).")
    ] = None,
    steps_per_epoch: Annotated[
        int | None, typer.Option(help="Epoch = step // N, not the 'epoch' scalar.", min=1)
    ] = None,
    epoch_tag: Annotated[str, typer.Option(help="Scalar that holds the epoch.")] = "epoch",
    run_id: Annotated[
        str | None, typer.Option(help="Run id in the trace (default: run name).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Trace to write (default: runs/<run>/trace.parquet)."),
    ] = None,
    quiet: _Quiet = False,
) -> None:
    """Import a TensorBoard run, an MLflow run or a CSV log (W&B or MLflow history export,
    any wide or long CSV) as a trace: every scalar, no downsampling.

    Examples:

        adaptive import tensorboard lightning_logs/version_0 --components 'train/loss_*' -m val_acc

        adaptive import mlflow sqlite:///mlflow.db --run bright-owl-42 --components 'loss_*'

        adaptive import csv wandb_export.csv -c fk=train/loss_fk -c rot=train/loss_rot
    """
    report = import_command(**ctx.params)  # the options are import_command's keywords
    typer.echo("\n".join(report.lines()))


tidy_help(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="adaptive")


if __name__ == "__main__":
    sys.exit(main())
