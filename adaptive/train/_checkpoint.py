"""Checkpoints of the reference trainer: what one holds (model, optimizer, RNG, metric
history, controller states, config, elapsed time), written atomically, and read back with
one-line errors for a file that is not a checkpoint of this run."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from adaptive._checks import atomic_write
from adaptive.train._records import CHECKPOINT_NAME, TrainingError

KEYS = (
    "epoch",
    "step",
    "model",
    "optimizer",
    "generator",
    "torch_rng",
    "metric_history",
    "weighting",
    "scheduler",
    "config",
)


def checkpoint_state(
    *,
    epoch: int,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    metric_history: dict[str, list[dict[str, float]]],
    weighting: Any,
    scheduler: Any,
    cfg: dict[str, Any],
    elapsed: float,
    ema: Any = None,
) -> dict[str, Any]:
    """The checkpoint's contents; controller states and the history as JSON strings, so the
    file loads with `torch.load(weights_only=True)`."""
    return {
        "epoch": epoch,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "metric_history": json.dumps(metric_history),
        "weighting": json.dumps(weighting.state_dict()) if weighting else "",
        "scheduler": json.dumps(scheduler.state_dict()) if scheduler else "",
        "config": json.dumps(cfg, default=list),
        "time": elapsed,
        **({"ema": ema.state_dict()} if ema is not None else {}),
    }


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` so that a crash leaves the previous checkpoint or this one."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(run_dir: Path, device: torch.device) -> dict[str, Any]:
    """The checkpoint of `run_dir`; `TrainingError` when it is missing, unreadable or
    lacks an entry."""
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise TrainingError(f"{run_dir}: no {CHECKPOINT_NAME} to resume from")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"{path}: not a readable checkpoint ({reason})") from None
    missing = [k for k in KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise TrainingError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return state


def restore(
    state: dict[str, Any],
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    weighting: Any,
    scheduler: Any,
    ema: Any = None,
) -> dict[str, list[dict[str, float]]]:
    """Load `state` into the run's objects and the global torch RNG; returns the metric
    history. A state that does not fit this run's model or controllers is a `TrainingError`."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(
            f"{path}: checkpoint does not fit this run's model; resume with the same "
            f"model settings ({first})"
        ) from None
    if ema is not None:
        if "ema" not in state:
            raise TrainingError(
                f"{path}: checkpoint has no weight average; resume with train.ema_decay = 0"
            )
        ema.load_state_dict(state["ema"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    history = json.loads(state["metric_history"])
    for name, what, controller in (
        ("weighting", "adaptive loss", weighting),
        ("scheduler", "scheduler", scheduler),
    ):
        if controller is None:
            continue
        if not state[name]:
            raise TrainingError(
                f"checkpoint has no {what} state; resume with the same adaptive settings"
            )
        try:  # a controller checks its whole state before it loads any of it
            controller.load_state_dict(json.loads(state[name]))
        except (KeyError, TypeError, ValueError) as exc:
            first = str(exc).strip().strip("'\"").splitlines() or [type(exc).__name__]
            raise TrainingError(f"{path}: the {what} state does not fit ({first[0]})") from None
    return history
