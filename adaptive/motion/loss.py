"""Multi-component motion loss whose raw components an adaptive controller can re-weight."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .data import frame_dim, local_positions, split_frames
from .rotations import rot6d_to_matrix, wrap_angle
from .skeleton import Skeleton

LOSS_COMPONENTS: tuple[str, ...] = ("fk_pos", "rot", "root_vel", "yaw")
"""Component names, in the order used everywhere (``MotionJointLoss.components``)."""

DEFAULT_WEIGHTS: dict[str, float] = {"fk_pos": 1.0, "rot": 1.0, "root_vel": 1.0, "yaw": 1.0}
"""Default component weights (all 1: raw components deliberately live on different scales)."""


class MotionJointLoss(nn.Module):
    """Weighted sum of raw motion-loss components over frames (..., T, D).

    Components (each a mean over batch, time and the listed axes):

    * ``fk_pos``   MSE (m^2) of joint positions from FK in each frame's own heading frame
      (root at (0, height, 0)): pose + height error, immune to global drift.
    * ``rot``      MSE of local rotation matrices (9 entries, all joints; root heading-relative).
    * ``root_vel`` MSE ((m/s)^2) of the planar heading-frame root velocity.
    * ``yaw``      mean squared wrapped error (rad^2) of the heading accumulated over the window,
      ``wrap(cumsum(yaw_rate_pred) - cumsum(yaw_rate_true))``, i.e. heading drift along time.

    ``forward(pred, target)`` returns the total ``sum_c weights[c] * raw[c]`` (in
    ``components`` order), or ``(total, raw)`` when ``return_detailed_losses`` is True; ``raw``
    maps each component to its unweighted scalar tensor (attached to the graph).
    """

    components: tuple[str, ...] = LOSS_COMPONENTS

    def __init__(
        self,
        skeleton: Skeleton,
        weights: Mapping[str, float] | None = None,
        *,
        return_detailed_losses: bool = False,
    ) -> None:
        super().__init__()
        self.skeleton = skeleton
        self.return_detailed_losses = return_detailed_losses
        self._weights: dict[str, float] = dict(DEFAULT_WEIGHTS)
        if weights is not None:
            self.weights = weights

    @property
    def weights(self) -> dict[str, float]:
        """Copy of the component weights. Assigning a mapping updates the named components
        (others keep their value); unknown names or negative/non-finite values raise."""
        return dict(self._weights)

    @weights.setter
    def weights(self, new: Mapping[str, float]) -> None:
        upd = {}
        for name, value in new.items():
            if name not in self.components:
                raise ValueError(
                    f"unknown loss component {name!r}; expected one of {list(self.components)}"
                )
            v = float(value)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"weight for {name!r} must be finite and >= 0, got {value!r}")
            upd[name] = v
        self._weights.update(upd)

    def component_losses(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Raw (unweighted) scalar component losses for frames (..., T, D)."""
        d = frame_dim(self.skeleton.num_joints)
        if pred.shape != target.shape or pred.shape[-1] != d or pred.ndim < 2:
            raise ValueError(
                f"pred and target must both be (..., T, {d}), "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        j = self.skeleton.num_joints
        p, t = split_frames(pred, j), split_frames(target, j)
        rp, rt = rot6d_to_matrix(p.rot6d), rot6d_to_matrix(t.rot6d)
        fk = local_positions(self.skeleton, pred, rp) - local_positions(self.skeleton, target, rt)
        rot = rp - rt
        heading = wrap_angle(torch.cumsum(p.yaw_rate, dim=-1) - torch.cumsum(t.yaw_rate, dim=-1))
        return {
            "fk_pos": fk.pow(2).mean(),
            "rot": rot.pow(2).mean(),
            "root_vel": (p.root_vel - t.root_vel).pow(2).mean(),
            "yaw": heading.pow(2).mean(),
        }

    def combine(self, raw: Mapping[str, Tensor]) -> Tensor:
        """Weighted total ``sum_c weights[c] * raw[c]`` in ``components`` order."""
        missing = [c for c in self.components if c not in raw]
        if missing:
            raise ValueError(f"raw losses lack components {missing}")
        total = self._weights[self.components[0]] * raw[self.components[0]]
        for c in self.components[1:]:
            total = total + self._weights[c] * raw[c]
        return total

    def forward(self, pred: Tensor, target: Tensor) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Total loss, or ``(total, raw components)`` if ``return_detailed_losses``."""
        raw = self.component_losses(pred, target)
        total = self.combine(raw)
        if self.return_detailed_losses:
            return total, raw
        return total
