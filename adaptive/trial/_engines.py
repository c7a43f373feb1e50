"""Where a trial's runs execute: in this process, on a local process pool (the default), or
as Ray tasks on a local or existing cluster (`pip install 'adaptive-replay[ray]'`).

An engine runs `Job`s and calls back `done(job, files)` for each finished one: `files` is
None when the run wrote its folder in place (process pool), or the run folder's files as
bytes (Ray: the run trains in a scratch folder on its node and its trace travels back to
the driver, which writes it into the run folder).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptive.trial._targets import Arm, Target, TrialError

__all__ = ["Job", "LocalEngine", "RayEngine"]

#: What travels back from a Ray task: the trace and the small text files beside it.
_PACKED = ("trace.parquet", "config.toml", "train.log", "train.log.txt")
#: Largest run folder (bytes) a Ray task sends back; beyond it use a shared path.
MAX_PACKED_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Job:
    """One training run: `target` trains `arm` at `seed` into `run_dir`."""

    target: Target
    arm: Arm
    seed: int
    run_dir: Path
    resume: bool = False


Done = Callable[[Job, "dict[str, bytes] | None"], None]


def _run_in_place(job: Job) -> None:
    job.target.run(job.arm, job.seed, job.run_dir, job.resume)


def _pack(folder: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    total = 0
    for name in _PACKED:
        p = folder / name
        for f in sorted(p.rglob("*")) if p.is_dir() else [p] if p.is_file() else []:
            if f.is_file():
                data = f.read_bytes()
                total += len(data)
                files[str(f.relative_to(folder))] = data
    if total > MAX_PACKED_BYTES:
        raise TrialError(
            f"a run's trace is {total / 2**20:.0f} MiB: too large to send back; write the "
            "trial folder on a path every node can read (docs/TRIAL.md)"
        )
    return files


def _run_packed(job: Job) -> dict[str, bytes]:
    """A Ray task: train in a scratch folder on this node, return its files as bytes."""
    scratch = Path(tempfile.mkdtemp(prefix="adaptive-trial-"))
    try:
        run_dir = scratch / job.run_dir.name
        job.target.run(job.arm, job.seed, run_dir, False)
        return _pack(run_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def unpack(files: dict[str, bytes], run_dir: Path) -> None:
    """Write a Ray task's files into `run_dir` (each file atomically)."""
    from adaptive._checks import atomic_write

    for rel, data in files.items():
        atomic_write(run_dir / rel, lambda tmp, data=data: tmp.write_bytes(data))


