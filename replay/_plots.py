"""Figures of replayed controllers (headless: the Agg backend, files only)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptive.util import SCHEDULER_ADJUSTMENT_RANGE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from adaptive.trace import Trace
    from replay._engine import ReplayResult


def method_title(method: str) -> str:
    """How figures name a method, from its registered class: its `title`, else the
    docstring's summary up to the first colon or full stop (when short and plain), and the
    registered name, e.g. `Dynamic Weight Averaging (dwa)`; the bare name otherwise;
    `adaptive scheduler`."""
    if method == "scheduler":
        return "adaptive scheduler"
    from adaptive.weighting import method_class

    try:
        cls = method_class(method)
    except ValueError:
        return method
    if cls.title:
        return f"{cls.title} ({cls.name})"
    lines = (cls.__doc__ or "").strip().splitlines()
    summary = re.split(r"[:.]", lines[0], maxsplit=1)[0].strip() if lines else ""
    if not summary or len(summary) > 40 or "`" in summary:
        return cls.name
    return f"{summary} ({cls.name})"


def _pyplot():
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def component_colors(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One fixed colour per component / parameter name, the same in every panel."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


#: Pixel columns per epoch line at least: denser boundaries are thinned (`epoch_lines`).
EPOCH_LINE_COLUMNS = 4


def epoch_lines(ax: Axes, steps: np.ndarray, epochs: np.ndarray, label: bool = True) -> None:
    """Dotted vertical lines at the first step of each epoch after the first, the panel's
    full height, in one artist. Denser than one per `EPOCH_LINE_COLUMNS` pixel columns
    (1,000 epochs across a figure would paint it grey), every k-th boundary is drawn and
    the legend says so: `epoch boundary (1 in k)`."""
    if len(steps) == 0:
        return
    starts = steps[np.flatnonzero(np.diff(epochs)) + 1]
    if not len(starts):
        return
    every = max(1, math.ceil(len(starts) * EPOCH_LINE_COLUMNS / pixel_columns(ax)))
    name = "epoch boundary" if every == 1 else f"epoch boundary (1 in {every})"
    ax.vlines(
        starts[every - 1 :: every], 0, 1, transform=ax.get_xaxis_transform(), colors="0.75",
        lw=0.7, linestyles=":", label=name if label else None,
    )  # fmt: skip


#: The resolution figures are saved at (`save`): a figure's width in pixels is its width in
#: inches times this, the number of pixel columns a per-step series is decimated to.
SAVE_DPI = 110


def decimate_minmax(x: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Thin a per-step series to `columns` pixel columns without hiding a spike: each column
    keeps its minimum and its maximum (two points at the column's first x), so a value
    reached at a single step is still drawn. Columns split the x range evenly when `x` is
    sorted (the steps), else the rows. NaN is ignored within a column; a column of NaN only
    stays NaN (a gap). A series of at most `2 * columns` points is returned as given."""
    x, y = np.asarray(x), np.asarray(y)
    n = len(y)
    if n <= 2 * max(int(columns), 1):
        return x, y
    if not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float64)
    starts = _column_starts(x, int(columns))
    with np.errstate(invalid="ignore"):
        lo = np.fmin.reduceat(y, starts)
        hi = np.fmax.reduceat(y, starts)
    xs = np.repeat(x[starts], 2)
    ys = np.empty(2 * len(starts), dtype=np.float64)
    ys[0::2], ys[1::2] = lo, hi
    return xs, ys


#: The last x decimated and its column starts: a figure's series share their steps, so the
#: columns are found once per figure (`save` forgets them).
_LAST_COLUMNS: list[tuple[np.ndarray, int, np.ndarray]] = []


def _column_starts(x: np.ndarray, columns: int) -> np.ndarray:
    """First row of each non-empty column: columns split the x range evenly where `x` is
    sorted, else the rows."""
    if _LAST_COLUMNS and _LAST_COLUMNS[0][0] is x and _LAST_COLUMNS[0][1] == columns:
        return _LAST_COLUMNS[0][2]
    n = len(x)
    if np.issubdtype(x.dtype, np.number) and x[-1] > x[0] and bool(np.all(x[1:] >= x[:-1])):
        edges = np.linspace(float(x[0]), float(x[-1]), columns, endpoint=False)
        starts = np.searchsorted(x, edges, side="left")
        starts = starts[np.r_[True, starts[1:] > starts[:-1]]]  # drop empty columns
    else:
        starts = np.unique(np.linspace(0, n, columns, endpoint=False).astype(np.int64))
    _LAST_COLUMNS[:] = [(x, columns, starts)]
    return starts


