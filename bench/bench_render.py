#!/usr/bin/env python3
"""Throughput of ``vsedvr render`` with 1 and 2 local workers against one plain vspipe, in one
run, and the start-up cost every segment pays (the numbers docs/long-videos.md derives the
segment length and the 170,000-frame table from).

The script: a noise clip (RGBS, --size, --frames) through ``core.edvr.Restore(model=--model,
device=--device)`` to YUV420P10, as a film script ends. Variants (each a subprocess, run one
after the other, every worker with --threads torch threads through OMP_NUM_THREADS):

  vspipe        one ``vspipe -c y4m SCRIPT --``: wall time, and vspipe's own rate after start-up
  render_1      ``vsedvr render --workers 1`` (segments of --segment frames, joined, verified)
  render_2      ``vsedvr render --workers 2``
  startup       ``vspipe --info`` (Python, VapourSynth, torch, the model: everything but frames),
                and each segment's time to its first frame (from the render manifest)

Reported: frames per wall-clock second (start-up, encoding, verification included) and the ratio
to the vspipe baseline; per-segment start-up = first-frame time - one steady frame.

Examples::

    python bench/bench_render.py                                 # 48 frames of 32x24, segments of 24
    python bench/bench_render.py --size 64x48 --frames 96 --segment 24 --json render.json
    python bench/bench_render.py --device cuda --model edvrm --size 180x320 --frames 600 --segment 200
"""
from __future__ import annotations

import argparse
import json
import os
import re
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


