"""Segment-parallel rendering of a VapourSynth script (``vsedvr render``).

The script's output is cut into frame ranges; workers (processes on this machine, or Ray actors on
a cluster, one per GPU or CPU slot) each evaluate the script once, as vspipe does, and render range
after range as verified lossless FFV1; the segments are joined into a result identical, frame by
frame, to one plain vspipe render. The driver does not import torch (the workers do).

Modules: :mod:`.driver` (plan, run, join), :mod:`.scheduler` (hand out, retry, replace),
:mod:`.slots` (local slots), :mod:`.process` (a worker process), :mod:`.protocol` (its messages),
:mod:`.ray_pool` (Ray), :mod:`.worker` (the worker itself), :mod:`.segment`, :mod:`.workdir`,
:mod:`.tools`.
"""
from __future__ import annotations

from .driver import DEFAULT_SEGMENT, render
from .ray_pool import RayPool
from .scheduler import LocalPool
from .slots import cpu_slots, default_slots, device_slots
from .tools import DiskFullError, RenderError

__all__ = ["DEFAULT_SEGMENT", "DiskFullError", "LocalPool", "RayPool", "RenderError", "cpu_slots",
           "default_slots", "device_slots", "render"]
