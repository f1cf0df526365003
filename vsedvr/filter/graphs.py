"""CUDA graphs of one tile shape's network: the encoding of a frame and the restoration of a window.

EDVR-M launches about 830 kernels per output frame; at 180x320 the CPU side of those launches, not
the GPU, sets the frame rate. A CUDA graph captured once per tile read shape replays them in one
launch. The graphs have fixed addresses, so each call copies its inputs into the graph's own
buffers (the cached features of the window's five frames: one window of features, counted by the
memory plan) and copies the result out, since the next replay overwrites it: the feature cache
keeps what ``encode`` returns, and the download of a frame's result runs beside the next frame.

Capture, at the first call of a shape: the call runs eagerly first (its result is the call's; the
run also compiles and autotunes the Triton kernels and lets cuDNN pick its plans, none of which may
happen during a capture), then the same call is captured on the engine's compute stream, with
``thread_local`` error mode so that the other threads' synchronisations (``write`` waiting for a
download) are not mistaken for the capture's. Both graphs of every shape share one memory pool:
they replay one at a time on one stream, and their outputs stay referenced.

What can be captured: the half-precision network with the Triton DCN (launched on the current
stream). torchvision's DCN (fp32, or no Triton) runs on the legacy default stream (issue 31),
which a capture refuses; :func:`graphs_supported` says which. A capture that fails for any other
reason leaves that shape eager, with one warning.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

log = logging.getLogger("vsedvr")

Features = Any  # one frame's feature pyramid: a tuple of tensors


def graphs_supported(device: torch.device, compute_dtype: torch.dtype) -> str | None:
    """None where a tile network on ``device`` in ``compute_dtype`` can be captured, else why not."""
    if device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if compute_dtype == torch.float32:
        return "fp32's deformable convolution (torchvision's) runs on the legacy default stream"
    from ..nets.deform import use_triton_path

    with torch.inference_mode():
        if not use_triton_path(torch.empty(0, device=device, dtype=compute_dtype)):
            return "the Triton deformable convolution does not run here (torchvision's cannot be captured)"
    return None


def _flat(features: Sequence[Features]) -> list[torch.Tensor]:
    return [level for pyramid in features for level in pyramid]


class GraphedTileNetwork:
    """``encode`` and ``restore`` of one tile read shape, replayed from CUDA graphs after the first call.

    Args:
        encode, restore: the eager calls (see :class:`vsedvr.filter.engine.TileNetwork`).
        pool: the memory pool the engine's graphs share (``torch.cuda.graph_pool_handle()``).
        warn: called once with the reason when a capture fails (the shape then stays eager).
    """

    def __init__(self, encode: Callable[[torch.Tensor], Features],
                 restore: Callable[[Sequence[Features], torch.Tensor], torch.Tensor],
                 pool: Any, warn: Callable[[str], None]) -> None:
        self._eager_encode, self._eager_restore = encode, restore
        self._pool, self._warn = pool, warn
        self._encode_graph: torch.cuda.CUDAGraph | None = None
        self._restore_graph: torch.cuda.CUDAGraph | None = None
        self._failed = False

    def _capture(self, call: Callable[[], Any]) -> tuple[torch.cuda.CUDAGraph, Any] | None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._pool, stream=torch.cuda.current_stream(),
                                  capture_error_mode="thread_local"):
                out = call()
        except Exception as e:  # noqa: BLE001 - any failure leaves the shape eager (out of memory included)
            self._failed = True
            self._warn(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
            return None
        return graph, out

    def encode(self, crop: torch.Tensor) -> Features:
        if self._encode_graph is None:
            result = self._eager_encode(crop)
            if not self._failed:
                self._crop = crop.clone()
                captured = self._capture(lambda: self._eager_encode(self._crop))
                if captured is not None:
                    self._encode_graph, self._encoded = captured
            return result
        self._crop.copy_(crop)
        self._encode_graph.replay()
        return tuple(level.clone() for level in self._encoded)

    def restore(self, features: Sequence[Features], centre: torch.Tensor) -> torch.Tensor:
        if self._restore_graph is None:
            result = self._eager_restore(features, centre)
            if not self._failed:
                self._features = [tuple(level.clone() for level in pyramid) for pyramid in features]
                self._centre = centre.clone()
                captured = self._capture(lambda: self._eager_restore(self._features, self._centre))
                if captured is not None:
                    self._restore_graph, self._restored = captured
                else:
                    del self._features, self._centre
            return result
        for target, source in zip(_flat(self._features), _flat(features)):
            target.copy_(source)
        self._centre.copy_(centre)
        self._restore_graph.replay()
        return self._restored.clone()
