"""The temporal cache of per-frame features (each input frame, each tile, encoded once)."""
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

#: The render heads from the centre of the window this many windows ago to the current one's.
DIRECTION_WINDOWS = 9
#: How far from the walk's next frame the computed frames are remembered.
MAX_REMEMBERED = 64


class FeatureCache:
    """Per-frame encodings, keyed by (frame number, tile).

    When full, it drops first the least recently used entry *behind* the render: below the window
    of the lowest frame not yet computed in a forward walk (above the highest in a backward one).
    Then the least recently used entry outside the current window, and one of the current window
    last. Under fmParallel frames reach the network a little out of order (the first of 0..15 to
    arrive may be 9; 15 may come before 11..14, or 9 after 10..15), and plain LRU dropped what the
    next windows needed: up to 10 extra encodings in 60 frames. With this order a forward render
    encodes each input frame once while no frame is computed more than (windows kept - 1) x T - 1
    frames (4, with the default two windows of 5) ahead of the lowest one not yet computed; a frame
    that falls further behind costs one or two encodings more (tests/test_cache.py).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self._window: frozenset[int] = frozenset()
        self._reach = 0
        self._centres: deque[int] = deque(maxlen=DIRECTION_WINDOWS)
        self._direction = 1
        #: the walk's lowest frame not yet computed (highest, walking backward), and the frames
        #: computed near it; both in walk order (frame numbers times the direction)
        self._next: int | None = None
        self._done: set[int] = set()
        self.hits = 0
        self.misses = 0

    def start_window(self, window: Sequence[int], centre: int) -> None:
        """The output frame the next gets and puts are for, and its window."""
        self._centres.append(centre)
        self._window = frozenset(window)
        self._reach = len(window) // 2
        direction = self._direction
        if len(self._centres) == self._centres.maxlen and centre != self._centres[0]:
            direction = 1 if centre > self._centres[0] else -1
        if direction != self._direction:
            self._direction, self._next = direction, None
            self._done.clear()
        self._computed(centre * direction)

    def _computed(self, position: int) -> None:
        self._done.add(position)
        if self._next is None or position < self._next:  # a step back: the walk goes on from here
            self._next = position
        while self._next in self._done:
            self._next += 1
        if len(self._done) > 2 * MAX_REMEMBERED:
            self._done = {p for p in self._done if abs(p - self._next) <= MAX_REMEMBERED}

    def _behind(self, frame: int) -> bool:
        return self._next is not None and frame * self._direction < self._next - self._reach

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
            del self._items[self._victim()]

    def _victim(self) -> tuple[int, int]:
        outside = None
        for key in self._items:  # least recently used first
            if key[0] not in self._window:
                if self._behind(key[0]):
                    return key
                if outside is None:
                    outside = key
        return outside if outside is not None else next(iter(self._items))

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
