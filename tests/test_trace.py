"""Trace format v1: writer/reader round trip, crash safety, bad input, readers without us."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adaptive.trace import (
    TRACE_VERSION,
    TraceError,
    TraceWarning,
    TraceWriter,
    compact_trace,
    read_trace,
    truncate_trace,
)

COMPONENTS = ["fk_pos", "rot", "root_vel", "yaw"]


def write_run(path: Path, steps: int = 20, steps_per_epoch: int = 5, **kw) -> None:
    with TraceWriter(path, components=COMPONENTS, metrics=["MPJPE"], run_id="r1", **kw) as w:
        for s in range(steps):
            e = s // steps_per_epoch
            w.log_step(
                step=s,
                epoch=e,
                losses={c: 0.1 * (i + 1) + s for i, c in enumerate(COMPONENTS)},
                loss_total=1.0 + s,
                weights=dict.fromkeys(COMPONENTS, 1.0),
                weights_base=dict.fromkeys(COMPONENTS, 1.0),
                schedule={"tf_ratio": 0.5},
                grad_norm=0.25,
                lr=1e-3,
            )
            if (s + 1) % steps_per_epoch == 0:
                w.log_epoch(split="valfree", epoch=e, step=s + 1, metrics={"MPJPE": 100.0 - e})


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    write_run(path, flush_rows=7)
    assert len(list(path.glob("part-*.parquet"))) > 1
    tr = read_trace(path)
    assert tr.version == TRACE_VERSION
    assert tr.run_id == "r1"
    assert tr.components == COMPONENTS
    assert tr.metrics == ["MPJPE"]
    assert len(tr.steps) == 20 and len(tr.epochs) == 4
    assert tr.steps["step"].tolist() == list(range(20))
    assert tr.steps["loss/rot"].tolist() == pytest.approx([0.2 + s for s in range(20)], rel=1e-6)
    assert tr.steps["loss/rot"].dtype == np.float32
    assert tr.steps["epoch"].dtype == np.int32
    assert tr.epochs["metric/MPJPE"].tolist() == [100.0, 99.0, 98.0, 97.0]
    assert "metric/MPJPE" not in tr.steps.columns  # columns without a value on step rows
    assert "weight/fk_pos" not in tr.epochs.columns
    assert tr.split_metrics("valfree").loc[2, "metric/MPJPE"] == 98.0
    assert tr.run["package_version"]
    assert (tr.steps["time"].diff().dropna() >= 0).all()


def test_tensor_values_are_gathered_at_flush(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    with TraceWriter(path, components=["a"]) as w:
        for s in range(5):
            w.log_step(
                step=s,
                epoch=0,
                losses={"a": torch.tensor(float(s), requires_grad=True) * 2},
                grad_norm=torch.tensor(s / 10, dtype=torch.float64),
            )
    tr = read_trace(path)
    assert tr.steps["loss/a"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert tr.steps["grad_norm"].tolist() == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])


def test_nan_and_inf_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    with TraceWriter(path, components=["a", "b"]) as w:
        w.log_step(step=0, epoch=0, losses={"a": math.nan, "b": math.inf})
        w.log_step(step=1, epoch=0, losses={"a": 1.0, "b": -math.inf})
    tr = read_trace(path)
    a, b = tr.steps["loss/a"].to_numpy(), tr.steps["loss/b"].to_numpy()
    assert math.isnan(a[0]) and a[1] == 1.0
    assert b[0] == math.inf and b[1] == -math.inf


def test_flush_by_time(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    w = TraceWriter(path, components=["a"], flush_rows=10_000, flush_seconds=0.05, min_part_rows=3)
    w.log_step(step=0, epoch=0, losses={"a": 1.0})
    time.sleep(0.1)
    w.log_step(step=1, epoch=0, losses={"a": 1.0})  # past the time limit, but only 2 rows
    assert not list(path.glob("part-*.parquet"))
    w.log_step(step=2, epoch=0, losses={"a": 1.0})  # 3 rows: a part worth writing
    assert len(read_trace(path).steps) == 3
    w.close()
    assert len(list(path.glob("part-*.parquet"))) == 1


def test_compact_keeping_the_directory_can_be_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    write_run(path, flush_rows=4)
    before = read_trace(path)
    assert len(list(path.glob("part-*.parquet"))) > 3
    assert compact_trace(path, keep_directory=True) == path
    assert [p.name for p in path.iterdir()] == ["part-000000.parquet"]
    assert [p.name for p in tmp_path.iterdir()] == ["run.parquet"]  # no leftovers
    after = read_trace(path)
    pd.testing.assert_frame_equal(before.steps, after.steps)
    pd.testing.assert_frame_equal(before.epochs, after.epochs)
    last = int(after.steps["step"].max())
    with TraceWriter(path, components=COMPONENTS, run_id="r1", append=True) as w:
        w.log_step(step=last + 1, epoch=9, losses=dict.fromkeys(COMPONENTS, 1.0))
    assert read_trace(path).steps["step"].tolist() == [*after.steps["step"], last + 1]


def test_reader_ignores_the_tools_outputs(tmp_path: Path) -> None:
    run = tmp_path / "base"
    write_run(run / "trace.parquet", flush_rows=4)
    want = read_trace(run / "trace.parquet")
    # what `replay`, `compare` and `sweep` (or an older version of them) leave in a run folder
    noise = pd.DataFrame({"step": [0, 1], "delta": [0.1, 0.2]})
    for rel in (
        "replay-dwa.parquet",
        "replays/replay-dwa.parquet",
        "compare/x.parquet",
        "sweep-dwa/x.parquet",
        "_tmp/x.parquet",
    ):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        noise.to_parquet(run / rel)
    got = read_trace(run)
    pd.testing.assert_frame_equal(want.steps, got.steps)
    assert compact_trace(run / "trace.parquet", keep_directory=True) == run / "trace.parquet"


def test_refuses_to_mix_runs_unless_appending(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    write_run(path, steps=5)
    with pytest.raises(FileExistsError, match="append=True"):
        TraceWriter(path, components=COMPONENTS)
    with TraceWriter(path, components=COMPONENTS, run_id="r1", append=True) as w:
        w.log_step(step=5, epoch=1, losses=dict.fromkeys(COMPONENTS, 1.0))
    assert read_trace(path).steps["step"].tolist() == list(range(6))


def test_writer_validates_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_rows must be >= 1, got 0"):
        TraceWriter(tmp_path / "x", flush_rows=0)
    with pytest.raises(ValueError, match="flush_seconds must be > 0, got -1"):
        TraceWriter(tmp_path / "x", flush_seconds=-1)
    with pytest.raises(ValueError, match="min_part_rows must be >= 1, got 0"):
        TraceWriter(tmp_path / "x", min_part_rows=0)


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from adaptive.trace import TraceWriter
    w = TraceWriter(sys.argv[1], components=["a", "b"], flush_rows=50, flush_seconds=3600)
    step = 0
    while True:
        w.log_step(step=step, epoch=step // 100, losses={"a": float(step), "b": 1.0})
        step += 1
        if step % 50 == 0:
            print(step, flush=True)   # a part file with these rows is complete
        if step == 420:
            print("buffered", flush=True)
            time.sleep(60)
    """
)


