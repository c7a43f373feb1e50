"""What the trainer integrations (the Lightning callback, the Hugging Face Trainer callback)
check and build alike from their arguments: the components, the base weights, dry-run, and
the loss weighting controller, given by a method and its parameters or by a recommended
config file (`adaptive.controllers_from_config`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptive._defaults import LOSS_ADJUSTMENT_RANGE

__all__ = ["CallbackSetup", "callback_setup"]


@dataclass
class CallbackSetup:
    """The checked arguments: `components`, `base_weights` (floats), `weighting` (None when
    the callback only records), `dry_run`, `method`, and `config` / `config_info` when a
    recommended file gave them."""

    components: tuple[str, ...]
    base_weights: dict[str, float]
    weighting: Any
    dry_run: bool
    method: str | None
    config: Path | None
    config_info: dict[str, Any] | None


def callback_setup(
    components: Sequence[str],
    *,
    who: str,
    instead: str,
    base_weights: Mapping[str, float] | None,
    method: str | None,
    dry_run: bool | None,
    adjustment_range: float | None,
    metrics: Sequence[str] | None,
    config: str | os.PathLike[str] | None,
    log_every: int,
    method_params: Mapping[str, Any],
) -> CallbackSetup:
    """Check an integration's arguments and build its controller. `who` names the
    integration and `instead` where a user drives what it does not (the scheduler, a method
    that needs extras) in the one-line errors."""
    if isinstance(components, str) or not components:
        raise ValueError(f"components must be a non-empty list of names, got {components!r}")
    comps = list(components)
    if len(set(comps)) != len(comps) or not all(isinstance(c, str) and c for c in comps):
        raise ValueError(f"components must be unique non-empty strings, got {comps!r}")
    if config is not None and (method is not None or method_params or adjustment_range is not None):
        raise ValueError(
            "config= gives the method and its parameters: leave out method, "
            "adjustment_range and the method's parameters"
        )
    if dry_run is not None and not isinstance(dry_run, bool):
        raise TypeError(f"dry_run must be a bool, got {dry_run!r}")
    if metrics is not None and (
        isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics)
    ):
        raise ValueError(f"metrics must be a list of metric names, got {metrics!r}")
    if method is None and method_params:
        raise ValueError(f"method parameters {sorted(method_params)!r} given without a method")
    weighting: Any = None
    info: dict[str, Any] | None = None
    if config is not None:
        from adaptive._recommend import controllers_from_config

        ctl = controllers_from_config(
            config, comps, base_weights=base_weights, dry_run=dry_run, log_every=log_every
        )
        if ctl.scheduler is not None:
            raise ValueError(
                f"{config}: switches the scheduler on, which {who} does not drive; build it "
                f"with adaptive.controllers_from_config in {instead}"
            )
        weighting, info = ctl.weighting, ctl.run_info()
        method, base_weights, dry_run = ctl.method, ctl.base_weights, ctl.dry_run
    dry_run = True if dry_run is None else dry_run
    base = dict(base_weights) if base_weights is not None else dict.fromkeys(comps, 1.0)
    if set(base) != set(comps):
        raise ValueError(
            f"base_weights must name exactly {comps!r}, got {sorted(map(str, base))!r}"
        )
    floats = {c: float(base[c]) for c in comps}
    if method is not None and config is None:
        from adaptive.weighting import AdaptiveLossWeighting

        weighting = AdaptiveLossWeighting(
            comps,
            floats,
            method=method,
            adjustment_range=LOSS_ADJUSTMENT_RANGE
            if adjustment_range is None
            else adjustment_range,
            dry_run=dry_run,
            log_every=log_every,
            **method_params,
        )
    if weighting is not None and weighting.requires:
        raise ValueError(
            f"method {weighting.method!r} needs the extras {list(weighting.requires)!r}, which "
            f"{who} does not compute; drive AdaptiveLossWeighting and TraceRecorder from "
            f"{instead} instead (docs/INTEGRATION.md)"
        )
    return CallbackSetup(
        tuple(comps),
        floats,
        weighting,
        dry_run,
        method,
        None if config is None else Path(config),
        info,
    )
