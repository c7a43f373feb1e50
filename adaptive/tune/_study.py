"""`adaptive tune`: a seeded Optuna search over any trainer's settings, each configuration
averaged over the same development seeds and paired against the current configuration,
pruned over seeds, pre-filtered by replay, persisted in the output folder, then frozen and
confirmed once on held-out seeds by the powered trial.

Layout of `out`: `study.journal` (the Optuna study; or `--storage URL`), `runs/<config
fingerprint>/seed<k>/` (every training run, reused by any later search over the same
folder), `tune.md` / `tune.csv` (the configurations), `best.toml` (reference trainer) or
`best-overrides.txt` (`--command`), the figures, and `confirm/` (the held-out trial).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shlex
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adaptive.trace import read_trace
from adaptive.trial._engines import LocalEngine
from adaptive.trial._report import (
    DEFAULT_METRIC,
    DEFAULT_REDUCE,
    Metric,
    TrialResult,
    analyse,
    parse_metric,
    parse_reduce,
    pct,
    reduce_series,
    series,
)
from adaptive.trial._runner import (
    DONE,
    _load,
    _run_batch,
    run_trial,
)
from adaptive.trial._stats import paired_t
from adaptive.trial._targets import (
    TRACE,
    Arm,
    CommandTarget,
    ReferenceTarget,
    Target,
    TrialError,
    arm_label,
    effective_config,
)
from adaptive.tune._space import Param, TuneError, suggest

__all__ = ["Prefilter", "TuneResult", "run_tune"]

#: `prefilter(baseline_trace, resolved_config)` -> a reason to skip, or None to train.
Prefilter = Callable[[Any, Mapping[str, Any]], str | None]
JOURNAL = "study.journal"
RUNS = "runs"
CONFIRM = "confirm"
#: The reference trainer's keys that choose a controller (searched before the settings).
SELECTORS = ("adaptive.loss", "adaptive.scheduler", "adaptive.scheduler_law.law")
#: Percentile of the other configurations' values (at the same seeds) above which a
#: configuration is pruned: only the worst quarter stops early.
PRUNE_PERCENTILE = 75.0
PRUNE_STARTUP = 4


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


# --------------------------------------------------------------------------- adapters
class _Adapter:
    """How a set of parameter values becomes an arm of the target, and which parameters
    are live given the choices made so far."""

    def __init__(self, target: Target, override_format: str) -> None:
        self.target = target
        self.fmt = override_format
        self.reference = isinstance(target, ReferenceTarget)

    def overrides(self, values: Mapping[str, Any]) -> tuple[str, ...]:
        if self.reference:
            return tuple(f"{k}={_toml(v)}" for k, v in values.items())
        parts = []
        for k, v in values.items():
            text = _toml(v) if not isinstance(v, str) else v
            parts.append(self.fmt.format(name=k, value=shlex.quote(text)))
        return (" ".join(parts),) if parts else ()

    def arm(self, values: Mapping[str, Any], name: str = "candidate") -> Arm:
        if not values:
            return self.target.baseline()
        if self.reference:
            base = self.target.baseline().overrides
            return Arm(name, (*base, *self.overrides(values)))
        return Arm(name, self.overrides(values))

    def config(self, values: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self.reference:
            return None
        try:
            return self.target.config_of(self.arm(values))
        except TrialError as exc:
            raise TuneError(str(exc).removeprefix("candidate: ")) from None

    def live(self, chosen: Mapping[str, Any], name: str) -> bool:
        """Whether `name` can change the run given the selectors `chosen` (reference
        trainer: the key survives `effective_config`; any other target: always)."""
        if not self.reference or name.startswith("schedule."):
            return True
        cfg = self.config(chosen) or {}
        parts = name.split(".")
        if parts[:2] == ["adaptive", "scheduler_law"] and len(parts) > 2 and parts[2] != "law":
            law = cfg["adaptive"]["scheduler_law"]
            own = parts[2] if isinstance(law.get(parts[2]), Mapping) else "guard"
            if own != law.get("law", "guard"):  # another law's parameter: inert
                return False
        node: Any = effective_config(cfg)
        for part in name.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return False
            node = node[part]
        return True

    def selectors(self, params: Sequence[Param]) -> list[Param]:
        return [
            p for p in params if p.kind == "choice" and (not self.reference or p.name in SELECTORS)
        ]

    def check(self, params: Sequence[Param]) -> None:
        """Every value of the space must make a valid config, and every parameter must be
        live under some choice of the selectors (else it would never be searched)."""
        if not self.reference:
            for p in params:
                if not all(
                    c.replace("_", "").replace("-", "").isalnum() for c in p.name.split(".")
                ):
                    raise TuneError(f"--space {p.name}: a --command parameter name is a word")
            return
        from adaptive.weighting import available_methods

        for p in params:
            if p.name == "adaptive.loss":
                known = ["none", *available_methods()]
                for c in p.choices:
                    if c not in known:
                        raise TuneError(
                            f"--space adaptive.loss={p.spec}: {c!r} is not a method; known: "
                            + ", ".join(known)
                        )
        sel = self.selectors(params)
        combos = [
            dict(zip([p.name for p in sel], c, strict=True))
            for c in itertools.product(*[p.choices for p in sel])
        ] or [{}]
        for p in params:
            samples = list(p.choices) if p.kind == "choice" else [p.low, p.high]
            if p.kind == "int":
                samples = [int(s) for s in samples]
            for v in samples:
                try:
                    self.config({**combos[0], p.name: v} if p not in sel else {p.name: v})
                except TuneError as exc:
                    raise TuneError(f"--space {p.name}={p.spec}: {exc}") from None
            if p not in sel and not any(self.live(c, p.name) for c in combos):
                raise TuneError(
                    f"--space {p.name}: never changes a run (its controller is off in every "
                    "configuration of the space; add it to the space, e.g. "
                    "adaptive.loss=choice(none,dwa))"
                )

    def fixed(self, values: Mapping[str, Any]) -> bool:
        """No controller on (reference trainer); a --command target has no such notion."""
        cfg = self.config(values)
        return cfg is not None and arm_label(cfg) == "off"


# ---------------------------------------------------------------------------- result
@dataclass
class TuneResult:
    """A finished search: `frame` (one row per configuration: state, parameters, mean
    metric over the development seeds, paired difference against the baseline with its
    interval), `best` / `best_fixed` (the winners' rows), `confirmation` (the held-out
    trial, if run), `design` (what ran), `folder`, `notes`."""

    frame: pd.DataFrame
    best: dict[str, Any] | None
    best_fixed: dict[str, Any] | None
    confirmation: TrialResult | None
    head_to_head: pd.DataFrame | None
    design: dict[str, Any]
    folder: Path
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What `adaptive tune` prints."""
        f = self.frame
        done = f[f["state"] == "COMPLETE"]
        out = [
            f"{len(f)} configurations: {len(done)} trained on every development seed, "
            f"{int((f['state'] == 'PRUNED').sum())} pruned, {int(f['skipped'].astype(bool).sum())} "
            f"skipped by replay; {self.design['runs_trained']} of {self.design['runs_full']} "
            "development runs trained"
        ]
        if self.best is not None:
            out.append(f"best on the development seeds: {_row_text(self.best)}")
        if self.best_fixed is not None and (
            self.best is None or self.best_fixed["key"] != self.best["key"]
        ):
            out.append(f"best fixed-only: {_row_text(self.best_fixed)}")
        if self.confirmation is not None:
            out.append("held-out confirmation:")
            out += ["  " + s for s in self.confirmation.summary().splitlines()]
        out += [f"note: {n}" for n in self.notes]
        out.append(f"wrote {self.folder / 'tune.md'}")
        return out


