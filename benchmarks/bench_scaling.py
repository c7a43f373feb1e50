"""Scaling benchmark: how the cost of replay grows with steps, components, configurations
and runs (issue 27, item 4), each axis measured at two sizes.

Workload (built before timing, "trace already loaded"; fleets written before timing):

* steps: the synthetic trace of `bench_replay_weighting.py` (8 components, 50 epochs, base
  weights changing at two stage boundaries, a NaN/inf step every ~997 steps,
  `grad_norm/<c>` and `loss_after/<c>` columns) of 100,000 and 1,000,000 step rows;
  `replay_weighting_fast` for dwa (block method), uncertainty and famo (compiled kernels
  where numba is installed), and `replay_scheduler_fast` on the scheduler trace of
  `bench_replay_scheduler.py` (1,000 steps per epoch, scheduler defaults) of the same
  lengths;
* components: that weighting trace with 4 and 16 components x 100,000 steps; dwa,
  uncertainty, famo;
* configs: `sweep_weighting` over 100,000 x 8 of 16 and 256 configurations, streaming
  (`outputs=()`, an `on_block` that sums |deltas| per configuration): uncertainty (the
  first 16 of `sweep_configs()`, and all 256; with numba a kernel sweep whose threads use
  every core, whatever torch's thread count) and dwa (16 temperatures x 16 adjustment
  ranges; the first 16: the 16 temperatures at the first range; the batched torch path);
* runs: fleets of 100 and 400 runs of 10,000 steps x 4 components (`bench_fleet.py`'s
  `write_fleet`, in a temporary folder): `read_trace` of every trace one after another
  (the floor), and `replay_fleet(root, "dwa", out, jobs=J)` for J = 1 (this process) and
  2 (a spawned process pool; its start-up, a fresh interpreter importing torch per worker,
  is included, so it is a fixed cost that small fleets feel most).

Timed: wall seconds, best of --repeat (default 3), after one warm-up call per method on a
small input (no compile or cache-load time in the figures). torch runs on one thread.
Printed: one row per (axis, size, method) with its seconds and a unit cost (µs per step;
µs per step-component; ms per configuration; ms per run), then for each (axis, method)
the scaling exponent log(t_big / t_small) / log(size_big / size_small) (1.0: linear;
below 1: a fixed cost still shows at the small size). --quick divides every size by 10
(the configuration counts stay 16 and 256, over 10,000 steps; fleets of 20 and 40 runs
of 1,000 steps): a check that the script works, not figures to quote.

Usage: python benchmarks/bench_scaling.py [--repeat R] [--axes steps,components,configs,runs]
       [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fleet import COMPONENTS as FLEET_COMPONENTS
from bench_fleet import write_fleet
from bench_replay_scheduler import synthetic_trace as scheduler_trace
from bench_replay_weighting import sweep_configs
from bench_replay_weighting import synthetic_trace as weighting_trace

from replay._kernels import KERNEL_METHODS, enabled, numba_available
from replay._scheduler_replay import replay_scheduler_fast
from replay._weighting_replay import replay_weighting_fast, sweep_weighting

AXES = ("steps", "components", "configs", "runs")
#: One configuration per method for the single replays.
PARAMS: dict[str, dict[str, Any]] = {
    "dwa": {"temperature": 2.0},
    "uncertainty": {"lr": 0.01},
    "famo": {},
}
UNITS = {
    "steps": "us/step",
    "components": "us/step-comp",
    "configs": "ms/config",
    "runs": "ms/run",
}
WARM_STEPS = 4_000


def dwa_configs() -> list[dict[str, Any]]:
    """16 temperatures x 16 adjustment ranges; the first 16 share the first range."""
    temps = np.geomspace(0.1, 5.0, 16).tolist()
    ranges = np.linspace(0.05, 1.5, 16).tolist()
    return [{"temperature": t, "adjustment_range": r} for r in ranges for t in temps]


def best_of(repeat: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Best wall seconds of `repeat` calls `fn(*args, **kwargs)`; each result is freed
    before the next call."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
        del res
    return min(times)


def row(axis: str, size: int, method: str, seconds: float, work: float) -> dict[str, Any]:
    """`work`: steps (steps), step-components (components), configurations, runs."""
    scale = 1e6 if axis in ("steps", "components") else 1e3
    return {
        "axis": axis,
        "size": size,
        "method": method,
        "seconds": seconds,
        "unit": UNITS[axis],
        "unit_cost": scale * seconds / work,
    }


def show(r: dict[str, Any]) -> None:
    print(
        f"  {r['axis']:<11} {r['size']:>10,} {r['method']:<22} {r['seconds']:>9.3f} s "
        f"{r['unit_cost']:>10.3f} {r['unit']}",
        flush=True,
    )


def axis_steps(sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for method, params in PARAMS.items():
        replay_weighting_fast(weighting_trace(WARM_STEPS), method, **params)  # warm-up
    replay_scheduler_fast(scheduler_trace(2_000))  # warm-up
    for n in sizes:
        trace = weighting_trace(n)
        for method, params in PARAMS.items():
            t = best_of(repeat, replay_weighting_fast, trace, method, **params)
            rows.append(row("steps", n, method, t, n))
            show(rows[-1])
        del trace
        strace = scheduler_trace(n)
        t = best_of(repeat, replay_scheduler_fast, strace)
        rows.append(row("steps", n, "scheduler", t, n))
        show(rows[-1])
        del strace
    return rows


def axis_components(sizes: list[int], steps: int, repeat: int) -> list[dict[str, Any]]:
    rows = []
    for c in sizes:
        warm = weighting_trace(WARM_STEPS, c)
        for method, params in PARAMS.items():
            replay_weighting_fast(warm, method, **params)  # warm-up
        trace = weighting_trace(steps, c)
        for method, params in PARAMS.items():
            t = best_of(repeat, replay_weighting_fast, trace, method, **params)
            rows.append(row("components", c, method, t, steps * c))
            show(rows[-1])
        del trace
    return rows


def axis_configs(sizes: list[int], steps: int, repeat: int) -> list[dict[str, Any]]:
    grids = {"uncertainty": sweep_configs(), "dwa": dwa_configs()}
    assert all(len(g) >= max(sizes) for g in grids.values())
    acc: dict[str, Any] = {}

    def reduce(a: int, b: int, blk: Any) -> None:  # sum of |delta| per configuration
        s = blk.deltas.abs().sum(dim=(0, 2))
        acc["abs_delta"] = s if "abs_delta" not in acc else acc["abs_delta"] + s

    def sweep(trace: Any, method: str, configs: list[dict[str, Any]]) -> Any:
        acc.clear()
        sweep_weighting(trace, method, configs, outputs=(), on_block=reduce)
        assert acc["abs_delta"].shape == (len(configs),)
        return acc["abs_delta"]

    warm = weighting_trace(WARM_STEPS)
    for method, grid in grids.items():
        sweep(warm, method, grid[:4])  # warm-up
    trace = weighting_trace(steps)
    rows = []
    for method, grid in grids.items():
        for k in sizes:
            t = best_of(repeat, sweep, trace, method, grid[:k])
            rows.append(row("configs", k, method, t, k))
            show(rows[-1])
    return rows


def axis_runs(
    sizes: list[int], steps: int, jobs: list[int], repeat: int, tmp: Path
) -> list[dict[str, Any]]:
    from adaptive.trace import read_trace
    from replay import replay_fleet

    def read_all(paths: list[Path]) -> int:
        rows = sum(len(read_trace(p).steps) for p in paths)
        assert rows == len(paths) * steps
        return rows

    counter = iter(range(10**9))

    def fleet(root: Path, j: int, n: int) -> Any:
        out = tmp / f"out-{next(counter)}"  # a fresh folder per call
        res = replay_fleet(root, "dwa", out, jobs=j)
        assert int(res.table["error"].isna().sum()) == n, res.text()
        return res

    warm_paths = write_fleet(tmp / "warm" / "runs", 2, 1_000)
    read_all_warm = sum(len(read_trace(p).steps) for p in warm_paths)  # warm-up
    assert read_all_warm == 2_000
    fleet(tmp / "warm" / "runs", 1, 2)  # warm-up (this process)
    rows = []
    for n in sizes:
        root = tmp / f"fleet-{n}" / "runs"
        t0 = time.perf_counter()
        paths = write_fleet(root, n, steps)
        mib = sum(p.stat().st_size for p in paths) / 2**20
        print(
            f"  (fleet of {n:,} runs x {steps:,} steps: {mib:.0f} MiB of Parquet, "
            f"written in {time.perf_counter() - t0:.1f} s, not timed)",
            flush=True,
        )
        t = best_of(repeat, read_all, paths)
        rows.append(row("runs", n, "read_trace (floor)", t, n))
        show(rows[-1])
        for j in jobs:
            t = best_of(repeat, fleet, root, j, n)
            rows.append(row("runs", n, f"fleet dwa jobs={j}", t, n))
            show(rows[-1])
        shutil.rmtree(root.parent, ignore_errors=True)
    return rows


def exponents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (axis, method) measured at two sizes: log(t_big/t_small)/log(n_big/n_small)."""
    out = []
    keys = dict.fromkeys((r["axis"], r["method"]) for r in rows)
    for axis, method in keys:
        pts = sorted(
            (r["size"], r["seconds"]) for r in rows if (r["axis"], r["method"]) == (axis, method)
        )
        if len(pts) < 2:
            continue
        (n0, t0), (n1, t1) = pts[0], pts[-1]
        exp = math.log(t1 / t0) / math.log(n1 / n0) if t0 > 0 and t1 > 0 else float("nan")
        out.append(
            {
                "axis": axis,
                "method": method,
                "sizes": [n0, n1],
                "seconds": [t0, t1],
                "time_ratio": t1 / t0,
                "exponent": exp,
            }
        )
    return out


