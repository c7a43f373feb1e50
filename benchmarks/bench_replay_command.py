"""`adaptive replay` end to end against the floor of any replay command (issue 27, item 2).

Workload: one trace written by the TraceWriter, --steps step rows (default 100,000) x 8
components, 50 epochs, with everything every method reads: raw losses, `grad_norm` and
the schedule's base values (the scheduler), `grad_norm/<c>` and `loss_after/<c>`
(GradNorm, FAMO), val / valfree metrics per epoch. Each command runs in a fresh process.

* command: `adaptive replay TRACE --method M -q --out DIR` (writes the replay table and
  the figure), for every registered weighting method and the scheduler;
* floor: a fresh interpreter that imports what the command must import (torch, pandas,
  pyarrow, matplotlib with Agg), reads the trace (`pyarrow.parquet.read_table(...)
  .to_pandas()`), and writes a PNG of the same size (the command's figure size and dpi,
  the same number of panels, one line per component per panel drawn as each pixel
  column's minimum and maximum, as the command draws long series).

Interleaved: floor, command, floor, command, ... --repeats times per method; the median
of each and their ratio are printed against the target (command <= 1.3 x floor).

--phases: where the command's time goes, in one fresh process per method, measured with
the command's own functions: interpreter start, imports (torch; pandas and pyarrow;
matplotlib; the package and its CLI; numba for a kernel method), reading the trace, the
replay, the summary table, the figure, writing the replay table, interpreter start and
exit (as the console script leaves: `os._exit` after the atexit handlers; the floor's
interpreter tears itself down as usual, about 0.3-0.45 s of its time).

Usage: python benchmarks/bench_replay_command.py [--steps N] [--repeats R]
       [--methods dwa,uncertainty,...] [--phases]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET = 1.3
COMPS = [f"c{i}" for i in range(8)]

FLOOR = r"""
import sys
import torch, pandas, pyarrow, pyarrow.parquet as pq
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
path, out, panels, w, h, dpi = sys.argv[1:7]
panels, w, h, dpi = int(panels), float(w), float(h), int(dpi)
frame = pq.read_table(path).to_pandas()
steps = frame["step"].to_numpy()
cols = [c for c in frame.columns if c.startswith("loss/")]
fig, axes = plt.subplots(panels, 1, figsize=(w, h), sharex=True, squeeze=False)
px = int(w * dpi)
edges = np.linspace(0, len(steps), px + 1).astype(int)
for ax in axes[:, 0]:
    for c in cols:
        y = frame[c].to_numpy(np.float64)
        lo = np.minimum.reduceat(y, edges[:-1])
        hi = np.maximum.reduceat(y, edges[:-1])
        x = np.repeat(steps[edges[:-1]], 2)
        ax.plot(x, np.column_stack([lo, hi]).ravel(), lw=1.0, label=c)
    ax.set_ylabel("loss")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
axes[0, 0].set_title("the trace's losses")
axes[-1, 0].set_xlabel("optimizer step")
fig.savefig(out, dpi=dpi)
"""

PHASES = r"""
import json, os, sys, time
os.environ["ADAPTIVE_KERNELS_LIGHT_START"] = "1"  # as the console script sets it
t = [time.perf_counter()]
out = {}
def lap(name):
    now = time.perf_counter(); out[name] = now - t[0]; t[0] = now
import torch; lap("import torch")
import pandas, pyarrow, pyarrow.parquet; lap("import pandas, pyarrow")
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot; lap("import matplotlib")
import cli, replay, replay._workflow, replay._plots, replay._summary; lap("import adaptive, cli")
from pathlib import Path
method, path, dest = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
from replay import _kernels
from replay._weighting_replay import _controller
if method in _kernels.KERNEL_METHODS and _kernels.numba_available():
    _kernels._jit("_controller_part"); lap("import numba, load kernels")
