"""The lost-alignment warning: the largest mean |deformable offset| of each frame, watched on the device."""
from __future__ import annotations

import logging
import threading

import torch

from ..nets.blocks import DCNPack

log = logging.getLogger("vsedvr")

#: Mean |deformable offset| (pixels) above which both references warn: the alignment is lost,
#: which usually means content unlike the training data (e.g. the wrong model for it).
OFFSET_WARNING = 50.0


class OffsetWatch:
    """The largest mean |deformable offset| of a frame, kept on the device: no sync per layer.

    A forward hook on every DCNPack's ``conv_offset`` folds the mean of its offsets into one 0-d
    float32 tensor made once (a running maximum, updated in place). So inside a compiled region the
    hook is a few tensor ops on a tensor whose identity never changes: nothing for dynamo to guard on
    that differs between calls (a Python list that grew per call made a graph per window position).
    The mean is one reduction (an L1 norm, accumulated in float32): no |offset| tensor is made.
    The hooks hold this object, not the engine, so that dropping the engine frees the model at once
    (no engine -> model -> hook -> engine cycle left for the collector); :meth:`stop` removes them.
    After the one warning a filter gives, the engine removes the hooks (:meth:`stop_if_warned`).
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.peak = torch.zeros((), dtype=torch.float32, device=device)
        self._handles = [module.conv_offset.register_forward_hook(self._record)
                         for module in model.modules() if isinstance(module, DCNPack)]
        self._warn_lock = threading.Lock()  # check() runs outside the network's lock, on several threads
        self.warned = False

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def _record(self, module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        offsets = out[:, :out.shape[1] * 2 // 3]
        mean = torch.linalg.vector_norm(offsets, 1, dtype=torch.float32) / offsets.numel()
        self.peak.copy_(torch.maximum(self.peak, mean))

    def reset(self) -> None:
        self.peak.zero_()

    def frame_peak(self) -> torch.Tensor | None:
        """This frame's peak (0-d, on the device; the next frame resets the watch: copy it before), or
        None once stopped."""
        return self.peak if self.active else None

    def check(self, frame: int, peak: float | None) -> None:
        """Warns (once per filter) when ``peak``, a frame's :meth:`frame_peak` read on the host, is too large."""
        if peak is None:
            return
        with self._warn_lock:
            if peak <= OFFSET_WARNING or self.warned:
                return
            self.warned = True
            log.warning("Restore: frame %d: the mean deformable offset reaches %.0f pixels (above %.0f): "
                        "alignment has failed, which usually means content unlike the model's training "
                        "data (the wrong model for this content?); reported once per filter",
                        frame, peak, OFFSET_WARNING)

    def stop_if_warned(self) -> None:
        """Removes the hooks after the warning; call it where no network runs (the engine's lock)."""
        if self.warned and self.active:
            self.stop()

    def stop(self) -> None:
        """Removes the hooks (the compiled regions then recompile once, without them)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
