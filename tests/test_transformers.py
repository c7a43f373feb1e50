"""The Hugging Face Trainer integration: one trace row per optimizer step, DWA live and in
dry-run with replay equal to what it applied, gradient accumulation (samples and
`num_items_in_batch` token counts), the rank logic of multi-process runs, bad model output,
and examples/hf_trainer.py as an `adaptive trial --command` target."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="needs the 'transformers' extra")

from typer.testing import CliRunner  # noqa: E402

from adaptive import read_trace  # noqa: E402
from adaptive.integrations import transformers as hf  # noqa: E402
from adaptive.integrations.transformers import (  # noqa: E402
    AdaptiveTrainer,
    AdaptiveTrainerCallback,
)
from cli import app  # noqa: E402
from replay import replay  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hf_trainer.py"
W = ["weight/reg", "weight/cls"]
P = ["proposed/weight/reg", "proposed/weight/cls"]


def _example():
    spec = importlib.util.spec_from_file_location("hf_trainer_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ex = _example()
transformers.logging.set_verbosity_error()


@pytest.fixture(autouse=True)
def _one_thread():
    """These runs are tiny: one thread is several times faster than two on a shared box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


def test_live_dwa_one_row_per_step_and_replay_equals_applied(tmp_path: Path) -> None:
    cb = ex.train(tmp_path / "dwa" / "trace.parquet", method="dwa", temperature=2.0)
    t = read_trace(tmp_path / "dwa" / "trace.parquet")
    assert len(t.steps) == 6 * 16  # 512 samples / 32 per step, 6 epochs
    assert t.steps["step"].tolist() == list(range(96))
    assert t.steps.groupby("epoch").size().tolist() == [16] * 6
    applied = t.steps[W].to_numpy()
    assert np.abs(applied - 1.0).max() > 0.05  # DWA applied, not the base weights
    np.testing.assert_array_equal(applied, t.steps[P].to_numpy())
    again = replay(t, "dwa", temperature=2.0).frame[P].to_numpy()
    assert _rel(again, applied) <= 1e-6
    # the weighted total, the gradient norm and the learning rate of every step
    losses = t.steps[["loss/reg", "loss/cls"]].to_numpy()
    np.testing.assert_allclose(t.steps["loss_total"], (losses * applied).sum(1), rtol=1e-6)
    assert t.steps["grad_norm"].gt(0).all() and t.steps["lr"].eq(0.05).all()
    # the Trainer's evaluation metrics, one val row per epoch, at the steps done
    ev = t.epochs
    assert ev["split"].eq("val").all() and ev["epoch"].tolist() == list(range(6))
    assert ev["step"].tolist() == [16 * (e + 1) for e in range(6)]
    assert {"metric/mse", "metric/acc", "metric/loss"} <= set(ev.columns)
    assert not any("runtime" in c or "per_second" in c for c in ev.columns)
    assert ev["metric/mse"].iloc[-1] < ev["metric/mse"].iloc[0]
    assert cb.weights["reg"].item() == pytest.approx(applied[-1, 0], rel=1e-6)
    assert t.run["source"] == "transformers"


def test_dry_run_applies_the_base_weights_and_records_proposals(tmp_path: Path) -> None:
    ex.train(tmp_path / "base" / "trace.parquet")
    ex.train(tmp_path / "dry" / "trace.parquet", method="dwa", dry_run=True)
    base, dry = (read_trace(tmp_path / n / "trace.parquet") for n in ("base", "dry"))
    np.testing.assert_array_equal(dry.steps[W].to_numpy(), 1.0)
    proposed = dry.steps[P].to_numpy()
    assert np.abs(proposed - 1.0).max() > 0.05
    assert _rel(replay(dry, "dwa", temperature=2.0).frame[P].to_numpy(), proposed) <= 1e-6
    # dry-run trains what the controller-free run trains
    for cols in (["loss/reg", "loss/cls"],):
        np.testing.assert_array_equal(dry.steps[cols].to_numpy(), base.steps[cols].to_numpy())
    np.testing.assert_array_equal(dry.epochs["metric/mse"], base.epochs["metric/mse"])


