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


def _import_graph() -> dict[str, set[str]]:
    """Module -> the library modules it imports anywhere (function-level imports too),
    leaving out package `__init__` re-exports (a package importing its own parts)."""
    import ast

    mods: dict[str, Path] = {}
    for pkg in ("adaptive", "replay"):
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in mods and t != name and t not in packages}
    return graph


def test_no_import_cycles_even_through_deferred_imports() -> None:
    """An import inside a function still ties two modules together: the replay engine and
    the per-controller replays share types through replay._common, not through each other."""
    graph = _import_graph()
    assert {"replay._engine", "replay._common", "replay._weighting_replay"} <= graph.keys()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append([*stack[stack.index(v) :], v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []
