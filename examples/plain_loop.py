"""A plain PyTorch loop: record a trace, replay DWA over it, then train with DWA on.

python examples/plain_loop.py [OUT_DIR]        # default OUT_DIR: runs/plain-loop
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptive import AdaptiveLossWeighting, TraceRecorder, read_trace
from replay import replay

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/plain-loop")
gen = torch.Generator().manual_seed(0)
x = torch.randn(512, 8, generator=gen)
y_reg, y_cls = x @ torch.randn(8, 1, generator=gen), (x[:, 0] * x[:, 1] > 0).long()


def train(trace: Path, ctrl: AdaptiveLossWeighting | None = None) -> None:
    torch.manual_seed(1)
    body, reg, cls = torch.nn.Linear(8, 32), torch.nn.Linear(32, 1), torch.nn.Linear(32, 2)
    opt = torch.optim.SGD([*body.parameters(), *reg.parameters(), *cls.parameters()], lr=0.05)
    with TraceRecorder(trace, components=["reg", "cls"]) as rec:
        for _epoch in range(6):
            for i in range(0, 512, 32):
                h = torch.relu(body(x[i : i + 32]))
                losses = {
                    "reg": F.mse_loss(reg(h), y_reg[i : i + 32]),
                    "cls": F.cross_entropy(cls(h), y_cls[i : i + 32]),
                }
                total, _, diag = ctrl(losses) if ctrl else (sum(losses.values()), None, None)
                opt.zero_grad()
                total.backward()
                opt.step()
                rec.log_step(losses=losses, diagnostics=diag, loss_total=total, lr=0.05)
            if ctrl:
                ctrl.end_epoch()
            rec.end_epoch()


train(out / "base" / "trace.parquet")  # 1. record (plain sum of the two losses)
result = replay(read_trace(out / "base" / "trace.parquet"), "dwa", temperature=2.0)  # 2. replay
print(result.frame.groupby("epoch")[["proposed/weight/reg", "proposed/weight/cls"]].mean())
dwa = AdaptiveLossWeighting(["reg", "cls"], {"reg": 1.0, "cls": 1.0}, method="dwa", temperature=2.0)
train(out / "dwa" / "trace.parquet", dwa)  # 3. the same controller class, live
print(f"wrote {out / 'base' / 'trace.parquet'} and {out / 'dwa' / 'trace.parquet'}")
