"""Trace reader: one `.parquet` file or a directory of part files -> step and epoch tables."""

from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adaptive.errors import InputError
from adaptive.trace import _format as F
from adaptive.trace._folders import folder_of_runs, folder_of_runs_message, trial_folder_message


class TraceError(InputError):
    """A trace that cannot be read; the message names the file and the problem."""


class TraceWarning(UserWarning):
    """A part of a trace was skipped (truncated or corrupt); the rest was read."""


@dataclass
class Trace:
    """A loaded trace: step rows and epoch rows as pandas DataFrames plus metadata.

    `steps` is sorted by (`run_id`, `step`); `epochs` by (`run_id`, `epoch`, `split`).
    """

    path: Path
    steps: pd.DataFrame
    epochs: pd.DataFrame
    components: list[str]
    metrics: list[str]
    version: int
    run: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    skipped_parts: list[Path] = field(default_factory=list)

    @property
    def run_ids(self) -> list[str]:
        """Run identifiers present, in order of first appearance."""
        ids = pd.concat([self.steps[F.RUN_ID], self.epochs[F.RUN_ID]])
        # unique first (vectorised, in order of appearance), then str: not a Python loop
        # over every row (4 ms per call at 10 k rows, called by every replay)
        return list(dict.fromkeys(str(v) for v in pd.unique(ids.to_numpy())))

    @property
    def run_id(self) -> str:
        """The run identifier (the first one where the trace holds several runs)."""
        ids = self.run_ids
        return ids[0] if ids else ""

    @property
    def columns(self) -> list[str]:
        """All columns, step and epoch rows together."""
        return list(dict.fromkeys([*self.steps.columns, *self.epochs.columns]))

    def split_metrics(self, split: str) -> pd.DataFrame:
        """Epoch rows of one split (`val`, `valfree`, ...), indexed by epoch."""
        rows = self.epochs[self.epochs[F.SPLIT] == split]
        return rows.set_index(F.EPOCH_COL)

    def by_run(self) -> dict[str, Trace]:
        """One `Trace` per run id (for traces that pool several runs)."""
        out = {}
        for rid in self.run_ids:
            out[rid] = Trace(
                path=self.path,
                steps=self.steps[self.steps[F.RUN_ID] == rid].reset_index(drop=True),
                epochs=self.epochs[self.epochs[F.RUN_ID] == rid].reset_index(drop=True),
                components=self.components,
                metrics=self.metrics,
                version=self.version,
                run=self.run,
                metadata=self.metadata,
                skipped_parts=self.skipped_parts,
            )
        return out


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise TraceError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*.parquet")
        if p.is_file() and not F.is_tool_output(p.relative_to(path).parts)
    )
    if not files:
        raise TraceError(f"{path}: directory holds no .parquet files (besides tool outputs)")
    return files


def _hive_values(root: Path, file: Path) -> dict[str, str]:
    values = {}
    for part in file.relative_to(root).parts[:-1] if file != root else ():
        if "=" in part:
            k, v = part.split("=", 1)
            values[k] = v
    return values


def _try_read(root: Path, file: Path) -> pa.Table | Exception:
    try:
        return _read_one(root, file)
    except (pa.ArrowException, OSError) as exc:
        return exc


