"""``--encode`` per segment: the arguments checked (what cannot be chunked is refused with a fix) and
split between the chunk encode and the join, a verified FFV1 segment encoded into a chunk beside it
(on the worker, while it renders its next segment), counted and recorded by its packets.

The driver then joins the chunks with ``-c copy`` and checks the join against the chunks' recorded
packets (``driver._check_join_packets``): no encode and no decode on the driver.
"""
from __future__ import annotations

import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..zoo.cache import sha256_file
from .tools import (RenderError, StderrFile, check_disk_full, dry_run_ffmpeg, ffmpeg_cmd, packet_hashes,
                    tail)

__all__ = ["check_encode", "chunk_name", "chunk_spec", "dry_encode", "encode_chunk", "join_args"]

#: Audio options that take a value (besides any ``-OPTION:a...``): they go to the join, where the
#: audio is muxed; the chunks have no audio.
_AUDIO_VALUE_OPTS = {"-acodec", "-ab", "-ar", "-ac", "-af", "-aq", "-sample_fmt", "-channel_layout", "-ch_layout"}
#: Options about the output file as a whole: given to the chunk encode and to the join.
_CONTAINER_OPTS = re.compile(r"-(f|movflags|brand|metadata(:[gscp](:[^a\s][\w:]*)?)?)")
_AUDIO_SPEC = re.compile(r"-[\w-]+(:[\w]+)*:a(:\d+)?")
#: Keys of an encoder's own parameter string that need the whole video in one encoder.
_MULTIPASS_KEYS = re.compile(r"(^|[:,])(pass|stats|analysis-save|analysis-load|passlogfile)=")
_PARAM_OPTS = ("-x264-params", "-x264opts", "-x265-params", "-svtav1-params", "-aom-params", "-libvpx-params")

_CONSTANT_QUALITY = ("use a constant-quality mode instead, as chunked encoders do, e.g. "
                     "--encode \"-c:v libx265 -crf 18\" (x264 and x265: -crf; SVT-AV1: -crf; libvpx-vp9: -crf 30 "
                     "-b:v 0), or render without --encode and run both passes on the lossless result")


def check_encode(encode: Sequence[str]) -> None:
    """RenderError for ``--encode`` arguments that cannot be applied per segment honestly, with a
    fix: two-pass rate control (it needs the whole video in one encoder), options that trim or
    retime the output (they would act on every segment), and extra inputs or maps (vsedvr maps the
    script's video and ``--audio`` itself)."""
    args = list(encode)
    for i, opt in enumerate(args):
        value = args[i + 1] if i + 1 < len(args) else ""
        name = opt.split(":", 1)[0]
        if name in ("-pass", "-passlogfile") or (name == "-flags" and re.search(r"pass[12]", value)) \
                or (opt in _PARAM_OPTS and _MULTIPASS_KEYS.search(value)):
            shown = f"{opt} {value}".strip()
            raise RenderError(f"--encode: {shown} is two-pass (or multi-pass) rate control, which needs the whole "
                              f"video in one encoder, but vsedvr render encodes each segment on its worker and "
                              f"joins the encoded chunks; {_CONSTANT_QUALITY}")
        if name in ("-ss", "-sseof", "-t", "-to", "-frames", "-vframes", "-fpsmax"):
            raise RenderError(f"--encode: {opt} {value} would cut every segment, not the video (vsedvr render "
                              f"encodes each segment on its worker); trim in the script instead, e.g. "
                              f"clip = clip[24:]")
        if name == "-r":
            raise RenderError(f"--encode: {opt} {value} changes the frame rate of every segment on its own, so the "
                              f"chunks would not add up to the video; change the frame rate in the script, e.g. "
                              f"clip = core.std.AssumeFPS(clip, fpsnum=24000, fpsden=1001)")
        if name in ("-i", "-map", "-filter_complex", "-lavfi"):
            raise RenderError(f"--encode: {opt} is not taken (vsedvr render maps the script's video, and the audio "
                              f"of --audio or --audio-output, itself); give video filters with -vf, e.g. "
                              f"--encode \"-c:v libx264 -crf 18 -vf scale=1920:-2\"")


