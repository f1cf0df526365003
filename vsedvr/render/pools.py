"""Where segments run: :class:`LocalPool` (one worker process per slot on this machine; no
dependency) and :class:`RayPool` (one Ray actor per GPU or CPU slot of a cluster, each running the
same worker process on its node).

A worker evaluates the script once and renders segment after segment (:mod:`.worker`). A pool
starts its workers (:meth:`start`), reports the first one's clip info (:meth:`info`, the plan's
source), then hands out segments and yields events to the driver: ("done", task, record),
("failed", task, message, retrying), ("note", message), ("tick",) about once a second. A worker
that dies is replaced; the segments it was rendering or checking count as a failed attempt, those
only queued go back to the others.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..zoo.cache import sha256_file
from .segment import SegmentFailed, exit_text, verify_segment
from .tools import RenderError, find_ffmpeg, tail

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


# ------------------------------------------------------------------------------ one worker


class WorkerProcess:
    """One ``python -m vsedvr.render.worker`` in a process group of its own (killed as a group with
    the ffmpeg processes it starts); its events are read by a thread."""

    def __init__(self, job: Mapping[str, Any], env: Mapping[str, str], python: str | None = None) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        # -P: not the working directory first on sys.path (a checkout there would shadow the installed
        # vsedvr), as in vspipe, whose sys.path has neither it nor the script's folder
        self.proc = subprocess.Popen([python or sys.executable, "-P", "-m", "vsedvr.render.worker"], env=dict(env),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     start_new_session=True, text=True, bufsize=1)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.send(dict(job))
        threading.Thread(target=self._read, name="vsedvr-worker-events", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                pass
        code = self.proc.wait()
        self.stderr.seek(0)
        text = self.stderr.read().decode("utf-8", "replace")
        self.stderr.close()
        self.events.put({"event": "exit", "message": f"{exit_text(code)}:\n{tail(text) or '(no message)'}"})

    def send(self, message: Mapping[str, Any]) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # it died; its exit event says how

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """The events since the last poll, waiting up to ``timeout`` for the first."""
        try:
            out = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass

    def close(self, wait: float = 30.0) -> None:
        """Lets its checks finish (a stop message), then ends it."""
        self.send({"stop": True})
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        self.proc.wait()


class _Worker:
    """The scheduler's view of one worker: its slot, state and the segments handed to it."""

    def __init__(self, slot: Any, handle: Any) -> None:
        self.slot = slot
        self.handle = handle
        self.state = "starting"  # ready, dead
        self.sent: list[int] = []  # handed over, not yet rendered (the first is rendering once started)
        self.started: set[int] = set()
        self.checking: dict[int, dict[str, Any]] = {}  # rendered, being checked: its "rendered" event
        self.where = ""
        self.pid = ""

    def began(self, index: int, work_dir: str) -> bool:
        """True if it started ``index`` (its "started" event, or its line in the attempts file: the
        event of a Ray actor that died may never have reached the driver)."""
        if index in self.started:
            return True
        try:
            lines = (Path(work_dir) / "attempts" / f"{index:05d}").read_text().splitlines()
        except OSError:
            return False
        return bool(self.pid) and any(line.split()[1:] == [self.where, self.pid] for line in lines)


