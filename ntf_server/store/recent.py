"""`Recent`: a bounded map of what was seen lately, for caches whose values are always right and whose misses
are only slower (store/subscriptions.py: the `r` of a queue paged for resubscription; store/sharded.py: the
shard a queue was paged from or decided in).

Two generations of ``generation`` entries: when the newer fills, the older is dropped and the newer takes
its place, so what was put recently stays and memory is bounded (~200 bytes an entry for the keys above).
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    __slots__ = ("_generation", "_new", "_old")

    def __init__(self, generation: int) -> None:
        self._generation = generation
        self._new: dict[K, V] = {}
        self._old: dict[K, V] = {}

    def __repr__(self) -> str:
        return f"<Recent {len(self._new) + len(self._old)} of at most {2 * self._generation}>"

    def put(self, key: K, value: V) -> None:
        if len(self._new) >= self._generation:
            self._old, self._new = self._new, {}
        self._new[key] = value

    def get(self, key: K) -> V | None:
        value = self._new.get(key)
        return value if value is not None else self._old.get(key)
