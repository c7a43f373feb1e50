"""Motion representation, procedural locomotion generator, datasets, windows and statistics.

Per-frame feature vector (length ``D = 6*J + 4``, float32), in this order:

* ``[0, 6J)``   local joint rotations in 6D (first two matrix columns, joint-major). The root
  (joint 0) rotation is relative to the heading frame: ``R_root_world = Ry(yaw) @ R_root``.
* ``[6J, 6J+2)`` root velocity (x, z) in **m/s**, planar, expressed in the heading frame of the
  *previous* frame: ``v_t = Ry(yaw_{t-1})^T (p_t - p_{t-1}) * fps`` (backward difference).
* ``6J+2``      yaw rate in **rad/frame**: ``wrap(yaw_t - yaw_{t-1})``.
* ``6J+3``      root height (world Y of the root joint) in metres.

Heading ``yaw`` is the root's local +Z axis projected onto the ground plane (yaw 0 faces +Z).
Frame 0 of a clip copies frame 1's velocity and yaw rate (no predecessor). The global root
trajectory is recovered by integrating velocities from a known start (:func:`integrate_root`).

Per-frame control vector (``C = 3``): the desired motion over the next ``control_horizon_s``
seconds (0.5 s default, truncated at the clip end), read from the future trajectory:
``[vx, vz]`` = mean root velocity in m/s in the heading frame of frame t, and the mean yaw rate
in rad/frame.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .fk import forward_kinematics
from .rotations import (
    euler_to_matrix,
    matrix_to_rot6d,
    rot6d_to_matrix,
    rotate_planar,
    wrap_angle,
    yaw_from_matrix,
    yaw_matrix,
)
from .skeleton import HUMANOID_HIP_HEIGHT, Skeleton, humanoid

CONTROL_DIM = 3
"""Length of the per-frame control vector: desired (vx, vz) in m/s and yaw rate in rad/frame."""


def frame_dim(num_joints: int) -> int:
    """Feature length D = 6*J + 4 of one frame for a skeleton with ``num_joints`` joints."""
    return 6 * num_joints + 4


@dataclass(frozen=True)
class FrameParts:
    """Named views into frame features (..., D)."""

    rot6d: Tensor  # (..., J, 6)
    root_vel: Tensor  # (..., 2) m/s, previous heading frame
    yaw_rate: Tensor  # (...,) rad/frame
    height: Tensor  # (...,) m


def split_frames(frames: Tensor, num_joints: int) -> FrameParts:
    """Split frame features (..., 6J+4) into their parts (views, no copy)."""
    d = frame_dim(num_joints)
    if frames.shape[-1] != d:
        raise ValueError(
            f"frames must have last dimension 6*J+4 = {d} for J={num_joints}, "
            f"got {frames.shape[-1]}"
        )
    j6 = 6 * num_joints
    return FrameParts(
        rot6d=frames[..., :j6].unflatten(-1, (num_joints, 6)),
        root_vel=frames[..., j6 : j6 + 2],
        yaw_rate=frames[..., j6 + 2],
        height=frames[..., j6 + 3],
    )


def join_frames(rot6d: Tensor, root_vel: Tensor, yaw_rate: Tensor, height: Tensor) -> Tensor:
    """Inverse of :func:`split_frames`: parts to frame features (..., 6J+4)."""
    return torch.cat(
        (rot6d.flatten(-2), root_vel, yaw_rate.unsqueeze(-1), height.unsqueeze(-1)), dim=-1
    )


@dataclass
class MotionClip:
    """One clip in the frame representation plus its global root trajectory."""

    frames: Tensor  # (T, D)
    controls: Tensor  # (T, C)
    root_yaw: Tensor  # (T,) global heading, rad, unwrapped
    root_pos: Tensor  # (T, 3) global root position, m
    fps: float
    name: str = ""

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def compute_controls(
    root_yaw: Tensor, root_pos: Tensor, fps: float, *, horizon_s: float = 0.5
) -> Tensor:
    """Controls (..., T, 3) from a global root trajectory (see module docstring)."""
    t_len = root_yaw.shape[-1]
    w = max(1, round(horizon_s * fps))
    t = torch.arange(t_len, device=root_yaw.device)
    fut = (t + w).clamp(max=t_len - 1)
    if t_len > 1:  # the last frame has no future: reuse the one before it
        t = t.clone()
        t[-1] = t_len - 2
        fut = fut.clone()
        fut[-1] = t_len - 1
    steps = (fut - t).clamp(min=1).to(root_pos.dtype)
    disp = root_pos[..., fut, :][..., [0, 2]] - root_pos[..., t, :][..., [0, 2]]
    vel = rotate_planar(disp, -root_yaw[..., t]) * (fps / steps).unsqueeze(-1)
    yaw_rate = (root_yaw[..., fut] - root_yaw[..., t]) / steps
    return torch.cat((vel, yaw_rate.unsqueeze(-1)), dim=-1)


def encode_motion(
    local_rot: Tensor,
    root_pos: Tensor,
    fps: float,
    *,
    control_horizon_s: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Encode world-space motion into the frame representation.

    ``local_rot`` (..., T, J, 3, 3) holds parent-local rotations with the root rotation in world
    space; ``root_pos`` (..., T, 3) is the world root position (m). Returns
    ``(frames (..., T, D), controls (..., T, 3), root_yaw (..., T), root_pos (..., T, 3))``
    with the yaw unwrapped (continuous).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    t_len = local_rot.shape[-4]
    raw_yaw = yaw_from_matrix(local_rot[..., 0, :, :])
    dyaw = wrap_angle(raw_yaw[..., 1:] - raw_yaw[..., :-1])
    yaw = torch.cat((raw_yaw[..., :1], raw_yaw[..., :1] + torch.cumsum(dyaw, dim=-1)), dim=-1)
    root_rel = yaw_matrix(yaw).transpose(-1, -2) @ local_rot[..., 0, :, :]
    rel = torch.cat((root_rel.unsqueeze(-3), local_rot[..., 1:, :, :]), dim=-3)
    disp = root_pos[..., 1:, :][..., [0, 2]] - root_pos[..., :-1, :][..., [0, 2]]
    vel = rotate_planar(disp, -yaw[..., :-1]) * fps
    if t_len > 1:
        vel = torch.cat((vel[..., :1, :], vel), dim=-2)
        dyaw = torch.cat((dyaw[..., :1], dyaw), dim=-1)
    else:
        vel = torch.zeros(*root_pos.shape[:-1], 2, dtype=root_pos.dtype)
        dyaw = torch.zeros_like(yaw)
    frames = join_frames(matrix_to_rot6d(rel), vel, dyaw, root_pos[..., 1])
    controls = compute_controls(yaw, root_pos, fps, horizon_s=control_horizon_s)
    return frames, controls, yaw, root_pos


def integrate_root(
    frames: Tensor, num_joints: int, fps: float, prev_yaw: Tensor, prev_pos: Tensor
) -> tuple[Tensor, Tensor]:
    """Global root yaw (..., T) and position (..., T, 3) of ``frames`` (..., T, D).

    ``prev_yaw`` (...) and ``prev_pos`` (..., 3) describe the frame *preceding* ``frames[..., 0,
    :]`` (only its x, z are used; heights come from the frames).
    """
    parts = split_frames(frames, num_joints)
    yaw = prev_yaw.unsqueeze(-1) + torch.cumsum(parts.yaw_rate, dim=-1)
    yaw_before = torch.cat((prev_yaw.unsqueeze(-1), yaw[..., :-1]), dim=-1)
    step = rotate_planar(parts.root_vel, yaw_before) / fps
    xz = prev_pos[..., [0, 2]].unsqueeze(-2) + torch.cumsum(step, dim=-2)
    pos = torch.stack((xz[..., 0], parts.height, xz[..., 1]), dim=-1)
    return yaw, pos


def local_positions(skeleton: Skeleton, frames: Tensor, local_rot: Tensor | None = None) -> Tensor:
    """Joint positions (..., J, 3) in each frame's own heading frame (root at (0, h, 0)).

    ``local_rot`` may pass the already computed ``rot6d_to_matrix`` of the frames' 6D parts.
    """
    parts = split_frames(frames, skeleton.num_joints)
    root = torch.stack(
        (torch.zeros_like(parts.height), parts.height, torch.zeros_like(parts.height)), dim=-1
    )
    rot = rot6d_to_matrix(parts.rot6d) if local_rot is None else local_rot
    return forward_kinematics(skeleton, rot, root)


def global_positions(
    skeleton: Skeleton, frames: Tensor, root_yaw: Tensor, root_pos: Tensor
) -> Tensor:
    """World joint positions (..., J, 3) of frames (..., D) given world root yaw and position."""
    parts = split_frames(frames, skeleton.num_joints)
    rot = rot6d_to_matrix(parts.rot6d)
    root_world = yaw_matrix(root_yaw) @ rot[..., 0, :, :]
    rot = torch.cat((root_world.unsqueeze(-3), rot[..., 1:, :, :]), dim=-3)
    return forward_kinematics(skeleton, rot, root_pos)


@dataclass
class MotionBatch:
    """A batch of windows: frames (B, T, D), controls (B, T, C), world root yaw/pos (B, T[, 3])."""

    frames: Tensor
    controls: Tensor
    root_yaw: Tensor
    root_pos: Tensor

    def to(self, device: torch.device | str) -> MotionBatch:
        """Copy to ``device``."""
        return MotionBatch(
            self.frames.to(device),
            self.controls.to(device),
            self.root_yaw.to(device),
            self.root_pos.to(device),
        )

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class MotionDataset:
    """Clips of equal skeleton and fps, stored concatenated along time.

    Clip ``i`` occupies rows ``clip_offsets[i]:clip_offsets[i+1]`` of ``frames`` (F, D),
    ``controls`` (F, C), ``root_yaw`` (F,) and ``root_pos`` (F, 3). Windows never cross clips.
    """

    skeleton: Skeleton
    fps: float
    frames: Tensor
    controls: Tensor
    root_yaw: Tensor
    root_pos: Tensor
    clip_offsets: Tensor
    clip_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n_frames = self.frames.shape[0]
        d = frame_dim(self.skeleton.num_joints)
        if self.frames.ndim != 2 or self.frames.shape[1] != d:
            raise ValueError(f"frames must have shape (F, {d}), got {tuple(self.frames.shape)}")
        if self.controls.shape != (n_frames, CONTROL_DIM):
            raise ValueError(
                f"controls must have shape ({n_frames}, {CONTROL_DIM}), "
                f"got {tuple(self.controls.shape)}"
            )
        if self.root_yaw.shape != (n_frames,) or self.root_pos.shape != (n_frames, 3):
            raise ValueError(
                f"root_yaw/root_pos must have shapes ({n_frames},)/({n_frames}, 3), got "
                f"{tuple(self.root_yaw.shape)}/{tuple(self.root_pos.shape)}"
            )
        off = self.clip_offsets.to(torch.long)
        self.clip_offsets = off
        if off.ndim != 1 or off.numel() < 2 or off[0] != 0 or off[-1] != n_frames:
            raise ValueError(f"clip_offsets must run from 0 to {n_frames}, got {off.tolist()}")
        if bool((off[1:] <= off[:-1]).any()):
            raise ValueError(f"clip_offsets must be strictly increasing, got {off.tolist()}")
        if not self.clip_names:
            self.clip_names = tuple(f"clip{i:04d}" for i in range(off.numel() - 1))
        if len(self.clip_names) != off.numel() - 1:
            raise ValueError(f"need {off.numel() - 1} clip names, got {len(self.clip_names)}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    @classmethod
    def from_clips(cls, skeleton: Skeleton, clips: Sequence[MotionClip]) -> MotionDataset:
        """Concatenate clips (same fps) into a dataset."""
        if not clips:
            raise ValueError("need at least one clip, got 0")
        fps = clips[0].fps
        for c in clips:
            if abs(c.fps - fps) > 1e-6 * fps:
                raise ValueError(f"all clips need the same fps: {fps} vs {c.fps} ({c.name!r})")
        lengths = torch.tensor([len(c) for c in clips])
        return cls(
            skeleton=skeleton,
            fps=float(fps),
            frames=torch.cat([c.frames for c in clips]),
            controls=torch.cat([c.controls for c in clips]),
            root_yaw=torch.cat([c.root_yaw for c in clips]),
            root_pos=torch.cat([c.root_pos for c in clips]),
            clip_offsets=torch.cat((torch.zeros(1, dtype=torch.long), lengths.cumsum(0))),
            clip_names=tuple(c.name for c in clips),
        )

    @property
    def num_clips(self) -> int:
        """Number of clips N."""
        return self.clip_offsets.numel() - 1

    @property
    def num_frames(self) -> int:
        """Total number of frames F over all clips."""
        return int(self.frames.shape[0])

    @property
    def frame_dim(self) -> int:
        """Frame feature length D."""
        return int(self.frames.shape[1])

    @property
    def clip_lengths(self) -> Tensor:
        """Frames per clip (N,)."""
        return self.clip_offsets[1:] - self.clip_offsets[:-1]

    def clip(self, i: int) -> MotionClip:
        """Clip ``i`` as a :class:`MotionClip` (views)."""
        if not 0 <= i < self.num_clips:
            raise IndexError(f"clip index must be in [0, {self.num_clips}), got {i}")
        a, b = int(self.clip_offsets[i]), int(self.clip_offsets[i + 1])
        return MotionClip(
            self.frames[a:b],
            self.controls[a:b],
            self.root_yaw[a:b],
            self.root_pos[a:b],
            self.fps,
            self.clip_names[i],
        )

    def to(self, device: torch.device | str) -> MotionDataset:
        """A copy with the per-frame tensors on ``device`` (clip offsets stay on the CPU, so
        window indices are computed on the host and batches are gathered on the device)."""
        return dataclasses.replace(
            self,
            frames=self.frames.to(device),
            controls=self.controls.to(device),
            root_yaw=self.root_yaw.to(device),
            root_pos=self.root_pos.to(device),
        )

    def window_starts(self, length: int) -> Tensor:
        """Row indices where a window of ``length`` frames fits inside one clip (ascending)."""
        if length < 1:
            raise ValueError(f"window length must be >= 1, got {length}")
        parts = [
            torch.arange(int(a), int(b) - length + 1)
            for a, b in zip(self.clip_offsets[:-1], self.clip_offsets[1:], strict=True)
            if int(b) - int(a) >= length
        ]
        if not parts:
            raise ValueError(
                f"no clip has {length} frames (longest has {int(self.clip_lengths.max())})"
            )
        return torch.cat(parts)

    def gather(self, starts: Tensor, length: int) -> MotionBatch:
        """Windows of ``length`` frames beginning at rows ``starts`` (B,)."""
        idx = starts.to(torch.long).unsqueeze(1) + torch.arange(length).unsqueeze(0)
        return MotionBatch(
            self.frames[idx], self.controls[idx], self.root_yaw[idx], self.root_pos[idx]
        )

    def sample_windows(
        self, batch_size: int, length: int, generator: torch.Generator
    ) -> MotionBatch:
        """Uniformly random windows (with replacement), deterministic given ``generator``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        starts = self.window_starts(length)
        pick = torch.randint(starts.numel(), (batch_size,), generator=generator)
        return self.gather(starts[pick], length)

    def fixed_windows(self, length: int, max_windows: int | None = None) -> MotionBatch:
        """Deterministic non-overlapping windows: each clip cut from frame 0 with stride
        ``length``; at most ``max_windows`` (taken evenly over the list) if given."""
        starts = []
        for a, b in zip(self.clip_offsets[:-1], self.clip_offsets[1:], strict=True):
            starts.extend(range(int(a), int(b) - length + 1, length))
        if not starts:
            raise ValueError(
                f"no clip has {length} frames (longest has {int(self.clip_lengths.max())})"
            )
        st = torch.tensor(starts, dtype=torch.long)
        if max_windows is not None and st.numel() > max_windows:
            st = st[torch.linspace(0, st.numel() - 1, max_windows).round().long()]
        return self.gather(st, length)

    def iter_windows(
        self, length: int, batch_size: int, max_windows: int | None = None
    ) -> Iterator[MotionBatch]:
        """:meth:`fixed_windows` in batches of ``batch_size``."""
        full = self.fixed_windows(length, max_windows)
        for i in range(0, len(full), batch_size):
            yield MotionBatch(
                full.frames[i : i + batch_size],
                full.controls[i : i + batch_size],
                full.root_yaw[i : i + batch_size],
                full.root_pos[i : i + batch_size],
            )


