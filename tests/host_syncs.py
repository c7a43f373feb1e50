"""Counting host-device synchronisations in tests (torch's CUDA sync debug mode).

Every synchronising CUDA call in torch (a blocking copy such as ``.cpu()``, ``.item()``,
``.tolist()``, ``bool()``/``float()`` of a CUDA tensor, ``nonzero``, a stream
synchronisation) calls ``c10::cuda::warn_or_error_on_sync()``: in sync debug mode
``"warn"`` that emits one ``UserWarning`` "called a synchronizing CUDA operation" per
call, in ``"error"`` it raises. :func:`count_host_syncs` counts those warnings.

:func:`simulated_device` is a CPU stand-in used only to test the counting itself and to
check, on CPU, *where* the code reads tensor values on the host; it says nothing about
what CUDA does.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import torch

__all__ = ["SYNC_MESSAGE", "count_host_syncs", "simulated_device"]

#: torch's text (c10/cuda/CUDAFunctions.cpp, warn_or_error_on_sync); Python may append
#: "(Triggered internally at ...)".
SYNC_MESSAGE = "called a synchronizing CUDA operation"

T = TypeVar("T")


def count_host_syncs(fn: Callable[[], T]) -> tuple[T, int]:
    """Run ``fn()`` in CUDA sync debug mode ``"warn"``; return its result and the number
    of synchronising calls torch reported. Other warnings are passed on; the previous
    debug mode is restored, also when ``fn`` raises."""
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # one record per call, even from the same line
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    syncs = 0
    for w in caught:
        if issubclass(w.category, UserWarning) and SYNC_MESSAGE in str(w.message):
            syncs += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return result, syncs


_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def simulated_device() -> Iterator[None]:
    """CPU stand-in for CUDA sync debug mode, treating every tensor as a device tensor.

    ``torch.cuda.get/set_sync_debug_mode`` keep a mode (``0``/``"default"``, ``1``/
    ``"warn"``, ``2``/``"error"``), and every read of tensor values on the host
    (``.cpu()``, ``.item()``, ``.tolist()``, ``.numpy()``, ``bool``/``float``/``int``,
    ``nonzero``) acts like ``warn_or_error_on_sync()`` under it. A copy made by
    ``.cpu()`` is a host tensor: reading it costs nothing more, as for CUDA. Not
    simulated: ``.to("cpu")`` (its result's first read counts instead) and ops whose
    output size depends on values (boolean-mask indexing); a CPU check, not a CUDA one.
    """
    mode = {"value": 0}
    levels = {"default": 0, "warn": 1, "error": 2}

    def set_mode(value: int | str) -> None:
        mode["value"] = levels[value] if isinstance(value, str) else int(value)

    def sync() -> None:
        if mode["value"] == 2:
            raise RuntimeError(SYNC_MESSAGE)
        if mode["value"] == 1:
            warnings.warn(SYNC_MESSAGE, UserWarning, stacklevel=3)

    def host_copy(original: Callable[..., Any]) -> Callable[..., Any]:
        def cpu(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if not getattr(self, "_on_host", False):
                sync()
            out = original(self, *args, **kwargs).clone()
            out._on_host = True  # type: ignore[attr-defined]
            return out

        return cpu

    def read(original: Callable[..., Any]) -> Callable[..., Any]:
        def method(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not getattr(self, "_on_host", False):
                sync()
            return original(self, *args, **kwargs)

        return method

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "get_sync_debug_mode", lambda: mode["value"])
        mp.setattr(torch.cuda, "set_sync_debug_mode", set_mode)
        mp.setattr(torch.Tensor, "cpu", host_copy(torch.Tensor.cpu))
        for name in (*_READS, "nonzero"):
            mp.setattr(torch.Tensor, name, read(getattr(torch.Tensor, name)))
        mp.setattr(torch, "nonzero", read(torch.nonzero))
        yield