class _Scheduler:
    """Starts a worker per slot, replaces those that die, hands segments out (two to a worker
    while enough are left, so that it renders the next while checking one) and turns the workers'
    events into the driver's."""

    def __init__(self, pool: Any, slots: Sequence[Any], job: Mapping[str, Any], retries: int) -> None:
        self.pool = pool
        self.job = dict(job)
        self.retries = retries
        self.events: queue.Queue[tuple[_Worker, dict[str, Any]]] = queue.Queue()
        self.workers: list[_Worker] = []
        self.start_failures: dict[int, int] = {}
        self.given_up: list[str] = []
        self.info: dict[str, Any] | None = None
        self.closed = False
        self.notes: list[str] = []
        for i in range(len(slots)):
            self._start(i, slots[i])
        self.slots = list(slots)

    def _start(self, index: int, slot: Any) -> None:
        w = _Worker(index, None)
        w.handle = self.pool._make_worker(slot, self.job)
        self.workers.append(w)
        threading.Thread(target=self._pump, args=(w,), name="vsedvr-worker-pump", daemon=True).start()

    def _pump(self, w: _Worker) -> None:
        while not self.closed:
            try:
                evs = w.handle.poll(1.0)
            except Exception as e:  # noqa: BLE001 - a Ray actor that died: RayActorError and kin
                text = " ".join(str(e).split())
                first = text.split(". ")[0][:200]
                self.events.put((w, {"event": "exit", "message": f"died ({type(e).__name__}: {first})"}))
                return
            for ev in evs:
                self.events.put((w, ev))
                if ev["event"] in ("exit",):
                    return

    def _handle_start_event(self, w: _Worker, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "ready":
            w.state = "ready"
            w.where, w.pid = ev["info"].get("host", ""), ev["info"].get("pid", "")
            self.start_failures[w.slot] = 0
            if self.info is None:
                self.info = ev["info"]
        elif kind == "error":  # the script does not evaluate on this worker: no use starting it again
            w.state = "dead"
            self.given_up.append(ev["message"])
            w.handle.kill()
        elif kind == "exit" and w.state != "dead":
            was = w.state
            w.state = "dead"
            if was == "starting":
                self.start_failures[w.slot] = self.start_failures.get(w.slot, 0) + 1
                if self.start_failures[w.slot] > self.retries:
                    self.given_up.append(f"a worker {ev['message']}")
                    return
            if not self.closed:
                self.notes.append(f"a worker{' on ' + w.where if w.where else ''} {ev['message'].splitlines()[0]}; "
                                  f"starting another")
                self._start(w.slot, self.slots[w.slot])

    def _alive(self) -> list[_Worker]:
        return [w for w in self.workers if w.state != "dead"]

    def wait_info(self) -> dict[str, Any]:
        """The clip info of the first worker that evaluated the script (RenderError if none can)."""
        while self.info is None:
            if not self._alive():
                raise RenderError(self.given_up[-1] if self.given_up else "no worker started")
            try:
                w, ev = self.events.get(timeout=1.0)
            except queue.Empty:
                continue
            if ev["event"] in ("ready", "error", "exit"):
                self._handle_start_event(w, ev)
            else:
                self.events.put((w, ev))
        return self.info

    def run(self, tasks: Sequence[dict[str, Any]]) -> Iterator[Event]:
        by_index = {t["index"]: t for t in tasks}
        pending: deque[int] = deque(t["index"] for t in tasks)
        attempts: dict[int, int] = {}
        left = set(by_index)

        def dispatch() -> None:
            ready = [w for w in self.workers if w.state == "ready"]
            for depth in (1, 2):
                for w in ready:
                    if not pending:
                        return
                    # a second segment only while there are enough for every worker
                    if len(w.sent) < depth and (depth == 1 or len(pending) >= len(ready)):
                        i = pending.popleft()
                        w.sent.append(i)
                        w.handle.send(by_index[i])

        def fail(i: int, message: str) -> Event:
            attempts[i] = attempts.get(i, 0) + 1
            retrying = attempts[i] <= self.retries
            if retrying:
                pending.appendleft(i)
            else:
                left.discard(i)
            return ("failed", by_index[i], message, retrying)

        dispatch()
        last_tick = 0.0
        while left:
            while self.notes:
                yield ("note", self.notes.pop(0))
            if not self._alive():
                raise RenderError(f"no worker is left to render {len(left)} segment(s): "
                                  f"{self.given_up[-1] if self.given_up else 'every worker died'}")
            try:
                w, ev = self.events.get(timeout=1.0)
            except queue.Empty:
                w, ev = None, {"event": "none"}
            kind = ev["event"]
            if w is not None and kind in ("ready", "error"):
                self._handle_start_event(w, ev)
            elif w is not None and kind == "exit":
                if w.state != "dead":
                    lost = [i for i in w.sent if w.began(i, self.job["work_dir"])]
                    queued = [i for i in w.sent if i not in lost]
                    pending.extendleft(reversed(queued))
                    rendered, w.sent, w.checking = w.checking, [], {}
                    for i in lost:
                        yield fail(i, f"segment {i} (frames {by_index[i]['start']}-{by_index[i]['end']}): the worker"
                                      f"{' on ' + w.where if w.where else ''} {ev['message']}")
                    for i, done in rendered.items():  # its files are complete: checked here instead
                        try:
                            yield ("done", by_index[i], self._check_here(done))
                            left.discard(i)
                        except SegmentFailed as e:
                            yield fail(i, str(e))
                self._handle_start_event(w, ev)
            elif w is not None and kind == "started":
                w.started.add(ev["index"])
            elif w is not None and kind == "rendered":
                i = ev["index"]
                if i in w.sent:
                    w.sent.remove(i)
                w.checking[i] = ev
            elif w is not None and kind == "done":
                i = ev["record"]["index"]
                w.checking.pop(i, None)
                if i in w.sent:
                    w.sent.remove(i)
                left.discard(i)
                yield ("done", by_index[i], ev["record"])
            elif w is not None and kind == "failed":
                i = ev["index"]
                w.checking.pop(i, None)
                if i in w.sent:
                    w.sent.remove(i)
                if ev.get("fatal"):
                    raise RenderError(ev["message"])
                yield fail(i, ev["message"])
            dispatch()
            if time.monotonic() - last_tick >= 1.0:
                last_tick = time.monotonic()
                yield ("tick",)
        while self.notes:
            yield ("note", self.notes.pop(0))

    def _check_here(self, rendered: dict[str, Any]) -> dict[str, Any]:
        """A dead worker's rendered segment, checked by the driver as the worker would have."""
        record = dict(rendered["record"])
        where = f"segment {record['index']} (frames {record['start']}-{record['end']})"
        final = verify_segment(find_ffmpeg(self.job.get("ffmpeg")), Path(rendered["partial"]), rendered["hashes"],
                               record["frame_size"], where)
        record.update(file=final.name, size=final.stat().st_size, sha256=sha256_file(final), hashes=rendered["hashes"])
        return record

    def close(self, wait: float = 30.0) -> None:
        self.closed = True
        for w in self.workers:
            if w.state != "dead":
                w.handle.close(wait)
            else:
                w.handle.kill()

    def kill(self) -> None:
        self.closed = True
        for w in self.workers:
            w.handle.kill()


class _Pool:
    """What LocalPool and RayPool share: start, info, run, close."""

    retries: int
    _scheduler: _Scheduler | None = None

    def _slots(self) -> list[Any]:
        raise NotImplementedError

    def _make_worker(self, slot: Any, job: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def start(self, job: Mapping[str, Any]) -> None:
        """Starts every worker on ``job`` (script, args, output_index, work_dir, ffmpeg)."""
        self._scheduler = _Scheduler(self, self._slots(), job, self.retries)

    def info(self) -> dict[str, Any]:
        """The clip info from the first worker that evaluated the script."""
        assert self._scheduler is not None, "start() first"
        return self._scheduler.wait_info()

    def run(self, tasks: Sequence[dict[str, Any]]) -> Iterator[Event]:
        assert self._scheduler is not None, "start() first"
        try:
            yield from self._scheduler.run(tasks)
        except BaseException:  # an error, or the driver interrupted (KeyboardInterrupt, GeneratorExit)
            self._scheduler.kill()
            raise

    def close(self) -> None:
        """Ends the workers (their checks finish first)."""
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None

    def kill(self) -> None:
        if self._scheduler is not None:
            self._scheduler.kill()
            self._scheduler = None


class LocalPool(_Pool):
    """Worker processes on this machine, one per slot (an environment: its GPU, its threads)."""

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

    def _slots(self) -> list[Any]:
        return self.slots

    def _make_worker(self, slot: Any, job: Mapping[str, Any]) -> WorkerProcess:
        return WorkerProcess(job, _merge(self.env, slot))


# ------------------------------------------------------------------------------------ Ray


class RayWorkerActor:
    """The Ray actor (one per GPU or CPU slot): runs a :class:`WorkerProcess` on its node, in the
    environment Ray gave it (CUDA_VISIBLE_DEVICES for its GPU)."""

    def __init__(self, job: Mapping[str, Any], env: Mapping[str, str] | None, threads: str | None) -> None:
        env = dict(os.environ if env is None else env)
        # Ray set CUDA_VISIBLE_DEVICES for this actor (num_gpus=1); the driver's value means nothing here
        env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "") if threads is None else ""
        if threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
        self.proc = WorkerProcess(job, env)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        return self.proc.poll(timeout)

    def send(self, message: dict[str, Any]) -> None:
        self.proc.send(message)

    def close(self, wait: float) -> None:
        self.proc.close(wait)


class _RayHandle:
    """The driver's side of one actor, with WorkerProcess's methods."""

    def __init__(self, ray: Any, actor_class: Any, job: Mapping[str, Any], env: Any, threads: str | None) -> None:
        self.ray = ray
        self.actor = actor_class.remote(job, env, threads)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        return self.ray.get(self.actor.poll.remote(timeout))

    def send(self, message: Mapping[str, Any]) -> None:
        self.actor.send.remote(dict(message))

    def kill(self) -> None:
        try:
            self.ray.kill(self.actor)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def close(self, wait: float = 30.0) -> None:
        try:
            self.ray.get(self.actor.close.remote(wait), timeout=wait + 10)
        except Exception:  # noqa: BLE001 - gone or stuck: killed below
            pass
        self.kill()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise RenderError(f"--ray needs Ray, which is not installed here ({e}); "
                          f"pip install ray (on every node of the cluster)") from e
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


def _check_token(address: str) -> None:
    """Connects to the cluster's GCS with the token this driver would send: a cluster with token
    authentication refuses at once (ray.init would retry for 20 s, print a line per try and end with
    "cannot connect", not naming the cause)."""
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # another Ray version: ray.init's own message then
        return
    try:
        GcsClient(address=address, cluster_id=None)
    except AuthenticationError:
        mode = os.environ.get("RAY_AUTH_MODE")
        raise RenderError(f"cannot connect to Ray at {address}: {_AUTH_HINT}"
                          f"{'' if mode == 'token' else ' (RAY_AUTH_MODE is ' + (mode or 'not set') + ' here)'}") from None
    except Exception:  # noqa: BLE001 - anything else: ray.init says what
        return


def _errors_to_stderr(ray: Any) -> None:
    """Ray's driver prints the cluster's error messages (a node or worker that died: kilobytes of
    them) on stdout, which ``vsedvr render`` keeps empty: send them to stderr."""
    worker_module = sys.modules.get("ray._private.worker")
    original = getattr(worker_module, "print_to_stdstream", None)
    if original is None or getattr(original, "_vsedvr", False):
        return

    def to_stderr(data: dict[str, Any], *args: Any, **kw: Any) -> None:
        original(dict(data, is_err=True), *args, **kw)

    to_stderr._vsedvr = True  # type: ignore[attr-defined]
    worker_module.print_to_stdstream = to_stderr  # type: ignore[union-attr]


_AUTH_HINT = ("the cluster uses token authentication and this driver has no token or the wrong one: "
              "run with RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token (copy it from the "
              "head node: `ray get-auth-token` there), in a file named by RAY_AUTH_TOKEN_PATH, or in "
              "RAY_AUTH_TOKEN; see docs/long-videos.md")


class RayPool(_Pool):
    """One actor per GPU of the cluster, or per ``cpus_per_task`` CPUs of a node on a cluster
    without GPUs; each runs a worker process. ``address``: a cluster (``HOST:PORT``, ``auto``) or
    None for $RAY_ADDRESS, else a new local cluster; a Ray already initialised in this process is
    used as is."""

    def __init__(self, address: str | None = None, retries: int = 2, env: Mapping[str, str] | None = None,
                 cpus_per_task: int = 1) -> None:
        self.address = address
        self.retries = retries
        self.env = dict(env) if env is not None else None
        self.cpus_per_task = cpus_per_task
        self.workers = 0
        self._gpus = 0.0
        self._started_ray = False

    def connect(self) -> None:
        """Joins (or starts) the cluster and counts its slots; RenderError with the cause when it cannot."""
        ray = _import_ray()
        if self.cpus_per_task < 1:
            raise RenderError(f"--cpus-per-task must be at least 1, got {self.cpus_per_task}")
        if not ray.is_initialized():
            import logging

            kw: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            if address:
                kw["address"] = address
                _check_reachable(address)
                _check_token(address)
            else:  # a new local cluster, as documented (ray.init() alone joins one started on this machine)
                kw.update(address="local", include_dashboard=False)
            try:
                ray.init(**kw)
            except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, AuthenticationError by version
                text = " ".join(str(e).split())
                where = address or "a new local cluster"
                if "auth" in text.lower() and "token" in text.lower():
                    raise RenderError(f"cannot connect to Ray at {where}: {_AUTH_HINT}") from None
                raise RenderError(f"cannot connect to Ray at {where}: {text[:400]}. Start the head node with "
                                  f"`ray start --head` and pass its address (--ray HOST:6379), or give --ray "
                                  f"without an address for a new local cluster") from e
            self._started_ray = not address
        _errors_to_stderr(ray)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self._gpus = sum(n["Resources"].get("GPU", 0.0) for n in nodes)
        if self._gpus:
            self.workers = int(sum(n["Resources"].get("GPU", 0.0) // 1 for n in nodes))
        else:
            cpus = [int(n["Resources"].get("CPU", 0)) for n in nodes]
            self.workers = sum(c // self.cpus_per_task for c in cpus)
            if self.workers == 0:
                raise RenderError(f"--cpus-per-task {self.cpus_per_task}: no node of the Ray cluster has that many "
                                  f"CPUs (its nodes have {', '.join(map(str, cpus)) or 'none'}); "
                                  f"use --cpus-per-task {max(cpus, default=1) or 1} or less")

    def describe(self) -> str:
        kind = "GPU" if self._gpus else f"{self.cpus_per_task}-CPU"
        return f"Ray cluster, {self.workers} {kind} workers"

    def _slots(self) -> list[Any]:
        if not self.workers:
            self.connect()
        return list(range(self.workers))

    def _make_worker(self, slot: Any, job: Mapping[str, Any]) -> _RayHandle:
        ray = _import_ray()
        if self._gpus:
            opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
            threads = None
        else:
            opts = {"num_cpus": self.cpus_per_task}
            threads = str(self.cpus_per_task)
        actor = ray.remote(RayWorkerActor).options(max_concurrency=4, max_restarts=0, **opts)
        return _RayHandle(ray, actor, job, self.env, threads)

    def close(self) -> None:
        super().close()
        if self._started_ray:
            _import_ray().shutdown()
            self._started_ray = False
