"""Reference trainer: tiny runs, trace validity, resume, Ctrl-C, live/replay fidelity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from adaptive.trace import read_trace
from adaptive.train.config import ConfigError, load_config
from adaptive.train.trainer import Trainer
from adaptive.weighting import available_methods, method_class
from cli import app
from replay import replay

TINY = [
    "run.epochs=4",
    "run.threads=1",
    "data.train_clips=6",
    "data.val_clips=2",
    "data.clip_frames=90",
    "data.window=24",
    "data.val_windows=8",
    "data.val_seed_frames=4",
    "data.val_horizon=12",
    "model.hidden_size=32",
    "train.batch_size=8",
    "train.steps_per_epoch=12",
    "adaptive.update_interval=5",
    "adaptive.log_every=5",
    # short stages so every stage (and DWA's epoch-2 start) happens within 4 epochs
    "schedule.stages=[{name='tf', epochs=1, tf_ratio=1.0, freerun_horizon=4, freerun_weight=0.0},"
    " {name='mix', epochs=3, tf_ratio=[0.7, 0.3], freerun_horizon=[4, 12],"
    " freerun_weight=[0.5, 1.0]}]",
]


def tiny(tmp_path: Path, *extra: str) -> dict:
    return load_config(overrides=[*TINY, f"run.out={str(tmp_path)!r}", *extra])


def run(cfg: dict, name: str, **kw) -> Path:
    run_dir = Path(cfg["run"]["out"]) / name
    Trainer(cfg, run_dir, **kw).train()
    return run_dir


def steps_of(run_dir: Path) -> pd.DataFrame:
    return read_trace(run_dir / "trace.parquet").steps.drop(columns=["time", "run_id"])


def test_tiny_run_learns_and_records_a_valid_trace(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, "run.epochs=6", "train.steps_per_epoch=20")
    run_dir = run(cfg, "a")
    tr = read_trace(run_dir / "trace.parquet")
    assert len(tr.steps) == 120 and tr.components == ["fk_pos", "rot", "root_vel", "yaw"]
    splits = {"val", "valfree", "val_ema", "valfree_ema"}  # the last two: the weights' average
    assert set(tr.epochs["split"]) == splits and len(tr.epochs) == 24
    for col in (
        "loss_total",
        "grad_norm",
        "lr",
        "weight/fk_pos",
        "weight_base/yaw",
        "schedule/tf_ratio",
        "schedule_base/freerun_horizon",
    ):
        assert col in tr.steps.columns
    assert "proposed/weight/fk_pos" not in tr.steps.columns  # no controller, no proposals
    vf = tr.split_metrics("valfree")
    assert vf.loc[5, "metric/MPJPE"] < 0.8 * vf.loc[0, "metric/MPJPE"]  # it learns
    assert tr.steps["loss_total"].gt(0).all()
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "config.toml").is_file()
    assert "epoch 5 valfree" in (run_dir / "logs" / "train.txt").read_text()
    assert json.loads(tr.metadata["adaptive.run"])["config"]["run"]["epochs"] == 6
    # schedule follows the stages: epoch 0 is pure teacher forcing, the ramp ends at 0.3
    sched = tr.steps.groupby("epoch")["schedule/tf_ratio"].first()
    assert sched[0] == 1.0 and sched[3] == pytest.approx(0.3)
    # Regime-separated signals: loss/<c> = loss_tf/<c> + freerun_weight * loss_fr/<c> on
    # batches that drew a free-run rollout (regime 1), loss_tf/<c> alone on the others.
    st = tr.steps
    free = st["regime"] == 1
    assert set(st["regime"]) == {0, 1} and not free[st["epoch"] == 0].any()
    assert st.loc[~free, "loss_fr/rot"].isna().all() and st.loc[free, "loss_fr/rot"].notna().all()
    for c in tr.components:
        fr = st[f"loss_fr/{c}"].fillna(0.0) * st["schedule/freerun_weight"]
        np.testing.assert_allclose(st[f"loss/{c}"], st[f"loss_tf/{c}"] + fr, rtol=1e-5)
    base = st["weight_base/fk_pos"]  # equal base weights here: the scheduler's loss signal
    tf_sum = sum(st[f"loss_tf/{c}"] for c in tr.components) * base
    np.testing.assert_allclose(st["loss_tf_total"], tf_sum, rtol=1e-5)
    assert st.groupby("epoch")["stage"].first().tolist() == [0, 1, 1, 1, 1, 1]


def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    extra = ("adaptive.loss='uncertainty'", "adaptive.scheduler=true")
    full = run(tiny(tmp_path, *extra), "full")
    part = run(tiny(tmp_path, *extra, "run.epochs=2"), "part")
    run(tiny(tmp_path, *extra), "part", resume=True)
    a, b = steps_of(full), steps_of(part)
    pd.testing.assert_frame_equal(a, b)
    ea = read_trace(full / "trace.parquet").epochs.drop(columns=["time", "run_id"])
    eb = read_trace(part / "trace.parquet").epochs.drop(columns=["time", "run_id"])
    pd.testing.assert_frame_equal(ea, eb)


def test_ctrl_c_keeps_trace_and_checkpoint(tmp_path: Path) -> None:
    cfg = tiny(tmp_path)
    calls = {"n": 0}

    def interrupt(info) -> None:
        calls["n"] += 1
        if info.epoch == 2 and info.step_in_epoch == 5:
            raise KeyboardInterrupt

    run_dir = tmp_path / "c"
    summary = Trainer(cfg, run_dir, progress=interrupt).train()
    assert summary.interrupted and summary.epochs_done == 2
    tr = read_trace(run_dir / "trace.parquet")
    assert len(tr.steps) == 2 * 12 + 5  # everything up to the interrupt was flushed
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2
    Trainer(cfg, run_dir, resume=True).train()  # resume drops the partial epoch
    assert len(read_trace(run_dir / "trace.parquet").steps) == 4 * 12


def test_interrupt_in_the_first_epoch_can_resume(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, "run.epochs=2")

    def interrupt(info) -> None:
        if info.epoch == 0 and info.step_in_epoch == 3:
            raise KeyboardInterrupt

    run_dir = tmp_path / "early"
    assert Trainer(cfg, run_dir, progress=interrupt).train().interrupted
    Trainer(cfg, run_dir, resume=True).train()
    pd.testing.assert_frame_equal(steps_of(run_dir), steps_of(run(cfg, "whole")))


def test_summary_names_threads_and_controllers(tmp_path: Path) -> None:
    from adaptive.train.run import format_summary

    cfg = tiny(tmp_path, "run.epochs=1", "adaptive.loss='dwa'", "adaptive.scheduler=true")
    cfg["adaptive"]["dry_run"] = True
    s = Trainer(cfg, tmp_path / "s").train()
    text = format_summary(s)
    assert "trained    1 epoch, 12 steps" in text and "on 1 CPU thread" in text
    assert "adaptive   dwa (dry-run), scheduler (dry-run)" in text
    assert format_summary(s, short=True).count("\n") == 0


def test_finished_trace_is_compacted_into_one_part(tmp_path: Path) -> None:
    run_dir = run(tiny(tmp_path), "compact")  # 4 epochs: at least 4 parts before compaction
    assert [p.name for p in (run_dir / "trace.parquet").iterdir()] == ["part-000000.parquet"]
    assert len(read_trace(run_dir / "trace.parquet").steps) == 4 * 12
    kept = run(tiny(tmp_path, "trace.compact=false"), "parts")
    assert len(list((kept / "trace.parquet").glob("part-*.parquet"))) >= 4


def test_dry_run_trains_exactly_like_off(tmp_path: Path) -> None:
    off = run(tiny(tmp_path), "off")
    dry = run(
        tiny(tmp_path, "adaptive.loss='dwa'", "adaptive.scheduler=true", "adaptive.dry_run=true"),
        "dry",
    )
    a, b = steps_of(off), steps_of(dry)
    shared = [c for c in a.columns]
    pd.testing.assert_frame_equal(a[shared], b[shared])
    assert any(c.startswith("proposed/weight/") for c in b.columns)
    assert any(c.startswith("proposed/schedule/") for c in b.columns)


def _max_rel(live: np.ndarray, rep: np.ndarray) -> float:
    return float(np.max(np.abs(live - rep) / np.maximum(np.abs(live), 1e-12)))


def _toml(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else repr(v)


# every registered method live (its example parameters); dry-run for two of them
@pytest.mark.parametrize(
    ("method", "dry_run"),
    [(m, False) for m in available_methods()]
    + [("dwa", True), ("uncertainty", True), ("famo", True)],
)
def test_weighting_fidelity_live_vs_replay(tmp_path: Path, method: str, dry_run: bool) -> None:
    params = dict(method_class(method).example_params)
    cfg = tiny(
        tmp_path,
        f"adaptive.loss={method!r}",
        f"adaptive.dry_run={str(dry_run).lower()}",
        "adaptive.adjustment_range=0.5",
        *(f"adaptive.{method}.{k}={_toml(v)}" for k, v in params.items()),
    )
    run_dir = run(cfg, "f")
    tr = read_trace(run_dir / "trace.parquet")
    res = replay(tr, method, adjustment_range=0.5, **params)
    open_loop = method_class(method).requires == ("loss_after",) and dry_run
    # the trace has every input the live run used; FAMO's dry-run says it is open loop
    assert [n for n in res.notes if "open loop" not in n] == []
    assert any("open loop" in n for n in res.notes) == open_loop
    assert (tr.steps["weighting_nonfinite"] == 0).all()  # the state stayed finite
    moved = False
    for c in tr.components:
        live = tr.steps[f"proposed/weight/{c}"].to_numpy(np.float64)
        rep = res.frame[f"proposed/weight/{c}"].to_numpy()
        # bit for bit: the trace stores the live float64 proposal rounded to float32
        np.testing.assert_array_equal(rep.astype(np.float32), live.astype(np.float32))
        applied = tr.steps[f"weight/{c}"].to_numpy(np.float64)
        base = tr.steps[f"weight_base/{c}"].to_numpy(np.float64)
        np.testing.assert_array_equal(applied, base if dry_run else live)
        moved |= bool(np.any(np.abs(live - base) > 1e-3))
    assert moved  # the method did something in 4 epochs


@pytest.mark.parametrize("method", ["dwa", "famo"])
def test_weighting_fidelity_across_resume(tmp_path: Path, method: str) -> None:
    extra = (f"adaptive.loss={method!r}",)
    run(tiny(tmp_path, *extra, "run.epochs=3"), "r")
    run_dir = run(tiny(tmp_path, *extra, "run.epochs=5"), "r", resume=True)
    tr = read_trace(run_dir / "trace.parquet")
    res = replay(tr, method)
    for c in tr.components:
        live = tr.steps[f"weight/{c}"].to_numpy(np.float64)
        assert _max_rel(live, res.frame[f"proposed/weight/{c}"].to_numpy()) < 1e-5
    assert not np.allclose(
        tr.steps["weight/fk_pos"].iloc[-1], tr.steps["weight_base/fk_pos"].iloc[-1]
    )


def test_extras_are_recorded_on_request_and_change_nothing(tmp_path: Path) -> None:
    """Gradient norms and after-step losses cost time, not results: a run that records
    them trains bit for bit like one that does not, and they enable gradnorm/famo replay."""
    from replay import ReplayError

    plain = run(tiny(tmp_path, "adaptive.loss='dwa'"), "plain")
    both = run(
        tiny(tmp_path, "adaptive.loss='dwa'", "adaptive.record_extras=['grad_norm', 'loss_after']"),
        "both",
    )
    a, b = steps_of(plain), steps_of(both)
    assert not any(c.startswith(("grad_norm/", "loss_after/")) for c in a.columns)
    pd.testing.assert_frame_equal(a, b[list(a.columns)])
    comps = read_trace(both / "trace.parquet").components
    g = b[[f"grad_norm/{c}" for c in comps]].to_numpy()
    assert np.isfinite(g).all() and (g > 0).all()
    # the step lowered the loss it was taken on (teacher-forced part, the observed input)
    ratio = (
        b[[f"loss_after/{c}" for c in comps]].to_numpy()
        / b[[f"loss_tf/{c}" for c in comps]].to_numpy()
    )
    assert np.isfinite(ratio).all() and np.median(ratio) < 1.0
    for method in ("gradnorm", "famo"):
        res = replay(read_trace(both / "trace.parquet"), method)
        assert len(res.frame) == len(b)
        assert any("open loop" in n for n in res.notes) == (method == "famo")  # DWA applied
        with pytest.raises(ReplayError, match=f"method '{method}' needs the columns"):
            replay(read_trace(plain / "trace.parquet"), method)
        # the extras are of the recorded input (tf): replaying on another would mix the two
        with pytest.raises(ReplayError, match="would mix the two"):
            replay(read_trace(both / "trace.parquet"), method, loss_input="total")


@pytest.mark.parametrize("dry_run", [True, False])
def test_scheduler_fidelity_live_vs_replay(tmp_path: Path, dry_run: bool) -> None:
    cfg = tiny(
        tmp_path,
        "adaptive.scheduler=true",
        f"adaptive.dry_run={str(dry_run).lower()}",
        "adaptive.scheduler_law.spike_z=0.5",
        "adaptive.scheduler_law.spike_count=1",
        "adaptive.scheduler_law.min_samples=2",
        "adaptive.scheduler_law.cooldown=0",
    )
    run_dir = run(cfg, "s")
    tr = read_trace(run_dir / "trace.parquet")
    res = replay(
        tr, "scheduler", update_interval=5, spike_z=0.5, spike_count=1, min_samples=2, cooldown=0
    )
    for p in ("tf_ratio", "freerun_horizon", "freerun_weight"):
        live = tr.steps[f"proposed/schedule/{p}"].to_numpy(np.float64)
        rep = res.frame[f"proposed/schedule/{p}"].to_numpy()
        np.testing.assert_allclose(rep, live, rtol=1e-5, atol=1e-7)
        applied = tr.steps[f"schedule/{p}"].to_numpy(np.float64)
        base = tr.steps[f"schedule_base/{p}"].to_numpy(np.float64)
        np.testing.assert_array_equal(applied, base if dry_run else live)
    assert res.events, "the scheduler should have changed something in this run"


def test_bad_config_one_line_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--set", "train.lrr=0.1", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown config key 'train.lrr'; did you mean 'train.lr'?" in res.output
    res = runner.invoke(app, ["train", "--adaptive-loss", "nashmtl", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "nashmtl" in res.output
    with pytest.raises(ConfigError, match=r"schedule.stages\[0\].tf_ratio: must lie in \[0, 1\]"):
        load_config(
            overrides=[
                "schedule.stages=[{epochs=1, tf_ratio=2, freerun_horizon=2, freerun_weight=0}]"
            ]
        )
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlr = 'fast'\n")
    res = runner.invoke(app, ["train", "--config", str(bad)])
    assert res.exit_code == 2 and "train.lr: expected a number, got 'fast'" in res.output


def test_cli_replays_and_sweeps_every_method_on_a_run_with_extras(tmp_path: Path) -> None:
    """`adaptive replay TRACE --method m` for every registered method, on a trace from
    `adaptive train` that recorded the extras GradNorm and FAMO need; a sweep of each."""
    runner = CliRunner()
    args = ["train", "--out", str(tmp_path), "--name", "x", "--epochs", "2", "-q"]
    for s in [*TINY, "adaptive.record_extras=['grad_norm', 'loss_after']"]:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    trace = tmp_path / "x" / "trace.parquet"
    for method in available_methods():
        res = runner.invoke(app, ["replay", str(trace), "-m", method, "-q"])
        assert res.exit_code == 0, (method, res.output)
        assert (tmp_path / "x" / "replays" / f"replay-{method}.parquet").is_file()
    for method, grid in (("gradnorm", "alpha=0.5,1.5"), ("famo", "w_lr=0.01,0.1")):
        res = runner.invoke(app, ["sweep", str(trace), "-m", method, "-g", grid, "-q"])
        assert res.exit_code == 0, (method, res.output)
        assert ("open loop" in res.output) == (method == "famo"), res.output
    res = runner.invoke(app, ["replay", str(trace), "-m", "famo", "-q"])
    assert "open loop" in res.output  # the run applied base weights, not FAMO's


def test_cli_train_and_replay_end_to_end(tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        "train",
        "--out",
        str(tmp_path),
        "--name",
        "cli",
        "--epochs",
        "3",
        "-q",
        "--adaptive_loss",
        "dwa",
        "--adaptive-dry-run",
    ]
    for s in TINY:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    # --quiet: no progress, but one line with the run folder and what was done
    assert res.output.strip().count("\n") == 0, res.output
    assert str(tmp_path / "cli") in res.output and "trained 4 epochs, 48 steps" in res.output
    assert "on 1 CPU thread" in res.output
    trace = tmp_path / "cli" / "trace.parquet"
    res = runner.invoke(
        app, ["replay", str(trace), "--method", "dwa", "--out", str(tmp_path / "o"), "-q"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "replay-dwa.parquet").is_file()
    assert (tmp_path / "o" / "replay-dwa.png").stat().st_size > 10_000
    assert "mean scale per epoch" in res.output
    # default outputs go to the run's replays/ folder; the run folder stays a readable trace
    run_dir = tmp_path / "cli"
    for cmd in (
        ["replay", str(trace), "-m", "scheduler", "-q"],
        ["replay", str(run_dir), "-m", "dwa", "-q"],
        ["compare", str(trace), "-m", "dwa", "-q"],
    ):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 0, res.output
    assert (run_dir / "replays" / "replay-dwa.parquet").is_file()
    assert (run_dir / "replays" / "replay-scheduler.parquet").is_file()
    assert not list(run_dir.glob("replay-*"))
    tr = read_trace(trace)
    for target in (run_dir, trace):
        res = runner.invoke(app, ["inspect", str(target)])
        assert res.exit_code == 0, res.output
        assert (
            f"rows       {len(tr.steps)} step rows (training batches), "
            f"{len(tr.epochs)} evaluation rows" in res.output
        )


def test_trains_on_a_folder_of_bvh_files(tmp_path: Path) -> None:
    """`--data DIR`: the trainer takes the skeleton and motion from the user's BVH files."""
    from adaptive.motion import humanoid
    from adaptive.motion.bvh import write_bvh

    sk = humanoid()
    gen = torch.Generator().manual_seed(0)
    data = tmp_path / "mocap"
    data.mkdir()
    for i in range(4):
        t = 90
        eul = 0.3 * torch.sin(
            torch.linspace(0, 6, t)[:, None, None]
            + torch.rand(1, sk.num_joints, 3, generator=gen) * 6
        )
        root = torch.stack(
            [torch.linspace(0, 1.5 + i, t), torch.full((t,), 0.95), torch.linspace(0, 0.5, t)],
            dim=1,
        )
        write_bvh(data / f"clip{i}.bvh", sk, eul, root, "ZXY")
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path),
            "--name",
            "bvh",
            "--epochs",
            "2",
            "-q",
            *[a for s in TINY[1:] for a in ("--set", s)],
        ],
    )
    assert res.exit_code == 0, res.output
    tr = read_trace(tmp_path / "bvh" / "trace.parquet")
    assert len(tr.steps) == 2 * 12 and np.isfinite(tr.steps["loss/fk_pos"]).all()
    assert tr.run["config"]["data"]["source"] == "bvh"
    bad = tmp_path / "badmocap"
    bad.mkdir()
    (bad / "x.bvh").write_text("HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0\n")
    res = CliRunner().invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path), "-q"])
    assert res.exit_code == 2 and "x.bvh" in res.output


