"""Shared import logic: scalar series by tag -> a v1 trace (components, epochs, metrics).

Every source reader produces `Series` (steps, values, optional wall times, in the order
they were logged); `build_trace` selects the component and metric tags, derives epochs,
aligns the components on the union of their steps and writes the trace with `TraceWriter`
into a temporary directory that is renamed into place only when complete.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaptive.errors import InputError
from adaptive.trace import TraceWriter
from adaptive.trace import _format as F

__all__ = [
    "ImportOptions",
    "ImportReport",
    "Series",
    "TraceImportError",
    "build_trace",
    "import_options",
    "import_to_runs",
    "parse_mapping",
]


class TraceImportError(InputError):
    """A log that cannot be imported as asked; the message is one line naming the problem."""


@dataclass(frozen=True)
class ImportOptions:
    """How a log becomes a trace; one object shared by every importer.

    `components` maps component name -> scalar tag; `patterns` are tag globs whose `*` part
    names the component (`train/loss_*`); `metrics` maps metric name -> tag, recorded on
    epoch rows of `split`. `run` picks a run where the source holds several. Epochs come
    from the `epoch_tag` scalar, or as `step // steps_per_epoch`. `run_id` names the trace's
    run (default: the source's run name). `step_column` is for CSV only. `progress` is
    called as `progress(phase, done, total)` (phase `read`: source bytes, `write`: rows).
    """

    components: Mapping[str, str] = field(default_factory=dict)
    patterns: Sequence[str] = ()
    metrics: Mapping[str, str] = field(default_factory=dict)
    split: str = "val"
    run: str | None = None
    steps_per_epoch: int | None = None
    epoch_tag: str = "epoch"
    run_id: str | None = None
    step_column: str | None = None
    progress: Callable[[str, int, int], None] | None = None


def import_options(options: ImportOptions | None, overrides: Mapping[str, Any]) -> ImportOptions:
    """`options` (default: all defaults) with keyword `overrides` on top: the importers'
    former keyword arguments keep working (`import_csv(p, out, components={...})`)."""
    base = options if options is not None else ImportOptions()
    given = {k: v for k, v in overrides.items()}
    for key in ("components", "metrics"):
        if key in given and given[key] is None:
            given[key] = {}
    if "patterns" in given and given["patterns"] is None:
        given["patterns"] = ()
    return dataclasses.replace(base, **given) if given else base


def import_to_runs(
    importer: Callable[..., ImportReport],
    source: Any,
    options: ImportOptions,
    out: str | os.PathLike[str] | None = None,
    *,
    runs_dir: str | os.PathLike[str] = "runs",
) -> ImportReport:
    """Run `importer(source, out, options)`; without `out`, into `runs/<run id>/trace.parquet`.

    The run id is known only once the source is read, so the trace is staged in a hidden
    folder of `runs_dir` and moved into place when complete; an existing trace there is
    never replaced (`TraceImportError`). A file system refusal (permissions, a full disk)
    is reported the same way, in one line.
    """
    try:
        if out is not None:
            return importer(source, Path(out), options)
        runs = Path(runs_dir)
        runs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=runs, prefix=".import-") as tmp:
            report = importer(source, Path(tmp) / "trace.parquet", options)
            dest = runs / report.run_id / "trace.parquet"
            if dest.exists():
                raise TraceImportError(f"{dest}: already exists; choose another --out or remove it")
            dest.parent.mkdir(parents=True, exist_ok=True)
            report.trace.replace(dest)
            report.trace = dest
            return report
    except FileExistsError as exc:
        raise TraceImportError(f"{exc.filename or exc}: already exists") from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise TraceImportError(f"{where}{exc.strerror or exc}") from None


@dataclass
class Series:
    """One scalar tag: steps, values and (optionally) wall-clock seconds, in logged order."""

    steps: np.ndarray
    values: np.ndarray
    times: np.ndarray | None = None

    def latest_per_step(self) -> tuple[Series, int]:
        """Sorted by step, one value per step (the last logged: a restarted run overwrote
        the steps it repeated), and how many duplicates were dropped."""
        n = len(self.steps)
        if n == 0:
            return self, 0
        if np.all(self.steps[1:] > self.steps[:-1]):
            return self, 0
        rev = self.steps[::-1]
        uniq, idx = np.unique(rev, return_index=True)
        pick = n - 1 - idx
        times = None if self.times is None else self.times[pick]
        return Series(uniq, self.values[pick], times), n - len(uniq)


@dataclass
class ImportReport:
    """What an import did: where the trace is and what went into it."""

    trace: Path
    run_id: str
    source: str
    step_rows: int
    epoch_rows: int
    components: dict[str, str]  # component -> tag
    metrics: dict[str, str]  # metric -> tag
    split: str
    epochs: str  # how epochs were derived
    missing: dict[str, int] = field(default_factory=dict)  # component -> steps without value
    duplicates: dict[str, int] = field(default_factory=dict)  # tag -> repeated steps dropped

    def lines(self) -> list[str]:
        """A short human-readable summary."""
        out = [
            f"imported {self.source} -> {self.trace}",
            f"run id     {self.run_id}",
            "components " + ", ".join(f"{c} <- {t}" for c, t in self.components.items()),
            "metrics    "
            + (", ".join(f"{m} <- {t}" for m, t in self.metrics.items()) or "-")
            + (f" (split {self.split})" if self.metrics else ""),
            f"rows       {self.step_rows} step, {self.epoch_rows} epoch",
            f"epochs     {self.epochs}",
        ]
        for c, n in self.missing.items():
            out.append(
                f"missing    {c}: no value at {n} of {self.step_rows} steps "
                "(left empty; replay skips those steps)"
            )
        for t, n in self.duplicates.items():
            out.append(f"repeated   {t}: {n} step(s) logged again; the last value kept")
        return out


def parse_mapping(specs: Sequence[str], what: str) -> dict[str, str]:
    """`["fk=train/loss_fk", "train/rot"]` -> `{"fk": "train/loss_fk", "train/rot": ...}`."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, tag = spec.partition("=")
        if not sep:
            name = tag = spec
        name, tag = name.strip(), tag.strip()
        if not name or not tag:
            raise TraceImportError(f"{what} {spec!r}: expected NAME=TAG or TAG")
        if name in out and out[name] != tag:
            raise TraceImportError(f"{what} {name!r} given twice ({out[name]!r}, {tag!r})")
        out[name] = tag
    return out


def _show(tags: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(tags)[:limit])
    return shown + (f", ... ({len(tags)} in all)" if len(tags) > limit else "") or "none"


def _pattern_name(pattern: str, tag: str) -> str:
    """The part of `tag` the wildcards of `pattern` matched (`train/loss_*` on
    `train/loss_fk` -> `fk`); the tag itself when that is empty."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return tag
    regex = "^" + "(.*)".join(re.escape(p).replace(r"\?", ".") for p in parts) + "$"
    m = re.match(regex, tag)
    name = "_".join(g for g in m.groups() if g) if m else ""
    return name or tag


def select_tags(
    available: Sequence[str],
    *,
    components: Mapping[str, str],
    patterns: Sequence[str],
    metrics: Mapping[str, str],
    source: str,
) -> tuple[dict[str, str], dict[str, str]]:
    """Resolve component and metric names to tags; a tag that is not there is an error."""
    have = set(available)
    comps: dict[str, str] = {}
    for name, tag in components.items():
        if tag not in have:
            raise TraceImportError(f"{source}: no tag {tag!r}; available: {_show(available)}")
        comps[name] = tag
    for pattern in patterns:
        hits = [t for t in available if fnmatch.fnmatchcase(t, pattern)]
        if not hits:
            raise TraceImportError(
                f"{source}: no tag matches {pattern!r}; available: {_show(available)}"
            )
        for tag in hits:
            name = _pattern_name(pattern, tag)
            if comps.get(name, tag) != tag:
                raise TraceImportError(
                    f"{source}: component {name!r} would come from both {comps[name]!r} and "
                    f"{tag!r}; name them with --component NAME=TAG"
                )
            comps[name] = tag
    if not comps:
        raise TraceImportError(
            f"{source}: name the loss components (--component NAME=TAG or --components "
            f"PATTERN); available tags: {_show(available)}"
        )
    mets: dict[str, str] = {}
    for name, tag in metrics.items():
        if tag not in have:
            raise TraceImportError(f"{source}: no tag {tag!r}; available: {_show(available)}")
        mets[name] = tag
    return comps, mets


def _epoch_of(
    steps: np.ndarray,
    *,
    epoch_series: Series | None,
    steps_per_epoch: int | None,
    source: str,
    epoch_tag: str,
) -> tuple[np.ndarray, str]:
    if steps_per_epoch is not None:
        if isinstance(steps_per_epoch, bool) or steps_per_epoch < 1:
            raise TraceImportError(f"steps per epoch must be >= 1, got {steps_per_epoch!r}")
        return (steps // steps_per_epoch).astype(np.int64), f"step // {steps_per_epoch}"
    if epoch_series is None or len(epoch_series.steps) == 0:
        raise TraceImportError(
            f"{source}: no {epoch_tag!r} scalar to take epochs from; pass --steps-per-epoch N "
            "(DWA and the scheduler need epochs)"
        )
    es = epoch_series
    if not np.all(np.isfinite(es.values)):
        raise TraceImportError(f"{source}: the {epoch_tag!r} scalar has non-finite values")
    # Each step takes the epoch last logged at or before it (the first one before that).
    idx = np.searchsorted(es.steps, steps, side="right") - 1
    epochs = np.rint(es.values[np.clip(idx, 0, None)]).astype(np.int64)
    if np.any(np.diff(epochs) < 0):
        raise TraceImportError(f"{source}: the {epoch_tag!r} scalar decreases along the steps")
    gaps = np.diff(es.steps)
    gap = int(gaps.max()) if len(gaps) else 1
    how = f"from the {epoch_tag!r} scalar"
    if gap > 1:
        how += f" (logged every <= {gap} steps: an epoch boundary is placed within {gap} steps)"
    return epochs, how


def build_trace(
    series: Mapping[str, Series],
    out: str | os.PathLike[str],
    *,
    source: str,
    run_id: str,
    options: ImportOptions | None = None,
    run_info: Mapping[str, object] | None = None,
    **kw: Any,
) -> ImportReport:
    """Write the trace `out` from scalar series by tag (see the module docstring) with
    `options` (keyword arguments override its fields)."""
    opts = import_options(options, kw)
    components, patterns, metrics = opts.components, opts.patterns, opts.metrics
    split, steps_per_epoch, epoch_tag = opts.split, opts.steps_per_epoch, opts.epoch_tag
    progress = opts.progress
    dest = Path(out)
    if dest.exists():
        raise TraceImportError(f"{dest}: already exists; choose another --out or remove it")
    if not isinstance(split, str) or not split or split == "train":
        raise TraceImportError(f"split must name an evaluated split such as 'val', got {split!r}")
    comps, mets = select_tags(
        list(series),
        components=components or {},
        patterns=patterns,
        metrics=metrics or {},
        source=source,
    )
    clash = [m for m in mets if mets[m] in comps.values()]
    if clash:
        raise TraceImportError(f"{source}: tag {mets[clash[0]]!r} is both a component and a metric")
    duplicates: dict[str, int] = {}
    clean: dict[str, Series] = {}
    for tag in [*comps.values(), *mets.values(), epoch_tag]:
        if tag in series and tag not in clean:
            clean[tag], dup = series[tag].latest_per_step()
            if dup:
                duplicates[tag] = dup
    comp_series = {c: clean[t] for c, t in comps.items()}
    steps = np.unique(np.concatenate([s.steps for s in comp_series.values()]))
    if len(steps) == 0:
        raise TraceImportError(f"{source}: the component tags hold no values")
    if steps[0] < 0:
        raise TraceImportError(f"{source}: negative step {int(steps[0])}")
    epoch_series = clean.get(epoch_tag) if steps_per_epoch is None else None
    epochs, how = _epoch_of(
        steps,
        epoch_series=epoch_series,
        steps_per_epoch=steps_per_epoch,
        source=source,
        epoch_tag=epoch_tag,
    )
    n = len(steps)
    values: dict[str, list[float | None]] = {}
    missing: dict[str, int] = {}
    times = np.full(n, np.nan)
    for c, s in comp_series.items():
        pos = np.searchsorted(steps, s.steps)
        col = np.full(n, np.nan)
        col[pos] = s.values
        have = np.zeros(n, dtype=bool)
        have[pos] = True
        if s.times is not None:
            times[pos] = np.fmin(times[pos], s.times)
        lst: list[float | None] = col.tolist()
        if not have.all():
            missing[c] = int(n - have.sum())
            for i in np.flatnonzero(~have).tolist():
                lst[i] = None
        values[c] = lst
    t0 = np.nanmin(times) if np.isfinite(times).any() else math.nan
    time_list = (times - t0).tolist() if math.isfinite(t0) else None

    # Metrics: one epoch row per epoch, the last value logged in it. A metric logged at
    # step s was evaluated with s steps done: it belongs to the epoch of step s - 1.
    metric_rows: dict[int, dict[str, float]] = {}
    metric_step: dict[int, int] = {}
    metric_time: dict[int, float] = {}
    for m, tag in mets.items():
        s = clean[tag]
        wall = (
            (s.times - t0).tolist()
            if s.times is not None and math.isfinite(t0)
            else [math.nan] * len(s.steps)
        )
        ep, _ = _epoch_of(
            np.maximum(s.steps - 1, 0),
            epoch_series=epoch_series,
            steps_per_epoch=steps_per_epoch,
            source=source,
            epoch_tag=epoch_tag,
        )
        rows = zip(ep.tolist(), s.steps.tolist(), s.values.tolist(), wall, strict=True)
        for e, st, v, w in rows:
            metric_rows.setdefault(e, {})[m] = v
            metric_step[e] = max(metric_step.get(e, st), st)
            metric_time[e] = max(metric_time.get(e, w), w)

    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.importing")
    dest.parent.mkdir(parents=True, exist_ok=True)
    names = list(comps)
    loss_cols = [F.LOSS_PREFIX + c for c in names]
    try:
        writer = TraceWriter(
            tmp,
            run_id=run_id,
            components=names,
            metrics=list(mets),
            run_info={"source": source, **(run_info or {})},
            flush_rows=200_000,
            flush_seconds=1e9,
        )
        step_list, epoch_list = steps.tolist(), epochs.tolist()
        base = {F.RUN_ID: run_id, F.KIND: F.STEP, F.SPLIT: "train"}
        cols = [values[c] for c in names]
        chunk = 100_000
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            for i in range(lo, hi):
                row = dict(base)
                row[F.EPOCH_COL] = epoch_list[i]
                row[F.STEP_COL] = step_list[i]
                if time_list is not None:
                    row[F.TIME] = time_list[i]
                for name, col in zip(loss_cols, cols, strict=True):
                    row[name] = col[i]
                writer.log(row)
            if progress is not None:
                progress("write", hi - lo, n)
        for e in sorted(metric_rows):
            writer.log_epoch(
                split=split,
                epoch=e,
                step=metric_step[e],
                metrics=metric_rows[e],
                time=metric_time[e],
            )
        writer.close()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportReport(
        trace=dest,
        run_id=run_id,
        source=source,
        step_rows=n,
        epoch_rows=len(metric_rows),
        components=comps,
        metrics=mets,
        split=split,
        epochs=how,
        missing=missing,
        duplicates=duplicates,
    )
