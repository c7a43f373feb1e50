"""Adaptive training-schedule control (teacher forcing / free-run curriculum).

`AdaptiveScheduler` runs a registered scheduler law (:func:`register_law`); importing this
package registers the built-in ones: ``"guard"`` (a stability guard, the default), ``"gtf"``
(pacing from the free-run error growth) and ``"competence"`` (competence pacing). See
``docs/SCHEDULER.md`` for the laws and for adding one.
"""

from adaptive.scheduler._competence import CompetenceLaw
from adaptive.scheduler._gtf import GTFLaw
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
from adaptive.scheduler._scheduler import DEFAULT_LAW, AdaptiveScheduler
from adaptive.scheduler._signature import scheduler_parameters
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
    "CompetenceLaw",
    "Control",
    "Decision",
    "GTFLaw",
    "GuardLaw",
    "SchedulerLaw",
    "Window",
    "available_laws",
    "law_class",
    "map_value",
    "register_law",
    "scheduler_parameters",
]
