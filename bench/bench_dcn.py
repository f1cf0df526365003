#!/usr/bin/env python3
"""The modulated deformable convolution alone: vsedvr's kernels against torchvision's.

CPU (the default): vsedvr's fast path (``vsedvr/nets/deform.py``) against torchvision at EDVR-M's L1
shape, 1 x 64 x 180 x 320 with 8 deformable groups, random inputs with offsets of a few pixels;
both run interleaved in this process and the medians are reported, with the largest difference
between their outputs.

CUDA (``--device cuda``): the Triton kernel (``vsedvr/nets/deform_triton.py``) in float16 and
bfloat16 on NCHW input as the network passes it (converted to channels-last inside, the default),
gathered from NCHW as it is, and on channels-last input, against torchvision in float32 (what precision="fp32" runs) and
torchvision on float16 input upcast to float32 (what float16 ran before the Triton kernel), at
the three DCN shapes of EDVR at ``--size`` input (L1, which the cascade shares, L2 and L3), with
smooth offsets of a few pixels as a sliced 216-channel tensor, as the network passes them. Times
are CUDA-event medians of steady-state calls (after warm-up, alternating two input sets); the
per-frame figure is the 20 calls of one output frame, 5 x (L3 + L2 + 2 L1). Also: the error of
each Triton variant against torchvision in float32 on the same inputs, and the bandwidth the
Triton kernel reaches counting each input and output once. ``--sweep`` adds block-size variants
of the float16 kernel at L1. ``--device cpu --triton`` runs the same comparison through Triton's
interpreter at a tiny size, to check the script without a GPU.

Examples::

    python bench/bench_dcn.py                          # CPU: 2 threads, median of 5
    python bench/bench_dcn.py --threads 1 --repeats 9 --json dcn.json
    python bench/bench_dcn.py --device cuda --size 540x960 --sweep --json dcn-cuda.json
    python bench/bench_dcn.py --device cpu --triton --size 12x16 --channels 16 --repeats 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from bench_common import machine_info, machine_line, parse_size, thread_env


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


#: Tuning variants of the float16 kernel at L1 (``--sweep``): block_p, k_step, num_warps, num_stages.
SWEEP = [(32, 32, 4, 2), (64, 64, 4, 2), (128, 32, 4, 2), (128, 64, 8, 2), (64, 32, 8, 3), (128, 32, 8, 3)]


def _dcn_inputs(h: int, w: int, channels: int, groups: int, seed: int, device: str, dtype: Any) -> dict[str, Any]:
    """Inputs of one DCN at h x w in ``dtype``: smooth offsets of a few pixels plus noise and a sigmoid
    mask, both channel slices of one (1, 27 G, h, w) tensor (as DCNPack passes them); O(1) outputs."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator(device).manual_seed(seed)  # drawn on the device: seconds less at 540x960

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=g, device=device)

    coarse = randn(1, 18 * groups, max(1, h // 16), max(1, w // 16)) * 4
    offset_and_mask = torch.cat([
        F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) + randn(1, 18 * groups, h, w) * 0.5,
        torch.sigmoid(randn(1, 9 * groups, h, w) * 2)], dim=1).to(dtype)
    return dict(x=randn(1, channels, h, w).to(dtype),
                offset=offset_and_mask[:, :18 * groups], mask=offset_and_mask[:, 18 * groups:],
                weight=(randn(channels, channels, 3, 3) / (channels * 9) ** 0.5).to(dtype),
                bias=randn(channels).to(dtype))


def _event_times(fn: Callable[[int], Any], repeats: int, cuda: bool, warmup: int = 3) -> list[float]:
    """Milliseconds of ``fn(i)`` for i in range(repeats), after ``warmup`` calls: CUDA events on the
    current stream, or the host clock."""
    import torch

    for i in range(warmup):
        fn(i)
    if not cuda:
        times = []
        for i in range(repeats):
            start = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - start) * 1e3)
        return times
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for i, (start, end) in enumerate(events):
        start.record()
        fn(i)
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def dcn_triton(device: str, size: tuple[int, int], channels: int, groups: int, repeats: int,
               sweep: bool) -> dict[str, Any]:
    """The Triton kernel against torchvision at the three DCN shapes of EDVR at ``size`` input."""
    import torch
    from torchvision.ops import deform_conv2d

    from vsedvr.nets.deform import deform_conv3x3, fast_path
    from vsedvr.nets.deform_triton import deform_conv3x3_triton

    cuda = device == "cuda"
    h, w = size
    levels = {"L1": (h, w), "L2": ((h + 1) // 2, (w + 1) // 2), "L3": ((h + 3) // 4, (w + 3) // 4)}
    calls_per_frame = {"L1": 10, "L2": 5, "L3": 5}  # 5 frames x (L1 + cascade, L2, L3)
    half_types = {"fp16": torch.float16, "bf16": torch.bfloat16}
    if cuda and not torch.cuda.is_bf16_supported():
        del half_types["bf16"]
    results: dict[str, Any] = {}
    for level, (lh, lw) in levels.items():
        sets = [_dcn_inputs(lh, lw, channels, groups, seed, device, torch.float32) for seed in (1, 2)]
        typed = {tag: [_dcn_inputs(lh, lw, channels, groups, seed, device, dtype) for seed in (1, 2)]
                 for tag, dtype in half_types.items()}
        # the reference of each type: torchvision in float32 on the same (rounded) inputs
        references = {tag: deform_conv2d(*(a[k].float() for k in ("x", "offset", "weight", "bias")), padding=1,
                                         mask=a["mask"].float()).double() for tag, (a, _) in typed.items()}
        variants: dict[str, Callable[[int], Any]] = {
            "torchvision fp32": lambda i: deform_conv2d(sets[i % 2]["x"], sets[i % 2]["offset"], sets[i % 2]["weight"],
                                                        sets[i % 2]["bias"], padding=1, mask=sets[i % 2]["mask"]),
        }

        def upcast(i: int) -> Any:
            a = typed["fp16"][i % 2]
            with fast_path(False):
                return deform_conv3x3(a["x"], a["offset"], a["mask"], a["weight"], a["bias"], groups)

        variants["torchvision fp16 (upcast)"] = upcast

        def triton_variant(tag: str, channels_last: bool = False, **tuning: Any) -> Callable[[int], Any]:
            xs = [a["x"].contiguous(memory_format=torch.channels_last) if channels_last else a["x"]
                  for a in typed[tag]]

            def run(i: int) -> Any:
                a = typed[tag][i % 2]
                return deform_conv3x3_triton(xs[i % 2], a["offset"], a["mask"], a["weight"], a["bias"], groups,
                                             **tuning)
            return run

        for tag in half_types:
            variants[f"triton {tag}"] = triton_variant(tag)  # as the network calls it: NCHW, converted
            variants[f"triton {tag} NCHW gather"] = triton_variant(tag, gather_channels_last=False)
            variants[f"triton {tag} channels-last input"] = triton_variant(tag, channels_last=True)
        if sweep and level == "L1":
            for bp, ks, nw, ns in SWEEP:
                variants[f"triton fp16 p{bp} k{ks} w{nw} s{ns}"] = triton_variant(
                    "fp16", block_p=bp, k_step=ks, num_warps=nw, num_stages=ns)
        row: dict[str, Any] = {"shape": [1, channels, lh, lw], "groups": groups, "variants": {}}
        with torch.inference_mode():
            for name, fn in variants.items():
                times = _event_times(fn, repeats, cuda, warmup=3 if cuda else 1)
                entry: dict[str, Any] = {"median_ms": statistics.median(times), "times_ms": times}
                if name.startswith("triton"):
                    out = fn(0).double()
                    reference = references[name.split()[1]]
                    entry["rel_error"] = ((out - reference).norm() / reference.norm()).item()
                    entry["max_abs_error"] = (out - reference).abs().max().item()
                row["variants"][name] = entry
        p = lh * lw
        row["min_bytes_fp16"] = 2 * p * (2 * channels + 27 * groups)  # x, offsets, mask read once, out written once
        row["gflop"] = 2 * channels * channels * 9 * p / 1e9
        results[level] = row
        del sets, typed, variants, references
        if cuda:
            torch.cuda.empty_cache()
    names = list(results["L1"]["variants"])
    per_frame = {name: sum(calls_per_frame[lv] * results[lv]["variants"][name]["median_ms"]
                           for lv in levels if name in results[lv]["variants"]) for name in names
                 if all(name in results[lv]["variants"] for lv in levels)}
    return dict(size=list(size), channels=channels, groups=groups, repeats=repeats, levels=results,
                calls_per_frame=calls_per_frame, per_frame_ms=per_frame)


def _print_triton(result: dict[str, Any]) -> None:
    h, w = result["size"]
    print(f"\nDeformable conv, C={result['channels']}, {result['groups']} groups, at {h}x{w} input "
          f"(median of {result['repeats']} steady-state calls):")
    print(f"{'variant':<38}" + "".join(f"{lv + ' ' + 'x'.join(map(str, r['shape'][2:])):>16}"
                                       for lv, r in result["levels"].items()) + f"{'per frame':>12}  error vs fp32")
    base = result["per_frame_ms"].get("torchvision fp32")
    for name in result["levels"]["L1"]["variants"]:
        cells = "".join(f"{r['variants'][name]['median_ms']:>13.3f} ms" if name in r["variants"] else f"{'':>16}"
                        for r in result["levels"].values())
        frame = result["per_frame_ms"].get(name)
        frame_text = f"{frame:>9.2f} ms" if frame is not None else f"{'':>12}"
        entry = result["levels"]["L1"]["variants"][name]
        error = f"  rel {entry['rel_error']:.1e}, max {entry['max_abs_error']:.1e}" if "rel_error" in entry else ""
        print(f"{name:<38}{cells}{frame_text}{error}")
    l1 = result["levels"]["L1"]
    fast = l1["variants"]["triton fp16"]["median_ms"]
    print(f"\ntriton fp16 at L1: {l1['min_bytes_fp16'] / fast / 1e6:.3g} GB/s counting each input and output once "
          f"({l1['min_bytes_fp16'] / 1e6:.3g} MB), {l1['gflop'] / fast:.3g} TFLOP/s of products")
    if base:
        for name in ("torchvision fp16 (upcast)", "triton fp16", "triton fp16 NCHW gather", "triton bf16"):
            if name in result["per_frame_ms"]:
                print(f"per output frame (20 calls): {name}: {result['per_frame_ms'][name]:.2f} ms, "
                      f"{base / result['per_frame_ms'][name]:.2f}x torchvision fp32 ({base:.2f} ms)")


def compile_report(arch: int, dtype: str, channels_last: bool, channels: int = 64, groups: int = 8,
                   block_p: int | None = None, k_step: int | None = None, num_warps: int = 4,
                   num_stages: int = 2) -> dict[str, Any]:
    """The Triton kernel compiled for compute capability ``arch`` without a GPU (Triton's own
    compiler and the ptxas it ships): registers, spills, shared memory, which matrix instructions
    and which copy widths, for pointers aligned and strides specialised as at 540x960."""
    import inspect
    import re
    import subprocess
    from collections import Counter

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from vsedvr.nets import deform_triton as dt

    fn = dt._dcn3x3_kernel
    params = list(inspect.signature(fn.fn).parameters)
    plan = dt._Plan(channels, channels, groups, k_step or dt.DEFAULT_K_STEP)
    constants: dict[str, Any] = dict(
        SAMPLES=plan.samples, SAMPLES_PAD=plan.samples_pad, CG=plan.cg, CG_PAD=plan.cg_pad, STEP=plan.step,
        BLOCK_P=block_p or dt.DEFAULT_BLOCK_P, BLOCK_CO=plan.block_co, CO_PAD=plan.co_pad, HAS_MASK=True,
        HAS_BIAS=True, DOT_FP32=False)
    # strides that are 1 are specialised by Triton's launcher, as at run time
    for unit in (["sxc"] if channels_last else ["sxw"]) + ["sop", "smp", "syp"]:
        constants[unit] = 1
    signature = {p: ("constexpr" if p in constants else f"*{dtype}" if p.endswith("_ptr") else "i32") for p in params}
    aligned = {(i,): [["tt.divisibility", 16]] for i, p in enumerate(params)
               if signature[p] != "constexpr" and p not in ("H", "C_OUT")}  # 540 is not a multiple of 16
    source = ASTSource(fn=fn, signature=signature, constexprs={p: constants[p] for p in constants}, attrs=aligned)
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    ptx = kernel.asm["ptx"]
    report: dict[str, Any] = dict(triton=triton.__version__, arch=arch, dtype=dtype, channels_last=channels_last,
                                  shared_bytes=kernel.metadata.shared)
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if ptxas.exists():
        folder = Path(os.environ.get("TMPDIR", "/tmp"))
        (folder / "vsedvr_dcn.ptx").write_text(ptx)
        suffix = "a" if arch >= 90 else ""
        proc = subprocess.run([str(ptxas), f"-arch=sm_{arch}{suffix}", "-v", str(folder / "vsedvr_dcn.ptx"),
                               "-o", str(folder / "vsedvr_dcn.cubin")], capture_output=True, text=True)
        info = proc.stdout + proc.stderr
        registers = re.search(r"Used (\d+) registers", info)
        spills = re.search(r"(\d+) bytes spill stores", info)
        report.update(registers=int(registers.group(1)) if registers else None,
                      spill_store_bytes=int(spills.group(1)) if spills else None)
    report["matrix_instructions"] = sorted(set(re.findall(r"\b(wgmma\.mma_async[a-z0-9_.]*|mma\.sync[a-z0-9_.]*)", ptx)))
    # how many instructions of each width the PTX holds (not how often they run)
    report["async_copies"] = dict(Counter(f"{int(b, 16)} B" for b in
                                          re.findall(r"cp\.async\.c[ag]\.shared\.global[^;]*?, (0x[0-9a-f]+)", ptx)))
    report["global_loads"] = dict(Counter(re.findall(r"ld\.global[a-z0-9_.]*", ptx)))
    report["global_stores"] = dict(Counter(re.findall(r"st\.global[a-z0-9_.]*", ptx)))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved repetitions; medians are reported (default 5)")
    parser.add_argument("--omp-wait-policy", default="passive", metavar="POLICY",
                        help="OMP_WAIT_POLICY (default passive, as bench_restore.py's measured processes); "
                             "'' keeps the environment's")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cpu: the CPU fast path against torchvision; cuda: the Triton kernel against "
                             "torchvision (default cpu)")
    parser.add_argument("--triton", action="store_true",
                        help="with --device cpu: the CUDA comparison through Triton's interpreter (a tiny --size)")
    parser.add_argument("--size", type=parse_size, default=None, metavar="HxW",
                        help="input frame size of the CUDA comparison (default 540x960; 12x16 with --triton)")
    parser.add_argument("--channels", type=int, default=64, help="feature channels C (64 EDVR-M, 128 EDVR-L)")
    parser.add_argument("--sweep", action="store_true", help="also time block-size variants of the fp16 kernel at L1")
    parser.add_argument("--compile-report", type=int, metavar="ARCH", nargs="?", const=90,
                        help="no timing: compile the Triton kernel for compute capability ARCH (default 90) "
                             "without a GPU and report registers, spills and instructions")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")
    args = parser.parse_args(argv)
    if args.compile_report:
        reports = [compile_report(args.compile_report, dtype, channels_last, args.channels)
                   for dtype in ("fp16", "bf16") for channels_last in (True, False)]
        for r in reports:
            print(f"sm_{r['arch']} {r['dtype']} {'channels-last' if r['channels_last'] else 'NCHW'} gather "
                  f"(Triton {r['triton']}): {r.get('registers')} registers, {r.get('spill_store_bytes')} bytes spilled, "
                  f"{r['shared_bytes']} B shared; {', '.join(r['matrix_instructions']) or 'no matrix instructions'}; "
                  f"PTX copy instructions: async {r['async_copies']}, loads {r['global_loads']}, "
                  f"stores {r['global_stores']}")
        if args.json:
            args.json.write_text(json.dumps(reports, indent=2))
        return 0
    if args.triton or args.device == "cuda":
        if args.device == "cpu":
            os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported
        info = machine_info(args.threads)
        info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "(unset)")
        print(machine_line(info) + (f", {info['gpu']}" if args.device == "cuda" else ", Triton interpreter"),
              flush=True)
        size = args.size or ((540, 960) if args.device == "cuda" else (12, 16))
        result = dcn_triton(args.device, size, args.channels, 8, args.repeats, args.sweep)
        _print_triton(result)
        if args.json:
            args.json.write_text(json.dumps(dict(machine=info, dcn_triton=result), indent=2))
            print(f"\nwrote {args.json}")
        return 0
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
