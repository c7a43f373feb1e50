"""`adaptive tune`: the space's parsing and one-line refusals, conditional parameters, the
study's resume (finished configurations and runs reused, an interrupted one asked again),
pruning over seeds, the replay pre-filter, and tiny searches end to end (the reference
trainer with a held-out confirmation, a --command trainer)."""

from __future__ import annotations

import json
import math
import random
import re
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adaptive import TraceRecorder
from adaptive.train.config import load_config
from adaptive.trial import FunctionTarget
from adaptive.tune import TuneError, parse_space, run_tune
from adaptive.tune._space import parse_param, suggest
from cli import app
from tests.test_train import TINY

runner = CliRunner()
SMALL = [*TINY, "run.epochs=3", "train.steps_per_epoch=6"]
ROOT = Path(__file__).resolve().parents[1]
CALLS: list[str] = []
CRASH = {"on": False}  # toy's "--crash yes" interrupts the run while this is on


def toy(overrides: str, seed: int, run_dir: Path) -> None:
    """A 'training run' in milliseconds: val/m is lowest at lr = 10^-2.5, mode b adds 5."""
    CALLS.append(f"{overrides}|{seed}")
    kw = dict(zip(*[iter(shlex.split(overrides))] * 2, strict=True))
    if kw.get("--crash") == "yes" and CRASH["on"]:
        raise KeyboardInterrupt
    lr = float(kw.get("--lr", 0.003))
    v = 100.0 + random.Random(seed).gauss(0.0, 3.0)
    v *= 1 + 0.3 * abs(math.log10(lr) + 2.5)
    v += 5.0 if kw.get("--mode") == "b" else 0.0
    with TraceRecorder(run_dir / "trace.parquet", components=["a"]) as rec:
        for e in range(3):
            rec.log_step(losses={"a": 1.0})
            rec.log_epoch(split="val", metrics={"m": v * (1 + 0.1 * (2 - e))})
            rec.end_epoch()


TOY = {"target": FunctionTarget(toy), "metric": "val/m", "reduce": "final"}


# ------------------------------------------------------------------------------ the space
def test_space_specs_and_their_refusals() -> None:
    p = parse_param("train.lr", "log(0.0005, 0.005)")
    assert (p.kind, p.low, p.high) == ("log", 0.0005, 0.005) and p.spec == "log(0.0005,0.005)"
    assert parse_param("x", "int(1,4)").kind == "int"
    assert parse_param("adaptive.loss", "choice(none,dwa)").choices == ("none", "dwa")
    assert parse_param("b", "choice(true,false)").choices == (True, False)
    bad = {
        "log(1,2,3)": "exactly two bounds",
        "float(2,1)": "empty range",
        "float(1,1)": "empty range",
        "log(0,1)": "log bounds must be > 0",
        "choice(dwa)": "at least two different values",
        "choice(dwa,dwa)": "at least two different values",
        "choice(a,)": "an empty choice",
        "uniform(0,1)": "SPEC must be float(lo,hi)",
        "int(1,2.5)": "is not an integer",
        "float(a,1)": "is not a number",
    }
    for spec, msg in bad.items():
        with pytest.raises(TuneError, match=re.escape(msg)):
            parse_param("x", spec)
    with pytest.raises(TuneError, match="given twice"):
        parse_space(["x=float(0,1)", "x=float(0,2)"])
    with pytest.raises(TuneError, match="NAME=SPEC"):
        parse_space(["x"])
    with pytest.raises(TuneError, match="give a search space"):
        parse_space([])


def test_conditional_parameters_are_drawn_only_when_their_controller_is_chosen() -> None:
    import optuna

    from adaptive.trial import ReferenceTarget
    from adaptive.tune._study import _Adapter

    ad = _Adapter(ReferenceTarget(sets=tuple(SMALL)), "--{name} {value}")
    space = parse_space(
        [
            "adaptive.dwa.temperature=float(0.5,4)",
            "adaptive.loss=choice(none,dwa,uncertainty)",
            "train.lr=log(1e-4,1e-2)",
        ]
    )
    ad.check(space)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    seen = set()
    for _ in range(12):
        t = study.ask()
        v = suggest(space, t, ad.live, ["adaptive.loss"])
        seen.add(v["adaptive.loss"])
        assert ("adaptive.dwa.temperature" in v) == (v["adaptive.loss"] == "dwa")
        assert "train.lr" in v
        study.tell(t, 1.0)
    assert seen == {"none", "dwa", "uncertainty"}
    # a controller's setting with the controller never on: refused, not silently ignored
    with pytest.raises(TuneError, match="never changes a run"):
        ad.check(parse_space(["adaptive.dwa.temperature=float(0.5,4)"]))
    with pytest.raises(TuneError, match=r"unknown config key 'train\.lrr'"):
        ad.check(parse_space(["train.lrr=log(1e-4,1e-2)"]))
    with pytest.raises(TuneError, match=r"adaptive\.loss"):
        ad.check(parse_space(["adaptive.loss=choice(none,dwaa)"]))


