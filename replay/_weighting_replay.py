"""Block replay of the adaptive loss weighting over a trace, and batched sweeps.

Both drive the live controller class (`AdaptiveLossWeighting`) through its block entry
point `step_block`, which advances the consecutive steps of one epoch at once with the
same code (and bit-identical results) as the per-step `__call__` the trainer uses. The
trainer's call order is kept: `end_epoch()` between epochs, `set_base_weights(...)` before
the first step whose recorded base weights differ (blocks are split there).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from adaptive.errors import InputError, ParameterError
from adaptive.trace import Trace
from adaptive.util import LOSS_ADJUSTMENT_RANGE
from replay._common import ReplayError, ReplayResult, _col, _epoch_bounds, first_run_id

__all__ = [
    "SWEEP_OUTPUTS",
    "ReplayArrays",
    "WeightingInputs",
    "extras_columns",
    "read_extras",
    "replay_single",
    "replay_weighting_fast",
    "sweep_weighting",
    "weighting_inputs",
]

# BlockOutput attribute -> frame column prefix (order of the frame's columns).
_FRAME_KEYS = {
    "scales": "scale",
    "deltas": "delta",
    "clamped": "clamped",
    "proposed": "proposed/weight",
    "base": "base",
}
SWEEP_OUTPUTS = ("proposed", "deltas", "clamped", "scales")


@dataclass
class WeightingInputs:
    """What the weighting replay feeds the controller (see :func:`weighting_inputs`)."""

    components: list[str]
    losses: np.ndarray  # (T, C) float32, the controller's input
    base: np.ndarray  # (T, C) float64 base weights
    epochs: np.ndarray  # (T,)
    restarts: np.ndarray  # (T,) bool: restart() before this row (a new stage begins)
    notes: list[str] = field(default_factory=list)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (T, C) float32


def extras_columns(trace: Trace, name: str) -> list[str]:
    """The trace columns holding extra `name` (`name/<c>` per component)."""
    return [f"{name}/{c}" for c in trace.components]


def read_extras(trace: Trace, method: str, requires: Sequence[str]) -> dict[str, np.ndarray]:
    """The recorded extras a method needs, ``(T, C)`` float32 each; `ReplayError` (one
    line) naming what is missing and how to record it."""
    from adaptive.weighting import EXTRAS
    from replay._advice import shell_arg

    out = {}
    for name in requires:
        cols = extras_columns(trace, name)
        missing = [c for c in cols if c not in trace.steps.columns]
        if missing:
            raise ReplayError(
                f"{trace.path}: method {method!r} needs the columns {name}/<component> "
                f"({EXTRAS[name].description}), and this trace lacks {', '.join(missing)}; "
                f"record them by training with adaptive train --adaptive-loss {method}, or "
                f"with adaptive train --set {shell_arg(f'adaptive.record_extras=[{name!r}]')} "
                "(or TraceRecorder extras)"
            )
        out[name] = trace.steps[cols].to_numpy(dtype=np.float32)
    return out


def weighting_inputs(
    trace: Trace,
    *,
    loss_input: str | None = None,
    restart_on_stage_change: bool | None = None,
    method: str | None = None,
) -> WeightingInputs:
    """Components, controller inputs, base weights, epochs and restart points of a
    trace's step rows, as the live trainer fed them; with `method`, also the recorded
    extras it requires (refused with a one-line `ReplayError` when absent).

    `loss_input`: `tf` reads `loss_tf/<c>` (the teacher-forced part, present in every
    stage), `total` reads `loss/<c>`; None takes the run's recorded
    `adaptive.loss_input`, else `tf`. A trace without `loss_tf/<c>` columns falls back to
    `loss/<c>` (noted). `restart_on_stage_change` (None: the run's setting, else True)
    restarts the method where the `stage` column changes at an epoch start (no `stage`
    column: no restarts). Fallbacks are noted for traces of the reference trainer (they
    record its config) from before these columns. Base weights come from `weight_base/<c>` (or
    `weight/<c>` when no base column exists, else 1).
    """
    from replay._common import recorded_config, recorded_setting

    steps = trace.steps
    comps = list(trace.components)
    if not comps:
        raise ReplayError(f"{trace.path}: no loss/<component> columns to replay")
    if len(steps) == 0:
        raise ReplayError(f"{trace.path}: no step rows to replay")
    if loss_input is None:
        loss_input = str(recorded_setting(trace, "loss_input", "tf"))
    if loss_input not in ("tf", "total"):
        raise ReplayError(f"loss_input must be 'tf' or 'total', got {loss_input!r}")
    if restart_on_stage_change is None:
        restart_on_stage_change = bool(recorded_setting(trace, "restart_on_stage_change", True))
    notes: list[str] = []
    # a trace of the reference trainer (it records its config) from before these columns:
    # say which fallback is used; other loops' traces simply have loss/<c> as the input
    reference = bool(recorded_config(trace))
    prefix = "loss/"
    if loss_input == "tf":
        if all(f"loss_tf/{c}" in steps.columns for c in comps):
            prefix = "loss_tf/"
        elif reference:
            notes.append("no loss_tf/<c> columns: the loss weighting reads loss/<c>")
    base_cols = []
    for c in comps:
        col = _col(steps, f"weight_base/{c}")
        if col is None:
            col = _col(steps, f"weight/{c}")
        base_cols.append(np.ones(len(steps)) if col is None else col)
    base = np.stack(base_cols, axis=1)
    losses = steps[[f"{prefix}{c}" for c in comps]].to_numpy(dtype=np.float32)
    epochs = steps["epoch"].to_numpy()
    restarts = np.zeros(len(steps), dtype=bool)
    if restart_on_stage_change:
        if "stage" in steps.columns:
            stage = steps["stage"].to_numpy()
            restarts[1:] = (stage[1:] != stage[:-1]) & (epochs[1:] != epochs[:-1])
        elif reference:
            notes.append("no stage column: the loss weighting is never restarted")
    extras = {}
    if method is not None:
        from adaptive.weighting import method_class

        try:
            requires = method_class(method).requires
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        recorded = recorded_setting(trace, "loss_input", None)
        observed = "loss_tf/<c>" if prefix == "loss_tf/" else "loss/<c>"
        if requires and recorded is not None and recorded != loss_input:
            raise ReplayError(
                f"{trace.path}: the run recorded its extras ({', '.join(requires)}) of the "
                f"{recorded!r} losses; replaying {method!r} on loss_input={loss_input!r} "
                f"({observed}) would mix the two: leave loss_input at the run's setting"
            )
        extras = read_extras(trace, method, requires)
    return WeightingInputs(comps, losses, base, epochs, restarts, notes, extras)


def _segments(
    epochs: np.ndarray, base: np.ndarray, restarts: np.ndarray
) -> Iterator[tuple[bool, bool, int, int, np.ndarray | None]]:
    """`(new_epoch, restart, start, stop, new_base)` blocks: runs of one epoch with
    constant base weights. `new_base` is the block's base where it differs from the
    previous row's (NaN compares unequal, as `np.array_equal` in the per-step replay), else
    None; `restart` where a new stage begins with the block."""
    changed = np.zeros(len(base), dtype=bool)
    for j in range(base.shape[1]):
        col = np.ascontiguousarray(base[:, j])
        changed[1:] |= col[1:] != col[:-1]
    for i, (_, start, stop) in enumerate(_epoch_bounds(epochs)):
        cuts = start + 1 + np.flatnonzero(changed[start + 1 : stop])
        edges = [start, *cuts.tolist(), stop]
        for a, b in itertools.pairwise(edges):
            new_epoch = i > 0 and a == start
            yield (
                new_epoch,
                new_epoch and bool(restarts[a]),
                a,
                b,
                (base[a] if changed[a] else None),
            )


def _controller(
    method: str,
    comps: list[str],
    base0: np.ndarray,
    configs: Sequence[Mapping[str, Any]] | None,
    **kw: Any,
) -> Any:
    from adaptive.weighting import AdaptiveLossWeighting, available_methods

    if method not in available_methods():
        raise ReplayError(
            f"unknown method {method!r}; valid methods: {', '.join(available_methods())}"
        )
    base = dict(zip(comps, base0.tolist(), strict=True))
    try:  # the boundary where user hyperparameters meet the constructor: a refusal is bad input
        if configs is None:
            return AdaptiveLossWeighting(
                comps, base, method=method, dry_run=True, log_every=0, **kw
            )
        return AdaptiveLossWeighting.batched(
            comps, base, method=method, configs=configs, dry_run=True
        )
    except InputError:
        raise
    except ValueError as exc:
        raise ParameterError(f"{method}: {exc}") from exc


def _drive(
    ctrl: Any,
    inputs: WeightingInputs,
    losses: torch.Tensor,
    on_block: Callable[[int, int, Any], None],
    progress: Callable[[int], None] | None,
    max_block: int = 0,
) -> None:
    """Feed every (epoch, base) block to the controller in the trainer's order (end of
    epoch, restart at a new stage, base weights), in pieces of at most `max_block` steps
    when given (same results, smaller temporaries)."""
    comps = inputs.components
    extras = {k: torch.from_numpy(v.astype(np.float64)) for k, v in inputs.extras.items()}
    done_in_epoch = 0
    for new_epoch, restart, a, b, new_base in _segments(
        inputs.epochs, inputs.base, inputs.restarts
    ):
        if new_epoch:
            if progress is not None and done_in_epoch:
                progress(done_in_epoch)
            done_in_epoch = 0
            ctrl.end_epoch()
        if restart:
            ctrl.restart()
        if new_base is not None:
            ctrl.set_base_weights(dict(zip(comps, new_base.tolist(), strict=True)))
        step = max_block or b - a
        for lo in range(a, b, step):
            hi = min(b, lo + step)
            ext = {k: v[lo:hi] for k, v in extras.items()} or None
            on_block(lo, hi, ctrl.step_block(losses[lo:hi], extras=ext))
        done_in_epoch += b - a
    if progress is not None and done_in_epoch:
        progress(done_in_epoch)


@dataclass
class ReplayArrays:
    """What :func:`replay_single` computed: `outputs` (`scales`, `deltas`, `clamped`,
    `proposed`, `base` ``(T, C)``, `skipped` ``(T,)``), the method `state` behind each
    step (key -> ``(T, C)`` or ``(T,)``), and whether a compiled kernel ran."""

    outputs: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    kernel: bool


def replay_single(
    ctrl: Any,
    inputs: WeightingInputs,
    progress: Callable[[int], None] | None = None,
    *,
    kernels: bool | None = None,
) -> ReplayArrays:
    """Replay `inputs` through a single-configuration controller from its current state
    (the trainer's call order, as :func:`_drive`), leaving it in the state the run ends in.

    `kernels`: None runs a compiled kernel (replay/_kernels.py) where numba is installed
    and the method and its settings have one, unless ``ADAPTIVE_REPLAY_KERNELS=0``; False
    forces the torch path; True uses a kernel where one applies whatever the environment
    says. A kernel's outputs and the controller's state afterwards equal the torch path's
    within 1e-6 relative, with the same clamp flags (tests/test_kernels.py).
    """
    kernel = None
    if not ctrl.is_batched:
        from replay._kernels import select

        kernel, _ = select(ctrl, force=kernels)
    if kernel is not None:
        return _kernel_replay(ctrl, kernel, inputs, progress)
    n, c = inputs.losses.shape
    losses = torch.from_numpy(inputs.losses.astype(np.float64))
    bufs: dict[str, torch.Tensor] = {
        k: torch.empty((n, c), dtype=torch.bool if k == "clamped" else torch.float64)
        for k in _FRAME_KEYS
    }
    bufs["skipped"] = torch.empty(n, dtype=torch.bool)
    state: dict[str, torch.Tensor] = {}

    def on_block(a: int, b: int, out: Any) -> None:
        for k, buf in bufs.items():
            buf[a:b].copy_(getattr(out, k))
        for k, v in out.method_state.items():
            if k not in state:
                state[k] = torch.empty((n, *v.shape[1:]), dtype=v.dtype)
            state[k][a:b].copy_(v)

    _drive(ctrl, inputs, losses, on_block, progress)
    return ReplayArrays(
        {k: v.numpy() for k, v in bufs.items()}, {k: v.numpy() for k, v in state.items()}, False
    )


def kernel_schedule(ctrl: Any, inputs: WeightingInputs) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """What a kernel needs from the controller's own calls, made in the trainer's order
    (`end_epoch`, `set_base_weights`: the same checks and errors as the torch path): the
    base weights of every step ``(T, C)``, the steps before which the method restarts
    ``(T,)``, and the number of steps of each epoch."""
    comps = inputs.components
    n, c = inputs.losses.shape
    reset = np.zeros(n, dtype=np.bool_)
    base = np.empty((n, c))
    epoch_steps: list[int] = []
    for new_epoch, restart, a, b, new_base in _segments(
        inputs.epochs, inputs.base, inputs.restarts
    ):
        if new_epoch:
            epoch_steps.append(0)
            ctrl.end_epoch()
        reset[a] = restart  # the kernel starts the method's state afresh there
        if new_base is not None:
            ctrl.set_base_weights(dict(zip(comps, new_base.tolist(), strict=True)))
        base[a:b] = ctrl._base.numpy()
        if not epoch_steps:
            epoch_steps.append(0)
        epoch_steps[-1] += b - a
    return base, reset, epoch_steps


def _kernel_replay(
    ctrl: Any, kernel: Any, inputs: WeightingInputs, progress: Callable[[int], None] | None
) -> ReplayArrays:
    """:func:`replay_single` through a compiled kernel. The controller's own calls mark the
    epochs and set the base weights (same checks, same errors); the kernel runs the
    method's recursion and the controller's clamp; the counters and the method state the
    torch path would leave are then written into the controller."""
    from adaptive.weighting._validate import check_extras
    from replay._kernels import controller_outputs

    method = ctrl.method_impl
    # the extras step_block would take, refused the same way
    check_extras(ctrl.method, inputs.extras or None, type(method).after_extras(), ctrl.requires)
    losses = inputs.losses.astype(np.float64)
    n = len(losses)
    finite = np.isfinite(losses).all(axis=1)
    base, reset, epoch_steps = kernel_schedule(ctrl, inputs)
    extras = {k: v.astype(np.float64) for k, v in inputs.extras.items()}
    run = kernel.run(method, losses, finite, reset, extras)
    outputs, nonfinite_state = controller_outputs(run.scales, ctrl.adjustment_range, base, finite)
    # what the torch path's step_block calls leave in the controller
    for attr, value in run.final.items():
        setattr(method, attr, torch.from_numpy(value))
    ctrl._step += n
    ctrl._skipped_steps = ctrl._skipped_steps + int(n - finite.sum())
    ctrl._nonfinite_state = ctrl._nonfinite_state + nonfinite_state
    if extras:
        ok = finite.copy()
        for v in extras.values():
            ok &= np.isfinite(v).all(axis=1)
        ctrl._nonfinite_extras = ctrl._nonfinite_extras + int((finite & ~ok).sum())
    if progress is not None:
        for done in epoch_steps:
            if done:
                progress(done)
    return ReplayArrays(outputs, run.state, True)


def replay_weighting_fast(
    trace: Trace,
    method: str,
    *,
    adjustment_range: float = LOSS_ADJUSTMENT_RANGE,
    loss_input: str | None = None,
    restart_on_stage_change: bool | None = None,
    progress: Callable[[int], None] | None = None,
    kernels: bool | None = None,
    **method_params: Any,
) -> ReplayResult:
    """Replay `AdaptiveLossWeighting(method=...)` over a trace's step rows in dry-run.

    Same result (frame columns, dtypes and values, bit for bit) as the per-step reference
    replay (`tests/reference_replay.py`), one `step_block` per epoch instead of one call per
    step. `progress(n)` is called after each epoch with its number of steps.

    The per-step recursive methods (uncertainty, IMTL-L, FAMO, GradNorm, log-loss) run
    their recursion in a compiled kernel where numba is installed (`kernels`, see
    :func:`replay_single`): then equal to the torch path within 1e-6 relative, with the
    same clamp flags and state, instead of bit for bit.
    """
    inputs = weighting_inputs(
        trace,
        loss_input=loss_input,
        restart_on_stage_change=restart_on_stage_change,
        method=method,
    )
    comps, epochs = inputs.components, inputs.epochs
    ctrl = _controller(
        method, comps, inputs.base[0], None, adjustment_range=adjustment_range, **method_params
    )
    res = replay_single(ctrl, inputs, progress, kernels=kernels)
    # Frame columns are (strided) views of the (T, C) buffers: no further copies.
    cols: dict[str, Any] = {"step": trace.steps["step"].to_numpy(), "epoch": epochs}
    for k, prefix in _FRAME_KEYS.items():
        arr = res.outputs[k]
        for j, name in enumerate(comps):
            cols[f"{prefix}/{name}"] = arr[:, j]
    cols["skipped"] = res.outputs["skipped"]
    for k, arr in res.state.items():
        if arr.ndim == 1:
            cols[f"{method}/{k}"] = arr
        else:
            for j, name in enumerate(comps):
                cols[f"{method}/{k}/{name}"] = arr[:, j]
    frame = pd.DataFrame(cols, copy=False)
    params = {"adjustment_range": adjustment_range, **ctrl.method_impl.params()}
    return ReplayResult(
        method=method,
        params=params,
        frame=frame,
        names=comps,
        run_id=first_run_id(trace),
        notes=[*inputs.notes, *_open_loop_notes(trace, method, ctrl, frame)],
    )


def open_loop_note(method: str, consequence: str) -> str:
    """Why a method learning from after-step extras (FAMO's losses after the step) is
    replayed open loop: they record what the *applied* weights did."""
    return (
        f"{method} learns from the losses after each step, which the weights the run applied "
        f"produced: {consequence} (docs/ADAPTIVE_LOSS.md)"
    )


def _open_loop_notes(trace: Trace, method: str, ctrl: Any, frame: pd.DataFrame) -> list[str]:
    """The open-loop note, where the run applied other weights than these."""
    if not ctrl.needs_after_step:
        return []
    applied = [f"weight/{c}" for c in trace.components]
    if all(c in trace.steps.columns for c in applied):
        live = trace.steps[applied].to_numpy(np.float64)
        mine = frame[[f"proposed/weight/{c}" for c in trace.components]].to_numpy()
        if np.allclose(live, mine.astype(np.float32), rtol=1e-6, atol=0.0, equal_nan=True):
            return []
    return [open_loop_note(method, "this run applied other weights, so the replay is open loop")]


def sweep_weighting(
    trace: Trace,
    method: str,
    configs: Sequence[Mapping[str, Any]],
    *,
    outputs: Sequence[str] = SWEEP_OUTPUTS,
    on_block: Callable[[int, int, Any], None] | None = None,
    progress: Callable[[int], None] | None = None,
    loss_input: str | None = None,
    restart_on_stage_change: bool | None = None,
    kernels: bool | None = None,
) -> dict[str, np.ndarray]:
    """Replay ``K = len(configs)`` configurations of one method over a trace at once.

    Each config maps `adjustment_range` (default `LOSS_ADJUSTMENT_RANGE`) and method
    parameters to values.
    Configuration ``k`` is, bit for bit, what `replay_weighting_fast(trace, method,
    **configs[k])` gives (`proposed` = its `proposed/weight/<c>` columns, etc.).

    Returns numpy arrays: for each of `outputs` (any of `proposed`, `deltas`, `clamped`,
    `scales`, `applied`, `base`) a ``(T, K, C)`` array, plus `skipped` ``(T,)``, `step`
    and `epoch` ``(T,)``. Memory: ``T·K·C·8`` bytes per float output (1.6 GB for 100k
    steps × 256 configs × 8 components); pass fewer `outputs` (or none) and an
    `on_block(start, stop, block_output)` callback (a batched `BlockOutput`, ``(T, K, C)``)
    to reduce blocks as they come instead.

    The per-step recursive methods run each configuration's compiled kernel where one
    applies (`kernels` as in :func:`replay_single`; replay/_kernel_sweep.py), the
    configurations shared among the machine's cores: then configuration ``k`` is, bit for
    bit, `replay_weighting_fast` with the kernel, and the torch path within the kernels'
    contract. Otherwise every configuration advances together through one batched
    controller (a leading configuration dimension in its state).
    """
    valid = ("proposed", "deltas", "clamped", "scales", "applied", "base")
    bad = [o for o in outputs if o not in valid]
    if bad:
        raise ReplayError(f"unknown sweep output(s) {bad!r}; valid: {list(valid)!r}")
    inputs = weighting_inputs(
        trace,
        loss_input=loss_input,
        restart_on_stage_change=restart_on_stage_change,
        method=method,
    )
    comps, losses_np, epochs = inputs.components, inputs.losses, inputs.epochs
    ctrl = _controller(method, comps, inputs.base[0], list(configs))  # refuses bad configs
    from replay._kernel_sweep import kernel_sweep

    fast = kernel_sweep(
        method, inputs, configs,
        lambda cfg: _controller(method, comps, inputs.base[0], None, **cfg),
        lambda ctrl: kernel_schedule(ctrl, inputs),
        outputs, on_block, progress, kernels=kernels,
    )  # fmt: skip
    if fast is not None:
        fast["step"] = trace.steps["step"].to_numpy()
        fast["epoch"] = epochs
        return fast
    n, c = losses_np.shape
    k = ctrl.num_configs
    losses = torch.from_numpy(losses_np.astype(np.float64))
    result: dict[str, np.ndarray] = {
        o: np.empty((n, k, c), dtype=np.bool_ if o == "clamped" else np.float64) for o in outputs
    }
    views = {o: torch.from_numpy(a) for o, a in result.items()}
    skipped = np.empty(n, dtype=np.bool_)
    skipped_t = torch.from_numpy(skipped)

    def collect(a: int, b: int, out: Any) -> None:
        for o, view in views.items():
            view[a:b].copy_(getattr(out, o))
        skipped_t[a:b].copy_(out.skipped)
        if on_block is not None:
            on_block(a, b, out)

    # Blocks of at most ~2**20 values per (T, K, C) temporary: bounded memory per block.
    max_block = max(1, (1 << 20) // (k * c))
    _drive(ctrl, inputs, losses, collect, progress, max_block)
    result["skipped"] = skipped
    result["step"] = trace.steps["step"].to_numpy()
    result["epoch"] = epochs
    return result
