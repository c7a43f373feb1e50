"""The registry of loss weighting methods: names -> `WeightingMethod` classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from adaptive.weighting._method import EXTRAS, WeightingMethod

__all__ = ["available_methods", "method_class", "register_method"]

_M = TypeVar("_M", bound=type[WeightingMethod])
_REGISTRY: dict[str, type[WeightingMethod]] = {}


def register_method(name: str) -> Callable[[_M], _M]:
    """Class decorator registering a :class:`WeightingMethod` subclass under ``name``.

    >>> @register_method("my_method")
    ... class MyMethod(WeightingMethod): ...
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"method name must be a non-empty identifier string, got {name!r}")

    def decorator(cls: _M) -> _M:
        if not (isinstance(cls, type) and issubclass(cls, WeightingMethod)):
            raise TypeError(
                f"register_method({name!r}) expects a WeightingMethod subclass, got {cls!r}"
            )
        unknown = [e for e in cls.requires if e not in EXTRAS]
        if unknown:
            raise ValueError(
                f"{cls.__qualname__}.requires names unknown extra(s) {unknown!r}; "
                f"known extras: {list(EXTRAS)!r}"
            )
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"method {name!r} is already registered to {existing.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_methods() -> tuple[str, ...]:
    """Names of all registered weighting methods, sorted."""
    return tuple(sorted(_REGISTRY))


def method_class(method: str) -> type[WeightingMethod]:
    """The class registered under `method` (its parameters, defaults and test settings);
    `ValueError` naming the available methods for an unknown name."""
    try:
        return _REGISTRY[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown weighting method {method!r}; available methods: {list(available_methods())}"
        ) from None
