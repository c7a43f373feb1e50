"""Import speed of a TensorBoard log directory vs tensorboard's own reader.

Writes TAGS scalar tags x STEPS steps as SummaryWriter does (one event per scalar, plus an
`epoch` scalar every 50 steps as Lightning logs it), then times, each in a fresh process:

* tensorboard's reader alone: `EventAccumulator(logdir, size_guidance={"scalars": 0})`
  (0 = keep every scalar), `Reload()` and `Scalars(tag)` for every tag;
* `adaptive import tensorboard` (the library call: read every scalar with tensorboard's
  event-file loader, align, write the trace).

    python benchmarks/bench_import.py --steps 100000          # 8 x 100k
    python benchmarks/bench_import.py                         # 8 x 1,000,000 (slow)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def write_log(logdir: Path, tags: int, steps: int) -> int:
    """Event file as SummaryWriter writes it, through tensorboard's own event writer."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    w = EventFileWriter(str(logdir), max_queue_size=100_000, flush_secs=3600)
    names = [f"train/loss_{i}" for i in range(tags)]
    n = 0
    t0 = 1.7e9
    for s in range(steps):
        wall = t0 + 0.01 * s
        for i, name in enumerate(names):
            v = Summary.Value(tag=name, simple_value=1.0 / (1.0 + s * (i + 1) * 1e-5))
            w.add_event(Event(wall_time=wall, step=s, summary=Summary(value=[v])))
            n += 1
        if s % 50 == 0:
            v = Summary.Value(tag="epoch", simple_value=float(s // 10_000))
            w.add_event(Event(wall_time=wall, step=s, summary=Summary(value=[v])))
            n += 1
    w.close()
    return n


READER = """
import sys, time
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
t = time.perf_counter()
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
n = sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])
print(time.perf_counter() - t, n)
"""

IMPORT = """
import sys, time
from adaptive.importers import import_tensorboard
t = time.perf_counter()
r = import_tensorboard(sys.argv[1], sys.argv[2], patterns=["train/loss_*"])
print(time.perf_counter() - t, r.step_rows)
"""


def timed(code: str, *args: str) -> tuple[float, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    )
    seconds, count = out.stdout.split()
    return float(seconds), int(count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        t = time.perf_counter()
        events = write_log(root / "logs", args.tags, args.steps)
        size = sum(f.stat().st_size for f in (root / "logs").iterdir())
        took = time.perf_counter() - t
        print(f"wrote {events:,} events ({size / 2**20:.1f} MiB) in {took:.1f} s")
        rows = []
        for r in range(args.repeat):
            tb, n_tb = timed(READER, str(root / "logs"))
            out = root / f"trace-{r}.parquet"
            imp, n_imp = timed(IMPORT, str(root / "logs"), str(out))
            rows.append({"tensorboard_reader_s": tb, "import_s": imp, "ratio": imp / tb})
            assert n_imp == args.steps and n_tb == events, (n_tb, n_imp)
        best = {k: min(r[k] for r in rows) for k in rows[0]}
        best["ratio"] = best["import_s"] / best["tensorboard_reader_s"]
        print(json.dumps({"tags": args.tags, "steps": args.steps, "events": events, **best}))
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
