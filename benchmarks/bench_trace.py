"""Trace writer/reader benchmark: 1,000,000 step rows with 8 components.

Prints: writer cost per `log_step` call (flush included), read throughput (rows/s), bytes
on disk per step row. Targets (issue 2): <= 10 us/step, >= 5 M rows/s, <= 64 B/row.

Usage: python benchmarks/bench_trace.py [--rows N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from adaptive.trace import TraceWriter, read_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--components", type=int, default=8)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    comps = [f"c{i}" for i in range(args.components)]
    rng = np.random.default_rng(0)
    losses = rng.lognormal(size=(args.rows, len(comps))).astype(np.float32).tolist()
    base = dict.fromkeys(comps, 1.0)
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench-trace-"))
    path = root / "run.parquet"
    shutil.rmtree(path, ignore_errors=True)

    t0 = time.perf_counter()
    with TraceWriter(path, components=comps, run_id="bench", flush_rows=50_000) as w:
        for s in range(args.rows):
            row = losses[s]
            w.log_step(
                step=s,
                epoch=s // 20_000,
                losses=dict(zip(comps, row, strict=True)),
                loss_total=sum(row),
                weights=base,
                weights_base=base,
                grad_norm=row[0],
                lr=1e-3,
            )
    t_write = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in path.glob("*.parquet"))

    t0 = time.perf_counter()
    tr = read_trace(path)
    t_first = time.perf_counter() - t0  # includes lazy imports inside pyarrow / pandas
    assert len(tr.steps) == args.rows
    reads = []
    for _ in range(3):
        t0 = time.perf_counter()
        read_trace(path)
        reads.append(time.perf_counter() - t0)
    t_read = min(reads)

    print(
        f"workload: {args.rows:,} step rows x {len(comps)} components "
        f"(losses, weights, base weights, loss_total, grad_norm, lr); cores={os.cpu_count()}"
    )
    print(
        f"write: {t_write:.2f} s total, {t_write / args.rows * 1e6:.2f} us per log_step "
        "(target <= 10 us)"
    )
    print(
        f"read:  {t_read:.3f} s, {args.rows / t_read / 1e6:.2f} M rows/s, best of 3 "
        f"(first read in the process {t_first:.3f} s); target >= 5 M rows/s"
    )
    print(f"disk:  {size / 1e6:.1f} MB, {size / args.rows:.1f} bytes per step row (target <= 64)")
    if args.dir is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
