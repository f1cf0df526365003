"""Tiles: their geometry, the GPU memory plan that chooses them, and the rule that shrinks them.

Everything about tiles is here: the geometry of a tile plan (:func:`plan_tiles`, used on every
device when ``tile=`` is given), the plan that chooses tiles on CUDA when it is not
(:func:`plan_for_device`: the estimate of one frame's peak memory against the device's free memory
less the other Restores' reservations), and the out-of-memory retry's smaller tiles
(:func:`smaller_tiles`).


Why tiles and not a banded deformable convolution on CUDA: torchvision's CUDA kernel builds a
column buffer of 9 x C x H x W float32 values per call (4.8 GB for EDVR-M, 9.5 GB for EDVR-L at
1080p), but it is not the largest term: the x4 reconstruction holds 2 x 1024 values per input pixel
(the x2 upsampling's 256 channels at twice the size, then 64 channels at four times), 8.5 GB at
1080p in fp16, and the feature cache holds ten frames' pyramids. Only tiles bound all of them, and
tiled output equals whole-frame output to float rounding (overlap 16, bench/tiling_error.py).
vsedvr's banded convolution (nets/deform.py) would bound the first term alone, at a speed on CUDA
nobody has measured.

Tiles are also needed where memory is plenty: a convolution whose input or output holds more than
2^31 - 1 elements in one image is not given to cuDNN (PyTorch splits only the batch dimension to
stay in 32-bit indexing, and a batch of one cannot be split); it falls back to PyTorch's own
im2col kernel, slow and with a column buffer of 9 x C_in x pixels. At 4K the reconstruction's x4
tensors are 64 x 8640 x 15360 = 8.5e9 elements, so a tile may have at most 2^31 / 1024 input
pixels (1080p, 2,073,600, is just below it).

The estimate (:func:`frame_peak_bytes`) adds what lives through a frame (weights, feature cache,
the window's input frames, the output and the frames in flight's copies of it) to the largest of
the three stages' working sets (alignment with the DCN's float32 buffers, fusion, reconstruction), plus 10 % and 256 MiB for cuDNN's
workspaces and the allocator's rounding. It is an estimate: tests/test_cuda.py compares it with
``torch.cuda.max_memory_allocated`` on a GPU. The engine's out-of-memory retry stays the last resort.
"""
from __future__ import annotations

import logging
import math
import threading
import weakref
from dataclasses import dataclass

import torch

from .gpu import free_cuda_memory

log = logging.getLogger("vsedvr")

#: Largest element count PyTorch hands to cuDNN in one image (see the module docstring).
INT32_MAX = 2**31 - 1
#: Channels of EDVR's high-resolution layers (upconv2's output is 4x this before the pixel shuffle).
HR_CHANNELS = 64
#: Share of the free memory a plan may use: room for other filters' allocations and fragmentation.
FREE_FRACTION = 0.8
#: Smallest tile edge (input pixels) of a plan and of the out-of-memory retry.
MIN_TILE = 64
#: Input pixels each tile reads beyond its edges when the user gives none (tiled output then equals
#: whole frames to float rounding: docs/measurements.md#tiling).
DEFAULT_TILE_OVERLAP = 16
#: Frames of one filter between the start of their computation and the end of their copy to the host
#: (one computing, one downloading, one being written; the engine's ``in_flight`` slots): each holds
#: its output on the GPU until its download ends, and a pinned host buffer. Without a bound every
#: VapourSynth thread ran ahead of the GPU with a frame of its own (16 threads: 16 outputs, about
#: 6 GB at 1080p, outside the plan). The plan counts these outputs.
FRAMES_IN_FLIGHT = 3
_MARGIN_FACTOR = 1.1
_MARGIN_BYTES = 256 << 20


@dataclass(frozen=True)
class NetworkSize:
    """The sizes of an EDVR that decide its memory."""

    num_feat: int
    num_frames: int
    deformable_groups: int
    scale: int  # 4, or 1 for hr_in models (their features are at a quarter of the input size)
    parameters: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> NetworkSize:
        pcd = model.pcd_align
        return cls(num_feat=pcd.cas_dcnpack.weight.shape[0], num_frames=model.num_frames,
                   deformable_groups=pcd.cas_dcnpack.deformable_groups, scale=model.scale,
                   parameters=sum(p.numel() for p in model.parameters()))


