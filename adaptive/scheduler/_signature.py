"""The scheduler's full signature: the controller's own keywords plus each registered law's
parameters, for `inspect.signature(AdaptiveScheduler)` and for parsers of `--param`."""

from __future__ import annotations

import inspect
from typing import Any

from adaptive.scheduler._law import law_class
from adaptive.scheduler._scheduler import DEFAULT_LAW, AdaptiveScheduler

__all__ = ["scheduler_parameters"]


def _signature(law: str = DEFAULT_LAW) -> inspect.Signature:
    """The constructor's signature with ``law``'s parameters spelled out (what
    ``inspect.signature(AdaptiveScheduler)`` shows: the default law's)."""
    own = list(inspect.signature(AdaptiveScheduler.__init__).parameters.values())[1:]
    kw = inspect.Parameter.KEYWORD_ONLY
    law_params = [
        inspect.Parameter(name, kw, default=default)
        for name, default in law_class(law).defaults().items()
    ]
    at = own.index(next(p for p in own if p.name == "limits"))
    return inspect.Signature(own[:at] + law_params + own[at:-1] + [own[-1]])


def scheduler_parameters() -> dict[str, Any]:
    """Every keyword ``AdaptiveScheduler`` takes with its default: the controller's, then
    every registered law's (the default law's first; a name two laws share keeps the first
    default). What parsers of ``--param law=NAME`` and the law's parameters check against."""
    from adaptive.scheduler._law import available_laws

    out = {p.name: p.default for p in list(_signature().parameters.values())[:-1]}
    for law in available_laws():
        for name, default in law_class(law).defaults().items():
            out.setdefault(name, default)
    return out


AdaptiveScheduler.__signature__ = _signature()  # type: ignore[attr-defined]
