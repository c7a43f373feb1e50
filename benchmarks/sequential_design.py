"""The sequential trial's design by simulation (issue 25, item 7): the pilot's planning sd by
the blinded uncentred second moment against the adjusted one-sample variance (the default),
under no effect (type I error) and at the planned effect (power, seeds stated against what
the true sd needs), with normal and heavy-tailed (t, 3 dof) paired differences.

    python benchmarks/sequential_design.py              # 20,000 replications per scenario
    python benchmarks/sequential_design.py --reps 4000 --pilot 6

Prints one row per (distribution, sd / planned effect, true effect, estimator).
"""

from __future__ import annotations

import argparse
import time

from adaptive.trial._design import needed_table, simulate_pilot_design


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20_000)
    ap.add_argument("--pilot", type=int, default=4)
    ap.add_argument("--max-seeds", type=int, default=60)
    args = ap.parse_args()
    table = needed_table(args.max_seeds)
    t0 = time.perf_counter()
    print(
        f"workload: {args.reps} replications per row, pilot {args.pilot} seeds, --max-seeds "
        f"{args.max_seeds}, planned effect 1, two-sided 5 %, 80 % power target"
    )
    print(
        "| differences | sd/effect | true effect | estimator | rejects (±se) | seeds stated "
        "mean / median | true sd needs | stated/needed | seeds run (mean) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for heavy in (False, True):
        for ratio in (0.5, 1.0, 1.5):
            for delta in (0.0, 1.0):
                for method in ("blinded", "adjusted"):
                    r = simulate_pilot_design(
                        sd=ratio,
                        effect=1.0,
                        true_effect=delta,
                        pilot=args.pilot,
                        max_seeds=args.max_seeds,
                        method=method,
                        reps=args.reps,
                        heavy_tailed=heavy,
                        table=table,
                    )
                    print(
                        f"| {'t3' if heavy else 'normal'} | {ratio} | {delta} | {method} "
                        f"| {100 * r['rate']:.1f} % (±{100 * r['rate_se']:.1f}) "
                        f"| {r['stated_mean']:.1f} / {r['stated_median']:.0f} "
                        f"| {r['true_needed']:.0f} "
                        f"| {r['stated_mean'] / r['true_needed']:.2f} | {r['run_mean']:.1f} |"
                    )
    print(f"took {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
