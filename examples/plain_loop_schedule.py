"""A plain PyTorch loop with a teacher-forcing / free-run curriculum: record the schedule
with TraceRecorder, replay every scheduler law over it, then run one law live.

python examples/plain_loop_schedule.py [OUT_DIR]     # default OUT_DIR: runs/plain-schedule

The model predicts the next value of noisy sine waves. A batch is teacher-forced (one-step
predictions from the true past) or, with probability 1 - tf_ratio, also free-runs
`freerun_horizon` steps on its own predictions; the stage schedule below sets both. The
recorder takes the scheduler itself (`scheduler=`): the applied, base and proposed schedule
values and the regime, plus each law's inputs (`loss_tf_total`, `loss_fr_total`).
"""

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptive import TraceRecorder, read_trace
from adaptive.scheduler import AdaptiveScheduler, available_laws

WINDOW, SEED_FRAMES, EPOCHS = 24, 4, 6
STAGES = [  # (epochs, base values): teacher forcing, then a mix
    (2, {"tf_ratio": 1.0, "freerun_horizon": 4.0, "freerun_weight": 0.0}),
    (4, {"tf_ratio": 0.5, "freerun_horizon": 12.0, "freerun_weight": 0.5}),
]


def waves(n: int, gen: torch.Generator) -> torch.Tensor:
    t = torch.arange(WINDOW + 1, dtype=torch.float32)
    freq, phase = 0.2 + 0.3 * torch.rand(n, 1, generator=gen), 6.3 * torch.rand(n, 1, generator=gen)
    return torch.sin(freq * t + phase) + 0.02 * torch.randn(n, WINDOW + 1, generator=gen)


def base_values(epoch: int) -> dict[str, float]:
    for epochs, values in STAGES:
        if epoch < epochs:
            return values
        epoch -= epochs
    return STAGES[-1][1]


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell, self.out = torch.nn.GRUCell(1, 32), torch.nn.Linear(32, 1)

    def rollout(self, seq: torch.Tensor, teacher: int) -> torch.Tensor:
        """Predictions of seq[:, 1:]: the true input for the first `teacher` steps, then its
        own prediction (free run)."""
        h, x, preds = None, seq[:, :1], []
        for t in range(seq.shape[1] - 1):
            h = self.cell(x, h)
            preds.append(self.out(h))
            x = seq[:, t + 1 : t + 2] if t + 1 < teacher else preds[-1]
        return torch.cat(preds, 1)


def train(trace: Path, sched: AdaptiveScheduler, seed: int = 0) -> None:
    torch.manual_seed(seed)
    gen, model = torch.Generator().manual_seed(seed), Model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    val = waves(64, torch.Generator().manual_seed(99))
    with TraceRecorder(trace, components=["next"], run_info={"seed": seed}) as rec:
        for epoch in range(EPOCHS):
            sched.set_base_values(base_values(epoch))
            for _ in range(30):
                v = sched.values()  # what this batch trains with (base values in dry-run)
                seq, horizon = waves(32, gen), int(v["freerun_horizon"])
                regime = int(torch.rand((), generator=gen) >= v["tf_ratio"])  # 1: free run
                loss_tf = F.mse_loss(model.rollout(seq, WINDOW), seq[:, 1:])
                loss_fr, total = math.nan, loss_tf
                if regime:
                    start = WINDOW - horizon
                    pred = model.rollout(seq, start)[:, start - 1 :]
                    loss_fr = F.mse_loss(pred, seq[:, start:])
                    total = loss_tf + v["freerun_weight"] * loss_fr
                opt.zero_grad()
                total.backward()
                grad = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                rec.log_step(
                    losses={"next": loss_tf}, loss_total=total, grad_norm=grad, lr=3e-3,
                    scheduler=sched, regime=regime, loss_tf_total=loss_tf, loss_fr_total=loss_fr,
                )  # fmt: skip
                sched.step_batch(
                    loss_tf, grad, regime=regime, inputs={"loss_fr": loss_fr, "horizon": horizon}
                )
            with torch.no_grad():  # teacher-forced and free-run validation
                val_mse = F.mse_loss(model.rollout(val, WINDOW), val[:, 1:])
                free = model.rollout(val, SEED_FRAMES)[:, SEED_FRAMES - 1 :]
                free_mse = F.mse_loss(free, val[:, SEED_FRAMES:])
            rec.log_epoch(split="val", metrics={"mse": val_mse})
            rec.log_epoch(split="valfree", metrics={"mse": free_mse})
            sched.step_epoch({"mse": float(free_mse)}, {"mse": float(val_mse)})
            rec.end_epoch()


def scheduler(law: str, **kw: object) -> AdaptiveScheduler:
    """The law's epoch-level signal is this loop's free-run mse; decisions every 10 batches."""
    if law in ("guard", "competence"):
        kw["free_metric"] = "mse"
    return AdaptiveScheduler(law=law, update_interval=10, **kw)


if __name__ == "__main__":
    from replay import replay

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/plain-schedule")
    base = out / "base" / "trace.parquet"
    train(base, scheduler("guard", dry_run=True))  # 1. record: the stage schedule as is
    for law in available_laws():  # 2. replay every law over it (dry-run, open loop)
        params = {"law": law, "update_interval": 10}
        if law in ("guard", "competence"):
            params["free_metric"] = "mse"
        r = replay(read_trace(base), "scheduler", **params)
        deltas = r.frame.groupby("epoch")["delta"].last().round(2).tolist()
        print(f"{law:>10}: delta at each epoch end {deltas}")
    train(out / "gtf" / "trace.parquet", scheduler("gtf"))  # 3. the same class, live
    print(f"wrote {base} and {out / 'gtf' / 'trace.parquet'}")
