"""Rotation utilities (torch, batched over leading dims).

Conventions: right-handed, Y up, a character with yaw 0 faces +Z. Matrices act on column
vectors (``v' = R @ v``). Euler angles follow BVH: intrinsic rotations applied in the order of
the order string, i.e. ``order="ZXY"`` gives ``R = Rz(a[0]) @ Rx(a[1]) @ Ry(a[2])``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

_AXES = "XYZ"


def _check_axis(axis: str) -> int:
    idx = _AXES.find(axis.upper()) if len(axis) == 1 else -1
    if idx < 0:
        raise ValueError(f"rotation axis must be one of 'X', 'Y', 'Z', got {axis!r}")
    return idx


def axis_rotation(axis: str, angle: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) about a principal axis ('X', 'Y' or 'Z') by ``angle`` rad."""
    idx = _check_axis(axis)
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if idx == 0:
        rows = (one, zero, zero, zero, c, -s, zero, s, c)
    elif idx == 1:
        rows = (c, zero, s, zero, one, zero, -s, zero, c)
    else:
        rows = (c, -s, zero, s, c, zero, zero, zero, one)
    return torch.stack(rows, dim=-1).reshape(*angle.shape, 3, 3)


def _check_order(order: str) -> str:
    up = order.upper() if isinstance(order, str) else ""
    if len(up) != 3 or any(ch not in _AXES for ch in up) or len(set(up)) != 3:
        raise ValueError(f"Euler order must be a permutation of 'XYZ' such as 'ZXY', got {order!r}")
    return up


def euler_to_matrix(angles: Tensor, order: str) -> Tensor:
    """Euler angles (..., 3) in radians (angle i about axis ``order[i]``) to matrices (..., 3, 3).

    Intrinsic composition as in BVH: ``R = R_{order[0]} @ R_{order[1]} @ R_{order[2]}``.
    """
    order = _check_order(order)
    if angles.shape[-1] != 3:
        raise ValueError(f"angles must have a last dimension of 3, got shape {tuple(angles.shape)}")
    rot = axis_rotation(order[0], angles[..., 0])
    rot = rot @ axis_rotation(order[1], angles[..., 1])
    return rot @ axis_rotation(order[2], angles[..., 2])


def matrix_to_euler(matrix: Tensor, order: str) -> Tensor:
    """Inverse of :func:`euler_to_matrix` for Tait–Bryan orders; middle angle in [-pi/2, pi/2]."""
    order = _check_order(order)
    i, j, k = (_AXES.index(ch) for ch in order)
    sign = 1.0 if (i, j, k) in ((0, 1, 2), (1, 2, 0), (2, 0, 1)) else -1.0
    m = matrix
    a = torch.atan2(-sign * m[..., j, k], m[..., k, k])
    b = torch.asin((sign * m[..., i, k]).clamp(-1.0, 1.0))
    c = torch.atan2(-sign * m[..., i, j], m[..., i, i])
    return torch.stack((a, b, c), dim=-1)


def rot6d_to_matrix(x: Tensor) -> Tensor:
    """6D rotation (..., 6) to matrices (..., 3, 3) by Gram–Schmidt (Zhou et al., CVPR 2019).

    The 6D vector holds the first two *columns* of the matrix, ``[R[:, 0], R[:, 1]]``.
    """
    if x.shape[-1] != 6:
        raise ValueError(
            f"6D rotations must have a last dimension of 6, got shape {tuple(x.shape)}"
        )
    b = normalize_rot6d(x)
    b1, b2 = b[..., :3], b[..., 3:]
    b3 = _cross(b1, b2)
    return torch.stack((b1, b2, b3), dim=-1)


def normalize_rot6d(x: Tensor) -> Tensor:
    """Gram–Schmidt-orthonormalise 6D rotations (..., 6) (= matrix_to_rot6d(rot6d_to_matrix))."""
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = F.normalize(a1, dim=-1, eps=1e-8)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1, eps=1e-8)
    return torch.cat((b1, b2), dim=-1)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    # elementwise formula: much faster than torch.cross for many tiny vectors on CPU
    ax, ay, az = a.unbind(-1)
    bx, by, bz = b.unbind(-1)
    return torch.stack((ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx), dim=-1)


def matrix_to_rot6d(matrix: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) to 6D (..., 6): first two columns concatenated."""
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrices must have trailing shape (3, 3), got {tuple(matrix.shape)}")
    return torch.cat((matrix[..., :, 0], matrix[..., :, 1]), dim=-1)


def yaw_matrix(yaw: Tensor) -> Tensor:
    """Rotation (..., 3, 3) about +Y by ``yaw`` radians (heading; yaw 0 faces +Z)."""
    return axis_rotation("Y", yaw)


def wrap_angle(angle: Tensor) -> Tensor:
    """Wrap angles (radians) to [-pi, pi); gradient is 1 almost everywhere."""
    return torch.remainder(angle + math.pi, 2.0 * math.pi) - math.pi


def yaw_from_matrix(matrix: Tensor) -> Tensor:
    """Heading (radians) of rotations (..., 3, 3): the local +Z axis projected on the XZ plane."""
    fwd = matrix[..., :, 2]
    return torch.atan2(fwd[..., 0], fwd[..., 2])


def rotate_planar(xz: Tensor, yaw: Tensor) -> Tensor:
    """Rotate planar vectors (..., 2) given as (x, z) about +Y by ``yaw`` (same as yaw_matrix)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    x, z = xz[..., 0], xz[..., 1]
    return torch.stack((c * x + s * z, -s * x + c * z), dim=-1)
