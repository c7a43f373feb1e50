"""Run by tests/test_distributed.py under torch.distributed.run: trains like `adaptive
train` and writes this rank's applied values, controller states and a parameter checksum
to DUMP/rank<r>.json, and after tearing the process group down, the gloo threads still
alive to DUMP/rank<r>-exit.json (none: the group did not outlive `distributed.shutdown()`).
The observer is the trainer's `on_step` hook: the training loop itself holds no test code,
and the values reach the host only at the end.

Usage: python -m tests.dist_worker RUN_DIR DUMP_DIR [config overrides ...]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from adaptive.train import distributed
from adaptive.train.config import load_config
from adaptive.train.trainer import StepRecord, Trainer, resolve_device


def host(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: host(x) for k, x in v.items()}
    return None if v is None else float(v)


def train(run_dir: str, overrides: list[str], info: distributed.DistInfo) -> dict[str, Any]:
    """Train this rank; its applied values, final states and a parameter checksum."""
    cfg = load_config(overrides=overrides)
    steps: list[StepRecord] = []
    trainer = Trainer(cfg, run_dir, on_step=steps.append)
    trainer.train()
    params = torch.cat([p.detach().double().flatten().cpu() for p in trainer.model.parameters()])
    w, s = trainer.weighting, trainer.scheduler
    return {
        "rank": info.rank,
        "world_size": info.world_size,
        "steps": [
            {
                "weights": host(r.weights),
                "proposed_weights": host(r.proposed_weights),
                "schedule": host(r.schedule),
                "loss_total": host(r.loss_total),
                "grad_norm": host(r.grad_norm),
            }
            for r in steps
        ],
        "param_sha256": hashlib.sha256(params.numpy().tobytes()).hexdigest(),
        "weighting": w.state_dict() if w is not None else None,
        "scheduler": s.state_dict() if s is not None else None,
        "metric_history": trainer.metric_history,
    }  # the trainer and its DDP wrapper go with this frame, before shutdown()


def gloo_threads() -> list[str] | None:
    """Names of this process's gloo threads (None where /proc/self/task is not there)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    names = [(t / "comm").read_text().strip() for t in tasks.iterdir()]
    return sorted(n for n in names if "gloo" in n)


def main() -> None:
    run_dir, dump, *overrides = sys.argv[1:]
    cfg = load_config(overrides=overrides)
    info = distributed.init_from_env(resolve_device(cfg["run"]["device"]).type)
    assert info is not None, "run me under torch.distributed.run"
    out = Path(dump)
    try:
        state = train(run_dir, overrides, info)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{info.rank}.json").write_text(json.dumps(state), "utf-8")
    finally:
        distributed.shutdown()
    # the group's native threads are joined now, not left to interpreter finalization
    exit_state = {"gloo_threads_after_shutdown": gloo_threads()}
    (out / f"rank{info.rank}-exit.json").write_text(json.dumps(exit_state), "utf-8")


if __name__ == "__main__":
    main()
