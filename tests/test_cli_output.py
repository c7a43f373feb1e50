"""Output that tells the truth and pastes: replay honours the run's settings, suggested
commands survive bash, sweeps say why rows are missing and keep every run's notes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from adaptive.trace import read_trace
from cli import app
from replay import config_overrides, shell_arg, trial_advice
from tests.test_analysis import synthetic
from tests.test_train import TINY

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def test_replay_without_param_reproduces_the_run_it_had_on(tmp_path: Path) -> None:
    args = ["train", "--out", str(tmp_path), "--name", "live", "-q", "--adaptive-loss", "dwa"]
    args += ["--adaptive-param", "temperature=1"]
    res = runner.invoke(app, [*args, *(a for s in TINY for a in ("--set", s))])
    assert res.exit_code == 0, res.output
    trace = tmp_path / "live" / "trace.parquet"
    res = runner.invoke(app, ["replay", str(trace), "-m", "dwa", "-q", "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "settings the run had dwa on with: temperature=1" in res.output
    frame = pd.read_parquet(tmp_path / "o" / "replay-dwa.parquet")
    tr = read_trace(trace)
    moved = False
    for c in tr.components:
        applied = tr.steps[f"weight/{c}"].to_numpy(np.float32)
        np.testing.assert_array_equal(frame[f"proposed/weight/{c}"].to_numpy(np.float32), applied)
        moved |= bool(np.any(applied != tr.steps[f"weight_base/{c}"].to_numpy(np.float32)))
    assert moved  # the controller acted, so the temperature mattered
    # -p still overrides, and names its own output
    res = runner.invoke(
        app,
        ["replay", str(trace), "-m", "dwa", "-q", "-p", "temperature=4", "-o", str(tmp_path / "o")],
    )
    assert res.exit_code == 0 and (tmp_path / "o" / "replay-dwa-temperature=4.png").is_file()
    assert (tmp_path / "o" / "replay-dwa.png").is_file()  # the first replay is not overwritten


def test_suggested_commands_survive_bash() -> None:
    text = shell_arg("adaptive.record_extras=['grad_norm']")
    assert shlex.split(text) == ["adaptive.record_extras=['grad_norm']"]
    overrides = config_overrides("dwa", {"temperature": 1.0, "adjustment_range": 0.2})
    assert overrides == [
        "adaptive.loss='dwa'",
        "adaptive.loss_adjustment_range=0.2",
        "adaptive.dwa.temperature=1.0",
    ]
    tr = read_trace(synthetic(Path("/tmp") / f"h3-foreign-{id(text)}" / "trace.parquet"))
    foreign = trial_advice(tr, "dwa", {"temperature": 1.0})
    argv = shlex.split(foreign[0])
    assert argv[:3] == ["adaptive", "trial", "--command"]
    assert "{run_dir}" in argv[3] and "{seed}" in argv[3] and "{overrides}" in argv[3]
    assert argv[argv.index("-c") + 1] == "adaptive.loss='dwa'; adaptive.dwa.temperature=1.0"
    assert "TraceRecorder" in foreign[1] and "AdaptiveCallback" in foreign[1]


def test_the_missing_extras_message_pastes(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "run" / "trace.parquet")
    res = runner.invoke(app, ["replay", str(trace), "-m", "gradnorm", "-q"])
    assert res.exit_code == 2
    cmd = re.search(r"with (adaptive train --set \S+)", res.output).group(1)
    assert shlex.split(cmd)[-1] == "adaptive.record_extras=['grad_norm']"


def test_sweep_says_why_rows_are_missing_and_keeps_every_runs_notes(tmp_path: Path) -> None:
    for i in range(2):
        synthetic(tmp_path / "runs" / f"r{i}" / "trace.parquet", seed=i, run_id=f"r{i}")
    grid = ["-g", "temperature=0.5,1,2,4", "-g", "adjustment_range=0.1,0.2,0.3"]
    res = runner.invoke(app, ["sweep", str(tmp_path / "runs"), "-m", "dwa", *grid, "-q"])
    assert res.exit_code == 0, res.output
    assert "12 configurations" in res.output and "the first 10 shown, all 12 in" in res.output
    notes = [ln for ln in res.output.splitlines() if ln.startswith("input: ")]
    assert any(n.startswith("input: r0: ") for n in notes), notes
    assert any(n.startswith("input: r1: ") for n in notes), notes


def test_readme_notebook_command_writes_where_it_says() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    line = next(ln for ln in lines if "nbconvert" in ln and not ln.startswith("<!--"))
    env_out = re.search(r"ADAPTIVE_NOTEBOOK_OUT=(\S+)", line).group(1)
    out_dir = re.search(r"--output-dir (\S+)", line).group(1)
    # the kernel runs in notebooks/: a relative ADAPTIVE_NOTEBOOK_OUT would land there
    resolved = env_out.replace("$PWD", str(ROOT))
    assert Path(resolved).is_absolute(), line
    assert Path(resolved) == ROOT / out_dir.replace("$PWD/", "")


def test_verdict_advice_is_whole_commands(tmp_path: Path) -> None:
    from replay._workflow import whole_command

    trace = synthetic(tmp_path / "my run" / "trace.parquet")
    tr = read_trace(trace)
    step = "calm it with a smaller lr (sweep -m uncertainty -g lr=0.001,0.003)"
    text = whole_command(step, [tr], "uncertainty", {}, str(trace))
    cmd = re.search(r"\((adaptive sweep .*)\)$", text).group(1)
    argv = shlex.split(cmd)
    assert argv[2] == str(trace) and argv[3:] == ["-m", "uncertainty", "-g", "lr=0.001,0.003"]
    live = whole_command(
        "try it live with logging on: adaptive train --adaptive-loss dwa",
        [tr],
        "dwa",
        {},
        str(trace),
    )
    cmd = re.search(r": (adaptive trial .*?) \(", live).group(1)
    assert shlex.split(cmd)[:3] == ["adaptive", "trial", "--command"]
    assert "adaptive train" not in live


def _live_trace(path: Path, dry_run: bool) -> Path:
    """A loop with DWA on (live or in dry-run), recorded with TraceRecorder."""
    import torch

    from adaptive import AdaptiveLossWeighting, TraceRecorder

    ctrl = AdaptiveLossWeighting(
        ["a", "b"], {"a": 1.0, "b": 0.5}, method="dwa", temperature=1.0, dry_run=dry_run
    )
    gen = torch.Generator().manual_seed(7)
    with TraceRecorder(path, components=["a", "b"]) as rec:
        for _epoch in range(6):
            for _ in range(5):
                losses = {c: torch.rand((), generator=gen) for c in "ab"}  # float32
                _, _, diag = ctrl(losses)
                rec.log_step(losses=losses, diagnostics=diag)
            ctrl.end_epoch()
            rec.end_epoch()
    return path


def test_replay_equals_live_as_a_user_compares_them(tmp_path: Path) -> None:
    """The comparison a user writes, no cast: a replay's proposed weights against the weights
    the live run applied (and a dry run's recorded proposals), in the library and in the
    file `adaptive replay` writes."""
    from replay import replay

    for dry_run, recorded in ((False, "weight"), (True, "proposed/weight")):
        tr = read_trace(_live_trace(tmp_path / f"dry{dry_run}" / "trace.parquet", dry_run))
        res = replay(tr, "dwa", temperature=1.0)
        out = tmp_path / f"out{dry_run}"
        cli = runner.invoke(
            app, ["replay", str(tr.path), "-m", "dwa", "-p", "temperature=1", "-q", "-o", str(out)]
        )
        assert cli.exit_code == 0, cli.output
        written = pd.read_parquet(out / "replay-dwa-temperature=1.parquet")
        for c in ("a", "b"):
            live = tr.steps[f"{recorded}/{c}"]
            assert not np.allclose(live, live.iloc[0])  # DWA moved the weights
            for frame in (res.frame, written):
                got = frame[f"proposed/weight/{c}"]
                assert got.dtype == live.dtype == np.float32
                assert np.array_equal(got.to_numpy(), live.to_numpy())
                pd.testing.assert_series_equal(got, live, check_names=False)