def test_sigkill_loses_at_most_the_buffer(tmp_path: Path) -> None:
    path = tmp_path / "crash.parquet"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(path)], stdout=subprocess.PIPE, text=True
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == "buffered":
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert not list(path.glob("*.tmp"))
    tr = read_trace(path)
    assert tr.steps["step"].tolist() == list(range(400))  # 20 buffered rows lost, no more
    # Readable without this package too.
    assert pq.read_table(path).num_rows == 400
    assert len(pd.read_parquet(path)) == 400


def test_plain_readers(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    write_run(path, flush_rows=6)
    table = pq.read_table(path)
    assert table.num_rows == 24
    meta = table.schema.metadata
    assert meta[b"adaptive.trace_version"] == b"1"
    assert json.loads(meta[b"adaptive.components"]) == COMPONENTS
    assert json.loads(meta[b"adaptive.run"])["package_version"]
    df = pd.read_parquet(path)
    assert set(df["kind"]) == {"step", "epoch"}
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql(f"select count(*) from '{path}/*.parquet'").fetchall()[0][0] == 24
    pl = pytest.importorskip("polars")
    assert pl.read_parquet(f"{path}/*.parquet").height == 24


def test_minimal_trace_from_plain_pyarrow(tmp_path: Path) -> None:
    path = tmp_path / "min.parquet"
    n = 12
    pq.write_table(
        pa.table(
            {
                "run_id": ["x"] * n,
                "kind": ["step"] * n,
                "split": ["train"] * n,
                "epoch": [i // 4 for i in range(n)],
                "step": list(range(n)),
                "loss/a": [1.0 / (i + 1) for i in range(n)],
                "note": ["kept"] * n,
            }
        ),
        path,
    )
    tr = read_trace(path)
    assert tr.components == ["a"] and tr.metrics == [] and tr.run_id == "x"
    assert "note" in tr.steps.columns  # unknown columns are kept
    assert tr.version == 1


def test_corrupt_part_is_skipped_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    write_run(path, flush_rows=5)
    parts = sorted(path.glob("part-*.parquet"))
    data = parts[1].read_bytes()
    lost = pq.read_metadata(parts[1]).num_rows
    parts[1].write_bytes(data[: len(data) // 2])
    with pytest.warns(TraceWarning, match=parts[1].name):
        tr = read_trace(path)
    assert tr.skipped_parts == [parts[1]]
    assert len(tr.steps) + len(tr.epochs) == 24 - lost


def _table(**overrides):
    n = 4
    cols = {
        "run_id": ["x"] * n,
        "kind": ["step"] * n,
        "split": ["train"] * n,
        "epoch": [0] * n,
        "step": list(range(n)),
        "loss/a": [1.0] * n,
    }
    cols.update(overrides)
    return pa.table({k: v for k, v in cols.items() if v is not None})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file or directory"),
        (lambda p: p.write_text("hello"), "not a readable Parquet file"),
        (lambda p: pq.write_table(_table(step=None), p), "missing required column(s) step"),
        (lambda p: pq.write_table(_table(**{"loss/a": None}), p), "no loss/<component> column"),
        (
            lambda p: pq.write_table(
                _table().replace_schema_metadata({"adaptive.trace_version": "7"}), p
            ),
            "unknown trace version '7'",
        ),
        (lambda p: pq.write_table(_table(step=[0, 1, 1, 2]), p), "duplicate step row"),
        (lambda p: pq.write_table(_table(**{"loss/a": ["a"] * 4}), p), "'loss/a' is not numeric"),
        (lambda p: pq.write_table(_table(kind=["step", "bogus", "step", "step"]), p), "bogus"),
        (  # the metadata lists a component whose loss column is gone
            lambda p: pq.write_table(
                _table().replace_schema_metadata({"adaptive.components": '["a", "cls"]'}), p
            ),
            "lists component 'cls' but has no loss/cls column",
        ),
    ],
)
def test_bad_input_errors_name_file_and_problem(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.parquet"
    make(path)
    with pytest.raises(TraceError) as info:
        read_trace(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"holds no \.parquet files"):
        read_trace(tmp_path)


def test_compact_merges_atomically(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    write_run(path, flush_rows=4)
    before = read_trace(path)
    out = compact_trace(path)
    assert out == path and path.is_file()
    after = read_trace(path)
    pd.testing.assert_frame_equal(before.steps, after.steps)
    pd.testing.assert_frame_equal(before.epochs, after.epochs)
    assert after.components == COMPONENTS
    assert not list(tmp_path.glob("*.tmp")) and len(list(tmp_path.iterdir())) == 1


def test_truncate_for_resume(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    write_run(path, flush_rows=3)
    dropped = truncate_trace(path, through_epoch=1)
    tr = read_trace(path)
    assert dropped == 12
    assert tr.steps["epoch"].max() == 1 and len(tr.steps) == 10 and len(tr.epochs) == 2


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12
)
values = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    comps=st.lists(names, min_size=1, max_size=5, unique=True),
    data=st.data(),
)
def test_round_trip_property(tmp_path_factory, comps, data) -> None:
    path = tmp_path_factory.mktemp("prop") / "t.parquet"
    n = data.draw(st.integers(1, 8))
    rows = [data.draw(st.lists(values, min_size=len(comps), max_size=len(comps))) for _ in range(n)]
    with TraceWriter(path, components=comps, flush_rows=3) as w:
        for s, row in enumerate(rows):
            w.log_step(step=s, epoch=0, losses=dict(zip(comps, row, strict=True)))
    tr = read_trace(path)
    assert tr.components == comps
    got = tr.steps[[f"loss/{c}" for c in comps]].to_numpy()
    want = np.array(rows, dtype=np.float32).reshape(n, len(comps))
    np.testing.assert_array_equal(got, want)  # NaN == NaN here; inf kept


def test_pooled_runs_share_step_numbers_but_not_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "two.parquet"
    pq.write_table(_table(run_id=["b", "b", "a", "a"], step=[1, 0, 1, 0]), path)
    tr = read_trace(path)
    assert tr.steps[["run_id", "step"]].values.tolist() == [["a", 0], ["a", 1], ["b", 0], ["b", 1]]
    assert sorted(tr.by_run()) == ["a", "b"]
    pq.write_table(_table(run_id=["a", "b", "b", "a"], step=[0, 0, 1, 1]), path)
    assert len(read_trace(path).steps) == 4
    pq.write_table(_table(run_id=["a", "b", "b", "b"], step=[0, 0, 1, 1]), path)
    with pytest.raises(TraceError, match="1 duplicate step row\\(s\\), first at run 'b' step 1"):
        read_trace(path)


def test_truncate_before_step_keeps_earlier_steps_and_their_epoch_rows(tmp_path: Path) -> None:
    """The bound a mid-epoch checkpoint needs (Lightning): step rows before the step, epoch
    rows recorded at or before it."""
    path = tmp_path / "t.parquet"
    with TraceWriter(path, components=["a"], metrics=["m"], flush_rows=4) as w:
        for s in range(10):
            w.log_step(step=s, epoch=s // 5, losses={"a": float(s)})
            if s % 5 == 4:
                w.log_epoch(split="val", epoch=s // 5, step=s + 1, metrics={"m": 1.0})
    assert truncate_trace(path, before_step=5) == 6  # steps 5..9 and the epoch row at 10
    tr = read_trace(path)
    assert tr.steps["step"].tolist() == [0, 1, 2, 3, 4]
    assert tr.epochs["step"].tolist() == [5]
    with pytest.raises(ValueError, match="exactly one"):
        truncate_trace(path, through_epoch=1, before_step=3)
