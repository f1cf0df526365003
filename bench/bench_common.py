"""What the benchmarks in bench/ share: the benchmarked architectures, the input clip, the machine
line at the top of a run, the thread environment of the measured processes.

Imported by its siblings as ``import bench_common`` (Python puts a script's own folder first on
``sys.path``); a script that ``vspipe`` runs gets the folder through ``PYTHONPATH``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent


def tool_module(name: str) -> ModuleType:
    """``tools/<name>.py`` loaded from its path (e.g. the demo model's clips, which live with its
    trainer): sys.path is left alone, so nothing can shadow the installed vsedvr."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH_DIR.parent / "tools" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]

#: EDVR constructor arguments of the benchmarked variants (docs/edvr-reference.md#variants).
MODELS: dict[str, dict[str, Any]] = {
    "edvrm": {},
    "edvrl": dict(num_feat=128, num_reconstruct_block=40),
}
NUM_FRAMES_T = 5  # every benchmarked model has 5-frame windows, centre 2


def make_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture that moves a little every frame: (count, 3, H, W) float32 in [0, 1].

    The same frames as ``tests/clips.py``'s ``moving_pattern`` for the same seed.
    """
    rng = np.random.default_rng(seed)
    base = rng.random((3, height + count, width + 2 * count), dtype=np.float32)
    base = (base + np.roll(base, 1, axis=1) + np.roll(base, 1, axis=2)) / 3
    return np.stack([base[:, n:n + height, 2 * n:2 * n + width] for n in range(count)]).copy()


def source_clip(frames: np.ndarray):  # -> vs.VideoNode
    """The frames as an RGBS VapourSynth clip (what a source filter would deliver)."""
    import vapoursynth as vs

    count, _, height, width = frames.shape

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = frames[n, p]
        return out

    blank = vs.core.std.BlankClip(width=width, height=height, length=count, format=vs.RGBS, fpsnum=24, fpsden=1)
    return vs.core.std.ModifyFrame(blank, blank, fill)


def parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 64x112, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def thread_env(threads: int, wait_policy: str | None) -> dict[str, str]:
    """The environment of a measured process: ``threads`` OpenMP and MKL threads, ``OMP_WAIT_POLICY``
    (None: the caller's)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    return env


def machine_info(threads: int) -> dict[str, Any]:
    import torch
    import torchvision
    import vapoursynth as vs

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                cpu=cpu, gpu=gpu, logical_cpus=os.cpu_count(), threads=threads, python=platform.python_version(),
                torch=torch.__version__, torchvision=torchvision.__version__,
                vapoursynth=vs.core.core_version.release_major, platform=platform.platform(),
                loadavg_start=os.getloadavg())


def machine_line(info: dict[str, Any]) -> str:
    """The first line of a run's output: when, where, which versions, how loaded."""
    return (f"# {info['date']}  {info['cpu']} ({info['logical_cpus']} logical CPUs), {info['threads']} threads, "
            f"torch {info['torch']}, torchvision {info['torchvision']}, VapourSynth R{info['vapoursynth']}, "
            f"OMP_WAIT_POLICY {info['omp_wait_policy']}, load average {info['loadavg_start'][0]:.2f}")
