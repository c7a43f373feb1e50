"""The recording API for any loop (TraceRecorder) and the plain-loop example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptive import AdaptiveLossWeighting, TraceRecorder, read_trace
from replay import replay

ROOT = Path(__file__).resolve().parents[1]


def test_counters_tensors_and_epoch_rows(tmp_path: Path) -> None:
    path = tmp_path / "mine" / "trace.parquet"
    w = torch.tensor(2.0, requires_grad=True)
    with TraceRecorder(path, components=["a", "b"], metrics=["acc"]) as rec:
        for _epoch in range(2):
            for i in range(3):
                la, lb = w * (i + 1), w * 10.0
                rec.log_step(losses={"a": la, "b": lb}, lr=0.1, grad_norm=torch.tensor(1.5))
            rec.log_epoch(split="val", metrics={"acc": 0.5 + rec.epoch})
            rec.end_epoch()
        assert (rec.step, rec.epoch) == (6, 2)
    t = read_trace(path)
    assert t.run_id == "mine" and t.components == ["a", "b"] and t.metrics == ["acc"]
    assert t.steps["step"].tolist() == list(range(6))
    assert t.steps["epoch"].tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(t.steps["loss/a"], [2, 4, 6, 2, 4, 6])
    np.testing.assert_allclose(t.steps["lr"], 0.1, rtol=1e-6)
    val = t.split_metrics("val")
    assert val["metric/acc"].tolist() == [0.5, 1.5] and val["step"].tolist() == [3, 6]


def test_diagnostics_fill_weights_and_replay_matches_live(tmp_path: Path) -> None:
    ctrl = AdaptiveLossWeighting(["a", "b"], {"a": 1.0, "b": 0.5}, method="dwa", temperature=1.0)
    gen = torch.Generator().manual_seed(3)
    path = tmp_path / "t.parquet"
    with TraceRecorder(path, components=["a", "b"]) as rec:
        for _epoch in range(5):
            for _ in range(4):
                losses = {"a": torch.rand((), generator=gen), "b": torch.rand((), generator=gen)}
                _, _, diag = ctrl(losses)
                rec.log_step(losses=losses, diagnostics=diag)
            ctrl.end_epoch()
            rec.end_epoch()
    t = read_trace(path)
    live = t.steps[["proposed/weight/a", "proposed/weight/b"]].to_numpy()
    assert not np.allclose(live[-1], [1.0, 0.5])  # DWA moved the weights
    np.testing.assert_allclose(t.steps["weight_base/b"], 0.5)
    res = replay(t, "dwa", temperature=1.0)
    np.testing.assert_allclose(
        res.frame[["proposed/weight/a", "proposed/weight/b"]].to_numpy(), live, atol=1e-5
    )


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\[\]"):
        TraceRecorder(tmp_path / "x.parquet", components=[])
    with pytest.raises(ValueError, match="unique"):
        TraceRecorder(tmp_path / "x.parquet", components=["a", "a"])
    with pytest.raises(ValueError, match="-1"):
        TraceRecorder(tmp_path / "x.parquet", components=["a"], start_step=-1)
    with TraceRecorder(tmp_path / "y.parquet", components=["a", "b"]) as rec:
        with pytest.raises(KeyError, match=r"missing \['b'\], unexpected \['c'\]"):
            rec.log_step(losses={"a": 1.0, "c": 2.0})
        with pytest.raises(ValueError, match="split"):
            rec.log_epoch(split="")
        rec.log_step(losses={"a": 1.0, "b": 2.0})
    with pytest.raises(FileExistsError, match="append=True"):
        TraceRecorder(tmp_path / "y.parquet", components=["a", "b"])
    rec = TraceRecorder(tmp_path / "y.parquet", components=["a", "b"], append=True, start_step=1)
    rec.log_step(losses={"a": 1.0, "b": 2.0})
    rec.close()
    assert read_trace(tmp_path / "y.parquet").steps["step"].tolist() == [0, 1]


def test_a_crashing_loop_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError, match="boom"), TraceRecorder(path, components=["a"]) as rec:
        for i in range(7):
            rec.log_step(losses={"a": float(i)})
        raise RuntimeError("boom")
    assert read_trace(path).steps["step"].tolist() == list(range(7))
    # A killed process keeps every flushed part (here: the first epoch).
    code = (
        "import os; from adaptive import TraceRecorder\n"
        f"rec = TraceRecorder({str(tmp_path / 'k.parquet')!r}, components=['a'])\n"
        "for i in range(3): rec.log_step(losses={'a': 1.0})\n"
        "rec.end_epoch()\n"
        "rec.log_step(losses={'a': 2.0})\n"
        "os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT)
    assert read_trace(tmp_path / "k.parquet").steps["step"].tolist() == [0, 1, 2]


def _run_example(name: str, out: Path) -> subprocess.CompletedProcess[str]:
    """Run examples/<name> OUT_DIR in its own process (one thread, headless); must succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=out,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res


