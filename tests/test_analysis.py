"""compare, sweep, many runs and demo: outputs exist, tables have the expected rows, the
recommended TOML starts a live run that records the recommended parameters."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from adaptive.trace import TraceWriter, read_trace
from adaptive.train.config import load_config
from cli import app
from replay import load_runs, parse_grid, recommended_toml, sweep
from replay._engine import ReplayError
from tests.test_train import TINY

runner = CliRunner()
COMPS = ["a", "b", "c"]


def synthetic(
    path: Path,
    seed: int = 0,
    steps: int = 400,
    run_id: str | None = None,
    grad: bool = True,
    schedule: bool = True,
    valfree: bool = True,
) -> Path:
    rng = np.random.default_rng(seed)
    with TraceWriter(path, components=COMPS, metrics=["YawAbsDeg"], run_id=run_id) as w:
        for s in range(steps):
            e = s // 50
            losses = {
                "a": math.exp(-s / 150) + 0.05 * rng.random(),
                "b": 3 * math.exp(-s / 600),
                "c": 0.3 + 0.02 * rng.random(),
            }
            w.log_step(
                step=s,
                epoch=e,
                losses=losses,
                loss_total=sum(losses.values()),
                grad_norm=(1.0 + 0.1 * rng.random()) if grad else None,
                schedule_base={"tf_ratio": 0.5, "freerun_horizon": 10.0, "freerun_weight": 1.0}
                if schedule
                else None,
            )
            if s % 50 == 49:
                for split, m in (("val", 10 - e), ("valfree", 10 + e))[: 2 if valfree else 1]:
                    w.log_epoch(split=split, epoch=e, step=s + 1, metrics={"YawAbsDeg": m})
    return path


def test_compare_single_trace(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "run" / "trace.parquet")
    res = runner.invoke(
        app,
        [
            "compare",
            str(trace),
            "-m",
            "dwa",
            "-m",
            "uncertainty",
            "-m",
            "scheduler",
            "-p",
            "dwa.temperature=1",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "run" / "compare"
    assert (out / "compare.png").stat().st_size > 20_000
    table = pd.read_csv(out / "stability.csv", index_col=0)
    assert list(table.columns) == ["dwa", "uncertainty", "scheduler"]
    for row in (
        "at_clamp_share_max",
        "sign_flips_per_1000",
        "settle_epoch",
        "score",
        "changes/valfree_worse",
    ):
        assert row in table.index
    assert "Replay is open loop" in (out / "recommendation.md").read_text()
    assert not list(out.glob(".*tmp*"))


def test_compare_summary_is_short_and_verdicts_follow_the_score(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "run" / "trace.parquet")
    res = runner.invoke(app, ["compare", str(trace), "-q"])
    assert res.exit_code == 0, res.output
    assert len(res.output.splitlines()) < 20  # the 50-row table went to the file
    table = pd.read_csv(tmp_path / "run" / "compare" / "stability.csv", index_col=0)
    assert len(table) > 30 and "stability.csv" in res.output
    for method in ("dwa", "uncertainty", "scheduler"):
        score = table.loc["score", method]
        line = next(x for x in res.output.splitlines() if x.startswith(f"{method}: "))
        assert f"score {score:.2f}" in line
        assert ("looks stable enough" in line) == (score < 1.0), line
        assert ("not yet" in line) == (score >= 1.0), line


def test_verdict_is_the_score_against_the_threshold() -> None:
    from replay._stability import READY_SCORE, stability_score, verdict

    rng = np.random.default_rng(3)
    for _ in range(300):
        m = {
            "epochs": 5.0,
            "at_clamp_share_max": float(rng.uniform(0, 0.6)),
            "volatility_step": float(rng.uniform(0, 0.02)),
            "sign_flips_per_1000": float(rng.uniform(0, 15)),
            "settle_epoch": float(rng.integers(0, 4)),
            "settle_fraction": float(rng.uniform(0, 0.8)),
            "mean_abs_delta": float(rng.uniform(0, 0.2)),
        }
        v = verdict("dwa", m)
        assert v.score == stability_score(m)
        assert v.ready == (v.score < READY_SCORE)
        assert 1 <= len(v.drivers) <= 2 or v.score < 0.1


def test_scheduler_without_schedule_columns_is_refused(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "run" / "trace.parquet", schedule=False, steps=100)
    res = runner.invoke(app, ["replay", str(trace), "-m", "scheduler", "-q"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "schedule" in res.output and "has none" in res.output
    res = runner.invoke(app, ["compare", str(trace), "-q"])  # the others still run
    assert res.exit_code == 0, res.output
    assert "scheduler: not replayed" in res.output and "dwa: " in res.output
    assert "scheduler" not in pd.read_csv(tmp_path / "run" / "compare" / "stability.csv").columns


def test_sweep_refuses_the_scheduler_without_schedule_columns(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "run" / "trace.parquet", schedule=False, steps=100)
    res = runner.invoke(
        app, ["sweep", str(trace), "-m", "scheduler", "-g", "adjustment_rate=0.05,0.1", "-q"]
    )
    assert res.exit_code == 2 and "has none" in res.output
    assert not (tmp_path / "run" / "sweep-scheduler").exists()


def test_scheduler_without_valfree_names_its_fallback(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "run" / "trace.parquet", valfree=False, steps=100)
    res = runner.invoke(app, ["replay", str(trace), "-m", "scheduler", "-q"])
    assert res.exit_code == 0, res.output
    assert "input: no valfree rows" in res.output
    res = runner.invoke(app, ["compare", str(trace), "-q"])
    assert res.exit_code == 0 and "input: no valfree rows" in res.output
    res = runner.invoke(
        app, ["replay", str(trace), "-m", "scheduler", "-p", "use_epoch_metrics=false", "-q"]
    )
    assert res.exit_code == 0 and "input:" not in res.output
    full = synthetic(tmp_path / "full.parquet", steps=100)
    res = runner.invoke(app, ["replay", str(full), "-m", "scheduler", "-p", "free_metric=MPJPE"])
    assert res.exit_code == 2 and "'MPJPE' is not in the trace's valfree rows" in res.output


def test_compare_many_runs_reports_per_run_and_pooled(tmp_path: Path) -> None:
    for i in range(2):
        synthetic(tmp_path / "runs" / f"r{i}" / "trace.parquet", seed=i, run_id=f"r{i}")
    res = runner.invoke(
        app, ["compare", str(tmp_path / "runs"), "-m", "dwa", "-q", "-o", str(tmp_path / "out")]
    )
    assert res.exit_code == 0, res.output
    assert "pooled over runs" in res.output
    per = [pd.read_csv(tmp_path / "out" / f"stability-r{i}.csv", index_col=0) for i in range(2)]
    pooled = pd.read_csv(tmp_path / "out" / "stability.csv", index_col=0)
    for key in ("mean_abs_delta", "volatility_step"):
        assert pooled.loc[key, "dwa"] == pytest.approx(
            (per[0].loc[key, "dwa"] + per[1].loc[key, "dwa"]) / 2
        )
    assert (tmp_path / "out" / "compare-r0.png").exists()


def test_hive_partitioned_dataset(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for i in range(2):
        t = pq.read_table(synthetic(tmp_path / f"t{i}.parquet", seed=i, steps=120))
        tables.append(t.set_column(0, "run_id", pa.array([f"h{i}"] * t.num_rows)))
    # as DuckDB / pyarrow write them: the partition column lives in the directory names only
    pq.write_to_dataset(pa.concat_tables(tables), tmp_path / "ds", partition_cols=["run_id"])
    assert not any(
        "run_id" in pq.read_schema(f).names for f in (tmp_path / "ds").rglob("*.parquet")
    )
    runs = load_runs(tmp_path / "ds")
    assert sorted(runs) == ["h0", "h1"] and all(len(t.steps) == 120 for t in runs.values())
    res = runner.invoke(
        app, ["compare", str(tmp_path / "ds"), "-m", "dwa", "-q", "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "compare-h1.png").exists()


def test_scheduler_on_trace_without_grad_norm_says_what_is_missing(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "t.parquet", grad=False, steps=60)
    res = runner.invoke(app, ["compare", str(trace), "-m", "scheduler", "-q"])
    assert res.exit_code == 2
    assert "grad_norm" in res.output and "needs" in res.output


def test_bad_method_and_params_name_the_valid_ones(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "t.parquet", steps=60)
    res = runner.invoke(app, ["compare", str(trace), "-m", "pcgrad"])
    from adaptive.weighting import available_methods

    valid = ", ".join([*available_methods(), "scheduler"])  # every registered method
    assert res.exit_code == 2 and f"valid methods: {valid}" in res.output
    assert "dwa, " in valid and "uncertainty, " in valid
    res = runner.invoke(app, ["compare", str(trace), "-m", "dwa", "-p", "dwa.temprature=1"])
    assert res.exit_code == 2 and "valid: adjustment_range, temperature" in res.output
    with pytest.raises(ReplayError, match="'temp' is not a parameter of 'dwa'"):
        parse_grid("dwa", ["temp=1,2"])
    with pytest.raises(ReplayError, match=r"update_interval: value '2\.5' is not an integer"):
        parse_grid("scheduler", ["update_interval=10,2.5"])
    with pytest.raises(ReplayError, match="--grid temperature: value 'hot' is not a number"):
        parse_grid("dwa", ["temperature=1,hot"])


def test_sweep_ranks_writes_heatmap_and_toml_that_trains(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "run" / "trace.parquet")
    res = runner.invoke(
        app,
        [
            "sweep",
            str(trace),
            "-m",
            "dwa",
            "-g",
            "temperature=0.5,2",
            "-g",
            "adjustment_range=0.1,0.2,0.3",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "run" / "sweep-dwa"
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 6 and set(table["temperature"]) == {0.5, 2.0}
    # ranked: the recommended configuration first, then the other eligible ones by effect
    assert table.iloc[0]["status"] == "recommended"
    eligible = table[table["status"].isin(["recommended", "eligible"])]
    assert eligible["net"].round(3).is_monotonic_increasing
    assert (eligible["mean_abs_delta"] >= 0.01).all()
    assert (
        eligible["net"]
        - (eligible["score"] - eligible["mean_abs_delta"] / (eligible["mean_abs_delta"] + 0.05))
    ).abs().max() < 1e-5
    assert (out / "sweep.png").stat().st_size > 10_000
    assert "Recommended dwa" in res.output
    # a synthetic (foreign) trace: the next step is a trial of the user's own trainer
    assert "next: check that the run ends better: adaptive trial --command" in res.output
    rec = tomllib.loads((out / "recommended.toml").read_text())
    assert rec["adaptive"]["loss"] == "dwa"
    assert rec["adaptive"]["dwa"]["temperature"] == table.iloc[0]["temperature"]
    # The recommended config is accepted by the trainer and recorded in the live run.
    cfg = load_config(
        out / "recommended.toml",
        [*TINY, f"run.out={str(tmp_path)!r}", "run.epochs=1", "train.steps_per_epoch=3"],
    )
    from adaptive.train.trainer import Trainer

    Trainer(cfg, tmp_path / "live").train()
    live = read_trace(tmp_path / "live" / "trace.parquet")
    run_cfg = live.run["config"]["adaptive"]
    assert run_cfg["loss"] == "dwa"
    assert run_cfg["loss_adjustment_range"] == rec["adaptive"]["loss_adjustment_range"]
    assert "scheduler_adjustment_range" not in rec["adaptive"]
    assert run_cfg["dwa"]["temperature"] == rec["adaptive"]["dwa"]["temperature"]
    assert "proposed/weight/a" not in live.steps.columns
    assert "proposed/weight/fk_pos" in live.steps.columns


def test_sweep_scheduler_toml_sections(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "t.parquet", steps=200)
    traces = load_runs(trace)
    res = sweep(
        traces,
        "scheduler",
        {"spike_z": [2.0, 3.0], "adjustment_range": [0.2, 0.5]},
        fixed={"update_interval": 20},
    )
    params = res.best if res.best is not None else {**res.grid, "update_interval": 20}
    params = {k: (v[0] if isinstance(v, list) else v) for k, v in params.items()}
    text = recommended_toml("scheduler", params)
    cfg = tomllib.loads(text)["adaptive"]
    assert cfg["scheduler"] is True and cfg["update_interval"] == 20
    assert cfg["scheduler_law"]["spike_z"] in (2.0, 3.0)
    assert cfg["scheduler_adjustment_range"] in (0.2, 0.5) and "loss_adjustment_range" not in cfg
    path = trace.parent / "rec.toml"
    path.write_text(text)
    loaded = load_config(path)
    assert loaded["adaptive"]["scheduler_adjustment_range"] == cfg["scheduler_adjustment_range"]


def test_replay_many_runs(tmp_path: Path) -> None:
    for i in range(2):
        synthetic(tmp_path / "runs" / f"r{i}" / "trace.parquet", seed=i, run_id=f"r{i}", steps=120)
    res = runner.invoke(
        app,
        ["replay", str(tmp_path / "runs"), "-m", "uncertainty", "-q", "-o", str(tmp_path / "o")],
    )
    assert res.exit_code == 0, res.output
    for i in range(2):
        assert (tmp_path / "o" / f"r{i}" / "replay-uncertainty.parquet").exists()
    assert "pooled" in res.output


def test_demo_quick(tmp_path: Path) -> None:
    res = runner.invoke(app, ["demo", "--quick", "-q", "--out", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    d = tmp_path / "demo"
    for name in (
        "compare.png",
        "stability.csv",
        "recommendation.md",
        "sweep-dwa.csv",
        "sweep-dwa.png",
        "sweep-uncertainty.csv",
        "sweep-uncertainty.png",
        "demo/trace.parquet",
    ):
        assert (d / name).exists(), name
    # The advice agrees with itself: a recommended.toml exists exactly when the text says
    # to switch something on, and it is the method the text names.
    text = (d / "recommendation.md").read_text()
    rec = d / "recommended.toml"
    if rec.exists():
        method = tomllib.loads(rec.read_text())["adaptive"]["loss"]
        assert f"Recommended: {method} (" in text
        assert "Next: check that the run ends better" in res.output
        assert f"adaptive trial -c \"adaptive.loss='{method}'" in res.output
        assert "Then, if it does, switch it on: adaptive train --config" in res.output
    else:
        assert "Nothing to switch on" in text and "Then, if it does" not in res.output
    table = pd.read_csv(d / "stability.csv", index_col=0)
    assert list(table.columns) == ["dwa", "uncertainty", "scheduler"]


@pytest.mark.parametrize(
    ("method", "grid"),
    [
        ("dwa", {"temperature": [0.5, 2.0], "adjustment_range": [0.1, 0.3]}),
        ("uncertainty", {"lr": [0.01, 0.2], "adjustment_range": [0.05, 0.3]}),
    ],
)
def test_batched_sweep_equals_one_replay_per_configuration(
    tmp_path: Path, method: str, grid: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configurations advanced together give exactly the metrics of separate replays."""
    import replay._sweep as sw
    from replay import replay as replay_one
    from replay import stability_metrics

    trace = load_runs(synthetic(tmp_path / "t.parquet", steps=300))
    tr = next(iter(trace.values()))
    monkeypatch.setattr(sw, "SWEEP_CHUNK", 3)  # also exercise chunking
    # separate replays on the torch path, as the sweep (a compiled replay kernel equals it
    # within 1e-6, not bit for bit: tests/test_kernels.py)
    monkeypatch.setenv("ADAPTIVE_REPLAY_KERNELS", "0")
    configs = sw.grid_configs(grid)
    batched = sw._config_metrics(tr, method, configs, None)
    for cfg, got in zip(configs, batched, strict=True):
        want = stability_metrics(replay_one(tr, method, **cfg))
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])), k


