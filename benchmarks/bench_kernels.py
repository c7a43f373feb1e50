"""Replay kernels benchmark: the per-step recursive methods, compiled kernel vs torch path.

Workload: the synthetic trace of `bench_replay_weighting.py` (--steps step rows, default
100,000, x 8 components, 50 epochs, base weights changing at two stage boundaries, a
NaN/inf step every ~997 steps, `grad_norm/<c>` and `loss_after/<c>` columns), built
before timing ("trace already loaded"). Methods at their class defaults, log-loss with
smoothing 0.9 (its per-step recursion; smoothing 0 is block maths on the torch path).

For each method: `replay_weighting_fast` end to end (the frame included) with the kernel
(best of --repeat, after a warm-up call, so without compile or cache-load time) and on the
torch path (--torch-repeat runs); the kernel's recursion alone; and the largest relative
difference between the two frames' proposed weights. Target: >= 1 M steps/s.

Compile time is measured in fresh processes with an empty numba cache directory (the
first call compiles; cold) and again with that directory filled (the first call loads
the cached machine code; warm): first replay of a 1,000-step trace minus a second one.

Usage: python benchmarks/bench_kernels.py [--steps N] [--repeat R] [--torch-repeat R]
       [--threads T] [--no-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_replay_weighting import COMPONENTS, EPOCHS, synthetic_trace

from replay import _kernels
from replay._weighting_replay import (
    _controller,
    replay_weighting_fast,
    weighting_inputs,
)

TARGET = 1e6
PARAMS: dict[str, dict[str, Any]] = {
    "uncertainty": {},
    "imtl_l": {},
    "famo": {},
    "gradnorm": {},
    "logloss": {"smoothing": 0.9},
}


def first_call(method: str) -> dict[str, float]:
    """(in a fresh process) seconds of the first and second replay of 1,000 steps."""
    trace = synthetic_trace(1000)
    out = {}
    for key in ("first", "second"):
        t0 = time.perf_counter()
        replay_weighting_fast(trace, method, kernels=True, **PARAMS[method])
        out[key] = time.perf_counter() - t0
    return out


def compile_times() -> dict[str, dict[str, float]]:
    """Cold (empty numba cache) and warm (cache filled) first-call overheads per method."""
    res: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for state in ("cold", "warm"):
            for method in PARAMS:
                cmd = [sys.executable, __file__, "--first-call", method]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                t = json.loads(proc.stdout.strip().splitlines()[-1])
                res.setdefault(method, {})[state] = t["first"] - t["second"]
    return res


def recursion_alone(trace: Any, method: str) -> float:
    """Seconds of the method kernel alone over the trace (best of 3)."""
    inputs = weighting_inputs(trace, method=method)
    ctrl = _controller(method, inputs.components, inputs.base[0], None, **PARAMS[method])
    kernel, why = _kernels.select(ctrl, force=True)
    assert kernel is not None, why
    losses = inputs.losses.astype(np.float64)
    finite = np.isfinite(losses).all(axis=1)
    reset = np.zeros(len(losses), dtype=np.bool_)
    extras = {k: v.astype(np.float64) for k, v in inputs.extras.items()}
    best = np.inf
    for _ in range(3):
        fresh = _controller(method, inputs.components, inputs.base[0], None, **PARAMS[method])
        t0 = time.perf_counter()
        kernel.run(fresh.method_impl, losses, finite, reset, extras)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--torch-repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time part")
    ap.add_argument("--first-call", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.first_call:
        print(json.dumps(first_call(args.first_call)))
        return
    if not _kernels.numba_available():
        sys.exit("numba is not installed: pip install -e '.[fast]'")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    print(
        f"workload: synthetic trace {args.steps:,} steps x {COMPONENTS} components, {EPOCHS} "
        f"epochs, trace already loaded; replay_weighting_fast end to end (frame included); "
        f"torch {torch.__version__} ({args.threads} thread), numba "
        f"{_kernels._NUMBA.__version__}, {os.cpu_count()} CPUs; "
        f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
    )
    trace = synthetic_trace(args.steps)
    n = len(trace.steps)
    rows = []
    for method, params in PARAMS.items():
        replay_weighting_fast(synthetic_trace(1000), method, kernels=True, **params)  # compile
        best = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fast = replay_weighting_fast(trace, method, kernels=True, **params)
            best = min(best, time.perf_counter() - t0)
        alone = recursion_alone(trace, method)
        t_torch = np.inf
        for _ in range(args.torch_repeat):
            t0 = time.perf_counter()
            ref = replay_weighting_fast(trace, method, kernels=False, **params)
            t_torch = min(t_torch, time.perf_counter() - t0)
        cols = [f"proposed/weight/{c}" for c in trace.components]
        a, b = fast.frame[cols].to_numpy(), ref.frame[cols].to_numpy()
        rel = float(np.max(np.abs(a - b) / np.abs(b)))
        flags = [f"clamped/{c}" for c in trace.components]
        same_flags = bool((fast.frame[flags].to_numpy() == ref.frame[flags].to_numpy()).all())
        rows.append((method, n / best, best, n / alone, n / t_torch, t_torch, rel, same_flags))
        label = f"{method} (smoothing 0.9)" if method == "logloss" else method
        print(
            f"{label:24s} kernel {n / best:>11,.0f} steps/s ({best * 1e3:6.1f} ms; recursion "
            f"alone {n / alone:>11,.0f} steps/s) | torch {n / t_torch:>9,.0f} steps/s "
            f"({t_torch:6.2f} s) | x{t_torch / best:,.0f} | target >= {TARGET:,.0f}: "
            f"{'met' if n / best >= TARGET else 'MISSED'} | max rel diff of the weights "
            f"{rel:.1e}, clamp flags {'identical' if same_flags else 'DIFFER'}"
        )
    load1 = os.getloadavg()
    print(f"load average after the timings {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if not args.no_compile:
        ct = compile_times()
        for method, t in ct.items():
            print(
                f"{method:24s} first call: compile {t['cold']:.2f} s (empty cache), "
                f"{t['warm']:.2f} s with the cache filled"
            )


if __name__ == "__main__":
    main()
