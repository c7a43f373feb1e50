"""Build the controllers a recommended config file switches on, for any training loop.

`adaptive sweep`, `compare` and `demo` write `recommended.toml` (and `adaptive tune` a
`best.toml`) in the reference trainer's config format (adaptive/train/default.toml): an
`[adaptive]` table that names the loss weighting method, its range and hyperparameters, and
whether the scheduler runs with which law. `controllers_from_config(path, components=[...])`
turns such a file into the same controller classes `adaptive train --config FILE` builds,
for your own loop, the Lightning callback or `TraceRecorder(config=...)`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptive.errors import UsageError

if TYPE_CHECKING:
    from adaptive.scheduler import AdaptiveScheduler
    from adaptive.weighting import AdaptiveLossWeighting

__all__ = ["Controllers", "controllers_from_config"]


@dataclass(frozen=True)
class Controllers:
    """The controllers a config file switches on (each None when off).

    `weighting` is an `AdaptiveLossWeighting` over `components` with `base_weights`;
    `scheduler` an `AdaptiveScheduler` (you give it your stage schedule with
    `set_base_values`). `settings` is the file's `[adaptive]` table resolved over the
    defaults, `path` the file it came from.
    """

    weighting: AdaptiveLossWeighting | None
    scheduler: AdaptiveScheduler | None
    components: tuple[str, ...]
    base_weights: dict[str, float]
    path: Path
    settings: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def method(self) -> str | None:
        """The loss weighting method switched on, or None."""
        loss = self.settings.get("loss", "none")
        return None if loss == "none" else str(loss)

    @property
    def dry_run(self) -> bool:
        """Whether the controllers only propose (the base values are applied)."""
        return bool(self.settings.get("dry_run", False))

    def describe(self) -> str:
        """One line: what is on, e.g. `dwa (adjustment_range=0.3, temperature=2) + scheduler
        (law guard)`, or `off`."""
        parts = []
        if self.method is not None:
            params = {"adjustment_range": self.settings.get("loss_adjustment_range")}
            params |= dict(self.settings.get(self.method) or {})
            shown = ", ".join(f"{k}={_show(v)}" for k, v in sorted(params.items()))
            parts.append(f"{self.method} ({shown})")
        if self.scheduler is not None:
            law = (self.settings.get("scheduler_law") or {}).get("law", "guard")
            parts.append(f"scheduler (law {law})")
        text = " + ".join(parts) or "off"
        return text + (" in dry-run" if parts and self.dry_run else "")

    def run_info(self) -> dict[str, Any]:
        """What a trace's run_info records about them (`TraceRecorder(config=...)`)."""
        return {"path": str(self.path), "adaptive": self.settings}


