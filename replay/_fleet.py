"""Replay one controller over a fleet of runs (`adaptive replay FOLDER -m M --jobs N`): every
run on its own, in this process, on a pool of processes or as Ray tasks, and one summary
table across runs: per run its stability figures (`stability_metrics`, `stability_score`)
and the fraction of steps at the clamp.

The table is plain Parquet (and CSV) with one row per run, so pandas, DuckDB and Polars
query it without this package. Each run is read where it is replayed (the workers read in
parallel), and only its row travels back. The serial, pool and Ray paths run the same
function over the same units in the same order, so they give the same table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from adaptive.errors import UsageError
from replay._fleet_table import (
    FRONT,
    Unit,
    _relative,
    clamp_fraction,
    fleet_table,
    fleet_units,
    result_row,
    run_keys,
)

__all__ = [
    "ENGINES",
    "FRONT",
    "FleetOutput",
    "Unit",
    "check_options",
    "clamp_fraction",
    "fleet_table",
    "fleet_units",
    "replay_fleet",
    "result_row",
    "run_keys",
]

ENGINES = ("pool", "ray")


def _rows(unit: Unit, method: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Read one unit's trace and replay `method` over each of its runs: one row per run.
    A run that cannot be replayed (no step rows, inputs the method lacks, an unreadable
    trace) gets a row with its `error` and no figures, so one bad run never stops a fleet."""
    import warnings

    from adaptive.errors import InputError
    from replay._engine import replay

    def failed(key: str, run_id: str, exc: BaseException) -> dict[str, Any]:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"run": key, "run_id": run_id, "trace": unit.path, "method": method,
                "error": first}  # fmt: skip

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skipped parts: counted in the row instead
            from adaptive.trace import read_trace

            whole = read_trace(unit.path)
    except (InputError, OSError) as exc:
        return [failed(unit.key, "", exc)]
    # one run id (the usual run folder): the trace itself, without `by_run`'s row-by-row
    # scan of the run ids (a fifth of a 10 k-step run's cost)
    ids = pd.unique(pd.concat([whole.steps["run_id"], whole.epochs["run_id"]]).astype(str))
    runs = {str(ids[0]): whole} if len(ids) == 1 else whole.by_run()
    if not runs:
        return [failed(unit.key, "", InputError("no rows"))]
    rows = []
    for rid, trace in runs.items():
        key = unit.key if len(runs) == 1 else f"{unit.key}/{rid}"
        if len(trace.steps) == 0:
            rows.append(failed(key, rid, InputError("no step rows (evaluations only)")))
            continue
        try:
            result = replay(trace, method, **params)
        except (InputError, ValueError) as exc:
            rows.append(failed(key, rid, exc))
            continue
        rows.append(result_row(key, rid, unit.path, method, result, len(whole.skipped_parts)))
    return rows


def _chunk_rows(
    units: Sequence[Unit], method: str, params: Mapping[str, Any]
) -> list[list[dict[str, Any]]]:
    """`_rows` of several units (one task of a pool or of Ray: fewer, larger tasks)."""
    return [_rows(u, method, params) for u in units]


def _chunks(units: Sequence[Unit], jobs: int) -> list[list[Unit]]:
    """Units in order, cut into about 4 tasks per worker (at most 64 units a task): small
    enough to balance, large enough that a task's overhead is not a run's cost."""
    size = max(1, min(64, math.ceil(len(units) / (4 * max(jobs, 1)))))
    return [list(units[i : i + size]) for i in range(0, len(units), size)]


