"""Scheduler replay benchmark: steps/s of `replay_scheduler_fast` on synthetic traces.

Workload: in-memory traces (reader dtypes: float32 loss_total / grad_norm / schedule_base)
of 100,000 and 1,000,000 step rows, 1,000 steps per epoch, valfree + val epoch metrics, four
stages of base values, ~0.1 % grad spikes, a NaN/inf batch every 9,973 steps; scheduler
defaults (update_interval=50). The trace is built before timing ("trace already loaded").
Each size runs in a fresh process so its peak RSS (resource.getrusage) is its own; the time
is the best of --repeat runs. Target: >= 250,000 steps/s. --compare also times the per-step
`replay._engine.replay_scheduler` on the same trace and checks the frames are identical.

Usage: python benchmarks/bench_replay_scheduler.py [--steps N ...] [--repeat R] [--compare]
       [--set key=value ...]   (scheduler parameters, e.g. --set update_interval=10)
"""

from __future__ import annotations

import argparse
import ast
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from adaptive.trace import Trace
from replay._scheduler_replay import replay_scheduler_fast


def synthetic_trace(n_steps: int, steps_per_epoch: int = 1000, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    step = np.arange(n_steps, dtype=np.int64)
    epoch = (step // steps_per_epoch).astype(np.int32)
    n_ep = int(epoch[-1]) + 1
    rising = 1.0 + 0.4 * (np.sin(step / 7000.0) > 0.9)
    loss = 2.0 * np.exp(-step / n_steps) * rising * rng.lognormal(0, 0.05, n_steps)
    grad = rng.lognormal(0, 0.1, n_steps)
    spikes = rng.random(n_steps) < 1e-3
    grad[spikes] *= rng.uniform(3, 20, spikes.sum())
    loss[4_986::9_973] = np.nan
    grad[3_000::9_973] = np.inf
    stage = np.minimum(epoch * 4 // n_ep, 3)
    strs = {
        c: pd.array([v] * n_steps, dtype="str")
        for c, v in (("run_id", "bench"), ("kind", "step"), ("split", "train"))
    }
    steps = pd.DataFrame(
        {
            **strs,
            "epoch": epoch,
            "step": step,
            "time": step * 1e-3,
            "loss/c0": loss.astype(np.float32),
            "loss_total": loss.astype(np.float32),
            "grad_norm": grad.astype(np.float32),
        }
    )
    for p, v in (
        ("tf_ratio", [1.0, 0.75, 0.5, 0.0]),
        ("freerun_horizon", [0, 4, 8, 13]),
        ("freerun_weight", [0.0, 0.5, 1.0, 1.5]),
    ):
        steps[f"schedule_base/{p}"] = np.asarray(v, dtype=np.float32)[stage]
    rows = []
    free, val = 10.0, 5.0
    for e in range(n_ep):
        phase = (e // 4) % 4
        free *= (1.05, 0.97, 1.04, 1.0)[phase] * rng.uniform(0.995, 1.005)
        val *= (0.98, 0.97, 1.03, 1.0)[phase] * rng.uniform(0.995, 1.005)
        last = min(n_steps, (e + 1) * steps_per_epoch) - 1
        rows += [("val", e, last, val, val), ("valfree", e, last, free, free)]
    ep = pd.DataFrame(rows, columns=["split", "epoch", "step", "metric/YawAbsDeg", "loss_total"])
    ep.insert(0, "kind", pd.array(["epoch"] * len(ep), dtype="str"))
    ep.insert(0, "run_id", pd.array(["bench"] * len(ep), dtype="str"))
    ep = ep.astype({"split": "str", "epoch": np.int32, "loss_total": np.float32})
    return Trace(
        path=Path("synthetic"),
        steps=steps,
        epochs=ep,
        components=["c0"],
        metrics=["YawAbsDeg"],
        version=1,
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _one(n: int, repeat: int, compare: bool, params: dict) -> None:
    replay_scheduler_fast(synthetic_trace(2_000), **params)  # warm-up (imports: torch, ...)
    rss_start = _peak_rss_mb()
    tr = synthetic_trace(n)
    rss_trace = _peak_rss_mb()
    times = []
    res = None
    for _ in range(repeat):
        res = None  # free the previous result first: peak RSS = one result
        t0 = time.perf_counter()
        res = replay_scheduler_fast(tr, **params)
        times.append(time.perf_counter() - t0)
    assert res is not None
    best = min(times)
    n_changes = len(res.events)
    print(
        f"{n:>9,} steps: {n / best:>12,.0f} steps/s (best of {repeat}: {best:.3f} s, "
        f"median {statistics.median(times):.3f} s); {n_changes} changes; peak RSS "
        f"{_peak_rss_mb():,.0f} MB (after imports + warm-up: {rss_start:,.0f} MB, "
        f"+ trace: {rss_trace:,.0f} MB)",
        flush=True,
    )
    if compare:
        from replay._engine import replay_scheduler

        t0 = time.perf_counter()
        ref = replay_scheduler(tr, history_size=10**9, **params)
        t_ref = time.perf_counter() - t0
        pd.testing.assert_frame_equal(res.frame, ref.frame, check_exact=True)
        assert res.events == ref.events
        print(
            f"{'':>9}  per-step replay_scheduler: {n / t_ref:>12,.0f} steps/s "
            f"({t_ref:.2f} s) -> speed-up {t_ref / best:.1f}x; frames and events identical",
            flush=True,
        )


def _parse_set(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    params = _parse_set(args.set)
    if args.one is not None:
        _one(args.one, args.repeat, args.compare, params)
        return
    print(
        "workload: synthetic in-memory trace, 1,000 steps/epoch, valfree+val metrics, 4 stages, "
        "~0.1% grad spikes, NaN/inf every 9,973 steps; AdaptiveScheduler("
        + ", ".join(f"{k}={v!r}" for k, v in params.items())
        + f") defaults otherwise; cores={os.cpu_count()}; fresh process per size; "
        "target >= 250,000 steps/s"
    )
    for n in args.steps:
        cmd = [sys.executable, __file__, "--one", str(n), "--repeat", str(args.repeat)]
        cmd += ["--compare"] if args.compare else []
        cmd += ["--set", *args.set] if args.set else []
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
