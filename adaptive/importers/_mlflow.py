"""MLflow runs -> trace, read without the mlflow package.

Two tracking stores: the SQLite store (`sqlite:///mlflow.db`, read with the stdlib
`sqlite3`, tables `runs`, `metrics`, `tags`) and the file store (`mlruns/`: one folder per
experiment and run, `metrics/<key>` files of `timestamp value step` lines). The SQLite
store keeps a NaN as `value = 0, is_nan = 1` and ±inf as ±max float; both come back as
the non-finite values they were.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptive.importers._common import (
    ImportOptions,
    ImportReport,
    Series,
    TraceImportError,
    build_trace,
    import_options,
)

__all__ = ["MlflowRun", "import_mlflow", "mlflow_runs"]

_MAX = sys.float_info.max


@dataclass(frozen=True)
class MlflowRun:
    """One run of a tracking store."""

    run_id: str
    name: str
    experiment_id: str
    where: Path | None = None  # the file store's run folder


def _store(uri: str | os.PathLike[str]) -> tuple[str, Path]:
    """("sqlite" | "file", path) of a tracking URI or path."""
    text = os.fspath(uri)
    if text.startswith("sqlite:///"):
        return "sqlite", Path(text[len("sqlite:///") :])
    if text.startswith("file://"):
        return "file", Path(text[len("file://") :])
    p = Path(text)
    if not p.exists():
        raise TraceImportError(f"{p}: no such file or directory")
    if p.is_file():
        with open(p, "rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                raise TraceImportError(f"{p}: not an MLflow SQLite store (not an SQLite file)")
        return "sqlite", p
    return "file", p


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise TraceImportError(f"{path}: no such file")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        con.close()
        raise TraceImportError(f"{path}: not a readable SQLite file ({exc})") from None
    if not {"runs", "metrics"} <= tables:
        con.close()
        raise TraceImportError(f"{path}: not an MLflow tracking store (no runs/metrics tables)")
    return con


def _sqlite_runs(con: sqlite3.Connection) -> list[MlflowRun]:
    cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    name_col = "name" if "name" in cols else "NULL"
    rows = con.execute(
        f"SELECT run_uuid, {name_col}, experiment_id FROM runs "
        "WHERE lifecycle_stage IS NULL OR lifecycle_stage != 'deleted' ORDER BY start_time"
    ).fetchall()
    tag_names: dict[str, str] = {}
    if con.execute("SELECT 1 FROM sqlite_master WHERE name='tags'").fetchone():
        tag_names = dict(
            con.execute("SELECT run_uuid, value FROM tags WHERE key = 'mlflow.runName'")
        )
    return [MlflowRun(r, n or tag_names.get(r, "") or r, str(e)) for r, n, e in rows]


def _meta_value(text: str, key: str) -> str | None:
    m = re.search(rf"^{re.escape(key)}:\s*(.*)$", text, re.MULTILINE)
    return m.group(1).strip().strip("'\"") if m else None


def _file_runs(root: Path) -> list[MlflowRun]:
    runs = []
    for meta in sorted(root.glob("*/*/meta.yaml")):
        run_dir = meta.parent
        if run_dir.parent.name in (".trash", "models") or not (run_dir / "metrics").is_dir():
            continue
        text = meta.read_text("utf-8", errors="replace")
        if _meta_value(text, "lifecycle_stage") == "deleted":
            continue
        rid = _meta_value(text, "run_id") or _meta_value(text, "run_uuid") or run_dir.name
        name = _meta_value(text, "run_name") or ""
        tag = run_dir / "tags" / "mlflow.runName"
        if not name and tag.is_file():
            name = tag.read_text("utf-8").strip()
        runs.append(MlflowRun(rid, name or rid, run_dir.parent.name, run_dir))
    return runs


def mlflow_runs(store: str | os.PathLike[str]) -> list[MlflowRun]:
    """The (not deleted) runs of a tracking store (SQLite file / URI or `mlruns` folder)."""
    kind, path = _store(store)
    if kind == "sqlite":
        con = _connect(path)
        try:
            return _sqlite_runs(con)
        finally:
            con.close()
    if not path.is_dir():
        raise TraceImportError(f"{path}: no such directory")
    return _file_runs(path)


def _pick_run(runs: list[MlflowRun], run: str | None, where: str) -> MlflowRun:
    if not runs:
        raise TraceImportError(f"{where}: no runs in this tracking store")
    listing = ", ".join(f"{r.name} ({r.run_id})" for r in runs[:8])
    if run is None:
        if len(runs) > 1:
            raise TraceImportError(
                f"{where}: holds {len(runs)} runs ({listing}); pick one with --run ID|NAME"
            )
        return runs[0]
    hits = [r for r in runs if run in (r.run_id, r.name)]
    if not hits:
        raise TraceImportError(f"{where}: no run {run!r}; runs: {listing}")
    if len(hits) > 1:
        raise TraceImportError(f"{where}: {len(hits)} runs are named {run!r}; give the run id")
    return hits[0]


def _sqlite_series(con: sqlite3.Connection, run_id: str) -> dict[str, Series]:
    rows = con.execute(
        "SELECT key, step, value, is_nan, timestamp FROM metrics WHERE run_uuid = ? "
        "ORDER BY key, timestamp, rowid",
        (run_id,),
    ).fetchall()
    out: dict[str, Series] = {}
    if not rows:
        return out
    keys = np.array([r[0] for r in rows], dtype=object)
    steps = np.array([r[1] for r in rows], dtype=np.int64)
    values = np.array([r[2] for r in rows], dtype=np.float64)
    values[np.array([bool(r[3]) for r in rows])] = np.nan
    values[values >= _MAX] = np.inf
    values[values <= -_MAX] = -np.inf
    times = np.array([r[4] or 0 for r in rows], dtype=np.float64) / 1000.0
    for k in dict.fromkeys(keys.tolist()):
        m = keys == k
        out[k] = Series(steps[m], values[m], times[m])
    return out


def _file_series(run_dir: Path) -> dict[str, Series]:
    out: dict[str, Series] = {}
    metrics = run_dir / "metrics"
    for f in sorted(metrics.rglob("*")):
        if not f.is_file():
            continue
        key = f.relative_to(metrics).as_posix()
        st, va, ti = [], [], []
        for n, line in enumerate(f.read_text("utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                ti.append(float(parts[0]) / 1000.0)
                va.append(float(parts[1]))
                st.append(int(parts[2]) if len(parts) > 2 else 0)
            except (ValueError, IndexError):
                raise TraceImportError(
                    f"{f}:{n}: expected 'timestamp value step', got {line!r}"
                ) from None
        order = np.argsort(np.array(ti), kind="stable")
        out[key] = Series(
            np.array(st, dtype=np.int64)[order],
            np.array(va, dtype=np.float64)[order],
            np.array(ti, dtype=np.float64)[order],
        )
    return out


def import_mlflow(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: ImportOptions | None = None,
    **kw: Any,
) -> ImportReport:
    """Import one MLflow run as a v1 trace at `out`.

    `store` is `sqlite:///mlflow.db`, a path to the SQLite file, or an `mlruns` folder;
    `options.run` is the run id or name (needed when the store holds several runs);
    the rest of `ImportOptions` as for every importer (metric keys are the tags).
    Keyword arguments override the options' fields.

    Example:
        >>> import_mlflow("mlflow.db", "runs/m/trace.parquet",
        ...               ImportOptions(run="bright-owl-42", patterns=["loss_*"]))
    """
    opts = import_options(options, kw)
    run = opts.run
    kind, path = _store(store)
    where = str(store)
    if kind == "sqlite":
        con = _connect(path)
        try:
            chosen = _pick_run(_sqlite_runs(con), run, where)
            series = _sqlite_series(con, chosen.run_id)
        finally:
            con.close()
    else:
        if not path.is_dir():
            raise TraceImportError(f"{path}: no such directory")
        chosen = _pick_run(_file_runs(path), run, where)
        assert chosen.where is not None
        series = _file_series(chosen.where)
    return build_trace(
        series,
        out,
        source=f"{where} (run {chosen.name})",
        run_id=opts.run_id or chosen.name,
        options=opts,
        run_info={"mlflow_store": where, "mlflow_run_id": chosen.run_id},
    )
