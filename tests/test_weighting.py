"""Tests of adaptive.weighting: a contract suite run over every registered method, plus
method-specific checks against the published formulas."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptive._checks import check_number
from adaptive.weighting import (
    DWA,
    AdaptiveLossWeighting,
    UncertaintyWeighting,
    WeightingDiagnostics,
    WeightingMethod,
    available_methods,
    register_method,
)
from adaptive.weighting import _base as weighting_base

COMPONENTS = ("fk_pos", "contact", "smooth")
BASE = {"fk_pos": 1.0, "contact": 0.5, "smooth": 2.0}
METHODS = available_methods()

# Per-method test settings come from the method classes (``aggressive_params``,
# ``invalid_params``, ``example_params``, ``sweep_configs``; see WeightingMethod).


def method_class(method: str) -> type[WeightingMethod]:
    return weighting_base.method_class(method)


EPOCH = "EPOCH"  # marker in a schedule: call end_epoch()


def synth_extras(names: tuple[str, ...], raw: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stand-in extras for methods that need them, computed elementwise from the float64
    losses (so per-step and block calls, and permuted components, see the same values):
    gradient norms that grow with the loss, and after-step losses that fall by 5-10 %."""
    out = {}
    if "grad_norm" in names:
        out["grad_norm"] = raw.abs().sqrt() + 0.1
    if "loss_after" in names:
        out["loss_after"] = raw * (0.95 - 0.05 * torch.tanh(raw))
    return out


class Driven:
    """A controller that is fed the extras its method requires (:func:`synth_extras`),
    with `after_step` after every step, so the contract suite runs every method as is."""

    def __init__(self, ctrl: AdaptiveLossWeighting) -> None:
        object.__setattr__(self, "_ctrl", ctrl)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctrl, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._ctrl, name, value)

    def __repr__(self) -> str:
        return repr(self._ctrl)

    def __call__(self, losses: Any) -> Any:
        ctrl = self._ctrl
        if not ctrl.requires or not isinstance(losses, dict):
            return ctrl(losses)
        raw = {
            c: (v.detach() if isinstance(v, torch.Tensor) else torch.tensor(v)).to(torch.float64)
            for c, v in losses.items()
        }
        per = {c: synth_extras(ctrl.requires, v) for c, v in raw.items()}
        extras = {e: {c: per[c][e] for c in raw} for e in ctrl.requires}
        before = {e: v for e, v in extras.items() if e != "loss_after"}
        out = ctrl(losses, extras=before or None)
        if ctrl.needs_after_step:
            ctrl.after_step({"loss_after": extras["loss_after"]})
        return out

    def step_block(self, losses: Any) -> Any:
        ctrl = self._ctrl
        if not ctrl.requires:
            return ctrl.step_block(losses)
        raw = torch.as_tensor(losses).to(torch.float64)
        return ctrl.step_block(losses, extras=synth_extras(ctrl.requires, raw))

    def select(self, k: int) -> Driven:
        return Driven(self._ctrl.select(k))


def make(method: str, **kwargs: Any) -> Any:
    params = {"base_weights": BASE, "method": method, "log_every": 0}
    params.update(method_class(method).aggressive_params)
    params.update(kwargs)
    components = params.pop("components", COMPONENTS)
    return Driven(AdaptiveLossWeighting(components, **params))


def f32(x: float) -> float:
    """Round to the nearest float32 value (what a trace stores)."""
    return float(torch.tensor(x, dtype=torch.float32))


def schedule(
    epochs: int = 6, steps: int = 5, bad_steps: tuple[tuple[int, int], ...] = ()
) -> list[Any]:
    """Hand-made loss sequence (float32 values) with epoch boundaries; ``bad_steps``
    inserts a NaN/inf step before step ``s`` of epoch ``e``."""
    out: list[Any] = []
    scale = {"fk_pos": 3.0, "contact": 0.2, "smooth": 0.05}
    decay = {"fk_pos": 0.6, "contact": 0.9, "smooth": 1.1}
    for e in range(epochs):
        for s in range(steps):
            if (e, s) in bad_steps:
                bad = dict.fromkeys(COMPONENTS, 1.0)
                bad["contact" if s % 2 else "smooth"] = math.nan if e % 2 else math.inf
                out.append(bad)
            out.append(
                {
                    c: f32(scale[c] * decay[c] ** e * (1.0 + 0.3 * math.sin(1.7 * s + i)))
                    for i, c in enumerate(COMPONENTS)
                }
            )
        out.append(EPOCH)
    return out


def run(
    ctrl: AdaptiveLossWeighting, sched: list[Any], as_tensor: torch.dtype | None = None
) -> list[tuple[torch.Tensor, WeightingDiagnostics]]:
    results = []
    for item in sched:
        if item == EPOCH:
            ctrl.end_epoch()
            continue
        losses = (
            {c: torch.tensor(v, dtype=as_tensor) for c, v in item.items()}
            if as_tensor is not None
            else item
        )
        _, weights, diag = ctrl(losses)
        results.append((torch.stack([weights[c] for c in ctrl.components]), diag))
    return results


