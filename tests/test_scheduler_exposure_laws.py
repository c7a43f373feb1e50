"""The exposure-bias scheduler laws (`gtf`, `competence`): their decisions, the signals
recorded in the trace and the "not recorded" refusal, any loop recording with
`TraceRecorder` replaying every law, thresholds in the figure, sweeps over a law's
parameters, and live runs of each law equal to their replay."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from adaptive import TraceRecorder
from adaptive.scheduler import AdaptiveScheduler, CompetenceLaw, GTFLaw, available_laws
from adaptive.trace import read_trace
from cli import app
from replay import ReplayError, output_stem, replay
from replay._plots import law_thresholds
from tests.test_train import TINY

BASE = {"tf_ratio": 0.5, "freerun_horizon": 8.0, "freerun_weight": 0.5}
runner = CliRunner()


def test_builtin_laws_are_registered_and_guard_stays_the_default() -> None:
    assert {"guard", "gtf", "competence"} <= set(available_laws())
    assert AdaptiveScheduler().law == "guard"


def _gtf_run(ratio: float, **kw: float) -> AdaptiveScheduler:
    s = AdaptiveScheduler(law="gtf", update_interval=10, guard=False, **kw)
    s.set_base_values(BASE)
    for i in range(60):
        s.step_batch(1.0, 1.0, regime=i % 2, inputs={"loss_fr": ratio, "horizon": 8.0})
    return s


def test_gtf_grows_the_free_run_below_the_target_and_eases_off_above() -> None:
    low = _gtf_run(1.05**8)  # growth 1.05 per step, target 1.3
    assert low.delta == pytest.approx(0.3) and low.law_impl.signals["growth"] == pytest.approx(1.05)
    assert {h["reason"] for h in low.history()} == {"growth_low"}
    assert low.proposed()["freerun_horizon"] == 10.0  # round(8 * 1.3)
    high = _gtf_run(1.6**8)
    assert high.delta == pytest.approx(-0.3)
    assert {h["reason"] for h in high.history()} == {"growth_high"}
    held = _gtf_run(1.3**8)  # within the tolerance band: no change
    assert held.num_changes == 0


def test_gtf_ignores_teacher_forced_batches_and_needs_its_inputs() -> None:
    s = AdaptiveScheduler(law="gtf", update_interval=10)
    s.set_base_values(BASE)
    for _ in range(30):  # regime 0: no rollout, loss_fr is NaN
        s.step_batch(1.0, 1.0, regime=0, inputs={"loss_fr": math.nan, "horizon": 8.0})
    assert s.num_changes == 0 and s.law_impl.signals["samples"] == 0.0
    with pytest.raises(ValueError, match=r"law 'gtf' needs step_batch.*missing \['loss_fr'\]"):
        s.step_batch(1.0, 1.0, inputs={"horizon": 8.0})


def test_gtf_guard_can_still_ease_off() -> None:
    s = AdaptiveScheduler(law="gtf", update_interval=20)  # 10 batches per regime: judged
    s.set_base_values(BASE)
    for i in range(200):
        loss = 1.0 if i < 100 else 3.0  # the loss jumps: the guard's loss_rising
        s.step_batch(loss, 1.0, regime=i % 2, inputs={"loss_fr": loss * 1.05**8, "horizon": 8})
    reasons = [h["reason"] for h in s.history()]
    assert "growth_low" in reasons and "loss_rising" in reasons
    law = s.law_impl
    assert isinstance(law, GTFLaw) and law.signals["guard_offset"] < 0.0
    assert s.delta == pytest.approx(min(0.3, law.pace + law.signals["guard_offset"]))


def test_competence_starts_easy_advances_when_ready_and_steps_back() -> None:
    s = AdaptiveScheduler(law="competence", update_interval=10, ramp=4, start=0.0, guard=False)
    s.set_base_values(BASE)
    s.step_epoch({"YawAbsDeg": 10.0}, {"YawAbsDeg": 5.0})
    assert s.delta == pytest.approx(-0.3)  # c0 = 0: the easiest schedule
    s.step_epoch({"YawAbsDeg": 9.0}, {"YawAbsDeg": 4.0})  # val still improving: not ready
    assert s.delta == pytest.approx(-0.3)
    s.step_epoch({"YawAbsDeg": 9.0}, {"YawAbsDeg": 3.99})  # plateau, valfree held: ready
    law = s.law_impl
    assert isinstance(law, CompetenceLaw) and law.competence() == pytest.approx(0.5)
    assert s.delta == pytest.approx(0.0)
    s.step_epoch({"YawAbsDeg": 12.0}, {"YawAbsDeg": 3.99})  # valfree +33 %: back one step
    assert law.steps == 0 and s.delta == pytest.approx(-0.3)
    assert [h["reason"] for h in s.history()] == ["start", "ready", "free_worse"]
    for _ in range(6):
        s.step_epoch({"YawAbsDeg": 12.0}, {"YawAbsDeg": 3.99})
    assert law.competence() == 1.0 and s.delta == pytest.approx(0.3)


def _plain_loop(
    path: Path, *, schedule: bool = True, loss_fr: bool = True, epochs: int = 3
) -> Path:
    """A plain loop with its own teacher-forcing / free-run draw, recorded with
    TraceRecorder (the scheduler in dry-run feeds it the base values)."""
    gen = torch.Generator().manual_seed(0)
    sched = AdaptiveScheduler(dry_run=True, update_interval=5)
    with TraceRecorder(path, components=["a", "b"]) as rec:
        for epoch in range(epochs):
            sched.set_base_values(BASE)
            for i in range(20):
                values = sched.values()
                regime = int(torch.rand((), generator=gen) >= values["tf_ratio"])
                la = torch.tensor(1.0 / (1 + 0.05 * (epoch * 20 + i)))
                lb = torch.tensor(0.3 + 0.05 * (i % 7))
                loss_tf = la + lb
                fr = loss_tf * (2.0 + epoch) if regime else math.nan
                grad = torch.tensor(1.0 + 0.1 * (i % 3))
                kw = {}
                if schedule:
                    kw = {"scheduler": sched, "regime": regime, "loss_tf_total": loss_tf}
                    if loss_fr:
                        kw["loss_fr_total"] = fr
                rec.log_step(losses={"a": la, "b": lb}, grad_norm=grad, lr=0.1, **kw)
                sched.step_batch(
                    loss_tf, grad, regime=regime, inputs={"loss_fr": fr, "horizon": 8.0}
                )
            for split, m in (("valfree", 10.0 - epoch), ("val", 5.0 - 0.01 * epoch)):
                rec.log_epoch(split=split, metrics={"YawAbsDeg": m})
            sched.step_epoch({"YawAbsDeg": 10.0 - epoch}, {"YawAbsDeg": 5.0 - 0.01 * epoch})
            rec.end_epoch()
    return path


@pytest.mark.parametrize("law", sorted(available_laws()))
def test_a_plain_loop_recorded_with_trace_recorder_replays_every_law(
    law: str, tmp_path: Path
) -> None:
    trace = _plain_loop(tmp_path / "run" / "trace.parquet")
    steps = read_trace(trace).steps
    for col in ("schedule/tf_ratio", "schedule_base/freerun_horizon", "regime", "loss_fr_total"):
        assert col in steps.columns, col
    assert steps["loss_fr_total"].isna().to_numpy().tolist() == (steps["regime"] == 0).tolist()
    out = tmp_path / "out"
    args = ["replay", str(trace), "-m", "scheduler", "-p", f"law={law}", "-q", "-o", str(out)]
    res = runner.invoke(app, [*args, "-p", "update_interval=5"])
    assert res.exit_code == 0, res.output
    stem = output_stem("scheduler", {"law": law, "update_interval": 5})
    written = pd.read_parquet(out / f"{stem}.parquet")
    assert len(written) == 60 and written["delta"].abs().max() <= 0.3
    assert list(out.glob("*.png"))  # the figure, with each signal's threshold line


def test_compare_lists_the_laws_side_by_side(tmp_path: Path) -> None:
    trace = _plain_loop(tmp_path / "run" / "trace.parquet")
    out = tmp_path / "cmp"
    args = ["compare", str(trace), "--laws", "-m", "dwa", "-q", "-o", str(out)]
    res = runner.invoke(app, [*args, "-p", "scheduler:gtf.target_growth=1.2"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "stability.csv", index_col=0)
    want = ["dwa", *(f"scheduler(law={law})" for law in sorted(available_laws()))]
    assert sorted(table.columns) == sorted(want)
    for law in available_laws():  # one verdict each
        assert f"scheduler(law={law}):" in res.output
    # the one that looks ready gets the trial of the scheduler under its own law: on this
    # own-trainer trace as a recommended file the user's script takes (--adaptive-config)
    assert "scheduler(law=competence): looks stable enough" in res.output
    rec = out / "recommended-scheduler-competence.toml"
    assert f'-c "scheduler-competence: --adaptive-config {rec}"' in res.output
    from adaptive.train.config import load_config

    assert load_config(rec)["adaptive"]["scheduler_law"]["law"] == "competence"
    again = runner.invoke(app, ["compare", str(trace), "-m", "scheduler:gtf", "-q", "-o", str(out)])
    assert again.exit_code == 0, again.output  # one law alone: labelled like any method
    bad = runner.invoke(app, ["compare", str(trace), "-m", "scheduler:nope", "-q"])
    assert bad.exit_code == 2 and "unknown scheduler law 'nope'" in bad.output
    assert "valid laws: " in bad.output and len(bad.output.strip().splitlines()) == 1
    wrong = runner.invoke(app, ["compare", str(trace), "-m", "dwa:gtf", "-q"])
    assert wrong.exit_code == 2 and "only the scheduler takes a law" in wrong.output
    p = runner.invoke(app, ["compare", str(trace), "-m", "scheduler:gtf", "-p", "law=guard"])
    assert p.exit_code == 2 and "'law' is not a parameter of 'scheduler:gtf'" in p.output


def test_a_law_on_a_trace_without_its_signals_is_refused_as_not_recorded(
    tmp_path: Path,
) -> None:
    trace = _plain_loop(tmp_path / "run" / "trace.parquet", loss_fr=False)  # an older trace
    with pytest.raises(ReplayError, match=r"law 'gtf' needs \['loss_fr_total'\], not recorded"):
        replay(read_trace(trace), "scheduler", law="gtf")
    res = runner.invoke(app, ["replay", str(trace), "-m", "scheduler", "-p", "law=gtf", "-q"])
    assert res.exit_code == 2 and "not recorded" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    replay(read_trace(trace), "scheduler", law="competence")  # its epoch splits are there


def test_the_figure_thresholds_come_from_the_law() -> None:
    assert law_thresholds({"law": "gtf", "target_growth": 1.2}) == {"growth": 1.2}
    got = law_thresholds({"law": "competence", "plateau_tolerance": 0.05})
    assert got["val_trend"] == -0.05 and got["competence"] == 1.0
    assert law_thresholds({"spike_z": 3.0})["grad_z"] == 3.0  # the guard's


def test_sweep_covers_a_new_laws_parameters(tmp_path: Path) -> None:
    trace = _plain_loop(tmp_path / "run" / "trace.parquet")
    grid = ["--grid", "target_growth=1.05,1.2,1.5", "--grid", "tolerance=0.02,0.1"]
    args = ["sweep", str(trace), "-m", "scheduler", "-p", "law=gtf", "-o", str(tmp_path / "s")]
    res = runner.invoke(app, [*args, "-p", "update_interval=5", *grid])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "s" / "sweep.csv")
    assert len(table) == 6 and set(table["target_growth"]) == {1.05, 1.2, 1.5}
    assert set(table["tolerance"]) == {0.02, 0.1}


FREE_RUN_FROM_THE_START = """
[[schedule.stages]]
name = "mixed"
epochs = 2
tf_ratio = 0.5
freerun_horizon = 8
freerun_weight = 0.5
"""


@pytest.mark.parametrize("law", ["gtf", "competence"])
def test_train_runs_the_law_live_and_equals_its_replay(law: str, tmp_path: Path) -> None:
    cfg = tmp_path / "mixed.toml"
    cfg.write_text(FREE_RUN_FROM_THE_START)
    args = ["train", "--config", str(cfg), "--out", str(tmp_path), "--name", "t", "-q"]
    args += ["--epochs", "2"]
    for s in TINY:
        args += ["--set", s]
    on = ["--adaptive-scheduler", "--adaptive-param", f"law={law}"]
    on += ["--adaptive-param", "update_interval=4"]
    if law == "gtf":
        on += ["--adaptive-param", "target_growth=1.01"]  # below any real growth: eases off
    res = runner.invoke(app, [*args, *on])
    assert res.exit_code == 0, res.output
    run = tomllib.loads((tmp_path / "t" / "config.toml").read_text())["adaptive"]
    tr = read_trace(tmp_path / "t" / "trace.parquet")
    assert tr.steps["regime"].sum() > 0 and tr.steps["loss_fr_total"].notna().sum() > 0
    kw = {k: run[k] for k in ("adjustment_rate", "update_interval", "use_epoch_metrics")}
    kw["adjustment_range"] = run["scheduler_adjustment_range"]
    kw |= {k: v for k, v in run["scheduler_law"][law].items() if v != ""}
    got = replay(tr, "scheduler", law=law, **kw).frame
    for p in ("freerun_weight", "tf_ratio", "freerun_horizon"):
        recorded = tr.steps[f"proposed/schedule/{p}"].to_numpy(dtype=np.float64)
        assert np.allclose(got[f"proposed/schedule/{p}"].to_numpy(), recorded, rtol=1e-6), p
    assert got["delta"].abs().max() > 0.0  # the law moved the schedule
