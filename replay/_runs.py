"""Find the runs under a path: one trace, a folder of run folders, or a hive-partitioned dataset."""

from __future__ import annotations

import os
from pathlib import Path

from adaptive.trace import Trace, TraceError, read_trace


def _is_trace_dir(p: Path) -> bool:
    return p.is_dir() and any(p.glob("part-*.parquet"))


def _run_trace_path(d: Path) -> Path | None:
    """The trace inside a run folder: `trace.parquet` (file or parts), else one `*.parquet`."""
    if (d / "trace.parquet").exists():
        return d / "trace.parquet"
    if _is_trace_dir(d):
        return d
    files = [p for p in d.glob("*.parquet") if not p.name.startswith("replay-")]
    return files[0] if len(files) == 1 else None


def load_runs(path: str | os.PathLike[str]) -> dict[str, Trace]:
    """Traces under `path`, keyed by run id (in a stable order).

    * a trace (`run.parquet` file, or a directory of `part-*.parquet`) -> its run(s);
    * a run folder holding `trace.parquet` -> that run;
    * a folder of run folders (one trace per sub-directory) -> every run;
    * a hive-partitioned dataset (`run_id=<id>/...`) -> one trace per run id.

    Raises `TraceError` naming the path when nothing readable is found.
    """
    p = Path(path)
    if not p.exists():
        raise TraceError(f"{p}: no such file or directory")
    if p.is_file() or _is_trace_dir(p):
        return read_trace(p).by_run()
    if any(c.is_dir() and c.name.startswith("run_id=") for c in p.iterdir()):
        return read_trace(p).by_run()
    inner = _run_trace_path(p)
    if inner is not None and (p / "trace.parquet").exists():
        return read_trace(inner).by_run()
    runs: dict[str, Trace] = {}
    for sub in sorted(c for c in p.iterdir() if c.is_dir()):
        tp = _run_trace_path(sub)
        if tp is None:
            continue
        for rid, tr in read_trace(tp).by_run().items():
            key = rid if rid not in runs else f"{sub.name}/{rid}"
            runs[key] = tr
    if not runs:
        if inner is not None:
            return read_trace(inner).by_run()
        raise TraceError(f"{p}: no trace found (expected a .parquet trace or run folders)")
    return runs
