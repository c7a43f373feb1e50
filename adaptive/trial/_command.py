"""The `adaptive trial` command behind its options: check how they combine, build the target
and the engine, then train a trial (`run_trial`) or compare finished runs (`compare_runs`).

The CLI only parses and prints; a bad combination of options is a `UsageError` here, so a
script that drives trials the way the command does gets the same one-line refusals.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from adaptive.errors import UsageError
from adaptive.trial._compare import compare_runs
from adaptive.trial._engines import LocalEngine, RayEngine
from adaptive.trial._report import DEFAULT_METRIC, DEFAULT_REDUCE, TrialResult, parse_fraction
from adaptive.trial._runner import run_trial
from adaptive.trial._targets import CommandTarget

__all__ = ["command_target", "make_engine", "run_trial_command"]


def make_engine(
    engine: str, jobs: int, cpus_per_run: float, gpus_per_run: float, address: str | None
) -> LocalEngine | RayEngine:
    """The engine `--engine`, `--jobs`, `--cpus-per-run`, `--gpus-per-run` and `--address`
    name (`adaptive trial` and `adaptive tune` alike), refusing a combination that mixes
    them."""
    if engine not in ("pool", "ray"):
        raise UsageError(f"--engine must be pool or ray, got {engine!r}")
    if engine == "pool" and (address or cpus_per_run != 1.0 or gpus_per_run):
        raise UsageError("--address, --cpus-per-run and --gpus-per-run go with --engine ray")
    if engine == "ray":
        local_cpus = max(1, round(jobs * cpus_per_run)) if jobs > 1 else None
        return RayEngine(address, cpus_per_run, gpus_per_run, local_cpus)
    return LocalEngine(jobs)


def command_target(
    command: str | None,
    baseline_args: str,
    config: object,
    sets: Sequence[str],
    quick: bool,
    epochs: int | None,
) -> CommandTarget | None:
    """`--command`'s target (None: the reference trainer), refusing the reference trainer's
    own options beside it."""
    if command is None:
        return None
    if config or sets or quick or epochs is not None:
        raise UsageError("--config, --set, --quick and --epochs are for the reference trainer")
    return CommandTarget(command, baseline_args)


def run_trial_command(
    out: str | os.PathLike[str],
    *,
    paths: Sequence[str | os.PathLike[str]] | None = None,
    runs: bool = False,
    candidates: Sequence[str] | None = None,
    command: str | None = None,
    baseline_args: str = "",
    metric: str | None = None,
    reduce: str | None = None,
    higher_is_better: bool = False,
    secondary: Sequence[str] | None = None,
    placebo: bool = False,
    placebo_override: str | None = None,
    seeds: int = 3,
    first_seed: int = 0,
    target_mde: str | None = None,
    max_seeds: int | None = None,
    config: str | os.PathLike[str] | None = None,
    sets: Sequence[str] | None = None,
    epochs: int | None = None,
    quick: bool = False,
    engine: str = "pool",
    jobs: int = 1,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    address: str | None = None,
    baseline: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrialResult:
    """Run `adaptive trial` with its options as keywords (`candidates` is --candidate,
    `sets` --set, `target_mde` the text given, e.g. `"5%"`; an option not given is None):
    compare the finished runs `paths` with `runs`, else train the baseline and the
    candidates into `out`.

    Example: `run_trial_command("trial-output", candidates=["adaptive.loss='dwa'"])`.
    """
    candidates, sets = candidates or (), sets or ()
    metric = metric or DEFAULT_METRIC
    reduce = reduce or DEFAULT_REDUCE
    if runs or paths:
        if not runs:
            raise UsageError("PATHS are finished runs to compare: add --runs")
        if candidates or command:
            raise UsageError("give either --candidate (train) or --runs (compare finished runs)")
        if not paths:
            raise UsageError(
                "--runs needs the run folders to compare, e.g. --runs runs/base runs/live"
            )
        return compare_runs(
            paths,
            baseline=baseline,
            out=out,
            metric=metric,
            reduce=reduce,
            higher_is_better=higher_is_better,
            secondary=secondary,
        )
    if not candidates and not placebo:
        example = (
            '"--lr 0.01" (the arguments your command takes in {overrides})'
            if command
            else "\"adaptive.loss='dwa'\" (config overrides separated by ';', or a config file)"
        )
        raise UsageError(f"give at least one --candidate, e.g. --candidate {example}")
    runner = make_engine(engine, jobs, cpus_per_run, gpus_per_run, address)
    target = command_target(command, baseline_args, config, sets, quick, epochs)
    return run_trial(
        Path(out),
        candidates,
        target=target,
        seeds=seeds,
        first_seed=first_seed,
        config=config,
        sets=sets,
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
        progress=progress,
    )