def test_stage_lengths_and_end_points_are_config_keys() -> None:
    cfg = load_config(
        None,
        ["schedule.ramp.epochs=4", "schedule.ramp.tf_ratio.end=0.2", "schedule.2.tf_ratio=0.1"],
    )
    ramp, last = cfg["schedule"]["stages"][1], cfg["schedule"]["stages"][2]
    assert ramp["epochs"] == 4 and ramp["tf_ratio"] == (0.8, 0.2) and last["tf_ratio"] == (0.1, 0.1)
    from adaptive.train.config import ConfigError

    with pytest.raises(ConfigError, match="no stage 'rmp'"):
        load_config(None, ["schedule.rmp.epochs=3"])
    with pytest.raises(ConfigError, match="epochs has no start or end"):
        load_config(None, ["schedule.ramp.epochs.end=3"])


# ------------------------------------------------------------------------------ the study
def test_resume_reuses_finished_configurations_and_runs(tmp_path: Path) -> None:
    space = parse_space(["lr=log(0.0001,0.1)", "mode=choice(a,b)"])
    CALLS.clear()
    first = run_tune(tmp_path / "t", space, trials=4, seeds=2, prune=False, **TOY)
    assert len(first.frame) == 4 and (first.frame["state"] == "COMPLETE").all()
    n_first = len(CALLS)
    assert n_first == 2 * 5  # the baseline and 4 configurations, 2 seeds each
    CALLS.clear()
    more = run_tune(tmp_path / "t", space, trials=6, seeds=2, prune=False, **TOY)
    assert len(more.frame) == 6
    assert more.frame["number"].tolist()[:4] == first.frame["number"].tolist()
    assert len(CALLS) == 2 * 2  # only the 2 new configurations trained
    assert more.design["runs_this_call"] == 4
    # every configuration is paired against the baseline on the same seeds
    assert set(more.frame["n"]) == {2}
    # another search into the same folder is refused
    with pytest.raises(TuneError, match="holds another search"):
        run_tune(tmp_path / "t", space, trials=6, seeds=3, prune=False, **TOY)


def test_an_interrupted_configuration_is_asked_again_and_its_runs_reused(tmp_path: Path) -> None:
    space = parse_space(["lr=log(0.0001,0.1)", "crash=choice(no,yes)"])
    out = tmp_path / "t"
    kw = {**TOY, "seeds": 2, "prune": False, "sampler_seed": 3}
    CRASH["on"] = True
    try:
        with pytest.raises(KeyboardInterrupt):
            run_tune(out, space, trials=8, **kw)
    finally:
        CRASH["on"] = False
    import optuna

    study = optuna.load_study(
        study_name="tune", storage=run_tune.__globals__["_storage"](out, None)
    )
    running = [t for t in study.trials if t.state.name == "RUNNING"]
    assert len(running) == 1 and running[0].params["crash"] == "yes"
    # resume (the interruption gone): the same parameters are asked again, as a new trial
    res = run_tune(out, space, trials=8, **kw)
    study = optuna.load_study(
        study_name="tune", storage=run_tune.__globals__["_storage"](out, None)
    )
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1
    asked_again = [
        t for t in study.trials if t.number > failed[0].number and t.params == failed[0].params
    ]
    assert asked_again and asked_again[0].state.name == "COMPLETE"
    assert len(res.frame) == 8  # FAIL is not counted


def test_pruning_stops_clearly_worse_configurations_early(tmp_path: Path) -> None:
    space = parse_space(["lr=log(0.00001,10)"])
    res = run_tune(tmp_path / "p", space, trials=14, seeds=3, prune=True, **TOY)
    pruned = res.frame[res.frame["state"] == "PRUNED"]
    assert len(pruned) >= 1
    assert res.design["runs_trained"] < res.design["runs_full"]
    # a pruned configuration was worse at the seeds it ran than the best complete one
    best = res.best["mean"]
    assert (pruned["mean"] > best).all()
    # the search's own runs: the baseline's, and each configuration's up to where it stopped
    assert res.design["runs_trained"] == 3 + 3 * int((res.frame["state"] == "COMPLETE").sum()) + (
        pruned["n"].sum()
    )
    # the pruner audited: the pruned ones trained to the end, none of them would have won
    again = run_tune(tmp_path / "p", space, trials=14, seeds=3, prune=True, audit_pruned=2, **TOY)
    done = again.frame[(again.frame["state"] == "PRUNED") & (again.frame["n"] == 3)]
    assert len(done) == min(2, len(pruned)) and again.design["runs_audit"] > 0
    assert (done["mean"] > again.best["mean"]).all()
    assert "Pruned, then trained to the end" in (tmp_path / "p" / "tune.md").read_text()


