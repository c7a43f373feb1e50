"""Importing TensorBoard, MLflow and CSV logs as traces, then inspect and replay them."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from adaptive.importers import (
    TraceImportError,
    import_csv,
    import_mlflow,
    import_tensorboard,
    mlflow_runs,
)
from adaptive.trace import read_trace
from cli import app

runner = CliRunner()


def _tensorboard():
    """torch's TensorBoard writer; skips the calling test (only it) without the extra."""
    return pytest.importorskip("torch.utils.tensorboard", reason="needs the 'tensorboard' extra")


def _loss(c: str, s: int) -> float:
    return (2.0 if c == "a" else 5.0) / (1.0 + s / 500) + 0.01 * math.sin(s)


def _write_tb(logdir: Path, steps: int, *, every_epoch: int = 50, spe: int = 1000) -> None:
    """Like Lightning: losses every step, `epoch` every `every_epoch` steps, val per epoch."""
    w = _tensorboard().SummaryWriter(str(logdir))
    for s in range(steps):
        w.add_scalar("train/loss_a", _loss("a", s), s)
        if s % 7:  # loss_b is missing at every 7th step
            w.add_scalar("train/loss_b", _loss("b", s), s)
        if s % every_epoch == 0:
            w.add_scalar("epoch", s // spe, s)
        if (s + 1) % spe == 0:
            w.add_scalar("val/acc", s / steps, s + 1)
            w.add_scalar("epoch", s // spe, s + 1)
    w.close()


@pytest.fixture(scope="module")
def tb_logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logdir = tmp_path_factory.mktemp("tb") / "logs"
    _write_tb(logdir / "version_0", 12_000)  # more than TensorBoard's 10,000-per-tag default
    return logdir


def test_tensorboard_cli_import_inspect_replay(tb_logdir: Path, tmp_path: Path) -> None:
    out = tmp_path / "v0" / "trace.parquet"
    res = runner.invoke(
        app,
        [
            "import",
            "tensorboard",
            str(tb_logdir),
            "--components",
            "train/loss_*",
            "-m",
            "acc=val/acc",
            "-o",
            str(out),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "b: no value at 1715 of 12000 steps" in res.output
    t = read_trace(out)
    assert t.components == ["a", "b"] and t.metrics == ["acc"] and t.run_id == "version_0"
    steps = t.steps
    assert steps["step"].tolist() == list(range(12_000))  # every scalar, no downsampling
    np.testing.assert_allclose(steps["loss/a"], [_loss("a", s) for s in range(12_000)], rtol=1e-6)
    b = steps["loss/b"].to_numpy()
    assert np.isnan(b[::7]).all() and np.isfinite(np.delete(b, np.s_[::7])).all()
    # The epoch scalar is logged every 50 steps; each step takes the last one logged.
    assert steps["epoch"].tolist() == [s // 1000 for s in range(12_000)]
    val = t.split_metrics("val")
    assert val.index.tolist() == list(range(12)) and val["step"].tolist()[:2] == [1000, 2000]
    assert (val["time"].diff().dropna() > 0).all()  # the events' wall times
    res = runner.invoke(app, ["inspect", str(out)])
    assert (
        res.exit_code == 0
        and "12000 step rows (training batches), 12 evaluation rows (epoch rows: val)" in res.output
    )
    res = runner.invoke(app, ["replay", str(out), "--method", "dwa", "-q"])
    assert res.exit_code == 0, res.output
    assert (out.parent / "replays" / "replay-dwa.png").stat().st_size > 0
    frame = pd.read_parquet(out.parent / "replays" / "replay-dwa.parquet")
    late = frame[frame["epoch"] >= 2]
    assert (late["proposed/weight/a"] != 1.0).any()


def test_tensorboard_restart_and_runs(tmp_path: Path) -> None:
    tb = _tensorboard()
    logdir = tmp_path / "logs"
    w = tb.SummaryWriter(str(logdir / "r1"), filename_suffix=".1")
    for s in range(10):
        w.add_scalar("loss", float(s), s)
    w.close()
    w = tb.SummaryWriter(str(logdir / "r1"), filename_suffix=".2")  # resumed from step 5
    for s in range(5, 15):
        w.add_scalar("loss", 100.0 + s, s)
    w.close()
    _write_tb(logdir / "r2", 10)
    with pytest.raises(TraceImportError, match="holds 2 runs"):
        import_tensorboard(logdir, tmp_path / "x.parquet", components={"l": "loss"})
    report = import_tensorboard(
        logdir, tmp_path / "r1.parquet", run="r1", components={"l": "loss"}, steps_per_epoch=5
    )
    assert report.duplicates == {"loss": 5} and report.run_id == "r1"
    t = read_trace(tmp_path / "r1.parquet")
    assert t.steps["loss/l"].tolist() == [0, 1, 2, 3, 4, *[100.0 + s for s in range(5, 15)]]
    assert t.steps["epoch"].tolist() == [s // 5 for s in range(15)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-dir", "-c", "a=x"], "no such file or directory"),
        (["{logs}", "-c", "a=train/nope"], "no tag 'train/nope'; available: epoch,"),
        (["{logs}", "--components", "zzz*"], "no tag matches 'zzz*'"),
        (["{logs}"], "name the loss components"),
        (["{logs}", "-c", "a=train/loss_a", "--epoch-tag", "ep"], "pass --steps-per-epoch"),
        (["{logs}", "-c", "a=train/loss_a", "-o", "{exists}"], "already exists"),
    ],
)
def test_tensorboard_bad_input(
    tb_logdir: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "exists").mkdir()
    args = [a.format(logs=tb_logdir, exists=tmp_path / "exists") for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "t.parquet")]
    res = runner.invoke(app, ["import", "tensorboard", *args, "-q"])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "t.parquet").exists()


# ------------------------------------------------------------------------------ MLflow
# The tables MLflow's SQLAlchemy store creates (mlflow/store/tracking/dbmodels/models.py),
# with the columns the importer reads; mlflow itself is not a dependency (see
# docs/INTEGRATION.md).
_MLFLOW_SCHEMA = """
CREATE TABLE experiments (
    experiment_id INTEGER NOT NULL, name VARCHAR(256) NOT NULL,
    artifact_location VARCHAR(256), lifecycle_stage VARCHAR(32),
    creation_time BIGINT, last_update_time BIGINT,
    CONSTRAINT experiment_pk PRIMARY KEY (experiment_id), UNIQUE (name));
CREATE TABLE runs (
    run_uuid VARCHAR(32) NOT NULL, name VARCHAR(250), source_type VARCHAR(20),
    source_name VARCHAR(500), entry_point_name VARCHAR(50), user_id VARCHAR(256),
    status VARCHAR(9), start_time BIGINT, end_time BIGINT, source_version VARCHAR(50),
    lifecycle_stage VARCHAR(20), artifact_uri VARCHAR(200), experiment_id INTEGER,
    deleted_time BIGINT,
    CONSTRAINT run_pk PRIMARY KEY (run_uuid),
    FOREIGN KEY(experiment_id) REFERENCES experiments (experiment_id));
CREATE TABLE metrics (
    key VARCHAR(250) NOT NULL, value FLOAT NOT NULL, timestamp BIGINT NOT NULL,
    run_uuid VARCHAR(32) NOT NULL, step BIGINT DEFAULT '0' NOT NULL,
    is_nan BOOLEAN DEFAULT '0' NOT NULL,
    CONSTRAINT metric_pk PRIMARY KEY (key, timestamp, step, run_uuid, value, is_nan),
    FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid), CHECK (is_nan IN (0, 1)));
CREATE TABLE tags (
    key VARCHAR(250) NOT NULL, value VARCHAR(5000), run_uuid VARCHAR(32) NOT NULL,
    CONSTRAINT tag_pk PRIMARY KEY (key, run_uuid),
    FOREIGN KEY(run_uuid) REFERENCES runs (run_uuid));
"""


def _mlflow_metric(rows: list, run: str, key: str, step: int, value: float) -> None:
    # What SqlAlchemyStore.log_metric stores: NaN as 0 with is_nan, ±inf as ±max float.
    is_nan = math.isnan(value)
    if is_nan:
        value = 0.0
    elif math.isinf(value):
        value = math.copysign(1.7976931348623157e308, value)
    rows.append((key, value, 1_700_000_000_000 + 100 * step, run, step, int(is_nan)))


def _mlflow_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.executescript(_MLFLOW_SCHEMA)
    con.execute("INSERT INTO experiments VALUES (0, 'Default', 'mlruns/0', 'active', 0, 0)")
    rows: list = []
    for rid, name, stage in (("a1b2", "bright-owl-42", "active"), ("c3d4", "old", "deleted")):
        con.execute(
            "INSERT INTO runs (run_uuid, name, status, start_time, lifecycle_stage, "
            "experiment_id) VALUES (?, ?, 'FINISHED', 0, ?, 0)",
            (rid, name, stage),
        )
    con.execute(
        "INSERT INTO runs (run_uuid, name, start_time, lifecycle_stage, experiment_id) "
        "VALUES ('e5f6', '', 1, 'active', 0)"
    )
    con.execute("INSERT INTO tags VALUES ('mlflow.runName', 'from-tag', 'e5f6')")
    for s in range(40):
        _mlflow_metric(rows, "a1b2", "loss_a", s, _loss("a", s))
        _mlflow_metric(rows, "a1b2", "loss_b", s, math.nan if s == 13 else _loss("b", s))
        if s % 10 == 9:
            _mlflow_metric(rows, "a1b2", "val_acc", s + 1, s / 40)
        _mlflow_metric(rows, "e5f6", "loss_a", s, math.inf if s == 3 else 1.0)
    con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()


def test_mlflow_sqlite_store(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    _mlflow_db(db)
    assert [(r.run_id, r.name) for r in mlflow_runs(db)] == [
        ("a1b2", "bright-owl-42"),
        ("e5f6", "from-tag"),
    ]
    out = tmp_path / "m" / "trace.parquet"
    res = runner.invoke(
        app,
        [
            "import",
            "mlflow",
            f"sqlite:///{db}",
            "--run",
            "bright-owl-42",
            "--components",
            "loss_*",
            "-m",
            "acc=val_acc",
            "--steps-per-epoch",
            "10",
            "-o",
            str(out),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    t = read_trace(out)
    assert t.run_id == "bright-owl-42" and t.components == ["a", "b"]
    assert np.isnan(t.steps["loss/b"].iloc[13]) and t.steps["epoch"].iloc[-1] == 3
    assert t.split_metrics("val")["metric/acc"].tolist() == pytest.approx(
        [0.225, 0.475, 0.725, 0.975]
    )
    res = runner.invoke(app, ["replay", str(out), "--method", "dwa", "-q"])
    assert res.exit_code == 0, res.output
    report = import_mlflow(
        db, tmp_path / "e.parquet", run="e5f6", components={"x": "loss_a"}, steps_per_epoch=10
    )
    assert math.isinf(read_trace(report.trace).steps["loss/x"].iloc[3])
    res = runner.invoke(
        app, ["import", "mlflow", str(db), "-c", "loss_a", "-o", str(tmp_path / "z")]
    )
    assert res.exit_code == 2 and "holds 2 runs" in res.stderr and "--run" in res.stderr


def test_mlflow_file_store(tmp_path: Path) -> None:
    run = tmp_path / "mlruns" / "0" / "0f9e"
    (run / "metrics" / "train").mkdir(parents=True)
    (run / "meta.yaml").write_text(
        "artifact_uri: file:///x\nexperiment_id: '0'\nlifecycle_stage: active\n"
        "run_id: 0f9e\nrun_name: calm-cat-7\nstatus: 3\n"
    )
    for key in ("train/loss_a", "train/loss_b", "epoch"):
        lines = []
        for s in range(30):
            v = s // 10 if key == "epoch" else _loss(key[-1], s)
            lines.append(f"{1_700_000_000_000 + s} {v} {s}")
        (run / "metrics" / key).write_text("\n".join(lines) + "\n")
    report = import_mlflow(tmp_path / "mlruns", tmp_path / "f.parquet", patterns=["train/loss_*"])
    assert report.run_id == "calm-cat-7" and report.components == {
        "a": "train/loss_a",
        "b": "train/loss_b",
    }
    t = read_trace(tmp_path / "f.parquet")
    assert t.steps["epoch"].tolist() == [s // 10 for s in range(30)]
    np.testing.assert_allclose(t.steps["loss/b"], [_loss("b", s) for s in range(30)], rtol=1e-6)
    assert t.steps["time"].iloc[-1] == pytest.approx(0.029, abs=1e-6)


# ------------------------------------------------------------------------------ CSV
def test_csv_wide_and_long(tmp_path: Path) -> None:
    n = 30
    wide = pd.DataFrame(
        {
            "_step": range(n),
            "_runtime": [0.5 * s for s in range(n)],
            "train/loss_a": [_loss("a", s) for s in range(n)],
            "train/loss_b": [np.nan if s == 4 else _loss("b", s) for s in range(n)],
            "epoch": [s // 10 for s in range(n)],
            "val_acc": [s / n if s % 10 == 9 else np.nan for s in range(n)],
            "notes": ["x"] * n,
        }
    )
    wide.to_csv(tmp_path / "wandb.csv", index=False)
    long = wide.melt(id_vars=["_step"], value_vars=["train/loss_a", "train/loss_b", "epoch"])
    long = long.rename(columns={"_step": "step", "variable": "key"}).dropna()
    long.sample(frac=1.0, random_state=0).to_csv(tmp_path / "long.csv", index=False)
    for name in ("wandb.csv", "long.csv"):
        out = tmp_path / name.replace(".csv", ".parquet")
        res = runner.invoke(
            app,
            [
                "import",
                "csv",
                str(tmp_path / name),
                "-c",
                "a=train/loss_a",
                "-c",
                "b=train/loss_b",
                "-o",
                str(out),
                "-q",
            ],
        )
        assert res.exit_code == 0, res.output
        assert "b: no value at 1 of 30 steps" in res.output
        t = read_trace(out)
        assert t.steps["epoch"].tolist() == [s // 10 for s in range(n)]
        np.testing.assert_allclose(t.steps["loss/a"], wide["train/loss_a"], rtol=1e-6)
        assert runner.invoke(app, ["replay", str(out), "-m", "dwa", "-q"]).exit_code == 0
    report = import_csv(
        tmp_path / "wandb.csv",
        tmp_path / "m.parquet",
        patterns=["train/loss_*"],
        metrics={"acc": "val_acc"},
    )
    assert report.epoch_rows == 3 and report.run_id == "wandb"


def test_csv_bad_input(tmp_path: Path) -> None:
    (tmp_path / "nostep.csv").write_text("loss_a,loss_b\n1,2\n3,4\n")
    out = ["-o", str(tmp_path / "t.parquet")]  # not the default ./runs
    res = runner.invoke(app, ["import", "csv", str(tmp_path / "nostep.csv"), "-c", "loss_a", *out])
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "no step column" in res.stderr
    res = runner.invoke(app, ["import", "csv", str(tmp_path / "missing.csv"), "-c", "a", *out])
    assert res.exit_code == 2 and "no such file" in res.stderr
    (tmp_path / "ok.csv").write_text("step,loss_a\n0,1\n1,2\n")
    res = runner.invoke(
        app,
        [
            "import",
            "csv",
            str(tmp_path / "ok.csv"),
            "-c",
            "a=loss_a",
            "-o",
            str(tmp_path / "o.parquet"),
        ],
    )
    assert res.exit_code == 2 and "--steps-per-epoch" in res.stderr
    assert not (tmp_path / "o.parquet").exists()


def test_pattern_names_and_clashes() -> None:
    from adaptive.importers._common import select_tags

    tags = ["run1 - train/loss_fk", "run1 - train/loss_rot", "val/fk", "epoch"]
    comps, mets = select_tags(
        tags, components={}, patterns=["* - train/loss_*"], metrics={"m": "val/fk"}, source="s"
    )
    assert comps == {"run1_fk": "run1 - train/loss_fk", "run1_rot": "run1 - train/loss_rot"}
    assert mets == {"m": "val/fk"}
    with pytest.raises(TraceImportError, match="both 'a/fk' and 'b/fk'"):
        select_tags(
            ["a/fk", "b/fk"], components={}, patterns=["a/*", "b/*"], metrics={}, source="s"
        )
