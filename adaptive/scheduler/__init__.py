"""Adaptive training-schedule control (teacher forcing / free-run curriculum).

See ``docs/SCHEDULER.md`` for the control law.
"""

from adaptive.scheduler._scheduler import (
    FREE_METRICS,
    REASONS,
    AdaptiveScheduler,
    BlockRecord,
    map_value,
)

__all__ = ["FREE_METRICS", "REASONS", "AdaptiveScheduler", "BlockRecord", "map_value"]
