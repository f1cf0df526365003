"""The scheduler: starts a worker per slot, replaces those that die, hands segments out, retries
failed ones and turns the workers' protocol events (:mod:`.protocol`) into the driver's:
("done", task, record), ("failed", task, message, retrying), ("note", message), ("tick",) about
once a second. :class:`Pool` is what :class:`LocalPool` (worker processes on this machine) and
:class:`~.ray_pool.RayPool` (one actor per slot of a cluster) share.

A worker that dies is replaced; the segment it was rendering counts as a failed attempt, and one it
had rendered but not yet checked is checked here (with ``--encode``, its chunk is then encoded by
another worker). What keeps a render from hanging or looping:

- a watchdog: a worker that sends no new frame (or no check result) for ``stall_timeout`` seconds
  (at least 20 times the median frame time seen) is killed, and its segment retried elsewhere;
- a segment that failed on a worker is not handed back to that worker while another could take it,
  and a worker whose segments fail ``RETIRE_AFTER`` times in a row is retired (not replaced) while
  others are left;
- a worker that dies before it started any segment counts as a failed start; a slot is given up
  after ``retries`` + 1 of them in a row.

Every message about a worker names its host and device.
"""
from __future__ import annotations

import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .process import WorkerProcess
from .protocol import device_of, fingerprint_difference, where_worker
from .segment import SegmentFailed, check_rendered, segment_where
from .slots import merge_env
from .tools import RenderError, find_ffmpeg

__all__ = ["Event", "LocalPool", "Pool", "Scheduler", "WorkerState"]

#: What :meth:`Pool.run` yields: ("done", task, record), ("failed", task, message, retrying),
#: ("note", message) or ("tick",).
Event = tuple

#: Segments failed in a row after which a worker is retired (while other workers are left).
RETIRE_AFTER = 3
#: Seconds a starting worker counts as one that will take a segment failed elsewhere.
START_PATIENCE_S = 120.0
#: Default seconds without a new frame (or a check result) before a worker counts as stalled.
STALL_TIMEOUT = 300.0


class WorkerState:
    """The scheduler's view of one worker: its slot index, state and the segments handed to it."""

    def __init__(self, slot: int, handle: Any, where: str) -> None:
        self.slot = slot
        self.handle = handle
        self.state = "starting"  # ready, dead
        self.assigned: list[int] = []  # handed over, not yet rendered (rendering once started)
        self.started: set[int] = set()
        self.checking: dict[int, dict[str, Any]] = {}  # rendered, being checked: its "rendered" event
        self.host = ""
        self.pid = ""
        self.where = where  # "host H (GPU 1)", from the slot until the worker reports it
        self.last_sign = time.monotonic()  # of life: its last started, progress, rendered or done
        self.killed_because = ""  # the watchdog's reason, for the message when its exit arrives
        self.retired = False
        self.born = time.monotonic()

    def began(self, index: int, work_dir: str) -> bool:
        """True if it started ``index`` (its "started" event, or its line in the attempts file: the
        event of a Ray actor that died may never have reached the driver)."""
        if index in self.started:
            return True
        try:
            lines = (Path(work_dir) / "attempts" / f"{index:05d}").read_text().splitlines()
        except OSError:
            return False
        return bool(self.pid) and any(line.split()[1:] == [self.host, self.pid] for line in lines)


