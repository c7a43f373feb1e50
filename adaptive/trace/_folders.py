"""What a folder that is not one trace is: a trial folder, or a folder of run folders.

`read_trace` reads every part under a folder as one dataset. A trial folder (`adaptive
trial`'s output: `trial-design.json`, then `<arm>/seed<k>/trace.parquet`) is never one
dataset: every arm has runs `seed0`, `seed1`, ..., so its runs collide. A folder of run
folders reads as one only while their run ids differ and their columns agree. These
helpers name what the folder is and the command to run instead, for the one-line errors.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["folder_of_runs", "folder_of_runs_message", "trial_folder_message"]

#: The design file that marks a trial folder (`adaptive.trial._runner.DESIGN`; the trace
#: package names it here because it sits below the trial package).
TRIAL_DESIGN = "trial-design.json"


def _trace_root(root: Path, file: Path) -> Path:
    """The trace a part file belongs to: its first `*.parquet` folder, or its folder when
    the part sits in a folder of `part-*` files."""
    parts = file.relative_to(root).parts
    for i, name in enumerate(parts[:-1]):
        if name.endswith(".parquet"):
            return root.joinpath(*parts[: i + 1])
    return file.parent if file.name.startswith("part-") else file


def _run_folder(trace: Path) -> Path:
    """The run folder of a trace: its parent for `RUN/trace.parquet`, else the trace."""
    return trace.parent if trace.name == "trace.parquet" else trace


def folder_of_runs(root: Path, files: list[Path]) -> list[Path]:
    """The run folders under `root` when its trace files belong to two or more of them
    (sorted); empty when they are one trace or a hive-partitioned dataset."""
    if any("=" in part for f in files for part in f.relative_to(root).parts[:-1]):
        return []  # run_id=<id>/...: one dataset by design
    runs = sorted({_run_folder(_trace_root(root, f)) for f in files})
    return runs if len(runs) > 1 else []


def _seed_runs(arm: Path) -> list[Path]:
    seeds = [d for d in arm.glob("seed*") if d.is_dir() and d.name[4:].isdigit()]
    return sorted(seeds, key=lambda d: int(d.name[4:]))


def trial_folder_message(path: Path) -> str | None:
    """The one-line refusal for a trial folder (or a folder of trial folders) given where
    one trace or run was expected, naming what it is and what to run instead; None for
    any other path."""
    if not path.is_dir():
        return None
    if (path / TRIAL_DESIGN).is_file():
        arms = sorted(
            (d for d in path.iterdir() if d.is_dir() and _seed_runs(d)),
            key=lambda d: (d.name != "baseline", d.name),
        )
        if not arms:
            return (
                f"{path} is a trial folder ({TRIAL_DESIGN}) with no runs yet, not a trace; "
                "its runs will be ARM/seedK folders"
            )
        arm = arms[0]
        run = _seed_runs(arm)[0]
        return (
            f"{path} is a trial folder ({TRIAL_DESIGN}; arms {', '.join(a.name for a in arms)}, "
            f"each with seed folders), not one trace (its arms repeat the same seeds). Inspect "
            f"one run with `adaptive inspect {run}`, replay an arm's runs with "
            f"`adaptive replay {arm} -m METHOD`; the trial's report is {path / 'trial.md'}"
        )
    trials = sorted(d for d in path.iterdir() if d.is_dir() and (d / TRIAL_DESIGN).is_file())
    if not trials:
        return None
    runs = [r for a in sorted(trials[0].iterdir()) if a.is_dir() for r in _seed_runs(a)][:1]
    return (
        f"{path} holds trial folder(s) {', '.join(d.name for d in trials)}, not one trace: "
        f"each trial's report is its trial.md"
        + (f"; inspect one run with `adaptive inspect {runs[0]}`" if runs else "")
    )


def folder_of_runs_message(root: Path, runs: list[Path], problem: str) -> str:
    """The one-line error for a folder of run folders that does not read as one trace."""
    shown = ", ".join(r.relative_to(root).as_posix() for r in runs[:4])
    more = f" and {len(runs) - 4} more" if len(runs) > 4 else ""
    return (
        f"{root} is a folder of {len(runs)} runs ({shown}{more}), not one trace, and they do "
        f"not read as one ({problem}). Inspect one with `adaptive inspect {runs[0]}`, or "
        f"replay them all with `adaptive replay {root} -m METHOD` (each run read on its own)"
    )
