"""Workers on a Ray cluster: one actor per GPU (or per ``cpus_per_task`` CPUs of a node without
GPUs), each running the same worker process as a local pool (:class:`~.process.WorkerProcess`) on
its node; connecting to the cluster, with the checks that turn Ray's slow or silent failures
(nobody listening, a missing token) into one message."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .process import WorkerProcess
from .scheduler import STALL_TIMEOUT, Pool
from .tools import RenderError

__all__ = ["RayHandle", "RayPool", "RayWorkerActor"]


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

    def kill(self) -> None:
        """Kills the worker process and its ffmpeg processes (a stalled or retired worker)."""
        self.proc.kill()


class RayHandle:
    """The driver's side of one actor, with WorkerProcess's methods."""

    def __init__(self, ray: Any, actor_class: Any, job: Mapping[str, Any], env: Any, threads: str | None) -> None:
        self.ray = ray
        self.actor = actor_class.remote(job, env, threads)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        # an actor that does not answer within a minute counts as dead (GetTimeoutError)
        return self.ray.get(self.actor.poll.remote(timeout), timeout=timeout + 60)

    def send(self, message: Mapping[str, Any]) -> None:
        self.actor.send.remote(dict(message))

    def kill(self) -> None:
        """Kills the worker process on its node (the actor's own death would leave it to notice its
        closed stdin, which a stopped process never does), then the actor."""
        try:
            self.ray.get(self.actor.kill.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - the actor is gone or stuck: ray.kill below
            pass
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


_AUTH_HINT = ("the cluster uses token authentication and this driver has no token or the wrong one: "
              "run with RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token (copy it from the "
              "head node: `ray get-auth-token` there), in a file named by RAY_AUTH_TOKEN_PATH, or in "
              "RAY_AUTH_TOKEN; see docs/long-videos.md")


class RayPool(Pool):
    """One actor per GPU of the cluster, or per ``cpus_per_task`` CPUs of a node on a cluster
    without GPUs; each runs a worker process. ``address``: a cluster (``HOST:PORT``, ``auto``) or
    None for $RAY_ADDRESS, else a new local cluster; a Ray already initialised in this process is
    used as is."""

    def __init__(self, address: str | None = None, retries: int = 2, env: Mapping[str, str] | None = None,
                 cpus_per_task: int = 1, stall_timeout: float = STALL_TIMEOUT) -> None:
        self.address = address
        self.retries = retries
        self.stall_timeout = stall_timeout
        self.env = dict(env) if env is not None else None
        self.cpus_per_task = cpus_per_task
        self.workers = 0
        self._gpus = 0.0
        self._started_ray = False
        self._actor_class: Any = None

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
            self._started_ray = True  # this driver's connection (and a new local cluster): ended by close()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self._gpus = sum(n["Resources"].get("GPU", 0.0) for n in nodes)
        if self._gpus:
            # each GPU actor also takes a CPU: a node with fewer CPUs than GPUs places only that many
            self.workers = int(sum(min(n["Resources"].get("GPU", 0.0) // 1, n["Resources"].get("CPU", 0.0) // 1)
                                   for n in nodes))
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

    def _where(self, slot: Any) -> str:
        return f"a Ray node not known yet (worker {slot}, {'a GPU' if self._gpus else 'CPUs'})"

    def _slots(self) -> list[Any]:
        if not self.workers:
            self.connect()
        return list(range(self.workers))

    def _make_worker(self, slot: Any, job: Mapping[str, Any]) -> RayHandle:
        ray = _import_ray()
        if self._gpus:
            opts: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
            threads = None
        else:
            opts = {"num_cpus": self.cpus_per_task}
            threads = str(self.cpus_per_task)
        if self._actor_class is None:  # wrapped once per pool, not per worker
            self._actor_class = ray.remote(RayWorkerActor)
        actor = self._actor_class.options(max_concurrency=4, max_restarts=0, **opts)
        return RayHandle(ray, actor, job, self.env, threads)

    def close(self) -> None:
        """Ends the workers, then this driver's connection if it made one (a new local cluster with
        it): no message of the cluster's arrives after the render."""
        super().close()
        self._disconnect()

    def kill(self) -> None:
        super().kill()
        self._disconnect()

    def _disconnect(self) -> None:
        if self._started_ray:
            _import_ray().shutdown()
            self._started_ray = False
