"""PyTorch Lightning: record a trace from a LightningModule and run the controller live.

Install with ``pip install 'adaptive-replay[lightning]'``. The convention (docs/INTEGRATION.md):
``training_step`` returns its raw, unweighted component losses, either

* ``return {"loss": total, "losses": {"a": loss_a, "b": loss_b}}`` (record, and replay or
  run a controller in dry-run: the callback reads the losses after the step), or
* ``return self.adaptive_loss({"a": loss_a, "b": loss_b})``: the callback (set on the module
  as ``adaptive_loss``) forms the total to optimise, with the controller's applied weights
  when ``dry_run=False``; those weights are then in ``self.adaptive_loss.weights``.

``AdaptiveCallback(..., config="recommended.toml")`` runs the loss weighting a recommended
file names (built by ``adaptive.controllers_from_config``) instead of ``method=...``.

A module that runs a teacher-forcing / free-run schedule passes what the scheduler laws
read, so `adaptive replay --method scheduler` works on the trace: ``schedule`` (the values
this batch used), ``regime`` (1 when it drew a free-run rollout), ``loss_tf_total`` and
``loss_fr_total`` (the free-run part, NaN when none was drawn), as keywords of
``self.adaptive_loss(losses, ...)`` or as the same keys of the dict ``training_step`` returns.

One trace row per training batch (``step`` counts them), ``epoch`` is
``trainer.current_epoch``; validation metrics become epoch rows of split ``val``. The
controller's state and the counters go into Lightning checkpoints under ``state_key``, and a
fit resumed with ``ckpt_path=...`` cuts the trace back to the checkpoint and continues it
exactly. Under DDP the component losses are all-reduced (mean over ranks) before the
controller sees them, as in the reference trainer: every rank computes the same weights and
back-propagates its own losses with them; rank 0 writes the trace.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - the standalone package name
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as exc:
        raise ImportError(
            "adaptive.integrations.lightning needs PyTorch Lightning: "
            "pip install 'adaptive-replay[lightning]'"
        ) from exc

from adaptive.record import TraceRecorder
from adaptive.trace import truncate_trace

__all__ = ["AdaptiveCallback"]

_STATE_VERSION = 1
#: What a training step may pass for the scheduler laws (recorded by `TraceRecorder`).
_SCHEDULE_KEYS = ("schedule", "regime", "loss_tf_total", "loss_fr_total")


def _schedule_part(**values: Any) -> dict[str, Any]:
    """The given schedule keywords, detached, for `TraceRecorder.log_step`."""
    out = {}
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, Tensor):
            v = v.detach()
        elif isinstance(v, Mapping):
            v = {n: x.detach() if isinstance(x, Tensor) else x for n, x in v.items()}
        out[k] = v
    return out


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class AdaptiveCallback(pl.Callback):
    """Record a v1 trace from a LightningModule; optionally run `AdaptiveLossWeighting`.

    Args:
        trace: the trace to write (`runs/mine/trace.parquet`).
        components: the loss component names ``training_step`` reports.
        base_weights: base weight per component (default 1 each).
        method: a weighting method (``"dwa"``, ``"uncertainty"``, ...) to run live, or None
            to record only.
        config: instead of ``method``: a recommended config file (``recommended.toml``,
            ``best.toml``) whose loss weighting to run, built by
            ``adaptive.controllers_from_config`` (its ``[loss.weights]`` serve as base
            weights when they name the components). A file that switches the scheduler
            on is refused: the callback does not drive a schedule.
        dry_run: True: the controller proposes and the trace records its proposals, the
            base weights are applied. False: its weights are applied (needs
            ``return self.adaptive_loss(losses)`` in ``training_step``). Default: True,
            with ``config`` the file's ``adaptive.dry_run``.
        adjustment_range: bound on the relative change of a weight.
        metrics: logged metric names to record on ``val`` epoch rows (default: every
            logged metric whose name starts with ``val``).
        run_id: run identifier in the trace (default: the trace's parent folder name).
        state_key: key of this callback's state in Lightning checkpoints.
        attribute: name under which the callback is set on the module.
        flush_rows, flush_seconds: trace flush policy (see `TraceWriter`).
        log_every: steps between the controller's log lines (0: never).
        **method_params: the method's hyperparameters (``temperature=2.0``, ...).

    Example:
        >>> cb = AdaptiveCallback("runs/mine/trace.parquet", components=["a", "b"],
        ...                       method="dwa", dry_run=False, temperature=2.0)
        >>> lightning.Trainer(max_epochs=10, callbacks=[cb]).fit(module)
    """

    def __init__(
        self,
        trace: str | os.PathLike[str],
        *,
        components: Sequence[str],
        base_weights: Mapping[str, float] | None = None,
        method: str | None = None,
        dry_run: bool | None = None,
        adjustment_range: float | None = None,
        metrics: Sequence[str] | None = None,
        run_id: str | None = None,
        state_key: str = "adaptive",
        attribute: str = "adaptive_loss",
        flush_rows: int = 10_000,
        flush_seconds: float = 10.0,
        log_every: int = 0,
        config: str | os.PathLike[str] | None = None,
        **method_params: Any,
    ) -> None:
        if not isinstance(state_key, str) or not state_key:
            raise ValueError(f"state_key must be a non-empty string, got {state_key!r}")
        if not isinstance(attribute, str) or not attribute.isidentifier():
            raise ValueError(f"attribute must be an identifier, got {attribute!r}")
        from adaptive.integrations._setup import callback_setup

        setup = callback_setup(
            components,
            who="AdaptiveCallback",
            instead="your module",
            base_weights=base_weights,
            method=method,
            dry_run=dry_run,
            adjustment_range=adjustment_range,
            metrics=metrics,
            config=config,
            log_every=log_every,
            method_params=method_params,
        )
        self.weighting: Any = setup.weighting
        self.config = setup.config
        self._config_info = setup.config_info
        dry_run = setup.dry_run
        self.trace = Path(trace)
        self.components: tuple[str, ...] = setup.components
        self.base_weights = setup.base_weights
        self.metrics = None if metrics is None else list(metrics)
        self.run_id = run_id
        self.attribute = attribute
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._state_key = state_key
        self.dry_run = dry_run
        self.weights: dict[str, Tensor | float] = dict(self.base_weights)
        self._recorder: TraceRecorder | None = None
        self._pending: dict[str, Any] | None = None
        self._grad_norm: Tensor | None = None
        self._step = 0  # training batches recorded
        self._epoch: int | None = None  # epoch whose steps the controller is in
        self._resumed = False

    @property
    def state_key(self) -> str:
        return self._state_key

    # ---------------------------------------------------------------- losses
    def _check(self, losses: Any) -> None:
        if not isinstance(losses, Mapping) or set(losses) != set(self.components):
            got = sorted(map(str, losses)) if isinstance(losses, Mapping) else repr(losses)
            raise KeyError(f"losses must name exactly {list(self.components)!r}, got {got}")

    def _reduce(self, losses: Mapping[str, Any]) -> dict[str, Tensor]:
        """Detached raw losses; the mean over ranks under DDP (one all-reduce)."""
        out = {
            c: (v.detach() if isinstance(v, Tensor) else torch.tensor(float(v)))
            for c, v in ((c, losses[c]) for c in self.components)
        }
        if _distributed():
            from adaptive.train.distributed import mean_losses

            out = mean_losses(out, self.components)
        return out

    def __call__(
        self,
        losses: Mapping[str, Tensor],
        *,
        schedule: Mapping[str, Any] | None = None,
        regime: int | None = None,
        loss_tf_total: Any = None,
        loss_fr_total: Any = None,
    ) -> Tensor:
        """The total loss to optimise from the raw component losses (call it in
        ``training_step``): weighted by the controller's applied weights, else the base.
        The keywords are recorded for the scheduler laws (module docstring)."""
        self._check(losses)
        reduced = self._reduce(losses)
        diag = None
        if self.weighting is not None:
            if _distributed():  # shared weights from the mean losses, this rank's own graph
                _, weights, diag = self.weighting(reduced)
                local = torch.stack([losses[c] for c in self.components])
                total = (local * diag.applied.to(local.dtype)).sum()
            else:
                total, weights, diag = self.weighting(losses)
            recorded_total = sum(weights[c] * reduced[c] for c in self.components)
        else:
            weights = self.base_weights
            total = sum(weights[c] * losses[c] for c in self.components)
            recorded_total = sum(weights[c] * reduced[c] for c in self.components)
        self.weights = weights
        self._pending = {
            "losses": reduced,
            "weights": weights,
            "diag": diag,
            "total": recorded_total.detach() if isinstance(recorded_total, Tensor) else None,
            "schedule": _schedule_part(
                schedule=schedule,
                regime=regime,
                loss_tf_total=loss_tf_total,
                loss_fr_total=loss_fr_total,
            ),
        }
        return total

    # ---------------------------------------------------------------- hooks
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        setattr(pl_module, self.attribute, self)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero or self._recorder is not None:
            return
        append = self._resumed or self._step > 0
        if self._resumed:
            truncate_trace(self.trace, before_step=self._step)
            self._resumed = False
        w = self.weighting
        try:
            self._recorder = TraceRecorder(
                self.trace,
                components=self.components,
                metrics=self.metrics or (),
                run_id=self.run_id,
                run_info={
                    "source": "lightning",
                    "controller": repr(w) if w is not None else None,
                    "base_weights": self.base_weights,
                    **({"adaptive_config": self._config_info} if self._config_info else {}),
                },
                flush_rows=self.flush_rows,
                flush_seconds=self.flush_seconds,
                append=append,
                start_step=self._step,
                start_epoch=trainer.current_epoch,
            )
        except FileExistsError:
            raise FileExistsError(
                f"{self.trace}: a trace is already there; choose another path or resume the "
                "fit that wrote it (trainer.fit(..., ckpt_path=...))"
            ) from None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        if self.weighting is not None and self._epoch is not None and epoch != self._epoch:
            self.weighting.end_epoch()
        self._epoch = epoch
        if self._recorder is not None:
            self._recorder.epoch = epoch

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        grads = [p.grad.detach() for p in pl_module.parameters() if p.grad is not None]
        if grads:
            device = grads[0].device
            norms = torch.stack([torch.linalg.vector_norm(g).to(device) for g in grads])
            self._grad_norm = torch.linalg.vector_norm(norms)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        pending, self._pending = self._pending, None
        if pending is None and outputs is None:
            return  # training_step returned None: Lightning skipped the batch
        if pending is None:
            losses = outputs.get("losses") if isinstance(outputs, Mapping) else None
            if losses is None:
                raise ValueError(
                    "training_step must return {'loss': total, 'losses': {name: loss}} or "
                    f"self.{self.attribute}(losses); got {type(outputs).__name__}"
                )
            if self.weighting is not None and not self.weighting.dry_run:
                raise RuntimeError(
                    "dry_run=False applies the controller's weights: training_step must "
                    f"return self.{self.attribute}(losses)"
                )
            self._check(losses)
            reduced = self._reduce(losses)
            diag = None
            weights: Mapping[str, Any] = self.base_weights
            if self.weighting is not None:
                _, weights, diag = self.weighting(reduced)
            total = outputs.get("loss")
            pending = {"losses": reduced, "weights": weights, "diag": diag, "total": total}
            pending["schedule"] = _schedule_part(**{k: outputs.get(k) for k in _SCHEDULE_KEYS})
        rec = self._recorder
        if rec is not None:
            diag = pending["diag"]
            optimizers = trainer.optimizers
            lr = optimizers[0].param_groups[0]["lr"] if optimizers else None
            rec.log_step(
                step=self._step,
                epoch=trainer.current_epoch,
                losses=pending["losses"],
                weights=None if diag is not None else pending["weights"],
                weights_base=None if diag is not None else self.base_weights,
                diagnostics=diag,
                loss_total=pending["total"],
                grad_norm=self._grad_norm,
                lr=lr,
                **pending.get("schedule", {}),
            )
        self._grad_norm = None
        self._step += 1

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        # After Lightning has reduced the epoch's logged values into callback_metrics.
        if trainer.sanity_checking or self._recorder is None:
            return
        values = {}
        for k, v in trainer.callback_metrics.items():
            wanted = k in self.metrics if self.metrics is not None else k.startswith("val")
            if wanted and (not isinstance(v, Tensor) or v.numel() == 1):
                values[k] = v.reshape(()) if isinstance(v, Tensor) else v
        if values:
            self._recorder.log_epoch(
                split="val", metrics=values, epoch=trainer.current_epoch, step=self._step
            )

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: Any) -> None:
        if self._recorder is not None:  # the trace holds everything the checkpoint has seen
            self._recorder.flush()

    def _close(self) -> None:
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._close()

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "step": self._step,
            "epoch": self._epoch,
            "components": list(self.components),
            "weighting": self.weighting.state_dict() if self.weighting is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version = state_dict.get("version")
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported AdaptiveCallback state version {version!r}")
        if state_dict.get("components") != list(self.components):
            raise ValueError(
                f"checkpoint was recorded for components {state_dict.get('components')!r}, "
                f"this callback has {list(self.components)!r}"
            )
        saved = state_dict.get("weighting")
        if self.weighting is not None:
            if saved is None:
                warnings.warn(
                    "the checkpoint holds no controller state: the controller starts fresh",
                    stacklevel=2,
                )
            else:
                self.weighting.load_state_dict(saved)
        self._step = int(state_dict["step"])
        self._epoch = state_dict.get("epoch")
        self._resumed = True

    def __repr__(self) -> str:
        return (
            f"AdaptiveCallback({str(self.trace)!r}, components={list(self.components)!r}, "
            f"weighting={self.weighting!r}, state_key={self._state_key!r})"
        )
