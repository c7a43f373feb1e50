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
from pathlib import Path
from typing import Any

from adaptive.trace import Trace
from replay._common import SCHEDULER, recorded_config

__all__ = [
    "ADAPTIVE_CONFIG_FLAG",
    "COMMAND_TEMPLATE",
    "config_overrides",
    "is_reference_trace",
    "shell_arg",
    "trial_advice",
    "trial_metric",
]

#: The documented convention (docs/INTEGRATION.md): a training script takes the recommended
#: file's path with this flag and builds its controllers with `controllers_from_config`.
ADAPTIVE_CONFIG_FLAG = "--adaptive-config"
#: The user's training command as the advice shows it (they put theirs in its place).
COMMAND_TEMPLATE = "python train.py --seed {seed} --out {run_dir} {overrides}"
#: Metric names taken as higher-is-better (accuracy-like); any other is taken as lower.
_HIGHER = re.compile(
    r"(^|[^a-z])(acc|accuracy|auc|auroc|ap|map|f1|f_1|fscore|precision|recall|iou|miou|dice|"
    r"bleu|rouge|r2|psnr|ssim|score|reward|return|top1|top5|hit|ndcg|mrr)($|[^a-z])",
    re.I,
)
#: Evaluation splits in order of preference for a trial's primary metric: held-out first.
_SPLITS = ("valfree_ema", "val_ema", "valfree", "val", "validation", "eval", "dev", "test")

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


def higher_is_better(name: str) -> bool:
    """Whether a metric name reads as accuracy-like (higher is better): `acc`, `f1`, `auc`,
    `iou`, `bleu`, `score`, ... as a word of the name; anything else (losses, errors,
    distances) is taken as lower is better."""
    return bool(_HIGHER.search(name.replace("/", " ")))


def trial_metric(traces: Trace | Sequence[Trace]) -> tuple[str, bool] | None:
    """A trial's primary metric from the evaluations the traces hold: `(split/name,
    higher_is_better)`, or None when they hold none. Held-out splits first (`_SPLITS`,
    then any other but `train`), within a split the first metric recorded; only one that
    every trace holds with a value. The direction is guessed from the name
    (`higher_is_better`)."""
    many = [traces] if isinstance(traces, Trace) else list(traces)
    if not many:
        return None

    def held(t: Trace) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if not len(t.epochs) or "split" not in t.epochs.columns:
            return out
        for split in t.epochs["split"].dropna().astype(str).unique():
            rows = t.epochs[t.epochs["split"] == split]
            names = [
                m
                for m in t.metrics
                if "/" not in m
                and f"metric/{m}" in rows.columns
                and rows[f"metric/{m}"].notna().any()
            ]
            if "loss_total" in rows.columns and rows["loss_total"].notna().any():
                names.append("loss")
            if names and "/" not in split:
                out[split] = names
        return out

    each = [held(t) for t in many]
    first = each[0]
    order = [s for s in _SPLITS if s in first]
    order += sorted(s for s in first if s not in order and not s.startswith("train"))
    for split in order:
        for name in first[split]:
            if all(name in h.get(split, []) for h in each[1:]):
                return f"{split}/{name}", higher_is_better(name)
    return None


def trial_advice(
    traces: Trace | Sequence[Trace],
    method: str,
    params: Mapping[str, Any],
    *,
    config_path: str | Path | None = None,
) -> list[str]:
    """What checks whether `method` with `params` makes the run end better: the command
    first (it runs when pasted into bash), then what to adapt in it, if anything.

    Reference-trainer traces: `adaptive trial -c "<overrides>" --seeds 10 --placebo`.
    Anything else: the user's own training command through `adaptive trial --command`,
    which must record a trace into `{run_dir}` (TraceRecorder or the Lightning callback).
    Its candidate is `--adaptive-config PATH` (`config_path`, the recommended file; the
    script builds its controllers from it with `adaptive.controllers_from_config`), and
    `--metric` is an evaluation metric the traces hold (`trial_metric`), its direction
    guessed from its name and said so.
    """
    many = [traces] if isinstance(traces, Trace) else list(traces)
    overrides = "; ".join(config_overrides(method, params))
    if many and all(is_reference_trace(t) for t in many):
        return [f"adaptive trial -c {shell_arg(overrides)} --seeds 10 --placebo"]
    if config_path is not None:
        law = params.get("law") if method == SCHEDULER else None
        name = f"{method}-{law}" if law else method  # the trial's arm names the law it runs
        candidate = f"{name}: {ADAPTIVE_CONFIG_FLAG} {shlex.quote(str(config_path))}"
        takes = (
            f"{ADAPTIVE_CONFIG_FLAG} PATH (a recommended file: build the controllers with "
            "adaptive.controllers_from_config(PATH, components=[...]), as examples/plain_loop.py "
            "does)"
        )
    else:
        candidate = overrides
        takes = "what switches the controller on, given in -c"
    picked = trial_metric(many)
    if picked is None:
        metric, direction = (
            " --metric val/METRIC",
            (
                "the trace holds no evaluation metrics: record one from your command "
                "(TraceRecorder.log_epoch(split='val', metrics={...})) and name it in --metric "
                "split/name (add --higher-is-better for an accuracy-like one)"
            ),
        )
    else:
        name, higher = picked
        metric = f" --metric {shell_arg(name)}" + (" --higher-is-better" if higher else "")
        direction = f"--metric {name} is an evaluation metric this trace holds; " + (
            "higher is taken as better (guessed from its name: drop --higher-is-better if not)"
            if higher
            else "lower is taken as better (guessed from its name: add --higher-is-better if not)"
        )
    live = (
        "the Lightning callback AdaptiveCallback(..., config=PATH)"
        if method != SCHEDULER
        else "AdaptiveScheduler in your loop"
    )
    command = (
        f"adaptive trial --command {shlex.quote(COMMAND_TEMPLATE)} -c {shell_arg(candidate)}"
        f"{metric} --seeds 10"
    )
    return [
        command,
        "this trace comes from your own trainer: put your training command in --command; it "
        f"takes --seed, --out (records a trace into {{run_dir}} with TraceRecorder, or with "
        f"{live}) and {takes} (docs/INTEGRATION.md)",
        direction,
    ]
