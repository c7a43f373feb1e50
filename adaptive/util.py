"""Helpers the library shares with `replay` and with users' own code: atomic file writes,
strict-JSON floats for state dicts, number checks whose errors repeat the bad value, the
controllers' default ranges, and
the per-component gradient norms that GradNorm needs (`component_grad_norms`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from adaptive._checks import JSONFloat, atomic_write, check_number, decode_float, encode_float
from adaptive._defaults import LOSS_ADJUSTMENT_RANGE, SCHEDULER_ADJUSTMENT_RANGE

__all__ = [
    "LOSS_ADJUSTMENT_RANGE",
    "SCHEDULER_ADJUSTMENT_RANGE",
    "JSONFloat",
    "atomic_write",
    "check_number",
    "component_grad_norms",
    "decode_float",
    "encode_float",
]


def component_grad_norms(
    losses: Mapping[str, Any],
    params: Sequence[Any],
    *,
    reduce: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """``‖∇_W L_c‖`` for every component loss ``L_c`` (attached to the graph) on the
    shared parameters ``W`` (e.g. the last shared layer), as detached 0-dim tensors in the
    gradients' dtype (what a float32 trace records exactly, so replay matches live).

    One ``torch.autograd.grad`` per component with ``retain_graph=True``: the graph stays
    for the weighted ``backward()`` that follows, and no ``.grad`` is touched. A component
    that does not depend on ``W`` (or on anything: a constant) gets 0. ``reduce`` maps the
    stacked gradients ``(C, P)`` before the norms are taken (data parallel: the mean over
    ranks, so that every rank sees the norms of the global gradients). No host sync.
    """
    import torch

    params = list(params)
    rows = []
    for loss in losses.values():
        if not (isinstance(loss, torch.Tensor) and loss.requires_grad):  # a constant term
            rows.append(torch.cat([torch.zeros_like(p).reshape(-1) for p in params]))
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        flat = [
            (g if g is not None else torch.zeros_like(p)).detach().reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
        rows.append(torch.cat(flat))
    stacked = torch.stack(rows)
    if reduce is not None:
        stacked = reduce(stacked)
    norms = torch.linalg.vector_norm(stacked, dim=1)
    return dict(zip(losses, norms.unbind(0), strict=True))