def assert_same_results(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (wa, da), (wb, db) in zip(a, b, strict=True):
        assert torch.equal(wa, wb)
        assert da.to_dict() == db.to_dict() or _nan_equal(da.to_dict(), db.to_dict())


def _nan_equal(x: dict[str, float], y: dict[str, float]) -> bool:
    return x.keys() == y.keys() and all(
        (math.isnan(x[k]) and math.isnan(y[k])) or x[k] == y[k] for k in x
    )


@contextlib.contextmanager
def forbid_host_sync() -> Iterator[None]:
    """Make every tensor->host conversion raise (CPU proxy for CUDA sync checks)."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("host synchronisation on the per-step path")

    names = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
    saved = {n: getattr(torch.Tensor, n) for n in names}
    try:
        for n in names:
            setattr(torch.Tensor, n, boom)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


# ======================================================================================
# Contract suite: every registered method
# ======================================================================================


def test_builtin_methods_registered() -> None:
    assert {"dwa", "uncertainty"} <= set(METHODS)


@pytest.mark.parametrize("method", METHODS)
class TestContract:
    def test_shapes_types_and_mean_one(self, method: str) -> None:
        ctrl = make(method)
        k = len(COMPONENTS)
        for item in schedule():
            if item == EPOCH:
                ctrl.end_epoch()
                continue
            losses = {c: torch.tensor(v, requires_grad=True) for c, v in item.items()}
            total, weights, diag = ctrl(losses)
            assert total.shape == () and total.dtype == torch.float32
            assert list(weights) == list(COMPONENTS)
            for w in weights.values():
                assert w.shape == () and w.dtype == torch.float64 and not w.requires_grad
            for t in (diag.scales, diag.deltas, diag.applied, diag.proposed, diag.base):
                assert t.shape == (k,) and t.dtype == torch.float64 and not t.requires_grad
            assert diag.clamped.shape == (k,) and diag.clamped.dtype == torch.bool
            assert diag.skipped.shape == () and diag.skipped.dtype == torch.bool
            assert diag.skipped_steps.dtype == torch.int64
            assert diag.scales.mean().item() == pytest.approx(1.0, abs=1e-12)
            assert (diag.scales >= 0).all()

    def test_clamp_bounds_and_formula(self, method: str) -> None:
        r = 0.05
        ctrl = make(method, adjustment_range=r)
        base = torch.tensor([BASE[c] for c in COMPONENTS], dtype=torch.float64)
        any_clamped = False
        for _, diag in run(ctrl, schedule()):
            excess = diag.scales - 1
            assert torch.equal(diag.deltas, excess.clamp(-r, r))
            assert torch.equal(diag.clamped, excess.abs() > r)
            assert torch.equal(diag.proposed, base * (1 + diag.deltas))
            assert torch.equal(diag.applied, diag.proposed)
            assert (diag.applied >= base * (1 - r)).all() and (diag.applied <= base * (1 + r)).all()
            any_clamped |= bool(diag.clamped.any())
        assert any_clamped, "schedule should drive the method into the clamp"

    def test_state_actually_adapts(self, method: str) -> None:
        results = run(make(method, adjustment_range=10.0), schedule())
        assert not torch.allclose(results[-1][1].scales, torch.ones(3, dtype=torch.float64))

    def test_dry_run_returns_base_and_proposes(self, method: str) -> None:
        live = run(make(method), schedule())
        ctrl = make(method, dry_run=True)
        base = torch.tensor([BASE[c] for c in COMPONENTS], dtype=torch.float64)
        for item in [x for x in schedule() if x != EPOCH][:3]:
            total, _, _ = make(method, dry_run=True)(item)
            assert total.item() == pytest.approx(sum(BASE[c] * item[c] for c in COMPONENTS))
        dry = run(ctrl, schedule())
        for (w_live, d_live), (w_dry, d_dry) in zip(live, dry, strict=True):
            assert torch.equal(w_dry, base)
            assert torch.equal(d_dry.applied, base)
            assert torch.equal(d_dry.proposed, w_live)
            assert torch.equal(d_dry.proposed, d_live.proposed)
            assert d_dry.dry_run

    def test_zero_range_returns_base_exactly(self, method: str) -> None:
        base = torch.tensor([BASE[c] for c in COMPONENTS], dtype=torch.float64)
        for w, diag in run(make(method, adjustment_range=0.0), schedule()):
            assert torch.equal(w, base)
            assert torch.equal(diag.proposed, base)
            assert (diag.deltas == 0).all()

    @pytest.mark.parametrize("split", [1, 7, 13, 24])
    def test_state_dict_json_resume_bit_exact(self, method: str, split: int) -> None:
        sched = schedule(bad_steps=((1, 2), (3, 0)))
        full = run(make(method), sched)

        first = make(method)
        head = run(first, sched[:split])
        first.set_base_weights(BASE)  # no-op, exercises the path
        state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
        resumed = make(method, base_weights=None)  # base weights come from the state
        resumed.load_state_dict(state)
        assert resumed.state_dict() == state
        tail = run(resumed, sched[split:])
        assert_same_results(full, head + tail)

    def test_determinism(self, method: str) -> None:
        sched = schedule(bad_steps=((2, 1),))
        assert_same_results(run(make(method), sched), run(make(method), sched))

    def test_float32_live_equals_float_replay(self, method: str) -> None:
        """Trainer passes float32 tensors; replay passes Python floats or float64 tensors."""
        sched = schedule(bad_steps=((2, 3),))
        live_ctrl, replay_ctrl, replay64_ctrl = make(method), make(method), make(method)
        live = run(live_ctrl, sched, as_tensor=torch.float32)
        replay = run(replay_ctrl, sched)
        replay64 = run(replay64_ctrl, sched, as_tensor=torch.float64)
        assert_same_results(live, replay)
        assert_same_results(live, replay64)
        assert live_ctrl.state_dict() == replay_ctrl.state_dict() == replay64_ctrl.state_dict()

    def test_permuting_components_permutes_output(self, method: str) -> None:
        sched = schedule(bad_steps=((1, 1),))
        perm = ("smooth", "fk_pos", "contact")
        a = run(make(method), sched)
        b = run(make(method, components=perm), sched)
        idx = [COMPONENTS.index(c) for c in perm]
        if not method_class(method).order_equivariant:
            # documented: scales are tied to column positions (e.g. RLW's draws)
            for (_, da), (_, db) in zip(a, b, strict=True):
                assert torch.equal(da.scales, db.scales)
            return
        for (wa, da), (wb, db) in zip(a, b, strict=True):
            torch.testing.assert_close(wb, wa[idx], rtol=1e-13, atol=0)
            assert torch.equal(db.clamped, da.clamped[idx])
            da_d, db_d = da.to_dict(), db.to_dict()
            assert da_d.keys() == db_d.keys()
            for key in da_d:
                assert db_d[key] == pytest.approx(da_d[key], rel=1e-12, abs=1e-12, nan_ok=True)

    def test_missing_and_extra_components(self, method: str) -> None:
        ctrl = make(method)
        with pytest.raises(KeyError, match="contact"):
            ctrl({"fk_pos": 1.0, "smooth": 1.0})
        with pytest.raises(KeyError, match="bogus"):
            ctrl({"fk_pos": 1.0, "contact": 1.0, "smooth": 1.0, "bogus": 1.0})
        with pytest.raises(ValueError, match="scalar"):
            ctrl({"fk_pos": torch.ones(2), "contact": 1.0, "smooth": 1.0})
        assert ctrl.step == 0  # failed calls change nothing

    def test_construction_validation_repeats_bad_value(self, method: str) -> None:
        with pytest.raises(ValueError, match=r"-0\.25"):
            make(method, adjustment_range=-0.25)
        with pytest.raises(ValueError, match="nan"):
            make(method, adjustment_range=float("nan"))
        with pytest.raises(ValueError, match=r"contact.*typo"):
            make(method, base_weights={"fk_pos": 1.0, "typo": 1.0, "smooth": 1.0})
        with pytest.raises(ValueError, match=r"-2\.0"):
            make(method, base_weights={**BASE, "contact": -2.0})
        with pytest.raises(ValueError, match=r"not_a_param.*valid parameters"):
            make(method, not_a_param=3)
        with pytest.raises(ValueError, match=r"-7"):
            make(method, log_every=-7)
        with pytest.raises(ValueError, match="duplicate"):
            make(method, components=("a", "a"), base_weights=None)
        for name, bad in method_class(method).invalid_params:
            with pytest.raises(ValueError, match=f"{name}.*{re.escape(repr(bad))}"):
                make(method, **{name: bad})

    def test_repr_reproduces_constructor(self, method: str) -> None:
        ctrl = make(method, adjustment_range=0.125, dry_run=True, log_every=7)
        clone = eval(repr(ctrl), {"AdaptiveLossWeighting": AdaptiveLossWeighting})
        assert clone.config() == ctrl.config()
        assert repr(clone) == repr(ctrl)
        custom = make(method, logger=logging.getLogger("my.trainer.weights"))
        clone = eval(
            repr(custom), {"AdaptiveLossWeighting": AdaptiveLossWeighting, "logging": logging}
        )
        assert clone.config() == custom.config()
        assert clone._logger.name == "my.trainer.weights"

    def test_nan_steps_are_skipped_and_weights_held(self, method: str) -> None:
        bad = ((0, 0), (1, 2), (2, 4), (4, 1))
        clean = run(make(method), schedule())
        ctrl = make(method)
        dirty = run(ctrl, schedule(bad_steps=bad))
        kept = [(w, d) for w, d in dirty if not bool(d.skipped)]
        skipped = [i for i, (_, d) in enumerate(dirty) if bool(d.skipped)]
        assert len(skipped) == len(bad)
        assert ctrl.skipped_steps == len(bad)
        own_losses = type(ctrl.method_impl).scales_at is not WeightingMethod.scales_at
        for n, i in enumerate(skipped, start=1):
            w, d = dirty[i]
            assert int(d.skipped_steps) == n
            if not own_losses:  # (FAMO's weights use the step's own losses: not held)
                assert torch.equal(w, dirty[i + 1][0])  # held: same weights as the next step
            assert d.to_dict()["skipped"] == 1.0
        # The skipped steps left no trace: everything else is what a clean run gives.
        for (wc, dc), (wd, dd) in zip(clean, kept, strict=True):
            assert torch.equal(wc, wd)
            assert torch.equal(dc.scales, dd.scales)

    def test_nonfinite_total_is_returned_not_raised(self, method: str) -> None:
        total, weights, diag = make(method)({"fk_pos": math.nan, "contact": 1.0, "smooth": 2.0})
        assert math.isnan(total.item()) and bool(diag.skipped)
        assert all(math.isfinite(w.item()) for w in weights.values())

    def test_gradient_flows_only_through_losses(self, method: str) -> None:
        ctrl = make(method)
        for item in schedule()[:12]:
            if item == EPOCH:
                ctrl.end_epoch()
                continue
            for dtype in (torch.float64, torch.float32):
                probe = make(method)
                probe.load_state_dict(ctrl.state_dict())
                losses = {
                    c: torch.tensor(v, dtype=dtype, requires_grad=True) for c, v in item.items()
                }
                total, weights, _ = probe(losses)
                total.backward()
                for c in COMPONENTS:
                    assert not weights[c].requires_grad
                    assert torch.equal(losses[c].grad, weights[c].to(dtype))
                assert total.item() == pytest.approx(
                    sum(weights[c].item() * item[c] for c in COMPONENTS), rel=1e-6
                )
            ctrl(item)

    def test_set_base_weights(self, method: str) -> None:
        ctrl = make(method)
        run(ctrl, schedule()[:20])
        new = {"fk_pos": 0.0, "contact": 3.0, "smooth": 0.25}
        ctrl.set_base_weights(new)
        _, weights, diag = ctrl(dict.fromkeys(COMPONENTS, 1.0))
        nb = torch.tensor([new[c] for c in COMPONENTS], dtype=torch.float64)
        assert torch.equal(diag.applied, nb * (1 + diag.deltas))
        assert weights["fk_pos"].item() == 0.0
        assert ctrl.base_weights == new
        with pytest.raises(ValueError, match="oops"):
            ctrl.set_base_weights({"fk_pos": 1.0, "contact": 1.0, "oops": 1.0})

    def test_to_dict_keys(self, method: str) -> None:
        _, _, diag = make(method)(dict.fromkeys(COMPONENTS, 0.5))
        d = diag.to_dict()
        assert all(isinstance(v, float) for v in d.values())
        expected = {"step", "epoch", "skipped", "skipped_steps", "nonfinite_state"}
        for prefix in ("scale", "delta", "clamped", "base", "applied", "proposed"):
            expected |= {f"{prefix}/{c}" for c in COMPONENTS}
        assert expected <= d.keys()
        assert all(k.startswith(f"{method}/") for k in d.keys() - expected)
        assert d["proposed/contact"] == diag.proposed[1].item()

    def test_state_dict_config_mismatch(self, method: str) -> None:
        state = make(method).state_dict()
        with pytest.raises(ValueError, match="adjustment_range"):
            make(method, adjustment_range=0.1).load_state_dict(state)
        with pytest.raises(ValueError, match="components"):
            make(method, components=("a", "b", "c"), base_weights=None).load_state_dict(state)
        other = next((m for m in METHODS if m != method), None)
        if other is not None:
            with pytest.raises(ValueError, match="method"):
                make(other).load_state_dict(state)
        with pytest.raises(ValueError, match="version"):
            make(method).load_state_dict({**state, "version": 99})

    def test_no_host_sync_on_step_path(self, method: str) -> None:
        ctrl = make(method)
        sched = schedule(epochs=4, bad_steps=((1, 1),))
        losses = [
            item if item == EPOCH else {c: torch.tensor(v) for c, v in item.items()}
            for item in sched
        ]
        with forbid_host_sync():
            for item in losses:
                if item == EPOCH:
                    ctrl.end_epoch()
                else:
                    ctrl(item)

    def test_logging_every_n_steps(self, method: str, caplog: pytest.LogCaptureFixture) -> None:
        ctrl = make(method, log_every=3)
        with caplog.at_level(logging.INFO, logger="adaptive.weighting"):
            run(ctrl, schedule(epochs=2, steps=4, bad_steps=((1, 0),)))  # 9 steps
        records = [r for r in caplog.records if r.name == "adaptive.weighting"]
        assert len(records) == 3
        msg = records[-1].getMessage()
        assert "step=6" in msg and "fk_pos" in msg and "skipped_steps=1" in msg
        assert "proposed=" in msg and "deltas=" in msg and "clamped=" in msg


# ======================================================================================
# Property tests (hypothesis) over every method
# ======================================================================================

_loss = st.floats(width=32, allow_nan=True, allow_infinity=True)
_step = st.tuples(st.tuples(_loss, _loss, _loss), st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(METHODS),
    r=st.floats(min_value=0.0, max_value=2.0),
    base=st.tuples(*[st.floats(min_value=0.0, max_value=100.0)] * 3),
    steps=st.lists(_step, min_size=1, max_size=40),
)
def test_weights_finite_and_within_range(
    method: str, r: float, base: tuple[float, float, float], steps: list
) -> None:
    bw = dict(zip(COMPONENTS, base, strict=True))
    ctrl = make(method, adjustment_range=r, base_weights=bw)
    b = torch.tensor(base, dtype=torch.float64)
    lo, hi = b * (1 - r), b * (1 + r)
    n_bad = 0
    for values, end_epoch in steps:
        _, weights, diag = ctrl(dict(zip(COMPONENTS, values, strict=True)))
        w = torch.stack([weights[c] for c in COMPONENTS])
        assert torch.isfinite(w).all() and (w >= 0).all()
        tol = 1e-12 * (1 + b)
        assert (w >= lo - tol).all() and (w <= hi + tol).all()
        # the method's own state never went non-finite (counted before the guard that
        # would replace such scales by 1, so this can fail where isfinite(scales) could not)
        assert int(diag.nonfinite_state) == 0
        assert torch.isfinite(ctrl.method_impl.scales()).all()  # the method's own output
        n_bad += not all(math.isfinite(v) for v in values)
        assert bool(diag.skipped) == (not all(math.isfinite(v) for v in values))
        if end_epoch:
            ctrl.end_epoch()
    assert ctrl.skipped_steps == n_bad
    json.dumps(ctrl.state_dict(), allow_nan=False)


# ======================================================================================
# Registry
# ======================================================================================


def test_unknown_method_lists_available() -> None:
    with pytest.raises(ValueError, match=r"'pcgrad'.*dwa.*uncertainty"):
        AdaptiveLossWeighting(COMPONENTS, method="pcgrad")


def test_register_new_method_plugs_in() -> None:
    @register_method("fixed_test")
    class Fixed(WeightingMethod):
        def __init__(self, num_components: int, *, favour: int = 0) -> None:
            super().__init__(num_components)
            self.favour = favour

        def params(self) -> dict[str, Any]:
            return {"favour": self.favour}

        def scales(self) -> torch.Tensor:
            s = torch.full((self.num_components,), 0.5, dtype=torch.float64, device=self.device)
            s[self.favour] += 0.5 * self.num_components
            return s

        def observe(self, losses: torch.Tensor, finite: torch.Tensor) -> None:
            pass

        def state_tensors(self) -> dict[str, torch.Tensor]:
            return {}

        def state_dict(self) -> dict[str, Any]:
            return {}

        def load_state_dict(self, state: Any) -> None:
            pass

    try:
        assert "fixed_test" in available_methods()
        ctrl = AdaptiveLossWeighting(
            COMPONENTS, method="fixed_test", favour=1, adjustment_range=0.3
        )
        _, w, _ = ctrl(dict.fromkeys(COMPONENTS, 1.0))
        assert [w[c].item() for c in COMPONENTS] == [0.7, 1.3, 0.7]
        assert "favour=1" in repr(ctrl)
        with pytest.raises(ValueError, match="already registered"):
            register_method("dwa")(Fixed)
    finally:
        weighting_base._REGISTRY.pop("fixed_test", None)


# ======================================================================================
# DWA against the published formula
# ======================================================================================


def _dwa_reference(ratios: list[float], temperature: float) -> list[float]:
    """λ_c = K·exp(r_c/T) / Σ_j exp(r_j/T) (Liu et al. 2019, eq. 7; mtan code)."""
    e = [math.exp(x / temperature) for x in ratios]
    return [len(ratios) * v / sum(e) for v in e]


def test_dwa_matches_published_formula() -> None:
    t = 2.0
    epochs = [
        [(1.0, 4.0), (3.0, 2.0)],  # means (2, 3)
        [(1.0, 2.0), (1.0, 1.0), (1.0, 0.0)],  # means (1, 1)
        [(0.5, 1.0), (math.nan, 5.0), (0.5, 1.0)],  # NaN step skipped -> means (0.5, 1)
        [(0.25, 2.0), (0.25, 2.0)],  # means (0.25, 2)
        [(7.0, 7.0)],
    ]
    means = [
        [
            sum(s[c] for s in ep if all(map(math.isfinite, s)))
            / sum(1 for s in ep if all(map(math.isfinite, s)))
            for c in (0, 1)
        ]
        for ep in epochs
    ]
    ctrl = AdaptiveLossWeighting(["a", "b"], method="dwa", temperature=t, adjustment_range=100.0)
    for e, ep in enumerate(epochs):
        if e < 2:
            expected = [1.0, 1.0]
            exp_ratio = [1.0, 1.0]
        else:
            exp_ratio = [means[e - 1][c] / means[e - 2][c] for c in (0, 1)]
            expected = _dwa_reference(exp_ratio, t)
        for a, b in ep:
            _, w, diag = ctrl({"a": a, "b": b})
            assert [w["a"].item(), w["b"].item()] == pytest.approx(expected, rel=1e-14)
            assert diag.method_state["ratio"].tolist() == pytest.approx(exp_ratio, rel=1e-15)
        ctrl.end_epoch()


def test_dwa_zero_and_undefined_means_give_neutral_ratio() -> None:
    ctrl = AdaptiveLossWeighting(["a", "b"], method="dwa", adjustment_range=100.0, temperature=0.5)
    feed = [
        [(0.0, 1.0)],  # epoch 0 means (0, 1)
        [(1.0, 2.0)],  # epoch 1 means (1, 2): ratio a = 1/0 -> neutral 1, b = 2
        [(math.nan, 1.0), (1.0, math.inf)],  # epoch 2: no finite step -> undefined means
        [(2.0, 2.0)],  # epoch 3: ratios NaN/.. -> neutral
        [(3.0, 3.0)],  # epoch 4: ratios 2/undefined -> neutral
        [(1.0, 1.0)],  # epoch 5: ratios 3/2 for both -> equal scales
    ]
    expected_ratios = [[1, 1], [1, 1], [1, 2], [1, 1], [1, 1], [1.5, 1.5]]
    for ep, ratios in zip(feed, expected_ratios, strict=True):
        for a, b in ep:
            _, w, diag = ctrl({"a": a, "b": b})
            assert diag.method_state["ratio"].tolist() == ratios
            assert [w["a"].item(), w["b"].item()] == pytest.approx(_dwa_reference(ratios, 0.5))
        ctrl.end_epoch()


def test_dwa_temperature_validation_and_repr() -> None:
    with pytest.raises(ValueError, match=r"temperature.*-2"):
        DWA(3, temperature=-2)
    assert repr(DWA(3, temperature=1.5)) == "DWA(3, temperature=1.5)"


# ======================================================================================
# Uncertainty weighting
# ======================================================================================


def test_uncertainty_kendall_anchor_starts_at_equilibrium_and_tracks_log_loss() -> None:
    """anchor="none": s starts at log L (the first losses), so Kendall's weights ∝ 1/L hold
    from the second step on; when the losses move, s follows to the new log L."""
    losses = {"a": 0.5, "b": 2.0, "c": 5.0}
    ctrl = AdaptiveLossWeighting(
        list(losses), method="uncertainty", lr=0.05, adjustment_range=100.0, anchor="none"
    )
    ctrl(losses)
    _, w, diag = ctrl(losses)
    inv = [1 / v for v in losses.values()]
    expected_scale = [x / (sum(inv) / 3) for x in inv]
    assert [w[c].item() for c in losses] == pytest.approx(expected_scale, rel=1e-12)
    moved = {"a": 0.5, "b": 0.2, "c": 5.0}
    for _ in range(1500):
        _, w, diag = ctrl(moved)
    expected_s = torch.tensor([math.log(v) for v in moved.values()], dtype=torch.float64)
    torch.testing.assert_close(diag.method_state["log_var"], expected_s, atol=1e-6, rtol=0)
    inv = [1 / v for v in moved.values()]
    expected_scale = [x / (sum(inv) / 3) for x in inv]
    assert [w[c].item() for c in moved] == pytest.approx(expected_scale, rel=1e-5)


def test_uncertainty_default_is_relative_to_the_first_losses() -> None:
    """anchor="first": constant losses of any magnitudes keep the base weights."""
    ctrl = AdaptiveLossWeighting(["a", "b"], {"a": 2.0, "b": 1.0}, method="uncertainty")
    for _ in range(50):
        _, w, _ = ctrl({"a": 1e-9, "b": 3e4})
    assert [w["a"].item(), w["b"].item()] == [2.0, 1.0]


def test_uncertainty_matches_torch_adam_on_kendall_objective() -> None:
    """Independent check: autograd + torch.optim.Adam on J(s) = Σ e^{-s} L + s with s
    started at log L_0, its gradient clipped below at -grad_clip and s - log L_0 clamped."""
    gen = torch.Generator().manual_seed(0)
    mags = torch.tensor([0.05, 1.0, 20.0], dtype=torch.float64)
    seq_t = torch.rand(200, 3, generator=gen, dtype=torch.float64) * 2 * mags
    seq_t[100:, 2] *= 10.0  # drives c's s - log L_0 into the upper bound
    seq_t[150, 0] *= 50.0  # an outlier: its gradient is clipped
    seq = seq_t.tolist()
    lr, s_min, s_max, clip = 0.03, -1.0, 1.0, 0.5
    ctrl = AdaptiveLossWeighting(
        ["a", "b", "c"], method="uncertainty", lr=lr, s_min=s_min, s_max=s_max, grad_clip=clip
    )
    log_a = torch.tensor(seq[0], dtype=torch.float64).log()
    s = log_a.clone().requires_grad_(True)
    opt = torch.optim.Adam([s], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    hit_bound = clipped = False
    for i, row in enumerate(seq):
        _, _, diag = ctrl(dict(zip("abc", row, strict=True)))
        if i > 0:  # before the first step the anchors (log L_0) are not known yet
            torch.testing.assert_close(diag.method_state["log_var"], s.detach(), rtol=0, atol=1e-9)
        loss_t = torch.tensor(row, dtype=torch.float64)
        objective = (torch.exp(-s) * loss_t + s).sum()
        if i > 0:
            assert diag.method_state["objective"].item() == pytest.approx(
                objective.item(), rel=1e-9
            )
        opt.zero_grad()
        objective.backward()
        assert s.grad is not None
        clipped |= bool((s.grad < -clip).any())
        s.grad.clamp_(min=-clip)
        before = s.detach().clone()
        opt.step()
        with torch.no_grad():
            s.copy_(before + (s - before).clamp(-lr, lr))  # at most lr per update
            s.copy_(log_a + (s - log_a).clamp(s_min, s_max))
            hit_bound |= bool(((s - log_a).abs() >= 1.0 - 1e-12).any())
    assert hit_bound and clipped


def test_uncertainty_vanishing_loss_is_bounded_and_total_nonnegative() -> None:
    ctrl = AdaptiveLossWeighting(
        ["a", "b"], method="uncertainty", lr=0.5, s_min=-3.0, s_max=3.0, adjustment_range=0.5
    )
    ctrl({"a": 1.0, "b": 0.01})  # anchors: log 1 = 0 and log 0.01
    for _ in range(300):
        total, w, diag = ctrl({"a": 1e-30, "b": 0.01})
        assert total.item() >= 0
    s = diag.method_state["log_var"].tolist()
    assert s[0] == -3.0  # held at the (relative) bound instead of running to -inf
    assert all(math.isfinite(v.item()) for v in w.values())


def test_uncertainty_zero_loss_is_an_absent_component() -> None:
    """A loss of exactly 0 (a component absent from the batch) leaves that component's
    state untouched: before its first positive loss it stays neutral, later it holds."""
    ctrl = AdaptiveLossWeighting(["a", "b"], method="uncertainty", lr=0.5)
    for _ in range(20):
        _, w, diag = ctrl({"a": 0.0, "b": 1.0})
    assert diag.method_state["log_var"].tolist() == [0.0, 0.0]
    assert [w["a"].item(), w["b"].item()] == [1.0, 1.0]
    ctrl({"a": 2.0, "b": 1.0})
    before = ctrl.method_impl.state_dict()
    ctrl({"a": 0.0, "b": 1.0})
    after = ctrl.method_impl.state_dict()
    for key in ("rel_log_var", "adam_m", "adam_v", "adam_t"):
        assert after[key][0] == before[key][0]


def test_uncertainty_recovers_quickly_after_an_outlier_and_a_zero_stretch() -> None:
    """A 1e6x outlier and a 200-step stretch of tiny losses (1e-6 x): the weights come back
    near where an undisturbed run is, 150 steps after the outlier and 300 steps after
    the stretch (no stale second moment; docs/ADAPTIVE_LOSS.md)."""
    gen = torch.Generator().manual_seed(1)
    n = 1500
    clean = (torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.4 + 0.8) * torch.tensor(
        [1.0, 0.01], dtype=torch.float64
    )
    bad = clean.clone()
    bad[300, 0] *= 1e6
    bad[500:700, 1] *= 1e-6
    ref = AdaptiveLossWeighting(["a", "b"], method="uncertainty", log_every=0)
    dis = AdaptiveLossWeighting(["a", "b"], method="uncertainty", log_every=0)
    w_ref = ref.step_block(clean).proposed
    w_dis = dis.step_block(bad).proposed
    assert (w_dis[450:500] - w_ref[450:500]).abs().max() < 0.02
    assert (w_dis[1000:] - w_ref[1000:]).abs().max() < 0.03


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 10_000),
    st.sampled_from(["first", "none"]),
    st.floats(0.01, 0.3),
)
def test_uncertainty_weights_are_scale_invariant(seed: int, anchor: str, lr: float) -> None:
    """The same trace x 1e-8, x 1 and x 1e8 gives the same weights (within 1e-3)."""
    gen = torch.Generator().manual_seed(seed)
    mags = torch.tensor([2.0, 0.03, 5e-4], dtype=torch.float64)
    trend = torch.linspace(1.0, 0.1, 300, dtype=torch.float64).unsqueeze(1) ** torch.tensor(
        [1.0, 2.0, 0.5], dtype=torch.float64
    )
    losses = (torch.rand(300, 3, generator=gen, dtype=torch.float64) + 0.5) * mags * trend
    weights = []
    for scale in (1e-8, 1.0, 1e8):
        ctrl = AdaptiveLossWeighting(
            ["a", "b", "c"],
            method="uncertainty",
            lr=lr,
            anchor=anchor,
            log_every=0,
            adjustment_range=100.0,
        )
        weights.append(ctrl.step_block(losses * scale).proposed)
    assert (weights[0] - weights[1]).abs().max() < 1e-3
    assert (weights[2] - weights[1]).abs().max() < 1e-3


def test_uncertainty_nonfinite_state_is_counted_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A state that goes non-finite (here forced) is counted in the diagnostics, the state
    dict and a WARNING; the weights fall back to the base weights meanwhile."""
    ctrl = AdaptiveLossWeighting(["a", "b"], method="uncertainty", log_every=0)
    ctrl({"a": 1.0, "b": 1.0})
    impl = ctrl.method_impl
    assert isinstance(impl, UncertaintyWeighting)
    impl._u = torch.full_like(impl._u, math.nan)
    _, w, diag = ctrl({"a": 1.0, "b": 2.0})
    assert [w["a"].item(), w["b"].item()] == [1.0, 1.0]
    assert int(diag.nonfinite_state) == 1
    with caplog.at_level(logging.WARNING, logger="adaptive.weighting"):
        state = ctrl.state_dict()
    assert state["nonfinite_state_steps"] == 1
    assert "non-finite scales on 1 step" in caplog.text


def test_uncertainty_param_validation() -> None:
    with pytest.raises(ValueError, match=r"s_min.*2\.0"):
        UncertaintyWeighting(2, s_min=2.0, s_max=1.0)
    with pytest.raises(ValueError, match=r"s_min.*-50"):
        UncertaintyWeighting(2, s_min=-50.0)
    with pytest.raises(ValueError, match=r"s_max.*1e\+30"):
        UncertaintyWeighting(2, s_max=1e30)
    with pytest.raises(ValueError, match=r"anchor.*'last'"):
        UncertaintyWeighting(2, anchor="last")
    with pytest.raises(ValueError, match=r"lr.*'fast'"):
        UncertaintyWeighting(2, lr="fast")  # type: ignore[arg-type]


def test_dwa_negative_losses_are_neutral_and_restart_forgets_history() -> None:
    ctrl = AdaptiveLossWeighting(["a", "b"], method="dwa")
    for losses in ({"a": -1.0, "b": 1.0}, {"a": -2.0, "b": 0.5}, {"a": 1.0, "b": 1.0}):
        ctrl(losses)
        ctrl.end_epoch()
    ratio = ctrl.method_impl.diagnostics(torch.zeros(2))["ratio"].tolist()
    assert ratio == [1.0, 2.0]  # a's ratio of negative means is neutral
    ctrl.restart()
    _, w, diag = ctrl({"a": 1.0, "b": 1.0})
    assert [w["a"].item(), w["b"].item()] == [1.0, 1.0]
    assert diag.method_state["ratio"].tolist() == [1.0, 1.0]
    assert ctrl.step == 4  # counters survive a restart


# ======================================================================================
# Block stepping (step_block), batched configurations, fast replay and sweeps
# ======================================================================================


def _block_rows(out: Any) -> list[dict[str, float]]:
    return [out.diagnostics(i).to_dict() for i in range(len(out))]


def _random_losses(gen: torch.Generator, n: int, bad_p: float = 0.05) -> torch.Tensor:
    """float32-valued float64 losses (n, 3) of different scales with NaN/±inf steps."""
    mags = torch.tensor([3.0, 0.2, 0.05], dtype=torch.float64)
    x = (torch.rand(n, 3, generator=gen, dtype=torch.float64) * 2 * mags).float().double()
    bad = torch.rand(n, generator=gen) < bad_p
    cols = torch.randint(0, 3, (n,), generator=gen)
    vals = torch.tensor([math.nan, math.inf, -math.inf], dtype=torch.float64)
    kinds = torch.randint(0, 3, (n,), generator=gen)
    x[bad, cols[bad]] = vals[kinds[bad]]
    return x


def _drive_blocks(
    ctrl: AdaptiveLossWeighting, losses: torch.Tensor, epochs: list[int], cuts: list[int]
) -> list[dict[str, float]]:
    """Feed `losses` through step_block, split at epoch ends and at `cuts`."""
    rows: list[dict[str, float]] = []
    edges = sorted({0, len(losses) // 2, len(losses), *cuts, *epochs})
    for a, b in itertools.pairwise(edges):
        if a in epochs and a > 0:
            ctrl.end_epoch()
        if a == len(losses) // 2:
            ctrl.set_base_weights({"fk_pos": 0.25, "contact": 4.0, "smooth": 1.0})
        rows += _block_rows(ctrl.step_block(losses[a:b]))
    return rows


def _drive_steps(
    ctrl: AdaptiveLossWeighting, losses: torch.Tensor, epochs: list[int], as_tensor: bool
) -> list[dict[str, float]]:
    rows = []
    for t in range(len(losses)):
        if t in epochs and t > 0:
            ctrl.end_epoch()
        if t == len(losses) // 2:
            ctrl.set_base_weights({"fk_pos": 0.25, "contact": 4.0, "smooth": 1.0})
        row = losses[t]
        vals = list(row.float().unbind(0)) if as_tensor else row.tolist()  # float32 / floats
        item = dict(zip(COMPONENTS, vals, strict=True))
        rows.append(ctrl(item)[2].to_dict())
    return rows


def _same_rows(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.keys() == y.keys(), i
        bad = [k for k in x if not (x[k] == y[k] or (math.isnan(x[k]) and math.isnan(y[k])))]
        assert not bad, (i, {k: (x[k], y[k]) for k in bad})


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_step_block_equals_per_step_calls(method: str, dry_run: bool, seed: int) -> None:
    """Any split of an epoch into blocks gives, bit for bit, the per-step results."""
    gen = torch.Generator().manual_seed(seed)
    n = 240
    losses = _random_losses(gen, n)
    epochs = sorted(set(torch.randint(1, n, (5,), generator=gen).tolist()))
    cuts = torch.randint(1, n, (int(torch.randint(0, 25, (1,), generator=gen)),), generator=gen)
    kw = {"dry_run": dry_run, "adjustment_range": 0.2}
    step_ctrl, block_ctrl = make(method, **kw), make(method, **kw)
    per_step = _drive_steps(step_ctrl, losses, epochs, as_tensor=bool(seed % 2))
    blocks = _drive_blocks(block_ctrl, losses, epochs, cuts.tolist())
    _same_rows(per_step, blocks)
    assert step_ctrl.state_dict() == block_ctrl.state_dict()
    assert block_ctrl.step == n and block_ctrl.skipped_steps == step_ctrl.skipped_steps > 0


@pytest.mark.parametrize("method", METHODS)
def test_step_block_one_block_per_epoch_and_resume(method: str) -> None:
    gen = torch.Generator().manual_seed(7)
    losses = _random_losses(gen, 120)
    ref = make(method)
    ref_rows = _drive_steps(ref, losses, [40, 80], as_tensor=False)
    a = make(method)
    rows = _block_rows(a.step_block(losses[:40]))
    a.end_epoch()
    rows += _block_rows(a.step_block(losses[40:60]))
    a.set_base_weights({"fk_pos": 0.25, "contact": 4.0, "smooth": 1.0})
    rows += _block_rows(a.step_block(losses[60:63]))
    b = make(method, base_weights=None)  # resumed mid-epoch from JSON
    b.load_state_dict(json.loads(json.dumps(a.state_dict(), allow_nan=False)))
    rows += _block_rows(b.step_block(losses[63:80]))
    b.end_epoch()
    rows += _block_rows(b.step_block(losses[80:]))
    _same_rows(ref_rows, rows)
    assert b.state_dict() == ref.state_dict()


def test_uncertainty_long_blocks_run_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptive.weighting import _uncertainty

    monkeypatch.setattr(_uncertainty, "_MAX_CHUNK", 8)
    gen = torch.Generator().manual_seed(3)
    losses = _random_losses(gen, 61)
    ref = make("uncertainty")
    ref_rows = _drive_steps(ref, losses, [], as_tensor=False)
    ctrl = make("uncertainty")
    _same_rows(ref_rows, _drive_blocks(ctrl, losses, [], [5]))  # blocks of 5, 25, 31 steps


@pytest.mark.parametrize("method", METHODS)
def test_step_block_shapes_validation_and_no_host_sync(method: str) -> None:
    ctrl = make(method)
    out = ctrl.step_block(torch.ones(4, 3, dtype=torch.float32))
    assert len(out) == 4 and out.start == 0 and ctrl.step == 4
    for t in (out.scales, out.deltas, out.applied, out.proposed, out.base):
        assert t.shape == (4, 3) and t.dtype == torch.float64
    assert out.clamped.shape == (4, 3) and out.clamped.dtype == torch.bool
    assert out.skipped.shape == (4,) and out.skipped_steps.dtype == torch.int64
    with pytest.raises(ValueError, match=r"\(T >= 1, 3\)"):
        ctrl.step_block(torch.ones(4, 2))
    with pytest.raises(ValueError, match=r"\(T >= 1, 3\)"):
        ctrl.step_block(torch.ones(0, 3))
    blocks = [torch.rand(n, 3) for n in (1, 5, 17)]
    blocks[1][2, 0] = math.nan
    with forbid_host_sync():
        for blk in blocks:
            ctrl.step_block(blk)
            ctrl.end_epoch()


def test_step_block_logs_like_per_step(caplog: pytest.LogCaptureFixture) -> None:
    losses = torch.rand(9, 3, dtype=torch.float64)
    msgs = []
    for blocks in ([losses], [losses[:2], losses[2:7], losses[7:]]):
        ctrl = make("dwa", log_every=3)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="adaptive.weighting"):
            for b in blocks:
                ctrl.step_block(b)
        msgs.append([r.getMessage() for r in caplog.records if r.name == "adaptive.weighting"])
    assert len(msgs[0]) == 3 and msgs[0] == msgs[1]
    assert "step=6" in msgs[0][-1]


def test_default_block_for_per_step_methods() -> None:
    """A method implementing only scales()/observe() gets step_block for free."""

    @register_method("counting_test")
    class Counting(WeightingMethod):
        def __init__(self, num_components: int) -> None:
            super().__init__(num_components)
            self.n = torch.zeros((), dtype=torch.float64)

        def params(self) -> dict[str, Any]:
            return {}

        def scales(self) -> torch.Tensor:
            w = torch.arange(1, self.num_components + 1, dtype=torch.float64) + self.n
            return w / w.mean()

        def observe(self, losses: torch.Tensor, finite: torch.Tensor) -> None:
            self.n = self.n + finite

        def diagnostics(self, losses: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"n": self.n}

        def state_tensors(self) -> dict[str, torch.Tensor]:
            return {"n": self.n}

        def state_dict(self) -> dict[str, Any]:
            return {"n": float(self.n)}

        def load_state_dict(self, state: Any) -> None:
            self.n = torch.tensor(state["n"], dtype=torch.float64)

    try:
        losses = _random_losses(torch.Generator().manual_seed(0), 30, bad_p=0.2)
        a = AdaptiveLossWeighting(COMPONENTS, method="counting_test", log_every=0)
        b = AdaptiveLossWeighting(COMPONENTS, method="counting_test", log_every=0)
        _same_rows(
            _drive_steps(a, losses, [10], as_tensor=False),
            _drive_blocks(b, losses, [10], [4, 21]),
        )
        with pytest.raises(TypeError, match="does not support batched"):
            AdaptiveLossWeighting.batched(
                COMPONENTS, method="counting_test", configs=[{}, {"adjustment_range": 0.1}]
            )
    finally:
        weighting_base._REGISTRY.pop("counting_test", None)


@pytest.mark.parametrize("method", METHODS)
def test_batched_configs_equal_separate_controllers(method: str) -> None:
    configs = list(method_class(method).sweep_configs)
    gen = torch.Generator().manual_seed(11)
    losses = _random_losses(gen, 150)
    epochs, cuts = [30, 60, 90, 120], [7, 45, 46, 100]
    batched = Driven(
        AdaptiveLossWeighting.batched(COMPONENTS, BASE, method=method, configs=configs)
    )
    assert batched.is_batched and batched.num_configs == len(configs)
    outs = []
    edges = sorted({0, 150, *epochs, *cuts})
    for a, b in itertools.pairwise(edges):
        if a in epochs:
            batched.end_epoch()
        outs.append(batched.step_block(losses[a:b]))
    k = len(configs)
    assert outs[0].proposed.shape == (edges[1], k, 3) and outs[0].skipped.shape == (edges[1],)
    for j, cfg in enumerate(configs):
        single = Driven(AdaptiveLossWeighting(COMPONENTS, BASE, method=method, log_every=0, **cfg))
        ref = []
        for a, b in itertools.pairwise(edges):
            if a in epochs:
                single.end_epoch()
            ref += _block_rows(single.step_block(losses[a:b]))
        got = []
        for out in outs:
            for i in range(len(out)):
                d = out.diagnostics(i)
                sel = WeightingDiagnostics(
                    step=d.step,
                    epoch=d.epoch,
                    method=d.method,
                    dry_run=d.dry_run,
                    components=d.components,
                    scales=d.scales[j],
                    deltas=d.deltas[j],
                    clamped=d.clamped[j],
                    base=d.base[j],
                    applied=d.applied[j],
                    proposed=d.proposed[j],
                    skipped=d.skipped,
                    skipped_steps=d.skipped_steps,
                    method_state={key: v[j] for key, v in d.method_state.items()},
                )
                got.append(sel.to_dict())
        _same_rows(ref, got)
        assert batched.select(j).state_dict() == single.state_dict()
        assert batched.configs()[j] == single.configs()[0]
    # __call__ on a batched controller: (K,) totals and weights per component.
    total, weights, diag = batched(dict.fromkeys(COMPONENTS, 1.0))
    assert total.shape == (k,) and weights["contact"].shape == (k,)
    assert diag.proposed.shape == (k, 3)
    with pytest.raises(TypeError, match="select"):
        batched.state_dict()


def test_batched_validation_and_repr() -> None:
    with pytest.raises(ValueError, match="empty"):
        AdaptiveLossWeighting.batched(COMPONENTS, method="dwa", configs=[])
    with pytest.raises(ValueError, match=r"temperature.*-1"):
        AdaptiveLossWeighting.batched(COMPONENTS, method="dwa", configs=[{}, {"temperature": -1}])
    with pytest.raises(ValueError, match=r"adjustment_range.*-0\.5"):
        AdaptiveLossWeighting.batched(
            COMPONENTS, method="dwa", configs=[{"adjustment_range": -0.5}]
        )
    with pytest.raises(ValueError, match="bogus"):
        AdaptiveLossWeighting.batched(COMPONENTS, method="uncertainty", configs=[{"bogus": 1}])
    ctrl = AdaptiveLossWeighting.batched(
        COMPONENTS, BASE, method="uncertainty", configs=[{"lr": 0.1}, {"adjustment_range": 0.5}]
    )
    assert ctrl.configs() == [
        {"adjustment_range": 0.3, **UncertaintyWeighting(3, lr=0.1).params()},
        {"adjustment_range": 0.5, **UncertaintyWeighting(3).params()},
    ]
    assert "batched" in repr(ctrl) and "configs" in ctrl.config()
    assert ctrl.select(-1).adjustment_range == 0.5
    with pytest.raises(IndexError):
        ctrl.select(2)


# ----------------------------------------------------------------------- fast replay
def _synthetic_trace(n: int = 900, c: int = 4, epochs: int = 6, seed: int = 0) -> Any:
    """In-memory trace: float32 losses with NaN/inf steps, float64 base weights changing
    mid-epoch and at an epoch start, a few epochs of unequal length."""
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from adaptive.trace import Trace

    rng = np.random.default_rng(seed)
    comps = [f"c{i}" for i in range(c)]
    step = np.arange(n, dtype=np.int64)
    epoch = np.minimum((step**1.1 * epochs / n**1.1).astype(np.int32), epochs - 1)
    scale, decay = rng.lognormal(size=c), rng.uniform(0.8, 1.1, size=c)
    noise = rng.lognormal(sigma=0.3, size=(n, c))
    losses = (scale * decay ** epoch[:, None] * noise).astype(np.float32)
    bad = rng.random(n) < 0.01
    losses[bad, rng.integers(0, c, bad.sum())] = np.nan
    losses[rng.random(n) < 0.005, -1] = np.inf
    steps = pd.DataFrame({"run_id": "syn", "epoch": epoch, "step": step})
    first_of_epoch3 = int(np.flatnonzero(epoch == 3)[0])
    for j, name in enumerate(comps):
        steps[f"loss/{name}"] = losses[:, j]
    # the extras gradnorm / famo read (float32, as recorded), NaN where the loss is
    raw = torch.from_numpy(losses.astype(np.float64))
    for key, values in synth_extras(("grad_norm", "loss_after"), raw).items():
        for j, name in enumerate(comps):
            steps[f"{key}/{name}"] = values[:, j].numpy().astype(np.float32)
    for j, name in enumerate(comps):
        base = np.full(n, 1.0 + 0.25 * j)
        base[n // 3 + 5 :] = 0.5 + 0.1 * j  # mid-epoch change
        base[first_of_epoch3:] = 2.0  # change at an epoch start
        steps[f"weight_base/{name}"] = base
    empty = pd.DataFrame({"run_id": pd.Series([], dtype=str), "epoch": [], "split": []})
    return Trace(
        path=Path("synthetic"), steps=steps, epochs=empty, components=comps, metrics=[], version=1
    )


@pytest.mark.parametrize("method", METHODS)
def test_fast_replay_frame_equals_per_step_replay(method: str) -> None:
    import pandas as pd

    from replay._weighting_replay import replay_weighting_fast
    from tests.reference_replay import replay_weighting

    trace = _synthetic_trace()
    params = dict(method_class(method).example_params)
    done: list[int] = []
    old = replay_weighting(trace, method, adjustment_range=0.4, **params)
    # the torch path (a compiled kernel equals it within 1e-6: tests/test_kernels.py)
    new = replay_weighting_fast(
        trace, method, adjustment_range=0.4, progress=done.append, kernels=False, **params
    )
    assert list(new.frame.columns) == list(old.frame.columns)
    pd.testing.assert_frame_equal(new.frame, old.frame, check_exact=True)
    assert new.params == old.params and new.names == old.names and new.run_id == old.run_id
    assert sum(done) == len(trace.steps) and len(done) == trace.steps["epoch"].nunique()
    assert new.frame["skipped"].sum() > 0


@pytest.mark.parametrize("method", METHODS)
def test_sweep_equals_separate_fast_replays(method: str) -> None:
    import numpy as np

    from replay._weighting_replay import replay_weighting_fast, sweep_weighting

    trace = _synthetic_trace(n=500, c=3, epochs=5, seed=1)
    configs = list(method_class(method).sweep_configs)
    # the torch path (a kernel method's compiled sweep: tests/test_kernels.py)
    res = sweep_weighting(trace, method, configs, kernels=False)
    n, k, c = len(trace.steps), len(configs), 3
    for key in ("proposed", "deltas", "clamped", "scales"):
        assert res[key].shape == (n, k, c)
    assert res["skipped"].shape == (n,)
    names = {"proposed": "proposed/weight", "deltas": "delta", "clamped": "clamped"}
    names["scales"] = "scale"
    for j, cfg in enumerate(configs):
        frame = replay_weighting_fast(trace, method, kernels=False, **cfg).frame
        for key, prefix in names.items():
            for i, comp in enumerate(trace.components):
                np.testing.assert_array_equal(res[key][:, j, i], frame[f"{prefix}/{comp}"])
        np.testing.assert_array_equal(res["skipped"], frame["skipped"])
    blocks: list[tuple[int, int]] = []
    lean = sweep_weighting(
        trace,
        method,
        configs,
        outputs=("proposed",),
        on_block=lambda a, b, _: blocks.append((a, b)),
        kernels=False,
    )
    np.testing.assert_array_equal(lean["proposed"], res["proposed"])
    assert "deltas" not in lean and blocks[0][0] == 0 and blocks[-1][1] == n


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([1e-8, 1e-3, 1e3, 1e8]),
    temperature=st.floats(0.5, 4.0),
)
def test_dwa_is_invariant_to_a_common_rescaling(
    seed: int, scale: float, temperature: float
) -> None:
    """DWA reads ratios of epoch means: the same losses in other units give the same
    weights (up to rounding)."""
    gen = torch.Generator().manual_seed(seed)
    epochs = 6
    losses = torch.rand(epochs * 10, 3, generator=gen, dtype=torch.float64) + 0.1
    losses *= torch.linspace(1.0, 0.2, epochs * 10, dtype=torch.float64).unsqueeze(1) ** (
        torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    )
    out = []
    for k in (1.0, scale):
        ctrl = AdaptiveLossWeighting(
            COMPONENTS, method="dwa", temperature=temperature, adjustment_range=10.0, log_every=0
        )
        rows = []
        for e in range(epochs):
            rows.append(ctrl.step_block(losses[e * 10 : (e + 1) * 10] * k).proposed)
            ctrl.end_epoch()
        out.append(torch.cat(rows))
    assert (out[0] - out[1]).abs().max() < 1e-9
    assert (out[0][-1] != 1.0).any()  # it did move: the property is not vacuous


# ======================================================================================
# A method is one class: registering a toy method here is all it takes
# ======================================================================================


class _ToyFollowLoss(weighting_base.TensorStateMethod):
    """Toy method for the registry test: weights ∝ an EMA of the losses (the larger a
    loss, the more weight), scales ``C · m / Σ m``; neutral until the first step."""

    aggressive_params: ClassVar[dict[str, Any]] = {"momentum": 0.0}
    example_params: ClassVar[dict[str, Any]] = {"momentum": 0.5}
    invalid_params = (("momentum", 1.0), ("momentum", -0.5))
    sweep_configs = ({"momentum": 0.0, "adjustment_range": 0.05}, {"momentum": 0.9})
    state_fields = ("_m",)
    config_fields = ("_momentum",)

    def __init__(self, num_components: int, *, momentum: float = 0.9) -> None:
        super().__init__(num_components)
        self.momentum = check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self._momentum = torch.full((1, 1), self.momentum, dtype=torch.float64)
        self._m = torch.full((1, num_components), math.nan, dtype=torch.float64)

    def params(self) -> dict[str, Any]:
        return {"momentum": self.momentum}

    def scales(self) -> torch.Tensor:
        m = torch.where(self._m.isnan(), 1.0, self._m.clamp_min(1e-12))
        return self._row(self.num_components * m / m.sum(-1, keepdim=True))

    def observe(self, losses: torch.Tensor, finite: torch.Tensor) -> None:
        x = losses.abs().clamp(1e-12, 1e12)
        a = self._momentum
        ema = torch.where(self._m.isnan(), x, a * self._m + (1.0 - a) * x)
        self._m = torch.where(finite, ema, self._m)


@pytest.fixture
def toy_method() -> Iterator[str]:
    name = "toy_follow_loss"
    register_method(name)(_ToyFollowLoss)
    try:
        yield name
    finally:  # the registry is a plain dict: unregister so other tests see the built-ins
        weighting_base._REGISTRY.pop(name, None)
    assert name not in available_methods()


def test_a_registered_toy_method_works_everywhere(toy_method: str) -> None:
    import inspect

    import replay

    assert toy_method in available_methods()
    # the controller
    ctrl = AdaptiveLossWeighting(COMPONENTS, BASE, method=toy_method, momentum=0.0)
    ctrl({"fk_pos": 3.0, "contact": 1.0, "smooth": 2.0})
    _, w, diag = ctrl(dict.fromkeys(COMPONENTS, 1.0))
    assert diag.scales.tolist() == [1.5, 0.5, 1.0]  # C * L / sum(L), from the step before
    assert w["contact"].item() == BASE["contact"] * (1 - 0.3)  # clamped at the default ±0.3
    # the whole contract suite, read from the class attributes
    suite = TestContract()
    ran = 0
    for name, fn in inspect.getmembers(TestContract, inspect.isfunction):
        params = list(inspect.signature(fn).parameters)
        if name.startswith("test_") and params == ["self", "method"]:
            getattr(suite, name)(toy_method)
            ran += 1
    suite.test_state_dict_json_resume_bit_exact(toy_method, 13)
    assert ran >= 15
    test_batched_configs_equal_separate_controllers(toy_method)
    test_step_block_one_block_per_epoch_and_resume(toy_method)
    # replay and sweep over a trace
    trace = _synthetic_trace(n=300, c=3, epochs=5, seed=2)
    result = replay.replay(trace, toy_method, momentum=0.5, adjustment_range=0.2)
    frame = result.frame
    assert len(frame) == len(trace.steps)
    assert (frame[[f"delta/{c}" for c in trace.components]].abs() <= 0.2 + 1e-12).all().all()
    assert frame[[f"delta/{c}" for c in trace.components]].abs().to_numpy().max() > 0.01
    swept = replay.sweep({"syn": trace}, toy_method, {"momentum": [0.0, 0.5, 0.9]})
    assert sorted(swept.table["momentum"]) == [0.0, 0.5, 0.9]
    assert swept.method == toy_method


def test_a_registered_toy_method_trains_live(toy_method: str, tmp_path: Any) -> None:
    """The trainer takes a registered method by name, with its parameters from the config
    (its class defaults where the config has no section), and replay matches it."""
    import numpy as np

    import replay
    from adaptive.trace import read_trace
    from adaptive.train.config import load_config
    from adaptive.train.trainer import Trainer
    from tests.test_train import TINY

    for name, sets in (("defaults", []), ("set", [f"adaptive.{toy_method}.momentum=0.5"])):
        cfg = load_config(overrides=[*TINY, "run.epochs=2", f"adaptive.loss={toy_method!r}", *sets])
        Trainer(cfg, tmp_path / name).train()
        tr = read_trace(tmp_path / name / "trace.parquet")
        momentum = 0.5 if sets else 0.9
        res = replay.replay(tr, toy_method, momentum=momentum)
        for c in tr.components:
            live = tr.steps[f"proposed/weight/{c}"].to_numpy(np.float64)
            np.testing.assert_allclose(res.frame[f"proposed/weight/{c}"], live, rtol=1e-6)
        assert (tr.steps[f"proposed/weight/{c}"] != tr.steps[f"weight_base/{c}"]).any()


def test_a_bad_controller_state_changes_nothing() -> None:
    ctrl = make("dwa")
    run(ctrl, schedule(epochs=3))
    good = ctrl.state_dict()
    fresh = make("dwa")
    before = fresh.state_dict()
    for key, bad in (("nonfinite_state_steps", -1), ("pending_after_step", "no"), ("step", -2)):
        with pytest.raises(ValueError, match=key):
            fresh.load_state_dict({**good, key: bad})
        assert fresh.state_dict() == before  # nothing was half-loaded


@pytest.mark.parametrize("method", METHODS)
def test_block_maths_equal_the_methods_own_per_step_functions(method: str) -> None:
    """A method that overrides the block core (`scales_and_observe`) must give, bit for bit,
    what its own per-step functions (`scales`, `observe`, via the generic loop) give."""
    from adaptive.weighting import MethodInputs

    cls = method_class(method)
    gen = torch.Generator().manual_seed(3)
    losses = _random_losses(gen, 90, bad_p=0.1)
    for configs in ([dict(cls.aggressive_params)], list(cls.sweep_configs)):
        configs = [{k: v for k, v in c.items() if k != "adjustment_range"} for c in configs]
        block, loop = cls.batched(3, configs), cls.batched(3, configs)
        for a, b in ((0, 1), (1, 7), (7, 40), (40, 41), (41, 90)):
            raw = losses[a:b]
            finite = raw.mul(0.0).sum(-1).eq(0.0)
            inputs = MethodInputs(raw, finite, synth_extras(cls.requires, raw))
            s1, st1 = block.advance(inputs)
            s2, st2 = loop._per_step(inputs)
            assert torch.equal(s1.expand_as(s2), s2), (a, b)
            for key in st2:
                assert torch.equal(st1[key].expand_as(st2[key]), st2[key]) or torch.allclose(
                    st1[key].expand_as(st2[key]), st2[key], rtol=0, atol=0, equal_nan=True
                ), key
            if a == 40:
                block.end_epoch()
                loop.end_epoch()
        assert [block.select(k).state_dict() for k in range(block.num_configs)] == [
            loop.select(k).state_dict() for k in range(loop.num_configs)
        ]
