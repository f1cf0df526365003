"""Tiles and the CUDA memory plan (vsedvr.filter.tiles), as pure arithmetic: 1080p and 4K, EDVR-M and
EDVR-L, fp16 and fp32, for the free memory of a few GPUs. tests/test_cuda.py compares the estimate
with a real GPU's."""
from __future__ import annotations

import math

import pytest

from vsedvr.filter.tiles import (INT32_MAX, MIN_TILE, NetworkSize, dcn_columns_bytes, frame_peak_bytes,
                                 largest_tensor_elements, plan_memory, plan_tiles, smaller_tiles)
from vsedvr.nets import EDVR

GiB = 2**30
EDVR_M = NetworkSize.of(EDVR())
EDVR_L = NetworkSize.of(EDVR(num_feat=128, num_reconstruct_block=40))
SIZES = {"1080p": (1920, 1080), "4K": (3840, 2160)}


def test_network_sizes() -> None:
    assert (EDVR_M.num_feat, EDVR_M.num_frames, EDVR_M.deformable_groups, EDVR_M.scale) == (64, 5, 8, 4)
    assert EDVR_L.num_feat == 128 and 20e6 < EDVR_L.parameters < 21e6


def test_torchvision_column_buffer_at_1080p() -> None:
    """The numbers of issue 17: 9 x C x H x W float32 values per deformable convolution."""
    assert dcn_columns_bytes(EDVR_M, 1920, 1080) == 9 * 64 * 1920 * 1080 * 4  # 4.78 GB
    assert round(dcn_columns_bytes(EDVR_L, 1920, 1080) / 1e9, 2) == 9.56


def test_4k_frames_exceed_32_bit_indexing_and_1080p_does_not() -> None:
    """The x4 reconstruction's tensors: 1024 values per input pixel. cuDNN gets a convolution only
    below 2^31 elements per image."""
    for net in (EDVR_M, EDVR_L):
        assert largest_tensor_elements(net, 1920, 1080) <= INT32_MAX
        assert largest_tensor_elements(net, 3840, 2160) > INT32_MAX


def covers(plan_tile: tuple[int, int] | None, width: int, height: int) -> bool:
    tiles = plan_tiles(width, height, plan_tile, 16)
    return sum((t.x1 - t.x0) * (t.y1 - t.y0) for t in tiles) == width * height


@pytest.mark.parametrize("net", [EDVR_M, EDVR_L], ids=["edvrm", "edvrl"])
@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
@pytest.mark.parametrize("dtype_bytes", [2, 4], ids=["fp16", "fp32"])
@pytest.mark.parametrize("free_gib", [139, 80, 24, 8])
def test_plan_fits_the_free_memory_and_32_bit_indexing(net: NetworkSize, size: str, dtype_bytes: int,
                                                        free_gib: int) -> None:
    width, height = SIZES[size]
    plan = plan_memory(net, width, height, dtype_bytes, free_gib * GiB)
    assert plan.fits and plan.peak_bytes <= 0.8 * free_gib * GiB
    read = (width, height) if plan.tile is None else (min(width, plan.tile[0] + 32), min(height, plan.tile[1] + 32))
    assert largest_tensor_elements(net, *read) <= INT32_MAX
    count = len(plan_tiles(width, height, plan.tile, 16))
    assert plan.peak_bytes == frame_peak_bytes(net, width, height, (math.ceil(read[0] / 4) * 4,
                                               math.ceil(read[1] / 4) * 4), count, dtype_bytes, plan.cached_windows,
                                               plan.frames_in_flight)
    assert covers(plan.tile, width, height)
    if size == "4K":
        assert plan.tile is not None  # whatever the memory: 32-bit indexing
    elif plan.tile is not None:
        # whole frames, or any plan with fewer tiles and as much cache, would not have fitted
        assert frame_peak_bytes(net, width, height, (width, height), 1, dtype_bytes, 2) > plan.budget_bytes


def test_plan_at_1080p_on_an_h200_is_whole_frames() -> None:
    plan = plan_memory(EDVR_M, 1920, 1080, 2, 139 * GiB)
    assert plan.tile is None and plan.cached_windows == 2
    assert 10 * GiB < plan.peak_bytes < 30 * GiB