def pixel_columns(ax: Axes) -> int:
    """Pixel columns of the saved figure `ax` is drawn in (at least those of the axes)."""
    return int(np.ceil(ax.figure.get_figwidth() * SAVE_DPI))


def line(ax: Axes, x: np.ndarray, y: np.ndarray, *args: object, **kw: object) -> None:
    """`ax.plot` of a per-step series, decimated to the figure's pixel columns when long
    (`decimate_minmax`: each column's minimum and maximum) and then drawn as the band
    between them (`_envelope_line`)."""
    xs, ys = decimate_minmax(x, y, pixel_columns(ax))
    solid = kw.get("ls", kw.get("linestyle", "-")) in ("-", "solid")
    if ys is y or args or "color" not in kw or not solid:
        ax.plot(xs, ys, *args, **kw)
        return
    ax.add_line(_envelope_line()(xs, ys, **kw))
    ax._request_autoscale_view()  # as ax.plot does


_ENVELOPE: list[type] = []


def _envelope_line() -> type:
    """`EnvelopeLine`, a `Line2D` whose data are a decimated series (pairs of a column's
    minimum and maximum: what tests, legends and limits see) and which draws the band
    between the minima and the maxima, outlined in the line's colour and width. The
    same pixels as the zig-zag through them, at a fraction of the cost: Agg strokes a
    zig-zag of 2 x 1,210 full-height segments in ~0.1 s per line, a band's outline in
    ~0.005 s (a noisy per-step weight of a 100 k-step trace)."""
    if _ENVELOPE:
        return _ENVELOPE[0]
    from matplotlib.lines import Line2D
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    class EnvelopeLine(Line2D):
        def draw(self, renderer: Any) -> None:
            if not self.get_visible():
                return
            x = np.asarray(self.get_xdata(), dtype=np.float64)
            y = np.asarray(self.get_ydata(), dtype=np.float64)
            xc, lo, hi = x[0::2], y[0::2], y[1::2]
            ok = np.flatnonzero(np.isfinite(lo) & np.isfinite(hi))
            if len(ok) == 0:
                self.stale = False
                return
            verts, codes = [], []
            for run in np.split(ok, np.flatnonzero(np.diff(ok) > 1) + 1):  # gaps: NaN columns
                top = np.column_stack([xc[run], hi[run]])
                bottom = np.column_stack([xc[run][::-1], lo[run][::-1]])
                poly = np.vstack([top, bottom, top[:1]])
                kinds = np.full(len(poly), MplPath.LINETO, dtype=MplPath.code_type)
                kinds[0], kinds[-1] = MplPath.MOVETO, MplPath.CLOSEPOLY
                verts.append(poly)
                codes.append(kinds)
            color = self.get_color()
            patch = PathPatch(
                MplPath(np.vstack(verts), np.concatenate(codes)),
                facecolor=color,
                edgecolor=color,
                lw=self.get_linewidth(),
                alpha=self.get_alpha(),
                transform=self.get_transform(),
                joinstyle="round",
            )
            patch.set_figure(self.get_figure())
            patch.set_clip_box(self.get_clip_box())
            clip = self.get_clip_path()
            if clip is not None:
                patch.set_clip_path(clip)
            patch.draw(renderer)
            self.stale = False

    _ENVELOPE.append(EnvelopeLine)
    return EnvelopeLine


def save(fig: Figure, path: Path) -> Path:
    """Save a figure atomically (temporary name, then rename); the format follows the suffix."""
    from adaptive.util import atomic_write

    plt = _pyplot()
    _LAST_COLUMNS.clear()
    try:
        # a figure laid out by constrained layout already fits its legends and labels:
        # a tight bounding box would draw it twice to measure it again
        tight = None if fig.get_layout_engine() is not None else "tight"

        def write(tmp: Path) -> None:
            fig.savefig(tmp, dpi=SAVE_DPI, bbox_inches=tight)

        return atomic_write(path, write)
    finally:
        plt.close(fig)


#: Colour of a base line and band that several components share.
SHARED_BASE_COLOR = "0.3"
BAND_ALPHA = 0.12


