"""A tiny name -> object registry for swappable pieces.

Swappable pieces (advantage estimators, loss aggregations, KL estimators,
reward functions, ...) are looked up by the name written in a config, so a new
variant is one decorated function instead of another branch in an if/elif
chain.

    estimators = Registry("advantage estimator")

    @estimators.register("grpo")
    def grpo(...): ...

    estimators.get("grpo")      # -> the function
    estimators.get("gpro")      # KeyError: unknown advantage estimator 'gpro'; available: grpo
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind; `kind` is used in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, override: bool = False):
        """Register `obj` under `name`; without `obj`, return a decorator.

        Registering a taken name is an error unless `override=True`, so two
        modules cannot silently shadow each other's entries.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(item: T) -> T:
            if name in self._items and not override:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered; pass override=True to replace it"
                )
            self._items[name] = item
            return item

        if obj is not None:
            return add(obj)
        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            available = ", ".join(self.names()) or "(none registered)"
            raise KeyError(f"unknown {self.kind} {name!r}; available: {available}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


__all__ = ["Registry"]
