"""Helpers of the `adaptive` command line: progress bars, tidy help texts, and the commands'
work behind their options (`train_command_config`, `import_command`; the replay commands'
work is `replay._commands`, since the library never imports replay), so `cli.py` only
declares options and prints.

Torch-free and typer-free at import (the library never imports the CLI's toolkit), so
`adaptive COMMAND --help` stays fast: help texts name registered methods through
placeholders (`registered_placeholder("weighting")`) that `tidy_help` fills from the
static tables of `adaptive.names` when help is rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from adaptive._namespace import replay_clash
from adaptive.errors import UsageError
from adaptive.names import REGISTERED, registered

__all__ = [
    "IMPORTERS",
    "PhaseProgress",
    "StepProgress",
    "TrainBar",
    "import_command",
    "keep_examples",
    "one_line",
    "progress_bar",
    "read_warning_lines",
    "registered_placeholder",
    "replay_clash",
    "tidy_help",
    "train_command_config",
    "train_config",
]

T = TypeVar("T")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a KeyError's without the quotes str() adds)."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.strip().splitlines()) or type(exc).__name__


def read_warning_lines(reader: Callable[[Path], T], path: Path, echo: Callable[[str], None]) -> T:
    """Call `reader(path)`, passing the trace's skipped-part warnings to `echo` as one
    `warning: ...` line each (instead of Python's two-line warning format)."""
    import warnings

    from adaptive.trace import TraceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TraceWarning)
        result = reader(path)
    for w in caught:
        echo(f"warning: {w.message}")
    return result


#: `adaptive train`'s options that set one config key: option -> (section, key).
TRAIN_FLAGS = {
    "epochs": ("run", "epochs"),
    "out": ("run", "out"),
    "name": ("run", "name"),
    "seed": ("run", "seed"),
    "device": ("run", "device"),
    "adaptive_loss": ("adaptive", "loss"),
    "adaptive_dry_run": ("adaptive", "dry_run"),
    "adjustment_range": ("adaptive", "adjustment_range"),
    "adaptive_loss_range": ("adaptive", "loss_adjustment_range"),
    "adaptive_scheduler_range": ("adaptive", "scheduler_adjustment_range"),
    "adaptive_log_every": ("adaptive", "log_every"),
    "adaptive_scheduler": ("adaptive", "scheduler"),
    "adaptive_adjustment_rate": ("adaptive", "adjustment_rate"),
    "adaptive_update_interval": ("adaptive", "update_interval"),
    "adaptive_use_epoch_metrics": ("adaptive", "use_epoch_metrics"),
}