@dataclass
class FeatureStats:
    """Normalisation statistics (computed on the training set) used inside the model.

    ``frame_*`` / ``control_*`` normalise inputs; ``delta_*`` describe next-minus-current frame
    differences within clips and scale the model's residual outputs.
    """

    frame_mean: Tensor
    frame_std: Tensor
    control_mean: Tensor
    control_std: Tensor
    delta_mean: Tensor
    delta_std: Tensor

    @classmethod
    def from_dataset(
        cls, dataset: MotionDataset, *, eps: float = 1e-3, delta_eps: float = 1e-4
    ) -> FeatureStats:
        """Per-feature mean/std over all frames (std clamped below at ``eps``/``delta_eps``)."""
        f, c = dataset.frames.double(), dataset.controls.double()
        starts = dataset.window_starts(2)
        delta = f[starts + 1] - f[starts]

        def ms(x: Tensor, e: float) -> tuple[Tensor, Tensor]:
            return x.mean(0).float(), x.std(0, correction=0).clamp_min(e).float()

        fm, fs = ms(f, eps)
        cm, cs = ms(c, eps)
        dm, ds = ms(delta, delta_eps)
        return cls(fm, fs, cm, cs, dm, ds)


# --------------------------------------------------------------------------- generator


def _smooth_keys(
    n: int, t_len: int, spacing: int, values: Tensor
) -> Tensor:  # values (n, K) -> (n, t_len)
    """Smoothstep interpolation of key values placed every ``spacing`` frames."""
    t = torch.arange(t_len, dtype=torch.float32) / spacing
    i0 = t.floor().long()
    s = t - i0
    s = s * s * (3 - 2 * s)
    v0 = values[:, i0]
    v1 = values[:, i0 + 1]
    return v0 * (1 - s) + v1 * s


