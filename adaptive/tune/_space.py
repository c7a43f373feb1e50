"""The search space of `adaptive tune`: `NAME=SPEC` parameters, SPEC one of `float(lo,hi)`,
`log(lo,hi)`, `int(lo,hi)` or `choice(a,b,...)`, each checked at parse time with a one-line
error that repeats the bad text; define-by-run suggestion with conditional parameters (a
controller's settings are drawn only when that controller is chosen)."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptive.errors import InputError

__all__ = ["Param", "TuneError", "parse_space", "read_space_file"]

_SPEC = re.compile(r"^\s*(float|log|int|choice)\s*\((.*)\)\s*$", re.S)


class TuneError(InputError):
    """A search that cannot run: a bad space, storage, target or option."""


@dataclass(frozen=True)
class Param:
    """One searched parameter: `kind` float | log | int | choice; `low`/`high` for the
    ranges, `choices` (TOML-parsed values) for choice."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def spec(self) -> str:
        if self.kind == "choice":
            return f"choice({','.join(_text(c) for c in self.choices)})"
        lo, hi = (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)
        return f"{self.kind}({lo:g},{hi:g})"

    def suggest(self, trial: Any) -> Any:
        """Draw the value from an Optuna trial (define-by-run)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")

    def contains(self, value: Any) -> bool:
        """Whether `value` lies in the space (to evaluate the current config inside it)."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and float(value) != int(value):
            return False
        return self.low <= value <= self.high


def _text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _value(raw: str) -> Any:
    """A choice's value: TOML (1, 0.5, true, "x") or, failing that, the bare string."""
    raw = raw.strip()
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw.strip("'\"")


def _number(name: str, spec: str, raw: str, integer: bool) -> float:
    try:
        v = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise TuneError(f"--space {name}={spec}: {raw.strip()!r} is not {kind}") from None
    if not math.isfinite(v):
        raise TuneError(f"--space {name}={spec}: bounds must be finite, got {raw.strip()!r}")
    return float(v)


def parse_param(name: str, spec: str) -> Param:
    """`("train.lr", "log(0.0005,0.005)")` -> Param; TuneError (one line) when malformed."""
    name = name.strip()
    if not name or any(not p for p in name.split(".")) or " " in name:
        raise TuneError(f"--space {name}={spec}: the name must be a key such as train.lr")
    m = _SPEC.match(str(spec))
    if not m:
        raise TuneError(
            f"--space {name}={spec}: SPEC must be float(lo,hi), log(lo,hi), int(lo,hi) or "
            "choice(a,b,...)"
        )
    kind, body = m.group(1), m.group(2)
    parts = [p for p in (s.strip() for s in body.split(","))]
    if kind == "choice":
        if any(not p for p in parts):
            raise TuneError(f"--space {name}={spec}: an empty choice")
        choices = tuple(_value(p) for p in parts)
        if len(set(map(repr, choices))) < 2:
            raise TuneError(
                f"--space {name}={spec}: a choice needs at least two different values "
                "(a fixed value belongs in --set)"
            )
        return Param(name, kind, choices=choices)
    if len(parts) != 2:
        raise TuneError(f"--space {name}={spec}: {kind}(lo,hi) takes exactly two bounds")
    lo, hi = (_number(name, spec, p, kind == "int") for p in parts)
    if not lo < hi:
        raise TuneError(f"--space {name}={spec}: empty range (lo must be below hi)")
    if kind == "log" and lo <= 0:
        raise TuneError(f"--space {name}={spec}: log bounds must be > 0")
    return Param(name, kind, lo, hi)


def parse_space(items: Iterable[str] = (), table: Mapping[str, Any] | None = None) -> list[Param]:
    """`NAME=SPEC` strings (the --space options) and a `[tune.space]` table, in order; a
    name given twice is an error."""
    params: list[Param] = []
    for item in items:
        name, sep, spec = str(item).partition("=")
        if not sep:
            raise TuneError(f"--space {item!r}: expected NAME=SPEC, e.g. train.lr=log(1e-4,1e-2)")
        params.append(parse_param(name, spec))
    for name, spec in (table or {}).items():
        params.append(parse_param(str(name), str(spec)))
    seen: set[str] = set()
    for p in params:
        if p.name in seen:
            raise TuneError(f"--space {p.name}: given twice")
        seen.add(p.name)
    if not params:
        raise TuneError("give a search space: --space NAME=SPEC (repeatable) or --space-file")
    return params


def read_space_file(path: str | Path) -> dict[str, Any]:
    """The `[tune.space]` table of a TOML file (NAME = "SPEC")."""
    p = Path(path)
    if not p.is_file():
        raise TuneError(f"--space-file {p}: not found")
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TuneError(f"--space-file {p}: not valid TOML ({exc})") from None
    table = (data.get("tune") or {}).get("space")
    if not isinstance(table, dict) or not table:
        raise TuneError(f'--space-file {p}: no [tune.space] table of NAME = "SPEC" entries')
    return table


def suggest(
    params: Sequence[Param],
    trial: Any,
    live: Callable[[Mapping[str, Any], str], bool],
    selectors: Sequence[str],
) -> dict[str, Any]:
    """Draw the parameters, the `selectors` first (the choices that switch a controller on),
    then each other parameter only when `live(chosen, name)` says it can change the run
    given the selectors chosen (conditional parameters: DWA's temperature only when DWA is
    chosen)."""
    chosen: dict[str, Any] = {}
    first = [p for p in params if p.name in selectors]
    for p in first:
        chosen[p.name] = p.suggest(trial)
    picked = dict(chosen)
    for p in params:
        if p.name not in selectors and live(picked, p.name):
            chosen[p.name] = p.suggest(trial)
    return {p.name: chosen[p.name] for p in params if p.name in chosen}