# ------------------------------------------------------------------------------ logging
def _logging_state() -> tuple:
    import logging

    names = ("", "adaptive", "adaptive.train", "adaptive.weighting", "adaptive.scheduler")
    return tuple(
        (n, logging.getLogger(n).level, tuple(logging.getLogger(n).handlers)) for n in names
    )


def test_run_log_cannot_leak_and_never_changes_levels(tmp_path: Path) -> None:
    """Issue 20 item 3: a failed start leaves no handler behind, a later run in the same
    process does not write into an earlier (finished or failed) run's log, and no logger's
    level changes."""
    from adaptive.train.trainer import TrainingError

    before = _logging_state()
    cfg = tiny(tmp_path, "run.epochs=1")
    first = run(cfg, "first")
    log_a = first / "logs" / "train.txt"
    text_a = log_a.read_text()
    assert "epoch 0 valfree" in text_a
    assert _logging_state() == before
    # a failed start after its logger exists: the checkpoint has no DWA state
    with pytest.raises(TrainingError, match="no adaptive loss state"):
        Trainer(tiny(tmp_path, "run.epochs=2", "adaptive.loss='dwa'"), first, resume=True)
    assert _logging_state() == before
    second = run(tiny(tmp_path, "run.epochs=1", "adaptive.loss='dwa'"), "second")
    assert log_a.read_text() == text_a  # nothing of the later runs in the first one's log
    text_b = (second / "logs" / "train.txt").read_text()
    assert "epoch 0 valfree" in text_b and "adaptive.weighting INFO" in text_b
    assert _logging_state() == before


