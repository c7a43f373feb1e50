"""A LightningModule with DWA on: train 3 epochs, resume from the checkpoint to 6, replay.

pip install 'adaptive-replay[lightning]'
python examples/lightning_module.py [OUT_DIR]        # default OUT_DIR: runs/lightning
"""

import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from adaptive import read_trace
from adaptive.integrations.lightning import AdaptiveCallback
from replay import replay

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/lightning")
warnings.filterwarnings("ignore", ".*num_workers.*")  # Lightning's advice for real data
gen = torch.Generator().manual_seed(0)
x = torch.randn(256, 8, generator=gen)
data = torch.utils.data.TensorDataset(x, x @ torch.randn(8, 1, generator=gen), x[:, 0] > 0)


class TwoHead(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.reg, self.cls = (
            torch.nn.Linear(8, 32),
            torch.nn.Linear(32, 1),
            torch.nn.Linear(32, 2),
        )

    def training_step(self, batch, batch_idx):
        x, y, c = batch
        h = torch.relu(self.body(x))
        losses = {"reg": F.mse_loss(self.reg(h), y), "cls": F.cross_entropy(self.cls(h), c.long())}
        return self.adaptive_loss(losses)  # the total with DWA's weights; recorded by the callback

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(data, batch_size=32)


def fit(epochs: int, ckpt: str | None = None) -> None:
    torch.manual_seed(1)
    dwa = AdaptiveCallback(
        out / "trace.parquet",
        components=["reg", "cls"],
        method="dwa",
        dry_run=False,
        temperature=2.0,
    )
    saver = pl.callbacks.ModelCheckpoint(dirpath=out / "checkpoints", save_last=True)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[dwa, saver],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TwoHead(), ckpt_path=ckpt)


fit(3)  # DWA applied from the first step
fit(6, ckpt=str(out / "checkpoints" / "last.ckpt"))  # resumed: controller state from the checkpoint
trace = read_trace(out / "trace.parquet")
result = replay(trace, "dwa", temperature=2.0)  # replay agrees with what was applied
gap = (
    result.frame[["proposed/weight/reg", "proposed/weight/cls"]].to_numpy()
    - trace.steps[["weight/reg", "weight/cls"]].to_numpy()
)
print(trace.steps.groupby("epoch")[["weight/reg", "weight/cls"]].mean())
print(f"{len(trace.steps)} steps recorded; largest replay - live gap {abs(gap).max():.2e}")
