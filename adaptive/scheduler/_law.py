"""The scheduler law contract and registry: a law turns decision windows and epoch metrics
into a new delta; `AdaptiveScheduler` buffers the inputs, applies and records the result.

A law is one module holding one :class:`SchedulerLaw` subclass registered with
:func:`register_law`. The controller owns everything that does not depend on the law
(base values, limits and :func:`map_value`, the window buffers and their host reads,
``delta`` and its bound, history, reason counts, logging, the state dict's frame); the law
owns its hyperparameters, its state and its decisions.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

from adaptive.errors import ParameterError

__all__ = [
    "CONTROLLER_STATE_KEYS",
    "Control",
    "Decision",
    "SchedulerLaw",
    "Window",
    "available_laws",
    "law_class",
    "register_law",
]

#: Keys of the controller's own part of the state dict; a law's ``state_keys`` must differ.
CONTROLLER_STATE_KEYS = frozenset(
    {
        "version",
        "config",
        "delta",
        "base_values",
        "batches_seen",
        "epochs_seen",
        "updates",
        "window_loss",
        "window_grad_norm",
        "window_regime",
        "window_inputs",
        "last_reason",
        "last_change_step",
        "decision",
        "signals",
        "reason_counts",
        "history",
    }
)


@dataclass(frozen=True)
class Window:
    """One closed batch window as host floats: raw loss, grad norm and regime per batch
    (oldest first; values may be NaN/inf), and the law's own per-batch ``inputs`` (one
    list per name in :attr:`SchedulerLaw.inputs`, empty for a law that reads none)."""

    losses: list[float]
    grads: list[float]
    regimes: list[int]
    inputs: Mapping[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Control:
    """What the controller tells a law at a decision point.

    ``delta``: the delta in force; ``rate``: ``adjustment_rate``; ``bound``:
    ``adjustment_range`` (a returned delta is clipped to ``[-bound, bound]``);
    ``interval``: ``update_interval``; ``epoch_decisions``: ``use_epoch_metrics`` (when
    False an epoch decision must keep delta and report action ``"disabled"``);
    ``step`` / ``epoch``: batches and epochs seen, counting the one being decided.
    """

    delta: float
    rate: float
    bound: float
    interval: int
    epoch_decisions: bool
    step: int
    epoch: int

    def with_delta(self, delta: float) -> Control:
        """The same control with another delta (a law combining sub-laws gives each its own)."""
        return replace(self, delta=delta)


@dataclass(frozen=True)
class Decision:
    """A law's decision at one decision point.

    ``action``: ``"change"`` (``delta`` is the new delta; ``reason`` must be one of the
    law's :attr:`SchedulerLaw.reasons`) or any other word saying why delta holds (the guard
    uses ``"hold"``, ``"cooldown"``, ``"at_bound"``, ``"disabled"``). ``detail``: a
    human-readable explanation for the history and the log.
    """

    level: str  # "batch" or "epoch"
    action: str
    reason: str | None
    delta: float
    detail: str = ""

    @classmethod
    def hold(
        cls, level: str, control: Control, reason: str | None = None, action: str = "hold"
    ) -> Decision:
        """Keep delta (``action`` names why)."""
        return cls(level, action, reason, control.delta)


class SchedulerLaw(ABC):
    """Base class of a scheduler law (one module per law, registered with :func:`register_law`).

    Contract (everything the controller relies on):

    * ``__init__(self, *, <hyperparameters with defaults>)``: keyword-only, validated with
      one-line errors that repeat the bad value; :meth:`params` returns them as plain values.
    * :meth:`window` decides at the end of every batch window, :meth:`epoch` at every
      epoch end; both return a :class:`Decision` and are deterministic functions of the law's
      state and their arguments (no clocks, no global random state). :meth:`epoch` reads
      and checks its metrics before it changes any state.
    * ``signals``: a dict with exactly the keys :attr:`signal_keys` (floats or None), what
      the law last measured; the controller snapshots it per window (replay columns
      ``signal/<k>`` for :attr:`plot_signals`) and keeps it in the state dict.
    * :meth:`state_dict` returns plain JSON values under the keys :attr:`state_keys` (they
      sit beside the controller's keys in its state dict), non-finite floats encoded with
      ``adaptive._checks.encode_float``; :meth:`load_state_dict` checks every entry before
      it sets any (``ValueError`` naming the entry).
    * ``reasons``: every reason a change can carry, with its direction (-1 eases off, +1
      pushes toward free run, 0 moves back toward 0), for the docs, plots and tests.
    * ``inputs``: per-batch values the law reads besides loss, grad norm and regime, as
      ``{input name: trace column}`` (the GTF law's free-run loss and horizon). Live
      callers pass them as ``step_batch(..., inputs={name: value})``; replay reads the
      columns and refuses a trace without them ("not recorded").
    * ``epoch_splits``: evaluation splits the law's epoch decisions need (replay refuses a
      trace without rows of them).
    * :meth:`thresholds`: the value each plotted signal is compared with (the figures draw
      it as a horizontal line).

    A law may combine others (for example pacing that the guard can still ease off): it
    holds their instances, gives each its own delta through :meth:`Control.with_delta`,
    sums or overrides their decisions and nests their state dicts inside its own entries.

    Test settings read by the contract suite in ``tests/test_scheduler_laws.py``:
    ``example_params`` (a typical non-default configuration) and ``invalid_params``
    (``(name, bad value)`` pairs whose construction must fail naming the value).
    """

    name: ClassVar[str] = ""
    reasons: ClassVar[Mapping[str, int]] = {}
    signal_keys: ClassVar[tuple[str, ...]] = ()
    plot_signals: ClassVar[tuple[str, ...]] = ()
    state_keys: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[Mapping[str, str]] = {}
    epoch_splits: ClassVar[tuple[str, ...]] = ()
    example_params: ClassVar[Mapping[str, Any]] = {}
    invalid_params: ClassVar[Sequence[tuple[str, Any]]] = ()

    def __init__(self) -> None:
        self.signals: dict[str, float | None] = dict.fromkeys(self.signal_keys)

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """Names of the keyword-only hyperparameters accepted by ``__init__``."""
        return tuple(cls.defaults())

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every hyperparameter with its default, in constructor order."""
        sig = inspect.signature(cls.__init__)
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Hyperparameters (all of :meth:`param_names`) as plain values."""

    @abstractmethod
    def window(self, window: Window, control: Control) -> Decision:
        """Decide at the end of a batch window."""

    def epoch(
        self,
        metrics: Mapping[str, float],
        val_metrics: Mapping[str, float] | None,
        control: Control,
    ) -> Decision:
        """Decide at an epoch end from the free-run ``metrics`` and teacher-forced
        ``val_metrics`` (default: hold, or ``"disabled"`` without epoch decisions)."""
        return Decision.hold(
            "epoch", control, action="hold" if control.epoch_decisions else "disabled"
        )

    def thresholds(self) -> dict[str, float]:
        """``{plotted signal: the threshold or target it is compared with}`` (default none)."""
        return {}

    def diagnostics(self) -> dict[str, Any]:
        """Extra plain values for :meth:`AdaptiveScheduler.diagnostics` (default none)."""
        return {}

    def status(self) -> str:
        """The law's part of the periodic INFO status line (default: its signals)."""
        return " ".join(f"{k}={_fmt(v)}" for k, v in self.signals.items())

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Plain strict-JSON state under :attr:`state_keys`."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (read from the controller's whole state dict)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


_L = TypeVar("_L", bound=type[SchedulerLaw])
_REGISTRY: dict[str, type[SchedulerLaw]] = {}


def register_law(name: str) -> Callable[[_L], _L]:
    """Class decorator registering a :class:`SchedulerLaw` subclass under ``name``.

    >>> @register_law("my_law")
    ... class MyLaw(SchedulerLaw): ...
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"law name must be a non-empty identifier string, got {name!r}")

    def decorator(cls: _L) -> _L:
        if not (isinstance(cls, type) and issubclass(cls, SchedulerLaw)):
            raise TypeError(f"register_law({name!r}) expects a SchedulerLaw subclass, got {cls!r}")
        clash = sorted(set(cls.state_keys) & CONTROLLER_STATE_KEYS)
        if clash:
            raise ValueError(f"{cls.__qualname__}.state_keys uses the controller's keys {clash!r}")
        missing = sorted(set(cls.plot_signals) - set(cls.signal_keys))
        if missing:
            raise ValueError(f"{cls.__qualname__}.plot_signals {missing!r} are not signal_keys")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"law {name!r} is already registered to {existing.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_laws() -> tuple[str, ...]:
    """Names of all registered scheduler laws, sorted."""
    return tuple(sorted(_REGISTRY))


def law_class(law: str) -> type[SchedulerLaw]:
    """The class registered under ``law``; a ``ParameterError`` (a ``ValueError``) naming
    the registered laws for an unknown name."""
    try:
        return _REGISTRY[law]
    except (KeyError, TypeError):
        raise ParameterError(
            f"unknown scheduler law {law!r}; available laws: {list(available_laws())}"
        ) from None
