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

__all__ = ["ENGINES", "FleetOutput", "check_options", "fleet_table", "fleet_units", "replay_fleet"]

ENGINES = ("pool", "ray")
#: Columns every row has, first; the stability metrics follow (their union over runs).
FRONT = ("run", "run_id", "trace", "method", "steps", "clamp_fraction", "stability_score")


@dataclass(frozen=True)
class Unit:
    """One trace of the fleet: `key` names its run(s) in the table, `path` is the trace."""

    key: str
    path: str


def _seed_key(d: Path) -> int:
    return int(d.name[4:])


def fleet_units(path: Path) -> list[Unit]:
    """The traces under `path`, one unit each, in a stable order:

    * a trial folder (`trial-design.json`): its runs `ARM/seedK` (keys `ARM/seedK`);
    * a folder of run folders (an import's `runs/`, an arm of a trial): each run folder's
      trace (`RUN/trace.parquet`, parts, or its one `*.parquet`; key: the folder's name);
    * anything else `load_runs` reads (a trace, a run folder, a hive-partitioned dataset):
      one unit, whose runs are split by run id where it is replayed.

    Raises `TraceError` in one line when nothing under `path` is a trace, and for a folder
    of trial folders (name one of them)."""
    from adaptive.trace import TraceError
    from adaptive.trace._folders import TRIAL_DESIGN, trial_folder_message
    from replay._runs import _is_trace_dir, _run_trace_path

    if not path.exists():
        raise TraceError(f"{path}: no such file or directory")
    if path.is_file() or _is_trace_dir(path) or (path / "trace.parquet").exists():
        return [Unit(path.name, str(path))]
    if any(c.is_dir() and c.name.startswith("run_id=") for c in path.iterdir()):
        return [Unit(path.name, str(path))]
    if (path / TRIAL_DESIGN).is_file():
        arms = sorted(d for d in path.iterdir() if d.is_dir())
        units = []
        for arm in arms:
            seeds = [d for d in arm.glob("seed*") if d.is_dir() and d.name[4:].isdigit()]
            for seed in sorted(seeds, key=_seed_key):
                tp = _run_trace_path(seed)
                if tp is not None:
                    units.append(Unit(f"{arm.name}/{seed.name}", str(tp)))
        if not units:
            raise TraceError(f"{path}: a trial folder ({TRIAL_DESIGN}) with no finished runs")
        return units
    units = []
    for sub in sorted(c for c in path.iterdir() if c.is_dir()):
        tp = _run_trace_path(sub)
        if tp is not None:
            units.append(Unit(sub.name, str(tp)))
    if not units:
        message = trial_folder_message(path)  # a folder of trial folders: name one
        if message is not None:
            raise TraceError(message)
        raise TraceError(f"{path}: no trace found (expected a .parquet trace or run folders)")
    return units


def clamp_fraction(result: Any) -> float:
    """Fraction of steps at the clamp: weighting, steps where any component's scale was
    clamped to ±r; scheduler, steps with delta pinned at ±adjustment_range."""
    import numpy as np

    f = result.frame
    if not len(f):
        return 0.0
    if result.kind == "schedule":
        r = float(result.params.get("adjustment_range", math.nan))
        if not (math.isfinite(r) and r > 0):
            return 0.0
        return float(np.mean(np.abs(f["delta"].to_numpy(np.float64)) >= r - 1e-9))
    cols = [f"clamped/{c}" for c in result.names if f"clamped/{c}" in f.columns]
    if not cols:
        return 0.0
    return float(f[cols].to_numpy(dtype=bool).any(axis=1).mean())


def _rows(unit: Unit, method: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Read one unit's trace and replay `method` over each of its runs: one row per run.
    A run that cannot be replayed (no step rows, inputs the method lacks, an unreadable
    trace) gets a row with its `error` and no figures, so one bad run never stops a fleet."""
    import warnings

    from adaptive.errors import InputError
    from replay._engine import replay
    from replay._stability import stability_metrics, stability_score

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
        metrics = stability_metrics(result)
        row: dict[str, Any] = {
            "run": key,
            "run_id": rid,
            "trace": unit.path,
            "method": method,
            "steps": len(result.frame),
            "clamp_fraction": clamp_fraction(result),
            "stability_score": stability_score(metrics),
        }
        row.update({k: v for k, v in metrics.items() if k != "steps"})
        row["skipped_parts"] = len(whole.skipped_parts)  # unreadable part files left out
        row["error"] = None
        rows.append(row)
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


def fleet_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: `FRONT`, then every stability metric (NaN where a run has none:
    another component, or an `error`), then `error` (null when the run replayed)."""
    frame = pd.DataFrame(list(rows))
    for c in (*FRONT, "error"):
        if c not in frame.columns:
            frame[c] = None
    metrics = [c for c in frame.columns if c not in FRONT and c != "error"]
    frame = frame[[*FRONT, *metrics, "error"]]
    for c in ("run", "run_id", "trace", "method", "error"):
        frame[c] = frame[c].astype("string")
    frame["steps"] = frame["steps"].astype("Int64")
    for c in ("clamp_fraction", "stability_score", *metrics):
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    return frame.reset_index(drop=True)


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


def _relative(trace: str, root: Path) -> str:
    """A trace's path as the table shows it: relative to the fleet's folder where inside."""
    try:
        return Path(trace).relative_to(root).as_posix()
    except ValueError:
        return Path(trace).as_posix()


def _fmt4g(v: float) -> str:
    return f"{v:.4g}"
