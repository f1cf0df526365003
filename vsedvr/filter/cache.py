"""The temporal cache of per-frame features (each input frame, each tile, encoded once)."""
from __future__ import annotations

from collections import OrderedDict


class FeatureCache:
    """Per-frame encodings, keyed by (frame number, tile), least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[int, int]) -> tuple | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return item

    def put(self, key: tuple[int, int], item: tuple) -> None:
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

