"""A render worker process (``python -m vsedvr.render.worker``): evaluates the script once, the way
vspipe does, then renders segment after segment from the same core.

Each segment is VapourSynth's own yuv4mpeg output of ``clip[start:end + 1]`` (the stream ``vspipe -c
y4m --start --end`` writes, byte for byte), hashed frame by frame on its way into ffmpeg's FFV1
encoder. The decode check of a segment runs in a thread while the next segment renders.

It speaks :mod:`.protocol` on stdin and stdout; the script's own prints go to stderr.
"""
from __future__ import annotations

import errno
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ..zoo.cache import sha256_file
from .protocol import decode, device_of, encode, where_worker
from .segment import FFV1_ARGS, SegmentFailed, check_rendered, segment_name, segment_where
from .tools import (DiskFullError, RenderError, StderrFile, Y4MFormat, check_disk_full, colour_filter, ffmpeg_cmd, find_ffmpeg,
                    new_frame_hash, tail)

__all__ = ["SegmentWriter", "clip_info", "evaluate", "main", "segment_clip"]

PROGRESS_EVERY_S = 0.5
COLOUR_PROPS = ("_Matrix", "_Primaries", "_Transfer", "_Range", "_ColorRange")


def evaluate(script: str | os.PathLike, args: Sequence[str] = (), output_index: int = 0, audio: bool = False) -> Any:
    """Runs a .vpy script as vspipe does (globals ``__name__ = "__vapoursynth__"``, ``__file__``,
    ``-a`` values as str, the working directory the script's folder while it runs) and returns
    its output clip (``audio``: its audio node). Raises RenderError with the script's message."""
    import vapoursynth as vs

    path = os.fspath(script)
    scope: dict[str, Any] = {"__name__": "__vapoursynth__", "__file__": path}
    for arg in args:
        name, _, value = arg.partition("=")
        scope[name] = value
    sys.argv = [""]  # as in vspipe's embedded interpreter
    cwd = os.getcwd()
    try:
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec", dont_inherit=True)
        os.chdir(os.path.dirname(os.path.abspath(path)))
        exec(code, scope, scope)  # noqa: S102 - running the user's script is the point
    except BaseException as e:  # noqa: BLE001 - a script can raise anything, even SystemExit
        # the traceback from the script's own frames on, as vspipe shows it
        script_tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        text = "".join(traceback.format_exception(type(e), e, script_tb))
        raise RenderError(f"cannot evaluate {path}:\nPython exception: {e}\n\n{tail(text, 20)}") from None
    finally:
        os.chdir(cwd)
    try:
        out = vs.get_output(output_index)
    except (KeyError, IndexError):
        raise RenderError(f"{path} sets no output {output_index}") from None
    if audio:
        if not isinstance(out, vs.AudioNode):
            raise RenderError(f"output {output_index} of {path} is not audio: {type(out).__name__}; "
                              f"--audio-output names the script's audio output (set with audio.set_output(N))")
        return out
    clip = out[0] if isinstance(out, vs.VideoOutputTuple) else out
    if not isinstance(clip, vs.VideoNode):
        raise RenderError(f"output {output_index} of {path} is not a video clip: {type(clip).__name__}")
    return clip


def clip_info(clip: Any, where: str = "the script") -> dict[str, str]:
    """What the plan records about the clip (the keys and values ``vspipe --info`` prints);
    RenderError for what yuv4mpeg cannot carry, and for a variable frame rate."""
    import vapoursynth as vs

    if clip.format is None or clip.width == 0:
        raise RenderError(f"{where} has a variable format or size; vsedvr render needs a constant one "
                          f"(add a resize to the output)")
    if clip.format.color_family == vs.RGB:
        raise RenderError(f"{where} is RGB, which yuv4mpeg cannot carry; convert it at the end of the script, "
                          f'e.g. core.resize.Bicubic(clip, format=vs.YUV444P16, matrix_s="709")')
    ss = (clip.format.subsampling_w, clip.format.subsampling_h)
    if clip.format.sample_type == vs.FLOAT:  # VapourSynth writes C444p32, which ffmpeg cannot read
        target = "GRAY16" if clip.format.color_family == vs.GRAY else \
            f"YUV{ {(0, 0): '444', (1, 0): '422', (1, 1): '420'}.get(ss, '444') }P16"
        raise RenderError(f"{where} is {clip.format.name}, a float format ffmpeg's yuv4mpeg reader does not take; "
                          f"convert it at the end of the script, e.g. core.resize.Point(clip, format=vs.{target})")
    if ss not in ((0, 0), (1, 0), (1, 1), (2, 0), (2, 2)):  # 4:4:0 and other rare ones
        raise RenderError(f"{where} is {clip.format.name}, a chroma subsampling yuv4mpeg does not carry (4:2:0, "
                          f"4:2:2, 4:4:4, 4:1:1, 4:1:0 only); convert it at the end of the script, e.g. "
                          f"core.resize.Bicubic(clip, format=vs.YUV444P{16 if clip.format.bits_per_sample > 8 else 8})")
    if not clip.fps.numerator or not clip.fps.denominator:  # VapourSynth: 0/1
        # yuv4mpeg would say "F0:0", which ffmpeg reads as 25 fps: the duration (and any audio) wrong
        raise RenderError(f"{where} has a variable frame rate, which vsedvr render does not carry (the result "
                          f"would play at 25 fps); give it a constant one at the end of the script, e.g. "
                          f"clip = core.std.AssumeFPS(clip, fpsnum=24000, fpsden=1001), or render it with "
                          f"vspipe --timecodes")
    fps = f"{clip.fps.numerator}/{clip.fps.denominator} ({clip.fps.numerator / clip.fps.denominator:.3f} fps)"
    return {"Width": str(clip.width), "Height": str(clip.height), "Frames": str(clip.num_frames),
            "FPS": fps, "Format Name": clip.format.name}


