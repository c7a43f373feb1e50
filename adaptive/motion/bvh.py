"""BVH reading and writing.

Reading accepts any hierarchy, rotation channels in any order (composed intrinsically in channel
order, as BVH specifies) and root position channels in any order. Conventions:

* Lengths are multiplied by ``scale`` (default 0.01: files in centimetres, as CMU, Mixamo and
  LaFAN1 are), giving metres. The file's up axis must be Y.
* The root position is ``OFFSET + position channels``; position channels on non-root joints are
  ignored (their OFFSET is used). ``End Site`` blocks are dropped (they have no rotation).
* Frame 0's velocity/yaw rate copy frame 1's (see :mod:`adaptive.motion.data`).

Malformed files raise :class:`BVHError` with ``"<path>:<line>: <problem>"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from adaptive._checks import atomic_write
from adaptive.errors import InputError

from .data import MotionClip, MotionDataset, encode_motion
from .rotations import _check_order, axis_rotation
from .skeleton import Skeleton


class BVHError(InputError):
    """A BVH file could not be read; the message names the file, line and problem."""


@dataclass
class _Joint:
    name: str
    parent: int
    offset: tuple[float, float, float]
    channels: list[str] = field(default_factory=list)
    line: int = 0


_CHANNELS = {f"{ax}{kind}": (kind, ax) for ax in "XYZ" for kind in ("position", "rotation")}


class _Parser:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.tokens: list[tuple[str, int]] = []
        self.pos = 0
        self.last_line = max(1, len(self.lines))

    def error(self, line: int, problem: str) -> BVHError:
        return BVHError(f"{self.path}:{line}: {problem}")

    def _fill_until_motion(self) -> None:
        for i, line in enumerate(self.lines, start=1):
            for tok in line.split():
                self.tokens.append((tok, i))

    def next(self, what: str) -> tuple[str, int]:
        if self.pos >= len(self.tokens):
            raise self.error(self.last_line, f"expected {what}, got end of file")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect(self, word: str) -> int:
        tok, line = self.next(repr(word))
        if tok.upper() != word.upper():
            raise self.error(line, f"expected {word!r}, got {tok!r}")
        return line

    def number(self, what: str) -> float:
        tok, line = self.next(what)
        try:
            value = float(tok)
        except ValueError:
            raise self.error(line, f"invalid number {tok!r} for {what}") from None
        if not math.isfinite(value):
            raise self.error(line, f"non-finite number {tok!r} for {what}")
        return value

    def parse(self) -> tuple[list[_Joint], float, list[list[float]], int]:
        self._fill_until_motion()
        self.expect("HIERARCHY")
        joints: list[_Joint] = []
        tok, line = self.next("'ROOT'")
        if tok.upper() != "ROOT":
            raise self.error(line, f"expected 'ROOT', got {tok!r}")
        self._joint(joints, -1, line)
        tok, line = self.next("'MOTION'")
        if tok.upper() != "MOTION":
            raise self.error(line, f"expected 'MOTION' after the root joint, got {tok!r}")
        tok, line = self.next("'Frames:'")
        if tok.upper() != "FRAMES:":
            raise self.error(line, f"expected 'Frames:', got {tok!r}")
        n_tok, n_line = self.next("frame count")
        try:
            n_frames = int(n_tok)
        except ValueError:
            raise self.error(n_line, f"invalid frame count {n_tok!r}") from None
        if n_frames < 1:
            raise self.error(n_line, f"frame count must be >= 1, got {n_frames}")
        self.expect("Frame")
        self.expect("Time:")
        dt_line = self.tokens[self.pos][1] if self.pos < len(self.tokens) else self.last_line
        frame_time = self.number("frame time")
        if frame_time <= 0:
            raise self.error(dt_line, f"frame time must be positive, got {frame_time}")
        n_ch = sum(len(j.channels) for j in joints)
        rows: list[list[float]] = []
        for i in range(dt_line, len(self.lines)):  # lines after the frame-time line (0-based i)
            text = self.lines[i].split()
            if not text:
                continue
            line_no = i + 1
            if len(rows) == n_frames:
                raise self.error(line_no, f"more frame lines than the {n_frames} declared")
            if len(text) != n_ch:
                raise self.error(
                    line_no, f"frame {len(rows)} has {len(text)} values, expected {n_ch}"
                )
            try:
                row = [float(v) for v in text]
            except ValueError:
                bad = next(v for v in text if not _is_float(v))
                raise self.error(line_no, f"invalid number {bad!r} in frame {len(rows)}") from None
            if not all(math.isfinite(v) for v in row):
                raise self.error(line_no, f"non-finite value in frame {len(rows)}")
            rows.append(row)
        if len(rows) != n_frames:
            raise self.error(
                self.last_line, f"file declares {n_frames} frames but contains {len(rows)}"
            )
        return joints, frame_time, rows, n_ch

    def _joint(self, joints: list[_Joint], parent: int, line: int) -> None:
        name_tok, name_line = self.next("joint name")
        if name_tok == "{":
            raise self.error(name_line, "joint has no name")
        if any(j.name == name_tok for j in joints):
            raise self.error(name_line, f"duplicate joint name {name_tok!r}")
        self.expect("{")
        self.expect("OFFSET")
        offset = (self.number("OFFSET x"), self.number("OFFSET y"), self.number("OFFSET z"))
        joint = _Joint(name_tok, parent, offset, line=name_line)
        index = len(joints)
        joints.append(joint)
        tok, tline = self.next("'CHANNELS'")
        if tok.upper() != "CHANNELS":
            raise self.error(tline, f"expected 'CHANNELS' in joint {name_tok!r}, got {tok!r}")
        c_tok, c_line = self.next("channel count")
        try:
            n = int(c_tok)
        except ValueError:
            raise self.error(c_line, f"invalid channel count {c_tok!r}") from None
        if n < 0:
            raise self.error(c_line, f"channel count must be >= 0, got {n}")
        for _ in range(n):
            ch, ch_line = self.next("channel name")
            key = ch[0].upper() + ch[1:].lower() if ch else ch
            if key not in _CHANNELS:
                raise self.error(ch_line, f"unknown channel {ch!r} in joint {name_tok!r}")
            joint.channels.append(key)
        while True:
            tok, tline = self.next("'JOINT', 'End Site' or '}'")
            up = tok.upper()
            if up == "}":
                return
            if up == "JOINT":
                self._joint(joints, index, tline)
            elif up == "END":
                self.expect("Site")
                self.expect("{")
                self.expect("OFFSET")
                for axis in "xyz":
                    self.number(f"End Site OFFSET {axis}")
                self.expect("}")
            else:
                raise self.error(
                    tline, f"expected 'JOINT', 'End Site' or '}}' in {name_tok!r}, got {tok!r}"
                )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_raw(
    path: str | Path, scale: float, frame_step: int
) -> tuple[Skeleton, Tensor, Tensor, float]:
    """Parse a BVH file: (skeleton, local rotations (T, J, 3, 3), root positions (T, 3), fps)."""
    p = Path(path)
    if scale <= 0 or not math.isfinite(scale):
        raise BVHError(f"scale must be positive and finite, got {scale}")
    if frame_step < 1:
        raise BVHError(f"frame_step must be >= 1, got {frame_step}")
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise BVHError(f"{p}:0: cannot read file: {exc}") from exc
    parser = _Parser(p, text)
    joints, frame_time, rows, _ = parser.parse()
    data = torch.tensor(rows, dtype=torch.float64)[::frame_step]
    t_len = data.shape[0]
    rots = []
    root_pos = torch.tensor(joints[0].offset, dtype=torch.float64).expand(t_len, 3).clone()
    col = 0
    for j, joint in enumerate(joints):
        rot = torch.eye(3, dtype=torch.float64).expand(t_len, 3, 3)
        for ch in joint.channels:
            kind, axis = _CHANNELS[ch]
            values = data[:, col]
            col += 1
            if kind == "rotation":
                rot = rot @ axis_rotation(axis, torch.deg2rad(values))
            elif j == 0:
                root_pos[:, "XYZ".index(axis)] += values
        rots.append(rot)
    local_rot = torch.stack(rots, dim=1)
    try:
        skeleton = Skeleton(
            names=tuple(j.name for j in joints),
            parents=tuple(j.parent for j in joints),
            offsets=tuple(tuple(v * scale for v in j.offset) for j in joints),
        )
    except ValueError as exc:
        raise BVHError(f"{p}:{joints[0].line}: invalid hierarchy: {exc}") from exc
    fps = 1.0 / (frame_time * frame_step)
    if abs(fps - round(fps)) < 1e-3:  # "0.0333333" means 30 fps
        fps = float(round(fps))
    return skeleton, local_rot.float(), (root_pos * scale).float(), fps


def load_bvh(
    path: str | Path,
    *,
    scale: float = 0.01,
    frame_step: int = 1,
    control_horizon_s: float = 0.5,
) -> tuple[Skeleton, MotionClip]:
    """Read a BVH file into its skeleton and a clip in the frame representation.

    ``scale`` converts file units to metres (0.01: centimetres); ``frame_step`` keeps every
    k-th frame (fps divided accordingly).
    """
    skeleton, local_rot, root_pos, fps = _read_raw(path, scale, frame_step)
    frames, controls, yaw, pos = encode_motion(
        local_rot, root_pos, fps, control_horizon_s=control_horizon_s
    )
    return skeleton, MotionClip(frames, controls, yaw, pos, fps, name=Path(path).stem)


def load_bvh_folder(
    directory: str | Path,
    *,
    scale: float = 0.01,
    frame_step: int = 1,
    pattern: str = "*.bvh",
    recursive: bool = False,
) -> MotionDataset:
    """Read all matching BVH files (sorted by path) into one dataset.

    All files must share joint names and parents and the frame rate; the first file's offsets
    define the skeleton.
    """
    root = Path(directory)
    if not root.is_dir():
        raise BVHError(f"not a directory: {str(root)!r}")
    files = sorted(root.rglob(pattern) if recursive else root.glob(pattern))
    if not files:
        raise BVHError(f"no files matching {pattern!r} in {str(root)!r}")
    skeleton: Skeleton | None = None
    clips: list[MotionClip] = []
    for f in files:
        skel, clip = load_bvh(f, scale=scale, frame_step=frame_step)
        if skeleton is None:
            skeleton = skel
        elif skel.names != skeleton.names or skel.parents != skeleton.parents:
            raise BVHError(f"{f}:1: joint hierarchy differs from {files[0]}")
        elif abs(clip.fps - clips[0].fps) > 1e-6 * clips[0].fps:
            raise BVHError(f"{f}:1: frame rate {clip.fps:g} differs from {clips[0].fps:g}")
        clips.append(clip)
    assert skeleton is not None
    return MotionDataset.from_clips(skeleton, clips)


def write_bvh(
    path: str | Path,
    skeleton: Skeleton,
    local_euler: Tensor,
    root_pos: Tensor,
    order: str = "ZXY",
    *,
    fps: float = 30.0,
    scale: float = 0.01,
) -> None:
    """Write a BVH file.

    ``local_euler`` (T, J, 3): radians, angle i about axis ``order[i]`` (intrinsic; the root's
    rotation is in world space); ``root_pos`` (T, 3) in metres. Lengths are divided by ``scale``
    (default: write centimetres). The root gets ``X/Y/Zposition`` + rotation channels, other
    joints rotation channels; leaves get a zero-length End Site. Joints are written depth-first
    from the root, which is the joint order :func:`load_bvh` returns (the skeleton's own order
    when its joints are listed depth-first, as in :func:`humanoid`).
    """
    order = _check_order(order)
    t_len = local_euler.shape[0]
    j_count = skeleton.num_joints
    if local_euler.shape != (t_len, j_count, 3) or root_pos.shape != (t_len, 3) or t_len < 1:
        raise ValueError(
            f"need local_euler (T, {j_count}, 3) and root_pos (T, 3) with T >= 1, got "
            f"{tuple(local_euler.shape)} and {tuple(root_pos.shape)}"
        )
    if fps <= 0 or scale <= 0:
        raise ValueError(f"fps and scale must be positive, got {fps} and {scale}")
    rot_ch = " ".join(f"{a}rotation" for a in order)
    out: list[str] = ["HIERARCHY"]

    def fmt(values: Sequence[float]) -> str:
        return " ".join(f"{v:.6f}" for v in values)

    def emit(j: int, depth: int) -> None:
        ind = "  " * depth
        kw = "ROOT" if j == 0 else "JOINT"
        out.append(f"{ind}{kw} {skeleton.names[j]}")
        out.append(f"{ind}{{")
        out.append(f"{ind}  OFFSET {fmt([v / scale for v in skeleton.offsets[j]])}")
        if j == 0:
            out.append(f"{ind}  CHANNELS 6 Xposition Yposition Zposition {rot_ch}")
        else:
            out.append(f"{ind}  CHANNELS 3 {rot_ch}")
        kids = skeleton.children(j)
        for c in kids:
            emit(c, depth + 1)
        if not kids:
            out.append(f"{ind}  End Site")
            out.append(f"{ind}  {{")
            out.append(f"{ind}    OFFSET 0.000000 0.000000 0.000000")
            out.append(f"{ind}  }}")
        out.append(f"{ind}}}")

    emit(0, 0)
    out += ["MOTION", f"Frames: {t_len}", f"Frame Time: {1.0 / fps:.8f}"]
    root_offset = torch.tensor(skeleton.offsets[0], dtype=torch.float64)
    pos = (root_pos.double() - root_offset) / scale
    deg = torch.rad2deg(local_euler.double())
    # joints are written depth-first, which is the channel order in the file
    written: list[int] = []

    def dfs(j: int) -> None:
        written.append(j)
        for c in skeleton.children(j):
            dfs(c)

    dfs(0)
    for t in range(t_len):
        vals = pos[t].tolist()
        for j in written:
            vals += deg[t, j].tolist()
        out.append(fmt(vals))
    text = "\n".join(out) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
