"""Weighting replay benchmark: steps/s of `replay_weighting_fast` and a 256-config sweep.

Workload: an in-memory synthetic trace (reader dtypes: float32 `loss/<c>`, float64
`weight_base/<c>`) of --steps step rows (default 100,000) x 8 components, 50 epochs of
equal length, base weights changing at two stage boundaries (one mid-epoch), a NaN/inf
step every ~997 steps. The trace is built before timing ("trace already loaded").

Parts (each in a fresh process, so its peak RSS from resource.getrusage is its own):

* single: `replay_weighting_fast` for `dwa` and `uncertainty` with one configuration,
  end to end (the frame included); best of --repeat runs. The per-step recursive methods
  run their compiled replay kernel where numba is installed (`ADAPTIVE_REPLAY_KERNELS=0`:
  the torch path; `bench_kernels.py` times the two side by side). Targets: dwa >= 5 M steps/s,
  uncertainty >= 250 k steps/s. --compare also times the per-step
  `replay._engine.replay_weighting` on the first --compare-steps rows and checks the
  frames are identical there.
* sweep: `sweep_weighting` with 256 `uncertainty` configurations (16 lr x 4 adjustment
  ranges x 4 beta1), outputs proposed/deltas/clamped/scales as (T, K, C) arrays. The
  sequential figure is an ESTIMATE: --seq-configs configurations replayed one after
  another with `replay_weighting_fast`, extrapolated to 256. Also timed first, streaming:
  no arrays kept, each block reduced as it comes (`outputs=()`, `on_block`). Targets
  (issue 27): <= 5 s streaming, <= 10 s keeping outputs; peak RSS of each. Above 200,000
  steps the (T, K, C) outputs would not fit in memory (1.6 GB per array per 100k steps):
  the "kept" run then streams too. With numba the sweep runs each configuration's
  compiled kernel on every core (replay/_kernel_sweep.py).

Usage: python benchmarks/bench_replay_weighting.py [--steps N] [--repeat R] [--compare]
       [--threads T] [--part single|sweep] [--all-methods]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from adaptive.trace import Trace
from replay._weighting_replay import replay_weighting_fast, sweep_weighting

COMPONENTS = 8
EPOCHS = 50
SWEEP_CONFIGS = 256


def synthetic_trace(n_steps: int, components: int = COMPONENTS, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    comps = [f"c{i}" for i in range(components)]
    step = np.arange(n_steps, dtype=np.int64)
    epoch = (step * EPOCHS // n_steps).astype(np.int32)
    scale = rng.lognormal(0, 1.5, components)
    decay = rng.uniform(0.95, 1.01, components)
    losses = scale * decay ** epoch[:, None] * rng.lognormal(0, 0.3, (n_steps, components))
    losses = losses.astype(np.float32)
    losses[498::997, 1] = np.nan
    losses[997::1994, 2] = np.inf
    stage = np.zeros(n_steps, dtype=np.int64)
    stage[n_steps // 3 + 17 :] = 1  # mid-epoch change
    stage[(EPOCHS * 2 // 3) * n_steps // EPOCHS :] = 2  # at an epoch start
    strs = {
        c: pd.array([v] * n_steps, dtype="str")
        for c, v in (("run_id", "bench"), ("kind", "step"), ("split", "train"))
    }
    steps = pd.DataFrame({**strs, "epoch": epoch, "step": step, "time": step * 1e-3})
    for j, c in enumerate(comps):
        steps[f"loss/{c}"] = losses[:, j]
    for j, c in enumerate(comps):
        steps[f"weight_base/{c}"] = np.array([1.0, 0.5 + 0.1 * j, 2.0])[stage]
    # the extras GradNorm and FAMO read (gradient norms, losses after the step)
    noise = rng.lognormal(0, 0.2, (n_steps, components)).astype(np.float32)
    for j, c in enumerate(comps):
        steps[f"grad_norm/{c}"] = np.sqrt(np.abs(losses[:, j])) * noise[:, j]
        steps[f"loss_after/{c}"] = losses[:, j] * (0.999 - 0.002 * noise[:, j])
    ep = pd.DataFrame(
        {
            "run_id": pd.array([], dtype="str"),
            "kind": pd.array([], dtype="str"),
            "split": pd.array([], dtype="str"),
            "epoch": np.array([], dtype=np.int32),
        }
    )
    return Trace(
        path=Path("synthetic"), steps=steps, epochs=ep, components=comps, metrics=[], version=1
    )


def sweep_configs() -> list[dict[str, Any]]:
    lrs = np.geomspace(1e-3, 0.3, 16).tolist()
    return [
        {"lr": lr, "adjustment_range": r, "beta1": b1}
        for lr in lrs
        for r in (0.1, 0.2, 0.3, 0.5)
        for b1 in (0.0, 0.5, 0.9, 0.95)
    ]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def part_single(args: argparse.Namespace) -> dict[str, Any]:
    trace = synthetic_trace(args.steps)
    n = len(trace.steps)
    out: dict[str, Any] = {}
    chosen: list[tuple[str, dict[str, Any]]] = [
        ("dwa", {"temperature": 2.0}),
        ("uncertainty", {"lr": 0.01}),
    ]
    if args.all_methods:
        from adaptive.weighting import available_methods

        chosen += [(m, {}) for m in available_methods() if m not in ("dwa", "uncertainty")]
    for method, params in chosen:
        replay_weighting_fast(synthetic_trace(4000), method, **params)  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = replay_weighting_fast(trace, method, **params)
            times.append(time.perf_counter() - t0)
        out[method] = {"seconds": min(times), "steps_per_s": n / min(times)}
        if args.compare:
            from replay._engine import replay_weighting

            m = min(args.compare_steps, n)
            head = Trace(**{**trace.__dict__, "steps": trace.steps.iloc[:m].copy()})
            t0 = time.perf_counter()
            old = replay_weighting(head, method, **params)
            t_old = time.perf_counter() - t0
            new = replay_weighting_fast(head, method, **params)
            pd.testing.assert_frame_equal(new.frame, old.frame, check_exact=True)
            out[method]["per_step_steps_per_s"] = m / t_old
        assert len(res.frame) == n
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def part_sweep(args: argparse.Namespace) -> dict[str, Any]:
    trace = synthetic_trace(args.steps)
    n = len(trace.steps)
    configs = sweep_configs()
    assert len(configs) == SWEEP_CONFIGS
    keep = n <= 200_000
    sweep_weighting(synthetic_trace(4000), "uncertainty", configs[:4])  # warm-up
    rss_before = peak_rss_mb()
    acc: dict[str, Any] = {}

    def reduce(a: int, b: int, blk: Any) -> None:  # e.g. mean |delta| per config
        s = blk.deltas.abs().sum(dim=(0, 2))
        acc["abs_delta"] = s if "abs_delta" not in acc else acc["abs_delta"] + s

    t0 = time.perf_counter()  # streaming first, so its peak memory is its own
    sweep_weighting(trace, "uncertainty", configs, outputs=(), on_block=reduce)
    t_stream = time.perf_counter() - t0
    rss_stream = peak_rss_mb()
    t0 = time.perf_counter()
    if keep:
        res = sweep_weighting(trace, "uncertainty", configs)
        assert res["proposed"].shape == (n, SWEEP_CONFIGS, COMPONENTS)
        del res
    else:
        sweep_weighting(trace, "uncertainty", configs, outputs=(), on_block=reduce)
    t_batched = time.perf_counter() - t0
    rss_sweep = peak_rss_mb()
    k = args.seq_configs
    t0 = time.perf_counter()
    for cfg in configs[:k]:
        replay_weighting_fast(trace, "uncertainty", **cfg)
    t_seq = (time.perf_counter() - t0) / k * SWEEP_CONFIGS
    return {
        "seconds": t_batched,
        "streaming_seconds": t_stream,
        "sequential_estimate_s": t_seq,
        "seq_configs_timed": k,
        "speedup": t_seq / t_batched,
        "outputs_kept": keep,
        "peak_rss_mb": rss_sweep,
        "streaming_peak_rss_mb": rss_stream,
        "rss_before_mb": rss_before,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000, help="step rows (e.g. 1000000)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--compare-steps", type=int, default=5_000)
    ap.add_argument("--seq-configs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: keep)")
    ap.add_argument("--part", choices=("single", "sweep"), default=None)
    ap.add_argument(
        "--all-methods",
        action="store_true",
        help="single: also every other registered method (class defaults)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part is not None:
        fn = part_single if args.part == "single" else part_sweep
        print(json.dumps(fn(args)))
        return
    print(
        f"workload: synthetic trace {args.steps:,} steps x {COMPONENTS} components, "
        f"{EPOCHS} epochs, trace already loaded; torch {torch.__version__}, "
        f"{args.threads or torch.get_num_threads()} intra-op threads"
    )
    results = {}
    for part in ("single", "sweep"):
        cmd = [sys.executable, __file__, "--part", part, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[part] = json.loads(proc.stdout.strip().splitlines()[-1])
    single = results["single"]
    for method, target in (("dwa", 5e6), ("uncertainty", 2.5e5)):
        r = single[method]
        extra = ""
        if "per_step_steps_per_s" in r:
            extra = (
                f"; per-step replay {r['per_step_steps_per_s']:,.0f} steps/s on the first "
                f"{args.compare_steps:,} rows (frames identical)"
            )
        print(
            f"single config {method:12s}: {r['steps_per_s']:>12,.0f} steps/s "
            f"({r['seconds'] * 1e3:.1f} ms, target >= {target:,.0f}){extra}"
        )
    from replay._kernels import KERNEL_METHODS, enabled, numba_available

    kernels = numba_available() and enabled()
    for method, r in single.items():
        if method in ("dwa", "uncertainty", "peak_rss_mb"):
            continue
        how = "block maths"
        if method in KERNEL_METHODS:
            how = "compiled kernel" if kernels else "torch path; bench_kernels.py compares"
        print(
            f"single config {method:12s}: {r['steps_per_s']:>12,.0f} steps/s "
            f"({r['seconds'] * 1e3:.1f} ms; {how})"
        )
    print(f"single config peak RSS: {single['peak_rss_mb']:,.0f} MB")
    sw = results["sweep"]
    kept = (
        "outputs (T, K, C) proposed/deltas/clamped/scales"
        if sw["outputs_kept"]
        else ("no arrays kept, per-block reduction (too large to keep)")
    )
    t_s = sw["streaming_seconds"]
    print(
        f"sweep {SWEEP_CONFIGS} configs of uncertainty, streaming (per-block reduction, no "
        f"(T, K, C) arrays kept): {t_s:.2f} s (target <= 5 s: "
        f"{'met' if t_s <= 5 else 'MISSED'}); peak RSS {sw['streaming_peak_rss_mb']:,.0f} MB "
        f"(before the sweeps {sw['rss_before_mb']:,.0f} MB)"
    )
    print(
        f"sweep {SWEEP_CONFIGS} configs of uncertainty, {kept}: {sw['seconds']:.2f} s "
        f"(target <= 10 s: {'met' if sw['seconds'] <= 10 else 'MISSED'}); peak RSS "
        f"{sw['peak_rss_mb']:,.0f} MB"
    )
    print(
        f"  one replay per configuration, one after another: ESTIMATE "
        f"{sw['sequential_estimate_s']:.1f} s (extrapolated from {sw['seq_configs_timed']} "
        f"configs; with numba these are kernel replays too) -> the sweep is "
        f"{sw['sequential_estimate_s'] / sw['seconds']:.1f}x (kept) and "
        f"{sw['sequential_estimate_s'] / t_s:.1f}x (streaming) faster"
    )


if __name__ == "__main__":
    main()
