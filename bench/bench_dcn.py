#!/usr/bin/env python3
"""The modulated deformable convolution alone: vsedvr's fast path against torchvision, on the CPU.

At EDVR-M's L1 shape, 1 x 64 x 180 x 320 with 8 deformable groups, random inputs with offsets of
a few pixels; both run interleaved in this process and the medians are reported, with the largest
difference between their outputs. vsedvr's own kernel is the CPU's (``vsedvr/nets/deform.py``); on
CUDA vsedvr calls torchvision's.

Examples::

    python bench/bench_dcn.py                          # 2 threads, median of 5
    python bench/bench_dcn.py --threads 1 --repeats 9 --json dcn.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import machine_info, machine_line, thread_env


def dcn_micro(threads: int, repeats: int = 5) -> dict[str, Any]:
    """Fast path vs torchvision at EDVR-M's L1 shape: 1 x 64 x 180 x 320, 8 deformable groups."""
    import torch
    from torchvision.ops import deform_conv2d

    from vsedvr.nets.deform import modulated_deform_conv3x3

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    n, c, h, w, groups = 1, 64, 180, 320, 8
    x = torch.randn(n, c, h, w, generator=g)
    offset = torch.randn(n, 18 * groups, h, w, generator=g) * 2
    mask = torch.sigmoid(torch.randn(n, 9 * groups, h, w, generator=g))
    weight = torch.randn(c, c, 3, 3, generator=g) / 24
    bias = torch.randn(c, generator=g)
    times: dict[str, list[float]] = {"torchvision": [], "fast": []}
    with torch.inference_mode():
        reference = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
        fast = modulated_deform_conv3x3(x, offset, mask, weight, bias, groups)
        for _ in range(repeats):  # interleaved
            for name in times:
                start = time.perf_counter()
                if name == "fast":
                    modulated_deform_conv3x3(x, offset, mask, weight, bias, groups)
                else:
                    deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
                times[name].append(time.perf_counter() - start)
    tv, fa = statistics.median(times["torchvision"]), statistics.median(times["fast"])
    return dict(shape=[n, c, h, w], groups=groups, torchvision_ms=tv * 1e3, fast_ms=fa * 1e3, speedup=tv / fa,
                max_abs_diff=(fast - reference).abs().max().item(), times_s=times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved repetitions; medians are reported (default 5)")
    parser.add_argument("--omp-wait-policy", default="passive", metavar="POLICY",
                        help="OMP_WAIT_POLICY (default passive, as bench_restore.py's measured processes); "
                             "'' keeps the environment's")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")
    args = parser.parse_args(argv)
    # before torch is imported: OpenMP and MKL read these once, when they load
    os.environ.update(thread_env(args.threads, args.omp_wait_policy or None))

    info = machine_info(args.threads)
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "(unset)")
    print(machine_line(info), flush=True)
    micro = dcn_micro(args.threads, args.repeats)
    print(f"\nDeformable conv 1x64x180x320, 8 groups (median of {args.repeats}, interleaved): torchvision "
          f"{micro['torchvision_ms']:.0f} ms, fast {micro['fast_ms']:.0f} ms -> {micro['speedup']:.2f}x; "
          f"max |diff| {micro['max_abs_diff']:.1e}", flush=True)
    if args.json:
        info["loadavg_end"] = os.getloadavg()
        args.json.write_text(json.dumps(dict(machine=info, dcn_micro=micro), indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
