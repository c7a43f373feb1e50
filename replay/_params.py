"""Method hyperparameters given as text (`--param`, `--grid`, `--adaptive-param`): one parser.

Valid names and value types come from the registry (the method class's keyword-only
constructor parameters and their defaults; the scheduler's constructor for `scheduler`), so
a newly registered method is accepted everywhere without touching the CLI. Errors are one
line that repeat the bad input and name the valid parameters.
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from replay._common import split_law
from replay._engine import SCHEDULER, ReplayError, method_parameters

__all__ = [
    "adaptive_param_overrides",
    "check_param_value",
    "merged_params",
    "method_defaults",
    "parse_params",
    "parse_value",
]

ADJUSTMENT_RANGE = "adjustment_range"


def range_default(method: str) -> float:
    """The default `adjustment_range` of `method`'s controller."""
    from adaptive.util import LOSS_ADJUSTMENT_RANGE, SCHEDULER_ADJUSTMENT_RANGE

    return SCHEDULER_ADJUSTMENT_RANGE if method == SCHEDULER else LOSS_ADJUSTMENT_RANGE


def method_defaults(method: str) -> dict[str, Any]:
    """Default of every parameter of `method` that has one (from its constructor)."""
    if method == SCHEDULER:  # the controller's, `law`, and every registered law's
        from adaptive.scheduler import scheduler_parameters

        return scheduler_parameters()
    else:
        from adaptive.weighting import method_class

        sig = inspect.signature(method_class(method).__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.default is not inspect.Parameter.empty
    }


def parse_value(text: str) -> Any:
    """A value as TOML (`1`, `0.5`, `true`, `"x"`), else the bare text as a string."""
    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def check_param_value(where: str, default: Any, value: Any, *, shown: str | None = None) -> Any:
    """`value` if it has the type of `default` (an int is a float; a float default gives a
    float), else a `ReplayError` naming `where` and repeating the value (`shown` if given).
    A None default says nothing about the type: the value is left to the constructor."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and isinstance(default, int):
            ok = isinstance(value, int)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:  # no default to go by (None: a mapping, an optional name): the constructor checks
        ok = True
    if not ok:
        kind = {bool: "a boolean", int: "an integer", float: "a number"}.get(
            type(default), "a string"
        )
        text = shown if shown is not None else repr(value)
        raise ReplayError(f"{where}: value {text} is not {kind}")
    return float(value) if isinstance(default, float) else value


def parse_params(
    methods: Sequence[str],
    texts: Sequence[str],
    *,
    flag: str = "--param",
    adjustment_range: bool = True,
) -> dict[str, dict[str, Any]]:
    """`name=value` texts -> `{method: {name: value}}`, checked against the registry.

    With one method a text may be `name=value` or `method.name=value`; with several it must
    be `method.name=value`. Names must be parameters of the method (`adjustment_range` too,
    unless `adjustment_range=False`); values are read as TOML and must have the type of the
    parameter's default. `flag` names the option in errors (`ReplayError`, one line).
    A method may be `scheduler:LAW` (`split_law`): the scheduler under that law, which then
    takes that law's parameters and not `law` itself.
    """
    valid_by_method: dict[str, list[str]] = {}
    for m in methods:
        base, law = split_law(m)
        valid = list(method_parameters(base))  # ReplayError naming the valid methods if unknown
        if law is not None:
            valid = [v for v in valid if v != "law"]
        valid_by_method[m] = [ADJUSTMENT_RANGE, *valid] if adjustment_range else valid
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ReplayError(f"{flag} expects name=value, got {text!r}")
        if "." in key:
            method, name = key.split(".", 1)
            if method not in out:
                raise ReplayError(
                    f"{flag} {text!r}: method {method!r} is not among the methods given "
                    f"({', '.join(methods)})"
                )
        elif len(methods) == 1:
            method, name = methods[0], key
        else:
            raise ReplayError(
                f"{flag} {text!r}: with several methods write method.name=value "
                f"(methods: {', '.join(methods)})"
            )
        valid = valid_by_method[method]
        if name not in valid:
            raise ReplayError(
                f"{flag} {text!r}: {name!r} is not a parameter of {method!r}; "
                f"valid: {', '.join(valid) or 'none'}"
            )
        if name in out[method]:
            raise ReplayError(f"{flag} {text!r}: {method}.{name} given twice")
        base = split_law(method)[0]
        defaults = {ADJUSTMENT_RANGE: range_default(base), **method_defaults(base)}
        value = parse_value(raw)
        out[method][name] = check_param_value(
            f"{flag} {name}", defaults.get(name), value, shown=repr(raw.strip())
        )
    return out


def merged_params(
    given: Mapping[str, Any], option: str, value: Any, *, name: str = ADJUSTMENT_RANGE
) -> dict[str, Any]:
    """`given` plus `name` from its own option (`value`, None when not given); both at once
    is an error."""
    out = dict(given)
    if value is not None:
        if name in out:
            raise ReplayError(f"{name} given both as {option} and --param")
        out[name] = value
    return out


def adaptive_param_overrides(
    adaptive: Mapping[str, Any], texts: Sequence[str], *, flag: str = "--adaptive-param"
) -> dict[str, Any]:
    """`--adaptive-param` texts -> overrides of a resolved config's `[adaptive]` table for the
    controllers it switches on: the loss weighting method's section, and the scheduler's
    keys (`law=NAME` and the law's parameters; `adaptive.train.config.scheduler_config`).
    With both on, write `<method>.name=value` and `scheduler.name=value`."""
    from adaptive.train.config import scheduler_config

    methods = [adaptive["loss"]] if adaptive["loss"] != "none" else []
    methods += [SCHEDULER] if adaptive["scheduler"] else []
    if not methods:
        raise ReplayError(
            f"{flag} sets a controller parameter; choose a method first (--adaptive-loss) "
            "or switch on the scheduler (--adaptive-scheduler)"
        )
    out: dict[str, Any] = {}
    for method, params in parse_params(methods, texts, flag=flag, adjustment_range=False).items():
        if params and method == SCHEDULER:
            out.update(scheduler_config(params, law=adaptive["scheduler_law"].get("law")))
        elif params:
            out[method] = params
    return out