def test_less_free_memory_never_means_larger_tiles() -> None:
    previous = None
    for free_gib in (139, 64, 32, 16, 8, 4, 2):
        plan = plan_memory(EDVR_L, 3840, 2160, 2, free_gib * GiB)
        area = 3840 * 2160 if plan.tile is None else plan.tile[0] * plan.tile[1]
        assert previous is None or area <= previous[0] or plan.cached_windows < previous[1], (free_gib, plan)
        previous = (area, plan.cached_windows)


def test_no_plan_fits_in_too_little_memory() -> None:
    plan = plan_memory(EDVR_L, 3840, 2160, 4, GiB // 2)
    assert not plan.fits and plan.tile is not None and plan.cached_windows == 0


def test_deblur_models_plan_in_multiples_of_16() -> None:
    net = NetworkSize.of(EDVR(num_feat=8, hr_in=True, with_predeblur=True, num_extract_block=1,
                              num_reconstruct_block=1, deformable_groups=2))
    plan = plan_memory(net, 1920, 1080, 2, GiB, multiple=16)
    assert plan.tile is not None
    assert all(t % 16 == 0 or t == whole for t, whole in zip(plan.tile, (1920, 1080))), plan.tile


def test_out_of_memory_retry_halves_tiles_down_to_the_smallest() -> None:
    assert smaller_tiles(None, 1920, 1080) == (960, 540)
    assert smaller_tiles((960, 540), 1920, 1080) == (480, 270)
    assert smaller_tiles((100, 64), 1920, 1080) == (MIN_TILE, MIN_TILE)
    assert smaller_tiles((MIN_TILE, MIN_TILE), 1920, 1080) is None
    assert smaller_tiles(None, 64, 48) is None  # tiles of MIN_TILE would cover the whole frame
    assert len(plan_tiles(200, 100, smaller_tiles(None, 200, 100), 16)) == 4


@pytest.mark.parametrize(("width", "height", "tile", "overlap"), [
    (1920, 1080, (768, 512), 16), (3840, 2160, (768, 2160), 16), (200, 100, (64, 64), 16), (64, 48, (32, 24), 32),
    (130, 70, (64, 64), 0)])
def test_every_tile_reads_a_region_of_one_size(width: int, height: int, tile: tuple[int, int], overlap: int) -> None:
    """Issue 31, item 5: at the frame's edges the read region slides inward instead of being clipped,
    so every tile reads the same shape (one set of cuDNN plans, one compile, one CUDA graph per clip),
    and each reads its output region with at least ``overlap`` pixels around it where the frame has them."""
    tiles = plan_tiles(width, height, tile, overlap)
    shapes = {(t.rx1 - t.rx0, t.ry1 - t.ry0) for t in tiles}
    assert shapes == {(min(tile[0] + 2 * overlap, width), min(tile[1] + 2 * overlap, height))}, shapes
    assert sum((t.x1 - t.x0) * (t.y1 - t.y0) for t in tiles) == width * height
    for t in tiles:
        assert 0 <= t.rx0 and t.rx1 <= width and 0 <= t.ry0 and t.ry1 <= height
        assert t.rx0 <= max(t.x0 - overlap, 0) and t.rx1 >= min(t.x1 + overlap, width), t
        assert t.ry0 <= max(t.y0 - overlap, 0) and t.ry1 >= min(t.y1 + overlap, height), t


def test_a_restore_given_tiles_reserves_its_share() -> None:
    """Issue 31, item 5: a Restore given ``tile=`` reserved nothing, so the next planned Restore on the
    device planned as if alone. Its reservation is the estimate for its tiles, less its weights."""
    import torch

    from vsedvr.filter.tiles import tiled_reservation

    model = EDVR()
    reservation = tiled_reservation(model, 1920, 1080, (960, 544), 16, torch.float16)
    weights = EDVR_M.parameters * 2
    assert reservation == frame_peak_bytes(EDVR_M, 1920, 1080, (992, 576), 4, 2, 2) - weights
    whole = frame_peak_bytes(EDVR_M, 1920, 1080, (1920, 1080), 1, 2, 2) - weights
    assert 2 * GiB < reservation < whole
