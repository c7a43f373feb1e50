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

from adaptive.errors import UsageError
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
    out: Path | None = None  # the folder written

    def report(self) -> list[str]:
        """What `adaptive compare` prints: verdicts, the open-loop caveat, files written."""
        n = len(self.results)
        pooled = f" (pooled over runs: mean of {n})" if n > 1 else ""
        table = self.out / "stability.csv" if self.out is not None else "stability.csv"
        return [
            f"verdict per controller{pooled}; score 0-3.5, lower is steadier:",
            self.summary(),
            "replay is open loop: confirm with a trial before going live (recommendation.md)",
            "",
            f"full stability table ({len(self.table)} metrics): {table}",
            *(f"wrote {f}" for f in [*self.figures, *self.files]),
        ]

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
    source: str | None = None,
) -> CompareOutput:
    """Replay every method over every run; one figure per run, one stability table.

    With several runs the table pools them: each metric is the mean over runs; the
    per-run tables are written beside it. With several methods, one whose inputs a trace
    lacks is left out and named in `refused` (alone, its `ReplayError` is raised). The
    next step a verdict advises is a whole command (`source`: the trace path it names);
    for a controller that looks ready, the trial that checks whether the run ends better.
    """
    from replay._advice import is_reference_trace
    from replay._compare import plot_compare
    from replay._engine import ReplayError
    from replay._stability import recommend, stability_table, verdicts
    from replay._sweep import recommended_toml

    check_format(fmt)
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
                base, kwargs = _method_args(m, params)
                r = replay(tr, base, **kwargs)
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
    label_of = _labels(results, methods)
    foreign = not all(is_reference_trace(t) for t in traces.values())
    for v in vs:
        m = label_of.get(v.label) or next((x for x in methods if x in v.label), "")
        base, given = _method_args(m, params) if m else ("", {})
        config_path = None
        if foreign and base and v.next_step.startswith("try it live"):
            # your own trainer takes the pick as a file (--adaptive-config PATH)
            dest = out / f"recommended-{_safe(m.replace(':', '-'))}.toml"
            snippet = recommended_toml(
                base, given, source=source or "", by="compare", path=str(dest)
            )
            config_path = write_text(dest, snippet)
            files.append(config_path)
        nxt = whole_command(
            v.next_step, list(traces.values()), base, given, source, config_path=config_path
        )
        text = text.replace(f"Next: {v.next_step}.", f"Next: {nxt}.")
        v.next_step = nxt
    if refused:
        text += "\n" + "\n".join(f"{m}: not replayed — {why}" for m, why in refused.items())
    files.append(write_text(out / "recommendation.md", text + "\n"))
    return CompareOutput(results, pooled, per_run, figures, files, text, vs, refused, notes, out)


def _method_args(token: str, params: Mapping[str, Mapping[str, Any]]) -> tuple[str, dict]:
    """A method token (`dwa`, `scheduler`, `scheduler:gtf`) -> the method to replay and its
    keyword parameters (the law of `scheduler:LAW` among them)."""
    from replay._common import split_law

    base, law = split_law(token)
    given = dict(params.get(token, {}))
    return base, ({"law": law, **given} if law is not None else given)


def _labels(results: Mapping[str, list[ReplayResult]], methods: Sequence[str]) -> dict[str, str]:
    """Table label (`result_labels`: `scheduler(law=gtf)` when a method repeats) -> the
    method token it was replayed from, from the first run that replayed every method."""
    from replay._stability import result_labels

    for rs in results.values():
        if len(rs) == len(methods):
            return dict(zip(result_labels(rs), methods, strict=True))
    return {}


def whole_command(
    next_step: str,
    traces: Sequence[Trace],
    method: str,
    params: Mapping[str, Any],
    source: str | None,
    *,
    config_path: str | Path | None = None,
) -> str:
    """A verdict's next step with every command in it whole and pasteable: "try it live"
    becomes the trial (`trial_advice`; `config_path`: the recommended file a foreign
    trace's trial passes to the user's command), a bare `sweep -m ...` gets
    `adaptive sweep TRACE`."""
    import re

    from replay._advice import shell_arg, trial_advice

    if next_step.startswith("try it live") and method:
        advice = trial_advice(traces, method, params, config_path=config_path)
        why = "; ".join(advice[1:]) if len(advice) > 1 else "replay cannot tell; docs/OUTCOMES.md"
        # the command ends before " (": nothing glued to it when it ends a sentence
        return f"check that the run ends better: {advice[0]} ({why})"
    where = shell_arg(source) if source else "TRACE"
    return re.sub(r"\(sweep (-m [^)]*)\)", rf"(adaptive sweep {where} \1)", next_step)


