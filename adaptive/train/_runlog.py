"""The run's own log (`logs/train.txt`) without touching the host program's logging.

The trainer and its controllers log through private loggers that no `logging.getLogger`
call can reach: their records go to the run's file at INFO, and are handed on to the
host's logger of the same name (`adaptive.train`, `adaptive.weighting`, ...) only when the
host enables that level. Nothing is attached to a shared logger and no level changes, so a
failed start or a finished run cannot leave a handler behind for a later run to write into.
"""

from __future__ import annotations

import logging
from pathlib import Path

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _ToHost(logging.Handler):
    """Hands a record to the host's logger of the same name, under the host's levels."""

    def emit(self, record: logging.LogRecord) -> None:
        host = logging.getLogger(record.name)
        if host.isEnabledFor(record.levelno):
            host.handle(record)


class _RunFile(logging.FileHandler):
    """A file handler that creates its folder when the first record arrives (a run that
    fails before logging anything leaves no folder behind)."""

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class RunLog:
    """Private loggers for one run, named like the shared ones they forward to.

    `path` None (DDP ranks other than 0) writes no file; then `logger(name)` is the shared
    logger itself, as if no run log existed.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: logging.Handler | None = None
        if path is not None:
            self._file = _RunFile(path, encoding="utf-8", delay=True)
            self._file.setFormatter(logging.Formatter(FORMAT))
        self._to_host = _ToHost()
        self._loggers: dict[str, logging.Logger] = {}

    def logger(self, name: str) -> logging.Logger:
        """The run's logger `name` (e.g. `adaptive.train`)."""
        if self._file is None:
            return logging.getLogger(name)
        if name not in self._loggers:
            lg = logging.Logger(name, logging.INFO)  # not registered: no one else finds it
            lg.propagate = False
            lg.addHandler(self._file)
            lg.addHandler(self._to_host)
            self._loggers[name] = lg
        return self._loggers[name]

    def close(self) -> None:
        """Close the file (a later record from this run reopens it, in append mode)."""
        if self._file is not None:
            self._file.close()
