"""Input checks and stacking for the loss weighting controller: component names, base
weights, ranges, method parameters, and losses / extras -> float64 tensors."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from adaptive._checks import decode_float
from adaptive.weighting._method import EXTRAS, WeightingMethod

__all__ = [
    "block_extras",
    "block_losses",
    "check_extras",
    "check_method_params",
    "check_names",
    "check_options",
    "split_configs",
    "stack_extra",
    "stack_losses",
    "validate_base_weights",
    "validate_components",
    "validate_range",
]

_DTYPE = torch.float64


def validate_components(components: Sequence[str]) -> tuple[str, ...]:
    if isinstance(components, str) or not isinstance(components, Sequence):
        raise TypeError(f"components must be a sequence of strings, got {components!r}")
    comps = tuple(components)
    if not comps:
        raise ValueError(f"components must not be empty, got {components!r}")
    bad = [c for c in comps if not isinstance(c, str) or not c]
    if bad:
        raise ValueError(f"component names must be non-empty strings, got {bad!r}")
    dupes = sorted({c for c in comps if comps.count(c) > 1})
    if dupes:
        raise ValueError(f"duplicate component names {dupes!r} in {list(comps)!r}")
    return comps


def check_names(given: Mapping[str, Any], components: tuple[str, ...], what: str) -> None:
    expected = set(components)
    keys = set(given.keys())
    if keys != expected:
        missing = sorted(expected - keys, key=str)
        extra = sorted(keys - expected, key=str)
        raise ValueError(
            f"{what} names must match the components {list(components)!r}: "
            f"missing {missing!r}, unexpected {extra!r}"
        )


def validate_base_weights(
    base_weights: Mapping[str, float] | None, components: tuple[str, ...]
) -> dict[str, float]:
    if base_weights is None:
        return dict.fromkeys(components, 1.0)
    if not isinstance(base_weights, Mapping):
        raise TypeError(f"base_weights must be a mapping name -> float, got {base_weights!r}")
    check_names(base_weights, components, "base_weights")
    out: dict[str, float] = {}
    for c in components:
        v = base_weights[c]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"base weight for {c!r} must be a finite number >= 0, got {v!r}")
        out[c] = float(v)
    return out


def validate_range(adjustment_range: Any) -> float:
    if (
        isinstance(adjustment_range, bool)
        or not isinstance(adjustment_range, int | float)
        or not math.isfinite(adjustment_range)
        or adjustment_range < 0
    ):
        raise ValueError(f"adjustment_range must be a finite number >= 0, got {adjustment_range!r}")
    return float(adjustment_range)


def check_method_params(
    method: str, method_cls: type[WeightingMethod], params: Mapping[str, Any]
) -> None:
    valid = method_cls.param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown!r} for method {method!r}; "
            f"valid parameters: {list(valid)!r}"
        )


def check_extras(
    method: str, extras: Mapping[str, Any] | None, after: Sequence[str], wanted: Sequence[str]
) -> dict:
    """The extras ``wanted`` from ``extras`` for ``method`` (``after``: its after-step
    extras, named in the hint); one-line errors for missing or unknown."""
    given = dict(extras or {})
    unknown = sorted(k for k in given if k not in wanted)
    if unknown:
        hint = ""
        if any(k in after for k in unknown):
            hint = " (after-step extras go to after_step())"
        raise ValueError(
            f"method {method!r} takes extras {list(wanted)!r} here, "
            f"got unexpected {unknown!r}{hint}"
        )
    missing = [k for k in wanted if k not in given]
    if missing:
        raise ValueError(
            f"method {method!r} needs the extra(s) {missing!r} "
            f"({'; '.join(EXTRAS[k].description for k in missing)})"
        )
    return given


def stack_losses(losses: Mapping[str, Tensor | float], components: tuple[str, ...]) -> Tensor:
    """The losses of every component, in order, as one ``(C,)`` tensor (keeps the graph)."""
    if not isinstance(losses, Mapping):
        raise TypeError(f"losses must be a mapping name -> loss, got {type(losses).__name__}")
    if losses.keys() != frozenset(components):
        keys = set(losses.keys())
        missing = [c for c in components if c not in keys]
        extra = sorted(str(k) for k in keys - frozenset(components))
        if missing:
            raise KeyError(
                f"missing loss component(s) {missing!r}"
                + (f" and unexpected {extra!r}" if extra else "")
                + f"; expected exactly {list(components)!r}"
            )
        raise KeyError(
            f"unexpected loss component(s) {extra!r}; expected exactly {list(components)!r}"
        )
    values = [losses[c] for c in components]
    device: torch.device | None = None
    for c, v in zip(components, values, strict=True):
        if isinstance(v, Tensor):
            if v.numel() != 1:
                raise ValueError(f"loss {c!r} must be a scalar tensor, got shape {tuple(v.shape)}")
            if device is None:
                device = v.device
            elif v.device != device:
                raise ValueError(
                    f"all loss tensors must be on one device; {c!r} is on {v.device}, "
                    f"expected {device}"
                )
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"loss {c!r} must be a Tensor or a float, got {v!r}")
    if device is None:  # all Python floats (e.g. replay from a trace)
        return torch.tensor([float(v) for v in values], dtype=_DTYPE)
    tensors = [
        v.reshape(())
        if isinstance(v, Tensor)
        else torch.tensor(float(v), dtype=_DTYPE, device=device)
        for v in values
    ]
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        dtype = _DTYPE
    return torch.stack([t.to(dtype) for t in tensors])


def stack_extra(
    name: str,
    values: Mapping[str, Tensor | float],
    components: tuple[str, ...],
    device: torch.device,
) -> Tensor:
    """One extra's per-component values as a detached ``(C,)`` float64 tensor."""
    if not isinstance(values, Mapping) or values.keys() != frozenset(components):
        keys = sorted(values) if isinstance(values, Mapping) else values
        raise ValueError(
            f"extra {name!r} must map every component {list(components)!r} to a value, got {keys!r}"
        )
    out = [
        v.detach().reshape(()).to(device, _DTYPE)
        if isinstance(v, Tensor)
        else torch.tensor(float(v), dtype=_DTYPE, device=device)
        for v in (values[c] for c in components)
    ]
    return torch.stack(out)


