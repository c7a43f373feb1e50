"""The adaptive teacher-forcing / free-run schedule controller, `AdaptiveScheduler`.

The controller is a small deterministic state machine: per-batch loss and grad norm and
per-epoch validation metrics go in, schedule values and diagnostics come out. It keeps one
scalar ``delta`` in ``[-adjustment_range, adjustment_range]`` (positive = harder, i.e. more
free run) applied on top of the stage schedule's base values; a registered *law*
(``adaptive.scheduler._law``; the default ``guard``) decides how delta moves. See
``docs/SCHEDULER.md``.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from adaptive._checks import check_number
from adaptive.errors import ParameterError
from adaptive.scheduler import _guard  # noqa: F401 - registers the default law
from adaptive.scheduler._law import Control, Decision, SchedulerLaw, Window, law_class
from adaptive.scheduler._record import BlockRecord
from adaptive.scheduler._state import read_state, write_state
from adaptive.scheduler._stats import block_floats, capture, check_regime
from adaptive.scheduler._stats import to_host as _to_host
from adaptive.scheduler._values import (
    DEFAULT_ADJUSTMENT_RANGE,
    MOTION_PARAM_RULES,
    check_bool,
    check_int,
    map_value,
    validate_base_values,
    validate_limits,
    validate_rules,
)

__all__ = ["DEFAULT_LAW", "AdaptiveScheduler"]

_DEFAULT_LOGGER_NAME = "adaptive.scheduler"
#: The law a scheduler runs unless told otherwise (and the law of state dicts without one).
DEFAULT_LAW = "guard"


class AdaptiveScheduler:
    """Adaptive teacher-forcing / free-run schedule controller.

    Usage (live)::

        sched = AdaptiveScheduler()                         # law="guard"
        for epoch in ...:
            sched.set_base_values(stage_schedule(epoch))   # tf_ratio, freerun_horizon, ...
            for batch in ...:
                v = sched.values()                          # use v["tf_ratio"], ...
                ...
                sched.step_batch(loss, grad_norm, regime=drew_free_run)  # 1 sync per window
            sched.step_epoch(valfree_metrics, val_metrics)

    :meth:`step_block` records many batches at once (replay), exactly like the
    corresponding ``proposed()`` / ``step_batch`` pairs and through the same window code.

    One scalar ``delta`` (positive = harder: longer horizon, more free-run weight, less
    teacher forcing) is applied on top of the base values by :func:`map_value`. At every
    decision point (every ``update_interval`` batches, and at each :meth:`step_epoch`) the
    law decides whether and where delta moves; the controller keeps it within
    ``[-adjustment_range, adjustment_range]``, records every change (:meth:`history`) and
    logs it. The default law, ``guard`` (``adaptive.scheduler._guard.GuardLaw``), is a
    stability guard: it eases off on grad-norm outliers, rising loss and non-finite values,
    pushes toward free run when the free-run metric worsens while the teacher-forced one
    does not, freezes for ``cooldown`` decision points after a change and moves back
    toward 0 after ``recover_patience`` calm ones.

    Decisions never depend on ``dry_run``: in dry-run :meth:`values` returns the base
    values and :meth:`proposed` what would be applied, so a replay proposes exactly what
    the live controller applies.

    Args:
        law: registered law name (:func:`available_laws`).
        adjustment_rate: step of delta per change (> 0), for laws that step.
        update_interval: batches per batch-level decision window (>= 1).
        use_epoch_metrics: make epoch-level decisions (metrics are recorded anyway).
        adjustment_range: bound on ``|delta|``, in ``[0, 1)``.
        dry_run: apply nothing, only propose (switchable via the ``dry_run`` property).
        limits: optional ``{name: (lo, hi)}`` bounds of the adjusted values (e.g. the
            trainer's ``freerun_horizon <= window - 1``); see :func:`map_value`.
        param_rules: ``{name: kind}`` with kind in :data:`PARAM_KINDS` (``"scale"``,
            ``"count"``, ``"complement"``): how delta adjusts each schedule parameter;
            merged over :data:`MOTION_PARAM_RULES` (the reference task's; others scale).
        history_size: number of recent changes kept by :meth:`history` (>= 1).
        log_every: INFO status line every ``log_every`` batch windows (0: off). Changes
            are always logged at INFO.
        logger: logger; default ``logging.getLogger("adaptive.scheduler")``.
        **law_params: the law's hyperparameters (the guard's: ``free_metric``,
            ``val_metric``, ``spike_z``, ``spike_count``, ``rising_threshold``,
            ``baseline_momentum``, ``min_samples``, ``recover_patience``, ``on_nonfinite``,
            ``patience``, ``epoch_tolerance``, ``cooldown``; docs/SCHEDULER.md).
    """

    def __init__(
        self,
        *,
        law: str = DEFAULT_LAW,
        adjustment_rate: float = 0.1,
        update_interval: int = 50,
        use_epoch_metrics: bool = True,
        adjustment_range: float = DEFAULT_ADJUSTMENT_RANGE,
        dry_run: bool = False,
        limits: Mapping[str, tuple[float, float]] | None = None,
        param_rules: Mapping[str, str] | None = None,
        history_size: int = 100,
        log_every: int = 0,
        logger: logging.Logger | None = None,
        **law_params: Any,
    ) -> None:
        law_cls = law_class(law)
        unknown = sorted(set(law_params) - set(law_cls.param_names()))
        if unknown:  # valid: the controller's own keywords, then the law's
            own = list(inspect.signature(AdaptiveScheduler.__init__).parameters)[1:-1]
            raise ParameterError(
                f"unknown parameter(s) {unknown!r} for scheduler law {law!r}; valid: "
                f"{[*own, *law_cls.param_names()]!r}"
            )
        self._rate = check_number("adjustment_rate", adjustment_rate, low=0.0, low_open=True)
        self._interval = check_int("update_interval", update_interval, low=1)
        self._use_epoch = check_bool("use_epoch_metrics", use_epoch_metrics)
        self._range = check_number(
            "adjustment_range", adjustment_range, low=0.0, high=1.0, high_open=True
        )
        self._dry_run = check_bool("dry_run", dry_run)
        self._law_params = dict(law_params)
        self._law_cls = law_cls
        self._law: SchedulerLaw = law_cls(**law_params)
        self._limits = validate_limits(limits)
        self._rules = validate_rules(param_rules)
        self._history_size = check_int("history_size", history_size, low=1)
        self._log_every = check_int("log_every", log_every, low=0)
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger or None, got {logger!r}")
        self._custom_logger = logger is not None
        self._logger = logger if logger is not None else logging.getLogger(_DEFAULT_LOGGER_NAME)
        self._reset_state()

    def _reset_state(self) -> None:
        self._delta = 0.0
        self._base: dict[str, float] = {}
        self._batches = 0
        self._epochs = 0
        self._updates = 0
        self._loss_buf: list[torch.Tensor | float] = []
        self._grad_buf: list[torch.Tensor | float] = []
        self._regime_buf: list[int] = []
        self._input_buf: dict[str, list[torch.Tensor | float]] = {k: [] for k in self._law.inputs}
        self._last_reason: str | None = None
        self._last_change_step: int | None = None
        self._decision: dict[str, Any] | None = None
        self._counts: dict[str, int] = dict.fromkeys(self._law.reasons, 0)
        self._history: deque[dict[str, Any]] = deque(maxlen=self._history_size)

    # ------------------------------------------------------------------ properties
    @property
    def law(self) -> str:
        """The registered name of the law in use."""
        return self._law_cls.name

    @property
    def law_impl(self) -> SchedulerLaw:
        """The law instance (for inspection)."""
        return self._law

    @property
    def delta(self) -> float:
        """Current delta (positive = harder)."""
        return self._delta

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    @dry_run.setter
    def dry_run(self, value: bool) -> None:
        self._dry_run = check_bool("dry_run", value)

    @property
    def step(self) -> int:
        """Number of :meth:`step_batch` calls so far (== 0-based index of the next batch)."""
        return self._batches

    @property
    def epoch(self) -> int:
        """Number of :meth:`step_epoch` calls so far."""
        return self._epochs

    @property
    def base_values(self) -> dict[str, float]:
        return dict(self._base)

    @property
    def num_changes(self) -> int:
        """Total number of changes of delta so far (not limited by ``history_size``)."""
        return sum(self._counts.values())

    def last_change(self) -> dict[str, Any] | None:
        """The most recent change record (as in :meth:`history`), or None before any."""
        return dict(self._history[-1]) if self._history else None

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain values (``logger`` excluded)."""
        return {
            "law": self.law,
            "adjustment_rate": self._rate,
            "update_interval": self._interval,
            "use_epoch_metrics": self._use_epoch,
            "adjustment_range": self._range,
            "dry_run": self._dry_run,
            **self._law.params(),
            "limits": {k: list(v) for k, v in self._limits.items()} or None,
            "param_rules": None if self._rules == MOTION_PARAM_RULES else dict(self._rules),
            "history_size": self._history_size,
            "log_every": self._log_every,
        }

    def __repr__(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.config().items()]
        if self._custom_logger:
            parts.append(f"logger=logging.getLogger({self._logger.name!r})")
        return f"{type(self).__name__}({', '.join(parts)})"

    # ------------------------------------------------------------------ values
    def set_base_values(self, values: Mapping[str, float]) -> None:
        """Set the stage schedule's base values (call at the start of every epoch).

        Replaces the previous mapping. The per-regime references are kept: they follow
        level changes through their EMA instead of being restarted.
        """
        self._base = validate_base_values(values, self._rules)

    def proposed(self) -> dict[str, float]:
        """Base values adjusted by the current delta (what live mode applies)."""
        d, lim, rules = self._delta, self._limits, self._rules
        return {k: map_value(k, b, d, lim.get(k), rules.get(k)) for k, b in self._base.items()}

    def values(self) -> dict[str, float]:
        """Values to use now: :meth:`proposed`, or the base values in dry-run.

        ``freerun_horizon`` is a whole-valued float (``int(v)`` is exact).
        """
        if self._dry_run:
            return dict(self._base)
        return self.proposed()

    # ------------------------------------------------------------------ inputs
    def step_batch(
        self,
        loss: torch.Tensor | float,
        grad_norm: torch.Tensor | float,
        *,
        regime: int = 0,
        inputs: Mapping[str, torch.Tensor | float] | None = None,
    ) -> None:
        """Record one batch; every ``update_interval`` batches run a batch-level decision.

        ``regime`` (a host int, e.g. 1 when the batch drew a free-run rollout) selects the
        reference the batch is judged against. ``inputs``: the law's own per-batch values
        (``law_impl.inputs``, e.g. the GTF law's ``loss_fr`` and ``horizon``); names the
        law does not read are ignored, so a trainer may always pass all it has. Tensors are
        buffered detached on their device; the window is copied to the host in one
        transfer (one host sync per device) at the decision point, the only sync of the
        call.
        """
        loss_v = capture(loss, "loss")
        grad_v = capture(grad_norm, "grad_norm")
        extra = self._capture_inputs(inputs)
        for k, v in extra.items():
            self._input_buf[k].append(v)
        self._regime_buf.append(check_regime(regime))
        self._loss_buf.append(loss_v)
        self._grad_buf.append(grad_v)
        self._batches += 1
        if self._batches % self._interval == 0:
            self._close_window([], [], [])

    def _capture_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The law's inputs of one batch, captured like the loss (missing ones refused)."""
        needed = self._law.inputs
        if not needed:
            return {}
        given = inputs or {}
        missing = [k for k in needed if k not in given]
        if missing:
            raise ParameterError(
                f"scheduler law {self.law!r} needs step_batch(..., inputs={{...}}) with "
                f"{list(needed)!r}; missing {missing!r}"
            )
        return {k: capture(given[k], k) for k in needed}

    def step_block(
        self,
        loss: Sequence[Any] | np.ndarray | torch.Tensor,
        grad_norm: Sequence[Any] | np.ndarray | torch.Tensor,
        regime: Sequence[int] | np.ndarray | None = None,
        inputs: Mapping[str, Sequence[Any] | np.ndarray | torch.Tensor] | None = None,
    ) -> BlockRecord:
        """Record ``T = len(loss)`` batches at once; exactly equivalent to ``T`` successive
        ``proposed()`` reads each followed by ``step_batch(loss[i], grad_norm[i],
        regime=regime[i], inputs={k: inputs[k][i]})`` (``regime=None``: all 0).

        Between window ends delta cannot change, so the block is cut at the window ends
        (every ``update_interval`` batches, counted globally as in :meth:`step_batch`) and
        each full window goes through the same window-closing code :meth:`step_batch`
        uses; a trailing partial window is buffered like ``step_batch`` buffers it, so
        ``step_block`` and ``step_batch`` calls can be mixed freely.

        Inputs: 1-D numpy arrays (any float/int dtype), 1-D tensors (read to the host in
        one transfer: one sync per block) or sequences of numbers / 0-dim tensors. Values
        become Python floats exactly as in :meth:`step_batch` (``float32 -> float64`` is
        exact). Both inputs are validated before any state changes.

        Returns a :class:`BlockRecord` (per-window decisions, per-step delta / proposed
        values / signals on demand, and every change made inside the block).
        """
        losses = block_floats(loss, "loss")
        grads = block_floats(grad_norm, "grad_norm")
        n = len(losses)
        if len(grads) != n:
            raise ValueError(
                f"loss and grad_norm must have the same length, got {n} and {len(grads)}"
            )
        needed = self._law.inputs
        missing = [k for k in needed if k not in (inputs or {})]
        if missing:
            raise ParameterError(
                f"scheduler law {self.law!r} needs step_block(..., inputs={{...}}) with "
                f"{list(needed)!r}; missing {missing!r}"
            )
        extra = {k: block_floats(inputs[k], k) for k in needed}  # type: ignore[index]
        for k, v in extra.items():
            if len(v) != n:
                raise ValueError(
                    f"inputs[{k!r}] must have the same length as loss, got {len(v)} and {n}"
                )
        if regime is None:
            regimes = [0] * n
        else:
            raw = regime.tolist() if isinstance(regime, np.ndarray) else list(regime)
            regimes = [check_regime(r) for r in raw]
            if len(regimes) != n:
                raise ValueError(
                    f"regime must have the same length as loss, got {len(regimes)} and {n}"
                )
        rec = BlockRecord(
            start_step=self._batches,
            length=n,
            base_values=dict(self._base),
            limits=dict(self._limits),
            rules=dict(self._rules),
            delta_before=self._delta,
            signals_before=dict(self._law.signals),
        )
        closes, decisions, deltas = rec.closes, rec.decisions, rec.deltas
        signals, changes = rec.signals, rec.changes
        interval = self._interval
        close_window = self._close_window
        i = 0
        j = interval - len(self._loss_buf)  # end (exclusive) of the open window
        while j <= n:
            self._batches += j - i
            close_window(
                losses[i:j], grads[i:j], regimes[i:j], {k: v[i:j] for k, v in extra.items()}
            )
            decision = self._decision
            closes.append(j - 1)
            decisions.append(decision)  # a fresh dict per decision, never mutated
            deltas.append(self._delta)
            signals.append(self._law.signals.copy())
            if decision["action"] == "change":  # type: ignore[index]
                changes.append(dict(self._history[-1]))
            i = j
            j += interval
        if i < n:  # the window stays open: buffer the rest, as step_batch would
            self._loss_buf.extend(losses[i:])
            self._grad_buf.extend(grads[i:])
            self._regime_buf.extend(regimes[i:])
            for k, v in extra.items():
                self._input_buf[k].extend(v[i:])
            self._batches += n - i
        return rec

    def _close_window(
        self,
        loss_tail: list[float],
        grad_tail: list[float],
        regime_tail: list[int],
        input_tail: Mapping[str, list[float]] | None = None,
    ) -> None:
        """End of a batch window: pending buffer (read to the host in one transfer per
        (device, dtype)) + ``*_tail`` host values -> one batch-level decision.

        Shared by :meth:`step_batch` (empty tails) and :meth:`step_block`.
        """
        names = self._law.inputs
        tails = input_tail or {k: [] for k in names}
        if self._loss_buf:
            n = len(self._loss_buf)
            pending = [v for k in names for v in self._input_buf[k]]
            host = _to_host(self._loss_buf + self._grad_buf + pending)
            regimes = self._regime_buf + regime_tail
            self._loss_buf = []
            self._grad_buf = []
            self._regime_buf = []
            self._input_buf = {k: [] for k in names}
            losses = host[:n]
            grads = host[n : 2 * n]
            losses += loss_tail
            grads += grad_tail
            extra = {k: host[(2 + i) * n : (3 + i) * n] + tails[k] for i, k in enumerate(names)}
        else:
            losses, grads, regimes = loss_tail, grad_tail, regime_tail
            extra = {k: list(tails[k]) for k in names}
        self._window_decision(Window(losses, grads, regimes, extra))

    def step_epoch(
        self, metrics: Mapping[str, float], val_metrics: Mapping[str, float] | None = None
    ) -> None:
        """Record the free-run (``metrics``) and teacher-forced (``val_metrics``) validation
        metrics of the finished epoch and run an epoch-level decision."""
        decision = self._law.epoch(metrics, val_metrics, self._control(epoch=self._epochs + 1))
        self._epochs += 1
        self._take(decision)

    # ------------------------------------------------------------------ decisions
    def _control(self, *, epoch: int | None = None) -> Control:
        return Control(
            delta=self._delta,
            rate=self._rate,
            bound=self._range,
            interval=self._interval,
            epoch_decisions=self._use_epoch,
            step=self._batches,
            epoch=self._epochs if epoch is None else epoch,
        )

    def _window_decision(self, window: Window) -> None:
        """A closed batch window -> the law's decision, applied; the periodic status line."""
        self._updates += 1
        self._take(self._law.window(window, self._control()))
        if self._log_every and self._updates % self._log_every == 0:
            self._logger.info(
                "adaptive scheduler step=%d epoch=%d delta=%+.4f dry_run=%s %s proposed=%s",
                self._batches,
                self._epochs,
                self._delta,
                self._dry_run,
                self._law.status(),
                self.proposed(),
            )

    def _take(self, decision: Decision) -> None:
        """Apply a law's decision: a change sets delta (within the bound) and is recorded
        and logged; anything else only becomes the last decision."""
        level, reason, action = decision.level, decision.reason, decision.action
        self._decision = {
            "level": level,
            "step": self._batches,
            "epoch": self._epochs,
            "reason": reason,
            "action": action,
        }
        if action != "change":
            if action == "cooldown":
                self._logger.debug(
                    "adaptive scheduler: %s held by cooldown at step %d: %s",
                    reason,
                    self._batches,
                    decision.detail,
                )
            return
        if reason not in self._counts:
            raise RuntimeError(
                f"scheduler law {self.law!r} changed delta for {reason!r}, which is not one "
                f"of its reasons {list(self._counts)!r}"
            )
        old = self._delta
        new = min(self._range, max(-self._range, float(decision.delta)))
        self._delta = new
        self._last_reason = reason
        self._last_change_step = self._batches
        self._counts[reason] += 1
        self._history.append(
            {
                "step": self._batches,
                "epoch": self._epochs,
                "level": level,
                "reason": reason,
                "old_delta": old,
                "new_delta": new,
                "detail": decision.detail,
            }
        )
        self._logger.info(
            "adaptive scheduler%s: delta %+.4f -> %+.4f (%s) at step %d epoch %d: %s; proposed=%s",
            " [dry-run]" if self._dry_run else "",
            old,
            new,
            reason,
            self._batches,
            self._epochs,
            decision.detail,
            self.proposed(),
        )

    # ------------------------------------------------------------------ reporting
    def references(self) -> dict[int, dict[str, float | None]]:
        """The guard's per-regime references (``loss``, ``grad_norm``: reference levels;
        ``*_spread``: log-unit spreads); empty for a law that keeps none."""
        refs = getattr(self._law, "references", None)
        return refs() if callable(refs) else {}

    def history(self) -> list[dict[str, Any]]:
        """The last ``history_size`` changes, oldest first (copies).

        Each: ``step``, ``epoch``, ``level`` ("batch"/"epoch"), ``reason``,
        ``old_delta``, ``new_delta``, ``detail`` (human-readable explanation).
        """
        return [dict(h) for h in self._history]

    def diagnostics(self) -> dict[str, Any]:
        """Plain-value snapshot (no host sync; pending tensors are not read)."""
        return {
            "step": self._batches,
            "batches_seen": self._batches,
            "epoch": self._epochs,
            "updates": self._updates,
            "window_fill": len(self._loss_buf),
            "delta": self._delta,
            "dry_run": self._dry_run,
            "last_reason": self._last_reason,
            "last_change_step": self._last_change_step,
            "decision": None if self._decision is None else dict(self._decision),
            **self._law.diagnostics(),
            "signals": dict(self._law.signals),
            "reason_counts": dict(self._counts),
            "num_changes": sum(self._counts.values()),
            "values": self.values(),
            "proposed": self.proposed(),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Plain strict-JSON state (NaN/inf encoded as "nan"/"inf"/"-inf").

        Reads pending window tensors to the host (one sync), so a resume continues
        bit-for-bit. The law's entries (its ``state_keys``) sit beside the controller's.
        """
        n = len(self._loss_buf)
        names = self._law.inputs
        host = _to_host(
            self._loss_buf + self._grad_buf + [v for k in names for v in self._input_buf[k]]
        )
        inputs = {k: host[(2 + i) * n : (3 + i) * n] for i, k in enumerate(names)}
        return write_state(
            config=self.config(),
            delta=self._delta,
            base=self._base,
            counters=(self._batches, self._epochs, self._updates),
            window=(host[:n], host[n : 2 * n], self._regime_buf),
            window_inputs=inputs,
            law=self._law,
            last=(self._last_reason, self._last_change_step, self._decision),
            counts=self._counts,
            history=self._history,
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output. The config must match (``dry_run`` and
        ``log_every`` may differ and are not restored: a dry-run state can go live). A
        state without a ``law`` (written before laws were registered) is the guard's."""
        new = read_state(
            state,
            config=self.config(),
            default_law=DEFAULT_LAW,
            bound=self._range,
            interval=self._interval,
            rules=self._rules,
            law=self._law,
            check_regime=check_regime,
        )
        self._delta = new["delta"]
        self._base = new["base"]
        self._batches, self._epochs, self._updates = new["counters"]
        wl, wg, wr = new["window"]
        self._loss_buf = list(wl)
        self._grad_buf = list(wg)
        self._regime_buf = list(wr)
        self._input_buf = {k: list(v) for k, v in new["window_inputs"].items()}
        self._last_reason, self._last_change_step, self._decision = new["last"]
        self._counts = new["counts"]
        self._history = deque(new["history"], maxlen=self._history_size)
