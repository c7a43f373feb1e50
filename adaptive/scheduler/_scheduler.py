"""Adaptive training-schedule controller (teacher forcing / free-run curriculum).

The controller is a small deterministic state machine: per-batch loss and grad norm and
per-epoch validation metrics go in, schedule values and diagnostics come out. It keeps
one scalar ``delta`` in ``[-adjustment_range, adjustment_range]`` (positive = harder,
i.e. more free run) applied on top of the stage schedule's base values. See
``docs/SCHEDULER.md`` for the control law and its reasoning.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from adaptive._checks import check_number, decode_float, encode_float
from adaptive._defaults import SCHEDULER_ADJUSTMENT_RANGE

__all__ = [
    "DEFAULT_ADJUSTMENT_RANGE",
    "FREE_METRICS",
    "MOTION_PARAM_RULES",
    "NONFINITE_POLICIES",
    "PARAM_KINDS",
    "REASONS",
    "AdaptiveScheduler",
    "BlockRecord",
    "map_value",
]

_STATE_VERSION = 2
_DEFAULT_LOGGER_NAME = "adaptive.scheduler"

#: Reasons a change can carry (direction: -1 eases off, +1 pushes toward free run, 0 moves
#: delta back toward 0 after calm decision points).
REASONS: dict[str, int] = {
    "nonfinite": -1,
    "grad_spike": -1,
    "loss_rising": -1,
    "valfree_worse": +1,
    "both_worse": -1,
    "recovered": 0,
}
#: What a window holding non-finite losses / grad norms does: ease off, or skip the values.
NONFINITE_POLICIES = ("ease_off", "skip")
#: Smallest spread (log units) of a regime's reference: changes below ~10 % are never outliers.
SPREAD_FLOOR = 0.1
DEFAULT_ADJUSTMENT_RANGE = SCHEDULER_ADJUSTMENT_RANGE
_MAD_TO_SIGMA = 1.4826  # MAD of a normal sample x this = its standard deviation
#: The reference motion task's validation metrics (lower is better); ``free_metric`` and
#: ``val_metric`` may name any metric the trainer passes to :meth:`AdaptiveScheduler.step_epoch`.
FREE_METRICS = ("YawAbsDeg", "MPJPE", "RootDrift", "loss")
#: How a schedule parameter is adjusted by delta (see :func:`map_value`).
PARAM_KINDS = ("scale", "count", "complement")
#: The reference motion task's parameters that are not plain scales (the default rules).
MOTION_PARAM_RULES: dict[str, str] = {"freerun_horizon": "count", "tf_ratio": "complement"}

# Config keys that may differ between a saved state and the loading instance.
_NON_BEHAVIOURAL = frozenset({"dry_run", "log_every"})

_SIGNAL_KEYS = (
    # batch level (last window; the worst regime where several were judged)
    "window_size",
    "window_nonfinite",
    "regimes",
    "loss_trend",
    "grad_z",
    "grad_outliers",
    "grad_median",
    "grad_reference",
    "calm_streak",
    # epoch level (last epoch)
    "free_metric",
    "free_trend",
    "val_metric",
    "val_trend",
)


# ----------------------------------------------------------------------------- helpers
def _enc(x: float | None) -> float | str | None:
    return encode_float(x)


def _dec(x: Any, name: str = "value") -> float | None:
    return decode_float(x, name, optional=True)


def _is_real(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, numbers.Real)


def _median(sorted_values: list[float]) -> float | None:
    n = len(sorted_values)
    if n == 0:
        return None
    mid = n // 2
    if n % 2:
        return sorted_values[mid]
    return (sorted_values[mid - 1] + sorted_values[mid]) / 2.0


def _robust(values: list[float]) -> tuple[float, float]:
    """(median, spread) of a sample: spread = 1.4826·MAD, at least :data:`SPREAD_FLOOR`."""
    srt = sorted(values)
    med = _median(srt)
    assert med is not None
    mad = _median(sorted(abs(v - med) for v in srt))
    assert mad is not None
    return med, max(_MAD_TO_SIGMA * mad, SPREAD_FLOOR)


def _rel_change(prev: float | None, cur: float | None) -> float | None:
    """Relative change ``(cur - prev) / |prev|``; None if either side is missing/non-finite."""
    if prev is None or cur is None or not math.isfinite(prev) or not math.isfinite(cur):
        return None
    if prev == 0.0:
        return 0.0 if cur == 0.0 else math.copysign(math.inf, cur)
    return (cur - prev) / abs(prev)


def _to_host(items: list[torch.Tensor | float]) -> list[float]:
    """Buffer of floats / 0-dim tensors -> floats, one device->host copy (one host sync)
    per device.

    ``torch.stack(...).cpu().tolist()`` yields exactly ``float(t)`` for every element, so
    the values are bit-identical to what a replay reading ``float(loss)`` from a trace sees.
    Tensors of several dtypes on one device (a float64 loss, a float32 grad norm) are
    stacked per dtype and cast to float64 on the device first, which is exact.
    """
    out: list[float] = [0.0] * len(items)
    groups: dict[torch.device, dict[torch.dtype, list[int]]] = {}
    for i, v in enumerate(items):
        if isinstance(v, torch.Tensor):
            groups.setdefault(v.device, {}).setdefault(v.dtype, []).append(i)
        else:
            out[i] = v
    for by_dtype in groups.values():
        parts = [
            torch.stack([items[i] for i in idx])  # type: ignore[misc]
            for idx in by_dtype.values()
        ]
        if len(parts) > 1:
            parts = [torch.cat([p.to(torch.float64) for p in parts])]
        host = parts[0].cpu().tolist()
        order = [i for idx in by_dtype.values() for i in idx]
        for i, val in zip(order, host, strict=True):
            out[i] = float(val)
    return out


def map_value(
    name: str,
    base: float,
    delta: float,
    limits: tuple[float, float] | None = None,
    kind: str | None = None,
) -> float:
    """Apply ``delta`` (positive = harder) to one base value; see docs/SCHEDULER.md.

    The parameter's ``kind`` (default: :data:`MOTION_PARAM_RULES`, else ``"scale"``):

    * ``"count"`` (``freerun_horizon``): ``max(1, floor(base·(1+δ) + 0.5))``; base 0 stays 0.
    * ``"complement"`` (``tf_ratio``): the complement ``1 - base`` (the free-run fraction)
      is scaled, ``clip(1 - (1-base)·(1+δ), 0, 1)``; base 1.0 stays 1.0.
    * ``"scale"`` (anything else: ``freerun_weight``, extras): ``base·(1+δ)``; base 0 stays 0.

    ``limits = (lo, hi)`` clips the adjusted value into ``[lo, hi]`` (for example the
    trainer's ``freerun_horizon <= window - 1``). ``delta == 0`` returns ``base`` exactly.
    """
    if delta == 0.0:
        return base
    kind = kind or MOTION_PARAM_RULES.get(name, "scale")
    if kind == "count":
        if base == 0.0:
            return base
        out = float(max(1, math.floor(base * (1.0 + delta) + 0.5)))
    elif kind == "complement":
        free = 1.0 - base
        if free == 0.0:
            return base
        out = min(1.0, max(0.0, 1.0 - free * (1.0 + delta)))
    else:
        if base == 0.0:
            return base
        out = base * (1.0 + delta)
    if limits is not None:
        out = min(limits[1], max(limits[0], out))
    return out


def _validate_rules(rules: Any) -> dict[str, str]:
    if rules is None:
        return dict(MOTION_PARAM_RULES)
    if not isinstance(rules, Mapping):
        raise TypeError(f"param_rules must be a mapping name -> kind, got {rules!r}")
    for name, kind in rules.items():
        if not isinstance(name, str) or kind not in PARAM_KINDS:
            raise ValueError(f"param_rules[{name!r}] must be one of {PARAM_KINDS!r}, got {kind!r}")
    return dict(rules)


def _validate_limits(limits: Any) -> dict[str, tuple[float, float]]:
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise TypeError(f"limits must be a mapping name -> (lo, hi), got {limits!r}")
    out: dict[str, tuple[float, float]] = {}
    for name, pair in limits.items():
        ok = (
            isinstance(name, str)
            and isinstance(pair, Sequence)
            and len(pair) == 2
            and all(_is_real(v) and not math.isnan(float(v)) for v in pair)
            and float(pair[0]) <= float(pair[1])
        )
        if not ok:
            raise ValueError(f"limits[{name!r}] must be a pair lo <= hi of numbers, got {pair!r}")
        out[name] = (float(pair[0]), float(pair[1]))
    return out


@dataclass(eq=False)
class BlockRecord:
    """What one :meth:`AdaptiveScheduler.step_block` call did.

    The block covers scheduler steps ``start_step .. start_step + length - 1`` (block
    offset ``i`` = the ``i``-th ``step_batch`` equivalent). Windows closed after the
    offsets in ``closes``; for each close, ``decisions`` / ``deltas`` / ``signals`` hold
    the decision, delta and signal snapshot right after it (as ``diagnostics()`` would
    show them). Nothing else can change inside a block, so the per-step views below are
    piecewise constant between closes and exactly equal to per-step reads.
    """

    start_step: int
    length: int
    base_values: dict[str, float]  # base values in force during the block
    limits: dict[str, tuple[float, float]]  # per-parameter bounds of the adjusted values
    rules: dict[str, str]  # per-parameter kind (map_value)
    delta_before: float  # delta when the block started
    signals_before: dict[str, float | None]  # signals when the block started
    closes: list[int] = field(default_factory=list)  # offsets after which a window closed
    decisions: list[dict[str, Any]] = field(default_factory=list)  # decision at each close
    deltas: list[float] = field(default_factory=list)  # delta after each close
    signals: list[dict[str, float | None]] = field(default_factory=list)  # after each close
    changes: list[dict[str, Any]] = field(default_factory=list)  # every change (history())

    def _counts(self, first: int) -> np.ndarray:
        """Run lengths of [before, after close 0, after close 1, ...] where a value set at
        close ``k`` applies from offset ``closes[k] + first``."""
        edges = np.asarray([0, *[c + first for c in self.closes], self.length], dtype=np.int64)
        return np.diff(np.minimum(edges, self.length))

    def delta(self) -> np.ndarray:
        """Per-step delta in force when batch ``i`` was read (what ``proposed()`` used)."""
        return np.repeat(np.asarray([self.delta_before, *self.deltas]), self._counts(1))

    def proposed(self) -> dict[str, np.ndarray]:
        """Per-step ``proposed()`` values read before batch ``i``, via :func:`map_value`
        (evaluated once per constant-delta run, then repeated)."""
        counts = self._counts(1)
        runs = [self.delta_before, *self.deltas]
        return {
            name: np.repeat(
                np.asarray(
                    [
                        map_value(name, b, d, self.limits.get(name), self.rules.get(name))
                        for d in runs
                    ]
                ),
                counts,
            )
            for name, b in self.base_values.items()
        }

    def signal(self, key: str) -> np.ndarray:
        """Per-step ``diagnostics()["signals"][key]`` after batch ``i`` (None -> NaN)."""
        snaps = [self.signals_before, *self.signals]
        vals = [math.nan if (v := sn[key]) is None else float(v) for sn in snaps]
        return np.repeat(np.asarray(vals, dtype=np.float64), self._counts(0))

    def reasons(self) -> list[str]:
        """Per-step reason of a change made at the window end after batch ``i``, else ""."""
        out = [""] * self.length
        for off, dec in zip(self.closes, self.decisions, strict=True):
            if dec["action"] == "change":
                out[off] = dec["reason"]
        return out


def _validate_base_values(
    values: Mapping[str, float], rules: Mapping[str, str] = MOTION_PARAM_RULES
) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise TypeError(f"base values must be a mapping name -> float, got {values!r}")
    out: dict[str, float] = {}
    for name, v in values.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"base value names must be non-empty str, got {name!r}")
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if not _is_real(v) or not math.isfinite(float(v)):
            raise ValueError(f"base value {name!r} must be a finite number, got {v!r}")
        f = float(v)
        kind = rules.get(name, "scale")
        if kind == "complement" and not 0.0 <= f <= 1.0:
            raise ValueError(f"base value {name!r} must be in [0, 1], got {v!r}")
        if kind == "count" and (f < 0.0 or f != math.floor(f)):
            raise ValueError(f"base value {name!r} must be a whole number >= 0, got {v!r}")
        out[name] = f
    return out


def _check_int(name: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


# ----------------------------------------------------------------------------- scheduler
class AdaptiveScheduler:
    """Adaptive teacher-forcing / free-run schedule controller.

    Usage (live)::

        sched = AdaptiveScheduler()
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
    teacher forcing) is applied on top of the base values by :func:`map_value`. It moves
    by ``adjustment_rate`` per decision, at most once per decision point (every
    ``update_interval`` batches, and at each :meth:`step_epoch`), stays within
    ``[-adjustment_range, adjustment_range]`` and freezes for ``cooldown`` decision
    points after each change (non-finite inputs may still ease off). After
    ``recover_patience`` consecutive calm decision points (and no cooldown left) it moves
    back toward 0 by ``adjustment_rate`` (reason ``recovered``): easing off is never
    permanent, and neither is an epoch-level push toward free run.

    Batch level, per *regime* (an int per batch, e.g. 0 = teacher forced only, 1 = free
    run drawn; batches of different regimes have different loss and grad-norm levels and
    are never compared with each other): each regime keeps a reference of its log grad
    norm and log loss (centre and spread: EMAs, momentum ``baseline_momentum``, of window
    medians and scaled MADs, spread at least :data:`SPREAD_FLOOR`), updated at every window
    end and never restarted, so it survives changes of delta and of the base values. At a
    window end: a NaN/inf value -> ``nonfinite`` (or ignored, ``on_nonfinite="skip"``);
    else at least ``spike_count`` batches whose grad-norm z-score against their regime's
    reference exceeds ``spike_z`` -> ``grad_spike``; else a regime's window median loss
    more than ``rising_threshold`` (relative) above its reference -> ``loss_rising``. A
    regime needs ``min_samples`` finite values in a window to be judged or to update its
    reference; its first such window only sets the reference.

    Epoch level (lower metric = better; relative change vs the previous epoch, changes
    within ``epoch_tolerance`` are flat): free-run metric worse while teacher-forced val
    is not worse for ``patience`` consecutive epochs -> ``valfree_worse`` (delta up);
    both worse for ``patience`` epochs -> ``both_worse`` (delta down); a non-finite
    metric -> ``nonfinite`` at once; otherwise hold (a calm decision point).

    Decisions never depend on ``dry_run``: in dry-run :meth:`values` returns the base
    values and :meth:`proposed` what would be applied, so a replay proposes exactly what
    the live controller applies.

    Args:
        adjustment_rate: step of delta per change (> 0).
        update_interval: batches per batch-level decision window (>= 1).
        use_epoch_metrics: make epoch-level decisions (metrics are recorded anyway).
        adjustment_range: bound on ``|delta|``, in ``[0, 1)``.
        dry_run: apply nothing, only propose (switchable via the ``dry_run`` property).
        free_metric: key of the free-run validation metric (``metrics`` of step_epoch; any
            lower-is-better metric the trainer reports, e.g. the reference task's
            :data:`FREE_METRICS`).
        val_metric: key in the teacher-forced ``val_metrics``; ``None`` = ``free_metric``.
        spike_z: robust z-score of a batch's log grad norm above which it is an outlier
            (> 0).
        spike_count: outlier batches in one window that make a ``grad_spike`` (>= 1; at
            most ``update_interval`` are required).
        rising_threshold: relative rise of a regime's window median loss over its
            reference that counts as rising (> 0).
        baseline_momentum: EMA momentum of the per-regime references, in ``[0, 1)``.
        min_samples: finite values a regime needs in a window to be judged (>= 2; at
            most ``update_interval`` are required, so short windows still get checks).
        recover_patience: consecutive calm decision points before delta moves back
            toward 0 (>= 1).
        on_nonfinite: ``"ease_off"`` (a NaN/inf loss or grad norm eases off) or
            ``"skip"`` (ignore such values, e.g. under mixed precision with a grad scaler).
        patience: consecutive epochs a trend must last before an epoch-level change.
        epoch_tolerance: relative epoch-to-epoch change treated as flat (>= 0).
        cooldown: decision points after a change during which delta is frozen (>= 0).
        limits: optional ``{name: (lo, hi)}`` bounds of the adjusted values (e.g. the
            trainer's ``freerun_horizon <= window - 1``); see :func:`map_value`.
        param_rules: ``{name: kind}`` with kind in :data:`PARAM_KINDS` (``"scale"``,
            ``"count"``, ``"complement"``): how delta adjusts each schedule parameter;
            merged over :data:`MOTION_PARAM_RULES` (the reference task's; others scale).
        history_size: number of recent changes kept by :meth:`history` (>= 1).
        log_every: INFO status line every ``log_every`` batch windows (0: off). Changes
            are always logged at INFO.
        logger: logger; default ``logging.getLogger("adaptive.scheduler")``.
    """

    def __init__(
        self,
        *,
        adjustment_rate: float = 0.1,
        update_interval: int = 50,
        use_epoch_metrics: bool = True,
        adjustment_range: float = DEFAULT_ADJUSTMENT_RANGE,
        dry_run: bool = False,
        free_metric: str = "YawAbsDeg",
        val_metric: str | None = None,
        spike_z: float = 4.0,
        spike_count: int = 2,
        rising_threshold: float = 0.25,
        baseline_momentum: float = 0.8,
        min_samples: int = 8,
        recover_patience: int = 4,
        on_nonfinite: str = "ease_off",
        patience: int = 2,
        epoch_tolerance: float = 0.01,
        cooldown: int = 2,
        limits: Mapping[str, tuple[float, float]] | None = None,
        param_rules: Mapping[str, str] | None = None,
        history_size: int = 100,
        log_every: int = 0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._rate = check_number("adjustment_rate", adjustment_rate, low=0.0, low_open=True)
        self._interval = _check_int("update_interval", update_interval, low=1)
        self._use_epoch = _check_bool("use_epoch_metrics", use_epoch_metrics)
        self._range = check_number(
            "adjustment_range", adjustment_range, low=0.0, high=1.0, high_open=True
        )
        self._dry_run = _check_bool("dry_run", dry_run)
        if not isinstance(free_metric, str) or not free_metric:
            raise ValueError(f"free_metric must be a non-empty metric name, got {free_metric!r}")
        if val_metric is not None and (not isinstance(val_metric, str) or not val_metric):
            raise ValueError(f"val_metric must be None or a metric name, got {val_metric!r}")
        self._free_metric = free_metric
        self._val_metric = val_metric
        self._spike_z = check_number("spike_z", spike_z, low=0.0, low_open=True)
        self._spike_count = _check_int("spike_count", spike_count, low=1)
        self._rising = check_number("rising_threshold", rising_threshold, low=0.0, low_open=True)
        self._momentum = check_number(
            "baseline_momentum", baseline_momentum, low=0.0, high=1.0, high_open=True
        )
        self._min_samples = _check_int("min_samples", min_samples, low=2)
        # a window never holds more than update_interval values: the checks would never run
        self._need = min(self._min_samples, self._interval)
        self._need_outliers = min(self._spike_count, self._interval)
        self._recover_patience = _check_int("recover_patience", recover_patience, low=1)
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"on_nonfinite must be one of {NONFINITE_POLICIES!r}, got {on_nonfinite!r}"
            )
        self._on_nonfinite = on_nonfinite
        self._patience = _check_int("patience", patience, low=1)
        self._tolerance = check_number("epoch_tolerance", epoch_tolerance, low=0.0)
        self._cooldown = _check_int("cooldown", cooldown, low=0)
        self._limits = _validate_limits(limits)
        self._rules = _validate_rules(param_rules)
        self._history_size = _check_int("history_size", history_size, low=1)
        self._log_every = _check_int("log_every", log_every, low=0)
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
        # regime -> [loss centre, loss spread, grad centre, grad spread] (log units)
        self._refs: dict[int, list[float | None]] = {}
        self._cooldown_left = 0
        self._calm_streak = 0
        self._prev_free: float | None = None
        self._prev_val: float | None = None
        self._gap_streak = 0
        self._both_streak = 0
        self._last_reason: str | None = None
        self._last_change_step: int | None = None
        self._decision: dict[str, Any] | None = None
        self._signals: dict[str, float | None] = dict.fromkeys(_SIGNAL_KEYS)
        self._counts: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._history: deque[dict[str, Any]] = deque(maxlen=self._history_size)

    # ------------------------------------------------------------------ properties
    @property
    def delta(self) -> float:
        """Current delta (positive = harder)."""
        return self._delta

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    @dry_run.setter
    def dry_run(self, value: bool) -> None:
        self._dry_run = _check_bool("dry_run", value)

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
            "adjustment_rate": self._rate,
            "update_interval": self._interval,
            "use_epoch_metrics": self._use_epoch,
            "adjustment_range": self._range,
            "dry_run": self._dry_run,
            "free_metric": self._free_metric,
            "val_metric": self._val_metric,
            "spike_z": self._spike_z,
            "spike_count": self._spike_count,
            "rising_threshold": self._rising,
            "baseline_momentum": self._momentum,
            "min_samples": self._min_samples,
            "recover_patience": self._recover_patience,
            "on_nonfinite": self._on_nonfinite,
            "patience": self._patience,
            "epoch_tolerance": self._tolerance,
            "cooldown": self._cooldown,
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
        self._base = _validate_base_values(values, self._rules)

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
    @staticmethod
    def _capture(x: Any, name: str) -> torch.Tensor | float:
        if isinstance(x, torch.Tensor):
            if x.numel() != 1:
                raise ValueError(
                    f"{name} must be a scalar (0-dim) tensor, got shape {tuple(x.shape)!r}"
                )
            # clone: async device copy, guards against later in-place updates.
            return x.detach().reshape(()).clone()
        if not _is_real(x):
            raise TypeError(f"{name} must be a float or a scalar tensor, got {x!r}")
        return float(x)

    @staticmethod
    def _check_regime(regime: Any) -> int:
        if isinstance(regime, bool):
            return int(regime)
        if not isinstance(regime, numbers.Integral) or regime < 0:
            raise ValueError(f"regime must be an int >= 0, got {regime!r}")
        return int(regime)

    def step_batch(
        self,
        loss: torch.Tensor | float,
        grad_norm: torch.Tensor | float,
        *,
        regime: int = 0,
    ) -> None:
        """Record one batch; every ``update_interval`` batches run a batch-level decision.

        ``regime`` (a host int, e.g. 1 when the batch drew a free-run rollout) selects the
        reference the batch is judged against. Tensors are buffered detached on their
        device; the window is copied to the host in one transfer (one host sync per
        device) at the decision point, the only sync of the call.
        """
        loss_v = self._capture(loss, "loss")
        grad_v = self._capture(grad_norm, "grad_norm")
        self._regime_buf.append(self._check_regime(regime))
        self._loss_buf.append(loss_v)
        self._grad_buf.append(grad_v)
        self._batches += 1
        if self._batches % self._interval == 0:
            self._close_window([], [], [])

    def step_block(
        self,
        loss: Sequence[Any] | np.ndarray | torch.Tensor,
        grad_norm: Sequence[Any] | np.ndarray | torch.Tensor,
        regime: Sequence[int] | np.ndarray | None = None,
    ) -> BlockRecord:
        """Record ``T = len(loss)`` batches at once; exactly equivalent to ``T`` successive
        ``proposed()`` reads each followed by ``step_batch(loss[i], grad_norm[i],
        regime=regime[i])`` (``regime=None``: all 0).

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
        losses = self._block_floats(loss, "loss")
        grads = self._block_floats(grad_norm, "grad_norm")
        n = len(losses)
        if len(grads) != n:
            raise ValueError(
                f"loss and grad_norm must have the same length, got {n} and {len(grads)}"
            )
        if regime is None:
            regimes = [0] * n
        else:
            raw = regime.tolist() if isinstance(regime, np.ndarray) else list(regime)
            regimes = [self._check_regime(r) for r in raw]
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
            signals_before=dict(self._signals),
        )
        closes, decisions, deltas = rec.closes, rec.decisions, rec.deltas
        signals, changes = rec.signals, rec.changes
        interval = self._interval
        close_window = self._close_window
        i = 0
        j = interval - len(self._loss_buf)  # end (exclusive) of the open window
        while j <= n:
            self._batches += j - i
            close_window(losses[i:j], grads[i:j], regimes[i:j])
            decision = self._decision
            closes.append(j - 1)
            decisions.append(decision)  # a fresh dict per decision, never mutated
            deltas.append(self._delta)
            signals.append(self._signals.copy())
            if decision["action"] == "change":  # type: ignore[index]
                changes.append(dict(self._history[-1]))
            i = j
            j += interval
        if i < n:  # the window stays open: buffer the rest, as step_batch would
            self._loss_buf.extend(losses[i:])
            self._grad_buf.extend(grads[i:])
            self._regime_buf.extend(regimes[i:])
            self._batches += n - i
        return rec

    @classmethod
    def _block_floats(cls, x: Any, name: str) -> list[float]:
        """A block of inputs -> Python floats, each exactly ``float(x[i])`` (step_batch's)."""
        if isinstance(x, torch.Tensor):
            if x.dim() != 1:
                raise ValueError(f"{name} must be a 1-dim tensor, got shape {tuple(x.shape)!r}")
            if x.dtype == torch.bool or x.is_complex():
                raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
            vals = x.detach().cpu().tolist()
            return vals if x.is_floating_point() else [float(v) for v in vals]
        if isinstance(x, np.ndarray):
            if x.ndim != 1:
                raise ValueError(f"{name} must be a 1-dim array, got shape {x.shape!r}")
            kind = x.dtype.kind
            if kind == "f":  # float16/32 -> float64 is exact; float64 is a no-op
                return x.astype(np.float64, copy=False).tolist()
            if kind in "iu":
                return [float(v) for v in x.tolist()]
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        if isinstance(x, str | bytes) or not isinstance(x, Sequence):
            raise TypeError(
                f"{name} must be a 1-dim array, tensor or sequence of numbers, got {x!r}"
            )
        return _to_host([cls._capture(v, name) for v in x])

    def _close_window(
        self, loss_tail: list[float], grad_tail: list[float], regime_tail: list[int]
    ) -> None:
        """End of a batch window: pending buffer (read to the host in one transfer per
        (device, dtype)) + ``*_tail`` host values -> one batch-level decision.

        Shared by :meth:`step_batch` (empty tails) and :meth:`step_block`.
        """
        if self._loss_buf:
            n = len(self._loss_buf)
            host = _to_host(self._loss_buf + self._grad_buf)
            regimes = self._regime_buf + regime_tail
            self._loss_buf = []
            self._grad_buf = []
            self._regime_buf = []
            losses = host[:n]
            grads = host[n:]
            losses += loss_tail
            grads += grad_tail
        else:
            losses, grads, regimes = loss_tail, grad_tail, regime_tail
        self._batch_decision(losses, grads, regimes)

    def step_epoch(
        self, metrics: Mapping[str, float], val_metrics: Mapping[str, float] | None = None
    ) -> None:
        """Record the free-run (``metrics``) and teacher-forced (``val_metrics``) validation
        metrics of the finished epoch and run an epoch-level decision."""
        free = self._read_metric(metrics, self._free_metric, "metrics")
        val = None
        if val_metrics is not None:
            val = self._read_metric(
                val_metrics, self._val_metric or self._free_metric, "val_metrics"
            )
        self._epochs += 1
        free_trend = _rel_change(self._prev_free, free)
        val_trend = _rel_change(self._prev_val, val)
        self._prev_free, self._prev_val = free, val
        self._signals.update(
            free_metric=free, free_trend=free_trend, val_metric=val, val_trend=val_trend
        )

        reason: str | None = None
        detail = ""
        name = self._free_metric
        if not math.isfinite(free) or (val is not None and not math.isfinite(val)):
            self._gap_streak = self._both_streak = 0
            reason = "nonfinite"
            detail = f"non-finite validation metric (valfree {name}={free!r}, val={val!r})"
        elif free_trend is None or val_trend is None or free_trend <= self._tolerance:
            # first epoch, no val metrics, or free-run metric flat/improving: hold.
            self._gap_streak = self._both_streak = 0
        elif val_trend > self._tolerance:
            self._both_streak += 1
            self._gap_streak = 0
            if self._both_streak >= self._patience:
                reason = "both_worse"
                detail = (
                    f"valfree {name} and val both worse for {self._both_streak} epoch(s) "
                    f"(last: valfree {free_trend:+.2%}, val {val_trend:+.2%})"
                )
        else:
            self._gap_streak += 1
            self._both_streak = 0
            if self._gap_streak >= self._patience:
                reason = "valfree_worse"
                detail = (
                    f"valfree {name} worse for {self._gap_streak} epoch(s) while val is "
                    f"not (last: valfree {free_trend:+.2%}, val {val_trend:+.2%})"
                )

        if not self._use_epoch:
            self._decision = self._make_decision("epoch", reason, "disabled")
            return
        changed = self._decide("epoch", reason, detail)
        if changed:
            if reason == "both_worse":
                self._both_streak = 0
            elif reason == "valfree_worse":
                self._gap_streak = 0

    @staticmethod
    def _read_metric(metrics: Mapping[str, float], key: str, what: str) -> float:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"{what} must be a mapping name -> float, got {metrics!r}")
        if key not in metrics:
            raise KeyError(f"{what} has no key {key!r}; available keys: {sorted(metrics)!r}")
        v = metrics[key]
        if isinstance(v, torch.Tensor):
            v = v.item()
        if not _is_real(v):
            raise TypeError(f"{what}[{key!r}] must be a number, got {v!r}")
        return float(v)

    # ------------------------------------------------------------------ control law
    def _batch_decision(self, losses: list[float], grads: list[float], regimes: list[int]) -> None:
        self._updates += 1
        isfinite, log = math.isfinite, math.log
        nonfinite = sum(not isfinite(x) for x in losses) + sum(not isfinite(x) for x in grads)
        by_regime: dict[int, tuple[list[float], list[float]]] = {}
        for lv, gv, r in zip(losses, grads, regimes, strict=True):
            ls, gs = by_regime.setdefault(r, ([], []))
            if isfinite(lv) and lv > 0.0:
                ls.append(log(lv))
            if isfinite(gv) and gv > 0.0:
                gs.append(log(gv))
        z_max: float | None = None
        z_regime: int | None = None
        outliers = 0
        trend: float | None = None
        judged = 0
        stats: dict[int, tuple[float | None, float | None, float | None, float | None]] = {}
        for r in sorted(by_regime):
            ls, gs = by_regime[r]
            loss_c, loss_sp = _robust(ls) if len(ls) >= self._need else (None, None)
            grad_c, grad_sp = _robust(gs) if len(gs) >= self._need else (None, None)
            stats[r] = (loss_c, loss_sp, grad_c, grad_sp)
            ref = self._refs.get(r)
            if ref is None or max(len(ls), len(gs)) < self._need:
                continue
            judged += 1
            ref_lc, _, ref_gc, ref_gs = ref
            if ref_gc is not None and ref_gs is not None and gs:
                zs = [(g - ref_gc) / ref_gs for g in gs]
                outliers += sum(z > self._spike_z for z in zs)
                zm = max(zs)
                if z_max is None or zm > z_max:
                    z_max, z_regime = zm, r
            if ref_lc is not None and loss_c is not None:
                t = math.expm1(loss_c - ref_lc)
                trend = t if trend is None else max(trend, t)
        sig = self._signals
        sig["window_size"] = float(len(losses))
        sig["window_nonfinite"] = float(nonfinite)
        sig["regimes"] = float(judged)
        sig["loss_trend"] = trend
        sig["grad_z"] = z_max
        sig["grad_outliers"] = float(outliers)
        if z_regime is not None:
            gs = by_regime[z_regime][1]
            sig["grad_median"] = math.exp(_median(sorted(gs)))  # type: ignore[arg-type]
            sig["grad_reference"] = math.exp(self._refs[z_regime][2])  # type: ignore[arg-type]
        else:
            sig["grad_median"] = sig["grad_reference"] = None

        reason: str | None = None
        detail = ""
        if nonfinite and self._on_nonfinite == "ease_off":
            reason = "nonfinite"
            detail = (
                f"{nonfinite} non-finite loss/grad-norm value(s) in the last {len(losses)} batches"
            )
        elif outliers >= self._need_outliers:
            reason = "grad_spike"
            detail = (
                f"{outliers} batch(es) in the last {len(losses)} with a grad-norm z-score above "
                f"{self._spike_z:g} (max z {z_max:.3g}: window median "
                f"{sig['grad_median']:.6g} vs reference {sig['grad_reference']:.6g}, "
                f"regime {z_regime})"
            )
        elif trend is not None and trend > self._rising:
            reason = "loss_rising"
            detail = (
                f"window median loss is {trend:+.2%} above its reference (> {self._rising:+.2%})"
            )
        self._decide("batch", reason, detail)

        # References follow every window with enough samples (spikes barely move a median).
        m = self._momentum
        for r, (loss_c, loss_sp, grad_c, grad_sp) in stats.items():
            ref = self._refs.get(r)
            if ref is None:
                if loss_c is None and grad_c is None:
                    continue
                ref = self._refs[r] = [None, None, None, None]
            for i, v in enumerate((loss_c, loss_sp, grad_c, grad_sp)):
                if v is not None:
                    old = ref[i]
                    ref[i] = v if old is None else m * old + (1.0 - m) * v
        sig["calm_streak"] = float(self._calm_streak)

        if self._log_every and self._updates % self._log_every == 0:
            s = self._signals
            self._logger.info(
                "adaptive scheduler step=%d epoch=%d delta=%+.4f dry_run=%s grad_z=%s "
                "outliers=%d loss_trend=%s nonfinite=%d cooldown_left=%d calm=%d proposed=%s",
                self._batches,
                self._epochs,
                self._delta,
                self._dry_run,
                _fmt(s["grad_z"]),
                outliers,
                _fmt(s["loss_trend"]),
                nonfinite,
                self._cooldown_left,
                self._calm_streak,
                self.proposed(),
            )

    def _make_decision(self, level: str, reason: str | None, action: str) -> dict[str, Any]:
        return {
            "level": level,
            "step": self._batches,
            "epoch": self._epochs,
            "reason": reason,
            "action": action,
        }

    def _decide(self, level: str, reason: str | None, detail: str) -> bool:
        """One decision point. Returns True if delta changed.

        A point without a reason is calm; after ``recover_patience`` calm points in a row
        delta moves one ``adjustment_rate`` back toward 0 (reason ``recovered``).
        """
        cooling = self._cooldown_left > 0
        if cooling:
            self._cooldown_left -= 1
        if reason is None:
            self._calm_streak += 1
            if self._calm_streak < self._recover_patience or self._delta == 0.0 or cooling:
                self._decision = self._make_decision(level, None, "hold")
                return False
            old = self._delta
            new = max(0.0, old - self._rate) if old > 0.0 else min(0.0, old + self._rate)
            if abs(new) < 1e-9 * self._rate:  # float residue of repeated steps: land on 0
                new = 0.0
            self._calm_streak = 0
            self._apply(
                level,
                "recovered",
                old,
                new,
                f"{self._recover_patience} calm decision point(s) in a row: back toward 0",
                cooldown=False,
            )
            self._decision = self._make_decision(level, "recovered", "change")
            return True
        self._calm_streak = 0
        if cooling and reason != "nonfinite":
            self._decision = self._make_decision(level, reason, "cooldown")
            self._logger.debug(
                "adaptive scheduler: %s held by cooldown at step %d: %s",
                reason,
                self._batches,
                detail,
            )
            return False
        old = self._delta
        new = min(self._range, max(-self._range, old + REASONS[reason] * self._rate))
        if new == old:
            self._decision = self._make_decision(level, reason, "at_bound")
            return False
        self._apply(level, reason, old, new, detail)
        self._decision = self._make_decision(level, reason, "change")
        return True

    def _apply(
        self, level: str, reason: str, old: float, new: float, detail: str, *, cooldown: bool = True
    ) -> None:
        self._delta = new
        if cooldown:
            self._cooldown_left = self._cooldown
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
                "detail": detail,
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
            detail,
            self.proposed(),
        )

    # ------------------------------------------------------------------ reporting
    def references(self) -> dict[int, dict[str, float | None]]:
        """Per-regime references, in the signals' units: ``loss`` and ``grad_norm`` are
        the reference levels (exp of the log centres), ``*_spread`` the log-unit spreads."""
        out: dict[int, dict[str, float | None]] = {}
        for r, (lc, ls, gc, gs) in sorted(self._refs.items()):
            out[r] = {
                "loss": None if lc is None else math.exp(lc),
                "loss_spread": ls,
                "grad_norm": None if gc is None else math.exp(gc),
                "grad_spread": gs,
            }
        return out

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
            "cooldown_left": self._cooldown_left,
            "calm_streak": self._calm_streak,
            "gap_streak": self._gap_streak,
            "both_streak": self._both_streak,
            "references": self.references(),
            "signals": dict(self._signals),
            "reason_counts": dict(self._counts),
            "num_changes": sum(self._counts.values()),
            "values": self.values(),
            "proposed": self.proposed(),
        }

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Plain strict-JSON state (NaN/inf encoded as "nan"/"inf"/"-inf").

        Reads pending window tensors to the host (one sync), so a resume continues
        bit-for-bit.
        """
        n = len(self._loss_buf)
        host = _to_host(self._loss_buf + self._grad_buf)
        config = self.config()
        return {
            "version": _STATE_VERSION,
            "config": config,
            "delta": self._delta,
            "base_values": {k: _enc(v) for k, v in self._base.items()},
            "batches_seen": self._batches,
            "epochs_seen": self._epochs,
            "updates": self._updates,
            "window_loss": [_enc(v) for v in host[:n]],
            "window_grad_norm": [_enc(v) for v in host[n:]],
            "window_regime": list(self._regime_buf),
            "references": {str(r): [_enc(v) for v in ref] for r, ref in self._refs.items()},
            "cooldown_left": self._cooldown_left,
            "calm_streak": self._calm_streak,
            "prev_free": _enc(self._prev_free),
            "prev_val": _enc(self._prev_val),
            "gap_streak": self._gap_streak,
            "both_streak": self._both_streak,
            "last_reason": self._last_reason,
            "last_change_step": self._last_change_step,
            "decision": None if self._decision is None else dict(self._decision),
            "signals": {k: _enc(v) for k, v in self._signals.items()},
            "reason_counts": dict(self._counts),
            "history": [
                {**h, "old_delta": _enc(h["old_delta"]), "new_delta": _enc(h["new_delta"])}
                for h in self._history
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output. The config must match (``dry_run`` and
        ``log_every`` may differ and are not restored: a dry-run state can go live)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        version = state.get("version")
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported state version {version!r}, expected {_STATE_VERSION}")
        saved = state.get("config")
        if not isinstance(saved, Mapping):
            raise ValueError(f"state has no valid 'config' entry, got {saved!r}")
        current = self.config()
        mismatches = [
            f"{k}: saved {saved.get(k)!r} != current {v!r}"
            for k, v in current.items()
            if k not in _NON_BEHAVIOURAL and saved.get(k) != v
        ]
        if mismatches:
            raise ValueError(
                "cannot load state: configuration mismatch (" + "; ".join(mismatches) + ")"
            )
        try:
            base = _validate_base_values(
                {k: _dec(v, k) for k, v in state["base_values"].items()}, self._rules
            )
            delta = _dec(state["delta"], "delta")
            if delta is None or not abs(delta) <= self._range:
                raise ValueError(
                    f"state entry 'delta' must be within +-{self._range}, got {state['delta']!r}"
                )
            ints = {}
            for key in (
                "batches_seen",
                "epochs_seen",
                "updates",
                "cooldown_left",
                "calm_streak",
                "gap_streak",
                "both_streak",
            ):
                ints[key] = _check_int(f"state entry {key!r}", state[key], low=0)
            wl = [_dec(v, "window_loss") for v in state["window_loss"]]
            wg = [_dec(v, "window_grad_norm") for v in state["window_grad_norm"]]
            wr = [self._check_regime(r) for r in state["window_regime"]]
            expected = ints["batches_seen"] % self._interval
            if not len(wl) == len(wg) == len(wr) == expected:
                raise ValueError(
                    f"state window buffers have lengths {len(wl)}/{len(wg)}/{len(wr)}, "
                    f"expected {expected}"
                )
            refs: dict[int, list[float | None]] = {}
            for key, ref in state["references"].items():
                if not isinstance(ref, list) or len(ref) != 4:
                    raise ValueError(f"state entry 'references'[{key!r}] is invalid: {ref!r}")
                refs[self._check_regime(int(key))] = [_dec(v, "references") for v in ref]
            signals = {k: _dec(state["signals"].get(k), k) for k in _SIGNAL_KEYS}
            counts = {
                k: _check_int(f"reason_counts[{k!r}]", state["reason_counts"].get(k, 0), low=0)
                for k in REASONS
            }
            history = [
                {**h, "old_delta": _dec(h["old_delta"]), "new_delta": _dec(h["new_delta"])}
                for h in state["history"]
            ]
            last_reason = state["last_reason"]
            if last_reason is not None and last_reason not in REASONS:
                raise ValueError(f"state entry 'last_reason' is invalid: {last_reason!r}")
            decision = state.get("decision")
            last_change_step = state.get("last_change_step")
            prev_free = _dec(state["prev_free"], "prev_free")
            prev_val = _dec(state["prev_val"], "prev_val")
        except KeyError as e:
            raise ValueError(f"state is missing entry {e.args[0]!r}") from None

        self._delta = delta
        self._base = base
        self._batches = ints["batches_seen"]
        self._epochs = ints["epochs_seen"]
        self._updates = ints["updates"]
        self._cooldown_left = ints["cooldown_left"]
        self._calm_streak = ints["calm_streak"]
        self._gap_streak = ints["gap_streak"]
        self._both_streak = ints["both_streak"]
        self._loss_buf = list(wl)  # type: ignore[arg-type]
        self._grad_buf = list(wg)  # type: ignore[arg-type]
        self._regime_buf = wr
        self._refs = refs
        self._prev_free = prev_free
        self._prev_val = prev_val
        self._last_reason = last_reason
        self._last_change_step = last_change_step
        self._decision = None if decision is None else dict(decision)
        self._signals = signals
        self._counts = counts
        self._history = deque(history, maxlen=self._history_size)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"
