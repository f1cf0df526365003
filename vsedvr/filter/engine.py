"""One Restore's engine: frames to tensors and back, the network on each window, tile by tile.

The VapourSynth side hands over each output frame's window as frame numbers plus the planes of
those frames. Each input frame (each tile of it, when tiling) is converted and encoded
(``EDVR.frame_features``) once and kept in a small LRU keyed by frame number, so the windows that
share it (typically five) reuse it. Every frame is encoded alone (batch of one) whether it comes
from the cache or not, so results do not depend on request order.

One frame computes at a time (a lock per engine, taken by the VapourSynth thread that asks for
the frame), and always on the engine's own compute thread (:mod:`vsedvr.filter.compute`): the
thread that holds the lock hands the frame's work over and waits for it, so PyTorch's per-thread
state (cuDNN plans, cuBLAS handles and workspace, an OpenMP team) exists once. What that thread
runs for a tile is the :class:`TileNetwork` of the tile's read shape, one per shape: the place
where a captured CUDA graph can replace the eager calls.

On CUDA the transfers leave that critical section: :meth:`WindowEngine.restore` uploads new input
frames through pinned buffers on an upload stream and queues the result's download (to a pinned
buffer, on a download stream, in the narrower of the network's and the clip's types) without
waiting; :meth:`WindowEngine.write`, called after the lock is released, waits for that download
alone and converts while it copies into the output frame. So while one VapourSynth thread waits
for frame n's result to arrive, another is already queueing frame n+1's computation, and the copy
engines overlap it. Nothing in between synchronises with the GPU: the checks of a frame (the
largest deformable offset, whether an input had NaN or infinite samples) are computed on the
device and read after the download.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from ..nets import EDVR, pad_to_multiple
from . import shutdown
from .cache import FeatureCache
from .compute import ComputeThread
from .gate import FrameGate
from .gpu import device_scope, host_buffer, out_of_gpu_memory
from .graphs import GraphedTileNetwork, graphs_supported
from .offsets import OffsetWatch
from .tiles import DEFAULT_TILE_OVERLAP, FRAMES_IN_FLIGHT, plan_tiles, smaller_tiles

log = logging.getLogger("vsedvr")

#: What the plugin hands over for one frame: (memoryview R, memoryview G, memoryview B, stride in bytes).
PlaneViews = Sequence


@dataclass
class PendingFrame:
    """A restored frame on its way to the host (see :meth:`WindowEngine.write`)."""

    frame: int
    host: torch.Tensor  # (3, h, w) on the CPU, in the transfer type (the clip's, or narrower)
    ready: Any  # torch.cuda.Event recorded after the download, or None when computed on the CPU
    checks: torch.Tensor  # (2,) float32 on the host: largest mean |offset| (-1: not watched), NaN/inf seen


@dataclass(frozen=True)
class TileNetwork:
    """What the compute thread calls for the tiles of one read shape.

    ``encode(crop)`` is one input frame's feature pyramid, ``restore(features, centre)`` one window's
    result. The eager form calls the model (its compiled regions under ``compile=True``); a CUDA
    graph captured for the shape can replace both, with the same calls (static buffers inside).
    """

    encode: Callable[[torch.Tensor], Any]
    restore: Callable[[Sequence[Any], torch.Tensor], torch.Tensor]


def _warn_graph_failed(shape: tuple[int, ...], why: str) -> None:
    log.warning("Restore: capturing the CUDA graph of the %dx%d tiles failed (%s); they run without one",
                shape[-1], shape[-2], why)


class WindowEngine:
    """Runs an EDVR model on windows of VapourSynth frames.

    Args:
        model: the network, already on ``device``, in ``compute_dtype`` and in eval mode.
        device: where to compute.
        width, height: input frame size.
        sample_dtype: numpy dtype of the clip's samples (float32 for RGBS, float16 for RGBH).
        compute_dtype: torch dtype to compute in.
        tile: (width, height) of tiles in input pixels, or None for whole frames.
        tile_overlap: input pixels each tile reads beyond its edges.
        cached_windows: windows of every tile the feature cache keeps (2, 1, or 0 for the current
            tile's window only); see :mod:`vsedvr.filter.tiles`, which chooses it with the tiles on CUDA.
        compile: run the network through ``torch.compile`` (compiled at the first frame of each
            tile shape; falls back to the uncompiled network, with a warning, if compiling fails).
        compile_backend: ``torch.compile``'s backend; tests use ``"eager"`` or a counting backend,
            which keeps dynamo's tracing and guards (what decides recompiles) without inductor.
        frames_in_flight: frames between the start of their network (under the lock) and the end of
            :meth:`write` (``in_flight``); the memory plan counts their outputs.
        channels_last: the model's weights and every frame in channels-last order (a layout; the
            values are the same to float rounding).
        cuda_graphs: replay each tile shape's network from CUDA graphs (:mod:`vsedvr.filter.graphs`)
            where :func:`~vsedvr.filter.graphs.graphs_supported` allows it, eager elsewhere.
    """

    def __init__(self, model: EDVR, device: torch.device, width: int, height: int,
                 sample_dtype: np.dtype, compute_dtype: torch.dtype,
                 tile: tuple[int, int] | None = None, tile_overlap: int = 0, cached_windows: int = 2,
                 compile: bool = False,
                 compile_backend: str | Callable[..., Any] = "inductor",
                 frames_in_flight: int = FRAMES_IN_FLIGHT, channels_last: bool = False,
                 cuda_graphs: bool = False) -> None:
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.channels_last = channels_last
        self._graph_pool: Any = None
        self.cuda_graphs = False
        if cuda_graphs:
            why_not = graphs_supported(device, compute_dtype)
            if why_not is None:
                self.cuda_graphs = True
            else:
                log.warning("Restore: CUDA graphs were asked for (VSEDVR_CUDA_GRAPHS=1) but not used: %s", why_not)
        self.device = device
        self.width = width
        self.height = height
        self.sample_dtype = np.dtype(sample_dtype)
        self.host_dtype = torch.float16 if self.sample_dtype == np.float16 else torch.float32
        self.compute_dtype = compute_dtype
        self.tile_overlap = tile_overlap
        self._set_tiles(tile, cached_windows)
        #: the network's lock: one frame computes at a time, the lowest waiting frame next
        self._network = FrameGate(1)
        #: debug hook (plugin.trace): called with ("compute" | "computed", frame) on the thread that
        #: takes / is about to release the network's lock for the frame
        self.trace: Callable[[str, int], None] | None = None
        #: frames between the start of their network and the end of write(): taken under the network's
        #: lock (so the lock alone decides the order of frames), given back by write()
        self.in_flight = FrameGate(frames_in_flight)
        #: the only thread that runs the network (and uploads and queues the download)
        self.compute_thread = ComputeThread()
        self._tile_networks: dict[tuple[int, ...], TileNetwork] = {}
        self._warned_nonfinite = False
        self._offsets = OffsetWatch(model, device)
        #: whether an input frame of the current output frame had NaN or infinite samples (0-d, device)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        #: the type results are downloaded in: the clip's, or float16 for a half-precision network. The
        #: result leaves the network in float32 (the residual base is added to the clip's own samples),
        #: and bfloat16 would round it to 8 bits (1/256 near 1.0: banding in a 10-bit encode), float16
        #: to 11; values near [0, 1] are far from float16's range limits.
        self.transfer_dtype = torch.float16 if compute_dtype != torch.float32 else self.host_dtype
        shutdown.track(self.in_flight)
        self._frame_features: Callable[..., Any] = model.frame_features
        self._compile_errors: tuple[type[Exception], ...] = ()
        self.compiled = compile
        if compile:
            from torch._dynamo.exc import TorchDynamoException

            # VSScript sets the root logger to NOTSET and hands every record to the host, and inductor's
            # cache locks log each acquire/release at DEBUG: vspipe would print dozens of lines
            quiet = logging.getLogger("filelock")
            if quiet.level == logging.NOTSET:
                quiet.setLevel(logging.WARNING)

            # dynamic=False: a few static shapes (tiles at the edges) compile faster and run faster
            self._frame_features = torch.compile(model.frame_features, dynamic=False, backend=compile_backend)
            model.compile_regions(dynamic=False, backend=compile_backend)
            self._compile_errors = (TorchDynamoException,)
        self._upload = self._download = self._compute_stream = None
        if device.type == "cuda":
            with torch.cuda.device(device):
                self._upload, self._download = torch.cuda.Stream(), torch.cuda.Stream()
                # the network's own stream: another filter may set a thread's current stream, and the
                # cache and the offset watch rely on one stream for every frame
                self._compute_stream = torch.cuda.Stream()
                self._compute_stream.wait_stream(torch.cuda.current_stream())  # the weights, uploaded there
        # cuDNN's per-shape algorithm search (torch.backends.cudnn.benchmark) is left as the process has
        # it: it is process-wide (every PyTorch filter of the script) and each process may time its way
        # to other algorithms, other rounding: frames would differ between vspipe runs (docs/cuda.md)

    def _set_tiles(self, tile: tuple[int, int] | None, cached_windows: int = 2) -> None:
        """Plans the tiles; the cache keeps ``cached_windows`` windows of every tile, or with 0 the
        current tile's window only."""
        self.tile = tile
        self.tiles = plan_tiles(self.width, self.height, tile, self.tile_overlap)
        # two windows' worth per tile: sequential rendering needs one, a little random access the other
        if cached_windows:
            self.cache = FeatureCache(cached_windows * self.model.num_frames * len(self.tiles))
        else:
            self.cache = FeatureCache(self.model.num_frames)

    def frame_tensor(self, views: PlaneViews) -> torch.Tensor:
        """(1, 3, H, W) tensor of one frame's planes on the device, in the clip's type (float32 for
        RGBS, float16 for RGBH): the network gets a copy in its compute type, the residual base these.

        NaN and infinite samples are replaced on the device (NaN, -inf by 0, +inf by 1: one would
        spread through the convolutions into every output frame whose window holds it), and noted
        in a flag read back with the result (:meth:`write` warns): no check on the host, no sync.
        """
        *planes, stride = views
        row = stride // self.sample_dtype.itemsize
        # VapourSynth's frame memory is pageable: for CUDA the planes go straight into pinned memory,
        # so that the upload is asynchronous and runs on its own stream beside the queued computation
        chw = host_buffer((3, self.height, self.width), self.host_dtype, pinned=self._upload is not None)
        np.stack([np.frombuffer(p, dtype=self.sample_dtype).reshape(self.height, row)[:, :self.width]
                  for p in planes], out=chw.numpy())
        if self._upload is None:
            on_device = chw
        else:
            with torch.cuda.stream(self._upload):
                on_device = chw.to(self.device, non_blocking=True)
            self._compute_stream.wait_stream(self._upload)
            on_device.record_stream(self._compute_stream)  # allocated on the upload stream, used on the compute one
        self._nonfinite.logical_or_(~torch.isfinite(on_device).all())
        torch.nan_to_num_(on_device, nan=0.0, posinf=1.0, neginf=0.0)
        return on_device[None]

    def _network_for(self, crop: torch.Tensor) -> TileNetwork:
        """The tile network for crops of this shape (made at its first crop)."""
        shape = tuple(crop.shape)
        network = self._tile_networks.get(shape)
        if network is None:
            if self.cuda_graphs:
                if self._graph_pool is None:
                    self._graph_pool = torch.cuda.graph_pool_handle()
                # the warning is a plain function: the engine's tile networks must not refer back to it
                graphed = GraphedTileNetwork(self._frame_features, self.model.restore_window, self._graph_pool,
                                             partial(_warn_graph_failed, shape))
                network = TileNetwork(graphed.encode, graphed.restore)
            else:
                network = TileNetwork(self._frame_features, self.model.restore_window)
            self._tile_networks[shape] = network
        return network

    def _encode(self, n: int, t: int, load_frame: Callable[[], torch.Tensor]) -> tuple:
        """(padded input of tile t in the clip's type, its features) for input frame n, from the cache
        when present. A half-precision network gets the crop rounded to its type; the window's result
        adds the bilinear base of the unrounded centre crop (in float32 by type promotion: a base
        rounded to bfloat16 is 8 bits, to float16 11)."""
        item = self.cache.get((n, t))
        if item is None:
            shutdown.stop_if_exiting()  # a long frame stops between its parts, not only before it starts
            tile = self.tiles[t]
            crop = load_frame()[..., tile.ry0:tile.ry1, tile.rx0:tile.rx1]
            crop = pad_to_multiple(crop, self.model.size_multiple)
            if self.channels_last:
                crop = crop.contiguous(memory_format=torch.channels_last)
            item = (crop, self._network_for(crop).encode(crop.to(self.compute_dtype)))
            self.cache.put((n, t), item)
        return item

    def _restore_tiles(self, window: Sequence[int], sources: Sequence[PlaneViews]) -> torch.Tensor:
        s = self.model.scale
        self.cache.start_window(window, window[self.model.center])
        frames: dict[int, torch.Tensor] = {}  # converted at most once per call, only on a cache miss

        def loader(i: int) -> Callable[[], torch.Tensor]:
            def load() -> torch.Tensor:
                if window[i] not in frames:
                    frames[window[i]] = self.frame_tensor(sources[i])
                return frames[window[i]]
            return load

        out = None
        for t, tile in enumerate(self.tiles):
            encoded = [self._encode(n, t, loader(i)) for i, n in enumerate(window)]
            centre = encoded[self.model.center][0]
            result = self._network_for(centre).restore([features for _, features in encoded], centre)
            ox, oy = tile.x0 - tile.rx0, tile.y0 - tile.ry0
            part = result[..., s * oy:s * (oy + tile.y1 - tile.y0), s * ox:s * (ox + tile.x1 - tile.x0)]
            if len(self.tiles) == 1:
                return part
            if out is None:
                out = result.new_empty((1, 3, s * self.height, s * self.width))
            out[..., s * tile.y0:s * tile.y1, s * tile.x0:s * tile.x1] = part
        return out

    def restore(self, window: Sequence[int], sources: Sequence[PlaneViews]) -> PendingFrame:
        """Restores the centre frame of the window, (3, s*H, s*W); pass the result to :meth:`write`.

        Called on any thread; the network runs on the engine's compute thread, and an exception
        raised there is raised here. On CUDA this returns once the work is queued, without waiting
        for it.
        """
        n = window[self.model.center]
        self._network.next_frame(n)
        with self._network:  # the lowest waiting frame next; the compute thread runs one at a time
            if self.trace is not None:
                self.trace("compute", n)
            try:
                shutdown.stop_if_exiting()
                self._offsets.stop_if_warned()  # here, under the lock: write() runs beside the network
                # wait for a frame in flight to be written (the lock holder alone waits here)
                self.in_flight.acquire()
                try:
                    return self.compute_thread.run(partial(self._compute_frame, window, sources))
                except BaseException:
                    self.in_flight.release()
                    raise
            finally:
                if self.trace is not None:
                    self.trace("computed", n)

    def _compute_frame(self, window: Sequence[int], sources: Sequence[PlaneViews]) -> PendingFrame:
        """On the compute thread: the frame's network (retried on out-of-memory errors), its download queued."""
        stream = torch.cuda.stream(self._compute_stream) if self._compute_stream is not None else nullcontext()
        with torch.inference_mode(), device_scope(self.device), stream:
            failures = 0
            while True:
                try:
                    self._offsets.reset()
                    self._nonfinite.zero_()
                    out = self._run_network(window, sources)
                    return self._to_host(window[self.model.center], out[0])
                except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
                    if not out_of_gpu_memory(e):
                        raise
                    failures += 1
                    # The first OOM of a frame is retried at the same tiles: it may be transient (another
                    # process on the GPU, or this frame's failed attempt still held by the traceback).
                    # A second one shrinks them, for the rest of the clip (see _shrink_tiles).
                    if failures > 1 and not self._shrink_tiles():
                        raise
                # outside the except block: its traceback holds the failed attempt's tensors
                torch.cuda.empty_cache()

    def _run_network(self, window: Sequence[int], sources: Sequence[PlaneViews]) -> torch.Tensor:
        if not self.compiled:
            return self._restore_tiles(window, sources)
        try:
            return self._restore_tiles(window, sources)
        except self._compile_errors as e:  # compiling failed, e.g. no C++ compiler for inductor
            if out_of_gpu_memory(e):
                # inductor benchmarks kernels on the GPU while compiling: an OOM there is an OOM, retried
                # by restore() with compile kept (a compiler that fails is what disables compile)
                raise
            log.warning("Restore: torch.compile failed (%s: %s); running the network uncompiled",
                        type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "")
            self._frame_features = self.model.frame_features
            self.model.compile_regions(False)
            self._tile_networks.clear()
            self.compiled = False
            self.cache.clear()
            self._offsets.reset()
            return self._restore_tiles(window, sources)

    def _to_host(self, n: int, out: torch.Tensor) -> PendingFrame:
        """The result in the transfer type and the frame's checks, queued for download."""
        out = out.to(self.transfer_dtype).contiguous()  # channels-last results too: the host planes are planar
        peak = self._offsets.frame_peak()
        checks = torch.stack([peak if peak is not None else torch.full((), -1.0, device=self.device),
                              self._nonfinite.float()])
        if self._download is None:
            return PendingFrame(n, out, None, checks)
        self._download.wait_stream(self._compute_stream)
        with torch.cuda.stream(self._download):
            host = host_buffer(out.shape, out.dtype, pinned=True)
            host.copy_(out, non_blocking=True)
            checks_host = host_buffer(checks.shape, checks.dtype, pinned=True)
            checks_host.copy_(checks, non_blocking=True)
            ready = torch.cuda.Event(blocking=True)  # write() sleeps rather than spins: cores stay free
            ready.record(self._download)
        # keep the allocator from reusing them (freed on the compute stream) before the copies end
        out.record_stream(self._download)
        checks.record_stream(self._download)
        return PendingFrame(n, host, ready, checks_host)

    def _shrink_tiles(self) -> bool:
        """After CUDA ran out of memory twice on one frame: halve the tiles (down to MIN_TILE); False if
        already that small.

        The smaller tiles stay for the rest of the clip: growing them back would risk an OOM (two
        failed attempts) at every try and a compile per new tile shape, and tiled output equals
        untiled output to float rounding (docs/cuda.md), so what it costs is speed only.

        The feature cache then keeps one tile's window only: with every tile's features kept for the
        next windows (five frames' worth, more with the overlap), the cache alone would hold more
        than the untiled frame did. Each input frame's features are then computed once per window
        (up to five times) instead of once: slower, but the memory follows the tile size.
        """
        smaller = smaller_tiles(self.tile, self.width, self.height)
        if smaller is None:
            return False
        self.tile_overlap = self.tile_overlap or DEFAULT_TILE_OVERLAP
        log.warning("CUDA ran out of memory at tile %s; retrying with tiles of %dx%d (tile_overlap=%d), "
                    "features recomputed for each window", self.tile or "none", smaller[0], smaller[1],
                    self.tile_overlap)
        self._set_tiles(smaller, cached_windows=0)
        self._tile_networks.clear()
        return True

    def write(self, pending: PendingFrame, output: PlaneViews) -> None:
        """Copies a restored frame into the output frame's planes (waiting for its download on CUDA),
        converting to the clip's type as it copies; the frame is then no longer in flight."""
        try:
            if pending.ready is not None:
                pending.ready.synchronize()
            peak, nonfinite = pending.checks.tolist()
            if nonfinite and not self._warned_nonfinite:
                self._warned_nonfinite = True
                log.warning("Restore: the clip has NaN or infinite samples; they are replaced by 0 (NaN, -inf) "
                            "and 1 (+inf) before restoration (reported once per filter)")
            self._offsets.check(pending.frame, peak if peak >= 0 else None)
            *planes, stride = output
            h, w = pending.host.shape[1:]
            row = stride // self.sample_dtype.itemsize
            for plane, values in zip(planes, pending.host):
                torch.frombuffer(plane, dtype=self.host_dtype).view(h, row)[:, :w].copy_(values)
        finally:
            self.in_flight.release()
