"""`adaptive replay FOLDER -m M --jobs N [--engine ray]`: a fleet of runs replayed each on its
own into one summary table (issue 27, item 3). The table is checked against replays of the
runs one by one, read back with DuckDB and Polars (not this package), and it is the same
table in this process, on the process pool, on Ray and from the plain `adaptive replay
FOLDER` (no --jobs), over a fleet of 200 generated traces."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from adaptive import TraceWriter
from adaptive.trace import read_trace
from cli import app

runner = CliRunner()
COMPS = ["a", "b", "c"]
N_RUNS = 200
#: a per-step method and a narrow clamp: the fraction of steps at it differs between runs
METHOD, RANGE = "uncertainty", ["--adjustment-range", "0.1"]
STEM = "replay-uncertainty-adjustment_range=0.1-fleet"


def small_trace(path: Path, seed: int, steps: int = 120, run_id: str | None = None) -> Path:
    """A small trace whose losses decay at a rate that depends on `seed`."""
    rng = np.random.default_rng(seed)
    rate = 40.0 + 15.0 * (seed % 7)
    with TraceWriter(path, components=COMPS, run_id=run_id or f"run{seed:02d}") as w:
        for s in range(steps):
            losses = {
                "a": math.exp(-s / rate) + 0.05 * rng.random(),
                "b": 2.0 * math.exp(-s / (3 * rate)),
                "c": 0.3 + 0.02 * rng.random(),
            }
            w.log_step(step=s, epoch=s // 20, losses=losses, loss_total=sum(losses.values()))
    return path


def copy_trace(template: Path, path: Path, seed: int) -> Path:
    """`small_trace(path, seed)`'s losses, and its folder's name as run id, in a copy of
    `template`'s Parquet table (one file): a cheap stand-in for a `TraceWriter` per run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(template)
    rng = np.random.default_rng(seed)
    rate = 40.0 + 15.0 * (seed % 7)
    s = table.column("step").to_numpy().astype(np.float64)
    losses = {
        "a": np.exp(-s / rate) + 0.05 * rng.random(len(s)),
        "b": 2.0 * np.exp(-s / (3 * rate)),
        "c": 0.3 + 0.02 * rng.random(len(s)),
    }
    cols = {name: table.column(name) for name in table.column_names}
    cols["run_id"] = pa.array([path.parent.name] * len(s), type=pa.string())
    for c, loss in losses.items():
        cols[f"loss/{c}"] = pa.array(loss.astype(np.float32))
    cols["loss_total"] = pa.array(sum(losses.values()).astype(np.float32))
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pydict(cols, schema=table.schema), path)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of N_RUNS run folders, each with its trace.parquet (as `adaptive import`
    and the reference trainer write them): the first written by `TraceWriter` (a folder of
    parts), the others copies of its table with their own losses and run id (one file)."""
    root = tmp_path_factory.mktemp("fleet") / "runs"
    template = small_trace(root / "run000" / "trace.parquet", seed=0, run_id="run000")
    for i in range(1, N_RUNS):
        copy_trace(template, root / f"run{i:03d}" / "trace.parquet", seed=i)
    return root


def _replay(path: Path, out: Path | None, *extra: str) -> pd.DataFrame:
    """The fleet's table, written into `out` (None: the default, PATH/replays)."""
    where = ["-o", str(out)] if out is not None else []
    args = ["replay", str(path), "-m", METHOD, *RANGE, *where, "-q", *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    out = out if out is not None else path / "replays"
    return pd.read_parquet(out / f"{STEM}.parquet")


@pytest.fixture(scope="module")
def serial(fleet: Path) -> pd.DataFrame:
    return _replay(fleet, None, "--jobs", "1")


def test_one_row_per_run_with_its_stability_figures(fleet: Path, serial: pd.DataFrame) -> None:
    from replay import replay, stability_metrics, stability_score

    assert len(serial) == N_RUNS
    assert list(serial["run"]) == [f"run{i:03d}" for i in range(N_RUNS)]
    assert list(serial.columns[:7]) == [
        "run", "run_id", "trace", "method", "steps", "clamp_fraction", "stability_score",
    ]  # fmt: skip
    assert serial["error"].isna().all()
    assert (serial["trace"] == [f"run{i:03d}/trace.parquet" for i in range(N_RUNS)]).all()
    # the narrow clamp is hit, more in some runs than in others
    assert serial["clamp_fraction"].between(0, 1).all()
    assert serial["clamp_fraction"].max() > 0 and serial["clamp_fraction"].nunique() > 3
    # each row is what replaying its run alone gives
    for i in (0, 5, N_RUNS - 1):
        trace = read_trace(fleet / f"run{i:03d}" / "trace.parquet")
        result = replay(trace, METHOD, adjustment_range=0.1)
        row = serial.iloc[i]
        clamped = result.frame[[f"clamped/{c}" for c in COMPS]].to_numpy(bool)
        assert row["clamp_fraction"] == clamped.any(axis=1).mean()
        metrics = stability_metrics(result)
        assert row["stability_score"] == stability_score(metrics)
        for key, value in metrics.items():
            if key != "steps":
                np.testing.assert_equal(row[key], value, err_msg=key)
        assert row["steps"] == len(trace.steps) == 120


def test_the_table_is_read_by_duckdb_and_polars(fleet: Path, serial: pd.DataFrame) -> None:
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    table = fleet / "replays" / f"{STEM}.parquet"
    rows = duckdb.sql(
        f"SELECT run, clamp_fraction, stability_score, \"at_clamp_share/a\" FROM '{table}' "
        "WHERE error IS NULL ORDER BY clamp_fraction DESC, run LIMIT 5"
    ).fetchall()
    top = serial.sort_values(["clamp_fraction", "run"], ascending=[False, True]).head(5)
    assert [r[0] for r in rows] == list(top["run"])
    assert [r[1] for r in rows] == list(top["clamp_fraction"])
    assert [r[3] for r in rows] == list(top["at_clamp_share/a"])
    frame = pl.read_parquet(table)
    assert frame.height == N_RUNS and frame.columns == list(serial.columns)
    assert frame["run"].dtype == pl.String and frame["steps"].dtype == pl.Int64
    assert frame["stability_score"].to_list() == list(serial["stability_score"])
    csv = pl.read_csv(table.with_suffix(".csv"))
    np.testing.assert_allclose(csv["clamp_fraction"].to_numpy(), serial["clamp_fraction"])


def test_the_pool_gives_the_serial_table(fleet: Path, serial: pd.DataFrame, tmp_path: Path) -> None:
    pool = _replay(fleet, tmp_path, "--jobs", "2")
    pd.testing.assert_frame_equal(pool, serial)  # bit for bit, in the same order


def test_ray_gives_the_pool_table(fleet: Path, serial: pd.DataFrame, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    on_ray = _replay(fleet, tmp_path, "--engine", "ray", "--jobs", "2")
    pd.testing.assert_frame_equal(on_ray, serial)  # = the pool's (the test above)


def test_the_plain_command_writes_the_same_table(
    fleet: Path, serial: pd.DataFrame, tmp_path: Path
) -> None:
    """`adaptive replay FOLDER -m M` (no --jobs) writes, beside each run's table and
    figure, the summary table the fleet writes: same columns, dtypes and values."""
    plain = _replay(fleet, tmp_path, "--format", "svg")
    pd.testing.assert_frame_equal(plain, serial)
    assert (tmp_path / "run000" / "replay-uncertainty-adjustment_range=0.1.parquet").is_file()
    csv = pd.read_csv(tmp_path / f"{STEM}.csv")
    assert list(csv.columns) == list(serial.columns) and len(csv) == N_RUNS


def test_the_plain_table_names_runs_as_the_fleet_does(tmp_path: Path) -> None:
    """Run folders named otherwise than their run ids, and a run folder whose trace holds
    two runs: `run` is the folder (`FOLDER/RUN_ID` for the two), as with --jobs 1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "runs"
    small_trace(root / "first" / "trace.parquet", seed=1, steps=60, run_id="r1")
    small_trace(root / "second" / "trace.parquet", seed=2, steps=60, run_id="r2")
    both = pa.concat_tables(
        [pq.read_table(root / n / "trace.parquet") for n in ("first", "second")]
    )
    (root / "pair").mkdir()
    pq.write_table(both, root / "pair" / "run.parquet")
    tables = {}
    for name, extra in (("plain", []), ("fleet", ["--jobs", "1"])):
        args = ["replay", str(root), "-m", "dwa", "-o", str(tmp_path / name), "-q", *extra]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        tables[name] = pd.read_parquet(tmp_path / name / "replay-dwa-fleet.parquet")
    pd.testing.assert_frame_equal(tables["plain"], tables["fleet"])
    assert list(tables["plain"]["run"]) == ["first", "pair/r1", "pair/r2", "second"]
    assert list(tables["plain"]["trace"])[:2] == ["first/trace.parquet", "pair/run.parquet"]


def _trial_folder(root: Path) -> Path:
    (root / "trial-design.json").parent.mkdir(parents=True)
    (root / "trial-design.json").write_text(json.dumps({"arms": ["baseline", "dwa"]}))
    for arm, offset in (("baseline", 0), ("dwa", 10)):
        for seed in range(2):
            small_trace(root / arm / f"seed{seed}" / "trace.parquet", offset + seed, 60, "x")
    return root


def test_a_trial_folder_is_refused_alone_and_replayed_as_a_fleet(tmp_path: Path) -> None:
    trial = _trial_folder(tmp_path / "trial")
    res = runner.invoke(app, ["replay", str(trial), "-m", "dwa", "-q"])
    assert res.exit_code == 2
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and "arms baseline, dwa" in line
    assert f"adaptive replay {trial / 'baseline'} -m METHOD" in line  # an arm: its runs
    assert f"adaptive replay {trial} -m dwa --jobs 2" in line  # every run: one table
    res = runner.invoke(app, ["replay", str(trial), "-m", "dwa", "--jobs", "1", "-q"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(trial / "replays" / "replay-dwa-fleet.parquet")
    assert list(table["run"]) == ["baseline/seed0", "baseline/seed1", "dwa/seed0", "dwa/seed1"]
    assert list(table["trace"]) == [f"{r}/trace.parquet" for r in table["run"]]
    assert (table["run_id"] == "x").all() and table["error"].isna().all()
    # an arm folder is a folder of runs: the same rows as the trial's
    res = runner.invoke(app, ["replay", str(trial / "dwa"), "-m", "dwa", "--jobs", "1", "-q"])
    assert res.exit_code == 0, res.output
    arm = pd.read_parquet(trial / "dwa" / "replays" / "replay-dwa-fleet.parquet")
    assert list(arm["run"]) == ["seed0", "seed1"]
    cols = ["steps", "clamp_fraction", "stability_score", "mean_abs_delta"]
    pd.testing.assert_frame_equal(arm[cols], table[cols].iloc[2:].reset_index(drop=True))


def test_a_run_that_cannot_be_replayed_is_a_row_with_its_error(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for i in range(3):
        small_trace(root / f"run{i}" / "trace.parquet", seed=i, steps=60)
    shutil.rmtree(root / "run1" / "trace.parquet")  # a damaged run: its trace is not Parquet
    (root / "run1" / "trace.parquet").write_bytes(b"not parquet")
    # a run with one damaged part among good ones: read without it, and counted
    (root / "run2" / "trace.parquet" / "part-000009.parquet").write_bytes(b"torn")
    res = runner.invoke(app, ["replay", str(root), "-m", "dwa", "--jobs", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert "not replayed: run1:" in res.output
    assert "replayed dwa over 2 of 3 runs" in res.output
    table = pd.read_parquet(root / "replays" / "replay-dwa-fleet.parquet")
    assert list(table["error"].isna()) == [True, False, True]
    assert list(table["skipped_parts"].fillna(-1)) == [0, -1, 1]
    assert np.isnan(table.loc[1, "stability_score"]) and pd.isna(table.loc[1, "steps"])


def test_bad_input_is_one_line_and_exit_2(fleet: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    (bad / "run0").mkdir(parents=True)
    (bad / "run0" / "trace.parquet").write_bytes(b"not parquet")
    cases = [
        (["replay", str(fleet), "-m", "dwa", "--jobs", "0"], "--jobs must be >= 1"),
        (["replay", str(fleet), "-m", "dwa", "--engine", "dask"], "pool or ray"),
        (["replay", str(fleet), "-m", "nosuch", "--jobs", "2"], "nosuch"),
        (["replay", str(tmp_path / "none"), "-m", "dwa", "--jobs", "2"], "no such file"),
        (["replay", str(tmp_path), "-m", "dwa", "--jobs", "2"], "no trace found"),
        (["replay", str(bad), "-m", "dwa", "--jobs", "1"], "no run could be replayed"),
    ]
    for args, needle in cases:
        res = runner.invoke(app, [*args, "-q", "-o", str(tmp_path / "out")])
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.output and len(res.output.strip().splitlines()) == 1, (
            args,
            res.output,
        )
    assert not (tmp_path / "out").exists()  # nothing written
