"""Every code block in README.md and docs/*.md runs, or says why it cannot run here.

A Python, shell or SQL block runs unless an HTML comment on the line above its fence says
otherwise:

* ``<!-- docs-test: skip (REASON) -->``: not run here (it installs packages, needs a
  cluster, takes minutes, is a sketch with placeholders); still checked: Python compiles,
  shell passes ``bash -n`` and every ``adaptive`` command parses with the real command line;
* ``<!-- docs-test: pending (REASON) -->``: meant to run but known broken; the block runs and
  must fail (strict xfail), so a fix shows up as a failure until the marker goes;
* ``<!-- docs-test: setup NAME -->``: a Python fragment, run after the stand-ins in
  ``PRELUDES[NAME]`` (a model, a loader, losses: what the reader's own loop has).

Blocks of one document run in order in one folder (what earlier blocks write, later blocks
read), in this process: ``adaptive`` commands through the real Typer app, Python with
``exec`` in a fresh namespace, SQL with DuckDB. Quick settings (``QUICK``) are appended to
``adaptive train`` / ``trial`` / ``demo``; a ``train`` with the same arguments trains once per
session and is copied after that. Environment setup (``python3 -m venv``, ``pip install``,
``source``) is this suite's own and is not run. Inputs the docs assume but no earlier block
writes (a TensorBoard log, an MLflow store, CSV exports, a run folder) come from ``SEEDS``,
created only when a command names them and they are missing. Any other program fails the
test: mark the block, or teach this module to run it.
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import os
import re
import shlex
import shutil
import subprocess
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest
import typer.main
from typer.testing import CliRunner

from cli import app
from tests.test_train import TINY

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell", "console"}
SQL = {"sql"}

FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>\w*)[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<body>.*?)\s*-->", re.S)
MARKER_BODY = re.compile(
    r"(?P<kind>skip|pending)\s+\((?P<reason>[^()]*(?:\([^()]*\)[^()]*)*)\)|setup\s+(?P<setup>\w+)"
)

# Quick settings for commands that train: the tiny task of the training tests, 2 epochs of
# 6 steps (what one needs to see that a command works, not what the docs' output shows).
QUICK_SETS = [a for s in [*TINY, "run.epochs=2", "train.steps_per_epoch=6"] for a in ("--set", s)]
QUICK: dict[str, Callable[[list[str]], list[str]]] = {
    "train": lambda a: [*a, *QUICK_SETS],
    "demo": lambda a: [*a, "--quick", *QUICK_SETS],
    "trial": lambda a: a if "--runs" in a else [*a, "--seeds", "1", *QUICK_SETS],
}
SETUP = (("python3", "-m", "venv"), ("python", "-m", "venv"), ("pip",), ("pip3",), ("source",))

# Stand-ins for the reader's own training loop, for Python fragments (setup NAME).
PRELUDES = {
    "loop": '''
from collections.abc import Mapping

import torch

from adaptive import AdaptiveLossWeighting  # as the document's first block imports it

torch.manual_seed(0)
num_epochs = epochs = 2
components = ["fk_pos", "contact", "smooth"]
base = base_weights = {"fk_pos": 1.0, "contact": 0.5, "smooth": 2.0}


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(4, 16)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))

    def losses(self, batch):
        x, y = batch
        out = self(x)
        return {c: ((out[:, i] - y[:, i]) ** 2).mean() for i, c in enumerate(components)}


model = Model()
optimizer = opt = torch.optim.SGD(model.parameters(), lr=0.01)
lr = 0.01
loader = [(torch.randn(8, 4), torch.randn(8, 3) * (1 + i)) for i in range(6)]
batch = loader[0]


class StepLosses(Mapping):
    """This step's raw losses, computed again at each read: a fragment may show two steps."""

    def __getitem__(self, c):
        return model.losses(batch)[c]

    def __iter__(self):
        return iter(components)

    def __len__(self):
        return len(components)


