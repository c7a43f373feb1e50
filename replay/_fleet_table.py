"""The summary table across runs that `adaptive replay FOLDER` writes (with or without
`--jobs`): the traces of a fleet (`fleet_units`), each replayed run's row (`result_row`:
its stability figures and the fraction of steps at the clamp), the runs' names in it
(`run_keys`) and the table of the rows (`fleet_table`). A module of its own so that
`replay._fleet` (which runs a fleet, and imports `replay._workflow`) and `replay._workflow`
(the plain replay) build the same table without importing each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "FRONT",
    "Unit",
    "clamp_fraction",
    "fleet_table",
    "fleet_units",
    "result_row",
    "run_keys",
]

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


def run_keys(traces: Mapping[str, Any], source: Path | None) -> dict[str, tuple[str, str]]:
    """Each run of `traces` (run id -> `Trace`, as `load_runs` reads `source`) -> its `run`
    and `trace` in the summary table, as the fleet names the same run: the unit of
    `fleet_units(source)` its trace was read from (or lies under), `UNIT/RUN_ID` where more
    than one run of `traces` came from that unit; the trace relative to `source`. A run no
    unit holds (no `source`, or one the fleet cannot read) keeps its run id and its trace's
    path. For a folder of run folders this gives the fleet's `run` and `trace` columns."""
    from adaptive.trace import TraceError

    units: dict[Path, Unit] = {}
    if source is not None:
        try:
            units = {Path(u.path): u for u in fleet_units(Path(source))}
        except TraceError:
            units = {}

    def unit_of(trace: Any) -> Unit | None:
        where = Path(trace.path)
        return next((units[p] for p in (where, *where.parents) if p in units), None)

    found = {rid: unit_of(tr) for rid, tr in traces.items()}
    shared = pd.Series([u.key for u in found.values() if u is not None]).value_counts()
    keys: dict[str, tuple[str, str]] = {}
    for rid, tr in traces.items():
        unit = found[rid]
        if unit is None:
            path = Path(tr.path)
            keys[rid] = (rid, _relative(str(path), Path(source)) if source else path.as_posix())
            continue
        key = unit.key if shared[unit.key] == 1 else f"{unit.key}/{tr.run_id}"
        keys[rid] = (key, _relative(unit.path, Path(source)) if source else unit.path)
    return keys


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


def result_row(
    key: str, run_id: str, trace_path: str, method: str, result: Any, skipped_parts: int
) -> dict[str, Any]:
    """One replayed run's row of the summary table (`fleet_table`): `FRONT` (`run`: its
    key, `trace`: the path it was read from), its stability metrics, `skipped_parts`
    (unreadable part files left out of its trace) and a null `error`. The fleet's rows
    and `replay_runs`' table are built by this one function."""
    from replay._stability import stability_metrics, stability_score

    metrics = stability_metrics(result)
    row: dict[str, Any] = {
        "run": key,
        "run_id": run_id,
        "trace": trace_path,
        "method": method,
        "steps": len(result.frame),
        "clamp_fraction": clamp_fraction(result),
        "stability_score": stability_score(metrics),
    }
    row.update({k: v for k, v in metrics.items() if k != "steps"})
    row["skipped_parts"] = skipped_parts
    row["error"] = None
    return row


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


def _relative(trace: str, root: Path) -> str:
    """A trace's path as the table shows it: relative to the fleet's folder where inside."""
    try:
        return Path(trace).relative_to(root).as_posix()
    except ValueError:
        return Path(trace).as_posix()
