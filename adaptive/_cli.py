"""Console-script shim: the Typer app lives in the repository's top-level `cli.py`.

Wheels ship that file as `adaptive/_cli_app.py` (see pyproject.toml), so an installed
package adds no generic top-level `cli` module; a source checkout imports it directly.
"""

from __future__ import annotations


def main() -> None:
    """Run the `adaptive` command line."""
    try:
        from adaptive._cli_app import main as _main
    except ImportError:
        from cli import main as _main
    _main()
