"""Adaptive loss weighting controller, method base class and method registry.

The controller is a small deterministic state machine: raw (unweighted) per-component
losses go in, weights and diagnostics come out. It never touches the trainer, the model
or the autograd graph of the losses (other than multiplying them by constant weights to
form the total loss), and its whole state is exposed as plain JSON-serialisable values.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from adaptive._checks import JSONFloat, decode_float, encode_float
from adaptive._defaults import LOSS_ADJUSTMENT_RANGE

__all__ = [
    "DEFAULT_ADJUSTMENT_RANGE",
    "EXTRAS",
    "AdaptiveLossWeighting",
    "BlockOutput",
    "Extra",
    "LazyState",
    "MethodInputs",
    "StateField",
    "TensorStateMethod",
    "WeightingDiagnostics",
    "WeightingMethod",
    "available_methods",
    "method_class",
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


def encode_tensor(t: Tensor) -> list[JSONFloat]:
    """float64 tensor (any device, 1-D) -> list of JSON floats. Synchronises the host."""
    return [encode_float(v) for v in t.detach().to("cpu", _DTYPE).reshape(-1).tolist()]


def decode_tensor(values: Any, *, size: int, name: str) -> Tensor:
    """List of JSON floats -> 1-D float64 CPU tensor of length ``size``."""
    if not isinstance(values, list) or len(values) != size:
        raise ValueError(f"state entry {name!r} must be a list of {size} floats, got {values!r}")
    return torch.tensor([decode_float(v) for v in values], dtype=_DTYPE)


# --------------------------------------------------------------------------------------
# Method inputs: the losses plus optional extras a method declares in `requires`
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extra:
    """An optional per-step input beyond the losses, which a method may ask for.

    ``after_step`` extras exist only once the optimiser has stepped (live, they reach the
    controller through :meth:`AdaptiveLossWeighting.after_step`); the others are known when
    the step's weights are needed. A trace stores extra ``name`` as columns ``name/<c>``.
    """

    name: str
    after_step: bool
    description: str


#: The extras a method may declare (``WeightingMethod.requires``), by name. Both are per
#: component, of the same losses the method observes (``adaptive.loss_input``).
EXTRAS: Mapping[str, Extra] = MappingProxyType(
    {
        "grad_norm": Extra(
            "grad_norm",
            False,
            "‖∇_W L_c‖: norm of the gradient of each component's raw loss on the shared "
            "parameters W (the reference trainer: the model's last layer), before the step",
        ),
        "loss_after": Extra(
            "loss_after",
            True,
            "each component's raw loss re-evaluated on the same batch after the optimiser step",
        ),
    }
)


@dataclass(frozen=True)
class MethodInputs:
    """What a method observes over ``T`` consecutive steps (one documented record).

    ``losses``: raw float64 losses ``(T, C)``; ``finite``: ``(T,)`` bool, True where every
    loss of the step is finite; ``extras``: name -> ``(T, C)`` float64 for each extra the
    method requires (:data:`EXTRAS`). An extra may be NaN on a step: the method then leaves
    the part of its state that the extra feeds unchanged (extras never skip a step).
    A single step's record has shapes ``(C,)``, ``()`` and ``(C,)`` (:meth:`row`).
    """

    losses: Tensor
    finite: Tensor
    extras: Mapping[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.losses.size(0)

    def row(self, t: int) -> MethodInputs:
        """Step ``t`` of a block as a one-step record."""
        return MethodInputs(
            self.losses[t], self.finite[t], {k: v[t] for k, v in self.extras.items()}
        )


def last_rows(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Forward-fill indices for block maths over ``T`` rows: for ``mask`` ``(T,)`` or
    ``(T, C)`` (rows that update the state), ``(last, before)`` where ``last[t]`` is 1 + the
    last masked row ``<= t`` and ``before[t]`` the same for rows ``< t``; 0 means none, i.e.
    the state before the block. Index a table ``cat([state, per-row values])`` with them."""
    rows = torch.arange(1, mask.size(0) + 1, device=mask.device)
    if mask.dim() > 1:
        rows = rows.view(-1, *([1] * (mask.dim() - 1)))
    last = torch.where(mask, rows, 0).cummax(0).values
    return last, torch.cat([torch.zeros_like(last[:1]), last[:-1]])


# --------------------------------------------------------------------------------------
# Method base class and registry
# --------------------------------------------------------------------------------------