def segment_clip(clip: Any, start: int, end: int, first_props: dict[str, Any]) -> Any:
    """``clip[start:end + 1]`` (what ``vspipe --start --end`` renders), its frames passed on as they
    are; the colour properties of its first frame are put into ``first_props`` when it is made."""
    import vapoursynth as vs

    def grab(n: int, f: Any) -> Any:
        if n == 0:
            keys = [k for k in COLOUR_PROPS if k in f.props]
            if "_Range" in keys and "_ColorRange" in keys:  # VapourSynth's deprecated alias of _Range
                keys.remove("_ColorRange")
            first_props.update({k: int(f.props[k]) for k in keys})
        return f

    seg = clip[start:end + 1]
    return vs.core.std.ModifyFrame(seg, seg, grab)


class SegmentWriter:
    """The file object ``VideoNode.output(y4m=True)`` writes into: hashes each frame's planes (the
    bytes ffmpeg's framemd5 hashes) and passes the stream on to a sink, which ``open_sink`` starts
    when the first frame arrives (by then its properties, the colour tags, are known)."""

    def __init__(self, open_sink: Callable[[], BinaryIO], on_frame: Callable[[int], None] | None = None) -> None:
        self.open_sink = open_sink
        self.on_frame = on_frame
        self.sink: BinaryIO | None = None
        self.header = b""
        self.format: Y4MFormat | None = None
        self.hashes: list[str] = []
        self._line = bytearray()
        self._left = 0  # payload bytes of the current frame still to come
        self._hash = new_frame_hash()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        while len(view):
            if self.format is None:  # the stream header line
                view = self._take_line(view)
                if self._line.endswith(b"\n"):
                    self.header = bytes(self._line)
                    self._line.clear()
                    tags = {t[:1]: t[1:] for t in self.header.decode("ascii").split()[1:]}
                    self.format = Y4MFormat(int(tags["W"]), int(tags["H"]), tags.get("C", "420jpeg"))
                continue
            if self._left == 0:  # a FRAME line
                view = self._take_line(view)
                if self._line.endswith(b"\n"):
                    if self.sink is None:
                        self.sink = self.open_sink()
                        self.sink.write(self.header)
                    self.sink.write(bytes(self._line))
                    self._line.clear()
                    self._left = self.format.frame_size
                continue
            chunk = view[:self._left]
            view = view[self._left:]
            self._hash.update(chunk)
            assert self.sink is not None
            self.sink.write(chunk)
            self._left -= len(chunk)
            if self._left == 0:
                self.hashes.append(self._hash.hexdigest())
                self._hash = new_frame_hash()
                if self.on_frame is not None:
                    self.on_frame(len(self.hashes))
        return n

    def _take_line(self, view: memoryview) -> memoryview:
        end = bytes(view[:4096]).find(b"\n")
        cut = len(view) if end < 0 else end + 1
        self._line += view[:cut]
        if len(self._line) > 4096:
            raise RenderError("a yuv4mpeg header line is longer than 4096 bytes")
        return view[cut:]

    def flush(self) -> None:
        pass


def _error_text(e: BaseException) -> str:
    """A VapourSynth error for a message: its last line first (a Python error in the script comes
    as its traceback, the error last), then the whole text."""
    text = str(e).strip()
    return (text.splitlines()[-1] if text else "(no message)") + (f"\n{text}" if "\n" in text else "")


