"""Run a training job with a progress bar and an end-of-run summary (used by the CLI)."""

from __future__ import annotations

import time
from pathlib import Path

from adaptive.train.config import Config
from adaptive.train.trainer import RunSummary, StepInfo, Trainer


def run_dir_for(cfg: Config) -> Path:
    """`run.out / run.name`, the name defaulting to a timestamp."""
    name = cfg["run"]["name"] or time.strftime("%Y%m%d-%H%M%S")
    return Path(cfg["run"]["out"]) / name


def run_training(cfg: Config, *, resume: bool = False, quiet: bool = False) -> RunSummary:
    """Train per `cfg`, showing progress (epoch, step, loss, ETA) unless `quiet`.

    Under torchrun (`WORLD_SIZE > 1`) every rank runs this; the process group is set up here
    and torn down at the end, rank 0 picks the run folder and alone shows progress and the
    summary (see the "Distributed training" section of docs/CONFIG_WORKFLOW.md).
    """
    import typer

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
        bar = None if quiet else _Bar(cfg)
        try:
            trainer = Trainer(cfg, run_dir, resume=resume, progress=bar)
            if bar is not None:
                bar.start(trainer)
            summary = trainer.train()
        finally:
            if bar is not None:
                bar.stop()
    finally:
        if owns_group:
            distributed.shutdown()
    if info is None or info.is_main:
        typer.echo(format_summary(summary, short=quiet))
    return summary


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


class _Bar:
    """Rich progress: epoch, step, loss, ETA."""

    def __init__(self, cfg: Config) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train[/] epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[phase]}"),
            TimeRemainingColumn(),
        )
        self.task = None
        self.loss = "-"

    def start(self, trainer: Trainer) -> None:
        self.progress.start()
        total = trainer.epochs * trainer.steps_per_epoch
        self.task = self.progress.add_task(
            "train",
            total=total,
            completed=trainer.step,
            epoch=f"{trainer.epoch}/{trainer.epochs}",
            loss="-",
            phase="",
        )

    def __call__(self, info: StepInfo) -> None:
        if self.task is None:
            return
        if info.loss is not None:
            self.loss = f"{info.loss:.4g}"
        self.progress.update(
            self.task,
            completed=info.step,
            epoch=f"{info.epoch + 1}/{info.epochs}",
            loss=self.loss,
            phase="(evaluating)" if info.phase == "eval" else "",
        )

    def stop(self) -> None:
        self.progress.stop()
