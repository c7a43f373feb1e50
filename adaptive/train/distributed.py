"""Multi-process (DDP) support for the reference trainer.

Launch with ``torchrun --nproc_per_node=N $(which adaptive) train ...`` (or
``python -m torch.distributed.run --nproc_per_node=N -m adaptive train ...``). The process
group is set up from torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``): NCCL when the run's device is CUDA, gloo on CPU. Without
those variables (or with ``WORLD_SIZE=1``) nothing here is used and the trainer is the plain
single-process loop.

Data sharding (deterministic, see docs/CONFIG_WORKFLOW.md "Distributed training"): every
rank holds the same training generator (same seed), so every step each rank draws the same
*global* batch of ``train.batch_size * world_size`` window starts; a
:class:`torch.utils.data.DistributedSampler` (``shuffle=False``) over the positions of that
global batch gives each rank its own ``train.batch_size`` windows (positions ``rank``,
``rank + N``, ...). ``train.batch_size`` is therefore the per-rank batch.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from adaptive.motion import MotionBatch, MotionDataset


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the process group."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device_type: str = "cpu") -> DistInfo | None:
    """Join (or reuse) the process group torchrun describes; ``None`` for a single process.

    Returns the rank info when ``WORLD_SIZE > 1`` or a process group is already up.
    ``device_type`` picks the backend: ``nccl`` for ``cuda``, ``gloo`` otherwise.
    """
    if not dist.is_available():
        return None
    if not dist.is_initialized():
        if env_world_size() <= 1:
            return None
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # torch.distributed.nn.functional binds `group=group.WORLD` as default arguments
        # when first imported, which DistributedDataParallel does lazily. Imported after
        # the group is up, those defaults keep it alive past destroy_process_group(): its
        # native threads then die only in interpreter finalization, which aborted runs now
        # and then ("terminate called without an active exception"). Imported first, they
        # bind None.
        import torch.distributed.nn as _bind_defaults_first  # noqa: F401

        dist.init_process_group(backend=backend)
    if dist.get_world_size() <= 1:
        return None
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", str(dist.get_rank()))),
    )


def shutdown() -> None:
    """Tear the process group down (if one is up), joining its native threads.

    Drop every ``DistributedDataParallel`` wrapper first: its reducer holds the group, and
    a group that outlives this call is torn down during interpreter finalization instead,
    where gloo's threads can abort the process. Unreachable wrappers in reference cycles
    are collected here.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class WindowSharder:
    """Per-step shard of a global batch of random windows (see the module docstring).

    The global draw consumes the generator exactly like
    :meth:`MotionDataset.sample_windows` with ``batch_size * world_size`` windows, so all
    ranks keep identical generator states (and so draw the same free-run uniform after it).
    """

    def __init__(self, info: DistInfo, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.global_batch = batch_size * info.world_size
        sampler = DistributedSampler(
            range(self.global_batch),
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=False,
            drop_last=True,
        )
        self.positions = torch.tensor(list(iter(sampler)), dtype=torch.long)

    def sample(self, data: MotionDataset, length: int, generator: torch.Generator) -> MotionBatch:
        starts = data.window_starts(length)
        pick = torch.randint(starts.numel(), (self.global_batch,), generator=generator)
        return data.gather(starts[pick[self.positions]], length)


def mean_losses(
    raw: Mapping[str, torch.Tensor], components: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The detached raw component losses averaged over ranks (one all-reduce)."""
    stacked = torch.stack([raw[c].detach() for c in components])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked = stacked / dist.get_world_size()
    return dict(zip(components, stacked.unbind(0), strict=True))


def mean_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` averaged over ranks (one all-reduce of a copy)."""
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()
