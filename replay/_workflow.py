"""Workflows behind `adaptive replay`, `adaptive compare`, `adaptive sweep` and `adaptive demo`.

Outputs are written under a temporary name and renamed, so a folder never holds a partial
file presented as complete.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from adaptive.trace import Trace
from adaptive.util import atomic_write
from replay._engine import ReplayResult, replay
from replay._stability import Verdict


def write_text(path: Path, text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, "utf-8"))


def write_csv(frame: pd.DataFrame, path: Path, **kw: Any) -> Path:
    """Write a CSV table atomically."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, **kw))


@dataclass
class CompareOutput:
    """What `compare` produced."""

    results: dict[str, list[ReplayResult]]  # run id -> one result per method
    table: pd.DataFrame  # stability metrics, rows = metric, columns = method (pooled over runs)
    per_run: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    recommendation: str = ""
    verdicts: list[Verdict] = field(default_factory=list)  # one per column of `table`
    refused: dict[str, str] = field(default_factory=dict)  # method -> why it was not replayed
    notes: dict[str, list[str]] = field(default_factory=dict)  # method -> fallbacks used

    def summary(self) -> str:
        """A few lines for the terminal: one per controller (verdict, what drove it, what
        to do next), then refused controllers and fallbacks; the full table is in files."""
        lines = []
        for v in self.verdicts:
            lines.append(v.line())
            lines.append(f"    next: {v.next_step}")
            lines.extend(f"    caveat: {c}" for c in v.caveats)
            lines.extend(f"    input: {n}" for n in self.notes.get(v.label, []))
        for m, why in self.refused.items():
            lines.append(f"{m}: not replayed — {why}")
        return "\n".join(lines)


def compare(
    traces: Mapping[str, Trace],
    methods: Sequence[str],
    out: Path,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    fmt: str = "png",
    progress: Callable[[int], None] | None = None,
) -> CompareOutput:
    """Replay every method over every run; one figure per run, one stability table.

    With several runs the table pools them: each metric is the mean over runs; the
    per-run tables are written beside it. With several methods, one whose inputs a trace
    lacks is left out and named in `refused` (alone, its `ReplayError` is raised).
    """
    from replay._compare import plot_compare
    from replay._engine import ReplayError
    from replay._stability import recommend, stability_table, verdicts

    params = params or {}
    results: dict[str, list[ReplayResult]] = {}
    per_run: dict[str, pd.DataFrame] = {}
    figures: list[Path] = []
    files: list[Path] = []
    refused: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    many = len(traces) > 1
    for rid, tr in traces.items():
        rs = []
        for m in methods:
            try:
                r = replay(tr, m, **dict(params.get(m, {})))
            except ReplayError as exc:
                if len(methods) == 1:
                    raise
                refused.setdefault(m, str(exc))
                continue
            finally:
                if progress is not None:
                    progress(1)
            rs.append(r)
            for n in r.notes:
                if n not in notes.setdefault(m, []):
                    notes[m].append(n)
        if not rs:
            raise ReplayError(next(iter(refused.values())))
        results[rid] = rs
        table = stability_table(rs)
        per_run[rid] = table
        name = f"compare-{_safe(rid)}.{fmt}" if many else f"compare.{fmt}"
        figures.append(plot_compare(tr, rs, out / name))
        if many:
            files.append(write_csv(table, out / f"stability-{_safe(rid)}.csv"))
    if many:
        stacked = pd.concat(per_run.values(), keys=list(per_run), names=["run", "metric"])
        pooled = stacked.groupby(level="metric", sort=False).mean()
    else:
        pooled = next(iter(per_run.values()))
    files.append(write_csv(pooled, out / "stability.csv"))
    # verdicts from the printed table itself (pooled: mean metrics, mean score)
    columns = {c: pooled[c].dropna().to_dict() for c in pooled.columns}
    text = recommend(columns)
    vs = verdicts(columns)
    if refused:
        text += "\n" + "\n".join(f"{m}: not replayed — {why}" for m, why in refused.items())
    files.append(write_text(out / "recommendation.md", text + "\n"))
    return CompareOutput(results, pooled, per_run, figures, files, text, vs, refused, notes)


FIGURE_FORMATS = ("png", "svg", "pdf")


@dataclass
class ReplayRunsOutput:
    """What `replay_runs` produced."""

    results: dict[str, ReplayResult]  # run id -> the replayed controller
    summaries: dict[str, pd.DataFrame]  # run id -> per component / parameter summary
    pooled: pd.DataFrame | None  # mean of the summaries over runs (None for one run)
    files: list[Path] = field(default_factory=list)  # per run: the table, then the figure
    lines: list[str] = field(default_factory=list)  # what the CLI prints

    def text(self) -> str:
        """The report: per run the per-epoch scales (weighting) or the changes by reason
        (scheduler), the summary, fallbacks used and files written; then the pooled one."""
        return "\n".join(self.lines)


def replay_runs(
    traces: Mapping[str, Trace],
    method: str,
    out: Path,
    *,
    params: Mapping[str, Any] | None = None,
    fmt: str = "png",
    progress: Callable[[int], None] | None = None,
) -> ReplayRunsOutput:
    """Replay one controller over every run; write `replay-<method>.parquet` and
    `replay-<method>.<fmt>` per run (into `out`, or `out/<run id>` with several runs).

    Every run is replayed before anything is written, so a run the method refuses
    (`ReplayError`) or a bad parameter (`ValueError`) leaves `out` untouched. `progress`
    receives the number of steps replayed.
    """
    from replay._plots import plot_result
    from replay._summary import (
        per_epoch_scale,
        reason_counts,
        scheduler_summary,
        weighting_summary,
        write_frame,
    )

    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FIGURE_FORMATS)}, got {fmt!r}")
    if not traces:
        raise ValueError("no runs to replay")
    params = dict(params or {})
    results = {rid: replay(tr, method, progress=progress, **params) for rid, tr in traces.items()}
    many = len(results) > 1
    summaries: dict[str, pd.DataFrame] = {}
    files: list[Path] = []
    lines: list[str] = []
    for rid, result in results.items():
        dest = out / _safe(rid) if many else out
        table = write_frame(result.frame, dest / f"replay-{method}.parquet")
        figure = plot_result(result, dest / f"replay-{method}.{fmt}", trace=traces[rid])
        files += [table, figure]
        if many:
            lines.append(f"== run {rid}")
        if result.kind == "weighting":
            r = float(result.params.get("adjustment_range", 0.0))
            lines.append(f"mean scale per epoch ({method}, before the ±{r:g} clamp):")
            lines.append(per_epoch_scale(result).to_string(float_format=_fmt4))
            lines.append("")
            summary = weighting_summary(result)
        else:
            summary = scheduler_summary(result)
            counts = reason_counts(result)
            changes = ", ".join(f"{k}={v}" for k, v in counts.items()) or "none"
            lines.append(f"changes by reason: {changes}")
        summaries[rid] = summary
        lines.append(summary.to_string(float_format=_fmt4g))
        lines.extend(f"input: {note}" for note in result.notes)
        lines.append(f"wrote {table} and {figure}")
    pooled = None
    if many:
        pooled = pd.concat(summaries.values()).groupby(level=0, sort=False).mean()
        lines.append(f"== pooled over {len(results)} runs (mean)")
        lines.append(pooled.to_string(float_format=_fmt4g))
    return ReplayRunsOutput(results, summaries, pooled, files, lines)


def _fmt4(v: float) -> str:
    return f"{v:.4f}"


def _fmt4g(v: float) -> str:
    return f"{v:.4g}"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
