"""The scheduler's state dict (version 2): the controller's entries around the law's, written
as strict JSON (non-finite floats as strings) and checked in full before anything is loaded.

A state written before laws were registered has no ``law`` in its config: it is the
guard's, whose entries (references, streaks, previous metrics) sit at the top level as
every law's do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from adaptive._checks import decode_float, encode_float
from adaptive.scheduler._law import SchedulerLaw
from adaptive.scheduler._values import check_int, validate_base_values

__all__ = ["STATE_VERSION", "read_state", "write_state"]

STATE_VERSION = 2
# Config keys that may differ between a saved state and the loading instance.
_NON_BEHAVIOURAL = frozenset({"dry_run", "log_every"})


def _dec(x: Any, name: str = "value") -> float | None:
    return decode_float(x, name, optional=True)


def write_state(
    *,
    config: dict[str, Any],
    delta: float,
    base: Mapping[str, float],
    counters: tuple[int, int, int],
    window: tuple[list[float], list[float], list[int]],
    window_inputs: Mapping[str, list[float]],
    law: SchedulerLaw,
    last: tuple[str | None, int | None, dict[str, Any] | None],
    counts: Mapping[str, int],
    history: Iterable[dict[str, Any]],
) -> dict[str, Any]:
    """The state dict from the controller's values (window values already on the host)."""
    batches, epochs, updates = counters
    last_reason, last_change_step, decision = last
    return {
        "version": STATE_VERSION,
        "config": config,
        "delta": delta,
        "base_values": {k: encode_float(v) for k, v in base.items()},
        "batches_seen": batches,
        "epochs_seen": epochs,
        "updates": updates,
        "window_loss": [encode_float(v) for v in window[0]],
        "window_grad_norm": [encode_float(v) for v in window[1]],
        "window_regime": list(window[2]),
        # only for laws with inputs: a guard state is what it was before inputs existed
        **(
            {"window_inputs": {k: [encode_float(v) for v in vs] for k, vs in window_inputs.items()}}
            if law.inputs
            else {}
        ),
        **law.state_dict(),
        "last_reason": last_reason,
        "last_change_step": last_change_step,
        "decision": None if decision is None else dict(decision),
        "signals": {k: encode_float(v) for k, v in law.signals.items()},
        "reason_counts": dict(counts),
        "history": [
            {
                **h,
                "old_delta": encode_float(h["old_delta"]),
                "new_delta": encode_float(h["new_delta"]),
            }
            for h in history
        ],
    }


def read_state(
    state: Mapping[str, Any],
    *,
    config: Mapping[str, Any],
    default_law: str,
    bound: float,
    interval: int,
    rules: Mapping[str, str],
    law: SchedulerLaw,
    check_regime: Callable[[Any], int],
) -> dict[str, Any]:
    """Check ``state`` against the loading controller (its ``config``, ``bound``,
    ``interval``, ``rules``) and load the law's entries into ``law`` (which checks all of
    them before it sets any); returns the controller's decoded values. Nothing of the
    controller changes here: a bad state is one ``ValueError`` naming the entry."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping, got {type(state).__name__}")
    version = state.get("version")
    if version != STATE_VERSION:
        raise ValueError(f"unsupported state version {version!r}, expected {STATE_VERSION}")
    saved = state.get("config")
    if not isinstance(saved, Mapping):
        raise ValueError(f"state has no valid 'config' entry, got {saved!r}")
    saved = {"law": default_law, **saved}
    mismatches = [
        f"{k}: saved {saved.get(k)!r} != current {v!r}"
        for k, v in config.items()
        if k not in _NON_BEHAVIOURAL and saved.get(k) != v
    ]
    if mismatches:
        raise ValueError(
            "cannot load state: configuration mismatch (" + "; ".join(mismatches) + ")"
        )
    try:
        base = validate_base_values({k: _dec(v, k) for k, v in state["base_values"].items()}, rules)
        delta = _dec(state["delta"], "delta")
        if delta is None or not abs(delta) <= bound:
            raise ValueError(
                f"state entry 'delta' must be within +-{bound}, got {state['delta']!r}"
            )
        counters = tuple(
            check_int(f"state entry {key!r}", state[key], low=0)
            for key in ("batches_seen", "epochs_seen", "updates")
        )
        wl = [_dec(v, "window_loss") for v in state["window_loss"]]
        wg = [_dec(v, "window_grad_norm") for v in state["window_grad_norm"]]
        wr = [check_regime(r) for r in state["window_regime"]]
        expected = counters[0] % interval
        if not len(wl) == len(wg) == len(wr) == expected:
            raise ValueError(
                f"state window buffers have lengths {len(wl)}/{len(wg)}/{len(wr)}, "
                f"expected {expected}"
            )
        wi: dict[str, list[float | None]] = {}
        if law.inputs:
            saved_inputs = state["window_inputs"]
            if not isinstance(saved_inputs, Mapping) or set(saved_inputs) != set(law.inputs):
                raise ValueError(
                    f"state entry 'window_inputs' must hold {list(law.inputs)!r}, "
                    f"got {saved_inputs!r}"
                )
            for k in law.inputs:
                wi[k] = [_dec(v, f"window_inputs[{k!r}]") for v in saved_inputs[k]]
                if len(wi[k]) != expected:
                    raise ValueError(
                        f"state entry 'window_inputs'[{k!r}] has length {len(wi[k])}, "
                        f"expected {expected}"
                    )
        signals = {k: _dec(state["signals"].get(k), k) for k in law.signal_keys}
        counts = {
            k: check_int(f"reason_counts[{k!r}]", state["reason_counts"].get(k, 0), low=0)
            for k in law.reasons
        }
        history = [
            {**h, "old_delta": _dec(h["old_delta"]), "new_delta": _dec(h["new_delta"])}
            for h in state["history"]
        ]
        last_reason = state["last_reason"]
        if last_reason is not None and last_reason not in law.reasons:
            raise ValueError(f"state entry 'last_reason' is invalid: {last_reason!r}")
        decision = state.get("decision")
        last_change_step = state.get("last_change_step")
    except KeyError as e:
        raise ValueError(f"state is missing entry {e.args[0]!r}") from None
    law.load_state_dict(state)  # checks every entry of its own before it sets any
    law.signals = signals
    return {
        "delta": delta,
        "base": base,
        "counters": counters,
        "window": (wl, wg, wr),
        "window_inputs": wi,
        "last": (last_reason, last_change_step, None if decision is None else dict(decision)),
        "counts": counts,
        "history": history,
    }