class Scheduler:
    """One render's workers and queue (see the module's docstring)."""

    def __init__(self, pool: Pool, slots: Sequence[Any], job: Mapping[str, Any], retries: int,
                 stall_timeout: float = STALL_TIMEOUT) -> None:
        self.pool = pool
        self.job = dict(job)
        self.retries = retries
        self.stall_timeout = stall_timeout
        self.frame_seconds: list[float] = []  # per frame, of each verified segment
        self.failed_in_a_row: dict[int, int] = {}  # per slot
        self.failed_on: dict[int, set[int]] = {}  # per segment: the slots where it failed
        self.events: queue.Queue[tuple[WorkerState, dict[str, Any]]] = queue.Queue()
        self.workers: list[WorkerState] = []
        self.start_failures: dict[int, int] = {}
        self.given_up: list[str] = []
        self.info: dict[str, Any] | None = None
        self.closed = False
        self.notes: list[str] = []
        self.slots = list(slots)
        for i in range(len(self.slots)):
            self._start(i)

    def _start(self, slot: int) -> None:
        w = WorkerState(slot, self.pool._make_worker(self.slots[slot], self.job), self.pool._where(self.slots[slot]))
        self.workers.append(w)
        threading.Thread(target=self._pump, args=(w,), name="vsedvr-worker-pump", daemon=True).start()

    def _pump(self, w: WorkerState) -> None:
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
                if ev["event"] == "exit":
                    return

    def _alive(self) -> list[WorkerState]:
        """Workers starting or ready, not retired."""
        return [w for w in self.workers if w.state != "dead" and not w.retired]

    # ------------------------------------------------------------------- start-up events

    def _on_ready(self, w: WorkerState, ev: dict[str, Any]) -> None:
        w.host, w.pid = ev["info"].get("host", ""), ev["info"].get("pid", "")
        w.where = where_worker(w.host, ev["info"].get("device"))
        if self.info is not None:
            differs = fingerprint_difference(self.info.get("fingerprint", {}), ev["info"].get("fingerprint", {}))
            if differs:  # its frames would not be the first worker's: no segment from it
                self._on_error(w, {"message": f"its pipeline differs from the first worker's (on host "
                                              f"{self.info.get('host')}): {'; '.join(differs)}; give every node the "
                                              f"same versions and GPU model"})
                return
        w.state = "ready"
        w.last_sign = time.monotonic()
        if self.info is None:
            self.info = ev["info"]

    def _on_error(self, w: WorkerState, ev: dict[str, Any]) -> None:
        """The script does not evaluate on this worker (or it does not see the work folder): no use
        starting it again."""
        w.state = "dead"
        self.given_up.append(ev["message"])
        if not self.closed:
            self.notes.append(f"the worker on {w.where} is left out: "
                              f"{ev['message'].splitlines()[0]}")
        w.handle.kill()

    def _on_exit_start(self, w: WorkerState, ev: dict[str, Any]) -> None:
        if w.state == "dead":
            return
        w.state = "dead"
        w.handle.kill()  # a Ray actor that only looks dead must not go on writing segments
        if w.retired:
            return
        if not w.started:  # died before it started any segment: a failed start, counted
            self.start_failures[w.slot] = self.start_failures.get(w.slot, 0) + 1
            if self.start_failures[w.slot] > self.retries:
                message = (f"the worker on {w.where} {ev['message']}\n(it died before starting any segment, "
                           f"{self.start_failures[w.slot]} times in a row: not started again)")
                self.given_up.append(message)
                if self.info is not None:
                    self.notes.append(message.splitlines()[0] + "; not started again")
                return
        else:
            self.start_failures[w.slot] = 0
        if not self.closed:
            self.notes.append(f"the worker on {w.where} {(w.killed_because or ev['message']).splitlines()[0]}; "
                              f"starting another")
            self._start(w.slot)

    def _start_event(self, w: WorkerState, ev: dict[str, Any]) -> None:
        {"ready": self._on_ready, "error": self._on_error, "exit": self._on_exit_start}[ev["event"]](w, ev)

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
                self._start_event(w, ev)
            else:
                self.events.put((w, ev))
        return self.info

    # ------------------------------------------------------------------------- the run

    def run(self, tasks: Sequence[dict[str, Any]]) -> Iterator[Event]:
        """Hands ``tasks`` out until each is done or has failed ``retries`` + 1 times."""
        self.by_index = {t["index"]: t for t in tasks}
        self.pending: deque[int] = deque(t["index"] for t in tasks)
        self.attempts: dict[int, int] = {}
        self.left = set(self.by_index)
        self._dispatch()
        last_tick = 0.0
        while self.left:
            while self.notes:
                yield ("note", self.notes.pop(0))
            if not self._alive():
                raise RenderError(f"no worker is left to render {len(self.left)} segment(s): "
                                  f"{self.given_up[-1] if self.given_up else 'every worker died'}")
            try:
                w, ev = self.events.get(timeout=1.0)
            except queue.Empty:
                w, ev = None, None
            if w is not None and ev is not None:
                handler = getattr(self, f"_on_{ev['event']}_run", None)
                if handler is not None:
                    yield from handler(w, ev)
            self._watchdog()
            self._dispatch()
            if time.monotonic() - last_tick >= 1.0:
                last_tick = time.monotonic()
                yield ("tick",)
        while self.notes:
            yield ("note", self.notes.pop(0))

    def _dispatch(self) -> None:
        """The next segment to each worker that renders none. A worker gets no second segment while
        it renders one (it would wait in its queue while another worker may be idle, or be
        starting); it gets the next as soon as it has rendered one (``rendered``), and renders it
        while its thread checks the last one. A segment that failed on a worker's slot waits for
        another slot that has not failed it, ready or starting (a start that takes three times the
        first worker's start-up and at least 2 minutes, such as a Ray actor never placed, does not
        count)."""
        first = float((self.info or {}).get("startup_s", 0))
        now = time.monotonic()
        others = {v.slot for v in self._alive()
                  if v.state == "ready" or now - v.born < max(START_PATIENCE_S, 3 * first)}
        for w in self.workers:
            if not self.pending:
                return
            if w.state != "ready" or w.retired or w.assigned:
                continue
            for i in self.pending:
                failed = self.failed_on.get(i, set())
                if w.slot not in failed or others <= failed:
                    self.pending.remove(i)
                    w.assigned.append(i)
                    w.last_sign = time.monotonic()
                    w.handle.send(self.by_index[i])
                    break

    def _stall_limit(self) -> float:
        if not self.frame_seconds:
            return self.stall_timeout
        return max(self.stall_timeout, 20 * statistics.median(self.frame_seconds))

    def _watchdog(self) -> None:
        """Kills a worker that has shown no sign of life (a new frame, a check result) for the stall
        limit while it had work; its exit event then retries the segment elsewhere."""
        limit = self._stall_limit()
        now = time.monotonic()
        for w in self._alive():
            if w.state == "ready" and (w.assigned or w.checking) and not w.killed_because \
                    and now - w.last_sign > limit:
                what = (f"{segment_where(self.by_index[w.assigned[0]])}" if w.assigned
                        else f"the check of {segment_where(self.by_index[next(iter(w.checking))])}")
                w.killed_because = (f"stalled: no new frame or check result for {now - w.last_sign:.0f} s "
                                    f"(the limit: {limit:.0f} s, --stall-timeout) in {what}; killed")
                w.handle.kill()

    def _fail(self, i: int, message: str, w: WorkerState | None = None) -> Iterator[Event]:
        """A failed attempt at segment ``i`` (on worker ``w``): retried elsewhere, or given up; a
        worker failing again and again is retired."""
        self.attempts[i] = self.attempts.get(i, 0) + 1
        retrying = self.attempts[i] <= self.retries
        if retrying:
            self.pending.appendleft(i)
        else:
            self.left.discard(i)
        yield ("failed", self.by_index[i], message, retrying)
        if w is None:
            return
        self.failed_on.setdefault(i, set()).add(w.slot)
        self.failed_in_a_row[w.slot] = self.failed_in_a_row.get(w.slot, 0) + 1
        others = [v for v in self._alive() if v is not w]
        if self.failed_in_a_row[w.slot] >= RETIRE_AFTER and others and not w.retired:
            w.retired = True
            yield ("note", f"retiring the worker on {w.where}: {self.failed_in_a_row[w.slot]} segments in a row "
                           f"failed there (last: {message.splitlines()[0]}); going on with {len(others)} other "
                           f"worker{'s' if len(others) > 1 else ''}")
            w.handle.kill()

    def _on_ready_run(self, w: WorkerState, ev: dict[str, Any]) -> Iterator[Event]:
        self._start_event(w, ev)
        yield from ()

    _on_error_run = _on_ready_run

    def _on_exit_run(self, w: WorkerState, ev: dict[str, Any]) -> Iterator[Event]:
        if w.state != "dead":
            lost = [i for i in w.assigned if w.began(i, self.job["work_dir"])]
            queued = [i for i in w.assigned if i not in lost]
            self.pending.extendleft(reversed(queued))
            rendered, w.assigned, w.checking = w.checking, [], {}
            if not w.retired:
                for i in lost:
                    yield from self._fail(i, f"{segment_where(self.by_index[i])}: the worker on {w.where} "
                                             f"{w.killed_because or ev['message']}", w)
            else:
                self.pending.extendleft(reversed(lost))  # cut off by its retirement, not its failure
            for i, done in rendered.items():  # its files are complete: checked here instead
                try:
                    record = self._check_here(done)
                except SegmentFailed as e:
                    yield from self._fail(i, str(e))
                    continue
                if self.job.get("encode"):  # recorded, and its chunk encoded on a worker (not in this loop)
                    self.by_index[i] = dict(self.by_index[i], record=record)
                    self.pending.appendleft(i)
                else:
                    self.left.discard(i)
                yield ("done", self.by_index[i], record)
        self._start_event(w, ev)

    def _on_started_run(self, w: WorkerState, ev: dict[str, Any]) -> Iterator[Event]:
        w.started.add(ev["index"])
        w.last_sign = time.monotonic()
        yield from ()

    def _on_progress_run(self, w: WorkerState, ev: dict[str, Any]) -> Iterator[Event]:
        w.last_sign = time.monotonic()
        yield from ()

    def _on_rendered_run(self, w: WorkerState, ev: dict[str, Any]) -> Iterator[Event]:
        i = ev["index"]
        if i in w.assigned:
            w.assigned.remove(i)
        w.checking[i] = ev
        w.last_sign = time.monotonic()
        yield from ()

    def _on_done_run(self, w: WorkerState, ev: dict[str, Any]) -> Iterator[Event]:
        record = ev["record"]
        i = record["index"]
        w.checking.pop(i, None)
        if i in w.assigned:
            w.assigned.remove(i)
        w.last_sign = time.monotonic()
        try:  # the worker saw it (and its chunk) on its file system; the driver must see them on its own
            size = (Path(self.job["work_dir"]) / record["file"]).stat().st_size
            if "chunk" in record and (Path(self.job["work_dir"]) / record["chunk"]["file"]).stat().st_size \
                    != record["chunk"]["size"]:
                size = -2
        except OSError:
            size = -1
        if size != record["size"]:
            yield from self._fail(i, f"{segment_where(record)} was verified on {w.where}, but the driver "
                                     f"{'does not see its file' if size < 0 else 'sees another size of its file'} in "
                                     f"{self.job['work_dir']}: --work-dir must be a folder all nodes share, at the "
                                     f"same path", w)
            return
        self.failed_in_a_row[w.slot] = 0
        self.frame_seconds.append(float(record.get("seconds", 0)) / max(1, record["end"] - record["start"] + 1))
        self.left.discard(i)
        yield ("done", self.by_index[i], record)

    def _on_failed_run(self, w: WorkerState, ev: dict[str, Any]) -> Iterator[Event]:
        i = ev["index"]
        w.checking.pop(i, None)
        if i in w.assigned:
            w.assigned.remove(i)
        w.last_sign = time.monotonic()
        if ev.get("fatal"):
            raise RenderError(ev["message"])
        yield from self._fail(i, ev["message"], w)

    def _check_here(self, rendered: dict[str, Any]) -> dict[str, Any]:
        """A dead worker's rendered segment, checked by the driver as the worker would have; not
        encoded (``--encode``): an encode here would hold up this loop for minutes at 4K, and the
        other workers' signs of life with it (the watchdog would kill them)."""
        return check_rendered(find_ffmpeg(self.job.get("ffmpeg")), rendered, segment_where(rendered["record"]))

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


