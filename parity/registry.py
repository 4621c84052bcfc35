"""A lazily discovered, read-only registry of named things (formats, checks).

Entries come from the modules of a package and from an entry-point group, so a package outside
parity adds one the same way a module inside does. Discovery happens on first use; a name declared
twice, or an entry point that fails to load, is one error naming both places.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from typing import Callable, Generic, Iterable, Iterator, Optional, TypeVar

from parity.errors import ParityError

T = TypeVar("T")


class Registry(Mapping, Generic[T]):
    """name -> entry, in (order, name) order.

    `builtin()` yields (entry, where) pairs from parity's own modules; `declared(obj, where)` turns
    what an entry point loads into entries (or raises naming `where`). Entries have `name` and `order`.
    """

    def __init__(self, kind: str, group: str, builtin: Callable[[], Iterable[tuple[T, str]]],
                 declared: Callable[[object, str], list[T]]) -> None:
        self.kind = kind
        self.group = group
        self._builtin = builtin
        self._declared = declared
        self._entries: Optional[dict[str, T]] = None

    def _discover(self) -> dict[str, T]:
        found = list(self._builtin())
        for entry in importlib.metadata.entry_points(group=self.group):
            where = f"entry point {entry.name!r} ({entry.value}) of group {self.group!r}"
            try:
                obj = entry.load()
            except Exception as e:  # a broken plugin names itself
                raise ParityError(f"{where} failed to load: {type(e).__name__}: {e}") from None
            found += [(item, where) for item in self._declared(obj, where)]
        entries: dict[str, T] = {}
        origin: dict[str, str] = {}
        for item, where in sorted(found, key=lambda pair: (pair[0].order, pair[0].name)):
            if item.name in entries:
                raise ParityError(f"{self.kind} {item.name!r} is declared twice: by {origin[item.name]} and by {where}")
            entries[item.name] = item
            origin[item.name] = where
        return entries

    @property
    def _all(self) -> dict[str, T]:
        if self._entries is None:
            self._entries = self._discover()
        return self._entries

    def __getitem__(self, name: str) -> T:
        return self._all[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def reload(self) -> None:
        """Forget what was discovered (after installing a plugin in this process)."""
        self._entries = None
