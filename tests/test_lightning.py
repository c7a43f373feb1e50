"""The PyTorch Lightning callback: record, run DWA live, checkpoint and resume exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch", reason="needs the 'lightning' extra")

from adaptive import read_trace  # noqa: E402
from adaptive.integrations.lightning import AdaptiveCallback  # noqa: E402
from replay import replay  # noqa: E402

COMPS = ["reg", "cls"]


def _data() -> torch.utils.data.TensorDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=gen)
    return torch.utils.data.TensorDataset(x, x @ torch.randn(6, 1, generator=gen), (x[:, 0] > 0))


class TwoHead(pl.LightningModule):
    def __init__(self, *, call: bool) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.call = call
        self.body = torch.nn.Linear(6, 16)
        self.reg = torch.nn.Linear(16, 1)
        self.cls = torch.nn.Linear(16, 2)

    def _losses(self, batch: tuple) -> dict[str, torch.Tensor]:
        x, y, c = batch
        h = torch.relu(self.body(x))
        return {
            "reg": torch.nn.functional.mse_loss(self.reg(h), y),
            "cls": torch.nn.functional.cross_entropy(self.cls(h), c.long()),
        }

    def training_step(self, batch: tuple, batch_idx: int) -> object:
        losses = self._losses(batch)
        if self.call:
            return self.adaptive_loss(losses)
        return {"loss": losses["reg"] + losses["cls"], "losses": losses}

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        losses = self._losses(batch)
        self.log("val_reg", losses["reg"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(_data(), batch_size=16)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(_data(), batch_size=32)


def _fit(
    tmp: Path, cb: AdaptiveCallback, epochs: int, *, call: bool = True, ckpt: str | None = None
) -> pl.Trainer:
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp / "ckpt", save_top_k=-1, every_n_epochs=1)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb, saver],
        deterministic=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on num_workers etc.
        trainer.fit(TwoHead(call=call), ckpt_path=ckpt)
    return trainer


def _dwa(trace: Path, dry_run: bool = False) -> AdaptiveCallback:
    return AdaptiveCallback(trace, components=COMPS, method="dwa", dry_run=dry_run, temperature=0.5)


def test_live_dwa_records_and_replay_matches(tmp_path: Path) -> None:
    cb = _dwa(tmp_path / "run" / "trace.parquet")
    _fit(tmp_path, cb, 5)
    t = read_trace(tmp_path / "run" / "trace.parquet")
    assert t.run_id == "run" and t.components == COMPS
    assert t.steps["step"].tolist() == list(range(20))
    assert t.steps["epoch"].tolist() == [e for e in range(5) for _ in range(4)]
    assert t.split_metrics("val")["step"].tolist() == [4, 8, 12, 16, 20]
    assert "metric/val_reg" in t.epochs and t.steps["grad_norm"].notna().all()
    applied = t.steps[["weight/reg", "weight/cls"]].to_numpy()
    assert np.abs(applied - 1.0).max() > 0.01  # DWA applied, not the base
    np.testing.assert_array_equal(applied, t.steps[["proposed/weight/reg", "proposed/weight/cls"]])
    res = replay(t, "dwa", temperature=0.5)
    np.testing.assert_allclose(
        res.frame[["proposed/weight/reg", "proposed/weight/cls"]].to_numpy(), applied, atol=1e-5
    )
    assert cb.weights["reg"].item() == pytest.approx(applied[-1, 0], abs=1e-6)


def test_resumed_fit_continues_exactly(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    _fit(whole, _dwa(whole / "trace.parquet"), 5)
    part = tmp_path / "part"
    _fit(part, _dwa(part / "trace.parquet"), 4)  # 4 epochs; resume from the 3-epoch checkpoint
    ckpt = sorted((part / "ckpt").glob("epoch=2-*.ckpt"))
    assert len(ckpt) == 1
    state = torch.load(ckpt[0], weights_only=False)["callbacks"]["adaptive"]
    assert state["step"] == 12 and state["weighting"]["method_state"]
    cb = _dwa(part / "trace.parquet")
    _fit(part, cb, 5, ckpt=str(ckpt[0]))
    a, b = read_trace(whole / "trace.parquet"), read_trace(part / "trace.parquet")
    assert b.steps["step"].tolist() == list(range(20))  # epoch 3 cut back and re-recorded
    cols = ["epoch", "loss/reg", "loss/cls", "weight/reg", "weight/cls", "grad_norm"]
    np.testing.assert_allclose(b.steps[cols].to_numpy(), a.steps[cols].to_numpy(), atol=1e-6)
    assert b.split_metrics("val")["step"].tolist() == [4, 8, 12, 16, 20]
    assert cb.weighting.state_dict()["epoch"] == 4


def test_dry_run_from_returned_losses(tmp_path: Path) -> None:
    cb = _dwa(tmp_path / "t.parquet", dry_run=True)
    _fit(tmp_path, cb, 4, call=False)
    t = read_trace(tmp_path / "t.parquet")
    np.testing.assert_array_equal(t.steps[["weight/reg", "weight/cls"]].to_numpy(), 1.0)
    proposed = t.steps[["proposed/weight/reg", "proposed/weight/cls"]].to_numpy()
    assert np.abs(proposed - 1.0).max() > 0.01
    res = replay(t, "dwa", temperature=0.5)
    np.testing.assert_allclose(
        res.frame[["proposed/weight/reg", "proposed/weight/cls"]].to_numpy(), proposed, atol=1e-5
    )


def test_bad_use_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="temperature"):
        AdaptiveCallback(tmp_path / "t", components=COMPS, method="dwa", temperature=-1.0)
    with pytest.raises(ValueError, match="base_weights"):
        AdaptiveCallback(tmp_path / "t", components=COMPS, base_weights={"reg": 1.0})
    with pytest.raises(ValueError, match="without a method"):
        AdaptiveCallback(tmp_path / "t", components=COMPS, temperature=1.0)
    with pytest.raises(RuntimeError, match="adaptive_loss"):
        _fit(tmp_path, _dwa(tmp_path / "a.parquet"), 1, call=False)
    _fit(tmp_path, AdaptiveCallback(tmp_path / "b.parquet", components=COMPS), 1)
    with pytest.raises(FileExistsError, match="already"):
        _fit(tmp_path, AdaptiveCallback(tmp_path / "b.parquet", components=COMPS), 1)


def test_lightning_example_trains_with_dwa_and_resumes(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run(
        [sys.executable, str(root / "examples" / "lightning_module.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Restored all states from the checkpoint" in res.stdout + res.stderr
    t = read_trace(tmp_path / "trace.parquet")
    assert t.steps["step"].tolist() == list(range(48))
    assert t.steps["epoch"].max() == 5
    applied = t.steps[["weight/reg", "weight/cls"]].to_numpy()
    assert np.abs(applied - 1.0).max() > 0.01
    gap = float(res.stdout.rsplit("gap", 1)[1])
    assert gap < 1e-5


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cb = AdaptiveCallback(
        Path(out) / "t.parquet", components=COMPS, method="dwa", dry_run=False, temperature=0.5
    )
    rows = []
    for epoch in range(4):
        if epoch:
            cb.weighting.end_epoch()
        for i in range(3):
            w = torch.tensor(1.0, requires_grad=True)
            scale = torch.tensor([1.0 + rank + i, 9.0 - 2 * rank * epoch])
            total = cb({"reg": w * scale[0], "cls": w * scale[1]})
            total.backward()
            pending = cb._pending
            cb._pending = None
            rows.append(
                [float(cb.weights[c]) for c in COMPS]
                + [float(pending["losses"][c]) for c in COMPS]
                + [float(w.grad), *scale.tolist()]
            )
    torch.save(rows, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_losses_are_all_reduced_and_weights_shared(tmp_path: Path) -> None:
    """Two gloo ranks (no Lightning trainer): the callback's DDP path as DDP runs it."""
    import socket

    import torch.distributed as dist
    import torch.multiprocessing as mp

    from adaptive.weighting import AdaptiveLossWeighting

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("needs torch.distributed gloo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(
        _ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    r0, r1 = (np.array(torch.load(tmp_path / f"rank{r}.pt")) for r in (0, 1))
    np.testing.assert_array_equal(r0[:, :4], r1[:, :4])  # same weights, same mean losses
    mean = (r0[:, 5:7] + r1[:, 5:7]) / 2
    np.testing.assert_allclose(r0[:, 2:4], mean, rtol=1e-6)
    # Each rank's gradient is its own losses under the shared weights.
    for r in (r0, r1):
        np.testing.assert_allclose(r[:, 4], (r[:, :2] * r[:, 5:7]).sum(1), rtol=1e-6)
    # The weights are what one controller fed the mean losses applies.
    ref = AdaptiveLossWeighting(COMPS, {"reg": 1.0, "cls": 1.0}, method="dwa", temperature=0.5)
    expect = []
    for i, row in enumerate(r0[:, 2:4]):
        if i and i % 3 == 0:
            ref.end_epoch()
        _, w, _ = ref(
            {c: torch.tensor(v, dtype=torch.float32) for c, v in zip(COMPS, row, strict=True)}
        )
        expect.append([float(w[c]) for c in COMPS])
    np.testing.assert_allclose(r0[:, :2], expect, rtol=1e-6)
    assert np.abs(r0[:, :2] - 1.0).max() > 0.01
