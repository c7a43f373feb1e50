"""The trace: a Parquet record of what a training run saw (format v1, docs/TRACE_FORMAT.md)."""

from adaptive.trace._compact import compact_trace, truncate_trace
from adaptive.trace._format import TRACE_VERSION
from adaptive.trace._reader import Trace, TraceError, TraceWarning, read_trace
from adaptive.trace._writer import TraceWriter, part_files

__all__ = [
    "TRACE_VERSION",
    "Trace",
    "TraceError",
    "TraceWarning",
    "TraceWriter",
    "compact_trace",
    "part_files",
    "read_trace",
    "truncate_trace",
]
