"""The loss weighting method contract: what a method observes (`MethodInputs`, the extras)
and the `WeightingMethod` base class the controller drives."""

from __future__ import annotations

import copy
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = ["EXTRAS", "Extra", "MethodInputs", "WeightingMethod", "last_rows"]

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
    #: Parameters added after checkpoints of the method were first written, with the value
    #: those checkpoints implicitly had (their default): a controller's state dict leaves
    #: such a parameter out at that value, and a state dict without it loads as that value,
    #: so older checkpoints keep loading and a run keeps writing the same bytes.
    later_params: ClassVar[Mapping[str, Any]] = {}

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
