"""Workflows behind `adaptive compare`, `adaptive sweep` and `adaptive demo`.

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


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
