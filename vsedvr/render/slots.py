"""Where local workers run: a slot is the environment changes of one worker process (its GPU
through CUDA_VISIBLE_DEVICES, its share of the cores through OMP_NUM_THREADS/MKL_NUM_THREADS)."""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from .tools import RenderError

__all__ = ["cpu_slots", "default_slots", "device_slots", "merge_env"]


def _threads(workers: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // workers))


def cpu_slots(workers: int) -> list[dict[str, str]]:
    """Environment changes for N CPU workers: no GPU, the cores divided between them."""
    if workers < 1:
        raise RenderError(f"--workers must be at least 1, got {workers}")
    n = _threads(workers)
    return [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n} for _ in range(workers)]


def device_slots(devices: Sequence[str], visible: str | None = None) -> list[dict[str, str]]:
    """Environment changes for one worker per device: ``cuda:N`` shows that GPU alone (a script
    with device="auto" then uses it as cuda:0), ``cpu`` hides the GPUs."""
    ids = [v.strip() for v in visible.split(",")] if visible else None
    slots = []
    n = _threads(len(devices))
    for dev in devices:
        dev = dev.strip()
        if dev == "cpu":
            slots.append({"CUDA_VISIBLE_DEVICES": ""})
        elif dev.startswith("cuda:") and dev[5:].isdigit():
            i = int(dev[5:])
            if ids is not None and i >= len(ids):
                raise RenderError(f"--devices {dev}: CUDA_VISIBLE_DEVICES={visible} shows only {len(ids)} devices")
            slots.append({"CUDA_VISIBLE_DEVICES": ids[i] if ids is not None else str(i)})
        else:
            raise RenderError(f'--devices: "{dev}" is not a device; use cuda:N or cpu, comma-separated, '
                              f"e.g. --devices cuda:0,cuda:1")
        slots[-1].update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)
    if len({tuple(s.items()) for s in slots if s["CUDA_VISIBLE_DEVICES"]}) < sum(1 for s in slots if s["CUDA_VISIBLE_DEVICES"]):
        raise RenderError(f"--devices {','.join(devices)} names a GPU twice; one worker per GPU")
    gpus = [d.strip() for d in devices if d.strip() != "cpu"]
    if gpus and len(gpus) < len(devices):
        # A frame computed on the CPU (fp32) differs from the same frame on a GPU (fp16 there by
        # default), so segments from both would not make the output of one vspipe render.
        raise RenderError(f"--devices {','.join(devices)} mixes the CPU with GPUs: their frames differ, "
                          f"so the video would not equal one render; use --devices {','.join(gpus)}")
    return slots


def default_slots() -> list[dict[str, str]]:
    """One worker per NVIDIA GPU that nvidia-smi lists, else one CPU worker with every core."""
    smi = shutil.which("nvidia-smi")
    count = 0
    if smi and "CUDA_VISIBLE_DEVICES" not in os.environ:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
            count = sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            count = 0
    return device_slots([f"cuda:{i}" for i in range(count)]) if count else [{}]


def merge_env(base: Mapping[str, str] | None, slot: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key, value in slot.items():
        if key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") and key in env:
            continue  # the user's own thread count wins
        env[key] = value
    return env
