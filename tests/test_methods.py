"""The loss-only weighting methods against their papers' formulas, with numbers computed
by hand (the contract suite in test_weighting.py covers the shared behaviour)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from adaptive.weighting import AdaptiveLossWeighting
from adaptive.weighting._rlw import standard_normal


def scales_after(method: str, steps: list[tuple[float, ...]], **params: Any) -> list[list[float]]:
    """Scales in force at each step (computed before that step's losses are seen)."""
    names = [f"c{i}" for i in range(len(steps[0]))]
    ctrl = AdaptiveLossWeighting(
        names, method=method, adjustment_range=100.0, log_every=0, **params
    )
    out = []
    for losses in steps:
        diag = ctrl(dict(zip(names, losses, strict=True)))[2]
        out.append(diag.scales.tolist())
    return out


# ----------------------------------------------------------------------------- SoftAdapt
def test_softadapt_normalised_rate() -> None:
    # s = L(1) - L(0) = (0.5, -1); normalised by Σ|s| = 1.5: (1/3, -2/3); β = 1:
    # α = softmax(1/3, -2/3) = (1/(1+e^-1), 1/(1+e)); scales = 2α
    rows = scales_after("softadapt", [(1.0, 2.0), (1.5, 1.0), (9.0, 9.0)], beta=1.0)
    assert rows[0] == rows[1] == [1.0, 1.0]  # no rate before two steps
    assert rows[2] == pytest.approx([1.4621171572600098, 0.5378828427399902], rel=1e-14)
    assert rows[2][0] == pytest.approx(2 / (1 + math.exp(-1)), rel=1e-14)


def test_softadapt_plain_and_loss_weighted() -> None:
    steps = [(1.0, 2.0), (1.5, 1.0), (9.0, 9.0)]
    plain = scales_after("softadapt", steps, beta=1.0, normalized=False)
    assert plain[2][0] == pytest.approx(2 / (1 + math.exp(-1.5)), rel=1e-14)  # 1.63515
    lw = scales_after("softadapt", steps, beta=1.0, normalized=False, loss_weighted=True)
    a, b = 1.5 * math.exp(0.5), 1.0 * math.exp(-1.0)  # L_c(t-1) · exp(β s_c)
    assert lw[2] == pytest.approx([2 * a / (a + b), 2 * b / (a + b)], rel=1e-14)
    # a NaN step leaves the rate as it was; β = 0 gives equal weights
    skipped = scales_after("softadapt", [steps[0], steps[1], (math.nan, 1.0), steps[2]], beta=1.0)
    assert skipped[3] == scales_after("softadapt", steps, beta=1.0)[2]
    assert scales_after("softadapt", steps, beta=0.0)[2] == [1.0, 1.0]


def test_softadapt_normalised_is_invariant_to_a_common_rescaling() -> None:
    steps = [(1.0, 2.0, 0.3), (1.5, 1.0, 0.2), (0.7, 1.2, 0.25), (1.0, 1.0, 1.0)]
    a = scales_after("softadapt", steps, beta=2.0)
    b = scales_after("softadapt", [tuple(1e4 * x for x in s) for s in steps], beta=2.0)
    assert a[-1] == pytest.approx(b[-1], rel=1e-12)


# ----------------------------------------------------------------------------------- LBTW
def test_lbtw_matches_formula() -> None:
    # λ = (L(t)/L(0))^0.5 = ((1/4)^0.5, (1/1)^0.5) = (0.5, 1); scales = 2λ/Σλ = (2/3, 4/3)
    rows = scales_after("lbtw", [(4.0, 1.0), (1.0, 1.0), (5.0, 5.0)])
    assert rows[0] == [1.0, 1.0] and rows[1] == [1.0, 1.0]
    assert rows[2] == pytest.approx([2 / 3, 4 / 3], rel=1e-14)
    # α = 2: λ = (1/16, 1) -> scales (2/17, 32/17); L(0) is fixed at the first step
    rows = scales_after("lbtw", [(4.0, 1.0), (1.0, 1.0), (2.0, 2.0), (0, 0)], alpha=2.0)
    assert rows[2] == pytest.approx([2 / 17, 32 / 17], rel=1e-14)
    assert rows[3] == pytest.approx([2 * 0.25 / 4.25, 2 * 4 / 4.25], rel=1e-14)  # (1/4, 4)


def test_lbtw_units_and_bad_losses() -> None:
    steps = [(4.0, 1.0), (1.0, 3.0), (0.0, 0.0)]
    a = scales_after("lbtw", steps)
    b = scales_after("lbtw", [(4e6 * x, 1e-3 * y) for x, y in steps])  # other units
    assert a[2] == pytest.approx(b[2], rel=1e-14)
    # first loss NaN: L(0) is the first finite step; a negative loss is neutral (ratio 1)
    rows = scales_after("lbtw", [(math.nan, 1.0), (4.0, 2.0), (1.0, -2.0), (1.0, 1.0)])
    assert rows[3] == pytest.approx([2 * 0.5 / 1.5, 2 * 1.0 / 1.5], rel=1e-14)


# --------------------------------------------------------------------------------- IMTL-L
def test_imtl_l_gradient_steps() -> None:
    # s = 0; g = e^s L - 1 = (1, -0.5); s <- s - 0.1 g = (-0.1, 0.05); scales = 2 softmax(s)
    rows = scales_after("imtl_l", [(2.0, 0.5), (2.0, 0.5), (2.0, 0.5)], lr=0.1, grad_clip=10.0)
    s1 = (-0.1, 0.05)
    first = [2 / (1 + math.exp(s1[1] - s1[0])), 2 / (1 + math.exp(s1[0] - s1[1]))]
    assert rows[1] == pytest.approx(first, rel=1e-14)
    assert rows[1] == pytest.approx([0.9251403093125009, 1.0748596906874992], rel=1e-12)
    s2 = (s1[0] - 0.1 * (2 * math.exp(s1[0]) - 1), s1[1] - 0.1 * (0.5 * math.exp(s1[1]) - 1))
    assert rows[2][0] == pytest.approx(2 / (1 + math.exp(s2[1] - s2[0])), rel=1e-14)
    # the clip bounds a step: L = 100 gives g = min(99, 1) = 1 -> s = (-0.1, 0.1)
    rows = scales_after("imtl_l", [(100.0, 0.0), (1.0, 1.0)], lr=0.1, grad_clip=1.0)
    assert rows[1][0] == pytest.approx(2 / (1 + math.exp(0.2)), rel=1e-14)


def test_imtl_l_init_first_starts_at_the_optimum() -> None:
    # s = -log L(0) = (-log 0.004, -log 0.001): weights ∝ 1/L -> (250, 1000) / 1250 · 2
    rows = scales_after("imtl_l", [(0.004, 0.001), (0.004, 0.001), (1.0, 1.0)], init="first")
    assert rows[1] == pytest.approx([0.4, 1.6], rel=1e-12)
    assert rows[2] == pytest.approx([0.4, 1.6], rel=1e-12)  # the gradient there is 0
    zero = scales_after("imtl_l", [(0.004, 0.001)] * 3)  # the paper's start: barely moves
    assert zero[2] == pytest.approx([1.0, 1.0], abs=1e-4)


def test_imtl_l_equilibrium_is_inverse_loss() -> None:
    # the minimum of e^s L - s is s = -log L: weights ∝ 1/L -> (1/4, 4) -> 2·(1/4)/4.25
    rows = scales_after("imtl_l", [(4.0, 0.25)] * 400, lr=0.2)
    assert rows[-1] == pytest.approx([2 * 0.25 / 4.25, 2 * 4 / 4.25], rel=1e-9)


# -------------------------------------------------------------------------------- logloss
def test_logloss_is_inverse_loss() -> None:
    # weights ∝ 1/L = (1/4, 1, 2): scales = 3·(0.25, 1, 2)/3.25
    rows = scales_after("logloss", [(4.0, 1.0, 0.5), (1.0, 1.0, 1.0)])
    assert rows[0] == [1.0, 1.0, 1.0]
    assert rows[1] == pytest.approx([0.75 / 3.25, 3 / 3.25, 6 / 3.25], rel=1e-14)
    # every weighted loss w_c L_c is equal: each component counts by its relative change
    w = rows[1]
    assert w[0] * 4.0 == pytest.approx(w[1] * 1.0, rel=1e-14) == pytest.approx(w[2] * 0.5)


def test_logloss_smoothing_and_undefined_logs() -> None:
    # EMA on log L with a = 0.5: m = (0.5·0 + 0.5·log 4, 0) -> weights ∝ (1/2, 1)
    rows = scales_after("logloss", [(1.0, 1.0), (4.0, 1.0), (1.0, 1.0)], smoothing=0.5)
    assert rows[2] == pytest.approx([2 * 0.5 / 1.5, 2 / 1.5], rel=1e-14)
    # L = 0 has no log: it gets the mean weight of the others, mean(1/2, 1) = 0.75
    rows = scales_after("logloss", [(0.0, 2.0, 1.0), (1.0, 1.0, 1.0)])
    assert rows[1] == pytest.approx([3 * 0.75 / 2.25, 3 * 0.5 / 2.25, 3 * 1 / 2.25], rel=1e-14)


# ------------------------------------------------------------------------------------ RLW
def test_rlw_draws_are_standard_normal_and_weights_are_their_softmax() -> None:
    n = 20_000
    z = standard_normal(
        torch.tensor([[5]]), torch.arange(n, dtype=torch.float64).unsqueeze(1), 1
    ).squeeze(1)
    assert abs(z.mean().item()) < 0.03 and abs(z.std().item() - 1) < 0.03
    assert (z < 0).double().mean().item() == pytest.approx(0.5, abs=0.015)
    assert (z.abs() < 1.959964).double().mean().item() == pytest.approx(0.95, abs=0.01)
    # consecutive draws and components are uncorrelated
    pairs = standard_normal(torch.tensor([[5]]), torch.arange(n, dtype=torch.float64)[:, None], 2)
    assert abs(torch.corrcoef(pairs.T)[0, 1].item()) < 0.03
    assert abs(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1].item()) < 0.03
    # the controller applies C · softmax(z) of the n-th finite step's draw
    rows = scales_after("rlw", [(1.0, 2.0, 3.0)] * 3 + [(math.nan, 1.0, 1.0), (1.0, 1.0, 1.0)])
    for i, k in enumerate([0, 1, 2, 3, 3]):  # the NaN step consumes no draw
        ref = 3 * torch.softmax(standard_normal(torch.tensor([[0]]), torch.tensor([[k]]), 3), -1)
        assert rows[i] == ref[0].tolist()
    other = scales_after("rlw", [(1.0, 2.0, 3.0)] * 3, seed=1)
    assert other[0] != rows[0] and len({tuple(r) for r in rows[:4]}) == 4
