"""Compiled replay kernels (numba) for the per-step recursive weighting methods.

The torch code in ``adaptive/weighting`` is the definition and the live path. Five methods
carry a nonlinear per-step recursion that cannot be vectorised over time (uncertainty,
IMTL-L, FAMO, GradNorm and log-loss with smoothing), so their torch replay pays 10-40
eager tensor ops per step. This module runs the *same recursion* step by step in
compiled loops for the offline replay only: the method's scales, the per-step state the
replay frame shows, and the final method state (loaded back into the controller, so its
``state_dict()`` after a replay is the one the torch path leaves). Everything the
controller does around the method (non-finite guard, clamp, base weights, counters) still
runs in the controller's own torch code.

Equality is enforced by a contract, not by sharing code: ``tests/test_kernels.py`` runs
every kernel against the torch path on random and adversarial inputs (NaN / inf rows,
absent and negative components, restarts, resume from a state dict) and requires the
outputs within 1e-6 relative, identical clamp flags and the same state after the run. The
two are not bit-identical: torch evaluates exp, log, pow and small sums with its own
vectorised routines (SLEEF, fused multiply-adds, its reduction order), the kernels with
LLVM's; the differences are a few units in the last place.

Selection (:func:`select`): numba importable (the ``fast`` extra), the method one of the
five exact classes, one configuration, and every parameter one the kernel implements;
otherwise the replay runs the torch path. ``ADAPTIVE_REPLAY_KERNELS=0`` forces the torch
path everywhere (tests compare the two; a user can rule the kernels out).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ENV", "KERNEL_METHODS", "KernelRun", "controller_outputs", "enabled", "select"]

#: Set to ``0`` to force the torch path (any other value: kernels where supported).
ENV = "ADAPTIVE_REPLAY_KERNELS"

_NUMBA: Any = None  # the numba module once imported; False when it is not importable


def numba_available() -> bool:
    """Whether numba imports (it is the optional ``fast`` extra)."""
    global _NUMBA
    if _NUMBA is None:
        try:
            import numba
        except Exception:  # not installed, or incompatible with this numpy
            _NUMBA = False
        else:
            _NUMBA = numba
    return _NUMBA is not False


def enabled() -> bool:
    """False when ``ADAPTIVE_REPLAY_KERNELS=0`` forces the torch path."""
    return os.environ.get(ENV, "").strip() != "0"


# --------------------------------------------------------------------------------------
# The kernels: plain Python functions over float64 arrays, compiled by numba on first use
# (cache=True: the machine code is kept on disk, so a later process only loads it).
# Each advances T steps: `losses` (T, C) float64, `finite` (T,) bool (every loss of the
# step finite), `reset` (T,) bool (a restart before the step: the state starts afresh);
# the state arrays are updated in place; per-step outputs are written into `out_*`.
# Every expression follows the torch method's, in the same order of operations, except
# where a cheaper equivalent is noted at the spot (it agrees within a few ulps).
# --------------------------------------------------------------------------------------


def _softmax_times(x: np.ndarray, c: int, out: np.ndarray, scale: float) -> None:
    """``scale · softmax(x)`` over the first ``c`` entries, as torch's
    ``scale * torch.softmax(x, -1)`` (max-shifted; ``scale`` 1.0 is plain softmax, exactly)."""
    mx = x[0]
    for j in range(1, c):
        if x[j] > mx or x[j] != x[j]:
            mx = x[j]
    total = 0.0
    for j in range(c):
        out[j] = math.exp(x[j] - mx)
        total += out[j]
    for j in range(c):
        out[j] = scale * (out[j] / total)


def _uncertainty(
    losses, finite, reset, u, anchor, m, v, t, b1p, b2p,
    lr, s_min, s_max, beta1, beta2, eps, grad_clip, kendall, step_limit,
    out_scales, out_log_var, out_objective, out_step_limited, diag,
):  # fmt: skip
    n, c = losses.shape
    log_a = np.empty(c)
    ex = np.empty(c)
    eu = np.empty(c)
    for j in range(c):
        log_a[j] = 0.0 if anchor[j] != anchor[j] else math.log(anchor[j])
    w1, w2 = 1.0 - beta1, 1.0 - beta2
    lo, hi = -s_max, -s_min
    for i in range(n):
        if reset[i]:
            for j in range(c):
                u[j] = 0.0
                anchor[j] = math.nan
                log_a[j] = 0.0
                m[j] = 0.0
                v[j] = 0.0
                t[j] = 0.0
                b1p[j] = 1.0
                b2p[j] = 1.0
        # scales and diagnostics from the state before the step (_softmax_scales)
        mx = -math.inf
        for j in range(c):
            ex[j] = u[j] - log_a[j] * kendall
            if ex[j] > mx:
                mx = ex[j]
        total = 0.0
        # exp(u) serves the softmax (anchor "first": x = u), the objective and the update
        for j in range(c):
            eu[j] = math.exp(u[j])
        if kendall == 0.0 and -300.0 < mx < 300.0:
            # softmax(u) = exp(u) / sum exp(u): torch shifts by the max first; u is
            # clamped to [-20, 20], so the unshifted exponentials neither overflow nor
            # underflow and agree within a few ulps (one exp per component, not two)
            for j in range(c):
                ex[j] = eu[j]
                total += ex[j]
        else:
            for j in range(c):
                ex[j] = math.exp(ex[j] - mx)
                total += ex[j]
        k = c / total
        for j in range(c):
            out_scales[i, j] = ex[j] * k
        objective = 0.0
        for j in range(c if diag else 0):  # the diagnostics (a sweep keeps none)
            s = log_a[j] - u[j]
            out_log_var[i, j] = s
            # exp(-s) = exp(u) / a (torch: exp(-s); equal within a few ulps for anchors
            # in float32's range)
            objective += (eu[j] if anchor[j] != anchor[j] else eu[j] / anchor[j]) * losses[i, j] + s
        if diag:
            out_objective[i] = objective
            for j in range(c):
                out_step_limited[i, j] = 0.0
        if not finite[i]:
            continue
        # Adam's bias corrections depend on a component's update count only: computed
        # once for the components that share it (all of them, unless one was absent)
        last1, last2, step, f, e = math.nan, math.nan, 0.0, 0.0, 0.0
        for j in range(c):
            loss = losses[i, j]
            if not loss > 0.0:  # absent at this step: the state is left as it is
                continue
            b1p[j] = b1p[j] * beta1
            b2p[j] = b2p[j] * beta2
            if anchor[j] != anchor[j]:
                anchor[j] = loss
                log_a[j] = math.log(loss)
            neg = -(loss / anchor[j])
            if b1p[j] != last1 or b2p[j] != last2:
                last1, last2 = b1p[j], b2p[j]
                step = lr / (1.0 - b1p[j])
                f = 1.0 / (math.sqrt(1.0 - b2p[j]) * step)
                e = eps / step
            grad = 1.0 + eu[j] * neg
            if grad < -grad_clip:  # torch.maximum (a NaN stays NaN)
                grad = -grad_clip
            grad_sq = grad * grad
            m[j] = _lerp(m[j], grad, w1)
            v[j] = _lerp(v[j], grad_sq, w2)
            d = m[j] / (e + math.sqrt(v[j]) * f)
            if step_limit > 0.0:  # at most lr per update
                if diag and abs(d) > lr:
                    out_step_limited[i, j] = 1.0
                d = _clamp(d, -lr, lr)
            u[j] = _clamp(u[j] + d, lo, hi)
            t[j] += 1.0


def _lerp(a: float, b: float, w: float) -> float:
    """torch.lerp's formula (two branches for accuracy)."""
    if abs(w) < 0.5:
        return a + w * (b - a)
    return b - (b - a) * (1.0 - w)


