"""Scheduler laws as registered modules: the contract suite over every registered law (and a
toy law registered here, which paces delta per epoch while a guard inside it can still ease
off), the registry, the config sections, `--param law=NAME` and `--adaptive-param law=NAME`,
and old guard state dicts still loading."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from adaptive._checks import check_number, decode_float, encode_float
from adaptive.scheduler import (
    DEFAULT_LAW,
    REASONS,
    AdaptiveScheduler,
    Control,
    Decision,
    GuardLaw,
    SchedulerLaw,
    Window,
    available_laws,
    law_class,
    register_law,
    scheduler_parameters,
)
from adaptive.scheduler import _law as law_module
from adaptive.trace import read_trace
from adaptive.train.config import (
    default_config,
    load_config,
    scheduler_config,
    scheduler_law_params,
)
from cli import app
from replay import ReplayError, output_stem, parse_params, recommended_toml, replay
from replay._scheduler_replay import replay_scheduler_fast
from tests.reference_replay import replay_scheduler as replay_per_step
from tests.test_analysis import synthetic
from tests.test_scheduler import _synthetic_trace
from tests.test_train import TINY

TOY = "toy"
BASE = {"tf_ratio": 0.5, "freerun_horizon": 8.0, "freerun_weight": 0.5}


class ToyPacedLaw(SchedulerLaw):
    """Toy pacing: delta grows by ``pace_step`` per epoch up to ``target``; a guard inside
    (its own delta offset, added to the pace) can still ease off on trouble."""

    reasons: ClassVar[Mapping[str, int]] = {**REASONS, "pace": +1}
    signal_keys = ("pace", "guard_delta")
    plot_signals = ("pace", "guard_delta")
    state_keys = ("toy_pace", "toy_guard")
    example_params: ClassVar[Mapping[str, Any]] = {"pace_step": 0.1, "target": 0.2}
    invalid_params = (("pace_step", -1.0), ("target", math.nan), ("min_samples", 1))

    def __init__(
        self,
        *,
        pace_step: float = 0.05,
        target: float = 0.25,
        spike_z: float = 4.0,
        min_samples: int = 4,
    ) -> None:
        super().__init__()
        self.pace_step = check_number("pace_step", pace_step, low=0.0)
        self.target = check_number("target", target, low=-1.0, high=1.0)
        self.guard = GuardLaw(spike_z=spike_z, min_samples=min_samples, cooldown=0)
        self.pace = 0.0
        self.guard_delta = 0.0

    def params(self) -> dict[str, Any]:
        g = self.guard.params()
        return {
            "pace_step": self.pace_step,
            "target": self.target,
            "spike_z": g["spike_z"],
            "min_samples": g["min_samples"],
        }

    def window(self, window: Window, control: Control) -> Decision:
        d = self.guard.window(window, control.with_delta(self.guard_delta))
        if d.action == "change":
            self.guard_delta = d.delta
        self.signals.update(pace=self.pace, guard_delta=self.guard_delta)
        if d.action != "change":
            return Decision("batch", d.action, d.reason, control.delta, d.detail)
        return Decision("batch", "change", d.reason, self.pace + self.guard_delta, d.detail)

    def epoch(self, metrics, val_metrics, control: Control) -> Decision:  # type: ignore[no-untyped-def]
        if not control.epoch_decisions:
            return Decision.hold("epoch", control, action="disabled")
        new = min(self.target, self.pace + self.pace_step)
        if new == self.pace:
            return Decision.hold("epoch", control)
        self.pace = new
        self.signals.update(pace=self.pace, guard_delta=self.guard_delta)
        return Decision("epoch", "change", "pace", new + self.guard_delta, f"pace {new:+.3f}")

    def state_dict(self) -> dict[str, Any]:
        guard = {"delta": encode_float(self.guard_delta), **self.guard.state_dict()}
        return {"toy_pace": encode_float(self.pace), "toy_guard": guard}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        try:
            pace = decode_float(state["toy_pace"], "toy_pace")
            guard_delta = decode_float(state["toy_guard"]["delta"], "toy_guard.delta")
        except KeyError as e:
            raise ValueError(f"state is missing entry {e.args[0]!r}") from None
        self.guard.load_state_dict(state["toy_guard"])
        self.pace, self.guard_delta = pace, guard_delta


@pytest.fixture(autouse=True)
def toy() -> Iterator[str]:
    """The toy law is registered for this module's tests only (the registry is global)."""
    register_law(TOY)(ToyPacedLaw)
    try:
        yield TOY
    finally:
        law_module._REGISTRY.pop(TOY, None)


def laws() -> list[str]:
    return sorted({*available_laws(), TOY})


