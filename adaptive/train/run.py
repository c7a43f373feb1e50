"""Run a training job with optional progress and an end-of-run summary (used by the CLI).

The library does not draw progress bars itself: the caller (the Typer app) passes a
`progress` factory, so typer and rich stay out of the library.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from adaptive.train.config import Config
from adaptive.train.trainer import RunSummary, StepInfo, Trainer


class TrainProgress(Protocol):
    """What `run_training` drives: `start(trainer)`, one call per step, `stop()`."""

    def start(self, trainer: Trainer) -> None: ...

    def __call__(self, info: StepInfo) -> None: ...

    def stop(self) -> None: ...


def run_dir_for(cfg: Config) -> Path:
    """`run.out / run.name`, the name defaulting to a timestamp (with `-2`, `-3`, ... when a
    run started within the same second already holds it)."""
    out = Path(cfg["run"]["out"])
    if cfg["run"]["name"]:
        return out / cfg["run"]["name"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir, n = out / stamp, 2
    while run_dir.exists():
        run_dir, n = out / f"{stamp}-{n}", n + 1
    return run_dir


def run_training(
    cfg: Config,
    *,
    resume: bool = False,
    quiet: bool = False,
    progress: Callable[[Config], TrainProgress] | None = None,
    echo: Callable[[str], None] = print,
) -> RunSummary:
    """Train per `cfg`; `progress(cfg)` makes the progress display (none when None or
    `quiet`), and `echo` prints the summary (one line with `quiet`).

    Under torchrun (`WORLD_SIZE > 1`) every rank runs this; the process group is set up here
    and torn down at the end, rank 0 picks the run folder and alone shows progress and the
    summary (see the "Distributed training" section of docs/CONFIG_WORKFLOW.md).
    """
    from adaptive.train import distributed
    from adaptive.train.trainer import TrainingError, resolve_device

    owns_group = False
    info = None
    if distributed.env_world_size() > 1:
        owns_group = not distributed.dist.is_initialized()
        info = distributed.init_from_env(resolve_device(cfg["run"]["device"]).type)
    try:
        run_dir = run_dir_for(cfg)
        if info is not None:
            run_dir = Path(distributed.broadcast_object(str(run_dir)))  # one timestamp
            quiet = quiet or not info.is_main
        taken = not resume and (run_dir / "trace.parquet").exists()
        distributed.barrier()  # every rank has looked before rank 0 creates the trace
        if taken:
            raise TrainingError(f"{run_dir}: already holds a run; use --resume or another --name")
        summary = _train(cfg, run_dir, resume, None if quiet or progress is None else progress)
    finally:
        if owns_group:
            distributed.shutdown()
    if info is None or info.is_main:
        echo(format_summary(summary, short=quiet))
    return summary


def _train(
    cfg: Config,
    run_dir: Path,
    resume: bool,
    progress: Callable[[Config], TrainProgress] | None,
) -> RunSummary:
    """One run; the trainer (and its DDP wrapper) is gone when this returns, so a process
    group torn down afterwards holds no live reference (tests/test_distributed.py)."""
    bar = progress(cfg) if progress is not None else None
    try:
        trainer = Trainer(cfg, run_dir, resume=resume, progress=bar)
        if bar is not None:
            bar.start(trainer)
        return trainer.train()
    finally:
        if bar is not None:
            bar.stop()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def format_summary(s: RunSummary, *, short: bool = False) -> str:
    """A few lines: where the run is, how long it took, what ran, how valfree moved.

    `short` (`--quiet`): one line with the run folder and the training figures.
    """
    trained = (
        f"{_plural(s.epochs_done, 'epoch')}, {_plural(s.steps_done, 'step')} in {s.seconds:.1f} s"
        f" on {_plural(s.threads, 'CPU thread')}"
    )
    if short:
        return f"{s.run_dir}: trained {trained}" + (" (interrupted)" if s.interrupted else "")
    lines = [
        f"run        {s.run_dir}" + ("  (interrupted)" if s.interrupted else ""),
        f"trace      {s.run_dir / 'trace.parquet'}",
        f"trained    {trained}",
        f"adaptive   {s.controllers}",
    ]
    for key, unit in (("MPJPE", "mm"), ("YawAbsDeg", "deg"), ("RootDrift", "m")):
        if key in s.first and key in s.last:
            lines.append(
                f"valfree {key:<10} {s.first[key]:.4g} -> {s.last[key]:.4g} {unit} "
                "(first -> last epoch)"
            )
    return "\n".join(lines)
