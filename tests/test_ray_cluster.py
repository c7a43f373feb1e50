"""A trial on an existing Ray cluster with token authentication (`--address HOST:PORT`).

RAY CLUSTER TEST: starts its own one-CPU head node on this machine (`ray start --head
--block` on a free port, its session in a temporary folder, token authentication with a
token made up for the test) and stops exactly that cluster afterwards (SIGINT to the
blocking `ray start`, which stops the processes it started; `ray stop` would stop every
Ray cluster of this user on the machine). No network beyond this machine; about 30 s.

Each driver is an `adaptive trial` process of its own, so Ray's cached authentication
settings of one case never leak into the next.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ray", reason="needs the 'ray' extra")

RAY = Path(sys.executable).with_name("ray")
pytestmark = pytest.mark.skipif(not RAY.exists(), reason="the ray command is not installed")

ROOT = Path(__file__).resolve().parents[1]
TOY = """
import argparse
from pathlib import Path
from adaptive import TraceRecorder
p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, required=True)
p.add_argument("--out", type=Path, required=True)
p.add_argument("--shift", type=float, default=0.0)
a = p.parse_args()
with TraceRecorder(a.out / "trace.parquet", components=["a"]) as rec:
    for e in range(3):
        rec.log_step(losses={"a": 1.0})
        rec.log_epoch(split="val", metrics={"m": 10.0 + a.seed * 0.7 + a.shift * (e + 1)})
        rec.end_epoch()
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    return env | {"OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def cluster() -> Iterator[SimpleNamespace]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="rc-"))  # short: Unix socket paths <= 107 bytes
    token = secrets.token_hex(16)
    log = temp / "head.log"
    cmd = [str(RAY), "start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={temp}"]
    cmd += ["--include-dashboard=false", "--disable-usage-stats", "--block"]
    env = _clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    with open(log, "w") as out:
        head = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        work = temp / "work"
        work.mkdir()
        (work / "toy.py").write_text(TOY)
        yield SimpleNamespace(address=f"127.0.0.1:{port}", token=token, work=work)
    finally:
        head.send_signal(signal.SIGINT)  # `ray start --block` stops what it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)  # its own session: only this cluster
            head.wait(10)
        shutil.rmtree(temp, ignore_errors=True)


def _trial(c: SimpleNamespace, out: Path, env: dict[str, str], seeds: int = 1):
    toy = c.work / "toy.py"
    command = f"{sys.executable} {toy} --seed {{seed}} --out {{run_dir}} {{overrides}}"
    args = [sys.executable, "-m", "adaptive", "trial", "--engine", "ray", "--address", c.address]
    args += ["--command", command, "-c", "s: --shift 0.1", "--metric", "val/m"]
    args += ["--seeds", str(seeds), "-o", str(out)]
    start = time.monotonic()
    r = subprocess.run(
        args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    return r, time.monotonic() - start


def test_token_in_the_environment(cluster: SimpleNamespace, tmp_path: Path) -> None:
    """From another machine: the head's token in RAY_AUTH_TOKEN (no RAY_AUTH_MODE needed)."""
    home = tmp_path / "home"  # no ~/.ray/auth_token here
    home.mkdir()
    env = _clean_env(HOME=str(home), RAY_AUTH_TOKEN=cluster.token)
    r, _ = _trial(cluster, tmp_path / "t", env, seeds=2)
    assert r.returncode == 0, r.stderr
    assert f"authenticated to {cluster.address} with the token in RAY_AUTH_TOKEN" in r.stderr
    assert "submitted 4 runs to Ray cluster" in r.stderr
    assert "s: val/m (final)" in r.stdout and "n = 2" in r.stdout
    assert (tmp_path / "t" / "trial.md").exists()


def test_head_node_token_file(cluster: SimpleNamespace, tmp_path: Path) -> None:
    """On the head node: Ray's token file ~/.ray/auth_token, sent to this machine only."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(cluster.token)
    r, _ = _trial(cluster, tmp_path / "t", _clean_env(HOME=str(home)))
    assert r.returncode == 0, r.stderr
    assert "with this machine's token file ~/.ray/auth_token" in r.stderr
    assert (tmp_path / "t" / "trial.md").exists()


def test_missing_or_wrong_token_is_one_line(cluster: SimpleNamespace, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    r, took = _trial(cluster, tmp_path / "none", _clean_env(HOME=str(home)))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "requires Ray token authentication: set RAY_AUTH_TOKEN" in r.stderr
    assert took < 60  # not Ray's own ~20 s of retries per attempt, then a traceback
    env = _clean_env(HOME=str(home), RAY_AUTH_TOKEN=secrets.token_hex(16))
    r, _ = _trial(cluster, tmp_path / "wrong", env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "refused the token in RAY_AUTH_TOKEN" in r.stderr
    assert not (tmp_path / "none").exists() and not (tmp_path / "wrong").exists()
