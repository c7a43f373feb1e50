"""Adaptive training-schedule control (teacher forcing / free-run curriculum).

See ``docs/SCHEDULER.md`` for the control law.
"""

from adaptive.scheduler._scheduler import (
    DEFAULT_ADJUSTMENT_RANGE,
    FREE_METRICS,
    MOTION_PARAM_RULES,
    NONFINITE_POLICIES,
    PARAM_KINDS,
    REASONS,
    SPREAD_FLOOR,
    AdaptiveScheduler,
    BlockRecord,
    map_value,
)

__all__ = [
    "DEFAULT_ADJUSTMENT_RANGE",
    "FREE_METRICS",
    "MOTION_PARAM_RULES",
    "NONFINITE_POLICIES",
    "PARAM_KINDS",
    "REASONS",
    "SPREAD_FLOOR",
    "AdaptiveScheduler",
    "BlockRecord",
    "map_value",
]