def test_gradient_accumulation_equals_one_batch_per_step(tmp_path: Path) -> None:
    """24 + 24 micro-batches per step (and 24 + 8 at each epoch's end: shares 3/4, 1/4)
    train and record what one batch of 48 (32 at the end) does, with DWA applied."""
    kw = {"method": "dwa", "epochs": 4, "batch": 48}
    one = ex.train(tmp_path / "one" / "trace.parquet", grad_accum=1, **kw)
    two = ex.train(tmp_path / "two" / "trace.parquet", grad_accum=2, **kw)
    a, b = (read_trace(tmp_path / n / "trace.parquet") for n in ("one", "two"))
    assert len(a.steps) == len(b.steps) == 4 * 11  # one row per optimizer step
    assert b.run["gradient_accumulation_steps"] == 2
    cols = ["loss/reg", "loss/cls", *W, "loss_total", "grad_norm"]
    np.testing.assert_allclose(b.steps[cols].to_numpy(), a.steps[cols].to_numpy(), rtol=2e-5)
    assert np.abs(b.steps[W].to_numpy() - 1.0).max() > 0.05
    np.testing.assert_allclose(b.epochs["metric/mse"], a.epochs["metric/mse"], rtol=1e-4)
    replayed = replay(b, "dwa", temperature=2.0).frame[P].to_numpy()
    assert _rel(replayed, b.steps[W].to_numpy()) <= 1e-6
    assert one.weighting.step == two.weighting.step == 44  # the controller stepped per step


