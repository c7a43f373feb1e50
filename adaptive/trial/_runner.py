"""The trial runner: plan the arms, refuse what cannot be compared, train every (arm, seed)
on an engine (reusing finished runs), optionally size the trial from a pilot, then read the
traces back and write the report.

A trial folder holds `trial-design.json` (what the trial is: target, arms with their
resolved-config fingerprints, metric, reduction, design), one folder per arm and seed
(`<arm>/seed<k>/`, each with `trial-config.json` and, once finished, `trial-done.json`),
and the report (`trial.md`, `trial.csv`, `runs.csv`, `trial.png`). A second trial into the
same folder runs only when its design matches (then finished runs are reused, and it says
so); otherwise it is refused.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptive._checks import atomic_write
from adaptive.trace import read_trace
from adaptive.trial._engines import Job, LocalEngine, unpack
from adaptive.trial._report import (
    DEFAULT_METRIC,
    DEFAULT_REDUCE,
    REFERENCE_SECONDARY,
    Metric,
    TrialResult,
    analyse,
    best,
    parse_metric,
    parse_reduce,
    reduce_series,
    series,
)
from adaptive.trial._stats import pilot_sd, seeds_needed
from adaptive.trial._targets import (
    TRACE,
    Arm,
    ReferenceTarget,
    Target,
    TrialError,
    safe_name,
)

__all__ = ["read_trial", "run_trial"]

DESIGN = "trial-design.json"
FINGERPRINT = "trial-config.json"  # what a run folder was trained with (reuse check)
DONE = "trial-done.json"
BASELINE = "baseline"


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1), "utf-8"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _secondaries(target: Target, secondary: Sequence[str] | None, primary: Metric) -> list[Metric]:
    if secondary is None:
        names = REFERENCE_SECONDARY if target.kind == "reference" else ()
    else:
        names = tuple(secondary)
    out = []
    for text in names:
        higher = text.endswith(":higher")
        m = parse_metric(text.removesuffix(":higher"), higher)
        if m.key != primary.key:
            target.check_metric(m.split, m.name)
            out.append(m)
    return out


def available_metrics(epochs: pd.DataFrame) -> list[str]:
    """`split/name` of every metric a trace's epoch rows hold."""
    out = []
    if epochs is None or not len(epochs):
        return out
    for split in dict.fromkeys(epochs["split"]):
        rows = epochs[epochs["split"] == split]
        for col in rows.columns:
            if col.startswith("metric/") and rows[col].notna().any():
                out.append(f"{split}/{col[7:]}")
        if "loss_total" in rows.columns and rows["loss_total"].notna().any():
            out.append(f"{split}/loss")
    return out


def _check_trace_metric(run_dir: Path, primary: Metric) -> None:
    epochs = read_trace(run_dir / TRACE).epochs
    have = available_metrics(epochs)
    if primary.key not in have:
        raise TrialError(
            f"--metric {primary.key}: not in the trace {run_dir / TRACE}; it has "
            + (", ".join(have) or "no evaluation rows (log_epoch)")
        )


