"""Every code block in README.md runs as written.

Python blocks are executed in a fresh interpreter (in a temporary folder). Shell blocks are
checked by `bash -n`; every `adaptive ...` command in them is parsed by the real command
line (options, types and required values, without running it) and its `--help` works; every
other command names a program this environment has.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README.read_text("utf-8"), re.S | re.M)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang in ("bash", "sh", "shell", "console")]
# programs the shell blocks may call besides `adaptive`, and where this venv has them
PROGRAMS = {
    "python3": sys.executable,
    "pip": "pip",
    "python": sys.executable,
    "source": None,
    "jupyter": str(Path(sys.executable).with_name("jupyter")),
}


def _commands(block: str) -> list[list[str]]:
    """The simple commands of a shell block: comments dropped, split at && and ;."""
    out = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        cmd: list[str] = []
        for w in [*words, "&&"]:
            if w in ("&&", ";", "||"):
                if cmd:
                    out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
    return out


def test_readme_has_blocks() -> None:
    assert PYTHON and SHELL
    text = README.read_text("utf-8")
    assert "TraceWriter" in text and "AdaptiveScheduler" in text and "--quick" in text


@pytest.mark.parametrize("code", PYTHON, ids=lambda c: c.splitlines()[0][:40])
def test_python_block_runs(code: str, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("block", SHELL, ids=lambda c: c.splitlines()[0][:40])
def test_shell_block_parses(block: str) -> None:
    assert subprocess.run(["bash", "-n"], input=block, text=True).returncode == 0
    group = typer.main.get_command(app)
    runner = CliRunner()
    for cmd in _commands(block):
        while cmd and re.fullmatch(r"[A-Z_]+=.*", cmd[0]):  # VAR=value prefixes
            cmd = cmd[1:]
        prog = Path(cmd[0]).name
        if prog == "adaptive":
            args = cmd[1:]
            assert args, cmd
            ctx = group.make_context("adaptive", list(args))
            sub = group.get_command(ctx, args[0])
            assert sub is not None, f"unknown command in README: {cmd}"
            sub.make_context(args[0], list(args[1:]), parent=ctx)  # raises on a bad option
            res = runner.invoke(app, [args[0], "--help"])
            assert res.exit_code == 0, res.output
        else:
            assert prog in PROGRAMS, f"README calls {prog!r}; add it to PROGRAMS if intended"
            exe = PROGRAMS[prog]
            assert exe is None or shutil.which(exe) or Path(exe).exists(), prog
            if prog == "jupyter":  # the subcommand must exist (nbconvert: the dev extra)
                proc = subprocess.run([exe, cmd[1], "--help"], capture_output=True, text=True)
                assert proc.returncode == 0, proc.stderr[-500:]
