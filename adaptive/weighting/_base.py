"""The older import path of the loss weighting core: re-exports the names that now live in
``_method`` (contract), ``_state`` (state declaration), ``_registry``, ``_diagnostics`` and
``_controller``. New code imports from :mod:`adaptive.weighting`."""

from adaptive.weighting._controller import DEFAULT_ADJUSTMENT_RANGE, AdaptiveLossWeighting
from adaptive.weighting._diagnostics import BlockOutput, LazyState, WeightingDiagnostics
from adaptive.weighting._method import EXTRAS, Extra, MethodInputs, WeightingMethod, last_rows
from adaptive.weighting._registry import (
    _REGISTRY,  # noqa: F401 - the registry itself, for tests that register and remove
    available_methods,
    method_class,
    register_method,
)
from adaptive.weighting._state import StateField, TensorStateMethod, decode_tensor, encode_tensor

__all__ = [
    "DEFAULT_ADJUSTMENT_RANGE",
    "EXTRAS",
    "AdaptiveLossWeighting",
    "BlockOutput",
    "Extra",
    "LazyState",
    "MethodInputs",
    "StateField",
    "TensorStateMethod",
    "WeightingDiagnostics",
    "WeightingMethod",
    "available_methods",
    "decode_tensor",
    "encode_tensor",
    "last_rows",
    "method_class",
    "register_method",
]
