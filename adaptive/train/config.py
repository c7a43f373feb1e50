"""Config pipeline: built-in TOML default <- config file <- `--set section.key=value` overrides.

Configs are nested dicts of plain values. Every key must exist in the built-in default
(`default.toml`); an unknown key is an error naming the closest valid one. Values are
type-checked against the default (an int is accepted where a float is expected).
"""

from __future__ import annotations

import copy
import difflib
import inspect
import logging
import math
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from adaptive.errors import InputError

Config = dict[str, Any]

STAGE_KEYS = {
    "name": str,
    "epochs": int,
    "tf_ratio": float,
    "freerun_horizon": int,
    "freerun_weight": float,
    "lr": float,
    "loss_weights": dict,
}
STAGE_REQUIRED = ("epochs", "tf_ratio", "freerun_horizon", "freerun_weight")


class ConfigError(InputError):
    """An invalid configuration; the message names the key and the problem."""


log = logging.getLogger("adaptive.config")

# Keys that older configs used, mapped onto the keys that replaced them.
LEGACY_KEYS: dict[str, tuple[str, ...]] = {
    "adaptive.adjustment_range": (
        "adaptive.loss_adjustment_range",
        "adaptive.scheduler_adjustment_range",
    ),
}
LOSS_INPUTS = ("tf", "total")
VAL_SPLITS = ("clips", "tail")  # data.val_split


def default_config() -> Config:
    """The built-in default configuration (a fresh copy)."""
    text = resources.files("adaptive.train").joinpath("default.toml").read_text("utf-8")
    cfg = tomllib.loads(text)
    cfg["schedule"]["stages"] = validate_stages(cfg["schedule"]["stages"])
    _add_method_sections(cfg["adaptive"])
    return cfg


def _add_method_sections(adaptive: dict[str, Any]) -> None:
    """A registered loss weighting method without a section in default.toml (one registered
    by a user or a test) gets `[adaptive.<method>]` from its class defaults (None left out)."""
    from adaptive.weighting import available_methods, method_class

    for method in available_methods():
        if method not in adaptive:
            sig = inspect.signature(method_class(method).__init__)
            adaptive[method] = {
                p.name: p.default
                for p in sig.parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not None
            }
    _add_law_sections(adaptive["scheduler_law"])


def _add_law_sections(section: dict[str, Any]) -> None:
    """Every registered scheduler law but the default (whose parameters sit in
    `[adaptive.scheduler_law]` itself) gets `[adaptive.scheduler_law.<law>]` from its class
    defaults; "" stands for a None default."""
    from adaptive.scheduler import DEFAULT_LAW, available_laws, law_class

    for law in available_laws():
        if law != DEFAULT_LAW and law not in section:
            defaults = law_class(law).defaults()
            section[law] = {k: "" if v is None else v for k, v in defaults.items()}


def scheduler_law_params(section: Mapping[str, Any]) -> dict[str, Any]:
    """`[adaptive.scheduler_law]` -> the scheduler's law arguments: `law` and that law's
    parameters (the default law's from the section itself, another's from its sub-table);
    "" stands for a None default."""
    from adaptive.scheduler import DEFAULT_LAW, law_class

    name = section.get("law", DEFAULT_LAW)
    try:
        defaults = law_class(name).defaults()
    except ValueError as exc:
        raise ConfigError(f"adaptive.scheduler_law.law: {exc}") from None
    if name == DEFAULT_LAW:
        given = {k: v for k, v in section.items() if k != "law" and not isinstance(v, Mapping)}
    else:
        given = dict(section.get(name, {}))
    none = {k for k, v in defaults.items() if v is None}
    return {"law": name, **{k: None if v == "" and k in none else v for k, v in given.items()}}


#: Scheduler parameters that live in `[adaptive]` itself (the law's go to `scheduler_law`).
SCHEDULER_TOP = ("adjustment_rate", "update_interval", "use_epoch_metrics")


