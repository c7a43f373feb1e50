"""CLI: inspect and compact, including bad input (one line on stderr, exit code 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from adaptive.trace import read_trace
from cli import app
from tests.test_trace import write_run

runner = CliRunner()


def test_version_and_help() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("adaptive ")
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "inspect" in res.output


def test_inspect_writer_trace(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    write_run(path)
    res = runner.invoke(app, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    assert "run id     r1" in res.output
    assert "20 step rows (training batches), 4 evaluation rows (epoch rows: valfree)" in res.output
    assert "mean raw training loss per epoch" in res.output
    assert "fk_pos" in res.output and "metric/MPJPE" in res.output


def test_inspect_minimal_pyarrow_trace(tmp_path: Path) -> None:
    path = tmp_path / "min.parquet"
    pq.write_table(
        pa.table(
            {
                "run_id": ["m"] * 3,
                "kind": ["step"] * 3,
                "split": ["train"] * 3,
                "epoch": [0, 0, 1],
                "step": [0, 1, 2],
                "loss/x": [3.0, 1.0, 2.0],
            }
        ),
        path,
    )
    res = runner.invoke(app, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    assert (
        "components x" in res.output
        and "3 step rows (training batches), 0 evaluation rows" in res.output
    )
    assert "in epochs 0..1 (no evaluation recorded)" in res.output


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    proc = subprocess.run(
        [sys.executable, "-m", "adaptive", "inspect", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and str(bad) in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_compact(tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    write_run(path, flush_rows=3)
    res = runner.invoke(app, ["compact", str(path), "--out", str(tmp_path / "one.parquet")])
    assert res.exit_code == 0, res.output
    assert len(read_trace(tmp_path / "one.parquet").steps) == 20
    res = runner.invoke(app, ["compact", str(tmp_path / "missing")])
    assert res.exit_code == 2
    res = runner.invoke(app, ["inspect", str(path)])
    assert res.exit_code == 0 and "part files (`adaptive compact" in res.output
    res = runner.invoke(app, ["compact", str(path)])  # in place: one part, still a directory
    assert res.exit_code == 0, res.output
    assert [p.name for p in path.iterdir()] == ["part-000000.parquet"]
    res = runner.invoke(app, ["inspect", str(path)])
    assert res.exit_code == 0 and "part files" not in res.output
    res = runner.invoke(app, ["compact", str(path), "--single-file"])
    assert res.exit_code == 0 and path.is_file() and len(read_trace(path).steps) == 20


def test_version_imports_nothing_heavy() -> None:
    code = (  # main() leaves through os._exit after the atexit handlers: report from one
        "import atexit, sys\n"
        "sys.argv = ['adaptive', '--version']\n"
        "heavy = ('torch', 'pyarrow', 'pandas', 'matplotlib')\n"
        "atexit.register(lambda: print(sorted(m for m in heavy if m in sys.modules)))\n"
        "from adaptive._cli import main\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    version, loaded = proc.stdout.splitlines()
    assert version.startswith("adaptive ") and loaded == "[]"


def test_a_shadowing_replay_package_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "other" / "replay"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")  # what another package called `replay` looks like
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "other")}
    for args in (["--version"], ["inspect", "x"]):
        proc = subprocess.run(
            [sys.executable, "-m", "adaptive", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,  # not the repository root, where ours would come first
            env=env,
        )
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and str(fake) in proc.stderr
        assert "RePlay" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "adaptive", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and proc.stderr == ""


def test_help_shows_plain_placeholders() -> None:
    for command in ("inspect", "compact", "replay", "train", "compare", "sweep", "demo"):
        res = runner.invoke(app, [command, "--help"])
        assert res.exit_code == 0, res.output
        assert "Example:" in res.output
        for bad in ("<list[", "{path}", "<path>", "<int>", "<float>", "<str>"):
            assert bad not in res.output, (command, bad)


def test_a_component_without_its_loss_column_is_an_error_everywhere(tmp_path: Path) -> None:
    """The metadata lists loss components; one whose `loss/<c>` column was dropped is not
    silently left out (inspect listing fewer, replay weighting the rest)."""
    path = tmp_path / "run.parquet"
    write_run(path)
    table = read_trace_table(path).drop_columns(["loss/rot"])
    cut = tmp_path / "cut.parquet"
    pq.write_table(table, cut)
    for args in (["inspect", str(cut)], ["replay", str(cut), "-m", "dwa", "-q"]):
        res = runner.invoke(app, [*args, "-o", str(tmp_path / "o")] if "replay" in args else args)
        assert res.exit_code == 2, (args, res.output)
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.output
        assert "loss/rot" in res.stderr and str(cut) in res.stderr, res.stderr


def read_trace_table(path: Path) -> pa.Table:
    """All parts of a written trace as one table, with the writer's schema metadata."""
    parts = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    return pa.concat_tables([pq.read_table(p) for p in parts])


