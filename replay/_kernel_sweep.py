"""A sweep of a kernel method (`sweep_weighting` of uncertainty, IMTL-L, FAMO, GradNorm or
log-loss with numba installed): each configuration's compiled recursion and clamp
(`replay/_kernels.py`, the kernels `replay_weighting_fast` runs), the configurations
shared among threads. The kernels release the GIL (``nogil``), so a sweep uses every core
of the machine; one configuration's numbers do not depend on which thread ran it or on
how the steps were cut into blocks.

Configuration ``k`` equals, bit for bit, `replay_weighting_fast(trace, method,
**configs[k])` with the kernel, and so the torch path within the kernels' contract
(1e-6 relative, the same clamp flags: tests/test_kernels.py). Without `on_block` each
configuration runs over the whole trace, writing straight into the kept outputs (held as
``(K, T, C)``, returned as their ``(T, K, C)`` views). With it, the steps go in blocks of
about 2**21 values per output (each configuration's method state stays in a thread's
arrays between blocks), the next block is computed while `on_block` reads the last one,
and it sees every configuration's block as a batched `BlockOutput`, as from the torch
path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

__all__ = ["kernel_sweep"]

#: Values per block and output when a callback reduces blocks as they come.
BLOCK_VALUES = 1 << 21

#: The outputs a kernel sweep computes per configuration (`base`, `applied`: the trace's).
KERNEL_OUTPUTS = ("proposed", "deltas", "clamped", "scales")


#: The dtype of each output.
_DTYPE = {o: np.bool_ if o == "clamped" else np.float64 for o in KERNEL_OUTPUTS}


def _array(shape: tuple[int, ...], output: str) -> np.ndarray:
    return np.empty(shape, dtype=_DTYPE.get(output, np.float64))


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def kernel_sweep(
    method: str,
    inputs: Any,
    configs: Sequence[Mapping[str, Any]],
    make: Callable[[Mapping[str, Any]], Any],
    schedule: Callable[[Any], tuple[np.ndarray, np.ndarray, list[int]]],
    outputs: Sequence[str],
    on_block: Callable[[int, int, Any], None] | None,
    progress: Callable[[int], None] | None,
    *,
    kernels: bool | None = None,
    threads: int | None = None,
) -> dict[str, np.ndarray] | None:
    """The sweep's arrays (as `sweep_weighting` returns them, less `step` and `epoch`)
    through the compiled kernels, or None where any configuration has no kernel (the
    caller runs the torch path). `make(config)` builds a single-configuration dry-run
    controller; `schedule(controller)` makes its calls in the trainer's order and gives the
    base weights, restarts and epoch lengths (`kernel_schedule`); `kernels` as in
    `replay_single`."""
    from adaptive.weighting._diagnostics import BlockOutput
    from adaptive.weighting._validate import check_extras
    from replay._kernels import _empty, _jit, reuse_buffers, select

    if kernels is False or not configs or not len(inputs.losses):
        return None  # (no steps: the torch path's empty arrays)
    ctrls = [make(cfg) for cfg in configs]
    chosen = [select(c, force=kernels)[0] for c in ctrls]
    if any(k is None for k in chosen):
        return None
    first = ctrls[0]
    check_extras(
        first.method, inputs.extras or None, type(first.method_impl).after_extras(), first.requires
    )
    base, reset, epoch_steps = schedule(first)  # the same for every configuration
    losses = inputs.losses.astype(np.float64)
    n, c = losses.shape
    k = len(configs)
    finite = np.isfinite(losses).all(axis=1)
    extras = {name: v.astype(np.float64) for name, v in inputs.extras.items()}
    ranges = [float(ctrl.adjustment_range) for ctrl in ctrls]
    part = _jit("_controller_part")
    # kept outputs live as (K, T, C): each configuration writes one contiguous slab (a
    # (T, K, C) array would take one row per page, 16 KB apart, for every step); they are
    # returned as their (T, K, C) views
    kept = {o: _array((k, n, c), o) for o in outputs}
    for o in ("base", "applied"):  # dry run: the base weights are applied
        if o in kept:
            kept[o][:] = base[None, :, :]
    skipped = ~finite
    if on_block is None:
        size = max(n, 1)  # one block: each configuration straight into the kept arrays
        blocks = [{o: kept[o] for o in KERNEL_OUTPUTS if o in kept}]
    else:
        # (K, steps, C): each configuration writes a contiguous slab; `on_block` sees the
        # (steps, K, C) view of it. Two sets: the next block is computed while `on_block`
        # reads this one.
        size = max(64, BLOCK_VALUES // (k * c))
        blocks = [{o: _array((k, min(size, n), c), o) for o in KERNEL_OUTPUTS} for _ in "ab"]

    workers = max(1, min(threads or _threads(), k))
    # each thread's reused arrays (`reuse_buffers`) and its configurations' method state
    per_worker: list[tuple[dict[str, np.ndarray], dict[int, list[np.ndarray]]]] = [
        ({}, {}) for _ in range(workers)
    ]

    def work(w: int, a: int, b: int, block: dict[str, np.ndarray]) -> np.ndarray:
        """Configurations w, w + workers, ... over steps [a, b) into `block`; the steps
        where any of their scales were not finite."""
        (buffers, states), rows = per_worker[w], b - a
        bad = np.zeros(rows, dtype=np.bool_)
        ext = {name: v[a:b] for name, v in extras.items()}
        with reuse_buffers(buffers, states):
            skip, bad_rows = _empty("skip", (rows,), np.bool_), _empty("bad", (rows,), np.bool_)
            for j in range(w, k, workers):
                impl = ctrls[j].method_impl
                if "scales" in block:  # the kernel writes its scales in place there
                    buffers["scales"] = block["scales"][j]
                # the state carries over to the next block in `states`
                run = chosen[j].run(impl, losses[a:b], finite[a:b], reset[a:b], ext)
                out = {o: block[o][j, :rows] if o in block else _empty(o, (rows, c), _DTYPE[o])
                       for o in ("proposed", "deltas", "clamped")}  # fmt: skip
                part(run.scales, ranges[j], base[a:b], finite[a:b], out["deltas"],
                     out["clamped"], out["proposed"], skip, bad_rows)  # fmt: skip
                bad |= bad_rows
                if "scales" in block and not np.shares_memory(run.scales, block["scales"]):
                    block["scales"][j, :rows] = run.scales  # sanitised by `part`
        return bad

    starts = list(range(0, n, size))
    skipped_before = bad_before = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(i: int) -> list[Any]:
            a, b = starts[i], min(n, starts[i] + size)
            block = blocks[i % len(blocks)]
            return [pool.submit(work, w, a, b, block) for w in range(workers)]

        pending = submit(0)
        for i, a in enumerate(starts):
            bad = np.logical_or.reduce([f.result() for f in pending])
            if i + 1 < len(starts):  # the workers go on while this block is handed out
                pending = submit(i + 1)
            if on_block is None:
                continue
            b = min(n, a + size)
            rows, block = b - a, blocks[i % len(blocks)]
            t = {o: torch.from_numpy(v[:, :rows]).permute(1, 0, 2) for o, v in block.items()}
            for o in kept:
                if o in block:
                    kept[o][:, a:b] = block[o][:, :rows]
            base_t = torch.from_numpy(base[a:b])[:, None, :].expand(rows, k, c)
            skip_t = torch.from_numpy(skipped[a:b])
            steps = skip_t.to(torch.int64).cumsum(0).add_(skipped_before)
            nonfinite = torch.from_numpy(bad).to(torch.int64).cumsum(0).add_(bad_before)
            skipped_before, bad_before = int(steps[-1]), int(nonfinite[-1])
            on_block(a, b, BlockOutput(
                start=a, epoch=int(inputs.epochs[a]), method=method, dry_run=True,
                components=tuple(inputs.components), scales=t["scales"], deltas=t["deltas"],
                clamped=t["clamped"], base=base_t, applied=base_t, proposed=t["proposed"],
                skipped=skip_t, skipped_steps=steps, nonfinite_state=nonfinite,
            ))  # fmt: skip
    if progress is not None:
        for steps_in_epoch in epoch_steps:
            if steps_in_epoch:
                progress(steps_in_epoch)
    result = {o: v.transpose(1, 0, 2) for o, v in kept.items()}
    result["skipped"] = skipped
    return result
