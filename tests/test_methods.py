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


# ------------------------------------------------------------------------------- GradNorm
def _gradnorm_step(
    w: torch.Tensor, l0: torch.Tensor, losses: torch.Tensor, g: torch.Tensor, **hp: float
) -> torch.Tensor:
    """The paper's update with autograd: ∂/∂w Σ|w g − const(Ḡ r^α)|, then our step and
    renormalisation (docs/ADAPTIVE_LOSS.md)."""
    alpha, lr, floor = hp["alpha"], hp["lr"], hp["min_weight"]
    w = w.clone().requires_grad_(True)
    big_g = w * g
    ratio = losses / l0
    r = ratio / ratio.mean()
    target = (big_g.mean() * r**alpha).detach()
    (grad,) = torch.autograd.grad((big_g - target).abs().sum(), w)
    new = (w.detach() - lr * grad / g.mean()).clamp_min(floor)
    return len(w) * new / new.sum()


def test_gradnorm_first_step_by_hand() -> None:
    # w = (1, 1), g = (1, 3): G = (1, 3), Ḡ = 2, r = (1, 1) at the first step, targets 2;
    # ∂L_grad/∂w = (-1·1, +1·3), / ḡ = 2: (-0.5, 1.5); w - 0.1·that = (1.05, 0.85),
    # renormalised to sum 2: (1.105263…, 0.894736…)
    ctrl = AdaptiveLossWeighting(
        ["a", "b"], method="gradnorm", alpha=1.5, lr=0.1, adjustment_range=100.0, log_every=0
    )
    d0 = ctrl({"a": 1.0, "b": 2.0}, extras={"grad_norm": {"a": 1.0, "b": 3.0}})[2]
    assert d0.scales.tolist() == [1.0, 1.0]  # the weights before the first update
    d1 = ctrl({"a": 1.0, "b": 2.0}, extras={"grad_norm": {"a": 1.0, "b": 3.0}})[2]
    assert d1.scales.tolist() == pytest.approx([2.1 / 1.9, 1.7 / 1.9], rel=1e-14)


def test_gradnorm_matches_autograd_of_the_papers_objective() -> None:
    gen = torch.Generator().manual_seed(3)
    hp = {"alpha": 1.5, "lr": 0.05, "min_weight": 0.01}
    c = 4
    ctrl = AdaptiveLossWeighting(
        [f"c{i}" for i in range(c)], method="gradnorm", adjustment_range=100.0, log_every=0, **hp
    )
    w = torch.ones(c, dtype=torch.float64)
    l0 = None
    for _ in range(40):
        losses = torch.rand(c, generator=gen, dtype=torch.float64) * 3 + 0.1
        g = torch.rand(c, generator=gen, dtype=torch.float64) * 5
        l0 = losses if l0 is None else l0
        diag = ctrl(
            dict(zip(ctrl.components, losses.tolist(), strict=True)),
            extras={"grad_norm": dict(zip(ctrl.components, g.tolist(), strict=True))},
        )[2]
        torch.testing.assert_close(diag.scales, w, rtol=1e-12, atol=0)
        w = _gradnorm_step(w, l0, losses, g, **hp)
    assert (w - 1).abs().max() > 0.2  # it moved


def test_gradnorm_gives_the_slow_component_more_weight() -> None:
    ctrl = AdaptiveLossWeighting(["slow", "fast"], method="gradnorm", log_every=0)
    for t in range(200):  # equal gradient norms; "fast" trains 10x faster
        losses = {"slow": 1.0 - 0.001 * t, "fast": 1.0 - 0.004 * t}
        diag = ctrl(losses, extras={"grad_norm": {"slow": 1.0, "fast": 1.0}})[2]
    assert diag.scales[0] > 1.1 > 1.0 > diag.scales[1]


