"""What every segment shares, wherever it is rendered: its file name, the FFV1 settings, and the
check that the file decodes to exactly the frames VapourSynth wrote before it takes its name (then,
with ``--encode``, its chunk: :mod:`.encode`)."""
from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..zoo.cache import sha256_file
from .encode import encode_chunk
from .tools import RenderError, decode_hashes, first_difference, packet_hashes

__all__ = ["FFV1_ARGS", "SegmentFailed", "check_rendered", "exit_text", "segment_name", "segment_where",
           "verify_segment"]

#: FFV1 version 3, every frame a keyframe (cuts anywhere, concat with -c copy), CRC per slice. The
#: slice count, coder and context model are pinned: left to each node's ffmpeg, segments from builds
#: that choose differently join with -c copy into a file that stops decoding at the first foreign
#: segment. Part of the render plan (a change refuses an old work folder).
FFV1_ARGS = ["-c:v", "ffv1", "-level", "3", "-g", "1", "-slicecrc", "1", "-slices", "4", "-coder", "range_tab",
             "-context", "0"]


class SegmentFailed(RenderError):
    """This attempt at a segment failed (the script, ffmpeg, a dead worker, wrong frames); worth retrying."""


def segment_name(index: int) -> str:
    return f"seg-{index:05d}.mkv"


def segment_where(task: Mapping[str, Any]) -> str:
    """'segment 3 (frames 24-31)', for messages."""
    return f"segment {task['index']} (frames {task['start']}-{task['end']})"


def exit_text(code: int) -> str:
    """How a process ended, for a message."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def verify_segment(ffmpeg: str, partial: Path, index: int, hashes: list[str], frame_size: int, where: str) -> Path:
    """Decodes ``partial`` and compares every frame with ``hashes``; renames it to segment
    ``index``'s name and returns that path, or deletes it and raises SegmentFailed."""
    final = partial.with_name(segment_name(index))
    try:
        decoded = decode_hashes(ffmpeg, partial, frame_size)
        if decoded != hashes:
            raise SegmentFailed(f"{where}: the FFV1 file does not decode to what VapourSynth produced "
                                f"({len(decoded)} frames decoded, first difference at frame "
                                f"{first_difference(decoded, hashes)} of the segment)")
        os.replace(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final


def check_rendered(ffmpeg: str, rendered: Mapping[str, Any], where: str, encode: Mapping[str, Any] | None = None,
                   on_frames: Callable[[int], None] | None = None) -> dict[str, Any]:
    """A worker's ``rendered`` event checked (:func:`verify_segment`): its manifest record, complete
    (file name, size, SHA-256, frame hashes, and its packets' hashes and extradata, which the
    join is checked against). With ``encode`` (:func:`.encode.chunk_spec`) the segment is then
    encoded into its chunk, recorded under ``chunk``; an ``encode_only`` event (a segment verified
    earlier whose chunk is missing or stale) is only encoded. Done by the worker, or by the driver
    when the worker died before it could."""
    record = dict(rendered["record"])
    if rendered.get("encode_only"):
        final = Path(rendered["path"])
    else:
        final = verify_segment(ffmpeg, Path(rendered["partial"]), int(record["index"]), rendered["hashes"],
                               int(record["frame_size"]), where)
        extradata, packets = packet_hashes(ffmpeg, final)  # what the join is checked against, packet by packet
        record.update(file=final.name, size=final.stat().st_size, sha256=sha256_file(final),
                      hashes=rendered["hashes"], extradata=extradata, packets=packets)
    record.pop("chunk", None)
    if encode:
        record["chunk"] = encode_chunk(ffmpeg, final, int(record["index"]), int(record["end"]) - int(record["start"]) + 1,
                                       encode, where, on_frames)
    return record
