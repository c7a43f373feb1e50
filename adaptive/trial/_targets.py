"""What a trial trains: a target turns (arm overrides, seed, run folder) into a recorded
trace. The reference motion trainer, a shell command and a Python function are the three
kinds; every run of every arm goes through `Target.run`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from adaptive.errors import InputError

__all__ = [
    "CONTROLLERS_OFF",
    "PLACEBO_FACTOR",
    "QUICK_TRIAL",
    "Arm",
    "CommandTarget",
    "FunctionTarget",
    "ReferenceTarget",
    "Target",
    "TrialError",
]

TRACE = "trace.parquet"
#: Overrides that switch every controller off: the reference trainer's baseline arm.
CONTROLLERS_OFF = ("adaptive.loss='none'", "adaptive.scheduler=false")
#: The reference trainer's placebo arm: train.lr times this (a change that should not matter).
PLACEBO_FACTOR = 1.0 + 1e-5
#: A first look in a few minutes on 2 cores (docs/TRIAL.md has the measured time).
QUICK_TRIAL = (
    "run.epochs=8",
    "data.train_clips=16",
    "data.val_clips=4",
    "data.val_windows=64",
    "train.steps_per_epoch=25",
    "adaptive.update_interval=25",
    "train.ema_decay=0.95",  # 200 steps: the default 0.99 would still hold 13 % of the start
    # stages of 1, 3 and 4 epochs: DWA restarts at each stage and needs two epochs of
    # history, so shorter stages would leave it neutral throughout
    "schedule.stages=[{name='teacher_forcing', epochs=1, tf_ratio=1.0, freerun_horizon=8,"
    " freerun_weight=0.0}, {name='ramp', epochs=3, tf_ratio=[0.8, 0.4],"
    " freerun_horizon=[8, 20], freerun_weight=[0.25, 0.5]}, {name='free_run', epochs=4,"
    " tf_ratio=0.4, freerun_horizon=20, freerun_weight=0.5}]",
)


class TrialError(InputError):
    """A trial that cannot run or compare (bad candidate, unknown metric, unpaired runs...)."""


@dataclass(frozen=True)
class Arm:
    """One arm of a trial: a name and the overrides the target applies (`key=value`
    strings for the reference trainer, one argument string for a command or function),
    or a config file (`path`, reference trainer only)."""

    name: str
    overrides: tuple[str, ...] = ()
    path: Path | None = None


class Target(Protocol):
    """Trains one run: `run(arm, seed, run_dir, resume)` leaves `run_dir/trace.parquet`."""

    kind: str
    can_resume: bool

    def describe(self) -> str: ...
    def baseline(self) -> Arm: ...
    def placebo(self, override: str | None) -> Arm: ...
    def candidate(self, text: str) -> Arm: ...
    def fingerprint(self, arm: Arm) -> str: ...
    def check_metric(self, split: str, name: str) -> None: ...
    def run(self, arm: Arm, seed: int, run_dir: Path, resume: bool) -> None: ...


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _split_name(text: str) -> tuple[str, str]:
    """`"name: rest"` -> (name, rest); otherwise ("", text)."""
    m = re.match(r"^([A-Za-z0-9_.+-]+):\s+(.*)$", text.strip())
    return (m.group(1), m.group(2)) if m else ("", text.strip())


def safe_name(text: str) -> str:
    """A folder-safe arm name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_-.") or "arm"


# ----------------------------------------------------------------------------- reference
def arm_label(cfg: Mapping[str, Any]) -> str:
    """The controllers a reference config has on: `off`, `dwa`, `dwa+scheduler`, ..."""
    a = cfg.get("adaptive", {}) if isinstance(cfg, Mapping) else {}
    parts = []
    if a.get("loss", "none") != "none":
        parts.append(str(a["loss"]))
    if a.get("scheduler"):
        parts.append("scheduler")
    if a.get("dry_run") and parts:
        parts.append("dry-run")
    return "+".join(parts) if parts else "off"


_LOSS_ONLY = ("loss_adjustment_range", "loss_input", "restart_on_stage_change")
_SCHEDULER_ONLY = (
    "scheduler_law",
    "scheduler_adjustment_range",
    "adjustment_rate",
    "update_interval",
    "use_epoch_metrics",
)


