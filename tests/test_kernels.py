"""The replay kernels' contract (replay/_kernels.py): a compiled kernel replays a method
like the torch code it stands in for.

For every kernel method, on random and adversarial inputs (NaN / inf rows, absent,
negative, tiny and huge losses, non-finite extras, restarts at stage changes, base weights
changing mid-epoch, resume from a state dict taken mid-run), the kernel's outputs equal the
torch path's within 1e-6 relative (float32 inputs, as a trace holds them), the clamp and
skip flags are identical, and the controller's state afterwards is the same (its
``state_dict()``: counts exactly, floats within the same tolerance).

Without numba (the ``fast`` extra) the comparisons are skipped with that reason; the
selection and fallback tests still run. ``.ci/run`` runs this file a second time with
``ADAPTIVE_REPLAY_KERNELS=0`` (the torch path forced by the environment).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from adaptive.weighting import AdaptiveLossWeighting, method_class
from replay import _kernels
from replay._weighting_replay import (
    WeightingInputs,
    _controller,
    replay_single,
    replay_weighting_fast,
)

needs_numba = pytest.mark.skipif(
    not _kernels.numba_available(),
    reason="numba is not installed (pip install -e '.[fast]'): no kernel to compare",
)

RTOL = 1e-6
# Values that cross zero (deltas, logits, log-variances) are compared with an absolute
# floor far below anything a weight shows: a few float64 ulps of the values around them.
ATOL = 1e-12

#: (method, parameters): each kernel method at its defaults and at settings that make it
#: move fast and hit its limits (bounds, clips, floors), every parameter covered.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("uncertainty", {}),
    ("uncertainty", {"lr": 0.2, "beta1": 0.0, "beta2": 0.9, "grad_clip": 0.5, "eps": 1e-3}),
    ("uncertainty", {"lr": 0.1, "anchor": "none", "s_min": -0.5, "s_max": 0.7}),
    ("uncertainty", {"lr": 0.05, "step_limit": False}),
    ("imtl_l", {"lr": 0.3}),
    ("imtl_l", {"lr": 0.1, "grad_clip": 0.5, "init": "first"}),
    ("famo", {}),
    ("famo", {"w_lr": 0.5, "gamma": 0.0}),
    ("gradnorm", {}),
    ("gradnorm", {"alpha": 3.0, "lr": 0.2, "min_weight": 0.2}),
    ("logloss", {"smoothing": 0.9}),
    ("logloss", {}),
]
IDS = [f"{m}-{i}" for i, (m, _) in enumerate(CASES)]


def make_inputs(
    seed: int, n: int = 400, c: int = 5, *, adversarial: bool = False
) -> WeightingInputs:
    """Losses and extras as a trace gives them (float32), 5 epochs, a restart at the
    epoch-3 stage change, base weights changing mid-epoch 1 and at epoch 3."""
    rng = np.random.default_rng(seed)
    epochs = np.repeat(np.arange(5), n // 5)
    n = len(epochs)
    scale = rng.lognormal(0.0, 2.0, c)
    trend = rng.uniform(0.97, 1.01, c) ** np.arange(n)[:, None]
    losses = scale * trend * rng.lognormal(0.0, 0.4, (n, c))
    grad_norm = np.sqrt(losses) * rng.lognormal(0.0, 0.3, (n, c))
    loss_after = losses * rng.uniform(0.95, 1.02, (n, c))
    if adversarial:
        losses[7::37, 0] = np.nan  # missing values: the step is skipped
        losses[11::53, 1] = np.inf
        losses[13::61, 2] = -np.inf
        losses[3::17, 3] = 0.0  # absent at that step (uncertainty), log 0 (log-loss)
        losses[5::29, 1] = -0.25  # negative
        losses[40:48] = losses[40]  # repeated rows
        losses[60:70, 4] = 1e-30  # tiny and huge, still float32
        losses[70:80, 4] = 1e30
        losses[100:140, 2] = losses[100:140, 1]  # two identical components
        losses[200:230] = 1.0  # ties: every component equal
        grad_norm[9::41, 2] = np.nan
        grad_norm[19::43, 0] = -1.0
        grad_norm[150:155] = 0.0  # a zero mean gradient norm: no update
        loss_after[15::47, 3] = np.nan
        loss_after[21::59, 1] = 0.0
        loss_after[33::71, 0] = -2.0
    base = np.tile(1.0 + 0.25 * np.arange(c), (n, 1))
    base[n // 5 + 7 :] = 0.5 + 0.1 * np.arange(c)  # mid-epoch change
    base[3 * n // 5 :] = 2.0
    restarts = np.zeros(n, dtype=bool)
    restarts[3 * n // 5] = True  # a new stage at an epoch start
    return WeightingInputs(
        components=[f"c{j}" for j in range(c)],
        losses=losses.astype(np.float32),
        base=base,
        epochs=epochs,
        restarts=restarts,
        extras={
            "grad_norm": grad_norm.astype(np.float32),
            "loss_after": loss_after.astype(np.float32),
        },
    )


def part(inputs: WeightingInputs, a: int, b: int) -> WeightingInputs:
    """Rows a..b of `inputs` (a resumed run sees only its own rows)."""
    return WeightingInputs(
        inputs.components,
        inputs.losses[a:b],
        inputs.base[a:b],
        inputs.epochs[a:b],
        inputs.restarts[a:b],
        extras={k: v[a:b] for k, v in inputs.extras.items()},
    )


def controller(
    method: str, params: dict[str, Any], inputs: WeightingInputs, r: float
) -> AdaptiveLossWeighting:
    # the constructor replay_weighting_fast uses
    comps, base0 = inputs.components, inputs.base[0]
    return _controller(method, comps, base0, None, adjustment_range=r, **params)


def for_method(method: str, inputs: WeightingInputs) -> WeightingInputs:
    """`inputs` with the extras `method` requires only (as weighting_inputs reads them)."""
    requires = method_class(method).requires
    extras = {k: v for k, v in inputs.extras.items() if k in requires}
    return WeightingInputs(
        inputs.components, inputs.losses, inputs.base, inputs.epochs, inputs.restarts, [], extras
    )


def run_both(
    method: str,
    params: dict[str, Any],
    inputs: WeightingInputs,
    *,
    r: float = 0.3,
    state: dict[str, Any] | None = None,
) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """The kernel and the torch path over the same inputs from the same state."""
    inputs = for_method(method, inputs)
    runs = []
    for kernels in (True, False):
        ctrl = controller(method, params, inputs, r)
        if state is not None:
            ctrl.load_state_dict(state)
        res = replay_single(ctrl, inputs, kernels=kernels)
        assert res.kernel is kernels  # the comparison is not torch against torch
        runs.append((res, ctrl.state_dict()))
    (k, k_state), (t, t_state) = runs
    return k, t, k_state, t_state


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    if want.dtype == np.bool_:
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=what)


def assert_same_state(got: Any, want: Any, where: str = "state") -> None:
    """State dicts equal: ints, strings and flags exactly, floats within the tolerance."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_same_state(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_state(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, float), where
        assert math.isclose(got, want, rel_tol=RTOL, abs_tol=ATOL), (where, got, want)
    else:
        assert type(got) is type(want) and got == want, (where, got, want)


