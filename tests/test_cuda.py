"""CUDA: the live path (adaptive weighting + scheduler + trace recording) never makes the host
wait for the device per step. Skipped where no GPU exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adaptive.scheduler import AdaptiveScheduler
from adaptive.trace import TraceWriter, read_trace
from adaptive.weighting import AdaptiveLossWeighting, available_methods

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
COMPS = ["fk_pos", "rot", "root_vel", "yaw"]


@cuda
@pytest.mark.parametrize("method", available_methods())
def test_live_path_has_no_host_sync(tmp_path: Path, method: str) -> None:
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = torch.nn.Linear(16, len(COMPS)).to(dev)
    x = torch.randn(64, 16, device=dev)
    weighting = AdaptiveLossWeighting(COMPS, method=method, log_every=0)
    scheduler = AdaptiveScheduler(update_interval=4)
    scheduler.set_base_values({"tf_ratio": 0.5, "freerun_horizon": 10, "freerun_weight": 1.0})
    writer = TraceWriter(tmp_path / "t.parquet", components=COMPS, flush_rows=10_000)
    # warm-up outside the check (allocations, lazy CUDA init)
    out = model(x).pow(2).mean(0)
    weighting({c: out[i] for i, c in enumerate(COMPS)})
    steps = 12
    for step in range(steps):
        out = model(x).pow(2).mean(0)
        raw = {c: out[i] for i, c in enumerate(COMPS)}
        values = scheduler.values()
        torch.cuda.set_sync_debug_mode("error")
        try:
            total, weights, diag = weighting(raw)
            grad_norm = torch.linalg.vector_norm(out.detach())  # stands in for clip_grad_norm_
            scheduler.step_batch(total.detach(), grad_norm)
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
        finally:
            torch.cuda.set_sync_debug_mode("default")
        total.backward()
    writer.close()  # one batched device->host transfer at the flush
    tr = read_trace(tmp_path / "t.parquet")
    assert len(tr.steps) == steps and tr.steps["loss/yaw"].notna().all()


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
