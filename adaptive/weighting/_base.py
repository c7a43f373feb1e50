"""Adaptive loss weighting controller, method base class and method registry.

The controller is a small deterministic state machine: raw (unweighted) per-component
losses go in, weights and diagnostics come out. It never touches the trainer, the model
or the autograd graph of the losses (other than multiplying them by constant weights to
form the total loss), and its whole state is exposed as plain JSON-serialisable values.
"""

from __future__ import annotations

import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

__all__ = [
    "AdaptiveLossWeighting",
    "WeightingDiagnostics",
    "WeightingMethod",
    "available_methods",
    "register_method",
]

_STATE_VERSION = 1
_DTYPE = torch.float64
_DEFAULT_LOGGER_NAME = "adaptive.weighting"

# --------------------------------------------------------------------------------------
# JSON helpers: float64 tensors <-> plain lists. Non-finite values are encoded as strings
# ("nan", "inf", "-inf") so that the state dict is strict JSON (json.dumps(allow_nan=False)).
# Finite floats round-trip bit-exactly through json (repr is the shortest round-trip form).
# --------------------------------------------------------------------------------------

JSONFloat = float | str


def encode_float(x: float) -> JSONFloat:
    """Encode one float for strict JSON; non-finite values become strings."""
    x = float(x)
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "nan"
    return "inf" if x > 0 else "-inf"


def decode_float(x: Any) -> float:
    """Inverse of :func:`encode_float`."""
    if isinstance(x, str):
        if x not in ("nan", "inf", "-inf"):
            raise ValueError(f"invalid encoded float {x!r}")
        return float(x)
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ValueError(f"invalid encoded float {x!r}")
    return float(x)


def encode_tensor(t: Tensor) -> list[JSONFloat]:
    """float64 tensor (any device, 1-D) -> list of JSON floats. Synchronises the host."""
    return [encode_float(v) for v in t.detach().to("cpu", _DTYPE).reshape(-1).tolist()]


def decode_tensor(values: Any, *, size: int, name: str) -> Tensor:
    """List of JSON floats -> 1-D float64 CPU tensor of length ``size``."""
    if not isinstance(values, list) or len(values) != size:
        raise ValueError(f"state entry {name!r} must be a list of {size} floats, got {values!r}")
    return torch.tensor([decode_float(v) for v in values], dtype=_DTYPE)


# --------------------------------------------------------------------------------------
# Method base class and registry
# --------------------------------------------------------------------------------------


class WeightingMethod(ABC):
    """Base class of a weighting method (one private module per method).

    A method turns its internal state into relative scales (a float64 tensor of shape
    ``(K,)`` with mean 1 over components) and updates that state from the raw losses.
    Contract (everything the controller relies on):

    * ``__init__(self, num_components, *, <hyperparameters with defaults>)``; all
      hyperparameters keyword-only, validated with errors repeating the bad value.
    * :meth:`scales` depends only on the state (the weights used at a step are computed
      *before* that step's losses are observed). Must be finite with mean 1.
    * :meth:`observe` receives the float64 losses ``(K,)`` and a 0-dim bool tensor
      ``finite``; when ``finite`` is False the state must be left unchanged. It must not
      synchronise with the host (no ``.item()``, ``float()``, Python ``if`` on tensor
      values): use ``torch.where``. Updates must be functional (rebind attributes to new
      tensors, never modify tensors in place) so diagnostics taken before
      ``observe`` stay valid.
    * :meth:`end_epoch` is called by the controller at every epoch boundary.
    * :meth:`state_dict` / :meth:`load_state_dict` use plain JSON values only.
    * :meth:`to` moves all state tensors to a device.
    """

    name: ClassVar[str] = ""

    def __init__(self, num_components: int) -> None:
        if isinstance(num_components, bool) or not isinstance(num_components, int):
            raise TypeError(f"num_components must be an int, got {num_components!r}")
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components!r}")
        self.num_components = num_components
        self.device = torch.device("cpu")

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """Names of the keyword-only hyperparameters accepted by ``__init__``."""
        sig = inspect.signature(cls.__init__)
        return tuple(
            p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
        )

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Hyperparameters (all of :meth:`param_names`) as plain values."""

    @abstractmethod
    def scales(self) -> Tensor:
        """Relative scales ``(K,)`` float64, mean 1, from the current state."""

    @abstractmethod
    def observe(self, losses: Tensor, finite: Tensor) -> None:
        """Feed one step's raw float64 losses ``(K,)``; no-op where ``finite`` is False."""

    def end_epoch(self) -> None:  # noqa: B027 - optional hook
        """Epoch boundary hook (default: nothing)."""

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        """Method state behind the current scales, as tensors (``(K,)`` or 0-dim)."""
        return {}

    @abstractmethod
    def state_tensors(self) -> dict[str, Tensor]:
        """All state tensors by attribute name (used by :meth:`to`)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore state produced by :meth:`state_dict` (tensors land on CPU)."""

    def to(self, device: torch.device) -> None:
        for attr, t in self.state_tensors().items():
            setattr(self, attr, t.to(device))
        self.device = device

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({self.num_components!r}, {args})"