class _Tokens(torch.nn.Module):
    """Two token-level heads; labels are tokens with -100 where there is none."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.emb = torch.nn.Linear(4, 16)
        self.a = torch.nn.Linear(16, 3)
        self.b = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> dict:
        h = torch.tanh(self.emb(x))
        return {"logits_a": self.a(h), "logits_b": self.b(h)}


def _token_loss(outputs: dict, labels: torch.Tensor, num_items_in_batch=None) -> tuple:
    assert num_items_in_batch is None  # the adaptive trainer asks for micro-batch means
    la = torch.nn.functional.cross_entropy(outputs["logits_a"].flatten(0, 1), labels.flatten())
    lb = torch.nn.functional.cross_entropy(outputs["logits_b"].flatten(0, 1), labels.flatten())
    return la + lb, {"a": la, "b": lb}


def _token_run(path: Path, grad_accum: int) -> list[dict]:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(64, 8, 4, generator=gen)
    labels = torch.randint(0, 3, (64, 8), generator=gen)
    valid = torch.arange(8) < torch.randint(1, 9, (64, 1), generator=gen)  # 1..8 tokens each
    labels = labels.masked_fill(~valid, -100)
    rows = [{"x": x[i], "labels": labels[i]} for i in range(64)]
    cb = AdaptiveTrainerCallback(path, components=["a", "b"], method="dwa", dry_run=False)
    args = transformers.TrainingArguments(
        output_dir=str(path.parent / "hf"),
        per_device_train_batch_size=32 // grad_accum,
        gradient_accumulation_steps=grad_accum,
        num_train_epochs=3,
        learning_rate=0.1,
        optim="sgd",
        lr_scheduler_type="constant",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        label_names=["labels"],  # forward() does not take them: keep them for the loss
        logging_steps=1,
    )
    trainer = AdaptiveTrainer(
        model=_Tokens(), args=args, train_dataset=rows, compute_loss_func=_token_loss, adaptive=cb
    )
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.train()
    return trainer.state.log_history


def test_num_items_in_batch_weights_micro_batches_by_their_tokens(tmp_path: Path) -> None:
    """With labels the Trainer counts `num_items_in_batch`: micro-batches count by their
    tokens, so two micro-batches of 16 record and train the token mean of one batch of 32
    (weighting them by samples would not: their token counts differ)."""
    _token_run(tmp_path / "one" / "trace.parquet", 1)
    logs = _token_run(tmp_path / "two" / "trace.parquet", 2)
    a, b = (read_trace(tmp_path / n / "trace.parquet") for n in ("one", "two"))
    assert len(a.steps) == len(b.steps) == 3 * 2
    cols = ["loss/a", "loss/b", "grad_norm"]
    np.testing.assert_allclose(b.steps[cols].to_numpy(), a.steps[cols].to_numpy(), rtol=1e-5)
    # the Trainer's own logs (logging_steps=1) carry each component of each step
    steps = [e for e in logs if "loss" in e]
    assert len(steps) == 6
    got = [[e["loss_a"], e["loss_b"]] for e in steps]
    np.testing.assert_allclose(got, b.steps[["loss/a", "loss/b"]].to_numpy(), rtol=1e-6)
    # and their weighted total is the loss the Trainer logs
    total = (
        b.steps[["loss/a", "loss/b"]].to_numpy() * b.steps[["weight/a", "weight/b"]].to_numpy()
    ).sum(1)
    np.testing.assert_allclose([e["loss"] for e in steps], total, rtol=1e-5)


def test_micro_batch_shares_and_fixed_weights_within_a_step(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    cb = AdaptiveTrainerCallback(path, components=["a", "b"], method="rlw", dry_run=False)
    state = SimpleNamespace(is_world_process_zero=False)
    cb.on_epoch_begin(None, state, None)
    cb.begin_step([30.0, 10.0])
    l1 = {"a": torch.tensor(1.0, requires_grad=True), "b": torch.tensor(2.0)}
    l2 = {"a": torch.tensor(3.0, requires_grad=True), "b": torch.tensor(6.0)}
    t1 = cb.micro_batch_loss(l1)
    w = torch.stack([cb.weights["a"], cb.weights["b"]])
    assert not torch.allclose(w, torch.ones(2, dtype=w.dtype))  # RLW: random weights
    t2 = cb.micro_batch_loss(l2)
    assert torch.equal(torch.stack([cb.weights["a"], cb.weights["b"]]), w)  # one per step
    mean = torch.tensor([0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 6], dtype=torch.float64)
    assert float((t1 + t2).detach()) == pytest.approx(float((mean * w).sum()), rel=1e-6)
    with pytest.raises(RuntimeError, match="outside the optimizer step"):
        cb.micro_batch_loss(l1)
    before = cb.weighting.step
    cb.on_step_end(None, state, None)
    assert cb.weighting.step == before + 1  # the controller stepped once, on the mean
    assert not (tmp_path / "t.parquet").exists()  # not rank 0: nothing written


def test_ranks_share_the_mean_losses_and_rank_zero_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under DDP the step's component means are averaged over ranks (here a stand-in for the
    all-reduce) before the controller sees them; only world process zero records."""
    import adaptive.train.distributed as dist

    seen = []

    def fake_mean(raw, components):
        seen.append({c: float(raw[c]) for c in components})
        return {c: raw[c] * 0 + 10.0 for c in components}  # "the other rank" moved the mean

    monkeypatch.setattr(hf, "_distributed", lambda: True)
    monkeypatch.setattr(dist, "mean_losses", fake_mean)
    args = SimpleNamespace(gradient_accumulation_steps=1)
    traces = {}
    for rank in (0, 1):
        path = tmp_path / f"rank{rank}" / "trace.parquet"
        cb = AdaptiveTrainerCallback(path, components=["a", "b"], method="dwa")
        state = SimpleNamespace(is_world_process_zero=rank == 0)
        cb.on_train_begin(args, state, None)
        cb.on_epoch_begin(args, state, None)
        cb.begin_step([1.0])
        cb.micro_batch_loss({"a": torch.tensor(float(rank + 1)), "b": torch.tensor(2.0)})
        cb.on_step_end(args, state, None)
        cb.on_train_end(args, state, None)
        traces[rank] = path
    assert seen == [{"a": 1.0, "b": 2.0}, {"a": 2.0, "b": 2.0}]  # each rank's own mean
    assert not traces[1].exists()
    t = read_trace(traces[0])
    assert t.steps[["loss/a", "loss/b"]].to_numpy().tolist() == [[10.0, 10.0]]