class WeightingMethod(ABC):
    """Base class of a weighting method (one private module per method).

    A method turns its internal state into relative scales (float64, mean 1 over the
    ``C`` components) and updates that state from the raw losses. Its core is
    :meth:`scales_and_observe`, which advances ``T`` consecutive steps of one epoch at
    once; the controller uses it for a single live step (``T = 1``) and for a whole
    replayed epoch alike, so there is one implementation of the maths.

    Contract (everything the controller relies on):

    * ``__init__(self, num_components, *, <hyperparameters with defaults>)``; all
      hyperparameters keyword-only, validated with errors repeating the bad value.
    * :meth:`scales_and_observe` ``(losses (T, C), finite (T,)) -> (scales (T, K, C),
      method_state)``: the scales in force at each step are computed from the state
      *before* that step's losses are observed; the state is then advanced over the
      block, steps whose ``finite`` is False leaving it unchanged. Advancing a block
      must give, bit for bit, what ``T`` successive one-step blocks give. No host
      synchronisation (no ``.item()``, ``float()``, Python ``if`` on tensor values):
      masks and ``torch.where``. Returned tensors must never be modified in place
      afterwards (they become diagnostics). The default implementation loops over the
      per-step methods below, so a method may implement those instead:
    * :meth:`scales` (state only, finite, mean 1) and :meth:`observe` (one step's
      losses ``(C,)`` and a 0-dim bool ``finite``; no-op where False; functional
      updates), optionally :meth:`diagnostics`.
    * :meth:`end_epoch` is called by the controller at every epoch boundary.
    * :meth:`state_dict` / :meth:`load_state_dict` use plain JSON values only.
    * :meth:`to` moves all state (and per-configuration) tensors to a device.

    Batched configurations (``supports_batching = True``, used by
    :meth:`AdaptiveLossWeighting.batched` for sweeps): every tensor of
    :meth:`state_tensors` and :meth:`config_tensors` has a leading configuration
    dimension ``K`` (``1`` for a single configuration), hyperparameters are stored as
    attributes named like the parameters (values of configuration 0) and as ``(K, 1)``
    tensors in :meth:`config_tensors`, and the maths broadcasts over ``K``. A
    single-configuration method is the ``K = 1`` case of the same code. The default
    :meth:`scales_and_observe` loop handles ``K > 1`` too: :meth:`scales` then returns
    ``(K, C)`` and :meth:`diagnostics` ``(K, C)`` or ``(K,)`` tensors.

    Test settings (class attributes read by the contract suite in
    ``tests/test_weighting.py``, so a new method needs no test-file edit):

    * ``example_params``: a typical non-default configuration (replay tests).
    * ``aggressive_params``: parameters that make the method adapt strongly within a few
      dozen steps, so that clamping and state changes are exercised.
    * ``invalid_params``: ``(name, bad value)`` pairs whose construction must fail with
      a ``ValueError`` repeating the value.
    * ``sweep_configs``: configurations run side by side in the batched/sweep tests.

    ``order_equivariant`` (default True) says that permuting the components permutes
    the scales; a method whose scales are tied to column positions (RLW's random draws)
    sets it False.

    Extras (``requires``, names from :data:`EXTRAS`): a method that needs more than the
    losses lists the extras here; the controller then refuses steps without them, the
    trainer computes them only for such a method, and replay refuses a trace that lacks
    their columns. The controller calls :meth:`advance` with a :class:`MethodInputs`
    record; its default hands loss-only methods to :meth:`scales_and_observe` and runs the
    per-step loop for the others, which implement :meth:`observe_inputs` (a step's losses
    and before-step extras) and, for after-step extras, :meth:`observe_after`. Live, the
    after-step part of a step arrives later (:meth:`AdaptiveLossWeighting.after_step`),
    through the same :meth:`observe_after`, so replay and live run the same code.
    """

    name: ClassVar[str] = ""
    supports_batching: ClassVar[bool] = False
    example_params: ClassVar[Mapping[str, Any]] = {}
    aggressive_params: ClassVar[Mapping[str, Any]] = {}
    invalid_params: ClassVar[Sequence[tuple[str, Any]]] = ()
    sweep_configs: ClassVar[Sequence[Mapping[str, Any]]] = ({}, {"adjustment_range": 0.1})
    order_equivariant: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ()
    #: How figures name the method (empty: the docstring's first line up to ':' or '.').
    title: ClassVar[str] = ""

    def __init__(self, num_components: int) -> None:
        if isinstance(num_components, bool) or not isinstance(num_components, int):
            raise TypeError(f"num_components must be an int, got {num_components!r}")
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components!r}")
        self.num_components = num_components
        self.num_configs = 1
        self.device = torch.device("cpu")
        self._member_params: list[dict[str, Any]] | None = None

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """Names of the keyword-only hyperparameters accepted by ``__init__``."""
        sig = inspect.signature(cls.__init__)
        return tuple(
            p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
        )

    @classmethod
    def after_extras(cls) -> tuple[str, ...]:
        """The required extras known only after the optimiser step (live: ``after_step``)."""
        return tuple(e for e in cls.requires if EXTRAS[e].after_step)

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Hyperparameters (all of :meth:`param_names`) as plain values (configuration 0)."""

    def config_params(self) -> list[dict[str, Any]]:
        """Hyperparameters of every configuration (``K`` dicts)."""
        if self._member_params is not None:
            return [dict(p) for p in self._member_params]
        return [self.params()]

    @abstractmethod
    def scales(self) -> Tensor:
        """Relative scales ``(C,)`` float64, mean 1, from the current state."""

    @abstractmethod
    def observe(self, losses: Tensor, finite: Tensor) -> None:
        """Feed one step's raw float64 losses ``(C,)``; no-op where ``finite`` is False."""

    def scales_and_observe(
        self, losses: Tensor, finite: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Advance ``T`` consecutive steps of one epoch (the method's core).

        Args:
            losses: raw float64 losses ``(T, C)``.
            finite: ``(T,)`` bool, False for steps to skip (some loss NaN/inf).

        Returns:
            ``(scales, method_state)``: ``scales`` ``(T, K, C)``, row ``t`` computed from
            the state before step ``t`` is observed; ``method_state`` maps a key to a
            ``(T, K, C)`` or ``(T, K)`` tensor (the state behind row ``t``). Either may be
            a broadcast view (stride 0 along ``T``) where constant over the block.

        The default loops over :meth:`scales`, :meth:`diagnostics` and :meth:`observe`
        (any ``K``); DWA and uncertainty override it with block maths.
        """
        return self._per_step(MethodInputs(losses, finite))

    def advance(self, inputs: MethodInputs) -> tuple[Tensor, Mapping[str, Tensor]]:
        """What the controller calls: advance the ``T`` steps of ``inputs``.

        Same outputs and rules as :meth:`scales_and_observe`, which it calls for methods
        without extras; for a method with ``requires`` it runs the per-step loop
        (:meth:`scales`, :meth:`diagnostics`, :meth:`observe_inputs`, then
        :meth:`observe_after` where the record holds after-step extras).
        """
        if not self.requires:
            return self.scales_and_observe(inputs.losses, inputs.finite)
        return self._per_step(inputs)

    def scales_at(self, inputs: MethodInputs) -> Tensor:
        """The scales in force at a step (default :meth:`scales`, from the state alone). A
        method whose weights also depend on the step's own losses (FAMO's ``1/L``)
        overrides it; the state is still advanced only after."""
        return self.scales()

    def observe_inputs(self, inputs: MethodInputs) -> None:
        """Feed one step's record (losses and before-step extras); default
        :meth:`observe` of the losses. No-op where ``inputs.finite`` is False."""
        self.observe(inputs.losses, inputs.finite)

    def observe_after(self, extras: Mapping[str, Tensor]) -> None:  # noqa: B027 - optional
        """Feed the after-step extras ``(C,)`` of the step observed last (default: none)."""

    def _per_step(self, inputs: MethodInputs) -> tuple[Tensor, dict[str, Tensor]]:
        # K = 1: per-step tensors lack the configuration dimension; add it.
        one = self.num_configs == 1
        after = [k for k in self.after_extras() if k in inputs.extras]
        scales: list[Tensor] = []
        states: list[dict[str, Tensor]] = []
        for t in range(len(inputs)):
            row = inputs.row(t)
            s = self.scales_at(row)
            scales.append(s.unsqueeze(0) if one else s)
            diag = self.diagnostics(row.losses)
            states.append({k: v.unsqueeze(0) if one else v for k, v in diag.items()})
            self.observe_inputs(row)
            if after:
                self.observe_after({k: row.extras[k] for k in after})
        state = {k: torch.stack([s[k] for s in states]) for k in (states[0] if states else {})}
        return torch.stack(scales), state

    def end_epoch(self) -> None:  # noqa: B027 - optional hook
        """Epoch boundary hook (default: nothing)."""

    def diagnostics(self, losses: Tensor) -> dict[str, Tensor]:
        """Method state behind the current scales, as tensors (``(C,)`` or 0-dim)."""
        return {}

    @abstractmethod
    def state_tensors(self) -> dict[str, Tensor]:
        """All state tensors by attribute name (used by :meth:`to`)."""

    def config_tensors(self) -> dict[str, Tensor]:
        """Per-configuration hyperparameter tensors ``(K, 1)`` by attribute name."""
        return {}

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore state produced by :meth:`state_dict` (tensors land on CPU)."""

    def to(self, device: torch.device) -> None:
        for attr, t in {**self.state_tensors(), **self.config_tensors()}.items():
            setattr(self, attr, t.to(device))
        self.device = device

    # ------------------------------------------------------------ batched configs
    @classmethod
    def batched(cls, num_components: int, configs: Sequence[Mapping[str, Any]]) -> WeightingMethod:
        """One instance running ``K = len(configs)`` configurations side by side.

        Every configuration is validated by constructing it; state and hyperparameter
        tensors are then stacked along their leading (configuration) dimension.
        """
        if isinstance(configs, Mapping | str) or not isinstance(configs, Sequence):
            raise TypeError(f"configs must be a sequence of mappings, got {configs!r}")
        if not configs:
            raise ValueError("configs must not be empty")
        members = [cls(num_components, **dict(c)) for c in configs]
        if len(members) == 1:
            return members[0]
        if not cls.supports_batching:
            raise TypeError(f"method {cls.name!r} does not support batched configurations")
        inst = members[0]
        for getter in (cls.state_tensors, cls.config_tensors):
            for attr in getter(inst):
                setattr(inst, attr, torch.cat([getter(m)[attr] for m in members]))
        inst.num_configs = len(members)
        inst._member_params = [m.params() for m in members]
        return inst

    def select(self, k: int) -> WeightingMethod:
        """Configuration ``k`` as a single-configuration method with a copy of its state."""
        if not -self.num_configs <= k < self.num_configs:
            raise IndexError(f"configuration {k} out of range for {self.num_configs}")
        k %= self.num_configs
        new = copy.copy(self)
        for attr, t in {**self.state_tensors(), **self.config_tensors()}.items():
            setattr(new, attr, t[k : k + 1].clone())
        for name, value in self.config_params()[k].items():
            setattr(new, name, value)
        new.num_configs = 1
        new._member_params = None
        return new

    def __repr__(self) -> str:
        if self.num_configs > 1:
            return (
                f"{type(self).__name__}.batched({self.num_components!r}, {self.config_params()!r})"
            )
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({self.num_components!r}, {args})"


_FIELD_KINDS = ("floats", "float", "counts", "int")


@dataclass(frozen=True)
class StateField:
    """One entry of a :class:`TensorStateMethod`'s state: where it lives and how it is
    written in the JSON state dict (declared once; everything else derives from it).

    Args:
        attr: the attribute holding it.
        key: its JSON key (default: ``attr`` without leading underscores).
        kind: ``"floats"`` (default): a ``(K, n)`` float64 tensor, written as a list of
            ``n`` floats; ``"float"``: a ``(K, 1)`` float64 tensor, written as one float;
            ``"counts"``: a ``(K, n)`` float64 tensor of whole numbers >= 0, written as a
            list of ``n`` ints; ``"int"``: a host-side Python int >= 0 that does not
            depend on the configuration (not a tensor: no device, no batching).
        transform, inverse: for a tensor entry, an exact element-wise map from the
            attribute to the written value and back (default: written as stored).
    """

    attr: str
    key: str = ""
    kind: str = "floats"
    transform: Callable[[Tensor], Tensor] | None = None
    inverse: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if not self.attr.isidentifier():
            raise ValueError(f"state field attr must be an identifier, got {self.attr!r}")
        if not self.key:
            object.__setattr__(self, "key", self.attr.lstrip("_"))
        if self.kind not in _FIELD_KINDS:
            raise ValueError(f"state field kind must be one of {_FIELD_KINDS!r}, got {self.kind!r}")
        if (self.transform is None) != (self.inverse is None):
            raise ValueError(f"state field {self.attr!r}: give both transform and inverse")
        if self.kind == "int" and self.transform is not None:
            raise ValueError(f"state field {self.attr!r}: an 'int' entry has no transform")


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"state entry {name!r} must be an int >= 0, got {value!r}")
    return value