_M = TypeVar("_M", bound=type[WeightingMethod])
_REGISTRY: dict[str, type[WeightingMethod]] = {}


def register_method(name: str) -> Callable[[_M], _M]:
    """Class decorator registering a :class:`WeightingMethod` subclass under ``name``.

    >>> @register_method("my_method")
    ... class MyMethod(WeightingMethod): ...
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"method name must be a non-empty identifier string, got {name!r}")

    def decorator(cls: _M) -> _M:
        if not (isinstance(cls, type) and issubclass(cls, WeightingMethod)):
            raise TypeError(
                f"register_method({name!r}) expects a WeightingMethod subclass, got {cls!r}"
            )
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"method {name!r} is already registered to {existing.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_methods() -> tuple[str, ...]:
    """Names of all registered weighting methods, sorted."""
    return tuple(sorted(_REGISTRY))


def _get_method_class(method: str) -> type[WeightingMethod]:
    try:
        return _REGISTRY[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown weighting method {method!r}; available methods: {list(available_methods())}"
        ) from None


# --------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightingDiagnostics:
    """What the controller did at one step. Tensors are float64 on the losses' device,
    indexed like ``components``; nothing here synchronises until :meth:`to_dict`.

    ``applied`` are the weights returned (== ``base`` in dry-run); ``proposed`` are the
    weights the method would apply (== ``applied`` when not in dry-run). ``skipped`` is
    True when this step's losses were not fed into the method state because at least one
    was NaN/inf. ``method_state`` holds the method's state behind this step's weights
    (DWA: ``ratio``; uncertainty: ``log_var`` and the Kendall ``objective``).
    """

    step: int
    epoch: int
    method: str
    dry_run: bool
    components: tuple[str, ...]
    scales: Tensor
    deltas: Tensor
    clamped: Tensor  # bool (K,)
    base: Tensor
    applied: Tensor
    proposed: Tensor
    skipped: Tensor  # bool, 0-dim
    skipped_steps: Tensor  # int64, 0-dim
    method_state: dict[str, Tensor] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float]:
        """Flat dict of plain floats (synchronises with the device).

        Keys: ``step``, ``epoch``, ``skipped``, ``skipped_steps``, and for every
        component ``c``: ``scale/c``, ``delta/c``, ``clamped/c`` (0.0/1.0), ``base/c``,
        ``applied/c``, ``proposed/c``; method state as ``<method>/<key>/c`` for
        per-component entries and ``<method>/<key>`` for scalars.
        """
        out: dict[str, float] = {
            "step": float(self.step),
            "epoch": float(self.epoch),
            "skipped": float(bool(self.skipped)),
            "skipped_steps": float(int(self.skipped_steps)),
        }
        per_component = (
            ("scale", self.scales),
            ("delta", self.deltas),
            ("clamped", self.clamped),
            ("base", self.base),
            ("applied", self.applied),
            ("proposed", self.proposed),
        )
        for prefix, t in per_component:
            for name, v in zip(self.components, t.tolist(), strict=True):
                out[f"{prefix}/{name}"] = float(v)
        for key, t in self.method_state.items():
            if t.dim() == 0:
                out[f"{self.method}/{key}"] = float(t)
            else:
                for name, v in zip(self.components, t.tolist(), strict=True):
                    out[f"{self.method}/{key}/{name}"] = float(v)
        return out


# --------------------------------------------------------------------------------------
# Controller
# --------------------------------------------------------------------------------------


def _validate_components(components: Sequence[str]) -> tuple[str, ...]:
    if isinstance(components, str) or not isinstance(components, Sequence):
        raise TypeError(f"components must be a sequence of strings, got {components!r}")
    comps = tuple(components)
    if not comps:
        raise ValueError(f"components must not be empty, got {components!r}")
    bad = [c for c in comps if not isinstance(c, str) or not c]
    if bad:
        raise ValueError(f"component names must be non-empty strings, got {bad!r}")
    dupes = sorted({c for c in comps if comps.count(c) > 1})
    if dupes:
        raise ValueError(f"duplicate component names {dupes!r} in {list(comps)!r}")
    return comps


def _check_names(given: Mapping[str, Any], components: tuple[str, ...], what: str) -> None:
    expected = set(components)
    keys = set(given.keys())
    if keys != expected:
        missing = sorted(expected - keys, key=str)
        extra = sorted(keys - expected, key=str)
        raise ValueError(
            f"{what} names must match the components {list(components)!r}: "
            f"missing {missing!r}, unexpected {extra!r}"
        )


def _validate_base_weights(
    base_weights: Mapping[str, float] | None, components: tuple[str, ...]
) -> dict[str, float]:
    if base_weights is None:
        return dict.fromkeys(components, 1.0)
    if not isinstance(base_weights, Mapping):
        raise TypeError(f"base_weights must be a mapping name -> float, got {base_weights!r}")
    _check_names(base_weights, components, "base_weights")
    out: dict[str, float] = {}
    for c in components:
        v = base_weights[c]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"base weight for {c!r} must be a finite number >= 0, got {v!r}")
        out[c] = float(v)
    return out


class AdaptiveLossWeighting:
    """Adaptive loss weighting controller.

    Called once per training step with the raw, unweighted component losses::

        total, weights, diag = ctrl({"fk_pos": l1, "contact": l2})
        total.backward()
        ...
        ctrl.end_epoch()  # at every epoch boundary

    At every step the method's relative scales ``s_c`` (mean 1, computed from the state
    *before* this step's losses are observed) become a clamped delta on top of the base
    weights: ``Δ_c = clamp(s_c - 1, -r, r)``, ``w_c = base_c · (1 + Δ_c)``. The step's
    losses are then fed into the method state unless any of them is NaN/inf, in which
    case the step is skipped (state unchanged, ``skipped_steps`` incremented). In dry-run
    the base weights are returned and the proposed weights are reported in diagnostics.

    All internal maths is float64 on the device of the loss tensors (CPU for floats), so
    float32 tensors (live) and the same values as Python floats (replay) give bit-identical
    weights on the same device. The per-step path never synchronises with the host except
    on steps where a log line is emitted.

    Args:
        components: component names; their order defines tensor indexing in diagnostics.
        base_weights: name -> weight (finite, >= 0); ``None`` means all 1.0.
        method: registered method name (see :func:`available_methods`).
        adjustment_range: ``r >= 0``, the largest relative change of a weight
            (``0`` returns the base weights exactly).
        dry_run: return the base weights, only report the proposed ones.
        log_every: emit an INFO log line every ``log_every`` steps (``0`` disables).
        logger: logger to use; default ``logging.getLogger("adaptive.weighting")``.
        **method_params: hyperparameters of the method (e.g. ``temperature`` for DWA).
    """

    def __init__(
        self,
        components: Sequence[str],
        base_weights: Mapping[str, float] | None = None,
        *,
        method: str = "dwa",
        adjustment_range: float = 0.3,
        dry_run: bool = False,
        log_every: int = 100,
        logger: logging.Logger | None = None,
        **method_params: Any,
    ) -> None:
        self._components = _validate_components(components)
        self._component_set = frozenset(self._components)
        base = _validate_base_weights(base_weights, self._components)
        method_cls = _get_method_class(method)
        if (
            isinstance(adjustment_range, bool)
            or not isinstance(adjustment_range, int | float)
            or not math.isfinite(adjustment_range)
            or adjustment_range < 0
        ):
            raise ValueError(
                f"adjustment_range must be a finite number >= 0, got {adjustment_range!r}"
            )
        if not isinstance(dry_run, bool):
            raise TypeError(f"dry_run must be a bool, got {dry_run!r}")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 0:
            raise ValueError(
                f"log_every must be an int >= 0 (0 disables logging), got {log_every!r}"
            )
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger or None, got {logger!r}")
        valid = method_cls.param_names()
        unknown = sorted(set(method_params) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown!r} for method {method!r}; "
                f"valid parameters: {list(valid)!r}"
            )

        self._method_name = method
        self._method = method_cls(len(self._components), **method_params)
        self._range = float(adjustment_range)
        self._dry_run = dry_run
        self._log_every = log_every
        self._custom_logger = logger is not None
        self._logger = logger if logger is not None else logging.getLogger(_DEFAULT_LOGGER_NAME)

        self._device = torch.device("cpu")
        self._base = torch.tensor([base[c] for c in self._components], dtype=_DTYPE)
        self._skipped_steps = torch.zeros((), dtype=torch.int64)
        self._step = 0
        self._epoch = 0

    # ---------------------------------------------------------------- properties
    @property
    def components(self) -> tuple[str, ...]:
        return self._components

    @property
    def method(self) -> str:
        return self._method_name

    @property
    def method_impl(self) -> WeightingMethod:
        """The method instance (for inspection)."""
        return self._method

    @property
    def adjustment_range(self) -> float:
        return self._range

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    @dry_run.setter
    def dry_run(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"dry_run must be a bool, got {value!r}")
        self._dry_run = value

    @property
    def step(self) -> int:
        """Number of steps seen so far (== index of the next step)."""
        return self._step

    @property
    def epoch(self) -> int:
        """Number of :meth:`end_epoch` calls so far (== index of the current epoch)."""
        return self._epoch

    @property
    def base_weights(self) -> dict[str, float]:
        return dict(zip(self._components, self._base.tolist(), strict=True))

    @property
    def skipped_steps(self) -> int:
        """Number of skipped steps (synchronises)."""
        return int(self._skipped_steps)

    def config(self) -> dict[str, Any]:
        """Constructor configuration as plain values (what :meth:`__repr__` reproduces)."""
        return {
            "components": list(self._components),
            "base_weights": self.base_weights,
            "method": self._method_name,
            "adjustment_range": self._range,
            "dry_run": self._dry_run,
            "log_every": self._log_every,
            "method_params": dict(self._method.params()),
        }

    def __repr__(self) -> str:
        parts = [
            f"components={list(self._components)!r}",
            f"base_weights={self.base_weights!r}",
            f"method={self._method_name!r}",
            f"adjustment_range={self._range!r}",
            f"dry_run={self._dry_run!r}",
            f"log_every={self._log_every!r}",
        ]
        if self._custom_logger:
            parts.append(f"logger=logging.getLogger({self._logger.name!r})")
        parts += [f"{k}={v!r}" for k, v in self._method.params().items()]
        return f"{type(self).__name__}({', '.join(parts)})"

    # ---------------------------------------------------------------- control
    def set_base_weights(self, base_weights: Mapping[str, float]) -> None:
        """Replace the base weights (e.g. at a stage change). Same names as components."""
        if base_weights is None:
            raise TypeError("set_base_weights expects a mapping name -> float, got None")
        base = _validate_base_weights(base_weights, self._components)
        self._base = torch.tensor([base[c] for c in self._components], dtype=_DTYPE).to(
            self._device
        )

    def end_epoch(self) -> None:
        """Signal an epoch boundary (DWA updates its scales here)."""
        self._method.end_epoch()
        self._epoch += 1

    # ---------------------------------------------------------------- per step
    def _to(self, device: torch.device) -> None:
        self._method.to(device)
        self._base = self._base.to(device)
        self._skipped_steps = self._skipped_steps.to(device)
        self._device = device

    def _stack_losses(self, losses: Mapping[str, Tensor | float]) -> Tensor:
        if not isinstance(losses, Mapping):
            raise TypeError(f"losses must be a mapping name -> loss, got {type(losses).__name__}")
        if losses.keys() != self._component_set:
            keys = set(losses.keys())
            missing = [c for c in self._components if c not in keys]
            extra = sorted(str(k) for k in keys - self._component_set)
            if missing:
                raise KeyError(
                    f"missing loss component(s) {missing!r}"
                    + (f" and unexpected {extra!r}" if extra else "")
                    + f"; expected exactly {list(self._components)!r}"
                )
            raise KeyError(
                f"unexpected loss component(s) {extra!r}; "
                f"expected exactly {list(self._components)!r}"
            )
        values = [losses[c] for c in self._components]
        device: torch.device | None = None
        for c, v in zip(self._components, values, strict=True):
            if isinstance(v, Tensor):
                if v.numel() != 1:
                    raise ValueError(
                        f"loss {c!r} must be a scalar tensor, got shape {tuple(v.shape)}"
                    )
                if device is None:
                    device = v.device
                elif v.device != device:
                    raise ValueError(
                        f"all loss tensors must be on one device; {c!r} is on {v.device}, "
                        f"expected {device}"
                    )
            elif isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"loss {c!r} must be a Tensor or a float, got {v!r}")
        if device is None:  # all Python floats (e.g. replay from a trace)
            return torch.tensor([float(v) for v in values], dtype=_DTYPE)
        tensors = [
            v.reshape(())
            if isinstance(v, Tensor)
            else torch.tensor(float(v), dtype=_DTYPE, device=device)
            for v in values
        ]
        dtype = tensors[0].dtype
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        if not dtype.is_floating_point:
            dtype = _DTYPE
        return torch.stack([t.to(dtype) for t in tensors])

    def __call__(
        self, losses: Mapping[str, Tensor | float]
    ) -> tuple[Tensor, dict[str, Tensor], WeightingDiagnostics]:
        """One training step.

        Args:
            losses: raw, unweighted loss of every component (scalar tensors or floats).

        Returns:
            ``(total_loss, final_weights, diagnostics)``: ``total_loss = Σ_c w_c · L_c``
            (0-dim tensor in the losses' dtype; gradients flow through the losses only),
            ``final_weights`` maps component -> 0-dim float64 tensor (no grad).
        """
        stacked = self._stack_losses(losses)  # (K,) in the losses' dtype, keeps grad
        if stacked.device != self._device:
            self._to(stacked.device)
        raw = stacked.detach().to(_DTYPE)  # exact for float16/bfloat16/float32

        # Weights from the state before this step's losses are observed.
        method = self._method
        # Guard against a misbehaving method: non-finite scales count as neutral (1).
        scales = torch.nan_to_num(method.scales(), nan=1.0, posinf=1.0, neginf=1.0)
        excess = scales - 1.0
        deltas = excess.clamp(-self._range, self._range)
        clamped = excess.abs() > self._range
        proposed = self._base * (1.0 + deltas)
        applied = self._base if self._dry_run else proposed
        method_state = method.diagnostics(raw)

        total = (stacked * applied.to(stacked.dtype)).sum()

        # Observe this step's losses (whole step skipped if any is NaN/inf).
        # x * 0 is 0 for finite x and NaN for NaN/±inf: a 3-op isfinite(raw).all().
        finite = raw.mul(0.0).eq(0.0).all()
        skipped = ~finite
        method.observe(raw, finite)
        self._skipped_steps = self._skipped_steps + skipped  # int64 + bool -> int64

        step = self._step
        self._step += 1
        diag = WeightingDiagnostics(
            step=step,
            epoch=self._epoch,
            method=self._method_name,
            dry_run=self._dry_run,
            components=self._components,
            scales=scales,
            deltas=deltas,
            clamped=clamped,
            base=self._base,
            applied=applied,
            proposed=proposed,
            skipped=skipped,
            skipped_steps=self._skipped_steps,
            method_state=method_state,
        )
        if (
            self._log_every
            and step % self._log_every == 0
            and self._logger.isEnabledFor(logging.INFO)
        ):
            self._log(diag)
        weights = dict(zip(self._components, applied.unbind(0), strict=True))
        return total, weights, diag

    def _log(self, diag: WeightingDiagnostics) -> None:
        proposed = diag.proposed.tolist()
        deltas = diag.deltas.tolist()
        clamped = [c for c, f in zip(self._components, diag.clamped.tolist(), strict=True) if f]
        self._logger.info(
            "adaptive weighting step=%d epoch=%d method=%s dry_run=%s proposed={%s} "
            "deltas={%s} clamped=%s skipped_steps=%d",
            diag.step,
            diag.epoch,
            self._method_name,
            self._dry_run,
            ", ".join(f"{c}: {w:.6g}" for c, w in zip(self._components, proposed, strict=True)),
            ", ".join(f"{c}: {d:+.4f}" for c, d in zip(self._components, deltas, strict=True)),
            clamped,
            int(diag.skipped_steps),
        )

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state (strict JSON: no NaN/inf literals)."""
        return {
            "version": _STATE_VERSION,
            "config": {
                "components": list(self._components),
                "method": self._method_name,
                "adjustment_range": self._range,
                "method_params": dict(self._method.params()),
            },
            "base_weights": {c: encode_float(w) for c, w in self.base_weights.items()},
            "dry_run": self._dry_run,
            "step": self._step,
            "epoch": self._epoch,
            "skipped_steps": int(self._skipped_steps),
            "method_state": self._method.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the config must match this instance.

        Restores the base weights (they may have been changed by :meth:`set_base_weights`),
        step/epoch counters, skipped-step counter and the method state. ``dry_run`` is
        *not* restored (switching a dry-run controller live is a supported workflow).
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {type(state).__name__}")
        version = state.get("version")
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported state version {version!r}, expected {_STATE_VERSION}")
        saved = state.get("config")
        if not isinstance(saved, Mapping):
            raise ValueError(f"state has no valid 'config' entry, got {saved!r}")
        current = self.state_dict()["config"]
        mismatches = [
            f"{key}: saved {saved.get(key)!r} != current {current[key]!r}"
            for key in current
            if saved.get(key) != current[key]
        ]
        if mismatches:
            raise ValueError(
                "cannot load state: configuration mismatch (" + "; ".join(mismatches) + ")"
            )
        base_saved = state["base_weights"]
        base = _validate_base_weights(
            {c: decode_float(v) for c, v in base_saved.items()}, self._components
        )
        for key in ("step", "epoch", "skipped_steps"):
            v = state.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"state entry {key!r} must be an int >= 0, got {v!r}")
        self._method.load_state_dict(state["method_state"])
        self._base = torch.tensor([base[c] for c in self._components], dtype=_DTYPE)
        self._skipped_steps = torch.tensor(state["skipped_steps"], dtype=torch.int64)
        self._step = state["step"]
        self._epoch = state["epoch"]
        self._device = torch.device("cpu")
        self._method.device = torch.device("cpu")
