"""Adaptive training-schedule control (teacher forcing / free-run curriculum).

`AdaptiveScheduler` runs a registered scheduler law (:func:`register_law`); importing this
package registers the built-in one, ``"guard"`` (a stability guard). See
``docs/SCHEDULER.md`` for the laws and for adding one.
"""

from adaptive.scheduler._guard import FREE_METRICS, NONFINITE_POLICIES, REASONS, GuardLaw
from adaptive.scheduler._law import (
    Control,
    Decision,
    SchedulerLaw,
    Window,
    available_laws,
    law_class,
    register_law,
)
from adaptive.scheduler._record import BlockRecord
from adaptive.scheduler._scheduler import DEFAULT_LAW, AdaptiveScheduler, scheduler_parameters
from adaptive.scheduler._stats import SPREAD_FLOOR
from adaptive.scheduler._values import (
    DEFAULT_ADJUSTMENT_RANGE,
    MOTION_PARAM_RULES,
    PARAM_KINDS,
    map_value,
)

__all__ = [
    "DEFAULT_ADJUSTMENT_RANGE",
    "DEFAULT_LAW",
    "FREE_METRICS",
    "MOTION_PARAM_RULES",
    "NONFINITE_POLICIES",
    "PARAM_KINDS",
    "REASONS",
    "SPREAD_FLOOR",
    "AdaptiveScheduler",
    "BlockRecord",
    "Control",
    "Decision",
    "GuardLaw",
    "SchedulerLaw",
    "Window",
    "available_laws",
    "law_class",
    "map_value",
    "register_law",
    "scheduler_parameters",
]
