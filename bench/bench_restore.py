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
  a_channelslast, a_graphs, a_fast  (only when asked for; CUDA) a_python with channels-last tensors
             (``VSEDVR_CHANNELS_LAST=1``), with CUDA graphs (``VSEDVR_CUDA_GRAPHS=1``), with both:
             the measurement that decides their defaults (vsedvr/filter/gpu.py); ratios over a_python.

Each variant runs in its own subprocess (clean peak RSS via ``resource.getrusage``; on CUDA also
peak VRAM, ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``); variants are
interleaved when ``--repeats`` > 1 and the median is reported.

Steady state: each variant first computes ``--warmup`` frames of the same clip, untimed (default on
CUDA: 2 x ``core.num_threads``, so that every VapourSynth thread and the compute thread have built
their cuDNN plans and handles; on the CPU 0, as the documented CPU runs were measured), then
``--frames`` timed frames. The time of each timed frame's arrival gives the per-frame intervals:
the median and the 90th percentile are reported with the fps over the timed frames (a_vspipe: its
frames' completion times, read from a pass-through filter). ``--device cuda`` runs every variant on
the GPU; ``--precision`` (one or a comma-separated list, each measured apart) applies to every
variant: vsedvr's parameter for a, the network converted (``net.half()``, ``net.bfloat16()``) for b
and c, which load it through vsedvr and so run the same deformable-convolution kernel per device and
type as a (nets/deform.py), so that precision and design are never mixed in one ratio. On CUDA the model-FLOP utilisation (achieved FLOP/s over
the GPU's dense tensor-core peak for the precision; fp32 convolutions run as TF32 by PyTorch's
default, but torchvision's deformable-conv GEMMs do not (matmul TF32 is off by default): fp32 MFU
reads low) is printed too; ``--peak-tflops`` gives the peak for GPUs the table does not know. Also
the FLOPs per output frame (bench_flops.py) with the achieved GFLOP/s of each variant. The
deformable conv alone, fast path vs torchvision: bench_dcn.py.

Examples::

    python bench/bench_restore.py                      # EDVR-M and EDVR-L, 64x112, 8 frames
    python bench/bench_restore.py --models edvrm --size 180x320 --frames 6 --json m180.json
    python bench/bench_restore.py --device cuda --precision fp16,fp32 --models edvrm --size 540x960 --frames 30
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
OPTIONAL_VARIANTS = ("c_fastdcn", "a_compile", "a_globalthreads", "a_cudnnsearch", "a_channelslast", "a_graphs",
                     "a_fast")
#: The variants that time core.edvr.Restore through Python's frames()
RESTORE_VARIANTS = ("a_python", "a_compile", "a_globalthreads", "a_cudnnsearch", "a_channelslast", "a_graphs",
                    "a_fast")
#: The GPU fast paths' switches (vsedvr/filter/gpu.py) each of those variants turns on
FAST_PATH_SWITCHES = {"a_channelslast": ("VSEDVR_CHANNELS_LAST",), "a_graphs": ("VSEDVR_CUDA_GRAPHS",),
                      "a_fast": ("VSEDVR_CHANNELS_LAST", "VSEDVR_CUDA_GRAPHS")}
LABELS = {
    "a_vspipe": "a  vsedvr Restore, vspipe",
    "a_python": "a  vsedvr Restore, Python frames()",
    "b_naive": "b  naive net(x) per window, torchvision DCN",
    "c_modify": "c  ModifyFrame + get_frame + lock, torchvision DCN",
    "c_fastdcn": "c' ModifyFrame + get_frame + lock, fast DCN",
    "a_compile": "a' vsedvr Restore(compile=True), Python frames()",
    "a_globalthreads": "a' vsedvr Restore, former global set_num_threads(1) in the DCN",
    "a_cudnnsearch": "a'' vsedvr Restore with cuDNN's per-shape search (cudnn.benchmark, not deterministic)",
    "a_channelslast": "a' vsedvr Restore, channels-last tensors",
    "a_graphs": "a' vsedvr Restore, CUDA graphs",
    "a_fast": "a' vsedvr Restore, channels-last and CUDA graphs",
}

#: Warm-up frames of b_naive at most: it runs on one thread, one window at a time, so its first
#: frames warm everything it uses (the other variants' warm-up warms each VapourSynth thread).
NAIVE_WARMUP = 3
#: Frames the profile covers (``--profile``).
PROFILE_FRAMES = 3

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
    precision: str = "fp32"  # of every variant
    warmup: int = 0  # untimed frames before the timed ones, of the same clip

    def flags(self) -> list[str]:
        return ["--size", f"{self.height}x{self.width}", "--frames", str(self.count), "--threads",
                str(self.threads), "--device", self.device, "--precision", self.precision,
                "--warmup", str(self.warmup)]


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
B.record_frames(out, record_file).set_output()
"""


def record_frames(clip, path: str):  # (vs.VideoNode, str) -> vs.VideoNode
    """The clip with a pass-through that appends, as each frame is done, a line to ``path``: frame
    number, ``time.perf_counter()``, and on CUDA the peak VRAM allocated and reserved so far (MiB)."""
    import torch
    import vapoursynth as vs

    lock = threading.Lock()  # frames arrive on several threads; one writer at a time, whole lines
    cuda = torch.cuda.is_available()

    def passthrough(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        now = time.perf_counter()
        memory = (torch.cuda.max_memory_allocated() / 2**20, torch.cuda.max_memory_reserved() / 2**20) if cuda else ()
        with lock, open(path, "a") as out:
            out.write(" ".join(str(v) for v in (n, now, *memory)) + "\n")
        return f

    return vs.core.std.ModifyFrame(clip, clip, passthrough)


def default_warmup(device: str) -> int:
    """Untimed frames before the timed ones: on CUDA 2 x ``core.num_threads`` (each VapourSynth thread's
    first frames build its own cuDNN plans and handles, and a frame waits on others'), on the CPU 0."""
    if device != "cuda":
        return 0
    from vapoursynth import core

    return 2 * core.num_threads


#: OMP_WAIT_POLICY for every subprocess, None: the caller's environment (see --omp-wait-policy).
_WAIT_POLICY: str | None = None


def worker(variant: str, checkpoint: str, setup: Setup) -> dict[str, Any]:
    """Runs one variant in this process: per-frame times of ``setup.warmup`` untimed and
    ``setup.count`` timed output frames, and more."""
    if variant == "a_vspipe":
        return _worker_vspipe(checkpoint, setup)

    import torch

    torch.set_num_threads(setup.threads)
    if variant == "a_cudnnsearch":  # what the engine did before its algorithms were made deterministic
        torch.backends.cudnn.benchmark = True
    for name in ("VSEDVR_CHANNELS_LAST", "VSEDVR_CUDA_GRAPHS"):  # each variant's own, whatever the caller set
        os.environ[name] = "1" if name in FAST_PATH_SWITCHES.get(variant, ()) else "0"
    compiled = variant == "a_compile"
    warmup = setup.warmup or int(compiled)  # a_compile's first frame compiles: never timed
    if variant == "b_naive":  # one thread, one window at a time: warm after its first frames
        warmup = min(warmup, NAIVE_WARMUP)
    frames = make_frames(warmup + setup.count, setup.height, setup.width)
    if variant == "a_globalthreads":
        _use_global_band_threads()
    start = time.perf_counter()
    times = [start]  # the start, then each output frame's arrival
    if variant in RESTORE_VARIANTS:
        from vapoursynth import core

        clip = source_clip(frames)
        out = core.edvr.Restore(clip, model=checkpoint, device=setup.device,
                                precision=setup.precision, compile=int(compiled))
        load = time.perf_counter() - start
        times = [time.perf_counter()]
        for _ in out.frames():  # prefetching core.num_threads frames, like vspipe
            times.append(time.perf_counter())
    else:
        import vsedvr
        from vsedvr.nets.deform import fast_path

        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[setup.precision]
        net = vsedvr.load_model(checkpoint, device=setup.device).to(dtype)
        load = time.perf_counter() - start
        with fast_path(variant == "c_fastdcn"):
            times = [time.perf_counter()]
            if variant == "b_naive":
                _naive(net, frames, setup.device, times)
            else:
                _modify_frame(net, frames, setup.device, times)
    result = _timing(times[1:], times[0], warmup)
    if compiled:  # the first frame compiles the network
        result["first_frame_seconds"] = times[1] - times[0]
    result.update(load_seconds=load, peak_rss_mib=_peak_rss_mib(resource.RUSAGE_SELF))
    if setup.device == "cuda":
        result.update(peak_vram_mib=torch.cuda.max_memory_allocated() / 2**20,
                      peak_reserved_mib=torch.cuda.max_memory_reserved() / 2**20)
    return result


def _timing(times: list[float], start: float, warmup: int) -> dict[str, Any]:
    """Seconds of the timed frames and their intervals, from the arrival times of all frames: the
    first timed frame's interval starts at the last warm-up frame's arrival (without warm-up, at
    ``start``)."""
    arrivals = [start] + times
    spans = [b - a for a, b in zip(arrivals[warmup:], arrivals[warmup + 1:])]
    return dict(seconds=arrivals[-1] - arrivals[warmup], frames_timed=len(spans), warmup_frames=warmup,
                warmup_seconds=arrivals[warmup] - start, interval_median_s=statistics.median(spans),
                interval_p90_s=_percentile(spans, 90), intervals_s=spans)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def profile_restore(checkpoint: str, setup: Setup, path: Path, frames: int = PROFILE_FRAMES) -> None:
    """``frames`` steady frames of a_python under ``torch.profiler``, written to ``path``: the top 25
    CUDA kernels by time, kernels and copies per frame, the GPU's busy and idle time over the
    profiled span (on the CPU: the top 25 operators of this thread instead)."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    from vapoursynth import core

    torch.set_num_threads(setup.threads)
    cuda = setup.device == "cuda"
    clip = source_clip(make_frames(setup.warmup + frames, setup.height, setup.width))
    out = core.edvr.Restore(clip, model=checkpoint, device=setup.device, precision=setup.precision)
    delivered = out.frames()
    for _ in range(setup.warmup):
        next(delivered)
    if cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(frames):
            next(delivered)
        if cuda:
            torch.cuda.synchronize()
        wall_us = (time.perf_counter() - start) * 1e6
    lines = [f"{frames} steady frames of Restore ({setup.precision}, {setup.height}x{setup.width}, after "
             f"{setup.warmup} warm-up frames) under torch.profiler: {wall_us / 1e3:.1f} ms"]
    device_events = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    if device_events:
        copies = [e for e in device_events if e.name.startswith(("Memcpy", "Memset"))]
        kernels = [e for e in device_events if not e.name.startswith(("Memcpy", "Memset"))]
        spans = sorted((e.time_range.start, e.time_range.end) for e in device_events)
        busy, end = 0.0, float("-inf")
        for a, b in spans:  # the union of every kernel's and copy's interval, all streams
            if b > end:
                busy += b - max(a, end)
                end = b
        first, last = spans[0][0], max(b for _, b in spans)
        lines += [f"kernels per frame: {len(kernels) / frames:.0f}; copies and memsets per frame: "
                  f"{len(copies) / frames:.0f}",
                  f"GPU busy (any kernel or copy running) {busy / 1e3:.1f} ms of the {wall_us / 1e3:.1f} ms "
                  f"profiled: idle {100 * (1 - busy / wall_us):.1f} % (within the first to the last device "
                  f"event, {(last - first) / 1e3:.1f} ms: idle {100 * (1 - busy / max(last - first, 1e-9)):.1f} %)",
                  "", f"top 25 CUDA kernels by total time ({frames} frames):",
                  f"{'total ms':>9s} {'share':>6s} {'calls':>6s} {'mean us':>8s}  kernel"]
        totals: dict[str, list[float]] = {}
        for e in kernels:
            entry = totals.setdefault(e.name, [0.0, 0])
            entry[0] += e.time_range.end - e.time_range.start
            entry[1] += 1
        kernel_time = sum(t for t, _ in totals.values())
        for name, (total, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0])[:25]:
            lines.append(f"{total / 1e3:9.2f} {100 * total / kernel_time:5.1f}% {calls:6d} {total / calls:8.1f}  "
                         f"{name[:160]}")
    else:
        lines += ["no CUDA events (a CPU run); the top 25 operators of this thread by CPU time (the network "
                  "runs on the Restore's compute thread, which this thread's profiler does not see)", "",
                  prof.key_averages().table(sort_by="cpu_time_total", row_limit=25)]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:3]), flush=True)


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


def _naive(net: Any, frames: np.ndarray, device: str, times: list[float]) -> None:
    """Reference test script: per output frame, read its window's images again, run net(x) (in the
    network's type); appends each frame's arrival time to ``times``."""
    import torch

    dtype = next(net.parameters()).dtype
    # What cv2.imread would have returned for each frame: uint8, BGR, HWC.
    images = [np.ascontiguousarray((f[::-1].transpose(1, 2, 0) * 255).round().astype(np.uint8)) for f in frames]
    for n in range(len(frames)):
        # img2tensor(bgr2rgb=True, float32) / 255 for each frame of the window, stacked on T.
        window_images = [images[i].astype(np.float32) / 255.0 for i in window(n, len(frames))]
        x = torch.stack([torch.from_numpy(img[:, :, ::-1].transpose(2, 0, 1).copy()) for img in window_images])
        with torch.inference_mode():
            out = net(x[None].to(device, dtype)).float().cpu()
        # tensor2img: clamp, RGB -> BGR, HWC, uint8
        (out[0].clamp(0, 1).numpy()[::-1].transpose(1, 2, 0) * 255).round().astype(np.uint8)
        times.append(time.perf_counter())


def _modify_frame(net: Any, frames: np.ndarray, device: str, times: list[float]) -> None:
    """std.ModifyFrame, neighbours fetched with get_frame inside the callback, one global lock."""
    import torch
    import vapoursynth as vs

    dtype = next(net.parameters()).dtype
    clip = source_clip(frames)
    lock = threading.Lock()
    scale = net.scale

    def restore(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        with lock:
            planes = [np.stack([np.asarray(clip.get_frame(i)[p]) for p in range(3)])
                      for i in window(n, clip.num_frames)]
            with torch.inference_mode():
                out = net(torch.from_numpy(np.stack(planes))[None].to(device, dtype))[0].float().cpu().numpy()
            dst = f.copy()
            for p in range(3):
                np.asarray(dst[p])[:] = out[p]
            return dst

    blank = vs.core.std.BlankClip(clip, width=clip.width * scale, height=clip.height * scale)
    for _ in vs.core.std.ModifyFrame(blank, blank, restore).frames():
        times.append(time.perf_counter())


def _worker_vspipe(checkpoint: str, setup: Setup) -> dict[str, Any]:
    total = setup.warmup + setup.count
    with tempfile.TemporaryDirectory(prefix="vsedvr-bench-") as tmp:
        env = thread_env(setup.threads, _WAIT_POLICY)
        env["XDG_CONFIG_HOME"] = str(Path(tmp) / "xdg-config")
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH")) if p)
        subprocess.run([str(VENV_BIN / "vapoursynth"), "config"], env=env, check=True, capture_output=True)
        script = Path(tmp) / "bench.vpy"
        script.write_text(VPY)
        record_file = Path(tmp) / "frames"
        args = dict(checkpoint=checkpoint, frames=total, height=setup.height,
                    width=setup.width, threads=setup.threads, device=setup.device, precision=setup.precision,
                    record_file=record_file)
        cmd = [str(VENV_BIN / "vspipe"), "--progress"]
        for key, value in args.items():
            cmd += ["-a", f"{key}={value}"]
        cmd += [str(script), "--"]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        lines = [line.split() for line in record_file.read_text().splitlines()] if record_file.exists() else []
    if done.returncode:
        raise RuntimeError(f"vspipe failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = re.search(r"Output (\d+) frames in ([\d.]+) seconds", done.stderr)
    if not found or int(found.group(1)) != total or len(lines) != total:
        raise RuntimeError(f"no 'Output {total} frames in ... seconds' from vspipe, or {len(lines)} frames "
                           f"recorded:\n{done.stderr[-3000:]}")
    # frames complete in any order; their completion times, in time order, after vspipe's own start
    times = sorted(float(line[1]) for line in lines)
    begin = times[-1] - float(found.group(2))  # vspipe's "Output ... in S seconds" ends at its last frame
    result = _timing(times, min(begin, times[0]), setup.warmup)
    result.update(load_seconds=wall - float(found.group(2)), peak_rss_mib=_peak_rss_mib(resource.RUSAGE_CHILDREN))
    if len(lines[-1]) > 2:
        result.update(peak_vram_mib=max(float(line[2]) for line in lines),
                      peak_reserved_mib=max(float(line[3]) for line in lines))
    return result


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
    parser.add_argument("--precision", default="fp32", metavar="P[,P...]",
                        help="fp32, fp16 or bf16, or several comma-separated (each measured apart): every "
                             "variant computes in it (fp16/bf16 need --device cuda; default fp32)")
    parser.add_argument("--warmup", type=int, metavar="N",
                        help="untimed frames of the same clip before the timed ones, in every variant "
                             "(default: 2 x core.num_threads on CUDA, 0 on the CPU)")
    parser.add_argument("--peak-tflops", type=float, metavar="TFLOPS",
                        help="the device's peak, for MFU, with one --precision (default: looked up for "
                             "known GPUs; none on the CPU)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved repetitions; medians are reported (default 1)")
    parser.add_argument("--omp-wait-policy", default="passive", metavar="POLICY",
                        help="OMP_WAIT_POLICY of every measured subprocess (default passive: idle OpenMP "
                             "workers sleep instead of spinning, which on a machine shared with other "
                             "busy processes otherwise stalls torch ops by milliseconds each); '' keeps "
                             "the environment's")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help=f"instead of timing: {PROFILE_FRAMES} steady frames of a_python (the first model "
                             "and precision) under torch.profiler, summarised to FILE (top 25 CUDA kernels, "
                             "kernels per frame, GPU idle time)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    height, width = args.size
    global _WAIT_POLICY
    _WAIT_POLICY = args.omp_wait_policy or None

    precisions = [p for p in args.precision.split(",") if p]
    if args.worker:
        setup = Setup(height, width, args.frames, args.threads, args.device, args.precision, args.warmup or 0)
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
    for p in precisions:
        if p not in ("fp32", "fp16", "bf16"):
            parser.error(f"unknown precision {p!r}; choose from fp32, fp16, bf16")
        if p != "fp32" and args.device != "cuda":
            parser.error(f"--precision {p} needs --device cuda (Restore computes fp32 on the CPU)")
    if not precisions or (args.peak_tflops and len(precisions) > 1):
        parser.error("--precision: one or more of fp32, fp16, bf16 (with --peak-tflops, one)")
    if height % 4 or width % 4:
        parser.error("--size must be multiples of 4")
    if args.frames < NUM_FRAMES_T:
        parser.error(f"--frames must be at least {NUM_FRAMES_T} (the reference windows need it)")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA device here")

    torch.set_num_threads(args.threads)
    warmup = default_warmup(args.device) if args.warmup is None else args.warmup
    info = machine_info(args.threads)
    info["omp_wait_policy"] = _WAIT_POLICY or os.environ.get("OMP_WAIT_POLICY", "(unset)")
    print(machine_line(info), flush=True)
    print(f"# input {height}x{width}, {warmup} warm-up + {args.frames} timed frames, repeats {args.repeats}; "
          f"command: {' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}",
          flush=True)
    peaks: dict[str, float | None] = {p: None for p in precisions}
    if args.device == "cuda":
        peaks = {p: args.peak_tflops or gpu_peak_tflops(info["gpu"], p) for p in precisions}
        shown = ", ".join(f"{p} {v:g} TFLOP/s" if v else f"{p} unknown (--peak-tflops)" for p, v in peaks.items())
        print(f"# {info['gpu']}; peak for MFU: {shown}", flush=True)
    report: dict[str, Any] = dict(machine=info, setup=asdict(Setup(height, width, args.frames, args.threads,
                                                                   args.device, args.precision, warmup)),
                                  repeats=args.repeats, peak_tflops=peaks, models={})

    if args.profile:
        with tempfile.TemporaryDirectory(prefix="vsedvr-bench-") as tmp:
            checkpoint = Path(tmp) / f"{models[0]}_random.pth"
            make_checkpoint(models[0], checkpoint)
            profile_restore(str(checkpoint), Setup(height, width, PROFILE_FRAMES, args.threads, args.device,
                                                   precisions[0], warmup), args.profile)
        return 0

    with tempfile.TemporaryDirectory(prefix="vsedvr-bench-") as tmp:
        for model in models:
            checkpoint = Path(tmp) / f"{model}_random.pth"
            make_checkpoint(model, checkpoint)
            flops = count_flops(model, height, width)
            report["models"][model] = dict(flops_gflop=flops, precisions={})
            for precision in precisions:
                setup = Setup(height, width, args.frames, args.threads, args.device, precision, warmup)
                rows, ratios = _measure(model, checkpoint, setup, variants, args.repeats, flops, peaks[precision])
                report["models"][model]["precisions"][precision] = dict(variants=rows, speed_ratios=ratios)
                _print_model(model, setup, flops, rows, ratios)
                if args.json:  # after each part: a run killed later keeps what it measured
                    args.json.write_text(json.dumps(report, indent=2))

    report["machine"]["loadavg_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def _measure(model: str, checkpoint: Path, setup: Setup, variants: list[str], repeats: int,
             flops: dict[str, float], peak: float | None) -> tuple[dict[str, Any], dict[str, float]]:
    """Every variant at one precision, ``repeats`` times interleaved: their rows and speed ratios."""
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            runs[v].append(run_worker(v, checkpoint, setup))
            print(f"  {model} {setup.precision} {v}: {runs[v][-1]['seconds']:.2f} s", file=sys.stderr, flush=True)
    rows = {}
    for v in variants:
        timed = runs[v][0]["frames_timed"]
        seconds = statistics.median(r["seconds"] for r in runs[v])
        gflop = flops["plugin"] if v.startswith("a_") else flops["full"]
        fps = timed / seconds

        def most(key: str) -> float | None:
            values = [r[key] for r in runs[v] if r.get(key) is not None]
            return max(values) if values else None

        firsts = [r["first_frame_seconds"] for r in runs[v] if r.get("first_frame_seconds") is not None]
        rows[v] = dict(seconds=seconds, frames_timed=timed, warmup_frames=runs[v][0]["warmup_frames"], fps=fps,
                       interval_median_s=statistics.median(r["interval_median_s"] for r in runs[v]),
                       interval_p90_s=statistics.median(r["interval_p90_s"] for r in runs[v]),
                       gflop_per_frame=gflop, gflops=gflop * fps, mfu=gflop * fps / (peak * 1e3) if peak else None,
                       peak_rss_mib=most("peak_rss_mib"), peak_vram_mib=most("peak_vram_mib"),
                       peak_reserved_mib=most("peak_reserved_mib"),
                       first_frame_seconds=statistics.median(firsts) if firsts else None,
                       load_seconds=statistics.median(r["load_seconds"] for r in runs[v]), runs=runs[v])
    ratios = {f"{a}/{b}": rows[a]["fps"] / rows[b]["fps"]
              for a in ("a_vspipe", "a_python", "a_compile", "a_channelslast", "a_graphs", "a_fast")
              for b in ("b_naive", "c_modify", "c_fastdcn", "a_python", "a_globalthreads", "a_cudnnsearch")
              if a in rows and b in rows and a != b}
    return rows, ratios


def _print_model(model: str, setup: Setup, flops: dict[str, float], rows: dict[str, dict[str, Any]],
                 ratios: dict[str, float]) -> None:
    print(f"\n{model} {setup.precision} at {setup.height}x{setup.width} -> {4 * setup.height}x{4 * setup.width}, "
          f"{setup.warmup} warm-up + {setup.count} timed output frames; GFLOP per output frame: whole network "
          f"{flops['full']:.1f}, vsedvr (features of 1 frame + 1 window) {flops['plugin']:.1f}")
    print(f"  {'variant':52s} {'fps':>7s} {'median s':>8s} {'p90 s':>7s} {'GFLOP/s':>8s} {'MFU':>6s} "
          f"{'peak RSS':>9s} {'VRAM alloc/reserved':>20s}")
    for v, r in rows.items():
        mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "     -"
        vram = (f"{r['peak_vram_mib']:7.0f}/{r['peak_reserved_mib']:.0f} MiB" if r["peak_vram_mib"] is not None
                else f"{'-':>20s}")
        first = f"  (first frame, compiling: {r['first_frame_seconds']:.1f} s)" if r["first_frame_seconds"] else ""
        print(f"  {LABELS[v]:52s} {r['fps']:7.3f} {r['interval_median_s']:8.3f} {r['interval_p90_s']:7.3f} "
              f"{r['gflops']:8.1f} {mfu} {r['peak_rss_mib']:6.0f} MiB {vram:>20s}{first}")
    if ratios:
        print("  speed ratios (fps / fps): " + ", ".join(f"{k} = {v:.2f}x" for k, v in ratios.items()))


if __name__ == "__main__":
    sys.exit(main())
