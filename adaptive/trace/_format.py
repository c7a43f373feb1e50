"""Trace format v1: column names, types and metadata keys (see docs/TRACE_FORMAT.md)."""

from __future__ import annotations

import pyarrow as pa

TRACE_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# Schema key-value metadata keys.
META_VERSION = "adaptive.trace_version"
META_COMPONENTS = "adaptive.components"
META_METRICS = "adaptive.metrics"
META_RUN = "adaptive.run"

STEP = "step"
EPOCH = "epoch"
KINDS = (STEP, EPOCH)

# Fixed columns and their Arrow types.
RUN_ID, KIND, SPLIT, EPOCH_COL, STEP_COL, TIME = "run_id", "kind", "split", "epoch", "step", "time"
REQUIRED = (RUN_ID, KIND, SPLIT, EPOCH_COL, STEP_COL)

LOSS_PREFIX = "loss/"
LOSS_TF_PREFIX = "loss_tf/"  # teacher-forced part of a component loss (reference trainer)
LOSS_FR_PREFIX = "loss_fr/"  # free-run part, NaN on steps that drew no free run
WEIGHT_PREFIX = "weight/"
WEIGHT_BASE_PREFIX = "weight_base/"
PROPOSED_WEIGHT_PREFIX = "proposed/weight/"
SCHEDULE_PREFIX = "schedule/"
SCHEDULE_BASE_PREFIX = "schedule_base/"
PROPOSED_SCHEDULE_PREFIX = "proposed/schedule/"
METRIC_PREFIX = "metric/"
GRAD_NORM_PREFIX = "grad_norm/"  # extra: per-component gradient norm (optional)
LOSS_AFTER_PREFIX = "loss_after/"  # extra: loss re-evaluated after the step (optional)

FIXED_TYPES: dict[str, pa.DataType] = {
    RUN_ID: pa.string(),
    KIND: pa.string(),
    SPLIT: pa.string(),
    EPOCH_COL: pa.int32(),
    STEP_COL: pa.int64(),
    TIME: pa.float64(),
    "loss_total": pa.float32(),
    "grad_norm": pa.float32(),
    "lr": pa.float32(),
    "loss_tf_total": pa.float32(),
    "regime": pa.int8(),
    "stage": pa.int16(),
}

_FLOAT32_PREFIXES = (
    LOSS_PREFIX,
    LOSS_TF_PREFIX,
    LOSS_FR_PREFIX,
    WEIGHT_PREFIX,
    WEIGHT_BASE_PREFIX,
    PROPOSED_WEIGHT_PREFIX,
    SCHEDULE_PREFIX,
    SCHEDULE_BASE_PREFIX,
    PROPOSED_SCHEDULE_PREFIX,
    GRAD_NORM_PREFIX,
    LOSS_AFTER_PREFIX,
)


#: What the tools write into run folders. The reader never takes these for trace parts:
#: files named `replay-*.parquet` and anything under a folder named `replays`, `compare`
#: or `sweep-*` (names starting with `.` or `_` are skipped as well).
OUTPUT_FILE_PREFIX = "replay-"
OUTPUT_DIRS = ("replays", "compare")
OUTPUT_DIR_PREFIX = "sweep-"


def is_tool_output(relative_parts: tuple[str, ...]) -> bool:
    """Whether a file, given by its path parts relative to the folder being read, is one of
    the tools' outputs (or hidden) rather than a trace part."""
    *dirs, name = relative_parts
    if name.startswith(OUTPUT_FILE_PREFIX) or any(
        d in OUTPUT_DIRS or d.startswith(OUTPUT_DIR_PREFIX) for d in dirs
    ):
        return True
    return any(part.startswith((".", "_")) for part in relative_parts)


def column_type(name: str) -> pa.DataType:
    """Arrow type of a trace column; columns not named by the format are float64."""
    if name in FIXED_TYPES:
        return FIXED_TYPES[name]
    if name.startswith(_FLOAT32_PREFIXES):
        return pa.float32()
    return pa.float64()


def loss_columns(columns: list[str] | tuple[str, ...]) -> list[str]:
    """Component names from `loss/<c>` columns, in column order."""
    return [c[len(LOSS_PREFIX) :] for c in columns if c.startswith(LOSS_PREFIX)]


def metric_columns(columns: list[str] | tuple[str, ...]) -> list[str]:
    """Metric names from `metric/<m>` columns, in column order."""
    return [c[len(METRIC_PREFIX) :] for c in columns if c.startswith(METRIC_PREFIX)]
