"""Where segments run: :class:`LocalPool` (threads here, each driving one vspipe on one device;
no dependency) and :class:`RayPool` (one Ray task per segment, on any node of a cluster).

Both yield the same events to the driver: ("done", task, record), ("failed", task, message,
retrying), ("tick",) about once a second.
"""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .segment import SegmentFailed, render_segment, terminate_all
from .tools import RenderError

__all__ = ["LocalPool", "RayPool", "cpu_slots", "device_slots", "default_slots"]

Event = tuple


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


def _merge(base: Mapping[str, str] | None, slot: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key, value in slot.items():
        if key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") and key in env:
            continue  # the user's own thread count wins
        env[key] = value
    return env


class LocalPool:
    """Worker threads on this machine, one per slot; each runs one segment's vspipe at a time."""

    def __init__(self, slots: Sequence[Mapping[str, str]], retries: int = 2,
                 env: Mapping[str, str] | None = None) -> None:
        self.slots = list(slots)
        self.retries = retries
        self.env = env

    @property
    def workers(self) -> int:
        return len(self.slots)

    def describe(self) -> str:
        devs = [s.get("CUDA_VISIBLE_DEVICES") for s in self.slots]
        if any(devs):
            return f"{len(self.slots)} local workers (GPUs {', '.join(d or 'cpu' for d in devs)})"
        return f"{len(self.slots)} local worker{'s' if len(self.slots) > 1 else ''}"

    def run(self, tasks: Sequence[dict[str, Any]]) -> Iterator[Event]:
        free: queue.Queue[Mapping[str, str]] = queue.Queue()
        for slot in self.slots:
            free.put(slot)

        def job(task: dict[str, Any]) -> dict[str, Any]:
            slot = free.get()
            try:
                return render_segment(task, _merge(self.env, slot))
            finally:
                free.put(slot)

        pool = ThreadPoolExecutor(max_workers=len(self.slots), thread_name_prefix="vsedvr-render")
        running: dict[Future, tuple[dict[str, Any], int]] = {pool.submit(job, t): (t, 1) for t in tasks}
        try:
            while running:
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                # the finished segments first: one that raises a fatal error must not cost the others
                for fut in sorted(done, key=lambda f: f.exception() is not None):
                    task, attempt = running.pop(fut)
                    try:
                        yield ("done", task, fut.result())
                    except SegmentFailed as e:
                        retrying = attempt <= self.retries
                        if retrying:
                            running[pool.submit(job, task)] = (task, attempt + 1)
                        yield ("failed", task, str(e), retrying)
                yield ("tick",)
        finally:  # normal end, an error, or the driver interrupted (KeyboardInterrupt, GeneratorExit)
            for fut in running:
                fut.cancel()
            terminate_all()
            pool.shutdown(wait=True, cancel_futures=True)


def _ray_segment(task: dict[str, Any], env: dict[str, str] | None, threads: str | None) -> dict[str, Any]:
    """The Ray task: one segment on whichever node Ray chose (module level, so workers import it)."""
    env = dict(os.environ if env is None else env)
    # Ray set CUDA_VISIBLE_DEVICES for this worker (num_gpus=1); the driver's value means nothing here
    env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "") if threads is None else ""
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
    return render_segment(task, env)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise RenderError(f"--ray needs Ray, which is not installed here ({e}); "
                          f"pip install 'vsedvr[ray]' (on every node of the cluster)") from e
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fails fast on a HOST:PORT nobody listens on (ray.init would wait for minutes)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray://..., or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise RenderError(f"cannot reach the Ray cluster at {address} ({e}); start its head node with "
                          f"`ray start --head --port={port}` there, or check the address and the firewall") from e


class RayPool:
    """One Ray task per segment. ``address``: a cluster (``HOST:PORT``, ``auto``) or None for
    RAY_ADDRESS / a new local cluster; a Ray already initialised in this process is used as is.
    Tasks ask for one GPU when the cluster has GPUs, else ``cpus_per_task`` CPUs."""

    def __init__(self, address: str | None = None, retries: int = 2, env: Mapping[str, str] | None = None,
                 cpus_per_task: int = 1) -> None:
        self.address = address
        self.retries = retries
        self.env = dict(env) if env is not None else None
        self.cpus_per_task = cpus_per_task
        self.workers = 0
        self._gpus = 0.0

    def connect(self) -> None:
        ray = _import_ray()
        if not ray.is_initialized():
            import logging

            kw: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if self.address:
                kw["address"] = self.address
            elif not os.environ.get("RAY_ADDRESS"):
                kw["include_dashboard"] = False
            if self.address:
                _check_reachable(self.address)
            try:
                ray.init(**kw)
            except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError by version
                where = self.address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
                raise RenderError(f"cannot connect to Ray at {where}: {' '.join(str(e).split())[:400]}. "
                                  f"Start the head node with `ray start --head` and pass its address "
                                  f"(--ray HOST:6379), or give --ray without an address for a local cluster") from e
        resources = ray.cluster_resources()
        self._gpus = resources.get("GPU", 0.0)
        self.workers = int(self._gpus) if self._gpus else int(resources.get("CPU", 1) // self.cpus_per_task)

    def describe(self) -> str:
        kind = "GPU" if self._gpus else f"{self.cpus_per_task}-CPU"
        return f"Ray cluster, {self.workers} {kind} tasks at a time"

    def run(self, tasks: Sequence[dict[str, Any]]) -> Iterator[Event]:
        ray = _import_ray()
        if self._gpus:
            opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
            threads = None
        else:
            opts = {"num_cpus": self.cpus_per_task}
            threads = str(self.cpus_per_task)
        remote = ray.remote(_ray_segment).options(max_retries=self.retries, retry_exceptions=[SegmentFailed],
                                                  **opts)
        env_ref = ray.put(self.env)
        running = {remote.remote(t, env_ref, threads): t for t in tasks}
        try:
            while running:
                done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in done:
                    task = running.pop(ref)
                    try:
                        yield ("done", task, ray.get(ref))
                    except RenderError as e:  # raised inside the task (Ray's RayTaskError subclasses it)
                        cause = getattr(e, "cause", None)  # the task's own exception, without Ray's traceback
                        message = str(cause) if isinstance(cause, BaseException) else str(e)
                        if not isinstance(e, SegmentFailed):
                            raise RenderError(message) from None
                        yield ("failed", task, message, False)
                    except ray.exceptions.RayError as e:
                        yield ("failed", task, f"segment {task['index']}: {type(e).__name__}: {e}", False)
                yield ("tick",)
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