def _show(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _components(components: Any) -> tuple[str, ...]:
    if isinstance(components, str) or not isinstance(components, Sequence):
        raise UsageError(f"components must be a list of loss component names, got {components!r}")
    comps = tuple(components)
    if not comps:
        raise UsageError("components must name at least one loss component, got []")
    bad = [c for c in comps if not isinstance(c, str) or not c]
    if bad:
        raise UsageError(f"component names must be non-empty strings, got {bad!r}")
    if len(set(comps)) != len(comps):
        raise UsageError(f"component names must be unique, got {list(comps)!r}")
    return comps


def _weights(where: str, given: Any, comps: tuple[str, ...]) -> dict[str, float]:
    from adaptive.train.config import ConfigError

    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: expected a table of component -> weight, got {given!r}")
    if set(given) != set(comps):
        raise ConfigError(
            f"{where} names {', '.join(map(str, given)) or 'nothing'}, but the components are "
            f"{', '.join(comps)}: the weights were made for other losses (pass base_weights=)"
        )
    out = {}
    for c in comps:
        v = given[c]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{where}.{c}: expected a finite number >= 0, got {v!r}")
        out[c] = float(v)
    return out


def controllers_from_config(
    path: str | os.PathLike[str],
    components: Sequence[str],
    *,
    base_weights: Mapping[str, float] | None = None,
    dry_run: bool | None = None,
    limits: Mapping[str, tuple[float, float]] | None = None,
    log_every: int | None = None,
    logger: logging.Logger | None = None,
) -> Controllers:
    """The controllers a config file switches on, built for your loss `components`.

    `path` is a file in the reference trainer's config format: a `recommended.toml` that
    `adaptive sweep` / `compare` / `demo` wrote, a `best.toml`, or a training config. Its
    `[adaptive]` table is resolved over the built-in defaults (adaptive/train/default.toml)
    exactly as `adaptive train --config` resolves it; other tables are checked and ignored.

    Base weights: `base_weights`, else the file's `[loss.weights]` when it names exactly
    `components`, else 1 for every component. `dry_run` (default: the file's
    `adaptive.dry_run`) makes both controllers propose without applying; `limits` bounds
    the scheduler's adjusted values (`AdaptiveScheduler(limits=...)`); `log_every` and
    `logger` go to both controllers (default: the file's `adaptive.log_every`).

    A missing or malformed file, an unknown key or method, or weights that name other
    components is an `InputError` (a one-line `ConfigError` naming the file).

    Example:
        >>> ctl = controllers_from_config("runs/base/sweep-dwa/recommended.toml",
        ...                               components=["reg", "cls"])
        >>> total, weights, diag = ctl.weighting(losses)  # if ctl.weighting is not None
    """
    from adaptive.train.config import (
        ConfigError,
        default_config,
        merge,
        read_toml,
        scheduler_law_params,
        validate_config,
    )

    comps = _components(components)
    p = Path(path)
    raw = dict(read_toml(p))
    file_weights = None
    loss = raw.get("loss")
    if isinstance(loss, Mapping) and "weights" in loss:
        loss = dict(loss)
        file_weights = loss.pop("weights")
        raw["loss"] = loss
        if not loss:
            del raw["loss"]
    try:
        cfg = validate_config(merge(default_config(), raw))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    if base_weights is not None:
        try:
            weights = _weights("base_weights", base_weights, comps)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    elif file_weights is not None:
        weights = _weights(f"{p}: [loss.weights]", file_weights, comps)
    else:
        weights = dict.fromkeys(comps, 1.0)
    a = cfg["adaptive"]
    from adaptive.weighting import available_methods

    method = a["loss"]
    if method != "none" and method not in available_methods():
        raise ConfigError(
            f"{p}: adaptive.loss: unknown method {method!r}; valid: "
            + ", ".join(["none", *available_methods()])
        )
    if dry_run is None:
        dry_run = bool(a["dry_run"])
    elif not isinstance(dry_run, bool):
        raise UsageError(f"dry_run must be True, False or None, got {dry_run!r}")
    every = a["log_every"] if log_every is None else log_every
    settings = {k: v for k, v in a.items() if not isinstance(v, Mapping)}
    if method != "none":
        settings[method] = dict(a.get(method, {}))
    if a["scheduler"]:
        settings["scheduler_law"] = dict(a["scheduler_law"])
    settings["dry_run"] = dry_run
    weighting = scheduler = None
    if method != "none":
        from adaptive.weighting import AdaptiveLossWeighting

        try:
            weighting = AdaptiveLossWeighting(
                list(comps),
                weights,
                method=method,
                adjustment_range=a["loss_adjustment_range"],
                dry_run=dry_run,
                log_every=every,
                logger=logger,
                **a.get(method, {}),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{p}: adaptive.{method}: {exc}") from None
    if a["scheduler"]:
        from adaptive.scheduler import AdaptiveScheduler

        law = scheduler_law_params(a["scheduler_law"])
        try:
            scheduler = AdaptiveScheduler(
                adjustment_rate=a["adjustment_rate"],
                update_interval=a["update_interval"],
                use_epoch_metrics=a["use_epoch_metrics"],
                adjustment_range=a["scheduler_adjustment_range"],
                dry_run=dry_run,
                log_every=every,
                limits=limits,
                logger=logger,
                **law,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{p}: adaptive.scheduler_law: {exc}") from None
    return Controllers(weighting, scheduler, comps, weights, p, settings)
