"""Bad input versus bugs: every command answers a new user's mistakes with one line on
stderr and exit code 2, and a bug in a method keeps its traceback and says it is a bug."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from tests.test_analysis import synthetic
from tests.test_train import TINY

runner = CliRunner()
SETS = [a for s in TINY for a in ("--set", s)]


def one_line(res, *needles: str) -> None:  # type: ignore[no-untyped-def]
    """Exit 2, exactly one line on stderr, starting `error:`, no traceback."""
    err = res.stderr
    assert res.exit_code == 2, (res.exit_code, res.output, repr(res.exception))
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in res.output
    assert not res.output.startswith("\n"), repr(res.output)  # no blank line before it
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    f = {
        "trace": synthetic(d / "run" / "trace.parquet"),
        "text": d / "notes.parquet",
        "empty_csv": d / "empty.csv",
        "header_csv": d / "header.csv",
        "nocols": d / "nocols.parquet",
        "dir": d / "emptydir",
    }
    f["text"].write_text("not parquet")
    f["empty_csv"].write_text("")
    f["header_csv"].write_text("step,loss_a,loss_b\n")
    f["dir"].mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1, 2]}), f["nocols"])
    return f


def test_every_command_answers_bad_input_in_one_line(files: dict[str, Path], tmp_path: Path):
    missing = str(tmp_path / "nope.parquet")
    tr, text, d = str(files["trace"]), str(files["text"]), str(files["dir"])
    cases: list[list[str]] = []
    for cmd in (["inspect"], ["compact"]):
        cases += [[*cmd, missing], [*cmd, text]]
    cases += [["inspect", d], ["inspect", str(files["nocols"])]]
    for cmd in (["replay", "-m", "dwa"], ["compare", "-m", "dwa"]):
        cases += [[*cmd, missing], [*cmd, d], [*cmd, text], [*cmd, str(files["nocols"])]]
    sweep = ["sweep", "-m", "dwa", "-g", "temperature=1,2"]

    def imp(kind: str, source: str) -> list[str]:  # into tmp_path, not ./runs
        return ["import", kind, source, "-c", "a=loss_a", "-o", str(tmp_path / "i.parquet")]

    cases += [[*sweep, missing], [*sweep, d], [*sweep, text]]
    cases += [
        ["replay", tr, "-m", "nosuch"],
        ["compare", tr, "-m", "nosuch"],
        ["sweep", tr, "-m", "nosuch", "-g", "temperature=1"],
        ["replay", tr, "-m", "dwa", "-p", "temperature=-1"],  # the constructor refuses it
        ["replay", tr, "-m", "dwa", "-p", "temperature=abc"],
        ["compare", tr, "-m", "dwa", "-p", "dwa.temperature=0"],
        ["sweep", tr, "-m", "dwa", "-g", "temperature=-1,2"],
        ["replay", str(files["nocols"]), "-m", "scheduler"],
        ["replay", tr, "-m", "gradnorm"],  # no recorded extras
        ["train", "--adaptive-loss", "nosuch"],
        [
            "train",
            "--out",
            str(tmp_path),
            "--adaptive-loss",
            "dwa",
            "--adaptive-param",
            "temperature=-1",
            *SETS,
        ],
        [
            "train",
            "--out",
            str(tmp_path),
            "--adaptive-scheduler",
            "--set",
            "adaptive.adjustment_rate=-1",
            *SETS,
        ],
        ["demo", "--quick", "--set", "adaptive.dwa.temperature=-1", "-o", str(tmp_path / "d")],
        [*sweep, str(files["nocols"])],
        ["train", "--config", missing],
        ["train", "--set", "model.nosuch=1"],
        ["train", "--resume", d],
        ["demo", "--set", "model.nosuch=1", "-o", str(tmp_path / "d2")],
        imp("csv", missing),
        imp("csv", d),
        imp("csv", str(files["empty_csv"])),
        imp("csv", str(files["header_csv"])),
        imp("tensorboard", missing),
        imp("tensorboard", text),
        imp("mlflow", missing),
        imp("mlflow", d),
        ["trial", "--seeds", "2"],  # no candidate
    ]
    bad = []
    for args in cases:
        res = runner.invoke(app, args)
        try:
            one_line(res)
        except AssertionError as exc:
            bad.append((args, str(exc)[:300]))
    assert not bad, "\n".join(map(str, bad))


def test_header_only_csv_names_the_real_problem(files: dict[str, Path], tmp_path: Path) -> None:
    out = str(tmp_path / "t.parquet")
    res = runner.invoke(
        app, ["import", "csv", str(files["header_csv"]), "-c", "a=loss_a", "-o", out]
    )
    one_line(res, "but no rows")
    assert "available: none" not in res.stderr


def test_import_into_an_unwritable_place_is_one_line(files: dict[str, Path], tmp_path: Path):
    csv = tmp_path / "log.csv"
    csv.write_text("step,epoch,loss_a\n0,0,1.0\n1,0,0.5\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a folder must go: OSError
    res = runner.invoke(
        app, ["import", "csv", str(csv), "-c", "a=loss_a", "-o", str(blocker / "t.parquet")]
    )
    one_line(res)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ck")
    args = ["train", "--out", str(out), "--name", "a", "--adaptive-loss", "dwa", "-q", *SETS]
    res = runner.invoke(app, [*args, "--set", "run.epochs=1"])
    assert res.exit_code == 0, res.output
    return out / "a"


def test_corrupt_or_truncated_checkpoint_on_resume_is_one_line(run_dir: Path) -> None:
    ck = run_dir / "checkpoint.pt"
    good = torch.load(ck, weights_only=True)
    try:
        ck.write_bytes(b"garbage")
        one_line(runner.invoke(app, ["train", "--resume", str(run_dir), "-q"]), "checkpoint")
        cut = dict(good)
        del cut["optimizer"]
        torch.save(cut, ck)
        one_line(runner.invoke(app, ["train", "--resume", str(run_dir), "-q"]), "optimizer")
        state = json.loads(good["weighting"])
        del state["config"]  # a truncated controller state dict
        torch.save({**good, "weighting": json.dumps(state)}, ck)
        one_line(runner.invoke(app, ["train", "--resume", str(run_dir), "-q"]), "checkpoint")
    finally:
        torch.save(good, ck)


def test_a_bug_in_a_method_keeps_its_traceback(files: dict[str, Path], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from adaptive.weighting import method_class

    cls = method_class("dwa")

    def broken(self, *a, **k):  # type: ignore[no-untyped-def]
        raise KeyError("internal_state")

    monkeypatch.setattr(cls, "end_epoch", broken)
    for args in (
        ["replay", str(files["trace"]), "-m", "dwa", "-q"],
        ["compare", str(files["trace"]), "-m", "dwa", "-q"],
        ["sweep", str(files["trace"]), "-m", "dwa", "-g", "temperature=1,2", "-q"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 1, (args, res.output)
        assert "Traceback" in res.stderr and "KeyError" in res.stderr, res.stderr
        assert res.stderr.rstrip().splitlines()[-1].startswith("error: this is a bug in adaptive")


def test_messages_ending_in_a_quote_keep_it() -> None:
    """The trial command's error line is the whole message (it once cut a closing quote)."""
    one_line(runner.invoke(app, ["trial", "-c", "x", "--engine", "rey"]), "got 'rey'\n")
    res = runner.invoke(app, ["trial", "--seeds", "2"])
    one_line(res, "--candidate \"adaptive.loss='dwa'\"")
    # with --command the hint is something the user's own script takes in {overrides}
    res = runner.invoke(app, ["trial", "--command", "python t.py {seed} {run_dir} {overrides}"])
    one_line(res, '--candidate "--lr 0.01"', "{overrides}")
    assert "adaptive.loss" not in res.stderr