def _write_progress(path: Path, frames: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(str(frames))
    os.replace(tmp, path)


def _kill_group() -> None:
    """Ends this worker and the ffmpeg processes it started (its process group)."""
    try:
        os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(1)


class Worker:
    """The state of one worker process: the clip, the job, the output channel."""

    def __init__(self, job: Mapping[str, Any], out: Any) -> None:
        self.job = job
        self.out = out
        self.out_lock = threading.Lock()
        self.work = Path(job["work_dir"])
        self.ffmpeg = find_ffmpeg(job.get("ffmpeg"))
        self.clip: Any = None
        self.checks: queue.Queue[dict[str, Any] | None] = queue.Queue()  # "rendered" events
        self.where = where_worker()  # "host H (GPU 1)": in every message about a segment

    def send(self, event: dict[str, Any]) -> None:
        with self.out_lock:
            self.out.write(encode(event))
            self.out.flush()

    def fail(self, index: int, error: BaseException) -> None:
        """Sends ``failed`` for a segment: a RenderError's own message, or any other error (a work
        folder that is gone or not writable, ESTALE on NFS) as one line naming this worker; a full
        disk ends the render (fatal)."""
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            error = DiskFullError(f"the disk holding {self.work} is full (on {self.where}: {error}); free some "
                                  f"space, or move the work folder to a larger disk and pass --work-dir with its new "
                                  f"place, then run the same command again to resume")
        if isinstance(error, RenderError):
            message, fatal = str(error), not isinstance(error, SegmentFailed)
        else:
            detail = f"{type(error).__name__}: {error}"
            if isinstance(error, OSError):
                detail += (f"; the work folder {self.work} must exist and be writable on every worker "
                           f"(--work-dir: a folder all nodes share, at the same path)")
            message, fatal = f"segment {index} on {self.where}: {detail}", False
        self.send({"event": "failed", "index": index, "message": message, "fatal": fatal})

    def render(self, task: Mapping[str, Any]) -> None:
        """Renders one segment into a partial file and queues its check (a task with the ``record``
        of a segment verified earlier: queues only its encode, ``--encode``); sends failed on an error."""
        try:
            if task.get("record"):
                self._encode_only(task)
            else:
                self._render(task)
        except Exception as e:  # noqa: BLE001 - whatever it is, the driver hears of it and goes on
            self.fail(int(task["index"]), e)

    def _encode_only(self, task: Mapping[str, Any]) -> None:
        """Encodes the chunk of a segment verified earlier, here (not in the check thread: the
        worker gets its next task only when this one is done)."""
        record = dict(task["record"])
        index = int(record["index"])
        self.send({"event": "started", "index": index})
        item = {"record": record, "encode_only": True, "path": str(self.work / record["file"])}
        done = check_rendered(self.ffmpeg, item, f"{segment_where(record)} on {self.where}", self.job.get("encode"),
                              lambda frames: self.send({"event": "progress", "index": index, "frames": frames,
                                                        "stage": "encode"}))
        self.send({"event": "done", "record": done})

    def _render(self, task: Mapping[str, Any]) -> None:
        import vapoursynth as vs

        index, start, end = int(task["index"]), int(task["start"]), int(task["end"])
        where = f"{segment_where(task)} on {self.where}"
        with open(self.work / "attempts" / f"{index:05d}", "a") as log:  # one line per attempt
            log.write(f"{time.time():.3f} {socket.gethostname()} {os.getpid()}\n")
        self.send({"event": "started", "index": index})
        progress = self.work / "progress" / f"{index:05d}"
        partial = self.work / f".{segment_name(index)[:-4]}.{secrets.token_hex(4)}.partial"
        props: dict[str, Any] = {}
        seg = segment_clip(self.clip, start, end, props)
        err = StderrFile()
        procs: list[subprocess.Popen] = []
        colour: dict[str, str] = {}

        def open_sink() -> BinaryIO:
            colour.update(colour_filter(props))
            cmd = ffmpeg_cmd(self.ffmpeg, "-y", "-f", "yuv4mpegpipe", "-i", "pipe:0", "-map", "0:v:0",
                             *(["-vf", colour["filter"]] if colour else []), *FFV1_ARGS, "-f", "matroska", str(partial))
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err.file))
            assert procs[0].stdin is not None
            return procs[0].stdin  # type: ignore[return-value]

        last = [0.0]

        def on_frame(n: int) -> None:
            if time.monotonic() - last[0] > PROGRESS_EVERY_S:
                _write_progress(progress, n)
                self.send({"event": "progress", "index": index, "frames": n})  # the driver's watchdog
                last[0] = time.monotonic()

        writer = SegmentWriter(open_sink, on_frame)
        t0 = time.perf_counter()
        problem = None
        try:
            seg.output(writer, y4m=True)
        except vs.Error as e:
            problem = f"the script failed: {_error_text(e)}"
        except BrokenPipeError:
            problem = "ffmpeg stopped reading"
        finally:
            if procs:
                try:
                    procs[0].stdin.close()  # type: ignore[union-attr]
                except BrokenPipeError:
                    problem = problem or "ffmpeg stopped reading"
                code = procs[0].wait()
            else:
                code = 0
        _write_progress(progress, len(writer.hashes))
        ff_text = err.text()
        seconds = time.perf_counter() - t0
        try:
            check_disk_full(ff_text, self.work)
            if problem and problem.startswith("the script"):
                raise SegmentFailed(f"{where}: {problem}")
            if code != 0:
                raise SegmentFailed(f"{where}: ffmpeg exited with status {code}:\n{tail(ff_text) or '(no message)'}")
            if problem:
                raise SegmentFailed(f"{where}: {problem}")
            if len(writer.hashes) != end - start + 1:
                raise SegmentFailed(f"{where}: VapourSynth wrote {len(writer.hashes)} frames, expected {end - start + 1}")
        except RenderError as e:
            partial.unlink(missing_ok=True)
            self.fail(index, e)
            return
        assert writer.format is not None
        record = {"index": index, "start": start, "end": end, "frame_size": writer.format.frame_size,
                  "y4m_header": writer.header.decode("ascii").strip(), "colour": colour.get("tags", {}),
                  "seconds": round(seconds, 3), "host": socket.gethostname()}
        # what the driver needs to check the file itself should this worker die before it does
        rendered = {"event": "rendered", "index": index, "record": record, "partial": str(partial),
                    "hashes": writer.hashes}
        self.send(rendered)
        self.checks.put(rendered)

    def check_loop(self) -> None:
        """Decodes each rendered segment and compares it with what VapourSynth wrote (while the
        next segment renders), renames it, encodes its chunk (``--encode``) and sends its record."""
        while True:
            item = self.checks.get()
            if item is None:
                return
            index = int(item["index"])

            def encoding(frames: int, index: int = index) -> None:  # the watchdog's sign of life
                self.send({"event": "progress", "index": index, "frames": frames, "stage": "encode"})

            try:
                record = check_rendered(self.ffmpeg, item, f"{segment_where(item['record'])} on {self.where}",
                                        self.job.get("encode"), encoding)
                self.send({"event": "done", "record": record})
            except Exception as e:  # noqa: BLE001 - an OSError too: this thread must go on checking
                self.fail(int(item["index"]), e)
            finally:
                self.checks.task_done()


