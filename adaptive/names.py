"""Registered names known without importing their modules: what help texts list.

Importing a registry (`adaptive.weighting`) loads torch, which makes `adaptive COMMAND
--help` take seconds. Help reads these static tables instead; `tests/test_cli_help.py`
checks each against its live registry, so a method added without its name here fails a
test. A new registry (e.g. scheduler laws) adds one entry to `REGISTERED` and `LIVE`.
"""

from __future__ import annotations

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
    """The registered names of one kind (`weighting`), without importing the registry."""
    try:
        return REGISTERED[kind]
    except KeyError:
        raise KeyError(f"no name table {kind!r}; kinds: {', '.join(REGISTERED)}") from None
