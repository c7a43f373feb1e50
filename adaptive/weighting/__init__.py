"""Adaptive loss weighting: a deterministic controller mapping raw losses to weights.

Methods (one private module each) register themselves with :func:`register_method`;
importing this package registers the built-in ones (``"dwa"``, ``"uncertainty"``).
"""

from ._base import (
    AdaptiveLossWeighting,
    WeightingDiagnostics,
    WeightingMethod,
    available_methods,
    register_method,
)
from ._dwa import DWA
from ._uncertainty import UncertaintyWeighting

__all__ = [
    "DWA",
    "AdaptiveLossWeighting",
    "UncertaintyWeighting",
    "WeightingDiagnostics",
    "WeightingMethod",
    "available_methods",
    "register_method",
]
