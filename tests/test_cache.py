"""The feature cache's order of dropping entries, on the orders in which frames reached the network
in real renders at 16 threads on a loaded 2-core machine (the first 16 frames; the rest in order)."""
from __future__ import annotations

from collections.abc import Sequence

import pytest

from vsedvr.filter.cache import FeatureCache
from vsedvr.filter.windows import window_indices

LENGTH, T = 60, 5


def encodings(order: Sequence[int], tiles: int = 1, windows_kept: int = 2) -> int:
    """Input frames encoded (per tile) when the output frames are computed in this order, fed to the
    cache as WindowEngine feeds it: one window at a time, each frame of it looked up, put on a miss."""
    cache = FeatureCache(windows_kept * T * tiles)
    for n in order:
        window = window_indices(n, T, 0, LENGTH - 1)
        cache.start_window(window, n)
        for t in range(tiles):
            for f in window:
                if cache.get((f, t)) is None:
                    cache.put((f, t), ())
    return cache.misses


def burst(first_frames: list[int]) -> list[int]:
    return first_frames + [n for n in range(LENGTH) if n not in first_frames]


# plain LRU encoded 65, 65, 61, 65 frames on the first four (the first was CI's failure at stop 37)
IN_ORDER_ENOUGH = {
    "first to arrive was 9": burst([9, *range(9)]),
    "9 first, 8 after 12": burst([9, *range(8), 10, 11, 12, 8]),
    "15 before 11..14": burst([*range(9), 10, 9, 15, 11, 13, 14, 12]),
    "9 first, 11 after 15": burst([9, *range(9), 10, 12, 13, 14, 15, 11]),
    "forward": list(range(LENGTH)),
    "backward": list(range(LENGTH - 1, -1, -1)),
}


@pytest.mark.parametrize("order", IN_ORDER_ENOUGH.values(), ids=IN_ORDER_ENOUGH.keys())
def test_each_input_frame_is_encoded_once_when_no_frame_falls_far_behind(order: list[int]) -> None:
    assert encodings(order) == LENGTH


def test_each_tile_of_each_frame_is_encoded_once() -> None:
    assert encodings(burst([9, *range(9)]), tiles=4) == 4 * LENGTH


@pytest.mark.parametrize("order, extra", [
    (burst([*range(9), 10, 11, 12, 13, 14, 15, 9]), 1),  # 9 computed after 15: 6 frames behind
    (burst([*range(9), 10, 11, 13, 14, 15, 9, 12]), 2),
    (burst([10, *range(8), 11, 12, 13, 14, 9, 15, 8]), 2),  # 8 after 15: 7 behind
], ids=["9 after 15", "9 and 12 after 15", "10 first, 8 after 15"])
def test_a_frame_far_behind_costs_an_encoding_or_two(order: list[int], extra: int) -> None:
    assert encodings(order) == LENGTH + extra


def test_a_seek_starts_a_new_walk() -> None:
    """vsedit seeking: 0..19, then 40..59, then 20..39 each read in order; frames near a seek point
    are encoded again (their windows cross it), nothing else."""
    order = [*range(20), *range(40, 60), *range(20, 40)]
    assert encodings(order) <= LENGTH + 2 * (T - 1)
