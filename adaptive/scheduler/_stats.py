"""Robust statistics of a decision window (median, scaled MAD, relative change), and batch
inputs read to host floats (one transfer per device and dtype, exactly `float(x)`)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from adaptive.scheduler._values import is_real

__all__ = [
    "SPREAD_FLOOR",
    "block_floats",
    "capture",
    "check_regime",
    "median",
    "rel_change",
    "robust",
    "to_host",
]

#: Smallest spread (log units) of a regime's reference: changes below ~10 % are never outliers.
SPREAD_FLOOR = 0.1
_MAD_TO_SIGMA = 1.4826  # MAD of a normal sample x this = its standard deviation


def median(sorted_values: list[float]) -> float | None:
    """Median of an already sorted list (None when empty)."""
    n = len(sorted_values)
    if n == 0:
        return None
    mid = n // 2
    if n % 2:
        return sorted_values[mid]
    return (sorted_values[mid - 1] + sorted_values[mid]) / 2.0


def robust(values: list[float]) -> tuple[float, float]:
    """(median, spread) of a sample: spread = 1.4826·MAD, at least :data:`SPREAD_FLOOR`."""
    srt = sorted(values)
    med = median(srt)
    assert med is not None
    mad = median(sorted(abs(v - med) for v in srt))
    assert mad is not None
    return med, max(_MAD_TO_SIGMA * mad, SPREAD_FLOOR)


def rel_change(prev: float | None, cur: float | None) -> float | None:
    """Relative change ``(cur - prev) / |prev|``; None if either side is missing/non-finite."""
    if prev is None or cur is None or not math.isfinite(prev) or not math.isfinite(cur):
        return None
    if prev == 0.0:
        return 0.0 if cur == 0.0 else math.copysign(math.inf, cur)
    return (cur - prev) / abs(prev)


def to_host(items: list[torch.Tensor | float]) -> list[float]:
    """Buffer of floats / 0-dim tensors -> floats, one device->host copy (one host sync)
    per device.

    ``torch.stack(...).cpu().tolist()`` yields exactly ``float(t)`` for every element, so
    the values are bit-identical to what a replay reading ``float(loss)`` from a trace sees.
    Tensors of several dtypes on one device (a float64 loss, a float32 grad norm) are
    stacked per dtype and cast to float64 on the device first, which is exact.
    """
    out: list[float] = [0.0] * len(items)
    groups: dict[torch.device, dict[torch.dtype, list[int]]] = {}
    for i, v in enumerate(items):
        if isinstance(v, torch.Tensor):
            groups.setdefault(v.device, {}).setdefault(v.dtype, []).append(i)
        else:
            out[i] = v
    for by_dtype in groups.values():
        parts = [
            torch.stack([items[i] for i in idx])  # type: ignore[misc]
            for idx in by_dtype.values()
        ]
        if len(parts) > 1:
            parts = [torch.cat([p.to(torch.float64) for p in parts])]
        host = parts[0].cpu().tolist()
        order = [i for idx in by_dtype.values() for i in idx]
        for i, val in zip(order, host, strict=True):
            out[i] = float(val)
    return out


def capture(x: Any, name: str) -> torch.Tensor | float:
    """One batch input as a detached 0-dim tensor copy (no sync) or a float."""
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise ValueError(
                f"{name} must be a scalar (0-dim) tensor, got shape {tuple(x.shape)!r}"
            )
        # clone: async device copy, guards against later in-place updates.
        return x.detach().reshape(()).clone()
    if not is_real(x):
        raise TypeError(f"{name} must be a float or a scalar tensor, got {x!r}")
    return float(x)


def check_regime(regime: Any) -> int:
    """A batch's regime as an int >= 0 (a bool counts as 0/1)."""
    if isinstance(regime, bool):
        return int(regime)
    if not isinstance(regime, numbers.Integral) or regime < 0:
        raise ValueError(f"regime must be an int >= 0, got {regime!r}")
    return int(regime)


def block_floats(x: Any, name: str) -> list[float]:
    """A block of inputs -> Python floats, each exactly ``float(x[i])`` (step_batch's)."""
    if isinstance(x, torch.Tensor):
        if x.dim() != 1:
            raise ValueError(f"{name} must be a 1-dim tensor, got shape {tuple(x.shape)!r}")
        if x.dtype == torch.bool or x.is_complex():
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        vals = x.detach().cpu().tolist()
        return vals if x.is_floating_point() else [float(v) for v in vals]
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise ValueError(f"{name} must be a 1-dim array, got shape {x.shape!r}")
        kind = x.dtype.kind
        if kind == "f":  # float16/32 -> float64 is exact; float64 is a no-op
            return x.astype(np.float64, copy=False).tolist()
        if kind in "iu":
            return [float(v) for v in x.tolist()]
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if isinstance(x, str | bytes) or not isinstance(x, Sequence):
        raise TypeError(f"{name} must be a 1-dim array, tensor or sequence of numbers, got {x!r}")
    return to_host([capture(v, name) for v in x])
