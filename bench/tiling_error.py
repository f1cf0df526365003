"""How far tiled output is from whole-frame output, per tile_overlap.

Renders one frame through core.edvr.Restore whole and tiled, and prints the max and mean
absolute difference (output in [0, 1] units) for each overlap. Default: EDVR-M with random
weights in the official layout (no download) and, if installed, the bundled demo model.

    python bench/tiling_error.py --size 128x192 --tile 64 --overlaps 0 8 16 32 48
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import vapoursynth as vs

from bench_common import make_frames, source_clip
from vsedvr.nets import EDVR
from vsedvr.zoo import MODELS


def random_edvrm(folder: Path) -> str:
    torch.manual_seed(0)
    net = EDVR(num_feat=64, deformable_groups=8, num_extract_block=5, num_reconstruct_block=10)
    path = folder / "edvrm_random.pth"
    torch.save({"params": net.state_dict()}, path)
    return str(path)


def planes(frame: vs.VideoFrame) -> np.ndarray:
    return np.stack([np.asarray(frame[p]) for p in range(3)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="128x192", help="input HxW (default 128x192)")
    parser.add_argument("--tile", type=int, default=64, help="square tile size in input pixels (default 64)")
    parser.add_argument("--overlaps", type=int, nargs="+", default=[0, 8, 16, 32, 48])
    parser.add_argument("--model", action="append", help="zoo name or checkpoint (repeatable)")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        models = args.model or [random_edvrm(Path(tmp))] + (["edvr_demo"] if "edvr_demo" in MODELS else [])
        clip = source_clip(make_frames(5, h, w, seed=7))
        print(f"input {h}x{w}, tile {args.tile}x{args.tile}, frame 2 of 5")
        print(f"{'model':<24} {'overlap':>7} {'max |diff|':>11} {'mean |diff|':>12}")
        for model in models:
            whole = planes(vs.core.edvr.Restore(clip, model=model).get_frame(2))
            for overlap in args.overlaps:
                tiled = vs.core.edvr.Restore(clip, model=model, tile=[args.tile, args.tile], tile_overlap=overlap)
                diff = np.abs(planes(tiled.get_frame(2)) - whole)
                print(f"{Path(model).name:<24} {overlap:>7} {diff.max():>11.2e} {diff.mean():>12.2e}", flush=True)


if __name__ == "__main__":
    main()
