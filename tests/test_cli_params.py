"""CLI consistency: method hyperparameters only through `--param` (names and types from the
registry, one parser and error style in every command), `train --adaptive-param`, help with
one spelling per option and the registered methods, `replay_runs` as the library behind
`adaptive replay`, and figure titles from the method class."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from adaptive.trace import read_trace
from adaptive.weighting import _base as weighting_base
from adaptive.weighting import available_methods, method_class, register_method
from cli import METHODS, app
from replay import ReplayError, method_title, parse_params, replay, replay_runs
from tests.test_analysis import synthetic
from tests.test_train import TINY
from tests.test_weighting import _ToyFollowLoss

runner = CliRunner()
TOY = "toy_follow_loss"


@pytest.fixture
def toy() -> Iterator[str]:
    register_method(TOY)(_ToyFollowLoss)
    try:
        yield TOY
    finally:
        weighting_base._REGISTRY.pop(TOY, None)


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory.mktemp("t") / "run" / "trace.parquet", steps=200)


def one_line_error(res, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and res.output.startswith("error: "), res.output
    for n in needles:
        assert n in res.output, (n, res.output)


# ----------------------------------------------------------------------- 1. replay --param


def test_replay_takes_method_parameters_only_through_param(
    trace_path: Path, tmp_path: Path
) -> None:
    for dropped in (
        ["--temperature", "2"],
        ["--lr", "0.1"],
        ["--s-min", "-5"],
        ["--update-interval", "10"],
        ["--no-use-epoch-metrics"],
        ["--free-metric", "MPJPE"],
    ):
        res = runner.invoke(app, ["replay", str(trace_path), "-m", "dwa", "-q", *dropped])
        assert res.exit_code == 2 and "No such option" in res.output, dropped
    out = tmp_path / "o"
    args = ["replay", str(trace_path), "-m", "dwa", "-q", "-o", str(out)]
    res = runner.invoke(app, [*args, "-p", "temperature=0.25", "--adjustment-range", "0.2"])
    assert res.exit_code == 0, res.output
    stem = "replay-dwa-adjustment_range=0.2-temperature=0.25"  # named by the values given
    written = pd.read_parquet(out / f"{stem}.parquet")
    tr = read_trace(trace_path)
    want = replay(tr, "dwa", temperature=0.25, adjustment_range=0.2).frame
    default = replay(tr, "dwa").frame
    cols = [c for c in want.columns if c.startswith("proposed/weight/")]
    assert (written[cols].to_numpy() == want[cols].to_numpy()).all()
    assert not (written[cols].to_numpy() == default[cols].to_numpy()).all()  # it did matter
    # adjustment_range may come through --param too, but not twice
    res = runner.invoke(app, [*args, "-p", "adjustment_range=0.2", "-p", "temperature=0.25"])
    assert res.exit_code == 0, res.output
    assert (pd.read_parquet(out / f"{stem}.parquet")[cols] == written[cols]).all().all()
    res = runner.invoke(app, [*args, "-p", "adjustment_range=0.2", "--adjustment-range", "0.1"])
    one_line_error(res, "adjustment_range given both as --adjustment-range and --param")
    # the scheduler's parameters are its constructor's
    res = runner.invoke(
        app, ["replay", str(trace_path), "-m", "scheduler", "-q", "-p", "free_metric=MPJPE"]
    )
    one_line_error(res, "'MPJPE' is not in the trace's valfree rows")


@pytest.mark.parametrize("method", ["dwa", "uncertainty", "scheduler"])
def test_an_unknown_parameter_is_refused_naming_the_valid_ones(
    trace_path: Path, tmp_path: Path, method: str
) -> None:
    from replay import method_parameters

    out = tmp_path / "never"
    res = runner.invoke(
        app, ["replay", str(trace_path), "-m", method, "-p", "tempreture=1", "-o", str(out)]
    )
    valid = ", ".join(["adjustment_range", *method_parameters(method)])
    one_line_error(res, f"'tempreture' is not a parameter of {method!r}; valid: {valid}")
    assert not out.exists()  # refused before anything was written


def test_param_values_are_typed_by_the_method_defaults() -> None:
    assert parse_params(["dwa"], ["temperature=2"]) == {"dwa": {"temperature": 2.0}}
    got = parse_params(["scheduler"], ["update_interval=7", "use_epoch_metrics=false"])
    assert got == {"scheduler": {"update_interval": 7, "use_epoch_metrics": False}}
    assert parse_params(["uncertainty"], ["anchor=none"]) == {"uncertainty": {"anchor": "none"}}
    with pytest.raises(ReplayError, match=r"--param temperature: value 'hot' is not a number"):
        parse_params(["dwa"], ["temperature=hot"])
    with pytest.raises(ReplayError, match=r"update_interval: value '2\.5' is not an integer"):
        parse_params(["scheduler"], ["update_interval=2.5"])
    with pytest.raises(ReplayError, match="expects name=value, got 'temperature'"):
        parse_params(["dwa"], ["temperature"])
    with pytest.raises(ReplayError, match=r"dwa\.temperature given twice"):
        parse_params(["dwa"], ["temperature=1", "dwa.temperature=2"])
    with pytest.raises(ReplayError, match=r"with several methods write method\.name=value"):
        parse_params(["dwa", "uncertainty"], ["lr=1"])
    with pytest.raises(ReplayError, match="unknown method 'pcgrad'"):
        parse_params(["pcgrad"], [])


# ------------------------------------------------- 2. the same --param in compare and sweep


def test_compare_and_sweep_share_the_param_parser(trace_path: Path, tmp_path: Path) -> None:
    bad = "'tempreture' is not a parameter of 'dwa'; valid: adjustment_range, temperature"
    for args in (
        ["replay", str(trace_path), "-m", "dwa", "-p", "tempreture=1"],
        ["compare", str(trace_path), "-m", "dwa", "-p", "tempreture=1"],
        ["compare", str(trace_path), "-m", "dwa", "-m", "scheduler", "-p", "dwa.tempreture=1"],
        [
            "sweep",
            str(trace_path),
            "-m",
            "dwa",
            "-g",
            "adjustment_range=0.1,0.2",
            "-p",
            "tempreture=1",
        ],
    ):
        one_line_error(runner.invoke(app, args), f"--param {args[-1]!r}: {bad}")
    # with several methods a bare name is ambiguous
    res = runner.invoke(
        app, ["compare", str(trace_path), "-m", "dwa", "-m", "uncertainty", "-p", "lr=1"]
    )
    one_line_error(res, "with several methods write method.name=value")
    # the value reaches the replay: compare with one method takes a bare name
    outs = {}
    for t in ("0.25", "4"):
        out = tmp_path / f"c{t}"
        res = runner.invoke(
            app,
            [
                "compare",
                str(trace_path),
                "-m",
                "dwa",
                "-p",
                f"temperature={t}",
                "-q",
                "-o",
                str(out),
            ],
        )
        assert res.exit_code == 0, res.output
        outs[t] = pd.read_csv(out / "stability.csv", index_col=0)["dwa"]
    assert not outs["0.25"].equals(outs["4"])
    # sweep: a fixed --param is applied to every configuration of the grid
    res = runner.invoke(
        app,
        [
            "sweep",
            str(trace_path),
            "-m",
            "dwa",
            "-g",
            "adjustment_range=0.1,0.2",
            "-p",
            "temperature=0.25",
            "-q",
            "-o",
            str(tmp_path / "s"),
        ],
    )
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "s" / "sweep.csv")
    assert sorted(table["adjustment_range"]) == [0.1, 0.2]
    one = outs["0.25"]  # compare at temperature 0.25, range 0.3 (the default)
    assert one.loc["mean_abs_delta"] > 0
    res = runner.invoke(
        app,
        ["sweep", str(trace_path), "-m", "dwa", "-g", "temperature=1,2", "-p", "temperature=0.25"],
    )
    one_line_error(res, "temperature given both as --param and --grid")


# ------------------------------------------------------------- 3. train --adaptive-param


def train_args(tmp_path: Path, name: str, *extra: str) -> list[str]:
    args = ["train", "--out", str(tmp_path), "--name", name, "--epochs", "1", "-q", *extra]
    for s in TINY:
        args += ["--set", s]
    return args


def test_train_adaptive_param_is_checked_against_the_active_method(tmp_path: Path) -> None:
    res = runner.invoke(
        app, train_args(tmp_path, "x", "--adaptive-loss", "dwa", "--adaptive-param", "lr=1")
    )
    one_line_error(
        res, "--adaptive-param 'lr=1': 'lr' is not a parameter of 'dwa'; valid: temperature"
    )
    # the active method may come from --set (or a config file) as well
    res = runner.invoke(
        app,
        train_args(
            tmp_path,
            "x",
            "--set",
            "adaptive.loss='uncertainty'",
            "--adaptive-param",
            "temperature=1",
        ),
    )
    one_line_error(res, "not a parameter of 'uncertainty'; valid: lr, s_min")
    res = runner.invoke(app, train_args(tmp_path, "x", "--adaptive-param", "temperature=1"))
    one_line_error(res, "choose a method first (--adaptive-loss)")
    res = runner.invoke(
        app,
        train_args(tmp_path, "x", "--adaptive-loss", "dwa", "--adaptive-param", "temperature=warm"),
    )
    one_line_error(res, "--adaptive-param temperature: value 'warm' is not a number")
    assert not (tmp_path / "x").exists()


def test_train_adaptive_param_sets_the_method_section_of_a_registered_toy(
    tmp_path: Path, toy: str
) -> None:
    res = runner.invoke(
        app,
        train_args(
            tmp_path,
            "toy",
            "--adaptive_loss",
            toy,
            "--adaptive_param",
            "momentum=0.25",
            "--adaptive-dry-run",
        ),
    )
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads((tmp_path / "toy" / "config.toml").read_text())
    assert cfg["adaptive"]["loss"] == toy
    assert cfg["adaptive"][toy] == {"momentum": 0.25}
    # the live controller ran with it: replaying the recorded trace with the recorded
    # parameter reproduces the proposals the run recorded
    tr = read_trace(tmp_path / "toy" / "trace.parquet")
    got = replay(tr, toy, momentum=0.25).frame
    comps = tr.components
    recorded = tr.steps[[f"proposed/weight/{c}" for c in comps]].to_numpy()
    proposed = got[[f"proposed/weight/{c}" for c in comps]].to_numpy()
    assert abs(recorded - proposed).max() < 1e-5 * abs(recorded).max()
    other = replay(tr, toy, momentum=0.9).frame[[f"proposed/weight/{c}" for c in comps]]
    assert abs(recorded - other.to_numpy()).max() > 1e-4  # the parameter mattered


# ----------------------------------------------------------------------------- 4. help


def commands(group=None, prefix=()):  # type: ignore[no-untyped-def]
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_help_shows_one_spelling_per_option_and_the_registered_methods(toy: str) -> None:
    seen = 0
    for path, cmd in commands():
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert METHODS not in res.output
        for param in cmd.params:
            for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
                if opt.startswith("--") and "_" in opt:
                    seen += 1
                    assert opt not in res.output, (path, opt)
                    if not getattr(param, "hidden", False):
                        assert opt.replace("_", "-") in res.output, (path, opt)
        if path in (("replay",), ("train",), ("compare",), ("sweep",)):
            listed = " ".join(res.output.split())  # undo the help's line wrapping
            assert ", ".join(available_methods()) in listed, path
            assert toy in listed
    assert seen >= 12  # the train flags' aliases were checked


def sample(param) -> list[str]:  # type: ignore[no-untyped-def]
    """A value for an option on the command line (none for a flag)."""
    if param.is_flag:
        return []
    return {"int": ["7"], "float": ["0.25"]}.get(param.bare_type(), ["temperature=1"])


def test_every_adaptive_train_flag_has_an_underscore_alias_that_parses_alike() -> None:
    train = typer.main.get_command(app).commands["train"]
    checked = []
    for param in train.params:
        for opts, flag_value in ((param.opts, True), (param.secondary_opts, False)):
            hyphen = [o for o in opts if o.startswith(("--adaptive-", "--no-adaptive-"))]
            for opt in hyphen:
                alias = opt.replace("-", "_").replace("__", "--", 1)
                assert alias in opts, (opt, opts)
                args = sample(param)
                a = train.make_context("train", [opt, *args]).params[param.name]
                b = train.make_context("train", [alias, *args]).params[param.name]
                assert a == b and a is not None and a != param.default, (opt, a, b)
                if param.is_flag:
                    assert a is flag_value
                checked.append(opt)
    assert "--adaptive-param" in checked and "--no-adaptive-use-epoch-metrics" in checked
    assert len(checked) >= 11


def test_a_registered_toy_method_is_accepted_by_param(
    toy: str, trace_path: Path, tmp_path: Path
) -> None:
    res = runner.invoke(
        app, ["replay", str(trace_path), "-m", toy, "-p", "momentum=0.5", "-q", "-o", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    written = pd.read_parquet(tmp_path / f"replay-{toy}-momentum=0.5.parquet")
    want = replay(read_trace(trace_path), toy, momentum=0.5).frame
    cols = [c for c in want.columns if c.startswith("proposed/weight/")]
    assert (written[cols].to_numpy() == want[cols].to_numpy()).all()
    res = runner.invoke(app, ["replay", str(trace_path), "-m", toy, "-p", "temperature=1"])
    one_line_error(res, f"not a parameter of {toy!r}; valid: adjustment_range, momentum")
    # and `adaptive sweep` takes it with its parameters as the grid
    out = tmp_path / "sweep"
    res = runner.invoke(
        app, ["sweep", str(trace_path), "-m", toy, "-g", "momentum=0,0.5,0.9", "-q", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "sweep.csv")
    assert sorted(table["momentum"]) == [0.0, 0.5, 0.9]


# -------------------------------------------------------------- 6. replay_runs (library)


def test_replay_runs_writes_per_run_outputs_and_a_pooled_summary(tmp_path: Path) -> None:
    from replay import load_runs

    for i in range(2):
        synthetic(tmp_path / "runs" / f"r{i}" / "trace.parquet", seed=i, run_id=f"r{i}", steps=150)
    runs = load_runs(tmp_path / "runs")
    res = replay_runs(runs, "dwa", tmp_path / "out", params={"temperature": 0.5}, fmt="svg")
    assert sorted(res.results) == ["r0", "r1"]
    names = ["replay-dwa-temperature=0.5.parquet", "replay-dwa-temperature=0.5.svg"]
    fleet = ["replay-dwa-temperature=0.5-fleet.parquet", "replay-dwa-temperature=0.5-fleet.csv"]
    assert [p.name for p in res.files] == names * 2 + fleet  # then the table across runs
    assert all(p.is_file() and p.parent.name in ("r0", "r1") for p in res.files[:4])
    assert all(p.is_file() and p.parent == tmp_path / "out" for p in res.files[4:])
    assert list(res.table["run"]) == ["r0", "r1"] and res.table["error"].isna().all()
    assert res.results["r0"].params["temperature"] == 0.5
    mean = (res.summaries["r0"] + res.summaries["r1"]) / 2
    pd.testing.assert_frame_equal(res.pooled, mean)
    text = res.text()
    assert "== run r0" in text and "== pooled over 2 runs (mean)" in text
    # the CLI prints exactly this report
    cli = runner.invoke(
        app,
        [
            "replay",
            str(tmp_path / "runs"),
            "-m",
            "dwa",
            "-p",
            "temperature=0.5",
            "--format",
            "svg",
            "-q",
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert cli.exit_code == 0 and cli.output.strip() == text.strip()
    # a refused method writes nothing
    with pytest.raises(ReplayError):
        replay_runs(
            {"x": read_trace(synthetic(tmp_path / "ns.parquet", schedule=False, steps=60))},
            "scheduler",
            tmp_path / "none",
        )
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="--format must be png, svg, pdf, got 'gif'"):
        replay_runs(runs, "dwa", tmp_path / "none", fmt="gif")


# -------------------------------------------------------------------- 7. figure titles


def test_figure_titles_come_from_the_method_class(toy: str) -> None:
    assert method_title("dwa") == "Dynamic Weight Averaging (dwa)"
    assert method_title("scheduler") == "adaptive scheduler"
    assert method_title(toy) == f"Toy method for the registry test ({toy})"
    for m in available_methods():
        assert method_title(m).endswith(m) or method_title(m).endswith(f"({m})")
        assert method_class(m).name in method_title(m)
