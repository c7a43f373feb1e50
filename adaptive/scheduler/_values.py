"""Schedule values and their limits: how delta adjusts each parameter (`map_value`), and
the checks of base values, limits, parameter rules and plain arguments."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from adaptive._defaults import SCHEDULER_ADJUSTMENT_RANGE

__all__ = [
    "DEFAULT_ADJUSTMENT_RANGE",
    "MOTION_PARAM_RULES",
    "PARAM_KINDS",
    "check_bool",
    "check_int",
    "is_real",
    "map_value",
    "validate_base_values",
    "validate_limits",
    "validate_rules",
]

DEFAULT_ADJUSTMENT_RANGE = SCHEDULER_ADJUSTMENT_RANGE
#: How a schedule parameter is adjusted by delta (see :func:`map_value`).
PARAM_KINDS = ("scale", "count", "complement")
#: The reference motion task's parameters that are not plain scales (the default rules).
MOTION_PARAM_RULES: dict[str, str] = {"freerun_horizon": "count", "tf_ratio": "complement"}


def is_real(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, numbers.Real)


def map_value(
    name: str,
    base: float,
    delta: float,
    limits: tuple[float, float] | None = None,
    kind: str | None = None,
) -> float:
    """Apply ``delta`` (positive = harder) to one base value; see docs/SCHEDULER.md.

    The parameter's ``kind`` (default: :data:`MOTION_PARAM_RULES`, else ``"scale"``):

    * ``"count"`` (``freerun_horizon``): ``max(1, floor(base·(1+δ) + 0.5))``; base 0 stays 0.
    * ``"complement"`` (``tf_ratio``): the complement ``1 - base`` (the free-run fraction)
      is scaled, ``clip(1 - (1-base)·(1+δ), 0, 1)``; base 1.0 stays 1.0.
    * ``"scale"`` (anything else: ``freerun_weight``, extras): ``base·(1+δ)``; base 0 stays 0.

    ``limits = (lo, hi)`` clips the adjusted value into ``[lo, hi]`` (for example the
    trainer's ``freerun_horizon <= window - 1``). ``delta == 0`` returns ``base`` exactly.
    """
    if delta == 0.0:
        return base
    kind = kind or MOTION_PARAM_RULES.get(name, "scale")
    if kind == "count":
        if base == 0.0:
            return base
        out = float(max(1, math.floor(base * (1.0 + delta) + 0.5)))
    elif kind == "complement":
        free = 1.0 - base
        if free == 0.0:
            return base
        out = min(1.0, max(0.0, 1.0 - free * (1.0 + delta)))
    else:
        if base == 0.0:
            return base
        out = base * (1.0 + delta)
    if limits is not None:
        out = min(limits[1], max(limits[0], out))
    return out


def validate_rules(rules: Any) -> dict[str, str]:
    if rules is None:
        return dict(MOTION_PARAM_RULES)
    if not isinstance(rules, Mapping):
        raise TypeError(f"param_rules must be a mapping name -> kind, got {rules!r}")
    for name, kind in rules.items():
        if not isinstance(name, str) or kind not in PARAM_KINDS:
            raise ValueError(f"param_rules[{name!r}] must be one of {PARAM_KINDS!r}, got {kind!r}")
    return dict(rules)


def validate_limits(limits: Any) -> dict[str, tuple[float, float]]:
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise TypeError(f"limits must be a mapping name -> (lo, hi), got {limits!r}")
    out: dict[str, tuple[float, float]] = {}
    for name, pair in limits.items():
        ok = (
            isinstance(name, str)
            and isinstance(pair, Sequence)
            and len(pair) == 2
            and all(is_real(v) and not math.isnan(float(v)) for v in pair)
            and float(pair[0]) <= float(pair[1])
        )
        if not ok:
            raise ValueError(f"limits[{name!r}] must be a pair lo <= hi of numbers, got {pair!r}")
        out[name] = (float(pair[0]), float(pair[1]))
    return out


def validate_base_values(
    values: Mapping[str, float], rules: Mapping[str, str] = MOTION_PARAM_RULES
) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise TypeError(f"base values must be a mapping name -> float, got {values!r}")
    out: dict[str, float] = {}
    for name, v in values.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"base value names must be non-empty str, got {name!r}")
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if not is_real(v) or not math.isfinite(float(v)):
            raise ValueError(f"base value {name!r} must be a finite number, got {v!r}")
        f = float(v)
        kind = rules.get(name, "scale")
        if kind == "complement" and not 0.0 <= f <= 1.0:
            raise ValueError(f"base value {name!r} must be in [0, 1], got {v!r}")
        if kind == "count" and (f < 0.0 or f != math.floor(f)):
            raise ValueError(f"base value {name!r} must be a whole number >= 0, got {v!r}")
        out[name] = f
    return out


def check_int(name: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value
