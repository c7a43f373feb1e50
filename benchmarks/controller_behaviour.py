"""How the controllers behave on a recorded run: the figures quoted in docs/STABILITY.md.

Replays the scheduler, DWA and uncertainty weighting (library defaults) over one trace and
prints, for the workload named on the first line:

* scheduler: share of steps with delta at its bound, changes by reason, share of steps
  away from 0;
* DWA: share of (step, component) pairs at the clamp in the epochs around each stage
  change of the run's stage schedule (the change epoch and the two after), and overall;
* uncertainty: settling step, the first step at which every component's log-variance s
  is within 0.5 of its equilibrium log(mean loss over the surrounding 50 steps), and the
  median distance |s - equilibrium| over the run (how far behind the losses it lags).

Usage (train the default demo run first, controllers in dry-run so the run is the base
run):

    adaptive train --out runs --name demo --set "adaptive.loss='dwa'" \\
        --set adaptive.scheduler=true --set adaptive.dry_run=true
    python benchmarks/controller_behaviour.py runs/demo/trace.parquet

Only public APIs that every version of the toolkit has are used, so the same script gives
the "before" figures when run against an older checkout (PYTHONPATH=that checkout).
"""

from __future__ import annotations

import sys

import numpy as np


def stage_change_epochs(trace) -> list[int]:
    cfg = trace.run.get("config", {}) if isinstance(trace.run, dict) else {}
    stages = cfg.get("schedule", {}).get("stages", [])
    out, start = [], 0
    for s in stages[:-1]:
        start += int(s["epochs"])
        out.append(start)
    return out


def settle_step(res, trace, comps) -> tuple[float, float]:
    f = res.frame
    s = np.stack([f[f"uncertainty/log_var/{c}"].to_numpy() for c in comps], axis=1)
    cols = [f"loss_tf/{c}" if f"loss_tf/{c}" in trace.steps else f"loss/{c}" for c in comps]
    losses = trace.steps[cols].to_numpy(dtype=np.float64)
    n = len(losses)
    ref = np.empty_like(losses)
    for t in range(n):
        ref[t] = np.nanmean(losses[max(0, t - 25) : t + 25], axis=0)
    dist = np.abs(s - np.log(ref))
    near = np.flatnonzero(np.all(dist < 0.5, axis=1))
    return (float(near[0]) if near.size else float("nan")), float(np.nanmedian(dist))


def main(path: str) -> None:
    from adaptive import read_trace
    from replay import replay

    trace = read_trace(path)
    comps = list(trace.components)
    n = len(trace.steps)
    epochs = trace.steps["epoch"].to_numpy()
    print(f"workload: {path}: {n} steps, {len(np.unique(epochs))} epochs, components {comps}")

    sch = replay(trace, "scheduler")
    delta = sch.frame["delta"].to_numpy()
    r = float(sch.params["adjustment_range"])
    reasons: dict[str, int] = {}
    for ev in sch.events:
        reasons[ev["reason"]] = reasons.get(ev["reason"], 0) + 1
    print(
        f"scheduler: at bound on {np.mean(np.abs(delta) >= r - 1e-9):.1%} of steps, "
        f"away from 0 on {np.mean(delta != 0):.1%}, final delta {delta[-1]:+.2f}, "
        f"changes {dict(sorted(reasons.items()))}"
    )
    for note in getattr(sch, "notes", []):
        print(f"  note: {note}")

    dwa = replay(trace, "dwa")
    clamped = np.stack([dwa.frame[f"clamped/{c}"].to_numpy() for c in comps], axis=1)
    print(f"dwa: clamped on {clamped.mean():.1%} of (step, component) pairs overall")
    for e0 in stage_change_epochs(trace):
        sel = (epochs >= e0) & (epochs <= e0 + 2)
        if sel.any():
            per_c = clamped[sel].mean(axis=0)
            print(
                f"  stage change at epoch {e0}: epochs {e0}-{e0 + 2} clamped on "
                f"{clamped[sel].mean():.1%} (per component: "
                + ", ".join(f"{c} {v:.0%}" for c, v in zip(comps, per_c, strict=True))
                + ")"
            )
    for note in getattr(dwa, "notes", []):
        print(f"  note: {note}")

    unc = replay(trace, "uncertainty")
    settle, lag = settle_step(unc, trace, comps)
    w = np.stack([unc.frame[f"proposed/weight/{c}"].to_numpy() for c in comps], axis=1)
    base = np.stack([unc.frame[f"base/{c}"].to_numpy() for c in comps], axis=1)
    at = np.stack([unc.frame[f"clamped/{c}"].to_numpy() for c in comps], axis=1)
    print(
        f"uncertainty: |s - log L| < 0.5 for all components first at step {settle:g} "
        f"(nan: never), median |s - log L| {lag:.2f}; "
        f"clamped on {at.mean():.1%} of (step, component) pairs; final weights/base "
        + ", ".join(f"{c} {v:.2f}" for c, v in zip(comps, (w[-1] / base[-1]), strict=True))
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/controller_behaviour.py TRACE")
    main(sys.argv[1])