# ------------------------------------------------------------------------ helpers
def drive(s: AdaptiveScheduler, start: int, stop: int, *, nonfinite: bool = True) -> None:
    """Deterministic batches with spikes, a rising phase and (optionally) NaN/inf values;
    an epoch of 40 batches with metrics that worsen and recover."""
    for i in range(start, stop):
        if i % 40 == 0:
            if i:
                e = i // 40
                free = math.inf if nonfinite and e == 5 else 10.0 + (e % 3) * 2.5
                s.step_epoch({"YawAbsDeg": free, "MPJPE": 100.0 - e}, {"YawAbsDeg": 9.0 - e / 10})
            s.set_base_values(BASE)
        loss = 1.0 + 0.1 * math.sin(i) + (3.0 if i % 37 == 5 else 0.0) + (i % 200 > 150)
        grad = 2.0 + 0.2 * math.cos(1.3 * i) + (40.0 if i % 23 == 4 else 0.0)
        if nonfinite and i % 61 == 60:
            loss = math.nan
        if nonfinite and i % 97 == 50:
            grad = math.inf
        # the GTF law's inputs (other laws ignore them): growth 2**(1/8) then 16**(1/8)
        loss_fr = loss * (16.0 if i % 200 > 100 else 2.0)
        s.step_batch(loss, grad, regime=(i // 7) % 2, inputs=inputs(loss_fr, 8.0))


def inputs(loss_fr: Any, horizon: Any) -> dict[str, Any]:
    """What the trainer passes every law (a law reads only its own ``inputs``)."""
    return {"loss_fr": loss_fr, "horizon": horizon}


def make(law: str, **kw: Any) -> AdaptiveScheduler:
    kw.setdefault("update_interval", 10)
    return AdaptiveScheduler(law=law, **kw)


def with_law_inputs(trace: Any, seed: int = 1) -> Any:
    """A synthetic trace with the columns the laws' inputs come from: ``loss_fr_total``
    (free-run batches only: the loss times a ratio whose growth per step crosses 1.3) and
    the applied ``schedule/freerun_horizon``."""
    steps = trace.steps
    rng = np.random.default_rng(seed)
    n = len(steps)
    loss = steps["loss_tf_total"] if "loss_tf_total" in steps else steps["loss_total"]
    ratio = np.exp(np.linspace(0.5, 3.5, n) * rng.lognormal(0, 0.2, n))
    fr = (loss.to_numpy(np.float64) * ratio).astype(np.float32)
    regime = steps["regime"].to_numpy() if "regime" in steps else np.ones(n)
    fr[regime == 0] = np.nan
    steps["loss_fr_total"] = fr
    base = "schedule_base/freerun_horizon"
    steps["schedule/freerun_horizon"] = steps[base] if base in steps else np.float32(8.0)
    return trace


def snapshot(s: AdaptiveScheduler) -> str:
    return json.dumps([s.state_dict(), s.history(), s.diagnostics()], allow_nan=False)


# ------------------------------------------------------------------------ contract suite
@pytest.mark.parametrize("law", laws())
def test_deterministic(law: str) -> None:
    runs = []
    for _ in range(2):
        s = make(law, **law_class(law).example_params)
        drive(s, 0, 400)
        runs.append(snapshot(s))
    assert runs[0] == runs[1]
    assert make(law).num_changes == 0


@pytest.mark.parametrize("law", laws())
@pytest.mark.parametrize("bound", [0.0, 0.15, 0.3])
def test_bounded(law: str, bound: float) -> None:
    lim = {"freerun_horizon": (1.0, 9.0)}
    s = make(law, adjustment_range=bound, limits=lim, update_interval=5)
    deltas = []
    for stop in range(40, 601, 40):
        drive(s, stop - 40, stop)
        deltas.append(s.delta)
        p = s.proposed()
        assert 0.0 <= p["tf_ratio"] <= 1.0
        assert 1.0 <= p["freerun_horizon"] <= 9.0 and p["freerun_horizon"] == int(
            p["freerun_horizon"]
        )
    assert all(abs(d) <= bound for d in deltas)
    for h in s.history():
        assert abs(h["new_delta"]) <= bound and h["reason"] in law_class(law).reasons
    if bound == 0.0:
        assert s.proposed() == BASE


@pytest.mark.parametrize("law", laws())
def test_state_dict_is_plain_json_with_the_laws_entries(law: str) -> None:
    s = make(law)
    drive(s, 0, 293)
    sd = s.state_dict()
    assert json.loads(json.dumps(sd, allow_nan=False)) == sd
    assert sd["config"]["law"] == law
    assert set(law_class(law).state_keys) <= set(sd)
    assert set(sd["signals"]) == set(law_class(law).signal_keys)
    assert set(sd["reason_counts"]) == set(law_class(law).reasons)


@pytest.mark.parametrize("law", laws())
@pytest.mark.parametrize("cut", [93, 200, 241])  # mid-window, at a window end, after an epoch
def test_exact_resume_mid_run(law: str, cut: int) -> None:
    ref = make(law)
    drive(ref, 0, 400)
    a = make(law)
    drive(a, 0, cut)
    b = make(law, dry_run=True)  # dry_run is not behavioural: a dry-run state may go live
    b.load_state_dict(json.loads(json.dumps(a.state_dict(), allow_nan=False)))
    b.dry_run = False
    drive(b, cut, 400)
    assert snapshot(b) == snapshot(ref)


@pytest.mark.parametrize("law", laws())
def test_step_block_equals_live_steps(law: str) -> None:
    rng = np.random.default_rng(3)
    n = 437
    loss = rng.lognormal(0, 0.3, n).astype(np.float32)
    grad = rng.lognormal(0, 0.5, n).astype(np.float32)
    loss[[50, 51, 300]] = np.nan
    grad[[120]] = np.inf
    regime = (rng.random(n) < 0.4).astype(np.int64)
    loss_fr = (loss * rng.lognormal(1.5, 0.8, n)).astype(np.float32)
    loss_fr[[70, 200]] = np.nan
    horizon = np.where(np.arange(n) < 200, 4.0, 8.0)
    live, blk = make(law, update_interval=7), make(law, update_interval=7)
    for s in (live, blk):
        s.set_base_values(BASE)
    for lo, hi in ((0, 150), (150, 151), (151, n)):
        rec = blk.step_block(
            loss[lo:hi], grad[lo:hi], regime[lo:hi], inputs(loss_fr[lo:hi], horizon[lo:hi])
        )
        proposed = []
        for i in range(lo, hi):
            proposed.append(live.proposed()["freerun_weight"])
            live.step_batch(
                float(loss[i]),
                float(grad[i]),
                regime=int(regime[i]),
                inputs=inputs(float(loss_fr[i]), float(horizon[i])),
            )
        assert rec.proposed()["freerun_weight"].tolist() == proposed
        live.step_epoch({"YawAbsDeg": 10.0 + lo / 100}, {"YawAbsDeg": 9.0})
        blk.step_epoch({"YawAbsDeg": 10.0 + lo / 100}, {"YawAbsDeg": 9.0})
    assert snapshot(blk) == snapshot(live)


@pytest.mark.parametrize("law", laws())
def test_replay_equals_live_per_step_bit_for_bit(law: str) -> None:
    trace = with_law_inputs(_synthetic_trace(3000, 100, nonfinite_every=501, spike_p=0.01))
    params = {"law": law, "update_interval": 9, **law_class(law).example_params}
    fast = replay_scheduler_fast(trace, **params)
    ref = replay_per_step(trace, **params)
    assert list(fast.frame.columns) == list(ref.frame.columns)
    for col in fast.frame.columns:
        a, b = fast.frame[col].to_numpy(), ref.frame[col].to_numpy()
        if a.dtype.kind == "f":
            assert (a.view(np.uint64) == b.view(np.uint64)).all(), col
        else:
            assert (a == b).all(), col
    assert [f"signal/{k}" for k in law_class(law).plot_signals] == [
        c for c in fast.frame.columns if c.startswith("signal/")
    ]
    assert fast.params["law"] == law


@pytest.mark.parametrize("law", laws())
def test_nonfinite_inputs_are_handled(law: str) -> None:
    s = make(law, update_interval=4)
    s.set_base_values(BASE)
    for i in range(40):
        v = (math.nan, math.inf, -math.inf, 1.0)[i % 4]
        g = (1.0, math.nan, 2.0, math.inf)[i % 4]
        s.step_batch(v, g, regime=i % 2, inputs=inputs((math.inf, 3.0, math.nan, 0.0)[i % 3], 4.0))
    s.step_epoch({"YawAbsDeg": math.nan}, {"YawAbsDeg": math.inf})
    s.step_epoch({"YawAbsDeg": 1.0}, None)
    assert math.isfinite(s.delta) and abs(s.delta) <= 0.3
    assert all(math.isfinite(v) for v in s.proposed().values())
    json.dumps(s.state_dict(), allow_nan=False)


@pytest.mark.parametrize("law", laws())
def test_parameters_are_validated_naming_the_value(law: str) -> None:
    cls = law_class(law)
    assert cls.name == law and cls.reasons and cls.plot_signals
    make(law, **cls.example_params)
    assert cls.invalid_params
    for name, bad in cls.invalid_params:
        with pytest.raises(ValueError) as e:
            make(law, **{name: bad})
        assert repr(bad) in str(e.value) or str(bad) in str(e.value), (name, bad)
    with pytest.raises(ValueError, match=f"unknown parameter.*'nope'.*law '{law}'"):
        make(law, nope=1)
    s = make(law, **cls.example_params)
    assert eval(repr(s), {"AdaptiveScheduler": AdaptiveScheduler}).config() == s.config()


@pytest.mark.parametrize("law", laws())
def test_a_state_of_another_law_is_refused(law: str) -> None:
    other = next(x for x in laws() if x != law)
    s = make(other)
    drive(s, 0, 95)
    with pytest.raises(ValueError, match=f"law: saved '{other}' != current '{law}'"):
        make(law).load_state_dict(s.state_dict())


# ------------------------------------------------------------------------ the toy law
def test_toy_paces_and_its_guard_can_still_ease_off() -> None:
    s = make(TOY, pace_step=0.1, target=0.3, adjustment_range=0.3, min_samples=3)
    drive(s, 0, 400, nonfinite=False)
    reasons = [h["reason"] for h in s.history()]
    assert reasons[:3] == ["pace"] * 3  # paced up to the target, one step per epoch
    assert "loss_rising" in reasons  # and the guard inside eased off on the rising loss
    law = s.law_impl
    assert isinstance(law, ToyPacedLaw)
    assert law.guard_delta < 0.0 and law.pace == pytest.approx(0.3)
    assert s.delta == pytest.approx(min(0.3, law.pace + law.guard_delta))


def test_registry() -> None:
    assert DEFAULT_LAW == "guard" and "guard" in available_laws() and TOY in available_laws()
    assert law_class("guard") is GuardLaw
    with pytest.raises(ValueError, match=r"unknown scheduler law 'nope'; available laws: \["):
        AdaptiveScheduler(law="nope")
    with pytest.raises(ValueError, match="already registered"):
        register_law("guard")(ToyPacedLaw)
    with pytest.raises(TypeError):
        register_law("bad")(dict)  # type: ignore[arg-type]

    class Clash(ToyPacedLaw):
        state_keys = ("delta",)

    with pytest.raises(ValueError, match="controller's keys"):
        register_law("clash")(Clash)
    params = scheduler_parameters()
    assert params["law"] == "guard" and params["spike_z"] == 4.0 and params["pace_step"] == 0.05
    assert AdaptiveScheduler().law == "guard" and AdaptiveScheduler().config()["law"] == "guard"


# ------------------------------------------------------------------------ config and CLI
def test_config_sections_from_the_registry() -> None:
    cfg = default_config()["adaptive"]["scheduler_law"]
    assert cfg["law"] == "guard" and cfg["spike_z"] == 4.0
    assert cfg[TOY] == {"pace_step": 0.05, "target": 0.25, "spike_z": 4.0, "min_samples": 4}
    assert scheduler_law_params(cfg) == {"law": "guard", **GuardLaw().params()}
    toy_cfg = load_config(
        None, ["adaptive.scheduler_law.law='toy'", "adaptive.scheduler_law.toy.target=0.1"]
    )["adaptive"]["scheduler_law"]
    assert scheduler_law_params(toy_cfg) == {
        "law": TOY,
        **ToyPacedLaw(target=0.1).params(),
    }
    with pytest.raises(ValueError, match=r"adaptive\.scheduler_law\.law: unknown scheduler law"):
        load_config(None, ["adaptive.scheduler_law.law='nope'"])
    assert scheduler_config({"law": TOY, "target": 0.1, "update_interval": 5}) == {
        "update_interval": 5,
        "scheduler_law": {"law": TOY, TOY: {"target": 0.1}},
    }
    assert scheduler_config({"spike_z": 3.0, "val_metric": None}) == {
        "scheduler_law": {"spike_z": 3.0, "val_metric": ""}
    }
    assert scheduler_config({"target": 0.2}, law=TOY) == {"scheduler_law": {TOY: {"target": 0.2}}}
    text = recommended_toml("scheduler", {"law": TOY, "target": 0.1, "adjustment_range": 0.2})
    got = tomllib.loads(text)["adaptive"]
    assert got["scheduler"] is True and got["scheduler_adjustment_range"] == 0.2
    assert got["scheduler_law"] == {"law": TOY, TOY: {"target": 0.1}}


def test_param_parser_takes_law_and_its_parameters() -> None:
    got = parse_params(["scheduler"], ["law=toy", "target=0.1", "update_interval=5"])
    assert got == {"scheduler": {"law": TOY, "target": 0.1, "update_interval": 5}}
    with pytest.raises(ReplayError, match="value 'x' is not a number"):
        parse_params(["scheduler"], ["target=x"])


runner = CliRunner()


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory.mktemp("t") / "run" / "trace.parquet", steps=400)


def test_replay_cli_with_a_registered_toy_law(trace_path: Path, tmp_path: Path) -> None:
    args = ["replay", str(trace_path), "-m", "scheduler", "-q", "-o", str(tmp_path)]
    res = runner.invoke(app, [*args, "-p", "law=toy", "-p", "pace_step=0.1", "-p", "target=0.2"])
    assert res.exit_code == 0, res.output
    stem = output_stem("scheduler", {"law": "toy", "pace_step": 0.1, "target": 0.2})
    written = pd.read_parquet(tmp_path / f"{stem}.parquet")
    want = replay(read_trace(trace_path), "scheduler", law=TOY, pace_step=0.1, target=0.2)
    assert (written["delta"].to_numpy() == want.frame["delta"].to_numpy()).all()
    assert written["delta"].max() == pytest.approx(0.2)  # paced up to the target
    assert "signal/pace" in written.columns
    res = runner.invoke(app, [*args, "-p", "law=toy", "-p", "spike_count=3"])
    assert res.exit_code == 2 and "spike_count" in res.output and "'toy'" in res.output


def test_train_cli_runs_a_law_given_by_adaptive_param(tmp_path: Path) -> None:
    args = ["train", "--out", str(tmp_path), "--name", "t", "--epochs", "2", "-q"]
    for s in TINY:
        args += ["--set", s]
    on = ["--adaptive-scheduler", "--adaptive-param", "law=toy"]
    res = runner.invoke(app, [*args, *on, "--adaptive-param", "pace_step=0.1"])
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads((tmp_path / "t" / "config.toml").read_text())["adaptive"]
    assert cfg["scheduler_law"]["law"] == TOY and cfg["scheduler_law"][TOY]["pace_step"] == 0.1
    # the live law is the replayed one: replaying the trace with the same parameters gives
    # the proposals the run recorded (float32 in the trace)
    tr = read_trace(tmp_path / "t" / "trace.parquet")
    run = {k: cfg[k] for k in ("adjustment_rate", "update_interval", "use_epoch_metrics")}
    run["adjustment_range"] = cfg["scheduler_adjustment_range"]
    got = replay(tr, "scheduler", law=TOY, pace_step=0.1, **run).frame
    for p in ("freerun_weight", "tf_ratio", "freerun_horizon"):
        recorded = tr.steps[f"proposed/schedule/{p}"].to_numpy(dtype=np.float64)
        assert np.allclose(got[f"proposed/schedule/{p}"].to_numpy(), recorded, rtol=1e-6), p
    assert got["delta"].max() > 0.0  # it paced
    both = ["--adaptive-loss", "dwa", "--adaptive-scheduler", "--adaptive-param", "law=toy"]
    res = runner.invoke(app, [*args, *both])
    assert res.exit_code == 2 and "method.name=value" in res.output, res.output


# ------------------------------------------------------------------------ old states
def test_a_state_dict_without_a_law_is_the_guards() -> None:
    s = make("guard")
    drive(s, 0, 93)
    sd = s.state_dict()
    del sd["config"]["law"]
    t = make("guard")
    t.load_state_dict(sd)
    drive(s, 93, 300)
    drive(t, 93, 300)
    assert snapshot(t) == snapshot(s)
    with pytest.raises(ValueError, match="law: saved 'guard' != current 'toy'"):
        make(TOY).load_state_dict(sd)


def test_sweep_cli_over_a_toy_law_recommends_its_section(trace_path: Path, tmp_path: Path) -> None:
    grid = ["--grid", "target=0.1,0.2", "--grid", "pace_step=0.05,0.1"]
    args = ["sweep", str(trace_path), "-m", "scheduler", "-p", "law=toy", "-o", str(tmp_path)]
    res = runner.invoke(app, [*args, *grid])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "sweep.csv")
    assert len(table) == 4 and set(table["target"]) == {0.1, 0.2}
    got = tomllib.loads((tmp_path / "recommended.toml").read_text())["adaptive"]
    assert got["scheduler"] is True and got["scheduler_law"]["law"] == TOY
    assert set(got["scheduler_law"][TOY]) == {"target", "pace_step"}
    cfg = load_config(tmp_path / "recommended.toml")["adaptive"]  # train --config takes it
    assert scheduler_law_params(cfg["scheduler_law"])["law"] == TOY
