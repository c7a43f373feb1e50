"""Fast help: the static name tables agree with the live registries, and no command's
`--help` imports torch (or pandas, pyarrow); the timing is in benchmarks/bench_cli.py."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from adaptive.names import LIVE, REGISTERED

ROOT = Path(__file__).resolve().parent.parent


def test_static_name_tables_agree_with_the_live_registries() -> None:
    assert set(REGISTERED) == set(LIVE)
    for kind, (module, function) in LIVE.items():
        live = tuple(getattr(importlib.import_module(module), function)())
        # registered at import of the package (tests may add toys later: compare the
        # names the package itself registers, which are all the static table may hold)
        assert set(REGISTERED[kind]) <= set(live), kind
        shipped = {n for n in live if not n.startswith(("toy", "my_", "_"))}
        assert set(REGISTERED[kind]) == shipped, (kind, sorted(shipped))
        assert list(REGISTERED[kind]) == sorted(REGISTERED[kind])


def test_no_help_imports_torch() -> None:
    commands = [
        [], ["inspect"], ["compact"], ["replay"], ["train"], ["compare"], ["sweep"],
        ["trial"], ["demo"], ["import"], ["import", "tensorboard"], ["import", "mlflow"],
        ["import", "csv"],
    ]  # fmt: skip
    code = (
        "import sys\n"
        "from cli import app\n"
        f"for args in {commands!r}:\n"
        "    try:\n"
        "        app([*args, '--help'], prog_name='adaptive')\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (args, e.code)\n"
        "heavy = [m for m in ('torch', 'pandas', 'pyarrow', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out, out[-500:]
    # and the method list is filled in from the static table
    assert "dwa, famo, gradnorm" in " ".join(out.split())


def test_help_examples_are_printed_whole() -> None:
    import shlex

    import typer
    from typer.testing import CliRunner

    from cli import app

    group = typer.main.get_command(app)
    checked = 0
    for name, cmd in group.commands.items():
        doc = cmd.callback.__doc__ or ""
        examples = [ln.strip() for ln in doc.splitlines() if ln.strip().startswith("adaptive ")]
        out = CliRunner().invoke(app, [name, "--help"]).output
        for ex in examples:
            assert ex in out.splitlines()[0] or any(ln.strip() == ex for ln in out.splitlines())
            shlex.split(ex)  # and it is valid shell
            checked += 1
    assert checked >= 10


def test_the_cli_stays_thin() -> None:
    """cli.py declares options and prints; what a command does lives in adaptive.cli_support
    and the libraries. Its bound is 700 lines."""
    lines = len((ROOT / "cli.py").read_text("utf-8").splitlines())
    assert lines <= 700, f"cli.py has {lines} lines (bound 700): move logic out of it"


def test_the_console_script_keeps_status_output_and_atexit(tmp_path: Path) -> None:
    """`adaptive` leaves with `os._exit` after a command (no interpreter teardown): its
    status, whatever it printed to stdout and stderr, and the `atexit` handlers a command
    registered all still come through."""
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, pathlib, sys\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "from adaptive._cli import main\n"
        "sys.argv = ['adaptive', *sys.argv[1:]]\n"
        "main()\n"
        "raise AssertionError('main() returned')\n"
    )
    ok = subprocess.run(
        [sys.executable, "-c", code, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "Usage" in ok.stdout and marker.read_text() == "yes"
    marker.unlink()
    bad = subprocess.run(
        [sys.executable, "-c", code, "inspect", str(tmp_path / "missing.parquet")],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2, (bad.stdout, bad.stderr)
    assert "missing.parquet" in bad.stderr and "Traceback" not in bad.stderr
    assert marker.read_text() == "yes"
