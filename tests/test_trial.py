"""Outcome trials: the statistics against known values, the analysis rules (divergence,
optimistic best, Holm, headline), the figure by its content, and tiny reference trials end
to end (process pool, reuse, resume, refusals, --runs pairing, CLI one-line errors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from adaptive.trial import (
    DEFAULT_METRIC,
    CommandTarget,
    Metric,
    ReferenceTarget,
    TrialError,
    analyse,
    compare_runs,
    holm,
    mde,
    paired_t,
    parse_reduce,
    pilot_sd,
    power,
    read_trial,
    reduce_series,
    run_trial,
    seeds_needed,
    sign_flip_p,
    t_cdf,
    t_ppf,
    trial_figure,
)
from adaptive.trial._report import pct, verdict_text
from cli import app
from tests.test_train import TINY

runner = CliRunner()
SMALL = [*TINY, "run.epochs=3", "train.steps_per_epoch=6"]
UNC = "adaptive.loss='uncertainty'"


# ----------------------------------------------------------------------------- statistics
def test_student_t_against_r_values() -> None:
    # R: qt(0.975, c(1, 2, 5, 30, 100)); qt(0.8, 9); pt(2, 5)
    for dof, q in (
        (1, 12.7062047),
        (2, 4.3026527),
        (5, 2.5705818),
        (30, 2.0422725),
        (100, 1.9839715),
    ):
        assert t_ppf(0.975, dof) == pytest.approx(q, abs=1e-6)
    assert t_ppf(0.8, 9) == pytest.approx(0.8834039, abs=1e-6)
    assert t_ppf(0.025, 5) == pytest.approx(-2.5705818, abs=1e-6)
    assert t_cdf(2.0, 5) == pytest.approx(0.9490303, abs=1e-6)


def test_power_mde_and_seeds_needed() -> None:
    # two-sided paired t power from scipy.stats.nct (typed in): sf(c, n-1, d sqrt n) + cdf(-c, ...)
    assert power(1.0, 1.0, 10) == pytest.approx(0.8030969, abs=1e-6)
    assert power(0.5, 1.0, 34) == pytest.approx(0.8077775, abs=1e-6)
    assert power(2.0, 1.0, 4) == pytest.approx(0.7549839, abs=1e-6)
    assert power(2.0, 4.0, 10) == pytest.approx(power(0.5, 1.0, 10))  # only effect / sd matters
    # the MDE is where the power reaches 80 %; larger n, smaller MDE, proportional to sd
    m = mde(1.0, 8)
    assert power(m, 1.0, 8) == pytest.approx(0.80, abs=1e-4)
    assert mde(1.0, 5) > mde(1.0, 10) > mde(1.0, 20)
    assert mde(3.0, 10) == pytest.approx(3 * mde(1.0, 10), rel=1e-4)
    assert math.isnan(mde(1.0, 1))
    # the figures: sd 10 % -> 34 seeds for a 5 % effect, sd 5 % -> 10, sd 3 % -> 6
    assert [seeds_needed(sd, 5.0) for sd in (10.0, 5.0, 3.0)] == [34, 10, 6]
    assert mde(10.0, 34) <= 5.0 < mde(10.0, 33)


def test_mde_has_its_power_in_a_simulation() -> None:
    """Paired t tests on simulated differences with mean = MDE reject ~80 % of the time."""
    rng = np.random.default_rng(7)
    n, sd = 6, 2.0
    d = rng.normal(mde(sd, n), sd, size=(20_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    assert np.mean(np.abs(t) > t_ppf(0.975, n - 1)) == pytest.approx(0.80, abs=0.012)
    d0 = rng.normal(0.0, sd, size=(20_000, n))  # and ~5 % under no effect
    t0 = d0.mean(1) / (d0.std(1, ddof=1) / math.sqrt(n))
    assert np.mean(np.abs(t0) > t_ppf(0.975, n - 1)) == pytest.approx(0.05, abs=0.006)


def test_paired_t_hand_computed() -> None:
    # d = [-1, -1.2, -0.8]: mean -1, sd 0.2, half width t(2) * 0.2 / sqrt(3)
    st = paired_t([-1.0, -1.2, -0.8])
    half = 4.3026527 * 0.2 / math.sqrt(3)
    assert st["mean"] == pytest.approx(-1.0) and st["sd"] == pytest.approx(0.2)
    assert st["low"] == pytest.approx(-1.0 - half, abs=1e-6)
    assert st["high"] == pytest.approx(-1.0 + half, abs=1e-6)
    # t = -1 / (0.2 / sqrt 3) = -8.66 on 2 dof: R 2 * pt(-8.660254, 2) = 0.01307
    assert st["p"] == pytest.approx(0.013072, abs=1e-5)
    one = paired_t([2.0])
    assert one["n"] == 1 and math.isnan(one["low"]) and math.isnan(one["p"])


def test_sign_flip_exact_and_monte_carlo() -> None:
    assert sign_flip_p([1.0, 2.0, 3.0, 4.0, 5.0]) == 2 / 32  # only all + and all - reach it
    assert sign_flip_p([1.0, -1.0, 2.0]) == 6 / 8
    assert sign_flip_p([0.0, 0.0]) == 1.0
    big = [1.0 + 0.1 * i for i in range(20)]  # Monte Carlo: fixed seed, so repeatable
    p = sign_flip_p(big)
    assert p == sign_flip_p(big) and 1 / 2**16 <= p < 1e-3
    mixed = [(-1.0) ** i * (1 + 0.01 * i) for i in range(20)]
    assert sign_flip_p(mixed) > 0.5


def test_holm_against_r() -> None:
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm")
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, math.nan, 0.01])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_reductions() -> None:
    v = np.array([9.0, 5.0, 4.0, 3.0])
    assert reduce_series(v, 1) == 3.0 and reduce_series(v, 2) == 3.5
    assert reduce_series(v, 10) == pytest.approx(5.25)  # fewer evaluations than K: all of them
    assert math.isnan(reduce_series(np.array([1.0, math.nan, 2.0]), 2))  # diverged in the tail
    assert reduce_series(np.array([math.nan, 1.0, 2.0]), 2) == 1.5  # earlier NaN: recovered
    assert parse_reduce("final") == 1 and parse_reduce("last5") == 5
    with pytest.raises(TrialError, match="lastK"):
        parse_reduce("best")


# ----------------------------------------------------------------------------- analysis
M = Metric("valfree", "MPJPE")
S = Metric("val", "loss")


def _arms(base: list[list[float]], cand: list[list[float]], sec=None) -> dict:
    def runs(vals, sec_vals):
        return {
            s: {M.key: np.array(v), S.key: np.array(sec_vals[s] if sec_vals else v)}
            for s, v in enumerate(vals)
        }

    return {
        "baseline": runs(base, sec[0] if sec else None),
        "c": runs(cand, sec[1] if sec else None),
    }


def _row(frame: pd.DataFrame, role: str, cand: str = "c") -> pd.Series:
    return frame[(frame["role"] == role) & (frame["candidate"] == cand)].iloc[0]


def test_divergence_counts_on_both_sides() -> None:
    base = [[20.0, 10.0 + s] for s in range(5)]
    cand = [[20.0, 9.0 + s] for s in range(5)]
    cand[1] = [20.0, math.nan]  # only the candidate diverged on seed 1
    frame, _ = analyse(_arms(base, cand), M, 1)
    r = _row(frame, "primary")
    assert (r["diverged_candidate"], r["diverged_baseline"], r["diverged_both"]) == (1, 0, 0)
    # one diverged seed is no evidence (exact sign test p = 1): the 4 pairs decide, the count
    # is named beside the verdict
    assert r["verdict"] == "better" and r["n"] == 4
    assert "diverged on 1 candidate seed(s) and 0 baseline seed(s)" in r["note"]
    assert "not decisive" in r["note"] and "(diverged)" not in verdict_text(r)
    # the mirror image: only the baseline diverged; the pairs say the candidate is worse
    frame, _ = analyse(_arms(cand, base), M, 1)
    r = _row(frame, "primary")
    assert (r["diverged_candidate"], r["diverged_baseline"]) == (0, 1)
    assert r["verdict"] == "worse" and "not decisive" in r["note"]
    # both diverged on seed 1: a tie, counted; the interval over the other 4 decides
    base[1] = [20.0, math.inf]
    frame, _ = analyse(_arms(base, cand), M, 1)
    r = _row(frame, "primary")
    assert (r["diverged_candidate"], r["diverged_baseline"], r["diverged_both"]) == (0, 0, 1)
    assert r["n"] == 4 and r["verdict"] == "better"  # d = -1 on every finite seed
    assert "s1: inf → nan" in r["per_seed"]


def test_best_is_optimistic_secondary_is_holm_and_headline_names_every_verdict() -> None:
    base = [[10.0, 12.0 + 0.1 * s] for s in range(6)]
    cand = [[5.0, 12.0 + 0.1 * s + 0.3 * (-1) ** s] for s in range(6)]  # primary: noise
    sec = ([[1.0] for _ in range(6)], [[1.5 + 0.01 * s] for s in range(6)])  # clearly worse
    frame, _ = analyse(_arms(base, cand, sec), M, 1, [S])
    best = _row(frame, "optimistic")
    assert best["verdict"] == "optimistic: no verdict" and best["diff"] == pytest.approx(-5.0)
    prim = _row(frame, "primary")
    assert prim["verdict"] == "no clear difference"
    assert prim["mde_rel"] == pytest.approx(mde(prim["sd_diff"], 6) / prim["mean_baseline"])
    sec_row = _row(frame, "secondary")
    assert sec_row["verdict"] == "worse" and sec_row["p_adj"] < 0.05
    from adaptive.trial import TrialResult

    res = TrialResult(frame, pd.DataFrame(), pd.DataFrame(), design={"reduce_k": 1})
    head = res.headline()
    assert "c worse on val/loss (secondary, Bonferroni)" in head
    assert "better" not in head  # the optimistic best epoch gets no verdict
    line = res.summary().splitlines()[0]
    assert "n = 6" in line and "80% power to detect" in line and "no difference larger" not in line
    lo, hi = pct(prim["rel_ci_low"], sign=True), pct(prim["rel_ci_high"], sign=True)
    assert f"no clear difference (95 % CI {lo} to {hi})" in line
    assert "lower on 3, higher on 3 of 6" in line


def test_sign_flip_disagreement_is_named() -> None:
    # n = 4 all the same sign: the t interval excludes 0 but no sign pattern test can reach
    # p < 0.05 with 16 patterns (2/16 = 0.125)
    base = [[10.0] for _ in range(4)]
    cand = [[9.0 + 0.01 * s] for s in range(4)]
    frame, _ = analyse(_arms(base, cand), M, 1)
    r = _row(frame, "primary")
    assert r["verdict"] == "better"
    assert (
        "sign-flip test cannot confirm it at n = 4 (p = 0.125; its smallest possible p is 0.125)"
        in r["note"]
    )


def test_figure_shows_paired_differences_with_the_verdicts_interval() -> None:
    base = [[10.0, 10.0 + s] for s in range(4)]
    cand = [[10.0, 9.0 + s + 0.1 * s] for s in range(4)]
    frame, _ = analyse(_arms(base, cand), M, 2)
    runs = pd.DataFrame(
        [
            {"arm": "baseline", "seed": s, "primary": reduce_series(np.array(v), 2)}
            for s, v in enumerate(base)
        ]
        + [
            {"arm": "c", "seed": s, "primary": reduce_series(np.array(v), 2)}
            for s, v in enumerate(cand)
        ]
    )
    from adaptive.trial import TrialResult

    res = TrialResult(frame, runs, pd.DataFrame(), design={"reduce_k": 2})
    fig = trial_figure(res)
    (ax,) = fig.axes
    r = _row(frame, "primary")
    assert ax.get_title() == f"c: {r['verdict']}"
    assert ax.get_xlabel() == "seed" and "% of baseline" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "no difference",
        "per seed (candidate − baseline)",
        "95 % CI of the mean (paired t)",
        "mean difference",
    ]
    pts = next(li for li in ax.get_lines() if li.get_label().startswith("per seed"))
    b = np.array([reduce_series(np.array(v), 2) for v in base])
    c = np.array([reduce_series(np.array(v), 2) for v in cand])
    np.testing.assert_allclose(pts.get_ydata(), (c - b) / b.mean() * 100)
    band = next(p for p in ax.patches if p.get_label().startswith("95 %"))
    ys = band.get_patch_transform().transform(band.get_path().vertices)[:, 1]
    scale = r["mean_baseline"] / 100
    assert min(ys) == pytest.approx(r["ci_low"] / scale)
    assert max(ys) == pytest.approx(r["ci_high"] / scale)
    mean_line = next(li for li in ax.get_lines() if li.get_label() == "mean difference")
    assert mean_line.get_ydata()[0] == pytest.approx(r["diff"] / scale)
    assert "mean of the last 2 evaluations" in fig.get_suptitle()
    import matplotlib.pyplot as plt

    plt.close(fig)


# ----------------------------------------------------------------------------- end to end
def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("trace.parquet")}


def test_tiny_trial_on_two_processes_reuse_resume_and_refusals(tmp_path: Path) -> None:
    out = tmp_path / "trial"
    msgs: list[str] = []
    kw = {"seeds": 2, "sets": SMALL, "reduce": "last2", "placebo": True}
    res = run_trial(out, [UNC], jobs=2, progress=msgs.append, **kw)
    for name in ("trial.md", "trial.csv", "runs.csv", "trial.png", "trial-design.json"):
        assert (out / name).exists(), name
    assert set(res.runs["arm"]) == {"baseline", "uncertainty", "placebo"} and len(res.runs) == 6
    prim = res.rows("primary").set_index("candidate")
    assert list(prim.index) == ["uncertainty", "placebo"]
    assert (prim["metric"] == DEFAULT_METRIC).all() and (prim["n"] == 2).all()
    assert prim.loc["placebo", "verdict"] == "no clear difference"
    # the placebo trains with lr × (1 + 1e-5): a different run, not a copy of the baseline
    base_cfg = json.loads((out / "trial-design.json").read_text())["arms"]
    assert base_cfg["placebo"] != base_cfg["baseline"]
    md = (out / "trial.md").read_text()
    assert "sign-flip" in md and "MDE" in md and "optimistic: no verdict" in md
    assert "mean of the last 2 evaluations" in md
    assert sum(m.startswith("queued") for m in msgs) == 6

    # the same trial again: nothing retrained, and it says why
    before = _mtimes(out)
    msgs.clear()
    again = run_trial(out, [UNC], progress=msgs.append, **kw)
    assert _mtimes(out) == before
    assert any("holds this trial already" in m for m in msgs)
    assert "6 of 6 runs already finished: reused" in msgs
    pd.testing.assert_frame_equal(again.frame, res.frame)

    # an interrupted run (checkpoint, no completion mark) resumes; the others stay
    (out / "uncertainty" / "seed1" / "trial-done.json").unlink()
    msgs.clear()
    run_trial(out, [UNC], progress=msgs.append, **kw)
    trained = [m for m in msgs if "training" in m]
    assert len(trained) == 1 and "uncertainty/seed1" in trained[0] and "(resume)" in trained[0]

    # read back (the notebook): the same statistics
    back = read_trial(out)
    pd.testing.assert_frame_equal(back.frame, res.frame)

    # another design into the same folder is refused; the report is not replaced
    md_before = (out / "trial.md").read_text()
    with pytest.raises(TrialError, match="holds another trial"):
        run_trial(out, [UNC], **{**kw, "reduce": "final"})
    with pytest.raises(TrialError, match="holds another trial"):
        run_trial(out, ["adaptive.loss='dwa'"], **kw)
    assert (out / "trial.md").read_text() == md_before


def test_refusals_before_training(tmp_path: Path) -> None:
    out = tmp_path / "t"
    # a candidate equal to the baseline once resolved (DWA's temperature with DWA off)
    with pytest.raises(TrialError, match="same configuration as the baseline"):
        run_trial(out, ["adaptive.dwa.temperature=1"], sets=SMALL)
    with pytest.raises(TrialError, match="same configuration as candidate"):
        run_trial(out, [UNC, f"u2: {UNC}"], sets=SMALL)
    with pytest.raises(TrialError, match=r"run\.seed"):
        run_trial(out, [UNC], sets=[*SMALL, "run.seed=3"])
    with pytest.raises(TrialError, match=r"run\.seed"):
        run_trial(out, [f"{UNC}; run.seed=1"], sets=SMALL)
    with pytest.raises(TrialError, match="valfree/FOO"):
        run_trial(out, [UNC], sets=SMALL, metric="valfree/FOO")
    with pytest.raises(TrialError, match="max-seeds"):
        run_trial(out, [UNC], sets=SMALL, target_mde=0.05)
    assert not out.exists()  # nothing was trained or written
    with pytest.raises(TrialError, match="run_dir"):
        CommandTarget("python train.py --seed {seed}")
    with pytest.raises(TrialError, match="placebo-override"):
        CommandTarget("t {seed} {run_dir} {overrides}").placebo(None)
    # the user's run.threads is kept: the trial does not override it
    t = ReferenceTarget(sets=(*SMALL, "run.threads=2"))
    assert t.config_of(t.baseline(), 5)["run"]["threads"] == 2
    assert t.config_of(t.baseline(), 5)["run"]["seed"] == 5


def test_config_with_toml_candidate(tmp_path: Path) -> None:
    base = tmp_path / "base.toml"
    base.write_text("[train]\nlr = 0.002\n")
    rec = tmp_path / "recommended.toml"
    rec.write_text("[adaptive]\nloss = 'uncertainty'\n")
    t = ReferenceTarget(config=base, sets=tuple(SMALL))
    arm = t.candidate(str(rec))
    cfg = t.config_of(arm)
    assert arm.name == "uncertainty" and arm.path == rec
    assert cfg["train"]["lr"] == 0.002 and cfg["adaptive"]["loss"] == "uncertainty"
    bad = tmp_path / "seeded.toml"
    bad.write_text("[run]\nseed = 4\n")
    with pytest.raises(TrialError, match=r"run\.seed"):
        ReferenceTarget(config=bad)


def test_runs_pair_by_configuration(tmp_path: Path) -> None:
    from adaptive.train.config import load_config
    from adaptive.train.trainer import Trainer

    dirs = {}
    for name, seed, extra in (
        ("base0", 0, []),
        ("base1", 1, []),
        ("t1s0", 0, ["adaptive.loss='dwa'", "adaptive.dwa.temperature=1"]),
        ("t1s1", 1, ["adaptive.loss='dwa'", "adaptive.dwa.temperature=1"]),
        ("t4s0", 0, ["adaptive.loss='dwa'", "adaptive.dwa.temperature=4"]),
        ("lr0", 0, ["train.lr=0.0005"]),
    ):
        cfg = load_config(overrides=[*SMALL, f"run.seed={seed}", *extra])
        Trainer(cfg, tmp_path / name).train()
        dirs[name] = tmp_path / name
    # two DWA temperatures are two arms, named by what tells them apart
    res = compare_runs(
        [dirs[k] for k in ("base0", "base1", "t1s0", "t1s1", "t4s0")], reduce="final"
    )
    cands = set(res.rows("primary")["candidate"])
    assert cands == {"dwa (adaptive.dwa.temperature=1.0)", "dwa (adaptive.dwa.temperature=4.0)"}
    assert any("seed(s) [1] have no partner" in n for n in res.notes)
    # two baseline configurations: refused, named
    with pytest.raises(TrialError, match=r"several 'off' configurations.*train\.lr"):
        compare_runs([dirs["base0"], dirs["lr0"], dirs["t1s0"]])
    # the docs' example parses: --runs then the folders
    r = runner.invoke(
        app,
        [
            "trial",
            "--runs",
            str(dirs["base0"]),
            str(dirs["t1s0"]),
            "--reduce",
            "final",
            "-o",
            str(tmp_path / "c"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"dwa: {DEFAULT_METRIC} (final)" in r.output and "n = 1" in r.output
    # a second, different comparison into the same folder is refused
    r = runner.invoke(
        app, ["trial", "--runs", str(dirs["base0"]), str(dirs["t4s0"]), "-o", str(tmp_path / "c")]
    )
    assert r.exit_code == 2 and "holds another trial" in r.output
    r = runner.invoke(app, ["trial", "--runs", str(dirs["t1s0"])])
    assert r.exit_code == 2 and "no 'off' runs" in r.output


def test_cli_one_line_errors(tmp_path: Path) -> None:
    cases = [
        (["trial"], "--candidate"),
        (
            ["trial", "-c", UNC, "--metric", "valfree/NOPE", "-o", str(tmp_path / "a")],
            "valfree/NOPE",
        ),
        (["trial", "--command", "python t.py --seed {seed}", "-c", "x"], "{run_dir}"),
        (
            ["trial", "--command", "python t.py {seed} {run_dir} {overrides}", "--placebo"],
            "placebo-override",
        ),
        (
            ["trial", "-c", "adaptive.dwa.temperature=1", "-o", str(tmp_path / "b")],
            "same configuration",
        ),
        (
            ["trial", "-c", "adaptive.los='dwa'", "-o", str(tmp_path / "c")],
            "did you mean 'adaptive.loss'",
        ),
        (
            [
                "trial",
                "-c",
                UNC,
                "--engine",
                "ray",
                "--address",
                "127.0.0.1:9",
                "-o",
                str(tmp_path / "d"),
            ],
            "127.0.0.1:9",
        ),
        (["trial", "-c", UNC, "--target-mde", "5%", "-o", str(tmp_path / "e")], "max-seeds"),
        (["trial", "-c", UNC, "--engine", "dask"], "pool or ray"),
    ]
    for args, needle in cases:
        if "ray" in args and needle.startswith("127"):
            pytest.importorskip("ray")
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert needle in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)
        assert "Traceback" not in r.output
    assert not (tmp_path / "d").exists()  # the unreachable address: nothing written


# ----------------------------------------------------------------------------- sequential
def toy_train(overrides: str, seed: int, run_dir: Path) -> None:
    """A trainer without training: val/m = 100 + seed noise (+ shift + pair noise)."""
    import random

    from adaptive import TraceRecorder

    shift = float(overrides or 0.0)
    v = 100.0 + random.Random(seed).gauss(0.0, 3.0)
    if overrides:
        v += shift + random.Random(1000 + seed).gauss(0.0, 2.0)
    with TraceRecorder(run_dir / "trace.parquet", components=["a"]) as rec:
        rec.log_step(losses={"a": 1.0})
        rec.log_epoch(split="val", metrics={"m": v})
        rec.end_epoch()


def test_pilot_then_fixed_batch(tmp_path: Path) -> None:
    from adaptive.trial import FunctionTarget

    msgs: list[str] = []
    kw = {"target": FunctionTarget(toy_train), "metric": "val/m", "reduce": "final"}
    res = run_trial(
        tmp_path / "s",
        ["c: 1.0"],
        seeds=3,
        target_mde=0.03,
        max_seeds=9,
        progress=msgs.append,
        **kw,
    )
    seq = res.design["sequential"]
    assert "internal pilot" in seq and "adjusted one-sample variance" in seq
    assert "analysed once" in seq
    # the planning sd: the pilot's second moment less the planned effect squared
    runs = res.runs.pivot(index="seed", columns="arm", values="primary")
    d = (runs["c"] - runs["baseline"]).loc[[0, 1, 2]].to_numpy()
    effect = 0.03 * float(runs["baseline"].loc[[0, 1, 2]].mean())
    sd_plan = math.sqrt(max(float(np.mean(d**2)) - effect**2, float(np.mean(d**2)) / 3))
    assert sd_plan == pytest.approx(pilot_sd(list(d), effect))
    need = seeds_needed(sd_plan, effect, cap=9)
    n = min(max(need, 3), 9)
    assert len(res.runs) == 2 * n and int(res.rows("primary")["n"].iloc[0]) == n
    assert f"{need} seeds needed" in seq and f"{n} seeds run" in seq
    assert ("Target MDE 3.0%: reached" in seq) == (res.rows("primary")["mde_rel"].iloc[0] <= 0.03)
    assert "design: internal pilot" in (tmp_path / "s" / "trial.md").read_text()


def test_replay_and_the_trial_package_do_not_import_each_other() -> None:
    import ast

    root = Path(__file__).resolve().parents[1]

    def imports(folder: Path) -> set[str]:
        out: set[str] = set()
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module:
                    out.add(node.module)
                elif isinstance(node, ast.Import):
                    out |= {a.name for a in node.names}
        return out

    assert not {m for m in imports(root / "replay") if m.startswith("adaptive.trial")}
    assert not {m for m in imports(root / "adaptive") if m.split(".")[0] == "replay"}
    assert not (root / "replay" / "_trial.py").exists()


def test_mistyped_metric_can_be_redeclared_before_any_report(tmp_path: Path) -> None:
    """A --command metric is known only once a run has a trace: a typo stops the trial after
    its first run. The same trial with the right metric then goes on (no report was written),
    reusing that run; once a report exists the analysis can no longer change."""
    from adaptive.trial import FunctionTarget

    out = tmp_path / "t"
    kw = {"target": FunctionTarget(toy_train), "reduce": "final", "seeds": 2}
    with pytest.raises(TrialError, match="--metric val/mm: not in the trace"):
        run_trial(out, ["c: 1.0"], metric="val/mm", **kw)
    assert not (out / "trial.md").exists()
    msgs: list[str] = []
    res = run_trial(out, ["c: 1.0"], metric="val/m", progress=msgs.append, **kw)
    assert any("re-declared with another metric" in m for m in msgs)
    assert any("already finished: reused" in m for m in msgs)
    design = json.loads((out / "trial-design.json").read_text())
    assert design["metric"] == "val/m" and design["redeclared"] == [{"metric": "val/mm"}]
    assert int(res.rows("primary")["n"].iloc[0]) == 2
    with pytest.raises(TrialError, match="holds another trial"):
        run_trial(out, ["c: 1.0"], metric="val/m", **{**kw, "reduce": "last2"})
