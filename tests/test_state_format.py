"""The JSON state format of DWA and uncertainty weighting is stable.

The two literals below were written by ``AdaptiveLossWeighting.state_dict()`` of the code
before these methods' state moved to one declaration (``TensorStateMethod``), after
:func:`_scenario`. A checkpoint written then must load now, and the same run must still
write exactly the same checkpoint.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
import torch

from adaptive.weighting import AdaptiveLossWeighting, StateField, TensorStateMethod

_DWA_STATE: dict[str, Any] = {
    "version": 1,
    "config": {
        "components": ["a", "b", "c"],
        "method": "dwa",
        "adjustment_range": 0.3,
        "method_params": {"temperature": 0.5},
    },
    "base_weights": {"a": 1.0, "b": 0.5, "c": 2.0},
    "dry_run": False,
    "step": 21,
    "epoch": 3,
    "skipped_steps": 1,
    "nonfinite_state_steps": 0,
    "method_state": {
        "epoch_sum": [3.887999999999999, 0.829, 0.39930000000000015],
        "epoch_count": 5.0,
        "mean_prev": [1.296, 0.18200000000000005, 0.07260000000000001],
        "mean_prev2": [2.16, 0.2, 0.066],
        "ratio": [0.6, 0.9100000000000003, 1.1],
        "scales": [0.5379033727909059, 0.9999236634847424, 1.4621729637243517],
        "epochs_done": 3,
    },
}

_UNCERTAINTY_STATE: dict[str, Any] = {
    "version": 1,
    "config": {
        "components": ["a", "b", "c"],
        "method": "uncertainty",
        "adjustment_range": 0.3,
        "method_params": {
            "lr": 0.1,
            "s_min": -10.0,
            "s_max": 10.0,
            "beta1": 0.9,
            "beta2": 0.999,
            "eps": 1e-08,
            "grad_clip": 1.0,
            "anchor": "first",
        },
    },
    "base_weights": {"a": 1.0, "b": 0.5, "c": 2.0},
    "dry_run": False,
    "step": 21,
    "epoch": 3,
    "skipped_steps": 1,
    "nonfinite_state_steps": 0,
    "method_state": {
        "anchor": [3.0, 0.2, "nan"],
        "rel_log_var": [-0.8653717844228558, -0.1865150774084106, 0.0],
        "adam_m": [0.3831466165055112, -0.015571942579885506, 0.0],
        "adam_v": [0.0038804327557598697, 0.00029219492126939016, 0.0],
        "adam_t": [20, 20, 0],
        "adam_beta1_pow": [0.12157665459056936, 0.12157665459056936, 1.0],
        "adam_beta2_pow": [0.9801888648295347, 0.9801888648295347, 1.0],
    },
}

CASES = {
    "dwa": ({"temperature": 0.5}, _DWA_STATE),
    "uncertainty": ({"lr": 0.1}, _UNCERTAINTY_STATE),
}


def _controller(method: str) -> AdaptiveLossWeighting:
    params, _ = CASES[method]
    base = {"a": 1.0, "b": 0.5, "c": 2.0}
    return AdaptiveLossWeighting(["a", "b", "c"], base, method=method, log_every=0, **params)


def _losses(method: str, e: int, s: int) -> dict[str, float]:
    # uncertainty: component c is absent (0) throughout, so its anchor stays NaN
    c = 0.0 if method == "uncertainty" else 0.05 * (1.1**e) * (1 + 0.1 * s)
    return {"a": 3.0 * 0.6**e * (1 + 0.25 * (s % 3)), "b": 0.2 * 0.9**e + 0.01 * s, "c": c}


def _scenario(method: str) -> AdaptiveLossWeighting:
    """4 epochs of 5 steps (a NaN step in epoch 1), stopped mid-run before the 4th end."""
    ctrl = _controller(method)
    for e in range(4):
        for s in range(5):
            if (e, s) == (1, 2):
                ctrl({"a": 1.0, "b": math.nan, "c": 1.0})
            ctrl(_losses(method, e, s))
        if e < 3:
            ctrl.end_epoch()
    return ctrl


def _continue(ctrl: AdaptiveLossWeighting, method: str) -> list[torch.Tensor]:
    out = []
    for e in range(4, 7):
        ctrl.end_epoch()
        for s in range(3):
            _, weights, _ = ctrl(_losses(method, e, s))
            out.append(torch.stack(list(weights.values())))
    return out


@pytest.mark.parametrize("method", sorted(CASES))
def test_same_run_writes_the_same_checkpoint(method: str) -> None:
    state = _scenario(method).state_dict()
    assert json.dumps(state, allow_nan=False) == json.dumps(CASES[method][1], allow_nan=False)


@pytest.mark.parametrize("method", sorted(CASES))
def test_old_checkpoint_loads_round_trips_and_resumes_bit_exact(method: str) -> None:
    literal = CASES[method][1]
    resumed = _controller(method)
    resumed.load_state_dict(json.loads(json.dumps(literal)))
    assert resumed.state_dict() == json.loads(json.dumps(literal))
    reference = _scenario(method)
    for got, want in zip(_continue(resumed, method), _continue(reference, method), strict=True):
        assert torch.equal(got, want)
    assert resumed.state_dict() == reference.state_dict()
    assert reference.state_dict()["method_state"] != literal["method_state"]  # it moved on


@pytest.mark.parametrize(
    ("method", "key", "value", "message"),
    [
        ("dwa", "epochs_done", -1, "epochs_done"),
        ("dwa", "epoch_count", [5.0], "epoch_count"),
        ("dwa", "mean_prev", [1.0, 2.0], "mean_prev"),
        ("uncertainty", "adam_t", [20, 20.5, 0], "adam_t"),
        ("uncertainty", "adam_t", [20, -1, 0], "adam_t"),
        ("uncertainty", "rel_log_var", "0.0", "rel_log_var"),
    ],
)
def test_bad_method_state_is_one_clear_error_and_changes_nothing(
    method: str, key: str, value: Any, message: str
) -> None:
    ctrl = _scenario(method)
    before = ctrl.state_dict()
    bad = json.loads(json.dumps(CASES[method][1]))
    bad["method_state"][key] = value
    with pytest.raises(ValueError, match=message) as err:
        ctrl.load_state_dict(bad)
    assert "\n" not in str(err.value) and repr(value) in str(err.value)
    assert ctrl.state_dict() == before


@pytest.mark.parametrize("method", sorted(CASES))
def test_missing_method_state_entry_is_named(method: str) -> None:
    bad = json.loads(json.dumps(CASES[method][1]))
    key = next(iter(bad["method_state"]))
    del bad["method_state"][key]
    with pytest.raises(ValueError, match=repr(key)):
        _controller(method).load_state_dict(bad)


# --------------------------------------------------------------------------------------
# The declaration itself (TensorStateMethod + StateField), on a toy method using every kind
# --------------------------------------------------------------------------------------


def _double(t: torch.Tensor) -> torch.Tensor:
    return t * 2.0


def _halve(t: torch.Tensor) -> torch.Tensor:
    return t / 2.0


class _AllKinds(TensorStateMethod):
    """Toy: scales ∝ a running loss sum; counts, a total, a host counter, a scaled entry."""

    state_fields = (
        "_sum",
        StateField("_total", key="grand_total", kind="float"),
        StateField("_seen", kind="counts"),
        StateField("_doubled", key="twice", transform=_double, inverse=_halve),
        StateField("_ends", key="epochs", kind="int"),
    )
    config_fields = ("_gain",)

    def __init__(self, num_components: int, *, gain: float = 1.0) -> None:
        super().__init__(num_components)
        self.gain = float(gain)
        c = num_components
        self._gain = torch.full((1, 1), self.gain, dtype=torch.float64)
        self._sum = torch.ones(1, c, dtype=torch.float64)
        self._total = torch.zeros(1, 1, dtype=torch.float64)
        self._seen = torch.zeros(1, c, dtype=torch.float64)
        self._doubled = torch.zeros(1, c, dtype=torch.float64)
        self._ends = 0

    def params(self) -> dict[str, Any]:
        return {"gain": self.gain}

    def scales(self) -> torch.Tensor:
        s = self._sum * self._gain
        return self._row(self.num_components * s / s.sum(-1, keepdim=True))

    def observe(self, losses: torch.Tensor, finite: torch.Tensor) -> None:
        self._sum = torch.where(finite, self._sum + losses, self._sum)
        self._total = self._total + torch.where(finite, losses.sum(), 0.0)
        self._seen = self._seen + (finite & (losses > 0)).to(torch.float64)
        self._doubled = torch.where(finite, losses, self._doubled)

    def end_epoch(self) -> None:
        self._ends += 1


def _fed(method: _AllKinds) -> _AllKinds:
    for row in ([0.5, 0.0, 2.0], [1.25, 3.0, 0.75]):
        method.observe(torch.tensor(row, dtype=torch.float64), torch.tensor(True))
    method.end_epoch()
    return method


def test_state_is_derived_from_the_declaration() -> None:
    m = _fed(_AllKinds(3, gain=2.0))
    state = m.state_dict()
    assert state == {
        "sum": [2.75, 4.0, 3.75],
        "grand_total": 7.5,
        "seen": [2, 1, 2],
        "twice": [2.5, 6.0, 1.5],
        "epochs": 1,
    }
    assert set(m.state_tensors()) == {"_sum", "_total", "_seen", "_doubled"}  # not the int
    assert set(m.config_tensors()) == {"_gain"}
    fresh = _AllKinds(3, gain=2.0)
    fresh.load_state_dict(json.loads(json.dumps(state)))
    assert fresh.state_dict() == state and fresh._ends == 1
    for attr, t in m.state_tensors().items():
        assert torch.equal(getattr(fresh, attr), t)
    assert torch.equal(fresh.scales(), m.scales())


def test_batched_and_select_follow_the_declaration() -> None:
    both = _AllKinds.batched(3, [{"gain": 1.0}, {"gain": 3.0}])
    _fed(both)
    assert both._sum.shape == (2, 3) and both._total.shape == (2, 1) and both._ends == 1
    one = both.select(1)
    assert one.params() == {"gain": 3.0} and one._gain.shape == (1, 1)
    assert one.state_dict() == _fed(_AllKinds(3, gain=3.0)).state_dict()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("grand_total", [7.5]),
        ("grand_total", "many"),
        ("seen", [2, 1]),
        ("seen", [2, True, 2]),
        ("twice", [1.0, 2.0]),
        ("epochs", 1.0),
        ("epochs", -2),
    ],
)
def test_bad_entry_of_any_kind_names_it_and_changes_nothing(key: str, value: Any) -> None:
    m = _fed(_AllKinds(3))
    before = m.state_dict()
    with pytest.raises(ValueError, match=f"{key!r}.*{re.escape(repr(value))}"):
        m.load_state_dict({**before, key: value})
    assert m.state_dict() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attr": "_x", "kind": "list"}, "kind"),
        ({"attr": "_x", "transform": _double}, "both transform and inverse"),
        ({"attr": "_x", "kind": "int", "transform": _double, "inverse": _halve}, "no transform"),
        ({"attr": "not an attr"}, "identifier"),
    ],
)
def test_bad_declaration_fails_at_once(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StateField(**kwargs)


def test_duplicate_state_keys_fail_when_the_class_is_defined() -> None:
    with pytest.raises(ValueError, match="duplicate state keys"):

        class _Twice(TensorStateMethod):  # pragma: no cover - never instantiated
            state_fields = ("_a", StateField("_b", key="a"))


# ------------------------------------------------------------------------ scheduler
# Scheduler checkpoints written before scheduler laws were registered (no "law" in the
# config; the guard's entries at the top level), captured from that code after 93 batches
# of `_drive_scheduler`. They must load as the guard's and resume bit for bit.
_SCHEDULER_KW: list[dict[str, Any]] = [
    {"update_interval": 10, "min_samples": 3, "cooldown": 1, "patience": 1, "recover_patience": 2},
    {
        "update_interval": 10,
        "min_samples": 3,
        "on_nonfinite": "skip",
        "spike_count": 1,
        "free_metric": "MPJPE",
        "val_metric": "YawAbsDeg",
        "limits": {"freerun_horizon": (1, 9)},
    },
]
_SCHEDULER_LITERALS: list[dict[str, Any]] = [
    {
        "version": 2,
        "config": {
            "adjustment_rate": 0.1,
            "update_interval": 10,
            "use_epoch_metrics": True,
            "adjustment_range": 0.3,
            "dry_run": False,
            "free_metric": "YawAbsDeg",
            "val_metric": None,
            "spike_z": 4.0,
            "spike_count": 2,
            "rising_threshold": 0.25,
            "baseline_momentum": 0.8,
            "min_samples": 3,
            "recover_patience": 2,
            "on_nonfinite": "ease_off",
            "patience": 1,
            "epoch_tolerance": 0.01,
            "cooldown": 1,
            "limits": None,
            "param_rules": None,
            "history_size": 100,
            "log_every": 0,
        },
        "delta": 0.0,
        "base_values": {"tf_ratio": 0.5, "freerun_horizon": 8.0, "freerun_weight": 0.5},
        "batches_seen": 93,
        "epochs_seen": 2,
        "updates": 9,
        "window_loss": [1.0893996663600558, 1.0105987511751158, 0.9220533930384195],
        "window_grad_norm": [1.8551805606599052, 2.09417378890519, 2.19520219577865],
        "window_regime": [0, 1, 1],
        "references": {
            "0": [0.019066227629785472, 0.10444798111798223, 0.6846591946152965, 0.102923762333084],
            "1": [
                0.016228794237583204,
                0.10598488537561444,
                0.7000330400405788,
                0.10502156141573107,
            ],
        },
        "cooldown_left": 0,
        "calm_streak": 1,
        "prev_free": 15.0,
        "prev_val": 8.8,
        "gap_streak": 0,
        "both_streak": 0,
        "last_reason": "valfree_worse",
        "last_change_step": 80,
        "decision": {"level": "batch", "step": 90, "epoch": 2, "reason": None, "action": "hold"},
        "signals": {
            "window_size": 10.0,
            "window_nonfinite": 0.0,
            "regimes": 2.0,
            "loss_trend": -0.032197323504218466,
            "grad_z": 0.9622652605205546,
            "grad_outliers": 0.0,
            "grad_median": 1.9511932358335786,
            "grad_reference": 1.9911527013719126,
            "calm_streak": 1.0,
            "free_metric": 15.0,
            "free_trend": 0.2,
            "val_metric": 8.8,
            "val_trend": -0.011235955056179735,
        },
        "reason_counts": {
            "nonfinite": 1,
            "grad_spike": 0,
            "loss_rising": 0,
            "valfree_worse": 1,
            "both_worse": 0,
            "recovered": 0,
        },
        "history": [
            {
                "step": 70,
                "epoch": 1,
                "level": "batch",
                "reason": "nonfinite",
                "old_delta": 0.0,
                "new_delta": -0.1,
                "detail": "1 non-finite loss/grad-norm value(s) in the last 10 batches",
            },
            {
                "step": 80,
                "epoch": 2,
                "level": "epoch",
                "reason": "valfree_worse",
                "old_delta": -0.1,
                "new_delta": 0.0,
                "detail": "valfree YawAbsDeg worse for 1 epoch(s) while val is not (last: "
                "valfree +20.00%, val -1.12%)",
            },
        ],
    },
    {
        "version": 2,
        "config": {
            "adjustment_rate": 0.1,
            "update_interval": 10,
            "use_epoch_metrics": True,
            "adjustment_range": 0.3,
            "dry_run": False,
            "free_metric": "MPJPE",
            "val_metric": "YawAbsDeg",
            "spike_z": 4.0,
            "spike_count": 1,
            "rising_threshold": 0.25,
            "baseline_momentum": 0.8,
            "min_samples": 3,
            "recover_patience": 4,
            "on_nonfinite": "skip",
            "patience": 2,
            "epoch_tolerance": 0.01,
            "cooldown": 2,
            "limits": {"freerun_horizon": [1.0, 9.0]},
            "param_rules": None,
            "history_size": 100,
            "log_every": 0,
        },
        "delta": -0.2,
        "base_values": {"tf_ratio": 0.5, "freerun_horizon": 8.0, "freerun_weight": 0.5},
        "batches_seen": 93,
        "epochs_seen": 2,
        "updates": 9,
        "window_loss": [1.0893996663600558, 1.0105987511751158, 0.9220533930384195],
        "window_grad_norm": [1.8551805606599052, 2.09417378890519, 2.19520219577865],
        "window_regime": [0, 1, 1],
        "references": {
            "0": [0.019066227629785472, 0.10444798111798223, 0.6846591946152965, 0.102923762333084],
            "1": [
                0.016228794237583204,
                0.10598488537561444,
                0.7000330400405788,
                0.10502156141573107,
            ],
        },
        "cooldown_left": 0,
        "calm_streak": 2,
        "prev_free": 98.0,
        "prev_val": 8.8,
        "gap_streak": 0,
        "both_streak": 0,
        "last_reason": "grad_spike",
        "last_change_step": 60,
        "decision": {"level": "batch", "step": 90, "epoch": 2, "reason": None, "action": "hold"},
        "signals": {
            "window_size": 10.0,
            "window_nonfinite": 0.0,
            "regimes": 2.0,
            "loss_trend": -0.032197323504218466,
            "grad_z": 0.9622652605205546,
            "grad_outliers": 0.0,
            "grad_median": 1.9511932358335786,
            "grad_reference": 1.9911527013719126,
            "calm_streak": 2.0,
            "free_metric": 98.0,
            "free_trend": -0.010101010101010102,
            "val_metric": 8.8,
            "val_trend": -0.011235955056179735,
        },
        "reason_counts": {
            "nonfinite": 0,
            "grad_spike": 2,
            "loss_rising": 0,
            "valfree_worse": 0,
            "both_worse": 0,
            "recovered": 0,
        },
        "history": [
            {
                "step": 30,
                "epoch": 0,
                "level": "batch",
                "reason": "grad_spike",
                "old_delta": 0.0,
                "new_delta": -0.1,
                "detail": "1 batch(es) in the last 10 with a grad-norm z-score above 4 "
                "(max z 30.9: window median 2.01097 vs reference 1.89944, "
                "regime 1)",
            },
            {
                "step": 60,
                "epoch": 1,
                "level": "batch",
                "reason": "grad_spike",
                "old_delta": -0.1,
                "new_delta": -0.2,
                "detail": "1 batch(es) in the last 10 with a grad-norm z-score above 4 "
                "(max z 29: window median 2.05186 vs reference 1.94448, regime "
                "1)",
            },
        ],
    },
]


def _drive_scheduler(s: Any, start: int, stop: int) -> None:
    for i in range(start, stop):
        if i % 40 == 0:
            if i:
                e = i // 40
                s.step_epoch(
                    {"YawAbsDeg": 10.0 + (e % 3) * 2.5, "MPJPE": 100.0 - e},
                    {"YawAbsDeg": 9.0 - 0.1 * e, "MPJPE": 90.0},
                )
            s.set_base_values({"tf_ratio": 0.5, "freerun_horizon": 8.0, "freerun_weight": 0.5})
        loss = 1.0 + 0.1 * math.sin(i) + (3.0 if i % 37 == 5 else 0.0)
        grad = 2.0 + 0.2 * math.cos(1.3 * i) + (40.0 if i % 23 == 4 else 0.0)
        if i == 61:
            loss = math.nan
        s.step_batch(loss, grad, regime=(i // 7) % 2)


@pytest.mark.parametrize("case", [0, 1])
def test_old_scheduler_checkpoint_loads_as_the_guard_and_resumes_bit_exact(case: int) -> None:
    from adaptive.scheduler import AdaptiveScheduler

    kw, literal = _SCHEDULER_KW[case], json.loads(json.dumps(_SCHEDULER_LITERALS[case]))
    assert "law" not in literal["config"]
    reference = AdaptiveScheduler(**kw)
    _drive_scheduler(reference, 0, 93)
    written = reference.state_dict()
    assert written["config"].pop("law") == "guard"
    assert written == literal  # the same state, written the same way
    restored = AdaptiveScheduler(**kw)
    restored.load_state_dict(literal)
    assert restored.law == "guard" and restored.num_changes == reference.num_changes > 0
    _drive_scheduler(reference, 93, 300)
    _drive_scheduler(restored, 93, 300)
    assert json.dumps(restored.state_dict()) == json.dumps(reference.state_dict())
    assert restored.history() == reference.history()
