"""Tests of adaptive.scheduler.AdaptiveScheduler."""

from __future__ import annotations

import itertools
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptive.scheduler import REASONS, AdaptiveScheduler, map_value

BASE = {"tf_ratio": 0.5, "freerun_horizon": 10, "freerun_weight": 1.0}


def make(**kw) -> AdaptiveScheduler:
    kw.setdefault("update_interval", 10)
    s = AdaptiveScheduler(**kw)
    s.set_base_values(BASE)
    return s


def noisy(i: int, level: float = 1.0) -> float:
    """Deterministic small noise around ``level`` (+-2%)."""
    return level * (1.0 + 0.02 * ((i * 7919) % 5 - 2) / 2)


def feed(
    s: AdaptiveScheduler, n: int, *, loss: float = 1.0, grad: float = 1.0, start: int = 0
) -> None:
    for i in range(start, start + n):
        s.step_batch(noisy(i, loss), noisy(i + 3, grad))


# ----------------------------------------------------------------------------- batch level
def test_grad_spike_eases_off_within_one_interval():
    s = make()
    feed(s, 30)
    assert s.delta == 0.0
    for i in range(10):  # one window with a single 10x grad-norm spike
        s.step_batch(noisy(30 + i), 10.0 if i == 4 else noisy(i))
    assert s.delta == pytest.approx(-0.1)
    d = s.diagnostics()
    assert d["last_reason"] == "grad_spike"
    assert d["step"] == 40 and d["last_change_step"] == 40
    assert d["signals"]["grad_ratio"] > 3.0
    assert d["reason_counts"]["grad_spike"] == 1
    (h,) = s.history()
    assert h["reason"] == "grad_spike" and h["step"] == 40 and h["level"] == "batch"
    assert h["old_delta"] == 0.0 and h["new_delta"] == pytest.approx(-0.1)
    assert "10" in h["detail"]
    v = s.values()
    assert v["freerun_horizon"] == 9.0 and v["freerun_weight"] == pytest.approx(0.9)
    assert v["tf_ratio"] == pytest.approx(0.55)


def test_spike_in_first_window_detected_without_baseline():
    s = make()
    for i in range(10):
        s.step_batch(1.0, 8.0 if i == 0 else 1.0)
    assert s.diagnostics()["last_reason"] == "grad_spike"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("which", ["loss", "grad"])
def test_nonfinite_eases_off(bad, which):
    s = make()
    feed(s, 20)
    for i in range(10):
        bad_here = i == 3
        s.step_batch(
            bad if bad_here and which == "loss" else 1.0,
            bad if bad_here and which == "grad" else 1.0,
        )
    assert s.delta == pytest.approx(-0.1)
    assert s.diagnostics()["last_reason"] == "nonfinite"
    assert s.diagnostics()["signals"]["window_nonfinite"] == 1.0


def test_nonfinite_overrides_cooldown_other_reasons_do_not():
    s = make(cooldown=5)
    feed(s, 10)
    s.step_batch(1.0, 50.0)
    feed(s, 9)  # -> grad_spike at step 20, cooldown 5
    assert s.delta == pytest.approx(-0.1)
    for i in range(10):
        s.step_batch(1.0, 50.0 if i == 2 else 1.0)  # spike again, held by cooldown
    assert s.delta == pytest.approx(-0.1)
    assert s.diagnostics()["decision"]["action"] == "cooldown"
    for _ in range(10):
        s.step_batch(math.nan, 1.0)
    assert s.delta == pytest.approx(-0.2)
    assert s.diagnostics()["last_reason"] == "nonfinite"


def test_loss_rising_eases_off():
    s = make()
    feed(s, 30, loss=1.0)
    assert s.delta == 0.0
    feed(s, 10, loss=1.3, start=30)
    assert s.diagnostics()["last_reason"] == "loss_rising"
    assert s.delta == pytest.approx(-0.1)


def test_decreasing_loss_and_steady_grads_hold():
    s = make()
    for i in range(500):
        s.step_batch(2.0 * 0.995**i, noisy(i))
    assert s.delta == 0.0 and s.history() == []
    assert s.diagnostics()["updates"] == 50


def test_base_change_restarts_baselines():
    s = make()
    feed(s, 30, loss=1.0)
    # stage change: longer horizon -> loss legitimately higher; no loss_rising
    s.set_base_values({**BASE, "freerun_horizon": 20})
    feed(s, 30, loss=1.5, start=30)
    assert s.delta == 0.0
    # same base values again do not restart
    s.set_base_values({**BASE, "freerun_horizon": 20})
    assert s.diagnostics()["signals"]["loss_baseline"] is not None


# ----------------------------------------------------------------------------- epoch level
def run_epochs(s, free, val):
    deltas = []
    for f, v in zip(free, val, strict=True):
        s.step_epoch({"YawAbsDeg": f, "MPJPE": 0.0}, {"YawAbsDeg": v})
        deltas.append(s.delta)
    return deltas


