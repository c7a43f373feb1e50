"""CSV logs -> trace: wide (a step column and one column per tag, as W&B's history export)
or long (step, key, value rows, as MLflow's metric history), read with pandas."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptive.importers._common import (
    ImportOptions,
    ImportReport,
    Series,
    TraceImportError,
    build_trace,
    import_options,
)

__all__ = ["import_csv", "read_csv_series"]

STEP_COLUMNS = ("step", "_step", "global_step", "Step", "trainer/global_step")
KEY_COLUMNS = ("key", "metric", "tag", "name")
RUN_COLUMNS = ("run_id", "run", "Run", "Name", "run_name")
TIME_COLUMNS = ("_runtime", "time", "relative_time")


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in columns), None)


def read_csv_series(
    path: str | os.PathLike[str],
    *,
    step_column: str | None = None,
    run: str | None = None,
) -> tuple[dict[str, Series], str | None]:
    """Scalar series by tag from a wide or long CSV, and the run it holds (if named).

    Long form: columns `step`, `key` (or `metric`, `tag`, `name`) and `value`. Wide form:
    a step column and one numeric column per tag, an empty cell where a tag was not
    logged. A run column (`run_id`, `run`, `Name`, ...) selects rows with `run`.
    """
    p = Path(path)
    if not p.is_file():
        raise TraceImportError(f"{p}: no such file")
    try:
        df = pd.read_csv(p, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceImportError(f"{p}: not a readable CSV ({msg})") from None
    cols = [str(c) for c in df.columns]
    df.columns = cols
    if len(df) == 0:
        raise TraceImportError(
            f"{p}: a header ({', '.join(cols[:8])}{', ...' if len(cols) > 8 else ''}) "
            "but no rows: nothing was logged"
        )
    step_col = step_column or _pick(cols, STEP_COLUMNS)
    if step_col is None or step_col not in cols:
        looked = step_column or ", ".join(STEP_COLUMNS)
        raise TraceImportError(
            f"{p}: no step column (looked for {looked}); name it with --step-column"
        )
    run_col = _pick(cols, RUN_COLUMNS)
    found_run: str | None = None
    if run_col is not None:
        names = df[run_col].astype(str)
        known = list(dict.fromkeys(names))
        if run is None:
            if len(known) > 1:
                raise TraceImportError(
                    f"{p}: holds {len(known)} runs in column {run_col!r} "
                    f"({', '.join(known[:8])}); pick one with --run"
                )
            found_run = known[0] if known else None
        else:
            if run not in known:
                raise TraceImportError(f"{p}: no run {run!r} in column {run_col!r}")
            df = df[names == run]
            found_run = run
    elif run is not None:
        raise TraceImportError(f"{p}: --run given but the CSV has no run column")
    steps_all = pd.to_numeric(df[step_col], errors="coerce")
    if steps_all.isna().all() and len(df):
        raise TraceImportError(f"{p}: step column {step_col!r} holds no numbers")
    key_col = _pick(cols, KEY_COLUMNS)
    out: dict[str, Series] = {}
    if key_col is not None and "value" in cols:  # long form
        values = pd.to_numeric(df["value"], errors="coerce")
        ok = steps_all.notna() & values.notna()
        keys = df[key_col].astype(str)[ok].to_numpy()
        st = steps_all[ok].to_numpy(dtype=np.int64)
        va = values[ok].to_numpy(dtype=np.float64)
        for k in dict.fromkeys(keys):
            m = keys == k
            out[k] = Series(st[m], va[m])
        return out, found_run
    time_col = _pick(cols, TIME_COLUMNS)
    times = pd.to_numeric(df[time_col], errors="coerce").to_numpy() if time_col else None
    skip = {step_col, run_col, time_col, "_timestamp", "timestamp", "wall_time"}
    for c in cols:
        if c in skip:
            continue
        col = pd.to_numeric(df[c], errors="coerce")
        if col.notna().sum() == 0:
            continue  # text or empty
        ok = (col.notna() & steps_all.notna()).to_numpy()
        out[c] = Series(
            steps_all.to_numpy()[ok].astype(np.int64),
            col.to_numpy(dtype=np.float64)[ok],
            None if times is None else times[ok].astype(np.float64),
        )
    return out, found_run


def import_csv(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: ImportOptions | None = None,
    **kw: Any,
) -> ImportReport:
    """Import a CSV log (wide or long, see `read_csv_series`) as a v1 trace at `out`.

    `options` says how (`ImportOptions`; `step_column` names the step column); keyword
    arguments override its fields, so the former keyword call keeps working.

    Example:
        >>> import_csv("wandb_export.csv", "runs/w/trace.parquet",
        ...            ImportOptions(components={"a": "train/loss_a", "b": "train/loss_b"}))
    """
    opts = import_options(options, kw)
    p = Path(path)
    series, found = read_csv_series(p, step_column=opts.step_column, run=opts.run)
    return build_trace(
        series,
        out,
        source=str(p),
        run_id=opts.run_id or found or p.stem,
        options=opts,
        run_info={"csv": str(p)},
    )
