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
    s: AdaptiveScheduler,
    n: int,
    *,
    loss: float = 1.0,
    grad: float = 1.0,
    start: int = 0,
    regime: int = 0,
) -> None:
    for i in range(start, start + n):
        s.step_batch(noisy(i, loss), noisy(i + 3, grad), regime=regime)


def eases(decisions) -> int:
    """Decision points that changed delta for a reason other than ``recovered``."""
    return sum(d["action"] == "change" and d["reason"] != "recovered" for d in decisions)


# ----------------------------------------------------------------------------- batch level
def test_grad_spike_eases_off_within_one_interval():
    s = make()
    feed(s, 30)  # window 1 only sets the reference, windows 2-3 are judged against it
    assert s.delta == 0.0 and s.diagnostics()["signals"]["regimes"] == 1.0
    assert s.references()[0]["grad_norm"] == pytest.approx(1.0, rel=0.03)
    for i in range(10):  # one window with two (= spike_count) 10x grad-norm batches
        s.step_batch(noisy(30 + i), 10.0 if i in (4, 5) else noisy(i))
    assert s.delta == pytest.approx(-0.1)
    d = s.diagnostics()
    assert d["last_reason"] == "grad_spike"
    assert d["step"] == 40 and d["last_change_step"] == 40
    sig = d["signals"]
    assert sig["grad_outliers"] == 2.0 and sig["grad_z"] > 4.0  # spike_z default
    assert sig["grad_median"] == pytest.approx(1.0, rel=0.03)  # the median ignores the spikes
    assert sig["grad_reference"] == pytest.approx(1.0, rel=0.03)
    assert d["reason_counts"]["grad_spike"] == 1
    (h,) = s.history()
    assert h["reason"] == "grad_spike" and h["step"] == 40 and h["level"] == "batch"
    assert h["old_delta"] == 0.0 and h["new_delta"] == pytest.approx(-0.1)
    assert "2 batch(es)" in h["detail"] and "regime 0" in h["detail"]
    v = s.values()
    assert v["freerun_horizon"] == 9.0 and v["freerun_weight"] == pytest.approx(0.9)
    assert v["tf_ratio"] == pytest.approx(0.55)


@pytest.mark.parametrize("spike_count", [1, 2])
def test_single_outlier_batch_eases_off_only_with_spike_count_one(spike_count):
    s = make(spike_count=spike_count)
    feed(s, 30)
    for i in range(10):
        s.step_batch(noisy(30 + i), 10.0 if i == 4 else noisy(i))
    sig = s.diagnostics()["signals"]
    assert sig["grad_outliers"] == 1.0 and sig["grad_z"] > 4.0  # seen either way
    if spike_count == 1:
        assert s.delta == pytest.approx(-0.1) and s.last_change()["reason"] == "grad_spike"
    else:  # default spike_count=2: one outlier batch is not a spike
        assert s.delta == 0.0 and s.history() == []
        assert s.diagnostics()["decision"]["action"] == "hold"


def test_first_window_of_a_regime_only_sets_its_reference():
    s = make()
    for i in range(10):  # spikes in the very first window: nothing to judge them against
        s.step_batch(1.0, 8.0 if i < 3 else 1.0)
    d = s.diagnostics()
    assert s.delta == 0.0 and d["decision"]["action"] == "hold"
    assert d["signals"]["regimes"] == 0.0 and d["signals"]["grad_z"] is None
    ref = s.references()[0]
    assert ref["grad_norm"] == 1.0 and ref["loss"] == 1.0  # medians: the spikes do not count
    assert ref["grad_spread"] == 0.1  # SPREAD_FLOOR
    # a new regime's first window does not judge it either, even next to a judged regime
    for i in range(10):
        s.step_batch(1.0, 8.0 if i < 3 else 1.0, regime=1)
    assert s.delta == 0.0 and sorted(s.references()) == [0, 1]
    # the same window again is judged against the reference now
    for i in range(10):
        s.step_batch(1.0, 8.0 if i < 3 else 1.0, regime=1)
    assert s.delta == pytest.approx(-0.1) and s.last_change()["reason"] == "grad_spike"
    assert s.diagnostics()["signals"]["grad_outliers"] == 3.0


def test_regime_below_min_samples_never_gets_a_reference():
    s = make(min_samples=8)
    for i in range(50):  # 5 + 5 per window: neither regime reaches min_samples
        s.step_batch(1.0, 20.0 if i % 10 == 0 else 1.0, regime=i % 2)
    d = s.diagnostics()
    assert s.references() == {} and d["signals"]["regimes"] == 0.0
    assert s.delta == 0.0 and d["updates"] == 5
    t = make(min_samples=5)  # the same data with min_samples=5: both regimes get references
    for i in range(50):
        t.step_batch(1.0, 20.0 if i % 10 == 0 else 1.0, regime=i % 2)
    assert sorted(t.references()) == [0, 1] and t.diagnostics()["signals"]["regimes"] == 2.0


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


@pytest.mark.parametrize("policy", ["ease_off", "skip"])
def test_on_nonfinite_skip_ignores_nonfinite_values(policy):
    s = make(on_nonfinite=policy)
    feed(s, 20)
    bad = {2: (1.0, math.nan), 5: (1.0, math.inf), 7: (math.nan, -math.inf)}
    for i in range(10):
        s.step_batch(*bad.get(i, (noisy(i), noisy(i + 1))))
    d = s.diagnostics()
    assert d["signals"]["window_nonfinite"] == 4.0  # reported under both policies
    if policy == "skip":
        assert s.delta == 0.0 and s.history() == [] and d["decision"]["action"] == "hold"
        assert d["reason_counts"]["nonfinite"] == 0 and d["last_reason"] is None
        # the finite values are still judged: two spikes next to NaNs are a grad_spike
        for i in range(10):
            s.step_batch(math.nan if i == 0 else 1.0, 10.0 if i in (3, 4) else noisy(i))
        assert s.last_change()["reason"] == "grad_spike"
        assert s.diagnostics()["reason_counts"]["nonfinite"] == 0
        # a window of nothing but NaN: no values to judge, no change, reference kept
        refs = s.references()
        for _ in range(10):
            s.step_batch(math.nan, math.nan)
        assert s.num_changes == 1 and s.references() == refs
    else:
        assert s.delta == pytest.approx(-0.1) and d["last_reason"] == "nonfinite"
        assert d["reason_counts"]["nonfinite"] == 1