def test_valfree_worse_while_val_improves_pushes_after_patience():
    s = make(patience=2)
    deltas = run_epochs(s, [10.0, 11.0, 12.0, 13.0], [5.0, 4.9, 4.8, 4.7])
    assert deltas[:2] == [0.0, 0.0]  # epoch 2: only one worsening comparison
    assert deltas[2] == pytest.approx(0.1)
    assert s.diagnostics()["last_reason"] == "valfree_worse"
    h = s.history()[-1]
    assert h["level"] == "epoch" and h["epoch"] == 3 and "YawAbsDeg" in h["detail"]
    v = s.values()
    assert v["freerun_horizon"] == 11.0 and v["tf_ratio"] == pytest.approx(0.45)


def test_patience_three():
    s = make(patience=3, cooldown=0)
    deltas = run_epochs(s, [10, 11, 12, 13, 14], [5, 4, 3, 2, 1])
    assert deltas == [0.0, 0.0, 0.0, pytest.approx(0.1), pytest.approx(0.1)]


def test_both_worse_eases_off():
    s = make(patience=2)
    deltas = run_epochs(s, [10.0, 11.0, 12.0], [5.0, 5.5, 6.0])
    assert deltas[-1] == pytest.approx(-0.1)
    assert s.diagnostics()["last_reason"] == "both_worse"


def test_improvements_and_flat_hold():
    s = make(patience=1, cooldown=0)
    deltas = run_epochs(s, [10, 9, 8, 8.01, 7], [5, 4.9, 5.5, 5.6, 5.7])
    assert deltas == [0.0] * 5


def test_nonfinite_epoch_metric_eases_off():
    s = make()
    run_epochs(s, [10.0, math.nan], [5.0, 4.0])
    assert s.delta == pytest.approx(-0.1)
    assert s.diagnostics()["last_reason"] == "nonfinite"
    run_epochs(s, [10.0], [4.0])  # recovery: no trend vs NaN, no change
    assert s.delta == pytest.approx(-0.1)


def test_epoch_without_val_or_disabled_holds():
    s = make(patience=1)
    for f in [10.0, 11.0, 12.0]:
        s.step_epoch({"YawAbsDeg": f})
    assert s.delta == 0.0
    s = make(patience=1, use_epoch_metrics=False)
    run_epochs(s, [10.0, 11.0, 12.0], [5.0, 4.0, 3.0])
    assert s.delta == 0.0
    d = s.diagnostics()
    assert d["decision"]["action"] == "disabled" and d["decision"]["reason"] == "valfree_worse"
    assert d["signals"]["free_trend"] == pytest.approx(1 / 11)


def test_free_metric_configurable_and_missing_key():
    s = make(free_metric="MPJPE", patience=1)
    for f, v in [(1.0, 1.0), (2.0, 0.5)]:
        s.step_epoch({"MPJPE": f, "YawAbsDeg": 0.0}, {"MPJPE": v})
    assert s.delta == pytest.approx(0.1)
    with pytest.raises(KeyError, match="MPJPE"):
        s.step_epoch({"YawAbsDeg": 1.0})
    s = make(free_metric="loss", val_metric="loss", patience=1)
    s.step_epoch({"loss": torch.tensor(1.0)}, {"loss": 1.0})
    assert s.diagnostics()["signals"]["free_metric"] == 1.0


# ----------------------------------------------------------------------------- mapping
def test_mapping_formulas():
    assert map_value("freerun_horizon", 10.0, 0.3) == 13.0
    assert map_value("freerun_horizon", 10.0, -0.25) == 8.0  # 7.5 rounds half up
    assert map_value("freerun_horizon", 1.0, -0.3) == 1.0
    assert map_value("freerun_horizon", 1.0, 0.3) == 1.0
    assert map_value("freerun_horizon", 2.0, 0.3) == 3.0  # 2.6 -> 3
    assert map_value("tf_ratio", 0.5, 0.2) == pytest.approx(0.4)
    assert map_value("tf_ratio", 0.5, -0.2) == pytest.approx(0.6)
    assert map_value("tf_ratio", 0.0, -0.3) == pytest.approx(0.3)
    assert map_value("tf_ratio", 0.0, 0.3) == 0.0
    assert map_value("tf_ratio", 0.2, 0.3) == 0.0  # clipped
    assert map_value("freerun_weight", 2.0, -0.1) == pytest.approx(1.8)
    assert map_value("my_param", 4.0, 0.25) == 5.0
    for name, base in [("tf_ratio", 0.7), ("freerun_horizon", 7.0), ("x", 0.1)]:
        assert map_value(name, base, 0.0) == base


@pytest.mark.parametrize("delta", [-0.3, -0.1, 0.1, 0.3])
def test_zero_base_left_alone(delta):
    for name, base in [
        ("freerun_weight", 0.0),
        ("freerun_horizon", 0.0),
        ("tf_ratio", 1.0),
        ("extra", 0.0),
    ]:
        assert map_value(name, base, delta) == base