def test_a_trace_with_no_rows_is_one_line(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(synthetic(tmp_path / "run" / "trace.parquet"))
    empty = tmp_path / "empty.parquet"
    pq.write_table(table.slice(0, 0), empty)  # a valid trace: the schema, no rows
    evals = table.filter(pc.equal(table["kind"], "epoch"))
    no_steps = tmp_path / "evaluations.parquet"
    pq.write_table(evals, no_steps)  # evaluations only: nothing to replay either
    out = str(tmp_path / "out")
    for path in (empty, no_steps):
        for args in (
            ["replay", str(path), "-m", "dwa", "-q", "-o", out],
            ["replay", str(path), "-m", "scheduler", "-q", "-o", out],
            ["compare", str(path), "-m", "dwa", "-q", "-o", out],
            ["sweep", str(path), "-m", "dwa", "-g", "temperature=1,2", "-q", "-o", out],
        ):
            one_line(runner.invoke(app, args), str(path), "no step rows")
    assert not Path(out).exists()  # refused before anything was written
    res = runner.invoke(app, ["inspect", str(empty)])  # inspect still shows what is there
    assert res.exit_code == 0 and "0 step rows" in res.output, res.output
    # beside a run with steps, a run of evaluations only is left out with a warning
    i = evals.schema.get_field_index("run_id")
    other = evals.set_column(i, "run_id", pa.array(["evals"] * evals.num_rows, pa.string()))
    pooled = tmp_path / "pooled.parquet"
    pq.write_table(pa.concat_tables([table, other]), pooled)
    res = runner.invoke(app, ["replay", str(pooled), "-m", "dwa", "-q", "-o", out])
    assert res.exit_code == 0, res.output
    assert "warning:" in res.stderr and "'evals' has no step rows" in res.stderr, res.stderr
