"""Outcome trials: does switching a controller on make the run end better?

Replay shows how a controller behaves on a recorded run; it cannot say whether the run
would have ended better (open loop). A trial trains the reference task with the
controllers off (the *baseline*) and with each candidate setting, on the same seeds
(paired: same data, initialisation and batch order per seed), and compares the final and
best validation metrics per seed: paired differences, a 95 % confidence interval (paired
t) and a verdict per metric (`better`, `worse`, `no clear difference`).

`run_trial` trains (resuming interrupted runs, reusing finished ones); `compare_runs`
compares runs that already exist; `trial_table` / `paired_stats` do the statistics on any
numbers. See docs/OUTCOMES.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptive.errors import InputError
from adaptive.trace import Trace, read_trace
from replay._engine import recorded_config

__all__ = [
    "METRICS",
    "QUICK_TRIAL",
    "TrialError",
    "TrialResult",
    "compare_runs",
    "paired_stats",
    "parse_candidate",
    "plot_trial",
    "read_trial",
    "run_trial",
    "t_quantile",
    "trial_table",
]

#: (split, metric) compared by a trial; every metric is lower-is-better.
METRICS: tuple[tuple[str, str], ...] = (
    ("valfree", "MPJPE"),
    ("valfree", "YawAbsDeg"),
    ("valfree", "RootDrift"),
    ("valfree", "loss"),
    ("val", "MPJPE"),
    ("val", "YawAbsDeg"),
    ("val", "RootDrift"),
    ("val", "loss"),
)
UNITS = {"MPJPE": "mm", "YawAbsDeg": "deg", "RootDrift": "m", "loss": ""}
BASELINE = "baseline"
#: Overrides that switch every controller off: the baseline arm.
CONTROLLERS_OFF = ("adaptive.loss='none'", "adaptive.scheduler=false")
#: A first look in a few minutes on 2 cores (docs/OUTCOMES.md has the measured time).
QUICK_TRIAL = (
    "run.epochs=8",
    "data.train_clips=16",
    "data.val_clips=4",
    "data.val_windows=64",
    "train.steps_per_epoch=25",
    "adaptive.update_interval=25",
    # stages of 1, 3 and 4 epochs: DWA restarts at each stage and needs two epochs of
    # history, so shorter stages would leave it neutral throughout
    "schedule.stages=[{name='teacher_forcing', epochs=1, tf_ratio=1.0, freerun_horizon=8,"
    " freerun_weight=0.0}, {name='ramp', epochs=3, tf_ratio=[0.8, 0.4],"
    " freerun_horizon=[8, 20], freerun_weight=[0.25, 0.5]}, {name='free_run', epochs=4,"
    " tf_ratio=0.4, freerun_horizon=20, freerun_weight=0.5}]",
)
DONE = "trial-done.json"
FINGERPRINT = "trial-config.json"  # what a run folder was trained with (reuse check)


class TrialError(InputError):
    """A trial that cannot run or compare (bad candidate, no runs, unpaired seeds...)."""


# ----------------------------------------------------------------------------- statistics
#: Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(dof: int) -> float:
    """Two-sided 95 % quantile of Student's t with `dof` degrees of freedom: the table up
    to 30, then the Cornish-Fisher expansion z + (z^3 + z) / (4 dof) (within 0.2 %)."""
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    if dof <= len(_T95):
        return _T95[dof - 1]
    z = 1.959964
    return z + (z**3 + z) / (4.0 * dof)


def paired_stats(candidate: Sequence[float], baseline: Sequence[float]) -> dict[str, float | str]:
    """Paired comparison of one metric (lower is better) over seeds.

    Returns `n` (finite pairs), `mean_baseline`, `mean_candidate`, `diff` (mean of
    candidate − baseline), `rel_diff` (diff / mean_baseline), `ci_low`, `ci_high` (95 %
    paired-t interval of the mean difference; NaN with fewer than 2 pairs), `diverged` /
    `baseline_diverged` (seeds whose value is NaN/inf on that side only) and `verdict`:
    `worse` when the candidate diverged on a seed where the baseline did not (a run that
    blows up is not rescued by the others), else `better` when the whole interval is below
    0, `worse` when above, else `no clear difference`. Pairs that are not finite on both
    sides never enter the interval.
    """
    c = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if c.shape != b.shape:
        raise TrialError(f"paired values must match, got {c.size} and {b.size}")
    fc, fb = np.isfinite(c), np.isfinite(b)
    diverged, baseline_diverged = int((~fc & fb).sum()), int((fc & ~fb).sum())
    ok = fc & fb
    c, b = c[ok], b[ok]
    n = int(c.size)
    d = c - b
    out: dict[str, float | str] = {
        "n": float(n),
        "mean_baseline": float(b.mean()) if n else math.nan,
        "mean_candidate": float(c.mean()) if n else math.nan,
        "diff": float(d.mean()) if n else math.nan,
    }
    mb = out["mean_baseline"]
    out["rel_diff"] = out["diff"] / abs(mb) if n and mb != 0 else math.nan  # type: ignore[operator]
    if n >= 2:
        half = t_quantile(n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
        out["ci_low"], out["ci_high"] = float(d.mean()) - half, float(d.mean()) + half
    else:
        out["ci_low"] = out["ci_high"] = math.nan
    out["diverged"], out["baseline_diverged"] = float(diverged), float(baseline_diverged)
    lo, hi = out["ci_low"], out["ci_high"]
    if diverged:
        out["verdict"] = "worse"
    elif n >= 2 and hi < 0:  # type: ignore[operator]
        out["verdict"] = "better"
    elif n >= 2 and lo > 0:  # type: ignore[operator]
        out["verdict"] = "worse"
    else:
        out["verdict"] = "no clear difference"
    return out


# ----------------------------------------------------------------------------- results
@dataclass
class TrialResult:
    """A finished comparison.

    `frame`: one row per (candidate, split, metric, stat) with the paired statistics and
    the per-seed values; `runs`: one row per run (arm, seed, run folder, final and best
    metrics); `curves`: per-epoch metrics of every run; `notes`: pairing remarks.
    """

    frame: pd.DataFrame
    runs: pd.DataFrame
    curves: pd.DataFrame
    folder: Path | None = None
    notes: list[str] = field(default_factory=list)

    def markdown(self, *, metrics: Sequence[str] | None = None) -> str:
        """The table as Markdown: one row per candidate and metric (final and best)."""
        f = self.frame
        if f.empty:
            return "(nothing to compare)"
        if metrics is not None:
            f = f[f["metric"].isin(metrics)]
        lines = [
            "| candidate | split | metric | stat | baseline | candidate | diff (95 % CI) | "
            "rel. | verdict | per seed (baseline → candidate) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in f.iterrows():
            unit = UNITS.get(str(r["metric"]), "")
            ci = (
                f"{r['diff']:+.4g} [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]"
                if math.isfinite(r["ci_low"])
                else f"{r['diff']:+.4g} (n < 2)"
            )
            lines.append(
                f"| {r['candidate']} | {r['split']} | {r['metric']}{' ' + unit if unit else ''} "
                f"| {r['stat']} | {r['mean_baseline']:.4g} | {r['mean_candidate']:.4g} | {ci} "
                f"| {r['rel_diff']:+.1%} | **{r['verdict']}** | {r['per_seed']} |"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """One line per candidate: verdict on valfree MPJPE (final) and the others'."""
        lines: list[str] = []
        f = self.frame
        if f.empty:
            return ""
        for cand in dict.fromkeys(f["candidate"]):
            sel = f[(f["candidate"] == cand) & (f["stat"] == "final") & (f["split"] == "valfree")]
            main = sel[sel["metric"] == "MPJPE"]
            if main.empty:
                continue
            m = main.iloc[0]
            others = ", ".join(
                f"{r['metric']} {r['verdict']}" for _, r in sel.iterrows() if r["metric"] != "MPJPE"
            )
            ci = (
                f"95 % CI [{m['ci_low']:+.3g}, {m['ci_high']:+.3g}] mm"
                if math.isfinite(m["ci_low"])
                else "one pair: no interval"
            )
            lines.append(
                f"{cand}: valfree MPJPE {m['mean_baseline']:.4g} -> {m['mean_candidate']:.4g} mm "
                f"({m['rel_diff']:+.1%}, {ci}, n={int(m['n'])}): {m['verdict']}"
                + (f"; {others}" if others else "")
            )
        return "\n".join(lines)


