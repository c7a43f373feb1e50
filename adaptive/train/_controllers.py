"""Controller building for the reference trainer: the live loss weighting and scheduler
from the config's adaptive section, the extras they need, and the trace columns of a run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from adaptive.motion import MotionJointLoss
from adaptive.train.schedule import SCHEDULE_PARAMS, schedule_limits

EXTRA_NAMES = ("grad_norm", "loss_after")


def build_controllers(
    cfg: dict[str, Any],
    components: Sequence[str],
    loss_fn: MotionJointLoss,
    logger: Any = None,
) -> tuple[Any, Any]:
    """`(weighting, scheduler)` per `cfg["adaptive"]`, each None when off. A weighting
    switches `loss_fn` to detailed losses. `logger(name)` gives each controller its logger
    (None: the controllers' defaults)."""
    a = cfg["adaptive"]
    weighting = scheduler = None

    def named(name: str) -> logging.Logger | None:
        return None if logger is None else logger(name)

    if a["loss"] != "none":
        from adaptive.weighting import AdaptiveLossWeighting

        loss_fn.return_detailed_losses = True
        weighting = AdaptiveLossWeighting(
            list(components),
            loss_fn.weights,
            method=a["loss"],
            adjustment_range=a["loss_adjustment_range"],
            dry_run=a["dry_run"],
            log_every=a["log_every"],
            logger=named("adaptive.weighting"),
            **a.get(a["loss"], {}),
        )
    if a["scheduler"]:
        from adaptive.scheduler import AdaptiveScheduler
        from adaptive.train.config import scheduler_law_params

        law = scheduler_law_params(a["scheduler_law"])  # law and its parameters
        scheduler = AdaptiveScheduler(
            adjustment_rate=a["adjustment_rate"],
            update_interval=a["update_interval"],
            use_epoch_metrics=a["use_epoch_metrics"],
            adjustment_range=a["scheduler_adjustment_range"],
            dry_run=a["dry_run"],
            log_every=a["log_every"],
            limits=schedule_limits(cfg["data"]["window"]),
            logger=named("adaptive.scheduler"),
            **law,
        )
    return weighting, scheduler


def needed_extras(cfg: dict[str, Any], weighting: Any) -> tuple[str, ...]:
    """The extras to compute each step (per-component grad norms, losses after the step):
    those the active method needs and those the config asks to record (they cost time)."""
    needed = set(weighting.requires) if weighting is not None else set()
    needed |= set(cfg["adaptive"]["record_extras"])
    return tuple(e for e in EXTRA_NAMES if e in needed)


def trace_columns(
    components: Sequence[str], weighting: Any, scheduler: Any, extras: Sequence[str]
) -> list[str]:
    """The step columns a run records beyond the trace's own (docs/TRACE_FORMAT.md)."""
    cols = ["loss_total", "grad_norm", "lr", "loss_tf_total", "loss_fr_total", "regime"]
    cols += ["stage"]
    cols += [f"loss_tf/{c}" for c in components]
    cols += [f"loss_fr/{c}" for c in components]
    cols += [f"weight/{c}" for c in components]
    cols += [f"weight_base/{c}" for c in components]
    if weighting is not None:
        cols += [f"proposed/weight/{c}" for c in components]
        cols += ["weighting_nonfinite"]
    for name in extras:
        cols += [f"{name}/{c}" for c in components]
    cols += [f"schedule/{p}" for p in SCHEDULE_PARAMS]
    cols += [f"schedule_base/{p}" for p in SCHEDULE_PARAMS]
    if scheduler is not None:
        cols += [f"proposed/schedule/{p}" for p in SCHEDULE_PARAMS]
    return cols
