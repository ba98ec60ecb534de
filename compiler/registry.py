"""A registry of named components (frontends, targets) that a test can create fresh.

Unlike skl2onnx's global dicts filled by side-effect imports, a ``Registry`` is an instance:
it refuses ``None``, refuses to replace an entry silently, and checks that what is registered
has the methods its kind needs.
"""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, required: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._required = required
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        if item is None:
            raise ValueError(f"cannot register None as {self.kind} {name!r}")
        missing = [m for m in self._required if not callable(getattr(item, m, None))]
        if missing:
            raise TypeError(f"{self.kind} {name!r} lacks required method(s): {', '.join(missing)}")
        if name in self._items and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass replace=True to override")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