def _run_metrics(trace: Trace) -> pd.DataFrame:
    """Per-epoch metrics of one run: columns split, epoch, step and one per metric."""
    e = trace.epochs
    rows = []
    for _, r in e.iterrows():
        row = {"split": r["split"], "epoch": int(r["epoch"]), "step": int(r["step"])}
        for _, m in METRICS:
            col = "loss_total" if m == "loss" else f"metric/{m}"
            if col in r.index and not pd.isna(r[col]):
                row[m] = float(r[col])
        rows.append(row)
    return pd.DataFrame(rows)


def _arm_label(cfg: Mapping[str, Any]) -> str:
    a = cfg.get("adaptive", {}) if isinstance(cfg, Mapping) else {}
    parts = []
    if a.get("loss", "none") != "none":
        parts.append(str(a["loss"]))
    if a.get("scheduler"):
        parts.append("scheduler")
    if a.get("dry_run") and parts:
        parts.append("dry-run")
    return "+".join(parts) if parts else "off"


def _stat(df: pd.DataFrame, split: str, metric: str, stat: str) -> float:
    """`final`: the last epoch's value as recorded (NaN/inf when the run diverged there);
    `best`: the lowest finite value over epochs (NaN if none)."""
    col = df[df["split"] == split].sort_values("epoch").get(metric) if len(df) else None
    if col is None or col.empty:
        return math.nan
    if stat == "final":
        return float(col.iloc[-1])
    finite = col[np.isfinite(col.to_numpy(dtype=np.float64))]
    return float(finite.min()) if len(finite) else math.nan


