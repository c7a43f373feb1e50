"""Batch loss with stochastic free-run rollouts, evaluation metrics and default task sizes."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from .data import (
    MotionBatch,
    MotionDataset,
    global_positions,
    integrate_root,
    local_positions,
)
from .loss import MotionJointLoss
from .model import MotionModel, free_run, teacher_forced
from .rotations import wrap_angle
from .skeleton import Skeleton

METRIC_KEYS: tuple[str, ...] = ("YawAbsDeg", "MPJPE", "RootDrift", "LocalMPJPE")
"""Metric names returned by :func:`evaluate` (besides the raw component losses)."""


def batch_loss(
    model: MotionModel,
    loss_fn: MotionJointLoss,
    batch: MotionBatch,
    *,
    tf_ratio: float,
    freerun_horizon: int,
    freerun_weight: float,
    generator: torch.Generator,
    return_info: bool = False,
    freerun: bool | None = None,
) -> tuple[Tensor, dict[str, Tensor]] | tuple[Tensor, dict[str, Tensor], dict[str, object]]:
    """Training loss of one batch of windows (B, T, ·).

    Always computes the teacher-forced loss ``L^TF_c`` (predict frames 1..T-1 from ground truth).
    Exactly one uniform number ``u`` is drawn from ``generator`` per call; if ``u >= tf_ratio``
    (probability ``1 - tf_ratio``) the last ``H = freerun_horizon`` frames are also rolled out
    freely from the first ``T - H`` frames, giving ``L^FR_c``. Then for every component

        raw_c = L^TF_c + freerun_weight * L^FR_c     (L^FR_c = 0 when not drawn)
        total = sum_c loss_fn.weights[c] * raw_c     (loss_fn.combine, components order)

    Returns ``(total, raw)``; ``raw`` tensors are attached to the graph, so a controller may
    backpropagate its own ``sum_c w_c * raw_c``. With ``return_info`` also returns the
    regime-separated parts ``{"freerun": bool, "tf": {c: L^TF_c}, "fr": {c: L^FR_c}}``
    (detached 0-dim tensors, no host sync; ``fr`` empty when not drawn): the trainer records
    them and feeds the controllers signals that a curriculum change does not distort;
    ``tf_graph`` holds the same ``L^TF_c`` attached to the graph (per-component gradient
    norms). ``freerun`` given (True/False) replaces the draw and leaves ``generator``
    untouched: the trainer re-evaluates a batch after the optimiser step that way.
    """
    if not 0.0 <= tf_ratio <= 1.0:
        raise ValueError(f"tf_ratio must be in [0, 1], got {tf_ratio}")
    if not (math.isfinite(freerun_weight) and freerun_weight >= 0):
        raise ValueError(f"freerun_weight must be finite and >= 0, got {freerun_weight}")
    t_len = batch.frames.shape[1]
    if not 0 <= freerun_horizon < t_len:
        raise ValueError(
            f"freerun_horizon must be in [0, {t_len - 1}] for windows of {t_len} frames, "
            f"got {freerun_horizon}"
        )
    if freerun is None:
        u = float(torch.rand((), generator=generator))
        draw = u >= tf_ratio and freerun_horizon > 0
    else:
        draw = freerun and freerun_horizon > 0
    frames, controls = batch.frames, batch.controls
    raw_tf = loss_fn.component_losses(teacher_forced(model, frames, controls), frames[:, 1:])
    raw_fr: dict[str, Tensor] = {}
    if draw:
        s = t_len - freerun_horizon
        pred = free_run(model, frames[:, :s], controls, freerun_horizon)
        raw_fr = loss_fn.component_losses(pred, frames[:, s:])
        raw = {c: raw_tf[c] + freerun_weight * raw_fr[c] for c in loss_fn.components}
    else:
        raw = {c: raw_tf[c] for c in loss_fn.components}
    total = loss_fn.combine(raw)
    if return_info:
        info: dict[str, object] = {
            "freerun": draw,
            "tf": {c: v.detach() for c, v in raw_tf.items()},
            "fr": {c: v.detach() for c, v in raw_fr.items()},
            "tf_graph": raw_tf,
        }
        return total, raw, info
    return total, raw


def motion_metrics(
    skeleton: Skeleton,
    fps: float,
    pred: Tensor,
    target: MotionBatch,
    first: int,
) -> dict[str, Tensor]:
    """Per-window metric tensors for predictions ``pred`` (B, H, D) of frames ``first..`` of
    ``target``; the predicted root is integrated from ground truth at frame ``first - 1``.

    Returns ``YawAbsDeg`` (B,) mean |heading error| in degrees, ``MPJPE`` (B,) mean world joint
    position error in mm, ``RootDrift`` (B,) final-frame world root position error in m, and
    ``LocalMPJPE`` (B,) heading-frame joint error in mm (pose only, no drift).
    """
    j = skeleton.num_joints
    yaw, pos = integrate_root(
        pred, j, fps, target.root_yaw[:, first - 1], target.root_pos[:, first - 1]
    )
    t_yaw, t_pos = target.root_yaw[:, first:], target.root_pos[:, first:]
    tgt = target.frames[:, first:]
    g_pred = global_positions(skeleton, pred, yaw, pos)
    g_true = global_positions(skeleton, tgt, t_yaw, t_pos)
    l_err = local_positions(skeleton, pred) - local_positions(skeleton, tgt)
    return {
        "YawAbsDeg": torch.rad2deg(wrap_angle(yaw - t_yaw).abs()).mean(-1),
        "MPJPE": 1000.0 * (g_pred - g_true).norm(dim=-1).mean((-1, -2)),
        "RootDrift": (pos[:, -1] - t_pos[:, -1]).norm(dim=-1),
        "LocalMPJPE": 1000.0 * l_err.norm(dim=-1).mean((-1, -2)),
    }


@torch.no_grad()
def evaluate(
    model: MotionModel,
    dataset: MotionDataset,
    *,
    mode: Literal["tf", "free"],
    loss_fn: MotionJointLoss | None = None,
    window: int = 48,
    seed_frames: int = 10,
    horizon: int = 60,
    max_windows: int | None = 256,
    batch_size: int = 256,
) -> dict[str, float]:
    """Deterministic validation on fixed windows of ``dataset`` (model put in eval mode and
    restored afterwards).

    ``mode="tf"`` ("val"): windows of ``window`` frames, teacher-forced predictions of frames
    1..window-1. ``mode="free"`` ("valfree"): windows of ``seed_frames + horizon`` frames,
    :func:`free_run` from the seed frames over ``horizon`` frames. Returns the raw loss
    components (keys ``loss_fn.components``, unweighted, mean over windows) and the metrics
    ``YawAbsDeg``, ``MPJPE`` (mm), ``RootDrift`` (m), ``LocalMPJPE`` (mm) (see
    :func:`motion_metrics`), averaged over windows.
    """
    if mode not in ("tf", "free"):
        raise ValueError(f"mode must be 'tf' or 'free', got {mode!r}")
    if mode == "tf" and window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    if mode == "free" and (seed_frames < 1 or horizon < 1):
        raise ValueError(f"seed_frames and horizon must be >= 1, got {seed_frames}, {horizon}")
    loss_fn = loss_fn or MotionJointLoss(dataset.skeleton)
    length = window if mode == "tf" else seed_frames + horizon
    first = 1 if mode == "tf" else seed_frames
    sums: dict[str, float] = {}
    count = 0
    was_training = model.training
    model.eval()
    try:
        for batch in dataset.iter_windows(length, batch_size, max_windows):
            b = len(batch)
            if mode == "tf":
                pred = teacher_forced(model, batch.frames, batch.controls)
            else:
                pred = free_run(model, batch.frames[:, :first], batch.controls, horizon)
            raw = loss_fn.component_losses(pred, batch.frames[:, first:])
            vals = {c: float(v) * b for c, v in raw.items()}
            for k, v in motion_metrics(dataset.skeleton, dataset.fps, pred, batch, first).items():
                vals[k] = float(v.sum())
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            count += b
    finally:
        model.train(was_training)
    return {k: v / count for k, v in sums.items()}
