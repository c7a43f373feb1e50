"""What one `AdaptiveScheduler.step_block` call did (`BlockRecord`): per-window decisions,
per-step delta, proposed values and signals on demand."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adaptive.scheduler._values import map_value

__all__ = ["BlockRecord"]


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