def _toy_run(run_dir: Path, run_id: str, steps: int = 4) -> None:
    from adaptive import TraceWriter

    with TraceWriter(run_dir / "trace.parquet", components=["a"], run_id=run_id) as w:
        for s in range(steps):
            w.log_step(step=s, epoch=0, losses={"a": 1.0 / (1 + s)})


def test_a_trial_folder_or_a_folder_of_runs_says_what_it_is(tmp_path: Path) -> None:
    """inspect (and replay) on a trial folder or a folder of runs that does not read as one
    trace say what the folder is and which command reads it, not what broke inside."""
    from adaptive.trace._folders import TRIAL_DESIGN
    from adaptive.trial._runner import DESIGN

    assert TRIAL_DESIGN == DESIGN
    trial = tmp_path / "trials" / "t1"  # what `adaptive trial` lays out: ARM/seedK folders
    for arm in ("baseline", "dwa"):
        for seed in (0, 1):
            _toy_run(trial / arm / f"seed{seed}", f"seed{seed}")  # run ids repeat across arms
    (trial / DESIGN).write_text("{}")
    for args in (["inspect", str(trial)], ["replay", str(trial), "-m", "dwa", "-q"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and res.stderr.count("\n") == 1, (args, res.output)
        err = res.stderr
        assert "is a trial folder" in err and "duplicate" not in err, err
        assert f"`adaptive inspect {trial / 'baseline' / 'seed0'}`" in err, err
        assert f"`adaptive replay {trial / 'baseline'} -m METHOD`" in err, err
    res = runner.invoke(app, ["inspect", str(trial.parent)])  # the folder above the trial
    assert res.exit_code == 2 and "holds trial folder(s) t1" in res.stderr, res.output
    assert f"`adaptive inspect {trial / 'baseline' / 'seed0'}`" in res.stderr
    # what the message suggests works
    res = runner.invoke(app, ["inspect", str(trial / "baseline" / "seed0")])
    assert res.exit_code == 0 and "run id     seed0" in res.output, res.output
    res = runner.invoke(app, ["inspect", str(trial / "baseline")])  # an arm: distinct run ids
    assert res.exit_code == 0 and "seed0, seed1" in res.output, res.output

    runs = tmp_path / "runs"  # a folder of runs whose ids collide
    _toy_run(runs / "a", "r")
    _toy_run(runs / "b", "r")
    res = runner.invoke(app, ["inspect", str(runs)])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
    assert f"{runs} is a folder of 2 runs (a, b), not one trace" in res.stderr, res.stderr
    assert "duplicate step row" in res.stderr  # the problem, after what the folder is
    assert f"`adaptive inspect {runs / 'a'}`" in res.stderr
    assert f"`adaptive replay {runs} -m METHOD`" in res.stderr
    res = runner.invoke(app, ["replay", str(runs), "-m", "dwa", "-q", "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output  # replay reads each run folder on its own

    (runs / "b" / "trace.parquet").rename(tmp_path / "b.parquet")  # a run of other columns
    pq.write_table(
        pa.table({"run_id": ["q"], "kind": ["step"], "split": ["train"], "step": [0]}),
        runs / "b" / "trace.parquet",
    )
    res = runner.invoke(app, ["inspect", str(runs)])
    assert res.exit_code == 2 and "is a folder of 2 runs (a, b)" in res.stderr, res.output
    assert "missing step or epoch value" in res.stderr and "adaptive inspect" in res.stderr
