"""One training step of the reference trainer, returning its record.

`TrainStep` holds what a step needs (model, loss, optimizer, controllers, the training
generator); calling it with a batch sampler and the epoch's base values runs schedule values
-> losses -> (DDP mean) -> extras -> weighting -> backward -> clip -> optimizer step ->
after-step extras -> scheduler, and returns a `StepResult`: every value the trace records,
as device tensors nothing has read to the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from adaptive.motion import MotionBatch, MotionJointLoss, batch_loss
from adaptive.train import distributed
from adaptive.train.schedule import StageValues
from adaptive.util import component_grad_norms


@dataclass
class StepResult:
    """What one step applied and measured: the trace row's fields, bar step and epoch."""

    losses: dict[str, Any]  # raw losses (DDP: mean over ranks)
    loss_total: Any
    weights: dict[str, Any]
    weights_base: dict[str, float]
    proposed_weights: dict[str, Any] | None
    schedule: dict[str, Any]
    schedule_base: dict[str, float]
    proposed_schedule: dict[str, Any] | None
    grad_norm: Any
    lr: float
    extra: dict[str, Any]

    def trace_fields(self) -> dict[str, Any]:
        """Keyword arguments of `TraceWriter.log_step`, bar `step` and `epoch`."""
        return {
            "losses": self.losses,
            "loss_total": self.loss_total,
            "weights": self.weights,
            "weights_base": self.weights_base,
            "proposed_weights": self.proposed_weights,
            "schedule": self.schedule,
            "schedule_base": self.schedule_base,
            "proposed_schedule": self.proposed_schedule,
            "grad_norm": self.grad_norm,
            "lr": self.lr,
            "extra": self.extra,
        }


