"""Adaptive loss weighting: a deterministic controller mapping raw losses to weights.

Methods (one private module each) register themselves with :func:`register_method`;
importing this package registers the built-in ones (``"dwa"``, ``"uncertainty"``,
``"softadapt"``, ``"lbtw"``, ``"rlw"``, ``"imtl_l"``, ``"logloss"``).
"""

from ._base import (
    AdaptiveLossWeighting,
    StateField,
    TensorStateMethod,
    WeightingDiagnostics,
    WeightingMethod,
    available_methods,
    method_class,
    register_method,
)
from ._dwa import DWA
from ._imtl_l import IMTLL
from ._lbtw import LBTW
from ._logloss import LogLossWeighting
from ._rlw import RLW
from ._softadapt import SoftAdapt
from ._uncertainty import UncertaintyWeighting

__all__ = [
    "DWA",
    "IMTLL",
    "LBTW",
    "RLW",
    "AdaptiveLossWeighting",
    "LogLossWeighting",
    "SoftAdapt",
    "StateField",
    "TensorStateMethod",
    "UncertaintyWeighting",
    "WeightingDiagnostics",
    "WeightingMethod",
    "available_methods",
    "method_class",
    "register_method",
]
