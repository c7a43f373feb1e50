"""Figure benchmark: the time to plot the replay figure of a long trace (issue 27, target
<= 0.5 s for 1 M steps).

Workload: `synthetic_trace` of bench_replay_weighting.py (--steps step rows, default
1,000,000, x --components, default 4; --epochs epochs, default 50, each boundary a dotted
line in both panels; two base-weight stages), replayed with `dwa` before timing.

Timed: `replay.plot_result` of that replay, written as a PNG (11 x 7 inches at 110 dpi:
every per-step line decimated to the figure's 1,210 pixel columns, each column's minimum
and maximum; epoch lines at most one per 4 columns). Best of --repeat runs, wall and CPU
time of this process; beside it the same figure of a --short-step trace (default 2,000: no
decimation), the floor that matplotlib's drawing and PNG encoding set whatever the length.
On a busy machine the CPU time is the steadier figure: the wall time includes waiting for
a core.

Usage: python benchmarks/bench_figures.py [--steps N] [--components C] [--epochs E]
       [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_S = 0.5


def timed(fn, repeat: int) -> tuple[float, float]:
    """Best wall and best CPU seconds of `fn()` over `repeat` runs."""
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--components", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--short", type=int, default=2_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import bench_replay_weighting
    from bench_replay_weighting import synthetic_trace

    from replay import replay
    from replay._plots import SAVE_DPI, _pyplot, plot_result

    bench_replay_weighting.EPOCHS = args.epochs  # synthetic_trace's epoch count
    plt = _pyplot()
    plt.close(plt.figure())  # matplotlib's first-figure setup is not the figure's cost
    out = Path(tempfile.mkdtemp(prefix="bench-figures-"))
    rows = {}
    for n in (args.short, args.steps):
        trace = synthetic_trace(n, components=args.components)
        result = replay(trace, "dwa")
        path = out / f"replay-{n}.png"
        rows[n] = timed(lambda r=result, t=trace, p=path: plot_result(r, p, trace=t), args.repeat)
    load = os.getloadavg()
    print(
        f"workload: dwa replay figure of {args.steps:,} steps x {args.components} components, "
        f"{args.epochs} epochs (11 in x {SAVE_DPI} dpi PNG), best of {args.repeat}; "
        f"load average {load[0]:.2f} on {os.cpu_count()} cores"
    )
    for n, (wall, cpu) in rows.items():
        tag = " (no decimation: the floor)" if n == args.short else ""
        print(f"  {n:>9,} steps{tag}: wall {wall:.3f} s, CPU {cpu:.3f} s")
    wall, cpu = rows[args.steps]
    verdict = {True: "meets", False: "misses"}
    print(
        f"target: <= {TARGET_S} s for {args.steps:,} steps; wall {wall:.3f} s "
        f"({verdict[wall <= TARGET_S]} it), CPU {cpu:.3f} s ({verdict[cpu <= TARGET_S]} it)"
    )


if __name__ == "__main__":
    main()