def test_sweep_never_recommends_an_inert_configuration(tmp_path: Path) -> None:
    """Temperature 1000 barely moves DWA's weights: it is the calmest configuration, and
    it must be reported as inert and never recommended (the old ranking picked it)."""
    traces = load_runs(synthetic(tmp_path / "t.parquet"))
    res = sweep(traces, "dwa", {"temperature": [0.5, 2.0, 1000.0]})
    t = res.table.set_index("temperature")
    assert t.loc[1000.0, "status"] == "inert" and t.loc[1000.0, "mean_abs_delta"] < 0.01
    assert t.loc[1000.0, "score"] <= t["score"].min() + 1e-9  # calmest, yet not chosen
    assert res.best is not None and res.best["temperature"] != 1000.0
    # 0.5 moves the weights more but less calmly: the trade-off picks 2
    assert t.loc[0.5, "mean_abs_delta"] > t.loc[2.0, "mean_abs_delta"]
    assert t.loc[0.5, "net"] > t.loc[2.0, "net"]
    assert res.best["temperature"] == 2.0 and not res.notes
    # a pick on the edge of the grid is flagged: the best value may lie beyond it
    res = sweep(traces, "dwa", {"temperature": [2.0, 1000.0]})
    assert res.best is not None and res.best["temperature"] == 2.0
    assert any("temperature=2 is the smallest value" in n for n in res.notes)
    assert "widen the grid" in res.verdict


