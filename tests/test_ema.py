"""The weights' moving average: evaluated beside the weights, never feeding back into
training, resumed exactly."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from adaptive.trace import read_trace
from adaptive.train._ema import WeightEMA
from adaptive.train.config import ConfigError
from tests.test_train import run, steps_of, tiny


def _rows(trace, split: str) -> pd.DataFrame:
    return trace.split_metrics(split).drop(columns=["time", "run_id"])


def test_average_follows_its_formula() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = WeightEMA(model, 0.9)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for avg, s, new in zip(ema.model.parameters(), start, model.parameters(), strict=True):
        torch.testing.assert_close(avg, 0.9 * s + 0.1 * new, rtol=0, atol=1e-6)
        assert not avg.requires_grad
    with pytest.raises(ValueError, match=r"1\.0"):
        WeightEMA(model, 1.0)


def test_average_is_evaluated_beside_the_weights_and_changes_no_training(tmp_path: Path) -> None:
    on = run(tiny(tmp_path, "adaptive.scheduler=true"), "on")
    off = run(tiny(tmp_path, "adaptive.scheduler=true", "train.ema_decay=0"), "off")
    pd.testing.assert_frame_equal(steps_of(on), steps_of(off))  # training bit for bit
    a, b = read_trace(on / "trace.parquet"), read_trace(off / "trace.parquet")
    assert set(b.epochs["split"]) == {"val", "valfree"}
    for split in ("val", "valfree"):  # the weights' own evaluation is unchanged
        pd.testing.assert_frame_equal(_rows(a, split), _rows(b, split))
    avg, last = a.split_metrics("valfree_ema"), a.split_metrics("valfree")
    assert len(avg) == len(last) == 4
    assert (avg["metric/MPJPE"] != last["metric/MPJPE"]).all()


def test_resume_continues_the_same_average(tmp_path: Path) -> None:
    full = run(tiny(tmp_path), "full")
    run(tiny(tmp_path, "run.epochs=2"), "part")
    part = run(tiny(tmp_path), "part", resume=True)
    ea = _rows(read_trace(full / "trace.parquet"), "valfree_ema")
    pd.testing.assert_frame_equal(ea, _rows(read_trace(part / "trace.parquet"), "valfree_ema"))


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_bad_decay_is_a_config_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.ema_decay"):
        tiny(tmp_path, f"train.ema_decay={value}")
