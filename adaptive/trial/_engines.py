"""Where a trial's runs execute: in this process, on a local process pool (the default), or
as Ray tasks on a local or existing cluster (`pip install 'adaptive-replay[ray]'`).

An engine runs `Job`s and calls back `done(job, files)` for each finished one: `files` is
None when the run wrote its folder in place (process pool), or the run folder's files as
bytes (Ray: the run trains in a scratch folder on its node and its trace travels back to
the driver, which writes it into the run folder).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptive._ray import INIT_OPTIONS, quiet_auth_banner, remove_session, start_local
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


#: Ray's variables for token authentication (https://docs.ray.io/en/latest/ray-security/token-auth.html)
_AUTH_MODE, _AUTH_TOKEN, _AUTH_TOKEN_PATH = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
#: Ray's default token file (`ray get-auth-token --generate` writes it; a local `ray.init` too)
_DEFAULT_TOKEN = Path("~/.ray/auth_token")
#: Ray's logger that warns, on every local start, that token authentication is on


def _is_this_machine(host: str) -> bool:
    """Whether `host` names this machine (an address of it can be bound here)."""
    try:
        ip = socket.gethostbyname(host)
        with socket.socket() as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Ray's C++ client logs each failed attempt on file descriptor 2: hide those lines
    while probing (the probe's own result is reported in one line)."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _probe(address: str) -> None:
    """Ask the cluster's GCS for its id: raises Ray's `AuthenticationError` at once when
    the cluster wants a token this driver does not send (ray.init would retry ~20 s)."""
    from ray._raylet import GcsClient

    with _stderr_silenced():
        GcsClient(address=address)


def _enable_token_auth() -> None:
    """Turn on Ray's token authentication in this driver (its config is cached: refresh)."""
    os.environ[_AUTH_MODE] = "token"
    with contextlib.suppress(ImportError, AttributeError):
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def _authenticate(address: str) -> str | None:
    """Connect to an existing cluster the way Ray authenticates a driver.

    Ray turns token authentication on in a driver only for a cluster it finds itself
    (`--address auto`); with an explicit address the driver sends no token unless
    RAY_AUTH_MODE=token is set, and a cluster started with token authentication (the
    default once a token exists) refuses it. So when the cluster asks for a token: a
    token given in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH is sent; on the head node itself
    (the address is this machine's) Ray's default token file ~/.ray/auth_token is sent;
    otherwise one line says what to set. RAY_AUTH_MODE set by the user is left alone.
    Returns how the driver authenticated (for the progress line), or None.
    """
    if address in ("auto", "local") or "://" in address:
        return None  # Ray's own discovery and auth (auto), or Ray Client
    from ray.exceptions import AuthenticationError

    try:
        _probe(address)
        return None
    except AuthenticationError:
        pass
    except Exception:  # let ray.init report anything else
        return None
    host = address.rpartition(":")[0]
    given = os.environ.get(_AUTH_MODE)
    if os.environ.get(_AUTH_TOKEN):
        source = f"the token in {_AUTH_TOKEN}"
    elif os.environ.get(_AUTH_TOKEN_PATH):
        source = f"the token file {_AUTH_TOKEN_PATH}={os.environ[_AUTH_TOKEN_PATH]}"
    elif _is_this_machine(host) and _DEFAULT_TOKEN.expanduser().is_file():
        source = f"this machine's token file {_DEFAULT_TOKEN}"
    else:
        raise TrialError(
            f"--address {address}: the cluster requires Ray token authentication: set "
            f"{_AUTH_TOKEN} to its token (`ray get-auth-token` on the head node prints it) "
            f"or {_AUTH_TOKEN_PATH} to a file holding it (docs/TRIAL.md)"
        )
    if given is None or given.lower() != "token":
        if given is not None:  # the user chose another mode: do not override it
            raise TrialError(
                f"--address {address}: the cluster requires Ray token authentication but "
                f"{_AUTH_MODE}={given}; set {_AUTH_MODE}=token (docs/TRIAL.md)"
            )
        _enable_token_auth()
    try:
        _probe(address)
    except AuthenticationError:
        raise TrialError(
            f"--address {address}: the cluster refused {source} (Ray token "
            "authentication): give the head node's token (`ray get-auth-token` there prints "
            f"it) in {_AUTH_TOKEN} (docs/TRIAL.md)"
        ) from None
    return source


@dataclass
class RayEngine:
    """Each run is a Ray task with `cpus_per_run` CPUs and `gpus_per_run` GPUs, on the
    cluster at `address`, else on a local cluster of `num_cpus` CPUs (default: all cores)
    started for this trial and stopped after it; a connection the caller opened with
    `ray.init` is used as it is and left open (`runtime_env` is Ray's, e.g. a
    `working_dir` for a cluster without this package installed). A task lost with its
    worker or node is retried once by Ray (`max_retries=1`); a run lost twice is reported
    and the trial stops with the list (finished runs are kept; the same command retries
    the rest).

    A local cluster keeps its session (logs, sockets, spilled objects) in a temporary
    folder of its own, removed after the trial (kept, and named, when the trial fails);
    an explicit `address` authenticates with Ray's token where the cluster asks for one
    (`_authenticate`)."""

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    num_cpus: int | None = None
    runtime_env: dict[str, Any] | None = None
    #: runs train in a scratch folder on their node: an unfinished run starts over
    resumes = False
    #: the local cluster's session folder while it runs (None: no local cluster)
    session_dir: Path | None = field(default=None, init=False, repr=False)
    #: how this driver authenticated to the cluster at `address` (None: no token needed)
    authenticated_with: str | None = field(default=None, init=False, repr=False)

    def describe(self) -> str:
        where = f"Ray cluster {self.address}" if self.address else "local Ray cluster"
        return f"{where}, {self.cpus_per_run:g} CPU / {self.gpus_per_run:g} GPU per run"

    def check(self) -> None:
        """Refuse, before anything is trained or written: no ray, bad resources, an
        address that cannot be reached or whose cluster wants a token this driver lacks."""
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
            auth = _authenticate(self.address)
            if auth:  # a second check finds the token already on
                self.authenticated_with = auth

    def _init(self, progress: Callable[[str], None] = lambda _: None) -> tuple[Any, bool]:
        """(ray, whether this call connected it and so disconnects after the trial)."""
        self.check()
        import ray

        if ray.is_initialized():  # the caller's own connection: use it, leave it open
            return ray, False
        kw: dict[str, Any] = {}
        if self.runtime_env:
            kw["runtime_env"] = self.runtime_env
        if self.address:
            try:
                with quiet_auth_banner():  # `auto` turns the token on with the same warning
                    ray.init(address=self.address, **INIT_OPTIONS, **kw)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
                raise TrialError(f"--address {self.address}: {first}") from None
            if self.authenticated_with:
                progress(f"authenticated to {self.address} with {self.authenticated_with}")
        else:
            num_cpus = self.num_cpus or os.cpu_count() or 1
            self.session_dir = start_local(num_cpus, progress, **kw)
        return ray, True

    def _remove_session(self) -> None:
        remove_session(self.session_dir)
        self.session_dir = None

    def run(self, jobs: Sequence[Job], done: Done, progress: Callable[[str], None]) -> None:
        if not jobs:
            return
        ray, owned = self._init(progress)
        from ray.exceptions import RayTaskError

        ok = False

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
            ok = True
        finally:
            if owned:
                ray.shutdown()
                if ok or self.session_dir is None:
                    self._remove_session()
                else:  # Ray's logs of the failed trial: keep them, say where
                    progress(f"Ray's session folder (logs) kept in {self.session_dir}")
                    self.session_dir = None