def test_gradnorm_skips_nonfinite_or_missing_gradient_norms() -> None:
    ctrl = AdaptiveLossWeighting(["a", "b"], method="gradnorm", lr=0.1, log_every=0)
    good = {"grad_norm": {"a": 1.0, "b": 3.0}}
    ctrl({"a": 1.0, "b": 2.0}, extras=good)
    before = ctrl.state_dict()["method_state"]
    for bad in (math.nan, math.inf, -1.0):
        ctrl({"a": 1.0, "b": 2.0}, extras={"grad_norm": {"a": bad, "b": 3.0}})
    ctrl({"a": math.nan, "b": 2.0}, extras=good)
    assert ctrl.state_dict()["method_state"] == before
    with pytest.raises(ValueError, match=r"needs the extra\(s\) \['grad_norm'\]"):
        ctrl({"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError, match=r"needs the extra\(s\) \['grad_norm'\]"):
        ctrl.step_block(torch.ones(3, 2))
    with pytest.raises(ValueError, match="shape"):
        ctrl.step_block(torch.ones(3, 2), extras={"grad_norm": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="every component"):
        ctrl({"a": 1.0, "b": 2.0}, extras={"grad_norm": {"a": 1.0}})


# ----------------------------------------------------------------------------------- FAMO
class _ReferenceFAMO:
    """The authors' reference algorithm (famo.py), with autograd and torch's Adam."""

    def __init__(self, n: int, gamma: float, w_lr: float) -> None:
        self.w = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        self.opt = torch.optim.Adam([self.w], lr=w_lr, weight_decay=gamma, foreach=False)

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """∂/∂L of Σ z log(L + 1e-8) / c (c = Σ z/(L + 1e-8) constant): the applied weights."""
        self.prev = losses
        loss = losses.clone().requires_grad_(True)
        z = torch.softmax(self.w.detach(), -1)
        d = loss + 1e-8
        c = (z / d).sum().detach()
        (grad,) = torch.autograd.grad((d.log() * z / c).sum(), loss)
        return grad

    def update(self, after: torch.Tensor) -> None:
        delta = (self.prev + 1e-8).log() - (after + 1e-8).log()
        (d,) = torch.autograd.grad(torch.softmax(self.w, -1), self.w, grad_outputs=delta)
        self.opt.zero_grad()
        self.w.grad = d
        self.opt.step()


def test_famo_matches_the_reference_algorithm() -> None:
    gen = torch.Generator().manual_seed(5)
    c, hp = 3, {"gamma": 0.01, "w_lr": 0.025}
    names = [f"c{i}" for i in range(c)]
    ctrl = AdaptiveLossWeighting(names, method="famo", adjustment_range=100.0, log_every=0, **hp)
    ref = _ReferenceFAMO(c, **hp)
    losses = torch.tensor([3.0, 0.2, 0.05], dtype=torch.float64)
    rates = torch.tensor([0.97, 0.995, 0.999], dtype=torch.float64)
    for _ in range(60):
        noise = 1 + 0.2 * torch.rand(c, generator=gen, dtype=torch.float64)
        after = losses * rates * noise
        diag = ctrl(dict(zip(names, losses.tolist(), strict=True)))[2]
        want = ref.weights(losses)
        torch.testing.assert_close(diag.scales, c * want, rtol=1e-12, atol=0)
        ctrl.after_step({"loss_after": dict(zip(names, after.tolist(), strict=True))})
        ref.update(after)
        torch.testing.assert_close(ctrl.method_impl._xi[0], ref.w.detach(), rtol=1e-10, atol=1e-15)
        losses = after
    assert ref.w.detach().abs().max() > 0.1  # the logits moved


def test_famo_weights_the_slowest_falling_loss_up_and_is_scale_free() -> None:
    def run(scale: float) -> torch.Tensor:
        ctrl = AdaptiveLossWeighting(["a", "b"], method="famo", w_lr=0.1, log_every=0)
        la, lb = 1.0 * scale, 1.0 * scale
        for _ in range(100):
            ctrl({"a": la, "b": lb})
            la2, lb2 = la * 0.999, lb * 0.98  # "a" barely falls
            ctrl.after_step({"loss_after": {"a": la2, "b": lb2}})
            la, lb = la2, lb2
        return ctrl.method_impl._xi[0].clone()

    xi = run(1.0)
    assert xi[0] > xi[1]
    torch.testing.assert_close(run(1e3), xi, rtol=1e-6, atol=1e-9)


def test_famo_live_protocol_errors_are_one_line() -> None:
    ctrl = AdaptiveLossWeighting(["a", "b"], method="famo", log_every=0)
    assert ctrl.requires == ("loss_after",) and ctrl.needs_after_step
    with pytest.raises(RuntimeError, match="without a step awaiting it"):
        ctrl.after_step({"loss_after": {"a": 1.0, "b": 1.0}})
    ctrl({"a": 1.0, "b": 2.0})
    for call in (lambda: ctrl({"a": 1.0, "b": 2.0}), ctrl.end_epoch):
        with pytest.raises(RuntimeError, match=r"call after_step\(loss_after=...\)") as info:
            call()
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="after-step extras go to after_step"):
        AdaptiveLossWeighting(["a", "b"], method="famo")(
            {"a": 1.0, "b": 2.0}, extras={"loss_after": {"a": 1.0, "b": 1.0}}
        )
    ctrl.after_step({"loss_after": {"a": math.nan, "b": 1.0}})  # NaN: no update, no error
    assert ctrl.method_impl._t.item() == 0.0
    dwa = AdaptiveLossWeighting(["a", "b"], method="dwa")
    with pytest.raises(RuntimeError, match="takes no after-step extras"):
        dwa.after_step({"loss_after": {"a": 1.0, "b": 1.0}})


def test_every_registered_method_has_a_row_in_the_methods_table() -> None:
    from pathlib import Path

    from adaptive.weighting import EXTRAS, available_methods

    doc = (Path(__file__).parents[1] / "docs" / "ADAPTIVE_LOSS.md").read_text("utf-8")
    missing = [m for m in available_methods() if f"\n| `{m}` |" not in doc]
    assert not missing
    assert all(f"\n| `{e}` |" in doc for e in EXTRAS)  # and every extra is documented
    trace_doc = (Path(__file__).parents[1] / "docs" / "TRACE_FORMAT.md").read_text("utf-8")
    assert all(f"`{e}/<c>`" in trace_doc for e in EXTRAS)


def test_nonfinite_extras_are_counted_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    ctrl = AdaptiveLossWeighting(["a", "b"], method="gradnorm", log_every=0)
    ctrl({"a": 1.0, "b": 2.0}, extras={"grad_norm": {"a": 1.0, "b": 3.0}})
    ctrl({"a": 1.0, "b": 2.0}, extras={"grad_norm": {"a": math.nan, "b": 3.0}})
    ctrl({"a": math.nan, "b": 2.0}, extras={"grad_norm": {"a": math.nan, "b": 3.0}})  # skipped
    assert ctrl.nonfinite_extras_steps == 1  # the loss-skipped step is counted elsewhere
    with caplog.at_level(logging.WARNING, logger="adaptive.weighting"):
        state = ctrl.state_dict()
    assert state["nonfinite_extras_steps"] == 1
    assert any("non-finite extras (grad_norm)" in r.getMessage() for r in caplog.records)
    famo = AdaptiveLossWeighting(["a", "b"], method="famo", log_every=0)
    famo({"a": 1.0, "b": 2.0})
    famo.after_step({"loss_after": {"a": math.inf, "b": 1.0}})
    famo({"a": math.nan, "b": 2.0})  # a skipped step: its after-step record is not counted
    famo.after_step({"loss_after": {"a": math.nan, "b": 1.0}})
    assert famo.nonfinite_extras_steps == 1
    blk = AdaptiveLossWeighting(["a", "b"], method="famo", log_every=0)
    after = torch.tensor([[1.0, 1.0], [math.inf, 1.0], [0.5, 0.5]])
    blk.step_block(torch.ones(3, 2), extras={"loss_after": after})
    assert blk.nonfinite_extras_steps == 1
    assert "nonfinite_extras_steps" not in AdaptiveLossWeighting(["a"], method="dwa").state_dict()


def test_restart_refuses_a_step_awaiting_after_step() -> None:
    ctrl = AdaptiveLossWeighting(["a", "b"], method="famo", log_every=0)
    ctrl({"a": 1.0, "b": 2.0})
    with pytest.raises(RuntimeError, match=r"before restart\(\)"):
        ctrl.restart()
    ctrl.after_step({"loss_after": {"a": 0.9, "b": 1.9}})
    ctrl.restart()


def test_component_grad_norms() -> None:
    from adaptive.util import component_grad_norms

    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    other = torch.nn.Parameter(torch.tensor(1.0))
    losses = {
        "lin": (w * torch.tensor([1.0, 2.0])).sum(),  # gradient (1, 2): norm sqrt(5)
        "sq": (w**2).sum() / 2,  # gradient w: norm 5
        "unused": other * 2.0,  # attached, but not to w
        "const": torch.tensor(0.5),  # no graph at all
    }
    norms = component_grad_norms(losses, [w])
    assert norms["lin"].item() == pytest.approx(math.sqrt(5.0))
    assert norms["sq"].item() == pytest.approx(5.0)
    assert norms["unused"].item() == 0.0 and norms["const"].item() == 0.0
    assert w.grad is None  # no .grad touched
    scaled = component_grad_norms(losses, [w], reduce=lambda g: 2 * g)
    assert scaled["sq"].item() == pytest.approx(10.0)