def _clamp(x: float, lo: float, hi: float) -> float:
    """torch.clamp with tensor bounds: min(max(x, lo), hi), NaN propagating."""
    if x != x:
        return x
    if x < lo:
        x = lo
    if x > hi:
        x = hi
    return x


def _imtl_l(losses, finite, reset, s, seen, lr, grad_clip, init_first, out_scales, out_s):
    n, c = losses.shape
    for i in range(n):
        if reset[i]:
            for j in range(c):
                s[j] = 0.0
                seen[j] = 0.0
        _softmax_times(s, c, out_scales[i], float(c))
        for j in range(c):
            out_s[i, j] = s[j]
        if not finite[i]:
            continue
        for j in range(c):
            loss = losses[i, j]
            if loss > 0.0:
                grad = math.exp(s[j] + math.log(loss)) - 1.0
            else:
                grad = -1.0
            if loss < 0.0:
                grad = 0.0
            grad = min(max(grad, -grad_clip), grad_clip)
            step = s[j] - lr * grad
            pos = loss > 0.0
            if pos and seen[j] == 0.0 and init_first > 0.0:
                s[j] = -math.log(loss)
            else:
                s[j] = step
            if pos:
                seen[j] = 1.0


_EPS_LOSS = 1e-8
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


def _famo(
    losses, finite, reset, after, xi, m, v, t, prev, w_lr, gamma, out_scales, out_logit,
):  # fmt: skip
    n, c = losses.shape
    z = np.empty(c)
    d = np.empty(c)
    delta = np.empty(c)
    for i in range(n):
        if reset[i]:
            for j in range(c):
                xi[j] = 0.0
                m[j] = 0.0
                v[j] = 0.0
                prev[j] = math.nan
            t[0] = 0.0
        _softmax_times(xi, c, z, 1.0)
        # scales_at: z / (L + 1e-8), normalised, where every shifted loss is > 0
        ok = finite[i]
        for j in range(c):
            d[j] = losses[i, j] + _EPS_LOSS
            if not d[j] > 0.0:
                ok = False
        if ok:
            q_sum = 0.0
            for j in range(c):
                q_sum += z[j] / d[j]
            for j in range(c):
                out_scales[i, j] = c * ((z[j] / d[j]) / q_sum)
        else:
            for j in range(c):
                out_scales[i, j] = c * z[j]
        for j in range(c):
            out_logit[i, j] = xi[j]
            prev[j] = d[j] if ok else math.nan
        # observe_after: one Adam step on the logits from the log-loss decrease
        ok2 = True
        for j in range(c):
            delta[j] = math.log(prev[j]) - math.log(after[i, j] + _EPS_LOSS)
            if not math.isfinite(delta[j]):
                ok2 = False
        if ok2:
            zd = 0.0
            for j in range(c):
                zd += z[j] * delta[j]
            t1 = t[0] + 1.0
            # beta**t as torch computes it (a pow per update, not a running product: a
            # replay cut into blocks, or resumed, then gives the same numbers)
            bc1 = 1.0 - _BETA1**t1
            bc2_sqrt = math.sqrt(1.0 - _BETA2**t1)
            for j in range(c):
                grad = z[j] * (delta[j] - zd) + gamma * xi[j]
                m[j] = _lerp(m[j], grad, 1.0 - _BETA1)
                v[j] = v[j] * _BETA2 + (1.0 - _BETA2) * grad * grad
                xi[j] = xi[j] - (w_lr / bc1) * m[j] / (math.sqrt(v[j]) / bc2_sqrt + _ADAM_EPS)
            t[0] = t1
        for j in range(c):
            prev[j] = math.nan


