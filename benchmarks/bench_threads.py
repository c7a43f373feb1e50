"""Wall time of a short training run per torch thread count, on a quiet and on a busy CPU.

Workload: `adaptive train --epochs E --quiet` (default config otherwise: batch 32 x 40 frames,
GRU 128, 50 steps per epoch plus evaluation) in a fresh process, once per thread count, first
alone and then with one competing busy process (`python -c 'while True: pass'`) started just
before and stopped just after. Each line also shows the 1-minute load average at the start,
since other jobs on a shared machine count as competition too.

Usage: python benchmarks/bench_threads.py [--epochs 2] [--threads 1,2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = [sys.executable, "-c", "while True: pass"]


def run_once(root: Path, name: str, threads: int, epochs: int) -> float:
    """Seconds of wall time of one `adaptive train` process."""
    cmd = [
        sys.executable,
        "-m",
        "adaptive",
        "train",
        "--quiet",
        "--epochs",
        str(epochs),
        "--out",
        str(root),
        "--name",
        name,
        "--set",
        f"run.threads={threads}",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    print(
        f"workload: adaptive train --epochs {args.epochs} (default config); "
        f"cores={os.cpu_count()}; {args.repeats} repeat(s)"
    )
    print(f"{'competing busy processes':<26} {'threads':>7} {'wall s':>8} {'load avg':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        k = 0
        for busy in (0, 1):
            for threads in counts:
                for _ in range(args.repeats):
                    procs = [subprocess.Popen(BUSY) for _ in range(busy)]
                    try:
                        load = os.getloadavg()[0]
                        dt = run_once(root, f"r{k}", threads, args.epochs)
                    finally:
                        for p in procs:
                            p.kill()
                            p.wait()
                    k += 1
                    print(f"{busy:<26} {threads:>7} {dt:>8.1f} {load:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
