"""One compute thread per Restore: the only thread that runs its network.

Under ``fmParallel`` VapourSynth calls the filter on any of its worker threads (16 or more), and
before this whichever of them took the engine's lock ran the network. PyTorch keeps per thread what
a network builds at its first call: cuDNN's execution plans (a ``thread_local`` cache), the cuDNN and
cuBLAS handles and cuBLAS's workspace (32 MiB per thread and stream on Hopper, outside the memory
plan), the OpenMP team of a CPU convolution. So every worker thread built its own, and the first
frames of every thread were slow. Now the worker thread that holds the lock hands the frame's work to
the Restore's :class:`ComputeThread` and waits for it: one set of plans, handles and workspaces, one
OpenMP team, and one thread on which a captured CUDA graph can later replay.

The order of frames, the frames in flight and the exit wait stay where they were (the engine's
gates, taken on the worker thread): the compute thread runs one frame at a time, in the order the
lock admits them.

The thread is a daemon and holds no reference to the engine (a job's callable is dropped before its
result is handed back): it never keeps a process alive, and it ends when its ``ComputeThread`` is
freed (with its engine). While idle it waits on a lock without the GIL, so an interpreter that
finalises under it is never blocked and never has it run Python again.
"""
from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from . import log

T = TypeVar("T")


class _Job(Generic[T]):
    """One call handed to the compute thread, and what came of it."""

    __slots__ = ("fn", "environment", "result", "error", "done")

    def __init__(self, fn: Callable[[], T], environment: Any) -> None:
        self.fn: Callable[[], T] | None = fn
        self.environment = environment  # the caller's VapourSynth environment: log records go to its core
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def execute(self) -> None:
        fn, self.fn = self.fn, None
        try:
            with log.frames_of(self.environment):
                self.result = fn()  # type: ignore[misc]
        except BaseException as e:  # noqa: BLE001 - every error goes back to the frame that asked
            self.error = e
        del fn  # the engine (a bound method's self) is not held here once the caller wakes
        self.done.set()


def _serve(jobs: deque, ready: threading.Condition) -> None:
    """The compute thread's loop: a function of the queue alone, so that the thread holds no
    reference to its ComputeThread (which can then be freed, and close the queue)."""
    while True:
        with ready:
            while not jobs:
                ready.wait()
            job = jobs.popleft()
        if job is None:  # closed
            return
        job.execute()
        del job


def _close(jobs: deque, ready: threading.Condition) -> None:
    with ready:
        jobs.append(None)
        ready.notify()


class ComputeThread:
    """A thread that runs the calls given to :meth:`run`, one at a time, in the order given.

    Started at the first call; ended when this object is freed or closed (:meth:`close`).
    """

    def __init__(self, name: str = "vsedvr-compute") -> None:
        self.name = name
        self._jobs: deque[_Job[Any] | None] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closer = weakref.finalize(self, _close, self._jobs, self._ready)

    @property
    def ident(self) -> int | None:
        """The compute thread's ``threading.get_ident()``, or None before its first call."""
        return self._thread.ident if self._thread is not None else None

    def run(self, fn: Callable[[], T]) -> T:
        """Runs ``fn()`` on the compute thread and returns its result, or raises its exception here.

        Waits (without the GIL) until it has run. Called from the compute thread itself, it runs at once.
        """
        if self._thread is not None and threading.get_ident() == self._thread.ident:
            return fn()
        job: _Job[T] = _Job(fn, log.current_environment())
        with self._ready:
            if not self._closer.alive:
                raise RuntimeError("Restore: the filter's compute thread has been closed")
            if self._thread is None or not self._thread.is_alive():  # first call (or a forked child)
                self._thread = threading.Thread(target=_serve, args=(self._jobs, self._ready), name=self.name,
                                                daemon=True)
                self._thread.start()
            self._jobs.append(job)
            self._ready.notify()
        job.done.wait()
        if job.error is not None:
            error, job.error = job.error, None
            try:
                raise error
            finally:
                del error
        return job.result  # type: ignore[return-value]

    def close(self) -> None:
        """Ends the thread after the calls already given (it is not waited for)."""
        self._closer()