def _split(encode: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the chunk encode's arguments, the join's): audio options to the join only, options about
    the file as a whole to both, the rest (the video encode) to the chunks only."""
    chunk: list[str] = []
    join: list[str] = []
    args = list(encode)
    i = 0
    while i < len(args):
        opt = args[i]
        if opt == "-an":
            join.append(opt)
            i += 1
        elif opt in _AUDIO_VALUE_OPTS or _AUDIO_SPEC.fullmatch(opt):
            join += args[i:i + 2]
            i += 2
        elif _CONTAINER_OPTS.fullmatch(opt):
            chunk += args[i:i + 2]
            join += args[i:i + 2]
            i += 2
        else:
            chunk.append(opt)
            i += 1
    return chunk, join


def chunk_spec(encode: Sequence[str], output: Path) -> dict[str, Any]:
    """What a chunk is encoded with (the job's ``encode``, and its manifest record's key): the
    chunk encode's arguments and the container (the output's suffix: the chunks are written in
    the output's container, so what its muxer does to the packets is done to the chunks too)."""
    return {"args": _split(encode)[0], "suffix": output.suffix or ".mkv"}


def join_args(encode: Sequence[str]) -> list[str]:
    """The ``--encode`` arguments the join takes: audio options, and options about the whole file."""
    return _split(encode)[1]


def chunk_name(index: int, suffix: str) -> str:
    return f"enc-{index:05d}{suffix}"


def dry_encode(ffmpeg: str, spec: Mapping[str, Any], width: int, height: int, work: Path) -> None:
    """Two frames of a blank clip of the video's size through the chunk encode, before any
    segment: an unknown encoder or option, or a container that refuses the codec, used to fail
    only at the end (now it would fail every segment on every worker)."""
    probe = work / f".encode-check{spec['suffix']}"
    failed = dry_run_ffmpeg(ffmpeg_cmd(ffmpeg, "-y", "-f", "lavfi", "-i", f"color=c=gray:s={width}x{height}:r=24",
                                       "-frames:v", "2", "-map", "0:v:0", *spec["args"], str(probe)), probe)
    if failed:
        raise RenderError(f"--encode {' '.join(spec['args'])}: ffmpeg cannot encode with these arguments into "
                          f"{spec['suffix']} ({failed}); check the encoder's name and options "
                          f"(ffmpeg -h encoder=NAME), e.g. --encode \"-c:v libx265 -crf 18\"")


def encode_chunk(ffmpeg: str, segment: Path, index: int, frames: int, spec: Mapping[str, Any], where: str,
                 on_frames: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Encodes the verified segment file ``segment`` with ``spec`` into its chunk beside it (a
    temporary name until it is counted); the chunk's record: file, size, SHA-256, the spec, its
    packets' hashes and extradata (what the join is checked against), seconds. ``on_frames`` is
    called with the frames encoded so far as they advance (the watchdog's sign of life).
    RenderError (ending the render: the arguments do it to every segment) when the chunk's packets
    are not the segment's frame count; SegmentFailed when ffmpeg fails."""
    from .segment import SegmentFailed  # segment imports this module

    final = segment.with_name(chunk_name(index, spec["suffix"]))
    partial = segment.with_name(f".{final.stem}.{secrets.token_hex(4)}.partial{spec['suffix']}")
    cmd = ffmpeg_cmd(ffmpeg, "-y", "-i", str(segment), "-map", "0:v:0", *spec["args"], "-progress", "pipe:1",
                     "-nostats", str(partial))
    err = StderrFile()
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err.file, text=True)
        assert proc.stdout is not None
        done = 0
        for line in proc.stdout:  # -progress: key=value lines, "frame=N" about twice a second
            if line.startswith("frame="):
                n = int(line[6:].strip() or 0)
                if n > done and on_frames is not None:
                    on_frames(n)
                done = max(done, n)
        code = proc.wait()
        text = err.text()
        if code != 0:
            check_disk_full(text, segment.parent)
            raise SegmentFailed(f"{where}: --encode failed (ffmpeg exit status {code}):\n{tail(text) or '(no message)'}")
        extradata, packets = packet_hashes(ffmpeg, partial)
        if len(packets) != frames:
            raise RenderError(f"{where}: --encode {' '.join(spec['args'])} made {len(packets)} frames of the "
                              f"segment's {frames} (an option or filter that drops or adds frames, such as -r or "
                              f"fps=; change the frame rate in the script, and give --encode the encoder and its "
                              f"quality only)")
        partial.replace(final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {"file": final.name, "size": final.stat().st_size, "sha256": sha256_file(final), "args": list(spec["args"]),
            "suffix": spec["suffix"], "extradata": extradata, "packets": packets,
            "seconds": round(time.perf_counter() - t0, 3), "host": socket.gethostname()}