@dataclass(frozen=True)
class MemoryPlan:
    """Tiles (None: whole frames) and feature-cache size for a frame, with the estimate behind them."""

    tile: tuple[int, int] | None
    cached_windows: int  # see WindowEngine: 2, 1, or 0 (the current tile's window only)
    peak_bytes: int
    budget_bytes: int
    frames_in_flight: int = FRAMES_IN_FLIGHT  # fewer where the outputs would not fit otherwise

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.budget_bytes


def _feature_pixels(net: NetworkSize, width: int, height: int) -> int:
    return width * height if net.scale != 1 else (width // 4) * (height // 4)


def dcn_columns_bytes(net: NetworkSize, width: int, height: int) -> int:
    """torchvision's CUDA column buffer for one deformable convolution (9 x C x pixels, float32)."""
    return 9 * net.num_feat * _feature_pixels(net, width, height) * 4


def largest_tensor_elements(net: NetworkSize, width: int, height: int) -> int:
    """Elements of the largest convolution input/output of one image of width x height (the DCN's
    column buffer is not one: torchvision's kernel indexes it in 64 bits)."""
    pixels = _feature_pixels(net, width, height)
    return max(4 * HR_CHANNELS * 4 * pixels, net.num_frames * net.num_feat * pixels)


def frame_peak_bytes(net: NetworkSize, width: int, height: int, read: tuple[int, int], tiles: int,
                     dtype_bytes: int, cached_windows: int, frames_in_flight: int = FRAMES_IN_FLIGHT,
                     graphs: bool = False) -> int:
    """Estimated peak GPU memory (bytes) of one frame of width x height in tiles whose largest read
    region (input pixels, padded) is ``read``; ``dtype_bytes`` of the compute type; with the outputs
    of ``frames_in_flight`` frames waiting for their download; with CUDA graphs' own input and output
    buffers (:mod:`vsedvr.filter.graphs`) when ``graphs``."""
    b, c, t, g = dtype_bytes, net.num_feat, net.num_frames, net.deformable_groups
    fp = _feature_pixels(net, *read)
    entries = cached_windows * t * tiles if cached_windows else t
    # pyramid (1 + 1/4 + 1/16) in the compute type, crop in the clip's (4 bytes at most)
    cache = entries * (int(c * fp * 1.3125) * b + 3 * read[0] * read[1] * 4)
    out_scale = net.scale * net.scale
    # the output in the compute type, its copy in the clip's type (4 bytes at most; none when the same),
    # and the other frames in flight's copies
    outputs = 3 * out_scale * width * height * (b + (4 if b != 4 else 0) + 4 * (frames_in_flight - 1))
    lasting = net.parameters * b + cache + t * 3 * width * height * b + outputs
    if graphs:  # a window of pyramids and crops and a crop (the graphs' inputs), a pyramid and a result
        lasting += ((t + 2) * (int(c * fp * 1.3125) + 3 * read[0] * read[1]) + 3 * out_scale * read[0] * read[1]) * b
    dcn = 9 * c * fp * 4 + c * fp * 4 + ((c + 27 * g) * fp * 4 if b < 4 else 0)  # columns, output, fp32 copies
    align = 2 * t * c * fp * b + (8 * c + 36 * g) * fp * b + dcn
    fusion = 4 * t * c * fp * b + 4 * c * fp * b
    reconstruction = 2 * 4 * HR_CHANNELS * 4 * fp * b + 4 * c * fp * b + 2 * 3 * 16 * fp * b
    return int((lasting + max(align, fusion, reconstruction)) * _MARGIN_FACTOR) + _MARGIN_BYTES


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _candidates(width: int, height: int, overlap: int, multiple: int) -> list[tuple[tuple[int, int] | None,
                                                                                     tuple[int, int], int]]:
    """(tile, largest read region, tile count) from whole frames to MIN_TILE, fewest tiles first."""
    seen, found = set(), []
    for nx in range(1, max(1, math.ceil(width / MIN_TILE)) + 1):
        for ny in range(1, max(1, math.ceil(height / MIN_TILE)) + 1):
            tw = min(width, _ceil_to(math.ceil(width / nx), multiple))
            th = min(height, _ceil_to(math.ceil(height / ny), multiple))
            if (tw, th) in seen or (nx > 1 and tw < MIN_TILE) or (ny > 1 and th < MIN_TILE):
                continue
            seen.add((tw, th))
            count = math.ceil(width / tw) * math.ceil(height / th)
            read = (_ceil_to(min(width, tw + 2 * overlap), multiple), _ceil_to(min(height, th + 2 * overlap), multiple))
            if count == 1:
                found.append((None, (_ceil_to(width, multiple), _ceil_to(height, multiple)), 1))
            else:
                found.append(((tw, th), read, count))
    found.sort(key=lambda c: (c[2], sum(c[1])))
    return found


def plan_memory(net: NetworkSize, width: int, height: int, dtype_bytes: int, free_bytes: int,
                overlap: int = DEFAULT_TILE_OVERLAP, multiple: int = 4, graphs: bool = False) -> MemoryPlan:
    """The fewest tiles (with the largest feature cache) whose estimated peak fits in
    ``FREE_FRACTION`` of ``free_bytes`` and whose tensors stay within 32-bit indexing.

    Whole frames with two windows cached first; then more tiles with the cache of two windows or one
    (each with FRAMES_IN_FLIGHT frames in flight, then with one: a frame's output is not tiled);
    only if no tile size fits that way, the largest tiles that fit with the current tile's window
    cached (features recomputed for each window: slower, smallest). Nothing fits: the smallest tiles,
    with ``fits`` False (the engine's out-of-memory retry is then what remains).
    """
    budget = int(free_bytes * FREE_FRACTION)
    candidates = [c for c in _candidates(width, height, overlap, multiple)
                  if largest_tensor_elements(net, *c[1]) <= INT32_MAX]
    last = None
    for levels in ((2, 1), (0,)):
        for tile, read, count in candidates:
            for cached in levels:
                for in_flight in (FRAMES_IN_FLIGHT, 1):
                    peak = frame_peak_bytes(net, width, height, read, count, dtype_bytes, cached, in_flight,
                                            graphs)
                    last = MemoryPlan(tile, cached, peak, budget, in_flight)
                    if peak <= budget:
                        return last
    assert last is not None, "no tile candidates"
    return last


# One budget per device for the process: every Restore planned from the same free memory, so two
# EDVR-M at 1080p on a 24 GB card each planned for 80 % of it (2 x 15 GiB), and the first OOM shrank
# the tiles of one for good. A filter reserves what its plan will allocate beyond what it already
# holds (its weights); the next plan sees the free memory less the live reservations.
_reservations: dict[str, dict[int, int]] = {}
_reservations_lock = threading.Lock()


def reserved_bytes(device: torch.device | str) -> int:
    """Bytes that the live filters' plans on ``device`` will still allocate."""
    with _reservations_lock:
        return sum(_reservations.get(str(device), {}).values())


def reserve(device: torch.device | str, owner: object, nbytes: int) -> None:
    """Reserves ``nbytes`` on ``device`` for as long as ``owner`` lives."""
    key, token = str(device), id(owner)
    with _reservations_lock:
        _reservations.setdefault(key, {})[token] = max(0, int(nbytes))
    weakref.finalize(owner, _release, key, token)


def _release(key: str, token: int) -> None:
    with _reservations_lock:
        _reservations.get(key, {}).pop(token, None)


@dataclass(frozen=True)
class Tile:
    """One tile, in input pixels: the part it outputs, and the larger part it reads."""

    x0: int  # output region [x0, x1) x [y0, y1)
    y0: int
    x1: int
    y1: int
    rx0: int  # read region: the output region grown by the overlap, slid inward at the frame's edges
    ry0: int
    rx1: int
    ry1: int


def plan_tiles(width: int, height: int, tile: tuple[int, int] | None, overlap: int) -> list[Tile]:
    """Tiles covering a width x height frame; one tile (the whole frame) when ``tile`` is None.

    Every tile reads a region of the same size, the tile grown by ``overlap`` on each side (at most
    the frame): at the frame's edges the region slides inward instead of being clipped, so edge
    tiles read more context, not less, and the network sees one shape per clip (one set of cuDNN
    plans, one compile, one CUDA graph), as fixed-shape engines tile.
    """
    if tile is None:
        return [Tile(0, 0, width, height, 0, 0, width, height)]
    tw, th = min(tile[0], width), min(tile[1], height)
    rw, rh = min(tw + 2 * overlap, width), min(th + 2 * overlap, height)
    tiles = []
    for y0 in range(0, height, th):
        for x0 in range(0, width, tw):
            x1, y1 = min(x0 + tw, width), min(y0 + th, height)
            rx0, ry0 = min(max(x0 - overlap, 0), width - rw), min(max(y0 - overlap, 0), height - rh)
            tiles.append(Tile(x0, y0, x1, y1, rx0, ry0, rx0 + rw, ry0 + rh))
    return tiles


def smaller_tiles(tile: tuple[int, int] | None, width: int, height: int) -> tuple[int, int] | None:
    """The out-of-memory retry's next tiles: halved, down to MIN_TILE; None when they cannot shrink
    (already that small, or the halves would still cover the whole frame)."""
    tw, th = tile or (width, height)
    smaller = (max(tw // 2, MIN_TILE), max(th // 2, MIN_TILE))
    if smaller == (tw, th) or (smaller[0] >= width and smaller[1] >= height):
        return None
    return smaller


@dataclass(frozen=True)
class DevicePlan:
    """What :func:`plan_for_device` decided for one Restore on a CUDA device."""

    tile: tuple[int, int] | None
    tile_overlap: int
    cached_windows: int
    frames_in_flight: int
    reservation: int  # bytes the filter will allocate beyond its weights (see :func:`reserve`)


def tiled_reservation(model: torch.nn.Module, width: int, height: int, tile: tuple[int, int], overlap: int,
                      compute_dtype: torch.dtype, cached_windows: int = 2,
                      frames_in_flight: int = FRAMES_IN_FLIGHT, graphs: bool = False) -> int:
    """Bytes a Restore with these tiles will allocate beyond its weights (the estimate of its peak less
    the weights): what a Restore given ``tile=`` reserves, so that the next planned one sees it."""
    size = NetworkSize.of(model)
    tiles = plan_tiles(width, height, tile, overlap)
    multiple = getattr(model, "size_multiple", 4)
    read = (_ceil_to(tiles[0].rx1 - tiles[0].rx0, multiple), _ceil_to(tiles[0].ry1 - tiles[0].ry0, multiple))
    peak = frame_peak_bytes(size, width, height, read, len(tiles), compute_dtype.itemsize, cached_windows,
                            frames_in_flight, graphs)
    return peak - size.parameters * compute_dtype.itemsize


def plan_for_device(model: torch.nn.Module, device: torch.device, width: int, height: int,
                    compute_dtype: torch.dtype, overlap: int = DEFAULT_TILE_OVERLAP, graphs: bool = False) -> DevicePlan:
    """Tiles, cache and frames in flight for a Restore whose user gave no tile, from the device's free
    memory less what the other live Restores on it have reserved: Restore stays inside the GPU's memory
    before the first out-of-memory error."""
    # the plan takes FREE_FRACTION of what it is given: the others' reservations come out of that share
    free = max(0, free_cuda_memory(device) - int(reserved_bytes(device) / FREE_FRACTION))
    size = NetworkSize.of(model)
    plan = plan_memory(size, width, height, compute_dtype.itemsize, free, overlap, model.size_multiple, graphs)
    reservation = plan.peak_bytes - size.parameters * compute_dtype.itemsize  # the weights are allocated
    if plan.tile is None:
        return DevicePlan(None, 0, plan.cached_windows, plan.frames_in_flight, reservation)
    say = log.info if plan.fits else log.warning
    say("Restore: %dx%d frames computed in tiles of %dx%d (tile_overlap=%d, %d window(s) of features cached): "
        "about %.1f GiB, %.1f GiB of %s free%s; tile=[w, h] chooses them", width, height, plan.tile[0], plan.tile[1],
        overlap, plan.cached_windows, plan.peak_bytes / 2**30, free / 2**30, device,
        "" if plan.fits else " (more than the plan allows: out-of-memory retries may follow)")
    return DevicePlan(plan.tile, overlap, plan.cached_windows, plan.frames_in_flight, reservation)
