"""The `adaptive` command line: a thin Typer layer over the `adaptive` and `replay` libraries.

Heavy modules (torch, matplotlib) are imported inside the commands that need them, so
`adaptive --help`, `inspect` and `compact` start quickly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from adaptive._version import __version__

app = typer.Typer(
    name="adaptive",
    help=(
        "Adaptive loss weighting and training-schedule control with offline replay.\n\n"
        "Record a training trace, replay controllers over it in dry-run, then switch them on."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit with `code` (2: bad input)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"adaptive {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Adaptive loss weighting and schedule control with offline replay."""


def _load(path: Path):
    import warnings

    from adaptive.trace import TraceError, TraceWarning, read_trace

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TraceWarning)
        try:
            trace = read_trace(path)
        except TraceError as exc:
            fail(str(exc))
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    return trace


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="Trace: a .parquet file or a directory of parts.")],
) -> None:
    """Summarise a trace: run, components, metrics, row counts, columns, per-epoch losses.

    Example:

        adaptive inspect runs/demo/trace.parquet
    """
    trace = _load(path)
    steps, epochs = trace.steps, trace.epochs
    out = [
        f"trace      {trace.path}",
        f"version    {trace.version}",
        f"run id     {', '.join(trace.run_ids) or '-'}",
        f"components {', '.join(trace.components)}",
        f"metrics    {', '.join(trace.metrics) or '-'}",
        f"rows       {len(steps)} step, {len(epochs)} epoch"
        + (f" ({', '.join(sorted(epochs['split'].unique()))})" if len(epochs) else ""),
    ]
    if len(steps):
        out.append(
            f"steps      {int(steps['step'].min())}..{int(steps['step'].max())}, "
            f"epochs {int(steps['epoch'].min())}..{int(steps['epoch'].max())}"
        )
    if "time" in trace.columns:
        times = [df["time"] for df in (steps, epochs) if "time" in df and len(df)]
        if times:
            t_min = min(float(t.min()) for t in times)
            t_max = max(float(t.max()) for t in times)
            out.append(f"time span  {t_min:.1f} s .. {t_max:.1f} s ({t_max - t_min:.1f} s)")
    if trace.skipped_parts:
        out.append(f"skipped    {len(trace.skipped_parts)} unreadable part(s)")
    out.append("columns    " + ", ".join(trace.columns))
    typer.echo("\n".join(out))
    if len(steps):
        loss_cols = [f"loss/{c}" for c in trace.components]
        table = steps.groupby("epoch")[loss_cols].mean()
        table.columns = trace.components
        typer.echo("\nmean raw training loss per epoch:")
        typer.echo(table.to_string(float_format=lambda v: f"{v:.4g}"))


@app.command()
def compact(
    path: Annotated[Path, typer.Argument(help="Trace directory of part files.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of replacing PATH.")
    ] = None,
) -> None:
    """Merge a trace directory's part files into one Parquet file, atomically.

    The row count is verified before anything is replaced. Without --out the directory
    is replaced by a single file of the same name.

    Example:

        adaptive compact runs/demo/trace.parquet
    """
    from adaptive.trace import TraceError, compact_trace

    try:
        dest = compact_trace(path, out)
    except TraceError as exc:
        fail(str(exc))
    typer.echo(f"compacted {path} -> {dest}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="adaptive")


if __name__ == "__main__":
    sys.exit(main())