def test_nonfinite_overrides_cooldown_other_reasons_do_not():
    s = make(cooldown=5)
    feed(s, 10)
    s.step_batch(1.0, 50.0)
    s.step_batch(1.0, 50.0)
    feed(s, 8)  # -> grad_spike at step 20, cooldown 5
    assert s.delta == pytest.approx(-0.1) and s.last_change()["reason"] == "grad_spike"
    for i in range(10):
        s.step_batch(1.0, 50.0 if i in (2, 3) else 1.0)  # spike again, held by cooldown
    assert s.delta == pytest.approx(-0.1)
    assert s.diagnostics()["decision"] == {
        "level": "batch",
        "step": 30,
        "epoch": 0,
        "reason": "grad_spike",
        "action": "cooldown",
    }
    assert s.diagnostics()["cooldown_left"] == 4
    for _ in range(10):
        s.step_batch(math.nan, 1.0)
    assert s.delta == pytest.approx(-0.2)
    assert s.diagnostics()["last_reason"] == "nonfinite"


def test_loss_rising_eases_off():
    s = make()
    feed(s, 30, loss=1.0)
    assert s.delta == 0.0
    feed(s, 10, loss=1.3, start=30)
    d = s.diagnostics()
    assert d["last_reason"] == "loss_rising"
    assert d["signals"]["loss_trend"] == pytest.approx(0.3, abs=0.02)
    assert s.delta == pytest.approx(-0.1)


def test_loss_rise_below_rising_threshold_holds():
    s = make(rising_threshold=0.25)
    feed(s, 30, loss=1.0)
    feed(s, 10, loss=1.2, start=30)
    assert s.delta == 0.0 and s.diagnostics()["signals"]["loss_trend"] == pytest.approx(
        0.2, abs=0.02
    )
    t = make(rising_threshold=0.1)  # the same rise is rising with a lower threshold
    feed(t, 30, loss=1.0)
    feed(t, 10, loss=1.2, start=30)
    assert t.last_change()["reason"] == "loss_rising"


def test_decreasing_loss_and_steady_grads_hold():
    s = make()
    for i in range(500):
        s.step_batch(2.0 * 0.995**i, noisy(i))
    assert s.delta == 0.0 and s.history() == []
    assert s.diagnostics()["updates"] == 50


def test_references_survive_base_changes():
    s = make()
    feed(s, 30, loss=1.0)
    refs = s.references()
    # stage change: the references are kept, not restarted
    s.set_base_values({**BASE, "freerun_horizon": 20})
    assert s.references() == refs
    # a loss level 15 % higher (below rising_threshold): no change; the reference follows it
    feed(s, 200, loss=1.15, start=30)
    assert s.delta == 0.0 and s.history() == []
    assert s.references()[0]["loss"] == pytest.approx(1.15, rel=0.01)
    # a 50 % jump at the next stage change is judged against the old level: it eases off
    # once, the reference follows (EMA), cooldown holds the echoes, and delta recovers
    s.set_base_values({**BASE, "freerun_horizon": 30})
    feed(s, 10, loss=1.15 * 1.5, start=230)
    assert s.delta == pytest.approx(-0.1) and s.last_change()["reason"] == "loss_rising"
    feed(s, 100, loss=1.15 * 1.5, start=240)
    assert s.delta == 0.0
    assert [h["reason"] for h in s.history()] == ["loss_rising", "recovered"]
    # 11 windows at the new level: log reference = log(1.15) + (1 - 0.8**11) * log(1.5)
    assert s.references()[0]["loss"] == pytest.approx(1.15 * 1.5 ** (1 - 0.8**11), rel=0.01)


def test_references_survive_delta_changes():
    s = make(cooldown=0)
    feed(s, 30)
    s.step_block([math.nan] * 10, [1.0] * 10)  # nonfinite: delta changes
    assert s.delta == pytest.approx(-0.1)
    assert s.references()[0]["grad_norm"] == pytest.approx(1.0, rel=0.03)
    # a spike right after the change is still judged against the kept reference
    s.step_block([1.0] * 10, [10.0, 10.0] + [1.0] * 8)
    assert s.delta == pytest.approx(-0.2) and s.last_change()["reason"] == "grad_spike"


# ----------------------------------------------------------------------------- recovery
def test_grad_burst_eases_off_then_returns_to_zero():
    """A 3-batch 10x grad-norm burst in calm lognormal noise eases off once (grad_spike) and
    delta is back at exactly 0 within ``recover_patience`` decision points, wherever the
    burst falls relative to the window ends."""
    interval, rp, rate = 10, 4, 0.1
    for offset in range(interval):
        rng = np.random.default_rng(offset)
        s = make(update_interval=interval, recover_patience=rp, adjustment_rate=rate)
        n = 20 * interval
        grad = rng.lognormal(0.0, 0.1, n)
        loss = rng.lognormal(0.0, 0.05, n)
        start = 5 * interval + offset
        grad[start : start + 3] *= 10.0
        rec = s.step_block(loss, grad)
        changed = [k for k, d in enumerate(rec.decisions) if d["action"] == "change"]
        k = changed[0]
        assert rec.decisions[k]["reason"] == "grad_spike" and rec.deltas[k] == -rate
        burst_in_window = sum(
            rec.closes[k] - interval < i <= rec.closes[k] for i in range(start, start + 3)
        )
        assert burst_in_window >= 2  # spike_count
        # Arithmetic: the ease at point k sets delta = -rate and calm_streak = 0. The
        # window holding what is left of the burst (at most 1 batch < spike_count) is calm,
        # and the cooldown (2) only blocks new reasons, so points k+1 .. k+rp are calm,
        # calm_streak reaches rp at k+rp and delta moves one rate back: -rate + rate == 0.
        # So delta is 0 again no later than rp (<= rp + 1) decision points after the ease.
        back = next(j for j in range(k, len(rec.deltas)) if rec.deltas[j] == 0.0)
        assert back - k <= rp + 1
        assert back - k == rp
        assert rec.decisions[back]["reason"] == "recovered"
        assert rec.deltas[k:back] == [-rate] * (back - k)
        assert all(d == 0.0 for d in rec.deltas[back:])
        assert [c["reason"] for c in rec.changes] == ["grad_spike", "recovered"]
        assert s.delta == 0.0 and s.proposed() == s.base_values


