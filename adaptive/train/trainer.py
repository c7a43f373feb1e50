"""Reference autoregressive motion trainer with optional live adaptive controllers.

This module holds the run (`Trainer`: setup, the epoch loop, evaluation and checkpoint
timing); its rooms hold the parts: `_step` (one training step returning its record),
`_checkpoint`, `_controllers`, `_evaluation`, `_data`, `_runlog` (the run's own log, which
never touches the host's logging) and `_records` (the types a run reports).

The loop is the template users copy into their own trainer. Per epoch:

1. `_apply_stage_schedule(epoch)` -> base values (schedule, loss weights, lr);
2. hand them to the controllers: `scheduler.set_base_values`, `weighting.set_base_weights`;
3. per batch: schedule values from `scheduler.values()` -> detailed (raw) losses ->
   `weighting(raw)` -> backward -> grad norm -> `scheduler.step_batch(loss, grad_norm)`;
   every step is recorded to the trace;
4. `weighting.end_epoch()`; evaluation on `val` (teacher forced) and `valfree` (free run);
   `scheduler.step_epoch(latest_epoch_metrics('valfree'), latest_epoch_metrics('val'))`;
5. checkpoint (model, optimizer, RNG, controller states) and trace flush.

Under torchrun (``WORLD_SIZE > 1``) the same loop runs on every rank with the model in
DistributedDataParallel; see `adaptive.train.distributed` and the "Distributed training"
section of docs/CONFIG_WORKFLOW.md. Rank 0 alone writes the trace, logs and checkpoints.

With the adaptive features off the loop never touches a controller, so runs are what they
were before the controllers existed.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adaptive._checks import atomic_write
from adaptive.errors import InputError, ParameterError
from adaptive.motion import METRIC_KEYS, FeatureStats, MotionJointLoss, MotionModel
from adaptive.trace import TraceWriter, truncate_trace
from adaptive.train import distributed
from adaptive.train._checkpoint import checkpoint_state, read_checkpoint, restore, save_checkpoint
from adaptive.train._controllers import build_controllers, needed_extras, trace_columns
from adaptive.train._data import load_datasets, resolve_device, sample_batch
from adaptive.train._ema import WeightEMA
from adaptive.train._evaluation import run_evaluation, split_row
from adaptive.train._records import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LOG_NAME,
    TRACE_NAME,
    RunSummary,
    StepInfo,
    StepRecord,
    TrainingError,
)
from adaptive.train._runlog import RunLog
from adaptive.train._step import StepResult, TrainStep
from adaptive.train.config import Config, dumps_toml
from adaptive.train.schedule import StageSchedule, StageValues

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "TRACE_NAME",
    "RunSummary",
    "StepInfo",
    "StepRecord",
    "StepResult",
    "Trainer",
    "TrainingError",
    "load_datasets",
    "resolve_device",
]


class _NoTrace:
    """Stands in for the trace writer when recording is off (benchmarks only)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def log_step(self, **kw: Any) -> None:
        pass

    def log_epoch(self, **kw: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def elapsed(self) -> float:
        return time.monotonic() - self._t0


class Trainer:
    """One training run in `run_dir`: trace, checkpoints, logs, resolved config.

    `record=False` turns the trace off; it exists to measure what recording costs.
    `on_step(StepRecord)` is called after every optimizer step with what was applied (an
    observer hook: tests use it to compare ranks, without a host sync in the loop).
    The run's log (`logs/train.txt`, rank 0) is private to the run: nothing is attached to
    a shared logger, so a failed start or a finished run leaves no handler behind.
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: str | os.PathLike[str],
        *,
        resume: bool = False,
        progress: Callable[[StepInfo], None] | None = None,
        record: bool = True,
        on_step: Callable[[StepRecord], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.on_step = on_step
        run = cfg["run"]
        if run["threads"] > 0:
            torch.set_num_threads(run["threads"])
        self.device = resolve_device(run["device"])
        self.dist = distributed.init_from_env(self.device.type)
        self.is_main = self.dist is None or self.dist.is_main
        if self.dist is not None and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.runlog = RunLog(self.run_dir / LOG_NAME if self.is_main else None)
        self.log = self.runlog.logger("adaptive.train")
        try:
            self._setup(resume, record)
        except BaseException:
            self.runlog.close()
            raise

    def _setup(self, resume: bool, record: bool) -> None:
        cfg, run = self.cfg, self.cfg["run"]
        self.epochs = int(run["epochs"])
        tcfg = cfg["train"]
        self.steps_per_epoch = int(tcfg["steps_per_epoch"])
        self.train_set, self.val_set = load_datasets(cfg)
        self.skeleton = self.train_set.skeleton
        self.stats = FeatureStats.from_dataset(self.train_set)
        self.model = MotionModel(
            self.skeleton,
            self.stats,
            hidden_size=cfg["model"]["hidden_size"],
            num_layers=cfg["model"]["num_layers"],
            seed=run["seed"],
        ).to(self.device)
        # what the training step calls: the model itself, or its DDP wrapper (whose
        # construction broadcasts rank 0's parameters); checkpoints hold `self.model`.
        self.train_model: torch.nn.Module = self.model
        self.sharder: distributed.WindowSharder | None = None
        if self.dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            # buffers are data statistics, equal on all ranks: no per-forward buffer sync
            # (newer torch spells it forward_sync_buffers, older only broadcast_buffers)
            sync_kw = (
                "forward_sync_buffers"
                if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                else "broadcast_buffers"
            )
            self.train_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **{sync_kw: False},
            )
            self.sharder = distributed.WindowSharder(self.dist, int(tcfg["batch_size"]))
        self.loss_fn = MotionJointLoss(self.skeleton, cfg["loss"]["weights"])
        self.components = list(self.loss_fn.components)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=tcfg["lr"], weight_decay=tcfg["weight_decay"]
        )
        self.stage_schedule = StageSchedule(
            cfg["schedule"]["stages"], loss_weights=cfg["loss"]["weights"], lr=tcfg["lr"]
        )
        self.generator = torch.Generator().manual_seed(run["seed"] + 1_000_003)
        self.train_gpu = self.train_set.to(self.device) if self.device.type != "cpu" else None
        self.metric_history: dict[str, list[dict[str, float]]] = {"val": [], "valfree": []}
        self.epoch = 0  # next epoch to run
        self.step = 0  # optimizer steps done
        self.loss_input = cfg["adaptive"]["loss_input"]
        try:  # the config's controller settings meet the constructors: a refusal is bad input
            self.weighting, self.scheduler = build_controllers(
                cfg,
                self.components,
                self.loss_fn,
                logger=self.runlog.logger if self.is_main else None,
            )
        except ValueError as exc:
            if isinstance(exc, InputError):
                raise
            raise ParameterError(f"[adaptive] settings: {exc}") from exc
        self.extras = needed_extras(cfg, self.weighting)
        # the weights' moving average, evaluated beside them (rank 0 alone evaluates)
        decay = tcfg["ema_decay"]
        self.ema = WeightEMA(self.model, decay) if decay > 0 and self.is_main else None
        self.train_step = TrainStep(
            model=self.model,
            train_model=self.train_model,
            loss_fn=self.loss_fn,
            optimizer=self.optimizer,
            generator=self.generator,
            components=self.components,
            loss_input=self.loss_input,
            extras=self.extras,
            weighting=self.weighting,
            scheduler=self.scheduler,
            dist=self.dist,
            grad_clip=tcfg["grad_clip"],
        )
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._load_checkpoint()
        self.trace: TraceWriter | _NoTrace = (
            TraceWriter(
                self.run_dir / TRACE_NAME,
                run_id=self.run_dir.name,
                components=self.components,
                metrics=[*METRIC_KEYS],
                columns=trace_columns(self.components, self.weighting, self.scheduler, self.extras),
                run_info={
                    "config": cfg,
                    "seed": run["seed"],
                    "device": str(self.device),
                    "time_offset": self._time_offset,
                },
                flush_rows=cfg["trace"]["flush_rows"],
                flush_seconds=cfg["trace"]["flush_seconds"],
                min_part_rows=cfg["trace"]["min_part_rows"],
                append=resume,
            )
            if record and self.is_main
            else _NoTrace()
        )
        if self.is_main:
            text = dumps_toml(cfg)
            atomic_write(self.run_dir / CONFIG_NAME, lambda tmp: tmp.write_text(text, "utf-8"))
        distributed.barrier()  # rank 0 has truncated the trace / created the run folder

    # ------------------------------------------------------------------ public API
    def latest_epoch_metrics(self, split: str) -> dict[str, float]:
        """The most recent evaluation of `split` (`val`, `valfree`): metrics and losses."""
        history = self.metric_history.get(split) or []
        return dict(history[-1]) if history else {}

    def _apply_stage_schedule(self, epoch: int) -> StageValues:
        """Base values of `epoch` from the stage schedule, applied to loss and optimizer."""
        sv = self.stage_schedule.base_values(epoch)
        self.loss_fn.weights = sv.loss_weights
        for group in self.optimizer.param_groups:
            group["lr"] = sv.lr
        return sv

    def _stage_changed(self, epoch: int, sv: StageValues) -> bool:
        """A new stage begins at `epoch` and the loss weighting restarts its history there."""
        if epoch == 0 or not self.cfg["adaptive"]["restart_on_stage_change"]:
            return False
        return self.stage_schedule.base_values(epoch - 1).stage_index != sv.stage_index

    # ------------------------------------------------------------------ loop
    def _train_epoch(self, epoch: int, sv: StageValues) -> None:
        """`steps_per_epoch` steps: each one recorded, observed and shown."""
        data = self.train_gpu if self.train_gpu is not None else self.train_set
        batch_size, window = self.cfg["train"]["batch_size"], self.cfg["data"]["window"]
        log_every = max(1, self.cfg["run"]["log_every"])

        def sample() -> Any:
            return sample_batch(data, batch_size, window, self.generator, self.sharder)

        for i in range(self.steps_per_epoch):
            result = self.train_step(sample, sv)
            if self.ema is not None:
                self.ema.update(self.model)
            self.trace.log_step(step=self.step, epoch=epoch, **result.trace_fields())
            if self.on_step is not None:
                self.on_step(
                    StepRecord(
                        step=self.step,
                        epoch=epoch,
                        weights=dict(result.weights),
                        proposed_weights=result.proposed_weights,
                        schedule=dict(result.schedule),
                        loss_total=result.loss_total,
                        grad_norm=result.grad_norm.detach(),
                    )
                )
            self.step += 1
            if self.progress is not None or (i + 1) % log_every == 0:
                shown = float(result.loss_total) if (i + 1) % log_every == 0 or i == 0 else None
                if shown is not None:
                    self.log.info("epoch %d step %d loss %.5g", epoch, self.step, shown)
                if self.progress is not None:
                    self.progress(
                        StepInfo(epoch, self.epochs, self.step, i + 1, self.steps_per_epoch, shown)
                    )

    def _evaluate(self, epoch: int, sv: StageValues) -> None:
        if self.progress is not None:
            self.progress(
                StepInfo(
                    epoch,
                    self.epochs,
                    self.step,
                    self.steps_per_epoch,
                    self.steps_per_epoch,
                    None,
                    phase="eval",
                )
            )
        runs: dict[str, dict[str, float]] | None = None
        if self.is_main:
            runs = run_evaluation(
                self.model, self.val_set, self.loss_fn, self.cfg["data"], self.device
            )
            if self.ema is not None:
                averaged = run_evaluation(
                    self.ema.model, self.val_set, self.loss_fn, self.cfg["data"], self.device
                )
                runs |= {f"{split}_ema": res for split, res in averaged.items()}
        if self.dist is not None:
            # rank 0 evaluates; every rank gets its metrics, so step_epoch agrees everywhere
            runs = distributed.broadcast_object(runs)
        assert runs is not None
        for split, res in runs.items():
            metrics, losses, total = split_row(res, self.components, sv.loss_weights)
            if split in self.metric_history:  # what the controllers read: not the average
                self.metric_history[split].append({**metrics, "loss": total})
            self.trace.log_epoch(
                split=split,
                epoch=epoch,
                step=self.step,
                metrics=metrics,
                losses=losses,
                loss_total=total,
            )
            self.log.info(
                "epoch %d %s %s",
                epoch,
                split,
                " ".join(f"{k}={v:.4g}" for k, v in {**metrics, "loss": total}.items()),
            )

    def train(self) -> RunSummary:
        """Run the remaining epochs; Ctrl-C stops cleanly (trace flushed, checkpoint intact)."""
        t0 = time.monotonic()
        interrupted = False
        try:
            if self.is_main and not (self.run_dir / CHECKPOINT_NAME).exists():
                self._save_checkpoint()  # an interrupt in the first epoch can still resume
            while self.epoch < self.epochs:
                self._run_epoch(self.epoch)
        except KeyboardInterrupt:
            interrupted = True
            self.log.warning(
                "interrupted at epoch %d step %d; trace flushed, last checkpoint kept",
                self.epoch,
                self.step,
            )
        finally:
            try:
                self.trace.close()
                if self.is_main and isinstance(self.trace, TraceWriter):
                    self._compact_trace()
            finally:
                self.runlog.close()
        # rank 0 may still be compacting the trace: no rank tears the group down before it
        distributed.barrier()
        vf = self.metric_history["valfree"]
        return RunSummary(
            run_dir=self.run_dir,
            epochs_done=self.epoch,
            steps_done=self.step,
            seconds=time.monotonic() - t0,
            first=dict(vf[0]) if vf else {},
            last=dict(vf[-1]) if vf else {},
            interrupted=interrupted,
            threads=torch.get_num_threads(),
            controllers=self._controllers_text(),
        )

    def _run_epoch(self, epoch: int) -> None:
        """Base values -> controllers -> steps -> evaluation -> scheduler -> checkpoint."""
        sv = self._apply_stage_schedule(epoch)
        if self.scheduler is not None:
            self.scheduler.set_base_values(sv.schedule)
        if self.weighting is not None:
            if self._stage_changed(epoch, sv):
                self.weighting.restart()
                self.log.info("stage %s begins: loss weighting history restarted", sv.stage)
            self.weighting.set_base_weights(sv.loss_weights)
        self.log.info("epoch %d stage %s base %s lr %.3g", epoch, sv.stage, sv.schedule, sv.lr)
        self.model.train()
        self._train_epoch(epoch, sv)
        if self.weighting is not None:
            self.weighting.end_epoch()
        self._evaluate(epoch, sv)
        if self.scheduler is not None:
            self.scheduler.step_epoch(
                self.latest_epoch_metrics("valfree"), self.latest_epoch_metrics("val")
            )
        self.epoch = epoch + 1
        self.trace.flush()
        if self.is_main:
            self._save_checkpoint()

    def _controllers_text(self) -> str:
        """`dwa (dry-run), scheduler (dry-run)`, `none`, ... for the run summary."""
        on = []
        for name, ctrl in (
            (self.cfg["adaptive"]["loss"], self.weighting),
            ("scheduler", self.scheduler),
        ):
            if ctrl is not None:
                on.append(f"{name} ({'dry-run' if ctrl.dry_run else 'live'})")
        return ", ".join(on) or "none (base weights and stage schedule)"

    def _compact_trace(self) -> None:
        """Merge the trace's parts into one (`trace.compact`); a failure keeps the parts."""
        from adaptive.trace import TraceError, compact_trace, part_files

        path = self.run_dir / TRACE_NAME
        if not self.cfg["trace"]["compact"] or not path.is_dir():
            return
        if len(part_files(path)) < 2:
            return
        try:
            compact_trace(path, keep_directory=True)
        except (TraceError, OSError) as exc:
            self.log.warning("trace left in parts, not compacted: %s", exc)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> None:
        state = checkpoint_state(
            epoch=self.epoch,
            step=self.step,
            model=self.model,
            optimizer=self.optimizer,
            generator=self.generator,
            metric_history=self.metric_history,
            weighting=self.weighting,
            scheduler=self.scheduler,
            cfg=self.cfg,
            elapsed=self.trace.elapsed(),
            ema=self.ema,
        )
        save_checkpoint(state, self.run_dir / CHECKPOINT_NAME)

    _time_offset: float = 0.0

    def _load_checkpoint(self) -> None:
        state = read_checkpoint(self.run_dir, self.device)
        self.metric_history = restore(
            state,
            self.run_dir / CHECKPOINT_NAME,
            model=self.model,
            optimizer=self.optimizer,
            generator=self.generator,
            weighting=self.weighting,
            scheduler=self.scheduler,
            ema=self.ema,
        )
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self._time_offset = float(state.get("time", 0.0))
        if self.is_main:
            truncate_trace(self.run_dir / TRACE_NAME, through_epoch=self.epoch - 1)
        self.log.info("resumed %s at epoch %d step %d", self.run_dir, self.epoch, self.step)
