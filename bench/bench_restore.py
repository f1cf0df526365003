#!/usr/bin/env python3
"""Throughput of vsedvr's Restore against the usual ways of running EDVR, in one run.

Same random weights (official BasicSR layout, saved to a temporary checkpoint), same clip, same
thread count for every variant:

  a_vspipe   vsedvr: ``core.edvr.Restore`` rendered by ``vspipe`` (subprocess, its own
             XDG_CONFIG_HOME configured by ``vapoursynth config``); time from vspipe's own
             "Output N frames in S seconds" line (after the script and model have loaded).
  a_python   vsedvr: the same ``core.edvr.Restore`` pulled from Python with ``clip.frames()``.
  b_naive    the reference scripts' way: the whole network ``net(x)`` on each output frame's
             window, frames converted again for every window (uint8 BGR HWC -> RGB float CHW,
             as ``cv2.imread`` + ``img2tensor`` do), torchvision's DCN (the reference path).
  c_modify   the pattern of existing Python VapourSynth AI filters: ``std.ModifyFrame`` whose
             callback fetches the neighbours with synchronous ``clip.get_frame()``, one global
             lock, the whole network per output frame, torchvision's DCN.
  c_fastdcn  (only when asked for) c_modify with vsedvr's fast DCN, to separate the plugin's
             feature cache from the DCN speed-up.
  a_compile  (only when asked for) a_python with ``Restore(compile=True)``; its first frame (the
             compilation) is reported apart and its rate is over the other frames.
  a_globalthreads  (only when asked for) a_python with the banded DCN's former thread handling
             (``torch.set_num_threads(1)`` process-wide around each call, restored after), the
             baseline for its per-thread replacement (issue 16): ratio a_python/a_globalthreads.

Each variant runs in its own subprocess (clean peak RSS via ``resource.getrusage``; on CUDA also
peak VRAM, ``torch.cuda.max_memory_allocated``); variants are interleaved when ``--repeats`` > 1
and the median is reported. ``--device cuda`` runs every variant on the GPU, each after one
untimed warm-up frame (CUDA context, cuDNN's algorithm search) and with cuDNN's autotuner on;
``--precision`` applies to the a variants (vsedvr's parameter), b and c always compute in fp32 (as
the reference scripts do). On CUDA the model-FLOP utilisation (achieved FLOP/s over the GPU's dense
tensor-core peak for the variant's precision; fp32 convolutions run as TF32 by PyTorch's default,
but torchvision's deformable-conv GEMMs do not (matmul TF32 is off by default): fp32 MFU reads low)
is printed too; ``--peak-tflops`` gives the peak for GPUs the table does not know. Also the FLOPs
per output frame (bench_flops.py) with the achieved GFLOP/s of each variant. The deformable conv
alone, fast path vs torchvision: bench_dcn.py.

Examples::

    python bench/bench_restore.py                      # EDVR-M and EDVR-L, 64x112, 8 frames
    python bench/bench_restore.py --models edvrm --size 180x320 --frames 6 --json m180.json
    python bench/bench_restore.py --device cuda --precision fp16 --models edvrm --size 540x960 --frames 30
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench_common import (BENCH_DIR, MODELS, NUM_FRAMES_T, machine_info, machine_line, make_frames, parse_size,
                          source_clip, thread_env)
from bench_flops import count_flops

VENV_BIN = Path(sys.executable).parent

VARIANTS = ("a_vspipe", "a_python", "b_naive", "c_modify")
OPTIONAL_VARIANTS = ("c_fastdcn", "a_compile", "a_globalthreads", "a_cudnnsearch")
#: The variants that time core.edvr.Restore through Python's frames()
RESTORE_VARIANTS = ("a_python", "a_compile", "a_globalthreads", "a_cudnnsearch")
LABELS = {
    "a_vspipe": "a  vsedvr Restore, vspipe",
    "a_python": "a  vsedvr Restore, Python frames()",
    "b_naive": "b  naive net(x) per window, torchvision DCN",
    "c_modify": "c  ModifyFrame + get_frame + lock, torchvision DCN",
    "c_fastdcn": "c' ModifyFrame + get_frame + lock, fast DCN",
    "a_compile": "a' vsedvr Restore(compile=True), Python frames()",
    "a_globalthreads": "a' vsedvr Restore, former global set_num_threads(1) in the DCN",
    "a_cudnnsearch": "a'' vsedvr Restore with cuDNN's per-shape search (cudnn.benchmark, not deterministic)",
}

#: Dense tensor-core peaks in TFLOP/s (vendor data sheets) by precision, for the MFU column.
#: fp32 counts TF32: PyTorch runs fp32 convolutions on cuDNN with TF32 allowed by default.
GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"fp16": 989.4, "bf16": 989.4, "fp32": 494.7},
    "H100 PCIe": {"fp16": 756.0, "bf16": 756.0, "fp32": 378.0},
    "H100 NVL": {"fp16": 835.5, "bf16": 835.5, "fp32": 417.5},
    "H200 NVL": {"fp16": 835.5, "bf16": 835.5, "fp32": 417.5},
    "H200": {"fp16": 989.4, "bf16": 989.4, "fp32": 494.7},
    "A100": {"fp16": 312.0, "bf16": 312.0, "fp32": 156.0},
    "L40S": {"fp16": 362.1, "bf16": 362.1, "fp32": 183.0},
    "RTX 4090": {"fp16": 165.2, "bf16": 165.2, "fp32": 82.6},
}


@dataclass(frozen=True)
class Setup:
    """What every variant of one run shares (passed to the worker subprocesses as flags)."""

    height: int
    width: int
    count: int  # frames of the clip = output frames timed
    threads: int
    device: str = "cpu"  # "cpu" or "cuda"
    precision: str = "fp32"  # of the a variants; b and c compute in fp32

    def flags(self) -> list[str]:
        return ["--size", f"{self.height}x{self.width}", "--frames", str(self.count), "--threads",
                str(self.threads), "--device", self.device, "--precision", self.precision]


def gpu_peak_tflops(name: str, precision: str) -> float | None:
    """The table's peak for a CUDA device name (e.g. "NVIDIA H100 80GB HBM3"), or None."""
    if "H100" in name:
        key = "H100 PCIe" if "PCIe" in name else "H100 NVL" if "NVL" in name else "H100 SXM"
    else:
        key = next((k for k in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True) if k in name), "")  # "H200 NVL"
    return GPU_PEAK_TFLOPS[key][precision] if key else None