def test_host_sees_run_records_only_at_the_levels_it_set(tmp_path: Path) -> None:
    """The run log holds INFO lines whatever the host's levels; the host's own handlers
    get them only once it enables INFO for `adaptive`."""
    import logging

    class Capture(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    host = logging.getLogger("adaptive")
    cap = Capture()
    host.addHandler(cap)
    level = host.level
    try:
        run(tiny(tmp_path, "run.epochs=1"), "quiet")
        assert [r for r in cap.records if r.levelno < logging.WARNING] == []
        host.setLevel(logging.INFO)  # the host opts in
        run(tiny(tmp_path, "run.epochs=1"), "loud")
        assert host.level == logging.INFO  # the run left the host's choice alone
    finally:
        host.removeHandler(cap)
        host.setLevel(level)
    messages = [r.getMessage() for r in cap.records]
    assert any(m.startswith("epoch 0 valfree") for m in messages)
    quiet = (tmp_path / "quiet" / "logs" / "train.txt").read_text()
    assert "epoch 0 valfree" in quiet


# ------------------------------------------------------------------------------ validation
def test_fixed_val_seed_validates_every_seed_on_identical_windows(tmp_path: Path) -> None:
    """`data.val_seed`: seeds 0 and 1 train on different clips but evaluate the very same
    windows; the default (-1) is today's behaviour, the validation data of `run.seed`."""
    from adaptive.motion import make_splits
    from adaptive.train.trainer import load_datasets

    a_train, a_val = load_datasets(tiny(tmp_path, "run.seed=0", "data.val_seed=7"))
    b_train, b_val = load_datasets(tiny(tmp_path, "run.seed=1", "data.val_seed=7"))
    assert not torch.equal(a_train.frames, b_train.frames)
    for length in (24, 4 + 12):  # the val and valfree window lengths of TINY
        wa, wb = a_val.fixed_windows(length, 8), b_val.fixed_windows(length, 8)
        assert torch.equal(wa.frames, wb.frames) and torch.equal(wa.controls, wb.controls)
    _, own = load_datasets(tiny(tmp_path, "run.seed=1"))
    assert not torch.equal(own.frames, a_val.frames)  # by default each seed has its own
    _, ref = make_splits(1, 6, 2, 90, 30.0)
    assert torch.equal(own.frames, ref.frames)  # today's validation set, unchanged
    _, as_seed7 = load_datasets(tiny(tmp_path, "run.seed=7"))
    assert torch.equal(as_seed7.frames, a_val.frames)  # val_seed=s is the set seed s gets
    # one model scores the same on either seed's validation set, in both splits
    from adaptive.motion import FeatureStats, MotionJointLoss, MotionModel
    from adaptive.train._evaluation import run_evaluation

    cfg = tiny(tmp_path)
    model = MotionModel(a_train.skeleton, FeatureStats.from_dataset(a_train), hidden_size=32)
    loss_fn = MotionJointLoss(a_train.skeleton)
    scores = [
        run_evaluation(model, v, loss_fn, cfg["data"], torch.device("cpu")) for v in (a_val, b_val)
    ]
    assert scores[0] == scores[1] and set(scores[0]) == {"val", "valfree"}


def test_tail_split_cuts_every_clip_without_overlap(tmp_path: Path) -> None:
    """`data.val_split = "tail"`: the last `val_fraction` of every clip validates, the rest
    trains; no frame is in both, and the split is the same for every seed."""
    from adaptive.motion import split_tails
    from adaptive.motion.bvh import load_bvh_folder
    from adaptive.train.trainer import load_datasets

    data = _bvh_folder(tmp_path / "mocap", lengths=(90, 120, 75))
    full = load_bvh_folder(data)
    train, val = split_tails(full, 0.2)
    assert train.num_clips == val.num_clips == full.num_clips
    for i in range(full.num_clips):
        whole, head, tail = full.clip(i), train.clip(i), val.clip(i)
        assert len(tail) == round(len(whole) * 0.2) and len(head) + len(tail) == len(whole)
        assert torch.equal(torch.cat([head.frames, tail.frames]), whole.frames)
        assert torch.equal(torch.cat([head.root_pos, tail.root_pos]), whole.root_pos)
    sets = [
        load_datasets(
            tiny(
                tmp_path,
                "data.source='bvh'",
                f"data.path={str(data)!r}",
                "data.val_split='tail'",
                "data.val_fraction=0.3",
                f"run.seed={seed}",
            )
        )
        for seed in (0, 1)
    ]
    (tr0, va0), (tr1, va1) = sets
    assert torch.equal(va0.frames, va1.frames) and torch.equal(tr0.frames, tr1.frames)
    assert va0.num_clips == 3 and tr0.num_frames + va0.num_frames == full.num_frames
    # a tail too short for the val windows (data.window = 24 frames) is a one-line error
    from adaptive.train.trainer import TrainingError

    with pytest.raises(TrainingError, match="validation windows need 24"):
        load_datasets(
            tiny(
                tmp_path,
                "data.source='bvh'",
                f"data.path={str(data)!r}",
                "data.val_split='tail'",
                "data.val_fraction=0.1",
            )
        )
    with pytest.raises(ConfigError, match=r"data\.val_split"):
        tiny(tmp_path, "data.val_split='end'")
    with pytest.raises(ConfigError, match=r"data\.val_fraction"):
        tiny(tmp_path, "data.val_fraction=1.0")


def _bvh_folder(folder: Path, lengths: tuple[int, ...]) -> Path:
    from adaptive.motion import humanoid
    from adaptive.motion.bvh import write_bvh

    sk = humanoid()
    gen = torch.Generator().manual_seed(0)
    folder.mkdir(parents=True)
    for i, t in enumerate(lengths):
        eul = 0.3 * torch.sin(
            torch.linspace(0, 6, t)[:, None, None]
            + torch.rand(1, sk.num_joints, 3, generator=gen) * 6
        )
        root = torch.stack(
            [torch.linspace(0, 1.5 + i, t), torch.full((t,), 0.95), torch.linspace(0, 0.5, t)],
            dim=1,
        )
        write_bvh(folder / f"clip{i}.bvh", sk, eul, root, "ZXY")
    return folder


def test_resume_from_a_corrupt_or_truncated_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    from adaptive.train.trainer import TrainingError

    cfg = tiny(tmp_path, "run.epochs=1")
    run_dir = run(cfg, "r")
    ckpt = run_dir / "checkpoint.pt"
    data = ckpt.read_bytes()
    for broken in (data[: len(data) // 2], b"not a checkpoint"):
        ckpt.write_bytes(broken)
        with pytest.raises(TrainingError, match="not a readable checkpoint") as info:
            Trainer(tiny(tmp_path, "run.epochs=2"), run_dir, resume=True)
        assert "\n" not in str(info.value)
    torch.save({"epoch": 1}, ckpt)
    with pytest.raises(TrainingError, match="checkpoint lacks step, model"):
        Trainer(tiny(tmp_path, "run.epochs=2"), run_dir, resume=True)