class _Discard:
    def write(self, data: Any) -> int:
        return len(data)


def canary_hash(clip: Any) -> str:
    """The hash of frame 0 as a segment would record it (its yuv4mpeg payload): rendered by every
    worker before its first segment."""
    writer = SegmentWriter(lambda: _Discard())  # type: ignore[arg-type, return-value]
    clip[0:1].output(writer, y4m=True)
    return writer.hashes[0]


def fingerprint(clip: Any, ffmpeg: str) -> dict[str, Any]:
    """What makes this worker's frames what they are, beyond the script: versions (vsedvr,
    VapourSynth, Python, torch if the script loaded it, ffmpeg), the plugins loaded, the GPU model,
    and the canary (frame 0's hash). Workers that differ would mix pipelines in one video."""
    import platform
    from importlib import metadata

    import vapoursynth as vs

    try:
        vsedvr_version = metadata.version("vsedvr")
    except metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        vsedvr_version = "not installed"

    canary = canary_hash(clip)  # first: it loads what the script loads lazily (torch, the model, CUDA)
    try:
        version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True, timeout=30).stdout
        ffmpeg_version = (version.splitlines() or ["?"])[0]
    except (OSError, subprocess.SubprocessError):
        ffmpeg_version = "?"
    fp: dict[str, Any] = {"vsedvr": vsedvr_version, "vapoursynth": str(vs.core.core_version.release_major),
                          "python": platform.python_version(), "ffmpeg": ffmpeg_version,
                          "plugins": {p.namespace: f"{p.identifier} {p.version.major}.{p.version.minor}"
                                      for p in vs.core.plugins()}}
    torch = sys.modules.get("torch")
    if torch is not None:
        fp["torch"] = torch.__version__
        if torch.cuda.is_initialized():
            fp["gpu"] = torch.cuda.get_device_name()
    fp["canary"] = canary
    return fp


