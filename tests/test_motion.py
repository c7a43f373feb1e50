"""Tests for the reference motion-learning core (adaptive.motion)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from adaptive.motion import (
    BVHError,
    FeatureStats,
    MotionJointLoss,
    MotionModel,
    Skeleton,
    batch_loss,
    encode_motion,
    euler_to_matrix,
    evaluate,
    forward_kinematics,
    frame_dim,
    generate_locomotion,
    global_positions,
    humanoid,
    integrate_root,
    load_bvh,
    load_bvh_folder,
    make_splits,
    matrix_to_euler,
    matrix_to_rot6d,
    rot6d_to_matrix,
    split_frames,
    teacher_forced,
    wrap_angle,
    write_bvh,
    yaw_matrix,
)
from adaptive.motion.rotations import axis_rotation

torch.set_num_threads(2)
HALF_PI = math.pi / 2


@pytest.fixture(scope="module")
def small_data():
    train, val = make_splits(7, 6, 2, 90)
    return train, val, FeatureStats.from_dataset(train)


def _chain() -> Skeleton:
    return Skeleton(("root", "a", "b"), (-1, 0, 1), ((0, 0, 0), (1, 0, 0), (1, 0, 0)))


# ------------------------------------------------------------------ rotations, skeleton, FK


def test_fk_two_bone_chain_hand_computed():
    sk = _chain()
    eye = torch.eye(3).expand(3, 3, 3).clone()
    pos = forward_kinematics(sk, eye, torch.tensor([0.0, 0.0, 0.0]))
    assert torch.allclose(pos, torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]))
    rot = eye.clone()
    rot[0] = axis_rotation("Z", torch.tensor(HALF_PI))  # root +90 deg about Z: +X -> +Y
    rot[1] = axis_rotation("Z", torch.tensor(HALF_PI))  # elbow another +90: second bone -> -X
    pos = forward_kinematics(sk, rot, torch.tensor([0.5, 0.0, 2.0]))
    want = torch.tensor([[0.5, 0.0, 2.0], [0.5, 1.0, 2.0], [-0.5, 1.0, 2.0]])
    assert torch.allclose(pos, want, atol=1e-6)


def test_fk_90_degree_turn_of_humanoid():
    sk = humanoid()
    j = sk.num_joints
    eye = torch.eye(3).expand(j, 3, 3).clone()
    root = torch.tensor([1.0, 0.95, -2.0])
    rest = forward_kinematics(sk, eye, root)
    turned = eye.clone()
    turned[0] = yaw_matrix(torch.tensor(HALF_PI))
    pos = forward_kinematics(sk, turned, root)
    # yaw +90 deg maps (x, y, z) -> (z, y, -x) around the root
    rel = rest - root
    want = torch.stack((rel[:, 2], rel[:, 1], -rel[:, 0]), dim=-1) + root
    assert torch.allclose(pos, want, atol=1e-6)
    left_hip = pos[sk.index("LeftUpLeg")]
    assert torch.allclose(left_hip, torch.tensor([1.0, 0.90, -2.09]), atol=1e-6)


def test_fk_batched_shapes_and_errors():
    sk = _chain()
    rot = euler_to_matrix(torch.randn(4, 5, 3, 3), "XYZ")
    assert forward_kinematics(sk, rot, torch.zeros(4, 5, 3)).shape == (4, 5, 3, 3)
    with pytest.raises(ValueError, match=r"\(3, 3, 3\)"):
        forward_kinematics(sk, rot[..., :2, :, :], torch.zeros(4, 5, 3))


def test_rot6d_round_trip_and_orthonormal():
    g = torch.Generator().manual_seed(0)
    rot = euler_to_matrix(torch.rand(64, 3, generator=g) * 6 - 3, "ZXY")
    assert torch.allclose(rot6d_to_matrix(matrix_to_rot6d(rot)), rot, atol=1e-6)
    r = rot6d_to_matrix(torch.randn(64, 6, generator=g))
    assert torch.allclose(r @ r.transpose(-1, -2), torch.eye(3).expand(64, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(64), atol=1e-5)


@pytest.mark.parametrize("order", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_euler_intrinsic_order_and_inverse(order):
    g = torch.Generator().manual_seed(1)
    ang = (torch.rand(32, 3, generator=g) - 0.5) * torch.tensor([6.0, 3.0, 6.0])
    rot = euler_to_matrix(ang, order)
    explicit = (
        axis_rotation(order[0], ang[:, 0])
        @ axis_rotation(order[1], ang[:, 1])
        @ axis_rotation(order[2], ang[:, 2])
    )
    assert torch.allclose(rot, explicit, atol=1e-6)
    assert torch.allclose(matrix_to_euler(rot, order), ang, atol=1e-4)


def test_rotation_input_errors():
    with pytest.raises(ValueError, match="'XXY'"):
        euler_to_matrix(torch.zeros(3), "XXY")
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        rot6d_to_matrix(torch.zeros(2, 5))


def test_wrap_angle_range():
    x = torch.tensor([0.0, math.pi + 0.1, -math.pi - 0.1, 7.0])
    w = wrap_angle(x)
    assert bool(((w >= -math.pi) & (w < math.pi)).all())
    assert torch.allclose(torch.cos(w), torch.cos(x), atol=1e-6)


def test_skeleton_validation():
    with pytest.raises(ValueError, match="got 1"):
        Skeleton(("a", "b"), (-1, 1), ((0, 0, 0), (0, 1, 0)))
    with pytest.raises(ValueError, match="'a'"):
        Skeleton(("a", "a"), (-1, 0), ((0, 0, 0), (0, 1, 0)))
    sk = humanoid()
    assert sk.num_joints == 22 and sk.parents[0] == -1
    rest = forward_kinematics(sk, torch.eye(3).expand(22, 3, 3), torch.tensor([0.0, 0.95, 0.0]))
    height = rest[:, 1]
    assert 1.5 < float(height.max()) < 1.8 and abs(float(height.min())) < 0.03


# ------------------------------------------------------------------ representation and data


def test_encode_integrate_90_degree_turn():
    t_len, fps = 31, 30.0
    yaw = torch.linspace(0, HALF_PI, t_len)
    # 1.2 m/s forward; the step into frame t follows the heading of frame t-1
    step = torch.stack((torch.sin(yaw[:-1]), torch.cos(yaw[:-1])), -1) * (1.2 / fps)
    xz = torch.cat((torch.zeros(1, 2), torch.cumsum(step, 0)))
    root_pos = torch.stack((xz[:, 0], torch.full((t_len,), 0.9), xz[:, 1]), -1)
    local = torch.eye(3).expand(t_len, 22, 3, 3).clone()
    local[:, 0] = yaw_matrix(yaw)
    frames, controls, r_yaw, r_pos = encode_motion(local, root_pos, fps)
    parts = split_frames(frames, 22)
    assert torch.allclose(parts.yaw_rate, torch.full((t_len,), HALF_PI / 30), atol=1e-6)
    assert torch.allclose(parts.root_vel[1:, 1], torch.full((t_len - 1,), 1.2), atol=1e-4)
    assert torch.allclose(parts.root_vel[1:, 0], torch.zeros(t_len - 1), atol=1e-4)
    assert torch.allclose(controls[:, 2], parts.yaw_rate, atol=1e-6)
    yaw_i, pos_i = integrate_root(frames[1:], 22, fps, r_yaw[0], r_pos[0])
    assert abs(float(yaw_i[-1]) - HALF_PI) < 1e-5
    assert torch.allclose(pos_i, root_pos[1:], atol=1e-5)


def test_generator_deterministic_and_seed_dependent():
    a = generate_locomotion(3, 40, seed=5)
    b = generate_locomotion(3, 40, seed=5)
    c = generate_locomotion(3, 40, seed=6)
    for name in ("frames", "controls", "root_yaw", "root_pos"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.allclose(a.frames, c.frames)
    assert a.frames.shape == (120, frame_dim(22)) and a.num_clips == 3
    assert torch.isfinite(a.frames).all()


def test_generated_clip_reconstructs_global_trajectory():
    ds = generate_locomotion(2, 60, seed=2)
    clip = ds.clip(1)
    yaw, pos = integrate_root(clip.frames[1:], 22, ds.fps, clip.root_yaw[0], clip.root_pos[0])
    assert torch.allclose(yaw, clip.root_yaw[1:], atol=1e-5)
    assert torch.allclose(pos, clip.root_pos[1:], atol=1e-4)


def test_splits_and_windows_deterministic(small_data):
    train, val, stats = small_data
    assert train.num_clips == 6 and val.num_clips == 2
    assert not torch.allclose(train.frames[:90], val.frames[:90])
    b1 = train.sample_windows(5, 20, torch.Generator().manual_seed(3))
    b2 = train.sample_windows(5, 20, torch.Generator().manual_seed(3))
    assert torch.equal(b1.frames, b2.frames) and b1.frames.shape == (5, 20, frame_dim(22))
    assert b1.controls.shape == (5, 20, 3) and b1.root_pos.shape == (5, 20, 3)
    starts = train.window_starts(20)
    assert starts.numel() == 6 * (90 - 20 + 1)  # windows never cross clips
    assert stats.frame_mean.shape == (frame_dim(22),) and bool((stats.delta_std > 0).all())
    fixed = val.fixed_windows(30)
    assert len(fixed) == 2 * 3


# ------------------------------------------------------------------ BVH


def _euler_clip(order: str, t_len: int = 12) -> tuple[Skeleton, torch.Tensor, torch.Tensor]:
    sk = humanoid()
    g = torch.Generator().manual_seed(4)
    eul = (torch.rand(t_len, sk.num_joints, 3, generator=g) - 0.5) * 1.0
    eul[:, 0, :] = (torch.rand(t_len, 3, generator=g) - 0.5) * 3.0
    root = torch.cumsum(torch.rand(t_len, 3, generator=g) * 0.05, 0) + torch.tensor([0, 0.9, 0])
    return sk, eul, root


@pytest.mark.parametrize("order", ["ZXY", "XYZ", "YZX"])
def test_bvh_round_trip(tmp_path: Path, order: str):
    sk, eul, root = _euler_clip(order)
    path = tmp_path / f"clip_{order}.bvh"
    write_bvh(path, sk, eul, root, order, fps=60.0)
    text = path.read_text()
    assert f"CHANNELS 3 {order[0]}rotation" in text and "OFFSET 0.000000 -42.000000" in text
    sk2, clip = load_bvh(path)
    assert sk2.names == sk.names and sk2.parents == sk.parents
    assert torch.allclose(sk2.offsets_tensor(), sk.offsets_tensor(), atol=1e-6)
    assert clip.fps == 60.0 and len(clip) == eul.shape[0] and clip.name == f"clip_{order}"
    want = forward_kinematics(sk, euler_to_matrix(eul, order), root)
    got = global_positions(sk2, clip.frames, clip.root_yaw, clip.root_pos)
    assert torch.allclose(got, want, atol=1e-4)


def test_bvh_scale_and_folder(tmp_path: Path):
    sk, eul, root = _euler_clip("ZXY", 10)
    write_bvh(tmp_path / "a.bvh", sk, eul, root, "ZXY", scale=1.0)  # file in metres
    write_bvh(tmp_path / "b.bvh", sk, eul[:8], root[:8], "ZXY", scale=1.0)
    _, clip = load_bvh(tmp_path / "a.bvh", scale=1.0)
    assert torch.allclose(clip.root_pos, root, atol=1e-5)
    ds = load_bvh_folder(tmp_path, scale=1.0)
    assert ds.num_clips == 2 and ds.clip_lengths.tolist() == [10, 8]
    assert ds.clip_names == ("a", "b")
    other = Skeleton(("r", "c"), (-1, 0), ((0, 0, 0), (0, 1, 0)))
    write_bvh(tmp_path / "c.bvh", other, torch.zeros(3, 2, 3), torch.zeros(3, 3))
    with pytest.raises(BVHError, match=r"c\.bvh"):
        load_bvh_folder(tmp_path)


_GOOD = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Leg
  {
    OFFSET 0 -40 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 -40 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.0333333
0 90 0 0 0 0 0 0 0
0 90 1 0 0 0 10 0 0
"""


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (_GOOD.replace("HIERARCHY", "HIERARCHX"), 1, "HIERARCHY"),
        (_GOOD.replace("OFFSET 0 -40 0\n    CHANNELS", "OFFSET 0 -4x0 0\n    CHANNELS"), 8, "-4x0"),
        (_GOOD.replace("CHANNELS 3 Zrotation", "CHANNELS 3 Zrot"), 9, "'Zrot'"),
        (_GOOD.replace("0 90 1 0 0 0 10 0 0", "0 90 1 0 0 0 10 0"), 20, "8 values"),
        (_GOOD.replace("Frames: 2", "Frames: 3"), 20, "declares 3 frames"),
        (_GOOD.replace("0 90 1 0 0 0 10 0 0", "0 90 1 0 0 0 1e0 zz 0"), 20, "'zz'"),
        (_GOOD.replace("  }\n}\nMOTION", "  }\nMOTION"), 15, "'JOINT', 'End Site' or '}'"),
        ("", 1, "end of file"),
    ],
)
def test_bad_bvh_names_file_and_line(tmp_path: Path, text: str, line: int, problem: str):
    path = tmp_path / "bad.bvh"
    path.write_text(text)
    with pytest.raises(BVHError) as info:
        load_bvh(path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert msg.startswith(f"{path}:{line}:"), msg
    assert problem in msg


def test_good_bvh_text_parses(tmp_path: Path):
    path = tmp_path / "good.bvh"
    path.write_text(_GOOD)
    sk, clip = load_bvh(path)
    assert sk.names == ("Hips", "Leg") and clip.fps == 30.0
    assert torch.allclose(clip.root_pos[1], torch.tensor([0.0, 0.9, 0.01]))
    assert abs(float(clip.root_yaw[1])) < 1e-6  # 10 deg about X does not change the heading
    with pytest.raises(BVHError, match="cannot read"):
        load_bvh(tmp_path / "missing.bvh")


# ------------------------------------------------------------------ model and loss


def test_model_shapes_and_any_skeleton():
    sk = _chain()
    ds = generate_locomotion(1, 30, seed=0)  # stats shapes come from the skeleton below
    d = frame_dim(3)
    stats = FeatureStats(
        torch.zeros(d), torch.ones(d), torch.zeros(3), torch.ones(3), torch.zeros(d), torch.ones(d)
    )
    model = MotionModel(sk, stats, hidden_size=16)
    frames = torch.randn(2, 6, d)
    pred = teacher_forced(model, frames, torch.randn(2, 6, 3))
    assert pred.shape == (2, 5, d)
    with pytest.raises(ValueError, match="stats frame_mean"):
        MotionModel(sk, FeatureStats.from_dataset(ds))


def test_detailed_losses_sum_to_total(small_data):
    train, _, _ = small_data
    b = train.sample_windows(4, 16, torch.Generator().manual_seed(0))
    pred = b.frames + 0.05 * torch.randn(b.frames.shape, generator=torch.Generator().manual_seed(1))
    loss = MotionJointLoss(train.skeleton, {"fk_pos": 3.0, "yaw": 0.5})
    assert loss.components == ("fk_pos", "rot", "root_vel", "yaw")
    total = loss(pred, b.frames)
    assert isinstance(total, torch.Tensor) and total.ndim == 0
    loss.return_detailed_losses = True
    total2, raw = loss(pred, b.frames)
    assert tuple(raw) == loss.components
    w = loss.weights
    recomputed = w["fk_pos"] * raw["fk_pos"]
    for c in loss.components[1:]:
        recomputed = recomputed + w[c] * raw[c]
    assert torch.equal(total2, recomputed) and torch.equal(total, total2)
    assert all(float(v) > 0 for v in raw.values())
    loss.weights = {"rot": 0.0}
    assert loss.weights == {"fk_pos": 3.0, "rot": 0.0, "root_vel": 1.0, "yaw": 0.5}
    with pytest.raises(ValueError, match="'bogus'"):
        loss.weights = {"bogus": 1.0}
    with pytest.raises(ValueError, match="-1"):
        loss.weights = {"yaw": -1}
    assert float(loss.component_losses(b.frames, b.frames)["fk_pos"]) == 0.0


def test_yaw_loss_is_wrapped(small_data):
    train, _, _ = small_data
    b = train.sample_windows(2, 8, torch.Generator().manual_seed(0))
    loss = MotionJointLoss(train.skeleton)
    pred = b.frames.clone()
    pred[..., -2] += 2 * math.pi  # a full turn per frame is no heading error
    assert float(loss.component_losses(pred, b.frames)["yaw"]) < 1e-8


# ------------------------------------------------------------------ batch loss, training, eval


def _model(small_data, hidden=32):
    train, _, stats = small_data
    return MotionModel(train.skeleton, stats, hidden_size=hidden, seed=0)


def test_batch_loss_deterministic(small_data):
    train, _, _ = small_data
    batch = train.sample_windows(4, 20, torch.Generator().manual_seed(0))
    loss_fn = MotionJointLoss(train.skeleton)
    outs = []
    for _ in range(2):
        model = _model(small_data)
        g = torch.Generator().manual_seed(11)
        outs.append(
            [
                batch_loss(
                    model,
                    loss_fn,
                    batch,
                    tf_ratio=0.5,
                    freerun_horizon=8,
                    freerun_weight=0.7,
                    generator=g,
                )
                for _ in range(4)
            ]
        )
    for (t1, r1), (t2, r2) in zip(*outs, strict=True):
        assert torch.equal(t1, t2)
        assert all(torch.equal(r1[c], r2[c]) for c in loss_fn.components)


def test_freerun_contributes_only_when_drawn(small_data):
    train, _, _ = small_data
    batch = train.sample_windows(4, 20, torch.Generator().manual_seed(0))
    model = _model(small_data)
    loss_fn = MotionJointLoss(train.skeleton, {"rot": 2.0})
    tf = loss_fn.component_losses(
        teacher_forced(model, batch.frames, batch.controls), batch.frames[:, 1:]
    )
    kw = {"freerun_horizon": 8, "freerun_weight": 0.7}
    g = torch.Generator().manual_seed(0)
    total, raw, info = batch_loss(
        model, loss_fn, batch, tf_ratio=1.0, generator=g, return_info=True, **kw
    )
    assert info["freerun"] is False and info["fr"] == {}
    assert all(torch.equal(raw[c], tf[c]) for c in loss_fn.components)
    total, raw, info = batch_loss(
        model, loss_fn, batch, tf_ratio=0.0, generator=g, return_info=True, **kw
    )
    assert info["freerun"] is True
    for c in loss_fn.components:
        want = info["tf"][c] + 0.7 * info["fr"][c]
        got = float(raw[c].detach())
        assert math.isclose(got, want, rel_tol=1e-5) and got > float(tf[c].detach())
    assert torch.equal(total, loss_fn.combine(raw))
    # the draw consumes exactly one number from the generator, hit or miss
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    batch_loss(model, loss_fn, batch, tf_ratio=1.0, generator=g1, **kw)
    torch.rand((), generator=g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    hits = []
    g = torch.Generator().manual_seed(3)
    for _ in range(40):
        *_, info = batch_loss(
            model, loss_fn, batch, tf_ratio=0.75, generator=g, return_info=True, **kw
        )
        hits.append(info["freerun"])
    assert 3 <= sum(hits) <= 20
    with pytest.raises(ValueError, match="20"):
        batch_loss(
            model, loss_fn, batch, tf_ratio=0.5, freerun_horizon=20, freerun_weight=1, generator=g
        )


def test_tiny_training_reduces_loss(small_data):
    train, val, _ = small_data
    model = _model(small_data, hidden=64)
    loss_fn = MotionJointLoss(train.skeleton)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    fixed = train.fixed_windows(24)
    start_tf = evaluate(model, val, mode="tf", window=24)

    def fixed_loss() -> float:
        with torch.no_grad():
            return float(
                batch_loss(
                    model,
                    loss_fn,
                    fixed,
                    tf_ratio=1.0,
                    freerun_horizon=0,
                    freerun_weight=0.0,
                    generator=torch.Generator(),
                )[0]
            )

    before = fixed_loss()
    for _ in range(40):
        batch = train.sample_windows(16, 24, g)
        total, _ = batch_loss(
            model, loss_fn, batch, tf_ratio=0.5, freerun_horizon=8, freerun_weight=0.5, generator=g
        )
        opt.zero_grad()
        total.backward()
        opt.step()
    assert fixed_loss() < 0.7 * before
    end_tf = evaluate(model, val, mode="tf", window=24)
    assert end_tf["LocalMPJPE"] < start_tf["LocalMPJPE"]


def test_evaluate_keys_and_determinism(small_data):
    _, val, _ = small_data
    model = _model(small_data)
    model.train()
    tf = evaluate(model, val, mode="tf", window=24)
    free1 = evaluate(model, val, mode="free", seed_frames=5, horizon=30)
    free2 = evaluate(model, val, mode="free", seed_frames=5, horizon=30)
    keys = {"fk_pos", "rot", "root_vel", "yaw", "YawAbsDeg", "MPJPE", "RootDrift", "LocalMPJPE"}
    assert set(tf) == keys and set(free1) == keys
    assert free1 == free2 and model.training
    assert all(math.isfinite(v) and v >= 0 for v in free1.values())
    assert free1["MPJPE"] > tf["MPJPE"]
    with pytest.raises(ValueError, match="'bogus'"):
        evaluate(model, val, mode="bogus")  # type: ignore[arg-type]
