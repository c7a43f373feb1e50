"""Adaptive loss weighting: a deterministic controller mapping raw losses to weights.

Methods (one private module each) register themselves with :func:`register_method`;
importing this package registers the built-in ones (``"dwa"``, ``"uncertainty"``,
``"softadapt"``, ``"lbtw"``, ``"rlw"``, ``"imtl_l"``, ``"logloss"``, ``"gradnorm"``,
``"famo"``). ``gradnorm`` and ``famo`` need extras (:data:`EXTRAS`) besides the losses.
"""

from ._controller import DEFAULT_ADJUSTMENT_RANGE, AdaptiveLossWeighting
from ._diagnostics import WeightingDiagnostics
from ._dwa import DWA
from ._famo import FAMO
from ._gradnorm import GradNorm
from ._imtl_l import IMTLL
from ._lbtw import LBTW
from ._logloss import LogLossWeighting
from ._method import EXTRAS, Extra, MethodInputs, WeightingMethod
from ._registry import available_methods, method_class, register_method
from ._rlw import RLW
from ._softadapt import SoftAdapt
from ._state import StateField, TensorStateMethod
from ._uncertainty import UncertaintyWeighting

__all__ = [
    "DEFAULT_ADJUSTMENT_RANGE",
    "DWA",
    "EXTRAS",
    "FAMO",
    "IMTLL",
    "LBTW",
    "RLW",
    "AdaptiveLossWeighting",
    "Extra",
    "GradNorm",
    "LogLossWeighting",
    "MethodInputs",
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