def test_a_recommended_file_runs_its_controller(tmp_path: Path, capsys) -> None:
    """`--adaptive-config recommended.toml` (the trial candidate the advice prints) runs the
    file's DWA with its temperature, applied, and the trace says which file."""
    from replay import recommended_toml

    rec = tmp_path / "recommended.toml"
    rec.write_text(recommended_toml("dwa", {"temperature": 0.5, "adjustment_range": 0.2}))
    run = tmp_path / "run"
    args = ["--seed", "1", "--out", str(run), "--epochs", "4", "--adaptive-config", str(rec)]
    assert ex.main(args) == 0
    t = read_trace(run / "trace.parquet")
    applied = t.steps[W].to_numpy()
    assert np.abs(applied - 1.0).max() > 0.05 and np.abs(applied - 1.0).max() <= 0.2 + 1e-6
    assert (
        _rel(replay(t, "dwa", temperature=0.5, adjustment_range=0.2).frame[P].to_numpy(), applied)
        <= 1e-6
    )
    assert t.run["adaptive_config"]["path"] == str(rec)
    with pytest.raises(SystemExit):
        ex.main([*args[:4], "--method", "dwa", "--adaptive-config", str(rec)])
    assert "either --method or --adaptive-config" in capsys.readouterr().err
    assert (
        ex.main(["--seed", "1", "--out", str(tmp_path / "x"), "--adaptive-config", "no.toml"]) == 2
    )
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no.toml" in err
    with pytest.raises(ValueError, match="leave out method"):
        AdaptiveTrainerCallback("t.parquet", components=["reg", "cls"], config=rec, method="dwa")


class _NoComponents(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        return {"loss": torch.nn.functional.mse_loss(self.lin(x), labels[:, :1])}


def test_a_model_without_component_losses_is_one_clear_line(tmp_path: Path) -> None:
    cb = AdaptiveTrainerCallback(tmp_path / "t" / "trace.parquet", components=["reg", "cls"])
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), report_to="none", use_cpu=True, disable_tqdm=True
    )
    trainer = AdaptiveTrainer(
        model=_NoComponents(), args=args, train_dataset=ex.Rows(ex._x, ex._labels), adaptive=cb
    )
    with pytest.raises(ValueError) as err:
        trainer.train()
    msg = str(err.value)
    assert len(msg.splitlines()) == 1
    assert "outputs['losses']" in msg and "compute_loss_func" in msg and "['loss']" in msg
    with pytest.raises(TypeError, match="AdaptiveTrainerCallback"):
        AdaptiveTrainer(model=_NoComponents(), args=args, adaptive="dwa")
    with pytest.raises(ValueError, match="base_weights"):
        AdaptiveTrainerCallback("t.parquet", components=["a"], base_weights={"b": 1.0})
    with pytest.raises(ValueError, match="extras"):
        AdaptiveTrainerCallback("t.parquet", components=["a", "b"], method="gradnorm")


