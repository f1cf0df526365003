#!/usr/bin/env python3
"""What the thread-count-stable CPU operations (vsedvr/nets/stable.py) cost: one window through the
network with them and with PyTorch's own operations (patched back in), interleaved in one process.

    python bench/determinism_cost.py                      # edvr_demo and EDVR-M, 96x160, 2 threads
    python bench/determinism_cost.py --size 180x320 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vsedvr.nets import EDVR, edvr, stable
from vsedvr.zoo import load_model


@contextmanager
def pytorch_operations() -> Iterator[None]:
    """PyTorch's own (thread-count dependent) operations in place of nets/stable.py's."""
    saved = (stable.StableConv2d.forward, edvr.upsample_bilinear, edvr.channel_dot, edvr.stable_sigmoid)
    stable.StableConv2d.forward = nn.Conv2d.forward
    edvr.upsample_bilinear = lambda x, f: F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
    edvr.channel_dot = lambda a, b, dim: (a * b).sum(dim=dim)
    edvr.stable_sigmoid = torch.sigmoid
    try:
        yield
    finally:
        (stable.StableConv2d.forward, edvr.upsample_bilinear, edvr.channel_dot, edvr.stable_sigmoid) = saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="96x160", help="LR HxW (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = {"edvr_demo": load_model("edvr_demo"), "edvrm": EDVR()}
    print(f"one window, LR {height}x{width}, {args.threads} threads, median of {args.repeats} (interleaved)")
    for name, net in nets.items():
        net.eval()
        x = torch.rand(1, 5, 3, height, width)
        times: dict[str, list[float]] = {"stable": [], "pytorch": []}
        with torch.inference_mode():
            net(x)
            for _ in range(args.repeats):
                for label in ("stable", "pytorch"):
                    with (pytorch_operations() if label == "pytorch" else nullcontext()):
                        start = time.perf_counter()
                        net(x)
                        times[label].append(time.perf_counter() - start)
        s, p = statistics.median(times["stable"]), statistics.median(times["pytorch"])
        print(f"  {name:10s} stable {s * 1e3:8.1f} ms   PyTorch's {p * 1e3:8.1f} ms   stable/PyTorch {s / p:.3f}")
    return 0


from contextlib import nullcontext  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
