"""Deterministic test clips, importable by the tests and by the .vpy scripts they render."""
from __future__ import annotations

import numpy as np
import vapoursynth as vs


def moving_pattern(width: int, height: int, length: int, fmt: int = vs.RGBS, seed: int = 0) -> vs.VideoNode:
    """Smooth random texture that moves a little every frame, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    base = rng.random((3, height + length, width + 2 * length), dtype=np.float32)
    base = (base + np.roll(base, 1, axis=1) + np.roll(base, 1, axis=2)) / 3

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = base[p, n:n + height, 2 * n:2 * n + width]
        return out

    blank = vs.core.std.BlankClip(width=width, height=height, length=length, format=vs.RGBS,
                                  fpsnum=24, fpsden=1)
    clip = vs.core.std.ModifyFrame(blank, blank, fill)
    return clip if fmt == vs.RGBS else vs.core.resize.Point(clip, format=fmt)
