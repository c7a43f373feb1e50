"""The figures of `adaptive replay`, `compare` and `sweep`, tested by their content: panels,
titles, axis labels, legend entries and the plotted data, against the tables the same
command writes. Figures are caught as the commands save them (`Figure.savefig`), so the
tests do not depend on which module draws them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from typer.testing import CliRunner

from adaptive.trace import read_trace
from cli import app
from tests.test_analysis import COMPS, synthetic

runner = CliRunner()


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """File name written -> the Figure saved there."""
    out: dict[str, Figure] = {}
    original = Figure.savefig

    def savefig(self: Figure, fname, *args, **kwargs):
        out[Path(str(fname)).name] = self  # a temporary name that contains the final one
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return out


def _figure(saved: dict[str, Figure], stem: str) -> Figure:
    hits = [f for name, f in saved.items() if stem in name]
    assert len(hits) == 1, (stem, list(saved))
    return hits[0]


def _panels(fig: Figure) -> list[Axes]:
    """The figure's panels: its axes without colour bars and twin axes."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.get_title() != ""]


def _legend(ax: Axes) -> list[str]:
    leg = ax.get_legend()
    assert leg is not None, ax.get_title()
    return [t.get_text() for t in leg.get_texts()]


def _line(ax: Axes, label: str) -> tuple[np.ndarray, np.ndarray]:
    lines = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(lines) == 1, (label, [ln.get_label() for ln in ax.get_lines()])
    return np.asarray(lines[0].get_xdata(), float), np.asarray(lines[0].get_ydata(), float)


def _hlines(ax: Axes) -> set[float]:
    """y of the horizontal lines across the panel (thresholds, clamp bounds)."""
    out = set()
    for ln in ax.get_lines():
        y = np.asarray(ln.get_ydata(), float)
        x = np.asarray(ln.get_xdata(), float)
        if len(y) == 2 and y[0] == y[1] and list(x) == [0.0, 1.0]:
            out.add(round(float(y[0]), 9))
    return out


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic(tmp_path_factory.mktemp("fig") / "run" / "trace.parquet", steps=300)


def test_replay_weighting_figure(saved: dict, trace_path: Path, tmp_path: Path) -> None:
    args = ["replay", str(trace_path), "-m", "dwa", "-p", "temperature=1", "-o", str(tmp_path)]
    res = runner.invoke(app, [*args, "--adjustment-range", "0.25", "-q"])
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(next(tmp_path.glob("replay-dwa*.parquet")))
    weights, deltas = _panels(_figure(saved, "replay-dwa"))
    assert "proposed loss weights" in weights.get_title() and "dwa" in weights.get_title()
    assert weights.get_ylabel() == "loss weight"
    assert deltas.get_xlabel() == "optimizer step"
    assert "temperature=1" in deltas.get_title() and "adjustment_range=0.25" in deltas.get_title()
    assert _legend(weights) == [*COMPS, "epoch boundary", "base weight", "clamp band (base ±25%)"]
    steps = frame["step"].to_numpy(float)
    for c in COMPS:
        x, y = _line(weights, c)
        np.testing.assert_array_equal(x, steps)
        np.testing.assert_allclose(y, frame[f"proposed/weight/{c}"])
        x, y = _line(deltas, c)
        np.testing.assert_allclose(y, frame[f"delta/{c}"])
    assert np.abs(frame[[f"delta/{c}" for c in COMPS]].to_numpy()).max() > 0.01  # it moved
    assert {0.25, -0.25} <= _hlines(deltas)  # the clamp bounds