def _map_pool(
    chunks: list[list[Unit]], method: str, params: Mapping[str, Any], jobs: int
) -> Iterator[list[list[dict[str, Any]]]]:
    if jobs == 1 or len(chunks) <= 1:
        for c in chunks:
            yield _chunk_rows(c, method, params)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawned, as the trial's pool: a forked copy of a driver that holds torch threads or
    # a Ray connection can hang
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(chunks)), mp_context=ctx) as pool:
        futures = [pool.submit(_chunk_rows, c, method, params) for c in chunks]
        try:
            for fut in futures:  # in order: the table does not depend on who finished first
                yield fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _map_ray(
    chunks: list[list[Unit]],
    method: str,
    params: Mapping[str, Any],
    jobs: int,
    echo: Callable[[str], None],
) -> Iterator[list[list[dict[str, Any]]]]:
    """The same chunks as Ray tasks (1 CPU each), on the caller's Ray connection, else on
    a local cluster of `jobs` CPUs started as a trial starts one (`adaptive._ray`) and
    stopped after the fleet."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--engine ray needs the ray extra (pip install 'adaptive-replay[ray]')"
        ) from None
    from adaptive._ray import remove_session, start_local

    owned = not ray.is_initialized()  # the caller's own connection: use it, leave it open
    session = start_local(jobs, echo, what="fleet") if owned else None
    try:
        task = ray.remote(num_cpus=1, max_retries=1)(_chunk_rows)
        refs = [task.remote(c, method, dict(params)) for c in chunks]
        for ref in refs:
            yield ray.get(ref)
    finally:
        if owned:
            ray.shutdown()
            remove_session(session)


def check_options(jobs: int, engine: str) -> None:
    """Refuse an unknown engine or fewer than one job (`UsageError`, one line)."""
    if engine not in ENGINES:
        raise UsageError(f"--engine must be {' or '.join(ENGINES)}, got {engine!r}")
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")


@dataclass
class FleetOutput:
    """What `replay_fleet` produced."""

    table: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.lines)


def replay_fleet(
    path: Path,
    method: str,
    out: Path,
    *,
    params: Mapping[str, Any] | None = None,
    given: Mapping[str, Any] | None = None,
    jobs: int = 1,
    engine: str = "pool",
    progress: Callable[[int], None] | None = None,
    echo: Callable[[str], None] = lambda _m: None,
) -> FleetOutput:
    """Replay `method` over every run under `path` (`fleet_units`), `jobs` at a time on
    `engine` (`pool`: this process for 1, else spawned processes; `ray`: Ray tasks), and
    write the summary `<stem>-fleet.parquet` and `.csv` into `out` (`<stem>` as
    `replay_runs` names its files: `replay-dwa`, `replay-dwa-temperature=2`; the `replay-`
    prefix keeps the table from being taken for a run's trace). Runs that cannot be
    replayed are rows with an `error`; when none can, a one-line `ReplayError`."""
    import time

    from replay._engine import ReplayError
    from replay._params import parse_params
    from replay._summary import write_frame
    from replay._workflow import output_stem, write_csv

    check_options(jobs, engine)
    parse_params([method], [])  # an unknown method: one line before any worker starts
    params = dict(params or {})
    units = fleet_units(path)
    chunks = _chunks(units, jobs)
    start = time.perf_counter()
    if engine == "ray":
        batches = _map_ray(chunks, method, params, jobs, echo)
    else:
        batches = _map_pool(chunks, method, params, jobs)
    rows: list[dict[str, Any]] = []
    for batch in batches:
        for unit_rows in batch:
            rows.extend(unit_rows)
            if progress is not None:
                progress(1)
    seconds = time.perf_counter() - start
    table = fleet_table(rows)
    failed = table[table["error"].notna()]
    if len(failed) == len(table):
        first = failed.iloc[0]
        raise ReplayError(
            f"{path}: no run could be replayed with {method} ({len(table)} runs; "
            f"{first['run']}: {first['error']})"
        )
    table["trace"] = pd.array([_relative(p, path) for p in table["trace"]], dtype="string")
    stem = output_stem(method, given if given is not None else params) + "-fleet"
    files = [
        write_frame(table, out / f"{stem}.parquet"),
        write_csv(table, out / f"{stem}.csv", index=False),
    ]
    where = "this process" if jobs == 1 and engine == "pool" else f"{engine}, {jobs} at a time"
    lines = [f"replayed {method} over {len(table) - len(failed)} of {len(table)} runs "
             f"({len(units)} traces; {where}) in {seconds:.1f} s"]  # fmt: skip
    ok = table[table["error"].isna()]
    shown = ["steps", "clamp_fraction", "stability_score", "mean_abs_delta"]
    shown = [c for c in shown if c in ok.columns]
    stats = ok[shown].astype("float64").describe().loc[["mean", "min", "50%", "max"]]
    lines.append(stats.rename(index={"50%": "median"}).T.to_string(float_format=_fmt4g))
    for _, r in failed.head(5).iterrows():
        lines.append(f"not replayed: {r['run']}: {r['error']}")
    if len(failed) > 5:
        lines.append(f"... and {len(failed) - 5} more runs not replayed (the error column)")
    lines.append(f"wrote {files[0]} and {files[1]} (one row per run)")
    return FleetOutput(table, files, lines)


def _fmt4g(v: float) -> str:
    return f"{v:.4g}"
