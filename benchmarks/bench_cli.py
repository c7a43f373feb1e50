"""End-to-end `adaptive replay` wall time, interpreter start included, and peak memory.

Workload: synthetic traces written by the TraceWriter (8 components, 50 epochs, grad norm,
schedule base columns, val/valfree epoch rows) of 100,000 and 1,000,000 steps; each command
runs in a fresh process (`adaptive replay PATH --method M -q --out DIR`), writing the
replay table and the figure. Peak RSS is the child's maximum resident set size.

Targets (issue 7): 100,000 steps <= 3 s; 1,000,000 steps <= 10 s; replay and sweep of the
1,000,000-step trace under 2 GB resident.

With --help-only: `adaptive COMMAND --help` for every command (fresh process each, median
of --repeats runs; target issue 20: <= 0.3 s each, help imports no torch).

Usage: python benchmarks/bench_cli.py [--sizes 100000,1000000] [--methods dwa,uncertainty,scheduler]
       python benchmarks/bench_cli.py --help-only [--repeats 7]
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


def make_trace(
    path: Path, steps: int, comps: int = 8, epochs: int = 50, *, extras: bool = False
) -> None:
    """The workload's trace; with `extras` also `grad_norm/<c>` and `loss_after/<c>` (what
    GradNorm and FAMO read), drawn after the other columns so those stay the same."""
    from adaptive.trace import TraceWriter

    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(comps)]
    losses = (rng.lognormal(size=(steps, comps)) * np.linspace(1, 0.1, steps)[:, None]).astype(
        np.float32
    )
    grad = rng.lognormal(size=steps).astype(np.float32)
    more: list[dict[str, float] | None] = [None] * steps
    if extras:
        gnorm = (np.sqrt(losses) * rng.lognormal(0, 0.2, losses.shape)).astype(np.float32)
        after = (losses * rng.uniform(0.95, 1.01, losses.shape)).astype(np.float32)
        keys = [f"grad_norm/{c}" for c in names] + [f"loss_after/{c}" for c in names]
        more = [dict(zip(keys, [*g, *a], strict=True)) for g, a in zip(
            gnorm.tolist(), after.tolist(), strict=True)]  # fmt: skip
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
                extra=more[s],
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


HELP_COMMANDS = (
    (),
    ("inspect",),
    ("compact",),
    ("replay",),
    ("train",),
    ("compare",),
    ("sweep",),
    ("trial",),
    ("demo",),
    ("import",),
)


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + system) of one command in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = run(cmd)[0]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_help(exe: str, repeats: int) -> None:
    """Median wall and CPU time of `adaptive COMMAND --help` per command, fresh process
    each. CPU time is what the command costs; wall time adds waiting for a busy machine."""
    import statistics

    print(
        f"adaptive COMMAND --help, median of {repeats} fresh processes; cores={os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    worst = 0.0
    for cmd in HELP_COMMANDS:
        walls, cpus = zip(*(_timed([exe, *cmd, "--help"]) for _ in range(repeats)), strict=True)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        worst = max(worst, wall)
        print(f"  adaptive {' '.join(cmd):<20} --help  wall {wall:6.3f} s  cpu {cpu:6.3f} s")
    print(f"slowest median wall {worst:.3f} s; target <= 0.3 s each")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--methods", default="dwa,uncertainty,scheduler")
    ap.add_argument("--help-only", action="store_true", help="Time every command's --help.")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    exe = shutil.which("adaptive") or str(Path(sys.executable).with_name("adaptive"))
    if args.help_only:
        bench_help(exe, args.repeats)
        return
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
