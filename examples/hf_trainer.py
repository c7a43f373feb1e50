"""The Hugging Face Trainer: record a trace per optimizer step, replay DWA, train with DWA on.

python examples/hf_trainer.py [OUT_DIR]        # default OUT_DIR: runs/hf-trainer

A tiny two-head model on CPU (a few seconds per run). The model returns its raw component
losses as ``outputs["losses"]``; `AdaptiveTrainer` weights them and `AdaptiveTrainerCallback`
records the trace (docs/INTEGRATION.md). Without OUT_DIR arguments it records a baseline,
replays DWA over it, trains with DWA applied and checks that DWA's replay over that run's
trace equals the weights it applied.

One run, as the target of an outcome trial (docs/TRIAL.md); val/mse, val/acc and val/loss
after each epoch:

python examples/hf_trainer.py --seed 0 --out RUN_DIR [--method dwa] [--dry-run] [--lr 0.05]
    [--temperature 2] [--epochs 6] [--batch 32] [--grad-accum 1] [--adaptive-config FILE]
adaptive trial --command 'python examples/hf_trainer.py --seed {seed} --out {run_dir} {overrides}' \
    -c 'dwa: --method dwa' --metric val/mse --reduce final --seeds 4

`--adaptive-config recommended.toml` runs the loss weighting a recommended file names (the
trial candidate `--adaptive-config {path}` the advice after `adaptive sweep` prints), built by
`adaptive.controllers_from_config` through `AdaptiveTrainerCallback(config=...)`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import TrainingArguments

from adaptive import read_trace
from adaptive.integrations.transformers import AdaptiveTrainer, AdaptiveTrainerCallback

COMPONENTS = ["reg", "cls"]

gen = torch.Generator().manual_seed(0)
_x = torch.randn(640, 8, generator=gen)
_labels = torch.cat(
    [_x @ torch.randn(8, 1, generator=gen), (_x[:, :1] * _x[:, 1:2] > 0).float()], dim=1
)


class Rows(torch.utils.data.Dataset):
    """Rows of (x, labels = [regression target, class]) as the Trainer's dicts."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.labels[i]}


class TwoHead(torch.nn.Module):
    """Returns its raw, unweighted component losses as outputs['losses']."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(8, 32)
        self.reg = torch.nn.Linear(32, 1)
        self.cls = torch.nn.Linear(32, 2)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        h = torch.relu(self.body(x))
        pred, logits = self.reg(h), self.cls(h)
        out: dict = {"pred": pred, "logits": logits}
        if labels is not None:
            out["losses"] = {
                "reg": F.mse_loss(pred, labels[:, :1]),
                "cls": F.cross_entropy(logits, labels[:, 1].long()),
            }
        return out


def metrics(p: transformers.EvalPrediction) -> dict[str, float]:
    pred, logits = p.predictions
    labels = p.label_ids
    return {
        "mse": float(np.mean((pred[:, 0] - labels[:, 0]) ** 2)),
        "acc": float(np.mean(logits.argmax(1) == labels[:, 1])),
    }


def train(
    trace: Path,
    *,
    method: str | None = None,
    dry_run: bool = False,
    seed: int = 1,
    lr: float = 0.05,
    temperature: float = 2.0,
    epochs: int = 6,
    batch: int = 32,
    grad_accum: int = 1,
    config: Path | None = None,
) -> AdaptiveTrainerCallback:
    """Train one run into `trace`; `batch` samples per optimizer step in `grad_accum`
    micro-batches."""
    transformers.set_seed(seed)
    params = {"temperature": temperature} if method == "dwa" else {}
    cb = AdaptiveTrainerCallback(
        trace,
        components=COMPONENTS,
        method=method,
        config=config,
        dry_run=dry_run if config is None or dry_run else None,  # else the file's
        run_info={"seed": seed, "lr": lr, "grad_accum": grad_accum},
        **params,
    )
    args = TrainingArguments(
        output_dir=str(trace.parent / "hf"),
        per_device_train_batch_size=batch // grad_accum,
        per_device_eval_batch_size=128,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=epochs,
        learning_rate=lr,
        optim="sgd",
        lr_scheduler_type="constant",
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = AdaptiveTrainer(
        model=TwoHead(),
        args=args,
        train_dataset=Rows(_x[:512], _labels[:512]),
        eval_dataset=Rows(_x[512:], _labels[512:]),
        compute_metrics=metrics,
        adaptive=cb,
    )
    trainer.remove_callback(transformers.PrinterCallback)  # quiet: metrics go to the trace
    trainer.train()
    return cb


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        print(f"hf_trainer.py: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> int:
    transformers.logging.set_verbosity_error()
    if "--out" in argv:  # one run (a trial target)
        p = _Parser(prog="hf_trainer.py")
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--method", choices=["none", "dwa", "uncertainty"], default="none")
        p.add_argument("--dry-run", action="store_true", help="propose only, apply base weights")
        p.add_argument("--lr", type=float, default=0.05)
        p.add_argument("--temperature", type=float, default=2.0)
        p.add_argument("--epochs", type=int, default=6)
        p.add_argument("--batch", type=int, default=32, help="samples per optimizer step")
        p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
        p.add_argument("--adaptive-config", type=Path, help="a recommended config file (TOML)")
        a = p.parse_args(argv)
        if a.adaptive_config is not None and a.method != "none":
            p.error("give either --method or --adaptive-config")
        if a.grad_accum < 1 or a.batch % a.grad_accum:
            p.error(f"--batch {a.batch} must be a multiple of --grad-accum {a.grad_accum} >= 1")
        try:
            train(
                a.out / "trace.parquet",
                method=None if a.method == "none" else a.method,
                dry_run=a.dry_run,
                seed=a.seed,
                lr=a.lr,
                temperature=a.temperature,
                epochs=a.epochs,
                batch=a.batch,
                grad_accum=a.grad_accum,
                config=a.adaptive_config,
            )
        except (ValueError, KeyError, TypeError, FileExistsError) as exc:
            print(f"hf_trainer.py: error: {exc}".splitlines()[0], file=sys.stderr)
            return 2
        return 0

    from replay import replay

    out = Path(argv[0] if argv else "runs/hf-trainer")
    base = out / "base" / "trace.parquet"
    train(base)  # 1. record (base weights)
    result = replay(read_trace(base), "dwa", temperature=2.0)  # 2. replay
    print(result.frame.groupby("epoch")[["proposed/weight/reg", "proposed/weight/cls"]].mean())
    live = out / "dwa" / "trace.parquet"
    train(live, method="dwa")  # 3. the same controller, applied
    trace = read_trace(live)
    again = replay(trace, "dwa", temperature=2.0).frame
    cols = [f"weight/{c}" for c in COMPONENTS]
    applied = trace.steps[cols].to_numpy()
    replayed = again[[f"proposed/{c}" for c in cols]].to_numpy()
    rel = float(np.max(np.abs(replayed - applied) / np.abs(applied)))
    print(f"wrote {base} and {live}; DWA replay vs applied: max relative difference {rel:.2e}")
    return 0 if rel <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