def _last_epoch(df: pd.DataFrame) -> int:
    return int(df["epoch"].max()) if len(df) else -1


def trial_table(
    arms: Mapping[str, Mapping[int, pd.DataFrame]], *, baseline: str = BASELINE
) -> tuple[pd.DataFrame, list[str]]:
    """Paired statistics of every non-baseline arm against `baseline`.

    `arms[arm][seed]` is that run's per-epoch metrics (`_run_metrics`). For each metric of
    `METRICS`, `final` is the last epoch's value and `best` the lowest over epochs. Only
    seeds present in both arms are paired; the others are reported in the notes.
    """
    if baseline not in arms:
        raise TrialError(f"no {baseline!r} runs to compare against; arms: {sorted(arms)}")
    notes: list[str] = []
    rows = []
    base = arms[baseline]
    for arm, runs in arms.items():
        if arm == baseline:
            continue
        seeds = sorted(set(runs) & set(base))
        unpaired = sorted(set(runs) ^ set(base))
        if unpaired:
            notes.append(
                f"{arm}: seed(s) {unpaired} have no partner in {baseline!r} and are left out"
            )
        if not seeds:
            notes.append(f"{arm}: no seed in common with {baseline!r}: nothing to compare")
            continue
        short = [s for s in seeds if _last_epoch(runs[s]) != _last_epoch(base[s])]
        if short:
            notes.append(
                f"{arm}: seed(s) {short} ended at a different epoch than the baseline run "
                "(unfinished?): their 'final' values compare different epochs"
            )
        for split, metric in METRICS:
            for stat in ("final", "best"):
                vals = {}
                for name, group in ((arm, runs), (baseline, base)):
                    vals[name] = [_stat(group[s], split, metric, stat) for s in seeds]
                if all(math.isnan(v) for v in vals[arm] + vals[baseline]):
                    continue
                st = paired_stats(vals[arm], vals[baseline])
                if st["diverged"] or st["baseline_diverged"]:
                    bad = [s for s, v in zip(seeds, vals[arm], strict=True) if not np.isfinite(v)]
                    bad_b = [
                        s for s, v in zip(seeds, vals[baseline], strict=True) if not np.isfinite(v)
                    ]
                    notes.append(
                        f"{arm}: {split} {metric} ({stat}) is not finite for seed(s) "
                        f"{bad} of the candidate and {bad_b} of the baseline: diverged runs "
                        "count against the side that diverged, and are left out of the interval"
                    )
                per_seed = "; ".join(
                    f"s{s}: {b:.4g} → {c:.4g}"
                    for s, b, c in zip(seeds, vals[baseline], vals[arm], strict=True)
                )
                rows.append(
                    {
                        "candidate": arm,
                        "split": split,
                        "metric": metric,
                        "stat": stat,
                        **st,
                        "seeds": ",".join(str(s) for s in seeds),
                        "per_seed": per_seed,
                    }
                )
    return pd.DataFrame(rows), notes


