"""Train / validation splits of motion data: procedural splits from a training seed and a
validation seed, and the per-clip tail split (the end of every clip validates)."""

from __future__ import annotations

from .data import MotionClip, MotionDataset, generate_locomotion


def make_splits(
    seed: int,
    n_train_clips: int,
    n_val_clips: int,
    clip_len: int,
    fps: float = 30.0,
    *,
    val_seed: int | None = None,
) -> tuple[MotionDataset, MotionDataset]:
    """Train / validation datasets from independent generator streams derived from ``seed``.

    ``val_seed`` (default ``seed``) seeds the validation clips alone: with one fixed
    ``val_seed`` every training seed is evaluated on identical clips. The validation set of
    ``val_seed=s`` is the one ``seed=s`` gets, and never equals a training stream.
    """
    val_seed = int(seed) if val_seed is None else int(val_seed)
    train = generate_locomotion(
        n_train_clips, clip_len, fps=fps, seed=2 * int(seed) + 1, name_prefix="train"
    )
    val = generate_locomotion(
        n_val_clips, clip_len, fps=fps, seed=2 * val_seed + 2, name_prefix="val"
    )
    return train, val


def split_tails(dataset: MotionDataset, fraction: float) -> tuple[MotionDataset, MotionDataset]:
    """Train / validation sets that cut every clip in two: its last ``fraction`` of frames
    (at least one) validates, the frames before them train. No frame is in both, and the
    split does not depend on any seed."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    train, val = [], []
    for i in range(dataset.num_clips):
        clip = dataset.clip(i)
        n = len(clip)
        cut = n - max(1, round(n * fraction))
        if cut < 1:
            raise ValueError(f"clip {clip.name!r} has {n} frames, too few to split")
        train.append(_clip_slice(clip, 0, cut))
        val.append(_clip_slice(clip, cut, n))
    return (
        MotionDataset.from_clips(dataset.skeleton, train),
        MotionDataset.from_clips(dataset.skeleton, val),
    )


def _clip_slice(clip: MotionClip, a: int, b: int) -> MotionClip:
    return MotionClip(
        clip.frames[a:b],
        clip.controls[a:b],
        clip.root_yaw[a:b],
        clip.root_pos[a:b],
        clip.fps,
        clip.name,
    )
