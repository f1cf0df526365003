"""Frames to tensors and back, tiling, and the temporal cache of per-frame features.

The VapourSynth side hands over each output frame's window as frame numbers plus the planes of
those frames. Each input frame (each tile of it, when tiling) is converted and encoded
(``EDVR.frame_features``) once and kept in a small LRU keyed by frame number, so the windows that
share it (typically five) reuse it. Every frame is encoded alone (batch of one) whether it comes
from the cache or not, so results do not depend on request order.

One frame computes at a time (a lock per engine). On CUDA the transfers leave that critical
section: :meth:`WindowEngine.restore` uploads new input frames through pinned buffers on an
upload stream and queues the result's download (to a pinned buffer, on a download stream) without
waiting; :meth:`WindowEngine.write`, called after the lock is released, waits for that download
alone. So while one VapourSynth thread waits for frame n's result to arrive, another is already
queueing frame n+1's computation, and the copy engines overlap it. Nothing in between synchronises
with the GPU (the offset check reads its value after the download too).
"""
from __future__ import annotations

import atexit
import ctypes
import itertools
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .memory import FRAMES_IN_FLIGHT
from .nets import EDVR, pad_to_multiple
from .nets.blocks import DCNPack

log = logging.getLogger("vsedvr")

PlaneViews = Sequence  # (memoryview R, memoryview G, memoryview B, stride in bytes)

#: Mean |deformable offset| (pixels) above which both references warn: the alignment is lost,
#: which usually means content unlike the training data (e.g. the wrong model for it).
OFFSET_WARNING = 50.0

#: Longest wait at interpreter exit for a frame that is being computed (seconds); see _finish_at_exit.
EXIT_WAIT = 10.0

_engines: weakref.WeakSet[WindowEngine] = weakref.WeakSet()
_exiting = threading.Event()
_native_exiting: ctypes.c_int | None = None  # the plugin's flag, set by its C atexit handler


def _stop_if_exiting() -> None:
    if _exiting.is_set() or (_native_exiting is not None and _native_exiting.value):
        raise RuntimeError("Restore: the process is exiting; frame not computed")


def watch_native_exit(address: int) -> None:
    """Also stop frames when the plugin's exit flag (an ``int`` at ``address``) is set.

    Hosts that embed Python and never finalise it (libvsscript: vsedit and other previewers)
    never run :func:`_finish_at_exit`; the plugin's own C ``atexit`` handler sets this flag
    instead and waits for running frames (native/exit_guard.c).
    """
    global _native_exiting
    if _native_exiting is None or ctypes.addressof(_native_exiting) != address:
        _native_exiting = ctypes.c_int.from_address(address)


@atexit.register
def _finish_at_exit() -> None:
    """Stops new frames and waits (up to EXIT_WAIT) for the ones being computed.

    A script may exit with frames still requested (vsedit closing mid-render, ``get_frame_async``
    never awaited). VapourSynth's threads keep computing while Python tears down modules, and a
    frame in the middle of the network then calls operators whose registrations are already gone
    (seen with the compiled network: failed tracing, or a segfault). atexit runs before that
    teardown; the lock wait releases the GIL, so the running frame can finish (or stop at its next
    feature encoding: a frame of many tiles does not have to run to its end).
    """
    _exiting.set()
    deadline = time.monotonic() + EXIT_WAIT
    for engine in list(_engines):
        # every frame in flight, also one waiting for its download in write() (it would take the GIL
        # back during finalisation: on Python 3.12 such a thread ends the process in terminate())
        engine.in_flight.wait_idle(max(0.0, deadline - time.monotonic()))


#: What cuDNN, cuBLAS and raw CUDA calls say when they cannot allocate. CUBLAS_STATUS_NOT_INITIALIZED
#: is cuBLAS failing to create its handle and workspace, which under memory pressure is what it
#: reports (a broken installation reports it too: the retries then end in the same error).
_OUT_OF_MEMORY_STATUSES = ("CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_NOT_INITIALIZED",
                           "CUDA error: out of memory")


