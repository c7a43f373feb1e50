"""Writes that survive a crash: a writer killed with SIGKILL in the middle of a write leaves
the old file or the new one, never a torn one (`adaptive.util.atomic_write`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adaptive.util import atomic_write

ROOT = Path(__file__).resolve().parents[1]
SIZE = 4 << 20  # 4 MiB per version: many write() calls, long enough to be killed inside

# A writer that writes versions 1, 2, ... of `path` in a loop. Each version is a header
# line, SIZE bytes of one repeated byte and a trailer naming the version again. With
# `pause` it prints "mid <version>" half-way through the first version and sleeps there.
WRITER = r"""
import sys, time
from pathlib import Path
from adaptive.util import atomic_write

path, mode, pause, size = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])

def write(target, version):
    with open(target, "wb") as fh:
        fh.write(f"version {version}\n".encode())
        chunk = bytes([version % 251]) * 65536
        for i in range(size // 65536):
            fh.write(chunk)
            if pause and i == size // 131072:
                fh.flush()
                print(f"mid {version}", flush=True)
                time.sleep(60)
        fh.write(f"\nend {version}\n".encode())

version = 1
while True:
    if mode == "atomic":
        atomic_write(path, lambda tmp: write(tmp, version))
    else:
        write(path, version)
    print(f"done {version}", flush=True)
    version += 1
"""


def whole_version(path: Path) -> int:
    """The version a complete file holds; AssertionError for a torn one."""
    data = path.read_bytes()
    head, _, rest = data.partition(b"\n")
    assert head.startswith(b"version "), head[:40]
    version = int(head.split()[1])
    trailer = f"\nend {version}\n".encode()
    assert rest.endswith(trailer), f"torn: {len(data)} bytes, no trailer of version {version}"
    body = rest[: -len(trailer)]
    assert len(body) == SIZE and body == bytes([version % 251]) * SIZE, "torn body"
    return version


def start(path: Path, mode: str, pause: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), mode, "1" if pause else "0", str(SIZE)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def write_version_zero(path: Path) -> None:
    def write(tmp: Path) -> None:
        tmp.write_bytes(b"version 0\n" + bytes([0]) * SIZE + b"\nend 0\n")

    atomic_write(path, write)


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("mode", ["atomic", "plain"])
def test_a_writer_killed_mid_write(tmp_path: Path, mode: str) -> None:
    """Killed half-way through writing version 1 over version 0: the atomic writer leaves
    version 0 whole; a plain write (the control, which shows the check can fail) leaves a
    torn file."""
    path = tmp_path / "table.csv"
    write_version_zero(path)
    proc = start(path, mode, pause=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "mid 1"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    if mode == "atomic":
        assert whole_version(path) == 0
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
            "table.csv"
        ]
    else:
        with pytest.raises(AssertionError, match="torn"):
            whole_version(path)


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_killed_at_random_moments_a_reader_sees_whole_versions(tmp_path: Path) -> None:
    """A writer rewriting the file in a loop, killed at several moments: every read while
    it runs finds one whole version, and after the kill the file holds the last version
    the writer reported done (or the next one, renamed just before the kill)."""
    path = tmp_path / "checkpoint.pt"
    write_version_zero(path)
    previous = 0
    for delay in (0.3, 0.55, 0.8, 1.05):
        proc = start(path, "atomic", pause=False)
        reads = 0
        try:
            t_end = time.monotonic() + delay
            while time.monotonic() < t_end:
                whole_version(path)
                reads += 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.stdout is not None
        done = [int(line.split()[1]) for line in proc.stdout.read().splitlines()]
        version = whole_version(path)
        allowed = {done[-1], done[-1] + 1} if done else {previous, 1}
        assert version in allowed, (version, done)
        assert reads > 0
        previous = version