def ffmpeg_exe() -> str:
    import shutil

    path = shutil.which("ffmpeg")
    if path:
        return path
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench_render: {' '.join(cmd[:4])}... failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stderr


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run it under `nice` on a shared machine; the ratios are the result.")
    p.add_argument("--model", default="edvr_demo", help="zoo name or checkpoint (default edvr_demo, bundled)")
    p.add_argument("--device", default="cpu", help="Restore's device (default cpu)")
    p.add_argument("--size", default="32x24", help="input WIDTHxHEIGHT (default 32x24)")
    p.add_argument("--frames", type=int, default=48, help="frames (default 48)")
    p.add_argument("--segment", type=int, default=24, help="frames per segment (default 24)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per vspipe (default 1)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--film-frames", type=int, default=170_000, help="paper table: frames of the film (default 170000)")
    p.add_argument("--gpu-frame-s", type=float, default=0.15,
                   help="paper table: seconds per frame on one GPU (default 0.15, an assumption: EDVR-M "
                        "540x960 is ~9 TFLOP per frame, i.e. ~60 TFLOP/s sustained)")
    p.add_argument("--gpu-init", type=float, default=5.0,
                   help="paper table: CUDA context and first-kernel cost added to the measured start-up "
                        "(default 5 s, an assumption)")
    args = p.parse_args()
    width, height = map(int, args.size.lower().split("x"))

    tmp = Path(tempfile.mkdtemp(prefix="bench-render-"))
    script = tmp / "bench.vpy"
    script.write_text(SCRIPT.format(frames=args.frames, width=width, height=height, model=args.model,
                                    device=args.device))
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               XDG_CONFIG_HOME=str(tmp / "xdg"), PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    subprocess.run([str(venv_bin / "vapoursynth"), "config"], env=env, check=True, capture_output=True)
    vspipe = str(venv_bin / "vspipe")
    ffmpeg = ffmpeg_exe()
    results: dict[str, object] = {"settings": {**vars(args), "json": str(args.json) if args.json else None,
                                               "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}}

    info_s, _ = timed([vspipe, "--info", str(script), "-"], env)
    wall, err = timed([vspipe, "-c", "y4m", str(script), "--"], env)
    m = re.search(r"Output (\d+) frames in ([\d.]+) seconds", err)
    steady = float(m.group(2)) / int(m.group(1)) if m else float("nan")
    results["vspipe"] = {"wall_s": wall, "fps_wall": args.frames / wall, "steady_s_per_frame": steady,
                         "info_s": info_s}
    for workers in (1, 2):
        out = tmp / f"render_{workers}.mkv"
        wall, _ = timed([sys.executable, "-m", "vsedvr", "render", str(script), "-o", str(out), "--workers",
                         str(workers), "--segment", str(args.segment), "--keep", "--ffmpeg", ffmpeg], env)
        segs = json.loads((tmp / f"render_{workers}.mkv.parts" / "manifest.json").read_text())["segments"].values()
        first = [s["first_frame_s"] for s in segs]
        results[f"render_{workers}"] = {"wall_s": wall, "fps_wall": args.frames / wall,
                                        "vs_vspipe": results["vspipe"]["wall_s"] / wall,  # type: ignore[index]
                                        "segments": len(first), "first_frame_s": first,
                                        "startup_s": [f - steady for f in first]}
    results["settings"]["load_avg_end"] = os.getloadavg()[0]  # type: ignore[index]

    v = results["vspipe"]
    print(f"{args.frames} frames {width}x{height} -> x4, model {args.model} on {args.device}, "
          f"{args.threads} torch thread(s) per vspipe, segments of {args.segment}")
    print(f"  vspipe --info (start-up without frames): {info_s:6.2f} s")
    print(f"  steady frame time (vspipe's own count):  {steady:6.3f} s/frame")
    print(f"  {'variant':<10} {'wall s':>8} {'fps':>7} {'x vspipe':>9}  start-up per segment (s)")
    print(f"  {'vspipe':<10} {v['wall_s']:8.2f} {v['fps_wall']:7.3f} {1.0:9.2f}")  # type: ignore[index]
    for workers in (1, 2):
        r = results[f"render_{workers}"]
        ups = ", ".join(f"{x:.2f}" for x in r["startup_s"])  # type: ignore[index]
        print(f"  {'render_' + str(workers):<10} {r['wall_s']:8.2f} {r['fps_wall']:7.3f} {r['vs_vspipe']:9.2f}  {ups}")  # type: ignore[index]
    startup = max(results["render_1"]["startup_s"] + results["render_2"]["startup_s"])  # type: ignore[index, operator]
    results["paper"] = paper_table(startup + args.gpu_init, args.gpu_frame_s, args.film_frames)
    print(f"\n  on paper: {args.film_frames} frames at {args.gpu_frame_s} s/frame per GPU, start-up per segment "
          f"{startup:.1f} s (measured, worst) + {args.gpu_init} s (CUDA init, assumed)")
    print(f"  {'GPUs':>5} {'segment':>8} {'segments':>9} {'rounds':>7} {'hours':>7} {'x ideal':>8}")
    for row in results["paper"]:  # type: ignore[attr-defined]
        print(f"  {row['gpus']:5d} {row['segment']:8d} {row['segments']:9d} {row['rounds']:7d} "
              f"{row['hours']:7.2f} {row['vs_ideal']:8.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def paper_table(startup_s: float, frame_s: float, frames: int) -> list[dict[str, float]]:
    """Wall time of a film on G GPUs with segments of L frames: every GPU runs ceil(S/G) segments
    one after the other (equal lengths), each paying the start-up once. Join and verification
    (ffmpeg, disk-bound) are not included."""
    rows = []
    for gpus in (1, 8, 64):
        for segment in sorted({500, 2000, 5000, -(-frames // gpus)}):
            segments = -(-frames // segment)
            rounds = -(-segments // gpus)
            per_gpu = rounds * startup_s + min(rounds * segment, frames) * frame_s
            ideal = frames * frame_s / gpus
            rows.append({"gpus": gpus, "segment": segment, "segments": segments, "rounds": rounds,
                         "hours": per_gpu / 3600, "vs_ideal": per_gpu / ideal})
    return rows


if __name__ == "__main__":
    main()