def assert_same_run(k: Any, t: Any, k_state: dict, t_state: dict) -> None:
    assert k.outputs.keys() == t.outputs.keys()
    for key in t.outputs:
        assert_close(k.outputs[key], t.outputs[key], key)
    assert list(k.state) == list(t.state)  # the frame's diagnostic columns, in order
    for key in t.state:
        assert_close(k.state[key], t.state[key], f"state {key}")
    assert_same_state(k_state, t_state)


# --------------------------------------------------------------------------------------
# kernel ≡ torch path
# --------------------------------------------------------------------------------------


@needs_numba
@pytest.mark.parametrize(("method", "params"), CASES, ids=IDS)
@pytest.mark.parametrize("adversarial", [False, True], ids=["random", "adversarial"])
def test_kernel_equals_the_torch_path(method: str, params: dict, adversarial: bool) -> None:
    inputs = make_inputs(seed=len(IDS) + len(params), adversarial=adversarial)
    k, t, k_state, t_state = run_both(method, params, inputs, r=0.3)
    assert_same_run(k, t, k_state, t_state)
    # the inputs exercised what they are meant to: skips, clamps, restarts, movement
    skipped = t.outputs["skipped"]
    assert skipped.any() == adversarial
    assert t.outputs["clamped"].any()
    assert np.ptp(t.outputs["scales"][~skipped], axis=0).max() > 1e-3


@needs_numba
@pytest.mark.parametrize(("method", "params"), CASES[::2], ids=IDS[::2])
@pytest.mark.parametrize("r", [0.0, 0.02, 5.0])
def test_kernel_clamp_flags_at_every_range(method: str, params: dict, r: float) -> None:
    """The clamp flag is ``Δ != s - 1``: identical at a zero range (every moved step), a
    tight one (most steps) and a wide one (none)."""
    inputs = make_inputs(seed=3, n=200, adversarial=True)
    assert_same_run(*run_both(method, params, inputs, r=r))


