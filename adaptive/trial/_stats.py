"""The trial's statistics on plain numbers: paired t interval, sign-flip permutation test,
exact sign test, minimum detectable effect, seeds needed, the pilot's variance estimate, Holm
and Bonferroni corrections (Python and numpy; no torch, no scipy: tests/test_trial_reference.py
holds them to scipy and statsmodels).

Student's t comes from the regularized incomplete beta function (continued fraction,
Numerical Recipes' `betacf`); quantiles by bisection on it, good to ~1e-10.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "ALPHA",
    "POWER",
    "bonferroni",
    "holm",
    "mde",
    "paired_t",
    "pilot_sd",
    "power",
    "seeds_needed",
    "sign_flip_p",
    "sign_test_p",
    "t_cdf",
    "t_ppf",
    "t_sf",
]

#: Two-sided level of every interval and test.
ALPHA = 0.05
#: The power the minimum detectable effect (MDE) is stated at.
POWER = 0.80
#: Up to this many pairs the sign-flip test enumerates every sign pattern (2^n).
EXACT_MAX_N = 16
#: Monte Carlo draws (fixed seed) beyond EXACT_MAX_N.
MC_DRAWS = 2**16


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    bt = math.exp(lbt + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return bt * _betacf(a, b, x) / a
    return 1.0 - bt * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, dof: float) -> float:
    """P(T <= t) for Student's t with `dof` degrees of freedom."""
    return 1.0 - t_sf(t, dof) if t > 0 else t_sf(-t, dof)


def t_sf(t: float, dof: float) -> float:
    """P(T > t) for Student's t with `dof` degrees of freedom, computed as the tail itself (no
    `1 - cdf`), so a p value far below 1e-16 keeps its digits."""
    if dof <= 0:
        raise ValueError(f"dof must be > 0, got {dof}")
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(dof / 2.0, 0.5, dof / (dof + t * t))
    return tail if t > 0 else 1.0 - tail


def t_ppf(q: float, dof: float) -> float:
    """The `q` quantile of Student's t with `dof` degrees of freedom."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if q < 0.5:
        return -t_ppf(1.0 - q, dof)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, dof) < q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, dof) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _mean_sd(d: Sequence[float]) -> tuple[float, float]:
    n = len(d)
    m = math.fsum(d) / n
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in d) / (n - 1)) if n > 1 else math.nan
    return m, sd


def paired_t(d: Sequence[float], *, alpha: float = ALPHA) -> dict[str, float]:
    """Mean of the paired differences `d` with its two-sided (1 - alpha) t interval and the
    t test's two-sided p value: keys `n`, `mean`, `sd`, `low`, `high`, `p` (NaN below 2
    pairs, and everything but `n` NaN when a difference is NaN or inf: a non-finite input
    carries no evidence; a zero sd gives a zero-width interval and p 1 at mean 0, else 0)."""
    n = len(d)
    if n == 0 or not all(math.isfinite(x) for x in d):
        return dict.fromkeys(("n", "mean", "sd", "low", "high", "p"), math.nan) | {"n": float(n)}
    m, sd = _mean_sd(d)
    out = {"n": float(n), "mean": m, "sd": sd, "low": math.nan, "high": math.nan, "p": math.nan}
    if n < 2:
        return out
    half = t_ppf(1.0 - alpha / 2.0, n - 1) * sd / math.sqrt(n)
    out["low"], out["high"] = m - half, m + half
    if sd == 0.0:
        out["p"] = 1.0 if m == 0.0 else 0.0
    else:
        t = m / (sd / math.sqrt(n))
        out["p"] = min(1.0, 2.0 * t_sf(abs(t), n - 1))
    return out


def sign_flip_p(d: Sequence[float], *, seed: int = 0) -> float:
    """Two-sided p value of the sign-flip permutation test of mean(d) = 0 (paired
    differences symmetric about 0 under the null): the share of sign patterns whose
    |mean| reaches the observed one. Exact (all 2^n patterns) for n <= 16, else a
    fixed-seed Monte Carlo of 2^16 patterns (the observed one counted in). NaN for n = 0 and
    when a difference is NaN or inf."""
    n = len(d)
    if n == 0 or not all(math.isfinite(x) for x in d):
        return math.nan
    import numpy as np

    x = np.asarray(d, dtype=np.float64)
    obs = abs(float(x.sum()))
    tol = 1e-12 * max(1.0, float(np.abs(x).sum()))
    if n <= EXACT_MAX_N:
        codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)
        signs = 1.0 - 2.0 * (codes & 1)
        return float(np.mean(np.abs(signs @ x) >= obs - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([1.0, -1.0]), size=(MC_DRAWS - 1, n))
    hits = 1 + int(np.sum(np.abs(signs @ x) >= obs - tol))
    return hits / MC_DRAWS


def sign_test_p(k: int, n: int) -> float:
    """Exact two-sided sign test: the probability, with `n` coin flips, of a split at least as
    uneven as `k` of `n` (1 for n = 0). Used on the seeds where only one side diverged."""
    if n == 0:
        return 1.0
    lo = min(k, n - k)
    tail = math.fsum(math.comb(n, i) for i in range(lo + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def power(effect: float, sd: float, n: int, *, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t test with `n` pairs at a true mean difference
    `effect` (noncentral t, by Simpson's rule over the chi distribution of the sd; within
    1e-6 of scipy's `nct`)."""
    if n < 2 or not (sd > 0):
        return math.nan
    dof = n - 1
    c = t_ppf(1.0 - alpha / 2.0, dof)
    delta = abs(effect) * math.sqrt(n) / sd
    # s = sqrt(V / dof), V ~ chi2(dof): density 2 dof s f_V(dof s^2)
    logk = math.log(2.0 * dof) - (dof / 2.0) * math.log(2.0) - math.lgamma(dof / 2.0)
    top = 1.0 + 12.0 / math.sqrt(2.0 * dof) + (8.0 if dof < 3 else 0.0)
    steps = 800
    h = top / steps
    total = 0.0
    for i in range(steps + 1):
        s = i * h
        if s == 0.0:
            dens = 2.0 / math.sqrt(2.0 * math.pi) if dof == 1 else 0.0
        else:
            v = dof * s * s
            dens = math.exp(logk + (dof / 2.0 - 1.0) * math.log(v) - v / 2.0 + math.log(s))
        w = 1.0 if i in (0, steps) else (4.0 if i % 2 else 2.0)
        total += w * dens * (_phi(delta - c * s) + _phi(-delta - c * s))
    return min(1.0, total * h / 3.0)


