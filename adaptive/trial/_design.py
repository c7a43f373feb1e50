"""Operating characteristics of the sequential design (internal pilot, then one batch): by
simulation, how often it rejects under no effect, its power, and how many seeds it asks for
against what the true sd needs. benchmarks/sequential_design.py prints the table; the test
suite holds the default estimator to its targets."""

from __future__ import annotations

import math

import numpy as np

from adaptive.trial._stats import ALPHA, mde, t_ppf

__all__ = ["needed_table", "simulate_pilot_design"]


def needed_table(cap: int, *, alpha: float = ALPHA) -> np.ndarray:
    """`mde(1, n)` for n = 0..cap (NaN below 2): n seeds suffice for an effect/sd ratio r when
    table[n] <= r, the rule `seeds_needed` applies one n at a time."""
    return np.array([math.nan, math.nan] + [mde(1.0, n, alpha=alpha) for n in range(2, cap + 1)])


def _needed(ratio: np.ndarray, table: np.ndarray, cap: int) -> np.ndarray:
    """Vectorised `seeds_needed`: the smallest n >= 2 with table[n] <= ratio (cap if none)."""
    mdes = table[2:]  # decreasing in n
    idx = np.searchsorted(-mdes, -ratio, side="left")  # first n with mde <= ratio
    return np.minimum(idx + 2, cap)


def simulate_pilot_design(
    *,
    sd: float,
    effect: float,
    true_effect: float,
    pilot: int,
    max_seeds: int,
    method: str,
    reps: int = 20_000,
    seed: int = 0,
    heavy_tailed: bool = False,
    table: np.ndarray | None = None,
) -> dict[str, float]:
    """Simulate `reps` sequential trials: normal (or t with 3 dof, scaled to `sd`) paired
    differences with mean `true_effect`; the pilot's `pilot` seeds give the planning sd by
    `method` (`pilot_sd`'s `adjusted` or `blinded`), the seeds needed for an MDE of `effect`
    (capped at `max_seeds`, at least the pilot) run, and the paired t test decides at 5 %.

    Returns the rejection rate, its Monte Carlo standard error, the mean and median seeds the
    design stated as needed (before the pilot's floor and the cap), the true sd's need, and
    the mean seeds run."""
    rng = np.random.default_rng(seed)
    if heavy_tailed:
        z = rng.standard_t(3, size=(reps, max_seeds)) / math.sqrt(3.0)  # unit variance
    else:
        z = rng.standard_normal((reps, max_seeds))
    d = true_effect + sd * z
    m2 = np.mean(d[:, :pilot] ** 2, axis=1)
    if method == "blinded":
        plan_sd = np.sqrt(m2)
    elif method == "adjusted":
        plan_sd = np.sqrt(np.maximum(m2 - effect**2, m2 / pilot))
    else:
        raise ValueError(f"method must be adjusted or blinded, got {method!r}")
    tab = table if table is not None and len(table) > max_seeds else needed_table(max_seeds)
    stated = _needed(effect / plan_sd, tab, max_seeds)
    n = np.clip(stated, pilot, max_seeds)
    s1, s2 = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
    rows = np.arange(reps)
    tot, sq = s1[rows, n - 1], s2[rows, n - 1]
    mean = tot / n
    var = np.maximum(sq - n * mean**2, 0.0) / (n - 1)
    t = mean / np.sqrt(var / n)
    crit = np.array(
        [math.nan]
        + [t_ppf(1 - ALPHA / 2, k - 1) if k > 1 else math.nan for k in range(1, max_seeds + 1)]
    )
    reject = np.abs(t) > crit[n]
    rate = float(reject.mean())
    return {
        "rate": rate,
        "rate_se": math.sqrt(rate * (1 - rate) / reps),
        "stated_mean": float(stated.mean()),
        "stated_median": float(np.median(stated)),
        "true_needed": float(_needed(np.array([effect / sd]), tab, max_seeds)[0]),
        "run_mean": float(n.mean()),
    }
