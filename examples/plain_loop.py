"""A plain PyTorch loop: record a trace, replay DWA over it, then train with DWA on.

python examples/plain_loop.py [OUT_DIR]        # default OUT_DIR: runs/plain-loop

One run, as the target of an outcome trial (docs/TRIAL.md); val/mse and val/acc each epoch:

python examples/plain_loop.py --seed 0 --out RUN_DIR [--method dwa] [--lr 0.05]
adaptive trial --command 'python examples/plain_loop.py --seed {seed} --out {run_dir} {overrides}' \
    -c '--method dwa' --metric val/mse --reduce final --seeds 4

A recommended config file (`recommended.toml` of `adaptive sweep` / `compare`, the trial
candidate `--adaptive-config {path}` their advice prints) switches on what it names, built by
`adaptive.controllers_from_config` through `TraceRecorder(config=...)`:

python examples/plain_loop.py --seed 0 --out RUN_DIR --adaptive-config recommended.toml
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptive import AdaptiveLossWeighting, TraceRecorder, read_trace
from adaptive.errors import InputError

gen = torch.Generator().manual_seed(0)
x = torch.randn(768, 8, generator=gen)
y_reg, y_cls = x @ torch.randn(8, 1, generator=gen), (x[:, 0] * x[:, 1] > 0).long()
x, xv, y_reg, yv_reg, y_cls, yv_cls = (
    x[:512],
    x[512:],
    y_reg[:512],
    y_reg[512:],
    y_cls[:512],
    y_cls[512:],
)


def train(
    trace: Path,
    ctrl: AdaptiveLossWeighting | None = None,
    seed: int = 1,
    lr: float = 0.05,
    config: Path | None = None,
):
    torch.manual_seed(seed)
    body, reg, cls = torch.nn.Linear(8, 32), torch.nn.Linear(32, 1), torch.nn.Linear(32, 2)
    opt = torch.optim.SGD([*body.parameters(), *reg.parameters(), *cls.parameters()], lr=lr)
    comps = ["reg", "cls"]
    with TraceRecorder(trace, components=comps, run_info={"seed": seed}, config=config) as rec:
        if rec.scheduler is not None:  # this loop has no teacher-forcing schedule to adjust
            raise InputError(f"{config}: switches the scheduler on; this loop has no schedule")
        ctrl = rec.weighting if config is not None else ctrl
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
                rec.log_step(losses=losses, diagnostics=diag, loss_total=total, lr=lr)
            if ctrl:
                ctrl.end_epoch()
            with torch.no_grad():  # held-out evaluation: the metrics a trial compares
                h = torch.relu(body(xv))
                acc = (cls(h).argmax(1) == yv_cls).float().mean()
                rec.log_epoch(split="val", metrics={"mse": F.mse_loss(reg(h), yv_reg), "acc": acc})
            rec.end_epoch()


def dwa() -> AdaptiveLossWeighting:
    return AdaptiveLossWeighting(
        ["reg", "cls"], {"reg": 1.0, "cls": 1.0}, method="dwa", temperature=2.0
    )


if "--out" in sys.argv:  # one run (a trial target)
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--method", choices=["none", "dwa"], default="none")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--adaptive-config", type=Path, help="a recommended config file (TOML)")
    a = p.parse_args()
    if a.adaptive_config is not None and a.method != "none":
        p.error("give either --method or --adaptive-config")
    try:
        ctrl = dwa() if a.method == "dwa" else None
        train(a.out / "trace.parquet", ctrl, a.seed, a.lr, a.adaptive_config)
    except InputError as exc:  # a missing or bad config file: one line, exit code 2
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0)

from replay import replay  # noqa: E402

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/plain-loop")
train(out / "base" / "trace.parquet")  # 1. record (plain sum of the two losses)
result = replay(read_trace(out / "base" / "trace.parquet"), "dwa", temperature=2.0)  # 2. replay
print(result.frame.groupby("epoch")[["proposed/weight/reg", "proposed/weight/cls"]].mean())
train(out / "dwa" / "trace.parquet", dwa())  # 3. the same controller class, live
print(f"wrote {out / 'base' / 'trace.parquet'} and {out / 'dwa' / 'trace.parquet'}")
