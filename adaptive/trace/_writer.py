"""Crash-safe trace writer: buffered rows, complete part files renamed into place atomically."""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import time as _time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from adaptive._checks import fsync_dir, fsync_file
from adaptive._version import __version__
from adaptive.trace import _format as F

_PART_RE = re.compile(r"^part-(\d+)\.parquet$")
_LIVE_WRITERS: weakref.WeakSet[TraceWriter] = weakref.WeakSet()


def _flush_all_at_exit() -> None:
    for writer in list(_LIVE_WRITERS):
        try:
            writer.close()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass


atexit.register(_flush_all_at_exit)


def part_files(directory: Path) -> list[Path]:
    """Complete part files of a trace directory, in write order (temporary files excluded)."""
    return sorted(p for p in directory.iterdir() if _PART_RE.match(p.name))


class TraceWriter:
    """Append-only writer of a trace directory (`run.parquet/part-000000.parquet`, ...).

    Rows are buffered and written as complete Parquet part files under a temporary name
    (`*.parquet.tmp`) that is renamed into place, so a reader never sees a partial file and
    a killed process loses at most the unflushed buffer. Flushes every `flush_rows` rows;
    every `flush_seconds` seconds once at least `min_part_rows` rows are buffered (so a slow
    or busy run does not leave hundreds of tiny parts); and on `flush()`, `close()` /
    context exit and at interpreter exit. `compact_trace(path, keep_directory=True)` merges
    the parts of a finished trace into one (the reference trainer does so at the end).

    Every part holds every column declared up front (`components`, `metrics`, `columns`) and
    every column seen so far, so parts share one schema when the names are declared; a
    column first seen later widens the schema of later parts only.

    Values may be Python numbers or torch tensors on any device: tensors are kept detached
    until the flush and moved to the host in one batch, so logging does not synchronise
    with the device per step.

    Example:
        >>> with TraceWriter("runs/a/trace.parquet", components=["fk_pos", "rot"]) as w:
        ...     w.log_step(step=0, epoch=0, losses={"fk_pos": 0.5, "rot": 0.1})
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        run_id: str | None = None,
        components: Iterable[str] = (),
        metrics: Iterable[str] = (),
        columns: Iterable[str] = (),
        run_info: Mapping[str, Any] | None = None,
        flush_rows: int = 10_000,
        flush_seconds: float = 10.0,
        min_part_rows: int = 1000,
        append: bool = False,
    ) -> None:
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows!r}")
        if not flush_seconds > 0:
            raise ValueError(f"flush_seconds must be > 0, got {flush_seconds!r}")
        if min_part_rows < 1:
            raise ValueError(f"min_part_rows must be >= 1, got {min_part_rows!r}")
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"{self.path}: exists and is not a trace directory")
        self.path.mkdir(parents=True, exist_ok=True)
        existing = part_files(self.path)
        if existing and not append:
            raise FileExistsError(
                f"{self.path}: already holds {len(existing)} part file(s); "
                "pass append=True to continue it or choose another path"
            )
        self._next_part = (int(_PART_RE.match(existing[-1].name)[1]) + 1) if existing else 0
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.components = list(components)
        self.metrics = list(metrics)
        self.run_info = dict(run_info or {})
        self.run_info.setdefault("package_version", __version__)
        self.run_info.setdefault("start_time", _time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self.flush_rows = int(flush_rows)
        self.flush_seconds = float(flush_seconds)
        self.min_part_rows = int(min_part_rows)
        self._t0 = _time.monotonic() - float(self.run_info.get("time_offset", 0.0))
        self._rows: list[dict[str, Any]] = []
        self._columns: dict[str, None] = dict.fromkeys(F.REQUIRED)
        self._columns[F.TIME] = None
        for c in self.components:
            self._columns[F.LOSS_PREFIX + c] = None
        for c in columns:
            self._columns[c] = None
        for m in self.metrics:
            self._columns[F.METRIC_PREFIX + m] = None
        self._names: dict[str, dict[str, str]] = defaultdict(dict)
        self._last_flush = _time.monotonic()
        self._closed = False
        self.rows_written = 0
        _LIVE_WRITERS.add(self)

    # ------------------------------------------------------------------ logging
    def elapsed(self) -> float:
        """Seconds since the run started (the `time` column)."""
        return _time.monotonic() - self._t0

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one raw row (column name -> value). Prefer `log_step` / `log_epoch`."""
        if self._closed:
            raise RuntimeError(f"{self.path}: trace writer is closed")
        rows = self._rows
        rows.append(row if isinstance(row, dict) else dict(row))
        n = len(rows)
        if n >= self.flush_rows or (
            n >= self.min_part_rows and _time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def log_step(
        self,
        *,
        step: int,
        epoch: int,
        losses: Mapping[str, Any],
        loss_total: Any = None,
        weights: Mapping[str, Any] | None = None,
        weights_base: Mapping[str, Any] | None = None,
        proposed_weights: Mapping[str, Any] | None = None,
        schedule: Mapping[str, Any] | None = None,
        schedule_base: Mapping[str, Any] | None = None,
        proposed_schedule: Mapping[str, Any] | None = None,
        grad_norm: Any = None,
        lr: Any = None,
        extra: Mapping[str, Any] | None = None,
        time: float | None = None,
    ) -> None:
        """Record one optimizer step: raw losses and whatever else applies."""
        row: dict[str, Any] = {
            F.RUN_ID: self.run_id,
            F.KIND: F.STEP,
            F.SPLIT: "train",
            F.EPOCH_COL: epoch,
            F.STEP_COL: step,
            F.TIME: self.elapsed() if time is None else time,
        }
        names = self._names
        for prefix, values in (
            (F.LOSS_PREFIX, losses),
            (F.WEIGHT_PREFIX, weights),
            (F.WEIGHT_BASE_PREFIX, weights_base),
            (F.PROPOSED_WEIGHT_PREFIX, proposed_weights),
            (F.SCHEDULE_PREFIX, schedule),
            (F.SCHEDULE_BASE_PREFIX, schedule_base),
            (F.PROPOSED_SCHEDULE_PREFIX, proposed_schedule),
        ):
            if values:
                cache = names[prefix]
                for k, v in values.items():
                    name = cache.get(k)
                    if name is None:
                        name = cache[k] = prefix + k
                    row[name] = v
        if loss_total is not None:
            row["loss_total"] = loss_total
        if grad_norm is not None:
            row["grad_norm"] = grad_norm
        if lr is not None:
            row["lr"] = lr
        if extra:
            row.update(extra)
        self.log(row)

    def log_epoch(
        self,
        *,
        split: str,
        epoch: int,
        step: int,
        metrics: Mapping[str, Any] | None = None,
        losses: Mapping[str, Any] | None = None,
        loss_total: Any = None,
        extra: Mapping[str, Any] | None = None,
        time: float | None = None,
    ) -> None:
        """Record one evaluation of one split: metrics and split-mean component losses."""
        row: dict[str, Any] = {
            F.RUN_ID: self.run_id,
            F.KIND: F.EPOCH,
            F.SPLIT: split,
            F.EPOCH_COL: epoch,
            F.STEP_COL: step,
            F.TIME: self.elapsed() if time is None else time,
        }
        for k, v in (metrics or {}).items():
            row[F.METRIC_PREFIX + k] = v
            if k not in self.metrics:
                self.metrics.append(k)
        for k, v in (losses or {}).items():
            row[F.LOSS_PREFIX + k] = v
        if loss_total is not None:
            row["loss_total"] = loss_total
        if extra:
            row.update(extra)
        self.log(row)

    # ------------------------------------------------------------------ output
    def _metadata(self) -> dict[bytes, bytes]:
        components = self.components or F.loss_columns(list(self._columns))
        return {
            F.META_VERSION.encode(): str(F.TRACE_VERSION).encode(),
            F.META_COMPONENTS.encode(): json.dumps(components).encode(),
            F.META_METRICS.encode(): json.dumps(self.metrics).encode(),
            F.META_RUN.encode(): json.dumps(self.run_info, default=str).encode(),
        }

    def _columnar(self, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        for r in rows:
            for k in r:
                if k not in self._columns:
                    self._columns[k] = None
        cols = {c: [r.get(c) for r in rows] for c in self._columns}
        torch = sys.modules.get("torch")
        if torch is None:  # no tensor can have been logged
            return cols
        # Move every tensor value to the host in one transfer per device.
        tensors: dict[Any, list[tuple[str, int, Any]]] = {}
        for c, values in cols.items():
            if any(issubclass(t, torch.Tensor) for t in set(map(type, values))):
                for i, v in enumerate(values):
                    if isinstance(v, torch.Tensor):
                        tensors.setdefault(v.device, []).append((c, i, v))
        for entries in tensors.values():
            stacked = torch.stack([t.detach().reshape(()).double() for _, _, t in entries])
            host = stacked.cpu().tolist()
            for (c, i, _), value in zip(entries, host, strict=True):
                cols[c][i] = value
        return cols

    def flush(self) -> None:
        """Write the buffered rows as one complete part file."""
        self._last_flush = _time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        cols = self._columnar(rows)
        arrays = []
        names = []
        for c, values in cols.items():
            arrays.append(pa.array(values, type=F.column_type(c), from_pandas=False))
            names.append(c)
        table = pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(self._metadata())
        name = f"part-{self._next_part:06d}.parquet"
        tmp = self.path / (name + ".tmp")
        pq.write_table(
            table,
            tmp,
            compression="lz4",
            use_dictionary=[F.RUN_ID, F.KIND, F.SPLIT],
            use_byte_stream_split=[
                c for c, a in zip(names, arrays, strict=True) if pa.types.is_floating(a.type)
            ],
        )
        fsync_file(tmp)
        os.replace(tmp, self.path / name)
        fsync_dir(self.path)
        self._next_part += 1
        self.rows_written += len(rows)

    def close(self) -> None:
        """Flush what is buffered and stop accepting rows (idempotent)."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        _LIVE_WRITERS.discard(self)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"TraceWriter({str(self.path)!r}, run_id={self.run_id!r}, "
            f"components={self.components!r}, flush_rows={self.flush_rows}, "
            f"flush_seconds={self.flush_seconds}, min_part_rows={self.min_part_rows})"
        )
