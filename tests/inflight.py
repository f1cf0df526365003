"""Counting a Restore's frames in flight: from the start of a frame's network (when it begins to hold
device memory) to the end of ``write()`` (when it gives its slot back), the quantity the engine bounds."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from vsedvr.filter.engine import PendingFrame, WindowEngine


class FramesInFlight:
    """``live`` and ``peak`` frames in flight of every engine, once :meth:`install` ed.

    ``before_write(pending)`` runs before a frame is counted out: a slow download (a sleep), or a wait
    for the real one (``pending.ready.synchronize()``)."""

    def __init__(self, before_write: Callable[[PendingFrame], Any] | None = None) -> None:
        self.live = self.peak = 0
        self._lock = threading.Lock()
        self._before_write = before_write

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FramesInFlight:
        run_network, write = WindowEngine._run_network, WindowEngine.write

        def counted_network(engine, window, sources):
            with self._lock:
                self.live += 1
                self.peak = max(self.peak, self.live)
            return run_network(engine, window, sources)

        def counted_write(engine, pending, output):
            if self._before_write is not None:
                self._before_write(pending)
            with self._lock:  # counted out before write() gives the slot back
                self.live -= 1
            write(engine, pending, output)

        monkeypatch.setattr(WindowEngine, "_run_network", counted_network)
        monkeypatch.setattr(WindowEngine, "write", counted_write)
        return self
