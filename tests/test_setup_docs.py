"""The README's set-up: the first command is safe on a machine without a GPU (it installs
the CPU build of torch before the package, so pip does not pull the CUDA build), and
`.ci/run` runs exactly the README's test command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)


def _pip_installs(line: str) -> list[list[str]]:
    """The `pip install` commands of a `&&` chain, as argv after `install`."""
    out = []
    for part in line.split("&&"):
        argv = shlex.split(part)
        if len(argv) > 2 and argv[0].endswith("pip") and argv[1] == "install":
            out.append(argv[2:])
    return out


def _torch_spec(args: list[str]) -> str:
    return next(a for a in args if a.startswith("torch"))


def test_first_setup_command_installs_the_cpu_build_of_torch_first() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    setup = readme[readme.index("## Set up and run") :]
    first = _bash_blocks(setup)[0].strip()
    installs = _pip_installs(first)
    assert len(installs) >= 2, first
    cpu, package = installs[0], installs[1]
    assert cpu[cpu.index("--index-url") + 1] == CPU_INDEX
    # the same torch versions the package accepts, so `pip install -e .` keeps this build
    pyproject = (ROOT / "pyproject.toml").read_text("utf-8")
    accepted = re.search(r'"(torch[^"]*)"', pyproject).group(1).replace(" ", "")
    assert _torch_spec(cpu).replace(" ", "") == accepted
    assert "-e" in package and "." in package
    assert first.endswith("adaptive demo")


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    test_cmd = next(b.strip() for b in _bash_blocks(readme) if "-m pytest" in b)
    ci = (ROOT / ".ci" / "run").read_text("utf-8").splitlines()
    assert test_cmd in ci
    installs = _pip_installs(test_cmd)
    assert installs[0][installs[0].index("--index-url") + 1] == CPU_INDEX
