"""One segment: ``vspipe --start S --end E`` piped through a per-frame hasher into an FFV1 MKV
under a temporary name, decoded again and compared frame by frame, then renamed.

:func:`render_segment` runs wherever the segment is rendered (a local worker thread or a Ray
task on another node); it takes and returns small dicts only, never frames.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .tools import (RenderError, Y4MReader, check_disk_full, decode_hashes, find_ffmpeg, find_vspipe,
                    frame_hash, sha256_file, tail, vspipe_args)

__all__ = ["SegmentFailed", "render_segment", "segment_name", "terminate_all"]

#: FFV1 version 3, every frame a keyframe (cuts anywhere, concat with -c copy), CRC per slice.
FFV1_ARGS = ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slicecrc", "1"]
PROGRESS_EVERY_S = 0.5

_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()


class SegmentFailed(RenderError):
    """This attempt at a segment failed (vspipe or ffmpeg exit status, wrong frames); worth retrying."""


def segment_name(index: int) -> str:
    return f"seg-{index:05d}.mkv"


def terminate_all() -> None:
    """Kills the vspipe and ffmpeg processes this process started (driver interrupted)."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group: see _spawn
        except OSError:
            pass


def _spawn(cmd: list[str], **kw: Any) -> subprocess.Popen:
    """Starts a process in a group of its own, so that :func:`terminate_all` kills what it started
    too: pip's ``vspipe`` is a Python wrapper that runs the real vspipe as its child, and killing the
    wrapper alone left that one computing (holding its GPU) until its next write failed."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    with _live_lock:
        _live.add(proc)
    return proc


def _reap(proc: subprocess.Popen) -> int:
    code = proc.wait()
    with _live_lock:
        _live.discard(proc)
    return code


def _write_progress(path: Path | None, frames: int) -> None:
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(str(frames))
    os.replace(tmp, path)


def _exit_text(code: int, wrapper: bool = False) -> str:
    """How a process ended; ``wrapper``: vspipe's pip wrapper, which passes a killed child on as
    status 256 - N (ffmpeg's own statuses, 256 + AVERROR, are no signals)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    # vspipe's pip wrapper passes a killed child on as sys.exit(-N), i.e. status 256 - N
    sig = (256 - code if code > 191 else code - 128 if code > 128 else 0) if wrapper else 0
    try:
        return f"exited with status {code} (as if killed by {signal.Signals(sig).name})" if sig else \
            f"exited with status {code}"
    except ValueError:
        return f"exited with status {code}"


def render_segment(task: Mapping[str, Any], env: Mapping[str, str] | None = None,
                   on_frame: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Renders, verifies and renames one segment; returns its manifest record.

    ``task``: work_dir, index, start, end, script, args, output_index, ffmpeg, vspipe (None:
    find them here). ``env``: the environment of vspipe and ffmpeg (None: this process's).
    Raises SegmentFailed (retry it) or RenderError (retrying cannot help: disk full, no ffmpeg).
    """
    work = Path(task["work_dir"])
    index, start, end = int(task["index"]), int(task["start"]), int(task["end"])
    expected = end - start + 1
    ffmpeg = find_ffmpeg(task.get("ffmpeg"))
    vspipe = find_vspipe(task.get("vspipe"))
    env = dict(os.environ if env is None else env)
    final = work / segment_name(index)
    partial = work / f".{final.stem}.{secrets.token_hex(4)}.partial"
    progress = work / "progress" / f"{index:05d}"
    with open(work / "attempts" / f"{index:05d}", "a") as log:  # one line per attempt, for the report
        log.write(f"{time.time():.3f} {socket.gethostname()} {os.getpid()}\n")

    t0 = time.perf_counter()
    vs_cmd = [vspipe, "-c", "y4m", "-s", str(start), "-e", str(end),
              *vspipe_args(Path(task["script"]), task["args"], int(task["output_index"])), str(task["script"]), "-"]
    ff_cmd = [ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "yuv4mpegpipe", "-i", "pipe:0",
              "-map", "0:v:0", *FFV1_ARGS, "-f", "matroska", str(partial)]
    hashes: list[str] = []
    first_frame_s = None
    with tempfile.TemporaryFile() as vs_err, tempfile.TemporaryFile() as ff_err:
        vs = _spawn(vs_cmd, stdout=subprocess.PIPE, stderr=vs_err, env=env)
        ff = _spawn(ff_cmd, stdin=subprocess.PIPE, stderr=ff_err, env=env)
        assert vs.stdout is not None and ff.stdin is not None
        frame_size = 0
        write_error = None
        try:
            reader = Y4MReader(vs.stdout)  # type: ignore[arg-type]
            frame_size = reader.frame_size
            ff.stdin.write(reader.header)
            last = time.monotonic()
            for line, payload in reader.frames():
                if first_frame_s is None:
                    first_frame_s = time.perf_counter() - t0
                hashes.append(frame_hash(payload))
                ff.stdin.write(line)
                ff.stdin.write(payload)
                if on_frame is not None:
                    on_frame(1)
                if time.monotonic() - last > PROGRESS_EVERY_S:
                    _write_progress(progress, len(hashes))
                    last = time.monotonic()
        except RenderError as e:  # no y4m at all: vspipe failed before its first frame
            write_error = str(e)
        except BrokenPipeError:
            write_error = "ffmpeg stopped reading"
        finally:
            vs.stdout.close()
            try:
                ff.stdin.close()
            except BrokenPipeError:
                write_error = write_error or "ffmpeg stopped reading"
            vs_code, ff_code = _reap(vs), _reap(ff)
        _write_progress(progress, len(hashes))
        vs_err.seek(0)
        ff_err.seek(0)
        vs_text = vs_err.read().decode("utf-8", "replace")
        ff_text = ff_err.read().decode("utf-8", "replace")
    render_s = time.perf_counter() - t0
    where = f"segment {index} (frames {start}-{end})"
    try:
        check_disk_full(ff_text, work)
        # vspipe's message first (a script error, CUDA out of memory: it explains ffmpeg's "invalid
        # data" on an empty input), unless ffmpeg stopped reading and vspipe failed on the closed pipe
        if vs_code != 0 and not (ff_code != 0 and write_error == "ffmpeg stopped reading"):
            raise SegmentFailed(f"{where}: vspipe {_exit_text(vs_code, wrapper=True)}:\n{tail(vs_text) or '(no message)'}")
        if ff_code != 0:
            raise SegmentFailed(f"{where}: ffmpeg {_exit_text(ff_code)}:\n{tail(ff_text) or '(no message)'}")
        if write_error:
            raise SegmentFailed(f"{where}: {write_error}")
        if len(hashes) != expected:
            raise SegmentFailed(f"{where}: vspipe wrote {len(hashes)} frames, expected {expected}")
        decoded = decode_hashes(ffmpeg, partial, frame_size)
        if decoded != hashes:
            bad = next((i for i, (a, b) in enumerate(zip(decoded, hashes)) if a != b), min(len(decoded), expected))
            raise SegmentFailed(f"{where}: the FFV1 file does not decode to what vspipe produced "
                                f"({len(decoded)} frames decoded, first difference at frame {start + bad})")
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {"index": index, "start": start, "end": end, "file": final.name, "size": final.stat().st_size,
            "sha256": sha256_file(final), "frame_size": frame_size, "hashes": hashes,
            "y4m_header": reader.header.decode("ascii").strip(),
            "seconds": round(render_s, 3), "first_frame_s": round(first_frame_s or 0.0, 3),
            "host": socket.gethostname()}
