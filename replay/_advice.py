"""Next-step advice that runs when pasted into bash: the trial that checks a replay's pick.

Replay shows how a controller behaves; only training shows whether the run ends better, so
the step after compare, sweep and demo is `adaptive trial`, never straight to the live flag.
For a trace of the reference trainer that is a trial of config overrides; for a foreign
trace (imported, or recorded by `TraceRecorder` / the Lightning callback) it is a trial of
the user's own training command.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from adaptive.trace import Trace
from replay._common import SCHEDULER, recorded_config

__all__ = [
    "config_overrides",
    "is_reference_trace",
    "shell_arg",
    "trial_advice",
]

_PLAIN = re.compile(r"^[A-Za-z0-9_./:=,+@%-]+$")


def shell_arg(text: str) -> str:
    """`text` quoted so bash passes it through unchanged: bare when safe, in double quotes
    when it holds single quotes but nothing bash expands there, else `shlex.quote`."""
    if text and _PLAIN.match(text):
        return text
    if not any(ch in text for ch in '"$`\\!'):
        return f'"{text}"'
    return shlex.quote(text)


def adaptive_section(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The `[adaptive]` table that switches `method` on live with `params`."""
    p = dict(params)
    adaptive: dict[str, Any] = {}
    if method == SCHEDULER:
        from adaptive.train.config import scheduler_config

        adaptive["scheduler"] = True
        adaptive.update(scheduler_config(p))
    else:
        adaptive["loss"] = method
        if "adjustment_range" in p:
            adaptive["loss_adjustment_range"] = float(p.pop("adjustment_range"))
        if p:
            adaptive[method] = p
    return adaptive


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v) if "'" not in v else '"' + v.replace('"', '\\"') + '"'
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return repr(v) if v != int(v) or abs(v) >= 1e16 else f"{v:.1f}"
    return str(v)


def config_overrides(method: str, params: Mapping[str, Any]) -> list[str]:
    """`--set` style overrides (`adaptive.loss='dwa'`, `adaptive.dwa.temperature=1.0`)
    that switch `method` on with `params`: what `adaptive trial -c` takes."""
    out: list[str] = []

    def walk(prefix: str, table: Mapping[str, Any]) -> None:
        for k, v in table.items():
            if isinstance(v, Mapping):
                walk(f"{prefix}{k}.", v)
            else:
                out.append(f"{prefix}{k}={_toml_value(v)}")

    walk("adaptive.", adaptive_section(method, params))
    return out


def is_reference_trace(trace: Trace) -> bool:
    """Whether the trace was recorded by the reference trainer (`adaptive train`): its
    run_info holds the whole training config and no foreign `source`."""
    run = trace.run if isinstance(trace.run, Mapping) else {}
    cfg = recorded_config(trace)
    return "source" not in run and all(k in cfg for k in ("run", "adaptive", "model"))


def trial_advice(
    traces: Trace | Sequence[Trace], method: str, params: Mapping[str, Any]
) -> list[str]:
    """What checks whether `method` with `params` makes the run end better: the command
    first (it runs when pasted into bash), then what to adapt in it, if anything.

    Reference-trainer traces: `adaptive trial -c "<overrides>" --seeds 10 --placebo`.
    Anything else: the user's own training command through `adaptive trial --command`,
    which must record a trace into `{run_dir}` (TraceRecorder or the Lightning callback).
    """
    many = [traces] if isinstance(traces, Trace) else list(traces)
    overrides = "; ".join(config_overrides(method, params))
    if many and all(is_reference_trace(t) for t in many):
        return [f"adaptive trial -c {shell_arg(overrides)} --seeds 10 --placebo"]
    template = "python train.py --seed {seed} --out {run_dir} {overrides}"
    live = (
        f"the Lightning callback AdaptiveCallback(..., method={method!r})"
        if method != SCHEDULER
        else "AdaptiveScheduler in your loop"
    )
    return [
        f"adaptive trial --command {shlex.quote(template)} -c {shell_arg(overrides)} --seeds 10",
        "this trace comes from your own trainer: put your training command in --command and "
        "what switches the controller on in it in -c; the command records a trace into "
        f"{{run_dir}} with TraceRecorder, or switches it on with {live} (docs/INTEGRATION.md)",
    ]
