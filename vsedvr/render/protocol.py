"""The worker protocol: JSON lines between the driver's scheduler and a worker process (the same
over a pipe and through a Ray actor).

To the worker (stdin): the job first (``script``, ``args``, ``output_index``, ``work_dir``,
``ffmpeg``), then tasks (``index``, ``start``, ``end``), and ``{"stop": true}`` at the end (the
checks still running finish first). stdin closed without a stop: the worker kills itself and its
ffmpeg processes.

From the worker (stdout), ``event`` and its fields:

- ``ready`` ``info``: the clip (``Width``, ``Height``, ``Frames``, ``FPS``, ``Format Name``) and
  the worker (``host``, ``device``, ``pid``, ``startup_s``); or ``error`` ``message``: the script
  does not evaluate there (starting that worker again would not help);
- per task: ``started`` ``index``; ``progress`` ``index`` ``frames`` (about every 0.5 s);
  ``rendered`` ``index`` ``record`` ``partial`` ``hashes`` (enough for the driver to check the file
  itself should the worker die); then ``done`` ``record`` (the manifest record) or ``failed``
  ``index`` ``message`` ``fatal``.

On the driver's side the scheduler adds ``exit`` ``message`` (the process or its actor ended).
"""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from typing import Any

__all__ = ["STOP", "decode", "device_of", "encode", "where_worker"]

STOP = {"stop": True}


def encode(message: Mapping[str, Any]) -> str:
    """One protocol line."""
    return json.dumps(message) + "\n"


def decode(line: str) -> dict[str, Any] | None:
    """The message of one line; None for a line that is not one (a stray print)."""
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def device_of(env: Mapping[str, str] | None = None) -> str:
    """The device a worker process renders on, as its environment shows it: ``GPU 1`` (the
    CUDA_VISIBLE_DEVICES it sees), ``CPU`` (hidden GPUs), or ``default device``."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return "default device"
    return f"GPU {visible}" if visible.strip() else "CPU"


def where_worker(host: str | None = None, device: str | None = None) -> str:
    """'host gpu7 (GPU 1)', for every message about a worker."""
    return f"host {host or socket.gethostname()} ({device or device_of()})"
