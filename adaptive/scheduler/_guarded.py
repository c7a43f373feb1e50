"""The guard's batch-level easing off as an offset a pacing law adds to its own delta, so a
law that paces the curriculum (GTF, competence) can still be eased off by the guard."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adaptive._checks import decode_float, encode_float
from adaptive.scheduler._guard import REASONS, GuardLaw
from adaptive.scheduler._law import Control, Decision, Window

__all__ = ["GUARD_REASONS", "GuardOffset"]

#: The guard's batch-level reasons (its epoch-level ones are left to the pacing law).
GUARD_REASONS: dict[str, int] = {
    k: REASONS[k] for k in ("nonfinite", "grad_spike", "loss_rising", "recovered")
}


class GuardOffset:
    """A :class:`GuardLaw` judged on batch windows only, with its own delta (``offset``):
    it eases off on non-finite values, grad-norm outliers and rising loss, and moves back
    toward 0 after calm windows. Disabled (``enabled=False``) it stays 0 and reads nothing.
    """

    def __init__(self, enabled: bool, *, min_samples: int = 8) -> None:
        if not isinstance(enabled, bool):
            raise ValueError(f"guard must be true or false, got {enabled!r}")
        self.enabled = enabled
        self.guard = GuardLaw(min_samples=min_samples)
        self.offset = 0.0

    def window(self, window: Window, control: Control) -> Decision | None:
        """The guard's decision when it changed its offset, else None."""
        if not self.enabled:
            return None
        d = self.guard.window(window, control.with_delta(self.offset))
        if d.action != "change":
            return None
        self.offset = d.delta
        return d

    def state_dict(self) -> dict[str, Any]:
        return {"offset": encode_float(self.offset), **self.guard.state_dict()}

    def load_state_dict(self, state: Any, name: str) -> None:
        """Restore :meth:`state_dict` output kept under the law's entry ``name``."""
        if not isinstance(state, Mapping) or "offset" not in state:
            raise ValueError(f"state entry {name!r} is invalid: {state!r}")
        offset = decode_float(state["offset"], f"{name}.offset")
        self.guard.load_state_dict(state)
        self.offset = offset