@pytest.mark.parametrize("interval", [10, 50])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lognormal_noise_without_trend_rarely_eases_off(seed, interval):
    """sigma = 0.5 grad-norm noise (loss noise sigma = 0.2), no trend: < 5 % of 400 windows
    ease off."""
    n_windows = 400
    rng = np.random.default_rng(seed)
    n = n_windows * interval
    grad = 3.0 * rng.lognormal(0.0, 0.5, n)
    loss = 0.7 * rng.lognormal(0.0, 0.2, n)
    s = make(update_interval=interval, min_samples=min(8, interval))
    rec = s.step_block(loss, grad)
    assert len(rec.decisions) == n_windows
    assert eases(rec.decisions) < 0.05 * n_windows
    ref = s.references()[0]  # the noise level was learned (the test is not vacuous)
    assert ref["grad_norm"] == pytest.approx(3.0, rel=0.1)
    assert ref["grad_spread"] == pytest.approx(0.5, rel=0.35)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regimes_are_judged_separately(seed):
    """Regime 1 has 20x the grad norm (and 2x the loss) of regime 0, interleaved at random
    (~40 %): with regimes it never eases off; the same batches all fed as regime 0 mix the
    two levels (the window median jumps with the mix) and ease off far more often."""
    interval, n_windows = 20, 400
    rng = np.random.default_rng(seed)
    n = interval * n_windows
    regime = (rng.random(n) < 0.4).astype(np.int64)
    grad = rng.lognormal(0.0, 0.5, n) * np.where(regime == 1, 20.0, 1.0)
    loss = rng.lognormal(0.0, 0.1, n) * np.where(regime == 1, 2.0, 1.0)
    sep = make(update_interval=interval, min_samples=5)
    rec = sep.step_block(loss, grad, regime)
    assert eases(rec.decisions) < 0.05 * n_windows
    assert sum(sg["regimes"] == 2.0 for sg in rec.signals) > 0.9 * n_windows  # both judged
    refs = sep.references()
    assert refs[1]["grad_norm"] / refs[0]["grad_norm"] == pytest.approx(20.0, rel=0.2)
    mixed = make(update_interval=interval, min_samples=5)
    rec_mixed = mixed.step_block(loss, grad)  # regime=None: all batches regime 0
    assert eases(rec_mixed.decisions) >= 0.05 * n_windows
    assert list(mixed.references()) == [0]


def test_valfree_push_returns_to_zero_in_calm_batch_windows():
    rp = 4
    s = make(patience=2, recover_patience=rp)
    feed(s, 20)
    run_epochs(s, [10.0, 11.0, 12.0], [5.0, 4.9, 4.8])
    assert s.delta == pytest.approx(0.1) and s.last_change()["reason"] == "valfree_worse"
    assert s.diagnostics()["calm_streak"] == 0
    for w in range(rp):
        feed(s, 10, start=20 + 10 * w)
        if w < rp - 1:
            assert s.delta == pytest.approx(0.1)
            assert s.diagnostics()["calm_streak"] == w + 1
    assert s.delta == 0.0 and s.values() == s.base_values
    h = s.last_change()
    assert (h["reason"], h["level"], h["new_delta"]) == ("recovered", "batch", 0.0)
    assert h["old_delta"] == pytest.approx(0.1)
    assert s.diagnostics()["calm_streak"] == 0
    feed(s, 100, start=60)  # calm: stays at 0, no more changes
    assert s.delta == 0.0 and s.num_changes == 2


def test_recovery_needs_consecutive_calm_points():
    s = make(recover_patience=3, cooldown=0)
    feed(s, 20)
    s.step_block([math.nan] * 10, [1.0] * 10)  # -0.1
    for _ in range(3):  # calm, calm, nonfinite, ... never 3 calm in a row
        feed(s, 20)
        s.step_block([math.nan] + [1.0] * 9, [1.0] * 10)
    assert s.delta == pytest.approx(-0.3) and "recovered" not in {h["reason"] for h in s.history()}
    feed(s, 30)
    assert s.delta == pytest.approx(-0.2) and s.last_change()["reason"] == "recovered"


