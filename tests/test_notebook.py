"""notebooks/stability.ipynb: stored clean, and runs top to bottom in a real Jupyter kernel.

The kernel is this interpreter (`sys.executable`, i.e. the venv running pytest): the
`python3` kernelspec is looked up only in `sys.prefix` (ipykernel's bundled spec, or
jupyter_client's built-in fallback for the native kernel), never in the user's Jupyter
directories, and Jupyter / IPython state goes to `tmp_path`, so the home directory is not
touched.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "stability.ipynb"
PROBE = (
    "import json, sys, adaptive\nprint(json.dumps([sys.executable, sys.prefix, adaptive.__file__]))"
)


def _venv_kernel_manager() -> KernelManager:
    """A kernel manager for `python3` that can only resolve to this interpreter."""
    ksm = KernelSpecManager(kernel_dirs=[str(Path(sys.prefix, "share", "jupyter", "kernels"))])
    spec = ksm.get_kernel_spec("python3")
    # "python" in argv[0] is replaced by sys.executable when the kernel is launched.
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv
    return KernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def _outputs(nb) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _text(out: dict) -> str:
    if out.get("output_type") == "stream":
        return out.get("text", "")
    data = out.get("data", {})
    return "".join(str(data.get(k, "")) for k in ("text/plain", "text/markdown", "text/html"))


def test_stored_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for cell in code:
        assert cell.outputs == [], f"cell {cell.get('id')} has stored outputs"
        assert cell.execution_count is None, f"cell {cell.get('id')} has an execution count"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "TRACE = None" in params[0].source
    assert nb.cells[-1].cell_type == "markdown" and "open loop" in nb.cells[-1].source.lower()


def test_notebook_executes_in_venv_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTIVE_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("ADAPTIVE_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.delenv("ADAPTIVE_TRACE", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as under Jupyter: ipykernel picks inline
    # The quick run's model is tiny: one intra-op thread is several times faster than two
    # when other processes share the CPUs (it keeps the test well under a minute).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    # a finished one-seed trial for the notebook's last section to read
    from adaptive.trial import run_trial
    from tests.test_trial import SMALL

    run_trial(tmp_path / "trial", ["adaptive.loss='dwa'"], seeds=1, sets=SMALL)
    monkeypatch.setenv("ADAPTIVE_TRIAL", str(tmp_path / "trial"))

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = nbclient.NotebookClient(
        nb,
        km=_venv_kernel_manager(),
        kernel_name="python3",
        timeout=120,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = _outputs(nb)
    assert not [o for o in outputs if o.get("output_type") == "error"]

    # The kernel ran this venv's interpreter and imported this checkout's package.
    executable, prefix, adaptive_file = json.loads(nb.cells[-1].outputs[-1]["text"])
    import adaptive

    assert Path(prefix) == Path(sys.prefix)
    assert Path(executable) == Path(sys.executable)
    assert Path(adaptive_file).resolve() == Path(adaptive.__file__).resolve()

    # The stability table (its last row is the score) and the recommendation are shown.
    rich = [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")]
    assert any(
        "score" in o["data"].get("text/html", "") and "mean_abs_delta" in o["data"]["text/plain"]
        for o in rich
    )
    assert any("Replay is open loop" in _text(o) for o in outputs)
    # Figures are shown inline, and were written with the trace into OUT, not the cwd.
    assert sum("image/png" in o.get("data", {}) for o in rich) >= 3
    out = tmp_path / "out"
    assert any("dwa: valfree_ema/MPJPE" in _text(o) for o in outputs)  # the trial section
    assert (out / "notebook-demo" / "trace.parquet").exists()
    assert not (out / "notebook-demo" / "checkpoint.pt").exists()
    names = {p.name for p in out.iterdir()}
    assert {"compare.png", "stability.csv"} <= names
    # the sweep's advice and the file agree: recommended.toml exists iff one was recommended
    texts = [_text(o) for o in outputs]
    recommended = any("Recommended dwa" in t for t in texts)
    assert recommended or any("No dwa configuration is worth" in t for t in texts)
    assert ("recommended.toml" in names) == recommended
    assert os.listdir(tmp_path) and not (tmp_path / "notebook-output").exists()


def test_relative_trace_is_found_from_where_jupyter_started(tmp_path, monkeypatch):
    import re

    nb = nbformat.read(NOTEBOOK, as_version=4)
    source = next(c.source for c in nb.cells if "def resolve_trace" in c.source)
    code = re.search(r"^def resolve_trace.*?(?=\n\n\n)", source, re.S | re.M).group(0)
    ns = {"Path": Path, "os": os}
    exec(code, ns)
    resolve = ns["resolve_trace"]
    (tmp_path / "runs" / "base").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # the kernel runs in the notebook's folder
    monkeypatch.setenv("PWD", str(tmp_path))  # where the user started Jupyter
    assert resolve("runs/base") == (tmp_path / "runs" / "base").resolve()
    monkeypatch.setenv("PWD", "/nonexistent")
    assert resolve("runs/base") == (tmp_path / "runs" / "base").resolve()  # the repo root
    with pytest.raises(SystemExit, match="'runs/missing' not found") as info:
        resolve("runs/missing")
    assert "\n" not in str(info.value)


def _run_notebook(tmp_path: Path, monkeypatch, env: dict[str, str]):
    """Execute the stored notebook with `env` (ADAPTIVE_* settings) in the venv kernel."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ADAPTIVE_TRIAL", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        km=_venv_kernel_manager(),
        kernel_name="python3",
        timeout=120,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return outputs, [_text(o) for o in outputs]