def test_pure_teacher_forcing_stage_left_alone_in_scheduler():
    s = AdaptiveScheduler(update_interval=5)
    s.set_base_values(
        {
            "tf_ratio": 1.0,
            "freerun_horizon": 0,
            "freerun_weight": 0.0,
            "extra": 0.0,
            "lr_scale": 2.0,
        }
    )
    for _ in range(3):
        for _ in range(5):
            s.step_batch(math.nan, 1.0)
    assert s.delta == pytest.approx(-0.3)
    assert s.values() == {
        "tf_ratio": 1.0,
        "freerun_horizon": 0.0,
        "freerun_weight": 0.0,
        "extra": 0.0,
        "lr_scale": pytest.approx(1.4),
    }


def test_dry_run_applies_base_but_proposes():
    s = make(dry_run=True)
    feed(s, 10)
    s.step_batch(1.0, 100.0)
    feed(s, 9)
    assert s.delta == pytest.approx(-0.1)
    assert s.values() == {k: float(v) for k, v in BASE.items()}
    assert s.proposed()["freerun_horizon"] == 9.0
    assert all(type(v) is float for v in s.values().values())
    # decisions identical to a live scheduler (replay == live)
    live = make()
    feed(live, 10)
    live.step_batch(1.0, 100.0)
    feed(live, 9)
    assert live.values() == s.proposed()
    sd_live, sd_dry = live.state_dict(), s.state_dict()
    sd_live["config"].pop("dry_run"), sd_dry["config"].pop("dry_run")
    assert sd_live == sd_dry
    s.dry_run = False  # switch live
    assert s.values() == s.proposed()


# ----------------------------------------------------------------------------- properties
signal = st.one_of(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e30]),
)
event = st.one_of(
    st.tuples(st.just("b"), signal, signal),
    st.tuples(st.just("e"), signal, signal),
    st.tuples(st.just("s"), st.floats(0, 1), st.integers(0, 50)),
)


def play(s: AdaptiveScheduler, events) -> None:
    for kind, a, b in events:
        if kind == "b":
            s.step_batch(a, b)
        elif kind == "e":
            s.step_epoch({"YawAbsDeg": a}, {"YawAbsDeg": b})
        else:
            s.set_base_values({"tf_ratio": a, "freerun_horizon": b, "freerun_weight": a * 2})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(event, max_size=200),
    rate=st.sampled_from([0.05, 0.1, 0.25]),
    rng=st.sampled_from([0.0, 0.2, 0.3, 0.9]),
    interval=st.integers(1, 7),
    cooldown=st.integers(0, 3),
    patience=st.integers(1, 3),
)
def test_bounds_rate_and_integer_horizons(events, rate, rng, interval, cooldown, patience):
    s = AdaptiveScheduler(
        adjustment_rate=rate,
        adjustment_range=rng,
        update_interval=interval,
        cooldown=cooldown,
        patience=patience,
    )
    s.set_base_values(BASE)
    prev = 0.0
    for ev in events:
        play(s, [ev])
        d = s.delta
        assert abs(d) <= rng
        assert abs(d - prev) <= rate + 1e-12
        prev = d
        base = s.base_values
        for vals in (s.values(), s.proposed()):
            assert all(type(v) is float and math.isfinite(v) for v in vals.values())
            assert 0.0 <= vals["tf_ratio"] <= 1.0
            h = vals["freerun_horizon"]
            assert h == math.floor(h)
            assert h >= 1 or (base["freerun_horizon"] == 0 and h == 0)
            assert vals["freerun_weight"] >= 0.0
    for h in s.history():
        assert abs(h["new_delta"] - h["old_delta"]) <= rate + 1e-12
        assert h["reason"] in REASONS
    d = s.diagnostics()
    assert sum(d["reason_counts"].values()) == d["num_changes"]
    json.dumps(s.state_dict(), allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(events=st.lists(event, min_size=1, max_size=150), data=st.data())
def test_state_dict_json_resume_bit_exact(events, data):
    cut = data.draw(st.integers(0, len(events)))
    kw = dict(update_interval=4, cooldown=1, patience=1)
    ref = AdaptiveScheduler(**kw)
    ref.set_base_values(BASE)
    play(ref, events)

    a = AdaptiveScheduler(**kw)
    a.set_base_values(BASE)
    play(a, events[:cut])
    blob = json.dumps(a.state_dict(), allow_nan=False)
    b = AdaptiveScheduler(**kw)
    b.load_state_dict(json.loads(blob))
    play(b, events[cut:])
    assert json.dumps(b.state_dict()) == json.dumps(ref.state_dict())
    assert b.history() == ref.history()
    assert b.values() == ref.values()


def test_resume_mid_window_with_tensors():
    def run(split: int | None):
        s = make(update_interval=8)
        for i in range(40):
            if split is not None and i == split:
                sd = json.loads(json.dumps(s.state_dict()))
                s = make(update_interval=8)
                s.load_state_dict(sd)
            g = 20.0 if i == 27 else noisy(i)
            s.step_batch(torch.tensor(noisy(i), dtype=torch.float32), torch.tensor(g))
        return s.state_dict()

    ref = run(None)
    for split in (3, 8, 13, 27, 28):
        assert run(split) == ref


def test_determinism():
    events = [("b", noisy(i, 1 + i / 100), 10.0 if i % 37 == 0 else noisy(i)) for i in range(300)]
    events += [("e", 10 + i, 5 - i / 10) for i in range(5)]
    runs = []
    for _ in range(2):
        s = make()
        play(s, events)
        runs.append((s.state_dict(), s.history(), s.diagnostics()))
    assert runs[0] == runs[1]


def test_load_rejects_config_mismatch_but_allows_dry_run_switch():
    s = make()
    feed(s, 13)
    sd = s.state_dict()
    with pytest.raises(ValueError, match="spike_ratio"):
        AdaptiveScheduler(update_interval=10, spike_ratio=5.0).load_state_dict(sd)
    t = AdaptiveScheduler(update_interval=10, dry_run=True)
    t.load_state_dict(sd)
    assert t.dry_run is True and t.step == 13 and t.base_values == s.base_values
    with pytest.raises(ValueError, match="version"):
        t.load_state_dict({**sd, "version": 99})


# ----------------------------------------------------------------------------- tensors
def test_tensor_inputs_no_per_call_sync(monkeypatch):
    calls = []
    orig_stack = torch.stack

    def counting_stack(*a, **k):
        calls.append(1)
        return orig_stack(*a, **k)

    def boom(*a, **k):
        raise AssertionError("host sync in step_batch")

    monkeypatch.setattr(torch, "stack", counting_stack)
    s = make(update_interval=10)
    f = make(update_interval=10)
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "item", boom)
        m.setattr(torch.Tensor, "__float__", boom)
        for i in range(25):
            loss = torch.tensor(noisy(i), requires_grad=True) * 1.0
            g = torch.tensor(9.0 if i == 15 else noisy(i + 1), dtype=torch.bfloat16)
            s.step_batch(loss, g)
            f.step_batch(float(loss.detach().numpy()), float(g.float().numpy()))
    # one stack per (device, dtype) group per window: 2 windows x 2 dtypes
    assert len(calls) == 4
    assert s.state_dict() == f.state_dict()
    assert s.delta == pytest.approx(-0.1)


