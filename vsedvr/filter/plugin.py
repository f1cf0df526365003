"""The Python half of ``core.edvr.Restore``: the module the native plugin imports.

The native plugin (``native/edvr_filter.c``, through ``native/python_bridge.c``) imports
``vsedvr.filter.plugin`` and calls :func:`create` once per ``Restore`` call, and per output frame
``Restorer.process`` (the network) then, once it has allocated the output frame, ``Restorer.write``. Neither lets an exception escape: they return a
message, which the plugin turns into a ``vs.Error`` (create) or a frame error (process).
"""
from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..zoo import MODELS, ModelError, load_model
from . import log
from .engine import PlaneViews, WindowEngine
from .gpu import CHANNELS_LAST_BY_DEFAULT, CUDA_GRAPHS_BY_DEFAULT, switch
from .graphs import graphs_supported
from .options import ArgumentError, parse, tiling
from .shutdown import watch_native_exit
from .tiles import DEFAULT_TILE_OVERLAP, FRAMES_IN_FLIGHT, plan_for_device, reserve, tiled_reservation
from .windows import PADDINGS

__all__ = ["Restorer", "create", "trace", "watch_native_exit"]

#: Debug hook, off (None) by default. Set before a Restore is created, that filter calls
#: ``trace(event, frame)`` on the thread doing it: "compute" when the engine's lock is taken for the
#: frame (its network starts), "computed" when it is released, "write" and "written" around the copy
#: of the result into the output frame. tests/test_filter.py shows the overlap fmParallel gives.
trace: Callable[[str, int], None] | None = None

HALF_TYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Failure:
    """What :func:`create` returns instead of a Restorer when it cannot make one."""

    def __init__(self, error: str) -> None:
        self.error = error


class Restorer:
    """One Restore instance: a model, an engine, and what the plugin reads back."""

    error = None

    def __init__(self, engine: WindowEngine, padding: str, scenechange: bool) -> None:
        self.engine = engine
        # The VapourSynth environment whose script made this filter: frames are computed on the
        # core's worker threads, which have none, and its warnings belong in that core's log
        self.environment = log.current_environment()
        self._trace = trace
        engine.trace = trace
        self.num_frames = engine.model.num_frames
        self.scale = engine.model.scale
        self.padding = padding
        self.padding_index = PADDINGS.index(padding)
        self.scenechange = int(scenechange)
        #: the frame :meth:`process` restored on each VapourSynth thread (by thread id: the plugin takes
        #: the GIL twice, and a thread state, with its threading.local, lives for one), until write()
        self._started: dict[int, Any] = {}

    def process(self, n: int, window: Sequence[int], sources: Sequence[PlaneViews]) -> str | None:
        """Restores frame n (the network's lock, the computation queued); returns None, or the error
        text. The plugin then allocates the output frame and calls :meth:`write` on the same thread:
        a frame waiting for the network holds no output frame (16 threads x 398 MB at 1080p -> 8K
        did before)."""
        try:
            with log.frames_of(self.environment):
                self._started[threading.get_ident()] = self.engine.restore(window, sources)
            return None
        except Exception:  # noqa: BLE001 - every error must reach VapourSynth as a frame error
            return "".join(traceback.format_exc()).rstrip()

    def write(self, n: int, output: PlaneViews) -> str | None:
        """Fills ``output`` with frame n, which :meth:`process` restored on this thread; gives its
        in-flight slot back. Returns None, or the error text."""
        pending = self._started.pop(threading.get_ident(), None)
        if pending is None or pending.frame != n:
            return f"internal error: frame {n} was not restored on this thread before its write"
        try:
            with log.frames_of(self.environment):
                if self._trace is None:
                    self.engine.write(pending, output)
                else:
                    try:
                        self._trace("write", n)
                    finally:  # write() gives the frame's in-flight slot back, also when the hook raised
                        self.engine.write(pending, output)
                    self._trace("written", n)
            return None
        except Exception:  # noqa: BLE001 - every error must reach VapourSynth as a frame error
            return "".join(traceback.format_exc()).rstrip()