def mde(sd: float, n: int, *, alpha: float = ALPHA, power_: float = POWER) -> float:
    """Minimum detectable effect of a paired t test with `n` pairs: the smallest true mean
    difference found with probability `power_` at two-sided level `alpha`, from the
    noncentral t (`power`; the textbook (t_{1-a/2} + t_{power}) sd / sqrt(n) shortcut is
    5 % too small at n = 3). Same unit as `sd`; NaN below 2 pairs."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0.0:
        return 0.0
    lo, hi = 0.0, sd
    while power(hi, sd, n, alpha=alpha) < power_:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-6 * hi:
        mid = 0.5 * (lo + hi)
        if power(mid, sd, n, alpha=alpha) < power_:
            lo = mid
        else:
            hi = mid
    return hi


def seeds_needed(
    sd: float, effect: float, *, alpha: float = ALPHA, power_: float = POWER, cap: int = 10_000
) -> int:
    """The smallest n (>= 2) whose power at `effect` reaches `power_` (so its MDE is at most
    `effect`); `cap` if none below it."""
    if not (effect > 0 and math.isfinite(sd)):
        raise ValueError(f"effect must be > 0 and sd finite, got {effect}, {sd}")
    for n in range(2, cap + 1):
        if power(effect, sd, n, alpha=alpha) >= power_:
            return n
    return cap


def pilot_sd(d: Sequence[float], effect: float, *, method: str = "adjusted") -> float:
    """The sd a sequential trial plans with, from the pilot's paired differences `d`, without
    looking at their mean's sign or size as such.

    `blinded`: the uncentred second moment sqrt(mean(d^2)), which estimates sqrt(sd^2 +
    delta^2): it grows with the true effect delta, so a candidate that works is over-sized
    (about 12-13 seeds where 6-10 would do at delta = effect). `adjusted` (the default):
    mean(d^2) - effect^2 (Kieser & Friede 2003's adjusted one-sample variance, for paired
    differences), unbiased for sd^2 when the true effect is the planned one; floored at
    mean(d^2) / n so it stays positive. benchmarks/sequential_design.py simulates both: the
    adjusted one keeps the error rate and sizes within 1.5x of what the true sd needs.
    """
    n = len(d)
    if n == 0 or not all(math.isfinite(x) for x in d):
        return math.nan
    m2 = math.fsum(x * x for x in d) / n
    if method == "blinded":
        return math.sqrt(m2)
    if method != "adjusted":
        raise ValueError(f"method must be adjusted or blinded, got {method!r}")
    return math.sqrt(max(m2 - effect * effect, m2 / n))


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    """Bonferroni-adjusted p values min(1, m p), m the number of non-NaN values (NaN stays)."""
    m = sum(1 for p in pvalues if not math.isnan(p))
    return [p if math.isnan(p) else min(1.0, m * p) for p in pvalues]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values (family-wise error rate), in the given order;
    NaN stays NaN and does not count towards the family size."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out
