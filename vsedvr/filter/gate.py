"""The order in which frames enter the network: lowest frame number first, none starved."""
from __future__ import annotations

import itertools
import threading
import time

#: Times a waiting frame may be passed over (by lower frames) before it goes next.
MAX_PASSES = 8


class FrameGate:
    """Admits at most ``capacity`` frames at once, choosing among the waiting ones by frame number.

    Under fmParallel every VapourSynth thread with a frame waits here at once. Handed over in
    arbitrary order (``threading.Lock``'s), the windows jump about and the feature cache, which keeps
    two windows, loses most of its hits (8 threads, 80 frames: 185 encodings instead of 80). So the
    lowest waiting frame goes next, which walks a forward render in order. A frame passed over
    ``MAX_PASSES`` times goes first, so no order of requests starves one: under ``std.Reverse`` each
    finished frame brings a lower request, and lowest-first alone computed output frame 0 last.
    (Nearest-to-the-last-frame was tried: it cost a forward render at 16 threads 5 encodings of 60
    more, since the first frames arrive in any order.) A thread names its frame with
    :meth:`next_frame` before it acquires; one that names none goes first. With capacity 1 it is a
    lock (``acquire``/``release``, a context manager), which is how the engine's network lock uses it.
    """

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self._cond = threading.Condition(threading.Lock())
        self._held = 0
        self._waiting: list[list[int]] = []  # [frame, arrival, passes]
        self._arrivals = itertools.count()
        self._frame = threading.local()

    def next_frame(self, n: int) -> None:
        """The frame this thread's next :meth:`acquire` is for."""
        self._frame.n = n

    def _choose(self) -> list[int]:
        due = [w for w in self._waiting if w[2] >= MAX_PASSES]
        if due:
            return min(due, key=lambda w: w[1])
        return min(self._waiting, key=lambda w: (w[0], w[1]))

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        entry = [getattr(self._frame, "n", -1), next(self._arrivals), 0]
        self._frame.n = -1
        deadline = None if timeout < 0 else time.monotonic() + timeout
        with self._cond:
            if self._held < self.capacity and not self._waiting:
                self._held += 1
                return True
            if not blocking:
                return False
            self._waiting.append(entry)
            while self._held >= self.capacity or self._choose() is not entry:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._waiting.remove(entry)
                    self._cond.notify_all()  # the next in line may be free to go now
                    return False
                self._cond.wait(remaining)
            self._waiting.remove(entry)
            for other in self._waiting:
                other[2] += 1
            self._held += 1
            if self._held < self.capacity and self._waiting:
                self._cond.notify_all()
            return True

    def release(self) -> None:
        with self._cond:
            self._held -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no frame is admitted (at most ``timeout`` seconds); whether none is."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._held:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

