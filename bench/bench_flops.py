#!/usr/bin/env python3
"""FLOPs per output frame of EDVR: the whole network on a window, and vsedvr's share of it.

The whole network (the reference scripts' way, and b and c of bench_restore.py) runs every window
from its input frames; vsedvr encodes each input frame once (``frame_features``) and runs
``restore_window`` per output frame, so its work per output frame is one frame's features plus one
window. FLOPs are 2 x multiply-adds of the convolutions (``torch.utils.flop_counter.FlopCounterMode``),
the deformable convolutions counted as 2 x the MACs of their weighted sum, 2 * C_out * C_in * 9 * H * W
(the bilinear sampling not counted): docs/edvr-reference.md#cost. bench_restore.py divides its
timings by these counts (GFLOP/s, MFU).

Examples::

    python bench/bench_flops.py                        # EDVR-M and EDVR-L, 180x320
    python bench/bench_flops.py --models edvrm --size 540x960 --json m540.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench_common import MODELS, NUM_FRAMES_T, parse_size


def _deform_conv_flops(input_shape: Any, weight_shape: Any, *args: Any, out_shape: Any = None,
                       **kwargs: Any) -> int:
    """torchvision::deform_conv2d: 2 x MACs of the weighted sum (the bilinear sampling not counted)."""
    n, c_out, h, w = out_shape
    _, c_in_per_group, kh, kw = weight_shape
    return 2 * n * c_out * c_in_per_group * kh * kw * h * w


def count_flops(model: str, height: int, width: int) -> dict[str, float]:
    """GFLOP per output frame: whole network (b, c) and vsedvr's per-frame work (a).

    vsedvr encodes each input frame once (``frame_features``) and runs ``restore_window`` per
    output frame, so its work per output frame is one frame's features plus one window. Conv
    FLOPs are exactly proportional to H x W for sizes that are multiples of 4, so they are counted
    on a smaller frame of the same aspect and scaled (checked on two small sizes).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vsedvr.nets import EDVR
    from vsedvr.nets.deform import fast_path

    custom = {torch.ops.torchvision.deform_conv2d: _deform_conv_flops}  # keyed by overload packet
    net = EDVR(**MODELS[model]).eval()

    def count(h: int, w: int) -> tuple[int, int, int]:
        x = torch.rand(1, NUM_FRAMES_T, 3, h, w)
        with torch.inference_mode(), fast_path(False):
            features = [net.frame_features(x[:, i]) for i in range(NUM_FRAMES_T)]
            totals = []
            for step in (lambda: net(x), lambda: net.frame_features(x[:, 0]),
                         lambda: net.restore_window(features, x[:, 2])):
                with FlopCounterMode(display=False, custom_mapping=custom) as counter:
                    step()
                totals.append(counter.get_total_flops())
        return totals[0], totals[1], totals[2]

    # large enough that no convolution is widened to MIN_STABLE_PIXELS (nets/stable.py) on the CPU
    small = (64, 64 * width // height // 4 * 4 or 64)
    a = count(*small)
    b = count(small[0] * 2, small[1])
    if any(2 * p != q for p, q in zip(a, b)):
        raise RuntimeError(f"FLOPs not proportional to the frame area: {a} vs {b}")
    scale = height * width / (small[0] * small[1])
    full, features, window_ = (v * scale / 1e9 for v in a)
    return dict(full=full, features=features, window=window_, plugin=features + window_)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="edvrm,edvrl", help="comma-separated: edvrm, edvrl (default: both)")
    parser.add_argument("--size", type=parse_size, default=(180, 320), metavar="HxW",
                        help="input frame size, multiples of 4 (default 180x320)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")
    args = parser.parse_args(argv)
    height, width = args.size
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    if height % 4 or width % 4:
        parser.error("--size must be multiples of 4")

    report: dict[str, Any] = dict(size=[height, width], models={})
    print(f"GFLOP per output frame, input {height}x{width} -> {4 * height}x{4 * width}")
    print(f"  {'model':8s} {'whole network':>14s} {'features of 1 frame':>20s} {'1 window':>9s} "
          f"{'vsedvr':>8s} {'saved':>7s}")
    for model in models:
        flops = count_flops(model, height, width)
        report["models"][model] = flops
        print(f"  {model:8s} {flops['full']:14.1f} {flops['features']:20.1f} {flops['window']:9.1f} "
              f"{flops['plugin']:8.1f} {100 * (1 - flops['plugin'] / flops['full']):6.1f}%", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
