"""Is `import replay` this project's offline engine, or another package of the same name?

The import name `replay` is fixed by the product design, but RePlay (a recommender-systems
library, `pip install replay-rec`) installs a top-level `replay` too. Whichever comes first on
`sys.path` wins, and the loser's users get baffling import errors. `replay_clash()` finds out
without importing anything, so the CLI can say so in one line.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["replay_clash"]

_MARKERS = ("_engine.py", "_stability.py", "_workflow.py")


def replay_clash() -> str | None:
    """None when `import replay` resolves to this project's package, else a one-line reason."""
    try:
        spec = importlib.util.find_spec("replay")
    except (ImportError, ValueError) as exc:  # a broken or half-imported `replay`
        return f"`import replay` fails ({exc}); reinstall adaptive-replay"
    if spec is None or not spec.submodule_search_locations:
        found = "nothing" if spec is None else f"a module at {spec.origin}"
        return f"`import replay` finds {found}, not adaptive-replay's engine; reinstall it"
    ours = Path(__file__).resolve().parent.parent
    for loc in spec.submodule_search_locations:
        folder = Path(loc).resolve()
        if folder.parent == ours and all((folder / m).is_file() for m in _MARKERS):
            return None
    where = ", ".join(str(x) for x in spec.submodule_search_locations)
    return (
        f"`import replay` resolves to another package at {where} (RePlay, the recommender "
        f"library, uses the same name), not adaptive-replay's engine beside {ours}; use a "
        "separate virtual environment or uninstall the other package (pip uninstall replay-rec)"
    )
