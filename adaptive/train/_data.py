"""Data loading for the reference trainer: the device, the train / validation datasets
from the config's data section, and one batch of training windows."""

from __future__ import annotations

from typing import Any

import torch

from adaptive.motion import MotionBatch, MotionDataset, make_splits, split_tails
from adaptive.train import distributed
from adaptive.train._records import TrainingError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' requested but CUDA is not available")
    if name not in ("cpu", "cuda"):
        raise TrainingError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def val_seed(cfg: dict[str, Any]) -> int:
    """The seed that picks the validation data: `data.val_seed`, or `run.seed` when it is
    negative (the default), so that by default every seed validates on its own data."""
    seed = int(cfg["data"]["val_seed"])
    return int(cfg["run"]["seed"]) if seed < 0 else seed


def load_datasets(cfg: dict[str, Any]) -> tuple[MotionDataset, MotionDataset]:
    """Train / validation datasets from the config's data section.

    Procedural: generated from `run.seed` (train) and `val_seed(cfg)` (validation). BVH:
    `data.val_split = "clips"` holds out whole clips chosen by `val_seed(cfg)`; `"tail"`
    validates on the last `data.val_fraction` of every clip, the same for every seed.
    """
    d = cfg["data"]
    if d["source"] == "procedural":
        return make_splits(
            cfg["run"]["seed"],
            d["train_clips"],
            d["val_clips"],
            d["clip_frames"],
            d["fps"],
            val_seed=val_seed(cfg),
        )
    if d["source"] == "bvh":
        from adaptive.motion.bvh import load_bvh_folder

        if not d["path"]:
            raise TrainingError("data.source = 'bvh' needs data.path (a folder of .bvh files)")
        full = load_bvh_folder(d["path"], scale=d["bvh_scale"], frame_step=d["bvh_frame_step"])
        if d["val_split"] == "tail":
            return _tail_split(full, cfg)
        n = full.num_clips
        if n < 2:
            raise TrainingError(f"{d['path']}: need at least 2 BVH clips (train and val), got {n}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(val_seed(cfg)))
        n_val = max(1, round(n * d["val_clips"] / (d["train_clips"] + d["val_clips"])))
        val_idx, train_idx = order[:n_val].tolist(), order[n_val:].tolist()
        return (
            MotionDataset.from_clips(full.skeleton, [full.clip(i) for i in sorted(train_idx)]),
            MotionDataset.from_clips(full.skeleton, [full.clip(i) for i in sorted(val_idx)]),
        )
    raise TrainingError(f"data.source must be 'procedural' or 'bvh', got {d['source']!r}")


def _tail_split(full: MotionDataset, cfg: dict[str, Any]) -> tuple[MotionDataset, MotionDataset]:
    """`split_tails`, with one-line errors when a part is too short for its windows."""
    d = cfg["data"]
    try:
        train, val = split_tails(full, d["val_fraction"])
    except ValueError as exc:
        raise TrainingError(f"{d['path']}: data.val_split = 'tail': {exc}") from None
    need_val = max(d["window"], d["val_seed_frames"] + d["val_horizon"])
    for part, need, what in ((train, d["window"], "training"), (val, need_val, "validation")):
        longest = int(part.clip_lengths.max())
        if longest < need:
            raise TrainingError(
                f"{d['path']}: data.val_split = 'tail' with data.val_fraction = "
                f"{d['val_fraction']:g} leaves {what} parts of at most {longest} frames; "
                f"{what} windows need {need}"
            )
    return train, val


def sample_batch(
    data: MotionDataset,
    batch_size: int,
    window: int,
    generator: torch.Generator,
    sharder: distributed.WindowSharder | None = None,
) -> MotionBatch:
    """One batch of random training windows; under DDP this rank's share of the global batch."""
    if sharder is not None:
        return sharder.sample(data, window, generator)
    return data.sample_windows(batch_size, window, generator)
