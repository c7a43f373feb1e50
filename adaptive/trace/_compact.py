"""Maintenance of trace directories: merge parts into one file, cut a trace back for resume."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from adaptive._checks import fsync_dir, fsync_file
from adaptive.trace import _format as F
from adaptive.trace._reader import TraceError, read_trace
from adaptive.trace._writer import part_files


def _write_atomic(table: pa.Table, target: Path) -> None:
    tmp = target.with_name(target.name + f".{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(
        table,
        tmp,
        compression="lz4",
        use_dictionary=[c for c in (F.RUN_ID, F.KIND, F.SPLIT) if c in table.column_names],
        use_byte_stream_split=[f.name for f in table.schema if pa.types.is_floating(f.type)],
        row_group_size=1 << 20,
    )
    fsync_file(tmp)
    os.replace(tmp, target)
    fsync_dir(target.parent)


def compact_trace(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    keep_directory: bool = False,
) -> Path:
    """Merge a trace directory's part files into one Parquet file and return its path.

    Without `out` the directory is replaced by a single file of the same name, or, with
    `keep_directory`, by a directory holding one part (`part-000000.parquet`) so that a
    `TraceWriter(append=True)` (`adaptive train --resume`) can continue it. The merged file
    is written under a temporary name and its row count checked against the parts before
    anything is replaced; until then the parts are untouched.
    """
    src = Path(path)
    if not src.is_dir():
        raise TraceError(f"{src}: not a trace directory (nothing to compact)")
    parts = [
        p
        for p in sorted(src.rglob("*.parquet"))
        if p.is_file() and not F.is_tool_output(p.relative_to(src).parts)
    ]
    if not parts:
        raise TraceError(f"{src}: directory holds no .parquet files")
    tables = []
    for p in parts:
        try:
            tables.append(pq.read_table(p))
        except (pa.ArrowException, OSError) as exc:
            raise TraceError(f"{p}: unreadable part, not compacting ({exc})") from None
    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.replace_schema_metadata(tables[0].schema.metadata)
    expected = sum(t.num_rows for t in tables)
    tag = uuid.uuid4().hex[:8]
    if out is not None:
        dest = Path(out)
    elif keep_directory:
        staging = src.with_name(f".{src.name}.compact-{tag}")
        staging.mkdir()
        dest = staging / "part-000000.parquet"
    else:
        dest = src.with_name(src.name + ".compacted")
    try:
        _write_atomic(table, dest)
        got = pq.ParquetFile(dest).metadata.num_rows
        if got != expected:
            raise TraceError(f"{dest}: compacted file has {got} rows, parts had {expected}")
        read_trace(dest)  # the merged file must be a valid trace
    except BaseException:
        if out is None and keep_directory:
            shutil.rmtree(dest.parent, ignore_errors=True)
        else:
            dest.unlink(missing_ok=True)
        raise
    if out is None:
        new = dest.parent if keep_directory else dest
        old = src.with_name(f".{src.name}.old-{tag}")
        os.replace(src, old)
        os.replace(new, src)
        fsync_dir(src.parent)
        shutil.rmtree(old)
        dest = src
    return dest


def truncate_trace(
    path: str | os.PathLike[str],
    *,
    through_epoch: int | None = None,
    before_step: int | None = None,
) -> int:
    """Drop rows from a trace directory for a resume; give exactly one bound.

    `through_epoch`: keep the rows of epochs up to it (the reference trainer resumes at an
    epoch boundary). `before_step`: keep step rows before that step and epoch rows recorded
    at or before it (a checkpoint taken when `before_step` steps were done, as Lightning's
    mid-epoch checkpoints are). Each affected part is rewritten atomically; leftover
    temporary files are removed. Returns the number of rows dropped.
    """
    if (through_epoch is None) == (before_step is None):
        raise ValueError("give exactly one of through_epoch and before_step")
    root = Path(path)
    if not root.is_dir():
        return 0
    for tmp in root.glob("*.tmp"):
        tmp.unlink()
    dropped = 0
    for part in part_files(root):
        try:
            table = pq.read_table(part)
        except (pa.ArrowException, OSError):
            part.unlink()
            continue
        if through_epoch is not None:
            keep = pc.less_equal(table.column(F.EPOCH_COL), pa.scalar(through_epoch, pa.int32()))
        else:
            steps, bound = table.column(F.STEP_COL), pa.scalar(before_step, pa.int64())
            keep = pc.if_else(
                pc.equal(table.column(F.KIND), F.STEP),
                pc.less(steps, bound),
                pc.less_equal(steps, bound),
            )
        kept = table.filter(keep)
        if kept.num_rows == table.num_rows:
            continue
        dropped += table.num_rows - kept.num_rows
        if kept.num_rows == 0:
            part.unlink()
        else:
            _write_atomic(kept.replace_schema_metadata(table.schema.metadata), part)
    return dropped
