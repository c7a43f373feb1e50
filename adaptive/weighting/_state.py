"""Method state declared once (`StateField`, `TensorStateMethod`) and its JSON encoding:
float64 tensors <-> plain lists, non-finite values as strings (strict JSON)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from adaptive._checks import JSONFloat, decode_float, encode_float
from adaptive.weighting._method import WeightingMethod

__all__ = ["StateField", "TensorStateMethod", "decode_tensor", "encode_tensor"]

_DTYPE = torch.float64

# --------------------------------------------------------------------------------------
# JSON helpers: float64 tensors <-> plain lists. Non-finite values are encoded as strings
# ("nan", "inf", "-inf") so that the state dict is strict JSON (json.dumps(allow_nan=False)).
# Finite floats round-trip bit-exactly through json (repr is the shortest round-trip form).
# --------------------------------------------------------------------------------------


def encode_tensor(t: Tensor) -> list[JSONFloat]:
    """float64 tensor (any device, 1-D) -> list of JSON floats. Synchronises the host."""
    return [encode_float(v) for v in t.detach().to("cpu", _DTYPE).reshape(-1).tolist()]


def decode_tensor(values: Any, *, size: int, name: str) -> Tensor:
    """List of JSON floats -> 1-D float64 CPU tensor of length ``size``."""
    if not isinstance(values, list) or len(values) != size:
        raise ValueError(f"state entry {name!r} must be a list of {size} floats, got {values!r}")
    return torch.tensor([decode_float(v) for v in values], dtype=_DTYPE)


_FIELD_KINDS = ("floats", "float", "counts", "int")


@dataclass(frozen=True)
class StateField:
    """One entry of a :class:`TensorStateMethod`'s state: where it lives and how it is
    written in the JSON state dict (declared once; everything else derives from it).

    Args:
        attr: the attribute holding it.
        key: its JSON key (default: ``attr`` without leading underscores).
        kind: ``"floats"`` (default): a ``(K, n)`` float64 tensor, written as a list of
            ``n`` floats; ``"float"``: a ``(K, 1)`` float64 tensor, written as one float;
            ``"counts"``: a ``(K, n)`` float64 tensor of whole numbers >= 0, written as a
            list of ``n`` ints; ``"int"``: a host-side Python int >= 0 that does not
            depend on the configuration (not a tensor: no device, no batching).
        transform, inverse: for a tensor entry, an exact element-wise map from the
            attribute to the written value and back (default: written as stored).
    """

    attr: str
    key: str = ""
    kind: str = "floats"
    transform: Callable[[Tensor], Tensor] | None = None
    inverse: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if not self.attr.isidentifier():
            raise ValueError(f"state field attr must be an identifier, got {self.attr!r}")
        if not self.key:
            object.__setattr__(self, "key", self.attr.lstrip("_"))
        if self.kind not in _FIELD_KINDS:
            raise ValueError(f"state field kind must be one of {_FIELD_KINDS!r}, got {self.kind!r}")
        if (self.transform is None) != (self.inverse is None):
            raise ValueError(f"state field {self.attr!r}: give both transform and inverse")
        if self.kind == "int" and self.transform is not None:
            raise ValueError(f"state field {self.attr!r}: an 'int' entry has no transform")


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"state entry {name!r} must be an int >= 0, got {value!r}")
    return value


class TensorStateMethod(WeightingMethod):
    r"""A :class:`WeightingMethod` whose state is declared once.

    ``state_fields`` lists the state entries (attribute names, or :class:`StateField`\ s
    where the JSON key or encoding differs from the plain ``(K, n)`` float list) and
    ``config_fields`` the ``(K, 1)`` hyperparameter tensors; :meth:`state_tensors`,
    :meth:`config_tensors`, :meth:`state_dict`, :meth:`load_state_dict` (and so
    :meth:`to`, :meth:`select`, :meth:`batched`) derive from them. Subclasses write
    :meth:`params`, :meth:`scales` and :meth:`observe` (per step, broadcasting over K),
    or override :meth:`scales_and_observe` with block maths.
    """

    state_fields: ClassVar[tuple[str | StateField, ...]] = ()
    config_fields: ClassVar[tuple[str, ...]] = ()
    supports_batching = True
    _declared: ClassVar[tuple[StateField, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._declared = tuple(
            f if isinstance(f, StateField) else StateField(f) for f in cls.state_fields
        )
        keys = [f.key for f in cls._declared]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{cls.__name__}: duplicate state keys in {keys!r}")

    def _row(self, t: Tensor) -> Tensor:
        """Drop the configuration dimension of a single configuration."""
        return t[0] if self.num_configs == 1 else t

    def state_tensors(self) -> dict[str, Tensor]:
        return {f.attr: getattr(self, f.attr) for f in self._declared if f.kind != "int"}

    def config_tensors(self) -> dict[str, Tensor]:
        return {f: getattr(self, f) for f in self.config_fields}

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self._declared:
            value = getattr(self, f.attr)
            if f.kind == "int":
                out[f.key] = value
                continue
            if f.transform is not None:
                value = f.transform(value)
            if f.kind == "counts":
                out[f.key] = [int(v) for v in value.reshape(-1).tolist()]
            else:
                values = encode_tensor(value)
                out[f.key] = values[0] if f.kind == "float" else values
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; every entry is checked before any is set."""
        if not isinstance(state, Mapping):
            raise ValueError(f"method state must be a mapping, got {state!r}")
        new: dict[str, Any] = {}
        for f in self._declared:
            if f.key not in state:
                raise ValueError(f"state has no entry {f.key!r}")
            value = state[f.key]
            if f.kind == "int":
                new[f.attr] = _check_count(value, f.key)
                continue
            size = getattr(self, f.attr).size(-1)
            if f.kind == "float":
                t = torch.tensor([decode_float(value, f.key)], dtype=_DTYPE)
            elif f.kind == "counts":
                if (
                    not isinstance(value, list)
                    or len(value) != size
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value)
                ):
                    raise ValueError(
                        f"state entry {f.key!r} must be a list of {size} ints >= 0, got {value!r}"
                    )
                t = torch.tensor([float(v) for v in value], dtype=_DTYPE)
            else:
                t = decode_tensor(value, size=size, name=f.key)
            if f.inverse is not None:
                t = f.inverse(t)
            new[f.attr] = t.reshape(1, size)
        for attr, v in new.items():
            setattr(self, attr, v)
        for name in self.config_fields:
            setattr(self, name, getattr(self, name).cpu())