def _row_text(r: Mapping[str, Any]) -> str:
    ci = (
        f"[{pct(r['rel_low'], sign=True)}, {pct(r['rel_high'], sign=True)}]"
        if math.isfinite(r.get("rel_low", math.nan))
        else "(no interval)"
    )
    return (
        f"#{r['number']} {r['params'] or '(the baseline)'}: {r['mean']:.4g} "
        f"({pct(r['rel_diff'], sign=True)} vs the baseline, 95 % CI {ci}, n = {r['n']})"
    )


# ------------------------------------------------------------------------------- study
def _storage(out: Path, storage: str | None) -> Any:
    import optuna

    if storage is None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        out.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    try:
        return optuna.storages.RDBStorage(storage)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TuneError(f"--storage {storage}: cannot open it ({first[:200]})") from None


def _values(
    folder: Path, key: str, seeds: Sequence[int], metric: Metric, k: int
) -> dict[int, float]:
    """The reduced metric of every finished run of `key` among `seeds`."""
    out = {}
    for s in seeds:
        d = folder / key / f"seed{s}"
        if (d / DONE).is_file() and (d / TRACE).exists():
            out[s] = reduce_series(series(read_trace(d / TRACE).epochs, metric), k)
    return out


def _paired(cand: Mapping[int, float], base: Mapping[int, float]) -> dict[str, Any]:
    seeds = sorted(set(cand) & set(base))
    c = np.array([cand[s] for s in seeds])
    b = np.array([base[s] for s in seeds])
    ok = np.isfinite(c) & np.isfinite(b)
    t = paired_t(list((c - b)[ok]))
    scale = abs(float(b[ok].mean())) if ok.any() else math.nan
    return {
        "n": len(seeds),
        "mean": float(c.mean()) if len(c) else math.nan,
        "diff": t["mean"],
        "rel_diff": t["mean"] / scale if scale else math.nan,
        "rel_low": t["low"] / scale if scale else math.nan,
        "rel_high": t["high"] / scale if scale else math.nan,
        "diverged": int((~np.isfinite(c)).sum()),
    }