FIGURE_FORMATS = ("png", "svg", "pdf")


def check_format(fmt: str) -> None:
    """Refuse a figure format other than png, svg or pdf (`UsageError`, one line)."""
    if fmt not in FIGURE_FORMATS:
        raise UsageError(f"--format must be {', '.join(FIGURE_FORMATS)}, got {fmt!r}")


@dataclass
class ReplayRunsOutput:
    """What `replay_runs` produced."""

    results: dict[str, ReplayResult]  # run id -> the replayed controller
    summaries: dict[str, pd.DataFrame]  # run id -> per component / parameter summary
    pooled: pd.DataFrame | None  # mean of the summaries over runs (None for one run)
    files: list[Path] = field(default_factory=list)  # per run: the table, then the figure
    lines: list[str] = field(default_factory=list)  # what the CLI prints
    table: pd.DataFrame | None = None  # one row per run (`fleet_table`; None for one run)

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
    given: Mapping[str, Any] | None = None,
    source: str | Path | None = None,
) -> ReplayRunsOutput:
    """Replay one controller over every run; write `<stem>.parquet` and `<stem>.<fmt>` per
    run (into `out`, or `out/<run id>` with several runs). The stem names the method and
    the parameters given (`given`, default `params`; `output_stem`), so a replay with other
    values writes beside an earlier one instead of over it.

    With several runs, also the summary table across them, `<stem>-fleet.parquet` and
    `.csv` in `out`: one row per run (`replay._fleet_table.result_row`), the table
    `adaptive replay --jobs N` writes. `source`, the path the runs were read from, names
    them as the fleet does (`replay._fleet_table.run_keys`: for a folder of run folders, the
    run folder and its trace relative to `source`); without it, by run id.

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

    check_format(fmt)
    if not traces:
        raise ValueError("no runs to replay")
    params = dict(params or {})
    results = {rid: replay(tr, method, progress=progress, **params) for rid, tr in traces.items()}
    many = len(results) > 1
    summaries: dict[str, pd.DataFrame] = {}
    files: list[Path] = []
    lines: list[str] = []
    stem = output_stem(method, given if given is not None else params)
    for rid, result in results.items():
        dest = out / _safe(rid) if many else out
        table = write_frame(result.frame, dest / f"{stem}.parquet")
        figure = plot_result(result, dest / f"{stem}.{fmt}", trace=traces[rid])
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
    fleet = None
    if many:
        from replay._fleet_table import fleet_table, result_row, run_keys

        pooled = pd.concat(summaries.values()).groupby(level=0, sort=False).mean()
        lines.append(f"== pooled over {len(results)} runs (mean)")
        lines.append(pooled.to_string(float_format=_fmt4g))
        keys = run_keys(traces, Path(source) if source is not None else None)
        rows = []
        for rid, result in results.items():
            key, where = keys[rid]
            skipped = len(traces[rid].skipped_parts)
            rows.append(result_row(key, traces[rid].run_id, where, method, result, skipped))
        fleet = fleet_table(rows)
        fleet_files = [
            write_frame(fleet, out / f"{stem}-fleet.parquet"),
            write_csv(fleet, out / f"{stem}-fleet.csv", index=False),
        ]
        files += fleet_files
        lines.append(f"wrote {fleet_files[0]} and {fleet_files[1]} (one row per run)")
    return ReplayRunsOutput(results, summaries, pooled, files, lines, fleet)


def output_stem(method: str, params: Mapping[str, Any] | None) -> str:
    """`replay-dwa`, or `replay-dwa-adjustment_range=0.1-temperature=1` with parameters
    (sorted by name): one file name per configuration, safe for file systems and shells."""
    parts = [f"replay-{method}"]
    for k, v in sorted((params or {}).items()):
        shown = f"{v:g}" if isinstance(v, float) else str(v)
        parts.append(f"{_safe(k)}={_safe(shown)}")
    return "-".join(parts)


def _fmt4(v: float) -> str:
    return f"{v:.4f}"


def _fmt4g(v: float) -> str:
    return f"{v:.4g}"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


SHOWN_ROWS = 10  # sweep configurations printed; sweep.csv holds all of them


@dataclass
class SweepRunsOutput:
    """What `sweep_runs` produced and what the CLI prints about it."""

    result: Any  # the SweepResult
    files: list[Path] = field(default_factory=list)
    recommended: Path | None = None  # recommended.toml, None when nothing is worth it
    notes: list[str] = field(default_factory=list)  # input fallbacks, of every run
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The report: input notes, the ranked table, the verdict, the next step, files."""
        return "\n".join(self.lines)