def _gradnorm(
    losses, finite, reset, g_all, w, l0, alpha, lr, min_weight, out_weight,
):  # fmt: skip
    n, c = losses.shape
    ratio = np.empty(c)
    nw = np.empty(c)
    for i in range(n):
        if reset[i]:
            for j in range(c):
                w[j] = 1.0
                l0[j] = math.nan
        for j in range(c):
            out_weight[i, j] = w[j]
        fin = finite[i]
        if fin:
            for j in range(c):
                if l0[j] != l0[j]:
                    l0[j] = losses[i, j]
        g = g_all[i]
        g_sum = 0.0
        ok = fin
        for j in range(c):
            g_sum += g[j]
            if not (math.isfinite(g[j]) and g[j] >= 0.0):
                ok = False
        g_bar = g_sum / c
        if not ok or not g_bar > 0.0:
            continue
        weighted_sum = 0.0
        ratio_sum = 0.0
        for j in range(c):
            weighted_sum += w[j] * g[j]
            loss = losses[i, j]
            r = loss / l0[j]
            if not (l0[j] > 0.0 and loss >= 0.0):
                r = 1.0
            ratio[j] = r
            ratio_sum += r
        weighted_mean = weighted_sum / c
        ratio_mean = ratio_sum / c
        total = 0.0
        for j in range(c):
            target = weighted_mean * (ratio[j] / ratio_mean) ** alpha
            diff = w[j] * g[j] - target
            sign = 1.0 if diff > 0.0 else (-1.0 if diff < 0.0 else 0.0)
            x = w[j] - lr * (sign * g[j] / g_bar)
            if x < min_weight:  # clamp_min (NaN propagates)
                x = min_weight
            nw[j] = x
            total += x
        good = True
        for j in range(c):
            nw[j] = c * nw[j] / total
            if not math.isfinite(nw[j]):
                good = False
        if good:
            for j in range(c):
                w[j] = nw[j]