def test_sweep_with_only_inert_configurations_recommends_nothing(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "run" / "trace.parquet")
    res = runner.invoke(app, ["sweep", str(trace), "-m", "dwa", "-g", "temperature=500,1000", "-q"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "run" / "sweep-dwa"
    assert not (out / "recommended.toml").exists()
    assert "No dwa configuration is worth switching on" in res.output
    assert "check that the run ends better" not in res.output
    assert set(pd.read_csv(out / "sweep.csv")["status"]) == {"inert"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 0.2), st.floats(0.0, 4.0), st.booleans()
        ),  # effect, score, unstable
        min_size=1,
        max_size=12,
    )
)
def test_rank_never_puts_an_inert_or_unstable_configuration_first(
    rows: list[tuple[float, float, bool]],
) -> None:
    from replay._sweep import rank

    table = pd.DataFrame(
        {
            "mean_abs_delta": [r[0] for r in rows],
            "score": [r[1] for r in rows],
            "problems": ["jittery" if r[2] else "" for r in rows],
        }
    )
    ranked = rank(table)
    eligible = [round(s - e / (e + 0.05), 3) for e, s, bad in rows if not bad and e >= 0.01]
    first = ranked.iloc[0]
    if eligible:
        assert first["status"] == "recommended"
        assert round(first["net"], 3) == min(eligible)
        assert first["problems"] == "" and first["mean_abs_delta"] >= 0.01
    else:
        assert "recommended" not in set(ranked["status"])
    # the Pareto flag: no other row has both a larger effect and a lower score
    for _, row in ranked[ranked["pareto"]].iterrows():
        better = ranked[
            (ranked["mean_abs_delta"] > row["mean_abs_delta"])
            & (ranked["score"].round(3) < round(row["score"], 3))
        ]
        assert better.empty


def test_scheduler_signal_panels_follow_the_columns_present() -> None:
    from replay._plots import signal_panels

    cols = ["step", "delta", "signal/grad_z", "signal/free_trend", "signal/loss_z"]
    panels = signal_panels(cols)
    # the grad-norm z-score and the trends never share an axis; a missing column is skipped;
    # a signal the list does not know (e.g. a future robust z-score) gets its own panel
    assert list(panels) == ["gradient norm", "trend", "loss z"]
    assert [c for c, _ in panels["trend"]] == ["signal/free_trend"]
    assert signal_panels(["step", "delta"]) == {}