def test_buffered_tensor_is_copied():
    s = make(update_interval=2)
    t = torch.tensor(1.0)
    s.step_batch(t, t)
    t.mul_(100.0)  # in-place change after recording must not leak in
    s.step_batch(1.0, 1.0)
    assert s.diagnostics()["signals"]["grad_max"] == 1.0


def test_bad_inputs():
    s = make()
    with pytest.raises(ValueError, match=r"\(2,\)"):
        s.step_batch(torch.ones(2), 1.0)
    with pytest.raises(TypeError, match="'x'"):
        s.step_batch("x", 1.0)
    assert s.step == 0


# ----------------------------------------------------------------------------- no flip-flop
def test_alternating_epoch_noise_never_changes():
    s = make(patience=2)
    free = [10.0 + (1.0 if i % 2 else 0.0) for i in range(20)]
    val = [5.0 + (0.5 if i % 3 == 0 else 0.0) for i in range(20)]
    run_epochs(s, free, val)
    assert s.delta == 0.0 and s.history() == []


def test_no_flip_flop_between_levels():
    """Epoch pushes up while batch spikes ease off: after every change the delta stays
    frozen for ``cooldown`` decision points, so it cannot flip on every signal."""
    cooldown = 3
    s = make(patience=1, cooldown=cooldown, update_interval=5)
    free, val = 10.0, 5.0
    trace = []  # delta after every decision point (each window and each epoch end)
    for _ in range(12):
        for i in range(20):  # 4 windows per epoch, a spike in every other window
            spike = (i // 5) % 2 == 1 and i % 5 == 0
            s.step_batch(noisy(i), 30.0 if spike else noisy(i + 1))
            if (i + 1) % 5 == 0:
                trace.append(s.delta)
        free, val = free * 1.1, val * 0.95
        s.step_epoch({"YawAbsDeg": free}, {"YawAbsDeg": val})
        trace.append(s.delta)
    changes = [i for i in range(1, len(trace)) if trace[i] != trace[i - 1]]
    reasons = {h["reason"] for h in s.history()}
    assert reasons == {"grad_spike", "valfree_worse"}  # both levels were active
    assert all(b - a > cooldown for a, b in itertools.pairwise(changes))
    assert len(changes) <= len(trace) // (cooldown + 1) + 1


def test_alternating_loss_noise_below_threshold_holds():
    s = make()
    for i in range(1000):
        s.step_batch(1.0 if (i // 10) % 2 else 1.08, 1.0 if i % 2 else 2.5)
    assert s.delta == 0.0


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kw", "bad"),
    [
        ({"adjustment_rate": 0.0}, "0.0"),
        ({"adjustment_rate": -0.1}, "-0.1"),
        ({"adjustment_rate": math.nan}, "nan"),
        ({"update_interval": 0}, "0"),
        ({"update_interval": 2.5}, "2.5"),
        ({"update_interval": True}, "True"),
        ({"adjustment_range": 1.0}, "1.0"),
        ({"adjustment_range": -0.2}, "-0.2"),
        ({"free_metric": "Yaw"}, "'Yaw'"),
        ({"val_metric": "foo"}, "'foo'"),
        ({"spike_ratio": 1.0}, "1.0"),
        ({"rising_threshold": 0}, "0"),
        ({"baseline_momentum": 1.0}, "1.0"),
        ({"patience": 0}, "0"),
        ({"epoch_tolerance": -1e-3}, "-0.001"),
        ({"cooldown": -1}, "-1"),
        ({"history_size": 0}, "0"),
        ({"log_every": -5}, "-5"),
    ],
)
def test_validation_errors_repeat_bad_value(kw, bad):
    with pytest.raises(ValueError) as e:
        AdaptiveScheduler(**kw)
    assert bad in str(e.value) and next(iter(kw)) in str(e.value)


@pytest.mark.parametrize(
    ("kw", "exc"),
    [
        ({"dry_run": 1}, TypeError),
        ({"use_epoch_metrics": "yes"}, TypeError),
        ({"logger": "adaptive"}, TypeError),
    ],
)
def test_type_errors_repeat_bad_value(kw, exc):
    with pytest.raises(exc, match=repr(next(iter(kw.values())))):
        AdaptiveScheduler(**kw)


def test_positional_args_rejected():
    with pytest.raises(TypeError):
        AdaptiveScheduler(0.1)  # type: ignore[misc]


@pytest.mark.parametrize(
    "values",
    [
        {"tf_ratio": 1.5},
        {"tf_ratio": -0.1},
        {"freerun_horizon": 2.5},
        {"freerun_horizon": -1},
        {"freerun_weight": math.inf},
        {"x": "a"},
    ],
)
def test_base_value_validation(values):
    s = AdaptiveScheduler()
    with pytest.raises(ValueError) as e:
        s.set_base_values(values)
    ((name, v),) = values.items()
    assert repr(v) in str(e.value) and name in str(e.value)


def test_repr_reproduces_constructor():
    s = AdaptiveScheduler(
        adjustment_rate=0.05,
        update_interval=20,
        use_epoch_metrics=False,
        adjustment_range=0.2,
        dry_run=True,
        free_metric="MPJPE",
        val_metric="loss",
        spike_ratio=4.0,
        rising_threshold=0.2,
        baseline_momentum=0.5,
        patience=3,
        epoch_tolerance=0.0,
        cooldown=1,
        history_size=10,
        log_every=7,
        logger=logging.getLogger("x.y"),
    )
    r = repr(s)
    t = eval(r, {"AdaptiveScheduler": AdaptiveScheduler, "logging": logging})
    assert repr(t) == r and t.config() == s.config()
    assert repr(AdaptiveScheduler()) == repr(eval(repr(AdaptiveScheduler())))
    assert "logger" not in repr(AdaptiveScheduler())


def test_logging_of_changes(caplog):
    s = make(log_every=1)
    with caplog.at_level(logging.INFO, logger="adaptive.scheduler"):
        feed(s, 10)
        s.step_batch(math.nan, 1.0)
        feed(s, 9)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("nonfinite" in m and "-0.1000" in m for m in msgs)
    assert any("step=10" in m for m in msgs)


# ----------------------------------------------------------------------------- step_block
_SIG_KEYS = ("grad_ratio", "loss_trend", "free_trend", "loss_median", "grad_reference")


def _bits(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).view(np.uint64)


def _per_step(s: AdaptiveScheduler, losses, grads) -> dict:
    """Reference: what a per-step caller sees (proposed() read, then step_batch)."""
    out: dict = {"delta": [], "reason": [], **{k: [] for k in _SIG_KEYS}}
    out.update({f"p/{k}": [] for k in s.base_values})
    for loss, grad in zip(losses, grads, strict=True):
        prop = s.proposed()
        for k, v in prop.items():
            out[f"p/{k}"].append(v)
        out["delta"].append(s.delta)
        s.step_batch(loss, grad)
        d = s.diagnostics()
        dec = d["decision"]
        changed = dec is not None and dec["action"] == "change" and dec["step"] == d["step"]
        out["reason"].append(dec["reason"] if changed else "")
        for k in _SIG_KEYS:
            v = d["signals"][k]
            out[k].append(math.nan if v is None else v)
    return out


def _from_block(rec) -> dict:
    out = {"delta": rec.delta(), "reason": rec.reasons()}
    out.update({k: rec.signal(k) for k in _SIG_KEYS})
    out.update({f"p/{k}": v for k, v in rec.proposed().items()})
    return out


def _assert_same(ref: dict, got: list[dict]) -> None:
    for k, v in ref.items():
        parts = [g[k] for g in got]
        if k == "reason":
            assert [r for p in parts for r in p] == v
        else:
            joined = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])
            np.testing.assert_array_equal(_bits(joined), _bits(v), err_msg=k)


