"""Quality of the bundled demo model on held-out content: EDVR vs bicubic vs EDVR fed 5 copies.

The clips are made by ``tools/demo_model_data.py`` from content ``tools/train_demo_model.py`` never trains
on: whole held-out *families* (``HELD_OUT_FAMILIES``: photos, scans, drawings, flat+stripes,
zoneplate; the picture families use only pictures never trained on), moving the way training
clips move (sub-pixel pans in any direction with shake, zoom, rotation, an object moving over the
background in a third of the clips), degraded the REDS way (antialiased bicubic x1/4, 8-bit LR,
no noise). For each clip three reconstructions of the centre frame are compared with its ground
truth:

* ``restored``: the network on the 5-frame window (what ``edvr.Restore`` computes for a frame
  inside a clip);
* ``bicubic``: plain bicubic x4 of the LR centre frame (``F.interpolate``, align_corners=False);
* ``5 copies``: the network fed 5 copies of the centre frame (no temporal information), so
  ``restored - 5 copies`` is what the other four frames add.

PSNR and SSIM follow mmedit's REDS4 convention: RGB, values clamped and rounded to 8 bits, no
border crop (SSIM: 11x11 Gaussian window, sigma 1.5, mean over channels); the table gives
per-clip figures averaged over each family and over all clips.

Usage::

    .venv/bin/python bench/demo_quality.py                      # edvr_demo, 12 clips per family
    .venv/bin/python bench/demo_quality.py --model path/to.pth --clips 4
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
from bench_common import tool_module

FAMILY_LR_SIZE = (24, 40)


#: tools/demo_model_data.py: the held-out clips and the metrics (self-contained: numpy, torch, Pillow).
data = tool_module("demo_model_data")


def measure(model: str = "edvr_demo", *, clips_per_family: int = 12,
            lr_size: tuple[int, int] = FAMILY_LR_SIZE, seed: int = data.EVAL_SEED,
            families: Sequence[str] = data.HELD_OUT_FAMILIES,
            threads: int | None = None) -> dict[str, Any]:
    """PSNR / SSIM of restored, bicubic, 5 copies per held-out family (see ``demo_model_data.evaluate``)."""
    from vsedvr import load_model

    if threads:
        torch.set_num_threads(threads)
    net = load_model(model, progress=False)
    clips = data.family_clips(families, clips_per_family, lr_size, seed)
    return data.evaluate(net, clips)


def table(result: dict[str, Any]) -> str:
    """Per-group and overall PSNR (dB) and SSIM as a text table."""
    head = (f"{'held out':<13} {'restored':>8} {'bicubic':>8} {'5 copies':>8} {'vs bicubic':>10} "
            f"{'vs copies':>9} | {'SSIM rest.':>10} {'bicubic':>7} {'5 copies':>8}")
    lines = [head, "-" * len(head)]
    rows = list(result["per_group"].items()) + [("all", result)]
    for name, r in rows:
        if name == "all":
            lines.append("-" * len(head))
        lines.append(f"{name:<13} {r['restored']:8.2f} {r['bicubic']:8.2f} {r['copies']:8.2f} "
                     f"{r['restored'] - r['bicubic']:+10.2f} {r['restored'] - r['copies']:+9.3f} | "
                     f"{r['restored_ssim']:10.4f} {r['bicubic_ssim']:7.4f} {r['copies_ssim']:8.4f}")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="edvr_demo", help="zoo name or checkpoint path")
    p.add_argument("--clips", type=int, default=None,
                   help="clips per held-out family (default 12)")
    p.add_argument("--lr-size", type=_size, default=FAMILY_LR_SIZE,
                   help=f"LR clip size HxW (default {FAMILY_LR_SIZE[0]}x{FAMILY_LR_SIZE[1]})")
    p.add_argument("--seed", type=int, default=data.EVAL_SEED)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    args = p.parse_args(argv)
    started = time.monotonic()
    size = args.lr_size
    result = measure(args.model, clips_per_family=args.clips or 12, lr_size=size,
                     seed=args.seed, threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.model}: {result['clips']} clips, held-out families, LR {size[0]}x{size[1]} -> x4, "
              f"5 frames, seed {args.seed}; PSNR dB / SSIM, RGB, 8-bit rounded")
        print(table(result))
    print(f"demo_quality: {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
