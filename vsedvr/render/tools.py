"""The external programs a render drives: finding ffmpeg and building its command lines, keeping a
program's stderr for a message, the size of a yuv4mpeg frame, colour tags for ffmpeg, the frame
hash and decoding a file into per-frame hashes."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RenderError", "DiskFullError", "StderrFile", "Y4MFormat", "colour_filter", "decode_hashes",
           "ffmpeg_cmd", "find_ffmpeg", "first_difference", "frame_hash", "new_frame_hash", "packet_hashes",
           "tail"]

_NO_SPACE = "No space left on device"


class RenderError(Exception):
    """A render cannot go on; the message says why and what to do (shown without a traceback)."""


class DiskFullError(RenderError):
    """The work folder or the output's file system is full."""


def tail(text: str | bytes, lines: int = 12) -> str:
    """The last lines of a program's stderr, for an error message."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


class StderrFile:
    """A program's stderr, kept in a temporary file (a pipe nobody reads while the program runs
    would fill and block it); :meth:`text` reads it once and closes it."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in text()

    def text(self) -> str:
        self.file.seek(0)
        data = self.file.read().decode("utf-8", "replace")
        self.file.close()
        return data


def ffmpeg_cmd(ffmpeg: str, *args: str) -> list[str]:
    """An ffmpeg command line: no stdin, errors only, then ``args``."""
    return [ffmpeg, "-nostdin", "-v", "error", *args]


#: Longest a dry run of ffmpeg (two frames, a tenth of a second of audio) may take.
DRY_RUN_TIMEOUT = 120


def dry_run_ffmpeg(cmd: list[str], scratch: Path) -> str | None:
    """Runs an ffmpeg command whose only output is ``scratch`` (removed after), within
    ``DRY_RUN_TIMEOUT``: None if it succeeded, else why not (its last lines, or the timeout)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DRY_RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"ffmpeg took more than {DRY_RUN_TIMEOUT} s for a dry run"
    finally:
        scratch.unlink(missing_ok=True)
    if proc.returncode == 0:
        return None
    return " ".join(tail(proc.stderr, 3).split()) or f"ffmpeg exit status {proc.returncode}"


def first_difference(got: list[str], want: list[str]) -> int:
    """The first index at which two hash lists differ (the shorter one's length if one is a prefix)."""
    return next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))


def check_disk_full(stderr: str, where: Path) -> None:
    """Raises DiskFullError when a program's stderr says the disk is full."""
    if _NO_SPACE in stderr:
        raise DiskFullError(f"the disk holding {where} is full ({_NO_SPACE}); free some space, or move the "
                            f"work folder to a larger disk and pass --work-dir with its new place, then run the "
                            f"same command again to resume")


def find_ffmpeg(explicit: str | os.PathLike | None = None) -> str:
    """``explicit``, else ``ffmpeg`` on PATH, else imageio-ffmpeg's binary; RenderError if none."""
    if explicit:
        path = shutil.which(str(explicit))
        if path is None:
            raise RenderError(f"--ffmpeg {explicit}: no such executable")
        return path
    path = shutil.which("ffmpeg")
    if path:
        return path
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - not installed, or installed without its binary
        pass
    raise RenderError("no ffmpeg found: install ffmpeg (it must be on PATH), pass --ffmpeg PATH, "
                      "or `pip install imageio-ffmpeg` (ships a static ffmpeg with ffv1)")


def colour_filter(props: Mapping[str, int]) -> dict[str, Any]:
    """ffmpeg's ``setparams`` filter that tags a stream with the colour of a frame's properties
    (``_Matrix``, ``_Primaries``, ``_Transfer``: the same H.273 codes in both; ``_Range``, or the
    older ``_ColorRange``; ``_ChromaLocation``), and those tags; empty if the frame has none."""
    tags: dict[str, Any] = {}
    for prop, name in (("_Matrix", "colorspace"), ("_Primaries", "color_primaries"), ("_Transfer", "color_trc")):
        value = props.get(prop)
        if value is not None and value not in (2, 3) and 0 <= value <= 256:  # 2: unspecified, 3: reserved
            tags[name] = int(value)
    if "_Range" in props:  # H.273's flag: 0 limited, 1 full
        tags["range"] = "pc" if props["_Range"] == 1 else "tv"
    elif "_ColorRange" in props:  # VapourSynth's older property: 0 full, 1 limited
        tags["range"] = "pc" if props["_ColorRange"] == 0 else "tv"
    if props.get("_ChromaLocation") in range(6):  # VapourSynth counts from left = 0, ffmpeg from left = 1
        tags["chroma_location"] = int(props["_ChromaLocation"]) + 1
    if not tags:
        return {}
    return {"filter": "setparams=" + ":".join(f"{k}={v}" for k, v in tags.items()), "tags": tags}