def _read_one(root: Path, file: Path) -> pa.Table:
    table = pq.read_table(file)
    for k, v in _hive_values(root, file).items():
        if k not in table.column_names:
            table = table.append_column(k, pa.array([v] * table.num_rows, pa.string()))
    return table


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a trace (a `.parquet` file or a directory of parts, hive partitions allowed).

    Raises `TraceError` with a one-line message naming the file and the problem. In a
    directory, a truncated or corrupt part is skipped with a `TraceWarning` naming it.
    NaN and inf values are data and are kept.
    """
    root = Path(path)
    trial = trial_folder_message(root)
    if trial is not None:
        raise TraceError(trial)
    files = _files(root)
    tables: list[pa.Table] = []
    skipped: list[Path] = []
    with ThreadPoolExecutor(max_workers=min(4, len(files))) as pool:
        results = list(pool.map(lambda f: _try_read(root, f), files))
    for file, result in zip(files, results, strict=True):
        if isinstance(result, pa.Table):
            tables.append(result)
        else:
            exc = result
            if root.is_file():
                raise TraceError(
                    f"{file}: not a readable Parquet file ({_first_line(exc)})"
                ) from None
            warnings.warn(
                f"{file}: skipped unreadable part ({_first_line(exc)})", TraceWarning, stacklevel=2
            )
            skipped.append(file)
    if not tables:
        raise TraceError(f"{root}: no readable Parquet part (all {len(files)} skipped)")
    meta = {k.decode(): v.decode() for k, v in (tables[0].schema.metadata or {}).items()}
    try:
        try:
            table = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
        except pa.ArrowException as exc:
            raise TraceError(
                f"{root}: parts have incompatible schemas ({_first_line(exc)})"
            ) from None
        return _to_trace(root, table, meta, skipped)
    except TraceError as exc:  # a folder of run folders: say so, and what to run instead
        runs = folder_of_runs(root, files) if root.is_dir() else []
        if not runs:
            raise
        problem = str(exc).removeprefix(f"{root}: ")
        raise TraceError(folder_of_runs_message(root, runs, problem)) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _to_trace(root: Path, table: pa.Table, meta: dict[str, str], skipped: list[Path]) -> Trace:
    names = table.column_names
    missing = [c for c in F.REQUIRED if c not in names]
    if missing:
        raise TraceError(f"{root}: missing required column(s) {', '.join(missing)}")
    version_text = meta.get(F.META_VERSION, str(F.TRACE_VERSION))
    try:
        version = int(version_text)
    except ValueError:
        version = -1
    if version not in F.SUPPORTED_VERSIONS:
        raise TraceError(
            f"{root}: unknown trace version {version_text!r} "
            f"(this package reads {', '.join(map(str, F.SUPPORTED_VERSIONS))})"
        )
    loss_cols = [c for c in names if c.startswith(F.LOSS_PREFIX)]
    if not loss_cols:
        raise TraceError(f"{root}: no loss/<component> column; a trace needs at least one")
    for c in loss_cols:
        typ = table.schema.field(c).type
        if not (pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_null(typ)):
            raise TraceError(f"{root}: loss column {c!r} is not numeric (type {typ})")

    kind = table.column(F.KIND).cast(pa.string())
    unknown = set(pc.unique(kind).to_pylist()) - set(F.KINDS)
    if unknown:
        raise TraceError(
            f"{root}: unknown row kind(s) {sorted(map(str, unknown))} (expected step, epoch)"
        )
    is_step = pc.equal(kind, F.STEP)
    steps = _frame(table.filter(is_step), keep=loss_cols)
    epochs = _frame(table.filter(pc.invert(is_step)), keep=[])
    if steps[F.STEP_COL].isna().any() or steps[F.EPOCH_COL].isna().any():
        raise TraceError(f"{root}: step rows with a missing step or epoch value")
    # One run (the usual case): order and duplicate checks need only the step numbers, not
    # a conversion of the run-id strings to Python objects.
    one_run = len(pc.unique(table.column(F.RUN_ID))) <= 1
    steps = _sorted(steps, [F.STEP_COL] if one_run else [F.RUN_ID, F.STEP_COL])
    step = steps[F.STEP_COL].to_numpy()
    same_run = True if one_run else (lambda r: r[1:] == r[:-1])(steps[F.RUN_ID].to_numpy())
    dup = (step[1:] == step[:-1]) & same_run
    if dup.any():
        i = int(np.argmax(dup)) + 1
        raise TraceError(
            f"{root}: {int(dup.sum())} duplicate step row(s), first at run "
            f"{steps[F.RUN_ID].iloc[i]!r} step {int(step[i])}"
        )
    epochs = _sorted(
        epochs, [F.EPOCH_COL, F.SPLIT] if one_run else [F.RUN_ID, F.EPOCH_COL, F.SPLIT]
    )

    components = _json_list(meta.get(F.META_COMPONENTS)) or F.loss_columns(names)
    _check_loss_columns(root, components, names)
    metrics = _json_list(meta.get(F.META_METRICS)) or F.metric_columns(names)
    metrics = [m for m in metrics if F.METRIC_PREFIX + m in names]
    try:
        run = json.loads(meta.get(F.META_RUN, "{}"))
    except json.JSONDecodeError:
        run = {}
    return Trace(
        path=root,
        steps=steps,
        epochs=epochs,
        components=components,
        metrics=metrics,
        version=version,
        run=run if isinstance(run, dict) else {},
        metadata=meta,
        skipped_parts=skipped,
    )


def _check_loss_columns(root: Path, components: list[str], names: list[str]) -> None:
    """A component the metadata lists must have its `loss/<c>` column: leaving it out would
    replay and summarise the other components as if it never existed."""
    gone = [c for c in components if F.LOSS_PREFIX + c not in names]
    if not gone:
        return
    s = "s" if len(gone) > 1 else ""
    raise TraceError(
        f"{root}: the metadata ({F.META_COMPONENTS}) lists component{s} "
        f"{', '.join(map(repr, gone))} but has no "
        f"{', '.join(F.LOSS_PREFIX + c for c in gone)} column{s}; write the column{s}, or "
        f"list only the components recorded"
    )


def _json_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _frame(table: pa.Table, keep: list[str]) -> pd.DataFrame:
    """To pandas, dropping columns with no value on these rows (e.g. metrics on step rows)."""
    drop = [
        c
        for c in table.column_names
        if c not in F.REQUIRED and c not in keep and table.column(c).null_count == table.num_rows
    ]
    df = table.drop_columns(drop).to_pandas() if table.num_rows else table.to_pandas()
    for c in (F.RUN_ID, F.KIND, F.SPLIT):
        if df[c].dtype != "str":
            df[c] = df[c].astype(str)
    return df


def _sorted(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    if len(df) < 2 or (len(by) == 1 and df[by[0]].is_monotonic_increasing):
        return df.reset_index(drop=True)
    return df.sort_values(by, kind="stable").reset_index(drop=True)
