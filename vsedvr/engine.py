"""Frames to tensors and back, and the temporal cache of per-frame features.

The VapourSynth side hands over each output frame's window as frame numbers plus the planes of
those frames. Each input frame is converted and encoded (``EDVR.frame_features``) once and kept
in a small LRU keyed by frame number, so the windows that share it (typically five) reuse it.
Every frame is encoded alone (batch of one) whether it comes from the cache or not, so results
do not depend on request order.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from .nets import EDVR, pad_to_multiple

PlaneViews = Sequence  # (memoryview R, memoryview G, memoryview B, stride in bytes)


class FeatureCache:
    """Per-frame encodings, keyed by input frame number, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, tuple] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, n: int) -> tuple | None:
        item = self._items.get(n)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(n)
        return item

    def put(self, n: int, item: tuple) -> None:
        self._items[n] = item
        self._items.move_to_end(n)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class WindowEngine:
    """Runs an EDVR model on windows of VapourSynth frames.

    Args:
        model: the network, already on ``device`` and in eval mode.
        device: where to compute.
        width, height: input frame size.
        sample_dtype: numpy dtype of the clip's samples (float32 for RGBS, float16 for RGBH).
        compute_dtype: torch dtype to compute in.
    """

    def __init__(self, model: EDVR, device: torch.device, width: int, height: int,
                 sample_dtype: np.dtype, compute_dtype: torch.dtype) -> None:
        self.model = model
        self.device = device
        self.width = width
        self.height = height
        self.sample_dtype = np.dtype(sample_dtype)
        self.compute_dtype = compute_dtype
        # two windows' worth: sequential rendering needs one, a little random access the other
        self.cache = FeatureCache(2 * model.num_frames)
        self._lock = threading.Lock()

    def frame_tensor(self, views: PlaneViews) -> torch.Tensor:
        """(1, 3, H', W') tensor on the device, padded to the model's size multiple."""
        *planes, stride = views
        row = stride // self.sample_dtype.itemsize
        chw = np.stack([np.frombuffer(p, dtype=self.sample_dtype).reshape(self.height, row)[:, :self.width]
                        for p in planes])
        t = torch.from_numpy(chw).to(self.device, self.compute_dtype, non_blocking=False)[None]
        return pad_to_multiple(t, self.model.size_multiple)

    def encode(self, n: int, views: PlaneViews) -> tuple:
        """(frame tensor, frame features) of input frame n, from the cache when present."""
        item = self.cache.get(n)
        if item is None:
            frame = self.frame_tensor(views)
            item = (frame, self.model.frame_features(frame))
            self.cache.put(n, item)
        return item

    def restore(self, window: Sequence[int], sources: Sequence[PlaneViews]) -> torch.Tensor:
        """Restored centre frame of the window, (1, 3, s*H, s*W), cropped to the clip's size."""
        with self._lock, torch.inference_mode():
            encoded = [self.encode(n, views) for n, views in zip(window, sources)]
            centre_frame = encoded[self.model.center][0]
            out = self.model.restore_window([features for _, features in encoded], centre_frame)
            s = self.model.scale
            return out[..., :s * self.height, :s * self.width]

    def write(self, tensor: torch.Tensor, output: PlaneViews) -> None:
        """Copies a (1, 3, h, w) tensor into the output frame's planes."""
        *planes, stride = output
        result = tensor[0].to("cpu", torch.float32).numpy()
        h, w = result.shape[1:]
        row = stride // self.sample_dtype.itemsize
        for plane, values in zip(planes, result):
            np.frombuffer(plane, dtype=self.sample_dtype).reshape(h, row)[:, :w] = values