def _keys(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def generate_locomotion(
    n_clips: int,
    clip_len: int,
    *,
    fps: float = 30.0,
    seed: int = 0,
    noise: float = 0.02,
    name_prefix: str = "gen",
) -> MotionDataset:
    """Procedural humanoid locomotion (deterministic from ``seed``) on :func:`humanoid`.

    Each clip has ``clip_len`` frames at ``fps`` with smoothly varying speed (standing to
    jogging, 0-2.6 m/s) and yaw rate (up to ~90 deg/s), a gait phase advancing with speed /
    stride length, per-clip style (stride, arm swing, vertical bounce, lean, knee lift) and
    smooth per-joint noise of ``noise`` rad. Kinematic only: feet may slide slightly.
    """
    if n_clips < 1 or clip_len < 2:
        raise ValueError(f"need n_clips >= 1 and clip_len >= 2, got {n_clips} and {clip_len}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    skel = humanoid()
    gen = torch.Generator().manual_seed(int(seed))
    n, t1 = n_clips, clip_len + 1  # one extra leading frame so frame 0 has a true velocity
    dt = 1.0 / fps
    # per-clip style
    stride = _keys(gen, (n, 1), 0.85, 1.15)
    arm = _keys(gen, (n, 1), 0.5, 1.3)
    bounce = _keys(gen, (n, 1), 0.5, 1.5)
    lean = _keys(gen, (n, 1), -0.04, 0.10)
    knee_lift = _keys(gen, (n, 1), 0.8, 1.2)
    # speed and yaw-rate profiles
    sp_spacing = max(2, round(1.5 * fps))
    k = t1 // sp_spacing + 2
    speed_keys = _keys(gen, (n, k), 0.5, 2.6)
    speed_keys = torch.where(torch.rand((n, k), generator=gen) < 0.15, 0.0, speed_keys)
    speed = _smooth_keys(n, t1, sp_spacing, speed_keys)
    yr_spacing = max(2, round(2.0 * fps))
    k = t1 // yr_spacing + 2
    yr_keys = _keys(gen, (n, k), -1.6, 1.6)
    yr_keys = torch.where(torch.rand((n, k), generator=gen) < 0.35, 0.0, yr_keys)
    yaw_rate = _smooth_keys(n, t1, yr_spacing, yr_keys)  # rad/s
    yaw = _keys(gen, (n, 1), -math.pi, math.pi) + torch.cumsum(yaw_rate * dt, dim=1)
    amp = (speed / 1.4).clamp(0, 1).pow(0.7)  # gait amplitude, 0 when standing
    run = ((speed - 1.8) / 0.8).clamp(0, 1)  # 0 walk .. 1 jog
    stride_len = stride * (0.9 + 0.45 * speed)  # metres per gait cycle (two steps)
    freq = speed / stride_len  # gait cycles per second
    phase = _keys(gen, (n, 1), 0, 2 * math.pi) + 2 * math.pi * torch.cumsum(freq * dt, dim=1)
    sn, cs = torch.sin(phase), torch.cos(phase)
    # joint angles, Euler "YXZ" per joint: (yaw/twist, pitch, roll)
    ang = torch.zeros(n, t1, skel.num_joints, 3)
    ix = {name: i for i, name in enumerate(skel.names)}
    turn_bank = (yaw_rate * speed / 2.0).clamp(-0.6, 0.6)
    ang[..., ix["Hips"], 0] = yaw
    ang[..., ix["Hips"], 1] = lean + 0.06 * amp + 0.10 * run
    ang[..., ix["Hips"], 2] = -0.15 * turn_bank + 0.04 * amp * sn
    for sp in ("Spine", "Spine1", "Spine2"):
        ang[..., ix[sp], 0] = -0.07 * amp * arm * sn
        ang[..., ix[sp], 1] = 0.02 + 0.02 * run
    ang[..., ix["Neck"], 1] = -0.5 * (lean + 0.06 * amp + 0.16 * run)
    ang[..., ix["Head"], 0] = 0.15 * amp * arm * sn
    ang[..., ix["Head"], 1] = -0.05
    for side, sgn, ph in (("Left", 1.0, 0.0), ("Right", -1.0, math.pi)):
        s_leg = torch.sin(phase + ph)
        hip_amp = 0.45 * amp * stride * (1 + 0.3 * run)
        ang[..., ix[f"{side}UpLeg"], 0] = 0.07 * amp * sn
        ang[..., ix[f"{side}UpLeg"], 1] = -hip_amp * s_leg - 0.15 * run
        ang[..., ix[f"{side}UpLeg"], 2] = sgn * (0.03 + 0.03 * amp)
        knee = 0.5 + 0.5 * torch.cos(phase + ph - 0.5)
        ang[..., ix[f"{side}Leg"], 1] = 0.06 + amp * knee_lift * (0.55 + 0.5 * run) * knee**2
        ang[..., ix[f"{side}Foot"], 1] = -0.18 * amp * torch.sin(phase + ph + 1.0)
        ang[..., ix[f"{side}Toe"], 1] = 0.25 * amp * torch.sin(phase + ph + 2.0).clamp(min=0)
        ang[..., ix[f"{side}Shoulder"], 2] = sgn * 0.03 * bounce * amp * cs
        ang[..., ix[f"{side}Arm"], 1] = 0.35 * amp * arm * (1 + 0.3 * run) * s_leg
        ang[..., ix[f"{side}Arm"], 2] = sgn * 0.12
        ang[..., ix[f"{side}ForeArm"], 1] = -(0.25 + 0.9 * run + 0.15 * amp * (1 + s_leg))
        ang[..., ix[f"{side}Hand"], 2] = sgn * 0.1
    key_sp = 6
    kn = t1 // key_sp + 2
    jitter = torch.randn((n * skel.num_joints * 3, kn), generator=gen) * noise
    jitter = _smooth_keys(n * skel.num_joints * 3, t1, key_sp, jitter)
    ang = ang + jitter.reshape(n, skel.num_joints, 3, t1).permute(0, 3, 1, 2)
    ang[..., 0, 0] = yaw  # keep the root heading noise-free (noise lives in pitch/roll)
    local_rot = euler_to_matrix(ang, "YXZ")
    # root trajectory: forward speed with surge, lateral sway, vertical bounce
    surge = speed * (1 + 0.04 * bounce * amp * torch.cos(2 * phase))
    fwd = torch.stack((torch.zeros_like(surge), surge * dt), dim=-1)
    base = torch.cumsum(rotate_planar(fwd, yaw), dim=1)
    base = base - base[:, :1] + _keys(gen, (n, 1, 2), -5.0, 5.0)
    sway = torch.stack((0.025 * amp * sn, torch.zeros_like(sn)), dim=-1)
    xz = base + rotate_planar(sway, yaw)
    height = (
        HUMANOID_HIP_HEIGHT
        - 0.01 * amp
        - 0.04 * run
        - 0.02 * bounce * amp * (1 + run) * (0.5 - 0.5 * torch.cos(2 * phase))
    )
    root_pos = torch.stack((xz[..., 0], height, xz[..., 1]), dim=-1)
    frames, controls, r_yaw, r_pos = encode_motion(local_rot, root_pos, fps)
    frames, controls, r_yaw, r_pos = frames[:, 1:], controls[:, 1:], r_yaw[:, 1:], r_pos[:, 1:]
    t_len = clip_len
    return MotionDataset(
        skeleton=skel,
        fps=float(fps),
        frames=frames.reshape(n * t_len, -1).contiguous(),
        controls=controls.reshape(n * t_len, -1).contiguous(),
        root_yaw=r_yaw.reshape(-1).contiguous(),
        root_pos=r_pos.reshape(-1, 3).contiguous(),
        clip_offsets=torch.arange(n + 1) * t_len,
        clip_names=tuple(f"{name_prefix}{i:04d}" for i in range(n)),
    )
