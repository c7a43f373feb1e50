"""A recommendation any trainer can load: `adaptive.controllers_from_config`, the recommended
files' header, `TraceRecorder(config=)` / `AdaptiveCallback(config=)`, and the advice for a
foreign trace, run as printed with examples/plain_loop.py as the training command."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import adaptive
from adaptive import TraceRecorder, controllers_from_config, read_trace
from adaptive.errors import InputError
from cli import app
from replay import recommended_toml, replay
from replay._advice import higher_is_better, trial_advice, trial_metric
from tests.test_analysis import synthetic

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _losses(step: int) -> dict[str, torch.Tensor]:
    return {
        "reg": torch.tensor(1.0 / (1 + 0.1 * step)),
        "cls": torch.tensor(0.5 + 0.05 * (step % 5)),
    }


def test_recommended_file_builds_the_method_it_names(tmp_path: Path) -> None:
    rec = _write(
        tmp_path / "recommended.toml",
        recommended_toml("dwa", {"temperature": 1.0, "adjustment_range": 0.2}),
    )
    ctl = adaptive.controllers_from_config(rec, components=["reg", "cls"])
    assert ctl.method == "dwa" and ctl.scheduler is None and not ctl.dry_run
    assert ctl.weighting is not None and ctl.weighting.components == ("reg", "cls")
    assert ctl.base_weights == {"reg": 1.0, "cls": 1.0}
    assert "temperature=1.0" in repr(ctl.weighting) and "adjustment_range=0.2" in repr(
        ctl.weighting
    )
    assert ctl.describe() == "dwa (adjustment_range=0.2, temperature=1)"
    # the same weights as the reference trainer's controller built from the same file
    from adaptive.train.config import load_config

    cfg = load_config(rec)
    ref = adaptive.AdaptiveLossWeighting(
        ["reg", "cls"],
        None,
        method="dwa",
        adjustment_range=cfg["adaptive"]["loss_adjustment_range"],
        **cfg["adaptive"]["dwa"],
    )
    moved = False
    for step in range(40):
        _, w, _ = ctl.weighting(_losses(step))
        _, w_ref, _ = ref(_losses(step))
        assert {c: float(v) for c, v in w.items()} == {c: float(v) for c, v in w_ref.items()}
        moved |= abs(float(w["reg"]) - 1.0) > 1e-3
        if step % 8 == 7:
            ctl.weighting.end_epoch()
            ref.end_epoch()
    assert moved


def test_scheduler_file_and_overrides(tmp_path: Path) -> None:
    rec = _write(
        tmp_path / "best.toml",
        recommended_toml("scheduler", {"update_interval": 7, "adjustment_range": 0.2})
        + "\n[loss.weights]\nreg = 2.0\ncls = 0.5\n",
    )
    ctl = controllers_from_config(rec, components=["cls", "reg"], dry_run=True)
    assert ctl.weighting is None and ctl.scheduler is not None and ctl.dry_run
    assert ctl.base_weights == {"cls": 0.5, "reg": 2.0}
    sc = ctl.scheduler.config()
    assert sc["update_interval"] == 7 and sc["adjustment_range"] == 0.2 and sc["dry_run"]
    assert ctl.describe().startswith("scheduler (law guard)") and "dry-run" in ctl.describe()
    # explicit base weights win over the file's
    ctl = controllers_from_config(rec, ["cls", "reg"], base_weights={"cls": 1, "reg": 3})
    assert ctl.base_weights == {"cls": 1.0, "reg": 3.0}


def test_a_training_config_with_both_controllers(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path / "train.toml",
        "[run]\nepochs = 3\n[adaptive]\nloss = 'uncertainty'\nscheduler = true\n"
        "[adaptive.uncertainty]\nlr = 0.03\n",
    )
    ctl = controllers_from_config(cfg, ["a", "b", "c"])
    assert ctl.method == "uncertainty" and ctl.scheduler is not None
    assert "lr=0.03" in repr(ctl.weighting)


@pytest.mark.parametrize(
    ("text", "components", "match"),
    [
        (None, ["a"], r"missing\.toml: config file not found"),
        ("[adaptive]\nloss = 'dwaa'\n", ["a"], r"adaptive\.loss: unknown method 'dwaa'; valid"),
        ("[adaptive]\nlos = 'dwa'\n", ["a"], r"unknown config key 'adaptive\.los'"),
        ("[adaptive\n", ["a"], r"not valid TOML"),
        ("[adaptive.dwa]\ntemperature = 'hot'\n", ["a"], r"temperature: expected a number"),
        (
            "[adaptive]\nloss = 'dwa'\n[loss.weights]\nfk_pos = 1.0\nrot = 1.0\n",
            ["reg", "cls"],
            r"\[loss\.weights\] names fk_pos, rot, but the components are reg, cls",
        ),
        ("[adaptive]\nloss = 'dwa'\n", [], r"components must name at least one"),
        ("[adaptive]\nloss = 'dwa'\n", "reg", r"components must be a list"),
        ("[adaptive]\nloss = 'dwa'\n", ["a", "a"], r"must be unique"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, text, components, match) -> None:
    path = tmp_path / "missing.toml"
    if text is not None:
        path = _write(tmp_path / "bad.toml", text)
    with pytest.raises(InputError, match=match) as info:
        controllers_from_config(path, components)
    assert "\n" not in str(info.value)


def test_base_weights_must_name_the_components(tmp_path: Path) -> None:
    rec = _write(tmp_path / "r.toml", recommended_toml("dwa", {}))
    with pytest.raises(InputError, match="base_weights names a, but the components are a, b"):
        controllers_from_config(rec, ["a", "b"], base_weights={"a": 1.0})


def test_trace_recorder_with_config_records_what_it_applied(tmp_path: Path) -> None:
    rec_file = _write(tmp_path / "recommended.toml", recommended_toml("dwa", {"temperature": 0.5}))
    trace = tmp_path / "run" / "trace.parquet"
    with TraceRecorder(trace, components=["reg", "cls"], config=rec_file) as rec:
        assert rec.weighting is not None and rec.scheduler is None
        for step in range(60):
            total, _, diag = rec.weighting(_losses(step))
            rec.log_step(losses=_losses(step), diagnostics=diag, loss_total=total)
            if step % 10 == 9:
                rec.weighting.end_epoch()
                rec.end_epoch()
    tr = read_trace(trace)
    info = tr.run["adaptive_config"]
    assert info["path"] == str(rec_file) and info["adaptive"]["loss"] == "dwa"
    assert info["adaptive"]["dwa"]["temperature"] == 0.5
    applied = tr.steps[["weight/reg", "weight/cls"]].to_numpy()
    assert np.abs(applied - 1.0).max() > 0.01
    result = replay(tr, "dwa", temperature=0.5)
    np.testing.assert_allclose(
        result.frame[["proposed/weight/reg", "proposed/weight/cls"]], applied, rtol=1e-6
    )
    with pytest.raises(InputError, match="config file not found"):
        TraceRecorder(tmp_path / "x" / "t.parquet", components=["a"], config=tmp_path / "no.toml")
    assert not (tmp_path / "x" / "t.parquet").exists()


def test_lightning_callback_takes_a_config(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from adaptive.integrations.lightning import AdaptiveCallback

    rec = _write(tmp_path / "r.toml", recommended_toml("dwa", {"temperature": 3.0}))
    cb = AdaptiveCallback(tmp_path / "t.parquet", components=["a", "b"], config=rec)
    assert cb.weighting is not None and "temperature=3.0" in repr(cb.weighting)
    assert cb.dry_run is False  # the file's adaptive.dry_run
    cb = AdaptiveCallback(tmp_path / "t.parquet", components=["a", "b"], config=rec, dry_run=True)
    assert cb.dry_run and cb.weighting.dry_run
    assert AdaptiveCallback(tmp_path / "t.parquet", components=["a"]).dry_run  # default as before
    with pytest.raises(ValueError, match="config= gives the method"):
        AdaptiveCallback(tmp_path / "t.parquet", components=["a"], config=rec, method="dwa")
    sched = _write(tmp_path / "s.toml", recommended_toml("scheduler", {}))
    with pytest.raises(ValueError, match="switches the scheduler on"):
        AdaptiveCallback(tmp_path / "t.parquet", components=["a"], config=sched)


def test_lightning_fit_with_a_recommended_file_applies_it(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from adaptive.integrations.lightning import AdaptiveCallback
    from tests.test_lightning import _fit

    rec = _write(tmp_path / "r.toml", recommended_toml("dwa", {"temperature": 1.0}))
    trace = tmp_path / "run" / "trace.parquet"
    cb = AdaptiveCallback(trace, components=["reg", "cls"], config=rec)
    _fit(tmp_path, cb, 4)
    tr = read_trace(trace)
    assert tr.run["adaptive_config"]["adaptive"]["dwa"]["temperature"] == 1.0
    applied = tr.steps[["weight/reg", "weight/cls"]].to_numpy()
    assert np.abs(applied - 1.0).max() > 1e-3  # applied, not dry-run
    result = replay(tr, "dwa", temperature=1.0)
    np.testing.assert_allclose(
        result.frame[["proposed/weight/reg", "proposed/weight/cls"]], applied, rtol=1e-6
    )


def test_recommended_file_header_says_how_to_use_it(tmp_path: Path) -> None:
    dest = tmp_path / "my runs" / "recommended.toml"
    text = recommended_toml("dwa", {"temperature": 2.0}, source="t.parquet", path=str(dest))
    head = [ln.removeprefix("#").strip() for ln in text.splitlines() if ln.startswith("#")]
    train = next(ln for ln in head if "adaptive train --config" in ln)
    assert shlex.split(train.split(":", 1)[1])[-1] == str(dest)
    assert any(f"adaptive.controllers_from_config({str(dest)!r}" in ln for ln in head)
    trial = shlex.split(next(ln for ln in head if ln.startswith("adaptive trial")))
    assert "{overrides}" in trial[3]
    assert shlex.split(trial[trial.index("-c") + 1]) == ["--adaptive-config", str(dest)]
    # the file itself still loads, in both trainers
    dest.parent.mkdir()
    dest.write_text(text)
    assert controllers_from_config(dest, ["a", "b"]).method == "dwa"
    from adaptive.train.config import load_config

    assert load_config(dest)["adaptive"]["loss"] == "dwa"


def test_metric_and_direction_come_from_the_trace(tmp_path: Path) -> None:
    assert higher_is_better("acc") and higher_is_better("top1_accuracy")
    assert higher_is_better("F1") and not higher_is_better("mse")
    assert not higher_is_better("MPJPE") and not higher_is_better("loss")
    assert not higher_is_better("accumulated_error")  # `acc` counts as a word of its own only
    tr = read_trace(synthetic(tmp_path / "a" / "trace.parquet"))
    assert trial_metric(tr) == ("valfree/YawAbsDeg", False)
    only_val = read_trace(synthetic(tmp_path / "b" / "trace.parquet", valfree=False))
    assert trial_metric([tr, only_val]) == ("val/YawAbsDeg", False)
    with TraceRecorder(tmp_path / "c" / "trace.parquet", components=["a"]) as rec:
        rec.log_step(losses={"a": 1.0})
    none = read_trace(tmp_path / "c" / "trace.parquet")
    assert trial_metric(none) is None
    advice = trial_advice(none, "dwa", {}, config_path="r.toml")
    assert "--metric val/METRIC" in advice[0] and "holds no evaluation metrics" in advice[2]


def _plain_loop(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, str(ROOT / "examples" / "plain_loop.py"), "--seed", "0"]
    return subprocess.run(
        [*cmd, "--out", str(out), *args], capture_output=True, text=True, env=env, check=False
    )


def test_plain_loop_refuses_a_bad_config_in_one_line(tmp_path: Path) -> None:
    res = _plain_loop(tmp_path / "run", "--adaptive-config", str(tmp_path / "none.toml"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none.toml'}: config file not found"
    ]


def test_sweep_advice_on_a_trace_recorder_trace_runs_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's "done when": the advice printed after `adaptive sweep` on a TraceRecorder
    trace runs to a trial report once the training command is put in (here the plain-loop
    example; 2 seeds instead of 10 to stay short)."""
    monkeypatch.chdir(tmp_path)
    res = _plain_loop(Path("runs/base"))
    assert res.returncode == 0, res.stderr
    grid = ["-g", "temperature=0.5,1,2,4", "-g", "adjustment_range=0.1,0.2,0.3"]
    res = runner.invoke(app, ["sweep", "runs/base/trace.parquet", "-m", "dwa", *grid, "-q"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("next: "))
    command = line[line.index("adaptive trial") :]
    assert "--metric val/mse" in command and "--higher-is-better" not in command
    assert "lower is taken as better" in res.output
    argv = shlex.split(command)
    candidate = argv[argv.index("-c") + 1]
    name, _, body = candidate.partition(": ")
    assert name == "dwa" and shlex.split(body) == [
        "--adaptive-config",
        "runs/base/sweep-dwa/recommended.toml",
    ]
    assert Path("runs/base/sweep-dwa/recommended.toml").is_file()
    template = argv[argv.index("--command") + 1]
    assert template.startswith("python train.py ")
    assert command.endswith(" --seeds 10")
    own = f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'examples' / 'plain_loop.py'))}"
    # the printed line as bash runs it, with the training command put in (and 2 seeds)
    line = command.replace("python train.py", own).removesuffix("10") + "2 --out trial"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    res = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"^dwa: val/mse \(final\) .* n = 2\)", res.stdout, re.M), res.stdout
    assert Path("trial/trial.md").is_file()
    live = read_trace(Path("trial/dwa/seed0/trace.parquet"))
    assert live.run["adaptive_config"]["adaptive"]["loss"] == "dwa"  # the file was applied
    applied = live.steps[["weight/reg", "weight/cls"]].to_numpy()
    assert np.abs(applied - 1.0).max() > 1e-3


def test_compare_on_a_foreign_trace_writes_the_file_its_advice_names(tmp_path: Path) -> None:
    trace = synthetic(tmp_path / "run" / "trace.parquet", steps=400)
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", str(trace), "-m", "dwa", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    trials = [ln for ln in res.output.splitlines() if "adaptive trial --command" in ln]
    if not trials:
        pytest.skip("dwa does not look ready on this trace: no trial advised")
    cmd = re.search(r": (adaptive trial .*?) \(", trials[0]).group(1)
    argv = shlex.split(cmd)
    flag, path = shlex.split(argv[argv.index("-c") + 1].partition(": ")[2])
    assert flag == "--adaptive-config" and Path(path).is_file()
    assert controllers_from_config(path, ["a", "b", "c"]).method == "dwa"
    assert argv[argv.index("--metric") + 1] == "valfree/YawAbsDeg"
    md = (out / "recommendation.md").read_text()  # the advice is in the report, not a config
    assert "Replay is open loop" in md and "--adaptive-config" in md and "[adaptive]" not in md