def _out_of_gpu_memory(error: BaseException) -> bool:
    """Whether ``error``, or an error it wraps (torch.compile wraps its backend's), is the GPU out of memory.

    PyTorch's allocator raises OutOfMemoryError; cuDNN's and cuBLAS's own allocations fail as plain
    RuntimeErrors naming their status.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, torch.cuda.OutOfMemoryError) or any(
                status in str(current) for status in _OUT_OF_MEMORY_STATUSES):
            return True
        # what it was raised from (dynamo: ``raise BackendCompilerFailed(...) from e``), not merely during
        current = getattr(current, "inner_exception", None) or current.__cause__
    return False


def device_scope(device: torch.device) -> AbstractContextManager[Any]:
    """``torch.cuda.device(device)`` for a CUDA device, else nothing.

    Scoped, not ``torch.cuda.set_device``: VapourSynth calls filters on its worker threads, and a
    thread's current device is every CUDA filter's on that thread.
    """
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


class OffsetWatch:
    """The largest mean |deformable offset| of a frame, kept on the device: no sync per layer.

    A forward hook on every DCNPack's ``conv_offset`` folds the mean of its offsets into one 0-d
    float32 tensor made once (a running maximum, updated in place). So inside a compiled region the
    hook is a few tensor ops on a tensor whose identity never changes: nothing for dynamo to guard on
    that differs between calls (a Python list that grew per call made a graph per window position).
    The mean is one reduction (an L1 norm, accumulated in float32): no |offset| tensor is made.
    The hooks hold this object, not the engine, so that dropping the engine frees the model at once
    (no engine -> model -> hook -> engine cycle left for the collector); :meth:`stop` removes them.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.peak = torch.zeros((), dtype=torch.float32, device=device)
        self._handles = [module.conv_offset.register_forward_hook(self._record)
                         for module in model.modules() if isinstance(module, DCNPack)]

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def _record(self, module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        offsets = out[:, :out.shape[1] * 2 // 3]
        mean = torch.linalg.vector_norm(offsets, 1, dtype=torch.float32) / offsets.numel()
        self.peak.copy_(torch.maximum(self.peak, mean))

    def reset(self) -> None:
        self.peak.zero_()

    def stop(self) -> None:
        """Removes the hooks (the compiled regions then recompile once, without them)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


#: Times a waiting frame may be passed over (by lower frames) before it goes next.
MAX_PASSES = 8


class FrameGate:
    """Admits at most ``capacity`` frames at once, choosing among the waiting ones by frame number.

    Under fmParallel every VapourSynth thread with a frame waits here at once. Handed over in
    arbitrary order (``threading.Lock``'s), the windows jump about and the feature cache, which keeps
    two windows, loses most of its hits (8 threads, 80 frames: 185 encodings instead of 80). So the
    lowest waiting frame goes next, which walks a forward render in order. A frame passed over
    ``MAX_PASSES`` times goes first, so no order of requests starves one: under ``std.Reverse`` each
    finished frame brings a lower request, and lowest-first alone computed output frame 0 last.
    (Nearest-to-the-last-frame was tried: it cost a forward render at 16 threads 5 encodings of 60
    more, since the first frames arrive in any order.) A thread names its frame with
    :meth:`next_frame` before it acquires; one that names none goes first. With capacity 1 it is a
    lock (``acquire``/``release``, a context manager), which is how the engine's network lock uses it.
    """

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self._cond = threading.Condition(threading.Lock())
        self._held = 0
        self._waiting: list[list[int]] = []  # [frame, arrival, passes]
        self._arrivals = itertools.count()
        self._frame = threading.local()

    def next_frame(self, n: int) -> None:
        """The frame this thread's next :meth:`acquire` is for."""
        self._frame.n = n

    def _choose(self) -> list[int]:
        due = [w for w in self._waiting if w[2] >= MAX_PASSES]
        if due:
            return min(due, key=lambda w: w[1])
        return min(self._waiting, key=lambda w: (w[0], w[1]))

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        entry = [getattr(self._frame, "n", -1), next(self._arrivals), 0]
        self._frame.n = -1
        deadline = None if timeout < 0 else time.monotonic() + timeout
        with self._cond:
            if self._held < self.capacity and not self._waiting:
                self._held += 1
                return True
            if not blocking:
                return False
            self._waiting.append(entry)
            while self._held >= self.capacity or self._choose() is not entry:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._waiting.remove(entry)
                    self._cond.notify_all()  # the next in line may be free to go now
                    return False
                self._cond.wait(remaining)
            self._waiting.remove(entry)
            for other in self._waiting:
                other[2] += 1
            self._held += 1
            if self._held < self.capacity and self._waiting:
                self._cond.notify_all()
            return True

    def release(self) -> None:
        with self._cond:
            self._held -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no frame is admitted (at most ``timeout`` seconds); whether none is."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._held:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def host_buffer(shape: Sequence[int], dtype: torch.dtype, pinned: bool) -> torch.Tensor:
    """An empty host tensor, pinned when asked and possible.

    cudaHostAlloc failing raises "CUDA error: out of memory", the words of a GPU out-of-memory
    error: taken for one, it halved the tiles for good and did nothing for the host's memory. A
    pinned buffer that cannot be had is not a GPU error: the transfer uses pageable memory (it is
    then synchronous), with one warning per process.
    """
    if not pinned:
        return torch.empty(tuple(shape), dtype=dtype)
    try:
        return _allocate_pinned(tuple(shape), dtype)
    except RuntimeError as e:
        global _warned_pinned
        if not _warned_pinned:
            _warned_pinned = True
            log.warning("Restore: pinned host memory could not be allocated (%s); transfers use pageable "
                        "memory from now on (slower; reported once)", str(e).strip().splitlines()[0])
        return torch.empty(tuple(shape), dtype=dtype)


def _allocate_pinned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=True)


_warned_pinned = False


@dataclass(frozen=True)
class Tile:
    """One tile, in input pixels: the part it outputs, and the larger part it reads."""

    x0: int  # output region [x0, x1) x [y0, y1)
    y0: int
    x1: int
    y1: int
    rx0: int  # read region, the output region grown by the overlap and clipped to the frame
    ry0: int
    rx1: int
    ry1: int


def plan_tiles(width: int, height: int, tile: tuple[int, int] | None, overlap: int) -> list[Tile]:
    """Tiles covering a width x height frame; one tile (the whole frame) when ``tile`` is None."""
    if tile is None:
        return [Tile(0, 0, width, height, 0, 0, width, height)]
    tw, th = min(tile[0], width), min(tile[1], height)
    tiles = []
    for y0 in range(0, height, th):
        for x0 in range(0, width, tw):
            x1, y1 = min(x0 + tw, width), min(y0 + th, height)
            tiles.append(Tile(x0, y0, x1, y1, max(x0 - overlap, 0), max(y0 - overlap, 0),
                              min(x1 + overlap, width), min(y1 + overlap, height)))
    return tiles


class FeatureCache:
    """Per-frame encodings, keyed by (frame number, tile), least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[int, int]) -> tuple | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return item

    def put(self, key: tuple[int, int], item: tuple) -> None:
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class PendingFrame:
    """A restored frame on its way to the host (see :meth:`WindowEngine.write`)."""

    frame: int
    host: torch.Tensor  # (3, h, w) on the CPU, in the clip's sample type
    ready: Any  # torch.cuda.Event recorded after the download, or None when computed on the CPU
    offset_peak: torch.Tensor | None  # largest mean |offset| of the frame's DCNs (0-d, host)


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
            tile's window only); see :mod:`vsedvr.memory`, which chooses it with the tiles on CUDA.
        compile: run the network through ``torch.compile`` (compiled at the first frame of each
            tile shape; falls back to the uncompiled network, with a warning, if compiling fails).
        compile_backend: ``torch.compile``'s backend; tests use ``"eager"`` or a counting backend,
            which keeps dynamo's tracing and guards (what decides recompiles) without inductor.
        frames_in_flight: frames between the start of their network (under the lock) and the end of
            :meth:`write` (``in_flight``); the memory plan counts their outputs.
    """

    def __init__(self, model: EDVR, device: torch.device, width: int, height: int,
                 sample_dtype: np.dtype, compute_dtype: torch.dtype,
                 tile: tuple[int, int] | None = None, tile_overlap: int = 0, cached_windows: int = 2,
                 compile: bool = False,
                 compile_backend: str | Callable[..., Any] = "inductor",
                 frames_in_flight: int = FRAMES_IN_FLIGHT) -> None:
        self.model = model
        self.device = device
        self.width = width
        self.height = height
        self.sample_dtype = np.dtype(sample_dtype)
        self.host_dtype = torch.float16 if self.sample_dtype == np.float16 else torch.float32
        self.compute_dtype = compute_dtype
        self.tile_overlap = tile_overlap
        self._set_tiles(tile, cached_windows)
        self._frame_order = FrameGate(1)
        self._lock: Any = self._frame_order  # vsfilter's trace may wrap it
        #: frames between the start of their network and the end of write(): taken under the network's
        #: lock (so the lock alone decides the order of frames), given back by write()
        self.in_flight = FrameGate(frames_in_flight)
        self._warn_lock = threading.Lock()  # write() runs outside self._lock, on several threads
        self._warned_nonfinite = False
        self._offsets = OffsetWatch(model, device)
        self._warned_offsets = False
        _engines.add(self)
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
        self._upload = self._download = self._compute = None
        if device.type == "cuda":
            with torch.cuda.device(device):
                self._upload, self._download = torch.cuda.Stream(), torch.cuda.Stream()
                # the network's own stream: another filter may set a worker thread's current stream,
                # and the cache and the offset watch rely on one stream for every frame
                self._compute = torch.cuda.Stream()
                self._compute.wait_stream(torch.cuda.current_stream())  # the weights, uploaded there
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

    def _offset_peak(self) -> torch.Tensor | None:
        """This frame's largest mean |offset| (a copy: the next frame resets the watch), or None once
        the warning was given (the hooks are removed then, at the start of the next frame)."""
        if not self._offsets.active:
            return None
        return self._offsets.peak.clone()

    def _check_offsets(self, pending: PendingFrame) -> None:
        if pending.offset_peak is None:
            return
        peak = float(pending.offset_peak)
        with self._warn_lock:
            if peak <= OFFSET_WARNING or self._warned_offsets:
                return
            self._warned_offsets = True
            log.warning("Restore: frame %d: the mean deformable offset reaches %.0f pixels (above %.0f): "
                        "alignment has failed, which usually means content unlike the model's training "
                        "data (the wrong model for this content?); reported once per filter",
                        pending.frame, peak, OFFSET_WARNING)

    def frame_tensor(self, views: PlaneViews) -> torch.Tensor:
        """(1, 3, H, W) tensor of one frame's planes on the device, in the compute dtype."""
        *planes, stride = views
        row = stride // self.sample_dtype.itemsize
        # VapourSynth's frame memory is pageable: for CUDA the planes go straight into pinned memory,
        # so that the upload is asynchronous and runs on its own stream beside the queued computation
        chw = host_buffer((3, self.height, self.width), self.host_dtype, pinned=self._upload is not None)
        np.stack([np.frombuffer(p, dtype=self.sample_dtype).reshape(self.height, row)[:, :self.width]
                  for p in planes], out=chw.numpy())
        if not torch.isfinite(chw).all():
            # one NaN would spread through the convolutions into every output frame whose window holds it
            if not self._warned_nonfinite:
                log.warning("Restore: the clip has NaN or infinite samples; they are replaced by 0 (NaN, -inf) "
                            "and 1 (+inf) before restoration (reported once per filter)")
                self._warned_nonfinite = True
            torch.nan_to_num(chw, nan=0.0, posinf=1.0, neginf=0.0, out=chw)
        if self._upload is None:
            return chw.to(self.device, self.compute_dtype)[None]
        compute = self._compute
        with torch.cuda.stream(self._upload):
            on_device = chw.to(self.device, non_blocking=True)
        compute.wait_stream(self._upload)
        on_device.record_stream(compute)  # allocated on the upload stream, used on the compute one
        return on_device.to(self.compute_dtype)[None]

    def _encode(self, n: int, t: int, load_frame: Callable[[], torch.Tensor]) -> tuple:
        """(padded input of tile t, its features) for input frame n, from the cache when present."""
        item = self.cache.get((n, t))
        if item is None:
            _stop_if_exiting()  # a long frame stops between its parts, not only before it starts
            tile = self.tiles[t]
            crop = load_frame()[..., tile.ry0:tile.ry1, tile.rx0:tile.rx1]
            crop = pad_to_multiple(crop, self.model.size_multiple)
            item = (crop, self._frame_features(crop))
            self.cache.put((n, t), item)
        return item

    def _restore_tiles(self, window: Sequence[int], sources: Sequence[PlaneViews]) -> torch.Tensor:
        s = self.model.scale
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
            result = self.model.restore_window([features for _, features in encoded], encoded[self.model.center][0])
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

        On CUDA this returns once the work is queued, without waiting for it.
        """
        self._frame_order.next_frame(window[self.model.center])
        stream = torch.cuda.stream(self._compute) if self._compute is not None else nullcontext()
        with self._lock, torch.inference_mode(), device_scope(self.device), stream:  # any worker thread
            _stop_if_exiting()
            if self._warned_offsets and self._offsets.active:
                self._offsets.stop()  # here, under the lock: write() runs beside the network
            # wait for a frame in flight to be written (the lock holder alone waits here)
            self.in_flight.acquire()
            try:
                return self._restore_in_flight(window, sources)
            except BaseException:
                self.in_flight.release()
                raise

    def _restore_in_flight(self, window: Sequence[int], sources: Sequence[PlaneViews]) -> PendingFrame:
        failures = 0
        while True:
            try:
                self._offsets.reset()
                out = self._run_network(window, sources)
                return self._to_host(window[self.model.center], out[0], self._offset_peak())
            except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
                if not _out_of_gpu_memory(e):
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
            if _out_of_gpu_memory(e):
                # inductor benchmarks kernels on the GPU while compiling: an OOM there is an OOM, retried
                # by restore() with compile kept (a compiler that fails is what disables compile)
                raise
            log.warning("Restore: torch.compile failed (%s: %s); running the network uncompiled",
                        type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "")
            self._frame_features = self.model.frame_features
            self.model.compile_regions(False)
            self.compiled = False
            self.cache.clear()
            self._offsets.reset()
            return self._restore_tiles(window, sources)

    def _to_host(self, n: int, out: torch.Tensor, peak: torch.Tensor | None) -> PendingFrame:
        out = out.to(self.host_dtype)
        if self._download is None:
            return PendingFrame(n, out, None, peak)
        self._download.wait_stream(self._compute)
        with torch.cuda.stream(self._download):
            host = host_buffer(out.shape, out.dtype, pinned=True)
            host.copy_(out, non_blocking=True)
            peak_host = None
            if peak is not None:
                peak_host = host_buffer((), peak.dtype, pinned=True)
                peak_host.copy_(peak, non_blocking=True)
            ready = torch.cuda.Event(blocking=True)  # write() sleeps rather than spins: cores stay free
            ready.record(self._download)
        # keep the allocator from reusing them (freed on the compute stream) before the copies end
        out.record_stream(self._download)
        if peak is not None:
            peak.record_stream(self._download)
        return PendingFrame(n, host, ready, peak_host)

    def _shrink_tiles(self) -> bool:
        """After CUDA ran out of memory twice on one frame: halve the tiles (down to 64 px); False if
        already that small.

        The smaller tiles stay for the rest of the clip: growing them back would risk an OOM (two
        failed attempts) at every try and a compile per new tile shape, and tiled output equals
        untiled output to float rounding (docs/cuda.md), so what it costs is speed only.

        The feature cache then keeps one tile's window only: with every tile's features kept for the
        next windows (five frames' worth, more with the overlap), the cache alone would hold more
        than the untiled frame did. Each input frame's features are then computed once per window
        (up to five times) instead of once: slower, but the memory follows the tile size.
        """
        tw, th = self.tile or (self.width, self.height)
        smaller = (max(tw // 2, 64), max(th // 2, 64))
        if smaller == (tw, th) or (smaller[0] >= self.width and smaller[1] >= self.height):
            return False
        self.tile_overlap = self.tile_overlap or 16
        log.warning("CUDA ran out of memory at tile %s; retrying with tiles of %dx%d (tile_overlap=%d), "
                    "features recomputed for each window", self.tile or "none", smaller[0], smaller[1],
                    self.tile_overlap)
        self._set_tiles(smaller, cached_windows=0)
        return True

    def write(self, pending: PendingFrame, output: PlaneViews) -> None:
        """Copies a restored frame into the output frame's planes (waiting for its download on CUDA);
        the frame is then no longer in flight."""
        try:
            if pending.ready is not None:
                pending.ready.synchronize()
            self._check_offsets(pending)
            *planes, stride = output
            result = pending.host.numpy()
            h, w = result.shape[1:]
            row = stride // self.sample_dtype.itemsize
            for plane, values in zip(planes, result):
                np.frombuffer(plane, dtype=self.sample_dtype).reshape(h, row)[:, :w] = values
        finally:
            self.in_flight.release()
