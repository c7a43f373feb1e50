"""The `adaptive tune` command behind its options: read the space, build the target and the
engine as `adaptive trial` does, run the search (`run_tune`). The CLI only parses, wires the
replay pre-filter in and prints."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adaptive.trial._command import command_target, make_engine
from adaptive.trial._engines import RayEngine
from adaptive.trial._report import DEFAULT_METRIC, DEFAULT_REDUCE
from adaptive.tune._space import TuneError, parse_space, read_space_file
from adaptive.tune._study import Prefilter, TuneResult, run_tune

__all__ = ["run_tune_command"]


def run_tune_command(
    out: str | os.PathLike[str],
    *,
    space: Sequence[str] | None = None,
    space_file: str | os.PathLike[str] | None = None,
    command: str | None = None,
    baseline_args: str = "",
    override_format: str = "--{name} {value}",
    metric: str | None = None,
    reduce: str | None = None,
    higher_is_better: bool = False,
    trials: int = 20,
    seeds: int = 3,
    first_seed: int = 0,
    confirm_seeds: int = 0,
    confirm_first_seed: int = 1000,
    prune: bool = True,
    prefilter: Prefilter | None = None,
    audit_skipped: int = 0,
    audit_pruned: int = 0,
    storage: str | None = None,
    study_name: str = "tune",
    sampler_seed: int = 0,
    config: str | os.PathLike[str] | None = None,
    sets: Sequence[str] | None = None,
    epochs: int | None = None,
    quick: bool = False,
    engine: str = "pool",
    jobs: int = 1,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    address: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> TuneResult:
    """Run `adaptive tune` with its options as keywords (`space` is --space, `sets` --set;
    an option not given is None). Example:
    `run_tune_command("T", space=["train.lr=log(0.0005,0.005)"], quick=True, trials=6)`."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise TuneError("adaptive tune needs Optuna: pip install 'adaptive-replay[tune]'") from None
    table = read_space_file(space_file) if space_file is not None else None
    params = parse_space(space or (), table)
    runner = make_engine(engine, jobs, cpus_per_run, gpus_per_run, address)
    target = command_target(command, baseline_args, config, sets or (), quick, epochs)
    kw: dict[str, Any] = {}
    if target is None:
        kw = {"config": config, "sets": tuple(sets or ()), "quick": quick, "epochs": epochs}
    ray_owned = False
    if isinstance(runner, RayEngine):  # one Ray session for the whole search, not one a config
        ray, ray_owned = runner._init()
    try:
        return run_tune(
            Path(out),
            params,
            target=target,
            trials=trials,
            seeds=seeds,
            first_seed=first_seed,
            metric=metric or DEFAULT_METRIC,
            reduce=reduce or DEFAULT_REDUCE,
            higher_is_better=higher_is_better,
            prune=prune,
            prefilter=prefilter,
            audit_skipped=audit_skipped,
            audit_pruned=audit_pruned,
            storage=storage,
            study_name=study_name,
            sampler_seed=sampler_seed,
            confirm_seeds=confirm_seeds,
            confirm_first_seed=confirm_first_seed,
            engine=runner,
            jobs=jobs,
            override_format=override_format,
            progress=progress,
            **kw,
        )
    finally:
        if ray_owned:
            ray.shutdown()
