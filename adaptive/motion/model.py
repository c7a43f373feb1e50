"""Autoregressive next-frame predictor (GRU) conditioned on per-frame controls."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .data import CONTROL_DIM, FeatureStats, frame_dim, join_frames, split_frames
from .rotations import normalize_rot6d
from .skeleton import Skeleton


class MotionModel(nn.Module):
    """GRU next-frame model: input frame t (+ control t), output frame t+1.

    Inputs are normalised with training statistics kept as buffers; the network predicts a
    normalised residual ``frame_{t+1} - frame_t`` (scaled by ``out_scale``), and the 6D parts of
    the output are re-orthonormalised, so outputs are always valid frames in raw units. The last
    layer starts at zero: an untrained model predicts ``frame_t + mean delta``.
    """

    def __init__(
        self,
        skeleton: Skeleton,
        stats: FeatureStats,
        *,
        hidden_size: int = 128,
        num_layers: int = 1,
        control_dim: int = CONTROL_DIM,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        self.skeleton = skeleton
        self.num_joints = skeleton.num_joints
        self.frame_dim = frame_dim(self.num_joints)
        self.control_dim = control_dim
        self.hidden_size = hidden_size
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(
                f"hidden_size and num_layers must be >= 1, got {hidden_size} and {num_layers}"
            )
        for name, want in (
            ("frame", self.frame_dim),
            ("delta", self.frame_dim),
            ("control", control_dim),
        ):
            got = getattr(stats, f"{name}_mean").shape
            if got != (want,):
                raise ValueError(f"stats {name}_mean must have shape ({want},), got {tuple(got)}")
        for name in (
            "frame_mean",
            "frame_std",
            "control_mean",
            "control_std",
            "delta_mean",
            "delta_std",
        ):
            self.register_buffer(name, getattr(stats, name).detach().clone().float())
        # residual output scale: frame-difference std for the joint rotations, feature std for
        # the root channels (velocity, yaw rate, height), which follow the controls rather than
        # drifting slowly, so the network can reach their range quickly
        scale = self.delta_std.clone()
        j6 = 6 * self.num_joints
        scale[j6:] = torch.maximum(self.frame_std[j6:], self.delta_std[j6:])
        self.register_buffer("out_scale", scale)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.encoder = nn.Sequential(
                nn.Linear(self.frame_dim + control_dim, hidden_size), nn.ELU()
            )
            self.gru = nn.GRU(hidden_size, hidden_size, num_layers, batch_first=True)
            self.decoder = nn.Sequential(
                nn.Linear(hidden_size, hidden_size),
                nn.ELU(),
                nn.Linear(hidden_size, self.frame_dim),
            )
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer's weight, on which per-component gradient norms are taken
        (GradNorm's ``W``: every loss component depends on it)."""
        return [self.decoder[-1].weight]

    def forward(
        self, frames: Tensor, controls: Tensor, hidden: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Predict frames t+1 from frames (B, T, D) and controls (B, T, C) at t.

        Returns ``(next_frames (B, T, D), hidden (layers, B, H))``.
        """
        if frames.ndim != 3 or frames.shape[-1] != self.frame_dim:
            raise ValueError(f"frames must be (B, T, {self.frame_dim}), got {tuple(frames.shape)}")
        if controls.shape != (*frames.shape[:2], self.control_dim):
            raise ValueError(
                f"controls must be {(*frames.shape[:2], self.control_dim)}, "
                f"got {tuple(controls.shape)}"
            )
        x = torch.cat(
            (
                (frames - self.frame_mean) / self.frame_std,
                (controls - self.control_mean) / self.control_std,
            ),
            dim=-1,
        )
        out, hidden = self.gru(self.encoder(x), hidden)
        nxt = frames + self.decoder(out) * self.out_scale + self.delta_mean
        return self.project(nxt), hidden

    def project(self, frames: Tensor) -> Tensor:
        """Re-orthonormalise the 6D rotation parts of frames (..., D)."""
        p = split_frames(frames, self.num_joints)
        return join_frames(normalize_rot6d(p.rot6d), p.root_vel, p.yaw_rate, p.height)


def teacher_forced(model: MotionModel, frames: Tensor, controls: Tensor) -> Tensor:
    """Teacher-forced one-step predictions of frames 1..T-1 from ground-truth frames 0..T-2.

    ``frames`` (B, T, D), ``controls`` (B, T, C) -> predictions (B, T-1, D) aligned with
    ``frames[:, 1:]``.
    """
    if frames.ndim != 3 or frames.shape[1] < 2:
        raise ValueError(f"frames must be (B, T>=2, D), got {tuple(frames.shape)}")
    pred, _ = model(frames[:, :-1], controls[:, : frames.shape[1] - 1])
    return pred


def free_run(model: MotionModel, seed_frames: Tensor, controls: Tensor, horizon: int) -> Tensor:
    """Autoregressive rollout of ``horizon`` frames after warming the GRU on seed frames.

    ``seed_frames`` (B, S, D) are ground-truth frames 0..S-1 (S >= 1); ``controls`` (B, >=S+H-1,
    C) are indexed by absolute frame. The GRU consumes seed frames 0..S-2 teacher-forced, then
    steps from frame S-1 feeding back its own predictions. Returns frames S..S+H-1 (B, H, D).
    """
    if seed_frames.ndim != 3 or seed_frames.shape[1] < 1:
        raise ValueError(f"seed_frames must be (B, S>=1, D), got {tuple(seed_frames.shape)}")
    s = seed_frames.shape[1]
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if controls.shape[1] < s + horizon - 1:
        raise ValueError(
            f"controls must cover {s + horizon - 1} frames (seed {s} + horizon {horizon} - 1), "
            f"got {controls.shape[1]}"
        )
    hidden = None
    if s > 1:
        _, hidden = model(seed_frames[:, :-1], controls[:, : s - 1])
    cur = seed_frames[:, -1:]
    outs = []
    for k in range(horizon):
        cur, hidden = model(cur, controls[:, s - 1 + k : s + k], hidden)
        outs.append(cur)
    return torch.cat(outs, dim=1)
