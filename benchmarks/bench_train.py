"""Training-step cost of recording and of the live controllers (reference trainer, CPU).

Workload: the default config (batch 32 x 40 frames, GRU 128), one epoch of the `free_run`
stage (50 steps, teacher forcing 0.4, horizon 20) per measurement, variants interleaved and
repeated; the figure per variant is the median over repeats of the mean step time. Overheads
are relative to the same loop with recording and controllers off.

Targets: trace recording <= 2 % of a step (issue 3); adaptive loss weighting + scheduler +
recording <= 3 % (issue 7). The extras (per-component gradient norms, losses after the
step) have no target: their cost is measured and documented (issue 13).

The weights' moving average (`train.ema_decay`) costs an update per step (the `ema_decay=0`
variant) and a second evaluation per epoch (printed last: one end-of-epoch evaluation with
and without it, against one training epoch of the `off` variant).

Usage: python benchmarks/bench_train.py [--repeats 7] [--steps 50] [--only SUBSTRING ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from adaptive.train.config import load_config
from adaptive.train.trainer import Trainer

VARIANTS = {
    "off (no trace, no controllers)": ([], False),
    "trace": ([], True),
    "dwa + scheduler (no trace)": (["adaptive.loss='dwa'", "adaptive.scheduler=true"], False),
    "trace + dwa + scheduler": (["adaptive.loss='dwa'", "adaptive.scheduler=true"], True),
    "trace + uncertainty + scheduler": (
        ["adaptive.loss='uncertainty'", "adaptive.scheduler=true"],
        True,
    ),
    # extras (issue 13): computed only when the method needs them or record_extras asks
    "trace + dwa + record grad_norm": (
        ["adaptive.loss='dwa'", "adaptive.record_extras=['grad_norm']"],
        True,
    ),
    "trace + dwa + record loss_after": (
        ["adaptive.loss='dwa'", "adaptive.record_extras=['loss_after']"],
        True,
    ),
    # the weights' moving average (train.ema_decay, on by default): its per-step update
    "off, no weights' EMA (ema_decay=0)": (["train.ema_decay=0"], False),
    "trace + gradnorm": (["adaptive.loss='gradnorm'"], True),
    "trace + famo": (["adaptive.loss='famo'"], True),
}


def time_epoch(root: Path, name: str, sets: list[str], record: bool, steps: int) -> float:
    """Mean seconds per optimizer step over one training epoch (evaluation excluded)."""
    cfg = load_config(overrides=[*sets, f"train.steps_per_epoch={steps}", f"run.out={str(root)!r}"])
    trainer = Trainer(cfg, root / name, record=record)
    epoch = 10  # inside the default free_run stage: teacher forcing mixed with rollouts
    sv = trainer._apply_stage_schedule(epoch)
    if trainer.scheduler is not None:
        trainer.scheduler.set_base_values(sv.schedule)
    if trainer.weighting is not None:
        trainer.weighting.set_base_weights(sv.loss_weights)
    trainer.model.train()
    t0 = time.perf_counter()
    trainer._train_epoch(epoch, sv)
    trainer.trace.flush()
    dt = time.perf_counter() - t0
    trainer.trace.close()
    return dt / steps


def time_eval(root: Path, name: str, sets: list[str]) -> float:
    """Seconds of one end-of-epoch evaluation (val and valfree; with the EMA also val_ema and
    valfree_ema), recorded into a trace."""
    cfg = load_config(overrides=[*sets, f"run.out={str(root)!r}"])
    trainer = Trainer(cfg, root / name, record=True)
    sv = trainer._apply_stage_schedule(10)
    t0 = time.perf_counter()
    trainer._evaluate(10, sv)
    dt = time.perf_counter() - t0
    trainer.trace.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--only", nargs="*", default=[], help="variants whose label contains one")
    args = ap.parse_args()
    torch.set_num_threads(2)
    off = "off (no trace, no controllers)"
    chosen = {
        k: v
        for k, v in VARIANTS.items()
        if k == off or not args.only or any(o in k for o in args.only)
    }
    times: dict[str, list[float]] = {k: [] for k in chosen}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rep in range(args.repeats + 1):
            for i, (label, (sets, record)) in enumerate(chosen.items()):
                t = time_epoch(root, f"r{rep}-{i}", sets, record, args.steps)
                if rep > 0:  # the first round warms up allocators and caches
                    times[label].append(t)
    base = statistics.median(times[off])
    print(
        f"workload: default config, {args.steps} steps of the free_run stage per measurement, "
        f"{args.repeats} interleaved repeats; cores={os.cpu_count()}, torch threads=2"
    )
    print(f"{'variant':<34} {'ms/step':>8} {'steps/s':>8} {'overhead':>9}")
    for label, ts in times.items():
        m = statistics.median(ts)
        print(f"{label:<34} {m * 1e3:8.2f} {1 / m:8.1f} {100 * (m / base - 1):+8.2f}%")
    print("targets: trace <= +2 %; trace + controllers <= +3 %")
    if args.only and not any(o in "evaluation" for o in args.only):
        return
    evals: dict[str, list[float]] = {"evaluation, EMA on (default)": [], "evaluation, EMA off": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats + 1):
            for label, sets in zip(evals, ([], ["train.ema_decay=0"]), strict=True):
                t = time_eval(Path(tmp), f"e{rep}-{len(sets)}", sets)
                if rep > 0:
                    evals[label].append(t)
    step = base * args.steps  # one epoch of training at the default steps_per_epoch
    print(f"{'evaluation per epoch':<34} {'s':>8} {'% of a training epoch':>22}")
    for label, ts in evals.items():
        m = statistics.median(ts)
        print(f"{label:<34} {m:8.3f} {100 * m / step:21.1f}%")


if __name__ == "__main__":
    main()
