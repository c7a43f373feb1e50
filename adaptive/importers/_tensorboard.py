"""TensorBoard event files -> trace, read with tensorboard's own event-file loader.

Every scalar event is loaded (no reservoir sampling: `EventAccumulator` keeps 10,000
scalars per tag by default). Needs the extra ``pip install 'adaptive-replay[tensorboard]'``.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptive.importers._common import (
    ImportOptions,
    ImportReport,
    Series,
    TraceImportError,
    build_trace,
    import_options,
)

__all__ = ["import_tensorboard", "read_tensorboard", "tensorboard_runs"]

_EVENT_MARK = "tfevents"


def tensorboard_runs(logdir: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """Runs of a log directory: folder (relative to `logdir`, `.` for its top) -> event files."""
    root = Path(logdir)
    if not root.exists():
        raise TraceImportError(f"{root}: no such file or directory")
    if root.is_file():
        if _EVENT_MARK not in root.name:
            raise TraceImportError(f"{root}: not a TensorBoard event file (*tfevents*)")
        return {root.parent.name or ".": [root]}
    runs: dict[str, list[Path]] = {}
    for f in sorted(root.rglob(f"*{_EVENT_MARK}*")):
        if f.is_file():
            rel = f.parent.relative_to(root).as_posix()
            runs.setdefault(rel, []).append(f)
    if not runs:
        raise TraceImportError(f"{root}: no TensorBoard event files (*tfevents*) under it")
    return runs


def _loader() -> type:
    try:
        from tensorboard.backend.event_processing.event_file_loader import (
            LegacyEventFileLoader,
        )
    except ImportError:
        raise TraceImportError(
            "importing TensorBoard logs needs the tensorboard package: "
            "pip install 'adaptive-replay[tensorboard]'"
        ) from None
    return LegacyEventFileLoader


def read_tensorboard(
    files: Sequence[str | os.PathLike[str]],
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Series]:
    """Every scalar of the event files, by tag, in the order written (files in name
    order, which is creation order). Scalars written as `simple_value` (SummaryWriter,
    Lightning) and as scalar tensors (`tf.summary.scalar`) are both read."""
    loader_cls = _loader()
    from tensorboard.util import tensor_util

    steps: dict[str, array] = {}
    values: dict[str, array] = {}
    times: dict[str, array] = {}
    total = sum(os.path.getsize(f) for f in files)
    for f in files:
        done = 0
        for n, event in enumerate(loader_cls(str(f)).Load(), 1):
            if progress is not None and n % 65536 == 0:  # 16 bytes of framing per record
                size = event.ByteSize() * 65536 + 16 * 65536
                progress("read", size, total)
                done += size
            if not event.HasField("summary"):
                continue
            step, wall = event.step, event.wall_time
            for v in event.summary.value:
                kind = v.WhichOneof("value")
                if kind == "simple_value":
                    x = v.simple_value
                elif kind == "tensor" and (
                    v.metadata.plugin_data.plugin_name == "scalars" or not v.tensor.tensor_shape.dim
                ):
                    arr = tensor_util.make_ndarray(v.tensor)
                    if arr.size != 1 or arr.dtype.kind not in "fiu":
                        continue
                    x = float(arr.reshape(()))
                else:
                    continue
                tag = v.tag
                s = steps.get(tag)
                if s is None:
                    s = steps[tag] = array("q")
                    values[tag] = array("d")
                    times[tag] = array("d")
                s.append(step)
                values[tag].append(x)
                times[tag].append(wall)
        if progress is not None:
            progress("read", max(0, os.path.getsize(f) - done), total)
    return {
        tag: Series(
            np.frombuffer(steps[tag], dtype=np.int64),
            np.frombuffer(values[tag], dtype=np.float64),
            np.frombuffer(times[tag], dtype=np.float64),
        )
        for tag in steps
    }


def import_tensorboard(
    logdir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: ImportOptions | None = None,
    **kw: Any,
) -> ImportReport:
    """Import one run of a TensorBoard log directory as a v1 trace at `out`.

    `logdir` is a log directory (or one event file); `out` the trace to write (must not
    exist). `options` (`ImportOptions`) maps tags to components and metrics; its `run` is
    the run's folder relative to `logdir` when it holds several, `run_id` defaults to that
    folder's name, and epochs come from the `epoch_tag` scalar (which Lightning logs) unless
    `steps_per_epoch` is given. Keyword arguments override the options' fields.

    Example:
        >>> import_tensorboard("lightning_logs/version_0", "runs/v0/trace.parquet",
        ...                    ImportOptions(patterns=["train/loss_*"]))
    """
    opts = import_options(options, kw)
    run, progress = opts.run, opts.progress
    root = Path(logdir)
    if Path(out).exists():  # before the (long) read
        raise TraceImportError(f"{out}: already exists; choose another --out or remove it")
    runs = tensorboard_runs(root)
    if run is None:
        if len(runs) > 1:
            raise TraceImportError(
                f"{root}: holds {len(runs)} runs ({', '.join(runs)}); pick one with --run"
            )
        run = next(iter(runs))
    elif run not in runs:
        raise TraceImportError(f"{root}: no run {run!r}; runs: {', '.join(runs)}")
    series = read_tensorboard(runs[run], progress=progress)
    name = opts.run_id or (Path(run).name if run != "." else root.resolve().name) or "tensorboard"
    return build_trace(
        series,
        out,
        source=f"{root}" + (f" (run {run})" if run != "." else ""),
        run_id=name,
        options=opts,
        run_info={"logdir": str(root), "run": run},
    )
