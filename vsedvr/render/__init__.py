"""Segment-parallel rendering of a VapourSynth script (``vsedvr render``).

The script is cut into frame ranges; each is rendered by its own ``vspipe --start --end`` (one
worker = one vspipe on one device, locally or as a Ray task), written as verified lossless FFV1,
and the segments are joined into a result identical, frame by frame, to one plain vspipe render.
It drives vspipe and ffmpeg as programs; the filter never imports this package, and it does not
import torch.
"""
from __future__ import annotations

from .driver import DEFAULT_SEGMENT, render
from .pools import LocalPool, RayPool, cpu_slots, default_slots, device_slots
from .tools import DiskFullError, RenderError

__all__ = ["DEFAULT_SEGMENT", "DiskFullError", "LocalPool", "RayPool", "RenderError", "cpu_slots",
           "default_slots", "device_slots", "render"]
