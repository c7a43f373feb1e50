"""Host syncs on the live path (adaptive weighting + scheduler + trace recording).

On CUDA (skipped where no GPU exists): the weighting and the trace writer never make the
host wait for the device, and the scheduler does at most once per batch window, when
the window closes (it reads the window's losses and grad norms in one transfer). The
syncs are counted with torch's sync debug mode (tests/host_syncs.py).

On CPU: tests of the counting itself, and the same live loop on a simulated device
(every tensor read on the host counts as a sync), which checks where the code reads
values, not what CUDA does.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from adaptive.scheduler import AdaptiveScheduler
from adaptive.scheduler._scheduler import _to_host
from adaptive.trace import TraceWriter, read_trace
from adaptive.util import component_grad_norms
from adaptive.weighting import AdaptiveLossWeighting, available_methods
from tests.host_syncs import SYNC_MESSAGE, count_host_syncs, simulated_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
COMPS = ["fk_pos", "rot", "root_vel", "yaw"]
INTERVAL = 4  # scheduler batches per window
STEPS = 14  # windows close after steps 3, 7 and 11; steps 12-13 leave one open
CLOSING_STEPS = [3, 7, 11]


@dataclass
class StepSyncs:
    window_closed: bool  # the scheduler closed a window at this step
    weighting_and_trace: int  # syncs in weighting(...), end_epoch() and log_step(...)
    scheduler: int  # syncs in scheduler.step_batch(...)


def _weigh(
    weighting: AdaptiveLossWeighting, raw: dict[str, torch.Tensor], model: torch.nn.Module
) -> tuple:
    """The controller call, with the extras its method needs: per-component gradient norms
    on the model's weight (GradNorm) before, and the losses after a step (FAMO) after it
    (the losses re-evaluated stand in for the ones after an optimiser step)."""
    extras = None
    if "grad_norm" in weighting.requires:
        extras = {"grad_norm": component_grad_norms(raw, [model.weight])}
    result = weighting(raw, extras=extras)
    if weighting.needs_after_step:
        after = {c: v.detach() * 0.9 for c, v in raw.items()}
        weighting.after_step({"loss_after": after})
    return result


def _weigh_and_record(
    step: int,
    out: torch.Tensor,
    weighting: AdaptiveLossWeighting,
    scheduler: AdaptiveScheduler,
    writer: TraceWriter,
    model: torch.nn.Module,
) -> tuple[torch.Tensor, torch.Tensor]:
    raw = {c: out[i] for i, c in enumerate(COMPS)}
    values = scheduler.values()
    total, weights, diag = _weigh(weighting, raw, model)
    grad_norm = torch.linalg.vector_norm(out.detach())  # stands in for clip_grad_norm_
    writer.log_step(
        step=step,
        epoch=step // 6,
        losses={c: v.detach() for c, v in raw.items()},
        loss_total=total.detach(),
        weights=weights,
        proposed_weights=dict(zip(COMPS, diag.proposed.unbind(0), strict=True)),
        schedule=values,
        grad_norm=grad_norm,
    )
    if step == 5:
        weighting.end_epoch()
    return total, grad_norm


def run_live_path(device: torch.device, path: Path, method: str) -> tuple[list[StepSyncs], int]:
    """``STEPS`` live steps; the syncs of each step, and those of closing the trace."""
    torch.manual_seed(0)
    model = torch.nn.Linear(16, len(COMPS)).to(device)
    x = torch.randn(64, 16, device=device)
    weighting = AdaptiveLossWeighting(COMPS, method=method, log_every=0)
    scheduler = AdaptiveScheduler(update_interval=INTERVAL)
    scheduler.set_base_values({"tf_ratio": 0.5, "freerun_horizon": 10, "freerun_weight": 1.0})
    writer = TraceWriter(path, components=COMPS, flush_rows=10_000)
    # Warm-up, not counted: the first call moves the controller's state to the device
    # (a host-to-device copy) and CUDA initialises lazily.
    out = model(x).pow(2).mean(0)
    _weigh(weighting, {c: out[i] for i, c in enumerate(COMPS)}, model)
    steps = []
    for step in range(STEPS):
        out = model(x).pow(2).mean(0)
        weigh = functools.partial(_weigh_and_record, step, out, weighting, scheduler, writer, model)
        (total, grad_norm), synced = count_host_syncs(weigh)
        updates = scheduler.diagnostics()["updates"]
        feed = functools.partial(scheduler.step_batch, total.detach(), grad_norm)
        _, scheduler_synced = count_host_syncs(feed)
        closed = scheduler.diagnostics()["updates"] == updates + 1
        steps.append(StepSyncs(closed, synced, scheduler_synced))
        total.backward()
    _, close_synced = count_host_syncs(writer.close)  # one transfer per device at the flush
    tr = read_trace(path)
    assert len(tr.steps) == STEPS and tr.steps["loss/yaw"].notna().all()
    return steps, close_synced


# ------------------------------------------------------------------------------ CUDA
@cuda
@pytest.mark.parametrize("method", available_methods())
def test_live_path_syncs_at_most_once_per_scheduler_window(tmp_path: Path, method: str) -> None:
    dev = torch.device("cuda")
    torch.ones((), device=dev).add_(1.0)  # CUDA initialised before the control below
    # The counter sees a sync on this device, so the zeros below are not vacuous.
    assert count_host_syncs(lambda: torch.ones((), device=dev).item())[1] >= 1
    steps, close_synced = run_live_path(dev, tmp_path / "t.parquet", method)
    assert [i for i, s in enumerate(steps) if s.window_closed] == CLOSING_STEPS
    assert [s.weighting_and_trace for s in steps] == [0] * STEPS
    assert [s.scheduler for s in steps if not s.window_closed] == [0] * (STEPS - 3)
    assert all(s.scheduler <= 1 for s in steps if s.window_closed)
    assert sum(s.scheduler for s in steps) <= len(CLOSING_STEPS)
    assert close_synced <= 1


@cuda
def test_trainer_runs_on_cuda(tmp_path: Path) -> None:
    from adaptive.train.config import load_config
    from adaptive.train.trainer import Trainer
    from tests.test_train import TINY

    cfg = load_config(
        overrides=[
            *TINY,
            "run.device='cuda'",
            "run.epochs=2",
            "adaptive.loss='dwa'",
            "adaptive.scheduler=true",
            f"run.out={str(tmp_path)!r}",
        ]
    )
    Trainer(cfg, tmp_path / "gpu").train()
    tr = read_trace(tmp_path / "gpu" / "trace.parquet")
    assert len(tr.steps) == 2 * 12 and set(tr.epochs["split"]) == {"val", "valfree"}


# ------------------------------------------------------- CPU: the counting itself
def test_count_host_syncs_counts_every_warned_sync_and_passes_others_on() -> None:
    seen_modes: list[Any] = []

    def work() -> str:
        seen_modes.append(torch.cuda.get_sync_debug_mode())
        for _ in range(3):  # the same line thrice: three syncs, not one
            warnings.warn(SYNC_MESSAGE + " (Triggered internally at x.cpp:1.)", stacklevel=1)
        warnings.warn("unrelated", UserWarning, stacklevel=1)
        return "done"

    with simulated_device():
        torch.cuda.set_sync_debug_mode("error")
        with pytest.warns(UserWarning, match="unrelated") as passed_on:
            result, syncs = count_host_syncs(work)
        assert (result, syncs) == ("done", 3)
        assert seen_modes == [1]  # "warn" while fn runs
        assert [str(w.message) for w in passed_on] == ["unrelated"]
        assert torch.cuda.get_sync_debug_mode() == 2  # the previous mode is restored

        def fail() -> None:
            raise KeyError("boom")

        with pytest.raises(KeyError):
            count_host_syncs(fail)
        assert torch.cuda.get_sync_debug_mode() == 2


def test_simulated_device_reads_count_like_cuda_syncs() -> None:
    t = torch.tensor([1.5, 2.5])
    real = (torch.Tensor.cpu, torch.Tensor.item, torch.cuda.set_sync_debug_mode)
    with simulated_device():
        assert count_host_syncs(lambda: (t * 2).sum())[1] == 0  # device ops: none
        assert count_host_syncs(lambda: t.sum().item())[1] == 1
        assert count_host_syncs(lambda: t.cpu().tolist())[1] == 1  # the copy, then free
        assert count_host_syncs(lambda: [float(t[0]), bool(t[1] > 2)])[1] == 2
        assert count_host_syncs(lambda: torch.nonzero(t))[1] == 1
        torch.cuda.set_sync_debug_mode("error")
        with pytest.raises(RuntimeError, match=SYNC_MESSAGE):
            t.tolist()
        torch.cuda.set_sync_debug_mode("default")
        assert t.tolist() == [1.5, 2.5]
    assert (torch.Tensor.cpu, torch.Tensor.item, torch.cuda.set_sync_debug_mode) == real


@pytest.mark.parametrize("method", available_methods())
def test_live_path_reads_the_host_once_per_window_simulated(tmp_path: Path, method: str) -> None:
    """CPU proxy of the CUDA test (not a CUDA check): same loop, every tensor read counted."""
    with simulated_device():
        steps, close_synced = run_live_path(torch.device("cpu"), tmp_path / "t.parquet", method)
    assert [i for i, s in enumerate(steps) if s.window_closed] == CLOSING_STEPS
    assert [s.weighting_and_trace for s in steps] == [0] * STEPS
    assert [s.scheduler for s in steps] == [int(s.window_closed) for s in steps]
    assert close_synced == 1


def test_scheduler_window_of_mixed_dtypes_is_one_read_and_exact() -> None:
    """A float64 loss and a float32 grad norm: still one transfer per window, and every
    value is exactly float(t), as before."""
    losses = [torch.tensor(v, dtype=torch.float64) for v in (0.1, 1e-300, 3.0, 7.25)]
    grads = [torch.tensor(v, dtype=torch.float32) for v in (0.3, 1e30, 2.0, 5.5)]
    extra = [torch.tensor(0.7, dtype=torch.bfloat16), torch.tensor(3, dtype=torch.int64), 0.5]
    items: list[Any] = [*losses, *grads, *extra]
    assert _to_host(items) == [float(t) for t in items]
    scheduler = AdaptiveScheduler(update_interval=4)
    with simulated_device():
        syncs = [
            count_host_syncs(functools.partial(scheduler.step_batch, lo, g))[1]
            for lo, g in zip(losses, grads, strict=True)
        ]
    assert syncs == [0, 0, 0, 1]
