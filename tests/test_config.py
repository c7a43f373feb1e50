"""Config pipeline and stage schedule; the docs list every config key."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import pytest

from adaptive.train.config import (
    ConfigError,
    default_config,
    dumps_toml,
    load_config,
    merge,
    parse_override,
)
from adaptive.train.schedule import StageSchedule

ROOT = Path(__file__).resolve().parents[1]


def _keys(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        if isinstance(v, dict):
            out += _keys(v, f"{prefix}{k}.")
        elif k != "stages":
            out.append(prefix + k)
    return out


def test_every_config_key_is_documented() -> None:
    doc = (ROOT / "docs" / "CONFIG_WORKFLOW.md").read_text()
    missing = [k for k in _keys(default_config()) if f"`{k}`" not in doc]
    assert not missing


def test_method_sections_mirror_controller_defaults() -> None:
    from adaptive.scheduler import AdaptiveScheduler
    from adaptive.weighting import available_methods, method_class

    cfg = default_config()["adaptive"]
    for method in available_methods():  # every registered method has its section
        sig = inspect.signature(method_class(method).__init__)
        defaults = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        assert cfg[method] == defaults
    sig = inspect.signature(AdaptiveScheduler)
    from adaptive.scheduler import law_class

    for k, v in cfg["scheduler_law"].items():
        if isinstance(v, dict):  # another registered law's section: its class defaults
            want_law = law_class(k).defaults()
            assert v == {n: "" if d is None else d for n, d in want_law.items()}, k
            continue
        want = sig.parameters[k].default
        assert v == ("" if want is None else want), k
    for k in ("adjustment_rate", "update_interval", "use_epoch_metrics"):
        assert cfg[k] == sig.parameters[k].default
    assert cfg["scheduler_adjustment_range"] == sig.parameters["adjustment_range"].default
    from adaptive.weighting import AdaptiveLossWeighting

    loss_sig = inspect.signature(AdaptiveLossWeighting)
    assert cfg["loss_adjustment_range"] == loss_sig.parameters["adjustment_range"].default


def test_precedence_and_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[train]\nlr = 0.01\nbatch_size = 4\n")
    cfg = load_config(f, ["train.lr=0.5"], extra={"run": {"epochs": 3}})
    assert cfg["train"]["lr"] == 0.5 and cfg["train"]["batch_size"] == 4
    assert cfg["run"]["epochs"] == 3
    again = merge(default_config(), tomllib.loads(dumps_toml(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trian.lr=1", "unknown config key 'trian'; did you mean 'train'?"),
        ("adaptive.dwa.temprature=1", "did you mean 'adaptive.dwa.temperature'?"),
        ("train.batch_size=2.5", "train.batch_size: expected an integer, got 2.5"),
        ("adaptive.dry_run=1", "adaptive.dry_run: expected true or false, got 1"),
        ("train", "--set expects section.key=value"),
        ("schedule.stages=[]", "schedule.stages: expected a non-empty list"),
        (
            "schedule.stages=[{epochs=1, tf_ratio=1, freerun_horizon=2, freerun_weight=0, x=1}]",
            "unknown stage key schedule.stages[0].x",
        ),
        (
            "schedule.stages=[{epochs=0, tf_ratio=1, freerun_horizon=2, freerun_weight=0}]",
            "schedule.stages[0].epochs: must be >= 1, got 0",
        ),
        (
            "schedule.stages=[{epochs=1, tf_ratio=[1, 2, 3], freerun_horizon=2, freerun_weight=0}]",
            "expected a number or a [start, end] ramp",
        ),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert message in str(info.value)


def test_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.toml")
    f = tmp_path / "bad.toml"
    f.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f)


def test_parse_override_values() -> None:
    assert parse_override("a.b=1") == (["a", "b"], 1)
    assert parse_override("a.b=true") == (["a", "b"], True)
    assert parse_override("a.b=hello") == (["a", "b"], "hello")
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


def test_stage_schedule_ramps_and_overrides() -> None:
    stages = [
        {
            "name": "a",
            "epochs": 2,
            "tf_ratio": (1.0, 1.0),
            "freerun_horizon": (4.0, 4.0),
            "freerun_weight": (0.0, 0.0),
        },
        {
            "name": "b",
            "epochs": 3,
            "tf_ratio": (0.8, 0.2),
            "freerun_horizon": (4.0, 10.0),
            "freerun_weight": (0.5, 1.0),
            "lr": (1e-3, 1e-4),
            "loss_weights": {"x": 2.0},
        },
    ]
    s = StageSchedule(stages, loss_weights={"x": 1.0, "y": 1.0}, lr=0.01)
    v0, v2, v3, v4, v9 = (s.base_values(e) for e in (0, 2, 3, 4, 9))
    assert v0.stage == "a" and v0.schedule["tf_ratio"] == 1.0 and v0.lr == 0.01
    assert v2.stage == "b" and v2.schedule["tf_ratio"] == pytest.approx(0.8)
    assert v3.schedule["tf_ratio"] == pytest.approx(0.5) and v3.schedule["freerun_horizon"] == 7
    assert v4.schedule["freerun_weight"] == pytest.approx(1.0) and v4.lr == pytest.approx(1e-4)
    assert v4.loss_weights == {"x": 2.0, "y": 1.0}
    assert v9.schedule == v4.schedule  # past the last stage: its end values
    with pytest.raises(ValueError, match="unknown components"):
        StageSchedule([{**stages[0], "loss_weights": {"z": 1.0}}], loss_weights={"x": 1.0}, lr=0.1)


def test_cross_key_checks_at_load_time(caplog: pytest.LogCaptureFixture) -> None:
    """Ranges are separate and validated; a stage whose stretched horizon cannot fit the
    window is refused, naming the key; the old shared range still works, with a note."""
    with pytest.raises(
        ConfigError, match=r"adaptive\.scheduler_adjustment_range: .*\[0, 1\).*1\.5"
    ):
        load_config(overrides=["adaptive.scheduler_adjustment_range=1.5"])
    with pytest.raises(ConfigError, match=r"adaptive\.loss_adjustment_range: must be >= 0"):
        load_config(overrides=["adaptive.loss_adjustment_range=-0.1"])
    cfg = load_config(overrides=["adaptive.loss_adjustment_range=2.0"])  # > 1 is fine for weights
    assert cfg["adaptive"]["loss_adjustment_range"] == 2.0
    with pytest.raises(ConfigError, match=r"adaptive\.loss_input: must be one of tf, total"):
        load_config(overrides=["adaptive.loss_input='fr'"])
    # horizon 32 x 1.3 = 42 frames do not fit a 40-frame window (at most 39), once the
    # scheduler is on; without it 32 fits
    stages = "schedule.stages=[{epochs=2, tf_ratio=0.5, freerun_horizon=32, freerun_weight=1.0}]"
    assert load_config(overrides=[stages])["data"]["window"] == 40
    with pytest.raises(
        ConfigError, match=r"schedule\.stages\[0\]\.freerun_horizon: 32 x \(1 \+ 0\.3\) = 42"
    ):
        load_config(overrides=[stages, "adaptive.scheduler=true"])
    with pytest.raises(
        ConfigError, match=r"freerun_horizon: 40 frames do not fit data\.window = 40"
    ):
        load_config(overrides=[stages.replace("freerun_horizon=32", "freerun_horizon=40")])
    with caplog.at_level("WARNING", logger="adaptive.config"):
        cfg = load_config(overrides=["adaptive.adjustment_range=0.2"])
    a = cfg["adaptive"]
    assert a["loss_adjustment_range"] == a["scheduler_adjustment_range"] == 0.2
    assert "deprecated" in caplog.text and "adaptive.adjustment_range" in caplog.text
    # a recommended.toml written by an older sweep (shared key) still loads
    old = tomllib.loads("[adaptive]\nloss = 'dwa'\nadjustment_range = 0.25\n")
    merged = merge(default_config(), old)
    assert merged["adaptive"]["loss_adjustment_range"] == 0.25
