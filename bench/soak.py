#!/usr/bin/env python3
"""Soak test: many small frames through ``core.edvr.Restore``, watching the process's memory.

A tiny EDVR with random weights (built here, like the tests' ``tiny_checkpoint``) restores a
small synthetic clip. Requests mix sequential runs with random jumps and revisits, with up to
``--in-flight`` frames requested at once on ``--threads`` VapourSynth threads. After a warm-up
(one pass over the clip, so that the filter's feature cache and PyTorch's allocator reach their
steady size; VapourSynth's cache of Restore's output is off unless ``--vs-cache``, so that every
request runs the filter) the resident set size (RSS) is printed as the baseline, then every ``--every``
frames, and at the end with the drift: end - baseline, and the least-squares slope over all
samples (MiB per 1000 frames), also without the baseline sample ("steady": the first interval
holds one-off growth such as allocator arenas). A few frames are also checked against their warm-up result each
time they come back (the output must not depend on load or order).

Exit status: 0; 1 if a checked frame differs; 2 if ``--max-drift-mib`` is given and exceeded.

Examples::

    python bench/soak.py                        # 5000 frames of 16x16, 8 threads
    python bench/soak.py --frames 1000 --size 32x32 --json soak.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux /proc; elsewhere ru_maxrss, a peak)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def tiny_model(folder: Path, seed: int) -> Path:
    """A small EDVR (8 channels, TSA, 5 frames, x4) with random weights, in BasicSR's layout."""
    import torch

    from vsedvr.nets import EDVR

    torch.manual_seed(seed)
    net = EDVR(num_feat=8, num_frame=5, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1)
    path = folder / "soak_tiny_edvr.pth"
    torch.save({"params": net.state_dict()}, path)
    return path


def source_clip(width: int, height: int, length: int, seed: int):
    """Smooth random texture moving a little every frame, RGBS in [0, 1] (no test helpers needed)."""
    import vapoursynth as vs

    rng = np.random.default_rng(seed)
    base = rng.random((3, height + length, width + 2 * length), dtype=np.float32)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = base[p, n:n + height, 2 * n:2 * n + width]
        return out

    blank = vs.core.std.BlankClip(width=width, height=height, length=length, format=vs.RGBS, fpsnum=24, fpsden=1)
    return vs.core.std.ModifyFrame(blank, blank, fill)


def request_order(total: int, length: int, random_share: float, rng: random.Random):
    """Frame numbers: sequential runs (10-60 frames from a random start) mixed with random single frames."""
    made = 0
    while made < total:
        if rng.random() < random_share:
            n = rng.randrange(length)
            made += 1
            yield n
        else:
            start, run = rng.randrange(length), rng.randint(10, 60)
            for n in range(start, min(start + run, length)):
                if made >= total:
                    return
                made += 1
                yield n


