"""One worker process on this machine: ``python -m vsedvr.render.worker`` in a process group of its
own, its protocol lines (:mod:`.protocol`) read by a thread. A local pool runs one per slot; a Ray
actor runs one on its node."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

from .protocol import STOP, decode, encode
from .segment import exit_text
from .tools import StderrFile, tail

__all__ = ["WorkerProcess"]

#: how long close() waits for a killed worker to end before it leaves it behind
KILLED_WAIT = 10.0


class WorkerProcess:
    """One worker process, killed as a group with the ffmpeg processes it starts."""

    def __init__(self, job: Mapping[str, Any], env: Mapping[str, str], python: str | None = None) -> None:
        self.stderr = StderrFile()
        # -P: not the working directory first on sys.path (a checkout there would shadow the installed
        # vsedvr), as in vspipe, whose sys.path has neither it nor the script's folder
        self.proc = subprocess.Popen([python or sys.executable, "-P", "-m", "vsedvr.render.worker"], env=dict(env),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr.file,
                                     start_new_session=True, text=True, bufsize=1)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.send(dict(job))
        threading.Thread(target=self._read, name="vsedvr-worker-events", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = decode(line)
            if msg is not None:
                self.events.put(msg)
        code = self.proc.wait()
        text = self.stderr.text()
        self.events.put({"event": "exit", "message": f"{exit_text(code)}:\n{tail(text) or '(no message)'}"})

    def send(self, message: Mapping[str, Any]) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(encode(message))
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
        self.send(STOP)
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        try:
            self.proc.wait(timeout=KILLED_WAIT)
        except subprocess.TimeoutExpired:  # stuck in the kernel (a hung NFS mount, a GPU in error): leave it
            print(f"vsedvr render: worker process {self.proc.pid} did not end {KILLED_WAIT:.0f} s after SIGKILL "
                  "(stuck in the kernel?); not waiting for it", file=sys.stderr, flush=True)