def run_tune(
    out: str | os.PathLike[str],
    space: Sequence[Param],
    *,
    target: Target | None = None,
    config: str | os.PathLike[str] | None = None,
    sets: Sequence[str] = (),
    quick: bool = False,
    epochs: int | None = None,
    trials: int = 20,
    seeds: int = 3,
    first_seed: int = 0,
    metric: str = DEFAULT_METRIC,
    reduce: str = DEFAULT_REDUCE,
    higher_is_better: bool = False,
    prune: bool = True,
    prefilter: Prefilter | None = None,
    storage: str | None = None,
    study_name: str = "tune",
    sampler_seed: int = 0,
    confirm_seeds: int = 0,
    confirm_first_seed: int = 1000,
    engine: Any = None,
    jobs: int = 1,
    override_format: str = "--{name} {value}",
    audit_skipped: int = 0,
    audit_pruned: int = 0,
    progress: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search `space` for the configuration whose runs end best on `metric` (reduced by
    `reduce`) over `seeds` development seeds from `first_seed`, `trials` configurations in
    all (finished ones in the study count; the same call resumes an interrupted search and
    reuses every finished run), then freeze the best and, with `confirm_seeds`, confirm it
    once on held-out seeds from `confirm_first_seed` against the baseline (and against the
    best fixed-only configuration when the space held both). `target` trains (default:
    the reference trainer with `config`, `sets`, `quick`, `epochs`); `prefilter` (e.g.
    `replay.prefilter`) may skip a controller configuration before it trains, and
    `audit_skipped` of the skipped ones are trained anyway afterwards to check it, as
    `audit_pruned` of the pruned ones are trained to the end to check the pruner.
    """
    import optuna

    say = progress or (lambda _m: None)
    for name, v, low in (
        ("--trials", trials, 1),
        ("--seeds", seeds, 2),
        ("--jobs", jobs, 1),
        ("--confirm-seeds", confirm_seeds, 0),
        ("--audit-skipped", audit_skipped, 0),
        ("--audit-pruned", audit_pruned, 0),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise TuneError(f"{name} must be an integer >= {low}, got {v!r}")
    if confirm_seeds == 1:
        raise TuneError("--confirm-seeds must be 0 (no confirmation) or at least 2")
    dev = list(range(first_seed, first_seed + seeds))
    held = list(range(confirm_first_seed, confirm_first_seed + confirm_seeds))
    if set(dev) & set(held):
        raise TuneError(
            f"--confirm-first-seed {confirm_first_seed}: the held-out seeds overlap the "
            f"development seeds {dev[0]}-{dev[-1]}"
        )
    if "{name}" not in override_format or "{value}" not in override_format:
        raise TuneError(f"--override-format {override_format!r}: needs {{name}} and {{value}}")
    if target is None:
        target = ReferenceTarget(
            Path(config) if config is not None else None, tuple(sets), quick, epochs
        )
    elif config is not None or sets or quick or epochs is not None:
        raise TuneError("--config, --set, --quick and --epochs are for the reference trainer")
    if isinstance(target, CommandTarget) and "{overrides}" not in target.command:
        raise TuneError("--command has no {overrides}: the searched values could not reach it")
    primary = parse_metric(metric, higher_is_better)
    k = parse_reduce(reduce)
    target.check_metric(primary.split, primary.name)
    ad = _Adapter(target, override_format)
    ad.check(space)
    folder = Path(out)
    runs = folder / RUNS
    st = _storage(folder, storage)
    direction = "maximize" if higher_is_better else "minimize"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.PercentilePruner(
            PRUNE_PERCENTILE, n_startup_trials=PRUNE_STARTUP, n_warmup_steps=0
        )
        if prune
        else optuna.pruners.NopPruner()
    )
    try:  # a resumed search's sampler continues from another seed: new draws, not repeats
        done_before = _trial_count(st, study_name)
        study = optuna.create_study(
            study_name=study_name,
            storage=st,
            direction=direction,
            sampler=optuna.samplers.TPESampler(seed=sampler_seed + done_before),
            pruner=pruner,
            load_if_exists=True,
        )
    except ValueError as exc:  # another direction under the same name
        raise TuneError(f"study {study_name!r}: {exc}") from None
    design = {
        "target": target.describe(),
        "space": {p.name: p.spec for p in space},
        "metric": primary.key,
        "higher_is_better": higher_is_better,
        "reduce_k": k,
        "seeds": dev,
        "sampler_seed": sampler_seed,
    }
    old = study.user_attrs.get("design")
    if old is not None and old != design:
        diff = [key for key in design if old.get(key) != design[key]]
        raise TuneError(
            f"{folder}: the study holds another search (it differs in {', '.join(diff)}): "
            "use another --out or --study-name"
        )
    study.set_user_attr("design", design)
    engine = engine or LocalEngine(jobs)
    if hasattr(engine, "check"):
        engine.check()
    checked: list[bool] = []
    chunk = max(1, jobs)

    def train(key: str, arm: Arm, seed_list: Sequence[int]) -> None:
        fp = target.fingerprint(arm)
        _run_batch(target, engine, {key: arm}, {key: fp}, runs, seed_list, primary, checked, say)

    # ---- the baseline: the current configuration, trained first; all others pair to it
    trained_before = _count_runs(runs)
    base_arm = target.baseline()
    base_key = target.fingerprint(base_arm)
    train(base_key, base_arm, dev)
    base = _values(runs, base_key, dev, primary, k)
    base_trace = read_trace(runs / base_key / f"seed{dev[0]}" / TRACE)

    # an interrupted search: its unfinished configurations are asked again (same runs)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.enqueue_trial(t.params, skip_if_exists=False)
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    counted = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    if not study.get_trials(deepcopy=False):
        current = _current_values(ad, space)
        if current is not None:
            study.enqueue_trial(current)  # the baseline, inside the space: paired to itself
    while len(study.get_trials(deepcopy=False, states=counted)) < trials:
        trial = study.ask()
        values = suggest(space, trial, ad.live, [p.name for p in ad.selectors(space)])
        arm = ad.arm(values, name=f"trial {trial.number}")
        trial.set_user_attr("overrides", list(arm.overrides))
        try:
            cfg = ad.config(values)
            key = target.fingerprint(arm)
        except (TuneError, TrialError) as exc:  # a combination the trainer refuses
            trial.set_user_attr("skipped", f"invalid configuration: {exc}")
            say(f"trial {trial.number}: skipped (invalid configuration: {exc})")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        trial.set_user_attr("key", key)
        trial.set_user_attr("fixed", ad.fixed(values))
        if (
            prefilter is not None
            and cfg is not None
            and key != base_key
            and arm_label(cfg) != "off"
        ):
            reason = prefilter(base_trace, cfg)
            if reason:
                trial.set_user_attr("skipped", reason)
                say(f"trial {trial.number}: skipped ({reason})")
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
        pruned = False
        got: dict[int, float] = {}
        for i in range(0, len(dev), chunk):
            part = dev[i : i + chunk]
            train(key, arm, part)
            got.update(_values(runs, key, part, primary, k))  # this batch's traces only
            now = float(np.mean(list(got.values())))
            trial.report(now if math.isfinite(now) else _worst(higher_is_better), i + len(part))
            if i + len(part) < len(dev) and trial.should_prune():
                pruned = True
                break
        if pruned:
            say(f"trial {trial.number}: pruned after {i + len(part)} seed(s)")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        mean = float(np.mean([got[s] for s in dev]))
        study.tell(trial, mean if math.isfinite(mean) else _worst(higher_is_better))
        say(f"trial {trial.number}: {mean:.4g} on {len(dev)} seeds ({', '.join(arm.overrides)})")

    frame = _frame(study, runs, dev, base, primary, k)
    search_runs = _search_runs(study, base_key, dev)
    before_audit = _count_runs(runs)
    # is the pre-filter right, is pruning right? train a sample of each to the end anyway
    audited = pd.concat(
        [
            frame[(frame["state"] == "SKIPPED") & (frame["key"] != "")].head(audit_skipped),
            frame[frame["state"] == "PRUNED"].head(audit_pruned),
        ]
    )
    for _, row in audited.iterrows():
        train(row["key"], Arm(f"audit #{row['number']}", tuple(_overrides(row))), dev)
    if len(audited):
        frame = _frame(study, runs, dev, base, primary, k)
    design["runs_trained"] = search_runs
    design["runs_audit"] = _count_runs(runs) - before_audit
    design["runs_this_call"] = _count_runs(runs) - trained_before
    design["runs_full"] = len(dev) * (len(frame) + 1)
    complete = frame[frame["state"] == "COMPLETE"]
    notes: list[str] = []
    best = _pick(complete, higher_is_better)
    fixed_rows = complete[complete["fixed"]]
    adaptive_rows = complete[~complete["fixed"].astype(bool)]
    best_fixed = (
        _pick(fixed_rows, higher_is_better) if len(fixed_rows) and len(adaptive_rows) else None
    )
    _write_best(folder, ad, best, best_fixed)
    confirmation, h2h = None, None
    better = best is not None and (
        best["rel_diff"] > 0 if higher_is_better else best["rel_diff"] < 0
    )
    if best is not None and not better:
        notes.append(
            f"no configuration beat the baseline on the development seeds (the best, "
            f"#{best['number']}, is {pct(best['rel_diff'], sign=True)} against it): the "
            "baseline stays, nothing to confirm"
        )
    if confirm_seeds and better:
        confirmation, h2h = _confirm(
            folder, target, ad, best, best_fixed, held, primary, reduce, engine, jobs, say, notes
        )
    result = TuneResult(frame, best, best_fixed, confirmation, h2h, design, folder, notes)
    _write_outputs(result, study, reduce)
    return result


def _trial_count(storage: Any, name: str) -> int:
    """How many trials the study `name` already holds (0 when it does not exist yet)."""
    import optuna

    try:
        return len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:
        return 0


def _worst(higher: bool) -> float:
    return -math.inf if higher else math.inf


def _search_runs(study: Any, base_key: str, dev: Sequence[int]) -> int:
    """The runs the search itself needed: the baseline's, every complete configuration's
    seeds and a pruned one's seeds up to where it stopped (a skipped one none); a
    configuration asked twice counts once."""
    pairs = {(base_key, s) for s in dev}
    for t in study.get_trials(deepcopy=False):
        key = t.user_attrs.get("key")
        if not key or t.user_attrs.get("skipped"):
            continue
        if t.state.name == "COMPLETE":
            n = len(dev)
        elif t.state.name == "PRUNED":
            n = max(t.intermediate_values, default=0)
        else:
            continue
        pairs |= {(key, s) for s in dev[:n]}
    return len(pairs)


def _count_runs(runs: Path) -> int:
    return sum(1 for _ in runs.glob(f"*/seed*/{DONE}")) if runs.exists() else 0


def _current_values(ad: _Adapter, space: Sequence[Param]) -> dict[str, Any] | None:
    """The current configuration's values of the space's parameters, if all lie inside it
    (reference trainer only): then the first configuration the study evaluates is the
    baseline itself."""
    if not ad.reference:
        return None
    cfg = ad.config({})
    out = {}
    for p in space:
        if p.name.startswith("schedule."):
            return None
        node: Any = cfg
        for part in p.name.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) or node is None:
            return None
        if p.kind == "choice" or ad.live(out, p.name):
            if not p.contains(node):
                return None
            out[p.name] = node
    return out


def _frame(
    study: Any, runs: Path, dev: Sequence[int], base: Mapping[int, float], m: Metric, k: int
) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name in ("FAIL", "RUNNING", "WAITING"):
            continue
        key = t.user_attrs.get("key", "")
        got = _values(runs, key, dev, m, k) if key else {}
        skipped = t.user_attrs.get("skipped", "")
        row = {
            "number": t.number,
            "state": "SKIPPED" if skipped else t.state.name,
            "params": "; ".join(f"{n}={_toml(v)}" for n, v in t.params.items()),
            "fixed": bool(t.user_attrs.get("fixed", False)),
            "skipped": skipped,
            "overrides": json.dumps(t.user_attrs.get("overrides", [])),
            "key": key,
            **_paired(got, base),
        }
        rows.append(row)
    cols = [
        "number",
        "state",
        "params",
        "fixed",
        "skipped",
        "overrides",
        "key",
        "n",
        "mean",
        "diff",
        "rel_diff",
        "rel_low",
        "rel_high",
        "diverged",
    ]
    return pd.DataFrame(rows, columns=cols)


def _pick(frame: pd.DataFrame, higher: bool) -> dict[str, Any] | None:
    f = frame[np.isfinite(frame["mean"].to_numpy(dtype=float))]
    if not len(f):
        return None
    r = f.sort_values(["mean", "number"], ascending=[not higher, True]).iloc[0]
    return r.to_dict()


def confirm_folder(
    folder: Path, best: Mapping[str, Any], best_fixed: Mapping[str, Any] | None
) -> Path:
    """Where the held-out trial of these frozen winners goes: `confirm-<their keys>`."""
    keys = [str(best["key"])[:8]] + ([str(best_fixed["key"])[:8]] if best_fixed else [])
    return folder / f"{CONFIRM}-{'-'.join(dict.fromkeys(keys))}"


def _write_best(
    folder: Path, ad: _Adapter, best: Mapping[str, Any] | None, fixed: Mapping[str, Any] | None
) -> None:
    from adaptive.util import atomic_write

    for row, stem in ((best, "best"), (fixed, "best-fixed")):
        if row is None:
            continue
        if ad.reference:
            from adaptive.train.config import dumps_toml

            cfg = ad.target.config_of(Arm("best", tuple(_overrides(row))))
            for key in ("seed", "name", "out"):
                cfg["run"].pop(key, None)
            head = (
                f"# adaptive tune: configuration #{row['number']} of {folder}, the {stem} on "
                "the development seeds.\n"
                f"# Searched values: {row['params'] or '(none: the baseline)'}\n"
                "# Reference trainer: adaptive train --config THIS_FILE\n"
                "# Your own loop: adaptive.controllers_from_config(THIS_FILE, components=[...])\n"
            )
            text = head + "\n" + dumps_toml(cfg)
            atomic_write(folder / f"{stem}.toml", lambda tmp, t=text: tmp.write_text(t, "utf-8"))
        else:
            text = " ".join(_overrides(row)) + "\n"
            atomic_write(
                folder / f"{stem}-overrides.txt", lambda tmp, t=text: tmp.write_text(t, "utf-8")
            )


def _overrides(row: Mapping[str, Any]) -> list[str]:
    """The arm overrides a frame row recorded (reference trainer: key=value strings; a
    command: the one {overrides} string)."""
    return list(json.loads(str(row["overrides"])))


def _confirm(
    folder: Path,
    target: Target,
    ad: _Adapter,
    best: Mapping[str, Any],
    best_fixed: Mapping[str, Any] | None,
    held: Sequence[int],
    primary: Metric,
    reduce: str,
    engine: Any,
    jobs: int,
    say: Callable[[str], None],
    notes: list[str],
) -> tuple[TrialResult | None, pd.DataFrame | None]:
    """The powered trial on the held-out seeds: the frozen winner(s) against the baseline,
    and the winner against the best fixed-only configuration."""
    base_key = target.fingerprint(target.baseline())
    cands = []
    for row, name in ((best, "tuned"), (best_fixed, "tuned-fixed")):
        if row is None or (name == "tuned-fixed" and row["key"] == best["key"]):
            continue
        if row["key"] == base_key:
            notes.append(f"the {name} configuration is the baseline itself: nothing to confirm")
            continue
        body = "; ".join(_overrides(row)) if ad.reference else " ".join(_overrides(row))
        cands.append(f"{name}: {body}")
    if not cands:
        return None, None
    # one folder per frozen winner: the same winner reuses its confirmation; a search that
    # went on and found another one confirms it in a folder of its own, and says that the
    # held-out seeds are no longer a first look
    dest = confirm_folder(folder, best, best_fixed)
    for other in sorted(folder.glob(f"{CONFIRM}-*")):
        if other != dest and (other / "trial.md").is_file():
            notes.append(
                f"the held-out seeds were already used to confirm another winner ({other}): "
                "this confirmation is not a first look at them"
            )
    kw: dict[str, Any] = {"target": target}
    res = run_trial(
        dest,
        cands,
        seeds=len(held),
        first_seed=held[0],
        metric=primary.key,
        reduce=reduce,
        higher_is_better=primary.higher_is_better,
        secondary=[],
        engine=engine,
        jobs=jobs,
        progress=say,
        **kw,
    )
    h2h = None
    if len(cands) == 2:
        dirs = {
            name: {s: dest / name / f"seed{s}" for s in held} for name in ("tuned", "tuned-fixed")
        }
        values, _ = _load(dirs, [primary])
        h2h, _ = analyse(values, primary, parse_reduce(reduce), baseline="tuned-fixed")
    return res, h2h


# ----------------------------------------------------------------------------- outputs
def _write_outputs(result: TuneResult, study: Any, reduce: str) -> None:
    from adaptive.util import atomic_write

    folder = result.folder
    atomic_write(folder / "tune.csv", lambda tmp: result.frame.to_csv(tmp, index=False))
    atomic_write(folder / "tune.md", lambda tmp: tmp.write_text(_markdown(result, reduce), "utf-8"))
    _figures(study, folder, result.notes)


def _markdown(r: TuneResult, reduce: str) -> str:
    d = r.design
    f = r.frame
    lines = [
        "# adaptive tune",
        "",
        f"- target: {d['target']}",
        f"- space: {', '.join(f'{k}={v}' for k, v in d['space'].items())}",
        f"- objective: {d['metric']} ({'higher' if d['higher_is_better'] else 'lower'} is "
        f"better, {reduce}), mean over development seeds {d['seeds'][0]}-{d['seeds'][-1]}; "
        "every configuration paired against the current one (the baseline) on those seeds",
        f"- sampler: Optuna TPE, seed {d['sampler_seed']}; pruning: a configuration worse than "
        f"the {PRUNE_PERCENTILE:.0f}th percentile of the others at the same seeds stops early",
        f"- compute: the search trained {d['runs_trained']} development runs of the "
        f"{d['runs_full']} an unpruned, unfiltered search of these configurations would train "
        f"({d['runs_this_call']} in this call, {d['runs_audit']} of them to audit the "
        "pre-filter and the pruner)",
        f"- configurations: {len(f)} ({int((f['state'] == 'COMPLETE').sum())} complete, "
        f"{int((f['state'] == 'PRUNED').sum())} pruned over seeds, "
        f"{int((f['state'] == 'SKIPPED').sum())} skipped by the replay pre-filter)",
        "",
        "## Development seeds (chosen on these: optimistic)",
        "",
        "| # | state | parameters | mean | vs baseline (95 % CI) | n | note |",
        "|---|---|---|---|---|---|---|",
    ]
    order = f.sort_values("mean", ascending=not d["higher_is_better"], na_position="last")
    for _, row in order.iterrows():
        ci = (
            f"{pct(row['rel_diff'], sign=True)} [{pct(row['rel_low'], sign=True)}, "
            f"{pct(row['rel_high'], sign=True)}]"
            if math.isfinite(row["rel_low"])
            else pct(row["rel_diff"], sign=True)
        )
        note = row["skipped"] or ("pruned" if row["state"] == "PRUNED" else "")
        lines.append(
            f"| {row['number']} | {row['state'].lower()} | {row['params'] or '(baseline)'} "
            f"| {row['mean']:.4g} | {ci} | {row['n']} | {note} |"
        )
    audits = (
        (
            "SKIPPED",
            f["n"] > 0,
            "Skipped by the replay pre-filter, trained anyway to check it "
            "(--audit-skipped): were they in fact no better?",
        ),
        (
            "PRUNED",
            f["n"] == len(d["seeds"]),
            "Pruned, then trained to the end to check the "
            "pruner (--audit-pruned): would one have won?",
        ),
    )
    for state, done, title in audits:
        audit = f[(f["state"] == state) & done]
        if not len(audit):
            continue
        lines += ["", title, ""]
        for _, row in audit.iterrows():
            beat = r.best is not None and (
                row["mean"] > r.best["mean"]
                if d["higher_is_better"]
                else row["mean"] < r.best["mean"]
            )
            verdict = "better than the best" if beat else "not better than the best"
            lines.append(f"- {_row_text(row)}; {verdict}")
    lines += ["", "## Frozen and confirmed once on held-out seeds", ""]
    if r.best is not None:
        lines.append(f"- best: {_row_text(r.best)}")
    if r.best_fixed is not None:
        lines.append(f"- best fixed-only: {_row_text(r.best_fixed)}")
    c = r.confirmation
    if c is None:
        lines.append("- no held-out confirmation ran (--confirm-seeds 0, or nothing to confirm)")
    else:
        lines += ["", "Against the baseline on the held-out seeds:", "", "```", c.summary(), "```"]
        lines += [
            "",
            "The winner's curse, measured (development estimate, chosen on those "
            "seeds, beside the held-out one):",
            "",
            "| configuration | development (95 % CI) | held-out (95 % CI) | n held-out |",
            "|---|---|---|---|",
        ]
        prim = c.rows("primary")
        for name, row in (("tuned", r.best), ("tuned-fixed", r.best_fixed)):
            hit = prim[prim["candidate"] == name]
            if row is None or not len(hit):
                continue
            h = hit.iloc[0]
            lines.append(
                f"| {name} | {pct(row['rel_diff'], sign=True)} [{pct(row['rel_low'], sign=True)}, "
                f"{pct(row['rel_high'], sign=True)}] | {pct(h['rel_diff'], sign=True)} "
                f"[{pct(h['rel_ci_low'], sign=True)}, {pct(h['rel_ci_high'], sign=True)}] "
                f"| {int(h['n'])} |"
            )
        if r.head_to_head is not None and len(r.head_to_head):
            tr = TrialResult(r.head_to_head, pd.DataFrame(), pd.DataFrame(), design={})
            lines += [
                "",
                "The tuned configuration against the best fixed-only one (equal "
                "budget: does a controller earn its switch):",
                "",
                "```",
                tr.summary(),
                "```",
            ]
        lines.append(f"\nThe confirmation's full report: {c.folder / 'trial.md'}")
    lines += [f"\n- note: {n}" for n in r.notes]
    lines += [
        "",
        "Reproduce: run the same `adaptive tune` command with the same --out; finished "
        "configurations and runs are reused.",
        "",
    ]
    return "\n".join(lines)


def _figures(study: Any, folder: Path, notes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    plots = {
        "tune-history.png": (ovm.plot_optimization_history, "Objective per configuration"),
        "tune-importance.png": (ovm.plot_param_importances, "Parameter importances"),
        "tune-parallel.png": (ovm.plot_parallel_coordinate, "Parameters of each configuration"),
    }
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, (fn, title) in plots.items():
            if len(done) < 2:
                notes.append(f"{name}: fewer than 2 complete configurations, not drawn")
                continue
            try:
                if fn is ovm.plot_param_importances:
                    ax = fn(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
                else:
                    ax = fn(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                notes.append(f"{name}: not drawn ({exc})")
                continue
            ax = ax[0] if isinstance(ax, np.ndarray) else ax
            fig = ax.figure
            fig.suptitle(f"adaptive tune: {title}")
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            fig.savefig(folder / name, dpi=100)
            plt.close(fig)
