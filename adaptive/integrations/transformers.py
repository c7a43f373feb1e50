"""Hugging Face ``Trainer``: record a trace each optimizer step and run the controller live.

Install with ``pip install 'adaptive-replay[transformers]'``. Two pieces (docs/INTEGRATION.md):

* `AdaptiveTrainerCallback`, a ``TrainerCallback`` holding the trace (`TraceRecorder`) and the
  controller (`AdaptiveLossWeighting`): one step row per optimizer step (``on_step_end``),
  the Trainer's evaluation metrics as epoch rows (``on_evaluate``), the controller's epoch
  boundary at each new epoch (``on_epoch_begin``).
* `AdaptiveTrainer` (``Trainer`` with `AdaptiveTrainerMixin`; put the mixin in front of your
  own ``Trainer`` subclass the same way): its ``compute_loss`` takes the per-component losses
  and returns their weighted total. A callback cannot change the loss, so the trainer does.
  Its training logs also get each component's mean since the last log (``loss_<name>``).

The per-component losses come from the model, ``outputs["losses"] = {"reg": ..., "cls": ...}``
(a dict or ``ModelOutput``), or from ``compute_loss_func(outputs, labels,
num_items_in_batch=None)`` returning ``{name: loss}`` or ``(total, {name: loss})``. Each is
the mean over its micro-batch, raw and unweighted.

**Gradient accumulation.** The controller's weights are fixed for the whole optimizer step
(they depend only on the steps before it), every micro-batch is weighted by its share of the
step's items (its labels other than -100 where the Trainer counts ``num_items_in_batch``,
else its samples), and the trace row of the step holds the same share-weighted mean of the
components: ``Σ_c w_c · L̄_c`` is exactly what the accumulated gradient descends, and the
controller steps once per optimizer step on ``L̄`` (so replay over the trace equals live).

**Several processes** (accelerate / torchrun, DDP): the step's mean components are averaged
over ranks (one all-reduce of a ``(C,)`` tensor per optimizer step) before the controller
sees them, so every rank computes the same weights; rank 0 (the Trainer's world process zero)
writes the trace, as the Lightning callback does.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

try:
    from transformers import Trainer, TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "adaptive.integrations.transformers needs Hugging Face transformers: "
        "pip install 'adaptive-replay[transformers]'"
    ) from exc

from adaptive.record import TraceRecorder

__all__ = ["AdaptiveTrainer", "AdaptiveTrainerCallback", "AdaptiveTrainerMixin"]

#: Evaluation entries that are timings, not metrics of the model.
_NOT_METRICS = ("_runtime", "_samples_per_second", "_steps_per_second", "_jit_compilation_time")


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _items(batch: Any, count_labels: bool) -> float:
    """A micro-batch's item count: its labels other than -100 where the Trainer counts
    `num_items_in_batch` (`count_labels`), else its samples (first dimension)."""
    if isinstance(batch, Mapping):
        labels = batch.get("labels")
        if count_labels and isinstance(labels, Tensor):
            return float(labels.ne(-100).sum())
        for v in batch.values():
            if isinstance(v, Tensor) and v.dim() > 0:
                return float(v.shape[0])
    elif isinstance(batch, Sequence) and batch and isinstance(batch[0], Tensor):
        return float(batch[0].shape[0]) if batch[0].dim() > 0 else 1.0
    return 1.0


def _components(result: Any, key: str) -> tuple[Any, Any]:
    """(total or None, the component losses) from what the model or loss function gave."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping):
        return result[0], result[1]
    if isinstance(result, Mapping):
        if key in result and isinstance(result[key], Mapping):
            return result.get("loss"), result[key]
        if result and all(isinstance(v, Tensor) and v.dim() == 0 for v in result.values()):
            if "loss" not in result and "logits" not in result:
                return None, result  # a loss function returning {name: loss}
    value = getattr(result, key, None)
    if isinstance(value, Mapping):
        return getattr(result, "loss", None), value
    got = list(result.keys()) if isinstance(result, Mapping) else type(result).__name__
    raise ValueError(
        f"no per-component losses: the model must return outputs[{key!r}] = {{name: loss}} "
        f"(or pass compute_loss_func returning (total, {{name: loss}})); got {got}"
    )


