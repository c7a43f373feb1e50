"""A LightningModule with DWA on: train 3 epochs, resume from the checkpoint to 6, replay.

pip install 'adaptive-replay[lightning]'
python examples/lightning_module.py [OUT_DIR]        # default OUT_DIR: runs/lightning

One run, as the target of an outcome trial (docs/TRIAL.md); val_mse is logged each epoch:

python examples/lightning_module.py --seed 0 --out RUN_DIR [--method dwa] [--lr 0.05]
adaptive trial --command 'python examples/lightning_module.py --seed {seed} --out {run_dir} \
    {overrides}' -c '--method dwa' --metric val/val_mse --reduce final --seeds 4
"""

import argparse
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from adaptive import read_trace
from adaptive.integrations.lightning import AdaptiveCallback

warnings.filterwarnings("ignore", ".*num_workers.*")  # Lightning's advice for real data
gen = torch.Generator().manual_seed(0)
x = torch.randn(384, 8, generator=gen)
y, c = x @ torch.randn(8, 1, generator=gen), x[:, 0] > 0
data = torch.utils.data.TensorDataset(x[:256], y[:256], c[:256])
val = torch.utils.data.TensorDataset(x[256:], y[256:], c[256:])


class TwoHead(pl.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
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

    def validation_step(self, batch, batch_idx):
        x, y, _ = batch
        self.log("val_mse", F.mse_loss(self.reg(torch.relu(self.body(x))), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(data, batch_size=32)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(val, batch_size=128)


def fit(out: Path, epochs: int, ckpt: str | None = None, method: str | None = "dwa", **kw) -> None:
    torch.manual_seed(kw.pop("seed", 1))
    dwa = AdaptiveCallback(
        out / "trace.parquet",
        components=["reg", "cls"],
        method=method,
        **({"dry_run": False, "temperature": 2.0} if method else {}),
    )
    saver = pl.callbacks.ModelCheckpoint(dirpath=out / "checkpoints", save_last=True)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[dwa, saver],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(TwoHead(**kw), ckpt_path=ckpt)


if "--out" in sys.argv:  # one run (a trial target)
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--method", choices=["none", "dwa"], default="none")
    p.add_argument("--lr", type=float, default=0.05)
    a = p.parse_args()
    fit(a.out, 4, method=None if a.method == "none" else a.method, seed=a.seed, lr=a.lr)
    sys.exit(0)

from replay import replay  # noqa: E402

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/lightning")
fit(out, 3)  # DWA applied from the first step
fit(out, 6, ckpt=str(out / "checkpoints" / "last.ckpt"))  # resumed: controller state restored
trace = read_trace(out / "trace.parquet")
result = replay(trace, "dwa", temperature=2.0)  # replay agrees with what was applied
gap = (
    result.frame[["proposed/weight/reg", "proposed/weight/cls"]].to_numpy()
    - trace.steps[["weight/reg", "weight/cls"]].to_numpy()
)
print(trace.steps.groupby("epoch")[["weight/reg", "weight/cls"]].mean())
print(f"{len(trace.steps)} steps recorded; largest replay - live gap {abs(gap).max():.2e}")
