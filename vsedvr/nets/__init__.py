"""PyTorch networks."""
from __future__ import annotations

from .edvr import EDVR, pad_to_multiple

__all__ = ["EDVR", "pad_to_multiple"]
