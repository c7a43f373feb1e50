"""Compare the arms of a finished trial folder against any one of them (the trial itself
compares against its baseline only): `python benchmarks/tune/against.py TRIAL ARM` prints
every other arm's paired line against ARM, with the trial's metric and reduction.

    python benchmarks/tune/against.py /tmp/exp/confirm harder
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from adaptive.trial import TrialResult, analyse, parse_metric
from adaptive.trial._runner import DESIGN, DONE, _load
from adaptive.trial._targets import safe_name


def main() -> None:
    folder, against = Path(sys.argv[1]), sys.argv[2]
    design = json.loads((folder / DESIGN).read_text())
    metric = parse_metric(design["metric"], bool(design.get("higher_is_better")))
    dirs = {
        name: {
            int(d.name[4:]): d
            for d in sorted((folder / safe_name(name)).glob("seed*"))
            if (d / DONE).is_file()
        }
        for name in design["arms"]
    }
    values, _ = _load(dirs, [metric])
    frame, notes = analyse(values, metric, int(design["reduce_k"]), baseline=against)
    res = TrialResult(frame, *([None] * 2), design={"reduce_k": design["reduce_k"]})
    print(f"against {against}:")
    print(res.summary())
    for n in notes:
        print(f"note: {n}")


if __name__ == "__main__":
    main()