def slope_per_1000(samples: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS (MiB) over frames, per 1000 frames."""
    if len(samples) < 2:
        return 0.0
    x = np.array([s[0] for s in samples], dtype=np.float64)
    y = np.array([s[1] for s in samples], dtype=np.float64)
    if np.ptp(x) == 0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0] * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--frames", type=int, default=5000, help="frames to request after the warm-up (5000)")
    parser.add_argument("--size", default="16x16", help="input frame size WxH (16x16; output is 4x that)")
    parser.add_argument("--length", type=int, default=200, help="clip length; requests wrap around it (200)")
    parser.add_argument("--threads", type=int, default=8, help="core.num_threads (8)")
    parser.add_argument("--in-flight", type=int, default=16, help="frames requested at once (16)")
    parser.add_argument("--random-share", type=float, default=0.5,
                        help="share of requests that are random single frames, the rest sequential runs (0.5)")
    parser.add_argument("--every", type=int, default=500, help="print RSS every N frames (500)")
    parser.add_argument("--model", help="checkpoint to use instead of the tiny random EDVR built here")
    parser.add_argument("--vs-cache", action="store_true",
                        help="keep VapourSynth's cache of Restore's output frames (off: every request runs the filter)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-drift-mib", type=float, help="exit 2 if RSS grew more than this after warm-up")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    import vapoursynth as vs

    core = vs.core
    core.num_threads = args.threads
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="vsedvr-soak-") as tmp:
        model = args.model or str(tiny_model(Path(tmp), args.seed))
        clip = core.edvr.Restore(source_clip(width, height, args.length, args.seed), model=model)
        if not args.vs_cache:  # else revisits come from VapourSynth's frame cache, not from the filter
            core.std.SetVideoCache(clip, mode=0)

        def planes(frame: vs.VideoFrame) -> np.ndarray:
            return np.stack([np.asarray(frame[p]) for p in range(3)])

        # warm-up: one sequential pass; remember a few frames to check later
        t0 = time.monotonic()
        watched = {n: None for n in rng.sample(range(args.length), min(8, args.length))}
        for n, frame in enumerate(clip.frames()):
            if n in watched:
                watched[n] = planes(frame).copy()
        warmup_s = time.monotonic() - t0
        start_rss = rss_mib()
        print(f"soak: {args.frames} frames of {width}x{height} -> {4 * width}x{4 * height}, clip of {args.length}, "
              f"{args.threads} threads, {args.in_flight} in flight, {args.random_share:.0%} random, "
              f"output cache {'on' if args.vs_cache else 'off'}; "
              f"warm-up {args.length} frames in {warmup_s:.1f} s", flush=True)
        print(f"{'frames':>8} {'seconds':>8} {'fps':>7} {'RSS MiB':>9} {'drift':>8}", flush=True)
        print(f"{0:>8} {0.0:>8.1f} {'-':>7} {start_rss:>9.1f} {0.0:>+8.1f}", flush=True)

        samples = [(0, start_rss)]
        mismatches = checked = done = 0
        pending: deque = deque()
        t1 = time.monotonic()

        def collect() -> None:
            nonlocal mismatches, checked, done
            n, fut = pending.popleft()
            got = planes(fut.result())
            if watched.get(n) is not None:
                checked += 1
                if not np.array_equal(got, watched[n]):
                    mismatches += 1
                    print(f"soak: frame {n} differs from its warm-up result", file=sys.stderr, flush=True)
            done += 1
            if done % args.every == 0 or done == args.frames:
                now = time.monotonic() - t1
                rss = rss_mib()
                samples.append((done, rss))
                print(f"{done:>8} {now:>8.1f} {done / now:>7.1f} {rss:>9.1f} {rss - start_rss:>+8.1f}", flush=True)

        for n in request_order(args.frames, args.length, args.random_share, rng):
            pending.append((n, clip.get_frame_async(n)))
            if len(pending) >= args.in_flight:
                collect()
        while pending:
            collect()
        elapsed = time.monotonic() - t1

    end_rss = samples[-1][1]
    figures = {
        "frames": done, "size": [width, height], "threads": args.threads, "in_flight": args.in_flight,
        "seconds": round(elapsed, 2), "fps": round(done / elapsed, 2) if elapsed else None,
        "rss_start_mib": round(start_rss, 2), "rss_end_mib": round(end_rss, 2),
        "rss_peak_mib": round(max(r for _, r in samples), 2),
        "drift_mib": round(end_rss - start_rss, 2), "slope_mib_per_1000_frames": round(slope_per_1000(samples), 3),
        # without the baseline: the first interval holds one-off growth (allocator arenas, thread pools)
        "steady_slope_mib_per_1000_frames": round(slope_per_1000(samples[1:]), 3),
        "checked_frames": checked, "mismatches": mismatches,
        "samples": [[f, round(r, 2)] for f, r in samples],
    }
    print(f"soak: {done} frames in {elapsed:.1f} s ({figures['fps']} fps); RSS {start_rss:.1f} -> {end_rss:.1f} MiB "
          f"(drift {figures['drift_mib']:+.1f} MiB, peak {figures['rss_peak_mib']:.1f}); slope "
          f"{figures['slope_mib_per_1000_frames']:+.3f} MiB/1000 frames, "
          f"{figures['steady_slope_mib_per_1000_frames']:+.3f} after the first {args.every}; "
          f"{checked} frames re-checked, {mismatches} differed",
          flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    if mismatches:
        return 1
    if args.max_drift_mib is not None and figures["drift_mib"] > args.max_drift_mib:
        print(f"soak: RSS drift {figures['drift_mib']:+.1f} MiB exceeds {args.max_drift_mib} MiB", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
