"""Kinematic skeleton description and the built-in humanoid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Skeleton:
    """Joint hierarchy with rest offsets (metres, parent-local, Y up).

    ``parents[0] == -1`` (single root at index 0) and every other parent index precedes its
    child, so a single forward pass over joints computes forward kinematics. ``offsets[j]`` is
    joint ``j``'s position in its parent's frame at rest; the root offset is ignored by FK (the
    root position is given explicitly per frame).
    """

    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: tuple[tuple[float, float, float], ...]

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        parents = tuple(int(p) for p in self.parents)
        offsets = tuple(tuple(float(v) for v in off) for off in _as_rows(self.offsets))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "parents", parents)
        object.__setattr__(self, "offsets", offsets)
        if not names:
            raise ValueError("skeleton must have at least one joint, got 0")
        if len(parents) != len(names) or len(offsets) != len(names):
            raise ValueError(
                f"skeleton sizes differ: {len(names)} names, {len(parents)} parents, "
                f"{len(offsets)} offsets"
            )
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"joint names must be unique, duplicated: {dup}")
        if parents[0] != -1:
            raise ValueError(f"joint 0 must be the root (parent -1), got parent {parents[0]}")
        for j, p in enumerate(parents[1:], start=1):
            if not 0 <= p < j:
                raise ValueError(f"parent of joint {j} ({names[j]!r}) must be in [0, {j}), got {p}")
        for j, off in enumerate(offsets):
            if len(off) != 3 or not all(math.isfinite(v) for v in off):
                raise ValueError(f"offset of joint {names[j]!r} must be 3 finite floats, got {off}")

    @property
    def num_joints(self) -> int:
        """Number of joints J."""
        return len(self.names)

    def index(self, name: str) -> int:
        """Index of the joint called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown joint {name!r}") from None

    def offsets_tensor(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> Tensor:
        """Rest offsets as a (J, 3) tensor."""
        return torch.tensor(self.offsets, dtype=dtype, device=device)

    def children(self, joint: int) -> tuple[int, ...]:
        """Indices of the direct children of ``joint``."""
        return tuple(j for j, p in enumerate(self.parents) if p == joint)


def _as_rows(offsets: Sequence[Sequence[float]] | Tensor) -> list[Sequence[float]]:
    if isinstance(offsets, Tensor):
        return offsets.detach().cpu().double().tolist()
    return [list(o) for o in offsets]


# name, parent name, offset (m). Faces +Z, left is +X, Y up; arms hang down at rest.
_HUMANOID: tuple[tuple[str, str | None, tuple[float, float, float]], ...] = (
    ("Hips", None, (0.0, 0.0, 0.0)),
    ("Spine", "Hips", (0.0, 0.10, 0.0)),
    ("Spine1", "Spine", (0.0, 0.12, 0.0)),
    ("Spine2", "Spine1", (0.0, 0.12, 0.0)),
    ("Neck", "Spine2", (0.0, 0.15, 0.0)),
    ("Head", "Neck", (0.0, 0.10, 0.02)),
    ("LeftShoulder", "Spine2", (0.04, 0.12, 0.0)),
    ("LeftArm", "LeftShoulder", (0.14, 0.0, 0.0)),
    ("LeftForeArm", "LeftArm", (0.0, -0.28, 0.0)),
    ("LeftHand", "LeftForeArm", (0.0, -0.25, 0.0)),
    ("RightShoulder", "Spine2", (-0.04, 0.12, 0.0)),
    ("RightArm", "RightShoulder", (-0.14, 0.0, 0.0)),
    ("RightForeArm", "RightArm", (0.0, -0.28, 0.0)),
    ("RightHand", "RightForeArm", (0.0, -0.25, 0.0)),
    ("LeftUpLeg", "Hips", (0.09, -0.05, 0.0)),
    ("LeftLeg", "LeftUpLeg", (0.0, -0.42, 0.0)),
    ("LeftFoot", "LeftLeg", (0.0, -0.41, 0.0)),
    ("LeftToe", "LeftFoot", (0.0, -0.06, 0.13)),
    ("RightUpLeg", "Hips", (-0.09, -0.05, 0.0)),
    ("RightLeg", "RightUpLeg", (0.0, -0.42, 0.0)),
    ("RightFoot", "RightLeg", (0.0, -0.41, 0.0)),
    ("RightToe", "RightFoot", (0.0, -0.06, 0.13)),
)

HUMANOID_HIP_HEIGHT = 0.95
"""Standing root (Hips) height of :func:`humanoid` in metres (toe joint ~1 cm above ground)."""


def humanoid() -> Skeleton:
    """Built-in 22-joint humanoid (~1.75 m tall), root ``Hips``, Y up, facing +Z, left = +X."""
    names = tuple(n for n, _, _ in _HUMANOID)
    parents = tuple(-1 if p is None else names.index(p) for _, p, _ in _HUMANOID)
    return Skeleton(names=names, parents=parents, offsets=tuple(o for _, _, o in _HUMANOID))