@needs_numba
@pytest.mark.parametrize(("method", "params"), CASES, ids=IDS)
def test_kernel_resumes_from_a_state_dict_like_the_torch_path(method: str, params: dict) -> None:
    """From a state dict taken mid-run (mid-epoch, after NaN rows): the kernel continues
    like the torch path, and the state a kernel leaves continues on the torch path like
    the torch path's own."""
    inputs = for_method(method, make_inputs(seed=11, adversarial=True))
    cut = len(inputs.losses) // 2 + 13
    first, second = part(inputs, 0, cut), part(inputs, cut, len(inputs.losses))
    states = []
    for kernels in (False, True):
        ctrl = controller(method, params, inputs, 0.3)
        replay_single(ctrl, first, kernels=kernels)
        states.append(ctrl.state_dict())
    torch_state, kernel_state = states
    assert_same_state(kernel_state, torch_state)
    assert torch_state["step"] == cut and torch_state["skipped_steps"] > 0
    assert_same_run(*run_both(method, params, second, state=torch_state))
    ctrl = controller(method, params, inputs, 0.3)
    ctrl.load_state_dict(kernel_state)
    went_on = replay_single(ctrl, second, kernels=False)
    _, t, _, t_state = run_both(method, params, second, state=torch_state)
    assert_same_run(went_on, t, ctrl.state_dict(), t_state)


