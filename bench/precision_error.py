#!/usr/bin/env python3
"""How far fp16 / bf16 output is from fp32 output (what ``precision=`` trades for speed).

The whole network is converted, as ``core.edvr.Restore(..., precision="fp16")`` does; the
deformable convolutions compute sampling positions in fp32 (on CUDA the Triton kernel of
``vsedvr/nets/deform_triton.py``, half-precision input and products; elsewhere fp32 throughout). Prints, per model and precision, the PSNR of
the half-precision output against the fp32 output (higher is closer; 8-bit video is
indistinguishable above ~50 dB) and the max absolute difference.

First, why the deformable convolutions compute positions in fp32: one of them on a 1280 px wide
strip, torchvision's fp16 kernel against vsedvr's on the same fp16 inputs (on CUDA the Triton
kernel, on the CPU fp32), both against float64, by x range (the fp16 kernel computes sampling
positions in fp16, which loses their fraction far from x = 0).

Default: the bundled ``edvr_demo`` model and EDVR-M with random weights, on held-out clips
(pictures the demo model never saw, synthetic motion, bicubic x4 down), on CUDA when PyTorch sees
one, else on the CPU (its half-precision kernels are slow, but the numbers are of the same kind).

    python bench/precision_error.py
    python bench/precision_error.py --device cuda --size 180x320
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
from collections.abc import Sequence

import torch

from vsedvr import load_model
from vsedvr.nets import EDVR

from bench_common import tool_module


PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def networks(names: Sequence[str]) -> dict[str, torch.nn.Module]:
    out: dict[str, torch.nn.Module] = {}
    for name in names:
        if name == "edvrm_random":
            torch.manual_seed(0)
            out[name] = EDVR(num_feat=64, deformable_groups=8, num_extract_block=5, num_reconstruct_block=10)
        else:
            out[name] = load_model(name)
    return out


def dcn_error_by_position(device: torch.device, width: int = 1280) -> list[tuple[str, int, int, float, float]]:
    """(kernel, x0, x1, max, mean |error| against float64) for one modulated deformable conv."""
    from torchvision.ops import deform_conv2d

    from vsedvr.nets.deform import deform_conv3x3, use_triton_path

    g = torch.Generator().manual_seed(0)
    c, h = 8, 8
    # content that varies along x, so that where a tap samples matters
    ramp = torch.sin(torch.linspace(0, 200, width, dtype=torch.float64))
    x = ramp.expand(1, c, h, width) + 0.1 * torch.rand(1, c, h, width, generator=g, dtype=torch.float64)
    offset = (torch.rand(1, 18, h, width, generator=g, dtype=torch.float64) - 0.5) * 3
    mask = torch.rand(1, 9, h, width, generator=g, dtype=torch.float64)
    weight = torch.randn(c, c, 3, 3, generator=g, dtype=torch.float64) / 9
    args = [t.half() for t in (x, offset, weight, mask)]  # what a fp16 network hands the DCN
    reference = deform_conv2d(*(t.double() for t in args[:3]), padding=1, mask=args[3].double())
    with torch.inference_mode():  # as in Restore (on the CPU: vsedvr's fast path)
        ours = "vsedvr (Triton)" if use_triton_path(args[0].to(device)) else "vsedvr"
        kernels = {
            "fp16 (torchvision)": deform_conv2d(*(t.to(device) for t in args[:3]), padding=1,
                                                mask=args[3].to(device)),
            ours: deform_conv3x3(*(t.to(device) for t in (args[0], args[1], args[3], args[2])), None, 1),
        }
    rows = []
    for name, out in kernels.items():
        error = (out.cpu().double() - reference).abs()
        for x0, x1 in ((0, 128), (256, 512), (1024, width)):
            rows.append((name, x0, x1, float(error[..., x0:x1].max()), float(error[..., x0:x1].mean())))
    return rows


def measure(models: Sequence[str], device: torch.device, lr_size: tuple[int, int],
            clips_per_image: int) -> list[dict[str, object]]:
    clips = tool_module("demo_model_data").heldout_clips(clips_per_image=clips_per_image, lr_size=lr_size)
    rows = []
    for name, net in networks(models).items():
        net = net.eval().to(device, torch.float32)
        with torch.inference_mode():
            reference = [net(lr[None].to(device)) for _, lr, _ in clips]
            for label, dtype in PRECISIONS.items():
                half = copy.deepcopy(net).to(dtype)  # from the fp32 weights each time, as Restore does
                outputs = [half(lr[None].to(device, dtype)).float() for _, lr, _ in clips]
                scores = [psnr(o, r) for o, r in zip(outputs, reference)]
                rows.append({
                    "model": name, "precision": label, "device": str(device), "clips": len(clips),
                    "psnr_mean": sum(scores) / len(scores), "psnr_min": min(scores),
                    "max_abs_diff": max(float((o - r).abs().max()) for o, r in zip(outputs, reference)),
                })
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="edvr_demo,edvrm_random",
                   help="comma-separated zoo names / checkpoint paths, or edvrm_random (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    p.add_argument("--size", default="32x48", help="LR clip size HxW, multiples of 4 (default %(default)s)")
    p.add_argument("--clips", type=int, default=1, help="clips per held-out picture (default %(default)s)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    h, w = (int(v) for v in args.size.lower().split("x"))
    print(f"device {device}: one deformable conv (8 channels, 8x1280, offsets up to 1.5 px), fp16 inputs; "
          "|error| against float64")
    for name, x0, x1, worst, mean in dcn_error_by_position(device):
        print(f"  {name:<19} x in [{x0:4d}, {x1:4d}): max {worst:.2e}, mean {mean:.2e}")
    rows = measure(args.models.split(","), device, (h, w), args.clips)
    print(f"device {device}, LR clips {h}x{w}, {rows[0]['clips']} held-out clips; PSNR of the "
          "half-precision output against fp32 output")
    print(f"{'model':<16} {'precision':<9} {'PSNR mean':>10} {'PSNR min':>9} {'max |diff|':>11}")
    for r in rows:
        print(f"{r['model']:<16} {r['precision']:<9} {r['psnr_mean']:>10.2f} {r['psnr_min']:>9.2f} "
              f"{r['max_abs_diff']:>11.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