def _logloss(losses, finite, reset, log_loss, smoothing, out_scales, out_log_loss):
    n, c = losses.shape
    z = np.empty(c)
    for i in range(n):
        if reset[i]:
            for j in range(c):
                log_loss[j] = math.nan
        # _scales_of: undefined components get the log-mean-exp of the defined ones
        count = 0
        mx = -math.inf
        for j in range(c):
            out_log_loss[i, j] = log_loss[j]
            z[j] = -log_loss[j]
            if math.isfinite(z[j]):
                count += 1
                if z[j] > mx:
                    mx = z[j]
        fill = 0.0
        if count > 0:
            total = 0.0
            for j in range(c):
                if math.isfinite(z[j]):
                    total += math.exp(z[j] - mx)
            fill = math.log(total) + mx - math.log(float(count))
        for j in range(c):
            if not math.isfinite(z[j]):
                z[j] = fill
        _softmax_times(z, c, out_scales[i], float(c))
        if not finite[i]:
            continue
        for j in range(c):
            log = math.log(losses[i, j]) if losses[i, j] > 0.0 else math.nan
            if not math.isfinite(log):
                continue
            prev = log_loss[j]
            if prev != prev:
                log_loss[j] = log
            else:
                log_loss[j] = smoothing * prev + (1.0 - smoothing) * log


def _controller_part(scales, r, base, finite, deltas, clamped, proposed, skipped, bad_rows):
    """The controller around the method (`AdaptiveLossWeighting._advance`): non-finite
    scales count and become neutral (1), ``Δ = clamp(s - 1, -r, r)``, the clamp flag,
    ``w = base·(1 + Δ)``; `scales` is sanitised in place; `bad_rows` flags the steps whose
    scales were not finite. Returns their number."""
    n, c = scales.shape
    bad = 0
    for i in range(n):
        ok = True
        for j in range(c):
            s = scales[i, j]
            if not math.isfinite(s):
                ok = False
                scales[i, j] = s = 1.0
            excess = s - 1.0
            d = excess
            if d < -r:
                d = -r
            if d > r:
                d = r
            deltas[i, j] = d
            clamped[i, j] = d != excess
            proposed[i, j] = base[i, j] * (1.0 + d)
        if not ok:
            bad += 1
        bad_rows[i] = not ok
        skipped[i] = not finite[i]
    return bad


