"""The replay commands' work behind their options (`adaptive inspect`, `replay`, `compare`,
`sweep`), so `cli.py` only declares options and prints: read the runs (refusing what holds
nothing to replay, or a trial folder, in one line), run the workflow, return the text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adaptive.cli_support import StepProgress, read_warning_lines

__all__ = [
    "compare_command",
    "default_out",
    "inspect_lines",
    "load_runs",
    "replay_command",
    "sweep_command",
]


def load_runs(path: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    """The runs under `path` for replay, compare and sweep (`replay.load_runs`, its skipped
    parts as warning lines to `echo`). Where no run has step rows (a trace with no rows, or
    evaluations only) it is refused in one line (`TraceError`): there is nothing to replay.
    A run without step rows beside others is left out with a warning line; a trial folder
    is refused with the commands that read its runs."""
    from adaptive.trace import TraceError
    from adaptive.trace._folders import trial_folder_message
    from replay._runs import load_runs as load

    trial = trial_folder_message(path)
    if trial is not None:  # its arms' runs would read as one folder of runs
        raise TraceError(trial)
    runs = read_warning_lines(load, path, echo)
    empty = [rid for rid, tr in runs.items() if len(tr.steps) == 0]
    if not runs or len(empty) == len(runs):
        rows = "no rows" if not runs else "evaluation rows only"
        raise TraceError(f"{path}: no step rows to replay (the trace holds {rows})")
    for rid in empty:
        echo(f"warning: {path}: run {rid!r} has no step rows (evaluations only): left out")
    return {rid: tr for rid, tr in runs.items() if rid not in empty}


def default_out(path: Path, name: str) -> Path:
    """Where outputs about PATH go by default: beside a trace, inside a folder of runs."""
    return (path.parent if path.name.endswith(".parquet") else path) / name


def inspect_lines(path: Path, echo: Callable[[str], None]) -> list[str]:
    """`adaptive inspect PATH`: the trace's summary (`replay.trace_summary`), with its part
    count; skipped parts as warning lines to `echo`."""
    from adaptive.trace import part_files, read_trace
    from replay._summary import trace_summary

    trace = read_warning_lines(read_trace, path, echo)
    dirs = [d for d in (path, path / "trace.parquet") if d.is_dir()]
    parts = max((len(part_files(d)) for d in dirs), default=0)
    return trace_summary(trace, parts, path)


def replay_command(
    path: Path,
    method: str,
    param: Sequence[str] | None,
    adjustment_range: float | None,
    out: Path | None,
    fmt: str,
    quiet: bool,
    echo: Callable[[str], None],
    jobs: int | None = None,
    engine: str = "pool",
) -> str:
    """`adaptive replay`: replay `method` over the runs under `path`; the text it prints.
    With several runs the summary table across them is written too (`replay_runs`, the
    runs named from `path` as the fleet names them). With `jobs` (or `engine` ray) the
    runs are a fleet (`replay._fleet.replay_fleet`): each replayed on its own, `jobs` at a
    time, into the same summary table, with no per-run figure; a trial folder is then read
    as its `ARM/seedK` runs."""
    from replay._params import merged_params, parse_params
    from replay._workflow import replay_runs

    given = parse_params([method], param or [])[method]
    params = merged_params(given, "--adjustment-range", adjustment_range)
    if jobs is not None or engine != "pool":
        return _replay_fleet(path, method, params, out, jobs, engine, quiet, echo)
    from adaptive.trace import TraceError
    from adaptive.trace._folders import TRIAL_DESIGN, trial_folder_message

    trial = trial_folder_message(path)
    if trial is not None and (path / TRIAL_DESIGN).is_file():
        raise TraceError(
            f"{trial}; every run of every arm into one summary table: "
            f"`adaptive replay {path} -m {method} --jobs 2`"
        )
    runs = load_runs(path, echo)
    base = out if out is not None else default_out(path, "replays")
    total = sum(len(t.steps) for t in runs.values())
    with StepProgress(total, f"replay {method}", quiet) as bar:
        res = replay_runs(runs, method, base, params=params, fmt=fmt, progress=bar, source=path)
    return res.text()


def _replay_fleet(
    path: Path,
    method: str,
    params: dict[str, Any],
    out: Path | None,
    jobs: int | None,
    engine: str,
    quiet: bool,
    echo: Callable[[str], None],
) -> str:
    """`adaptive replay PATH --jobs N [--engine ray]`: the fleet's summary table."""
    import os

    from replay._fleet import check_options, fleet_units, replay_fleet

    if jobs is None:  # --engine ray alone: as many at a time as this machine has cores
        jobs = os.cpu_count() or 1
    check_options(jobs, engine)
    base = out if out is not None else default_out(path, "replays")
    total = len(fleet_units(path))
    with StepProgress(total, f"replay {method} (fleet)", quiet, unit="traces") as bar:
        res = replay_fleet(
            path, method, base, params=params, jobs=jobs, engine=engine,
            progress=bar, echo=(lambda _m: None) if quiet else echo,
        )  # fmt: skip
    return res.text()


def compare_command(
    path: Path,
    method: Sequence[str] | None,
    laws: bool,
    param: Sequence[str] | None,
    out: Path | None,
    fmt: str,
    quiet: bool,
    echo: Callable[[str], None],
) -> list[str]:
    """`adaptive compare`: replay the methods (default dwa, uncertainty and scheduler; with
    `laws` the scheduler once per registered law) over the runs under `path`; its report."""
    methods = list(dict.fromkeys(method or ([] if laws else ["dwa", "uncertainty", "scheduler"])))
    if laws:
        from adaptive.scheduler import available_laws

        methods += [
            f"scheduler:{law}" for law in available_laws() if f"scheduler:{law}" not in methods
        ]
    from replay._params import parse_params
    from replay._workflow import compare as run_compare

    params = parse_params(methods, param or [])  # refuses an unknown method or parameter
    runs = load_runs(path, echo)
    dest = out if out is not None else default_out(path, "compare")
    with StepProgress(len(runs) * len(methods), "compare", quiet, unit="replays") as bar:
        res = run_compare(
            runs, methods, dest, params=params, fmt=fmt, progress=bar, source=str(path)
        )
    return list(res.report())


def sweep_command(
    path: Path,
    method: str,
    grid: Sequence[str],
    param: Sequence[str] | None,
    out: Path | None,
    fmt: str,
    quiet: bool,
    echo: Callable[[str], None],
) -> str:
    """`adaptive sweep`: replay every configuration of `grid`; the ranked text it prints."""
    from replay._params import parse_params
    from replay._sweep import grid_configs, parse_grid
    from replay._workflow import sweep_runs

    g = parse_grid(method, list(grid))
    fixed = parse_params([method], param or [])[method]
    runs = load_runs(path, echo)
    dest = out if out is not None else default_out(path, f"sweep-{method}")
    n = len(grid_configs(g)) * len(runs)
    with StepProgress(n, f"sweep {method}", quiet, unit="replays") as bar:
        res = sweep_runs(
            runs, method, g, dest, fixed=fixed, fmt=fmt, progress=bar, source=str(path)
        )
    return res.text()