block_event = st.one_of(
    st.tuples(st.just("b"), st.lists(st.tuples(signal, signal), min_size=1, max_size=40)),
    st.tuples(st.just("e"), signal, signal),
    st.tuples(st.just("s"), st.floats(0, 1), st.integers(0, 50)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(block_event, max_size=25),
    interval=st.integers(1, 9),
    cooldown=st.integers(0, 2),
    patience=st.integers(1, 2),
    data=st.data(),
)
def test_step_block_equals_per_step_calls(events, interval, cooldown, patience, data):
    kw = dict(update_interval=interval, cooldown=cooldown, patience=patience, history_size=10_000)
    ref, blk = AdaptiveScheduler(**kw), AdaptiveScheduler(**kw)
    for s in (ref, blk):
        s.set_base_values(BASE)
    changes: list = []
    for kind, a, *rest in events:
        if kind != "b":
            before = blk.num_changes
            play(ref, [(kind, a, *rest)])
            play(blk, [(kind, a, *rest)])
            if blk.num_changes != before:
                changes.append(blk.last_change())
            continue
        losses, grads = [x for x, _ in a], [y for _, y in a]
        expected = _per_step(ref, losses, grads)
        cuts = sorted(set(data.draw(st.lists(st.integers(0, len(a)), max_size=4))))
        got = []
        for i, j in itertools.pairwise([0, *cuts, len(a)]):
            rec = blk.step_block(losses[i:j], grads[i:j])
            assert rec.start_step + rec.length == blk.step and rec.length == j - i
            changes.extend(rec.changes)
            got.append(_from_block(rec))
        _assert_same(expected, got)
        assert blk.diagnostics() == ref.diagnostics()
    assert json.dumps(blk.state_dict()) == json.dumps(ref.state_dict())
    assert changes == ref.history() == blk.history()
    assert blk.num_changes == len(changes)


def test_step_block_float32_array_equals_float32_tensor_steps():
    rng = np.random.default_rng(3)
    loss = rng.lognormal(0, 0.3, 997).astype(np.float32)
    grad = rng.lognormal(0, 0.3, 997).astype(np.float32)
    grad[[100, 400, 401]] = [40.0, np.nan, np.inf]
    loss[700] = np.nan
    live, blk = make(update_interval=7), make(update_interval=7)
    for i in range(len(loss)):  # what the trainer passes: float32 0-dim tensors
        live.step_batch(torch.from_numpy(loss[i : i + 1]).reshape(()), torch.tensor(grad[i]))
    recs = [blk.step_block(loss[:500], grad[:500]), blk.step_block(loss[500:], grad[500:])]
    assert blk.state_dict() == live.state_dict()
    assert blk.history() == live.history() and len(live.history()) >= 3
    assert [c for r in recs for c in r.changes] == live.history()
    # other input kinds convert identically
    for conv in (torch.from_numpy, list, lambda a: [np.float32(x) for x in a]):
        s = make(update_interval=7)
        s.step_block(conv(loss), conv(grad))
        assert s.state_dict() == live.state_dict()
    s = make(update_interval=7)
    s.step_block(np.arange(20), torch.arange(20))
    t = make(update_interval=7)
    for i in range(20):
        t.step_batch(i, float(i))
    assert s.state_dict() == t.state_dict()


def test_step_block_mixes_with_buffered_tensor_steps():
    ref, mix = make(update_interval=8), make(update_interval=8)
    vals = [(noisy(i), 30.0 if i == 13 else noisy(i + 1)) for i in range(40)]
    for lo, g in vals:
        ref.step_batch(lo, g)
    for lo, g in vals[:5]:  # 5 buffered tensors, then a block closing that window
        mix.step_batch(torch.tensor(lo, dtype=torch.float64), torch.tensor(g, dtype=torch.float64))
    rec = mix.step_block([v[0] for v in vals[5:30]], np.array([v[1] for v in vals[5:30]]))
    assert rec.closes == [2, 10, 18]  # windows end at steps 8, 16, 24
    assert [d["step"] for d in rec.decisions] == [8, 16, 24]
    assert rec.reasons()[10] == "grad_spike" and rec.changes[0]["step"] == 16
    for lo, g in vals[30:]:
        mix.step_batch(lo, g)
    assert mix.state_dict() == ref.state_dict()


def test_step_block_bad_inputs_change_nothing():
    s = make()
    s.step_batch(1.0, 1.0)
    before = s.state_dict()
    for loss, grad, exc in [
        (np.ones((2, 2)), np.ones(4), ValueError),
        (np.ones(3), np.ones(2), ValueError),
        (torch.ones(2, 1), torch.ones(2), ValueError),
        (np.array(["a", "b"]), np.ones(2), TypeError),
        (np.array([True, False]), np.ones(2), TypeError),
        (torch.tensor([True]), torch.ones(1), TypeError),
        ([1.0, "x"], [1.0, 1.0], TypeError),
        ("ab", [1.0, 1.0], TypeError),
        (3.0, 3.0, TypeError),
        ([1.0, torch.ones(2)], [1.0, 1.0], ValueError),
    ]:
        with pytest.raises(exc):
            s.step_block(loss, grad)
        assert s.state_dict() == before
    rec = s.step_block([], np.array([], dtype=np.float32))
    assert rec.length == 0 and rec.delta().shape == (0,) and rec.reasons() == []
    assert s.state_dict() == before


# ----------------------------------------------------------------------------- fast replay
def _synthetic_trace(
    n_steps: int,
    steps_per_epoch: int,
    seed: int = 0,
    *,
    nonfinite_every: int = 0,
    spike_p: float = 2e-3,
    val_split: bool = True,
    base_col: str = "schedule_base",
):
    """In-memory trace with the reader's dtypes: noisy decreasing loss with rising phases,
    grad spikes, optional NaN/inf batches and an inf epoch metric, epoch metrics drifting
    through gap-widening / improving / both-worse phases, four stages of base values."""
    import pandas as pd

    from adaptive.trace import Trace

    rng = np.random.default_rng(seed)
    step = np.arange(n_steps, dtype=np.int64)
    epoch = (step // steps_per_epoch).astype(np.int32)
    n_ep = int(epoch[-1]) + 1
    rising = 1.0 + 0.4 * (np.sin(step / 700.0) > 0.9)
    loss = (2.0 * np.exp(-step / n_steps) * rising * rng.lognormal(0, 0.05, n_steps)).astype(
        np.float32
    )
    grad = rng.lognormal(0, 0.1, n_steps)
    spikes = rng.random(n_steps) < spike_p
    grad[spikes] *= rng.uniform(3, 20, spikes.sum())
    grad = grad.astype(np.float32)
    if nonfinite_every:
        loss[nonfinite_every // 2 :: nonfinite_every] = np.nan
        grad[nonfinite_every // 3 :: nonfinite_every] = np.inf
    stage = np.minimum(epoch * 4 // n_ep, 3)
    cols = {
        "tf_ratio": np.array([1.0, 0.75, 0.5, 0.0])[stage],
        "freerun_horizon": np.array([0, 4, 8, 13])[stage],
        "freerun_weight": np.array([0.0, 0.5, 1.0, 1.5])[stage],
    }
    strs = {
        c: pd.array([v] * n_steps, dtype="str")
        for c, v in (("run_id", "synth"), ("kind", "step"), ("split", "train"))
    }
    steps = pd.DataFrame(
        {
            **strs,
            "epoch": epoch,
            "step": step,
            "time": step * 1e-3,
            "loss/c0": loss,
            "loss_total": loss,
            "grad_norm": grad,
        }
    )
    for p, v in cols.items():
        steps[f"{base_col}/{p}"] = v.astype(np.float32)
    rows = []
    free, val = 10.0, 5.0
    for e in range(n_ep):
        phase = (e // 4) % 4
        free *= (1.05, 0.97, 1.04, 1.0)[phase] * rng.uniform(0.995, 1.005)
        val *= (0.98, 0.97, 1.03, 1.0)[phase] * rng.uniform(0.995, 1.005)
        fval = math.inf if nonfinite_every and e % 13 == 12 else free
        last = min(n_steps, (e + 1) * steps_per_epoch) - 1
        rows.append(("valfree", e, last, fval, free * 2, free))
        if val_split:
            rows.append(("val", e, last, val, val * 2, val))
    ep = pd.DataFrame(
        rows, columns=["split", "epoch", "step", "metric/YawAbsDeg", "metric/MPJPE", "loss_total"]
    )
    ep.insert(0, "kind", pd.array(["epoch"] * len(ep), dtype="str"))
    ep.insert(0, "run_id", pd.array(["synth"] * len(ep), dtype="str"))
    ep = ep.astype({"split": "str", "epoch": np.int32, "loss_total": np.float32})
    ep = ep.sort_values(["run_id", "epoch", "split"], kind="stable").reset_index(drop=True)
    return Trace(
        path=Path("synthetic"),
        steps=steps,
        epochs=ep,
        components=["c0"],
        metrics=["YawAbsDeg", "MPJPE"],
        version=1,
    )


_FAST_CASES = [
    (dict(n_steps=6000, steps_per_epoch=250), {}),
    (  # every reason at both levels (asserted below)
        dict(n_steps=6000, steps_per_epoch=100, nonfinite_every=977, spike_p=0.001),
        dict(update_interval=7, cooldown=1, patience=1),
    ),
    (
        dict(n_steps=6000, steps_per_epoch=333, nonfinite_every=977, spike_p=0.01),
        dict(update_interval=7, cooldown=1, patience=1),
    ),
    (
        dict(n_steps=3000, steps_per_epoch=100, nonfinite_every=501),
        dict(update_interval=1, cooldown=0, spike_ratio=1.5),
    ),
    (
        dict(n_steps=3000, steps_per_epoch=97, val_split=False, base_col="schedule"),
        dict(update_interval=4, cooldown=0, free_metric="MPJPE", rising_threshold=0.05),
    ),
    (
        dict(n_steps=2000, steps_per_epoch=50, spike_p=0.05),
        dict(update_interval=5, cooldown=0, patience=1, use_epoch_metrics=False),
    ),
]


@pytest.mark.parametrize(("shape", "params"), _FAST_CASES)
def test_fast_replay_equals_per_step_replay(shape, params):
    import pandas as pd

    from replay._scheduler_replay import replay_scheduler_fast
    from tests.reference_replay import replay_scheduler

    tr = _synthetic_trace(**shape)
    ref = replay_scheduler(tr, history_size=100_000, **params)
    seen: list[int] = []
    fast = replay_scheduler_fast(tr, progress=seen.append, history_size=100_000, **params)
    assert sum(seen) == len(tr.steps)
    pd.testing.assert_frame_equal(fast.frame, ref.frame, check_exact=True)
    for c in ref.frame.columns:  # bit-for-bit, NaN included
        if ref.frame[c].dtype == np.float64:
            np.testing.assert_array_equal(_bits(fast.frame[c]), _bits(ref.frame[c]), c)
    assert fast.events == ref.events and len(fast.events) >= 3
    assert (fast.names, fast.params, fast.run_id, fast.method) == (
        ref.names,
        ref.params,
        ref.run_id,
        ref.method,
    )
    assert set(fast.frame["reason"]) - {""} <= set(REASONS)
    if shape.get("spike_p") == 0.001:
        seen_reasons = {(e["level"], e["reason"]) for e in fast.events}
        assert seen_reasons == {
            ("batch", r) for r in ("nonfinite", "grad_spike", "loss_rising")
        } | {("epoch", r) for r in ("nonfinite", "valfree_worse", "both_worse")}


def test_fast_replay_events_not_truncated():
    from replay._scheduler_replay import replay_scheduler_fast
    from tests.reference_replay import replay_scheduler

    tr = _synthetic_trace(3000, 100, nonfinite_every=101)
    params = dict(update_interval=2, cooldown=0, spike_ratio=1.2, history_size=5)
    ref = replay_scheduler(tr, **params)
    fast = replay_scheduler_fast(tr, **params)
    assert len(ref.events) == 5 < len(fast.events)
    assert fast.events[-5:] == ref.events
    assert fast.events == replay_scheduler(tr, **{**params, "history_size": 10**6}).events
    assert len(fast.events) == (fast.frame["reason"] != "").sum() + sum(
        e["level"] == "epoch" for e in fast.events
    )


def test_fast_replay_written_trace(tmp_path):
    """Through the real writer / reader (dtypes as on disk)."""
    import pandas as pd

    from adaptive.trace import TraceWriter, read_trace
    from replay._scheduler_replay import replay_scheduler_fast
    from tests.reference_replay import replay_scheduler

    src = _synthetic_trace(1200, 100, nonfinite_every=333, spike_p=0.01)
    path = tmp_path / "t.parquet"
    with TraceWriter(path, components=["c0"], run_id="w") as w:
        for r in src.steps.itertuples(index=False):
            w.log_step(
                step=r.step,
                epoch=r.epoch,
                losses={"c0": r.loss_total},
                loss_total=r.loss_total,
                grad_norm=r.grad_norm,
                schedule_base={p: src.steps.at[r.step, f"schedule_base/{p}"] for p in BASE},
            )
        for r in src.epochs.itertuples(index=False):
            w.log_epoch(
                split=r.split,
                epoch=r.epoch,
                step=r.step,
                loss_total=r.loss_total,
                metrics={"YawAbsDeg": r[5], "MPJPE": r[6]},
            )
    tr = read_trace(path)
    params = dict(update_interval=5, cooldown=0, patience=1)
    ref = replay_scheduler(tr, **params)
    fast = replay_scheduler_fast(tr, **params)
    pd.testing.assert_frame_equal(fast.frame, ref.frame, check_exact=True)
    assert fast.events == ref.events and fast.events and fast.run_id == "w"
