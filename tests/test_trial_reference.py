"""The trial's hand-written statistics held to scipy and statsmodels (dev extra), and the
wording rules of issue 25: verdicts that say what the interval says, secondary rows at one
level, divergence decided by evidence, blown-up candidates flagged, non-finite input giving
NaN, tiny p values kept, and the sequential design's error rate and sizes by simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from adaptive.trial import (
    Metric,
    TrialResult,
    analyse,
    bonferroni,
    holm,
    mde,
    paired_t,
    pilot_sd,
    power,
    seeds_needed,
    sign_flip_p,
    sign_test_p,
    simulate_pilot_design,
    t_cdf,
    t_ppf,
    t_sf,
)
from adaptive.trial._design import needed_table
from adaptive.trial._report import verdict_text

M = Metric("valfree", "MPJPE")
S = Metric("val", "loss")


# ------------------------------------------------------------------ against the references
@pytest.mark.parametrize("dof", [1, 2, 3, 5, 9, 30, 200])
def test_t_distribution_against_scipy(dof: int) -> None:
    for q in (0.6, 0.8, 0.9, 0.975, 0.995, 0.9999):
        assert t_ppf(q, dof) == pytest.approx(stats.t.ppf(q, dof), rel=1e-9)
    for t in (-8.0, -1.3, 0.0, 0.4, 2.2, 7.5):
        assert t_cdf(t, dof) == pytest.approx(stats.t.cdf(t, dof), rel=1e-10, abs=1e-14)
    for t in (0.0, 3.0, 40.0, 1e4):  # the upper tail itself, to its last digits
        assert t_sf(t, dof) == pytest.approx(stats.t.sf(t, dof), rel=1e-8)


def test_paired_t_against_scipy_including_tiny_p() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 10, 40):
        d = rng.normal(0.4, 1.0, n)
        ours = paired_t(list(d))
        ref = stats.ttest_1samp(d, 0.0)
        ci = ref.confidence_interval(0.95)
        assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert (ours["low"], ours["high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    # far below 1e-16: 1 - cdf would print 0; the tail keeps its value
    d = [-5.0 + 1e-3 * i for i in range(12)]
    p = paired_t(d)["p"]
    assert 0.0 < p < 1e-16
    assert p == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-8)


def test_power_mde_seeds_needed_against_statsmodels() -> None:
    tp = TTestPower()
    for effect, n in ((1.0, 10), (0.5, 34), (2.0, 4), (0.8, 7), (0.3, 60)):
        ref = tp.power(effect_size=effect, nobs=n, alpha=0.05, alternative="two-sided")
        assert power(effect, 1.0, n) == pytest.approx(ref, abs=1e-6)
    for n in (3, 4, 6, 10, 25):
        ref = tp.solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
        assert mde(1.0, n) == pytest.approx(ref, rel=1e-5)
    for effect in (0.3, 0.5, 0.8, 1.0, 1.5, 2.5):
        ref = tp.solve_power(effect_size=effect, alpha=0.05, power=0.8, alternative="two-sided")
        assert seeds_needed(1.0, effect) == max(2, math.ceil(ref - 1e-9))


def test_holm_bonferroni_sign_flip_and_sign_test_against_references() -> None:
    rng = np.random.default_rng(0)
    p = list(rng.uniform(0, 0.2, 9))
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]), rel=1e-12)
    assert bonferroni(p) == pytest.approx(list(multipletests(p, method="bonferroni")[1]))
    d = rng.normal(0.5, 1.0, 9)
    ref = stats.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    )
    assert sign_flip_p(list(d)) == pytest.approx(ref.pvalue, rel=1e-12)
    for k, n in ((0, 6), (1, 10), (3, 7), (5, 5), (0, 0)):
        want = stats.binomtest(k, n, 0.5).pvalue if n else 1.0
        assert sign_test_p(k, n) == pytest.approx(want, rel=1e-12)


def test_non_finite_differences_give_nan_not_confidence() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        d = [1.0, 2.0, bad, 1.5]
        r = paired_t(d)
        assert math.isnan(r["p"]) and math.isnan(r["low"]) and r["n"] == 4
        assert math.isnan(sign_flip_p(d))
        assert math.isnan(pilot_sd(d, 1.0))


# ------------------------------------------------------------------------------ wording
def _arms(base: list[float], cand: list[float], sec: tuple | None = None) -> dict:
    def runs(vals, sec_vals):
        return {
            s: {M.key: np.array([v]), S.key: np.array([sec_vals[s] if sec_vals else v])}
            for s, v in enumerate(vals)
        }

    return {
        "baseline": runs(base, sec[0] if sec else None),
        "c": runs(cand, sec[1] if sec else None),
    }


def _row(frame: pd.DataFrame, role: str) -> pd.Series:
    return frame[frame["role"] == role].iloc[0]


def test_no_clear_difference_states_its_interval_and_mde_as_power() -> None:
    base = [100.0] * 4
    cand = [92.0, 101.0, 97.0, 99.0]  # the interval reaches past the MDE on one side
    frame, _ = analyse(_arms(base, cand), M, 1)
    r = _row(frame, "primary")
    assert r["verdict"] == "no clear difference"
    assert r["rel_ci_low"] < -r["mde_rel"] or r["rel_ci_high"] > r["mde_rel"]
    text = verdict_text(r)
    assert "no difference larger" not in text
    assert f"95 % CI {100 * r['rel_ci_low']:+.1f}% to {100 * r['rel_ci_high']:+.1f}%" in text
    assert f"80% power to detect {100 * r['mde_rel']:.1f}% at n = 4" in text
    assert "lower on 3, higher on 1 of 4" in text and "within" not in text
    # "within ±X %" only where the interval lies inside the stated margin
    assert "within ±20.0%" in verdict_text(r, margin=0.20)
    assert "within" not in verdict_text(r, margin=0.05)


def test_secondary_rows_are_at_one_level() -> None:
    # 8 secondary comparisons; one has an unadjusted sign-flip p of 2/64 = 0.031 but a t
    # interval over 0: before, the row read "no clear difference ... the sign-flip test
    # disagrees (p = 0.031)" beside a Holm verdict
    sec_base = [1.0] * 6
    sec_cand = [1.0 + x for x in (0.5, 0.02, 0.02, 0.03, 0.01, 0.02)]
    secondary = [Metric("val", f"m{i}") for i in range(8)]
    values = {
        arm: {
            s: {M.key: np.array([10.0 + 0.1 * s])}
            | {
                m.key: np.array([(sec_cand if arm == "c" and i == 0 else sec_base)[s] + 0.01 * i])
                for i, m in enumerate(secondary)
            }
            for s in range(6)
        }
        for arm in ("baseline", "c")
    }
    frame, _ = analyse(values, M, 1, secondary)
    sec = frame[frame["role"] == "secondary"]
    assert len(sec) == 8 and set(sec["family"]) == {8}
    r = sec.iloc[0]
    assert r["p_signflip"] == pytest.approx(2 / 64)
    assert r["p_signflip_adj"] == pytest.approx(min(1.0, 8 * 2 / 64))
    assert r["level"] == pytest.approx(1 - 0.05 / 8)
    assert r["mde"] == pytest.approx(mde(r["sd_diff"], 6, alpha=0.05 / 8))
    # the row's interval is the Bonferroni-level t interval, and it decides
    d = np.array(sec_cand) - 1.0
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(1 - 0.05 / 8)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-8)
    assert r["verdict"] == "no clear difference" and "disagrees" not in r["note"]
    assert "99.4 % CI" in verdict_text(r)
    for _, row in sec.iterrows():  # every row: verdict <=> its own interval excludes 0
        excl = row["ci_low"] > 0 or row["ci_high"] < 0
        assert (row["verdict"] != "no clear difference") == excl
    assert _row(frame, "primary")["level"] == pytest.approx(0.95)


def test_one_diverged_seed_does_not_decide_many_do() -> None:
    base = [100.0] * 10
    cand = [94.9 + 0.01 * s for s in range(10)]
    cand[4] = math.nan
    frame, _ = analyse(_arms(base, cand), M, 1)
    r = _row(frame, "primary")
    assert r["verdict"] == "better" and r["n"] == 9
    text = verdict_text(r)
    assert "(diverged)" not in text and "diverged on 1 candidate seed(s)" in text
    # 6 of 10 candidate seeds diverged, none of the baseline's: exact sign test p = 2/64
    for s in range(6):
        cand[s] = math.inf
    frame, _ = analyse(_arms(base, cand), M, 1)
    r = _row(frame, "primary")
    assert r["verdict"] == "worse" and "(diverged)" in verdict_text(r)
    assert "p = 0.0312: decisive" in r["note"]


def test_blown_up_candidate_is_flagged_with_its_seed_counts() -> None:
    # the issue's own-trainer case: --lr 50 took val/mse from 0.12 to ~197,000
    frame, _ = analyse(_arms([0.12, 0.13], [197404.0, 150000.0]), M, 1)
    r = _row(frame, "primary")
    text = verdict_text(r)
    assert "higher on 2 of 2" in text
    assert "more than 10x off the baseline on 2 of 2 seed(s)" in text
    res = TrialResult(frame, pd.DataFrame(), pd.DataFrame(), design={"reduce_k": 1})
    assert "e+08%" in res.summary()  # not a 12-digit percentage


def test_report_names_the_sign_flip_test_it_ran() -> None:
    for n, word in ((8, "an exact"), (20, "a Monte Carlo")):
        frame, _ = analyse(_arms([10.0] * n, [10.0 + 0.1 * (-1) ** s for s in range(n)]), M, 1)
        res = TrialResult(frame, pd.DataFrame(), pd.DataFrame(), design={"reduce_k": 1})
        assert f"checked by {word}" in " ".join(res.lines())


# --------------------------------------------------------------- the sequential design
def test_sequential_design_keeps_error_rate_and_sizes_close() -> None:
    """The kept simulation (benchmarks/sequential_design.py prints the full table): the
    adjusted planning sd keeps the type I error at 5 % and states, at the planned effect, a
    mean n within 1.5x of what the true sd needs, where the blinded one over-sizes."""
    table = needed_table(60)
    kw = {"effect": 1.0, "pilot": 4, "max_seeds": 60, "reps": 6000, "table": table}
    for ratio in (0.5, 1.0, 1.5):
        null = simulate_pilot_design(sd=ratio, true_effect=0.0, method="adjusted", **kw)
        assert null["rate"] < 0.05 + 3 * null["rate_se"]
        alt = simulate_pilot_design(sd=ratio, true_effect=1.0, method="adjusted", **kw)
        blind = simulate_pilot_design(sd=ratio, true_effect=1.0, method="blinded", **kw)
        assert alt["true_needed"] == seeds_needed(ratio, 1.0)
        assert alt["stated_mean"] / alt["true_needed"] < 1.5
        assert blind["stated_mean"] > alt["stated_mean"]
    # at sd = effect the blinded estimate asks for far more than the 10 seeds needed
    blind = simulate_pilot_design(sd=1.0, true_effect=1.0, method="blinded", **kw)
    assert blind["stated_mean"] / blind["true_needed"] > 1.5