# --------------------------------------------------------------------------- inputs

def window(n: int, count: int) -> list[int]:
    from vsedvr.filter.windows import window_indices

    return window_indices(n, NUM_FRAMES_T, 0, count - 1, "reflection_circle")


def make_checkpoint(model: str, path: Path, seed: int = 0) -> None:
    """Random weights in BasicSR's layout, ``{'params': state_dict}``, with DCN offsets of ~1 px."""
    import torch

    from vsedvr.nets import EDVR

    torch.manual_seed(seed)
    net = EDVR(**MODELS[model])
    with torch.no_grad():
        for name, param in net.named_parameters():
            if ".conv_offset." in name:  # the init zeroes them: offsets 0, a plain conv
                param.normal_(0.0, 1.0 if param.dim() == 1 else 1e-3)
    torch.save({"params": net.state_dict()}, path)


# --------------------------------------------------------------------------- workers

#: The script vspipe runs for a_vspipe; bench/ is on its PYTHONPATH (:func:`_worker_vspipe`).
VPY = """\
import torch
import bench_common as C
import bench_restore as B
from vapoursynth import core
torch.set_num_threads(int(threads))
clip = C.source_clip(C.make_frames(int(frames), int(height), int(width)))
out = core.edvr.Restore(clip, model=checkpoint, device=device, precision=precision)
B.warm_up_restore(clip, checkpoint, device, precision)
B.record_vram(out, vram_file).set_output()
"""


