"""adaptive: adaptive loss weighting and training-schedule control, with offline replay.

Controllers (`AdaptiveLossWeighting`, `AdaptiveScheduler`) are small deterministic state
machines; the trace (`adaptive.trace`) records what a run saw so `replay` can run the same
controllers offline. Heavy submodules (torch, pyarrow) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from adaptive._version import __version__

if TYPE_CHECKING:
    from adaptive._recommend import Controllers, controllers_from_config
    from adaptive.record import TraceRecorder
    from adaptive.scheduler import AdaptiveScheduler
    from adaptive.trace import Trace, TraceError, TraceWriter, read_trace
    from adaptive.weighting import AdaptiveLossWeighting

# Loaded on first use, so `adaptive --version` and `--help` import neither torch nor pyarrow.
_LAZY = {
    "AdaptiveLossWeighting": "adaptive.weighting",
    "AdaptiveScheduler": "adaptive.scheduler",
    "Trace": "adaptive.trace",
    "TraceError": "adaptive.trace",
    "TraceWriter": "adaptive.trace",
    "read_trace": "adaptive.trace",
    "TraceRecorder": "adaptive.record",
    "Controllers": "adaptive._recommend",
    "controllers_from_config": "adaptive._recommend",
}

__all__ = [
    "AdaptiveLossWeighting",
    "AdaptiveScheduler",
    "Controllers",
    "Trace",
    "TraceError",
    "TraceRecorder",
    "TraceWriter",
    "__version__",
    "controllers_from_config",
    "read_trace",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adaptive' has no attribute {name!r}")
