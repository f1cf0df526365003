"""What the filter does when its process exits with frames still being computed.

Two ways in: Python's ``atexit`` (:func:`_finish_at_exit`, when the interpreter finalises: plain
Python scripts) and the plugin's own C exit handler (native/exit_guard.c, for hosts that embed
Python through libvsscript and never finalise it: vsedit and other VSScript previewers; vspipe too,
which has no frame in flight at its exit), which sets a flag that :func:`watch_native_exit` reads.
Either way new frames stop (:func:`stop_if_exiting` raises) and the ones in flight may finish within
one deadline. In a Python host VapourSynth's own ``atexit`` runs after this one and frees the core,
waiting for the frames left without a bound (docs/hosts.md, the exit bound per host class).
"""
from __future__ import annotations

import atexit
import ctypes
import threading
import time
import weakref

from .gate import FrameGate

#: Longest wait at interpreter exit for a frame that is being computed (seconds); see _finish_at_exit.
EXIT_WAIT = 10.0

_in_flight: weakref.WeakSet[FrameGate] = weakref.WeakSet()
_exiting = threading.Event()
_native_exiting: ctypes.c_int | None = None  # the plugin's flag, set by its C atexit handler


def track(in_flight: FrameGate) -> None:
    """Makes the exit wait for the frames ``in_flight`` admits (an engine's, while it lives)."""
    _in_flight.add(in_flight)


def stop_if_exiting() -> None:
    """Raises when the process is exiting: no new frame (or part of one) starts then."""
    if _exiting.is_set() or (_native_exiting is not None and _native_exiting.value):
        raise RuntimeError("Restore: the process is exiting; frame not computed")


def watch_native_exit(address: int) -> None:
    """Also stop frames when the plugin's exit flag (an ``int`` at ``address``) is set.

    Hosts that embed Python and never finalise it (libvsscript: vsedit and other previewers)
    never run :func:`_finish_at_exit`; the plugin's own C ``atexit`` handler sets this flag
    instead and waits for running frames (native/exit_guard.c).
    """
    global _native_exiting
    if _native_exiting is None or ctypes.addressof(_native_exiting) != address:
        _native_exiting = ctypes.c_int.from_address(address)


@atexit.register
def _finish_at_exit() -> None:
    """Stops new frames and waits (up to EXIT_WAIT) for the ones being computed.

    A script may exit with frames still requested (vsedit closing mid-render, ``get_frame_async``
    never awaited). VapourSynth's threads keep computing while Python tears down modules, and a
    frame in the middle of the network then calls operators whose registrations are already gone
    (seen with the compiled network: failed tracing, or a segfault). atexit runs before that
    teardown; the lock wait releases the GIL, so the running frame can finish (or stop at its next
    feature encoding: a frame of many tiles does not have to run to its end).
    """
    _exiting.set()
    deadline = time.monotonic() + EXIT_WAIT
    for gate in list(_in_flight):
        # every frame in flight, also one waiting for its download in write() (it would take the GIL
        # back during finalisation: on Python 3.12 such a thread ends the process in terminate())
        gate.wait_idle(max(0.0, deadline - time.monotonic()))
