"""Registered names known without importing their modules: what help texts list.

Importing a registry (`adaptive.weighting`) loads torch, which makes `adaptive COMMAND
--help` take seconds. Help reads these static tables instead (or the live registry when
something already loaded it); `tests/test_cli_help.py`
checks each against its live registry, so a method added without its name here fails a
test. A new registry (e.g. scheduler laws) adds one entry to `REGISTERED` and `LIVE`.
"""

from __future__ import annotations

import sys

__all__ = ["LIVE", "REGISTERED", "registered"]

# kind -> the names its registry holds, sorted (as the registry lists them)
REGISTERED: dict[str, tuple[str, ...]] = {
    "weighting": (
        "dwa",
        "famo",
        "gradnorm",
        "imtl_l",
        "lbtw",
        "logloss",
        "rlw",
        "softadapt",
        "uncertainty",
    ),
}

# kind -> (module, function) that lists the live registry, for the agreement test
LIVE: dict[str, tuple[str, str]] = {
    "weighting": ("adaptive.weighting", "available_methods"),
}


def registered(kind: str) -> tuple[str, ...]:
    """The registered names of one kind (`weighting`) without importing the registry: the
    live registry's when it is already loaded (it may hold names registered at run time,
    by a plugin or a test), else the static table."""
    if kind not in REGISTERED:
        raise KeyError(f"no name table {kind!r}; kinds: {', '.join(REGISTERED)}")
    module, function = LIVE[kind]
    live = sys.modules.get(module)
    if live is not None and hasattr(live, function):
        return tuple(getattr(live, function)())
    return REGISTERED[kind]