def controller_outputs(
    scales: np.ndarray, r: float, base: np.ndarray, finite: np.ndarray
) -> tuple[dict[str, np.ndarray], int]:
    """The replay frame's outputs from a kernel's scales ``(T, C)`` (sanitised in place)
    and the number of steps whose scales were not finite."""
    n, c = scales.shape
    out = {
        "scales": scales,
        "deltas": np.empty((n, c)),
        "clamped": np.empty((n, c), dtype=np.bool_),
        "proposed": np.empty((n, c)),
        "base": base,
        "skipped": np.empty(n, dtype=np.bool_),
    }
    bad = _jit("_controller_part")(
        scales, float(r), base, finite, out["deltas"], out["clamped"], out["proposed"],
        out["skipped"], np.empty(n, dtype=np.bool_),
    )  # fmt: skip
    return out, int(bad)


_HELPERS = ("_softmax_times", "_lerp", "_clamp")  # called by kernels
_compiled: dict[str, Callable[..., None]] = {}


#: Set (to ``1``) by the `adaptive` console script: its process calls no numba BLAS
#: function, so numba's one-time probe for SciPy's BLAS is skipped there (see below).
LIGHT_START = "ADAPTIVE_KERNELS_LIGHT_START"


def _load_registries() -> None:
    """Load numba's typing and lowering registries now (a process's first kernel call
    would). In the `adaptive` command (`LIGHT_START`) SciPy's linear algebra is hidden
    meanwhile: numba imports it only to see whether ``np.dot`` and friends can use BLAS,
    which costs ~0.2 s of a replay command's start and no kernel here uses. Elsewhere (a
    notebook, a user's script) numba loads as it always does."""
    import sys

    from numba.core.registry import cpu_target

    hide = os.environ.get(LIGHT_START) == "1" and "scipy.linalg" not in sys.modules
    if hide:
        sys.modules["scipy.linalg"] = None  # type: ignore[assignment]
    try:
        cpu_target.target_context.refresh()
    finally:
        if hide:
            del sys.modules["scipy.linalg"]


def _jit(name: str) -> Callable[..., None]:
    """The compiled kernel `name` (helpers compiled first so the kernels call them)."""
    if name not in _compiled:
        if not _compiled:
            _load_registries()
        njit = _NUMBA.njit
        g = globals()
        for helper in _HELPERS:
            if not hasattr(g[helper], "py_func"):
                g[helper] = njit(cache=True, nogil=True)(g[helper])
        # nogil: a sweep runs one configuration per thread (replay/_kernel_sweep.py)
        _compiled[name] = njit(cache=True, nogil=True)(g[name])
    return _compiled[name]


# --------------------------------------------------------------------------------------
# Method adapters: which parameters a kernel implements, and state <-> arrays
# --------------------------------------------------------------------------------------


@dataclass
class KernelRun:
    """What a kernel computed over a replay: ``scales`` ``(T, C)``, the per-step method
    state the torch path reports (``(T, C)`` or ``(T,)`` per key) and the final state
    (attribute name -> ``(1, n)`` float64 array)."""

    scales: np.ndarray
    state: dict[str, np.ndarray]
    final: dict[str, np.ndarray]


@dataclass(frozen=True)
class Kernel:
    """A compiled replay of one method (see :func:`select`)."""

    method: str
    params: frozenset[str]  # the parameters the kernel implements (any value)
    run: Callable[[Any, np.ndarray, np.ndarray, np.ndarray, Mapping[str, np.ndarray]], KernelRun]


_ARENA = threading.local()


@contextmanager
def reuse_buffers(
    buffers: dict[str, np.ndarray], states: dict[int, list[np.ndarray]] | None = None
) -> Iterator[None]:
    """Within this block (in this thread) the adapters take their output arrays from
    `buffers`, reused from one call to the next, instead of allocating them: a sweep makes
    thousands of kernel calls whose outputs it copies out at once, and fresh pages cost
    more than the recursion. The kernels then write no per-step diagnostics (`_lean`: a
    sweep keeps the scales only). With `states`, a method's state arrays are kept there
    between calls (by method object) instead of copied from its tensors each time: the
    caller then writes the final state back itself, if it needs it."""
    _ARENA.buffers, _ARENA.states = buffers, states
    try:
        yield
    finally:
        _ARENA.buffers = _ARENA.states = None


