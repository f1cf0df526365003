"""Which input frames make up the temporal window of each output frame.

The plugin applies these rules natively (native/edvr_filter.c); this is the same rule in Python,
for scripts that run the network themselves and for checking the plugin.
"""
from __future__ import annotations

import typing
from typing import Literal

#: Temporal padding modes (``padding``), in the order the native plugin numbers them.
Padding = Literal["reflection_circle", "replicate", "reflection", "circle"]
PADDINGS: tuple[str, ...] = typing.get_args(Padding)


def window_indices(center: int, num_frames: int, first: int, last: int,
                   padding: str = "reflection_circle") -> list[int]:
    """Frame numbers of the window around ``center`` in the sequence ``first..last``.

    The reference test-time rules (mmediting ``GenerateFrameIndiceswithPadding``, BasicSR
    ``generate_frame_indices``) with the clip's ends at ``first`` and ``last`` (a scene's ends
    when scene cuts are honoured). Where a rule still lands outside the sequence, which happens
    only for sequences shorter than the window, the nearest end frame is used.

    Args:
        center: the output frame's number, ``first <= center <= last``.
        num_frames: window length T (odd).
        first, last: the sequence's first and last frame numbers.
        padding: one of :data:`PADDINGS`.
    """
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    half = num_frames // 2
    c = center - first  # the rules are written for a sequence starting at 0
    m = last - first
    indices = []
    for i in range(c - half, c + half + 1):
        if i < 0:
            j = {"reflection_circle": c + half - i, "replicate": 0, "reflection": -i,
                 "circle": num_frames + i}[padding]
        elif i > m:
            j = {"reflection_circle": (c - half) - (i - m), "replicate": m, "reflection": 2 * m - i,
                 "circle": i - num_frames}[padding]
        else:
            j = i
        indices.append(first + min(max(j, 0), m))
    return indices