_TRANSIENT_CALM_SIGMA = 0.03  # calm noise: z-scores far below spike_z (floor 0.1 spread)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    interval=st.integers(2, 16),
    kind=st.sampled_from(["grad", "loss", "nan"]),
    burst_len=st.integers(1, 24),
    factor=st.floats(5.0, 100.0),
    offset=st.integers(0, 15),
    warm=st.integers(1, 4),
    rp=st.integers(1, 5),
    cooldown=st.integers(0, 3),
    rate_range=st.sampled_from([(0.1, 0.1), (0.1, 0.3), (0.15, 0.3), (0.25, 0.3), (0.2, 0.2)]),
    spike_count=st.integers(1, 3),
    data=st.data(),
)
def test_returns_to_zero_after_a_transient(
    seed,
    interval,
    kind,
    burst_len,
    factor,
    offset,
    warm,
    rp,
    cooldown,
    rate_range,
    spike_count,
    data,
):
    """Whatever a single anomaly (grad burst, loss jump, NaNs) did to delta, calm noise
    afterwards brings it back to exactly 0 within max(recover_patience, cooldown + 1) +
    (ceil(|delta| / rate) - 1) * recover_patience decision points of the last anomalous
    window (a recovery waits for the cooldown, and sets none), and it stays there."""
    rate, rng_ = rate_range
    min_samples = data.draw(st.integers(2, max(2, interval)))
    s = make(
        update_interval=interval,
        recover_patience=rp,
        cooldown=cooldown,
        adjustment_rate=rate,
        adjustment_range=rng_,
        spike_count=spike_count,
        min_samples=min_samples,
    )
    start = warm * interval + offset
    n_rec = math.ceil(rng_ / rate - 1e-9)
    n = (math.ceil((start + burst_len) / interval) + n_rec * rp + cooldown + 3) * interval
    rng = np.random.default_rng(seed)
    grad = rng.lognormal(0.0, _TRANSIENT_CALM_SIGMA, n)
    loss = rng.lognormal(0.0, _TRANSIENT_CALM_SIGMA, n)
    burst = slice(start, start + burst_len)
    if kind == "grad":
        grad[burst] *= factor
    elif kind == "loss":
        loss[burst] *= factor
    else:
        loss[burst] = np.nan
    rec = s.step_block(loss, grad)
    last = (start + burst_len - 1) // interval  # decision point of the last anomalous batch
    d_last = rec.deltas[last]
    assert all(d <= 0.0 for d in rec.deltas)  # only easing off and recovering
    # NaNs always ease off; a grad burst does once some window holds spike_count of its
    # batches (a burst of >= interval + spike_count batches fills a whole window). Shorter
    # bursts and loss jumps may be filtered out by spike_count / the window medians.
    if kind == "nan" or (
        kind == "grad" and interval >= spike_count and burst_len >= interval + spike_count
    ):
        assert min(rec.deltas) < 0.0
    need = math.ceil(abs(d_last) / rate - 1e-9)
    assert need <= n_rec
    back = last + (max(rp, cooldown + 1) + (need - 1) * rp if need else 0)
    assert rec.deltas[back:] == [0.0] * (len(rec.deltas) - back)
    assert s.delta == 0.0 and s.proposed() == s.base_values
    assert {c["reason"] for c in rec.changes} <= {
        "grad_spike",
        "loss_rising",
        "nonfinite",
        "recovered",
    }


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
    s.step_batch(1.0, 100.0)
    feed(s, 8)
    assert s.delta == pytest.approx(-0.1)
    assert s.values() == {k: float(v) for k, v in BASE.items()}
    assert s.proposed()["freerun_horizon"] == 9.0
    assert all(type(v) is float for v in s.values().values())
    # decisions identical to a live scheduler (replay == live)
    live = make()
    feed(live, 10)
    live.step_batch(1.0, 100.0)
    live.step_batch(1.0, 100.0)
    feed(live, 8)
    assert live.values() == s.proposed() and live.last_change()["reason"] == "grad_spike"
    sd_live, sd_dry = live.state_dict(), s.state_dict()
    sd_live["config"].pop("dry_run"), sd_dry["config"].pop("dry_run")
    assert sd_live == sd_dry
    s.dry_run = False  # switch live
    assert s.values() == s.proposed()


def test_map_value_limits():
    assert map_value("freerun_horizon", 20.0, 0.3) == 26.0
    assert map_value("freerun_horizon", 20.0, 0.3, (1.0, 25.0)) == 25.0
    assert map_value("freerun_horizon", 20.0, -0.3, (15.0, 25.0)) == 15.0
    assert map_value("freerun_horizon", 20.0, 0.1, (1.0, 25.0)) == 22.0  # inside: unchanged
    assert map_value("tf_ratio", 0.5, -0.3, (0.2, 0.6)) == 0.6  # 0.65 clipped
    assert map_value("tf_ratio", 0.5, 0.3, (0.4, 1.0)) == 0.4  # 0.35 clipped
    assert map_value("freerun_weight", 2.0, 0.3, (0.0, 2.5)) == 2.5
    # delta 0 and the "no free run" bases stay exactly the base (limits do not apply)
    assert map_value("freerun_horizon", 30.0, 0.0, (1.0, 25.0)) == 30.0
    assert map_value("freerun_horizon", 0.0, 0.3, (1.0, 25.0)) == 0.0
    assert map_value("tf_ratio", 1.0, -0.3, (0.0, 0.9)) == 1.0


def test_limits_clip_proposed_values():
    s = AdaptiveScheduler(
        limits={"freerun_horizon": (1, 25)}, patience=1, cooldown=0, update_interval=10
    )
    s.set_base_values({**BASE, "freerun_horizon": 20})
    deltas = run_epochs(s, [10.0, 11.0, 12.0, 13.0, 14.0], [5.0, 4.0, 3.0, 2.0, 1.0])
    assert deltas == [0.0, 0.1, 0.2, pytest.approx(0.3), pytest.approx(0.3)]
    p = s.proposed()
    assert p["freerun_horizon"] == 25.0  # floor(20 * 1.3 + 0.5) = 26, clipped to 25
    assert map_value("freerun_horizon", 20.0, s.delta) == 26.0  # what it would be unclipped
    assert p["tf_ratio"] == pytest.approx(0.35)  # no limit on tf_ratio: unclipped
    assert s.values() == p
    assert s.config()["limits"] == {"freerun_horizon": [1.0, 25.0]}
    # the limits are part of the behavioural config: saved and checked on load
    sd = json.loads(json.dumps(s.state_dict(), allow_nan=False))
    t = AdaptiveScheduler(
        limits={"freerun_horizon": (1, 25)}, patience=1, cooldown=0, update_interval=10
    )
    t.load_state_dict(sd)
    assert t.proposed() == p
    with pytest.raises(ValueError, match="limits"):
        AdaptiveScheduler(patience=1, cooldown=0, update_interval=10).load_state_dict(sd)


@pytest.mark.parametrize(
    "limits",
    [
        {"freerun_horizon": (5, 1)},
        {"freerun_horizon": (1,)},
        {"freerun_horizon": (1, 2, 3)},
        {"freerun_horizon": (math.nan, 3)},
        {"freerun_horizon": ("a", 3)},
        {"freerun_horizon": 3},
        {"freerun_horizon": (True, 3)},
    ],
)
def test_invalid_limits_name_the_key(limits):
    with pytest.raises(ValueError, match=r"limits\['freerun_horizon'\]") as e:
        AdaptiveScheduler(limits=limits)
    assert repr(limits["freerun_horizon"]) in str(e.value)