@needs_numba
@pytest.mark.parametrize("method", _kernels.KERNEL_METHODS)
def test_replay_frames_agree_and_the_environment_forces_the_torch_path(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on a trace: same frame columns in the same order, values within the
    tolerance; ``ADAPTIVE_REPLAY_KERNELS=0`` gives the torch path's frame bit for bit."""
    import pandas as pd

    from tests.test_weighting import _synthetic_trace

    trace = _synthetic_trace(n=300, c=4, epochs=4, seed=2)
    params = {"smoothing": 0.5} if method == "logloss" else {}
    monkeypatch.delenv(_kernels.ENV, raising=False)
    fast = replay_weighting_fast(trace, method, **params).frame
    torch_path = replay_weighting_fast(trace, method, kernels=False, **params).frame
    monkeypatch.setenv(_kernels.ENV, "0")
    forced = replay_weighting_fast(trace, method, **params).frame
    pd.testing.assert_frame_equal(forced, torch_path, check_exact=True)
    assert list(fast.columns) == list(torch_path.columns)
    assert (fast.dtypes == torch_path.dtypes).all()
    for col in torch_path.columns:
        assert_close(fast[col].to_numpy(), torch_path[col].to_numpy(), col)
    assert not fast.equals(torch_path) or method == "gradnorm"  # it did run the kernel


# --------------------------------------------------------------------------------------
# selection and fallback (these run without numba too)
# --------------------------------------------------------------------------------------


def test_selection_falls_back_to_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = for_method("uncertainty", make_inputs(seed=5, n=50, c=3))
    unc = controller("uncertainty", {}, inputs, 0.3)
    monkeypatch.setenv(_kernels.ENV, "0")
    kernel, why = _kernels.select(unc)
    assert kernel is None and _kernels.ENV in why
    monkeypatch.setenv(_kernels.ENV, "1")
    assert _kernels.select(unc, force=False) == (None, "kernels=False")
    # no kernel for a block method, nor for batched configurations or a logging controller
    assert "no kernel" in _kernels.select(controller("dwa", {}, inputs, 0.3))[1]
    batched = AdaptiveLossWeighting.batched(
        inputs.components, method="uncertainty", configs=[{}, {"lr": 0.1}]
    )
    assert "batched" in _kernels.select(batched, force=True)[1]
    logging_ctrl = AdaptiveLossWeighting(inputs.components, method="famo", log_every=10)
    assert "logs" in _kernels.select(logging_ctrl, force=True)[1]
    # numba missing: the torch path, with the reason how to get the kernels
    monkeypatch.setattr(_kernels, "_NUMBA", False)
    kernel, why = _kernels.select(unc)
    assert kernel is None and "pip install" in why
    res = replay_single(unc, inputs)
    ref_ctrl = controller("uncertainty", {}, inputs, 0.3)
    ref = replay_single(ref_ctrl, inputs, kernels=False)
    assert not res.kernel
    for key in ref.outputs:
        np.testing.assert_array_equal(res.outputs[key], ref.outputs[key])
    assert unc.state_dict() == ref_ctrl.state_dict()


def test_a_parameter_without_kernel_support_runs_the_torch_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A setting added to a method after its kernel (`later_params`) is taken by the
    kernel only at its implicit value, the one that keeps the old maths."""
    from adaptive.weighting._uncertainty import UncertaintyWeighting

    monkeypatch.setattr(_kernels, "_NUMBA", object())  # whether numba is here or not
    table = _kernels._kernels()
    old = table[UncertaintyWeighting]
    without = _kernels.Kernel(old.method, old.params - {"step_limit"}, old.run)
    monkeypatch.setattr(_kernels, "_kernels", lambda: {**table, UncertaintyWeighting: without})
    monkeypatch.setattr(UncertaintyWeighting, "later_params", {"step_limit": True})
    inputs = make_inputs(seed=5, n=50, c=3)
    assert _kernels.select(controller("uncertainty", {}, inputs, 0.3), force=True)[0] is without
    kernel, why = _kernels.select(
        controller("uncertainty", {"step_limit": False}, inputs, 0.3), force=True
    )
    assert kernel is None and "step_limit=False" in why
    monkeypatch.setattr(UncertaintyWeighting, "later_params", {})
    kernel, why = _kernels.select(controller("uncertainty", {}, inputs, 0.3), force=True)
    assert kernel is None and "step_limit=True" in why


@needs_numba
def test_kernel_runs_wherever_it_applies() -> None:
    """With numba, every kernel method at every tested setting selects its kernel."""
    inputs = make_inputs(seed=5, n=50, c=3)
    for method, params in CASES:
        kernel, why = _kernels.select(controller(method, params, inputs, 0.3), force=True)
        assert kernel is not None and kernel.method == method, why


# --------------------------------------------------------------------------------------
# sweeps: each configuration through its kernel, on threads (replay/_kernel_sweep.py)
# --------------------------------------------------------------------------------------


@needs_numba
@pytest.mark.parametrize("method", _kernels.KERNEL_METHODS)
def test_a_sweep_is_each_configurations_kernel_replay(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configuration k of a kernel sweep is `replay_weighting_fast` with the kernel, bit for
    bit, whether kept whole or handed out in blocks, on any number of threads; and the
    torch path's batched sweep within the contract's tolerance, with the same flags."""
    import torch

    from replay import _kernel_sweep
    from replay._weighting_replay import sweep_weighting
    from tests.test_weighting import _synthetic_trace

    trace = _synthetic_trace(n=300, c=4, epochs=4, seed=3)
    steps = trace.steps.copy()
    steps.loc[17, "loss/c1"] = np.nan  # a skipped step
    steps.loc[101, "loss/c2"] = np.inf
    trace = type(trace)(**{**trace.__dict__, "steps": steps})
    extra = {"smoothing": 0.5} if method == "logloss" else {}
    configs = [{**extra, **cfg} for cfg in method_class(method).sweep_configs]
    configs += [{**extra, "adjustment_range": r} for r in (0.0, 0.02, 5.0)]
    whole = sweep_weighting(trace, method, configs)
    n, k, c = len(trace.steps), len(configs), 4
    for j, cfg in enumerate(configs):
        frame = replay_weighting_fast(trace, method, kernels=True, **cfg).frame
        for key, prefix in (("proposed", "proposed/weight"), ("deltas", "delta"),
                            ("clamped", "clamped"), ("scales", "scale")):  # fmt: skip
            for i, comp in enumerate(trace.components):
                np.testing.assert_array_equal(whole[key][:, j, i], frame[f"{prefix}/{comp}"])
        np.testing.assert_array_equal(whole["skipped"], frame["skipped"])

    monkeypatch.setattr(_kernel_sweep, "BLOCK_VALUES", 7 * k * c)  # blocks of 64 steps
    monkeypatch.setattr(_kernel_sweep, "_threads", lambda: 3)
    blocks: list[Any] = []
    blocked = sweep_weighting(
        trace, method, configs, outputs=("deltas",), on_block=lambda a, b, o: blocks.append(
            (a, b, o.deltas.clone(), o.skipped_steps.clone(), o.base.shape))
    )  # fmt: skip
    np.testing.assert_array_equal(blocked["deltas"], whole["deltas"])
    assert "proposed" not in blocked
    assert [b[0] for b in blocks] == list(range(0, n, 64)) and blocks[-1][1] == n
    deltas = torch.cat([b[2] for b in blocks]).numpy()
    np.testing.assert_array_equal(deltas, whole["deltas"])
    counts = torch.cat([b[3] for b in blocks]).numpy()
    np.testing.assert_array_equal(counts, np.cumsum(whole["skipped"]))
    assert all(b[4] == (b[1] - b[0], k, c) for b in blocks)

    torch_path = sweep_weighting(trace, method, configs, kernels=False)
    for key in ("proposed", "deltas", "scales"):
        assert_close(whole[key], torch_path[key], key)
    np.testing.assert_array_equal(whole["clamped"], torch_path["clamped"])
    np.testing.assert_array_equal(whole["skipped"], torch_path["skipped"])
