"""Stability metrics, score, table and recommendation of replayed controllers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptive.trace import TraceWriter, read_trace
from replay._engine import ReplayResult, replay
from replay._stability import (
    METRIC_DOCS,
    net_score,
    recommend,
    stability_metrics,
    stability_rank_key,
    stability_score,
    stability_table,
)
from replay._sweep import rank


# ------------------------------------------------------------------------------ builders
def weighting_result(
    deltas: dict[str, Sequence[float]],
    epochs: Sequence[int] | None = None,
    *,
    r: float = 0.3,
    base: float = 2.0,
    clamped: dict[str, Sequence[bool]] | None = None,
    skipped: Sequence[bool] | None = None,
    method: str = "dwa",
    params: dict | None = None,
) -> ReplayResult:
    names = list(deltas)
    n = len(next(iter(deltas.values())))
    epochs = list(epochs) if epochs is not None else [0] * n
    cols: dict[str, object] = {"step": np.arange(n), "epoch": np.asarray(epochs)}
    for c in names:
        d = np.asarray(deltas[c], dtype=np.float64)
        cols[f"scale/{c}"] = 1.0 + d
        cols[f"delta/{c}"] = d
        cl = clamped[c] if clamped and c in clamped else np.abs(d) >= r
        cols[f"clamped/{c}"] = np.asarray(cl, dtype=bool)
        cols[f"proposed/weight/{c}"] = base * (1.0 + d)
        cols[f"base/{c}"] = np.full(n, base)
    cols["skipped"] = np.asarray(skipped if skipped is not None else [False] * n, dtype=bool)
    return ReplayResult(
        method=method,
        params={"adjustment_range": r, **(params or {})},
        frame=pd.DataFrame(cols),
        names=names,
        run_id="r1",
    )


def schedule_result(
    delta: Sequence[float],
    epochs: Sequence[int] | None = None,
    *,
    events: list[dict] | None = None,
    r: float = 0.3,
) -> ReplayResult:
    n = len(delta)
    d = np.asarray(delta, dtype=np.float64)
    frame = pd.DataFrame(
        {
            "step": np.arange(n),
            "epoch": np.asarray(epochs if epochs is not None else [0] * n),
            "delta": d,
            "base/tf_ratio": np.full(n, 0.5),
            "proposed/schedule/tf_ratio": np.clip(1 - 0.5 * (1 + d), 0, 1),
            "reason": [""] * n,
            "signal/grad_ratio": np.ones(n),
            "signal/loss_trend": np.zeros(n),
            "signal/free_trend": np.full(n, np.nan),
        }
    )
    return ReplayResult(
        method="scheduler",
        params={"adjustment_range": r, "adjustment_rate": 0.1},
        frame=frame,
        names=["tf_ratio"],
        events=events or [],
    )


def event(step: int, reason: str, old: float, new: float, level: str = "batch") -> dict:
    return {
        "step": step,
        "epoch": 0,
        "level": level,
        "reason": reason,
        "old_delta": old,
        "new_delta": new,
        "detail": "",
    }


# ------------------------------------------------------------------------------ weighting
def test_constant_weights_are_perfectly_stable() -> None:
    res = weighting_result({"a": [0.1] * 40, "b": [-0.1] * 40}, [i // 10 for i in range(40)])
    m = stability_metrics(res)
    assert all(isinstance(v, float) for v in m.values())
    for c in ("a", "b"):
        assert m[f"volatility_step/{c}"] == 0.0
        assert m[f"volatility_epoch/{c}"] == 0.0
        assert m[f"sign_flips/{c}"] == 0.0
        assert m[f"settle_epoch/{c}"] == 0.0
        assert m[f"at_clamp_share/{c}"] == 0.0
        assert m[f"max_step_change/{c}"] == 0.0
        assert m[f"mean_abs_delta/{c}"] == pytest.approx(0.1)
    assert m["settle_epoch"] == 0.0 and m["settle_fraction"] == 0.0
    assert m["at_clamp_share_max"] == 0.0
    assert m["steps"] == 40.0 and m["epochs"] == 4.0
    assert m["skipped_steps"] == 0.0
    assert stability_score(m) == 0.0


def test_alternating_delta_flip_count() -> None:
    # +, 0, -, +, 0, 0, -, + : zeros ignored -> signs + - + - + : 4 flips
    d = [0.1, 0.0, -0.1, 0.1, 0.0, 0.0, -0.1, 0.1]
    m = stability_metrics(weighting_result({"a": d, "b": [0.0] * 8}))
    assert m["sign_flips/a"] == 4.0
    assert m["sign_flips/b"] == 0.0
    assert m["sign_flips"] == 4.0
    assert m["sign_flips_per_1000/a"] == pytest.approx(4000 / 8)
    # w/base moves by 0.1 or 0.2 per step; base 2 cancels
    assert m["max_step_change/a"] == pytest.approx(0.2)
    steps = np.abs(np.diff(1 + np.array(d)))
    assert m["volatility_step/a"] == pytest.approx(steps.mean())
    assert m["volatility_step"] == pytest.approx(steps.mean() / 2)


def test_clamp_share_k_of_n() -> None:
    n, k = 20, 7
    d = [0.3] * k + [0.1] * (n - k)
    m = stability_metrics(weighting_result({"a": d, "b": [0.0] * n}, r=0.3))
    assert m["at_clamp_share/a"] == pytest.approx(k / n)
    assert m["at_clamp_share/b"] == 0.0
    assert m["at_clamp_share_max"] == pytest.approx(k / n)


def test_settle_epoch_after_movement() -> None:
    # epochs 0-2 move, epochs 3-5 constant: settles at epoch 3
    per_epoch = [0.2, -0.1, 0.15, 0.05, 0.05, 0.05]
    d, ep = [], []
    for e, v in enumerate(per_epoch):
        jitter = [0.02, -0.02] if e < 3 else [0.0, 0.0]
        d += [v + j for j in jitter * 2]
        ep += [e] * 4
    m = stability_metrics(weighting_result({"a": d}, ep))
    assert m["settle_epoch/a"] == 3.0
    assert m["settle_epoch"] == 3.0
    assert m["settle_fraction"] == pytest.approx(3 / 5)
    assert m["volatility_epoch/a"] == pytest.approx(0.02 * 3 / 6)


def test_never_settles_is_nan() -> None:
    d = [0.0] * 5 + [0.1] * 5 + [0.2] * 5
    m = stability_metrics(weighting_result({"a": d, "b": [0.0] * 15}, [i // 5 for i in range(15)]))
    assert math.isnan(m["settle_epoch/a"])
    assert m["settle_epoch/b"] == 0.0
    assert math.isnan(m["settle_epoch"])
    assert m["settle_fraction"] == 1.0
    assert math.isfinite(stability_score(m))


def test_settle_tolerance_relative() -> None:
    d = [0.015] * 5 + [0.0] * 5
    ep = [0] * 5 + [1] * 5 + [2] * 0
    assert (
        stability_metrics(weighting_result({"a": d + [0.0] * 5}, ep + [2] * 5))["settle_epoch"]
        == 0.0
    )  # 1.5 % < 2 %
    m = stability_metrics(weighting_result({"a": d + [0.0] * 5}, ep + [2] * 5), tolerance=0.01)
    assert m["settle_epoch"] == 1.0


def test_skipped_count() -> None:
    skipped = [False, True, False, True, True, False]
    m = stability_metrics(weighting_result({"a": [0.0] * 6}, skipped=skipped))
    assert m["skipped_steps"] == 3.0
    assert m["skipped_share"] == 0.5


def test_relative_to_changing_base() -> None:
    res = weighting_result({"a": [0.1] * 6}, [0, 0, 0, 1, 1, 1])
    res.frame.loc[3:, "base/a"] = 4.0  # stage change of the base weight
    res.frame["proposed/weight/a"] = res.frame["base/a"] * 1.1
    m = stability_metrics(res)
    assert m["max_step_change/a"] == pytest.approx(0.0, abs=1e-12)
    assert m["settle_epoch/a"] == 0.0


# ------------------------------------------------------------------------------ scheduler
def test_scheduler_metrics() -> None:
    delta = [0.0] * 10 + [-0.1] * 10 + [-0.2] * 10 + [-0.3] * 10 + [-0.2] * 10 + [0.1] * 10
    epochs = [i // 10 for i in range(60)]
    events = [
        event(10, "grad_spike", 0.0, -0.1),
        event(20, "loss_rising", -0.1, -0.2),
        event(30, "nonfinite", -0.2, -0.3),
        event(40, "valfree_worse", -0.3, -0.2, "epoch"),
        event(50, "valfree_worse", -0.2, 0.1, "epoch"),
        event(60, "grad_spike", 0.1, 0.0),
    ]
    m = stability_metrics(schedule_result(delta, epochs, events=events))
    assert all(isinstance(v, float) for v in m.values())
    assert m["changes"] == 6.0
    assert m["changes/grad_spike"] == 2.0
    assert m["changes/loss_rising"] == 1.0
    assert m["changes/nonfinite"] == 1.0
    assert m["changes/valfree_worse"] == 2.0
    assert m["changes/both_worse"] == 0.0
    assert m["nonfinite_changes"] == 1.0
    assert m["changes_per_1000"] == pytest.approx(100.0)
    assert m["sign_flips"] == 1.0  # -0.1 ... -0.2 -> +0.1; zeros ignored
    assert m["max_step_change"] == pytest.approx(0.3)
    assert m["at_bound_share"] == pytest.approx(10 / 60)
    assert math.isnan(m["settle_epoch"])  # the last epoch differs from the one before
    assert m["mean_abs_delta"] == pytest.approx(np.mean(np.abs(delta)))


def test_scheduler_quiet_and_zero_range() -> None:
    m = stability_metrics(schedule_result([0.0] * 20, [i // 5 for i in range(20)], r=0.0))
    assert m["changes"] == 0.0 and m["at_bound_share"] == 0.0
    assert m["settle_epoch"] == 0.0 and m["sign_flips"] == 0.0
    assert stability_score(m) == 0.0
    assert "barely moves" in recommend(m)


def test_scheduler_settles() -> None:
    delta = [0.0] * 5 + [0.1] * 15
    m = stability_metrics(schedule_result(delta, [i // 5 for i in range(20)]))
    assert m["settle_epoch"] == 1.0
    assert m["settle_fraction"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------ score
def test_score_orders_noisy_worse_than_smooth() -> None:
    rng = np.random.default_rng(0)
    n, ep = 200, [i // 20 for i in range(200)]
    smooth = weighting_result({"a": np.linspace(0.0, 0.1, n)}, ep)
    noisy = weighting_result({"a": np.clip(rng.normal(0.0, 0.2, n), -0.3, 0.3)}, ep)
    s_smooth, s_noisy = stability_score(stability_metrics(smooth)), stability_score(noisy)
    assert 0.0 <= s_smooth < s_noisy < 3.5
    # Doing nothing is calm, but the ranking never rewards it: an inert series (delta 0)
    # scores 0 yet loses to the smooth one that acts, by net score and in a sweep's rank.
    inert = stability_metrics(weighting_result({"a": [0.0] * n}, ep))
    acting = stability_metrics(smooth)
    assert stability_score(inert) == 0.0 < stability_score(acting)
    assert net_score(acting) < net_score(inert)
    table = pd.DataFrame(
        [
            {"config": "inert", "score": 0.0, "mean_abs_delta": inert["mean_abs_delta"]},
            {
                "config": "smooth",
                "score": stability_score(acting),
                "mean_abs_delta": acting["mean_abs_delta"],
            },
        ]
    )
    ranked = rank(table)
    assert ranked["config"].tolist() == ["smooth", "inert"]
    assert ranked["status"].tolist() == ["recommended", "inert"]


def test_rank_key_breaks_ties_by_effect() -> None:
    """`stability_rank_key` (score, then effect) for callers that rank by the score alone."""
    ep = [i // 10 for i in range(40)]
    none = stability_metrics(weighting_result({"a": [0.0] * 40}, ep))
    some = stability_metrics(weighting_result({"a": [0.1] * 40}, ep))
    assert stability_score(none) == stability_score(some) == 0.0
    assert sorted([none, some], key=stability_rank_key)[0] is some


# ------------------------------------------------------------------------------ table
def test_table_union_rows_and_labels() -> None:
    ep = [i // 5 for i in range(20)]
    r1 = weighting_result({"a": [0.1] * 20}, ep, r=0.1)
    r2 = weighting_result({"a": [0.2] * 20, "b": [0.0] * 20}, ep, r=0.3)
    r3 = weighting_result({"a": [0.0] * 20}, ep, method="uncertainty")
    r4 = schedule_result([0.0] * 20, ep, events=[event(3, "grad_spike", 0.0, -0.1)])
    table = stability_table([r1, r2, r3, r4])
    assert list(table.columns) == [
        "dwa(adjustment_range=0.1)",
        "dwa(adjustment_range=0.3)",
        "uncertainty",
        "scheduler",
    ]
    assert table.loc["at_clamp_share/a", "dwa(adjustment_range=0.1)"] == 1.0
    assert math.isnan(table.loc["at_clamp_share/b", "dwa(adjustment_range=0.1)"])
    assert table.loc["at_clamp_share/b", "dwa(adjustment_range=0.3)"] == 0.0
    assert math.isnan(table.loc["changes", "uncertainty"])
    assert table.loc["changes/grad_spike", "scheduler"] == 1.0
    assert math.isnan(table.loc["at_clamp_share_max", "scheduler"])
    assert table.index[-1] == "score"
    expected_rows = set()
    for r in (r1, r2, r3, r4):
        expected_rows |= set(stability_metrics(r))
    assert set(table.index) == expected_rows | {"score"}
    assert table.dtypes.map(lambda t: t == np.float64).all()


def test_table_labels_same_params() -> None:
    a = weighting_result({"a": [0.0] * 4})
    b = weighting_result({"a": [0.0] * 4})
    assert list(stability_table([a, b], score=False).columns) == ["dwa#1", "dwa#2"]
    b.run_id = "r2"
    assert list(stability_table([a, b]).columns) == ["dwa[r1]", "dwa[r2]"]


def test_metric_docs_cover_every_key() -> None:
    ep = [i // 5 for i in range(20)]
    keys = set(stability_metrics(weighting_result({"x": [0.1] * 20}, ep)))
    keys |= set(stability_metrics(schedule_result([0.0] * 20, ep)))
    patterns = {k.replace("<c>", "x").replace("<reason>", "") for k in METRIC_DOCS}
    for k in keys:
        assert k in patterns or k.rsplit("/", 1)[0] + "/" in patterns, k
    assert all(isinstance(v, str) and "\n" not in v for v in METRIC_DOCS.values())


# ------------------------------------------------------------------------------ recommend
def test_recommend_mentions_clamp() -> None:
    ep = [i // 5 for i in range(20)]
    clamped = weighting_result({"a": [0.3] * 18 + [0.1] * 2}, ep)
    text = recommend(clamped)
    assert "clamp" in text and "adjustment_range" in text
    assert "not yet" in text
    assert "open loop" in text


def test_recommend_picks_stable_candidate() -> None:
    ep = [i // 10 for i in range(100)]
    rng = np.random.default_rng(1)
    good = weighting_result({"a": [0.1] * 100}, ep, params={"temperature": 2.0})
    bad = weighting_result({"a": rng.choice([-0.2, 0.2], 100)}, ep, params={"temperature": 0.5})
    text = recommend([good, bad])
    assert "oscillation" in text
    assert "Best loss weighting candidate: dwa(temperature=2)" in text
    text2 = recommend({"calm": stability_metrics(good), "wild": stability_metrics(bad)})
    assert "calm: looks stable enough" in text2
    assert "wild: not yet" in text2


def test_recommend_skipped_and_nonfinite() -> None:
    m = stability_metrics(weighting_result({"a": [0.05] * 4}, skipped=[True, False] * 2))
    assert "non-finite" in recommend(m)
    s = schedule_result([0.0, -0.1, -0.1, -0.1], events=[event(1, "nonfinite", 0.0, -0.1)])
    assert "non-finite" in recommend([s])


# ------------------------------------------------------------------------------ integration
COMPONENTS = ["fk_pos", "rot", "yaw"]


def write_trace(path: Path, steps: int = 120, steps_per_epoch: int = 20) -> None:
    rng = np.random.default_rng(0)
    with TraceWriter(path, components=COMPONENTS, metrics=["MPJPE"], run_id="syn") as w:
        for s in range(steps):
            e = s // steps_per_epoch
            losses = {
                c: float((i + 1) * math.exp(-0.01 * s * (i + 1)) + 0.05 * rng.random())
                for i, c in enumerate(COMPONENTS)
            }
            w.log_step(
                step=s,
                epoch=e,
                losses=losses,
                loss_total=sum(losses.values()),
                weights=dict.fromkeys(COMPONENTS, 1.0),
                weights_base={"fk_pos": 1.0, "rot": 0.5, "yaw": 2.0},
                schedule={"tf_ratio": 0.5, "freerun_horizon": 10.0, "freerun_weight": 1.0},
                schedule_base={"tf_ratio": 0.5, "freerun_horizon": 10.0, "freerun_weight": 1.0},
                grad_norm=float(1.0 + (5.0 if s % 37 == 36 else 0.1 * rng.random())),
            )
            if (s + 1) % steps_per_epoch == 0:
                w.log_epoch(split="valfree", epoch=e, step=s + 1, metrics={"MPJPE": 100.0 + e})
                w.log_epoch(split="val", epoch=e, step=s + 1, metrics={"MPJPE": 90.0 - e})


def test_integration_replay(tmp_path: Path) -> None:
    path = tmp_path / "trace.parquet"
    write_trace(path)
    tr = read_trace(path)
    results = [
        replay(tr, "dwa"),
        replay(tr, "uncertainty", adjustment_range=0.2),
        replay(
            tr,
            "scheduler",
            free_metric="MPJPE",
            update_interval=10,
            cooldown=0,
            spike_count=1,
            min_samples=4,
        ),
    ]
    common = [
        "steps",
        "epochs",
        "mean_abs_delta",
        "volatility_step",
        "volatility_epoch",
        "sign_flips",
        "sign_flips_per_1000",
        "max_step_change",
        "settle_fraction",
    ]
    for res in results[:2]:
        m = stability_metrics(res)
        keys = [*common, "at_clamp_share_max", "skipped_steps", "skipped_share"]
        keys += [f"{k}/{c}" for k in ("at_clamp_share", "volatility_step") for c in COMPONENTS]
        for k in keys:
            assert math.isfinite(m[k]), (res.method, k)
        assert m["steps"] == 120.0 and m["epochs"] == 6.0
        assert math.isfinite(stability_score(m))
    assert stability_metrics(results[0])["mean_abs_delta"] > 0  # dwa moves from epoch 2
    sm = stability_metrics(results[2])
    for k in [*common, "changes", "at_bound_share", "nonfinite_changes", "changes/grad_spike"]:
        assert math.isfinite(sm[k]), k
    assert sm["changes"] == len(results[2].events) > 0
    table = stability_table(results)
    assert list(table.columns) == ["dwa", "uncertainty", "scheduler"]
    text = recommend(results)
    assert "dwa" in text and "scheduler" in text and "open loop" in text


def test_zero_range_is_calm_but_clamped(tmp_path: Path) -> None:
    path = tmp_path / "trace.parquet"
    write_trace(path, steps=60)
    m = stability_metrics(replay(read_trace(path), "uncertainty", adjustment_range=0.0))
    assert m["volatility_step"] == 0.0 and m["sign_flips"] == 0.0 and m["mean_abs_delta"] == 0
    assert m["at_clamp_share_max"] > 0.5  # the range binds whenever the method wants to move


def test_docs_render_metric_docs() -> None:
    text = (Path(__file__).parents[1] / "docs" / "STABILITY.md").read_text()
    for key, line in METRIC_DOCS.items():
        assert f"| `{key}` | {line} |" in text, key


def test_best_candidate_prefers_one_that_acts() -> None:
    ep = [i // 10 for i in range(100)]
    idle = weighting_result({"a": [0.0] * 100}, ep, params={"temperature": 8.0})
    acting = weighting_result({"a": [0.1] * 100}, ep, params={"temperature": 2.0})
    text = recommend([idle, acting])
    assert "Best loss weighting candidate: dwa(temperature=2) (score below 1, not inert" in text
    text = recommend([idle, weighting_result({"a": [0.0] * 100}, ep, params={"temperature": 9.0})])
    assert "No loss weighting configuration is worth switching on" in text
    assert "barely move from base (inert)" in text


# ------------------------------------------------------------------------------ verdicts agree
def test_a_steady_controller_that_hardly_acts_is_not_told_to_try_live() -> None:
    from replay._stability import verdict

    quiet = stability_metrics(schedule_result([0.0] * 40, [i // 10 for i in range(40)]))
    v = verdict("scheduler", quiet)
    assert v.ready and not v.acts and not v.try_live
    line = v.line()
    assert "hardly acts" in line and "stable enough" not in line
    assert "adaptive train" not in v.next_step and "hardly acts" in v.next_step
    text = recommend({"scheduler": quiet})
    assert "stable enough to try live, if it acts" in text  # the header names the rule
    assert "scheduler: looks stable enough" not in text
    moving = stability_metrics(schedule_result([0.1] * 40, [i // 10 for i in range(40)]))
    v = verdict("scheduler", moving)
    assert v.try_live and "looks stable enough to try live" in v.line()
    assert "adaptive train --adaptive-scheduler" in v.next_step


def test_compare_on_a_run_that_never_left_teacher_forcing(tmp_path: Path) -> None:
    """Issue 18: `compare` said "looks stable enough to try live" and "it hardly acts as
    configured" about the same scheduler on a run that stayed in teacher forcing."""
    from typer.testing import CliRunner

    from adaptive.train.config import load_config
    from adaptive.train.trainer import Trainer
    from cli import app
    from tests.test_train import TINY

    stages = (
        "schedule.stages=[{name='tf', epochs=3, tf_ratio=1.0, freerun_horizon=4,"
        " freerun_weight=0.0}]"
    )
    cfg = load_config(overrides=[*TINY, "run.epochs=3", stages, f"run.out={str(tmp_path)!r}"])
    run_dir = tmp_path / "tf-only"
    Trainer(cfg, run_dir).train()
    res = CliRunner().invoke(
        app, ["compare", str(run_dir / "trace.parquet"), "-m", "scheduler", "-q"]
    )
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("scheduler: "))
    assert "hardly acts" in line, res.output
    assert "stable enough" not in res.output.split("Score")[0]
    assert "adaptive train --adaptive-scheduler" not in res.output