def base_groups(result: ReplayResult) -> list[list[str]]:
    """Components grouped by identical base-weight series, in component order: one base
    line and clamp band per group (two components with the same base weight share one,
    named after both, instead of drawing one dashed line over the other)."""
    f = result.frame
    groups: list[tuple[np.ndarray, list[str]]] = []
    for c in result.names:
        base = f[f"base/{c}"].to_numpy()
        for b, names in groups:
            if _same_series(b, base):
                names.append(c)
                break
        else:
            groups.append((base, [c]))
    return [names for _, names in groups]


def _same_series(a: np.ndarray, b: np.ndarray) -> bool:
    """`np.array_equal(a, b, equal_nan=True)`, quick where they differ: a sample of about
    1,000 values first (different base weights of a long trace differ in most of it), then
    the plain comparison, then the NaN-aware one only where that fails."""
    if a.shape != b.shape:
        return False
    stride = max(1, len(a) // 1000)
    if not np.array_equal(a[::stride], b[::stride], equal_nan=True):
        return False
    return bool(np.array_equal(a, b) or np.array_equal(a, b, equal_nan=True))


def plot_weighting_ax(
    ax: Axes, result: ReplayResult, colors: dict, r: float
) -> list[tuple[Any, str]]:
    """Proposed weight per component, with its base weight (dashed) and the ±r clamp band;
    returns the legend entries of the base lines and bands, `(handle, label)`, in the
    colours they are drawn in: with one base for every component, a grey `base weight` line
    and `clamp band`; else one entry per base (a component's colour, grey where several
    share it, named after them) showing its band and dashed line together."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    f = result.frame
    steps = f["step"].to_numpy()
    groups = base_groups(result)
    entries: list[tuple[Any, str]] = []
    for names in groups:
        base = f[f"base/{names[0]}"].to_numpy()
        color = colors[names[0]] if len(names) == 1 and len(groups) > 1 else SHARED_BASE_COLOR
        xs, lo = decimate_minmax(steps, base * (1 - r), pixel_columns(ax))
        _, hi = decimate_minmax(steps, base * (1 + r), pixel_columns(ax))
        ax.fill_between(xs, lo, hi, color=color, alpha=BAND_ALPHA, lw=0)
        line(ax, steps, base, color=color, lw=0.8, ls="--")
        band = Patch(facecolor=color, alpha=BAND_ALPHA, lw=0)
        dashed = Line2D([], [], color=color, lw=0.8, ls="--")
        if len(groups) == 1:
            entries += [(dashed, "base weight"), (band, f"clamp band (base ±{r:.0%})")]
        else:
            entries.append(((band, dashed), f"base of {', '.join(names)} (band ±{r:.0%})"))
    for c in result.names:
        line(ax, steps, f[f"proposed/weight/{c}"].to_numpy(), color=colors[c], lw=1.4, label=c)
    ax.set_ylabel("loss weight")
    return entries


def legend_with(ax: Axes, entries: Sequence[tuple[Any, str]], **kw: Any) -> Any:
    """The axes' legend: its labelled artists, then `entries` (`(handle, label)`; a tuple
    handle draws its parts over each other, a band with its dashed line)."""
    from matplotlib.legend_handler import HandlerTuple

    handles, labels = ax.get_legend_handles_labels()
    handles += [h for h, _ in entries]
    labels += [lab for _, lab in entries]
    return ax.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=1)}, **kw)


def plot_weighting(result: ReplayResult, path: Path, *, trace: Trace | None = None) -> Path:
    """Weights a loss-weighting method would have produced, over optimizer steps."""
    import textwrap

    plt = _pyplot()
    f = result.frame
    r = float(result.params.get("adjustment_range", 0.0))
    colors = component_colors(result.names)
    fig, (ax, ax2) = plt.subplots(
        2,
        1,
        figsize=(11, 7),
        sharex=True,
        gridspec_kw={"height_ratios": [2, 1]},
        layout="constrained",
    )
    entries = plot_weighting_ax(ax, result, colors, r)
    steps, epochs = f["step"].to_numpy(), f["epoch"].to_numpy()
    epoch_lines(ax, steps, epochs)
    legend_with(ax, entries, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    run = f" — run {result.run_id}" if result.run_id else ""
    ax.set_title(f"{method_title(result.method)}: proposed loss weights (dry-run replay{run})")
    for c in result.names:
        line(ax2, steps, f[f"delta/{c}"].to_numpy(), color=colors[c], lw=1.2, label=c)
    ax2.axhline(r, color="0.4", lw=0.8, ls="--")
    ax2.axhline(-r, color="0.4", lw=0.8, ls="--")
    epoch_lines(ax2, steps, epochs, label=False)
    ax2.set_ylabel("delta Δ (fraction of base)")
    ax2.set_xlabel("optimizer step")
    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    # a method with many parameters (uncertainty) would make one line wider than the panel,
    # running into the y-label: wrap them under the title, within the panel's width
    wrapped = textwrap.fill(f"({params})", width=110, break_long_words=False)
    ax2.set_title(f"clamped delta per component\n{wrapped}", fontsize=9)
    return save(fig, path)


#: Scheduler signals to plot: (frame column, legend label, panel). Columns a replay does not
#: have are skipped, and any other `signal/<name>` column gets a panel of its own, so the
#: figure follows whichever signals the scheduler records.
SCHEDULER_SIGNALS: tuple[tuple[str, str, str], ...] = (
    ("signal/grad_z", "largest grad-norm z-score in the window (vs its regime)", "gradient norm"),
    ("signal/grad_outliers", "outlier batches in the window", "outliers"),
    ("signal/loss_trend", "batch loss trend vs reference (relative)", "trend"),
    ("signal/calm_streak", "calm decision points in a row", "recovery"),
    ("signal/free_trend", "valfree metric trend (relative, per epoch)", "trend"),
)


def law_thresholds(params: Mapping[str, Any]) -> dict[str, float]:
    """``{signal: threshold or target}`` of the law a scheduler replay ran (its
    ``thresholds()``, rebuilt from the replay's params); empty when it cannot be built."""
    from adaptive.scheduler import DEFAULT_LAW, law_class

    try:
        cls = law_class(params.get("law", DEFAULT_LAW))
        return cls(**{k: params[k] for k in cls.param_names() if k in params}).thresholds()
    except (ValueError, TypeError):
        return {}


def signal_panels(
    columns: Sequence[str], spec: Sequence[tuple[str, str, str]] = SCHEDULER_SIGNALS
) -> dict[str, list[tuple[str, str]]]:
    """Panel name -> [(column, label), ...] for the signal columns present, in `spec` order;
    unlisted `signal/<name>` columns get a panel named after them."""
    panels: dict[str, list[tuple[str, str]]] = {}
    listed = set()
    for col, label, panel in spec:
        listed.add(col)
        if col in columns:
            panels.setdefault(panel, []).append((col, label))
    for col in columns:
        if col.startswith("signal/") and col not in listed:
            name = col.split("/", 1)[1]
            panels.setdefault(name.replace("_", " "), []).append((col, name))
    return panels


def plot_scheduler(result: ReplayResult, path: Path, *, trace: Trace | None = None) -> Path:
    """Base versus adjusted schedule values, the delta with a marker per change (coloured by
    reason), each signal panel on its own axis, and the valfree metric it reacts to."""
    plt = _pyplot()
    f = result.frame
    steps, epochs = f["step"].to_numpy(), f["epoch"].to_numpy()
    names = result.names
    colors = component_colors(names)
    panels = signal_panels(list(f.columns))
    metric = str(result.params.get("free_metric", "YawAbsDeg"))
    vf = None
    if trace is not None and len(trace.epochs):
        vf = trace.split_metrics("valfree")
        col = f"metric/{metric}" if f"metric/{metric}" in vf.columns else "loss_total"
        vf = vf if col in vf.columns and "step" in vf.columns and len(vf) else None
    n = len(names) + 1 + len(panels) + int(vf is not None)
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.1 * n + 0.5), sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    for ax, p in zip(axes, names, strict=False):
        line(ax, steps, f[f"base/{p}"].to_numpy(), color="0.4", lw=1.0, ls="--", label="base")
        line(
            ax,
            steps,
            f[f"proposed/schedule/{p}"].to_numpy(),
            color=colors[p],
            lw=1.4,
            label="proposed",
        )
        epoch_lines(ax, steps, epochs, label=False)
        ax.set_ylabel(p + (" (frames)" if "horizon" in p else ""))
        ax.set_title(f"{p}: stage schedule (base) vs adjusted", fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    run = f" — run {result.run_id}" if result.run_id else ""
    axes[0].set_title(
        f"adaptive scheduler: base vs proposed schedule (dry-run replay{run})\n"
        f"{names[0]}: stage schedule (base) vs adjusted",
        fontsize=10,
    )
    ax = axes[len(names)]
    delta = f["delta"].to_numpy()
    line(ax, steps, delta, color="black", lw=1.3, label="delta (+ = harder)")
    r = float(result.params.get("adjustment_range", SCHEDULER_ADJUSTMENT_RANGE))
    ax.axhline(r, color="0.5", ls="--", lw=0.8, label=f"±range {r:g}")
    ax.axhline(-r, color="0.5", ls="--", lw=0.8)
    # One marker per change, coloured by reason; epoch-level changes as diamonds. The legend
    # names the reasons, so no text sits on the delta line.
    marks: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    reasons = f["reason"].fillna("").astype(str)  # "" where nothing changed
    for i in np.flatnonzero(reasons.str.len().to_numpy() > 0):  # no per-step Python loop
        xs, ys = marks.setdefault(("batch", str(reasons.iat[i])), ([], []))
        xs.append(float(steps[i]))
        ys.append(float(delta[i]))
    for ev in result.events:
        if ev.get("level") == "epoch" and len(steps):
            xs, ys = marks.setdefault(("epoch", str(ev["reason"])), ([], []))
            xs.append(float(steps[min(int(ev["step"]), len(steps) - 1)]))
            ys.append(float(ev["new_delta"]))
    reason_colors = component_colors(sorted({reason for _, reason in marks}))
    for (level, reason), (xs, ys) in sorted(marks.items()):
        ax.scatter(
            xs,
            ys,
            color=reason_colors[reason],
            marker="D" if level == "epoch" else "o",
            s=26 if level == "epoch" else 18,
            zorder=3,
            edgecolors="black" if level == "epoch" else "none",
            linewidths=0.5,
            label=f"{reason} ({level} change, {len(xs)})",
        )
    epoch_lines(ax, steps, epochs, label=False)
    ax.set_ylabel("delta δ")
    ax.set_title("delta and its changes, by reason", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    k = len(names) + 1
    thresholds = law_thresholds(result.params)
    signal_colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
    for j, (panel, series) in enumerate(panels.items()):
        ax = axes[k + j]
        for m, (col, label) in enumerate(series):
            line(
                ax,
                steps,
                f[col].to_numpy(np.float64),
                color=signal_colors[(j + m) % len(signal_colors)],
                ls=("-", "--", ":")[m % 3],
                lw=1.1,
                label=label,
            )
        if panel == "trend":
            ax.axhline(0.0, color="0.6", lw=0.7, ls=":")
        # the threshold or target each signal is compared with (the law's thresholds())
        for m, (col, _label) in enumerate(series):
            name = col.split("/", 1)[1]
            if name in thresholds:
                thr = thresholds[name]
                ax.axhline(
                    thr,
                    color=signal_colors[(j + m) % len(signal_colors)],
                    lw=0.9,
                    ls=(0, (1, 2)),
                    label=f"{name} compared with {thr:g}",
                )
        epoch_lines(ax, steps, epochs, label=False)
        ax.set_ylabel(panel)
        ax.set_title(f"signal: {panel}", fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if vf is not None:
        ax = axes[-1]
        col = f"metric/{metric}" if f"metric/{metric}" in vf.columns else "loss_total"
        shown = metric if col != "loss_total" else "loss"
        ax.plot(
            vf["step"].to_numpy(),
            vf[col].to_numpy(),
            "o-",
            color="tab:red",
            ms=3,
            lw=1.0,
            label=f"valfree {shown} (per epoch)",
        )
        epoch_lines(ax, steps, epochs, label=False)
        ax.set_ylabel(f"valfree {shown}")
        ax.set_title("free-run validation metric the epoch-level rule reads", fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axes[-1].set_xlabel("optimizer step")
    return save(fig, path)


def plot_result(result: ReplayResult, path: Path, *, trace: Trace | None = None) -> Path:
    """The figure for one replayed controller."""
    if result.kind == "schedule":
        return plot_scheduler(result, path, trace=trace)
    return plot_weighting(result, path, trace=trace)
