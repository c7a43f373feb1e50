"""Trials of other trainers and on other engines: the plain-loop and Lightning examples as
`--command` targets with a metric of their own, and a local Ray cluster with 2 CPUs that
gives the same numbers as the process pool, retries a lost run once and reports a run
lost twice."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from adaptive.trial import FunctionTarget, LocalEngine, RayEngine, TrialError, run_trial
from cli import app
from tests.test_trial import SMALL, UNC

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
PY = sys.executable


def _command(example: str) -> str:
    return f"{PY} {ROOT / 'examples' / example} --seed {{seed}} --out {{run_dir}} {{overrides}}"


def test_plain_loop_as_a_command_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["trial", "--command", _command("plain_loop.py"), "-c", "dwa: --method dwa"]
    args += ["--metric", "val/mse", "--reduce", "final", "--seeds", "2", "--jobs", "2"]
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert "dwa: val/mse (final)" in r.output and "n = 2" in r.output and "MDE" in r.output
    assert (tmp_path / "t" / "dwa" / "seed1" / "train.log").exists()
    runs = pd.read_csv(tmp_path / "t" / "runs.csv")
    assert len(runs) == 4 and runs["primary"].notna().all()
    # a metric the trainer does not record: one line, after the first run shows what it has
    r = runner.invoke(
        app,
        [*args[:5], "--metric", "val/nope", "--seeds", "1", "-q", "-o", str(tmp_path / "u")],
    )
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "val/nope" in r.output and "val/mse" in r.output and "val/acc" in r.output


def test_lightning_module_as_a_command_target(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("lightning")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["trial", "--command", _command("lightning_module.py"), "-c", "dwa: --method dwa"]
    args += ["--metric", "val/val_mse", "--reduce", "last2", "--seeds", "2", "--jobs", "2"]
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert "dwa: val/val_mse (mean of last 2)" in r.output and "n = 2" in r.output


# ----------------------------------------------------------------------------- Ray
def _toy_trace(run_dir: Path, seed: int, shift: float) -> None:
    from adaptive import TraceRecorder

    with TraceRecorder(run_dir / "trace.parquet", components=["a"]) as rec:
        for e in range(3):
            rec.log_step(losses={"a": 1.0})
            rec.log_epoch(split="val", metrics={"m": 10.0 + seed * 0.7 + shift * (e + 1)})
            rec.end_epoch()


def crash_once(overrides: str, seed: int, run_dir: Path) -> None:
    """Dies with its worker the first time a seed runs (a lost node), trains the second."""
    marker = Path(overrides) / f"seed{seed}"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("tried")
        os._exit(1)
    _toy_trace(run_dir, seed, 0.0 if "base" in str(overrides) else 0.1)


def always_crash(overrides: str, seed: int, run_dir: Path) -> None:
    if "base" not in overrides:
        os._exit(1)
    _toy_trace(run_dir, seed, 0.0)


def test_ray_gives_the_pool_numbers_retries_once_and_reports_lost_runs(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    kw = {"seeds": 2, "sets": SMALL, "reduce": "last2", "secondary": []}
    pool = run_trial(tmp_path / "pool", [UNC], engine=LocalEngine(2), **kw)
    # one local cluster with 2 CPUs for the whole test (the engine uses an open connection)
    env = {"env_vars": {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=env)
    try:
        engine = RayEngine()
        on_ray = run_trial(tmp_path / "ray", [UNC], engine=engine, **kw)
        pd.testing.assert_frame_equal(on_ray.frame, pool.frame)  # bit for bit
        assert "Ray cluster" in (tmp_path / "ray" / "trial.md").read_text()

        # a run whose worker dies is retried once by Ray and then counts like any other
        marks = tmp_path / "marks"
        target = FunctionTarget(crash_once, baseline_args=str(marks / "base"))
        res = run_trial(
            tmp_path / "crash", [f"c: {marks / 'cand'}"], target=target, seeds=1,
            metric="val/m", reduce="final", engine=engine,
        )  # fmt: skip
        assert list(res.rows("primary")["n"]) == [1]
        assert len(list(marks.rglob("seed*"))) == 2  # both runs died once

        # lost twice: reported by name, finished runs kept for the next call
        target = FunctionTarget(always_crash, baseline_args="base")
        with pytest.raises(TrialError, match=r"1 run\(s\) lost twice.*c seed 0"):
            run_trial(
                tmp_path / "lost", ["c: cand"], target=target, seeds=1, metric="val/m",
                reduce="final", engine=engine,
            )  # fmt: skip
        assert (tmp_path / "lost" / "baseline" / "seed0" / "trial-done.json").exists()
        assert not (tmp_path / "lost" / "c" / "seed0" / "trial-done.json").exists()
    finally:
        ray.shutdown()