def test_plain_loop_example_runs(tmp_path: Path) -> None:
    res = _run_example("plain_loop.py", tmp_path)
    assert "proposed/weight/cls" in res.stdout
    base = read_trace(tmp_path / "base" / "trace.parquet")
    live = read_trace(tmp_path / "dwa" / "trace.parquet")
    assert len(base.steps) == len(live.steps) == 6 * 16
    # The live run applied DWA: its weights moved off the base, and replaying its own
    # trace gives the weights it applied.
    applied = live.steps[["weight/reg", "weight/cls"]].to_numpy()
    assert np.abs(applied - 1.0).max() > 0.01
    res_live = replay(live, "dwa", temperature=2.0)
    np.testing.assert_allclose(
        res_live.frame[["proposed/weight/reg", "proposed/weight/cls"]].to_numpy(),
        applied,
        atol=1e-5,
    )


def test_own_loop_gradnorm_and_famo_record_extras_and_replay_exactly(tmp_path: Path) -> None:
    """A user's loop with the extras-needing methods: component_grad_norms, after_step,
    TraceRecorder extras; replay over the recorded trace reproduces the live weights."""
    from adaptive.util import component_grad_norms

    torch.manual_seed(0)
    x, y = torch.randn(64, 3), torch.randn(64, 2)
    comps = ["a", "b"]
    for method in ("gradnorm", "famo"):
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        ctrl = AdaptiveLossWeighting(comps, method=method, adjustment_range=1.0, log_every=0)
        path = tmp_path / method / "trace.parquet"

        def losses_of(m: torch.nn.Module) -> dict[str, torch.Tensor]:
            err = (m(x) - y).pow(2).mean(0)
            return {"a": err[0], "b": 10 * err[1]}

        with TraceRecorder(path, components=comps) as rec:
            for _epoch in range(2):
                for _ in range(15):
                    losses = losses_of(model)
                    extras = {}
                    if method == "gradnorm":
                        extras["grad_norm"] = component_grad_norms(losses, [model.weight])
                    total, _, diag = ctrl(losses, extras=extras or None)
                    opt.zero_grad()
                    total.backward()
                    opt.step()
                    if method == "famo":
                        with torch.no_grad():
                            extras["loss_after"] = losses_of(model)
                        ctrl.after_step({"loss_after": extras["loss_after"]})
                    rec.log_step(losses=losses, diagnostics=diag, extras=extras)
                ctrl.end_epoch()
                rec.end_epoch()
        tr = read_trace(path)
        res = replay(tr, method, adjustment_range=1.0)
        for c in comps:
            live = tr.steps[f"proposed/weight/{c}"].to_numpy()
            np.testing.assert_array_equal(
                res.frame[f"proposed/weight/{c}"].astype(np.float32), live
            )
        assert np.abs(tr.steps["proposed/weight/a"].to_numpy() - 1.0).max() > 0.05
    with TraceRecorder(tmp_path / "bad.parquet", components=comps) as rec:
        with pytest.raises(ValueError, match="unknown extra 'grad'"):
            rec.log_step(losses={"a": 1.0, "b": 1.0}, extras={"grad": {"a": 1.0, "b": 1.0}})
        with pytest.raises(ValueError, match="must map every component"):
            rec.log_step(losses={"a": 1.0, "b": 1.0}, extras={"grad_norm": {"a": 1.0}})


def test_plain_loop_schedule_example_records_and_replays_every_law(tmp_path: Path) -> None:
    res = _run_example("plain_loop_schedule.py", tmp_path)
    # every law registered in a fresh interpreter (this one may hold test-registered laws)
    fresh = subprocess.run(
        [sys.executable, "-c", "from adaptive.scheduler import available_laws as a; print(*a())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    printed = [ln.split(":")[0].strip() for ln in res.stdout.splitlines() if "delta at" in ln]
    assert sorted(printed) == sorted(fresh) and {"guard", "gtf", "competence"} <= set(fresh)
    base = read_trace(tmp_path / "base" / "trace.parquet")
    for col in ("schedule/tf_ratio", "schedule_base/freerun_horizon", "regime", "loss_fr_total"):
        assert col in base.steps.columns, col
    # dry-run: the schedule applied is the stage schedule
    np.testing.assert_array_equal(
        base.steps["schedule/tf_ratio"].to_numpy(), base.steps["schedule_base/tf_ratio"].to_numpy()
    )
    # live gtf moved the schedule, and replaying its own trace gives what it applied
    live = read_trace(tmp_path / "gtf" / "trace.parquet")
    applied = live.steps["schedule/freerun_horizon"].to_numpy()
    assert (applied != live.steps["schedule_base/freerun_horizon"].to_numpy()).any()
    again = replay(live, "scheduler", law="gtf", update_interval=10)
    np.testing.assert_array_equal(
        again.frame["proposed/schedule/freerun_horizon"].to_numpy(), applied
    )