def test_notebook_on_a_plain_loop_trace_skips_the_scheduler(tmp_path, monkeypatch):
    """A TraceRecorder trace of examples/plain_loop.py: no schedule, `val` metrics only."""
    import subprocess

    run = tmp_path / "plain"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    example = NOTEBOOK.parent.parent / "examples" / "plain_loop.py"
    res = subprocess.run(
        [sys.executable, str(example), "--seed", "0", "--out", str(run)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out"
    outputs, texts = _run_notebook(
        tmp_path,
        monkeypatch,
        {
            "ADAPTIVE_TRACE": str(run / "trace.parquet"),
            "ADAPTIVE_NOTEBOOK_OUT": str(out),
            "ADAPTIVE_NOTEBOOK_METHODS": "dwa,uncertainty,scheduler",
        },
    )
    joined = "\n".join(texts)
    assert "methods dwa, uncertainty, scheduler" in joined
    assert "note: scheduler skipped: " in joined and "schedule" in joined
    assert "Evaluation metrics per epoch" in joined  # val/mse, val/acc: no valfree split
    tables = [o["data"]["text/plain"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("mse" in t and "acc" in t and "val" in t for t in tables)
    names = {p.name for p in out.iterdir()}
    assert {"compare.png", "replay-dwa.png", "replay-uncertainty.png", "stability.csv"} <= names
    assert "replay-scheduler.png" not in names
    table = (out / "stability.csv").read_text().splitlines()[0]
    assert "dwa" in table and "uncertainty" in table and "scheduler" not in table
    assert any("Replay is open loop" in t for t in texts)


def test_notebook_methods_from_the_environment_on_a_trace_without_metrics(tmp_path, monkeypatch):
    from adaptive import TraceRecorder

    trace = tmp_path / "bare" / "trace.parquet"
    with TraceRecorder(trace, components=["a", "b"]) as rec:
        for step in range(120):
            rec.log_step(losses={"a": 1.0 / (1 + 0.05 * step), "b": 0.5 + 0.01 * (step % 7)})
            if step % 20 == 19:
                rec.end_epoch()
    out = tmp_path / "out"
    _, texts = _run_notebook(
        tmp_path,
        monkeypatch,
        {
            "ADAPTIVE_TRACE": str(trace),
            "ADAPTIVE_NOTEBOOK_OUT": str(out),
            "ADAPTIVE_NOTEBOOK_METHODS": "uncertainty",
        },
    )
    joined = "\n".join(texts)
    assert "methods uncertainty;" in joined
    assert "the trace holds no evaluation metrics" in joined
    assert "no DWA sweep" in joined  # dwa was not asked for
    names = {p.name for p in out.iterdir()}
    assert "replay-uncertainty.png" in names and "replay-dwa.png" not in names