def test_replay_scheduler_figure(saved: dict, trace_path: Path, tmp_path: Path) -> None:
    args = ["replay", str(trace_path), "-m", "scheduler", "-p", "update_interval=10"]
    res = runner.invoke(app, [*args, "-o", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    frame = pd.read_parquet(next(tmp_path.glob("replay-scheduler*.parquet")))
    panels = _panels(_figure(saved, "replay-scheduler"))
    params = ["tf_ratio", "freerun_horizon", "freerun_weight"]
    assert "adaptive scheduler: base vs proposed schedule" in panels[0].get_title()
    for ax, p in zip(panels, params, strict=False):
        assert ax.get_ylabel().startswith(p)
        assert _legend(ax) == ["base", "proposed"]
        np.testing.assert_allclose(_line(ax, "base")[1], frame[f"base/{p}"])
        np.testing.assert_allclose(_line(ax, "proposed")[1], frame[f"proposed/schedule/{p}"])
    delta = panels[len(params)]
    assert delta.get_ylabel() == "delta δ"
    np.testing.assert_allclose(_line(delta, "delta (+ = harder)")[1], frame["delta"])
    assert "±range 0.2" in _legend(delta) or any(s.startswith("±range") for s in _legend(delta))
    signals = [ax for ax in panels if ax.get_title().startswith("signal: ")]
    assert signals, [ax.get_title() for ax in panels]
    for ax in signals:  # every signal panel plots columns of the replay's frame
        for ln in ax.get_lines():
            label = ln.get_label()
            if label.startswith("_") or len(ln.get_xdata()) == 2:
                continue
            assert len(ln.get_ydata()) == len(frame), label
    valfree = panels[-1]
    assert valfree.get_xlabel() == "optimizer step"
    vf = read_trace(trace_path).split_metrics("valfree")
    x, y = _line(valfree, "valfree YawAbsDeg (per epoch)")
    np.testing.assert_array_equal(x, vf["step"].to_numpy(float))
    np.testing.assert_allclose(y, vf["metric/YawAbsDeg"])


def test_compare_figure(saved: dict, trace_path: Path, tmp_path: Path) -> None:
    methods = ["-m", "dwa", "-m", "uncertainty", "-m", "scheduler"]
    res = runner.invoke(app, ["compare", str(trace_path), *methods, "-o", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    trace = read_trace(trace_path)
    panels = _panels(_figure(saved, "compare"))
    titles = [ax.get_title() for ax in panels]
    # losses, two weighting methods, the scheduler, the grad norm, valfree: one step axis
    assert len(panels) == 6, titles
    losses, dwa, unc, sched, grad, valfree = panels
    assert f"over run {trace.run_id}" in titles[0] and losses.get_yscale() == "log"
    assert losses.get_legend().get_title().get_text() == "component"
    for c in COMPS:
        x, y = _line(losses, c)
        np.testing.assert_array_equal(x, trace.steps["step"].to_numpy(float))
        np.testing.assert_allclose(y, trace.steps[f"loss/{c}"], rtol=1e-6)
    for ax, method in ((dwa, "dwa"), (unc, "uncertainty")):
        assert "proposed weights" in ax.get_title() and method in ax.get_title()
        assert ax.get_legend().get_title().get_text() == method
        assert _legend(ax)[: len(COMPS)] == COMPS
    assert sched.get_ylabel() == "proposed / base" and 1.0 in _hlines(sched)
    np.testing.assert_allclose(_line(grad, "grad norm")[1], trace.steps["grad_norm"], rtol=1e-6)
    assert grad.get_yscale() == "log"
    vf = trace.split_metrics("valfree")
    x, y = _line(valfree, "valfree YawAbsDeg (deg) — left axis")
    np.testing.assert_allclose(y, vf["metric/YawAbsDeg"])
    assert valfree.get_xlabel() == "optimizer step"
    # the stability table written beside it covers the same three controllers
    table = pd.read_csv(tmp_path / "stability.csv", index_col=0)
    assert list(table.columns) == ["dwa", "uncertainty", "scheduler"]


def test_sweep_figure(saved: dict, trace_path: Path, tmp_path: Path) -> None:
    grid = ["-g", "temperature=0.5,2", "-g", "adjustment_range=0.1,0.2,0.3"]
    res = runner.invoke(app, ["sweep", str(trace_path), "-m", "dwa", *grid, "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "sweep.csv")
    fig = _figure(saved, "sweep")
    scatter, heat = _panels(fig)
    assert scatter.get_title() == f"dwa sweep: effect vs stability ({len(table)} configurations)"
    assert scatter.get_xlabel().startswith("effect: mean |delta|")
    assert scatter.get_ylabel().startswith("stability score")
    # one point per configuration, at (effect, score), in its status' series
    points = {}
    for coll in scatter.collections:
        if isinstance(coll, PathCollection):
            status = coll.get_label().split(" (")[0]
            for x, y in coll.get_offsets():
                points.setdefault(status, []).append((round(x, 6), round(y, 6)))
    want = {}
    for _, row in table.iterrows():
        want.setdefault(row["status"], []).append(
            (round(row["mean_abs_delta"], 6), round(row["score"], 6))
        )
    assert {k: sorted(v) for k, v in points.items()} == {k: sorted(v) for k, v in want.items()}
    legend = _legend(scatter)
    assert any(t.startswith("inert below mean |delta|") for t in legend)
    for status, rows in want.items():
        assert f"{status} ({len(rows)})" in legend
    # the heat map: score per (temperature, adjustment_range), the recommended one boxed
    assert heat.get_ylabel() == "temperature" and heat.get_xlabel() == "adjustment_range"
    assert [t.get_text() for t in heat.get_yticklabels()] == ["0.5", "2"]
    assert [t.get_text() for t in heat.get_xticklabels()] == ["0.1", "0.2", "0.3"]
    (image,) = [im for im in heat.get_images() if isinstance(im, AxesImage)]
    grid = np.asarray(image.get_array(), float)
    for _, row in table.iterrows():
        i = [0.5, 2.0].index(row["temperature"])
        j = [0.1, 0.2, 0.3].index(row["adjustment_range"])
        assert grid[i, j] == pytest.approx(row["score"], rel=1e-6)
    boxes = [p for p in heat.patches if isinstance(p, Rectangle)]
    recommended = table[table["status"] == "recommended"]
    assert len(boxes) == len(recommended)
    if len(recommended):
        row = recommended.iloc[0]
        assert boxes[0].get_xy() == (
            [0.1, 0.2, 0.3].index(row["adjustment_range"]) - 0.5,
            [0.5, 2.0].index(row["temperature"]) - 0.5,
        )
        assert "(red box: recommended)" in heat.get_title()
    else:
        assert "(none recommended)" in heat.get_title()


def test_scheduler_figure_follows_renamed_signals(saved: dict, tmp_path: Path) -> None:
    from replay import plot_scheduler, replay

    trace = read_trace(synthetic(tmp_path / "t.parquet", steps=150))
    r = replay(trace, "scheduler", update_interval=10)
    r.frame = r.frame.drop(columns=["signal/loss_trend", "signal/grad_z"])
    r.frame["signal/loss_z"] = np.linspace(-1, 1, len(r.frame))  # a signal it does not know
    plot_scheduler(r, tmp_path / "renamed-signals.png", trace=trace)
    panels = _panels(_figure(saved, "renamed-signals"))
    titles = [ax.get_title() for ax in panels]
    assert "signal: loss z" in titles and "signal: gradient norm" not in titles
    (ax,) = [a for a in panels if a.get_title() == "signal: loss z"]
    np.testing.assert_allclose(_line(ax, "loss_z")[1], r.frame["signal/loss_z"])


# ------------------------------------------------------------------ base lines, bands, titles
def _shared_base_trace(path: Path) -> Path:
    """Three components, two of them (`fk_pos`, `rot`) with the same base weight."""
    import math

    from adaptive.trace import TraceWriter

    rng = np.random.default_rng(0)
    base = {"fk_pos": 1.0, "rot": 1.0, "yaw": 0.5}
    with TraceWriter(path, components=list(base)) as w:
        for s in range(300):
            losses = {
                "fk_pos": math.exp(-s / 150) + 0.05 * rng.random(),
                "rot": 3 * math.exp(-s / 600),
                "yaw": 0.3 + 0.02 * rng.random(),
            }
            w.log_step(
                step=s, epoch=s // 50, losses=losses, weights_base=base, weights=base, grad_norm=1
            )
    return path


def _rgb(color) -> tuple[float, ...]:
    from matplotlib.colors import to_rgb

    return tuple(round(v, 4) for v in to_rgb(color))


def _bands(ax: Axes) -> list:
    from matplotlib.collections import PolyCollection

    return [c for c in ax.collections if isinstance(c, PolyCollection) and len(c.get_paths())]


def _legend_bands(ax: Axes) -> dict[str, tuple[float, ...]]:
    """Legend label -> the colour of the band patch its entry shows."""
    from matplotlib.patches import Patch

    leg = ax.get_legend()
    out = {}
    for handle, text in zip(leg.legend_handles, leg.get_texts(), strict=True):
        parts = handle if isinstance(handle, tuple) else (handle,)
        for h in parts:
            if isinstance(h, Patch):
                out[text.get_text()] = _rgb(h.get_facecolor())
    return out


def test_components_sharing_a_base_weight_are_both_named(saved: dict, tmp_path: Path) -> None:
    trace = _shared_base_trace(tmp_path / "run" / "trace.parquet")
    res = runner.invoke(app, ["replay", str(trace), "-m", "uncertainty", "-o", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    weights, _ = _panels(_figure(saved, "replay-uncertainty"))
    # one dashed base line per distinct base (1.0 shared by fk_pos and rot, 0.5 for yaw)
    dashed = [ln for ln in weights.get_lines() if ln.get_linestyle() == "--"]
    assert sorted(float(np.asarray(ln.get_ydata())[0]) for ln in dashed) == [0.5, 1.0]
    bands = _bands(weights)
    assert len(bands) == 2  # one band per base, not one drawn over the other
    legend = _legend(weights)
    assert "base of fk_pos, rot (band ±30%)" in legend and "base of yaw (band ±30%)" in legend
    # the legend shows each band in the colour it is drawn in, with its dashed line's colour
    drawn = {_rgb(b.get_facecolor()[0]) for b in bands}
    shown = _legend_bands(weights)
    assert set(shown.values()) == drawn and len(drawn) == 2
    for band in bands:  # each band is centred on the dashed base line of its colour
        ys = band.get_paths()[0].vertices[:, 1]
        mid = (ys.min() + ys.max()) / 2
        dash = next(ln for ln in dashed if np.isclose(np.asarray(ln.get_ydata())[0], mid))
        assert _rgb(dash.get_color()) == _rgb(band.get_facecolor()[0])
    # yaw alone on its base: its dashed line and band take yaw's colour
    yaw_base = next(ln for ln in dashed if np.asarray(ln.get_ydata())[0] == 0.5)
    yaw = next(ln for ln in weights.get_lines() if ln.get_label() == "yaw")
    assert _rgb(yaw_base.get_color()) == shown["base of yaw (band ±30%)"] == _rgb(yaw.get_color())


def test_one_shared_base_keeps_one_band_in_the_legends_colour(
    saved: dict, trace_path: Path, tmp_path: Path
) -> None:
    res = runner.invoke(app, ["compare", str(trace_path), "-m", "dwa", "-o", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    panel = next(
        ax for ax in _panels(_figure(saved, "compare")) if ax.get_ylabel() == "loss weight"
    )
    bands = _bands(panel)
    assert len(bands) == 1
    shown = _legend_bands(panel)
    assert list(shown.values()) == [_rgb(bands[0].get_facecolor()[0])]


def test_long_parameter_title_stays_clear_of_the_labels(saved: dict, tmp_path: Path) -> None:
    trace = _shared_base_trace(tmp_path / "run" / "trace.parquet")
    res = runner.invoke(app, ["replay", str(trace), "-m", "uncertainty", "-o", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    fig = _figure(saved, "replay-uncertainty")
    weights, deltas = _panels(fig)
    assert "s_min=-10.0" in deltas.get_title()  # the long parameter list is all there
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # pyplot closed the figure once saved
    canvas.draw()
    renderer = canvas.get_renderer()
    title = deltas.title.get_window_extent(renderer)
    for ax in (weights, deltas):
        label = ax.yaxis.label.get_window_extent(renderer)
        assert not title.overlaps(label), (title, label)
    assert not title.overlaps(weights.get_window_extent(renderer))  # nor the panel above
    box = deltas.get_window_extent(renderer)
    assert box.x0 - 1 <= title.x0 and title.x1 <= box.x1 + 1  # within the panel's width


# --- long traces: per pixel column min/max decimation (issue 27) ---------------------------


def _long_weighting_result(n: int, spikes: dict[tuple[str, str], tuple[int, float]]):
    """A weighting replay of `n` steps over two components, built directly (no replay), with
    one single-step spike per `(column kind, component)`: `{(kind, c): (step, value)}`."""
    from replay._common import ReplayResult

    rng = np.random.default_rng(0)
    steps = np.arange(n, dtype=np.int64)
    frame = pd.DataFrame({"step": steps, "epoch": (steps * 20 // n).astype(np.int32)})
    for c in ("a", "b"):
        frame[f"base/{c}"] = 1.0
        frame[f"proposed/weight/{c}"] = 1.0 + 0.05 * rng.standard_normal(n)
        frame[f"delta/{c}"] = np.clip(0.05 * rng.standard_normal(n), -0.2, 0.2)
    for (kind, c), (at, value) in spikes.items():
        frame.loc[at, f"{kind}/{c}"] = value
    return ReplayResult("dwa", {"adjustment_range": 0.3}, frame, ["a", "b"], run_id="long")


def test_a_single_step_spike_in_a_million_steps_is_in_the_figure(
    saved: dict, tmp_path: Path
) -> None:
    from replay._plots import SAVE_DPI, plot_weighting

    n = 1_000_000
    spikes = {("proposed/weight", "b"): (654_321, 7.5), ("delta", "a"): (123_457, -0.9)}
    result = _long_weighting_result(n, spikes)
    plot_weighting(result, tmp_path / "long.png")
    weights, deltas = _panels(_figure(saved, "long"))
    columns = int(np.ceil(11 * SAVE_DPI))  # the figure is 11 inches wide
    x, y = _line(weights, "b")
    assert np.nanmax(y) == 7.5  # the one step at 7.5 is drawn, not averaged away
    assert x[np.nanargmax(y)] <= 654_321 < x[np.nanargmax(y)] + n / columns + 1
    _, y = _line(deltas, "a")
    assert np.nanmin(y) == -0.9
    for ax in (weights, deltas):
        for c in ("a", "b"):
            x, y = _line(ax, c)
            assert len(y) <= 2 * columns  # O(pixel columns), not O(steps)
            assert len(y) >= columns  # still one min and max per pixel column, about
            assert x[0] == 0 and x[-1] > n - n / columns - 1  # the whole range


def test_decimate_minmax_keeps_short_series_and_each_columns_extremes() -> None:
    from replay._plots import decimate_minmax

    x, y = np.arange(2000), np.sin(np.arange(2000.0))
    xs, ys = decimate_minmax(x, y, columns=1000)  # at the threshold: unchanged
    assert xs is x and ys is y
    y = np.zeros(10_000)
    y[4321], y[10], y[9_999] = 5.0, -3.0, 2.0
    y[5000:5010] = np.nan  # a gap inside one column is not drawn as one
    y[7000] = np.nan
    xs, ys = decimate_minmax(np.arange(10_000), y, columns=100)
    assert len(xs) == len(ys) == 200
    assert np.nanmax(ys) == 5.0 and np.nanmin(ys) == -3.0 and 2.0 in ys
    assert not np.isnan(ys).any()  # no column is all NaN
    y[6000:6100] = np.nan  # one whole column: a gap in the line
    _, ys = decimate_minmax(np.arange(10_000), y, columns=100)
    assert np.isnan(ys).sum() == 2
    # columns split the step range, not the rows: a run resumed at step 90,000 keeps its
    # 100 later steps apart from the first 9,900
    steps = np.r_[np.arange(9_900), np.arange(90_000, 90_100)]
    xs, _ = decimate_minmax(steps, np.ones(10_000), columns=100)
    assert xs.max() >= 90_000 and len(xs) < 200
    # unsorted x (rows out of step order): columns of rows, extremes kept
    xs, ys = decimate_minmax(steps[::-1], y[::-1], columns=100)
    assert len(ys) == 200 and np.nanmax(ys) == 5.0


def test_scheduler_batch_changes_are_marked_where_they_happened(
    saved: dict, trace_path: Path, tmp_path: Path
) -> None:
    from replay import replay
    from replay._plots import plot_scheduler

    trace = read_trace(trace_path)
    result = replay(trace, "scheduler")
    f = result.frame
    reason = f["reason"].astype(object).to_numpy().copy()
    reason[[10, 200]] = "grad_spike"
    f["reason"] = pd.array(reason, dtype="string")
    plot_scheduler(result, tmp_path / "sched.png", trace=trace)
    fig = _figure(saved, "sched")
    marks = [
        c for ax in fig.axes for c in ax.collections
        if isinstance(c, PathCollection) and c.get_label() == "grad_spike (batch change, 2)"
    ]  # fmt: skip
    assert len(marks) == 1
    steps, delta = f["step"].to_numpy(float), f["delta"].to_numpy(float)
    np.testing.assert_array_equal(marks[0].get_offsets(), [[steps[i], delta[i]] for i in (10, 200)])


def _epoch_collection(ax: Axes):
    from matplotlib.collections import LineCollection

    hits = [c for c in ax.collections if isinstance(c, LineCollection)]  # the epoch lines only
    assert len(hits) == 1, [c.get_label() for c in ax.collections]
    return hits[0]


def test_epoch_lines_every_boundary_or_thinned_when_denser_than_the_pixels(
    saved: dict, trace_path: Path, tmp_path: Path
) -> None:
    from replay._plots import EPOCH_LINE_COLUMNS, SAVE_DPI, plot_weighting

    res = runner.invoke(app, ["replay", str(trace_path), "-m", "dwa", "-o", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    weights, _ = _panels(_figure(saved, "replay-dwa"))
    frame = pd.read_parquet(next(tmp_path.glob("replay-dwa*.parquet")))
    epochs, steps = frame["epoch"].to_numpy(), frame["step"].to_numpy()
    expected = steps[np.flatnonzero(np.diff(epochs)) + 1]
    lines = _epoch_collection(weights)
    assert lines.get_label() == "epoch boundary" and len(expected) >= 5
    assert [float(seg[0, 0]) for seg in lines.get_segments()] == list(expected)

    n = 1_000_000
    result = _long_weighting_result(n, {})
    result.frame["epoch"] = (result.frame["step"] // 400).astype(np.int32)  # 2,500 epochs
    plot_weighting(result, tmp_path / "dense.png")
    weights, deltas = _panels(_figure(saved, "dense"))
    columns = int(np.ceil(11 * SAVE_DPI))
    every = int(np.ceil(2499 * EPOCH_LINE_COLUMNS / columns))
    lines = _epoch_collection(weights)
    assert lines.get_label() == f"epoch boundary (1 in {every})"
    xs = [float(seg[0, 0]) for seg in lines.get_segments()]
    assert len(xs) <= columns // EPOCH_LINE_COLUMNS
    assert xs[:2] == [400.0 * every, 800.0 * every] and all(x % 400 == 0 for x in xs)
    assert len(_epoch_collection(deltas).get_segments()) == len(xs)