class AdaptiveTrainerCallback(TrainerCallback):
    """Record a v1 trace from a Hugging Face ``Trainer``; optionally run a controller.

    Give it to `AdaptiveTrainer` (``adaptive=``), which adds it to the Trainer's callbacks
    and hands it the losses of every micro-batch.

    Args:
        trace: the trace to write (`runs/mine/trace.parquet`); an existing one is refused.
        components: the loss component names the model (or loss function) reports.
        base_weights: base weight per component (default 1 each).
        method: a weighting method (``"dwa"``, ``"uncertainty"``, ...) to run live, or None
            to record only (the base weights are applied).
        config: instead of ``method``: a recommended config file (``recommended.toml``,
            ``best.toml``) whose loss weighting to run, built by
            ``adaptive.controllers_from_config`` (its ``[loss.weights]`` serve as base
            weights when they name the components). A file that switches the scheduler on
            is refused: the Trainer integration does not drive a schedule.
        dry_run: True: the controller proposes, the trace records its proposals and the base
            weights are applied. False: its weights are applied. Default: True, with
            ``config`` the file's ``adaptive.dry_run``.
        adjustment_range: bound on the relative change of a weight (default 0.3).
        metrics: evaluation metrics to record (names without the ``eval_`` prefix; default:
            every numeric one but timings and ``epoch``).
        split: the split of the evaluation rows (``val``: `adaptive trial --metric val/NAME`).
        losses_key: where the model output holds the component losses.
        run_id: run identifier in the trace (default: the trace's parent folder name).
        run_info: JSON-able facts about the run (seed, arguments), kept in the metadata.
        flush_rows, flush_seconds: trace flush policy (see `TraceWriter`).
        log_every: steps between the controller's log lines (0: never).
        **method_params: the method's hyperparameters (``temperature=2.0``, ...).
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
        split: str = "val",
        losses_key: str = "losses",
        run_id: str | None = None,
        run_info: Mapping[str, Any] | None = None,
        flush_rows: int = 10_000,
        flush_seconds: float = 10.0,
        log_every: int = 0,
        config: str | os.PathLike[str] | None = None,
        **method_params: Any,
    ) -> None:
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must name the evaluated split, e.g. 'val', got {split!r}")
        from adaptive.integrations._setup import callback_setup

        setup = callback_setup(
            components,
            who="the Trainer integration",
            instead="your compute_loss",
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
        comps = list(setup.components)
        self.trace = Path(trace)
        self.components: tuple[str, ...] = setup.components
        self.base_weights = setup.base_weights
        self.metrics = None if metrics is None else list(metrics)
        self.split = split
        self.losses_key = losses_key
        self.run_id = run_id
        self.run_info = dict(run_info or {})
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.dry_run = dry_run
        #: the weights applied in the current optimizer step (component -> tensor or float)
        self.weights: dict[str, Any] = dict(self.base_weights)
        self._base_t = torch.tensor([self.base_weights[c] for c in comps], dtype=torch.float64)
        self._recorder: TraceRecorder | None = None
        self._shares: list[float] | None = None  # each micro-batch's share of the step
        self._micro = 0
        self._sum: Tensor | None = None  # Σ share_i · L_i (detached, float64)
        self._applied: Tensor | None = None  # this step's weights, (C,) float64
        self._grad_norm: Any = None
        self._lr: Any = None
        self._step = 0  # optimizer steps recorded
        self._epoch: int | None = None
        self._log_sum: Tensor | None = None  # Σ of step means since the Trainer last logged
        self._log_steps = 0

    # ---------------------------------------------------------------- losses
    def _stack(self, losses: Any) -> Tensor:
        if not isinstance(losses, Mapping) or set(losses) != set(self.components):
            got = sorted(map(str, losses)) if isinstance(losses, Mapping) else repr(losses)
            raise KeyError(f"losses must name exactly {list(self.components)!r}, got {got}")
        vals = [losses[c] for c in self.components]
        if not all(isinstance(v, Tensor) and v.numel() == 1 for v in vals):
            raise TypeError(
                "each component loss must be a scalar tensor (the mean over its micro-batch), "
                f"got {[type(v).__name__ for v in vals]}"
            )
        return torch.stack([v.reshape(()) for v in vals])

    def begin_step(self, items: Sequence[float]) -> None:
        """A new optimizer step of `len(items)` micro-batches with these item counts (the
        trainer calls it when it fetches the step's batches)."""
        total = float(sum(items))
        n = len(items)
        self._shares = [i / total for i in items] if total > 0 else [1.0 / n] * n
        self._micro = 0
        self._sum = None
        self._applied = None

    def micro_batch_loss(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The loss to back-propagate for the next micro-batch of the current step:
        ``share · Σ_c w_c · L_c`` with this step's weights (applied, or the base ones)."""
        stacked = self._stack(losses)
        shares = self._shares
        if shares is None or self._micro >= len(shares):
            raise RuntimeError(
                "a training micro-batch outside the optimizer step the trainer fetched: use "
                "AdaptiveTrainer (or AdaptiveTrainerMixin) with its own training loop"
            )
        raw = stacked.detach().to(torch.float64)
        if self._applied is None:
            self._applied = self._weights_for(raw)
            self.weights = dict(zip(self.components, self._applied.unbind(), strict=True))
        share = shares[self._micro]
        self._micro += 1
        part = raw * share
        self._sum = part if self._sum is None else self._sum + part
        return share * (stacked * self._applied.to(stacked.dtype)).sum()

    def _weights_for(self, raw: Tensor) -> Tensor:
        """This step's applied weights. They depend only on the steps before it, so a copy
        of the controller run on any losses of this step gives them without moving it."""
        if self.weighting is None:
            return self._base_t.to(raw.device)
        _, _, diag = copy.deepcopy(self.weighting)(dict(zip(self.components, raw, strict=True)))
        return diag.applied

    def eval_loss(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The evaluation loss: the base-weighted total, comparable across controllers."""
        stacked = self._stack(losses)
        return (stacked * self._base_t.to(stacked.device, stacked.dtype)).sum()

    # ---------------------------------------------------------------- hooks
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero or self._recorder is not None:
            return
        if self.trace.exists():
            raise FileExistsError(
                f"{self.trace}: a trace is already there; give each training run its own path"
            )
        w = self.weighting
        self._recorder = TraceRecorder(
            self.trace,
            components=self.components,
            metrics=self.metrics or (),
            run_id=self.run_id,
            run_info={
                "source": "transformers",
                "controller": repr(w) if w is not None else None,
                "base_weights": self.base_weights,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                **({"adaptive_config": self._config_info} if self._config_info else {}),
                **self.run_info,
            },
            flush_rows=self.flush_rows,
            flush_seconds=self.flush_seconds,
        )

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        epoch = 0 if self._epoch is None else self._epoch + 1
        if self.weighting is not None and self._epoch is not None:
            self.weighting.end_epoch()
        self._epoch = epoch

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer = kwargs.get("optimizer")
        if optimizer is not None and optimizer.param_groups:
            self._lr = optimizer.param_groups[0]["lr"]  # the rate this step applies

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step_sum, shares = self._sum, self._shares
        self._sum, self._shares, self._applied = None, None, None
        if step_sum is None or shares is None:
            raise RuntimeError(
                "an optimizer step without component losses: train with AdaptiveTrainer "
                "(or AdaptiveTrainerMixin), whose compute_loss hands them to this callback"
            )
        if self._micro != len(shares):
            raise RuntimeError(
                f"optimizer step {self._step}: {self._micro} of {len(shares)} micro-batches "
                "gave their losses"
            )
        mean = step_sum
        if _distributed():  # every rank's controller sees the mean over ranks
            from adaptive.train.distributed import mean_losses

            named = dict(zip(self.components, mean, strict=True))
            mean = torch.stack(list(mean_losses(named, self.components).values()))
        losses = dict(zip(self.components, mean.unbind(), strict=True))
        diag = None
        if self.weighting is not None:
            _, _, diag = self.weighting(losses)
            applied = diag.applied
        else:
            applied = self._base_t.to(mean.device)
        rec = self._recorder
        if rec is not None:
            rec.log_step(
                step=self._step,
                epoch=self._epoch or 0,
                losses=losses,
                weights=None if diag is not None else dict(self.base_weights),
                weights_base=None if diag is not None else dict(self.base_weights),
                diagnostics=diag,
                loss_total=(mean * applied).sum(),
                grad_norm=self._grad_norm,
                lr=self._lr,
            )
        self._grad_norm = None
        self._step += 1
        self._log_sum = mean if self._log_sum is None else self._log_sum + mean
        self._log_steps += 1

    def logged_losses(self) -> dict[str, float]:
        """The mean of each component over the optimizer steps since the last call
        (`loss_<name>` in the Trainer's logs), then start over; {} when there were none."""
        if self._log_sum is None:
            return {}
        means = (self._log_sum / self._log_steps).tolist()
        self._log_sum, self._log_steps = None, 0
        return {f"loss_{c}": m for c, m in zip(self.components, means, strict=True)}

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._recorder is not None:
            self._recorder.flush()  # a complete part per epoch

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._recorder is None:
            return  # evaluation outside training, or not rank 0
        values: dict[str, float] = {}
        for key, value in (kwargs.get("metrics") or {}).items():
            name = key.split("_", 1)[1] if key.startswith("eval_") else key
            if isinstance(value, Tensor) and value.numel() == 1:
                value = float(value)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if self.metrics is not None:
                if name in self.metrics:
                    values[name] = float(value)
            elif name != "epoch" and not key.endswith(_NOT_METRICS):
                values[name] = float(value)
        if values:
            loss = values.get("loss")
            self._recorder.log_epoch(
                split=self.split,
                metrics=values,
                loss_total=loss if loss is not None and math.isfinite(loss) else None,
                epoch=self._epoch or 0,
                step=self._step,
            )

    def _close(self) -> None:
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._close()

    @property
    def recorder(self) -> TraceRecorder | None:
        """The trace being written (rank 0, during training), else None."""
        return self._recorder

    def __repr__(self) -> str:
        return (
            f"AdaptiveTrainerCallback({str(self.trace)!r}, components={list(self.components)!r}, "
            f"weighting={self.weighting!r})"
        )


class AdaptiveTrainerMixin:
    """Put in front of a ``Trainer`` class: ``class MyTrainer(AdaptiveTrainerMixin, Trainer)``.

    Takes ``adaptive=AdaptiveTrainerCallback(...)`` besides the Trainer's own arguments. Its
    ``compute_loss`` reads the component losses (from the model output, or from
    ``compute_loss_func``, which it calls with ``num_items_in_batch=None``: return
    micro-batch means) and returns the weighted total, already scaled for gradient
    accumulation (``loss_is_scaled_for_ga = True``).
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, adaptive: AdaptiveTrainerCallback, **kwargs: Any) -> None:
        if not isinstance(adaptive, AdaptiveTrainerCallback):
            raise TypeError(
                f"adaptive must be an AdaptiveTrainerCallback, got {type(adaptive).__name__}"
            )
        if "loss_is_scaled_for_ga" not in vars(Trainer):
            import transformers

            raise ImportError(
                f"AdaptiveTrainer needs a transformers Trainer with loss_is_scaled_for_ga "
                f"(5.25 or later); this is {transformers.__version__}"
            )
        super().__init__(*args, **kwargs)
        self.adaptive = adaptive
        self.add_callback(adaptive)  # type: ignore[attr-defined]

    def get_batch_samples(self, *args: Any, **kwargs: Any) -> Any:
        batches, num_items = super().get_batch_samples(*args, **kwargs)  # type: ignore[misc]
        if batches:
            self.adaptive.begin_step([_items(b, num_items is not None) for b in batches])
        return batches, num_items

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        loss_func = getattr(self, "compute_loss_func", None)
        if loss_func is not None:
            inputs = dict(inputs)
            labels = inputs.pop("labels", None)
            outputs = model(**inputs)
            result = loss_func(outputs, labels, num_items_in_batch=None)
        else:
            outputs = result = model(**inputs)
        _, losses = _components(result, self.adaptive.losses_key)
        if model.training:
            loss = self.adaptive.micro_batch_loss(losses)
        else:
            loss = self.adaptive.eval_loss(losses)
        if not return_outputs:
            return loss
        if isinstance(outputs, Mapping):  # the evaluation loop reads tensors, not the dict
            outputs = {k: v for k, v in outputs.items() if k != self.adaptive.losses_key}
        return loss, outputs

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """The Trainer's training logs gain each component's mean since the last log
        (`loss_reg`, `loss_cls`, ...: to TensorBoard, W&B and the others it reports to)."""
        if "loss" in logs:
            logs = {**logs, **self.adaptive.logged_losses()}
        super().log(logs, *args, **kwargs)  # type: ignore[misc]

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        loss = super().training_step(model, inputs, num_items_in_batch)  # type: ignore[misc]
        if self.accelerator.sync_gradients:  # type: ignore[attr-defined]
            # the step's accumulated gradient, before the Trainer clips it
            grads = [p.grad.detach() for p in model.parameters() if p.grad is not None]
            if grads:
                norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
                self.adaptive._grad_norm = torch.linalg.vector_norm(norms)
        return loss


class AdaptiveTrainer(AdaptiveTrainerMixin, Trainer):
    """``transformers.Trainer`` whose loss is the adaptive weighted total of the model's
    component losses, recorded by ``adaptive=AdaptiveTrainerCallback(...)``.

    Example:
        >>> cb = AdaptiveTrainerCallback("runs/mine/trace.parquet", components=["reg", "cls"],
        ...                              method="dwa", dry_run=False, temperature=2.0)
        >>> AdaptiveTrainer(model=model, args=args, train_dataset=train,
        ...                 eval_dataset=val, adaptive=cb).train()
    """
