"""Small shared helpers: strict-JSON floats for state dicts, hyperparameter checks whose
errors repeat the bad value (used by every controller), and atomic file writes that survive
a crash (fsync of the file and of its folder)."""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "JSONFloat",
    "atomic_write",
    "check_number",
    "decode_float",
    "encode_float",
    "fsync_dir",
    "fsync_file",
]

JSONFloat = float | str


def encode_float(x: float | None) -> JSONFloat | None:
    """One float for strict JSON (`json.dumps(allow_nan=False)`): non-finite values become
    the strings "nan", "inf", "-inf"; None stays None. Finite floats round-trip exactly."""
    if x is None:
        return None
    x = float(x)
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "nan"
    return "inf" if x > 0 else "-inf"


def decode_float(x: Any, name: str | None = None, *, optional: bool = False) -> Any:
    """Inverse of :func:`encode_float`; None only where `optional`. The error names the
    state entry `name` when given."""
    where = f"state entry {name!r}: " if name else ""
    if x is None and optional:
        return None
    if isinstance(x, str):
        if x not in ("nan", "inf", "-inf"):
            raise ValueError(f"{where}invalid encoded float {x!r}")
        return float(x)
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ValueError(f"{where}invalid encoded float {x!r}")
    return float(x)


def check_number(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number within bounds; the error repeats the bad value."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        if math.isinf(low) and math.isinf(high):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        lo = f"{'(' if low_open or math.isinf(low) else '['}{low:g}"
        hi = f"{high:g}{')' if high_open or math.isinf(high) else ']'}"
        raise ValueError(f"{name} must be a finite number in {lo}, {hi}, got {value!r}")
    return float(value)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Write a file so that neither a reader nor a crash ever sees it partly written:
    `write(tmp)` writes a hidden temporary file beside `path` (unique per call, same suffix,
    so writers that go by the suffix still work); it is flushed to disk (fsync), renamed
    over `path` in one step, and the folder is fsynced so that the rename survives a power
    loss. A reader sees the old file or the new one. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a written file's data to disk."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be
    opened (Windows)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