# ------------------------------------------------------------------------------------- y4m


@dataclass(frozen=True)
class Y4MFormat:
    width: int
    height: int
    colorspace: str  # the C tag, e.g. 420p10

    @property
    def frame_size(self) -> int:
        """Bytes of one frame's payload (all planes, as yuv4mpeg stores them)."""
        c = self.colorspace
        if c.startswith("mono"):
            depth = int(c[4:] or 8)
            return self.width * self.height * (1 if depth <= 8 else 2)
        m = re.fullmatch(r"(4[0-4][0-4])(alpha|p(\d+)|jpeg|paldv|mpeg2)?", c)
        if m is None:
            raise RenderError(f"unsupported yuv4mpeg colour space C{c}")
        sub, extra, bits = m.group(1), m.group(2), m.group(3)
        sample = 2 if bits and int(bits) > 8 else 1
        cw, ch = {"420": (2, 2), "422": (2, 1), "444": (1, 1), "411": (4, 1), "410": (4, 4)}[sub]
        chroma = -(-self.width // cw) * -(-self.height // ch)
        planes = self.width * self.height + 2 * chroma + (self.width * self.height if extra == "alpha" else 0)
        return planes * sample


def packet_hashes(ffmpeg: str, path: Path) -> tuple[list[str], list[str]]:
    """The video stream of ``path`` as its packets are stored, without decoding: its extradata
    (codec parameters) and one ``size:hash`` per packet (murmur3; timestamps left out, since a
    segment's shift in the join). RenderError if it cannot be read."""
    proc = subprocess.run(ffmpeg_cmd(ffmpeg, "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framehash",
                                     "-hash", "murmur3", "-"), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RenderError(f"cannot read {path}:\n{tail(proc.stderr)}")
    extradata, packets = [], []
    for line in proc.stdout.splitlines():
        if line.startswith("#extradata"):
            extradata.append(" ".join(line.split(",", 1)[1].split()))
        elif line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]
            packets.append(f"{fields[4]}:{fields[5]}")
    return extradata, packets


def new_frame_hash() -> Any:
    """The hash of one frame, fed plane bytes in order (MD5: what ffmpeg's framemd5 computes). The
    one definition for the hashes recorded while rendering and those of a decoded file."""
    return hashlib.md5()


def frame_hash(payload: bytes | bytearray | memoryview) -> str:
    """The hash recorded for one frame's planes."""
    h = new_frame_hash()
    h.update(payload)
    return h.hexdigest()


def decode_hashes(ffmpeg: str, path: Path, frame_size: int) -> list[str]:
    """Decodes the first video stream of ``path`` to raw frames and hashes each one."""
    cmd = ffmpeg_cmd(ffmpeg, "-i", str(path), "-map", "0:v:0", "-f", "rawvideo", "-")
    # stderr to a file, not a pipe read after stdout: a corrupt file makes ffmpeg print an error per
    # slice and frame, and a full stderr pipe would block it (and this loop) for good
    err_file = StderrFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file.file)
    try:
        hashes = _hash_frames(proc, frame_size)
    finally:
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
    err = err_file.text()
    if code != 0:
        hashes.append(f"decode error: {tail(err, 3)}")
    return hashes


def _hash_frames(proc: subprocess.Popen, frame_size: int) -> list[str]:
    """Reads frames of ``frame_size`` bytes from ``proc``'s stdout and hashes them in a thread pool
    (hashlib lets go of the GIL on large buffers: at 4K one core hashes ~30 frames/s, the decoder
    delivers more), keeping their order; a few frames in flight per thread bound the memory."""
    assert proc.stdout is not None
    threads = max(1, min(8, os.cpu_count() or 1))
    hashes: list[str] = []
    in_flight: deque[Future[str]] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="vsedvr-hash") as pool:
        while True:
            buf = bytearray(frame_size)
            view = memoryview(buf)
            got = 0
            while got < frame_size:
                n = proc.stdout.readinto(view[got:])  # type: ignore[attr-defined]
                if not n:
                    break
                got += n
            if got < frame_size:
                hashes += [f.result() for f in in_flight]
                if got:
                    hashes.append("incomplete")
                break
            in_flight.append(pool.submit(frame_hash, buf))
            while len(in_flight) > 2 * threads:
                hashes.append(in_flight.popleft().result())
    proc.stdout.close()
    return hashes