class TensorStateMethod(WeightingMethod):
    r"""A :class:`WeightingMethod` whose state is declared once.

    ``state_fields`` lists the state entries (attribute names, or :class:`StateField`\ s
    where the JSON key or encoding differs from the plain ``(K, n)`` float list) and
    ``config_fields`` the ``(K, 1)`` hyperparameter tensors; :meth:`state_tensors`,
    :meth:`config_tensors`, :meth:`state_dict`, :meth:`load_state_dict` (and so
    :meth:`to`, :meth:`select`, :meth:`batched`) derive from them. Subclasses write
    :meth:`params`, :meth:`scales` and :meth:`observe` (per step, broadcasting over K),
    or override :meth:`scales_and_observe` with block maths.
    """

    state_fields: ClassVar[tuple[str | StateField, ...]] = ()
    config_fields: ClassVar[tuple[str, ...]] = ()
    supports_batching = True
    _declared: ClassVar[tuple[StateField, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._declared = tuple(
            f if isinstance(f, StateField) else StateField(f) for f in cls.state_fields
        )
        keys = [f.key for f in cls._declared]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{cls.__name__}: duplicate state keys in {keys!r}")

    def _row(self, t: Tensor) -> Tensor:
        """Drop the configuration dimension of a single configuration."""
        return t[0] if self.num_configs == 1 else t

    def state_tensors(self) -> dict[str, Tensor]:
        return {f.attr: getattr(self, f.attr) for f in self._declared if f.kind != "int"}

    def config_tensors(self) -> dict[str, Tensor]:
        return {f: getattr(self, f) for f in self.config_fields}

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self._declared:
            value = getattr(self, f.attr)
            if f.kind == "int":
                out[f.key] = value
                continue
            if f.transform is not None:
                value = f.transform(value)
            if f.kind == "counts":
                out[f.key] = [int(v) for v in value.reshape(-1).tolist()]
            else:
                values = encode_tensor(value)
                out[f.key] = values[0] if f.kind == "float" else values
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; every entry is checked before any is set."""
        if not isinstance(state, Mapping):
            raise ValueError(f"method state must be a mapping, got {state!r}")
        new: dict[str, Any] = {}
        for f in self._declared:
            if f.key not in state:
                raise ValueError(f"state has no entry {f.key!r}")
            value = state[f.key]
            if f.kind == "int":
                new[f.attr] = _check_count(value, f.key)
                continue
            size = getattr(self, f.attr).size(-1)
            if f.kind == "float":
                t = torch.tensor([decode_float(value, f.key)], dtype=_DTYPE)
            elif f.kind == "counts":
                if (
                    not isinstance(value, list)
                    or len(value) != size
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value)
                ):
                    raise ValueError(
                        f"state entry {f.key!r} must be a list of {size} ints >= 0, got {value!r}"
                    )
                t = torch.tensor([float(v) for v in value], dtype=_DTYPE)
            else:
                t = decode_tensor(value, size=size, name=f.key)
            if f.inverse is not None:
                t = f.inverse(t)
            new[f.attr] = t.reshape(1, size)
        for attr, v in new.items():
            setattr(self, attr, v)
        for name in self.config_fields:
            setattr(self, name, getattr(self, name).cpu())


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
        unknown = [e for e in cls.requires if e not in EXTRAS]
        if unknown:
            raise ValueError(
                f"{cls.__qualname__}.requires names unknown extra(s) {unknown!r}; "
                f"known extras: {list(EXTRAS)!r}"
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


def method_class(method: str) -> type[WeightingMethod]:
    """The class registered under `method` (its parameters, defaults and test settings);
    `ValueError` naming the available methods for an unknown name."""
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
    ``nonfinite_state`` counts the steps so far whose method state produced non-finite
    scales: the controller applied neutral scales there and warns at its next log line or
    state_dict (checkpoint).
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
    # int64, 0-dim: steps so far whose method state gave non-finite scales (replaced by 1)
    nonfinite_state: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.int64))

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
            "nonfinite_state": float(int(self.nonfinite_state)),
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


class LazyState(Mapping[str, Tensor]):
    """Read-only mapping whose tensors are computed on first access (then cached).

    Methods may return one as the per-step state of a block, so that callers that never
    read it (sweeps keep only the weights) do not pay for ``(T, K, C)`` diagnostics.
    """

    def __init__(self, thunks: Mapping[str, Callable[[], Tensor]]) -> None:
        self._thunks = dict(thunks)
        self._cache: dict[str, Tensor] = {}

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._cache:
            self._cache[key] = self._thunks[key]()
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._thunks)

    def __len__(self) -> int:
        return len(self._thunks)

    def map(self, fn: Callable[[Tensor], Tensor]) -> LazyState:
        """A lazy mapping of ``fn`` applied to each entry."""
        return LazyState({k: (lambda k=k: fn(self[k])) for k in self._thunks})


@dataclass(frozen=True)
class BlockOutput:
    """What the controller did over ``T`` consecutive steps (see ``step_block``).

    Tensors are float64 (``clamped``, ``skipped``: bool; ``skipped_steps``: int64) on the
    losses' device. Shapes: ``(T, C)`` for a single-configuration controller, ``(T, K, C)``
    for a batched one (:meth:`AdaptiveLossWeighting.batched`); ``skipped`` and
    ``skipped_steps`` are ``(T,)``; method state is ``(T, [K,] C)`` or ``(T, [K])``.
    Row ``t`` holds exactly what the ``t``-th of ``T`` successive ``__call__``\\ s would
    report. Tensors may be broadcast views (stride 0 along ``T`` where a value is constant
    over the block, e.g. DWA's scales) and may share memory: treat them as read-only.
    """

    start: int  # step index of row 0
    epoch: int
    method: str
    dry_run: bool
    components: tuple[str, ...]
    scales: Tensor
    deltas: Tensor
    clamped: Tensor
    base: Tensor
    applied: Tensor
    proposed: Tensor
    skipped: Tensor
    skipped_steps: Tensor
    nonfinite_state: Tensor  # (T,) int64, cumulative count (see WeightingDiagnostics)
    method_state: Mapping[str, Tensor] = field(default_factory=dict)  # may be a LazyState

    def __len__(self) -> int:
        return self.skipped.size(0)

    def diagnostics(self, i: int) -> WeightingDiagnostics:
        """Row ``i`` as the :class:`WeightingDiagnostics` of that step."""
        return WeightingDiagnostics(
            step=self.start + range(len(self))[i],
            epoch=self.epoch,
            method=self.method,
            dry_run=self.dry_run,
            components=self.components,
            scales=self.scales[i],
            deltas=self.deltas[i],
            clamped=self.clamped[i],
            base=self.base[i],
            applied=self.applied[i],
            proposed=self.proposed[i],
            skipped=self.skipped[i],
            skipped_steps=self.skipped_steps[i],
            method_state={k: v[i] for k, v in self.method_state.items()},
            nonfinite_state=self.nonfinite_state[i],
        )


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


def _validate_range(adjustment_range: Any) -> float:
    if (
        isinstance(adjustment_range, bool)
        or not isinstance(adjustment_range, int | float)
        or not math.isfinite(adjustment_range)
        or adjustment_range < 0
    ):
        raise ValueError(f"adjustment_range must be a finite number >= 0, got {adjustment_range!r}")
    return float(adjustment_range)


def _check_method_params(
    method: str, method_cls: type[WeightingMethod], params: Mapping[str, Any]
) -> None:
    valid = method_cls.param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown!r} for method {method!r}; "
            f"valid parameters: {list(valid)!r}"
        )


DEFAULT_ADJUSTMENT_RANGE = LOSS_ADJUSTMENT_RANGE


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

    :meth:`step_block` advances ``T`` consecutive steps of one epoch at once (replay);
    ``__call__`` is the ``T = 1`` case of the same core, so both give bit-identical
    results. :meth:`batched` runs ``K`` configurations side by side (sweeps); a
    single-configuration controller is the ``K = 1`` case of the same code.

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
        adjustment_range: float = DEFAULT_ADJUSTMENT_RANGE,
        dry_run: bool = False,
        log_every: int = 100,
        logger: logging.Logger | None = None,
        **method_params: Any,
    ) -> None:
        self._components = _validate_components(components)
        self._component_set = frozenset(self._components)
        base = _validate_base_weights(base_weights, self._components)
        method_cls = method_class(method)
        adjustment_range = _validate_range(adjustment_range)
        if not isinstance(dry_run, bool):
            raise TypeError(f"dry_run must be a bool, got {dry_run!r}")
        if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 0:
            raise ValueError(
                f"log_every must be an int >= 0 (0 disables logging), got {log_every!r}"
            )
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger or None, got {logger!r}")
        _check_method_params(method, method_cls, method_params)

        self._method_name = method
        self._method = method_cls(len(self._components), **method_params)
        self._dry_run = dry_run
        self._log_every = log_every
        self._custom_logger = logger is not None
        self._logger = logger if logger is not None else logging.getLogger(_DEFAULT_LOGGER_NAME)

        self._device = torch.device("cpu")
        self._base = torch.tensor([base[c] for c in self._components], dtype=_DTYPE)
        self._skipped_steps = torch.zeros((), dtype=torch.int64)
        self._nonfinite_state = torch.zeros((), dtype=torch.int64)
        self._nonfinite_reported = 0
        # finite-loss steps whose extras were not all finite (the method skipped its update)
        self._nonfinite_extras = torch.zeros((), dtype=torch.int64)
        self._nonfinite_extras_reported = 0
        self._last_finite = torch.ones(1, dtype=torch.bool)
        self._step = 0
        self._epoch = 0
        self._batched = False
        self._set_ranges([adjustment_range])
        self._requires = method_cls.requires
        self._after = method_cls.after_extras()
        self._pending = False  # a live step awaits its after_step() extras

    @classmethod
    def batched(
        cls,
        components: Sequence[str],
        base_weights: Mapping[str, float] | None = None,
        *,
        method: str = "dwa",
        configs: Sequence[Mapping[str, Any]],
        dry_run: bool = False,
    ) -> AdaptiveLossWeighting:
        """A controller running ``K = len(configs)`` configurations side by side.

        Each config maps ``adjustment_range`` (default :data:`DEFAULT_ADJUSTMENT_RANGE`)
        and method parameters (defaults as in the constructor) to values; base weights,
        components, dry-run and the losses are shared. Outputs gain a configuration
        dimension: ``(K, C)`` per step from ``__call__`` (``total`` is ``(K,)``),
        ``(T, K, C)`` from :meth:`step_block`.
        Configuration ``k`` gives, bit for bit, what a single-configuration controller
        built with ``configs[k]`` gives (:meth:`select` extracts it). Batched controllers
        do not log and have no state dict (use :meth:`select`).
        """
        if isinstance(configs, Mapping | str) or not isinstance(configs, Sequence):
            raise TypeError(f"configs must be a sequence of mappings, got {configs!r}")
        if not configs:
            raise ValueError("configs must not be empty")
        method_cls = method_class(method)
        ranges: list[float] = []
        method_configs: list[dict[str, Any]] = []
        for cfg in configs:
            if not isinstance(cfg, Mapping):
                raise TypeError(f"each config must be a mapping, got {cfg!r}")
            params = dict(cfg)
            ranges.append(_validate_range(params.pop("adjustment_range", DEFAULT_ADJUSTMENT_RANGE)))
            _check_method_params(method, method_cls, params)
            method_configs.append(params)
        self = cls(components, base_weights, method=method, dry_run=dry_run, log_every=0)
        self._method = method_cls.batched(len(self._components), method_configs)
        self._batched = True
        self._set_ranges(ranges)
        return self

    def _set_ranges(self, ranges: list[float]) -> None:
        self._ranges = tuple(ranges)
        # (K, 1) broadcasts over components ((1,) without a configuration dimension);
        # -r as its own tensor (exact negation).
        self._range_t = torch.tensor(ranges, dtype=_DTYPE, device=self._device)
        if self._batched:
            self._range_t = self._range_t.reshape(-1, 1)
        self._neg_range_t = -self._range_t

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
    def requires(self) -> tuple[str, ...]:
        """The extras (names in :data:`EXTRAS`) the method needs besides the losses."""
        return self._requires

    @property
    def needs_after_step(self) -> bool:
        """Whether each live step must be followed by :meth:`after_step`."""
        return bool(self._after)

    @property
    def is_batched(self) -> bool:
        """True for controllers built by :meth:`batched` (outputs carry a ``K`` dim)."""
        return self._batched

    @property
    def num_configs(self) -> int:
        return len(self._ranges)

    @property
    def adjustment_range(self) -> float:
        """``r`` (configuration 0 of a batched controller; see :meth:`configs`)."""
        return self._ranges[0]

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

    def configs(self) -> list[dict[str, Any]]:
        """Every configuration: ``adjustment_range`` and the method parameters."""
        return [
            {"adjustment_range": r, **p}
            for r, p in zip(self._ranges, self._method.config_params(), strict=True)
        ]

    def config(self) -> dict[str, Any]:
        """Constructor configuration as plain values (what :meth:`__repr__` reproduces)."""
        out = {
            "components": list(self._components),
            "base_weights": self.base_weights,
            "method": self._method_name,
            "adjustment_range": self._ranges[0],
            "dry_run": self._dry_run,
            "log_every": self._log_every,
            "method_params": dict(self._method.params()),
        }
        if self._batched:
            out["configs"] = self.configs()
        return out

    def __repr__(self) -> str:
        if self._batched:
            return (
                f"{type(self).__name__}.batched({list(self._components)!r}, "
                f"{self.base_weights!r}, method={self._method_name!r}, "
                f"configs={self.configs()!r}, dry_run={self._dry_run!r})"
            )
        parts = [
            f"components={list(self._components)!r}",
            f"base_weights={self.base_weights!r}",
            f"method={self._method_name!r}",
            f"adjustment_range={self._ranges[0]!r}",
            f"dry_run={self._dry_run!r}",
            f"log_every={self._log_every!r}",
        ]
        if self._custom_logger:
            parts.append(f"logger=logging.getLogger({self._logger.name!r})")
        parts += [f"{k}={v!r}" for k, v in self._method.params().items()]
        return f"{type(self).__name__}({', '.join(parts)})"

    def select(self, k: int) -> AdaptiveLossWeighting:
        """Configuration ``k`` of a batched controller as a single-configuration
        controller with a copy of its state (continues bit-for-bit like it)."""
        if not -self.num_configs <= k < self.num_configs:
            raise IndexError(f"configuration {k} out of range for {self.num_configs}")
        k %= self.num_configs
        out = AdaptiveLossWeighting(
            self._components,
            self.base_weights,
            method=self._method_name,
            dry_run=self._dry_run,
            log_every=0,
            **self.configs()[k],
        )
        out._method = self._method.select(k)
        out._device = self._device
        out._base = self._base.clone()
        out._skipped_steps = self._skipped_steps.clone()
        out._nonfinite_state = self._nonfinite_state.clone()
        out._nonfinite_extras = self._nonfinite_extras.clone()
        out._last_finite = self._last_finite.clone()
        out._set_ranges([self._ranges[k]])
        out._step, out._epoch = self._step, self._epoch
        out._pending = self._pending
        return out

    # ---------------------------------------------------------------- control
    def set_base_weights(self, base_weights: Mapping[str, float]) -> None:
        """Replace the base weights (e.g. at a stage change). Same names as components."""
        if base_weights is None:
            raise TypeError("set_base_weights expects a mapping name -> float, got None")
        base = _validate_base_weights(base_weights, self._components)
        self._base = torch.tensor([base[c] for c in self._components], dtype=_DTYPE).to(
            self._device
        )

    @property
    def nonfinite_state_steps(self) -> int:
        """Steps whose method state gave non-finite scales (synchronises)."""
        return int(self._nonfinite_state)

    def end_epoch(self) -> None:
        """Signal an epoch boundary (DWA updates its scales here)."""
        self._check_not_pending("end_epoch()")
        self._method.end_epoch()
        self._epoch += 1

    def _report_nonfinite(self) -> None:
        """WARNING when the method state gave non-finite scales since the last report.

        Called where the host is read anyway (log lines, :meth:`state_dict`, i.e. every
        checkpoint), so the per-step path stays free of host syncs.
        """
        bad_extras = int(self._nonfinite_extras)
        if bad_extras > self._nonfinite_extras_reported:
            self._logger.warning(
                "adaptive weighting (%s): %d step(s) so far (%d new) had finite losses but "
                "non-finite extras (%s); the method skipped its update there",
                self._method_name,
                bad_extras,
                bad_extras - self._nonfinite_extras_reported,
                ", ".join(self._requires),
            )
        self._nonfinite_extras_reported = bad_extras
        bad = int(self._nonfinite_state)
        if bad > self._nonfinite_reported:
            self._logger.warning(
                "adaptive weighting (%s): the method state gave non-finite scales on %d "
                "step(s) so far (%d new); neutral scales were applied there. Check the "
                "losses for huge values and the method's parameters.",
                self._method_name,
                bad,
                bad - self._nonfinite_reported,
            )
        self._nonfinite_reported = bad

    def restart(self) -> None:
        """Forget the method's history (e.g. at a curriculum stage change): its state
        starts afresh with the same parameters, so losses from before the restart are
        never compared with losses after it. Counters and base weights are kept."""
        self._check_not_pending("restart()")
        fresh = type(self._method).batched(len(self._components), self._method.config_params())
        fresh.to(self._device)
        self._method = fresh

    # ---------------------------------------------------------------- steps
    def _to(self, device: torch.device) -> None:
        self._method.to(device)
        self._base = self._base.to(device)
        self._skipped_steps = self._skipped_steps.to(device)
        self._nonfinite_state = self._nonfinite_state.to(device)
        self._nonfinite_extras = self._nonfinite_extras.to(device)
        self._last_finite = self._last_finite.to(device)
        self._range_t = self._range_t.to(device)
        self._neg_range_t = self._neg_range_t.to(device)
        self._device = device

    def _advance(self, raw: Tensor, extras: Mapping[str, Tensor]) -> BlockOutput:
        """The core shared by ``__call__`` and :meth:`step_block`: ``T`` consecutive steps
        of one epoch, ``raw`` ``(T, C)`` float64 on the controller's device, ``extras``
        name -> ``(T, C)`` float64."""
        n = raw.size(0)
        # x * 0 is ±0 for finite x and NaN for NaN/±inf, so the row sum is 0 iff every
        # loss of the step is finite (a sum of zeros cannot overflow).
        finite = raw.mul(0.0).sum(-1).eq(0.0)
        if extras:
            self._count_nonfinite_extras(finite, extras.values())
        inputs = MethodInputs(raw, finite, extras)
        scales, method_state = self._method.advance(inputs)  # (T, K, C)
        if not self._batched:  # K = 1: drop the configuration dimension
            scales = scales.select(1, 0)
            if isinstance(method_state, LazyState):
                method_state = method_state.map(lambda v: v.select(1, 0))
            else:
                method_state = {k: v.select(1, 0) for k, v in method_state.items()}
        # Scales constant over the block (DWA within an epoch): do the work once.
        const = n > 1 and scales.stride(0) == 0
        s = scales[0] if const else scales
        # Guard against a method whose state went non-finite: such scales count as neutral
        # (1), and the steps are counted (diagnostics, trace, a warning at the epoch end).
        fin = s.isfinite()
        ok = fin.all().expand(n) if const else fin.reshape(n, -1).all(-1)  # (T,)
        bad_steps = ok.logical_not().to(torch.int64).cumsum(0)
        nonfinite_state = bad_steps.add_(self._nonfinite_state)
        self._nonfinite_state = nonfinite_state[-1]
        s = torch.nan_to_num(s, nan=1.0, posinf=1.0, neginf=1.0)
        excess = s - 1.0
        deltas = excess.clamp(self._neg_range_t, self._range_t)
        clamped = deltas != excess  # |excess| > r exactly when the clamp moved it
        proposed = self._base * (1.0 + deltas)
        if const:
            shape = (n, *s.shape)
            s, deltas, clamped, proposed = (t.expand(shape) for t in (s, deltas, clamped, proposed))
        base = self._base.expand_as(proposed)
        applied = base if self._dry_run else proposed
        skipped = ~finite
        skipped_steps = skipped.cumsum(0).add_(self._skipped_steps)  # int64
        self._skipped_steps = skipped_steps[-1]
        start = self._step
        self._step += n
        out = BlockOutput(
            start=start,
            epoch=self._epoch,
            method=self._method_name,
            dry_run=self._dry_run,
            components=self._components,
            scales=s,
            deltas=deltas,
            clamped=clamped,
            base=base,
            applied=applied,
            proposed=proposed,
            skipped=skipped,
            skipped_steps=skipped_steps,
            nonfinite_state=nonfinite_state,
            method_state=method_state,
        )
        every = self._log_every
        if every and self._logger.isEnabledFor(logging.INFO):
            for i in range(-start % every, n, every):
                self._log(out.diagnostics(i))
        return out

    def step_block(
        self, losses: Tensor | Any, *, extras: Mapping[str, Tensor | Any] | None = None
    ) -> BlockOutput:
        """Advance ``T`` consecutive steps **of one epoch** at once.

        Args:
            losses: ``(T, C)`` raw losses, row ``t`` = step ``t``, columns in
                :attr:`components` order (tensor of any floating dtype, or array-like).
            extras: name -> ``(T, C)`` values for every extra in :attr:`requires`
                (after-step ones included: row ``t`` holds step ``t``'s).

        Returns:
            A :class:`BlockOutput` whose row ``t`` is, bit for bit, what the ``t``-th of
            ``T`` successive ``__call__``\\ s with the same losses would report; the state
            afterwards is the same too. No total loss is formed (no autograd). Call
            :meth:`end_epoch` / :meth:`set_base_weights` between blocks, as between steps.
        """
        t = losses if isinstance(losses, Tensor) else torch.as_tensor(losses)
        c = len(self._components)
        if t.dim() != 2 or t.size(1) != c or t.size(0) == 0:
            raise ValueError(
                f"losses must have shape (T >= 1, {c}) (columns {list(self._components)!r}), "
                f"got {tuple(t.shape)}"
            )
        self._check_not_pending("step_block()")
        given = self._check_extras(extras, self._requires)
        if t.device != self._device:
            self._to(t.device)
        ext = {}
        for name, v in given.items():
            x = v if isinstance(v, Tensor) else torch.as_tensor(v)
            if tuple(x.shape) != tuple(t.shape):
                raise ValueError(
                    f"extra {name!r} must have the losses' shape {tuple(t.shape)}, "
                    f"got {tuple(x.shape)}"
                )
            ext[name] = x.detach().to(self._device, _DTYPE, copy=True)
        # A copy: lazily computed method state may read the losses later.
        return self._advance(t.detach().to(_DTYPE, copy=True), ext)

    def _check_extras(self, extras: Mapping[str, Any] | None, wanted: Sequence[str]) -> dict:
        """The extras ``wanted`` from ``extras``; one-line errors for missing or unknown."""
        given = dict(extras or {})
        unknown = sorted(k for k in given if k not in wanted)
        if unknown:
            hint = ""
            if any(k in self._after for k in unknown):
                hint = " (after-step extras go to after_step())"
            raise ValueError(
                f"method {self._method_name!r} takes extras {list(wanted)!r} here, "
                f"got unexpected {unknown!r}{hint}"
            )
        missing = [k for k in wanted if k not in given]
        if missing:
            raise ValueError(
                f"method {self._method_name!r} needs the extra(s) {missing!r} "
                f"({'; '.join(EXTRAS[k].description for k in missing)})"
            )
        return given

    def _check_not_pending(self, what: str) -> None:
        if self._pending:
            raise RuntimeError(
                f"method {self._method_name!r}: call after_step({', '.join(self._after)}=...) "
                f"after the optimiser step of step {self._step - 1}, before {what}"
            )

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
        self,
        losses: Mapping[str, Tensor | float],
        *,
        extras: Mapping[str, Mapping[str, Tensor | float]] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor], WeightingDiagnostics]:
        """One training step (the ``T = 1`` case of :meth:`step_block`).

        Args:
            losses: raw, unweighted loss of every component (scalar tensors or floats).
            extras: for a method that requires them (:attr:`requires`), name -> one value
                per component, for the before-step extras (e.g. ``grad_norm``); after-step
                extras go to :meth:`after_step`.

        Returns:
            ``(total_loss, final_weights, diagnostics)``: ``total_loss = Σ_c w_c · L_c``
            (0-dim tensor in the losses' dtype; gradients flow through the losses only),
            ``final_weights`` maps component -> 0-dim float64 tensor (no grad). Batched
            controllers return ``(K,)`` totals and weights.
        """
        self._check_not_pending("the next step")
        before = tuple(e for e in self._requires if e not in self._after)
        given = self._check_extras(extras, before)
        stacked = self._stack_losses(losses)  # (C,) in the losses' dtype, keeps grad
        if stacked.device != self._device:
            self._to(stacked.device)
        raw = stacked.detach().to(_DTYPE)  # exact for float16/bfloat16/float32
        ext = {k: self._stack_extra(k, v).unsqueeze(0) for k, v in given.items()}
        diag = self._advance(raw.unsqueeze(0), ext).diagnostics(0)
        self._pending = bool(self._after)
        self._last_finite = diag.skipped.logical_not().reshape(1)
        applied = diag.applied
        total = (stacked * applied.to(stacked.dtype)).sum(-1)
        weights = dict(zip(self._components, applied.unbind(-1), strict=True))
        return total, weights, diag

    def _stack_extra(self, name: str, values: Mapping[str, Tensor | float]) -> Tensor:
        """One extra's per-component values as a detached ``(C,)`` float64 tensor."""
        if not isinstance(values, Mapping) or values.keys() != self._component_set:
            keys = sorted(values) if isinstance(values, Mapping) else values
            raise ValueError(
                f"extra {name!r} must map every component {list(self._components)!r} "
                f"to a value, got {keys!r}"
            )
        out = [
            v.detach().reshape(()).to(self._device, _DTYPE)
            if isinstance(v, Tensor)
            else torch.tensor(float(v), dtype=_DTYPE, device=self._device)
            for v in (values[c] for c in self._components)
        ]
        return torch.stack(out)

    def _count_nonfinite_extras(self, finite: Tensor, extras: Any) -> None:
        """Count the finite-loss steps (``finite`` ``(T,)``) whose extras ``(T, C)`` are not
        all finite (no host sync; reported with the non-finite state)."""
        ok = finite
        for v in extras:
            ok = ok & v.mul(0.0).sum(-1).eq(0.0)
        bad = (finite & ~ok).to(torch.int64).sum()
        self._nonfinite_extras = self._nonfinite_extras + bad

    @property
    def nonfinite_extras_steps(self) -> int:
        """Finite-loss steps whose extras were not all finite (synchronises)."""
        return int(self._nonfinite_extras)

    def after_step(self, extras: Mapping[str, Mapping[str, Tensor | float]]) -> None:
        """Feed the after-step extras (e.g. ``loss_after``) of the step just taken.

        Call it after the optimiser step, before the next step, for a method with
        :attr:`needs_after_step` (in dry-run too: the method learns from what the step
        did). Replay passes the same values through :meth:`step_block`.
        """
        if not self._after:
            raise RuntimeError(
                f"method {self._method_name!r} takes no after-step extras; "
                "after_step() is only for methods that need them"
            )
        if not self._pending:
            raise RuntimeError(
                f"method {self._method_name!r}: after_step() without a step awaiting it "
                "(call the controller for the step first, and after_step() once)"
            )
        given = self._check_extras(extras, self._after)
        stacked = {k: self._stack_extra(k, v) for k, v in given.items()}
        # counted only where the step's own losses were finite (else it was skipped)
        self._count_nonfinite_extras(self._last_finite, [v.unsqueeze(0) for v in stacked.values()])
        self._method.observe_after(stacked)
        self._pending = False

    def _log(self, diag: WeightingDiagnostics) -> None:
        self._report_nonfinite()
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
    def _require_single(self, what: str) -> None:
        if self._batched:
            raise TypeError(
                f"{what} is only available for single-configuration controllers; "
                "use select(k) on a batched one"
            )

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state (strict JSON: no NaN/inf literals)."""
        self._require_single("state_dict")
        self._report_nonfinite()
        return {
            "version": _STATE_VERSION,
            "config": {
                "components": list(self._components),
                "method": self._method_name,
                "adjustment_range": self._ranges[0],
                "method_params": dict(self._method.params()),
            },
            "base_weights": {c: encode_float(w) for c, w in self.base_weights.items()},
            "dry_run": self._dry_run,
            "step": self._step,
            "epoch": self._epoch,
            "skipped_steps": int(self._skipped_steps),
            "nonfinite_state_steps": int(self._nonfinite_state),
            # methods with after-step extras only: a step awaiting after_step()
            **({"pending_after_step": self._pending} if self._after else {}),
            **({"nonfinite_extras_steps": int(self._nonfinite_extras)} if self._requires else {}),
            "method_state": self._method.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; the config must match this instance.

        Restores the base weights (they may have been changed by :meth:`set_base_weights`),
        step/epoch counters, skipped-step counter and the method state. ``dry_run`` is
        *not* restored (switching a dry-run controller live is a supported workflow).
        """
        self._require_single("load_state_dict")
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
        bad = state.get("nonfinite_state_steps", 0)
        if isinstance(bad, bool) or not isinstance(bad, int) or bad < 0:
            raise ValueError(
                f"state entry 'nonfinite_state_steps' must be an int >= 0, got {bad!r}"
            )
        pending = state.get("pending_after_step", False)
        if not isinstance(pending, bool):
            raise ValueError(f"state entry 'pending_after_step' must be a bool, got {pending!r}")
        bad_extras = state.get("nonfinite_extras_steps", 0)
        if isinstance(bad_extras, bool) or not isinstance(bad_extras, int) or bad_extras < 0:
            raise ValueError(
                f"state entry 'nonfinite_extras_steps' must be an int >= 0, got {bad_extras!r}"
            )
        # everything checked above; the method checks its own entries before setting any
        self._method.load_state_dict(state["method_state"])
        self._method.to(torch.device("cpu"))
        self._base = torch.tensor([base[c] for c in self._components], dtype=_DTYPE)
        self._skipped_steps = torch.tensor(state["skipped_steps"], dtype=torch.int64)
        self._nonfinite_state = torch.tensor(bad, dtype=torch.int64)
        self._nonfinite_reported = bad
        self._pending = pending and bool(self._after)
        self._nonfinite_extras = torch.tensor(bad_extras, dtype=torch.int64)
        self._nonfinite_extras_reported = bad_extras
        self._last_finite = torch.ones(1, dtype=torch.bool)
        self._step = state["step"]
        self._epoch = state["epoch"]
        self._device = torch.device("cpu")
        self._range_t = self._range_t.cpu()
        self._neg_range_t = self._neg_range_t.cpu()
