"""Where the paired noise of an outcome trial comes from (issue 18, item 1).

Trains the default task for a baseline and a *placebo* arm (a change that should not matter:
`train.lr` x (1 + 1e-5)) on several seeds, and evaluates every epoch in several ways at once:

* `valfree` as the trainer does it (the run seed's own validation clips, 64 free-run windows);
* `fixed64` / `fixed1024`: validation clips generated from one fixed seed, identical for every
  arm and seed, with 64 and 1,024 free-run windows;
* `ema`: the same evaluations with an exponential moving average of the weights (decay
  `--ema`), updated after every optimiser step.

The extra evaluations run under `torch.no_grad`, draw no random numbers and leave the model
as it was, so training itself is the trainer's own (the `valfree` column reproduces a plain
`adaptive train` run). Each run writes one JSON of per-epoch metrics into `--out`; finished
runs are reused. `--report` prints the table of paired-difference sd and the seeds 80 % power
at a 5 % effect needs, for every (evaluation, reduction) pair.

    python benchmarks/trial_noise.py --seeds 0-9 --jobs 2 --out /tmp/noise
    python benchmarks/trial_noise.py --report --out /tmp/noise
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ARMS = {"baseline": 1.0, "placebo": 1.0 + 1e-5}
FIXED_VAL_SEED = 1_000_000


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def train_one(arm: str, seed: int, out: str, ema_decay: float, epochs: int) -> str:
    import torch

    torch.set_num_threads(1)
    from adaptive.motion.data import generate_locomotion
    from adaptive.motion.task import evaluate
    from adaptive.train.config import load_config
    from adaptive.train.trainer import Trainer

    path = Path(out) / f"{arm}-{seed}.json"
    if path.exists():
        return str(path)
    cfg = load_config()
    cfg["run"]["seed"] = seed
    cfg["run"]["epochs"] = epochs
    cfg["run"]["threads"] = 1
    cfg["train"]["lr"] = cfg["train"]["lr"] * ARMS[arm]
    d = cfg["data"]
    big = generate_locomotion(
        256, d["clip_frames"], fps=d["fps"], seed=FIXED_VAL_SEED, name_prefix="fixed"
    )
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()

    class Study(Trainer):
        def _run_evaluation(self) -> dict[str, dict[str, float]]:
            runs = super()._run_evaluation()
            row: dict[str, Any] = {"epoch": self.epoch, "step": self.step}
            for name, model in (("", self.model), ("ema_", ema)):
                free = {
                    "loss_fn": self.loss_fn,
                    "seed_frames": d["val_seed_frames"],
                    "horizon": d["val_horizon"],
                    "mode": "free",
                }
                if model is ema:
                    own = evaluate(model, self.val_set, max_windows=d["val_windows"], **free)
                    row["ema_valfree"] = own["MPJPE"]
                else:
                    row["valfree"] = runs["valfree"]["MPJPE"]
                    row["val"] = runs["val"]["MPJPE"]
                for n in (64, 1024):
                    row[f"{name}fixed{n}"] = evaluate(model, big, max_windows=n, **free)["MPJPE"]
            rows.append(row)
            return runs

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Study(cfg, tmp, record=False)
        ema = copy.deepcopy(trainer.model)
        ema.requires_grad_(False)

        def on_step(_record: Any) -> None:
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), trainer.model.parameters(), strict=True):
                    pe.mul_(ema_decay).add_(p.detach(), alpha=1.0 - ema_decay)

        trainer.on_step = on_step
        trainer.train()
    data = {"arm": arm, "seed": seed, "ema_decay": ema_decay, "rows": rows}
    data["seconds"] = time.monotonic() - t0
    tmp_path = path.with_suffix(".tmp")
    tmp_path.write_text(json.dumps(data))
    os.replace(tmp_path, path)
    return str(path)


def _reduce(series: list[float], how: str) -> float:
    if how == "final":
        return series[-1]
    k = int(how.removeprefix("last"))
    return statistics.fmean(series[-k:])


def seeds_needed(sd_pct: float, mde_pct: float = 5.0) -> int:
    """Smallest n whose paired-t MDE (80 % power, two-sided 5 %) is at most `mde_pct`."""
    from adaptive.trial._stats import t_ppf  # the trial's own t quantiles (no scipy)

    for n in range(3, 10_000):
        t = t_ppf(0.975, n - 1) + t_ppf(0.8, n - 1)
        if t * sd_pct / math.sqrt(n) <= mde_pct:
            return n
    return 10_000


def report(out: Path) -> str:
    from adaptive.trial._stats import t_ppf

    runs = {}
    for f in sorted(out.glob("*.json")):
        d = json.loads(f.read_text())
        runs[(d["arm"], d["seed"])] = d
    seeds = sorted(s for (a, s) in runs if a == "baseline" and ("placebo", s) in runs)
    cols = [k for k in runs[("baseline", seeds[0])]["rows"][0] if k not in ("epoch", "step")]
    lines = [
        f"paired placebo - baseline, n = {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}); "
        "sd of the paired differences in % of the baseline mean; unpaired: sd of the "
        "baseline alone in %; n80: seeds for 80 % power at a 5 % effect (paired t)",
        "",
        "| evaluation | reduction | baseline mean | mean diff % | paired sd % | unpaired sd % "
        "| MDE at n=10 % | n80 (5 %) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    t10 = t_ppf(0.975, 9) + t_ppf(0.8, 9)
    for col in cols:
        for how in ("final", "last3", "last5", "last7"):
            b = [_reduce([r[col] for r in runs[("baseline", s)]["rows"]], how) for s in seeds]
            p = [_reduce([r[col] for r in runs[("placebo", s)]["rows"]], how) for s in seeds]
            mb = statistics.fmean(b)
            diffs = [100 * (pi - bi) / mb for pi, bi in zip(p, b, strict=True)]
            sd = statistics.stdev(diffs)
            un = 100 * statistics.stdev(b) / mb
            lines.append(
                f"| {col} | {how} | {mb:.2f} | {statistics.fmean(diffs):+.2f} | {sd:.2f} | "
                f"{un:.2f} | {t10 * sd / math.sqrt(10):.2f} | {seeds_needed(sd)} |"
            )
    secs = [d["seconds"] for d in runs.values()]
    lines.append("")
    lines.append(f"{len(runs)} runs, {statistics.median(secs):.0f} s median per run")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default="noise-study")
    ap.add_argument("--ema", type=float, default=0.99)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    if a.report:
        print(report(out))
        return
    out.mkdir(parents=True, exist_ok=True)
    todo = [(arm, s) for s in _seeds(a.seeds) for arm in ARMS]
    print(f"{len(todo)} runs ({len(ARMS)} arms x seeds {a.seeds}), {a.jobs} jobs", flush=True)
    with ProcessPoolExecutor(a.jobs) as pool:
        futs = [pool.submit(train_one, arm, s, str(out), a.ema, a.epochs) for arm, s in todo]
        for f in futs:
            print(f.result(), flush=True)
    print(report(out))


if __name__ == "__main__":
    sys.exit(main())