def _collect(
    arms_dirs: Mapping[str, Mapping[int, Path]],
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    metrics: dict[str, dict[int, pd.DataFrame]] = {}
    run_rows = []
    curves = []
    for arm, seeds in arms_dirs.items():
        metrics[arm] = {}
        for seed, run_dir in seeds.items():
            trace = read_trace(run_dir / "trace.parquet")
            df = _run_metrics(trace)
            metrics[arm][seed] = df
            curves.append(df.assign(arm=arm, seed=seed))
            row: dict[str, Any] = {"arm": arm, "seed": seed, "run": str(run_dir)}
            for split, m in METRICS:
                row[f"{split}/{m}/final"] = _stat(df, split, m, "final")
                row[f"{split}/{m}/best"] = _stat(df, split, m, "best")
            run_rows.append(row)
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return metrics, pd.DataFrame(run_rows), curves_df


# ----------------------------------------------------------------------------- candidates
def parse_candidate(text: str) -> tuple[str, list[str], Path | None]:
    """`recommended.toml` (a config file) or `"adaptive.loss='dwa'; adaptive.scheduler=true"`
    (overrides separated by `;`), optionally named `name=...:` first
    (`"dwa-t1: adaptive.loss='dwa'; adaptive.dwa.temperature=1"`) -> (name, overrides, file).
    """
    text = text.strip()
    if not text:
        raise TrialError("--candidate must not be empty")
    name = ""
    m = re.match(r"^([A-Za-z0-9_.+-]+):\s+(.*)$", text)
    if m:
        name, text = m.group(1), m.group(2)
    path = Path(text)
    if text.endswith(".toml"):
        if not path.is_file():
            raise TrialError(f"--candidate {text}: config file not found")
        try:
            cfg = tomllib.loads(path.read_text("utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise TrialError(f"--candidate {text}: not valid TOML ({exc})") from None
        return name or _arm_label(cfg) or path.stem, [], path
    sets = [s.strip() for s in text.split(";") if s.strip()]
    for s in sets:
        if "=" not in s:
            raise TrialError(f"--candidate: {s!r} is not section.key=value")
    if not name:
        from adaptive.train.config import ConfigError, load_config

        try:
            name = _arm_label(load_config(overrides=sets))
        except ConfigError as exc:
            raise TrialError(f"--candidate {text!r}: {exc}") from None
    return name, sets, None


# ----------------------------------------------------------------------------- training
def _train_one(cfg: dict[str, Any], run_dir: str, resume: bool, threads: int) -> str:
    """One run in this process (also the worker of `--jobs`)."""
    import torch

    from adaptive.train.trainer import Trainer

    torch.set_num_threads(threads)
    cfg["run"]["threads"] = threads
    summary = Trainer(cfg, run_dir, resume=resume).train()
    if summary.interrupted:
        raise KeyboardInterrupt
    (Path(run_dir) / DONE).write_text(
        json.dumps({"epochs": summary.epochs_done, "seconds": summary.seconds}), "utf-8"
    )
    return run_dir


def _fingerprint(cfg: Mapping[str, Any]) -> str:
    """A hash of the resolved training config, without what may differ between two
    invocations of the same trial (`run.threads` follows `--jobs`)."""
    import hashlib

    clean = json.loads(json.dumps(cfg, default=list))
    clean.get("run", {}).pop("threads", None)
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:16]


def _check_folder(run_dir: Path, arm: str, seed: int, fingerprint: str) -> None:
    """Refuse to reuse or resume a run folder trained with another config."""
    p = run_dir / FINGERPRINT
    if not run_dir.exists():
        return
    try:
        saved = json.loads(p.read_text("utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        saved = None
    if saved != fingerprint:
        raise TrialError(
            f"{run_dir} holds a run of {arm!r} seed {seed} trained with a different config "
            "(or not by a trial); use another --out, or name the candidate differently"
        )


def _is_done(run_dir: Path, epochs: int) -> bool:
    p = run_dir / DONE
    if not p.is_file():
        return False
    try:
        return int(json.loads(p.read_text("utf-8"))["epochs"]) >= epochs
    except (ValueError, KeyError, TypeError):
        return False


def run_trial(
    out: str | os.PathLike[str],
    candidates: Sequence[str],
    *,
    seeds: int = 3,
    first_seed: int = 0,
    config: str | os.PathLike[str] | None = None,
    sets: Sequence[str] = (),
    epochs: int | None = None,
    quick: bool = False,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> TrialResult:
    """Train the baseline (controllers off) and every candidate on `seeds` seeds, then
    compare them (see `trial_table`). Writes `trial.csv`, `trial.md`, `runs.csv` and
    `trial.png` into `out`; each run lives in `out/<arm>/seed<k>/`.

    Finished runs are reused and interrupted ones resumed, so a trial can be stopped and
    started again. With `jobs > 1` runs go to that many processes, each with
    `cores // jobs` torch threads (at least 1), so the machine is not oversubscribed.
    """
    from adaptive.train.config import ConfigError, load_config

    if seeds < 1:
        raise TrialError(f"--seeds must be >= 1, got {seeds}")
    if jobs < 1:
        raise TrialError(f"--jobs must be >= 1, got {jobs}")
    if not candidates:
        raise TrialError("give at least one --candidate")
    folder = Path(out)
    base_sets = [*(QUICK_TRIAL if quick else ()), *sets]
    if epochs is not None:
        base_sets.append(f"run.epochs={int(epochs)}")
    arms: dict[str, tuple[list[str], Path | None]] = {BASELINE: (list(CONTROLLERS_OFF), None)}
    for text in candidates:
        name, overrides, path = parse_candidate(text)
        if name in arms:
            raise TrialError(f"two candidates are both named {name!r}; name them 'NAME: ...'")
        arms[name] = (overrides, path)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    todo: list[tuple[dict[str, Any], Path, bool]] = []
    dirs: dict[str, dict[int, Path]] = {}
    for arm, (overrides, path) in arms.items():
        dirs[arm] = {}
        for k in range(seeds):
            seed = first_seed + k
            run_dir = folder / _safe(arm) / f"seed{seed}"
            dirs[arm][seed] = run_dir
            try:
                cfg = load_config(
                    config if path is None else path,
                    [*base_sets, *overrides, f"run.seed={seed}", f"run.threads={threads}"],
                )
                if path is not None and config is not None:
                    raise TrialError("--config and a .toml candidate cannot be combined")
            except ConfigError as exc:
                raise TrialError(f"{arm}: {exc}") from None
            fingerprint = _fingerprint(cfg)
            _check_folder(run_dir, arm, seed, fingerprint)
            if _is_done(run_dir, cfg["run"]["epochs"]):
                continue
            resume = (run_dir / "checkpoint.pt").is_file()
            if not resume and run_dir.exists():
                _clear(run_dir)  # started but no checkpoint yet: start over
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / FINGERPRINT).write_text(json.dumps({"config": fingerprint}), "utf-8")
            todo.append((cfg, run_dir, resume))
    folder.mkdir(parents=True, exist_ok=True)
    done = sum(len(v) for v in dirs.values()) - len(todo)
    total = sum(len(v) for v in dirs.values())
    if progress is not None and done:
        progress(f"{done} of {total} runs already finished: reused")
    if jobs == 1:
        for i, (cfg, run_dir, resume) in enumerate(todo, 1):
            if progress is not None:
                progress(
                    f"[{done + i}/{total}] training {run_dir}" + (" (resume)" if resume else "")
                )
            _train_one(cfg, str(run_dir), resume, threads)
    elif todo:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))
        try:
            futures = {
                pool.submit(_train_one, cfg, str(run_dir), resume, threads): run_dir
                for cfg, run_dir, resume in todo
            }
            for i, fut in enumerate(as_completed(futures), 1):
                fut.result()
                if progress is not None:
                    progress(f"[{done + i}/{total}] finished {futures[fut]}")
        except BaseException:
            # a failed or interrupted run: do not wait for the queued ones (running ones end
            # with the pool; finished runs are kept, so the same command resumes)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return _finish(dirs, folder)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def _clear(run_dir: Path) -> None:
    import shutil

    shutil.rmtree(run_dir)


def _finish(dirs: Mapping[str, Mapping[int, Path]], folder: Path | None) -> TrialResult:
    metrics, runs, curves = _collect(dirs)
    frame, notes = trial_table(metrics)
    if frame.empty:
        raise TrialError(
            "nothing to compare: " + ("; ".join(notes) or "no candidate runs besides the baseline")
        )
    result = TrialResult(frame=frame, runs=runs, curves=curves, folder=folder, notes=notes)
    if folder is not None:
        from replay._workflow import write_csv, write_text

        write_csv(frame, folder / "trial.csv", index=False)
        write_csv(runs, folder / "runs.csv", index=False)
        text = "\n\n".join(
            [
                "# Outcome trial",
                "Paired by seed; 95 % CI of the mean difference (candidate − baseline) by "
                "paired t; lower is better for every metric. `final`: last epoch; `best`: "
                "lowest over epochs.",
                result.summary(),
                *(["Notes: " + "; ".join(notes)] if notes else []),
                result.markdown(),
            ]
        )
        write_text(folder / "trial.md", text + "\n")
        plot_trial(result, folder / "trial.png")
    return result


def read_trial(folder: str | os.PathLike[str]) -> TrialResult:
    """A finished (or partly finished) trial folder, compared again from its runs' traces
    (`<folder>/<arm>/seed<k>/`); runs without a trace yet are left out. Writes nothing."""
    root = Path(folder)
    if not (root / BASELINE).is_dir():
        raise TrialError(f"{root}: not a trial folder (no {BASELINE}/ runs)")
    dirs: dict[str, dict[int, Path]] = {}
    for arm_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for run_dir in sorted(arm_dir.glob("seed*")):
            if (run_dir / "trace.parquet").exists() and run_dir.name[4:].isdigit():
                dirs.setdefault(arm_dir.name, {})[int(run_dir.name[4:])] = run_dir
    result = _finish(dirs, None)
    result.folder = root
    return result


def compare_runs(
    runs: Sequence[str | os.PathLike[str]],
    *,
    baseline: str | None = None,
    out: str | os.PathLike[str] | None = None,
) -> TrialResult:
    """The trial's comparison over runs that already exist (run folders or traces).

    Runs are grouped into arms by the controllers their recorded config had on (`off`,
    `dwa`, `dwa+scheduler`, ...) and paired by their recorded seed. The baseline is the
    `off` arm unless `baseline` names another.
    """
    groups: dict[str, dict[int, Path]] = {}
    notes: list[str] = []
    for r in runs:
        p = Path(r)
        run_dir = p.parent if p.suffix == ".parquet" else p
        trace_path = run_dir / "trace.parquet"
        if not trace_path.exists():
            raise TrialError(f"{run_dir}: no trace.parquet")
        trace = read_trace(trace_path)
        arm = _arm_label(recorded_config(trace))
        seed = trace.run.get("seed") if isinstance(trace.run, dict) else None
        if not isinstance(seed, int):
            raise TrialError(f"{run_dir}: the trace records no seed; cannot pair it")
        if seed in groups.setdefault(arm, {}):
            notes.append(f"{arm}: two runs with seed {seed}; kept {groups[arm][seed]}")
            continue
        groups[arm][seed] = run_dir
    base = baseline or "off"
    if base not in groups:
        raise TrialError(
            f"no {base!r} runs among the given runs (arms: {', '.join(sorted(groups))}); "
            "pass --baseline ARM"
        )
    dirs = {BASELINE if a == base else a: v for a, v in groups.items()}
    folder = Path(out) if out is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    result = _finish(dirs, folder)
    result.notes = notes + result.notes
    return result


# ----------------------------------------------------------------------------- figure
def plot_trial(result: TrialResult, path: Path) -> Path:
    """Learning curves of the valfree metrics: mean over seeds with a min–max band, the
    baseline against every candidate."""
    from replay._plots import _pyplot, component_colors, save

    plt = _pyplot()
    c = result.curves
    metrics = ["MPJPE", "YawAbsDeg", "RootDrift", "loss"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    arms = list(dict.fromkeys(c["arm"])) if len(c) else []
    colors = component_colors(arms)
    vf = c[c["split"] == "valfree"] if len(c) else c
    for ax, m in zip(axes[0], metrics, strict=True):
        for arm in arms:
            sel = vf[vf["arm"] == arm]
            if m not in sel.columns or sel[m].dropna().empty:
                continue
            g = sel.groupby("epoch")[m]
            mean, lo, hi = g.mean(), g.min(), g.max()
            n = sel["seed"].nunique()
            ls = "-" if arm == BASELINE else "--"
            label = ("baseline (controllers off)" if arm == BASELINE else arm) + f", {n} seeds"
            ax.plot(mean.index, mean.to_numpy(), ls, color=colors[arm], lw=1.6, label=label)
            ax.fill_between(mean.index, lo.to_numpy(), hi.to_numpy(), color=colors[arm], alpha=0.15)
        unit = UNITS.get(m, "")
        ax.set_title(f"valfree {m}" + (f" ({unit})" if unit else " (weighted loss)"))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{m}" + (f" [{unit}]" if unit else ""))
        ax.grid(alpha=0.3)
        if m != "RootDrift":
            from matplotlib.ticker import FormatStrFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
            ax.tick_params(axis="y", which="minor", labelsize=7)
    axes[0][0].legend(fontsize=8, loc="upper right")
    fig.suptitle("Outcome trial: free-run validation, mean over seeds (band: min–max)")
    fig.tight_layout()
    return save(fig, path)
