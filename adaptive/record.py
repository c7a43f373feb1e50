"""Record a v1 trace from any training loop (`TraceRecorder`), built on `TraceWriter`.

The recorder keeps the step and epoch counters for you, checks the component names on every
step, detaches tensors (no host synchronisation per step: values reach the host in one batch
at each flush) and takes a weighting controller's diagnostics as they are, so a plain
PyTorch loop records the same trace `adaptive train` does and `adaptive replay` reads it.
`TraceRecorder(..., config="recommended.toml")` also builds the controllers that file switches
on (`adaptive.controllers_from_config`) as `rec.weighting` / `rec.scheduler`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptive.trace import TraceWriter

if TYPE_CHECKING:
    from adaptive._recommend import Controllers
    from adaptive.scheduler import AdaptiveScheduler
    from adaptive.weighting import AdaptiveLossWeighting

__all__ = ["TraceRecorder"]


def _detached(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Values with tensors detached (a graph must not live until the flush)."""
    if values is None:
        return None
    torch = sys.modules.get("torch")
    if torch is None:
        return dict(values)
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in values.items()}


def _scalar(value: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach()
    return value


class TraceRecorder:
    """Write a trace (format v1) from your own training loop.

    Use it as a context manager: rows are flushed as complete Parquet parts every
    `flush_rows` rows / `flush_seconds` seconds, at every `end_epoch()`, on exit (also when
    the loop raises) and at interpreter exit, so a killed run keeps everything up to the
    last flush (the crash safety of `adaptive train`'s recording).

    Args:
        path: the trace to write (`runs/mine/trace.parquet`, a directory of part files).
        components: the loss component names, in order; every `log_step` must give
            exactly these.
        metrics: evaluation metric names known up front (others are added when logged).
        run_id: the run identifier (default: the parent folder's name).
        run_info: JSON-able facts about the run (config, seed, ...), kept in the metadata.
        flush_rows, flush_seconds: flush policy of the underlying `TraceWriter`.
        append: continue an existing trace (after a resume) instead of refusing it.
        start_step, start_epoch: counters to continue from (after a resume).
        config: a recommended config file (`recommended.toml`, `best.toml`): the
            controllers it switches on are built for `components`
            (`adaptive.controllers_from_config`) and set as `controllers`, `weighting` and
            `scheduler` (None when off); the file and its resolved `[adaptive]` table are
            kept in run_info under `adaptive_config`.
        base_weights: with `config`, the components' base weights (default: the file's
            `[loss.weights]` when it names them, else 1).

    Example:
        >>> with TraceRecorder("runs/mine/trace.parquet", components=["a", "b"]) as rec:
        ...     for epoch in range(3):
        ...         for batch in loader:
        ...             la, lb = model.losses(batch)
        ...             (la + lb).backward()
        ...             rec.log_step(losses={"a": la, "b": lb}, lr=1e-3)
        ...         rec.end_epoch()

        With a recommended config (`--adaptive-config PATH` in examples/plain_loop.py):

        >>> with TraceRecorder(trace, components=["a", "b"], config=path) as rec:
        ...     total, weights, diag = rec.weighting(losses)  # when it switches one on
        ...     rec.log_step(losses=losses, diagnostics=diag, loss_total=total)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        components: Iterable[str],
        metrics: Iterable[str] = (),
        run_id: str | None = None,
        run_info: Mapping[str, Any] | None = None,
        flush_rows: int = 10_000,
        flush_seconds: float = 10.0,
        append: bool = False,
        start_step: int = 0,
        start_epoch: int = 0,
        config: str | os.PathLike[str] | None = None,
        base_weights: Mapping[str, float] | None = None,
    ) -> None:
        if isinstance(components, str):
            raise TypeError(f"components must be a sequence of names, got {components!r}")
        comps = list(components)
        if not comps:
            raise ValueError("components must name at least one loss component, got []")
        bad = [c for c in comps if not isinstance(c, str) or not c]
        if bad:
            raise ValueError(f"component names must be non-empty strings, got {bad!r}")
        if len(set(comps)) != len(comps):
            raise ValueError(f"component names must be unique, got {comps!r}")
        for name, value in (("start_step", start_step), ("start_epoch", start_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        path = Path(path)
        self.controllers: Controllers | None = None
        if config is not None:
            from adaptive._recommend import controllers_from_config

            self.controllers = controllers_from_config(config, comps, base_weights=base_weights)
            run_info = {**(run_info or {}), "adaptive_config": self.controllers.run_info()}
        elif base_weights is not None:
            raise ValueError("base_weights goes with config= (the controllers it builds)")
        self.components: tuple[str, ...] = tuple(comps)
        self._component_set = frozenset(comps)
        self.writer = TraceWriter(
            path,
            run_id=run_id or (path.parent.name or None),
            components=comps,
            metrics=metrics,
            run_info=run_info,
            flush_rows=flush_rows,
            flush_seconds=flush_seconds,
            append=append,
        )
        self.step = start_step
        self.epoch = start_epoch

    @property
    def weighting(self) -> AdaptiveLossWeighting | None:
        """The loss weighting `config` switched on (None: none, or no `config`)."""
        return self.controllers.weighting if self.controllers is not None else None

    @property
    def scheduler(self) -> AdaptiveScheduler | None:
        """The scheduler `config` switched on (None: none, or no `config`)."""
        return self.controllers.scheduler if self.controllers is not None else None

    @property
    def path(self) -> Path:
        """The trace being written."""
        return self.writer.path

    def _check(self, losses: Mapping[str, Any]) -> None:
        if not isinstance(losses, Mapping):
            raise TypeError(f"losses must be a mapping name -> loss, got {type(losses).__name__}")
        if losses.keys() != self._component_set:
            missing = [c for c in self.components if c not in losses]
            extra = sorted(str(k) for k in losses if k not in self._component_set)
            raise KeyError(
                f"losses must name exactly {list(self.components)!r}; "
                f"missing {missing!r}, unexpected {extra!r}"
            )

    def log_step(
        self,
        *,
        losses: Mapping[str, Any],
        step: int | None = None,
        epoch: int | None = None,
        weights: Mapping[str, Any] | None = None,
        weights_base: Mapping[str, Any] | None = None,
        proposed_weights: Mapping[str, Any] | None = None,
        diagnostics: Any = None,
        loss_total: Any = None,
        grad_norm: Any = None,
        lr: Any = None,
        extras: Mapping[str, Mapping[str, Any]] | None = None,
        schedule: Mapping[str, Any] | None = None,
        schedule_base: Mapping[str, Any] | None = None,
        proposed_schedule: Mapping[str, Any] | None = None,
        scheduler: Any = None,
        regime: int | None = None,
        loss_tf_total: Any = None,
        loss_fr_total: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record one optimizer step: the raw, **unweighted** loss of every component.

        The schedule part, so `adaptive replay --method scheduler` can run every law over
        the trace: `schedule` (the values applied to this batch, `schedule/<p>`),
        `schedule_base` and `proposed_schedule`, which an `AdaptiveScheduler` passed as
        `scheduler` fills where they are not given (read *before* its `step_batch` for
        this batch, as the values the batch used); `regime` (1 when the batch drew a
        free-run rollout); `loss_tf_total` (the loss the scheduler steps on) and
        `loss_fr_total` (the free-run part, NaN when none was drawn: the `gtf` law's input).

        `extras` records method extras (``{"grad_norm": {c: ...}}``, ``"loss_after"``; see
        `adaptive.weighting.EXTRAS`) as the `name/<c>` columns that replay reads for
        methods that need them (GradNorm, FAMO).

        `step` / `epoch` default to the recorder's counters (the step counter then moves
        past the recorded step). `diagnostics` (what `AdaptiveLossWeighting` returns)
        fills `weights`, `weights_base` and `proposed_weights` where they are not given.
        Values may be floats or tensors on any device; nothing here synchronises.
        """
        self._check(losses)
        extra = dict(extra or {})
        for name, values in (extras or {}).items():
            from adaptive.weighting import EXTRAS

            if name not in EXTRAS:
                raise ValueError(f"unknown extra {name!r}; known extras: {list(EXTRAS)!r}")
            if not isinstance(values, Mapping) or values.keys() != self._component_set:
                raise ValueError(
                    f"extra {name!r} must map every component {list(self.components)!r} "
                    f"to a value, got {values!r}"
                )
            extra |= {f"{name}/{c}": values[c] for c in self.components}
        step = self.step if step is None else step
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        epoch = self.epoch if epoch is None else epoch
        if scheduler is not None:
            schedule = scheduler.values() if schedule is None else schedule
            schedule_base = scheduler.base_values if schedule_base is None else schedule_base
            if proposed_schedule is None:
                proposed_schedule = scheduler.proposed()
        if regime is not None:
            if isinstance(regime, bool) or not isinstance(regime, int) or regime < 0:
                raise ValueError(f"regime must be an int >= 0, got {regime!r}")
            extra["regime"] = regime
        for name, value in (("loss_tf_total", loss_tf_total), ("loss_fr_total", loss_fr_total)):
            if value is not None:
                extra[name] = _scalar(value)
        if diagnostics is not None:
            comps = tuple(diagnostics.components)
            if comps != self.components:
                raise ValueError(
                    f"diagnostics are for components {list(comps)!r}, "
                    f"the recorder for {list(self.components)!r}"
                )
            if weights is None:
                weights = dict(zip(comps, diagnostics.applied.unbind(-1), strict=True))
            if weights_base is None:
                weights_base = dict(zip(comps, diagnostics.base.unbind(-1), strict=True))
            if proposed_weights is None:
                proposed_weights = dict(zip(comps, diagnostics.proposed.unbind(-1), strict=True))
        self.writer.log_step(
            step=step,
            epoch=epoch,
            losses=_detached(losses),
            loss_total=_scalar(loss_total),
            weights=_detached(weights),
            weights_base=_detached(weights_base),
            proposed_weights=_detached(proposed_weights),
            grad_norm=_scalar(grad_norm),
            lr=_scalar(lr),
            schedule=_detached(schedule),
            schedule_base=_detached(schedule_base),
            proposed_schedule=_detached(proposed_schedule),
            extra=_detached(extra) if extra else None,
        )
        self.step = step + 1

    def log_epoch(
        self,
        *,
        split: str,
        metrics: Mapping[str, Any] | None = None,
        losses: Mapping[str, Any] | None = None,
        loss_total: Any = None,
        epoch: int | None = None,
        step: int | None = None,
    ) -> None:
        """Record one evaluation of `split` (`val`, ...): metrics and split-mean losses.

        `epoch` defaults to the current epoch, `step` to the steps recorded so far.
        """
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must name an evaluated split such as 'val', got {split!r}")
        self.writer.log_epoch(
            split=split,
            epoch=self.epoch if epoch is None else epoch,
            step=self.step if step is None else step,
            metrics=_detached(metrics),
            losses=_detached(losses),
            loss_total=_scalar(loss_total),
        )

    def end_epoch(self) -> None:
        """Close the current epoch: the epoch counter moves on and the rows are flushed."""
        self.epoch += 1
        self.writer.flush()

    def flush(self) -> None:
        """Write what is buffered as one complete part file now."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and stop accepting rows (idempotent)."""
        self.writer.close()

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"TraceRecorder({str(self.path)!r}, components={list(self.components)!r}, "
            f"step={self.step}, epoch={self.epoch})"
        )