def check_state(
    state: Mapping[str, Any], version: int, current: Mapping[str, Any]
) -> tuple[dict[str, float], dict[str, Any]]:
    """Check a controller state dict against the loading controller's ``current`` config
    before anything is loaded: ``(base weights, counters)``, or a one-line ``ValueError``
    (``TypeError`` for a state that is not a mapping)."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping, got {type(state).__name__}")
    if state.get("version") != version:
        raise ValueError(f"unsupported state version {state.get('version')!r}, expected {version}")
    saved = state.get("config")
    if not isinstance(saved, Mapping):
        raise ValueError(f"state has no valid 'config' entry, got {saved!r}")
    mismatches = [
        f"{key}: saved {saved.get(key)!r} != current {current[key]!r}"
        for key in current
        if saved.get(key) != current[key]
    ]
    if mismatches:
        raise ValueError(
            "cannot load state: configuration mismatch (" + "; ".join(mismatches) + ")"
        )
    base_saved = state["base_weights"]
    base = validate_base_weights(
        {c: decode_float(v) for c, v in base_saved.items()}, tuple(current["components"])
    )
    counts: dict[str, Any] = {}
    for key in ("step", "epoch", "skipped_steps"):
        counts[key] = state.get(key)
    for key in ("nonfinite_state_steps", "nonfinite_extras_steps"):
        counts[key] = state.get(key, 0)
    for key, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"state entry {key!r} must be an int >= 0, got {v!r}")
    pending = state.get("pending_after_step", False)
    if not isinstance(pending, bool):
        raise ValueError(f"state entry 'pending_after_step' must be a bool, got {pending!r}")
    counts["pending_after_step"] = pending
    return base, counts


def block_losses(losses: Tensor | Any, components: tuple[str, ...]) -> Tensor:
    """A block's losses as a ``(T >= 1, C)`` tensor (array-likes converted)."""
    t = losses if isinstance(losses, Tensor) else torch.as_tensor(losses)
    c = len(components)
    if t.dim() != 2 or t.size(1) != c or t.size(0) == 0:
        raise ValueError(
            f"losses must have shape (T >= 1, {c}) (columns {list(components)!r}), "
            f"got {tuple(t.shape)}"
        )
    return t


def block_extras(
    given: Mapping[str, Any], shape: torch.Size, device: torch.device
) -> dict[str, Tensor]:
    """A block's extras as detached float64 copies on ``device``, each of the losses' shape."""
    ext = {}
    for name, v in given.items():
        x = v if isinstance(v, Tensor) else torch.as_tensor(v)
        if tuple(x.shape) != tuple(shape):
            raise ValueError(
                f"extra {name!r} must have the losses' shape {tuple(shape)}, got {tuple(x.shape)}"
            )
        ext[name] = x.detach().to(device, _DTYPE, copy=True)
    return ext


def check_options(dry_run: Any, log_every: Any, logger: Any) -> None:
    """The controller's ``dry_run``, ``log_every`` and ``logger`` arguments."""
    if not isinstance(dry_run, bool):
        raise TypeError(f"dry_run must be a bool, got {dry_run!r}")
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 0:
        raise ValueError(f"log_every must be an int >= 0 (0 disables logging), got {log_every!r}")
    if logger is not None and not isinstance(logger, logging.Logger):
        raise TypeError(f"logger must be a logging.Logger or None, got {logger!r}")


def split_configs(
    method: str,
    method_cls: type[WeightingMethod],
    configs: Sequence[Mapping[str, Any]],
    default_range: float,
) -> tuple[list[float], list[dict[str, Any]]]:
    """A batched controller's configurations -> (ranges, method parameters), checked."""
    if isinstance(configs, Mapping | str) or not isinstance(configs, Sequence):
        raise TypeError(f"configs must be a sequence of mappings, got {configs!r}")
    if not configs:
        raise ValueError("configs must not be empty")
    ranges: list[float] = []
    method_configs: list[dict[str, Any]] = []
    for cfg in configs:
        if not isinstance(cfg, Mapping):
            raise TypeError(f"each config must be a mapping, got {cfg!r}")
        params = dict(cfg)
        ranges.append(validate_range(params.pop("adjustment_range", default_range)))
        check_method_params(method, method_cls, params)
        method_configs.append(params)
    return ranges, method_configs
