"""A least-recently-used cache, the one kind of cache a backend keeps.

A PostgreSQL backend is one process serving one connection, so a module-level cache lives
exactly as long as the connection. Entries carry a *version*: a lookup with another version
is a miss (the caller builds the value again), so nothing stale is ever returned. The
onnxruntime sessions (:class:`imgfeat.core.runtime.SessionCache`) and the classifiers of
``imgfeat.predict`` (:mod:`imgfeat.db.classifiers`) are both kept in one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class LruCache(Generic[V]):
    """At most ``capacity`` values (at least one), each under a key and a version; the least
    recently used is evicted first. Counts loads per key and evictions."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, tuple[Hashable, V]] = OrderedDict()
        self.loads: dict[Hashable, int] = {}
        self.evictions = 0

    def peek(self, key: Hashable, version: Hashable) -> V | None:
        """The value under ``key`` at ``version`` (marked as just used), or None."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def get(self, key: Hashable, version: Hashable, load: Callable[[], V]) -> V:
        """The value under ``key`` at ``version``, else ``load()`` it and keep it."""
        value = self.peek(key, version)
        if value is None:
            self._entries.pop(key, None)  # another version: let it go before loading the new one
            value = load()
            self.put(key, version, value)
        return value

    def put(self, key: Hashable, version: Hashable, value: V) -> None:
        """Keep ``value`` under ``key`` at ``version``, evicting past capacity."""
        self._entries[key] = (version, value)
        self._entries.move_to_end(key)
        self.loads[key] = self.loads.get(key, 0) + 1
        self.shrink()

    def pop(self, key: Hashable) -> None:
        """Forget ``key`` (no error if absent)."""
        self._entries.pop(key, None)

    def shrink(self, capacity: int | None = None) -> None:
        """Evict least recently used entries until at most ``capacity`` (default: self.capacity) remain."""
        if capacity is not None:
            self.capacity = capacity
        while len(self._entries) > max(self.capacity, 1):
            self._entries.popitem(last=False)
            self.evictions += 1

    def values(self) -> list[V]:
        """The values, least recently used first."""
        return [value for _, value in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)

    def info(self) -> dict[str, Any]:
        """Capacity, load counts per key and evictions (JSON-able when keys are strings)."""
        return {"capacity": self.capacity, "loads": {str(k): n for k, n in self.loads.items()},
                "evictions": self.evictions}