def resolve_device(device: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` as a torch device, or ArgumentError."""
    allowed = '"device" must be "auto", "cpu", "cuda" or "cuda:N"'
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ArgumentError(f'"device" is "{device}" but PyTorch sees no CUDA device here; use "cpu" or "auto"')
        index = int(device[5:]) if ":" in device else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ArgumentError(f'"device" is "{device}" but there are {torch.cuda.device_count()} CUDA devices')
        return torch.device("cuda", index)
    raise ArgumentError(f'{allowed}, got "{device}"')


def _create(options: dict[str, Any], width: int, height: int, bits: int, num_frames: int) -> Restorer:
    log.install()  # vsedvr's log records go to the VapourSynth log or stderr, never stdout
    arguments = parse(options)
    device = resolve_device(arguments.device)
    precision = arguments.precision
    if precision in HALF_TYPES and device.type != "cuda":
        raise ArgumentError(f'"precision" {precision} needs a CUDA device (device is "{device}"); '
                            'on the CPU vsedvr computes in fp32 (RGBH clips too)')
    if precision == "bf16" and not _has_bf16(device):
        raise ArgumentError(f'"precision" bf16 needs a GPU with bfloat16 arithmetic (Ampere or newer); '
                            f'{torch.cuda.get_device_name(device)} has none: use "fp16" or "fp32"')

    try:
        with log.stdout_to_stderr():  # downloads and torch may print; stdout may carry the video
            model = load_model(arguments.model, device=device)
    except ModelError as e:
        raise ArgumentError(f'"model": {e}') from None
    padding = arguments.padding
    if padding is None:
        spec = MODELS.get(arguments.model)
        padding = spec.padding if spec is not None else ("replicate" if model.scale == 1 else "reflection_circle")

    tile, tile_overlap = tiling(arguments, model.size_multiple, DEFAULT_TILE_OVERLAP)
    if precision == "auto":  # RGBH asks for speed: fp16 where it is fast (CUDA); fp32 on the CPU
        precision = "fp16" if bits == 16 and device.type == "cuda" else "fp32"
    compute_dtype = HALF_TYPES.get(precision, torch.float32)
    model = model.to(compute_dtype)
    if compute_dtype == torch.bfloat16:
        model.offsets_in_float32()
    _initialise_torch(model, device, compute_dtype)  # first: the plan then sees what the libraries' handles took
    channels_last = switch("VSEDVR_CHANNELS_LAST", CHANNELS_LAST_BY_DEFAULT) and device.type == "cuda"
    cuda_graphs = switch("VSEDVR_CUDA_GRAPHS", CUDA_GRAPHS_BY_DEFAULT)  # the engine says why where it cannot
    plan_graphs = cuda_graphs and graphs_supported(device, compute_dtype) is None
    cached_windows, in_flight, reservation = 2, FRAMES_IN_FLIGHT, 0
    if device.type == "cuda" and tile is None:
        plan = plan_for_device(model, device, width, height, compute_dtype, tile_overlap or DEFAULT_TILE_OVERLAP,
                               plan_graphs)
        tile, tile_overlap, cached_windows = plan.tile, plan.tile_overlap, plan.cached_windows
        in_flight, reservation = plan.frames_in_flight, plan.reservation
    elif device.type == "cuda":  # the user's tiles, taken as given, take their share of the budget too
        reservation = tiled_reservation(model, width, height, tile, tile_overlap, compute_dtype, graphs=plan_graphs)
    engine = WindowEngine(model, device, width, height, np.float16 if bits == 16 else np.float32, compute_dtype,
                          tile=tile, tile_overlap=tile_overlap, cached_windows=cached_windows,
                          compile=arguments.compile, frames_in_flight=in_flight, channels_last=channels_last,
                          cuda_graphs=cuda_graphs)
    if reservation:
        reserve(device, engine, reservation)
    return Restorer(engine, padding, arguments.scenechange)


def _initialise_torch(model: Any, device: torch.device, dtype: torch.dtype) -> None:
    """One tiny window through the network, so that PyTorch's lazily created state exists now.

    What PyTorch and its libraries (oneDNN's primitive cache, cuDNN and cuBLAS handles) create at
    their first use registers its destructor for process exit then. The plugin registers its exit
    guard after this call returns (native/exit_guard.c), and exit handlers run in
    the reverse order of registration: so the guard stops the frames before that state is torn
    down, also when the host exits during the very first frame.
    """
    # large enough for the convolutions to take oneDNN's path (batch-1 3x3 ones need > 20480 values)
    side = max(64, model.size_multiple)
    with torch.inference_mode():
        frame = torch.zeros((1, 3, side, side), device=device, dtype=dtype)
        features = model.frame_features(frame)
        model.restore_window([features] * model.num_frames, frame)


def _has_bf16(device: torch.device) -> bool:
    with torch.cuda.device(device):  # is_bf16_supported asks the current device
        return torch.cuda.is_bf16_supported(including_emulation=False)


def create(options: dict[str, Any], width: int, height: int, bits: int, num_frames: int) -> Restorer | Failure:
    """Called by the plugin for each ``core.edvr.Restore(...)``; never raises."""
    try:
        return _create(options, width, height, bits, num_frames)
    except ArgumentError as e:
        return Failure(str(e))
    except Exception:  # noqa: BLE001 - anything unexpected becomes the create error, traceback included
        return Failure(traceback.format_exc().rstrip())