def versions() -> dict[str, Any]:
    nb = "not installed"
    if numba_available():
        import numba

        nb = numba.__version__
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "numba": nb,
        "kernels": numba_available() and enabled(),
        "kernel_methods": list(KERNEL_METHODS),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="best of R timed calls")
    ap.add_argument(
        "--axes",
        default=",".join(AXES),
        help=f"comma-separated subset of {','.join(AXES)}",
    )
    ap.add_argument("--quick", action="store_true", help="every size / 10 (runs: 20, 40)")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="runs: fleet jobs")
    ap.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = ap.parse_args()
    axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    bad = [a for a in axes if a not in AXES]
    if bad:
        ap.error(f"unknown axis {bad!r}; choose among {','.join(AXES)}")

    torch.set_num_threads(1)
    div = 10 if args.quick else 1
    steps_sizes = [100_000 // div, 1_000_000 // div]
    comp_sizes, comp_steps = [4, 16], 100_000 // div
    config_sizes, config_steps = [16, 256], 100_000 // div
    run_sizes, run_steps = ([20, 40], 1_000) if args.quick else ([100, 400], 10_000)

    info = versions()
    load_start = os.getloadavg()
    print(
        f"python {info['python']}, numpy {info['numpy']}, torch {info['torch']} "
        f"({info['torch_threads']} thread), numba {info['numba']} (kernels "
        f"{'on' if info['kernels'] else 'off'}); os.cpu_count() {info['cpu_count']}; "
        f"load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}"
        + ("; --quick: sizes / 10, not figures to quote" if args.quick else "")
    )
    print(f"best of {args.repeat} after a warm-up; axes: {','.join(axes)}")
    workload = {
        "steps": f"{steps_sizes} steps x 8 components; dwa, uncertainty, famo, scheduler",
        "components": f"{comp_sizes} components x {comp_steps:,} steps; dwa, uncertainty, famo",
        "configs": f"{config_sizes} configs over {config_steps:,} x 8, streaming; uncertainty, dwa",
        "runs": f"{run_sizes} runs x {run_steps:,} steps x {len(FLEET_COMPONENTS)} components; "
        f"read_trace, replay_fleet dwa jobs={args.jobs}",
    }
    for a in axes:
        print(f"  workload {a}: {workload[a]}")
    print(f"\n  {'axis':<11} {'size':>10} {'method':<22} {'seconds':>11} {'unit cost':>10}")

    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    try:
        if "steps" in axes:
            rows += axis_steps(steps_sizes, args.repeat)
        if "components" in axes:
            rows += axis_components(comp_sizes, comp_steps, args.repeat)
        if "configs" in axes:
            rows += axis_configs(config_sizes, config_steps, args.repeat)
        if "runs" in axes:
            rows += axis_runs(run_sizes, run_steps, args.jobs, args.repeat, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    exps = exponents(rows)
    print("\n  scaling exponent log(t_big/t_small)/log(size_big/size_small) (1.0: linear)")
    for e in exps:
        n0, n1 = e["sizes"]
        print(
            f"  {e['axis']:<11} {e['method']:<22} {n0:>9,} -> {n1:>9,}: "
            f"time x{e['time_ratio']:6.2f}  exponent {e['exponent']:5.2f}"
        )
    load_end = os.getloadavg()
    print(f"load average at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "repeat": args.repeat,
                    "axes": axes,
                    "workload": {a: workload[a] for a in axes},
                    "versions": info,
                    "load_average_start": list(load_start),
                    "load_average_end": list(load_end),
                    "rows": rows,
                    "exponents": exps,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
