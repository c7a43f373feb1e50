"""What the loss weighting controller reports: per-step `WeightingDiagnostics`, per-block
`BlockOutput`, and `LazyState` (method state computed only when read)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "BlockOutput",
    "LazyState",
    "WeightingDiagnostics",
    "warn_nonfinite",
]

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

    def log_to(self, logger: logging.Logger) -> None:
        """Write this step's INFO line (synchronises with the device)."""
        comps = self.components
        clamped = [c for c, f in zip(comps, self.clamped.tolist(), strict=True) if f]
        logger.info(
            "adaptive weighting step=%d epoch=%d method=%s dry_run=%s proposed={%s} "
            "deltas={%s} clamped=%s skipped_steps=%d",
            self.step,
            self.epoch,
            self.method,
            self.dry_run,
            ", ".join(f"{c}: {w:.6g}" for c, w in zip(comps, self.proposed.tolist(), strict=True)),
            ", ".join(f"{c}: {d:+.4f}" for c, d in zip(comps, self.deltas.tolist(), strict=True)),
            clamped,
            int(self.skipped_steps),
        )


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


def warn_nonfinite(
    logger: logging.Logger,
    method: str,
    requires: Sequence[str],
    bad_extras: int,
    reported_extras: int,
    bad_state: int,
    reported_state: int,
) -> None:
    """WARNING for steps since the last report whose extras were not finite (the method
    skipped its update) or whose method state gave non-finite scales (neutral ones were
    applied). The controller calls it where the host is read anyway (log lines, every
    state dict), so the per-step path stays free of host syncs."""
    if bad_extras > reported_extras:
        logger.warning(
            "adaptive weighting (%s): %d step(s) so far (%d new) had finite losses but "
            "non-finite extras (%s); the method skipped its update there",
            method,
            bad_extras,
            bad_extras - reported_extras,
            ", ".join(requires),
        )
    if bad_state > reported_state:
        logger.warning(
            "adaptive weighting (%s): the method state gave non-finite scales on %d "
            "step(s) so far (%d new); neutral scales were applied there. Check the "
            "losses for huge values and the method's parameters.",
            method,
            bad_state,
            bad_state - reported_state,
        )
