"""Quality of the bundled demo model on held-out clips: EDVR vs bicubic vs EDVR fed 5 copies.

The clips come from the pictures ``tools/train_demo.py`` never trains on (``HELD_OUT_IMAGES``:
chelsea, coffee, rocket), with the same synthetic motion and degradation as training (moving
crop window, antialiased bicubic x1/4, 8-bit LR). For each clip three reconstructions of the
centre frame are compared with its ground truth:

* ``restored``: the network on the 5-frame window;
* ``bicubic``: plain bicubic x4 of the LR centre frame (``F.interpolate``, align_corners=False);
* ``5 copies``: the network fed 5 copies of the centre frame (no temporal information).

PSNR is mmedit's REDS4 convention: all three RGB channels, values clamped to [0, 1] and rounded
to 8 bits (x255, round) before the error, no border crop; the table gives per-clip PSNR
averaged over the clips of each picture, and over all clips.

Usage::

    .venv/bin/python bench/demo_quality.py                       # edvr_demo, 8 clips per picture
    .venv/bin/python bench/demo_quality.py --model path/to.pth --clips 4 --lr-size 32x48
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import train_demo  # noqa: E402  (tools/train_demo.py: clip synthesis and metrics; imports torch)
import torch  # noqa: E402


def measure(model: str = "edvr_demo", *, clips_per_image: int = 8, lr_size: tuple[int, int] = (48, 64),
            seed: int = train_demo.EVAL_SEED, images: Sequence[str] = train_demo.HELD_OUT_IMAGES,
            threads: int | None = None) -> dict[str, Any]:
    """PSNRs of restored / bicubic / 5 copies on held-out clips (see :func:`train_demo.evaluate`)."""
    from vsedvr import load_model

    if threads:
        torch.set_num_threads(threads)
    net = load_model(model, progress=False)
    clips = train_demo.heldout_clips(images, clips_per_image, lr_size, seed)
    return train_demo.evaluate(net, clips)


def table(result: dict[str, Any]) -> str:
    """The per-picture and overall PSNRs as a text table."""
    head = f"{'picture':<10} {'restored':>9} {'bicubic':>9} {'5 copies':>9} {'vs bicubic':>11} {'vs copies':>10}"
    lines = [head, "-" * len(head)]
    rows = list(result["per_image"].items()) + [("all", result)]
    for name, r in rows:
        if name == "all":
            lines.append("-" * len(head))
        lines.append(f"{name:<10} {r['restored']:9.2f} {r['bicubic']:9.2f} {r['copies']:9.2f} "
                     f"{r['restored'] - r['bicubic']:+11.2f} {r['restored'] - r['copies']:+10.2f}")
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="edvr_demo", help="zoo name or checkpoint path")
    p.add_argument("--clips", type=int, default=8, help="clips per held-out picture")
    p.add_argument("--lr-size", type=_size, default=(48, 64), help="LR clip size HxW (multiples of 4)")
    p.add_argument("--seed", type=int, default=train_demo.EVAL_SEED)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    args = p.parse_args(argv)
    started = time.monotonic()
    result = measure(args.model, clips_per_image=args.clips, lr_size=args.lr_size, seed=args.seed,
                     threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.model}: {result['clips']} held-out clips ({', '.join(result['per_image'])}), "
              f"LR {args.lr_size[0]}x{args.lr_size[1]} -> x4, 5 frames, seed {args.seed}; "
              "PSNR dB, RGB, 8-bit rounded")
        print(table(result))
    print(f"demo_quality: {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