def _lean() -> bool:
    """Whether the calls of this thread keep no per-step diagnostics (in `reuse_buffers`:
    a sweep keeps the scales only; the arrays are then left unwritten)."""
    return getattr(_ARENA, "buffers", None) is not None


def _empty(key: str, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    """An array of `shape`: fresh, or this thread's reused one named `key` (its first
    `shape[0]` rows, in `reuse_buffers`)."""
    buffers = getattr(_ARENA, "buffers", None)
    if buffers is None:
        return np.empty(shape, dtype=dtype)
    a = buffers.get(key)
    if a is None or a.shape[0] < shape[0] or a.shape[1:] != shape[1:] or a.dtype != dtype:
        a = buffers[key] = np.empty(shape, dtype=dtype)
    return a[: shape[0]]


def _state(method: Any, *attrs: str) -> list[np.ndarray]:
    """Copies of the method's ``(1, n)`` state tensors as contiguous ``(n,)`` arrays (in a
    sweep's `reuse_buffers(..., states)`: the arrays the last call left, updated in place)."""
    states = getattr(_ARENA, "states", None)
    if states is not None and id(method) in states:
        return states[id(method)]
    arrays = [getattr(method, a).detach().cpu().numpy().reshape(-1).copy() for a in attrs]
    if states is not None:
        states[id(method)] = arrays
    return arrays


def _final(attrs: tuple[str, ...], arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    return {a: x.reshape(1, -1) for a, x in zip(attrs, arrays, strict=True)}


_UNC_STATE = ("_u", "_anchor", "_m", "_v", "_t", "_b1_pow", "_b2_pow")


def _run_uncertainty(method, losses, finite, reset, extras) -> KernelRun:
    n, c = losses.shape
    st = _state(method, *_UNC_STATE)
    scales, log_var = _empty("scales", (n, c)), _empty("log_var", (n, c))
    objective, limited = _empty("objective", (n,)), _empty("limited", (n, c))
    p = method.params()
    _jit("_uncertainty")(
        losses, finite, reset, *st,
        float(p["lr"]), float(p["s_min"]), float(p["s_max"]), float(p["beta1"]),
        float(p["beta2"]), float(p["eps"]), float(p["grad_clip"]),
        1.0 if p["anchor"] == "none" else 0.0, 1.0 if p.get("step_limit", True) else 0.0,
        scales, log_var, objective, limited, not _lean(),
    )  # fmt: skip
    state = {"log_var": log_var, "objective": objective}
    if "step_limit" in p:  # the diagnostic came with the setting
        state["step_limited"] = limited
    return KernelRun(scales, state, _final(_UNC_STATE, st))


def _run_imtl_l(method, losses, finite, reset, extras) -> KernelRun:
    n, c = losses.shape
    attrs = ("_s", "_seen")
    st = _state(method, *attrs)
    scales, s_hist = _empty("scales", (n, c)), _empty("s", (n, c))
    p = method.params()
    init_first = 1.0 if p["init"] == "first" else 0.0
    _jit("_imtl_l")(
        losses, finite, reset, *st, float(p["lr"]), float(p["grad_clip"]), init_first,
        scales, s_hist,
    )  # fmt: skip
    return KernelRun(scales, {"s": s_hist}, _final(attrs, st))


def _run_famo(method, losses, finite, reset, extras) -> KernelRun:
    n, c = losses.shape
    attrs = ("_xi", "_m", "_v", "_t", "_prev")
    st = _state(method, *attrs)
    scales, logit = _empty("scales", (n, c)), _empty("logit", (n, c))
    p = method.params()
    after = np.ascontiguousarray(extras["loss_after"], dtype=np.float64)
    _jit("_famo")(
        losses, finite, reset, after, *st, float(p["w_lr"]), float(p["gamma"]), scales, logit
    )
    return KernelRun(scales, {"logit": logit}, _final(attrs, st))


def _run_gradnorm(method, losses, finite, reset, extras) -> KernelRun:
    n, c = losses.shape
    attrs = ("_w", "_l0")
    st = _state(method, *attrs)
    weight = _empty("weight", (n, c))
    p = method.params()
    g = np.ascontiguousarray(extras["grad_norm"], dtype=np.float64)
    _jit("_gradnorm")(
        losses, finite, reset, g, *st,
        float(p["alpha"]), float(p["lr"]), float(p["min_weight"]), weight,
    )  # fmt: skip
    return KernelRun(weight.copy(), {"weight": weight}, _final(attrs, st))


def _run_logloss(method, losses, finite, reset, extras) -> KernelRun:
    n, c = losses.shape
    attrs = ("_log_loss",)
    st = _state(method, *attrs)
    scales, hist = _empty("scales", (n, c)), _empty("log_loss", (n, c))
    _jit("_logloss")(losses, finite, reset, *st, float(method.params()["smoothing"]), scales, hist)
    return KernelRun(scales, {"log_loss": hist}, _final(attrs, st))


def _kernels() -> dict[type, Kernel]:
    from adaptive.weighting._famo import FAMO
    from adaptive.weighting._gradnorm import GradNorm
    from adaptive.weighting._imtl_l import IMTLL
    from adaptive.weighting._logloss import LogLossWeighting
    from adaptive.weighting._uncertainty import UncertaintyWeighting

    unc = ("lr", "s_min", "s_max", "beta1", "beta2", "eps", "grad_clip", "anchor", "step_limit")
    return {
        UncertaintyWeighting: Kernel("uncertainty", frozenset(unc), _run_uncertainty),
        IMTLL: Kernel("imtl_l", frozenset(("lr", "grad_clip", "init")), _run_imtl_l),
        FAMO: Kernel("famo", frozenset(("w_lr", "gamma")), _run_famo),
        GradNorm: Kernel("gradnorm", frozenset(("alpha", "lr", "min_weight")), _run_gradnorm),
        LogLossWeighting: Kernel("logloss", frozenset(("smoothing",)), _run_logloss),
    }


#: The registered method names that have a kernel.
KERNEL_METHODS = ("uncertainty", "imtl_l", "famo", "gradnorm", "logloss")


def select(ctrl: Any, *, force: bool | None = None) -> tuple[Kernel | None, str]:
    """The kernel for a controller's method, or None and why not.

    ``force``: None follows ``ADAPTIVE_REPLAY_KERNELS``; False never uses a kernel; True
    uses one where supported whatever the environment says (tests).
    """
    if force is False or (force is None and not enabled()):
        return None, f"{ENV}=0 (torch path forced)" if force is None else "kernels=False"
    from adaptive.weighting import WeightingMethod

    method = ctrl.method_impl
    kernel = _kernels().get(type(method))
    if kernel is None:
        return None, f"no kernel for {type(method).__name__}"
    if ctrl.is_batched or method.num_configs != 1:
        return None, "batched configurations run the torch path"
    if type(method).end_epoch is not WeightingMethod.end_epoch:
        return None, f"{kernel.method}: an epoch hook has no kernel"
    if ctrl._log_every:
        return None, "a controller that logs steps runs the torch path"
    later = getattr(type(method), "later_params", {})
    for name, value in method.params().items():
        # a parameter added after the kernel was written is supported at the value that
        # keeps the old maths (its implicit value) only
        if name not in kernel.params and not (
            name in later and type(value) is type(later[name]) and value == later[name]
        ):
            return None, f"{kernel.method}: parameter {name}={value!r} has no kernel"
    if method.device.type != "cpu":
        return None, "the method state is not on the CPU"
    if not numba_available():
        return None, "numba is not installed (pip install 'adaptive-replay[fast]')"
    return kernel, ""
