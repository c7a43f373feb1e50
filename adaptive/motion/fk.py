"""Batched forward kinematics."""

from __future__ import annotations

import torch
from torch import Tensor

from .skeleton import Skeleton


def forward_kinematics(
    skeleton: Skeleton, local_rot: Tensor, root_pos: Tensor, *, return_rotations: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Global joint positions (..., J, 3) from local rotations (..., J, 3, 3) and root positions.

    ``local_rot[..., 0]`` is the root's rotation in the world (or whatever frame ``root_pos`` is
    in); joint ``j`` sits at ``pos[parent] + R_global[parent] @ offset[j]`` with
    ``R_global[j] = R_global[parent] @ local_rot[j]``. The root offset is ignored. With
    ``return_rotations=True`` also returns the global rotations (..., J, 3, 3).
    """
    j_count = skeleton.num_joints
    if local_rot.shape[-3:] != (j_count, 3, 3):
        raise ValueError(
            f"local_rot must end in ({j_count}, 3, 3) for this skeleton, "
            f"got {tuple(local_rot.shape)}"
        )
    if root_pos.shape != (*local_rot.shape[:-3], 3):
        raise ValueError(
            f"root_pos must have shape {(*local_rot.shape[:-3], 3)}, got {tuple(root_pos.shape)}"
        )
    offsets = skeleton.offsets_tensor(dtype=local_rot.dtype, device=local_rot.device)
    rots: list[Tensor] = [local_rot[..., 0, :, :]]
    pos: list[Tensor] = [root_pos]
    for j in range(1, j_count):
        p = skeleton.parents[j]
        pos.append(pos[p] + (rots[p] * offsets[j]).sum(-1))
        rots.append(rots[p] @ local_rot[..., j, :, :])
    positions = torch.stack(pos, dim=-2)
    if return_rotations:
        return positions, torch.stack(rots, dim=-3)
    return positions
