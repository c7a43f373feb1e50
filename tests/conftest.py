"""Test-suite settings: headless plotting, few threads, deterministic torch, and a suite that
leaves the working tree as it found it (hypothesis stores nothing in it; a test that writes
an output folder into the repository root fails and is named)."""

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]

# Hypothesis keeps its example database and caches in ./.hypothesis by default: keep no
# database (examples are derived from the seed anyway) and put its caches in a temporary
# folder, removed when the suite ends.
_HYPOTHESIS_HOME = Path(tempfile.mkdtemp(prefix="adaptive-hypothesis-"))
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(_HYPOTHESIS_HOME))
try:
    from hypothesis import configuration, settings
except ImportError:  # pragma: no cover - hypothesis is in the dev extra
    pass
else:
    configuration.set_hypothesis_home_dir(os.environ["HYPOTHESIS_STORAGE_DIRECTORY"])
    settings.register_profile("adaptive-tests", database=None)
    settings.load_profile("adaptive-tests")

#: What the tools and the suite could write into the working tree (the commands' default
#: output folders and hypothesis' storage); tests write into tmp_path instead.
TREE_OUTPUTS = (
    "runs",
    "demo-output",
    "trial-output",
    "out",
    "notebook-output",
    "mlruns",
    ".hypothesis",
)


def new_tree_outputs(before: set[str]) -> list[str]:
    """The folders of `TREE_OUTPUTS` in the repository root that were not in `before`."""
    return [n for n in TREE_OUTPUTS if n not in before and (ROOT / n).exists()]


@pytest.fixture(autouse=True)
def _leaves_the_tree_clean(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Fail the test that wrote an output folder into the repository root (one that was
    not there before it ran): the suite must not leave `runs/` and the like behind."""
    before = {n for n in TREE_OUTPUTS if (ROOT / n).exists()}
    yield
    new = new_tree_outputs(before)
    if new:
        pytest.fail(
            f"{request.node.nodeid} wrote {', '.join(f'{n}/' for n in new)} into the working "
            f"tree ({ROOT}); write into tmp_path instead",
            pytrace=False,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)
