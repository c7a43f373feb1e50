"""Evaluation for the reference trainer: the `val` (teacher forced) and `valfree` (free
run) splits on the validation set's fixed windows, and the epoch rows they give."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from adaptive.motion import MotionDataset, MotionJointLoss, MotionModel, evaluate

SPLITS = ("val", "valfree")


def run_evaluation(
    model: MotionModel,
    val_set: MotionDataset,
    loss_fn: MotionJointLoss,
    data_cfg: Mapping[str, Any],
    device: torch.device,
) -> dict[str, dict[str, float]]:
    """Raw component losses and metrics of both splits, per the config's data section."""
    d = data_cfg
    val_data = val_set.to(device) if device.type != "cpu" else val_set
    return {
        "val": evaluate(
            model,
            val_data,
            mode="tf",
            loss_fn=loss_fn,
            window=d["window"],
            max_windows=d["val_windows"],
        ),
        "valfree": evaluate(
            model,
            val_data,
            mode="free",
            loss_fn=loss_fn,
            seed_frames=d["val_seed_frames"],
            horizon=d["val_horizon"],
            max_windows=d["val_windows"],
        ),
    }


def split_row(
    result: Mapping[str, float], components: Sequence[str], loss_weights: Mapping[str, float]
) -> tuple[dict[str, float], dict[str, float], float]:
    """`(metrics, losses, loss_total)` of one split's result: the raw component losses
    apart, and their total under the epoch's base weights."""
    losses = {c: result[c] for c in components}
    metrics = {k: result[k] for k in result if k not in losses}
    total = sum(loss_weights[c] * losses[c] for c in components)
    return metrics, losses, total