def scheduler_config(params: Mapping[str, Any], law: str | None = None) -> dict[str, Any]:
    """Scheduler parameters (`AdaptiveScheduler`'s keywords) -> the `[adaptive]` keys that set
    them: `scheduler_adjustment_range`, the top-level ones, and `scheduler_law` (the default
    law's parameters in it, another law's in its sub-table; None written as ""). `law` is
    the law in force when `params` names none."""
    from adaptive.scheduler import DEFAULT_LAW

    p = dict(params)
    out: dict[str, Any] = {}
    if "adjustment_range" in p:
        out["scheduler_adjustment_range"] = float(p.pop("adjustment_range"))
    for k in SCHEDULER_TOP:
        if k in p:
            out[k] = p.pop(k)
    name = p.pop("law", None)
    section: dict[str, Any] = {} if name is None else {"law": name}
    values = {k: "" if v is None else v for k, v in p.items()}
    if (name or law or DEFAULT_LAW) == DEFAULT_LAW:
        section.update(values)
    elif values:
        section[name or law] = values
    if section:
        out["scheduler_law"] = section
    return out


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _all_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out.append(prefix + k)
        if isinstance(v, dict):
            out.extend(_all_keys(v, prefix + k + "."))
    return out


def _check_type(where: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def merge(base: Config, update: Mapping[str, Any], *, where: str = "") -> Config:
    """Merge `update` into a copy of `base`, validating keys and types against `base`."""
    out = copy.deepcopy(base)
    update = _map_legacy(update, where)
    for key, value in update.items():
        path = f"{where}{key}"
        if key not in out:
            raise ConfigError(
                f"unknown config key {path!r}{_suggest(path, _all_keys(base, where))}"
            )
        current = out[key]
        if key == "stages" and where == "schedule.":
            out[key] = validate_stages(value)
        elif isinstance(current, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{path}: expected a table, got {value!r}")
            out[key] = merge(current, value, where=path + ".")
        else:
            out[key] = _check_type(path, value, current)
    return out


def _map_legacy(update: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """Rewrite keys of older configs (e.g. the shared `adaptive.adjustment_range`)."""
    legacy = [k for k in update if f"{where}{k}" in LEGACY_KEYS]
    if not legacy:
        return update
    out = dict(update)
    for key in legacy:
        value = out.pop(key)
        targets = LEGACY_KEYS[f"{where}{key}"]
        for target in targets:
            out.setdefault(target[len(where) :], value)
        log.warning(
            "config key %r is deprecated; mapped to %s",
            f"{where}{key}",
            " and ".join(repr(t) for t in targets),
        )
    return out


def validate_config(cfg: Config) -> Config:
    """Checks across keys that types alone cannot express; returns `cfg` unchanged.

    The scheduler's range must lie in [0, 1) and the loss weighting's be >= 0; the loss
    input must be known; every stage's free-run horizon, stretched by the scheduler's
    largest adjustment, must fit the training window (else `batch_loss` would fail
    mid-run).
    """
    ema = cfg["train"]["ema_decay"]
    if not 0 <= ema < 1:
        raise ConfigError(f"train.ema_decay: must lie in [0, 1) (0: off), got {ema!r}")
    a = cfg["adaptive"]
    r_loss, r_sched = a["loss_adjustment_range"], a["scheduler_adjustment_range"]
    if r_loss < 0:
        raise ConfigError(f"adaptive.loss_adjustment_range: must be >= 0, got {r_loss!r}")
    if not 0 <= r_sched < 1:
        raise ConfigError(
            f"adaptive.scheduler_adjustment_range: must lie in [0, 1), got {r_sched!r}"
        )
    if a["loss_input"] not in LOSS_INPUTS:
        raise ConfigError(
            f"adaptive.loss_input: must be one of {', '.join(LOSS_INPUTS)}, got {a['loss_input']!r}"
        )
    extras = a["record_extras"]
    from adaptive.weighting import EXTRAS

    if not isinstance(extras, list) or any(e not in EXTRAS for e in extras):
        raise ConfigError(
            f"adaptive.record_extras: must be a list of {', '.join(EXTRAS)}, got {extras!r}"
        )
    scheduler_law_params(a["scheduler_law"])  # a known law
    d = cfg["data"]
    if d["val_split"] not in VAL_SPLITS:
        raise ConfigError(
            f"data.val_split: must be one of {', '.join(VAL_SPLITS)}, got {d['val_split']!r}"
        )
    if not 0 < d["val_fraction"] < 1:
        raise ConfigError(f"data.val_fraction: must lie in (0, 1), got {d['val_fraction']!r}")
    window = cfg["data"]["window"]
    stretch = 1.0 + (r_sched if a["scheduler"] else 0.0)
    for i, stage in enumerate(cfg["schedule"]["stages"]):
        h = max(stage["freerun_horizon"])
        longest = max(1, math.floor(round(h) * stretch + 0.5))
        if longest > window - 1:
            extra = f" x (1 + {r_sched:g}) = {longest}" if stretch > 1.0 else ""
            raise ConfigError(
                f"schedule.stages[{i}].freerun_horizon: {h:g}{extra} frames do not fit "
                f"data.window = {window} (at most {window - 1})"
            )
    return cfg


def validate_stages(stages: Any) -> list[dict[str, Any]]:
    """Check a stage list: known keys, required keys, numbers or [start, end] ramps."""
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"schedule.stages: expected a non-empty list of tables, got {stages!r}")
    out = []
    for i, stage in enumerate(stages):
        where = f"schedule.stages[{i}]"
        if not isinstance(stage, Mapping):
            raise ConfigError(f"{where}: expected a table, got {stage!r}")
        for key in stage:
            if key not in STAGE_KEYS:
                raise ConfigError(f"unknown stage key {where}.{key}{_suggest(key, STAGE_KEYS)}")
        for key in STAGE_REQUIRED:
            if key not in stage:
                raise ConfigError(f"{where}: missing required key {key!r}")
        clean = dict(stage)
        if isinstance(clean["epochs"], bool) or not isinstance(clean["epochs"], int):
            raise ConfigError(f"{where}.epochs: expected an integer, got {clean['epochs']!r}")
        if clean["epochs"] < 1:
            raise ConfigError(f"{where}.epochs: must be >= 1, got {clean['epochs']!r}")
        for key in ("tf_ratio", "freerun_horizon", "freerun_weight", "lr"):
            if key in clean:
                clean[key] = _ramp(f"{where}.{key}", clean[key])
        for key in ("tf_ratio",):
            lo, hi = clean[key]
            if not (0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0):
                raise ConfigError(f"{where}.tf_ratio: must lie in [0, 1], got {stage[key]!r}")
        if min(clean["freerun_horizon"]) < 1:
            raise ConfigError(
                f"{where}.freerun_horizon: must be >= 1, got {stage['freerun_horizon']!r}"
            )
        if min(clean["freerun_weight"]) < 0:
            raise ConfigError(
                f"{where}.freerun_weight: must be >= 0, got {stage['freerun_weight']!r}"
            )
        if "loss_weights" in clean:
            lw = clean["loss_weights"]
            if not isinstance(lw, Mapping):
                raise ConfigError(f"{where}.loss_weights: expected a table, got {lw!r}")
            clean["loss_weights"] = {
                k: _check_type(f"{where}.loss_weights.{k}", v, 1.0) for k, v in lw.items()
            }
        out.append(clean)
    return out


def _ramp(where: str, value: Any) -> tuple[float, float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (float(value), float(value))
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        return (float(value[0]), float(value[1]))
    raise ConfigError(f"{where}: expected a number or a [start, end] ramp, got {value!r}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value); value parsed as TOML, else a string."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def nest(path: list[str], value: Any) -> dict[str, Any]:
    """["a", "b"], v -> {"a": {"b": v}}."""
    out: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        out = {part: out}
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a config file, unchecked; `ConfigError` (one line, naming the file) if
    it is missing or not TOML."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        return tomllib.loads(p.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve a config: default <- TOML file <- `extra` (flags) <- `--set` overrides."""
    cfg = default_config()
    if path is not None:
        p = Path(path)
        data = read_toml(p)
        try:
            cfg = merge(cfg, data)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
    if extra:
        cfg = merge(cfg, extra)
    for text in overrides:
        keys, value = parse_override(text)
        if len(keys) >= 3 and keys[0] == "schedule" and keys[1] != "stages":
            cfg = set_stage_value(cfg, keys[1:], value)
        else:
            cfg = merge(cfg, nest(keys, value))
    return validate_config(cfg)


STAGE_ENDS = ("start", "end")


def set_stage_value(cfg: Config, keys: list[str], value: Any) -> Config:
    """`schedule.STAGE.KEY[.start|.end]=value`: one value of one stage of the schedule (STAGE
    its name or 0-based index), so a schedule's stage lengths and end points can be set, and
    searched, one at a time instead of replacing the whole stage list. `.start` / `.end`
    set one end of a ramp (a constant becomes a ramp); KEY alone sets both."""
    where = "schedule." + ".".join(keys)
    stages = [dict(s) for s in cfg["schedule"]["stages"]]
    names = [str(s.get("name", i)) for i, s in enumerate(stages)]
    ref = keys[0]
    idx = int(ref) if ref.isdigit() and int(ref) < len(stages) else None
    if idx is None and ref in names:
        idx = names.index(ref)
    if idx is None:
        raise ConfigError(
            f"{where}: no stage {ref!r}; the schedule's stages are {', '.join(names)} "
            f"(or 0-{len(stages) - 1})"
        )
    key, end = keys[1], keys[2] if len(keys) > 2 else None
    settable = [k for k in STAGE_KEYS if k not in ("name", "loss_weights")]
    if key not in settable or len(keys) > 3 or (end is not None and end not in STAGE_ENDS):
        raise ConfigError(
            f"{where}: expected schedule.STAGE.KEY or schedule.STAGE.KEY.start|end with KEY "
            f"one of {', '.join(settable)}"
        )
    stage = stages[idx]
    if end is None or key == "epochs":
        if end is not None:
            raise ConfigError(f"{where}: epochs has no start or end")
        stage[key] = value
    else:
        cur = stage.get(key, cfg["train"]["lr"] if key == "lr" else None)
        lo, hi = _ramp(where, cur)
        stage[key] = [value, hi] if end == "start" else [lo, value]
    out = copy.deepcopy(cfg)
    out["schedule"]["stages"] = validate_stages(stages)
    return out


# ---------------------------------------------------------------------------- TOML output
def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_fmt(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _fmt(k)


def dumps_toml(cfg: Mapping[str, Any], _prefix: str = "") -> str:
    """Write a config (nested tables, arrays of tables, scalars, lists) as TOML text."""
    lines: list[str] = []
    scalars = {k: v for k, v in cfg.items() if not isinstance(v, Mapping) and not _is_aot(v)}
    for k, v in scalars.items():
        lines.append(f"{_key(k)} = {_fmt(v)}")
    for k, v in cfg.items():
        name = f"{_prefix}{_key(k)}"
        if isinstance(v, Mapping):
            body = dumps_toml(v, name + ".")
            lines.append("")
            lines.append(f"[{name}]")
            lines.append(body)
        elif _is_aot(v):
            for item in v:
                lines.append("")
                lines.append(f"[[{name}]]")
                lines.append(dumps_toml(item, name + "."))
    return "\n".join(line for line in lines).strip("\n") + "\n"


def _is_aot(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(i, Mapping) for i in v)
