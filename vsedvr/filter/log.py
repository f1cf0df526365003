"""Where vsedvr's messages go: never to stdout, which carries the video under ``vspipe -``.

* :func:`install` adds :class:`VapourSynthHandler` to ``logging.getLogger("vsedvr")`` (once per
  process). It sends each record to the VapourSynth log (``core.log_message``: vspipe prints it
  as ``Warning: ...``, editors show it in their log pane), or to stderr when no core is usable.
  When another handler on the way to the root logger already shows the record, the handler does
  nothing, so nothing is shown twice: under vspipe and other VSScript hosts R81 itself puts a
  ``PythonVSScriptLoggingBridge`` on the root logger that forwards every record to the core log,
  and a program that configured :mod:`logging` gets the records where it asked for them.
* :func:`frames_of` makes a filter's own VapourSynth environment current on the worker thread that
  computes its frame. Those threads have none under VSScript, so without it both handlers above
  fall back to stderr, and a previewer's log pane never sees a warning raised while a frame is
  computed (NaN input, lost alignment, compile fallback, out-of-memory retry).
* :func:`stdout_to_stderr` points file descriptor 1 at stderr around a block (HolyWu's
  ``redirect_stdout_to_stderr``), so that anything a library prints while a model is downloaded
  or loaded, from Python or from C, cannot end up inside the video stream.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["LOGGER_NAME", "VapourSynthHandler", "current_environment", "frames_of", "install", "stdout_to_stderr"]

#: The logger every vsedvr module writes to.
LOGGER_NAME = "vsedvr"

_install_lock = threading.Lock()
_redirect_depth = 0  # nesting of stdout_to_stderr on the main thread


def _message_type(vs: Any, levelno: int) -> Any:
    """The VapourSynth message type for a logging level (never FATAL: the core aborts on it)."""
    if levelno < logging.INFO:
        return vs.MESSAGE_TYPE_DEBUG
    if levelno < logging.WARNING:
        return vs.MESSAGE_TYPE_INFORMATION
    if levelno < logging.ERROR:
        return vs.MESSAGE_TYPE_WARNING
    return vs.MESSAGE_TYPE_CRITICAL


class VapourSynthHandler(logging.Handler):
    """Sends ``vsedvr`` records to the VapourSynth core log, else to stderr.

    The core is the one of the current VapourSynth environment; on threads without one (the
    core's worker threads under VSScript) it is the environment that was current when
    :meth:`remember_environment` last ran, while that environment is alive.
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter("vsedvr: %(message)s"))
        self._environment: Any = None

    def remember_environment(self) -> None:
        """Remember the current VapourSynth environment for threads that have none."""
        vs = sys.modules.get("vapoursynth")
        if vs is None:
            return
        try:
            self._environment = vs.get_current_environment()
        except Exception:  # noqa: BLE001 - no policy or no environment here: keep the last one
            pass

    def _shown_elsewhere(self, record: logging.LogRecord) -> bool:
        """Whether another handler between the record's logger and the root will handle it."""
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self and record.levelno >= h.level for h in logger.handlers):
                return True
            if not logger.propagate:
                return False
            logger = logger.parent  # type: ignore[assignment]
        return False

    def _to_core(self, levelno: int, message: str) -> bool:
        vs = sys.modules.get("vapoursynth")  # never import VapourSynth just to log
        if vs is None:
            return False
        environment = None
        try:
            environment = vs.get_current_environment()
        except Exception:  # noqa: BLE001 - a thread without an environment
            environment = self._environment
        if environment is None:
            return False
        try:
            with environment.use():
                vs.core.log_message(_message_type(vs, levelno), message)
        except Exception:  # noqa: BLE001 - the environment is gone or the core refused
            return False
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._shown_elsewhere(record):
                return
            message = self.format(record)
            if not self._to_core(record.levelno, message):
                stream = sys.stderr
                if stream is not None:
                    stream.write(message + "\n")
                    stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging must never break the filter
            self.handleError(record)


def install() -> VapourSynthHandler:
    """Add the handler to the ``vsedvr`` logger unless it is there; return it.

    Safe to call on every ``Restore``: it also remembers the caller's VapourSynth environment.
    """
    logger = logging.getLogger(LOGGER_NAME)
    with _install_lock:
        handler = next((h for h in logger.handlers if isinstance(h, VapourSynthHandler)), None)
        if handler is None:
            handler = VapourSynthHandler()
            logger.addHandler(handler)
    handler.remember_environment()
    return handler


def current_environment() -> Any:
    """The current VapourSynth environment (a ``vs.Environment``), or None where there is none."""
    vs = sys.modules.get("vapoursynth")
    if vs is None:
        return None
    try:
        return vs.get_current_environment()
    except Exception:  # noqa: BLE001 - no policy, or no environment on this thread
        return None


@contextlib.contextmanager
def frames_of(environment: Any) -> Iterator[None]:
    """Within the block, ``environment`` (from :func:`current_environment`) is this thread's
    VapourSynth environment, so that log records reach the log of the core that owns the filter.

    Nothing changes where it is current already (a plain Python host has one environment for all
    threads), where it is None, or where it has died (the script was freed while a frame was
    still being computed): the records then go where they would have gone anyway.
    """
    with contextlib.ExitStack() as scope:
        if environment is not None and not _is_current(environment):
            with contextlib.suppress(Exception):  # the environment is gone
                scope.enter_context(environment.use())
        yield


def _is_current(environment: Any) -> bool:
    try:
        return bool(environment.active)
    except Exception:  # noqa: BLE001 - a dead environment
        return True


def _flush_stdout() -> None:
    """Flush Python's and C's stdout buffers into whatever fd 1 is now."""
    with contextlib.suppress(Exception):
        if sys.stdout is not None:
            sys.stdout.flush()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Within the block, everything written to stdout goes to stderr instead.

    Both file descriptor 1 (C libraries, subprocesses) and ``sys.stdout`` are pointed at stderr.

    Only on the main thread, where VapourSynth hosts evaluate scripts: elsewhere (a filter
    created inside a ``FrameEval`` callback, say) the host may be writing video to fd 1 at that
    very moment from another thread, and moving fd 1 would send those frames to stderr.
    """
    global _redirect_depth
    if threading.current_thread() is not threading.main_thread() or _redirect_depth:
        yield
        return
    _flush_stdout()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 at all: nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        _redirect_depth += 1
        try:
            # also sys.stdout itself, for hosts that replaced it with something not on fd 1
            with contextlib.redirect_stdout(sys.stderr):
                yield
        finally:
            _redirect_depth -= 1
            _flush_stdout()
            os.dup2(saved, 1)
    finally:
        os.close(saved)
