"""A local Ray cluster for one job (a trial's runs, a fleet replay), started quietly in a
session folder of its own and removed after it: what `adaptive.trial.RayEngine` and the
replay fleet share, so the offline `replay` package needs nothing of the trial package."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["AUTH_LOGGER", "quiet_auth_banner", "remove_session", "start_local"]

AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
#: `ray.init` options of every connection this package opens.
INIT_OPTIONS: dict[str, Any] = {
    "include_dashboard": False,
    "log_to_driver": False,
    "configure_logging": False,
}


@contextlib.contextmanager
def quiet_auth_banner() -> Iterator[None]:
    """Hide the warning Ray logs on every local start that token authentication is on
    (it stays on: a local cluster gets a token like any other)."""
    logger = logging.getLogger(AUTH_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def start_local(
    num_cpus: int, progress: Callable[[str], None], *, what: str = "trial", **init: Any
) -> Path:
    """Start a local Ray cluster of `num_cpus` CPUs (`ray.init` options `init` beside
    `INIT_OPTIONS`) with its session folder (logs, sockets) in a new temporary folder, which
    it returns; removed again if the start fails."""
    import ray

    # workers import this package from the driver's environment
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # a short path: Unix socket paths are limited to ~107 bytes
    session = Path(tempfile.mkdtemp(prefix="adaptive-ray-"))
    start = time.perf_counter()
    try:
        with quiet_auth_banner():
            ray.init(num_cpus=num_cpus, _temp_dir=str(session), **INIT_OPTIONS, **init)
    except BaseException:
        remove_session(session)
        raise
    progress(
        f"started a local Ray cluster ({num_cpus} CPUs) in {time.perf_counter() - start:.1f} s; "
        f"its session folder {session} is removed after the {what}"
    )
    return session


def remove_session(session: Path | None) -> None:
    """Remove a local cluster's session folder (after `ray.shutdown()`)."""
    if session is not None:
        shutil.rmtree(session, ignore_errors=True)