def test_limits_must_be_a_mapping():
    with pytest.raises(TypeError, match="limits"):
        AdaptiveScheduler(limits=[("freerun_horizon", (1, 2))])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- properties
LIMITS = {"freerun_horizon": (1.0, 12.0), "tf_ratio": (0.1, 0.9)}
signal = st.one_of(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e30]),
)
regime_st = st.integers(0, 2)
event = st.one_of(
    st.tuples(st.just("b"), signal, signal, regime_st),
    st.tuples(st.just("e"), signal, signal),
    st.tuples(st.just("s"), st.floats(0, 1), st.integers(0, 50)),
)


def play(s: AdaptiveScheduler, events) -> None:
    for kind, a, b, *r in events:
        if kind == "b":
            s.step_batch(a, b, regime=r[0] if r else 0)
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
    law=st.fixed_dictionaries(
        {
            "min_samples": st.integers(2, 4),
            "spike_count": st.integers(1, 3),
            "recover_patience": st.integers(1, 4),
            "on_nonfinite": st.sampled_from(["ease_off", "skip"]),
            "limits": st.sampled_from([None, LIMITS]),
        }
    ),
)
def test_bounds_rate_and_integer_horizons(events, rate, rng, interval, cooldown, patience, law):
    s = AdaptiveScheduler(
        adjustment_rate=rate,
        adjustment_range=rng,
        update_interval=interval,
        cooldown=cooldown,
        patience=patience,
        **law,
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
        if law["limits"] and d != 0.0:
            p = s.proposed()
            assert p["freerun_horizon"] <= 12.0 or base["freerun_horizon"] == 0
            assert 0.1 <= p["tf_ratio"] <= 0.9 or base["tf_ratio"] == 1.0
    for h in s.history():
        old, new = h["old_delta"], h["new_delta"]
        assert abs(new - old) <= rate + 1e-12
        assert h["reason"] in REASONS
        if h["reason"] == "recovered":  # toward 0, never across it
            assert abs(new) < abs(old) and new * old >= 0.0
        else:
            assert (new - old) * REASONS[h["reason"]] > 0.0
        if h["reason"] == "nonfinite":
            assert law["on_nonfinite"] == "ease_off" or h["level"] == "epoch"
    d = s.diagnostics()
    assert sum(d["reason_counts"].values()) == d["num_changes"]
    json.dumps(s.state_dict(), allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(events=st.lists(event, min_size=1, max_size=150), data=st.data())
def test_state_dict_json_resume_bit_exact(events, data):
    cut = data.draw(st.integers(0, len(events)))
    kw = dict(
        update_interval=4,
        cooldown=1,
        patience=1,
        min_samples=2,
        spike_count=1,
        recover_patience=2,
        on_nonfinite=data.draw(st.sampled_from(["ease_off", "skip"])),
        limits=LIMITS,
    )
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
    assert b.references() == ref.references()
    # JSON: the signals may hold NaN (nan != nan)
    assert json.dumps(b.diagnostics()) == json.dumps(ref.diagnostics())


def test_resume_mid_window_with_tensors():
    def run(split: int | None):
        s = make(update_interval=8, min_samples=3)
        for i in range(40):
            if split is not None and i == split:
                sd = json.loads(json.dumps(s.state_dict()))
                s = make(update_interval=8, min_samples=3)
                s.load_state_dict(sd)
            regime = i % 2  # 4 batches of each regime per window
            g = 20.0 if i in (26, 28) else noisy(i, 1.0 + 4.0 * regime)
            s.step_batch(
                torch.tensor(noisy(i), dtype=torch.float32), torch.tensor(g), regime=regime
            )
        return s.state_dict()

    ref = run(None)
    assert [h["reason"] for h in ref["history"]] == ["grad_spike"]  # at step 32
    assert sorted(ref["references"]) == ["0", "1"]
    for split in (3, 8, 13, 27, 28, 33):
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
    with pytest.raises(ValueError, match=r"spike_z: saved 4\.0 != current 5\.0"):
        AdaptiveScheduler(update_interval=10, spike_z=5.0).load_state_dict(sd)
    with pytest.raises(ValueError, match="on_nonfinite"):
        AdaptiveScheduler(update_interval=10, on_nonfinite="skip").load_state_dict(sd)
    t = AdaptiveScheduler(update_interval=10, dry_run=True)
    t.load_state_dict(sd)
    assert t.dry_run is True and t.step == 13 and t.base_values == s.base_values
    assert sd["version"] == 2
    for v in (1, 99):  # version-1 states (the old control law) are rejected
        with pytest.raises(ValueError, match="version"):
            t.load_state_dict({**sd, "version": v})


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
    s = make(update_interval=10, min_samples=4)
    f = make(update_interval=10, min_samples=4)
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "item", boom)
        m.setattr(torch.Tensor, "__float__", boom)
        for i in range(25):
            loss = torch.tensor(noisy(i), requires_grad=True) * 1.0
            g = torch.tensor(9.0 if i in (15, 17) else noisy(i + 1), dtype=torch.bfloat16)
            s.step_batch(loss, g, regime=i % 2)  # the regime is a host int: no sync
            f.step_batch(float(loss.detach().numpy()), float(g.float().numpy()), regime=i % 2)
    # one stack per (device, dtype) group per window: 2 windows x 2 dtypes
    assert len(calls) == 4
    assert s.state_dict() == f.state_dict()
    assert s.delta == pytest.approx(-0.1) and s.last_change()["reason"] == "grad_spike"


def test_buffered_tensor_is_copied():
    s = make(update_interval=2, min_samples=2)
    t = torch.tensor(1.0)
    s.step_batch(t, t)
    t.mul_(100.0)  # in-place change after recording must not leak in
    s.step_batch(1.0, 1.0)
    # the references are the window medians: 10.0 if the 100 had leaked in
    assert s.references()[0]["grad_norm"] == 1.0 and s.references()[0]["loss"] == 1.0


def test_bad_inputs():
    s = make()
    with pytest.raises(ValueError, match=r"\(2,\)"):
        s.step_batch(torch.ones(2), 1.0)
    with pytest.raises(TypeError, match="'x'"):
        s.step_batch("x", 1.0)
    for regime in (-1, 1.5, "1"):
        with pytest.raises(ValueError, match=f"regime must be an int >= 0, got {regime!r}"):
            s.step_batch(1.0, 1.0, regime=regime)
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
    frozen for ``cooldown`` decision points, so it cannot flip on every signal; a
    recovery only follows ``recover_patience`` calm decision points."""
    cooldown, rp = 3, 5
    s = make(patience=1, cooldown=cooldown, recover_patience=rp, update_interval=5, min_samples=5)
    free, val = 10.0, 5.0
    trace = [0.0]  # delta after every decision point (each window and each epoch end)
    for _ in range(12):
        for i in range(20):  # 4 windows per epoch, two spikes in every other window
            spike = (i // 5) % 2 == 1 and i % 5 < 2
            s.step_batch(noisy(i), 30.0 if spike else noisy(i + 1))
            if (i + 1) % 5 == 0:
                trace.append(s.delta)
        free, val = free * 1.1, val * 0.95
        s.step_epoch({"YawAbsDeg": free}, {"YawAbsDeg": val})
        trace.append(s.delta)
    changes = [i for i in range(1, len(trace)) if trace[i] != trace[i - 1]]
    reasons = [h["reason"] for h in s.history()]
    assert len(reasons) == len(changes)  # every change moves delta
    assert {"grad_spike", "valfree_worse"} <= set(reasons)  # both levels were active
    for (a, ra), (b, rb) in itertools.pairwise(zip(changes, reasons, strict=True)):
        if ra != "recovered":  # frozen after a change (recoveries set no cooldown)
            assert b - a > cooldown
        if rb == "recovered":
            assert b - a >= rp
    # no change is undone at the very next decision point
    assert all(b - a > 1 for a, b in itertools.pairwise(changes))
    assert len(changes) <= len(trace) // 2


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
        ({"free_metric": ""}, "''"),
        ({"val_metric": ""}, "''"),
        ({"param_rules": {"tf_ratio": "ratio"}}, "'ratio'"),
        ({"spike_z": 0.0}, "0.0"),
        ({"spike_z": math.inf}, "inf"),
        ({"spike_count": 0}, "0"),
        ({"spike_count": 1.5}, "1.5"),
        ({"min_samples": 1}, "1"),
        ({"recover_patience": 0}, "0"),
        ({"on_nonfinite": "ignore"}, "'ignore'"),
        ({"limits": {"tf_ratio": (0.9, 0.1)}}, "(0.9, 0.1)"),
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
        spike_z=3.5,
        spike_count=3,
        rising_threshold=0.2,
        baseline_momentum=0.5,
        min_samples=5,
        recover_patience=6,
        on_nonfinite="skip",
        limits={"freerun_horizon": (1, 24), "tf_ratio": (0.0, 0.9)},
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
    assert "spike_z=3.5" in r and "on_nonfinite='skip'" in r and "recover_patience=6" in r
    assert t.config()["limits"] == {"freerun_horizon": [1.0, 24.0], "tf_ratio": [0.0, 0.9]}
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
_SIG_KEYS = (
    "window_size",
    "window_nonfinite",
    "regimes",
    "loss_trend",
    "grad_z",
    "grad_outliers",
    "grad_median",
    "grad_reference",
    "calm_streak",
    "free_metric",
    "free_trend",
    "val_metric",
    "val_trend",
)


def test_signal_keys():
    s = make()
    assert tuple(s.diagnostics()["signals"]) == _SIG_KEYS
    assert all(v is None for v in s.diagnostics()["signals"].values())


def _bits(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).view(np.uint64)


def _per_step(s: AdaptiveScheduler, losses, grads, regimes) -> dict:
    """Reference: what a per-step caller sees (proposed() read, then step_batch)."""
    out: dict = {"delta": [], "reason": [], **{k: [] for k in _SIG_KEYS}}
    out.update({f"p/{k}": [] for k in s.base_values})
    for loss, grad, regime in zip(losses, grads, regimes, strict=True):
        prop = s.proposed()
        for k, v in prop.items():
            out[f"p/{k}"].append(v)
        out["delta"].append(s.delta)
        s.step_batch(loss, grad, regime=regime)
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


# block batches: mostly plausible (calm, grad spike, loss jump) so that references form
# and get judged, and every batch-level reason occurs; some arbitrary values
calm = st.floats(0.8, 1.25)
block_batch = st.tuples(
    st.one_of(
        st.tuples(calm, calm),
        st.tuples(calm, calm),
        st.tuples(calm, st.floats(10.0, 50.0)),
        st.tuples(st.floats(2.0, 5.0), calm),
        st.tuples(signal, signal),
    ),
    st.sampled_from([0, 0, 0, 1, 2]),
).map(lambda t: (*t[0], t[1]))
block_event = st.one_of(
    st.tuples(st.just("b"), st.lists(block_batch, min_size=1, max_size=60)),
    st.tuples(st.just("e"), signal, signal),
    st.tuples(st.just("s"), st.floats(0, 1), st.integers(0, 50)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(block_event, max_size=25),
    interval=st.integers(1, 9),
    cooldown=st.integers(0, 2),
    patience=st.integers(1, 2),
    law=st.fixed_dictionaries(
        {
            "min_samples": st.integers(2, 4),
            "spike_count": st.integers(1, 2),
            "recover_patience": st.integers(1, 3),
            "on_nonfinite": st.sampled_from(["ease_off", "skip"]),
            "limits": st.sampled_from([None, LIMITS]),
        }
    ),
    data=st.data(),
)
def test_step_block_equals_per_step_calls(events, interval, cooldown, patience, law, data):
    kw = dict(
        update_interval=interval,
        cooldown=cooldown,
        patience=patience,
        history_size=10_000,
        **law,
    )
    ref, blk = AdaptiveScheduler(**kw), AdaptiveScheduler(**kw)
    for s in (ref, blk):
        s.set_base_values(BASE)
    # optional warm-up: whole windows of calm batches per regime, so references exist
    warm = data.draw(st.integers(0, 2)) * interval
    warm_up = [("b", [(noisy(i), noisy(i + 3), r) for i in range(warm)]) for r in range(3)]
    changes: list = []
    for kind, a, *rest in [*warm_up, *events]:
        if kind == "b" and not a:  # warm == 0
            continue
        if kind != "b":
            before = blk.num_changes
            play(ref, [(kind, a, *rest)])
            play(blk, [(kind, a, *rest)])
            if blk.num_changes != before:
                changes.append(blk.last_change())
            continue
        losses, grads, regimes = [x for x, _, _ in a], [y for _, y, _ in a], [r for *_, r in a]
        expected = _per_step(ref, losses, grads, regimes)
        cuts = sorted(set(data.draw(st.lists(st.integers(0, len(a)), max_size=4))))
        as_array = data.draw(st.booleans())
        got = []
        for i, j in itertools.pairwise([0, *cuts, len(a)]):
            reg = regimes[i:j]
            if not any(reg) and data.draw(st.booleans()):
                reg = None  # the default: all regime 0
            elif as_array:
                reg = np.asarray(reg, dtype=np.int64)
            rec = blk.step_block(losses[i:j], grads[i:j], reg)
            assert rec.start_step + rec.length == blk.step and rec.length == j - i
            changes.extend(rec.changes)
            got.append(_from_block(rec))
        _assert_same(expected, got)
        assert blk.diagnostics() == ref.diagnostics()
    assert json.dumps(blk.state_dict()) == json.dumps(ref.state_dict())
    assert changes == ref.history() == blk.history()
    assert blk.num_changes == len(changes)
    assert blk.references() == ref.references()


def test_step_block_float32_array_equals_float32_tensor_steps():
    rng = np.random.default_rng(3)
    loss = rng.lognormal(0, 0.3, 997).astype(np.float32)
    grad = rng.lognormal(0, 0.3, 997).astype(np.float32)
    grad[[100, 101, 400, 401]] = [40.0, 40.0, np.nan, np.inf]
    loss[700] = np.nan
    regime = (rng.random(997) < 0.3).astype(np.int64)
    grad[regime == 1] *= 8.0
    kw = dict(update_interval=7, min_samples=2)
    live, blk = make(**kw), make(**kw)
    for i in range(len(loss)):  # what the trainer passes: float32 0-dim tensors
        live.step_batch(
            torch.from_numpy(loss[i : i + 1]).reshape(()),
            torch.tensor(grad[i]),
            regime=int(regime[i]),
        )
    recs = [
        blk.step_block(loss[:500], grad[:500], regime[:500]),
        blk.step_block(loss[500:], grad[500:], regime[500:]),
    ]
    assert blk.state_dict() == live.state_dict()
    assert blk.history() == live.history() and len(live.history()) >= 3
    assert {"grad_spike", "nonfinite"} <= {h["reason"] for h in live.history()}
    assert [c for r in recs for c in r.changes] == live.history()
    assert sorted(live.references()) == [0, 1]
    # other input kinds convert identically
    for conv in (torch.from_numpy, list, lambda a: [np.float32(x) for x in a]):
        s = make(**kw)
        s.step_block(conv(loss), conv(grad), regime.tolist())
        assert s.state_dict() == live.state_dict()
    s = make(update_interval=7)
    s.step_block(np.arange(20), torch.arange(20), np.ones(20, dtype=np.int8))
    t = make(update_interval=7)
    for i in range(20):
        t.step_batch(i, float(i), regime=1)
    assert s.state_dict() == t.state_dict()


def test_step_block_mixes_with_buffered_tensor_steps():
    ref, mix = make(update_interval=8), make(update_interval=8)
    vals = [(noisy(i), 30.0 if i in (12, 13) else noisy(i + 1)) for i in range(40)]
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
    for regime in ([0, 1], [0, -1, 0], [0, 1.5, 0], np.array([0, 0, -2])):
        with pytest.raises(ValueError, match="regime"):
            s.step_block(np.ones(3), np.ones(3), regime)
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
    regimes: bool = True,
):
    """In-memory trace with the reader's dtypes: noisy decreasing loss with rising phases,
    grad-norm bursts (3 batches), optional NaN/inf batches and an inf epoch metric, epoch
    metrics drifting through gap-widening / improving / both-worse phases, four stages of
    base values; with ``regimes`` a ``regime`` column (free run drawn in ~40 % of the
    batches from the second stage on, with 5x the grad norm and 1.5x the loss)."""
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
    spikes[1:] |= spikes[:-1]
    spikes[1:] |= spikes[:-1]  # bursts of 3 batches
    grad[spikes] *= rng.uniform(3, 20, spikes.sum())
    stage = np.minimum(epoch * 4 // n_ep, 3)
    regime = ((rng.random(n_steps) < 0.4) & (stage > 0)).astype(np.int8)
    if regimes:
        grad[regime == 1] *= 5.0
        loss[regime == 1] *= np.float32(1.5)
    grad = grad.astype(np.float32)
    if nonfinite_every:
        loss[nonfinite_every // 2 :: nonfinite_every] = np.nan
        grad[nonfinite_every // 3 :: nonfinite_every] = np.inf
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
    if regimes:
        steps["regime"] = regime
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
        dict(n_steps=6000, steps_per_epoch=100, nonfinite_every=977, spike_p=0.002),
        dict(update_interval=12, cooldown=1, patience=1, min_samples=4),
    ),
    (
        dict(n_steps=6000, steps_per_epoch=333, nonfinite_every=977, spike_p=0.01),
        dict(update_interval=7, cooldown=1, patience=1, min_samples=2, recover_patience=2),
    ),
    (
        dict(n_steps=3000, steps_per_epoch=100, nonfinite_every=501),
        dict(update_interval=2, cooldown=0, spike_z=1.5, spike_count=1, min_samples=2),
    ),
    (
        dict(n_steps=3000, steps_per_epoch=97, val_split=False, base_col="schedule"),
        dict(
            update_interval=4,
            cooldown=0,
            free_metric="MPJPE",
            rising_threshold=0.05,
            min_samples=2,
        ),
    ),
    (
        dict(n_steps=3000, steps_per_epoch=97, val_split=False, regimes=False),
        dict(update_interval=8, cooldown=0, min_samples=4, limits={"freerun_horizon": (1, 9)}),
    ),
    (
        dict(n_steps=2000, steps_per_epoch=50, spike_p=0.05, nonfinite_every=333),
        dict(
            update_interval=10,
            cooldown=0,
            patience=1,
            use_epoch_metrics=False,
            on_nonfinite="skip",
            min_samples=3,
            recover_patience=1,
        ),
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
    seen_reasons = {(e["level"], e["reason"]) for e in fast.events}
    if shape.get("spike_p") == 0.002:
        assert seen_reasons == {
            ("batch", r) for r in ("nonfinite", "grad_spike", "loss_rising", "recovered")
        } | {("epoch", r) for r in ("nonfinite", "valfree_worse", "both_worse", "recovered")}
    if params.get("on_nonfinite") == "skip":
        assert ("batch", "nonfinite") not in seen_reasons
    if params.get("limits"):
        assert fast.params["limits"] == {"freerun_horizon": [1.0, 9.0]}
        f = fast.frame
        adjusted = (f["delta"] != 0.0) & (f["base/freerun_horizon"] > 0)
        assert adjusted.any()
        assert (f.loc[adjusted, "proposed/schedule/freerun_horizon"] <= 9.0).all()


def test_fast_replay_events_not_truncated():
    from replay._scheduler_replay import replay_scheduler_fast
    from tests.reference_replay import replay_scheduler

    tr = _synthetic_trace(3000, 100, nonfinite_every=101)
    params = dict(
        update_interval=2, cooldown=0, spike_z=1.2, spike_count=1, min_samples=2, history_size=5
    )
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
                extra={"regime": int(r.regime)},
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
    assert (tr.steps["regime"].to_numpy() == src.steps["regime"].to_numpy()).all()
    params = dict(update_interval=5, cooldown=0, patience=1, min_samples=2)
    ref = replay_scheduler(tr, **params)
    fast = replay_scheduler_fast(tr, **params)
    pd.testing.assert_frame_equal(fast.frame, ref.frame, check_exact=True)
    assert fast.events == ref.events and fast.events and fast.run_id == "w"
    assert not any("regime" in n for n in fast.notes)  # the regime column was used
    assert {e["reason"] for e in fast.events} >= {"grad_spike", "nonfinite"}


# ----------------------------------------------------------------------------- recovery
def test_recovery_from_several_small_steps_lands_on_zero():
    s = make(adjustment_rate=0.05, recover_patience=1, cooldown=0)
    feed(s, 10)
    for _ in range(3):
        s.step_block([math.nan] * 10, [1.0] * 10)
    assert s.delta == pytest.approx(-0.15)
    feed(s, 30)  # three calm windows: three recoveries of 0.05 each
    assert s.delta == 0.0


def test_recovery_waits_for_the_cooldown() -> None:
    """A recovery never undoes an ease-off while its cooldown runs."""
    s = make(update_interval=10, cooldown=3, recover_patience=1, min_samples=2, spike_count=1)
    feed(s, 10)
    s.step_block([1.0] * 10, [1.0] * 9 + [50.0])
    assert s.delta == pytest.approx(-0.1)
    for _ in range(3):  # the cooldown's three points hold, calm or not
        feed(s, 10)
        assert s.delta == pytest.approx(-0.1)
    feed(s, 10)
    assert s.delta == 0.0


def test_short_windows_still_get_checks() -> None:
    """min_samples and spike_count larger than a window are capped at its length."""
    s = make(update_interval=5, spike_count=1)  # min_samples 8 > 5: 5 values suffice
    feed(s, 5)
    assert s.references()[0]["grad_norm"] == pytest.approx(1.0)
    s.step_block([1.0] * 5, [1.0] * 4 + [50.0])
    assert s.delta == pytest.approx(-0.1)
    s = make(update_interval=2, spike_count=5, min_samples=8)
    feed(s, 2)
    s.step_block([1.0] * 2, [50.0] * 2)
    assert s.delta == pytest.approx(-0.1)


def test_metric_names_and_parameter_rules_are_inputs() -> None:
    """Nothing in the law is specific to the motion task: any metric name, and per-parameter
    rules (the task's are the defaults, overridable and extendable)."""
    s = make(free_metric="valfree_bleu_inverse", val_metric="val_bleu_inverse", patience=1)
    for f, v in ((1.0, 1.0), (1.5, 1.0)):
        s.step_epoch({"valfree_bleu_inverse": f}, {"val_bleu_inverse": v})
    assert s.last_change()["reason"] == "valfree_worse"
    rules = {"beam": "count", "teacher_prob": "complement", "freerun_horizon": "scale"}
    s = AdaptiveScheduler(param_rules=rules, adjustment_range=0.5)
    s.set_base_values({"beam": 4, "teacher_prob": 0.8, "freerun_horizon": 10.0, "tf_ratio": 0.5})
    s._delta = 0.5  # as after five pushes of 0.1
    p = s.proposed()
    assert p["beam"] == 6.0 and p["teacher_prob"] == pytest.approx(0.7)
    assert p["freerun_horizon"] == 15.0 and p["tf_ratio"] == pytest.approx(
        0.25
    )  # default rule kept
    assert map_value("beam", 4.0, 0.5, kind="count") == 6.0
    with pytest.raises(ValueError, match=r"base value 'teacher_prob' must be in \[0, 1\]"):
        s.set_base_values({"teacher_prob": 1.5})
    assert AdaptiveScheduler().config()["param_rules"] is None  # the defaults, not spelled out
    assert repr(AdaptiveScheduler(param_rules={"beam": "count"})).count("param_rules") == 1