from adaptive.trace import read_trace
trace = read_trace(path); lap("read trace")
from replay._engine import replay
res = replay(trace, method); lap("replay")
from replay._summary import weighting_summary, scheduler_summary, write_frame
(weighting_summary if res.kind == "weighting" else scheduler_summary)(res); lap("summary")
from replay._plots import plot_result
plot_result(res, dest / "fig.png", trace=trace); lap("figure")
write_frame(res.frame, dest / "table.parquet"); lap("write table")
print(json.dumps(out), flush=True)
import atexit; atexit._run_exitfuncs(); os._exit(0)  # as the console script leaves
"""


def make_trace(path: Path, steps: int) -> None:
    """The workload's trace (see the module docstring): `bench_cli.py`'s, with the extras,
    compacted to one part."""
    from bench_cli import make_trace as write

    from adaptive.trace import compact_trace

    write(path, steps, len(COMPS), extras=True)
    compact_trace(path)


def figure_shape(trace_path: Path, method: str) -> tuple[int, float, float]:
    """(panels, width, height in inches) of the command's figure for `method`."""
    from adaptive.trace import read_trace
    from replay._engine import replay
    from replay._plots import signal_panels

    if method != "scheduler":
        return 2, 11.0, 7.0
    trace = read_trace(trace_path)
    head = type(trace)(**{**trace.__dict__, "steps": trace.steps.iloc[:2000]})
    res = replay(head, method)
    n = len(res.names) + 1 + len(signal_panels(list(res.frame.columns))) + 1
    return n, 11.0, 2.1 * n + 0.5


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--methods", default="", help="comma-separated (default: every method)")
    ap.add_argument("--phases", action="store_true", help="where the time goes, per method")
    args = ap.parse_args()
    from adaptive.weighting import available_methods
    from replay._plots import SAVE_DPI

    methods = args.methods.split(",") if args.methods else [*available_methods(), "scheduler"]
    exe = shutil.which("adaptive") or str(Path(sys.executable).with_name("adaptive"))
    load = os.getloadavg()
    print(
        f"workload: one trace of {args.steps:,} steps x {len(COMPS)} components, 50 epochs, "
        f"grad norms, losses after the step, val/valfree metrics; fresh process per command; "
        f"median of {args.repeats}, interleaved; {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} at the start"
    )
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.parquet"
        make_trace(trace, args.steps)
        out = Path(tmp) / "out"
        if args.phases:
            for m in methods:
                dest = Path(tmp) / f"ph-{m}"
                dest.mkdir()
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-c", PHASES, m, str(trace), str(dest)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                total = time.perf_counter() - t0
                ph = json.loads(proc.stdout.strip().splitlines()[-1])
                inside = sum(ph.values())
                ph["interpreter start and exit"] = total - inside
                cells = ", ".join(f"{k} {v:.3f}" for k, v in ph.items())
                print(f"phases {m:<12} total {total:.2f} s: {cells}")
            return
        print(f"{'method':<12} {'floor s':>8} {'command s':>10} {'ratio':>6}  target <= {TARGET}")
        worst = 0.0
        for m in methods:
            panels, w, h = figure_shape(trace, m)
            floor_cmd = [sys.executable, "-c", FLOOR, str(trace), str(Path(tmp) / "floor.png"),
                         str(panels), str(w), str(h), str(SAVE_DPI)]  # fmt: skip
            command = [exe, "replay", str(trace), "--method", m, "-q", "--out", str(out)]
            timed(command)  # warm: the numba cache, the file cache
            floors, commands = [], []
            for _ in range(args.repeats):
                floors.append(timed(floor_cmd))
                commands.append(timed(command))
            f, c = statistics.median(floors), statistics.median(commands)
            worst = max(worst, c / f)
            verdict = "met" if c / f <= TARGET else "MISSED"
            print(f"{m:<12} {f:8.2f} {c:10.2f} {c / f:6.2f}  {verdict}")
        load = os.getloadavg()
        print(
            f"largest ratio {worst:.2f} (target <= {TARGET}); load average {load[0]:.2f} at the end"
        )


if __name__ == "__main__":
    main()
