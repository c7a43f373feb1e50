"""Console-script shim: the Typer app lives in the repository's top-level `cli.py`.

Wheels ship that file as `adaptive/_cli_app.py` (see pyproject.toml), so an installed
package adds no generic top-level `cli` module; a source checkout imports it directly.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading


def main() -> None:
    """Run the `adaptive` command line, then leave without tearing the interpreter down.

    A replay command imports torch, pandas, matplotlib (and numba): freeing their modules
    object by object at exit takes ~0.3-0.45 s, a sixth of `adaptive replay` on a 100 k-step
    trace, and does nothing the operating system does not do. So once the command is done
    this waits for its threads, runs the `atexit` handlers and flushes the streams, as
    Python's own shutdown does, then exits with the command's status (`os._exit`)."""
    os.environ.setdefault("ADAPTIVE_KERNELS_LIGHT_START", "1")  # replay/_kernels.py
    try:
        from adaptive._cli_app import main as _main
    except ImportError:
        from cli import main as _main
    try:
        _main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads, as at exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)