def effective_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that can change a run's numbers: the config without the seed, the
    thread count, names, logging cadence, and the settings of controllers that are off
    (`adaptive.dwa.temperature=1` with the loss weighting off trains what the baseline
    trains)."""
    c = json.loads(json.dumps(cfg, default=list))
    for key in ("seed", "threads", "name", "out", "log_every"):
        c.get("run", {}).pop(key, None)
    a = c.get("adaptive", {})
    a.pop("log_every", None)
    from adaptive.weighting import available_methods

    loss = a.get("loss", "none")
    for m in available_methods():
        if m != loss:
            a.pop(m, None)
    if loss == "none":
        for k in _LOSS_ONLY:
            a.pop(k, None)
    if not a.get("scheduler"):
        for k in _SCHEDULER_ONLY:
            a.pop(k, None)
    if loss == "none" and not a.get("scheduler"):
        a.pop("dry_run", None)
    return c


def _refuse_seed(where: str, keys: Sequence[str]) -> None:
    for k in keys:
        if k.split("=", 1)[0].strip() == "run.seed":
            raise TrialError(
                f"{where} sets run.seed: the trial sets it per run (--seeds, --first-seed)"
            )


@dataclass
class ReferenceTarget:
    """The reference motion trainer (`adaptive train`): arms are config overrides on
    `config` + `sets` (+ the quick preset). `run.threads` is the user's (default 1); the
    trial sets `run.seed` itself and refuses it anywhere else."""

    config: Path | None = None
    sets: Sequence[str] = ()
    quick: bool = False
    epochs: int | None = None
    kind: str = "reference"
    can_resume: bool = True
    _base: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._base = [*(QUICK_TRIAL if self.quick else ()), *self.sets]
        if self.epochs is not None:
            self._base.append(f"run.epochs={int(self.epochs)}")
        _refuse_seed("--set", self.sets)
        if self.config is not None:
            self._check_file(Path(self.config), "--config")

    @staticmethod
    def _check_file(path: Path, where: str) -> None:
        from adaptive.train.config import ConfigError, read_toml

        try:
            data = read_toml(path)
        except ConfigError as exc:
            raise TrialError(f"{where} {exc}") from None
        if "seed" in (data.get("run") or {}):
            raise TrialError(
                f"{where} {path} sets run.seed: the trial sets it per run (--seeds, --first-seed)"
            )

    def describe(self) -> str:
        cfg = f" --config {self.config}" if self.config else ""
        return f"reference trainer{cfg}" + (" (quick preset)" if self.quick else "")

    def config_of(self, arm: Arm, seed: int = 0) -> dict[str, Any]:
        """The resolved training config of `arm` at `seed`: defaults <- --config <- the
        arm's .toml <- quick preset and --set <- the arm's overrides <- run.seed."""
        from adaptive.train.config import ConfigError, load_config, read_toml

        try:
            extra = read_toml(arm.path) if arm.path is not None else None
            return load_config(
                self.config, [*self._base, *arm.overrides, f"run.seed={seed}"], extra=extra
            )
        except ConfigError as exc:
            raise TrialError(f"{arm.name}: {exc}") from None

    def baseline(self) -> Arm:
        return Arm("baseline", CONTROLLERS_OFF)

    def placebo(self, override: str | None) -> Arm:
        if override is not None:
            return Arm("placebo", (*CONTROLLERS_OFF, *_sets(override)))
        lr = float(self.config_of(self.baseline())["train"]["lr"]) * PLACEBO_FACTOR
        return Arm("placebo", (*CONTROLLERS_OFF, f"train.lr={lr!r}"))

    def candidate(self, text: str) -> Arm:
        name, body = _split_name(text)
        if not body:
            raise TrialError("--candidate must not be empty")
        if body.endswith(".toml"):
            path = Path(body)
            self._check_file(path, "--candidate")
            arm = Arm(name or "?", (), path)
        else:
            sets = _sets(body)
            _refuse_seed(f"--candidate {body!r}", sets)
            arm = Arm(name or "?", tuple(sets))
        if not name:
            cfg = self.config_of(arm)
            label = arm_label(cfg)
            if label == "off" and arm.path is not None:
                label = arm.path.stem
            arm = replace(arm, name=label)
        return arm

    def fingerprint(self, arm: Arm) -> str:
        return _hash(effective_config(self.config_of(arm)))

    def check_metric(self, split: str, name: str) -> None:
        from adaptive.motion.task import METRIC_KEYS

        splits = ["val", "valfree"]
        if self.config_of(self.baseline())["train"]["ema_decay"] > 0:  # the weights' average
            splits += ["val_ema", "valfree_ema"]
        known = [f"{s}/{m}" for s in splits for m in (*METRIC_KEYS, "loss")]
        if f"{split}/{name}" not in known:
            raise TrialError(
                f"--metric {split}/{name}: the reference trainer records {', '.join(known)}"
            )

    def run(self, arm: Arm, seed: int, run_dir: Path, resume: bool) -> None:
        from adaptive.train.trainer import Trainer

        summary = Trainer(self.config_of(arm, seed), run_dir, resume=resume).train()
        if summary.interrupted:
            raise KeyboardInterrupt


def _sets(text: str) -> list[str]:
    sets = [s.strip() for s in text.split(";") if s.strip()]
    for s in sets:
        if "=" not in s:
            raise TrialError(f"--candidate: {s!r} is not section.key=value")
    return sets


# ----------------------------------------------------------------------------- command
@dataclass
class CommandTarget:
    """The user's own trainer as a shell command with `{seed}`, `{run_dir}` and
    `{overrides}` (the arm's argument string; the baseline's is `baseline_args`, default
    empty). The command must record a trace into `{run_dir}/trace.parquet` (TraceRecorder
    or the Lightning callback). Its output goes to `{run_dir}/train.log`; it gets
    `OMP_NUM_THREADS=threads` unless the environment sets it already."""

    command: str
    baseline_args: str = ""
    threads: int = 1
    kind: str = "command"
    can_resume: bool = False

    def __post_init__(self) -> None:
        for key in ("{run_dir}", "{seed}"):
            if key not in self.command:
                raise TrialError(
                    f"--command must contain {key} (e.g. 'python train.py --seed {{seed}} "
                    "--out {run_dir} {overrides}')"
                )
        try:
            self.command.format(seed=0, run_dir="x", overrides="")
        except (KeyError, IndexError, ValueError) as exc:
            raise TrialError(
                f"--command: only {{seed}}, {{run_dir}} and {{overrides}} may be in braces "
                f"(use {{{{ }}}} for a literal brace): {exc}"
            ) from None

    def describe(self) -> str:
        return f"command: {self.command}"

    def baseline(self) -> Arm:
        return Arm("baseline", (self.baseline_args,) if self.baseline_args else ())

    def placebo(self, override: str | None) -> Arm:
        if override is None:
            raise TrialError(
                "--placebo with --command needs --placebo-override '...': the arguments of a "
                "change that should not matter (e.g. '--lr 0.0100001')"
            )
        return Arm("placebo", (override,))

    def candidate(self, text: str) -> Arm:
        name, body = _split_name(text)
        if "{overrides}" not in self.command:
            raise TrialError("--command has no {overrides}: a candidate could not change it")
        return Arm(name or safe_name(body), (body,))

    def argv(self, arm: Arm, seed: int, run_dir: Path) -> str:
        """The command line of one run (for a shell)."""
        return self.command.format(
            seed=seed, run_dir=shlex.quote(str(run_dir)), overrides=" ".join(arm.overrides)
        )

    def fingerprint(self, arm: Arm) -> str:
        return _hash([self.command, list(arm.overrides)])

    def check_metric(self, split: str, name: str) -> None:
        """Checked against the first trace instead: a command declares nothing up front."""

    def run(self, arm: Arm, seed: int, run_dir: Path, resume: bool) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        line = self.argv(arm, seed, run_dir)
        with open(run_dir / "train.log", "w", encoding="utf-8") as log:
            rc = subprocess.run(line, shell=True, stdout=log, stderr=subprocess.STDOUT, env=env)
        if rc.returncode != 0:
            tail = (run_dir / "train.log").read_text("utf-8", "replace").strip().splitlines()
            last = tail[-1] if tail else ""
            raise TrialError(
                f"{arm.name} seed {seed}: the command exited with {rc.returncode} "
                f"({last[:200]}); see {run_dir / 'train.log'}"
            )
        if not (run_dir / TRACE).exists():
            raise TrialError(
                f"{arm.name} seed {seed}: the command wrote no {run_dir / TRACE}; record one "
                "with TraceRecorder or the Lightning callback"
            )


# ----------------------------------------------------------------------------- function
@dataclass
class FunctionTarget:
    """Your training as a Python function `train_fn(overrides, seed, run_dir)` that records
    a trace into `run_dir/trace.parquet`; `overrides` is the arm's argument string (the
    baseline's is `baseline_args`). With a process pool or Ray the function must be
    importable or picklable."""

    train_fn: Callable[[str, int, Path], Any]
    baseline_args: str = ""
    kind: str = "function"
    can_resume: bool = False

    def describe(self) -> str:
        fn = self.train_fn
        return f"function {getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"

    def baseline(self) -> Arm:
        return Arm("baseline", (self.baseline_args,))

    def placebo(self, override: str | None) -> Arm:
        if override is None:
            raise TrialError("placebo with a function target needs placebo_override")
        return Arm("placebo", (override,))

    def candidate(self, text: str) -> Arm:
        name, body = _split_name(text)
        return Arm(name or safe_name(body), (body,))

    def fingerprint(self, arm: Arm) -> str:
        return _hash([self.describe(), list(arm.overrides)])

    def check_metric(self, split: str, name: str) -> None:
        """Checked against the first trace."""

    def run(self, arm: Arm, seed: int, run_dir: Path, resume: bool) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.train_fn(" ".join(arm.overrides), seed, run_dir)
        if not (run_dir / TRACE).exists():
            raise TrialError(f"{arm.name} seed {seed}: train_fn wrote no {run_dir / TRACE}")