def sweep_runs(
    traces: Mapping[str, Trace],
    method: str,
    grid: Mapping[str, Sequence[Any]],
    out: Path,
    *,
    fixed: Mapping[str, Any] | None = None,
    fmt: str = "png",
    progress: Callable[[int], None] | None = None,
    source: str = "",
    stem: str = "sweep",
    recommend_file: bool = True,
) -> SweepRunsOutput:
    """Sweep `method` over `grid` on every run and write the outputs into `out`.

    Writes `<stem>.csv` (ranked; per run `<stem>-<run>.csv` too with several runs), the
    figure `<stem>.<fmt>` and, with `recommend_file`, `recommended.toml` (an older one is
    removed when nothing is recommended, so stale advice cannot outlive this sweep). A run
    whose inputs the method lacks is refused (`ReplayError`) before anything is replayed.
    """
    from replay._inputs import check_inputs
    from replay._sweep import plot_heatmap, recommended_toml, sweep

    check_format(fmt)
    fixed = dict(fixed or {})
    clash = sorted(set(fixed) & set(grid))
    if clash:
        raise UsageError(f"{', '.join(clash)} given both as --param and --grid")
    many = len(traces) > 1
    notes: list[str] = []
    for rid, trace in traces.items():
        for note in check_inputs(trace, method, fixed):
            notes.append(f"{rid}: {note}" if many else note)
    res = sweep(traces, method, grid, fixed=fixed, progress=progress)
    files = [write_csv(res.table, out / f"{stem}.csv", index=False)]
    if many:
        for rid, t in res.per_run.items():
            files.append(write_csv(t, out / f"{stem}-{_safe(rid)}.csv", index=False))
    heat = plot_heatmap(res, out / f"{stem}.{fmt}")
    if heat is not None:
        files.append(heat)
    rec: Path | None = None
    if recommend_file:
        stale = out / "recommended.toml"
        if res.best is not None:
            text = recommended_toml(method, res.best, source=source, path=str(stale))
            rec = write_text(stale, text)
            files.append(rec)
        elif stale.exists():
            stale.unlink()
    lines = [f"input: {n}" for n in notes]
    pooled = " (pooled over runs: mean score and effect)" if many else ""
    n = len(res.table)
    shown = res.table.drop(columns=["problems"], errors="ignore").head(SHOWN_ROWS)
    rows = (
        f"the first {SHOWN_ROWS} shown, all {n} in {files[0]}"
        if n > SHOWN_ROWS
        else "recommended first"
    )
    lines.append(
        f"{n} configurations{pooled}; effect = mean |delta|, score: lower = more stable "
        f"(0-3.5); ranked, {rows}:"
    )
    lines.append(shown.to_string(index=False, float_format=_fmt4g))
    lines.append("")
    lines.append(res.verdict)
    if res.best is not None:
        from replay._advice import shell_arg, trial_advice

        advice = trial_advice(list(traces.values()), method, res.best, config_path=rec)
        lines.append(f"next: check that the run ends better: {advice[0]}")
        lines.extend(f"    {a}" for a in advice[1:])
        if rec is not None and len(advice) == 1:
            lines.append(
                f"then, if it does, switch it on: adaptive train --config {shell_arg(str(rec))}"
            )
    lines.extend(f"wrote {f}" for f in files)
    return SweepRunsOutput(res, files, rec, notes, lines)
