"""Compare finished runs (`adaptive trial --runs`): group them into arms by their recorded
configuration, pair them by seed, and analyse them as a trial.

Runs of the reference trainer record their whole config and seed in the trace, so no trial
folder is needed; the arms are named by the controllers they have on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adaptive.trace import read_trace
from adaptive.trial._report import (
    DEFAULT_METRIC,
    DEFAULT_REDUCE,
    REFERENCE_SECONDARY,
    TrialResult,
    parse_metric,
    parse_reduce,
)
from adaptive.trial._runner import BASELINE, DESIGN, _finish, _read_json, _write_json, _write_report
from adaptive.trial._targets import TRACE, TrialError, _hash, arm_label

__all__ = ["compare_runs"]

_NOT_SETTINGS = {("run", "name"), ("run", "out"), ("run", "seed"), ("run", "threads")}


def _flat(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out |= _flat(v, key + ".")
        else:
            out[key] = v
    return out


def _settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config keys that define an arm (not the seed, threads, names or trace I/O)."""
    flat = _flat(cfg)
    return {
        k: v
        for k, v in flat.items()
        if tuple(k.split(".", 1)) not in _NOT_SETTINGS and not k.startswith(("trace.", "run.log"))
    }


def _differs(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def compare_runs(
    runs: Sequence[str | os.PathLike[str]],
    *,
    baseline: str | None = None,
    out: str | os.PathLike[str] | None = None,
    metric: str = DEFAULT_METRIC,
    reduce: str = DEFAULT_REDUCE,
    higher_is_better: bool = False,
    secondary: Sequence[str] | None = None,
) -> TrialResult:
    """The trial's comparison over finished runs of the reference trainer (run folders or
    traces). Runs are grouped by their whole recorded configuration (except seed, threads
    and names): each group is an arm, named by the controllers it has on, plus the settings
    that tell apart two groups with the same controllers (`dwa (adaptive.dwa.temperature=2)`).
    Paired by recorded seed. The baseline is the one group with the controllers off unless
    `baseline` names another; a candidate that differs from it outside the controllers is
    named in the notes."""
    primary = parse_metric(metric, higher_is_better)
    reduce_k = parse_reduce(reduce)
    groups: dict[str, dict[str, Any]] = {}
    for r in runs:
        p = Path(r)
        run_dir = p.parent if p.suffix == ".parquet" else p
        if not (run_dir / TRACE).exists():
            raise TrialError(f"{run_dir}: no trace.parquet")
        trace = read_trace(run_dir / TRACE)
        info = trace.run if isinstance(trace.run, Mapping) else {}
        cfg = info.get("config")
        if not isinstance(cfg, Mapping):
            raise TrialError(
                f"{run_dir}: the trace records no training config, so runs cannot be paired "
                "by configuration; run your own trainer through a trial (--command)"
            )
        seed = info.get("seed")
        if not isinstance(seed, int):
            raise TrialError(f"{run_dir}: the trace records no seed; cannot pair it")
        settings = _settings(cfg)
        key = _hash(settings)
        g = groups.setdefault(key, {"settings": settings, "label": arm_label(cfg), "runs": {}})
        if seed in g["runs"]:
            raise TrialError(
                f"two runs with the same configuration and seed {seed}: {g['runs'][seed]} and "
                f"{run_dir}; pass one of them"
            )
        g["runs"][seed] = run_dir
    # names: the controllers, plus what tells two same-controller groups apart
    by_label: dict[str, list[str]] = {}
    for key, g in groups.items():
        by_label.setdefault(g["label"], []).append(key)
    names: dict[str, str] = {}
    for label, keys in by_label.items():
        for key in keys:
            if len(keys) == 1:
                names[key] = label
                continue
            own = groups[key]["settings"]
            diff = sorted(
                {k for o in keys if o != key for k in _differs(own, groups[o]["settings"])}
            )
            names[key] = f"{label} ({', '.join(f'{k}={own.get(k)!r}' for k in diff[:3])})"
    want = baseline or "off"
    base_keys = [k for k in groups if names[k] == want or groups[k]["label"] == want]
    if not base_keys:
        raise TrialError(
            f"no {want!r} runs among the given runs (arms: {', '.join(sorted(names.values()))}); "
            "pass --baseline ARM"
        )
    if len(base_keys) > 1:
        raise TrialError(
            f"several {want!r} configurations: {'; '.join(names[k] for k in base_keys)}; "
            "pass --baseline with one of these names"
        )
    bkey = base_keys[0]
    notes = []
    for key, g in groups.items():
        if key == bkey:
            continue
        outside = [
            k
            for k in _differs(g["settings"], groups[bkey]["settings"])
            if not k.startswith("adaptive.")
        ]
        if outside:
            notes.append(
                f"{names[key]} differs from the baseline outside the controllers: "
                + ", ".join(outside[:5])
                + (" ..." if len(outside) > 5 else "")
            )
    dirs = {BASELINE if k == bkey else names[k]: g["runs"] for k, g in groups.items()}
    second = [
        parse_metric(t.removesuffix(":higher"), t.endswith(":higher"))
        for t in (REFERENCE_SECONDARY if secondary is None else secondary)
        if t.removesuffix(":higher") != primary.key
    ]
    design = {
        "target": "finished runs (--runs)",
        "engine": "none (runs given)",
        # the runs themselves: another set of runs is another trial, even under equal names
        "arms": {n: {str(s): str(d) for s, d in sorted(v.items())} for n, v in dirs.items()},
        "metric": primary.key,
        "higher_is_better": primary.higher_is_better,
        "reduce_k": reduce_k,
        "seeds": max(len(v) for v in dirs.values()),
    }
    result = _finish(dirs, primary, reduce_k, second, design, notes)
    if out is not None:
        folder = Path(out)
        old = _read_json(folder / DESIGN)
        if (old is not None and old != design) or (old is None and (folder / "trial.md").exists()):
            raise TrialError(
                f"{folder} holds another trial's report; it would be replaced: use another --out"
            )
        folder.mkdir(parents=True, exist_ok=True)
        _write_json(folder / DESIGN, design)
        _write_report(result, folder)
    return result