def warm_up_restore(clip, checkpoint: str, device: str, precision: str) -> None:  # (vs.VideoNode, ...)
    """On CUDA, one frame of another Restore of the same size before the timing starts.

    The CUDA context, cuDNN's algorithm search (one per shape and process) and the pinned-memory
    pool then cost the timed frames nothing; b and c get the same (:func:`_warm_up_network`).
    """
    if device == "cuda":
        from vapoursynth import core

        core.edvr.Restore(clip, model=checkpoint, device=device, precision=precision).get_frame(0)


def _warm_up_network(net: Any, height: int, width: int, device: str) -> None:
    """The b and c counterpart of :func:`warm_up_restore`: one forward of a window, on CUDA."""
    import torch

    if device == "cuda":
        with torch.inference_mode():
            net(torch.zeros(1, NUM_FRAMES_T, 3, height, width, device=device))
        torch.cuda.synchronize()


def record_vram(clip, path: str):  # (vs.VideoNode, str) -> vs.VideoNode
    """On CUDA, the clip with a pass-through that writes the peak VRAM so far to ``path`` at each frame."""
    import torch
    import vapoursynth as vs

    if not torch.cuda.is_available() or not path:
        return clip

    lock = threading.Lock()  # frames arrive on several threads; one writer at a time, whole files

    def passthrough(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        with lock:
            partial = Path(f"{path}.part")
            partial.write_text(str(torch.cuda.max_memory_allocated() / 2**20))
            os.replace(partial, path)
        return f

    return vs.core.std.ModifyFrame(clip, clip, passthrough)


#: OMP_WAIT_POLICY for every subprocess, None: the caller's environment (see --omp-wait-policy).
_WAIT_POLICY: str | None = None


def worker(variant: str, checkpoint: str, setup: Setup) -> dict[str, Any]:
    """Runs one variant in this process; returns seconds for ``setup.count`` output frames and more."""
    if variant == "a_vspipe":
        return _worker_vspipe(checkpoint, setup)

    import torch

    torch.set_num_threads(setup.threads)
    if variant == "a_cudnnsearch":  # what the engine did before its algorithms were made deterministic
        torch.backends.cudnn.benchmark = True
    frames = make_frames(setup.count, setup.height, setup.width)
    start = time.perf_counter()
    compiled = variant == "a_compile"
    if variant == "a_globalthreads":
        _use_global_band_threads()
    if variant in RESTORE_VARIANTS:
        from vapoursynth import core

        clip = source_clip(frames)
        out = core.edvr.Restore(clip, model=checkpoint, device=setup.device,
                                precision=setup.precision, compile=int(compiled))
        load = time.perf_counter() - start
        if not compiled:  # a_compile reports its first frame apart instead
            warm_up_restore(clip, checkpoint, setup.device, setup.precision)
        start = time.perf_counter()
        frames_out = out.frames()
        next(frames_out)
        first = time.perf_counter() - start
        for _ in frames_out:
            pass
        after_first = time.perf_counter() - start - first
        if compiled:  # the first frame compiles the network: reported apart, not timed
            start += first
    else:
        import vsedvr
        from vsedvr.nets.deform import fast_path

        net = vsedvr.load_model(checkpoint, device=setup.device)
        load = time.perf_counter() - start
        _warm_up_network(net, setup.height, setup.width, setup.device)
        with fast_path(variant == "c_fastdcn"):
            start = time.perf_counter()
            if variant == "b_naive":
                _naive(net, frames, setup.device)
            else:
                _modify_frame(net, frames, setup.device)
    seconds = time.perf_counter() - start
    vram = torch.cuda.max_memory_allocated() / 2**20 if setup.device == "cuda" else None
    timed = setup.count - 1 if compiled else setup.count
    return dict(seconds=seconds, frames_timed=timed, load_seconds=load,
                first_frame_seconds=first if compiled else None,
                seconds_after_first=after_first if variant in RESTORE_VARIANTS else None,
                peak_rss_mib=_peak_rss_mib(resource.RUSAGE_SELF), peak_vram_mib=vram)


def _use_global_band_threads() -> None:
    """The banded DCN's thread handling before issue 16 (vsedvr 0.1.0 at e425991), for a_globalthreads."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import contextmanager

    import torch

    from vsedvr.nets import deform

    state = dict(users=0, saved=1, pool=None, size=0)
    lock = threading.Lock()

    @contextmanager
    def band_threads(bands: int):
        with lock:
            if state["users"] == 0:
                state["saved"] = torch.get_num_threads()
                if state["saved"] > 1:
                    torch.set_num_threads(1)
            state["users"] += 1
            workers = min(state["saved"], bands)
            pool = None
            if workers > 1:
                if state["size"] < state["saved"]:
                    state["pool"] = ThreadPoolExecutor(max_workers=state["saved"])
                    state["size"] = state["saved"]
                pool = state["pool"]
        try:
            yield pool
        finally:
            with lock:
                state["users"] -= 1
                if state["users"] == 0 and state["saved"] > 1:
                    torch.set_num_threads(state["saved"])

    deform._band_threads = band_threads


def _naive(net: Any, frames: np.ndarray, device: str) -> None:
    """Reference test script: per output frame, read its window's images again, run net(x)."""
    import torch

    # What cv2.imread would have returned for each frame: uint8, BGR, HWC.
    images = [np.ascontiguousarray((f[::-1].transpose(1, 2, 0) * 255).round().astype(np.uint8)) for f in frames]
    results = []
    for n in range(len(frames)):
        # img2tensor(bgr2rgb=True, float32) / 255 for each frame of the window, stacked on T.
        window_images = [images[i].astype(np.float32) / 255.0 for i in window(n, len(frames))]
        x = torch.stack([torch.from_numpy(img[:, :, ::-1].transpose(2, 0, 1).copy()) for img in window_images])
        with torch.inference_mode():
            out = net(x[None].to(device)).cpu()
        # tensor2img: clamp, RGB -> BGR, HWC, uint8
        results.append((out[0].clamp(0, 1).numpy()[::-1].transpose(1, 2, 0) * 255).round().astype(np.uint8))


def _modify_frame(net: Any, frames: np.ndarray, device: str) -> None:
    """std.ModifyFrame, neighbours fetched with get_frame inside the callback, one global lock."""
    import torch
    import vapoursynth as vs

    clip = source_clip(frames)
    lock = threading.Lock()
    scale = net.scale

    def restore(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        with lock:
            planes = [np.stack([np.asarray(clip.get_frame(i)[p]) for p in range(3)])
                      for i in window(n, clip.num_frames)]
            with torch.inference_mode():
                out = net(torch.from_numpy(np.stack(planes))[None].to(device))[0].cpu().numpy()
            dst = f.copy()
            for p in range(3):
                np.asarray(dst[p])[:] = out[p]
            return dst

    blank = vs.core.std.BlankClip(clip, width=clip.width * scale, height=clip.height * scale)
    for _ in vs.core.std.ModifyFrame(blank, blank, restore).frames():
        pass


def _worker_vspipe(checkpoint: str, setup: Setup) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vsedvr-bench-") as tmp:
        env = thread_env(setup.threads, _WAIT_POLICY)
        env["XDG_CONFIG_HOME"] = str(Path(tmp) / "xdg-config")
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH")) if p)
        subprocess.run([str(VENV_BIN / "vapoursynth"), "config"], env=env, check=True, capture_output=True)
        script = Path(tmp) / "bench.vpy"
        script.write_text(VPY)
        vram_file = Path(tmp) / "vram" if setup.device == "cuda" else None
        args = dict(checkpoint=checkpoint, frames=setup.count, height=setup.height,
                    width=setup.width, threads=setup.threads, device=setup.device, precision=setup.precision,
                    vram_file=vram_file or "")
        cmd = [str(VENV_BIN / "vspipe"), "--progress"]
        for key, value in args.items():
            cmd += ["-a", f"{key}={value}"]
        cmd += [str(script), "--"]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        vram = float(vram_file.read_text()) if vram_file and vram_file.exists() else None
    if done.returncode:
        raise RuntimeError(f"vspipe failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = re.search(r"Output (\d+) frames in ([\d.]+) seconds", done.stderr)
    if not found or int(found.group(1)) != setup.count:
        raise RuntimeError(f"no 'Output {setup.count} frames in ... seconds' from vspipe:\n{done.stderr[-3000:]}")
    seconds = float(found.group(2))
    return dict(seconds=seconds, frames_timed=setup.count, load_seconds=wall - seconds,
                peak_rss_mib=_peak_rss_mib(resource.RUSAGE_CHILDREN), peak_vram_mib=vram)


def _peak_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def run_worker(variant: str, checkpoint: Path, setup: Setup) -> dict[str, Any]:
    """One variant in a fresh subprocess of this script."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_file = Path(f.name)
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--checkpoint", str(checkpoint),
               *setup.flags(), "--result-file", str(result_file)]
        done = subprocess.run(cmd, env=thread_env(setup.threads, _WAIT_POLICY), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"variant {variant} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(result_file.read_text())
    finally:
        result_file.unlink(missing_ok=True)


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Variants:\n" + "\n".join(f"  {k:10s} {v}" for k, v in LABELS.items()))
    parser.add_argument("--models", default="edvrm,edvrl", help="comma-separated: edvrm, edvrl (default: both)")
    parser.add_argument("--size", type=parse_size, default=(64, 112), metavar="HxW",
                        help="input frame size, multiples of 4 (default 64x112)")
    parser.add_argument("--frames", type=int, default=8,
                        help="frames of the clip = output frames timed (default 8)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch intra-op threads for every variant (default 2)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, from {', '.join(VARIANTS + OPTIONAL_VARIANTS)} "
                             f"(default: {','.join(VARIANTS)})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where every variant computes (default cpu)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="precision of the a variants (Restore's parameter; fp16/bf16 need --device cuda); "
                             "b and c compute in fp32 (default fp32)")
    parser.add_argument("--peak-tflops", type=float, metavar="TFLOPS",
                        help="the device's peak at --precision, for the a variants' MFU (default: looked "
                             "up for known GPUs; none on the CPU)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved repetitions; medians are reported (default 1)")
    parser.add_argument("--omp-wait-policy", default="passive", metavar="POLICY",
                        help="OMP_WAIT_POLICY of every measured subprocess (default passive: idle OpenMP "
                             "workers sleep instead of spinning, which on a machine shared with other "
                             "busy processes otherwise stalls torch ops by milliseconds each); '' keeps "
                             "the environment's")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    height, width = args.size
    global _WAIT_POLICY
    _WAIT_POLICY = args.omp_wait_policy or None

    setup = Setup(height, width, args.frames, args.threads, args.device, args.precision)
    if args.worker:
        result = worker(args.worker, args.checkpoint, setup)
        args.result_file.write_text(json.dumps(result))
        return 0

    models = [m for m in args.models.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]
    for m in models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    for v in variants:
        if v not in LABELS:
            parser.error(f"unknown variant {v!r}; choose from {', '.join(LABELS)}")
    if height % 4 or width % 4:
        parser.error("--size must be multiples of 4")
    if args.frames < NUM_FRAMES_T:
        parser.error(f"--frames must be at least {NUM_FRAMES_T} (the reference windows need it)")
    if args.precision != "fp32" and args.device != "cuda":
        parser.error(f"--precision {args.precision} needs --device cuda (Restore computes fp32 on the CPU)")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA device here")

    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    info["omp_wait_policy"] = _WAIT_POLICY or os.environ.get("OMP_WAIT_POLICY", "(unset)")
    print(machine_line(info), flush=True)
    print(f"# input {height}x{width}, {args.frames} frames, repeats {args.repeats}; "
          f"command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}",
          flush=True)
    # the a variants compute in --precision, b and c in fp32: each is measured against its own peak
    peaks: dict[str, float | None] = {"a": None, "bc": None}
    if args.device == "cuda":
        peaks["a"] = args.peak_tflops or gpu_peak_tflops(info["gpu"], args.precision)
        peaks["bc"] = peaks["a"] if args.precision == "fp32" else gpu_peak_tflops(info["gpu"], "fp32")
        shown = {k: f"{v:g} TFLOP/s" if v else "unknown (--peak-tflops)" for k, v in peaks.items()}
        print(f"# {info['gpu']}; a: {args.precision}, peak for MFU {shown['a']}; b and c: fp32, "
              f"peak {shown['bc']}", flush=True)
    report: dict[str, Any] = dict(machine=info, setup=asdict(setup), repeats=args.repeats, peak_tflops=peaks,
                                  models={})

    with tempfile.TemporaryDirectory(prefix="vsedvr-bench-") as tmp:
        for model in models:
            checkpoint = Path(tmp) / f"{model}_random.pth"
            make_checkpoint(model, checkpoint)
            flops = count_flops(model, height, width)
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
            for _ in range(args.repeats):
                for v in variants:
                    runs[v].append(run_worker(v, checkpoint, setup))
                    print(f"  {model} {v}: {runs[v][-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
            rows = {}
            for v in variants:
                timed = runs[v][0]["frames_timed"]
                seconds = statistics.median(r["seconds"] for r in runs[v])
                gflop = flops["plugin"] if v.startswith("a_") else flops["full"]
                peak = peaks["a"] if v.startswith("a_") else peaks["bc"]
                vram = [r["peak_vram_mib"] for r in runs[v] if r.get("peak_vram_mib") is not None]
                firsts = [r["first_frame_seconds"] for r in runs[v] if r.get("first_frame_seconds") is not None]
                rows[v] = dict(seconds=seconds, frames_timed=timed, fps=timed / seconds, s_per_frame=seconds / timed,
                               gflop_per_frame=gflop, gflops=gflop * timed / seconds,
                               mfu=gflop * timed / seconds / (peak * 1e3) if peak else None,
                               peak_rss_mib=max(r["peak_rss_mib"] for r in runs[v]),
                               peak_vram_mib=max(vram) if vram else None,
                               first_frame_seconds=statistics.median(firsts) if firsts else None,
                               load_seconds=statistics.median(r["load_seconds"] for r in runs[v]), runs=runs[v])
            ratios = {f"{a}/{b}": rows[a]["fps"] / rows[b]["fps"]
                      for a in ("a_vspipe", "a_python", "a_compile")
                      for b in ("b_naive", "c_modify", "c_fastdcn", "a_python", "a_globalthreads", "a_cudnnsearch")
                      if a in rows and b in rows and a != b}
            if "a_compile" in rows and "a_python" in rows:  # both without their first frame
                ratios["a_compile/a_python"] = (statistics.median(r["seconds_after_first"] for r in runs["a_python"])
                                                / statistics.median(r["seconds_after_first"]
                                                                    for r in runs["a_compile"]))
            report["models"][model] = dict(flops_gflop=flops, variants=rows, speed_ratios=ratios)
            _print_model(model, height, width, args.frames, flops, rows, ratios)

    report["machine"]["loadavg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def _print_model(model: str, height: int, width: int, count: int, flops: dict[str, float],
                 rows: dict[str, dict[str, Any]], ratios: dict[str, float]) -> None:
    print(f"\n{model} at {height}x{width} -> {4 * height}x{4 * width}, {count} output frames; GFLOP per output "
          f"frame: whole network {flops['full']:.1f}, "
          f"vsedvr (features of 1 frame + 1 window) {flops['plugin']:.1f}")
    print(f"  {'variant':52s} {'fps':>7s} {'s/frame':>8s} {'GFLOP/s':>8s} {'MFU':>6s} {'peak RSS':>9s} "
          f"{'peak VRAM':>10s}")
    for v, r in rows.items():
        mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "     -"
        vram = f"{r['peak_vram_mib']:6.0f} MiB" if r["peak_vram_mib"] is not None else "         -"
        first = f"  (first frame, compiling: {r['first_frame_seconds']:.1f} s)" if r["first_frame_seconds"] else ""
        print(f"  {LABELS[v]:52s} {r['fps']:7.3f} {r['s_per_frame']:8.2f} {r['gflops']:8.1f} {mfu} "
              f"{r['peak_rss_mib']:6.0f} MiB {vram}{first}")
    if ratios:
        print("  speed ratios (fps / fps): " + ", ".join(f"{k} = {v:.2f}x" for k, v in ratios.items()))


if __name__ == "__main__":
    sys.exit(main())
