"""The Python half of ``core.edvr.Restore``: argument checks and the per-frame call.

The native plugin (``native/edvr_filter.c``, through ``native/python_bridge.c``) calls
:func:`create` once per ``Restore`` call and ``Restorer.process`` once per output frame. Neither lets an exception escape: they return a
message, which the plugin turns into a ``vs.Error`` (create) or a frame error (process).
"""
from __future__ import annotations

import logging
import math
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from . import log
from .engine import PlaneViews, WindowEngine, watch_native_exit
from .memory import (FRAMES_IN_FLIGHT, FREE_FRACTION, NetworkSize, free_cuda_memory, plan_memory, reserve,
                     reserved_bytes)
from .windows import PADDINGS
from .zoo import DEFAULT_MODEL, MODELS, ModelError, load_model

__all__ = ["Restorer", "create", "trace", "watch_native_exit"]

#: Debug hook, off (None) by default. Set before a Restore is created, that filter calls
#: ``trace(event, frame)`` on the thread doing it: "compute" when the engine's lock is taken for the
#: frame (its network starts), "computed" when it is released, "write" and "written" around the copy
#: of the result into the output frame. tests/test_filter.py shows the overlap fmParallel gives.
trace: Callable[[str, int], None] | None = None

#: The parameters of Restore besides clip (the plugin's registration string lists the same).
PARAMETERS = ("model", "device", "padding", "scenechange", "tile", "tile_overlap", "precision", "compile")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
HALF_TYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class ArgumentError(ValueError):
    """A Restore argument is wrong; the message names it and says what is allowed."""


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
        self._traced_frame = threading.local()
        if trace is not None:
            engine._lock = _TracedLock(engine._lock, trace, self._traced_frame)
        self.num_frames = engine.model.num_frames
        self.scale = engine.model.scale
        self.padding = padding
        self.padding_index = PADDINGS.index(padding)
        self.scenechange = int(scenechange)

    def process(self, n: int, window: Sequence[int], sources: Sequence[PlaneViews],
                output: PlaneViews) -> str | None:
        """Fills ``output`` with restored frame n; returns None, or the error text."""
        try:
            with log.frames_of(self.environment):
                # restore() holds the engine's lock; write() waits for the result outside it
                if self._trace is None:
                    self.engine.write(self.engine.restore(window, sources), output)
                else:
                    self._traced_frame.n = n
                    pending = self.engine.restore(window, sources)
                    self._trace("write", n)
                    self.engine.write(pending, output)
                    self._trace("written", n)
            return None
        except Exception:  # noqa: BLE001 - every error must reach VapourSynth as a frame error
            return "".join(traceback.format_exc()).rstrip()


class _TracedLock:
    """The engine's lock, reporting when a traced frame takes and releases it (see ``trace``)."""

    def __init__(self, lock: Any, trace: Callable[[str, int], None], frame: threading.local) -> None:
        self._lock, self._trace, self._frame = lock, trace, frame

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = self._lock.acquire(blocking, timeout)
        if taken and hasattr(self._frame, "n"):
            self._trace("compute", self._frame.n)
        return taken

    def release(self) -> None:
        if hasattr(self._frame, "n"):
            self._trace("computed", self._frame.n)
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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


def _single(options: dict[str, Any], name: str, default: Any) -> Any:
    """The value of a scalar option (the plugin passes numbers as tuples)."""
    value = options.get(name, default)
    if isinstance(value, tuple):
        if len(value) != 1:
            raise ArgumentError(f'"{name}" takes one value, got {len(value)}')
        value = value[0]
    return value


def _create(options: dict[str, Any], width: int, height: int, bits: int, num_frames: int) -> Restorer:
    log.install()  # vsedvr's log records go to the VapourSynth log or stderr, never stdout
    unknown = sorted(set(options) - set(PARAMETERS))
    if unknown:
        raise ArgumentError(f"unknown argument {unknown[0]!r}; Restore takes {', '.join(PARAMETERS)}")
    model_name = _single(options, "model", DEFAULT_MODEL)
    device = resolve_device(_single(options, "device", "auto"))
    padding = _single(options, "padding", None)
    if padding is not None and padding not in PADDINGS:
        raise ArgumentError(f'"padding" must be one of {", ".join(PADDINGS)}, got "{padding}"')
    scenechange = _single(options, "scenechange", 1)
    if scenechange not in (0, 1):
        raise ArgumentError(f'"scenechange" must be 0 or 1 (False or True), got {scenechange}')
    compile_network = _single(options, "compile", 0)
    if compile_network not in (0, 1):
        raise ArgumentError(f'"compile" must be 0 or 1 (False or True), got {compile_network}')
    precision = _single(options, "precision", "auto")
    if precision not in PRECISIONS:
        raise ArgumentError(f'"precision" must be one of {", ".join(PRECISIONS)}, got "{precision}"')
    if precision in HALF_TYPES and device.type != "cuda":
        raise ArgumentError(f'"precision" {precision} needs a CUDA device (device is "{device}"); '
                            'on the CPU vsedvr computes in fp32 (RGBH clips too)')
    if precision == "bf16" and not _has_bf16(device):
        raise ArgumentError(f'"precision" bf16 needs a GPU with bfloat16 arithmetic (Ampere or newer); '
                            f'{torch.cuda.get_device_name(device)} has none: use "fp16" or "fp32"')

    try:
        with log.stdout_to_stderr():  # downloads and torch may print; stdout may carry the video
            model = load_model(model_name, device=device)
    except ModelError as e:
        raise ArgumentError(f'"model": {e}') from None
    if padding is None:
        spec = MODELS.get(model_name)
        padding = spec.padding if spec is not None else ("replicate" if model.scale == 1 else "reflection_circle")

    tile, tile_overlap = _tiling(options, model.size_multiple)
    if precision == "auto":  # RGBH asks for speed: fp16 where it is fast (CUDA); fp32 on the CPU
        precision = "fp16" if bits == 16 and device.type == "cuda" else "fp32"
    compute_dtype = HALF_TYPES.get(precision, torch.float32)
    model = model.to(compute_dtype)
    _initialise_torch(model, device, compute_dtype)  # first: the plan then sees what the libraries' handles took
    cached_windows, in_flight, reservation = 2, FRAMES_IN_FLIGHT, 0
    if device.type == "cuda" and tile is None:
        tile, tile_overlap, cached_windows, in_flight, reservation = _plan_tiles(
            model, device, width, height, compute_dtype, _tile_overlap(options, 16) or 16)
    engine = WindowEngine(model, device, width, height, np.float16 if bits == 16 else np.float32, compute_dtype,
                          tile=tile, tile_overlap=tile_overlap, cached_windows=cached_windows,
                          compile=bool(compile_network), frames_in_flight=in_flight)
    if reservation:
        reserve(device, engine, reservation)
    return Restorer(engine, padding, bool(scenechange))


