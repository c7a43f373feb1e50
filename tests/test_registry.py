"""Every built-in loss weighting method, checked against the registry and everything that
reads it: the registered name and class, the config section in default.toml, the row in
docs/ADAPTIVE_LOSS.md's table, the `--param` names, and the CLI's method list."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import adaptive.weighting as weighting
from adaptive.weighting import AdaptiveLossWeighting, available_methods, method_class
from cli import app
from replay import ReplayError, parse_params

ROOT = Path(__file__).resolve().parents[1]
# Spelled out, so that a method that silently stops registering fails here.
BUILTIN = (
    "dwa",
    "famo",
    "gradnorm",
    "imtl_l",
    "lbtw",
    "logloss",
    "rlw",
    "softadapt",
    "uncertainty",
)


def _keyword_defaults(method: str) -> dict:
    sig = inspect.signature(method_class(method).__init__)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _table_rows() -> dict[str, list[str]]:
    """docs/ADAPTIVE_LOSS.md's methods table: name -> its cells."""
    text = (ROOT / "docs" / "ADAPTIVE_LOSS.md").read_text("utf-8")
    section = text.split("### The methods", 1)[1].lstrip("\n").splitlines()
    start = next(i for i, line in enumerate(section) if line.startswith("|"))
    rows = {}
    for line in section[start + 2 :]:  # after the header and its rule
        if not line.startswith("|"):
            break  # the table ends
        m = re.match(r"\| `(\w+)` \|(.*)\|\s*$", line)
        assert m, line
        rows[m[1]] = [c.strip() for c in m[2].split("|")]
    return rows


def test_the_builtin_methods_are_exactly_the_registered_library_ones() -> None:
    # tests may register toy methods of their own; those live outside adaptive.weighting
    library = {
        m
        for m in available_methods()
        if method_class(m).__module__.startswith("adaptive.weighting.")
    }
    assert library == set(BUILTIN)
    assert set(_table_rows()) == set(BUILTIN)  # no row for a method that is not registered


@pytest.mark.parametrize("method", BUILTIN)
def test_registered_class(method: str) -> None:
    cls = method_class(method)
    assert cls.name == method
    assert issubclass(cls, weighting.WeightingMethod)
    assert getattr(weighting, cls.__name__) is cls  # exported by adaptive.weighting
    assert all(e in weighting.EXTRAS for e in cls.requires)
    ctrl = AdaptiveLossWeighting(["a", "b"], method=method, **cls.example_params)
    assert ctrl.requires == tuple(cls.requires)


@pytest.mark.parametrize("method", BUILTIN)
def test_config_section_in_default_toml(method: str) -> None:
    raw = tomllib.loads((ROOT / "adaptive" / "train" / "default.toml").read_text("utf-8"))
    section = raw["adaptive"][method]
    defaults = _keyword_defaults(method)
    assert set(section) == set(defaults)
    for k, v in section.items():
        assert v == ("" if defaults[k] is None else defaults[k]), (method, k)


@pytest.mark.parametrize("method", BUILTIN)
def test_row_in_the_methods_table(method: str) -> None:
    cells = _table_rows()[method]
    inputs = cells[1]
    assert "losses" in inputs
    for extra in method_class(method).requires:  # the inputs column names every extra
        assert f"`{extra}`" in inputs or extra in inputs, (method, extra, inputs)


@pytest.mark.parametrize("method", BUILTIN)
def test_param_names_are_the_constructor_parameters(method: str) -> None:
    defaults = _keyword_defaults(method)
    assert defaults, method
    texts = []
    for name, value in defaults.items():
        if value is None:
            continue  # no type to check against: the constructor takes it
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        texts.append(f"{name}={shown}")
    parsed = parse_params([method], [*texts, "adjustment_range=0.2"])[method]
    assert parsed == {
        **{k: v for k, v in defaults.items() if v is not None},
        "adjustment_range": 0.2,
    }
    with pytest.raises(ReplayError) as info:
        parse_params([method], ["no_such_parameter=1"])
    message = str(info.value)
    assert "\n" not in message and "no_such_parameter" in message
    assert all(name in message for name in defaults)  # it lists the valid ones


def test_cli_help_lists_every_method() -> None:
    runner = CliRunner()
    for command in ("replay", "compare", "sweep", "train"):
        res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"})
        assert res.exit_code == 0, res.output
        text = " ".join(res.output.split())
        missing = [m for m in BUILTIN if not re.search(rf"\b{m}\b", text)]
        assert not missing, (command, missing)
