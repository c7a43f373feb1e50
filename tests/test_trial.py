"""Outcome trials: statistics on fixed numbers, a tiny trial end to end, resume, finished runs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from replay import TrialError, compare_runs, paired_stats, read_trial, trial
from replay._trial import parse_candidate, t_quantile
from tests.test_train import TINY

runner = CliRunner()
SMALL = [*TINY, "run.epochs=2", "train.steps_per_epoch=6"]


# ----------------------------------------------------------------------------- statistics
def test_paired_stats_hand_computed() -> None:
    # d = [-1, -1.2, -0.8]: mean -1, sd 0.2, half width t(2) * 0.2 / sqrt(3)
    st = paired_stats([9.0, 8.8, 9.2], [10.0, 10.0, 10.0])
    half = 4.303 * 0.2 / math.sqrt(3)
    assert st["n"] == 3 and st["diff"] == pytest.approx(-1.0)
    assert st["ci_low"] == pytest.approx(-1.0 - half) and st["ci_high"] == pytest.approx(
        -1.0 + half
    )
    assert st["rel_diff"] == pytest.approx(-0.1) and st["verdict"] == "better"
    # d = [-1, 0, 1]: mean 0, sd 1 -> the interval holds 0
    st = paired_stats([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert st["diff"] == 0.0 and st["ci_high"] == pytest.approx(4.303 / math.sqrt(3))
    assert st["verdict"] == "no clear difference"
    st = paired_stats([3.0, 3.1], [2.0, 2.0])  # d = [1, 1.1]: t(1) = 12.706
    assert st["ci_low"] == pytest.approx(1.05 - 12.706 * math.sqrt(0.005) / math.sqrt(2))
    assert st["verdict"] == "worse"
    # one pair: no interval, no verdict either way; pairs NaN on both sides are dropped
    st = paired_stats([1.0, math.nan], [2.0, math.nan])
    assert st["n"] == 1 and math.isnan(st["ci_low"]) and st["verdict"] == "no clear difference"
    # identical arms: zero difference
    st = paired_stats([5.0, 6.0, 7.0], [5.0, 6.0, 7.0])
    assert st["diff"] == 0.0 and st["verdict"] == "no clear difference"
    assert t_quantile(1) == 12.706 and t_quantile(100) == pytest.approx(1.984, abs=0.001)
    with pytest.raises(TrialError):
        paired_stats([1.0], [1.0, 2.0])


def test_parse_candidate(tmp_path: Path) -> None:
    assert parse_candidate("adaptive.loss='dwa'; adaptive.scheduler=true") == (
        "dwa+scheduler",
        ["adaptive.loss='dwa'", "adaptive.scheduler=true"],
        None,
    )
    assert parse_candidate("t1: adaptive.dwa.temperature=1")[0] == "t1"
    rec = tmp_path / "recommended.toml"
    rec.write_text("[adaptive]\nloss = 'uncertainty'\n")
    assert parse_candidate(str(rec)) == ("uncertainty", [], rec)
    with pytest.raises(TrialError, match="not found"):
        parse_candidate(str(tmp_path / "nope.toml"))
    with pytest.raises(TrialError, match=r"section\.key=value"):
        parse_candidate("adaptive.loss")


# ----------------------------------------------------------------------------- end to end
def _mtimes(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("trace.parquet")}


def test_tiny_trial_end_to_end_identical_candidate_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "trial"
    messages: list[str] = []
    res = trial(
        out,
        ["same: adaptive.loss='none'", "adaptive.loss='dwa'; adaptive.loss_adjustment_range=0.5"],
        seeds=2,
        sets=SMALL,
        progress=messages.append,
    )
    for name in ("trial.md", "trial.csv", "runs.csv", "trial.png"):
        assert (out / name).exists(), name
    assert (out / "trial.png").stat().st_size > 10_000
    assert len(res.runs) == 6 and set(res.runs["arm"]) == {"baseline", "same", "dwa"}
    f = res.frame
    assert set(f["candidate"]) == {"same", "dwa"}
    assert {"MPJPE", "YawAbsDeg", "RootDrift", "loss"} <= set(f["metric"])
    # a candidate identical to the baseline trains identically: zero difference
    same = f[f["candidate"] == "same"]
    assert (same["diff"] == 0.0).all() and (same["verdict"] == "no clear difference").all()
    assert "same: valfree MPJPE" in res.summary()
    # the table reads without the code: verdict words and per-seed values are in it
    md = (out / "trial.md").read_text()
    assert "paired t" in md and "**no clear difference**" in md and "s0:" in md
    assert sum("training" in m for m in messages) == 6

    # Running again reuses every finished run: nothing is retrained.
    before = _mtimes(out)
    messages.clear()
    trial(
        out,
        ["same: adaptive.loss='none'", "adaptive.loss='dwa'; adaptive.loss_adjustment_range=0.5"],
        seeds=2,
        sets=SMALL,
        progress=messages.append,
    )
    assert _mtimes(out) == before
    assert messages == ["6 of 6 runs already finished: reused"]

    # An interrupted run (checkpoint, no completion mark) resumes; the others stay.
    (out / "dwa" / "seed1" / "trial-done.json").unlink()
    messages.clear()
    trial(
        out,
        ["same: adaptive.loss='none'", "adaptive.loss='dwa'; adaptive.loss_adjustment_range=0.5"],
        seeds=2,
        sets=SMALL,
        progress=messages.append,
    )
    trained = [m for m in messages if "training" in m]
    assert len(trained) == 1 and "dwa/seed1" in trained[0] and "(resume)" in trained[0]
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if "dwa/seed1" not in k} == {
        k: v for k, v in before.items() if "dwa/seed1" not in k
    }
    # a finished trial folder reads back (notebook) with the same statistics
    again = read_trial(out)
    cols = ["candidate", "split", "metric", "stat", "diff", "verdict"]
    same_rows = again.frame[cols].sort_values(cols[:4]).reset_index(drop=True)
    fresh = (
        trial(
            out,
            [
                "same: adaptive.loss='none'",
                "adaptive.loss='dwa'; adaptive.loss_adjustment_range=0.5",
            ],
            seeds=2,
            sets=SMALL,
        )
        .frame[cols]
        .sort_values(cols[:4])
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(same_rows, fresh)
    with pytest.raises(TrialError, match="not a trial folder"):
        read_trial(tmp_path)


def test_compare_finished_runs_pairs_by_seed(tmp_path: Path) -> None:
    from adaptive.train.config import load_config
    from adaptive.train.trainer import Trainer

    dirs = []
    for name, seed, extra in (
        ("base0", 0, []),
        ("base1", 1, []),
        ("dwa0", 0, ["adaptive.loss='dwa'"]),
        ("dwa2", 2, ["adaptive.loss='dwa'"]),
    ):
        cfg = load_config(overrides=[*SMALL, f"run.seed={seed}", *extra])
        Trainer(cfg, tmp_path / name).train()
        dirs.append(tmp_path / name)
    res = compare_runs(dirs, out=tmp_path / "cmp")
    assert set(res.frame["candidate"]) == {"dwa"}
    assert set(res.frame["seeds"]) == {"0"}
    assert any("seed(s) [1, 2] have no partner" in n for n in res.notes)
    assert (tmp_path / "cmp" / "trial.md").exists()
    # the CLI: the same comparison, and its one-line errors
    r = runner.invoke(
        app, ["trial", "--runs", str(dirs[0]), "--runs", str(dirs[2]), "-o", str(tmp_path / "c2")]
    )
    assert r.exit_code == 0, r.output
    assert "dwa: valfree MPJPE" in r.output and "paired t" in r.output
    r = runner.invoke(app, ["trial", "--runs", str(dirs[2])])
    assert r.exit_code == 2 and "no 'off' runs" in r.output
    r = runner.invoke(app, ["trial", "--runs", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no trace.parquet" in r.output
    r = runner.invoke(app, ["trial"])
    assert r.exit_code == 2 and "--candidate" in r.output
    r = runner.invoke(app, ["trial", "-c", "adaptive.los='dwa'", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "did you mean 'adaptive.loss'" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_runs_table_lists_final_and_best(tmp_path: Path) -> None:
    res = trial(tmp_path / "t", ["adaptive.loss='dwa'"], seeds=1, sets=SMALL)
    runs = pd.read_csv(tmp_path / "t" / "runs.csv")
    for col in ("valfree/MPJPE/final", "valfree/MPJPE/best", "val/loss/final"):
        assert col in runs.columns
    assert (runs["valfree/MPJPE/best"] <= runs["valfree/MPJPE/final"]).all()
    # one seed: an honest "no interval"
    assert "one pair: no interval" in res.summary()
    assert os.path.isdir(tmp_path / "t" / "baseline" / "seed0")


def test_diverged_runs_count_against_their_side_and_are_noted() -> None:
    from replay._trial import trial_table

    def run(vals: list[float]) -> pd.DataFrame:
        rows = [{"split": "valfree", "epoch": e, "step": e, "MPJPE": v} for e, v in enumerate(vals)]
        return pd.DataFrame(rows)

    base = {s: run([20.0, 10.0 + s]) for s in range(3)}
    # seed 2 of the candidate ends in NaN: its "final" is that NaN, not the epoch before
    cand = {0: run([20.0, 5.0]), 1: run([20.0, 5.5]), 2: run([5.0, math.nan])}
    frame, notes = trial_table({"baseline": base, "c": cand})
    final = frame[(frame["metric"] == "MPJPE") & (frame["stat"] == "final")].iloc[0]
    assert final["verdict"] == "worse" and final["diverged"] == 1 and final["n"] == 2
    assert "nan" in final["per_seed"]
    assert any("not finite for seed(s) [2] of the candidate" in n for n in notes)
    best = frame[(frame["metric"] == "MPJPE") & (frame["stat"] == "best")].iloc[0]
    assert best["n"] == 3 and best["diverged"] == 0  # its best epoch was finite
    # inf counts the same way; a baseline that diverged does not make the candidate better
    cand[2] = run([20.0, math.inf])
    frame, _ = trial_table({"baseline": base, "c": cand})
    assert frame.iloc[0]["verdict"] == "worse"
    st = paired_stats([1.0, 2.0, 3.0], [2.0, 3.0, math.inf])
    assert st["baseline_diverged"] == 1 and st["n"] == 2


def test_a_folder_of_other_runs_is_never_reused(tmp_path: Path) -> None:
    out = tmp_path / "t"
    trial(out, ["adaptive.loss='dwa'"], seeds=1, sets=SMALL)
    with pytest.raises(TrialError, match="trained with a different config"):
        trial(out, ["adaptive.loss='dwa'; adaptive.dwa.temperature=8"], seeds=1, sets=SMALL)
    with pytest.raises(TrialError, match="different config"):
        trial(out, ["adaptive.loss='dwa'"], seeds=1, sets=[*SMALL, "train.lr=0.01"])
    # nothing to compare is a one-line error, not a traceback
    r = runner.invoke(app, ["trial", "--runs", str(out / "baseline" / "seed0")])
    assert r.exit_code == 2 and "nothing to compare" in r.output
    r = runner.invoke(
        app,
        [
            *("trial", "-c", "adaptive.loss='dwa'", "--set", "data.source='bvh'"),
            *("-o", str(tmp_path / "bvh")),
        ],
    )
    assert r.exit_code == 2 and "data.path" in r.output and "Traceback" not in r.output


def test_t_quantile_beyond_the_table() -> None:
    assert t_quantile(31) == pytest.approx(2.040, abs=0.005)
    assert t_quantile(60) == pytest.approx(2.000, abs=0.003)
    assert t_quantile(10_000) == pytest.approx(1.960, abs=0.001)
