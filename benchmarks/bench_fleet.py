"""Fleet benchmark: `adaptive replay FOLDER -m M --jobs N` over many runs (issue 27, item 3).

Workload: --n run folders (default 1,000) of --steps step rows (default 10,000) x 4
components, each `RUN/trace.parquet` one Parquet file in the trace format (the first is
written by `TraceWriter`, the others are copies of its table with their own run id and
random losses: the reader sees 1,000 different runs). They are written before timing.

Timed, wall clock, one after another:

* read: `read_trace` of every trace, one after another in this process: the floor, what
  any fleet job must at least do;
* fleet: `replay.replay_fleet` with --method (default dwa) at each --jobs value (default
  1 and 2; 1 runs in this process, more on a spawned process pool, whose start-up
  -- a fresh interpreter importing torch per worker -- is included), and with --ray on a
  local Ray cluster of the largest --jobs CPUs (its start included).

Each prints its wall time, the time per trace, and its ratio to the read. The summary
tables of every run are checked equal (the same table whatever the engine).

Usage: python benchmarks/bench_fleet.py [--n N] [--steps S] [--method M] [--jobs 1 2]
       [--ray] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

COMPONENTS = ["c0", "c1", "c2", "c3"]


def write_fleet(root: Path, n: int, steps: int, seed: int = 0) -> list[Path]:
    """`n` run folders under `root`, each with a `trace.parquet` file of `steps` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from adaptive import TraceWriter
    from adaptive.trace import compact_trace

    template = root / "run0000" / "trace.parquet"
    with TraceWriter(template, components=COMPONENTS, run_id="run0000") as w:
        for s in range(steps):
            losses = {c: 1.0 / (1 + s / 1000) + 0.01 * k for k, c in enumerate(COMPONENTS)}
            w.log_step(step=s, epoch=s * 20 // steps, losses=losses)
    compact_trace(template)  # one Parquet file
    table = pq.read_table(template)
    rng = np.random.default_rng(seed)
    step = np.arange(steps)
    paths = [template]
    for i in range(1, n):
        rid = f"run{i:04d}"
        cols = {name: table.column(name) for name in table.column_names}
        cols["run_id"] = pa.array([rid] * steps, type=table.schema.field("run_id").type)
        for k, c in enumerate(COMPONENTS):
            rate = rng.uniform(300, 5000)
            loss = np.exp(-step / rate) * (1 + k) * rng.lognormal(0, 0.2, steps)
            cols[f"loss/{c}"] = pa.array(loss, type=table.schema.field(f"loss/{c}").type)
        out = pa.Table.from_pydict(cols, schema=table.schema)
        path = root / rid / "trace.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(out, path, compression="lz4")
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="runs in the fleet")
    ap.add_argument("--steps", type=int, default=10_000, help="step rows per run")
    ap.add_argument("--method", default="dwa")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--ray", action="store_true", help="also on a local Ray cluster")
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    args = ap.parse_args()

    import pandas as pd

    from adaptive.trace import read_trace
    from replay import replay_fleet

    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-fleet-")) / "runs"
    t = time.perf_counter()
    paths = write_fleet(root, args.n, args.steps)
    written = time.perf_counter() - t
    size = sum(p.stat().st_size for p in paths) / 2**20
    load = os.getloadavg()
    print(
        f"workload: {args.n:,} runs x {args.steps:,} steps x {len(COMPONENTS)} components "
        f"({size:.0f} MiB of Parquet, written in {written:.1f} s), method {args.method}; "
        f"load average {load[0]:.2f} on {os.cpu_count()} cores"
    )

    t = time.perf_counter()
    rows = sum(len(read_trace(p).steps) for p in paths)
    read = time.perf_counter() - t
    assert rows == args.n * args.steps
    print(f"  read all (serial)        {read:8.2f} s  {1e3 * read / args.n:7.2f} ms/run  1.00x")

    runs = [("pool", j) for j in args.jobs] + ([("ray", max(args.jobs))] if args.ray else [])
    tables = []
    for engine, jobs in runs:
        out = root.parent / f"out-{engine}-{jobs}"
        t = time.perf_counter()
        res = replay_fleet(root, args.method, out, jobs=jobs, engine=engine)
        wall = time.perf_counter() - t
        ok = int(res.table["error"].isna().sum())
        assert ok == args.n, res.text()
        tables.append(res.table)
        label = f"fleet {engine}, jobs {jobs}"
        print(
            f"  {label:<24} {wall:8.2f} s  {1e3 * wall / args.n:7.2f} ms/run  "
            f"{wall / read:.2f}x read"
        )
    for other in tables[1:]:
        pd.testing.assert_frame_equal(other, tables[0])
    if tables:
        clamp = tables[0]["clamp_fraction"]
        print(
            f"  the same table on every engine; clamp fraction median {clamp.median():.3f}, "
            f"max {clamp.max():.3f}; load average at the end {os.getloadavg()[0]:.2f}"
        )
    if args.dir is None:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