def _plan_tiles(model: torch.nn.Module, device: torch.device, width: int, height: int, compute_dtype: torch.dtype,
                overlap: int) -> tuple[tuple[int, int] | None, int, int, int, int]:
    """(tile, tile_overlap, cached_windows, frames_in_flight, bytes to reserve) from the device's free
    memory less what the other live Restores on it have planned, when the user gave no tile: Restore
    stays inside the GPU's memory before the first out-of-memory error (vsedvr.memory)."""
    # the plan takes FREE_FRACTION of what it is given: the others' reservations come out of that share
    free = max(0, free_cuda_memory(device) - int(reserved_bytes(device) / FREE_FRACTION))
    size = NetworkSize.of(model)
    plan = plan_memory(size, width, height, compute_dtype.itemsize, free, overlap, model.size_multiple)
    reservation = plan.peak_bytes - size.parameters * compute_dtype.itemsize  # the weights are allocated
    if plan.tile is None:
        return None, 0, plan.cached_windows, plan.frames_in_flight, reservation
    logger = logging.getLogger("vsedvr")
    say = logger.info if plan.fits else logger.warning
    say("Restore: %dx%d frames computed in tiles of %dx%d (tile_overlap=%d, %d window(s) of features cached): "
        "about %.1f GiB, %.1f GiB of %s free%s; tile=[w, h] chooses them", width, height, plan.tile[0], plan.tile[1],
        overlap, plan.cached_windows, plan.peak_bytes / 2**30, free / 2**30, device,
        "" if plan.fits else " (more than the plan allows: out-of-memory retries may follow)")
    return plan.tile, overlap, plan.cached_windows, plan.frames_in_flight, reservation


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


def _whole(name: str, values: Sequence[Any]) -> list[int]:
    """Pixel counts as ints. ``tile`` and ``tile_overlap`` are registered as floats, so that a
    fractional value reaches this check (an int registration would truncate it without a word)."""
    whole = []
    for value in values:
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer() and abs(value) < 2**63):
                raise ArgumentError(f'"{name}" takes whole numbers of input pixels, got {value!r}; '
                                    f'divide with // (e.g. clip.width // 2)')
            value = int(value)
        whole.append(value)
    return whole


def _tile_overlap(options: dict[str, Any], default: int) -> int:
    return _whole("tile_overlap", [_single(options, "tile_overlap", default)])[0]


def _tiling(options: dict[str, Any], multiple: int) -> tuple[tuple[int, int] | None, int]:
    """Checked (tile, tile_overlap): tiles are positive multiples of the model's size multiple."""
    tile = options.get("tile")
    if tile is not None:
        given = _whole("tile", list(tile))
        tile = tuple(given * 2 if len(given) == 1 else given)
        if len(tile) != 2 or any(v <= 0 or v % multiple for v in tile):
            raise ArgumentError(f'"tile" must be [width, height] (or one size for both), positive multiples of '
                                f'{multiple} for this model, got {given}')
    overlap = _tile_overlap(options, 16 if tile is not None else 0)
    if overlap < 0 or overlap % multiple:
        raise ArgumentError(f'"tile_overlap" must be a non-negative multiple of {multiple} (input pixels), '
                            f'got {overlap}')
    return tile, overlap


def create(options: dict[str, Any], width: int, height: int, bits: int, num_frames: int) -> Restorer | Failure:
    """Called by the plugin for each ``core.edvr.Restore(...)``; never raises."""
    try:
        return _create(options, width, height, bits, num_frames)
    except ArgumentError as e:
        return Failure(str(e))
    except Exception:  # noqa: BLE001 - anything unexpected becomes the create error, traceback included
        return Failure(traceback.format_exc().rstrip())
