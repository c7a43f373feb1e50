"""Layering: each library module imports on its own (no import cycles), and the library
never imports the CLI or its toolkit (typer, rich)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import importlib, json, pkgutil, sys
import torch, pandas, pyarrow  # heavy third-party modules stay loaded between imports

names = []
for pkg in ("adaptive", "replay"):
    mod = importlib.import_module(pkg)
    names.append(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        if info.name.startswith("adaptive.integrations"):
            continue  # optional extras (lightning)
        if info.name in ("adaptive._cli", "adaptive._cli_app") or info.name.endswith("__main__"):
            continue  # the console-script entry points: the CLI's, not the library's
        names.append(info.name)
failures = {}
for name in names:
    for key in [k for k in sys.modules if k.split(".")[0] in ("adaptive", "replay", "cli")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception as exc:  # an import cycle shows up as ImportError / AttributeError
        failures[name] = f"{type(exc).__name__}: {exc}"
leaked = sorted(m for m in ("typer", "rich", "cli", "click") if m in sys.modules)
print(json.dumps({"modules": len(names), "failures": failures, "leaked": leaked}))
"""


def test_each_module_imports_alone_and_the_library_never_imports_the_cli() -> None:
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["modules"] > 30
    assert out["failures"] == {}
    assert out["leaked"] == []  # typer, rich and the CLI are the Typer app's alone