def test_prefilter_skips_with_its_reason_and_audit_trains_a_sample(tmp_path: Path) -> None:
    """On the tiny task (3 epochs, stages of 1 and 2) DWA never has two epochs of history
    and uncertainty weighting moves its weights by 0.7 %: replay says both are inert, so
    neither trains; the audit trains one anyway."""
    from replay import prefilter

    space = parse_space(["adaptive.loss=choice(dwa,uncertainty)"])
    res = run_tune(
        tmp_path / "f", space, sets=SMALL, trials=2, seeds=2, prefilter=prefilter, audit_skipped=1
    )
    assert (res.frame["state"] == "SKIPPED").all()
    assert res.frame["skipped"].str.contains(r"replay: (?:dwa|uncertainty) .*inert").all()
    assert res.design["runs_trained"] == 2  # the search itself trained the baseline only
    assert res.design["runs_audit"] == 2  # and the audit one configuration, 2 seeds
    assert res.best is None  # nothing trained in the search itself
    assert res.frame.loc[0, "n"] == 2 and res.frame.loc[1, "n"] == 0  # the audited one ran
    md = (tmp_path / "f" / "tune.md").read_text()
    assert "trained anyway to check it" in md


def test_tiny_reference_tune_with_confirmation_and_best_toml(tmp_path: Path) -> None:
    from replay import prefilter

    out = tmp_path / "T"
    res = run_tune(
        out,
        parse_space(["train.lr=log(0.0005,0.005)", "adaptive.loss=choice(none,uncertainty)"]),
        sets=SMALL,
        trials=4,
        seeds=2,
        confirm_seeds=2,
        confirm_first_seed=100,
        prefilter=prefilter,
        audit_skipped=1,
    )
    assert (out / "study.journal").is_file() and (out / "tune.csv").is_file()
    md = (out / "tune.md").read_text()
    assert "Development seeds (chosen on these: optimistic)" in md
    skipped = res.frame[res.frame["state"] == "SKIPPED"]
    for _, row in skipped.iterrows():
        assert row["skipped"].startswith("replay: uncertainty")
    if res.confirmation is not None:  # a configuration beat the baseline on the dev seeds
        prim = res.confirmation.rows("primary").iloc[0]
        assert int(prim["n"]) == 2 and math.isfinite(prim["rel_ci_low"])
        assert "80% power to detect" in md and "n = 2" in md
        assert "winner's curse" in md
        assert res.confirmation.folder.name.startswith("confirm-")
        assert (res.confirmation.folder / "trial.md").is_file()
    else:
        assert "nothing to confirm" in md
    toml = (out / "best.toml").read_text()
    assert "adaptive train --config THIS_FILE" in toml
    tuned = load_config(None, [*SMALL, *json.loads(res.best["overrides"])])
    assert load_config(out / "best.toml")["train"]["lr"] == tuned["train"]["lr"]


def test_command_tune_on_the_plain_loop_example(tmp_path: Path) -> None:
    script = ROOT / "examples" / "plain_loop.py"
    cmd = f"{sys.executable} {script} --seed {{seed}} --out {{run_dir}} {{overrides}}"
    r = runner.invoke(
        app,
        [
            "tune",
            "--command",
            cmd,
            "--space",
            "lr=log(0.01,0.2)",
            "--trials",
            "2",
            "--seeds",
            "2",
            "--metric",
            "val/mse",
            "--no-prune",
            "--out",
            str(tmp_path / "c"),
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    text = (tmp_path / "c" / "best-overrides.txt").read_text().strip()
    assert text.startswith("--lr ")
    assert "val/mse" in (tmp_path / "c" / "tune.md").read_text()


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--space", "train.lrr=log(0.001,0.01)"], "unknown config key 'train.lrr'"),
        (["--space", "train.lr=log(0.001)"], "exactly two bounds"),
        (["--space", "train.lr=float(0.01,0.001)"], "empty range"),
        (["--space", "adaptive.loss=choice(dwa)"], "at least two different values"),
        (
            ["--space", "train.lr=log(0.001,0.01)", "--storage", "sqlite:////no/such/dir/x.db"],
            "--storage sqlite:////no/such/dir/x.db: cannot open it",
        ),
        (["--space", "train.lr=log(0.001,0.01)", "--confirm-seeds", "1"], "--confirm-seeds"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], msg: str) -> None:
    r = runner.invoke(app, ["tune", "--quick", "--out", str(tmp_path / "x"), *args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0]
    assert not (tmp_path / "x" / "runs").exists()  # refused before anything trained