losses = StepLosses()


def my_losses(model, batch):
    return model.losses(batch)


def reg_loss(batch):
    return model.losses(batch)["fk_pos"]


def cls_loss(batch):
    return model.losses(batch)["contact"]


def evaluate(model):
    with torch.no_grad():
        return float(sum(model.losses(b)["fk_pos"] for b in loader)) / len(loader)


class Metrics:
    def log(self, values):
        assert isinstance(values, dict) and values


metrics = Metrics()


def stage_schedule(epoch):
    return {"tf_ratio": 0.5, "freerun_horizon": 8, "freerun_weight": 0.5}


def train_step(batch, *, tf_ratio, horizon):
    total = sum(model.losses(batch).values())
    optimizer.zero_grad()
    total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return total.detach(), grad_norm


valfree_metrics = {"MPJPE": 50.0, "YawAbsDeg": 10.0, "RootDrift": 0.5}
val_metrics = {"MPJPE": 40.0, "YawAbsDeg": 8.0, "RootDrift": 0.4}
''',
    # a controller and an open recorder, as inside the loop of INTEGRATION.md's first block
    "recorder": """
from adaptive import AdaptiveLossWeighting, TraceRecorder

components = ["fk_pos", "contact", "smooth"]
ctrl = AdaptiveLossWeighting(components, method="dwa", dry_run=True)
rec = TraceRecorder("runs/fragment/trace.parquet", components=components)
""",
    "trace": """
from adaptive import read_trace

trace = read_trace("runs/base/trace.parquet")
""",
}
PRELUDES["recorder"] = PRELUDES["loop"] + PRELUDES["recorder"]
EPILOGUES = {"recorder": "rec.close()"}  # run after the block, in its namespace


# ------------------------------------------------------------------------- the blocks
@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    marker: str | None  # the text of a docs-test comment right above the fence

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    def directive(self) -> tuple[str, str]:
        """``("run" | "skip" | "pending" | "setup", reason or prelude name)``."""
        if self.marker is None:
            return "run", ""
        m = MARKER_BODY.fullmatch(self.marker)
        if m is None:
            pytest.fail(
                f"{self.id}: bad marker {self.marker!r}; use 'skip (reason)', "
                "'pending (reason)' or 'setup NAME'"
            )
        if m["setup"]:
            if m["setup"] not in PRELUDES:
                pytest.fail(f"{self.id}: no prelude {m['setup']!r}; known: {sorted(PRELUDES)}")
            return "setup", m["setup"]
        if not m["reason"].strip():
            pytest.fail(f"{self.id}: {m['kind']} needs a reason")
        return m["kind"], m["reason"].strip()


def _blocks(doc: Path) -> list[Block]:
    text = doc.read_text("utf-8")
    out = []
    for m in FENCE.finditer(text):
        lang = m["lang"].lower()
        if lang not in PYTHON | SHELL | SQL:
            continue  # text, signatures, TOML examples: not code to run
        before = text[: m.start()].rstrip("\n").splitlines()
        prev = before[-1].strip() if before else ""
        marker = MARKER.fullmatch(prev)
        indent = len(m["indent"])
        code = "\n".join(ln[indent:] for ln in m["code"].splitlines())
        line = text.count("\n", 0, m.start()) + 1
        out.append(Block(doc, line, lang, code, marker["body"] if marker else None))
    return out


BLOCKS = [b for doc in DOCS for b in _blocks(doc)]


def _commands(code: str) -> list[tuple[dict[str, str], list[str]]]:
    """The simple commands of a shell block, ``(env prefix, argv)``: comments dropped,
    continuation lines joined, split at ``&&``, ``||`` and ``;``."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        cmd: list[str] = []
        for w in [*lex, "&&"]:
            if w in ("&&", ";", "||"):
                env = {}
                while cmd and re.fullmatch(r"[A-Za-z_]\w*=.*", cmd[0]):
                    k, v = cmd.pop(0).split("=", 1)
                    env[k] = v
                if cmd:
                    out.append((env, cmd))
                cmd = []
            else:
                cmd.append(w)
    return out


def _is_adaptive(prog: str) -> bool:
    return Path(prog).name == "adaptive"


def _is_setup(argv: list[str]) -> bool:
    head = [Path(argv[0]).name, *argv[1:]]
    return any(tuple(head[: len(s)]) == s for s in SETUP) or head[:3] == ["python3", "-m", "pip"]


def _parse_cli(args: list[str]) -> None:
    """Parse ``adaptive ARGS`` with the real command line (options, types, required values)
    without running it; raises on a bad command or option."""
    cmd = typer.main.get_command(app)
    ctx, name = None, "adaptive"
    while True:
        ctx = cmd.make_context(name, list(args), parent=ctx)
        if not hasattr(cmd, "resolve_command"):
            return
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        assert rest, f"adaptive {' '.join(args)}: no command"
        name, cmd, args = cmd.resolve_command(ctx, rest)
        assert cmd is not None, f"unknown command {rest[0]!r}"


def _check_syntax(block: Block) -> None:
    if block.lang in PYTHON:
        ast.parse(block.code, filename=block.id)
    elif block.lang in SHELL:
        res = subprocess.run(["bash", "-n"], input=block.code, text=True, capture_output=True)
        assert res.returncode == 0, f"{block.id}: {res.stderr}"
        for _env, argv in _commands(block.code):
            if _is_adaptive(argv[0]):
                _parse_cli(argv[1:])


# ------------------------------------------------------------------ inputs the docs assume
def _tensorboard_log(path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(path))
    for s in range(60):
        w.add_scalar("train/loss_a", 2.0 / (1 + s / 20) + 0.01 * math.sin(s), s)
        w.add_scalar("train/loss_b", 5.0 / (1 + s / 40), s)
        w.add_scalar("epoch", s // 20, s)
        if s % 20 == 19:
            w.add_scalar("val_acc", s / 60, s + 1)
    w.close()


def _mlflow_db(path: Path) -> None:
    from tests.test_import import _mlflow_db as make

    make(path)  # run "bright-owl-42" logs loss_a, loss_b, val_acc


def _mlflow_files(path: Path) -> None:
    run = path / "0" / "0f9e1c..."  # the run id as INTEGRATION.md writes it
    (run / "metrics").mkdir(parents=True)
    (run / "meta.yaml").write_text(
        "artifact_uri: file:///x\nexperiment_id: '0'\nlifecycle_stage: active\n"
        "run_id: 0f9e1c...\nrun_name: calm-cat-7\nstatus: 3\n"
    )
    for key in ("train_fk", "train_rot", "epoch", "val_mpjpe"):
        rows = [
            f"{1_700_000_000_000 + s} {s // 10 if key == 'epoch' else 1.0 / (1 + s)} {s}"
            for s in range(40)
            if key != "val_mpjpe" or s % 10 == 9
        ]
        (run / "metrics" / key).write_text("\n".join(rows) + "\n")


def _wide_csv(path: Path) -> None:
    n = 60
    pd.DataFrame(
        {
            "_step": range(n),
            "train/loss_a": [2.0 / (1 + s / 20) for s in range(n)],
            "train/loss_b": [5.0 / (1 + s / 40) for s in range(n)],
            "epoch": [s // 20 for s in range(n)],
            "val/acc": [s / n if s % 20 == 19 else math.nan for s in range(n)],
        }
    ).to_csv(path, index=False)


def _long_csv(path: Path) -> None:
    rows = [
        (s, k, (2.0 if k == "loss_fk" else 5.0) / (1 + s / 50))
        for s in range(600)
        for k in ("loss_fk", "loss_rot")
    ]
    pd.DataFrame(rows, columns=["step", "key", "value"]).to_csv(path, index=False)


def _recommended(path: Path) -> None:
    # The quick run is too short for DWA to move its weights, so its sweep recommends
    # nothing; a full-size run's sweep writes a file like this one.
    from replay import recommended_toml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recommended_toml("dwa", {"temperature": 2.0, "adjustment_range": 0.2}))


# path (relative to the document's folder) -> how to make it; "runs/..." copy the tiny run
SEEDS: dict[str, Callable[[Path], None]] = {
    "runs/base/sweep-dwa/recommended.toml": _recommended,
    "runs/base": lambda p: None,
    "runs/demo": lambda p: None,
    "lightning_logs/version_0": _tensorboard_log,
    "mlflow.db": _mlflow_db,
    "mlruns": _mlflow_files,
    "wandb_history.csv": _wide_csv,
    "metrics_long.csv": _long_csv,
}
TINY_RUN = ("train", "--out", "runs", "--name", "base")  # the shared run, as documented


# ---------------------------------------------------------------------------- running
@dataclass
class Session:
    """Trained runs shared by every document (a train command trains once)."""

    cache: Path
    runs: dict[tuple[str, ...], Path] = field(default_factory=dict)


@dataclass
class DocRun:
    """One document's blocks, run in order in one folder; results kept per block."""

    doc: Path
    folder: Path
    session: Session
    results: dict[int, str | None] = field(default_factory=dict)  # line -> error or None

    def result(self, block: Block) -> str | None:
        for b in (b for b in BLOCKS if b.doc == self.doc):
            if b.line not in self.results:
                kind, arg = b.directive()
                if kind != "skip":
                    setup = arg if kind == "setup" else ""
                    self.results[b.line] = self._run(
                        b, PRELUDES.get(setup, ""), EPILOGUES.get(setup, "")
                    )
            if b == block:
                return self.results[b.line]
        raise AssertionError(block.id)

    def _run(self, block: Block, prelude: str, epilogue: str) -> str | None:
        cwd = os.getcwd()
        os.chdir(self.folder)
        try:
            if block.lang in SHELL:
                return self._shell(block)
            self._seed(prelude + block.code)
            if block.lang in SQL:
                import duckdb

                duckdb.sql(block.code).fetchall()
                return None
            ns: dict = {"__name__": "__docs__"}
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(prelude, "<prelude>", "exec"), ns)
                exec(compile(block.code, block.id, "exec"), ns)
                exec(compile(epilogue, "<epilogue>", "exec"), ns)
            return None
        except Exception:
            return traceback.format_exc(limit=-8)
        finally:
            os.chdir(cwd)

    def _shell(self, block: Block) -> str | None:
        commands = _commands(block.code)
        ran = 0
        for env, argv in commands:
            if _is_setup(argv):
                continue  # this suite runs in the installed environment
            if not _is_adaptive(argv[0]):
                return (
                    f"runs {argv[0]!r}: mark the block '<!-- docs-test: skip (reason) -->' "
                    "or teach tests/test_docs.py to run it"
                )
            err = self._adaptive(env, argv[1:])
            if err:
                return f"$ {shlex.join(argv)}\n{err}"
            ran += 1
        if not ran:
            return "runs nothing here (only environment setup): mark it skip with the reason"
        return None

    def _seed(self, text: str) -> None:
        for rel, make in SEEDS.items():
            path = self.folder / rel
            if rel in text and not path.exists():
                if rel.startswith("runs/") and rel.count("/") == 1:
                    shutil.copytree(self.session.runs[TINY_RUN], path)
                else:
                    make(path)

    def _adaptive(self, env: dict[str, str], args: list[str]) -> str | None:
        self._seed(" ".join(args))
        quick = QUICK.get(args[0], lambda a: a)(list(args))
        key = tuple(args)
        target = self._run_folder(args)
        if args[0] == "train" and key in self.session.runs and target and not target.exists():
            shutil.copytree(self.session.runs[key], target)
            return None
        res = CliRunner().invoke(app, quick, env=env)
        if res.exit_code != 0:
            tb = "".join(traceback.format_exception(res.exception)) if res.exception else ""
            return f"exit code {res.exit_code}\n{res.output[-3000:]}\n{tb[-3000:]}"
        if args[0] == "train" and target is not None and "--config" not in args:
            keep = self.session.cache / f"run{len(self.session.runs)}"
            shutil.copytree(target, keep)
            self.session.runs[key] = keep
        return None

    @staticmethod
    def _run_folder(args: list[str]) -> Path | None:
        """The folder `adaptive train --out O --name N` writes (None without --name)."""
        opts = dict(pairwise(args))
        if "--name" not in opts:
            return None
        return Path(opts.get("--out", "runs")) / opts["--name"]


@pytest.fixture(scope="session")
def doc_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, DocRun]:
    root = tmp_path_factory.mktemp("docs")
    session = Session(root / "cache")
    runs = {doc: DocRun(doc, root / doc.stem, session) for doc in DOCS}
    for r in runs.values():
        r.folder.mkdir()
    # the one tiny trained run every document shares (its blocks' `train --name base`)
    first = runs[DOCS[0]]
    first.folder.joinpath("_shared").mkdir()
    cwd = os.getcwd()
    os.chdir(first.folder / "_shared")
    try:
        err = first._adaptive({}, list(TINY_RUN))
    finally:
        os.chdir(cwd)
    assert err is None, err
    return runs


# ------------------------------------------------------------------------------ tests
def test_docs_have_blocks() -> None:
    langs = {b.lang for b in BLOCKS}
    assert {"python", "bash"} <= langs and len(BLOCKS) >= 30
    readme = [b for b in BLOCKS if b.doc.name == "README.md"]
    assert any("TraceWriter" in b.code for b in readme)
    assert any("adaptive train" in b.code for b in readme)


def test_every_marker_sits_above_a_block() -> None:
    for doc in DOCS:
        text = doc.read_text("utf-8")
        attached = {b.marker for b in BLOCKS if b.doc == doc and b.marker is not None}
        for m in MARKER.finditer(text):
            after = text[m.end() :].lstrip(" \n")
            assert after.startswith("```"), f"{doc.name}: marker {m[0]!r} is not above a block"
            assert m["body"] in attached, f"{doc.name}: marker {m[0]!r} is above a non-code block"


def test_shell_commands_are_split_like_bash() -> None:
    code = "A=1 B=2 prog x 'y z' && other  # note\nlong \\\n  --flag v; last"
    assert _commands(code) == [
        ({"A": "1", "B": "2"}, ["prog", "x", "y z"]),
        ({}, ["other"]),
        ({}, ["long", "--flag", "v"]),
        ({}, ["last"]),
    ]
    assert _is_setup(["python3", "-m", "venv", ".venv"]) and _is_setup([".venv/bin/pip", "i"])
    assert not _is_setup([".venv/bin/python", "-m", "pytest"])
    with pytest.raises(Exception, match="No such option"):
        _parse_cli(["replay", "t.parquet", "--no-such-option"])
    with pytest.raises(Exception, match="No such option"):
        _parse_cli(["import", "csv", "x.csv", "--no-such-option"])
    _parse_cli(["import", "csv", "x.csv", "-c", "a=b"])


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_block(block: Block, doc_runs: dict[Path, DocRun]) -> None:
    kind, arg = block.directive()
    if kind == "pending":
        try:
            _check_syntax(block)
        except Exception as exc:
            pytest.xfail(f"{arg}\n{exc}")
    else:
        _check_syntax(block)
    if kind == "skip":
        pytest.skip(arg)
    err = doc_runs[block.doc].result(block)
    if kind == "pending":
        if err is None:
            pytest.fail(f"{block.id} runs now: remove its 'docs-test: pending' marker")
        pytest.xfail(f"{arg}\n{err}")
    assert err is None, f"{block.id} failed:\n{block.code}\n{err}"
