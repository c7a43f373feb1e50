"""The adaptive loss weighting controller: a deterministic state machine from raw losses to
weights, with the same core for one live step and a replayed block of steps."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from adaptive._checks import encode_float
from adaptive._defaults import LOSS_ADJUSTMENT_RANGE
from adaptive.weighting._diagnostics import (
    BlockOutput,
    LazyState,
    WeightingDiagnostics,
    warn_nonfinite,
)
from adaptive.weighting._method import MethodInputs, WeightingMethod
from adaptive.weighting._registry import method_class
from adaptive.weighting._validate import (
    block_extras,
    block_losses,
    check_extras,
    check_method_params,
    check_options,
    check_state,
    split_configs,
    stack_extra,
    stack_losses,
    validate_base_weights,
    validate_components,
    validate_range,
)

__all__ = ["DEFAULT_ADJUSTMENT_RANGE", "AdaptiveLossWeighting"]

_STATE_VERSION = 1
_DTYPE = torch.float64
_DEFAULT_LOGGER_NAME = "adaptive.weighting"

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
        self._components = validate_components(components)
        self._component_set = frozenset(self._components)
        base = validate_base_weights(base_weights, self._components)
        method_cls = method_class(method)
        adjustment_range = validate_range(adjustment_range)
        check_options(dry_run, log_every, logger)
        check_method_params(method, method_cls, method_params)

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
        method_cls = method_class(method)
        ranges, method_configs = split_configs(method, method_cls, configs, LOSS_ADJUSTMENT_RANGE)
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
        for name in ("_base", "_skipped_steps", "_nonfinite_state", "_nonfinite_extras"):
            setattr(out, name, getattr(self, name).clone())
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
        base = validate_base_weights(base_weights, self._components)
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
        bad_extras, bad = int(self._nonfinite_extras), int(self._nonfinite_state)
        warn_nonfinite(
            self._logger,
            self._method_name,
            self._requires,
            bad_extras,
            self._nonfinite_extras_reported,
            bad,
            self._nonfinite_reported,
        )
        self._nonfinite_extras_reported, self._nonfinite_reported = bad_extras, bad

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
        t = block_losses(losses, self._components)
        self._check_not_pending("step_block()")
        given = check_extras(self._method_name, extras, self._after, self._requires)
        if t.device != self._device:
            self._to(t.device)
        ext = block_extras(given, t.shape, self._device)
        # A copy: lazily computed method state may read the losses later.
        return self._advance(t.detach().to(_DTYPE, copy=True), ext)

    def _check_not_pending(self, what: str) -> None:
        if self._pending:
            raise RuntimeError(
                f"method {self._method_name!r}: call after_step({', '.join(self._after)}=...) "
                f"after the optimiser step of step {self._step - 1}, before {what}"
            )

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
        given = check_extras(self._method_name, extras, self._after, before)
        stacked = stack_losses(losses, self._components)  # (C,) in the losses' dtype, keeps grad
        if stacked.device != self._device:
            self._to(stacked.device)
        raw = stacked.detach().to(_DTYPE)  # exact for float16/bfloat16/float32
        ext = {
            k: stack_extra(k, v, self._components, self._device).unsqueeze(0)
            for k, v in given.items()
        }
        diag = self._advance(raw.unsqueeze(0), ext).diagnostics(0)
        self._pending = bool(self._after)
        self._last_finite = diag.skipped.logical_not().reshape(1)
        applied = diag.applied
        total = (stacked * applied.to(stacked.dtype)).sum(-1)
        weights = dict(zip(self._components, applied.unbind(-1), strict=True))
        return total, weights, diag

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
        given = check_extras(self._method_name, extras, self._after, self._after)
        stacked = {k: stack_extra(k, v, self._components, self._device) for k, v in given.items()}
        # counted only where the step's own losses were finite (else it was skipped)
        self._count_nonfinite_extras(self._last_finite, [v.unsqueeze(0) for v in stacked.values()])
        self._method.observe_after(stacked)
        self._pending = False

    def _log(self, diag: WeightingDiagnostics) -> None:
        self._report_nonfinite()
        diag.log_to(self._logger)

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
                "method_params": self._state_params(self._method.params()),
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

    def _state_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Method parameters as a state dict writes them: a parameter of the method's
        ``later_params`` at its implicit value is left out (older checkpoints lack it)."""
        later = type(self._method).later_params
        return {
            k: v
            for k, v in params.items()
            if not (k in later and type(v) is type(later[k]) and v == later[k])
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
        current = self.state_dict()["config"]
        saved = state.get("config")
        if isinstance(saved, Mapping) and isinstance(saved.get("method_params"), Mapping):
            # a later-added parameter written at its implicit value reads as left out
            saved = {**saved, "method_params": self._state_params(saved["method_params"])}
            state = {**state, "config": saved}
        base, counts = check_state(state, _STATE_VERSION, current)
        # everything checked above; the method checks its own entries before setting any
        self._method.load_state_dict(state["method_state"])
        self._method.to(torch.device("cpu"))
        self._base = torch.tensor([base[c] for c in self._components], dtype=_DTYPE)
        self._skipped_steps = torch.tensor(counts["skipped_steps"], dtype=torch.int64)
        bad, bad_extras = counts["nonfinite_state_steps"], counts["nonfinite_extras_steps"]
        self._nonfinite_state = torch.tensor(bad, dtype=torch.int64)
        self._nonfinite_reported = bad
        self._pending = counts["pending_after_step"] and bool(self._after)
        self._nonfinite_extras = torch.tensor(bad_extras, dtype=torch.int64)
        self._nonfinite_extras_reported = bad_extras
        self._last_finite = torch.ones(1, dtype=torch.bool)
        self._step = counts["step"]
        self._epoch = counts["epoch"]
        self._device = torch.device("cpu")
        self._range_t = self._range_t.cpu()
        self._neg_range_t = self._neg_range_t.cpu()
