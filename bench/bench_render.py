#!/usr/bin/env python3
"""Throughput of ``vsedvr render`` with 1 and 2 local workers against one plain vspipe as a user runs
it (default threads: no OMP_NUM_THREADS), side by side in one run, and the start-up a worker pays
once (the numbers docs/long-videos.md derives the segment length and the 170,000-frame table from).

The script: a noise clip (RGBS, --size, --frames) through ``core.edvr.Restore(model=--model,
device=--device)`` to YUV420P10, as a film script ends. Variants (each a subprocess, one after the
other, in the order given by --order, repeated --repeat times):

  vspipe        ``vspipe -c y4m SCRIPT - | ffmpeg -c:v ffv1`` (what a user would run to get a lossless
                file), the environment as it is: PyTorch picks its own thread count
  render_1      ``vsedvr render --workers 1`` (segments of --segment frames, joined, verified)
  render_2      ``vsedvr render --workers 2`` (each worker 1/2 of the cores)

Reported: wall time, frames per wall-clock second and the ratio to vspipe (the median over repeats);
each worker's start-up (Python, VapourSynth, torch, the model: everything before the first segment)
from the render's own log.

``--noop``: the pipeline's own ceiling, no model: a 3840x2160 YUV420P10 clip (noise upscaled 4x
by repetition, 4 frames cycled, copied into each frame) through ``vspipe | ffmpeg -c:v ffv1`` and
``vsedvr render --workers 1``; besides the wall times it reports the render's tail (from the
"joining" line to the end: the join, its frame-by-frame verification, the move and the output's
SHA-256, all on the driver) per frame, and puts it into the paper table.

``--encode ARGS``: the baseline becomes ``vspipe | ffmpeg ARGS`` and the renders get ``--encode ARGS``
(encoded per segment on the workers, the chunks joined with ``-c copy``); the tail is then what is
left after the last segment. ``--baseline-python PY``: also time ``vsedvr render --workers 1`` from
another environment (e.g. the main branch's ``.venv/bin/python``), as ``render_1_base``, interleaved
with the others: before and after in one run.

Examples::

    nice python bench/bench_render.py                                    # 96 frames of 96x64, segments of 24
    python bench/bench_render.py --size 64x48 --frames 48 --segment 12 --json render.json
    python bench/bench_render.py --device cuda --model edvrm --size 180x320 --frames 600 --segment 200
    nice python bench/bench_render.py --noop --frames 24 --segment 12       # the 4K ceiling and the tail
    nice python bench/bench_render.py --noop --frames 24 --segment 8 --encode "-c:v libx264 -preset veryfast -crf 18" \
        --baseline-python ../main/.venv/bin/python                          # --encode, before and after
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = '''
import numpy as np
import vapoursynth as vs
core = vs.core
frames = np.random.default_rng(0).random(({frames}, 3, {height}, {width}), dtype=np.float32)
blank = core.std.BlankClip(width={width}, height={height}, length={frames}, format=vs.RGBS, fpsnum=24, fpsden=1)
def fill(n, f):
    out = f.copy()
    for p in range(3):
        np.asarray(out[p])[:] = frames[n, p]
    return out
clip = core.edvr.Restore(core.std.ModifyFrame(blank, blank, fill), model="{model}", device="{device}")
core.resize.Bicubic(clip, format=vs.YUV420P10, matrix_s="709").set_output()
'''


NOOP_SCRIPT = '''
import numpy as np
import vapoursynth as vs
core = vs.core
rng = np.random.default_rng(0)
def plane(h, w):  # noise at a quarter of the size, each sample repeated 4x4 (a stand-in for an upscale)
    return np.repeat(np.repeat(rng.integers(64, 940, (h // 4, w // 4), dtype=np.uint16), 4, 0), 4, 1)
cache = [[plane(2160, 3840), plane(1080, 1920), plane(1080, 1920)] for _ in range(4)]
blank = core.std.BlankClip(width=3840, height=2160, length={frames}, format=vs.YUV420P10, fpsnum=24, fpsden=1)
def fill(n, f):
    out = f.copy()
    for p in range(3):
        np.asarray(out[p])[:] = cache[n % 4][p]
    return out
core.std.ModifyFrame(blank, blank, fill).set_output()
'''


def ffmpeg_exe() -> str:
    import shutil

    path = shutil.which("ffmpeg")
    if path:
        return path
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def timed(cmd: list[str] | str, env: dict[str, str]) -> tuple[float, str, float]:
    """Wall time, stderr, and the seconds from the render's "joining" line to the end (its tail)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            shell=isinstance(cmd, str))
    assert proc.stderr is not None
    lines, joined = [], float("nan")
    for line in proc.stderr:
        lines.append(line)
        if "joining" in line:
            joined = time.perf_counter()
    code = proc.wait()
    wall = time.perf_counter() - t0
    err = "".join(lines)
    if code != 0:
        sys.exit(f"bench_render: {cmd if isinstance(cmd, str) else ' '.join(cmd[:4])}... failed:\n{err[-3000:]}")
    return wall, err, time.perf_counter() - joined


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run it under `nice` on a shared machine; the ratios are the result.")
    p.add_argument("--model", default="edvr_demo", help="zoo name or checkpoint (default edvr_demo, bundled)")
    p.add_argument("--device", default="cpu", help="Restore's device (default cpu)")
    p.add_argument("--size", default="96x64", help="input WIDTHxHEIGHT (default 96x64)")
    p.add_argument("--frames", type=int, default=96, help="frames (default 96)")
    p.add_argument("--segment", type=int, default=24, help="frames per segment (default 24)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each variant, interleaved (default 1)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--noop", action="store_true",
                   help="the pipeline's ceiling: a 3840x2160 YUV420P10 clip without a model (--size, --model, "
                        "--device unused), vspipe and --workers 1, and the render's tail per frame")
    p.add_argument("--encode", metavar="ARGS", help="ffmpeg arguments: the baseline pipes into ffmpeg ARGS, the "
                   "renders get --encode ARGS")
    p.add_argument("--baseline-python", metavar="PY", help="also time vsedvr render --workers 1 with this Python "
                   "(another checkout's environment) as render_1_base")
    p.add_argument("--film-frames", type=int, default=170_000, help="paper table: frames of the film (default 170000)")
    p.add_argument("--gpu-frame-s", type=float, default=0.15,
                   help="paper table: seconds per frame on one GPU (default 0.15, an assumption: EDVR-M "
                        "540x960 is ~9 TFLOP per frame, i.e. ~60 TFLOP/s sustained)")
    p.add_argument("--gpu-init", type=float, default=5.0,
                   help="paper table: CUDA context and first-kernel cost added to the measured start-up "
                        "(default 5 s, an assumption)")
    p.add_argument("--segment-cost", type=float, default=0.5,
                   help="paper table: seconds a worker loses per segment (ffmpeg start, the boundary's extra "
                        "feature encodings, the manifest; default 0.5, see docs/long-videos.md)")
    args = p.parse_args()
    width, height = map(int, args.size.lower().split("x"))

    tmp = Path(tempfile.mkdtemp(prefix="bench-render-"))
    script = tmp / "bench.vpy"
    if args.noop:
        script.write_text(NOOP_SCRIPT.format(frames=args.frames))
        width, height = 3840, 2160
    else:
        script.write_text(SCRIPT.format(frames=args.frames, width=width, height=height, model=args.model,
                                        device=args.device))
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp / "xdg"), PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # a plain run: the defaults
        env.pop(key, None)
    subprocess.run([str(venv_bin / "vapoursynth"), "config"], env=env, check=True, capture_output=True)
    vspipe = str(venv_bin / "vspipe")
    ffmpeg = ffmpeg_exe()
    results: dict[str, object] = {"settings": {**vars(args), "json": str(args.json) if args.json else None,
                                               "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}}
    renders = [(f"render_{w}", sys.executable, w) for w in ((1,) if args.noop else (1, 2))]
    if args.baseline_python:
        renders.append(("render_1_base", args.baseline_python, 1))
    walls: dict[str, list[float]] = {"vspipe": [], **{name: [] for name, _, _ in renders}}
    startups: dict[str, list[float]] = {name: [] for name, _, _ in renders}
    tails: dict[str, list[float]] = {name: [] for name, _, _ in renders}
    ffv1 = "-c:v ffv1 -level 3 -g 1 -slicecrc 1 -slices 4 -coder range_tab -context 0"  # the segments' settings
    encode = ["--encode", args.encode] if args.encode else []
    for run in range(args.repeat):
        plain = tmp / f"plain_{run}.mkv"
        wall, _, _ = timed(f"{shlex.quote(vspipe)} -c y4m {shlex.quote(str(script))} - | {shlex.quote(ffmpeg)} -v error "
                           f"-y -f yuv4mpegpipe -i - {args.encode or ffv1} {shlex.quote(str(plain))}", env)
        plain.unlink()
        walls["vspipe"].append(wall)
        for name, python, workers in renders:
            out = tmp / f"{name}_{run}.mkv"
            wall, err, tail = timed([python, "-P", "-m", "vsedvr", "render", str(script), "-o", str(out), "--workers",
                                     str(workers), "--segment", str(args.segment), "--ffmpeg", ffmpeg, *encode], env)
            out.unlink()
            walls[name].append(wall)
            tails[name].append(tail)
            m = re.search(r"evaluated the script in ([\d.]+) s", err)
            startups[name].append(float(m.group(1)) if m else float("nan"))
    results["settings"]["load_avg_end"] = os.getloadavg()[0]  # type: ignore[index]
    base = statistics.median(walls["vspipe"])
    for name, ws in walls.items():
        results[name] = {"wall_s": ws, "median_s": statistics.median(ws), "fps_wall": args.frames / statistics.median(ws),
                         "vs_vspipe": base / statistics.median(ws), "startup_s": startups.get(name),
                         "tail_s": tails.get(name)}

    what = "3840x2160 YUV420P10, no model" if args.noop else f"{width}x{height} -> x4, model {args.model} on {args.device}"
    print(f"{args.frames} frames {what}, segments of "
          f"{args.segment}, {os.cpu_count()} cores, load average {results['settings']['load_avg_start']:.1f} -> "  # type: ignore[index]
          f"{results['settings']['load_avg_end']:.1f}, {args.repeat} run(s) each (median)")  # type: ignore[index]
    if args.encode:
        print(f"  --encode {args.encode} (the vspipe variant pipes into ffmpeg with these arguments)")
    print(f"  {'variant':<14} {'wall s':>8} {'fps':>7} {'x vspipe':>9} {'tail s':>7}  worker start-up (s)")
    for name in walls:
        r = results[name]
        ups = ", ".join(f"{x:.1f}" for x in (r["startup_s"] or []))  # type: ignore[index]
        tail = f"{statistics.median(r['tail_s']):7.2f}" if r["tail_s"] else " " * 7  # type: ignore[index]
        print(f"  {name:<14} {r['median_s']:8.2f} {r['fps_wall']:7.3f} {r['vs_vspipe']:9.2f} {tail}  {ups}")  # type: ignore[index]
    startup = max(x for ups in startups.values() for x in ups)
    # the tail per output frame, measured only at the output size it scales with (--noop: 4K)
    tail_frame_s = statistics.median(tails["render_1"]) / args.frames if args.noop else 0.0
    results["paper"] = paper_table(startup + args.gpu_init, args.segment_cost, args.gpu_frame_s, args.film_frames,
                                   tail_frame_s)
    print(f"\n  on paper: {args.film_frames} frames at {args.gpu_frame_s} s/frame per GPU; a worker starts once: "
          f"{startup:.1f} s (measured, worst) + {args.gpu_init} s (CUDA init, assumed); {args.segment_cost} s per segment"
          + (f"; then the tail on the driver, {tail_frame_s:.3f} s per 4K frame (measured)" if args.noop else
             "; the tail (join, verification) not included: see --noop"))
    print(f"  {'GPUs':>5} {'segment':>8} {'segments':>9} {'rounds':>7} {'GPU h':>7} {'x ideal':>8} {'tail h':>7} "
          f"{'total h':>8} {'x ideal':>8}")
    for row in results["paper"]:  # type: ignore[attr-defined]
        print(f"  {row['gpus']:5d} {row['segment']:8d} {row['segments']:9d} {row['rounds']:7d} "
              f"{row['hours']:7.2f} {row['vs_ideal']:8.3f} {row['tail_hours']:7.2f} {row['total_hours']:8.2f} "
              f"{row['total_vs_ideal']:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def paper_table(startup_s: float, segment_s: float, frame_s: float, frames: int,
                tail_frame_s: float = 0.0) -> list[dict[str, float]]:
    """Wall time of a film on G GPUs with segments of L frames: each GPU's worker starts once, then
    takes segments as it finishes them (the busiest renders ceil(S/G) of them), paying
    ``segment_s`` for each; then the tail on the driver (join and verification, serial),
    ``tail_frame_s`` per frame whatever the GPUs."""
    rows = []
    for gpus in (1, 8, 64):
        for segment in sorted({100, 500, 2000, -(-frames // gpus)}):
            segments = -(-frames // segment)
            rounds = -(-segments // gpus)
            per_gpu = startup_s + rounds * segment_s + min(rounds * segment, frames) * frame_s
            ideal = frames * frame_s / gpus
            tail = frames * tail_frame_s
            rows.append({"gpus": gpus, "segment": segment, "segments": segments, "rounds": rounds,
                         "hours": per_gpu / 3600, "vs_ideal": per_gpu / ideal, "tail_hours": tail / 3600,
                         "total_hours": (per_gpu + tail) / 3600, "total_vs_ideal": (per_gpu + tail) / ideal})
    return rows


if __name__ == "__main__":
    main()
