"""Reference autoregressive motion trainer with optional live adaptive controllers.

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
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaptive._checks import atomic_write
from adaptive.errors import InputError, ParameterError
from adaptive.motion import (
    METRIC_KEYS,
    FeatureStats,
    MotionDataset,
    MotionJointLoss,
    MotionModel,
    batch_loss,
    evaluate,
    make_splits,
)
from adaptive.trace import TraceWriter, truncate_trace
from adaptive.train import distributed
from adaptive.train.config import Config, dumps_toml
from adaptive.train.schedule import (
    SCHEDULE_PARAMS,
    StageSchedule,
    StageValues,
    schedule_limits,
)
from adaptive.util import component_grad_norms

log = logging.getLogger("adaptive.train")

TRACE_NAME = "trace.parquet"
CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.toml"


class TrainingError(InputError, RuntimeError):
    """A run that cannot start or continue (bad data path, mismatched checkpoint, ...)."""


@dataclass(frozen=True)
class StepRecord:
    """What `on_step` sees after each optimizer step: what was applied, as device tensors
    (or floats) that nothing has read to the host, so an observer adds no sync unless it
    reads them itself."""

    step: int
    epoch: int
    weights: dict[str, Any]
    proposed_weights: dict[str, Any] | None
    schedule: dict[str, Any]
    loss_total: Any
    grad_norm: Any


@dataclass
class StepInfo:
    """What the progress callback sees after each optimizer step (host floats only when
    `loss` is not None, which happens every `run.log_every` steps)."""

    epoch: int
    epochs: int
    step: int
    step_in_epoch: int
    steps_per_epoch: int
    loss: float | None = None
    phase: str = "train"


@dataclass
class RunSummary:
    """End-of-run figures."""

    run_dir: Path
    epochs_done: int
    steps_done: int
    seconds: float
    first: dict[str, float] = field(default_factory=dict)  # valfree metrics, first epoch
    last: dict[str, float] = field(default_factory=dict)  # valfree metrics, last epoch
    interrupted: bool = False
    threads: int = 0  # torch CPU threads the run used
    controllers: str = ""  # which adaptive controllers ran, live or dry-run


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' requested but CUDA is not available")
    if name not in ("cpu", "cuda"):
        raise TrainingError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def load_datasets(cfg: Config) -> tuple[MotionDataset, MotionDataset]:
    """Train / validation datasets from the config's data section."""
    d = cfg["data"]
    if d["source"] == "procedural":
        return make_splits(
            cfg["run"]["seed"], d["train_clips"], d["val_clips"], d["clip_frames"], d["fps"]
        )
    if d["source"] == "bvh":
        from adaptive.motion.bvh import load_bvh_folder

        if not d["path"]:
            raise TrainingError("data.source = 'bvh' needs data.path (a folder of .bvh files)")
        full = load_bvh_folder(d["path"], scale=d["bvh_scale"], frame_step=d["bvh_frame_step"])
        n = full.num_clips
        if n < 2:
            raise TrainingError(f"{d['path']}: need at least 2 BVH clips (train and val), got {n}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg["run"]["seed"]))
        n_val = max(1, round(n * d["val_clips"] / (d["train_clips"] + d["val_clips"])))
        val_idx, train_idx = order[:n_val].tolist(), order[n_val:].tolist()
        return (
            MotionDataset.from_clips(full.skeleton, [full.clip(i) for i in sorted(train_idx)]),
            MotionDataset.from_clips(full.skeleton, [full.clip(i) for i in sorted(val_idx)]),
        )
    raise TrainingError(f"data.source must be 'procedural' or 'bvh', got {d['source']!r}")


def _atomic_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


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
            self.weighting, self.scheduler = self._build_controllers()
        except ValueError as exc:
            if isinstance(exc, InputError):
                raise
            raise ParameterError(f"[adaptive] settings: {exc}") from exc
        # extras (per-component grad norms, losses after the step): computed only when the
        # active method needs them or the config asks to record them (they cost time)
        needed = set(self.weighting.requires) if self.weighting is not None else set()
        needed |= set(cfg["adaptive"]["record_extras"])
        self.extras = tuple(e for e in ("grad_norm", "loss_after") if e in needed)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._setup_logging()
        else:
            self._log_handler = None
        if resume:
            self._load_checkpoint()
        self.trace: TraceWriter | _NoTrace = (
            TraceWriter(
                self.run_dir / TRACE_NAME,
                run_id=self.run_dir.name,
                components=self.components,
                metrics=[*METRIC_KEYS],
                columns=self._trace_columns(),
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
            (self.run_dir / CONFIG_NAME).write_text(dumps_toml(cfg), "utf-8")
        distributed.barrier()  # rank 0 has truncated the trace / created the run folder

    # ------------------------------------------------------------------ setup
    def _build_controllers(self) -> tuple[Any, Any]:
        a = self.cfg["adaptive"]
        weighting = scheduler = None
        if a["loss"] != "none":
            from adaptive.weighting import AdaptiveLossWeighting

            self.loss_fn.return_detailed_losses = True
            weighting = AdaptiveLossWeighting(
                self.components,
                self.loss_fn.weights,
                method=a["loss"],
                adjustment_range=a["loss_adjustment_range"],
                dry_run=a["dry_run"],
                log_every=a["log_every"],
                **a.get(a["loss"], {}),
            )
        if a["scheduler"]:
            from adaptive.scheduler import AdaptiveScheduler

            law = dict(a["scheduler_law"])
            law["val_metric"] = law.get("val_metric") or None
            scheduler = AdaptiveScheduler(
                adjustment_rate=a["adjustment_rate"],
                update_interval=a["update_interval"],
                use_epoch_metrics=a["use_epoch_metrics"],
                adjustment_range=a["scheduler_adjustment_range"],
                dry_run=a["dry_run"],
                log_every=a["log_every"],
                limits=schedule_limits(self.cfg["data"]["window"]),
                **law,
            )
        return weighting, scheduler

    def _trace_columns(self) -> list[str]:
        cols = ["loss_total", "grad_norm", "lr", "loss_tf_total", "regime", "stage"]
        cols += [f"loss_tf/{c}" for c in self.components]
        cols += [f"loss_fr/{c}" for c in self.components]
        cols += [f"weight/{c}" for c in self.components]
        cols += [f"weight_base/{c}" for c in self.components]
        if self.weighting is not None:
            cols += [f"proposed/weight/{c}" for c in self.components]
            cols += ["weighting_nonfinite"]
        for name in self.extras:
            cols += [f"{name}/{c}" for c in self.components]
        cols += [f"schedule/{p}" for p in SCHEDULE_PARAMS]
        cols += [f"schedule_base/{p}" for p in SCHEDULE_PARAMS]
        if self.scheduler is not None:
            cols += [f"proposed/schedule/{p}" for p in SCHEDULE_PARAMS]
        return cols

    def _setup_logging(self) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(exist_ok=True)
        handler = logging.FileHandler(logs / "train.txt", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root = logging.getLogger("adaptive")
        root.setLevel(logging.INFO)
        root.addHandler(handler)
        self._log_handler = handler

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
        tcfg = self.cfg["train"]
        grad_clip = tcfg["grad_clip"] if tcfg["grad_clip"] > 0 else math.inf
        params = [p for p in self.model.parameters() if p.requires_grad]
        data = self.train_gpu if self.train_gpu is not None else self.train_set
        base_w = sv.loss_weights
        log_every = max(1, self.cfg["run"]["log_every"])
        for i in range(self.steps_per_epoch):
            if self.scheduler is not None:
                values = self.scheduler.values()
                proposed_schedule = self.scheduler.proposed()
            else:
                values, proposed_schedule = sv.schedule, None
            if self.sharder is not None:
                batch = self.sharder.sample(data, self.cfg["data"]["window"], self.generator)
            else:
                batch = data.sample_windows(
                    tcfg["batch_size"], self.cfg["data"]["window"], self.generator
                )
            total, raw, parts = self._batch_loss(self.train_model, batch, values)
            regime = 1 if parts["freerun"] else 0
            loss_tf, loss_fr = parts["tf"], parts["fr"]
            weights: dict[str, Any] = base_w
            proposed_weights = None
            nonfinite_state = None
            # Distributed: one all-reduce, so the controllers see the mean raw losses over
            # ranks and every rank computes the same weights (all ranks draw the same regime).
            recorded = {c: v.detach() for c, v in raw.items()}
            if self.dist is not None:
                flat = {**recorded, **{f"tf/{c}": v for c, v in loss_tf.items()}}
                flat |= {f"fr/{c}": v for c, v in loss_fr.items()}
                flat = distributed.mean_losses(flat, list(flat))
                recorded = {c: flat[c] for c in self.components}
                loss_tf = {c: flat[f"tf/{c}"] for c in self.components}
                loss_fr = {c: flat[f"fr/{c}"] for c in loss_fr}
            # the scheduler's loss signal: the teacher-forced part, present in every batch
            loss_tf_total = self.loss_fn.combine(loss_tf).detach()
            grad_norms = None
            if "grad_norm" in self.extras:  # of the losses the weighting observes
                observed = parts["tf_graph"] if self.loss_input == "tf" else raw
                grad_norms = component_grad_norms(
                    {c: observed[c] for c in self.components},
                    self.model.shared_parameters(),
                    reduce=None if self.dist is None else distributed.mean_tensor,
                )
            if self.weighting is not None:
                inputs = loss_tf if self.loss_input == "tf" else recorded
                step_extras = (
                    {"grad_norm": grad_norms} if "grad_norm" in self.weighting.requires else None
                )
                _, weights, diag = self.weighting(inputs, extras=step_extras)
                proposed_weights = dict(zip(self.components, diag.proposed.unbind(0), strict=True))
                nonfinite_state = diag.nonfinite_state
                if not self.weighting.dry_run:  # dry-run: the base-weighted total stays
                    # backward uses this rank's own raw losses with the controller's weights
                    local = torch.stack([raw[c] for c in self.components])
                    total = (local * diag.applied.to(local.dtype)).sum(-1)
            if self.dist is None:
                loss_value = total.detach()
            elif self.weighting is not None:  # sum_c w_c * mean_r raw_c, the same on every rank
                mean = torch.stack([recorded[c] for c in self.components])
                loss_value = (mean * diag.applied.to(mean.dtype)).sum(-1)
            else:
                loss_value = self.loss_fn.combine(recorded).detach()
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
            self.optimizer.step()
            loss_after = None
            if "loss_after" in self.extras:
                loss_after = self._losses_after(batch, values, regime)
                if self.weighting is not None and self.weighting.needs_after_step:
                    self.weighting.after_step({"loss_after": loss_after})
            if self.scheduler is not None:
                self.scheduler.step_batch(loss_tf_total, grad_norm, regime=regime)
            extra: dict[str, Any] = {
                "loss_tf_total": loss_tf_total,
                "regime": regime,
                "stage": sv.stage_index,
            }
            extra |= {f"loss_tf/{c}": v for c, v in loss_tf.items()}
            extra |= {f"loss_fr/{c}": loss_fr.get(c, math.nan) for c in self.components}
            if nonfinite_state is not None:
                extra["weighting_nonfinite"] = nonfinite_state
            if grad_norms is not None:
                extra |= {f"grad_norm/{c}": v for c, v in grad_norms.items()}
            if loss_after is not None:
                extra |= {f"loss_after/{c}": v for c, v in loss_after.items()}
            self.trace.log_step(
                step=self.step,
                epoch=epoch,
                losses=recorded,
                loss_total=loss_value,
                weights=weights,
                weights_base=base_w,
                proposed_weights=proposed_weights,
                schedule=values,
                schedule_base=sv.schedule,
                proposed_schedule=proposed_schedule,
                grad_norm=grad_norm,
                lr=sv.lr,
                extra=extra,
            )
            if self.on_step is not None:
                self.on_step(
                    StepRecord(
                        step=self.step,
                        epoch=epoch,
                        weights=dict(weights),
                        proposed_weights=proposed_weights,
                        schedule=dict(values),
                        loss_total=loss_value,
                        grad_norm=grad_norm.detach(),
                    )
                )
            self.step += 1
            if self.progress is not None or (i + 1) % log_every == 0:
                shown = float(loss_value) if (i + 1) % log_every == 0 or i == 0 else None
                if shown is not None:
                    log.info("epoch %d step %d loss %.5g", epoch, self.step, shown)
                if self.progress is not None:
                    self.progress(
                        StepInfo(epoch, self.epochs, self.step, i + 1, self.steps_per_epoch, shown)
                    )

    def _batch_loss(
        self,
        model: torch.nn.Module,
        batch: Any,
        values: dict[str, float],
        freerun: bool | None = None,
    ) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
        """`batch_loss` under the schedule `values` (`freerun`: replay a known draw)."""
        return batch_loss(  # type: ignore[return-value]
            model,
            self.loss_fn,
            batch,
            tf_ratio=values["tf_ratio"],
            freerun_horizon=int(values["freerun_horizon"]),
            freerun_weight=values["freerun_weight"],
            generator=self.generator,
            return_info=True,
            freerun=freerun,
        )

    def _losses_after(
        self, batch: Any, values: dict[str, float], regime: int
    ) -> dict[str, torch.Tensor]:
        """The losses the weighting observes, re-evaluated on the same batch after the
        optimiser step (same free-run draw, no new random number; FAMO's ``L'``)."""
        total_input = self.loss_input == "total"
        with torch.no_grad():  # tf input: the teacher-forced pass only
            _, raw, parts = self._batch_loss(
                self.model, batch, values, freerun=bool(regime) and total_input
            )
        out = raw if total_input else parts["tf"]
        out = {c: out[c].detach() for c in self.components}
        if self.dist is not None:
            out = distributed.mean_losses(out, self.components)
        return out

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
            runs = self._run_evaluation()
        if self.dist is not None:
            # rank 0 evaluates; every rank gets its metrics, so step_epoch agrees everywhere
            runs = distributed.broadcast_object(runs)
        assert runs is not None
        for split, res in runs.items():
            losses = {c: res[c] for c in self.components}
            metrics = {k: res[k] for k in res if k not in losses}
            total = sum(sv.loss_weights[c] * losses[c] for c in self.components)
            self.metric_history[split].append({**metrics, "loss": total})
            self.trace.log_epoch(
                split=split,
                epoch=epoch,
                step=self.step,
                metrics=metrics,
                losses=losses,
                loss_total=total,
            )
            log.info(
                "epoch %d %s %s",
                epoch,
                split,
                " ".join(f"{k}={v:.4g}" for k, v in {**metrics, "loss": total}.items()),
            )

    def _run_evaluation(self) -> dict[str, dict[str, float]]:
        d = self.cfg["data"]
        val_data = self.val_set.to(self.device) if self.device.type != "cpu" else self.val_set
        return {
            "val": evaluate(
                self.model,
                val_data,
                mode="tf",
                loss_fn=self.loss_fn,
                window=d["window"],
                max_windows=d["val_windows"],
            ),
            "valfree": evaluate(
                self.model,
                val_data,
                mode="free",
                loss_fn=self.loss_fn,
                seed_frames=d["val_seed_frames"],
                horizon=d["val_horizon"],
                max_windows=d["val_windows"],
            ),
        }

    def train(self) -> RunSummary:
        """Run the remaining epochs; Ctrl-C stops cleanly (trace flushed, checkpoint intact)."""
        t0 = time.monotonic()
        interrupted = False
        try:
            if self.is_main and not (self.run_dir / CHECKPOINT_NAME).exists():
                self._save_checkpoint()  # an interrupt in the first epoch can still resume
            while self.epoch < self.epochs:
                epoch = self.epoch
                sv = self._apply_stage_schedule(epoch)
                if self.scheduler is not None:
                    self.scheduler.set_base_values(sv.schedule)
                if self.weighting is not None:
                    if self._stage_changed(epoch, sv):
                        self.weighting.restart()
                        log.info("stage %s begins: loss weighting history restarted", sv.stage)
                    self.weighting.set_base_weights(sv.loss_weights)
                log.info("epoch %d stage %s base %s lr %.3g", epoch, sv.stage, sv.schedule, sv.lr)
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
        except KeyboardInterrupt:
            interrupted = True
            log.warning(
                "interrupted at epoch %d step %d; trace flushed, last checkpoint kept",
                self.epoch,
                self.step,
            )
        finally:
            self.trace.close()
            if self.is_main and isinstance(self.trace, TraceWriter):
                self._compact_trace()
            if self._log_handler is not None:
                logging.getLogger("adaptive").removeHandler(self._log_handler)
                self._log_handler.close()
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
            log.warning("trace left in parts, not compacted: %s", exc)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> None:
        state = {
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "metric_history": json.dumps(self.metric_history),
            "weighting": json.dumps(self.weighting.state_dict()) if self.weighting else "",
            "scheduler": json.dumps(self.scheduler.state_dict()) if self.scheduler else "",
            "config": json.dumps(self.cfg, default=list),
            "time": self.trace.elapsed(),
        }
        _atomic_save(state, self.run_dir / CHECKPOINT_NAME)

    _time_offset: float = 0.0

    def _load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT_NAME
        if not path.is_file():
            raise TrainingError(f"{self.run_dir}: no {CHECKPOINT_NAME} to resume from")
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # a torn, foreign or tampered file: the user's to fix
            raise TrainingError(
                f"{path}: not a readable checkpoint (a torn or foreign file: {type(exc).__name__})"
            ) from exc
        keys = ("model", "optimizer", "generator", "torch_rng", "metric_history", "epoch", "step")
        lacking = [k for k in keys if not isinstance(state, dict) or k not in state]
        if lacking:
            raise TrainingError(f"{path}: checkpoint lacks {', '.join(lacking)}; it is not "
                                "one adaptive train wrote, or it was cut short")  # fmt: skip
        try:
            self._apply_checkpoint(state)
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            if isinstance(exc, TrainingError):
                raise
            why = (str(exc).strip().strip("'\"").splitlines() or [type(exc).__name__])[0]
            raise TrainingError(f"{path}: checkpoint does not fit this run ({why})") from exc
        if self.is_main:
            truncate_trace(self.run_dir / TRACE_NAME, through_epoch=self.epoch - 1)
        log.info("resumed %s at epoch %d step %d", self.run_dir, self.epoch, self.step)

    def _apply_checkpoint(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.metric_history = json.loads(state["metric_history"])
        if self.weighting is not None:
            if not state["weighting"]:
                raise TrainingError(
                    "checkpoint has no adaptive loss state; resume with the same adaptive settings"
                )
            self.weighting.load_state_dict(json.loads(state["weighting"]))
        if self.scheduler is not None:
            if not state["scheduler"]:
                raise TrainingError(
                    "checkpoint has no scheduler state; resume with the same adaptive settings"
                )
            self.scheduler.load_state_dict(json.loads(state["scheduler"]))
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self._time_offset = float(state.get("time", 0.0))