@dataclass
class LocalEngine:
    """Runs in this process (`jobs=1`) or on a pool of `jobs` spawned processes. Each run
    uses the threads its target asks for (the reference trainer's `run.threads`, default
    1), so `jobs` runs use about `jobs` × that many cores. A failed or interrupted run
    stops the queued ones; finished runs are kept for the next call."""

    jobs: int = 1
    #: runs train in their own folder, so an interrupted one can resume from its checkpoint
    resumes = True

    def describe(self) -> str:
        return f"local process pool ({self.jobs} at a time)" if self.jobs > 1 else "this process"

    def check(self) -> None:
        """Nothing to check: this machine is here."""

    def run(self, jobs: Sequence[Job], done: Done, progress: Callable[[str], None]) -> None:
        if self.jobs == 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs, 1):
                progress(f"[{i}/{len(jobs)}] training {job.run_dir}" + _resume(job))
                _run_in_place(job)
                done(job, None)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=mp.get_context("spawn"))
        try:
            futures = {pool.submit(_run_in_place, job): job for job in jobs}
            for job in jobs:
                progress(f"queued {job.run_dir}" + _resume(job))
            for i, fut in enumerate(as_completed(futures), 1):
                fut.result()
                done(futures[fut], None)
                progress(f"[{i}/{len(jobs)}] finished {futures[fut].run_dir}")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def _resume(job: Job) -> str:
    return " (resume)" if job.resume else ""


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """One line, quickly, when a cluster address cannot be reached (Ray itself retries
    for a minute or more)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise TrialError(f"--address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise TrialError(f"--address {address}: cannot reach the Ray cluster ({exc})") from None


@dataclass
class RayEngine:
    """Each run is a Ray task with `cpus_per_run` CPUs and `gpus_per_run` GPUs, on the
    cluster at `address`, else on a local cluster of `num_cpus` CPUs (default: all cores)
    started for this trial and stopped after it; a connection the caller opened with
    `ray.init` is used as it is and left open (`runtime_env` is Ray's, e.g. a
    `working_dir` for a cluster without this package installed). A task lost with its
    worker or node is retried once by Ray (`max_retries=1`); a run lost twice is reported
    and the trial stops with the list (finished runs are kept; the same command retries
    the rest)."""

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    num_cpus: int | None = None
    runtime_env: dict[str, Any] | None = None
    #: runs train in a scratch folder on their node: an unfinished run starts over
    resumes = False

    def describe(self) -> str:
        where = f"Ray cluster {self.address}" if self.address else "local Ray cluster"
        return f"{where}, {self.cpus_per_run:g} CPU / {self.gpus_per_run:g} GPU per run"

    def check(self) -> None:
        """Refuse, before anything is trained or written: no ray, bad resources, an
        address that cannot be reached."""
        try:
            import ray  # noqa: F401
        except ImportError:
            raise TrialError(
                "--engine ray needs the ray extra (pip install 'adaptive-replay[ray]')"
            ) from None
        if self.cpus_per_run <= 0 or self.gpus_per_run < 0:
            raise TrialError("--cpus-per-run must be > 0 and --gpus-per-run >= 0")
        if self.address:
            _check_reachable(self.address)

    def _init(self) -> tuple[Any, bool]:
        """(ray, whether this call connected it and so disconnects after the trial)."""
        self.check()
        import ray

        if ray.is_initialized():  # the caller's own connection: use it, leave it open
            return ray, False
        kw: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if self.runtime_env:
            kw["runtime_env"] = self.runtime_env
        if self.address:
            try:
                ray.init(address=self.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
                raise TrialError(f"--address {self.address}: {first}") from None
        else:
            # workers import this package from the driver's environment
            os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
            ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, **kw)
        return ray, True

    def run(self, jobs: Sequence[Job], done: Done, progress: Callable[[str], None]) -> None:
        if not jobs:
            return
        ray, owned = self._init()
        from ray.exceptions import RayTaskError

        try:
            task = ray.remote(
                num_cpus=self.cpus_per_run,
                num_gpus=self.gpus_per_run,
                max_retries=1,
                retry_exceptions=False,
            )(_run_packed)
            refs = {task.remote(job): job for job in jobs}
            progress(f"submitted {len(jobs)} runs to {self.describe()}")
            lost: list[str] = []
            finished = 0
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    job = refs.pop(ref)
                    try:
                        files = ray.get(ref)
                    except RayTaskError as exc:  # the run itself failed: stop
                        for r in refs:
                            ray.cancel(r, force=True)
                        cause = exc.cause if exc.cause is not None else exc
                        if isinstance(cause, KeyboardInterrupt):
                            raise KeyboardInterrupt from None
                        if isinstance(cause, TrialError):
                            raise TrialError(str(cause)) from None
                        raise TrialError(
                            f"{job.arm.name} seed {job.seed} failed on Ray: "
                            f"{type(cause).__name__}: {cause}".splitlines()[0]
                        ) from None
                    except ray.exceptions.RayError as exc:  # lost twice with its worker/node
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        lost.append(
                            f"{job.arm.name} seed {job.seed} ({type(exc).__name__}: {first})"
                        )
                        continue
                    done(job, files)
                    finished += 1
                    progress(f"[{finished}/{len(jobs)}] finished {job.run_dir}")
            if lost:
                raise TrialError(
                    f"{len(lost)} run(s) lost twice with their worker or node: "
                    + "; ".join(lost)
                    + ". Finished runs are kept: run the same command again to retry them"
                )
        finally:
            if owned:
                ray.shutdown()