def check_shared(job: Mapping[str, Any]) -> None:
    """RenderError unless this worker sees the driver's work folder (its probe file, with the
    driver's token) and the driver's script (the same SHA-256): on a cluster, a node without the
    shared folder, or with a folder of its own at the same path, would render segments the driver
    never sees, or from another script."""
    where = where_worker()
    work = Path(job["work_dir"])
    probe = job.get("probe")
    if probe:
        try:
            token = (work / probe["name"]).read_text()
        except OSError as e:
            token = f"unreadable ({type(e).__name__})"
        if token != probe["token"]:
            raise RenderError(f"the work folder {work} on {where} is not the folder the driver sees (its probe "
                              f"file {probe['name']} is {'missing' if 'unreadable' in token else 'different'} "
                              f"there); --work-dir must be a shared file system mounted at the same path on every "
                              f"node")
    want = job.get("script_sha256")
    if want:
        try:
            got = sha256_file(Path(job["script"]))
        except OSError as e:
            raise RenderError(f"cannot read the script {job['script']} on {where} ({e}); the script and its sources "
                              f"must be on a folder every node shares, at the same path") from None
        if got != want:
            raise RenderError(f"the script {job['script']} on {where} is not the driver's (SHA-256 {got[:12]}, "
                              f"the driver's {want[:12]}); the script must be on a folder every node shares")


def render_audio(job: Mapping[str, Any]) -> dict[str, Any]:
    """The script's audio output ``job["audio_output"]`` written to ``job["path"]`` (Wave64: no 4 GB
    limit), as ``vspipe -o N -c w64`` would; its samples and rate."""
    node = evaluate(job["script"], job.get("args", ()), int(job["audio_output"]), audio=True)
    path = Path(job["path"])
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        with open(partial, "wb") as f:
            node.output(f, w64=True)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {"samples": node.num_samples, "sample_rate": node.sample_rate, "channels": node.num_channels}


def main() -> None:
    """The worker's loop (see the module's docstring); a job with ``audio_output`` renders the
    script's audio instead (:func:`render_audio`) and ends."""
    out = os.fdopen(os.dup(1), "w")  # the protocol; the script's prints go to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    tasks: queue.Queue[dict[str, Any]] = queue.Queue()
    line = sys.stdin.readline()
    if not line:
        os._exit(0)
    job = decode(line) or {}

    def read_tasks() -> None:
        stopping = False
        for text in sys.stdin:
            msg = decode(text)
            if msg is None:
                continue
            stopping = stopping or bool(msg.get("stop"))
            tasks.put(msg)
        if not stopping:  # stdin closed without a stop: the driver (or the Ray actor) is gone
            _kill_group()

    try:
        os.setpgid(0, 0)  # a group of its own: _kill_group must not reach whoever started it
    except OSError:
        pass  # already a group (session) leader
    t0 = time.perf_counter()
    import vapoursynth as vs

    if "audio_output" in job:
        try:
            out.write(encode({"event": "done", "audio": render_audio(job)}))
        except (RenderError, vs.Error, OSError) as e:
            out.write(encode({"event": "error", "message": f"--audio-output {job['audio_output']}: {e}"}))
        out.flush()
        os._exit(0)
    try:
        check_shared(job)
        worker = Worker(job, out)
        worker.clip = evaluate(job["script"], job.get("args", ()), int(job.get("output_index", 0)))
        info: dict[str, Any] = dict(clip_info(worker.clip, f"output {job.get('output_index', 0)} of {job['script']}"))
        info["host"] = socket.gethostname()
        info["device"] = device_of()
        try:
            info["fingerprint"] = fingerprint(worker.clip, worker.ffmpeg)
        except vs.Error as e:
            raise RenderError(f"frame 0 of {job['script']} fails on {where_worker()}: {_error_text(e)}") from None
        info["startup_s"] = f"{time.perf_counter() - t0:.3f}"  # with the canary: the model is loaded by then
        info["pid"] = str(os.getpid())
    except RenderError as e:
        out.write(encode({"event": "error", "message": str(e)}))
        out.flush()
        os._exit(3)
    worker.send({"event": "ready", "info": info})
    threading.Thread(target=read_tasks, name="tasks", daemon=True).start()
    checker = threading.Thread(target=worker.check_loop, name="check", daemon=True)
    checker.start()
    while True:
        task = tasks.get()
        if task.get("stop"):  # the driver's normal end: the checks still running finish first
            worker.checks.put(None)
            checker.join()
            out.flush()
            os._exit(0)
        worker.render(task)


if __name__ == "__main__":
    main()
