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