class Pool:
    """What LocalPool and RayPool share: start, info, run, close."""

    retries: int
    stall_timeout: float = STALL_TIMEOUT
    _scheduler: Scheduler | None = None

    def _slots(self) -> list[Any]:
        raise NotImplementedError

    def _make_worker(self, slot: Any, job: Mapping[str, Any]) -> Any:
        """A handle with WorkerProcess's methods (send, poll, kill, close)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _where(self, slot: Any) -> str:
        """'host H (GPU 1)' for a worker of ``slot`` that has not reported yet."""
        raise NotImplementedError

    def start(self, job: Mapping[str, Any]) -> None:
        """Starts every worker on ``job`` (script, args, output_index, work_dir, ffmpeg)."""
        self._scheduler = Scheduler(self, self._slots(), job, self.retries, self.stall_timeout)

    def info(self) -> dict[str, Any]:
        """The clip info from the first worker that evaluated the script."""
        assert self._scheduler is not None, "start() first"
        return self._scheduler.wait_info()

    def run(self, tasks: Sequence[dict[str, Any]]) -> Iterator[Event]:
        """Renders ``tasks`` (index, start, end), yielding the scheduler's events."""
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


class LocalPool(Pool):
    """Worker processes on this machine, one per slot (an environment: its GPU, its threads)."""

    def __init__(self, slots: Sequence[Mapping[str, str]], retries: int = 2,
                 env: Mapping[str, str] | None = None, stall_timeout: float = STALL_TIMEOUT) -> None:
        self.slots = list(slots)
        self.retries = retries
        self.env = env
        self.stall_timeout = stall_timeout

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

    def _where(self, slot: Any) -> str:
        return where_worker(None, device_of(merge_env(self.env, slot)))

    def _make_worker(self, slot: Any, job: Mapping[str, Any]) -> WorkerProcess:
        return WorkerProcess(job, merge_env(self.env, slot))