class TrainStep:
    """One optimizer step per call; see the module docstring for the order of work.

    `train_model` is what the forward pass calls (the model or its DDP wrapper), `model`
    the bare model (shared parameters for grad norms, no-grad re-evaluation after the step).
    """

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        train_model: torch.nn.Module,
        loss_fn: MotionJointLoss,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        components: Sequence[str],
        loss_input: str,
        extras: Sequence[str],
        weighting: Any,
        scheduler: Any,
        dist: distributed.DistInfo | None,
        grad_clip: float,
    ) -> None:
        self.model = model
        self.train_model = train_model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.generator = generator
        self.components = list(components)
        self.loss_input = loss_input
        self.extras = tuple(extras)
        self.weighting = weighting
        self.scheduler = scheduler
        self.dist = dist
        self.grad_clip = grad_clip if grad_clip > 0 else math.inf
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, sample: Callable[[], MotionBatch], sv: StageValues) -> StepResult:
        """Run one step on the batch `sample()` draws, under the epoch's base values `sv`."""
        components = self.components
        if self.scheduler is not None:
            values = self.scheduler.values()
            proposed_schedule = self.scheduler.proposed()
        else:
            values, proposed_schedule = sv.schedule, None
        batch = sample()
        total, raw, parts = self.batch_loss(self.train_model, batch, values)
        regime = 1 if parts["freerun"] else 0
        loss_tf, loss_fr = parts["tf"], parts["fr"]
        weights: dict[str, Any] = sv.loss_weights
        proposed_weights = None
        nonfinite_state = None
        # Distributed: one all-reduce, so the controllers see the mean raw losses over
        # ranks and every rank computes the same weights (all ranks draw the same regime).
        recorded = {c: v.detach() for c, v in raw.items()}
        if self.dist is not None:
            flat = {**recorded, **{f"tf/{c}": v for c, v in loss_tf.items()}}
            flat |= {f"fr/{c}": v for c, v in loss_fr.items()}
            flat = distributed.mean_losses(flat, list(flat))
            recorded = {c: flat[c] for c in components}
            loss_tf = {c: flat[f"tf/{c}"] for c in components}
            loss_fr = {c: flat[f"fr/{c}"] for c in loss_fr}
        # the scheduler's loss signal: the teacher-forced part, present in every batch
        loss_tf_total = self.loss_fn.combine(loss_tf).detach()
        # the free-run part (NaN when no rollout was drawn): scheduler laws' input
        loss_fr_total = self.loss_fn.combine(loss_fr).detach() if regime else math.nan
        grad_norms = None
        if "grad_norm" in self.extras:  # of the losses the weighting observes
            observed = parts["tf_graph"] if self.loss_input == "tf" else raw
            grad_norms = component_grad_norms(
                {c: observed[c] for c in components},
                self.model.shared_parameters(),
                reduce=None if self.dist is None else distributed.mean_tensor,
            )
        if self.weighting is not None:
            inputs = loss_tf if self.loss_input == "tf" else recorded
            step_extras = (
                {"grad_norm": grad_norms} if "grad_norm" in self.weighting.requires else None
            )
            _, weights, diag = self.weighting(inputs, extras=step_extras)
            proposed_weights = dict(zip(components, diag.proposed.unbind(0), strict=True))
            nonfinite_state = diag.nonfinite_state
            if not self.weighting.dry_run:  # dry-run: the base-weighted total stays
                # backward uses this rank's own raw losses with the controller's weights
                local = torch.stack([raw[c] for c in components])
                total = (local * diag.applied.to(local.dtype)).sum(-1)
        if self.dist is None:
            loss_value = total.detach()
        elif self.weighting is not None:  # sum_c w_c * mean_r raw_c, the same on every rank
            mean = torch.stack([recorded[c] for c in components])
            loss_value = (mean * diag.applied.to(mean.dtype)).sum(-1)
        else:
            loss_value = self.loss_fn.combine(recorded).detach()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        loss_after = None
        if "loss_after" in self.extras:
            loss_after = self.losses_after(batch, values, regime)
            if self.weighting is not None and self.weighting.needs_after_step:
                self.weighting.after_step({"loss_after": loss_after})
        if self.scheduler is not None:
            self.scheduler.step_batch(
                loss_tf_total,
                grad_norm,
                regime=regime,
                inputs={"loss_fr": loss_fr_total, "horizon": values["freerun_horizon"]},
            )
        extra: dict[str, Any] = {"loss_tf_total": loss_tf_total, "loss_fr_total": loss_fr_total}
        extra["regime"] = regime
        extra["stage"] = sv.stage_index
        extra |= {f"loss_tf/{c}": v for c, v in loss_tf.items()}
        extra |= {f"loss_fr/{c}": loss_fr.get(c, math.nan) for c in components}
        if nonfinite_state is not None:
            extra["weighting_nonfinite"] = nonfinite_state
        if grad_norms is not None:
            extra |= {f"grad_norm/{c}": v for c, v in grad_norms.items()}
        if loss_after is not None:
            extra |= {f"loss_after/{c}": v for c, v in loss_after.items()}
        return StepResult(
            losses=recorded,
            loss_total=loss_value,
            weights=weights,
            weights_base=sv.loss_weights,
            proposed_weights=proposed_weights,
            schedule=values,
            schedule_base=sv.schedule,
            proposed_schedule=proposed_schedule,
            grad_norm=grad_norm,
            lr=sv.lr,
            extra=extra,
        )

    def batch_loss(
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

    def losses_after(
        self, batch: Any, values: dict[str, float], regime: int
    ) -> dict[str, torch.Tensor]:
        """The losses the weighting observes, re-evaluated on the same batch after the
        optimiser step (same free-run draw, no new random number; FAMO's ``L'``)."""
        total_input = self.loss_input == "total"
        with torch.no_grad():  # tf input: the teacher-forced pass only
            _, raw, parts = self.batch_loss(
                self.model, batch, values, freerun=bool(regime) and total_input
            )
        out = raw if total_input else parts["tf"]
        out = {c: out[c].detach() for c in self.components}
        if self.dist is not None:
            out = distributed.mean_losses(out, self.components)
        return out