def train_command_config(
    options: Mapping[str, Any],
    param_overrides: Callable[[Mapping[str, Any], Sequence[str]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`adaptive train`'s resolved config from its options by name (`TRAIN_FLAGS`, `config`,
    `set_`, `data`, `resume`, `adaptive_param`; not given: None), as `train_config`
    resolves them; `--adaptive-param` values apply to the controllers the config turns on,
    parsed by `param_overrides` (`replay.adaptive_param_overrides`: the CLI passes it, the
    library never imports replay)."""
    flags: dict[str, dict[str, Any]] = {"run": {}, "data": {}, "adaptive": {}}
    for option, (section, key) in TRAIN_FLAGS.items():
        value = options.get(option)
        flags[section][key] = str(value) if isinstance(value, Path) else value
    if options.get("data") is not None:
        flags["data"] = {"source": "bvh", "path": str(options["data"])}
    config, sets, resume = options.get("config"), options.get("set_") or [], options.get("resume")
    cfg = train_config(config, sets, flags, resume)
    if options.get("adaptive_param"):  # the active controllers are known once resolved
        if param_overrides is None:
            raise UsageError("--adaptive-param needs the parameter parser (param_overrides)")
        extra = param_overrides(cfg["adaptive"], options["adaptive_param"])
        flags["adaptive"].update(extra)
        cfg = train_config(config, sets, flags, resume)
    return cfg


#: `adaptive import KIND`: the importer of each kind in `adaptive.importers`.
IMPORTERS = {"tensorboard": "import_tensorboard", "mlflow": "import_mlflow", "csv": "import_csv"}


def import_command(
    kind: str,
    source: str | None,
    *,
    component: Sequence[str] | None = None,
    components: Sequence[str] | None = None,
    metric: Sequence[str] | None = None,
    split: str = "val",
    run: str | None = None,
    step_column: str | None = None,
    steps_per_epoch: int | None = None,
    epoch_tag: str = "epoch",
    run_id: str | None = None,
    out: Path | None = None,
    quiet: bool = False,
) -> Any:
    """`adaptive import KIND SOURCE` with its options: the `ImportReport` of the trace
    written; a bad combination is a `UsageError`."""
    import adaptive.importers as imp

    if kind not in IMPORTERS:
        raise UsageError(f"import: kind must be tensorboard, mlflow or csv, got {kind!r}")
    if source is None and kind != "mlflow":
        raise UsageError(
            f"import {kind}: give the {'log directory' if kind == 'tensorboard' else 'CSV file'}"
        )
    if step_column is not None and kind != "csv":
        raise UsageError("--step-column is for csv imports only")
    with PhaseProgress(quiet) as bar:
        opts = imp.ImportOptions(
            components=imp.parse_mapping(component or [], "--component"),
            patterns=tuple(components or ()),
            metrics=imp.parse_mapping(metric or [], "--metric"),
            split=split,
            run=run,
            steps_per_epoch=steps_per_epoch,
            epoch_tag=epoch_tag,
            run_id=run_id,
            step_column=step_column,
            progress=bar,
        )
        src = (source or "mlruns") if kind == "mlflow" else Path(source or "")
        return imp.import_to_runs(getattr(imp, IMPORTERS[kind]), src, opts, out)


def train_config(
    config: Path | None,
    sets: Sequence[str],
    flags: Mapping[str, Mapping[str, Any | None]],
    resume: Path | None = None,
) -> dict[str, Any]:
    """`adaptive train`'s resolved config: `config` (or, with `resume`, that run folder's
    saved config.toml and its out/name) <- the options given (`flags`: section -> key ->
    value, None where not given) <- the `--set` overrides `sets`. A bad combination is a
    `UsageError`."""
    from adaptive.train.config import load_config

    loss = flags.get("adaptive", {}).get("loss")
    known = registered("weighting")  # the live registry once something loaded it
    if loss not in (None, "none", *known):
        raise UsageError(f"--adaptive-loss must be none or one of {', '.join(known)}, got {loss!r}")
    extra = {k: {n: v for n, v in d.items() if v is not None} for k, d in flags.items()}
    if resume is not None:
        if config is not None:
            raise UsageError("--resume continues a run with its saved config; do not pass --config")
        config = resume / "config.toml"
        if not config.is_file():
            raise UsageError(f"{resume}: not a run folder (no config.toml)")
        extra.setdefault("run", {}).update(out=str(resume.parent), name=resume.name)
    return load_config(config, sets, extra={k: v for k, v in extra.items() if v})


def registered_placeholder(kind: str) -> str:
    """The text a help string carries for the registered names of `kind`."""
    return "{registered:" + kind + "}"


def progress_bar(*columns: str, transient: bool = False) -> Any:
    """The one progress-bar style of the CLI: text columns, a bar after the first, ETA.

    Drawn on stderr and only on a terminal: piped or captured output gets no bar, and no
    blank line where a stopped bar was (so an error message is the first line there)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    first, *rest = (TextColumn(c) for c in columns)
    return Progress(
        first,
        BarColumn(),
        *rest,
        TimeRemainingColumn(),
        transient=transient,
        console=console,
        disable=not console.is_terminal,
    )


class TrainBar:
    """Training progress: epoch, step, loss, ETA (`run_training`'s progress factory)."""

    def __init__(self, cfg: Any) -> None:
        self.progress = progress_bar(
            "[bold]train[/] epoch {task.fields[epoch]}",
            "step {task.completed}/{task.total}",
            "loss {task.fields[loss]}",
            "{task.fields[phase]}",
        )
        self.task: Any = None
        self.loss = "-"

    def start(self, trainer: Any) -> None:
        self.progress.start()
        total = trainer.epochs * trainer.steps_per_epoch
        self.task = self.progress.add_task(
            "train",
            total=total,
            completed=trainer.step,
            epoch=f"{trainer.epoch}/{trainer.epochs}",
            loss="-",
            phase="",
        )

    def __call__(self, info: Any) -> None:
        if self.task is None:
            return
        if info.loss is not None:
            self.loss = f"{info.loss:.4g}"
        self.progress.update(
            self.task,
            completed=info.step,
            epoch=f"{info.epoch + 1}/{info.epochs}",
            loss=self.loss,
            phase="(evaluating)" if info.phase == "eval" else "",
        )

    def stop(self) -> None:
        self.progress.stop()


class StepProgress:
    """A transient bar over replayed steps, replays or imported rows (silent when quiet).

    A context manager: the bar is gone before anything else (an error) is printed.
    """

    def __init__(self, total: int, label: str, quiet: bool, unit: str = "steps") -> None:
        self.quiet = quiet
        self.bar: Any = None
        if quiet:
            return
        self.bar = progress_bar(
            "{task.description}", "{task.completed}/{task.total} " + unit, transient=True
        )
        self.bar.start()
        self.task = self.bar.add_task(label, total=total)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PhaseProgress:
    """One bar per import phase (`read` event bytes, `write` trace rows); a context manager."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.phase = quiet, ""
        self.bar: StepProgress | None = None

    def __call__(self, phase: str, n: int, total: int) -> None:
        if self.quiet:
            return
        if phase != self.phase or self.bar is None:
            self.close()
            unit = "bytes" if phase == "read" else "rows"
            self.bar, self.phase = StepProgress(total, phase, False, unit=unit), phase
        self.bar(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fill_registered(text: str) -> str:
    """Replace every `{registered:KIND}` by the registered names of KIND."""
    for kind in REGISTERED:
        mark = registered_placeholder(kind)
        if mark in text:
            text = text.replace(mark, ", ".join(registered(kind)))
    return text


def _one_spelling(opts: list[str]) -> list[str]:
    """Drop `--a_b` where `--a-b` is there too: the underscore alias parses, help hides it."""
    shown = set(opts)
    return [o for o in opts if not ("_" in o and o.replace("_", "-") in shown)]


def keep_examples(doc: str | None) -> str | None:
    """A command docstring whose example lines (`adaptive ...` after a blank line) help
    prints as written: click rewraps paragraphs, which breaks a long example in two lines
    that no longer paste; a `\\b` line before a paragraph keeps it whole."""
    import re

    if not doc:
        return doc
    return re.sub(r"\n\n( {4,})(adaptive )", lambda m: f"\n\n{m[1][:-4]}\b\n{m[1]}{m[2]}", doc)


def tidy_help(app: Any = None) -> None:
    """Help shows `PATH`, `N`, `X`, `TEXT` rather than typer's `{path}` / `<list[str]>`, one
    spelling per option, and the registered names where a help text has a placeholder.

    Recent typer renders types as `<list[str]>` and required arguments as `{path}`; this
    rewrites those labels (only where no metavar was given) and leaves older typer alone.
    Underscore aliases (`--adaptive_loss`) stay accepted but are left out of help. Names
    come from `adaptive.names`, so rendering help imports no registry (and no torch).
    With `app`, its commands' examples are kept unwrapped (`keep_examples`). Patches
    typer's classes once; calling it again does nothing more.
    """
    for info in getattr(app, "registered_commands", ()):
        if info.callback is not None:
            info.callback.__doc__ = keep_examples(info.callback.__doc__)
    try:
        from typer import core
    except ImportError:  # pragma: no cover
        return
    if getattr(core, "_adaptive_tidy_help", False):
        return
    core._adaptive_tidy_help = True  # type: ignore[attr-defined]
    for cls in (getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)):
        if cls is None or not hasattr(cls, "get_help_record"):
            continue
        record = cls.get_help_record

        def help_record(self, ctx, _record=record):  # type: ignore[no-untyped-def]
            opts, secondary = self.opts, self.secondary_opts
            self.opts, self.secondary_opts = _one_spelling(opts), _one_spelling(secondary)
            try:
                rv = _record(self, ctx)
            finally:
                self.opts, self.secondary_opts = opts, secondary
            if rv is not None:
                rv = (rv[0], _fill_registered(rv[1]))
            return rv

        cls.get_help_record = help_record
    names = {"str": "TEXT", "path": "PATH", "int": "N", "float": "X", "bool": ""}

    def label(text: str | None) -> str | None:
        if not text or not (text.startswith("<") and text.endswith(">")):
            return text
        inner = text[1:-1]
        if inner.startswith("list[") and inner.endswith("]"):
            inner = inner[5:-1]
        return names.get(inner, inner.upper()) or None

    for cls in (getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)):
        if cls is None or not hasattr(cls, "display_type_rich"):
            continue
        original = cls.display_type_rich

        def display_type(self, ctx, _original=original, _cls=cls):  # type: ignore[no-untyped-def]
            if self.metavar is not None:
                return self.metavar
            if _cls.__name__ == "TyperArgument":
                return None  # the argument's name says it
            return label(_original(self, ctx))

        cls.display_type_rich = display_type
    arg = getattr(core, "TyperArgument", None)
    if arg is not None and hasattr(arg, "_usage_display_name"):

        def usage(self) -> str:  # type: ignore[no-untyped-def]
            name = self.display_name_raw.upper()
            return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")

        arg._usage_display_name = usage
    if arg is not None and hasattr(arg, "_rich_display_name"):
        listed = arg._rich_display_name

        def listed_upper(self) -> str:  # type: ignore[no-untyped-def]
            return listed(self).upper()

        arg._rich_display_name = listed_upper
