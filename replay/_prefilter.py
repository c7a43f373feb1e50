"""Replay as a free pre-filter for a search (`adaptive tune`): before a configuration that
switches a controller on trains, replay that controller over a baseline run's trace and say
whether it would do anything worth training for. A controller that stays inert (its weights
or schedule never move off the base values) trains what the baseline trains; one pinned at
its clamp most of the time is a switch, not a controller. Either is a reason to skip."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adaptive.trace import Trace
from replay._common import SCHEDULER
from replay._engine import ReplayError, config_settings, replay
from replay._stability_metrics import stability_metrics

__all__ = ["INERT_DELTA", "PINNED_SHARE", "prefilter"]

#: Skip when the controller sits at its clamp (or bound) on more than this share of steps.
PINNED_SHARE = 0.5
#: Skip a loss weighting whose weights move less than this on average (relative to base),
#: or a scheduler that never changes its delta.
INERT_DELTA = 0.01


def prefilter(
    trace: Trace,
    config: Mapping[str, Any],
    *,
    pinned: float = PINNED_SHARE,
    inert: float = INERT_DELTA,
) -> str | None:
    """Replay every controller the reference-trainer `config` switches on over `trace` (a
    baseline run); the reason to skip the configuration, or None to train it. A controller
    the trace cannot replay (missing inputs) is never a reason to skip."""
    a = config.get("adaptive", {}) if isinstance(config, Mapping) else {}
    methods = [a["loss"]] if a.get("loss", "none") != "none" else []
    methods += [SCHEDULER] if a.get("scheduler") else []
    for method in methods:
        try:
            result = replay(trace, method, **config_settings(config, method))
        except ReplayError:
            continue
        m = stability_metrics(result)
        if method == SCHEDULER:
            share = float(m.get("at_bound_share", 0.0))
            if float(m.get("changes", 0.0)) == 0:
                return "replay: the scheduler never changes its delta on the baseline's trace"
        else:
            share = float(m.get("at_clamp_share_max", 0.0))
            moves = [v for k, v in m.items() if k.startswith("mean_abs_delta/")]
            if moves and max(moves) < inert:
                return (
                    f"replay: {method} moves its weights by {100 * max(moves):.2g} % at most on "
                    f"average (< {100 * inert:g} %): inert"
                )
        if share > pinned:
            what = "bound" if method == SCHEDULER else "clamp"
            return (
                f"replay: {method} sits at its {what} on {100 * share:.0f} % of the baseline's "
                f"steps (> {100 * pinned:.0f} %): a switch, not a controller"
            )
    return None
