"""End-to-end `adaptive replay` wall time, interpreter start included, and peak memory.

Workload: synthetic traces written by the TraceWriter (8 components, 50 epochs, grad norm,
schedule base columns, val/valfree epoch rows) of 100,000 and 1,000,000 steps; each command
runs in a fresh process (`adaptive replay PATH --method M -q --out DIR`), writing the
replay table and the figure. Peak RSS is the child's maximum resident set size.

Targets (issue 7): 100,000 steps <= 3 s; 1,000,000 steps <= 10 s; replay and sweep of the
1,000,000-step trace under 2 GB resident.

Usage: python benchmarks/bench_cli.py [--sizes 100000,1000000] [--methods dwa,uncertainty,scheduler]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from adaptive.trace import TraceWriter


def make_trace(path: Path, steps: int, comps: int = 8, epochs: int = 50) -> None:
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(comps)]
    losses = (rng.lognormal(size=(steps, comps)) * np.linspace(1, 0.1, steps)[:, None]).astype(
        np.float32
    )
    grad = rng.lognormal(size=steps).astype(np.float32)
    per = steps // epochs
    base = {"tf_ratio": 0.5, "freerun_horizon": 10.0, "freerun_weight": 1.0}
    with TraceWriter(path, components=names, metrics=["YawAbsDeg"], flush_rows=100_000) as w:
        for s in range(steps):
            row = losses[s].tolist()
            w.log_step(
                step=s,
                epoch=s // per,
                losses=dict(zip(names, row, strict=True)),
                loss_total=sum(row),
                grad_norm=float(grad[s]),
                schedule_base=base,
            )
            if (s + 1) % per == 0:
                e = s // per
                w.log_epoch(split="val", epoch=e, step=s + 1, metrics={"YawAbsDeg": 10 - e / 10})
                w.log_epoch(split="valfree", epoch=e, step=s + 1, metrics={"YawAbsDeg": 10 + e})


def run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB of the child) for one command."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr}")
    return dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--methods", default="dwa,uncertainty,scheduler")
    args = ap.parse_args()
    exe = shutil.which("adaptive") or str(Path(sys.executable).with_name("adaptive"))
    print(
        f"workload: synthetic traces, 8 components, 50 epochs; fresh process per command; "
        f"cores={os.cpu_count()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            trace = Path(tmp) / f"t{size}.parquet"
            make_trace(trace, size)
            for m in args.methods.split(","):
                dt, rss = run(
                    [
                        exe,
                        "replay",
                        str(trace),
                        "--method",
                        m,
                        "-q",
                        "--out",
                        str(Path(tmp) / "out"),
                    ]
                )
                print(
                    f"adaptive replay {size:>9,} steps --method {m:<12} {dt:6.2f} s wall "
                    f"(peak RSS of any child so far {rss:,.0f} MB)"
                )
            dt, rss = run(
                [
                    exe,
                    "sweep",
                    str(trace),
                    "--method",
                    "uncertainty",
                    "-q",
                    "--grid",
                    "lr=0.003,0.01,0.03,0.1",
                    "--grid",
                    "adjustment_range=0.1,0.2,0.3,0.5",
                    "--out",
                    str(Path(tmp) / "sw"),
                ]
            )
            print(
                f"adaptive sweep  {size:>9,} steps uncertainty 16 configs {dt:6.2f} s wall "
                f"(peak RSS of any child so far {rss:,.0f} MB)"
            )
    print("targets: replay 100k <= 3 s, 1M <= 10 s; replay and sweep of 1M < 2 GB resident")


if __name__ == "__main__":
    main()