def run_trial(
    out: str | os.PathLike[str],
    candidates: Sequence[str] = (),
    *,
    target: Target | None = None,
    seeds: int = 3,
    first_seed: int = 0,
    config: str | os.PathLike[str] | None = None,
    sets: Sequence[str] = (),
    epochs: int | None = None,
    quick: bool = False,
    metric: str = DEFAULT_METRIC,
    reduce: str = DEFAULT_REDUCE,
    higher_is_better: bool = False,
    secondary: Sequence[str] | None = None,
    placebo: bool = False,
    placebo_override: str | None = None,
    target_mde: float | None = None,
    max_seeds: int | None = None,
    engine: Any = None,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> TrialResult:
    """Train the baseline and every candidate (and the placebo) on the same seeds, then
    compare them on the primary `metric` (`split/name`, reduced by `reduce`: `final` or
    `lastK`). `target` is what trains (default: the reference trainer with `config`,
    `sets`, `quick`, `epochs`); `engine` where (default: `LocalEngine(jobs)`).

    With `target_mde` (a fraction of the baseline mean, e.g. 0.05) the `seeds` first seeds
    are a pilot: the sd of the paired differences is re-estimated from their second moment
    less the planned effect (`pilot_sd`'s adjusted estimate: the sign of the observed
    effect does not enter, though its size still moves n, as any variance estimate's does),
    the seeds needed for that MDE (at most `max_seeds`) run in one batch, and the trial is
    analysed once. Writes the report into `out` and returns it.
    """
    say = progress or (lambda _m: None)
    for name, v, low in (("--seeds", seeds, 1), ("--jobs", jobs, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise TrialError(f"{name} must be an integer >= {low}, got {v!r}")
    if target_mde is not None:
        if not (isinstance(target_mde, int | float) and 0 < target_mde < 1):
            raise TrialError(
                f"--target-mde must be a fraction in (0, 1) such as 5%, got {target_mde!r}"
            )
        if max_seeds is None or max_seeds < seeds:
            raise TrialError("--target-mde needs --max-seeds N with N >= --seeds (the pilot)")
    elif max_seeds is not None:
        raise TrialError("--max-seeds goes with --target-mde")
    if seeds < 2 and target_mde is not None:
        raise TrialError("a pilot needs --seeds >= 2")
    if target is None:
        target = ReferenceTarget(
            Path(config) if config is not None else None, tuple(sets), quick, epochs
        )
    elif config is not None or sets or quick or epochs is not None:
        raise TrialError("--config, --set, --quick and --epochs are for the reference trainer")
    if not candidates and not placebo:
        raise TrialError("give at least one --candidate (or --placebo)")
    primary = parse_metric(metric, higher_is_better)
    reduce_k = parse_reduce(reduce)
    target.check_metric(primary.split, primary.name)
    second = _secondaries(target, secondary, primary)

    # ---- arms: unique names, no arm equal to the baseline or to another arm
    arms: dict[str, Arm] = {BASELINE: target.baseline()}
    extra = [target.candidate(c) for c in candidates]
    if placebo:
        extra.append(target.placebo(placebo_override))
    elif placebo_override is not None:
        raise TrialError("--placebo-override goes with --placebo")
    for arm in extra:
        if arm.name in arms or safe_name(arm.name) in {safe_name(a) for a in arms}:
            raise TrialError(f"two arms are both named {arm.name!r}; name them 'NAME: ...'")
        arms[arm.name] = arm
    prints = {name: target.fingerprint(arm) for name, arm in arms.items()}
    seen: dict[str, str] = {}
    for name, fp in prints.items():
        if fp in seen:
            other = seen[fp]
            what = "the baseline" if other == BASELINE else f"candidate {other!r}"
            raise TrialError(
                f"candidate {name!r} resolves to the same configuration as {what}: "
                "nothing to compare"
            )
        seen[fp] = name
    if isinstance(target, ReferenceTarget):
        threads = int(target.config_of(arms[BASELINE])["run"]["threads"])
        cores = os.cpu_count() or 1
        if isinstance(engine, LocalEngine | None) and jobs * max(threads, 1) > cores:
            say(f"note: {jobs} runs × run.threads={threads} > {cores} cores: oversubscribed")

    engine = engine or LocalEngine(jobs)
    if hasattr(engine, "check"):
        engine.check()
    folder = Path(out)
    design: dict[str, Any] = {
        "target": target.describe(),
        "arms": prints,
        "first_seed": first_seed,
        "metric": primary.key,
        "higher_is_better": primary.higher_is_better,
        "reduce_k": reduce_k,
        "secondary": [m.key + (":higher" if m.higher_is_better else "") for m in second],
        "target_mde": target_mde,
        "max_seeds": max_seeds,
        "pilot_seeds": seeds if target_mde is not None else None,
    }
    design |= _check_design(folder, design, say)
    design |= {"engine": engine.describe(), "seeds": seeds}
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / DESIGN, design)

    checked: list[bool] = []

    def batch(seed_list: Sequence[int]) -> None:
        _run_batch(target, engine, arms, prints, folder, seed_list, primary, checked, say)

    seed_list = list(range(first_seed, first_seed + seeds))
    batch(seed_list)
    if target_mde is not None:
        n, text = _pilot(folder, arms, seed_list, primary, reduce_k, target_mde, max_seeds)
        design["sequential"] = text
        say(text)
        if n > seeds:
            seed_list = list(range(first_seed, first_seed + n))
            batch(seed_list)
        design["seeds"] = len(seed_list)
    dirs = {name: {s: folder / safe_name(name) / f"seed{s}" for s in seed_list} for name in arms}
    result = _finish(dirs, primary, reduce_k, second, design)
    if target_mde is not None:
        prim = result.rows("primary")
        worst = float(prim["mde_rel"].max()) if len(prim) else math.nan
        reached = math.isfinite(worst) and worst <= target_mde
        design["sequential"] += (
            f" Target MDE {target_mde:.1%}: {'reached' if reached else 'not reached'} "
            f"(largest MDE over candidates {worst:.1%} at n = {len(seed_list)})."
        )
    _write_json(folder / DESIGN, design)
    _write_report(result, folder)
    return result


#: Design keys that only say how the runs are analysed: a trial that wrote no report yet may
#: change them (a mistyped --metric stops a trial after its first run, before any report).
ANALYSIS_KEYS = frozenset({"metric", "higher_is_better", "reduce_k", "secondary"})


def _check_design(
    folder: Path, design: Mapping[str, Any], say: Callable[[str], None]
) -> dict[str, Any]:
    """Refuse a folder that holds another trial (or runs of no trial). A trial that wrote no
    report may be re-declared with another analysis (metric, reduction, secondaries): its
    runs are the same training, and the old declaration is kept under `redeclared`, which
    the returned dict carries into the new design."""
    if not folder.exists():
        return {}
    old = _read_json(folder / DESIGN)
    if old is None:
        if any(p.is_dir() for p in folder.iterdir()):
            raise TrialError(
                f"{folder} holds folders but no {DESIGN} (another tool's output, or a trial "
                "of an older version): use another --out"
            )
        return {}
    diff = [k for k in design if old.get(k) != design[k]]
    history = list(old.get("redeclared", []))
    if diff and set(diff) <= ANALYSIS_KEYS and not (folder / "trial.md").exists():
        history.append({k: old.get(k) for k in diff})
        say(
            f"note: {folder} holds a trial that wrote no report; re-declared with another "
            f"{', '.join(diff)} (the old declaration is kept in {DESIGN} under 'redeclared')"
        )
    elif diff:
        raise TrialError(
            f"{folder} holds another trial (it differs in {', '.join(diff)}); its report "
            "would be replaced: use another --out, or delete that folder"
        )
    else:
        say(f"{folder} holds this trial already: its finished runs are reused")
    return {"redeclared": history} if history else {}


def _run_batch(
    target: Target,
    engine: Any,
    arms: Mapping[str, Arm],
    prints: Mapping[str, str],
    folder: Path,
    seed_list: Sequence[int],
    primary: Metric,
    checked: list[bool],
    say: Callable[[str], None],
) -> None:
    todo: list[Job] = []
    total = 0
    for name, arm in arms.items():
        for seed in seed_list:
            total += 1
            run_dir = folder / safe_name(name) / f"seed{seed}"
            stamp = {"arm": name, "seed": seed, "config": prints[name]}
            saved = _read_json(run_dir / FINGERPRINT)
            if run_dir.exists() and saved != stamp:
                raise TrialError(
                    f"{run_dir} holds a run trained with a different config (or not by a "
                    "trial); use another --out"
                )
            if (run_dir / DONE).is_file() and (run_dir / TRACE).exists():
                if not checked:
                    _check_trace_metric(run_dir, primary)
                    checked.append(True)
                continue
            resume = (
                target.can_resume
                and getattr(engine, "resumes", False)
                and (run_dir / "checkpoint.pt").is_file()
            )
            if run_dir.exists() and not resume:
                shutil.rmtree(run_dir)  # started, nothing to resume from: start over
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_json(run_dir / FINGERPRINT, stamp)
            todo.append(Job(target, arm, seed, run_dir, resume))
    if total > len(todo):
        say(f"{total - len(todo)} of {total} runs already finished: reused")

    def done(job: Job, files: dict[str, bytes] | None) -> None:
        if files is not None:
            unpack(files, job.run_dir)
        # the run is finished whatever the metric check says: a re-declared trial reuses it
        _write_json(job.run_dir / DONE, {"arm": job.arm.name, "seed": job.seed})
        if not checked:
            _check_trace_metric(job.run_dir, primary)
            checked.append(True)

    if todo:
        engine.run(todo, done, say)


def _primary_values(run_dir: Path, primary: Metric) -> np.ndarray:
    return series(read_trace(run_dir / TRACE).epochs, primary)


def _pilot(
    folder: Path,
    arms: Mapping[str, Arm],
    seed_list: Sequence[int],
    primary: Metric,
    reduce_k: int,
    target_mde: float,
    max_seeds: int | None,
) -> tuple[int, str]:
    """Seeds needed after the pilot, from `pilot_sd`'s adjusted estimate (the second moment
    of the paired differences less the planned effect squared); and the sentence the
    report prints."""
    base = {
        s: reduce_series(_primary_values(folder / BASELINE / f"seed{s}", primary), reduce_k)
        for s in seed_list
    }
    needed, sds = 0, []
    for name in arms:
        if name == BASELINE:
            continue
        d, b = [], []
        for s in seed_list:
            v = reduce_series(
                _primary_values(folder / safe_name(name) / f"seed{s}", primary), reduce_k
            )
            if math.isfinite(v) and math.isfinite(base[s]):
                d.append(v - base[s])
                b.append(base[s])
        if len(d) < 2 or not np.mean(b):
            needed = max(needed, max_seeds or 0)
            continue
        effect = target_mde * abs(float(np.mean(b)))
        sd_plan = pilot_sd(d, effect)
        sds.append(f"{name} {sd_plan / abs(float(np.mean(b))):.1%}")
        n = seeds_needed(sd_plan, effect, cap=max(max_seeds or 2, 2)) if sd_plan > 0 else 2
        needed = max(needed, n)
    n_final = min(max(needed, len(seed_list)), max_seeds or len(seed_list))
    text = (
        f"internal pilot (Wittes & Brittain 1990) with the adjusted one-sample variance "
        f"(Kieser & Friede 2003): pilot of {len(seed_list)} seeds, planning sd of the paired "
        f"differences {', '.join(sds) or 'n/a'} of the baseline; {needed} seeds needed for an "
        f"MDE of {target_mde:.1%}, capped at --max-seeds {max_seeds}: {n_final} seeds run, "
        "analysed once."
    )
    return n_final, text


def _load(
    dirs: Mapping[str, Mapping[int, Path]], metrics: Sequence[Metric]
) -> tuple[dict[str, dict[int, dict[str, np.ndarray]]], list[pd.DataFrame]]:
    values: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    curves = []
    for arm, seeds in dirs.items():
        values[arm] = {}
        for seed, run_dir in seeds.items():
            epochs = read_trace(run_dir / TRACE).epochs
            values[arm][seed] = {m.key: series(epochs, m) for m in metrics}
            cols = [c for c in epochs.columns if c.startswith("metric/") or c == "loss_total"]
            curves.append(
                epochs[["split", "epoch", *cols]].assign(arm=arm, seed=seed, run=str(run_dir))
            )
    return values, curves


def _finish(
    dirs: Mapping[str, Mapping[int, Path]],
    primary: Metric,
    reduce_k: int,
    second: Sequence[Metric],
    design: dict[str, Any],
    notes: Sequence[str] = (),
) -> TrialResult:
    metrics = [primary, *second]
    values, curves = _load(dirs, metrics)
    if not any(len(v.get(primary.key, ())) for a in values.values() for v in a.values()):
        first = next(p for s in dirs.values() for p in s.values())
        _check_trace_metric(first, primary)
    frame, more = analyse(values, primary, reduce_k, second, baseline=BASELINE)
    if frame.empty:
        raise TrialError(
            "nothing to compare: " + ("; ".join(more) or "no candidate runs besides the baseline")
        )
    rows = []
    for arm, seeds in values.items():
        for seed, v in seeds.items():
            row: dict[str, Any] = {"arm": arm, "seed": seed, "run": str(dirs[arm][seed])}
            row["primary"] = reduce_series(v[primary.key], reduce_k)
            row["primary_best"] = best(v[primary.key], primary.higher_is_better)
            for m in second:
                row[m.key] = reduce_series(v[m.key], reduce_k)
            rows.append(row)
    design.setdefault("reduce_k", reduce_k)
    design.setdefault("metric", primary.key)
    design.setdefault("higher_is_better", primary.higher_is_better)
    return TrialResult(
        frame=frame,
        runs=pd.DataFrame(rows),
        curves=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
        design=design,
        notes=[*notes, *more],
    )


def _write_report(result: TrialResult, folder: Path) -> None:
    from adaptive.trial._figure import plot_trial

    result.folder = folder
    atomic_write(folder / "trial.csv", lambda tmp: result.frame.to_csv(tmp, index=False))
    atomic_write(folder / "runs.csv", lambda tmp: result.runs.to_csv(tmp, index=False))
    atomic_write(folder / "trial.md", lambda tmp: tmp.write_text(result.report(), "utf-8"))
    plot_trial(result, folder / "trial.png")


def read_trial(folder: str | os.PathLike[str]) -> TrialResult:
    """A finished (or partly finished) trial folder analysed again from its runs' traces,
    with the metric and reduction it declared; unfinished runs are left out (and named).
    Writes nothing."""
    root = Path(folder)
    design = _read_json(root / DESIGN)
    if not isinstance(design, dict):
        raise TrialError(f"{root}: not a trial folder (no {DESIGN})")
    primary = parse_metric(design["metric"], bool(design.get("higher_is_better")))
    second = [
        parse_metric(t.removesuffix(":higher"), t.endswith(":higher"))
        for t in design.get("secondary", [])
    ]
    dirs: dict[str, dict[int, Path]] = {}
    notes = []
    for name in design["arms"]:
        for run_dir in sorted((root / safe_name(name)).glob("seed*")):
            if not run_dir.name[4:].isdigit():
                continue
            if (run_dir / DONE).is_file():
                dirs.setdefault(name, {})[int(run_dir.name[4:])] = run_dir
            else:
                notes.append(f"{run_dir} is not finished: left out")
    result = _finish(dirs, primary, int(design["reduce_k"]), second, dict(design), notes)
    result.folder = root
    return result
