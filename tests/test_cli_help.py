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