def test_example_records_replays_and_refuses_bad_input(tmp_path: Path, capsys) -> None:
    """The example end to end (record, replay, DWA live: its replay equals what it applied),
    and its bad input in one line with exit code 2."""
    assert ex.main([str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    rel = float(re.search(r"max relative difference (\S+)", out).group(1))
    assert 0 <= rel <= 1e-6
    assert ex.main(["--seed", "0", "--out", str(tmp_path / "demo" / "dwa")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "a trace is already there" in err
    with pytest.raises(SystemExit) as exit_:
        ex.main(["--seed", "0", "--out", str(tmp_path / "x"), "--batch", "30", "--grad-accum", "4"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "--batch 30" in err


def test_example_is_a_trial_command_target(tmp_path: Path, monkeypatch) -> None:
    """A 2-seed `adaptive trial --command` on the example runs to a report."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cmd = f"{sys.executable} {EXAMPLE} --seed {{seed}} --out {{run_dir}} --epochs 3 {{overrides}}"
    args = ["trial", "--command", cmd, "-c", "dwa: --method dwa", "--metric", "val/mse"]
    args += ["--seeds", "2", "--jobs", "2", "-o", str(tmp_path / "trial")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "dwa: val/mse (final)" in res.output and "n = 2" in res.output
    assert (tmp_path / "trial" / "trial.md").exists()
    runs = (tmp_path / "trial" / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 4
    trace = read_trace(tmp_path / "trial" / "dwa" / "seed1" / "trace.parquet")
    assert trace.run["seed"] == 1 and np.abs(trace.steps[W].to_numpy() - 1).max() > 0.01


DDP_SCRIPT = """
import json, os, sys
from pathlib import Path
import importlib.util
import os
import torch
spec = importlib.util.spec_from_file_location("ex", sys.argv[1])
ex = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ex)
import transformers
from adaptive.integrations.transformers import AdaptiveTrainer, AdaptiveTrainerCallback

rank = int(os.environ["RANK"])
out = Path(sys.argv[2])
seen = {"local": [], "weights": []}


class Spy(AdaptiveTrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        seen["local"].append(self._sum.tolist())  # this rank's step mean, before reduction
        super().on_step_end(args, state, control, **kw)
        seen["weights"].append([float(w) for w in self.weights.values()])


transformers.logging.set_verbosity_error()
transformers.set_seed(0)
cb = Spy(out / f"rank{rank}" / "trace.parquet", components=ex.COMPONENTS, method="dwa",
         dry_run=False, temperature=2.0)
args = transformers.TrainingArguments(
    output_dir=str(out / "hf"), per_device_train_batch_size=16, gradient_accumulation_steps=2,
    num_train_epochs=3, learning_rate=0.05, optim="sgd", lr_scheduler_type="constant",
    eval_strategy="epoch", save_strategy="no", report_to="none", use_cpu=True,
    disable_tqdm=True, seed=0, ddp_find_unused_parameters=False,
)
trainer = AdaptiveTrainer(model=ex.TwoHead(), args=args, train_dataset=ex.Rows(ex._x[:512],
    ex._labels[:512]), eval_dataset=ex.Rows(ex._x[512:], ex._labels[512:]),
    compute_metrics=ex.metrics, adaptive=cb)
trainer.remove_callback(transformers.PrinterCallback)
trainer.train()
(out / f"seen{rank}.json").write_text(json.dumps(seen))
"""


def test_two_processes_share_weights_and_rank_zero_writes_the_mean(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo), 2 micro-batches per step: each rank's step mean
    goes into one all-reduce, both ranks apply the same weights, rank 0 alone writes the
    trace, which holds the mean over ranks and replays to the weights applied."""
    import json
    import socket
    import subprocess

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    cmd += [str(script), str(EXAMPLE), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = [json.loads((tmp_path / f"seen{k}.json").read_text()) for k in (0, 1)]
    assert not (tmp_path / "rank1" / "trace.parquet").exists()
    t = read_trace(tmp_path / "rank0" / "trace.parquet")
    assert len(t.steps) == 3 * 8  # 256 samples per rank and epoch, 32 per optimizer step
    local = np.array([s["local"] for s in seen])  # (rank, step, component)
    assert np.abs(local[0] - local[1]).max() > 1e-3  # the ranks saw different data
    np.testing.assert_allclose(t.steps[["loss/reg", "loss/cls"]], local.mean(0), rtol=1e-6)
    assert seen[0]["weights"] == seen[1]["weights"]  # the same weights on both ranks
    applied = t.steps[W].to_numpy()
    np.testing.assert_allclose(applied, seen[0]["weights"], rtol=1e-6)
    assert np.abs(applied - 1.0).max() > 0.01
    assert _rel(replay(t, "dwa", temperature=2.0).frame[P].to_numpy(), applied) <= 1e-6
    assert t.epochs["metric/mse"].notna().all() and len(t.epochs) == 3
