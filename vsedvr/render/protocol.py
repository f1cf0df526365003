"""The worker protocol: JSON lines between the driver's scheduler and a worker process (the same
over a pipe and through a Ray actor).

To the worker (stdin): the job first (``script``, ``script_sha256``, ``args``, ``output_index``,
``work_dir``, ``ffmpeg``, ``probe``: the name and token of the driver's probe file, ``encode``: the
chunk encode of ``--encode`` or None), then tasks (``index``, ``start``, ``end``; with ``record``, a
segment verified earlier that only needs its chunk encoded: no ``rendered`` then), and ``{"stop": true}`` at the end (the
checks still running finish first). stdin closed without a stop: the worker kills itself and its
ffmpeg processes.

From the worker (stdout), ``event`` and its fields:

- ``ready`` ``info``: the clip (``Width``, ``Height``, ``Frames``, ``FPS``, ``Format Name``), the
  worker (``host``, ``device``, ``pid``, ``startup_s``) and its ``fingerprint`` (versions,
  plugins, GPU model, frame 0's hash); or ``error`` ``message``: the worker cannot render there
  (the script fails, the work folder or the script is not the driver's; starting it again would
  not help);
- per task: ``started`` ``index``; ``progress`` ``index`` ``frames`` (about every 0.5 s; with
  ``stage`` ``encode``: frames of its chunk encoded);
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

__all__ = ["STOP", "decode", "device_of", "encode", "fingerprint_difference", "where_worker"]

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


def fingerprint_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The fields in which two fingerprints differ, for a message: 'torch 2.5.1 -> 2.6.0'."""
    out = []
    for key in sorted(set(a) | set(b)):
        if key == "plugins":
            pa, pb = a.get(key, {}), b.get(key, {})
            out += [f"plugin {ns} ({pa.get(ns, 'absent')} -> {pb.get(ns, 'absent')})"
                    for ns in sorted(set(pa) | set(pb)) if pa.get(ns) != pb.get(ns)]
        elif a.get(key) != b.get(key):
            what = "frame 0 (the canary)" if key == "canary" else key
            out.append(f"{what} ({a.get(key, 'absent')} -> {b.get(key, 'absent')})" if key != "canary"
                       else f"{what} renders differently")
    return out
